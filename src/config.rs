//! Configuration: the only reader of the environment. Values are parsed once into types; a
//! bad value stops the process with one line naming the variable. Secrets stay `SecretString`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::identity::crypto::decode_key;

/// Settings of `bankgraph serve` (and of `token` and `migrate`), from flags or the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Public listener: GraphQL, GraphiQL, health.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8000")]
    pub bind_addr: String,
    /// Internal listener: Plaid webhooks, metrics. Never expose it publicly.
    #[arg(long, env = "INTERNAL_BIND_ADDR", default_value = "127.0.0.1:8001")]
    pub internal_bind_addr: String,
    /// sqlite://path (embedded default) or postgres://user@host/db.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://bankgraph.db")]
    pub database_url: String,
    /// PostgreSQL cancels a statement that runs longer than this, in seconds.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_SECONDS", default_value = "10")]
    pub database_statement_timeout_seconds: String,
    /// HS256 shared secret for caller tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// RS256/ES256 public key (PEM text, or a path to a PEM file).
    #[arg(long, env = "JWT_PUBLIC_KEY_PEM")]
    pub jwt_public_key_pem: Option<String>,
    /// JWKS URL for caller tokens (cached; refreshed on an unknown kid).
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Seconds between two fetches of the JWKS (an unknown kid triggers one).
    #[arg(long, env = "JWKS_MIN_REFRESH_SECONDS", default_value = "30")]
    pub jwks_min_refresh_seconds: String,
    /// The one JWT algorithm accepted: HS256, RS256 or ES256 (default HS256 with a secret, RS256 otherwise).
    #[arg(long, env = "JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,
    /// Required `iss` claim, if set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The longest a caller token may be valid for, in seconds (`exp` from now and from
    /// `iat`); 0 for no limit.
    #[arg(long, env = "JWT_MAX_LIFETIME_SECONDS", default_value = "86400")]
    pub jwt_max_lifetime_seconds: String,
    /// 32 random bytes, base64: the AES-256-GCM key for Plaid access tokens.
    #[arg(long, env = "TOKEN_ENCRYPTION_KEY", hide_env_values = true)]
    pub token_encryption_key: Option<String>,
    /// Id stored with each sealed token (default: derived from the key).
    #[arg(long, env = "TOKEN_ENCRYPTION_KEY_ID")]
    pub token_encryption_key_id: Option<String>,
    /// Comma-separated keys that still open tokens sealed before a rotation: `id:base64key`
    /// (the TOKEN_ENCRYPTION_KEY_ID the key had), or `base64key` for a key that had none.
    #[arg(long, env = "TOKEN_ENCRYPTION_PREVIOUS_KEYS", hide_env_values = true)]
    pub token_encryption_previous_keys: Option<String>,
    /// Plaid client id; with PLAID_SECRET, bankgraph talks to Plaid instead of the emulator.
    #[arg(long, env = "PLAID_CLIENT_ID")]
    pub plaid_client_id: Option<String>,
    #[arg(long, env = "PLAID_SECRET", hide_env_values = true)]
    pub plaid_secret: Option<String>,
    /// sandbox, development or production (picks the base URL unless PLAID_BASE_URL is set).
    #[arg(long, env = "PLAID_ENV", default_value = "sandbox")]
    pub plaid_env: String,
    /// Comma-separated Link products.
    #[arg(long, env = "PLAID_PRODUCTS", default_value = "transactions")]
    pub plaid_products: String,
    /// Comma-separated country codes for Link.
    #[arg(long, env = "PLAID_COUNTRY_CODES", default_value = "US")]
    pub plaid_country_codes: String,
    /// OAuth redirect URI (iOS and web).
    #[arg(long, env = "PLAID_REDIRECT_URI")]
    pub plaid_redirect_uri: Option<String>,
    /// Android package name (Android OAuth).
    #[arg(long, env = "PLAID_ANDROID_PACKAGE_NAME")]
    pub plaid_android_package_name: Option<String>,
    /// Where Plaid sends webhooks (the internal listener, behind your ingress).
    #[arg(long, env = "PLAID_WEBHOOK_URL")]
    pub plaid_webhook_url: Option<String>,
    /// Plaid (or a Plaid-compatible proxy) base URL; overrides PLAID_ENV.
    #[arg(long, env = "PLAID_BASE_URL")]
    pub plaid_base_url: Option<String>,
    /// The app name Link shows (at most 30 characters).
    #[arg(long, env = "PLAID_CLIENT_NAME", default_value = "bankgraph")]
    pub plaid_client_name: String,
    /// Link language.
    #[arg(long, env = "PLAID_LANGUAGE", default_value = "en")]
    pub plaid_language: String,
    /// Proxy (seed 000) client id header; with PLAID_PROXY_API_KEY, sent on every Plaid call.
    #[arg(long, env = "PLAID_PROXY_CLIENT_ID")]
    pub plaid_proxy_client_id: Option<String>,
    #[arg(long, env = "PLAID_PROXY_API_KEY", hide_env_values = true)]
    pub plaid_proxy_api_key: Option<String>,
    /// Where the in-process emulator listens when no Plaid credentials are set.
    #[arg(long, env = "PLAID_EMULATOR_ADDR", default_value = "127.0.0.1:8002")]
    pub plaid_emulator_addr: String,
    /// Minimum seconds between two refreshPlaidBankConnections of one user.
    #[arg(long, env = "REFRESH_MIN_INTERVAL_SECONDS", default_value = "60")]
    pub refresh_min_interval_seconds: String,
    /// Serve introspection (on for client codegen; turn off in production if you prefer).
    #[arg(long, env = "GRAPHQL_INTROSPECTION", default_value = "true")]
    pub graphql_introspection: String,
    /// Background job workers in this process (syncs, webhooks, the reconciler); 0 runs none.
    #[arg(long, env = "JOB_WORKERS", default_value = "2")]
    pub job_workers: String,
    /// Seconds a worker holds a job between heartbeats; a job of a dead process is taken over
    /// after this.
    #[arg(long, env = "JOB_LEASE_SECONDS", default_value = "60")]
    pub job_lease_seconds: String,
    /// Largest request body accepted, in bytes (checked before parsing).
    #[arg(long, env = "MAX_BODY_BYTES", default_value = "262144")]
    pub max_body_bytes: String,
    /// Longest GraphQL query text accepted, in characters.
    #[arg(long, env = "MAX_QUERY_LENGTH", default_value = "20000")]
    pub max_query_length: String,
    /// Deepest selection accepted (the standard introspection query needs 13).
    #[arg(long, env = "GRAPHQL_MAX_DEPTH", default_value = "15")]
    pub graphql_max_depth: String,
    /// Largest query complexity accepted (each Plaid field costs 10, others 1).
    #[arg(long, env = "GRAPHQL_MAX_COMPLEXITY", default_value = "500")]
    pub graphql_max_complexity: String,
    /// Most aliases in one request.
    #[arg(long, env = "GRAPHQL_MAX_ALIASES", default_value = "15")]
    pub graphql_max_aliases: String,
    /// Most directives in one request.
    #[arg(long, env = "GRAPHQL_MAX_DIRECTIVES", default_value = "10")]
    pub graphql_max_directives: String,
    /// Seconds a request may take before it is answered with a timeout.
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", default_value = "30")]
    pub request_timeout_seconds: String,
    /// Seconds a client has to send its request headers.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value = "10")]
    pub header_read_timeout_seconds: String,
    /// Seconds a kept-alive connection may idle between requests (HTTP/1.1 and HTTP/2).
    #[arg(long, env = "IDLE_TIMEOUT_SECONDS", default_value = "60")]
    pub idle_timeout_seconds: String,
    /// Seconds a client has to send its request body (within REQUEST_TIMEOUT_SECONDS).
    #[arg(long, env = "BODY_READ_TIMEOUT_SECONDS", default_value = "10")]
    pub body_read_timeout_seconds: String,
    /// Open connections the public listener accepts (also bounded by the open-file limit).
    #[arg(long, env = "MAX_CONNECTIONS", default_value = "10000")]
    pub max_connections: String,
    /// Open connections one client IP may hold (trusted proxies are exempt).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value = "256")]
    pub max_connections_per_ip: String,
    /// Comma-separated CIDRs of load balancers whose Forwarded / X-Forwarded-For is believed
    /// (empty: the socket peer is the client).
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Requests per second allowed per client IP (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value = "50")]
    pub rate_limit_per_ip: String,
    /// Requests per second allowed per caller (token `sub`) (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_USER", default_value = "20")]
    pub rate_limit_per_user: String,
    /// Per minute and caller, for createPlaidLinkToken, completePlaidLink and refreshPlaidBankConnections (0: no limit).
    #[arg(long, env = "RATE_LIMIT_SENSITIVE_PER_MINUTE", default_value = "10")]
    pub rate_limit_sensitive_per_minute: String,
    /// Comma-separated origins allowed by CORS (empty: no cross-origin access).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,
    /// Seconds a caller's account list may be served from memory; writes in this process
    /// invalidate it at once, so this bounds staleness from other processes (0: no cache).
    #[arg(long, env = "READ_CACHE_SECONDS", default_value = "1")]
    pub read_cache_seconds: String,
    /// Seconds to finish in-flight requests and jobs after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value = "30")]
    pub shutdown_grace_seconds: String,
    /// Seconds between two runs of the reconciler.
    #[arg(long, env = "RECONCILE_INTERVAL_SECONDS", default_value = "3600")]
    pub reconcile_interval_seconds: String,
    /// The reconciler re-syncs a connection not synced for this many seconds.
    #[arg(long, env = "RESYNC_AFTER_SECONDS", default_value = "21600")]
    pub resync_after_seconds: String,
    /// The reconciler checks each item with Plaid (/item/get) this often, in seconds.
    #[arg(long, env = "ITEM_CHECK_INTERVAL_SECONDS", default_value = "86400")]
    pub item_check_interval_seconds: String,
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

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind_addr: SocketAddr,
    pub internal_bind_addr: SocketAddr,
    pub database_url: String,
    pub statement_timeout: Duration,
    pub jwt: JwtConfig,
    pub token_key: SecretString,
    pub token_key_id: Option<String>,
    /// Keys that still open tokens sealed before a rotation, each with the id it had.
    pub previous_token_keys: Vec<(Option<String>, SecretString)>,
    pub plaid: PlaidTarget,
    pub products: Vec<String>,
    pub country_codes: Vec<String>,
    pub redirect_uri: Option<String>,
    pub android_package_name: Option<String>,
    pub webhook_url: Option<String>,
    pub client_name: String,
    pub language: String,
    pub refresh_interval: Duration,
    pub introspection: bool,
    pub job_workers: usize,
    pub job_lease: Duration,
    pub read_cache: Duration,
    pub reconcile_interval: Duration,
    pub resync_after: Duration,
    pub item_check_interval: Duration,
    pub limits: HttpLimits,
    /// Where generated development secrets live, when they are used.
    pub dev_secrets_path: Option<PathBuf>,
}

/// What the public endpoint accepts.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_query_length: usize,
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_directives: usize,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub per_ip_per_second: u32,
    pub per_user_per_second: u32,
    pub sensitive_per_minute: u32,
    pub cors_origins: Vec<String>,
    pub shutdown_grace: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub trusted_proxies: crate::http::client_ip::TrustedProxies,
}

/// A configuration error: one line naming the variable and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

fn bad(var: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{var} {what}"))
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn addr(var: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| bad(var, format!("must be host:port such as 127.0.0.1:8000, got {v:?}")))
}

fn list(var: &str, v: &str) -> Result<Vec<String>, ConfigError> {
    let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err(bad(var, "must list at least one value"));
    }
    Ok(items)
}

fn https_or_local(var: &str, v: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(v).map_err(|_| bad(var, format!("must be a URL, got {v:?}")))?;
    let local = matches!(url.host_str(), Some("localhost") | Some("127.0.0.1") | Some("[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && local) {
        return Err(bad(var, "must be an https URL (http is allowed only for localhost)"));
    }
    Ok(url)
}

/// Development secrets, generated on first start and kept next to the database.
#[derive(serde::Serialize, serde::Deserialize)]
struct DevSecrets {
    jwt_secret: String,
    token_encryption_key: String,
}

/// Where development secrets for this database live: beside a SQLite file, or for a server
/// database in the user's own configuration directory, one file per database (never in the
/// working directory, which is often a checkout that others can read or commit).
pub fn dev_secrets_path(database_url: &str) -> PathBuf {
    let db_path = database_url.strip_prefix("sqlite://").or_else(|| database_url.strip_prefix("sqlite:"));
    match db_path.map(|p| p.split('?').next().unwrap_or(p)) {
        Some(p) if !p.is_empty() && p != ":memory:" => {
            let p = Path::new(p);
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let stem = p.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_else(|| "bankgraph".into());
            dir.join(format!("{stem}.dev-secrets.json"))
        }
        _ => {
            use sha2::Digest;
            let base = std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config"))
                })
                .unwrap_or_else(std::env::temp_dir);
            // Named after the database (its URL without a password), so two databases on one
            // machine do not share secrets.
            let name = crate::app::redact_url(database_url);
            let digest = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..8]);
            base.join("bankgraph").join(format!("dev-secrets-{digest}.json"))
        }
    }
}

/// Why a development secrets file must not be used: others can read it, or git tracks it (its
/// secret is then published with the repository, and tokens minted with it are accepted).
fn unsafe_secrets_file(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            return Some(format!(
                "{} can be read by other users (mode {:o}); run `chmod 600` on it or delete it to have new secrets made",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name()?;
    let tracked = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "--error-unmatch", "--"])
        .arg(name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tracked.then(|| {
        format!(
            "{} is tracked by git, so its secret is public; `git rm --cached` it, rotate anything it signed, and \
             delete it to have new secrets made",
            path.display()
        )
    })
}

fn load_or_create_dev_secrets(path: &Path) -> Result<(SecretString, SecretString), ConfigError> {
    if path.exists() {
        if let Some(why) = unsafe_secrets_file(path) {
            return Err(ConfigError(format!("development secrets refused: {why}")));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let s: DevSecrets = serde_json::from_str(&text)
            .map_err(|_| ConfigError(format!("{} is not a valid development secrets file", path.display())))?;
        return Ok((SecretString::from(s.jwt_secret), SecretString::from(s.token_encryption_key)));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|e| ConfigError(format!("cannot create {}: {e}", dir.display())))?;
    }
    use rand::RngCore;
    let mut jwt = [0u8; 32];
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut jwt);
    rand::rng().fill_bytes(&mut key);
    let s = DevSecrets { jwt_secret: STANDARD.encode(jwt), token_encryption_key: STANDARD.encode(key) };
    let text = serde_json::to_string_pretty(&s).map_err(|e| ConfigError(e.to_string()))?;
    write_private(path, &text).map_err(|e| ConfigError(format!("cannot write {}: {e}", path.display())))?;
    Ok((SecretString::from(s.jwt_secret), SecretString::from(s.token_encryption_key)))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(text.as_bytes())
}

impl Settings {
    /// Resolves and validates everything; generates development secrets when allowed.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let bind_addr = addr("BIND_ADDR", &self.bind_addr)?;
        let internal_bind_addr = addr("INTERNAL_BIND_ADDR", &self.internal_bind_addr)?;
        let database_url = self.database_url.trim().to_string();
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(bad("DATABASE_URL", "must start with sqlite:// or postgres://"));
        }

        let client_id = nonempty(&self.plaid_client_id);
        let secret = nonempty(&self.plaid_secret);
        let real_plaid = match (client_id, secret) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            (Some(_), None) => return Err(bad("PLAID_SECRET", "must be set when PLAID_CLIENT_ID is set")),
            (None, Some(_)) => return Err(bad("PLAID_CLIENT_ID", "must be set when PLAID_SECRET is set")),
        };

        let algorithm = match nonempty(&self.jwt_algorithm) {
            None => None,
            Some("HS256") => Some(jsonwebtoken::Algorithm::HS256),
            Some("RS256") => Some(jsonwebtoken::Algorithm::RS256),
            Some("ES256") => Some(jsonwebtoken::Algorithm::ES256),
            Some(other) => {
                return Err(bad("JWT_ALGORITHM", format!("must be HS256, RS256 or ES256, got {other:?}")));
            }
        };
        let explicit: Vec<&str> = [
            nonempty(&self.jwt_secret).map(|_| "JWT_SECRET"),
            nonempty(&self.jwt_public_key_pem).map(|_| "JWT_PUBLIC_KEY_PEM"),
            nonempty(&self.jwks_url).map(|_| "JWKS_URL"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if explicit.len() > 1 {
            return Err(ConfigError(format!("set only one of {}", explicit.join(", "))));
        }
        let token_key = nonempty(&self.token_encryption_key);

        if real_plaid {
            let mut missing = Vec::new();
            if token_key.is_none() {
                missing.push("TOKEN_ENCRYPTION_KEY (32 random bytes, base64: `openssl rand -base64 32`)");
            }
            if explicit.is_empty() {
                missing
                    .push("one of JWT_SECRET, JWT_PUBLIC_KEY_PEM or JWKS_URL (the development JWT secret is refused)");
            }
            if !missing.is_empty() {
                return Err(ConfigError(format!(
                    "PLAID_CLIENT_ID and PLAID_SECRET are set, so bankgraph talks to real Plaid and needs: {}",
                    missing.join("; ")
                )));
            }
        }

        let needs_dev = explicit.is_empty() || token_key.is_none();
        let dev_path = dev_secrets_path(&database_url);
        let dev = if needs_dev { Some(load_or_create_dev_secrets(&dev_path)?) } else { None };

        let jwt_key = if let Some(s) = nonempty(&self.jwt_secret) {
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
        let algorithm = match (&jwt_key, algorithm) {
            (JwtKey::Secret(_), None | Some(jsonwebtoken::Algorithm::HS256)) => jsonwebtoken::Algorithm::HS256,
            (JwtKey::Secret(_), Some(_)) => return Err(bad("JWT_ALGORITHM", "must be HS256 with JWT_SECRET")),
            (_, Some(jsonwebtoken::Algorithm::HS256)) => {
                return Err(bad("JWT_ALGORITHM", "must be RS256 or ES256 with a public key or JWKS"));
            }
            (_, Some(a)) => a,
            (_, None) => jsonwebtoken::Algorithm::RS256,
        };
        if let JwtKey::PublicKeyPem(pem) = &jwt_key {
            let ok = match algorithm {
                jsonwebtoken::Algorithm::ES256 => jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()).is_ok(),
                _ => jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok(),
            };
            if !ok {
                return Err(bad("JWT_PUBLIC_KEY_PEM", format!("is not a valid {algorithm:?} public key")));
            }
        }

        let token_key = match token_key {
            Some(k) => {
                decode_key(k).map_err(|e| bad("TOKEN_ENCRYPTION_KEY", e))?;
                SecretString::from(k.to_string())
            }
            None => dev
                .as_ref()
                .map(|(_, k)| k.clone())
                .ok_or_else(|| ConfigError("internal: development key missing".into()))?,
        };
        let previous_token_keys = match nonempty(&self.token_encryption_previous_keys) {
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
                    decode_key(k).map_err(|e| bad("TOKEN_ENCRYPTION_PREVIOUS_KEYS", format!("has a key that {e}")))?;
                    Ok((id, SecretString::from(k.to_string())))
                })
                .collect::<Result<_, ConfigError>>()?,
        };

        let plaid = if real_plaid {
            let base_url = match nonempty(&self.plaid_base_url) {
                Some(u) => https_or_local("PLAID_BASE_URL", u)?,
                None => {
                    let host = match self.plaid_env.as_str() {
                        "sandbox" => "https://sandbox.plaid.com",
                        "development" => "https://development.plaid.com",
                        "production" => "https://production.plaid.com",
                        other => {
                            return Err(bad(
                                "PLAID_ENV",
                                format!("must be sandbox, development or production, got {other:?}"),
                            ));
                        }
                    };
                    Url::parse(host).map_err(|e| ConfigError(e.to_string()))?
                }
            };
            let proxy_headers = match (nonempty(&self.plaid_proxy_client_id), nonempty(&self.plaid_proxy_api_key)) {
                (Some(id), Some(key)) => vec![
                    ("Fuse-Client-Id".to_string(), SecretString::from(id.to_string())),
                    ("Fuse-Api-Key".to_string(), SecretString::from(key.to_string())),
                ],
                (None, None) => vec![],
                _ => {
                    return Err(bad("PLAID_PROXY_API_KEY", "and PLAID_PROXY_CLIENT_ID must be set together"));
                }
            };
            PlaidTarget::Remote {
                base_url,
                client_id: client_id.unwrap_or_default().to_string(),
                secret: SecretString::from(secret.unwrap_or_default().to_string()),
                proxy_headers,
            }
        } else {
            PlaidTarget::Emulator(addr("PLAID_EMULATOR_ADDR", &self.plaid_emulator_addr)?)
        };

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
            None => None,
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
        let secs = |var: &str, v: &str, min: u64| -> Result<u64, ConfigError> {
            let n: u64 =
                v.trim().parse().map_err(|_| bad(var, format!("must be a whole number of seconds, got {v:?}")))?;
            if n < min {
                return Err(bad(var, format!("must be at least {min}")));
            }
            Ok(n)
        };
        let refresh_secs = secs("REFRESH_MIN_INTERVAL_SECONDS", &self.refresh_min_interval_seconds, 0)?;
        let lease_secs = secs("JOB_LEASE_SECONDS", &self.job_lease_seconds, 1)?;
        let reconcile_secs = secs("RECONCILE_INTERVAL_SECONDS", &self.reconcile_interval_seconds, 1)?;
        let resync_secs = secs("RESYNC_AFTER_SECONDS", &self.resync_after_seconds, 1)?;
        let check_secs = secs("ITEM_CHECK_INTERVAL_SECONDS", &self.item_check_interval_seconds, 1)?;
        let num = |var: &str, v: &str, min: u64, max: u64| -> Result<u64, ConfigError> {
            let n: u64 = v.trim().parse().map_err(|_| bad(var, format!("must be a whole number, got {v:?}")))?;
            if n < min || n > max {
                return Err(bad(var, format!("must be between {min} and {max}, got {n}")));
            }
            Ok(n)
        };
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
        let limits = HttpLimits {
            max_body_bytes: num("MAX_BODY_BYTES", &self.max_body_bytes, 1024, 64 << 20)? as usize,
            max_query_length: num("MAX_QUERY_LENGTH", &self.max_query_length, 100, 10_000_000)? as usize,
            max_depth: num("GRAPHQL_MAX_DEPTH", &self.graphql_max_depth, 2, 1000)? as usize,
            max_complexity: num("GRAPHQL_MAX_COMPLEXITY", &self.graphql_max_complexity, 10, 1_000_000)? as usize,
            max_aliases: num("GRAPHQL_MAX_ALIASES", &self.graphql_max_aliases, 0, 10_000)? as usize,
            max_directives: num("GRAPHQL_MAX_DIRECTIVES", &self.graphql_max_directives, 0, 10_000)? as usize,
            request_timeout: Duration::from_secs(num(
                "REQUEST_TIMEOUT_SECONDS",
                &self.request_timeout_seconds,
                1,
                3600,
            )?),
            header_read_timeout: Duration::from_secs(num(
                "HEADER_READ_TIMEOUT_SECONDS",
                &self.header_read_timeout_seconds,
                1,
                600,
            )?),
            per_ip_per_second: num("RATE_LIMIT_PER_IP", &self.rate_limit_per_ip, 0, 1_000_000)? as u32,
            per_user_per_second: num("RATE_LIMIT_PER_USER", &self.rate_limit_per_user, 0, 1_000_000)? as u32,
            sensitive_per_minute: num(
                "RATE_LIMIT_SENSITIVE_PER_MINUTE",
                &self.rate_limit_sensitive_per_minute,
                0,
                1_000_000,
            )? as u32,
            cors_origins,
            shutdown_grace: Duration::from_secs(num("SHUTDOWN_GRACE_SECONDS", &self.shutdown_grace_seconds, 0, 3600)?),
            idle_timeout: Duration::from_secs(num("IDLE_TIMEOUT_SECONDS", &self.idle_timeout_seconds, 1, 3600)?),
            body_read_timeout: Duration::from_secs(num(
                "BODY_READ_TIMEOUT_SECONDS",
                &self.body_read_timeout_seconds,
                1,
                600,
            )?),
            max_connections: num("MAX_CONNECTIONS", &self.max_connections, 1, 10_000_000)? as usize,
            max_connections_per_ip: num("MAX_CONNECTIONS_PER_IP", &self.max_connections_per_ip, 1, 10_000_000)?
                as usize,
            trusted_proxies: crate::http::client_ip::TrustedProxies::parse(&self.trusted_proxies)
                .map_err(|e| bad("TRUSTED_PROXIES", e))?,
        };
        let job_workers: usize =
            self.job_workers.trim().parse().ok().filter(|n| *n <= 64).ok_or_else(|| {
                bad("JOB_WORKERS", format!("must be a number from 0 to 64, got {:?}", self.job_workers))
            })?;
        let introspection = match self.graphql_introspection.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            other => {
                return Err(bad("GRAPHQL_INTROSPECTION", format!("must be true or false, got {other:?}")));
            }
        };

        Ok(Config {
            bind_addr,
            internal_bind_addr,
            database_url,
            statement_timeout: Duration::from_secs(num(
                "DATABASE_STATEMENT_TIMEOUT_SECONDS",
                &self.database_statement_timeout_seconds,
                1,
                3600,
            )?),
            jwt: JwtConfig {
                key: jwt_key,
                algorithm,
                issuer: nonempty(&self.jwt_issuer).map(str::to_string),
                audience: nonempty(&self.jwt_audience).map(str::to_string),
                max_lifetime: match num("JWT_MAX_LIFETIME_SECONDS", &self.jwt_max_lifetime_seconds, 0, 315_360_000)? {
                    0 => None,
                    n => Some(Duration::from_secs(n)),
                },
                jwks_min_refresh: Duration::from_secs(num(
                    "JWKS_MIN_REFRESH_SECONDS",
                    &self.jwks_min_refresh_seconds,
                    1,
                    86_400,
                )?),
                development: explicit.is_empty(),
            },
            token_key,
            token_key_id: nonempty(&self.token_encryption_key_id).map(str::to_string),
            previous_token_keys,
            plaid,
            products,
            country_codes,
            redirect_uri,
            android_package_name: nonempty(&self.plaid_android_package_name).map(str::to_string),
            webhook_url,
            client_name: self.plaid_client_name.trim().to_string(),
            language: self.plaid_language.trim().to_string(),
            refresh_interval: Duration::from_secs(refresh_secs),
            introspection,
            job_workers,
            job_lease: Duration::from_secs(lease_secs),
            read_cache: Duration::from_secs(secs("READ_CACHE_SECONDS", &self.read_cache_seconds, 0)?),
            reconcile_interval: Duration::from_secs(reconcile_secs),
            resync_after: Duration::from_secs(resync_secs),
            item_check_interval: Duration::from_secs(check_secs),
            limits,
            dev_secrets_path: needs_dev.then_some(dev_path),
        })
    }
}

impl Config {
    /// The key that seals access tokens, and the ones that still open old ones.
    pub fn token_cipher(&self) -> Result<crate::identity::crypto::TokenCipher, ConfigError> {
        let current = decode_key(self.token_key.expose_secret()).map_err(|e| bad("TOKEN_ENCRYPTION_KEY", e))?;
        let previous = self
            .previous_token_keys
            .iter()
            .map(|(id, k)| {
                decode_key(k.expose_secret())
                    .map(|k| (id.clone(), k))
                    .map_err(|e| bad("TOKEN_ENCRYPTION_PREVIOUS_KEYS", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::identity::crypto::TokenCipher::new(current, self.token_key_id.clone(), &previous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: Settings,
    }

    fn settings(args: &[&str]) -> Settings {
        let mut all = vec!["t"];
        all.extend_from_slice(args);
        T::try_parse_from(all).unwrap().s
    }

    fn tmp_db() -> String {
        let dir = std::env::temp_dir().join(format!("bankgraph-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        format!("sqlite://{}/x.db", dir.display())
    }

    #[test]
    fn with_nothing_set_it_runs_offline_with_generated_development_secrets() {
        let db = tmp_db();
        let c = settings(&["--database-url", &db]).resolve().unwrap();
        assert!(matches!(c.plaid, PlaidTarget::Emulator(_)));
        assert!(c.jwt.development);
        let path = c.dev_secrets_path.clone().unwrap();
        assert!(path.exists());
        let again = settings(&["--database-url", &db]).resolve().unwrap();
        assert_eq!(again.token_key.expose_secret(), c.token_key.expose_secret(), "kept across starts");
    }

    #[test]
    fn real_plaid_refuses_development_secrets_and_says_what_is_missing() {
        let db = tmp_db();
        let e =
            settings(&["--database-url", &db, "--plaid-client-id", "id", "--plaid-secret", "s"]).resolve().unwrap_err();
        assert!(e.0.contains("TOKEN_ENCRYPTION_KEY") && e.0.contains("JWT_SECRET"), "{e}");
        let key = STANDARD.encode([9u8; 32]);
        let ok = settings(&[
            "--database-url",
            &db,
            "--plaid-client-id",
            "id",
            "--plaid-secret",
            "s",
            "--token-encryption-key",
            &key,
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .resolve()
        .unwrap();
        assert!(matches!(ok.plaid, PlaidTarget::Remote { .. }));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let db = tmp_db();
        for (args, var) in [
            (vec!["--bind-addr", "nope"], "BIND_ADDR"),
            (vec!["--token-encryption-key", "c2hvcnQ="], "TOKEN_ENCRYPTION_KEY"),
            (vec!["--plaid-products", "balance"], "PLAID_PRODUCTS"),
            (vec!["--jwt-algorithm", "none"], "JWT_ALGORITHM"),
            (vec!["--refresh-min-interval-seconds=-1"], "REFRESH_MIN_INTERVAL_SECONDS"),
            (vec!["--plaid-redirect-uri", "myapp://oauth"], "PLAID_REDIRECT_URI"),
        ] {
            let mut a = vec!["--database-url", db.as_str()];
            a.extend(args);
            let e = settings(&a).resolve().unwrap_err();
            assert!(e.0.starts_with(var), "{e}");
        }
    }

    #[test]
    fn dev_secrets_sit_next_to_the_sqlite_file_or_in_the_users_directory() {
        assert_eq!(dev_secrets_path("sqlite://data/bank.db"), PathBuf::from("data/bank.db.dev-secrets.json"));
        assert_eq!(dev_secrets_path("sqlite://bankgraph.db"), PathBuf::from("./bankgraph.db.dev-secrets.json"));
        let pg = dev_secrets_path("postgres://x/y");
        assert!(pg.is_absolute() && pg.to_string_lossy().contains("/bankgraph/dev-secrets-"), "{}", pg.display());
        assert_ne!(pg, dev_secrets_path("postgres://x/z"), "one file per database");
        assert_eq!(dev_secrets_path("postgres://u:one@x/y"), dev_secrets_path("postgres://u:two@x/y"));
    }

    #[cfg(unix)]
    #[test]
    fn a_secrets_file_others_can_read_or_that_git_tracks_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let db = tmp_db();
        let path = settings(&["--database-url", &db]).resolve().unwrap().dev_secrets_path.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = settings(&["--database-url", &db]).resolve().unwrap_err();
        assert!(e.0.contains("can be read by other users"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(settings(&["--database-url", &db]).resolve().is_ok());
        // Tracked by git (as bankgraph.dev-secrets.json once was in this repository).
        let dir = path.parent().unwrap();
        let git = |args: &[&str]| std::process::Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
        assert!(git(&["init", "-q"]).status.success());
        assert!(git(&["add", "-f", path.file_name().unwrap().to_str().unwrap()]).status.success());
        let e = settings(&["--database-url", &db]).resolve().unwrap_err();
        assert!(e.0.contains("tracked by git"), "{e}");
    }
}
