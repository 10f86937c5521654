//! Caller authentication: `Authorization: Bearer <jwt>`, verified with a pinned algorithm and
//! `exp` required, `iss`/`aud` when configured. The reason a token is refused is logged at
//! debug; the client gets one uniform answer. Scope checks are GraphQL guards.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::HeaderMap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::config::{JwtConfig, JwtKey};
use crate::error::AppError;

/// The scope every Plaid operation requires.
pub const MANAGE_PAYMENT: &str = "MANAGE_PAYMENT";

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The JWT `sub`: every lookup is scoped to it.
    pub user_id: String,
    pub scopes: HashSet<String>,
    /// The token's `exp` (seconds since the epoch): a WebSocket authenticated with it closes then.
    pub expires_at: i64,
}

/// What the `Authorization` header amounted to.
#[derive(Debug, Clone)]
pub enum AuthState {
    /// No header.
    Anonymous,
    /// `Basic …`: refused for these operations, with a message that names Bearer.
    Basic,
    /// Some other scheme.
    OtherScheme,
    /// A Bearer token that did not verify.
    Invalid,
    Authenticated(Caller),
}

impl AuthState {
    /// The caller, or the error that explains why there is none.
    pub fn require(&self, scope: &str) -> Result<&Caller, AppError> {
        match self {
            AuthState::Authenticated(c) if c.scopes.contains(scope) => Ok(c),
            AuthState::Authenticated(_) => {
                Err(AppError::Forbidden(format!("The {scope} scope is required for this operation.")))
            }
            AuthState::Anonymous => Err(AppError::Unauthenticated(
                "Authentication required: send Authorization: Bearer <user access token>.".into(),
            )),
            AuthState::Basic => Err(AppError::Unauthenticated(format!(
                "Basic authentication is not accepted for this operation: send a Bearer user access token \
                 (Authorization: Bearer <token>) with the {scope} scope."
            ))),
            AuthState::OtherScheme => Err(AppError::Unauthenticated(
                "Unsupported authorization scheme: send a Bearer user access token (Authorization: Bearer <token>)."
                    .into(),
            )),
            AuthState::Invalid => Err(AppError::Unauthenticated("The Bearer token is invalid or expired.".into())),
        }
    }
}

/// A claim that issuers write as one string or as a list of strings (`aud`, `scope`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Claims bankgraph reads. `scope` (space-separated, or a list) and `scopes` (a list) are
/// both accepted; `aud` may be one audience or a list (RFC 7519 §4.1.3).
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<OneOrMany>,
}

enum Keys {
    Static(DecodingKey),
    Jwks(Box<Jwks>),
}

/// A JWKS endpoint's keys, cached. A known kid is served from the cache without waiting for
/// anything; an unknown one triggers one refetch at a time (single flight), at most every
/// `JWKS_MIN_REFRESH_SECONDS`, and a kid still unknown after it is refused without asking
/// again for that long,
/// so a flood of bogus kids neither hammers the issuer nor stalls genuine callers.
struct Jwks {
    url: url::Url,
    http: reqwest::Client,
    keys: std::sync::RwLock<HashMap<String, DecodingKey>>,
    /// Held while fetching; holds when the last fetch ended.
    refresh: Mutex<Option<Instant>>,
    min_refresh: Duration,
    unknown: std::sync::Mutex<HashMap<String, Instant>>,
}

const JWKS_UNKNOWN_MAX: usize = 1024;

impl Jwks {
    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).get(kid).cloned()
    }

    fn known_unknown(&self, kid: &str) -> bool {
        let unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        unknown.get(kid).is_some_and(|at| at.elapsed() < self.min_refresh)
    }

    fn mark_unknown(&self, kid: &str) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        if unknown.len() >= JWKS_UNKNOWN_MAX {
            unknown.retain(|_, at| at.elapsed() < self.min_refresh);
            if unknown.len() >= JWKS_UNKNOWN_MAX {
                unknown.clear();
            }
        }
        unknown.insert(kid.to_string(), Instant::now());
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        if self.known_unknown(kid) {
            return None;
        }
        let mut last = self.refresh.lock().await;
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            self.mark_unknown(kid);
            return None;
        }
        match self.fetch().await {
            Ok(keys) => *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "JWKS fetch failed"),
        }
        *last = Some(Instant::now());
        drop(last);
        let found = self.cached(kid);
        if found.is_none() {
            self.mark_unknown(kid);
        }
        found
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, DecodingKey>> {
        let set: JwkSet = self
            .http
            .get(self.url.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .context("JWKS request")?
            .error_for_status()
            .context("JWKS status")?
            .json()
            .await
            .context("JWKS body")?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) {
                keys.insert(kid, key);
            }
        }
        Ok(keys)
    }
}

/// Verifies caller tokens.
pub struct Authenticator {
    keys: Keys,
    validation: Validation,
    /// The longest a token may still be valid for (`exp` from now, and from `iat`).
    max_lifetime: Option<Duration>,
}

impl Authenticator {
    pub fn new(cfg: &JwtConfig) -> anyhow::Result<Self> {
        let keys = match &cfg.key {
            JwtKey::Secret(s) => Keys::Static(DecodingKey::from_secret(s.expose_secret().as_bytes())),
            JwtKey::PublicKeyPem(pem) => Keys::Static(match cfg.algorithm {
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes())?,
                _ => DecodingKey::from_rsa_pem(pem.as_bytes())?,
            }),
            JwtKey::Jwks(url) => Keys::Jwks(Box::new(Jwks {
                url: url.clone(),
                http: reqwest::Client::builder().connect_timeout(Duration::from_secs(3)).build()?,
                keys: std::sync::RwLock::new(HashMap::new()),
                refresh: Mutex::new(None),
                min_refresh: cfg.jwks_min_refresh,
                unknown: std::sync::Mutex::new(HashMap::new()),
            })),
        };
        let mut validation = Validation::new(cfg.algorithm);
        validation.leeway = 5;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Authenticator { keys, validation, max_lifetime: cfg.max_lifetime })
    }

    /// Reads the `Authorization` header. Never fails: the state says what was there.
    pub async fn authenticate(&self, headers: &HeaderMap) -> AuthState {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return AuthState::Anonymous;
        };
        let Ok(value) = value.to_str() else {
            return AuthState::Invalid;
        };
        self.authenticate_value(value).await
    }

    /// As [`Authenticator::authenticate`], for an `Authorization` value that did not come in a
    /// header (a WebSocket's `connection_init`).
    pub async fn authenticate_value(&self, value: &str) -> AuthState {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return AuthState::Basic;
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return AuthState::OtherScheme;
        }
        match self.verify(rest.trim()).await {
            Ok(c) => AuthState::Authenticated(c),
            Err(reason) => {
                tracing::debug!(%reason, "bearer token refused");
                AuthState::Invalid
            }
        }
    }

    async fn verify(&self, token: &str) -> Result<Caller, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed: {e}"))?;
        // RFC 7515 §4.1.11: a `crit` header lists extensions the verifier must understand;
        // bankgraph understands none, so any `crit` is refused (jsonwebtoken ignores it).
        if has_crit(token) {
            return Err("a crit header names extensions this server does not implement".into());
        }
        if header.alg != self.validation.algorithms[0] {
            return Err(format!("algorithm {:?} is not the configured one", header.alg));
        }
        let key = match &self.keys {
            Keys::Static(k) => k.clone(),
            Keys::Jwks(jwks) => {
                let kid = header.kid.ok_or("no kid")?;
                jwks.key(&kid).await.ok_or_else(|| format!("unknown kid {kid}"))?
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| e.to_string())?.claims;
        if claims.sub.trim().is_empty() {
            return Err("empty sub".into());
        }
        if claims.sub.len() > 255 || claims.sub.chars().any(char::is_control) {
            return Err("sub is too long or has control characters".into());
        }
        let now = chrono::Utc::now().timestamp();
        // A token its issuer dated later than now (beyond the clock-skew leeway) was minted by a
        // clock or a key holder that cannot be trusted; jsonwebtoken does not check `iat`.
        if let Some(iat) = claims.iat
            && iat > now + self.validation.leeway as i64
        {
            return Err(format!("issued in the future (iat is {} s ahead)", iat - now));
        }
        if let Some(max) = self.max_lifetime {
            let max = max.as_secs() as i64 + self.validation.leeway as i64;
            let from = claims.iat.filter(|iat| *iat <= now).unwrap_or(now);
            if claims.exp - now > max || claims.exp - from > max {
                return Err(format!("the token lives longer than the maximum of {} s", max));
            }
        }
        let mut scopes: HashSet<String> = match &claims.scope {
            Some(OneOrMany::One(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(many) => many.items().into_iter().map(str::to_string).collect(),
            None => HashSet::new(),
        };
        scopes.extend(claims.scopes.unwrap_or_default());
        Ok(Caller { user_id: claims.sub, scopes, expires_at: claims.exp })
    }
}

/// Whether a compact JWS's protected header has a `crit` member.
fn has_crit(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else { return false };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).is_ok_and(|h| h.contains_key("crit"))
}

/// Mints an HS256 token (for `bankgraph token` and tests).
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    scope: &str,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: sub.to_string(),
        exp: now + ttl.as_secs() as i64,
        iat: Some(now),
        nbf: None,
        scope: Some(OneOrMany::One(scope.to_string())),
        scopes: None,
        iss: issuer.map(str::to_string),
        aud: audience.map(|a| OneOrMany::One(a.to_string())),
    };
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))?)
}
