//! Plaid webhook verification (plaid-reference §4.4): ES256 JWT in `Plaid-Verification`, key
//! by `kid` from `/webhook_verification_key/get` (cached at most 24 h), `iat` at most 5 minutes
//! old, and the SHA-256 of the raw body compared in constant time. Nothing is parsed before
//! the request is proven to come from Plaid.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use super::client::PlaidClient;
use super::error::PlaidError;
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
    #[error("a new signing key was looked up less than a minute ago; deliver again later")]
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
    fetched: Instant,
}

/// What the verifier knows of Plaid's keys. Held only for map operations, never across a call
/// to Plaid.
#[derive(Default)]
struct KeyBook {
    keys: HashMap<String, CachedKey>,
    /// Kids Plaid said it does not know, and when: refused without asking again for a while.
    unknown: HashMap<String, Instant>,
}

/// How long Plaid's "no such key" is believed.
const UNKNOWN_KID_TTL: Duration = Duration::from_secs(10 * 60);
/// Kids remembered as unknown, at most (forged ones are random).
const UNKNOWN_KIDS_MAX: usize = 1024;
/// After Plaid answers "no such key" for a never-seen kid, no other never-seen kid is looked
/// up for this long: forged kids cost Plaid (and us) one call a minute whatever an attacker
/// sends. A genuine new kid met meanwhile gets 503, so Plaid delivers the webhook again.
const NEW_KID_LOOKUP_INTERVAL: Duration = Duration::from_secs(60);

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Verifies Plaid webhooks, fetching and caching Plaid's keys.
pub struct WebhookVerifier {
    plaid: PlaidClient,
    book: std::sync::Mutex<KeyBook>,
    /// One lookup per kid at a time: concurrent requests for a kid wait for the first.
    flights: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Never-seen kids are looked up one at a time; holds when Plaid last said a kid is unknown.
    new_kids: Mutex<Option<Instant>>,
    new_kid_interval: Duration,
    max_age: Duration,
    key_ttl: Duration,
    now: Clock,
}

impl WebhookVerifier {
    pub fn new(plaid: PlaidClient) -> Self {
        WebhookVerifier {
            plaid,
            book: std::sync::Mutex::new(KeyBook::default()),
            flights: std::sync::Mutex::new(HashMap::new()),
            new_kids: Mutex::new(None),
            new_kid_interval: NEW_KID_LOOKUP_INTERVAL,
            max_age: Duration::from_secs(5 * 60),
            key_ttl: Duration::from_secs(24 * 60 * 60),
            now: Arc::new(|| chrono::Utc::now().timestamp()),
        }
    }

    /// How long after an unknown kid no never-seen kid is looked up (default one minute).
    pub fn with_new_kid_interval(mut self, interval: Duration) -> Self {
        self.new_kid_interval = interval;
        self
    }

    /// Replaces the wall clock (unix seconds), for tests of freshness.
    pub fn with_clock(mut self, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.now = Arc::new(now);
        self
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

    fn book(&self) -> std::sync::MutexGuard<'_, KeyBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh cached key, or whether the kid is known to be unknown.
    fn cached(&self, kid: &str) -> Option<Result<Jwk, WebhookRejection>> {
        let book = self.book();
        if let Some(k) = book.keys.get(kid).filter(|k| k.fetched.elapsed() < self.key_ttl) {
            return Some(Ok(k.jwk.clone()));
        }
        if book.unknown.get(kid).is_some_and(|at| at.elapsed() < UNKNOWN_KID_TTL) {
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

    /// Asks Plaid for a key (one caller per kid at a time).
    async fn look_up(&self, kid: &str) -> Result<Jwk, WebhookRejection> {
        let new = !self.book().keys.contains_key(kid);
        let mut gate = if new {
            let gate = self.new_kids.lock().await;
            if gate.is_some_and(|at| at.elapsed() < self.new_kid_interval) {
                return Err(WebhookRejection::LookupThrottled);
            }
            if let Some(known) = self.cached(kid) {
                return known;
            }
            Some(gate)
        } else {
            None
        };
        let jwk = match self.plaid.webhook_verification_key_get(kid).await {
            Ok(r) => r.key,
            Err(e) if e.code() == Some("INVALID_WEBHOOK_VERIFICATION_KEY_ID") => {
                if let Some(gate) = gate.as_mut() {
                    **gate = Some(Instant::now());
                }
                let mut book = self.book();
                if book.unknown.len() >= UNKNOWN_KIDS_MAX {
                    book.unknown.retain(|_, at| at.elapsed() < UNKNOWN_KID_TTL);
                    if book.unknown.len() >= UNKNOWN_KIDS_MAX {
                        book.unknown.clear();
                    }
                }
                book.unknown.insert(kid.to_string(), Instant::now());
                book.keys.remove(kid);
                return Err(WebhookRejection::UnknownKey);
            }
            Err(e) => return Err(WebhookRejection::KeyUnavailable(e)),
        };
        self.book().keys.insert(kid.to_string(), CachedKey { jwk: jwk.clone(), fetched: Instant::now() });
        drop(gate);
        if new {
            // Plaid: when a new kid appears, also refresh the keys we hold that have not
            // expired, so a rotation (their `expired_at`) is noticed.
            let others: Vec<String> = self
                .book()
                .keys
                .iter()
                .filter(|(k, v)| k.as_str() != kid && v.jwk.expired_at.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            for other in others {
                match self.plaid.webhook_verification_key_get(&other).await {
                    Ok(r) => {
                        self.book().keys.insert(other, CachedKey { jwk: r.key, fetched: Instant::now() });
                    }
                    Err(e) if e.code() == Some("INVALID_WEBHOOK_VERIFICATION_KEY_ID") => {
                        self.book().keys.remove(&other);
                    }
                    Err(e) => tracing::warn!(kid = %other, error = %e, "could not refresh a cached webhook key"),
                }
            }
        }
        Ok(jwk)
    }
}
