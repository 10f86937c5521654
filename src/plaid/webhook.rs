//! Plaid webhook verification (plaid-reference §4.4): ES256 JWT in `Plaid-Verification`, key
//! by `kid` from `/webhook_verification_key/get` (cached at most 24 h), `iat` at most 5 minutes
//! old, and the SHA-256 of the raw body compared in constant time. Nothing is parsed before
//! the request is proven to come from Plaid.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use super::client::PlaidClient;
use super::error::PlaidError;
use super::key_gate::{KeyLookupPolicy, Looked, LookupGate};
use super::wire::Jwk;

/// The header Plaid signs webhooks in (matched case-insensitively).
pub const VERIFICATION_HEADER: &str = "plaid-verification";

/// Why a webhook was refused. Only [`WebhookRejection::KeyUnavailable`] and
/// [`WebhookRejection::LookupThrottled`] are not the sender's fault (the key could not be
/// asked for now), and deserve a retryable answer.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRejection {
    #[error("the Plaid-Verification header is missing")]
    MissingHeader,
    #[error("the Plaid-Verification header is not a readable JWT")]
    Malformed,
    #[error("the JWT algorithm is {0}, not ES256")]
    WrongAlgorithm(String),
    #[error("the JWT has no kid")]
    MissingKid,
    #[error("Plaid does not know the signing key")]
    UnknownKey,
    #[error("the signing key has expired")]
    ExpiredKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the webhook was signed {age_seconds} s ago, more than the allowed maximum")]
    Stale { age_seconds: i64 },
    #[error("the body does not match the signed hash")]
    BodyMismatch,
    #[error("the verification key could not be fetched: {0}")]
    KeyUnavailable(PlaidError),
    #[error("key lookups are throttled now; deliver again later")]
    LookupThrottled,
}

impl WebhookRejection {
    /// A short stable label, for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            WebhookRejection::MissingHeader => "missing_header",
            WebhookRejection::Malformed => "malformed",
            WebhookRejection::WrongAlgorithm(_) => "wrong_alg",
            WebhookRejection::MissingKid => "missing_kid",
            WebhookRejection::UnknownKey => "unknown_kid",
            WebhookRejection::ExpiredKey => "expired_key",
            WebhookRejection::BadSignature => "bad_signature",
            WebhookRejection::Stale { .. } => "stale",
            WebhookRejection::BodyMismatch => "body_mismatch",
            WebhookRejection::KeyUnavailable(_) => "key_unavailable",
            WebhookRejection::LookupThrottled => "key_lookup_throttled",
        }
    }
}

/// Whether `kid` could be one of Plaid's: 1 to 64 bytes of `[A-Za-z0-9_-]`.
fn plausible_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len()) && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a verified webhook proved.
#[derive(Debug, Clone)]
pub struct Verified {
    pub kid: String,
    pub issued_at: i64,
}

#[derive(Deserialize)]
struct Claims {
    iat: i64,
    request_body_sha256: String,
}

struct CachedKey {
    jwk: Jwk,
    /// When Plaid gave it, unix seconds.
    fetched_at: i64,
}

/// A key of Plaid's as it is kept across restarts: the JWK (with its `expired_at`) and when
/// Plaid gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub jwk: Jwk,
    pub fetched_at: DateTime<Utc>,
}

/// Where verified keys outlive the process (the identity store's `webhook_keys`), so a restart
/// needs no lookup for a kid it already verified.
#[async_trait::async_trait]
pub trait KeyShelf: Send + Sync {
    async fn load(&self) -> anyhow::Result<Vec<StoredKey>>;
    async fn save(&self, key: &StoredKey) -> anyhow::Result<()>;
    async fn forget(&self, kid: &str) -> anyhow::Result<()>;
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Verifies Plaid webhooks, fetching and caching Plaid's keys.
pub struct WebhookVerifier {
    plaid: PlaidClient,
    /// Plaid's keys we hold, by kid. Held only for map operations, never across a call.
    keys: std::sync::Mutex<HashMap<String, CachedKey>>,
    /// One lookup per kid at a time: concurrent requests for a kid wait for the first.
    flights: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Which lookups may happen now (see [`super::key_gate`]).
    gate: std::sync::Mutex<LookupGate>,
    shelf: Option<Arc<dyn KeyShelf>>,
    max_age: Duration,
    key_ttl: Duration,
    now: Clock,
}

impl WebhookVerifier {
    pub fn new(plaid: PlaidClient) -> Self {
        WebhookVerifier {
            plaid,
            keys: std::sync::Mutex::new(HashMap::new()),
            flights: std::sync::Mutex::new(HashMap::new()),
            gate: std::sync::Mutex::new(LookupGate::new(&KeyLookupPolicy::default())),
            shelf: None,
            max_age: Duration::from_secs(5 * 60),
            key_ttl: Duration::from_secs(24 * 60 * 60),
            now: Arc::new(|| chrono::Utc::now().timestamp()),
        }
    }

    /// How lookups of keys are rationed (default [`KeyLookupPolicy::default`]).
    pub fn with_policy(mut self, policy: &KeyLookupPolicy) -> Self {
        self.gate = std::sync::Mutex::new(LookupGate::new(policy));
        self
    }

    /// Keeps the keys Plaid gives on `shelf`; [`WebhookVerifier::load`] reads them back.
    pub fn with_shelf(mut self, shelf: Arc<dyn KeyShelf>) -> Self {
        self.shelf = Some(shelf);
        self
    }

    /// Replaces the wall clock (unix seconds), for tests of freshness.
    pub fn with_clock(mut self, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.now = Arc::new(now);
        self
    }

    /// Takes the keys kept on the shelf (at start). One older than the cache allows is held as
    /// a known kid: refreshed from Plaid when met, without drawing on the never-seen budget.
    /// Returns how many were taken.
    pub async fn load(&self) -> anyhow::Result<usize> {
        let Some(shelf) = &self.shelf else { return Ok(0) };
        let stored = shelf.load().await?;
        let mut keys = self.keys();
        let mut taken = 0;
        for k in stored {
            let fetched_at = k.fetched_at.timestamp();
            let held = keys.get(&k.jwk.kid).is_some_and(|c| c.fetched_at >= fetched_at);
            if !held {
                keys.insert(k.jwk.kid.clone(), CachedKey { jwk: k.jwk, fetched_at });
                taken += 1;
            }
        }
        Ok(taken)
    }

    /// Verifies one request from its headers and its raw body, exactly as received.
    pub async fn verify(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<Verified, WebhookRejection> {
        let token = headers
            .get(VERIFICATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(WebhookRejection::MissingHeader)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| WebhookRejection::Malformed)?;
        if header.alg != Algorithm::ES256 {
            return Err(WebhookRejection::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(WebhookRejection::MissingKid)?;
        // Plaid's kids are UUIDs. A longer or stranger one is never looked up, remembered by
        // the lookup gate or written to a log.
        if !plausible_kid(&kid) {
            return Err(WebhookRejection::Malformed);
        }
        let jwk = self.key(&kid).await?;
        if jwk.expired_at.is_some() {
            return Err(WebhookRejection::ExpiredKey);
        }
        let key = DecodingKey::from_ec_components(&jwk.x, &jwk.y).map_err(|_| WebhookRejection::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => WebhookRejection::BadSignature,
                _ => WebhookRejection::Malformed,
            })?
            .claims;
        let age = (self.now)() - claims.iat;
        // A little clock skew is tolerated in the future; nothing past the maximum age.
        if age > self.max_age.as_secs() as i64 || age < -60 {
            return Err(WebhookRejection::Stale { age_seconds: age });
        }
        let digest = hex::encode(Sha256::digest(body));
        if !bool::from(digest.as_bytes().ct_eq(claims.request_body_sha256.to_ascii_lowercase().as_bytes())) {
            return Err(WebhookRejection::BodyMismatch);
        }
        Ok(Verified { kid, issued_at: claims.iat })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, LookupGate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a key Plaid gave at `fetched_at` may still be used without asking again.
    fn fresh(&self, fetched_at: i64) -> bool {
        (self.now)().saturating_sub(fetched_at) < self.key_ttl.as_secs() as i64
    }

    /// A fresh cached key, or whether the kid is known to be unknown.
    fn cached(&self, kid: &str) -> Option<Result<Jwk, WebhookRejection>> {
        if let Some(k) = self.keys().get(kid).filter(|k| self.fresh(k.fetched_at)) {
            return Some(Ok(k.jwk.clone()));
        }
        if self.gate().is_unknown(kid, Instant::now()) {
            return Some(Err(WebhookRejection::UnknownKey));
        }
        None
    }

    async fn key(&self, kid: &str) -> Result<Jwk, WebhookRejection> {
        if let Some(known) = self.cached(kid) {
            return known;
        }
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights.entry(kid.to_string()).or_default().clone()
        };
        let looked_up = {
            let _only_one = flight.lock().await;
            match self.cached(kid) {
                Some(known) => known,
                None => self.look_up(kid).await,
            }
        };
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(kid).is_some_and(|f| Arc::ptr_eq(f, &flight) && Arc::strong_count(f) <= 2) {
            flights.remove(kid);
        }
        looked_up
    }

    /// Asks Plaid for a key (one caller per kid at a time), if the gate allows it now.
    async fn look_up(&self, kid: &str) -> Result<Jwk, WebhookRejection> {
        let held = self.keys().contains_key(kid);
        let admitted = self.gate().admit(kid, held, Instant::now());
        if let Err(throttle) = admitted {
            metrics::counter!(crate::metrics::WEBHOOK_KEY_LOOKUPS_THROTTLED, "reason" => throttle.label()).increment(1);
            // The rejection is logged once by the caller; this says why at debug level.
            tracing::debug!(reason = throttle.label(), "webhook key lookup throttled");
            return Err(WebhookRejection::LookupThrottled);
        }
        let jwk = match self.fetch(kid).await {
            Ok(Some(jwk)) => jwk,
            Ok(None) => return Err(WebhookRejection::UnknownKey),
            Err(e) => return Err(WebhookRejection::KeyUnavailable(e)),
        };
        if !held {
            // Plaid: when a new kid appears, also refresh the keys we hold that have not
            // expired, so a rotation (their `expired_at`) is noticed.
            let others: Vec<String> = self
                .keys()
                .iter()
                .filter(|(k, v)| k.as_str() != kid && v.jwk.expired_at.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            for other in others {
                if self.gate().admit(&other, true, Instant::now()).is_err() {
                    break;
                }
                if let Err(e) = self.fetch(&other).await {
                    tracing::warn!(kid = %other, error = %e, "could not refresh a cached webhook key");
                }
            }
        }
        Ok(jwk)
    }

    /// One call to Plaid for `kid`: the key (kept, in memory and on the shelf), `None` when
    /// Plaid does not know it (forgotten), or why there was no answer.
    async fn fetch(&self, kid: &str) -> Result<Option<Jwk>, PlaidError> {
        match self.plaid.webhook_verification_key_get(kid).await {
            Ok(r) => {
                self.gate().looked_up(kid, Looked::Found, Instant::now());
                let fetched_at = (self.now)();
                self.keys().insert(kid.to_string(), CachedKey { jwk: r.key.clone(), fetched_at });
                if let Some(shelf) = &self.shelf {
                    let at = DateTime::from_timestamp(fetched_at, 0).unwrap_or_else(Utc::now);
                    if let Err(e) = shelf.save(&StoredKey { jwk: r.key.clone(), fetched_at: at }).await {
                        tracing::warn!(kid = %kid, error = %format!("{e:#}"), "could not keep a webhook key");
                    }
                }
                Ok(Some(r.key))
            }
            Err(e) if e.code() == Some("INVALID_WEBHOOK_VERIFICATION_KEY_ID") => {
                self.gate().looked_up(kid, Looked::Unknown, Instant::now());
                if self.keys().remove(kid).is_some()
                    && let Some(shelf) = &self.shelf
                    && let Err(e) = shelf.forget(kid).await
                {
                    tracing::warn!(kid = %kid, error = %format!("{e:#}"), "could not forget a webhook key");
                }
                Ok(None)
            }
            Err(e) => {
                self.gate().looked_up(kid, Looked::Failed, Instant::now());
                metrics::counter!(crate::metrics::WEBHOOK_KEY_LOOKUP_FAILURES).increment(1);
                tracing::warn!(kid = %kid, error = %e, "webhook key lookup failed; backing off");
                Err(e)
            }
        }
    }
}
