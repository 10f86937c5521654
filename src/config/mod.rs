//! Configuration, the ground floor: the only reader of the environment, importing nothing of
//! the crate. clap types each setting as it parses (`settings.rs`); `resolve` checks what
//! settings mean together and hands out one section per part of the service. A bad value stops
//! the process with one line naming its variable. Secrets stay `SecretString`, and the token
//! keys are decoded here, once.

mod dev_secrets;
mod limits;
mod settings;
mod split;
mod values;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use url::Url;

use crate::plaid::KeyLookupPolicy;

pub use dev_secrets::dev_secrets_path;
pub use limits::{GraphqlLimits, HttpLimits, RateLimits, TrustedDocuments, WsLimits};
pub use settings::{
    DEFAULT_DATABASE_URL, DatabaseUrl, GatewaySettings, IdentitySettings, JwtAlgorithm, ListenerSettings, LogFormat,
    PlaidEnv, ProxyHeader, PublicSettings, RpcAuthSettings, RpcClientSettings, RpcServerSettings, Settings,
    StoreSettings, TrustedMode, otlp_endpoint,
};

pub use split::{
    RpcClientConfig, RpcServerConfig, RpcTls, SplitGatewayConfig, SplitIdentityConfig, identity_only_variable,
};

pub use values::{decode_key, parse_networks};

use settings::given;
use values::{https_or_local, key, list, nonempty};

/// A configuration error: one line naming the variable and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

fn bad(var: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{var} {what}"))
}

/// The resolved configuration of `serve`: both rooms in one process.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub identity: IdentityConfig,
}

/// The public gateway: its listener, how callers are verified, what a request may be.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// GraphQL, GraphiQL, health.
    pub public: SocketAddr,
    pub auth: JwtConfig,
    pub http: HttpLimits,
    pub rate: RateLimits,
    pub graphql: GraphqlLimits,
    pub ws: WsLimits,
    /// `DEMO_ENABLED`, when set.
    pub demo: Option<bool>,
    /// `GRAPHIQL_ENABLED`: GraphiQL at a GET without a query.
    pub graphiql: bool,
}

/// The identity service: the system of record and its internal listener.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Plaid webhooks, metrics.
    pub internal: SocketAddr,
    pub db: DbConfig,
    pub custody: TokenKeys,
    pub plaid: PlaidTarget,
    pub link: LinkConfig,
    pub jobs: JobsConfig,
    /// How lookups of Plaid's webhook keys are rationed.
    pub webhook_keys: KeyLookupPolicy,
    pub listener: ListenerLimits,
    /// Where generated development secrets live, when they are used.
    pub dev_secrets_path: Option<PathBuf>,
}

/// What every listener of a process shares.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub header_read_timeout: Duration,
    /// Per-address limits count an IPv6 client by this many leading bits.
    pub ipv6_prefix: u8,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: DatabaseUrl,
    /// PostgreSQL cancels a statement that runs longer.
    pub statement_timeout: Duration,
}

/// How caller tokens are verified.
#[derive(Clone)]
pub enum JwtKey {
    Secret(SecretString),
    PublicKeyPem(String),
    Jwks(Url),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret([redacted])"),
            JwtKey::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
            JwtKey::Jwks(u) => write!(f, "Jwks({u})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub key: JwtKey,
    pub algorithm: jsonwebtoken::Algorithm,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub max_lifetime: Option<Duration>,
    /// The least time between two JWKS fetches.
    pub jwks_min_refresh: Duration,
    /// The secret was generated for local development.
    pub development: bool,
}

/// An AES-256 key, decoded.
pub type TokenKey = SecretBox<[u8; 32]>;

/// The keys of access-token custody: the one that seals, and those that still open tokens
/// sealed before a rotation, each with the id it had.
#[derive(Debug, Clone)]
pub struct TokenKeys {
    pub current: std::sync::Arc<TokenKey>,
    pub current_id: Option<String>,
    pub previous: Vec<(Option<String>, std::sync::Arc<TokenKey>)>,
}

/// Where Plaid is.
#[derive(Clone)]
pub enum PlaidTarget {
    /// No credentials: the in-process emulator on this address.
    Emulator(SocketAddr),
    Remote {
        base_url: Url,
        client_id: String,
        secret: SecretString,
        proxy_headers: Vec<(String, SecretString)>,
    },
}

impl std::fmt::Debug for PlaidTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaidTarget::Emulator(a) => write!(f, "Emulator({a})"),
            PlaidTarget::Remote { base_url, client_id, .. } => {
                write!(f, "Remote {{ base_url: {base_url}, client_id: {client_id}, secret: [redacted] }}")
            }
        }
    }
}

/// What Link sessions and items are created with.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub client_name: String,
    pub language: String,
    pub products: Vec<String>,
    pub country_codes: Vec<String>,
    pub redirect_uri: Option<String>,
    pub android_package_name: Option<String>,
    pub webhook_url: Option<String>,
}

/// The identity service's background work and its timings.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Job workers in this process (0: none).
    pub workers: usize,
    /// How long a worker holds a job between heartbeats.
    pub lease: Duration,
    /// Minimum time between two `refreshPlaidBankConnections` of one user.
    pub refresh_interval: Duration,
    /// The reconciler re-syncs a connection not synced for this long.
    pub resync_after: Duration,
    /// The reconciler checks each item with Plaid this often.
    pub item_check_interval: Duration,
    /// How often the reconciler runs.
    pub reconcile_interval: Duration,
    /// How long a caller's account list may be served from memory (0: never). Writes in this
    /// process invalidate it at once; this bounds staleness from other processes.
    pub read_cache: Duration,
    /// How long connection events are kept for subscribers that resume.
    pub event_retention: Duration,
    /// How often a running completion renews its claim on its public token.
    pub completion_heartbeat: Duration,
    /// How long after its last renewal a completion's claim is dead and may be taken over.
    pub completion_stale: Duration,
}

/// Where the demo app is served; offline, `bankgraph serve` makes it the OAuth redirect URI.
pub const DEMO_PATH: &str = "/demo";
/// Offline (the emulator) without the demo's address, `PLAID_REDIRECT_URI` defaults to Plaid
/// quickstart's documented development value.
pub const OFFLINE_REDIRECT_URI: &str = "http://localhost:8000/oauth-response.html";
/// Offline, `PLAID_ANDROID_PACKAGE_NAME` defaults to this.
pub const OFFLINE_ANDROID_PACKAGE_NAME: &str = "com.example.bankgraph";

/// Development secrets, when some key is not configured: (JWT secret, token key).
type DevKeys = Option<(SecretString, SecretString)>;

impl Settings {
    /// Resolves and validates everything; generates development secrets when allowed.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let real_plaid = self.store.real_plaid()?;
        let explicit = self.public.explicit_jwt_keys()?;
        let token_key = given(&self.store.token_encryption_key);
        if real_plaid {
            let mut missing = Vec::new();
            if token_key.is_none() {
                missing.push(MISSING_TOKEN_KEY);
            }
            if explicit.is_empty() {
                missing
                    .push("one of JWT_SECRET, JWT_PUBLIC_KEY_PEM or JWKS_URL (the development JWT secret is refused)");
            }
            if !missing.is_empty() {
                return Err(ConfigError(format!("{REAL_PLAID_NEEDS}: {}", missing.join("; "))));
            }
        }
        let needs_dev = explicit.is_empty() || token_key.is_none();
        let dev_path = dev_secrets_path(&self.store.database_url);
        let dev = if needs_dev { Some(dev_secrets::load_or_create_dev_secrets(&dev_path)?) } else { None };
        let mut config = Config {
            gateway: self.public.gateway(&self.listener, &dev, explicit.is_empty())?,
            identity: self.store.identity(&self.listener, real_plaid, &dev, needs_dev.then_some(dev_path))?,
        };
        // Offline, an OAuth bank sends the user back to the demo, which finishes Link there.
        let bind = self.public.bind_addr;
        if !real_plaid
            && nonempty(&self.store.plaid_redirect_uri).is_none()
            && self.public.demo_enabled != Some(false)
            && bind.port() != 0
        {
            let host = if bind.ip().is_unspecified() {
                std::net::SocketAddr::from(([127, 0, 0, 1], bind.port()))
            } else {
                bind
            };
            config.identity.link.redirect_uri = Some(format!("http://{host}{DEMO_PATH}"));
        }
        Ok(config)
    }
}

const REAL_PLAID_NEEDS: &str = "PLAID_CLIENT_ID and PLAID_SECRET are set, so bankgraph talks to real Plaid and needs";
const MISSING_TOKEN_KEY: &str = "TOKEN_ENCRYPTION_KEY (32 random bytes, base64: `openssl rand -base64 32`)";

impl ListenerSettings {
    fn limits(&self) -> ListenerLimits {
        ListenerLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            ipv6_prefix: self.rate_limit_ipv6_prefix,
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
        }
    }
}

impl PublicSettings {
    fn gateway(
        &self,
        listener: &ListenerSettings,
        dev: &DevKeys,
        development: bool,
    ) -> Result<GatewayConfig, ConfigError> {
        Ok(GatewayConfig {
            public: self.bind_addr,
            demo: self.demo_enabled,
            graphiql: self.graphiql_enabled,
            auth: self.auth(dev, development)?,
            http: self.http(listener)?,
            ws: WsLimits {
                max_sockets: self.ws_max_sockets,
                max_sockets_per_ip: self.ws_max_sockets_per_ip,
                max_sockets_per_user: self.ws_max_sockets_per_user,
                max_subscriptions_per_socket: self.ws_max_subscriptions_per_socket,
                init_timeout: Duration::from_secs(self.ws_init_timeout_seconds),
                ping_interval: Duration::from_secs(self.ws_ping_interval_seconds),
                idle_timeout: Duration::from_secs(self.ws_idle_timeout_seconds),
                send_timeout: Duration::from_secs(self.ws_send_timeout_seconds),
            },
            rate: RateLimits {
                per_ip_per_second: self.rate_limit_per_ip,
                per_user_per_second: self.rate_limit_per_user,
                sensitive_per_minute: self.rate_limit_sensitive_per_minute,
                ipv6_prefix: listener.rate_limit_ipv6_prefix,
            },
            graphql: GraphqlLimits {
                introspection: self.graphql_introspection,
                max_query_length: self.max_query_length,
                max_depth: self.graphql_max_depth,
                max_complexity: self.graphql_max_complexity,
                max_aliases: self.graphql_max_aliases,
                max_directives: self.graphql_max_directives,
                max_page_offset: self.max_page_offset,
                trusted_documents: self.trusted_documents()?,
            },
        })
    }

    /// The JWT key settings given (at most one may be).
    fn explicit_jwt_keys(&self) -> Result<Vec<&'static str>, ConfigError> {
        let explicit: Vec<&str> = [
            given(&self.jwt_secret).map(|_| "JWT_SECRET"),
            nonempty(&self.jwt_public_key_pem).map(|_| "JWT_PUBLIC_KEY_PEM"),
            nonempty(&self.jwks_url).map(|_| "JWKS_URL"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if explicit.len() > 1 {
            return Err(ConfigError(format!("set only one of {}", explicit.join(", "))));
        }
        Ok(explicit)
    }

    fn auth(&self, dev: &DevKeys, development: bool) -> Result<JwtConfig, ConfigError> {
        use jsonwebtoken::Algorithm;
        let key = if let Some(s) = given(&self.jwt_secret) {
            if s.len() < 32 {
                return Err(bad("JWT_SECRET", "must be at least 32 characters"));
            }
            JwtKey::Secret(SecretString::from(s.to_string()))
        } else if let Some(pem) = nonempty(&self.jwt_public_key_pem) {
            let text = if pem.starts_with("-----BEGIN") {
                pem.to_string()
            } else {
                std::fs::read_to_string(pem)
                    .map_err(|e| bad("JWT_PUBLIC_KEY_PEM", format!("is neither PEM text nor a readable file: {e}")))?
            };
            JwtKey::PublicKeyPem(text)
        } else if let Some(u) = nonempty(&self.jwks_url) {
            JwtKey::Jwks(https_or_local("JWKS_URL", u)?)
        } else {
            let (jwt, _) = dev.as_ref().ok_or_else(|| ConfigError("internal: development secrets missing".into()))?;
            JwtKey::Secret(jwt.clone())
        };
        let algorithm = match (&key, self.jwt_algorithm.map(Algorithm::from)) {
            (JwtKey::Secret(_), None | Some(Algorithm::HS256)) => Algorithm::HS256,
            (JwtKey::Secret(_), Some(_)) => return Err(bad("JWT_ALGORITHM", "must be HS256 with JWT_SECRET")),
            (_, Some(Algorithm::HS256)) => {
                return Err(bad("JWT_ALGORITHM", "must be RS256 or ES256 with a public key or JWKS"));
            }
            (_, Some(a)) => a,
            (_, None) => Algorithm::RS256,
        };
        if let JwtKey::PublicKeyPem(pem) = &key {
            let ok = match algorithm {
                Algorithm::ES256 => jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()).is_ok(),
                _ => jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok(),
            };
            if !ok {
                return Err(bad("JWT_PUBLIC_KEY_PEM", format!("is not a valid {algorithm:?} public key")));
            }
        }
        Ok(JwtConfig {
            key,
            algorithm,
            issuer: nonempty(&self.jwt_issuer).map(str::to_string),
            audience: nonempty(&self.jwt_audience).map(str::to_string),
            max_lifetime: (self.jwt_max_lifetime_seconds > 0)
                .then(|| Duration::from_secs(self.jwt_max_lifetime_seconds)),
            jwks_min_refresh: Duration::from_secs(self.jwks_min_refresh_seconds),
            development,
        })
    }

    /// Reads the persisted-documents manifest: graphql-codegen's `{"<sha256>": "<document>"}`
    /// or Apollo's `{"format": "apollo-persisted-query-manifest", "operations": [{"id", "body"}]}`.
    /// Every id must be the SHA-256 of its text, so a client's hash finds exactly that text.
    fn trusted_documents(&self) -> Result<Option<TrustedDocuments>, ConfigError> {
        use sha2::Digest;
        let Some(path) = nonempty(&self.trusted_documents) else { return Ok(None) };
        let var = "TRUSTED_DOCUMENTS";
        let text = std::fs::read_to_string(path).map_err(|e| bad(var, format!("cannot be read ({path}): {e}")))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(var, format!("is not JSON ({path}): {e}")))?;
        let pairs: Vec<(String, String)> = match json.get("operations").and_then(|o| o.as_array()) {
            Some(ops) => ops
                .iter()
                .map(|op| match (op["id"].as_str(), op["body"].as_str()) {
                    (Some(id), Some(body)) => Ok((id.to_string(), body.to_string())),
                    _ => Err(bad(var, "has an operation without a string id and body")),
                })
                .collect::<Result<_, _>>()?,
            None => json
                .as_object()
                .ok_or_else(|| bad(var, "must be an object of documents by hash, or an Apollo manifest"))?
                .iter()
                .map(|(id, body)| match body.as_str() {
                    Some(b) => Ok((id.clone(), b.to_string())),
                    None => Err(bad(var, format!("has a non-string document under {id:?}"))),
                })
                .collect::<Result<_, _>>()?,
        };
        let mut documents = std::collections::HashMap::new();
        for (id, body) in pairs {
            let id = id.strip_prefix("sha256:").unwrap_or(&id).to_ascii_lowercase();
            if hex::encode(sha2::Sha256::digest(body.as_bytes())) != id {
                return Err(bad(var, format!("has a document whose id is not the SHA-256 of its text: {id}")));
            }
            documents.insert(id, body);
        }
        if documents.is_empty() {
            return Err(bad(var, "lists no documents"));
        }
        Ok(Some(TrustedDocuments { mode: self.trusted_documents_mode, documents }))
    }

    fn http(&self, listener: &ListenerSettings) -> Result<HttpLimits, ConfigError> {
        let cors_origins: Vec<String> =
            self.cors_allowed_origins.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        for o in &cors_origins {
            let u = Url::parse(o)
                .map_err(|_| bad("CORS_ALLOWED_ORIGINS", format!("has an origin that is not a URL: {o:?}")))?;
            if u.path() != "/" || u.query().is_some() || o.ends_with('/') {
                return Err(bad(
                    "CORS_ALLOWED_ORIGINS",
                    format!("must list origins like https://app.example.com, got {o:?}"),
                ));
            }
        }
        Ok(HttpLimits {
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            header_read_timeout: Duration::from_secs(listener.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(listener.idle_timeout_seconds),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_seconds),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            ipv6_prefix: listener.rate_limit_ipv6_prefix,
            trusted_proxies: parse_networks(&self.trusted_proxies).map_err(|e| bad("TRUSTED_PROXIES", e))?,
            trusted_proxy_header: self.trusted_proxy_header,
            cors_origins,
            shutdown_grace: Duration::from_secs(listener.shutdown_grace_seconds),
        })
    }
}

impl StoreSettings {
    fn identity(
        &self,
        listener: &ListenerSettings,
        real_plaid: bool,
        dev: &DevKeys,
        dev_secrets_path: Option<PathBuf>,
    ) -> Result<IdentityConfig, ConfigError> {
        if self.link_completion_stale_seconds <= self.link_completion_heartbeat_seconds {
            return Err(bad(
                "LINK_COMPLETION_STALE_SECONDS",
                "must be more than LINK_COMPLETION_HEARTBEAT_SECONDS (a running completion would be taken over)",
            ));
        }
        Ok(IdentityConfig {
            internal: listener.internal_bind_addr,
            db: DbConfig {
                url: self.database_url.clone(),
                statement_timeout: Duration::from_secs(self.database_statement_timeout_seconds),
            },
            custody: self.custody(dev)?,
            plaid: self.plaid(real_plaid)?,
            link: self.link(real_plaid)?,
            jobs: JobsConfig {
                workers: self.job_workers,
                lease: Duration::from_secs(self.job_lease_seconds),
                refresh_interval: Duration::from_secs(self.refresh_min_interval_seconds),
                resync_after: Duration::from_secs(self.resync_after_seconds),
                item_check_interval: Duration::from_secs(self.item_check_interval_seconds),
                reconcile_interval: Duration::from_secs(self.reconcile_interval_seconds),
                read_cache: Duration::from_secs(self.read_cache_seconds),
                event_retention: Duration::from_secs(self.event_retention_hours * 3600),
                completion_heartbeat: Duration::from_secs(self.link_completion_heartbeat_seconds),
                completion_stale: Duration::from_secs(self.link_completion_stale_seconds),
            },
            webhook_keys: KeyLookupPolicy {
                // clap refuses 0 for both.
                burst: NonZeroU32::new(self.webhook_key_lookup_burst).unwrap_or(NonZeroU32::MIN),
                per_minute: NonZeroU32::new(self.webhook_key_lookups_per_minute).unwrap_or(NonZeroU32::MIN),
                unknown_kid_ttl: Duration::from_secs(self.webhook_unknown_kid_seconds),
                backoff_min: Duration::from_millis(self.webhook_key_backoff_min_ms),
                backoff_max: Duration::from_secs(self.webhook_key_backoff_max_seconds),
            },
            listener: listener.limits(),
            dev_secrets_path,
        })
    }

    /// Whether Plaid credentials are set (both, or neither).
    fn real_plaid(&self) -> Result<bool, ConfigError> {
        match (nonempty(&self.plaid_client_id), given(&self.plaid_secret)) {
            (Some(_), Some(_)) => Ok(true),
            (None, None) => Ok(false),
            (Some(_), None) => Err(bad("PLAID_SECRET", "must be set when PLAID_CLIENT_ID is set")),
            (None, Some(_)) => Err(bad("PLAID_CLIENT_ID", "must be set when PLAID_SECRET is set")),
        }
    }

    fn custody(&self, dev: &DevKeys) -> Result<TokenKeys, ConfigError> {
        let current = match given(&self.token_encryption_key) {
            Some(k) => decode_key(k).map_err(|e| bad("TOKEN_ENCRYPTION_KEY", e))?,
            None => {
                let (_, k) = dev.as_ref().ok_or_else(|| ConfigError("internal: development key missing".into()))?;
                decode_key(k.expose_secret())
                    .map_err(|e| ConfigError(format!("development secrets file: the key {e}")))?
            }
        };
        let previous = match given(&self.token_encryption_previous_keys) {
            None => vec![],
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|entry| {
                    // `id:key` or `key` (base64 has no colon).
                    let (id, k) = match entry.split_once(':') {
                        Some((id, k)) if !id.trim().is_empty() => (Some(id.trim().to_string()), k.trim()),
                        Some(_) => return Err(bad("TOKEN_ENCRYPTION_PREVIOUS_KEYS", "has an empty key id before ':'")),
                        None => (None, entry),
                    };
                    let k = decode_key(k)
                        .map_err(|e| bad("TOKEN_ENCRYPTION_PREVIOUS_KEYS", format!("has a key that {e}")))?;
                    Ok((id, key(k)))
                })
                .collect::<Result<_, ConfigError>>()?,
        };
        let keys = TokenKeys {
            current: key(current),
            current_id: nonempty(&self.token_encryption_key_id).map(str::to_string),
            previous,
        };
        values::check_key_ids(&keys)?;
        Ok(keys)
    }

    fn plaid(&self, real_plaid: bool) -> Result<PlaidTarget, ConfigError> {
        if !real_plaid {
            crate::emulator::check_bind(self.plaid_emulator_addr, self.emulator_allow_remote).map_err(ConfigError)?;
            return Ok(PlaidTarget::Emulator(self.plaid_emulator_addr));
        }
        let base_url = match nonempty(&self.plaid_base_url) {
            Some(u) => https_or_local("PLAID_BASE_URL", u)?,
            None => Url::parse(self.plaid_env.base_url()).map_err(|e| ConfigError(e.to_string()))?,
        };
        let proxy_headers = match (nonempty(&self.plaid_proxy_client_id), given(&self.plaid_proxy_api_key)) {
            (Some(id), Some(key)) => vec![
                ("Fuse-Client-Id".to_string(), SecretString::from(id.to_string())),
                ("Fuse-Api-Key".to_string(), SecretString::from(key.to_string())),
            ],
            (None, None) => vec![],
            _ => return Err(bad("PLAID_PROXY_API_KEY", "and PLAID_PROXY_CLIENT_ID must be set together")),
        };
        Ok(PlaidTarget::Remote {
            base_url,
            client_id: nonempty(&self.plaid_client_id).unwrap_or_default().to_string(),
            secret: SecretString::from(given(&self.plaid_secret).unwrap_or_default().to_string()),
            proxy_headers,
        })
    }

    fn link(&self, real_plaid: bool) -> Result<LinkConfig, ConfigError> {
        let products = list("PLAID_PRODUCTS", &self.plaid_products)?;
        if products.iter().any(|p| p == "balance") {
            return Err(bad("PLAID_PRODUCTS", "must not contain balance (Plaid enables it with any product)"));
        }
        let country_codes: Vec<String> =
            list("PLAID_COUNTRY_CODES", &self.plaid_country_codes)?.into_iter().map(|c| c.to_uppercase()).collect();
        if let Some(c) = country_codes.iter().find(|c| c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic())) {
            return Err(bad("PLAID_COUNTRY_CODES", format!("must be two-letter codes, got {c:?}")));
        }
        let redirect_uri = match nonempty(&self.plaid_redirect_uri) {
            Some(u) => {
                let url = https_or_local("PLAID_REDIRECT_URI", u)?;
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(bad("PLAID_REDIRECT_URI", "must not have a query string or fragment"));
                }
                Some(u.to_string())
            }
            // Offline, the mobile and web flows work out of the box (the emulator accepts any
            // redirect); with real Plaid the URI must be one registered in the Dashboard.
            None => (!real_plaid).then(|| OFFLINE_REDIRECT_URI.to_string()),
        };
        let webhook_url = match nonempty(&self.plaid_webhook_url) {
            Some(u) => {
                Url::parse(u).map_err(|_| bad("PLAID_WEBHOOK_URL", format!("must be a URL, got {u:?}")))?;
                Some(u.to_string())
            }
            None => None,
        };
        if self.plaid_client_name.trim().is_empty() || self.plaid_client_name.chars().count() > 30 {
            return Err(bad("PLAID_CLIENT_NAME", "must be 1 to 30 characters"));
        }
        Ok(LinkConfig {
            client_name: self.plaid_client_name.trim().to_string(),
            language: self.plaid_language.trim().to_string(),
            products,
            country_codes,
            redirect_uri,
            android_package_name: nonempty(&self.plaid_android_package_name)
                .map(str::to_string)
                .or_else(|| (!real_plaid).then(|| OFFLINE_ANDROID_PACKAGE_NAME.to_string())),
            webhook_url,
        })
    }
}

#[cfg(test)]
mod tests;
