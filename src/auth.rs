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
use tokio::sync::RwLock;

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

/// Claims bankgraph reads. `scope` (space-separated) and `scopes` (array) are both accepted.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

enum Keys {
    Static(DecodingKey),
    Jwks(Jwks),
}

/// A JWKS endpoint's keys, cached; refetched when an unknown `kid` shows up, at most every
/// 30 seconds so a flood of bogus kids cannot hammer the issuer.
struct Jwks {
    url: url::Url,
    http: reqwest::Client,
    keys: RwLock<(HashMap<String, DecodingKey>, Option<Instant>)>,
}

const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);

impl Jwks {
    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(k) = self.keys.read().await.0.get(kid) {
            return Some(k.clone());
        }
        let mut guard = self.keys.write().await;
        if let Some(k) = guard.0.get(kid) {
            return Some(k.clone());
        }
        if guard.1.is_some_and(|t| t.elapsed() < JWKS_MIN_REFRESH) {
            return None;
        }
        guard.1 = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => guard.0 = keys,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "JWKS fetch failed"),
        }
        guard.0.get(kid).cloned()
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
}

impl Authenticator {
    pub fn new(cfg: &JwtConfig) -> anyhow::Result<Self> {
        let keys = match &cfg.key {
            JwtKey::Secret(s) => Keys::Static(DecodingKey::from_secret(s.expose_secret().as_bytes())),
            JwtKey::PublicKeyPem(pem) => Keys::Static(match cfg.algorithm {
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes())?,
                _ => DecodingKey::from_rsa_pem(pem.as_bytes())?,
            }),
            JwtKey::Jwks(url) => Keys::Jwks(Jwks {
                url: url.clone(),
                http: reqwest::Client::builder().connect_timeout(Duration::from_secs(3)).build()?,
                keys: RwLock::new((HashMap::new(), None)),
            }),
        };
        let mut validation = Validation::new(cfg.algorithm);
        validation.leeway = 5;
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
        Ok(Authenticator { keys, validation })
    }

    /// Reads the `Authorization` header. Never fails: the state says what was there.
    pub async fn authenticate(&self, headers: &HeaderMap) -> AuthState {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return AuthState::Anonymous;
        };
        let Ok(value) = value.to_str() else {
            return AuthState::Invalid;
        };
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
        let mut scopes: HashSet<String> =
            claims.scope.unwrap_or_default().split_whitespace().map(str::to_string).collect();
        scopes.extend(claims.scopes.unwrap_or_default());
        Ok(Caller { user_id: claims.sub, scopes })
    }
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
        scope: Some(scope.to_string()),
        scopes: None,
        iss: issuer.map(str::to_string),
        aud: audience.map(str::to_string),
    };
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))?)
}

/// The `async-graphql` guard that requires a scope on a field.
pub struct RequireScope(pub &'static str);

impl async_graphql::Guard for RequireScope {
    async fn check(&self, ctx: &async_graphql::Context<'_>) -> async_graphql::Result<()> {
        let state = ctx
            .data::<AuthState>()
            .map_err(|_| AppError::Unauthenticated("Authentication required.".into()).to_graphql())?;
        state.require(self.0).map(|_| ()).map_err(|e| e.to_graphql())
    }
}
