//! The command line's settings, typed by clap as they are parsed: numbers within their
//! ranges, booleans, enums, socket addresses. Secrets are `SecretString` from the first parse,
//! so no `Debug` of the settings shows one; the database URL redacts its password itself.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{BoolishValueParser, RangedU64ValueParser};
use clap::value_parser;
use secrecy::{ExposeSecret, SecretString};

/// The embedded default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://bankgraph.db";

/// Settings of `bankgraph serve` (and of `token` and `migrate`): both rooms in one process.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    #[command(flatten)]
    pub public: PublicSettings,
    #[command(flatten)]
    pub listener: ListenerSettings,
    #[command(flatten)]
    pub store: StoreSettings,
}

/// Settings of `bankgraph gateway`: the public listener and where the identity service is.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewaySettings {
    #[command(flatten)]
    pub public: PublicSettings,
    #[command(flatten)]
    pub listener: ListenerSettings,
    #[command(flatten)]
    pub client: RpcClientSettings,
    #[command(flatten)]
    pub auth: RpcAuthSettings,
}

/// Settings of `bankgraph identity`: the system of record and its RPC listener.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentitySettings {
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub listener: ListenerSettings,
    #[command(flatten)]
    pub server: RpcServerSettings,
    #[command(flatten)]
    pub auth: RpcAuthSettings,
}

/// The public gateway: its listener, caller tokens, GraphQL limits, rates.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Public gateway")]
pub struct PublicSettings {
    /// Public listener: GraphQL, GraphiQL, health.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8000")]
    pub bind_addr: SocketAddr,
    /// HS256 shared secret for caller tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = secret)]
    pub jwt_secret: Option<SecretString>,
    /// RS256/ES256 public key (PEM text, or a path to a PEM file).
    #[arg(long, env = "JWT_PUBLIC_KEY_PEM")]
    pub jwt_public_key_pem: Option<String>,
    /// JWKS URL for caller tokens (cached; refreshed on an unknown kid).
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Seconds between two fetches of the JWKS (an unknown kid triggers one).
    #[arg(long, env = "JWKS_MIN_REFRESH_SECONDS", default_value = "30", value_parser = value_parser!(u64).range(1..=86_400))]
    pub jwks_min_refresh_seconds: u64,
    /// The one JWT algorithm accepted: HS256, RS256 or ES256 (default HS256 with a secret, RS256 otherwise).
    #[arg(long, env = "JWT_ALGORITHM")]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    /// Required `iss` claim, if set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The longest a caller token may be valid for, in seconds (`exp` from now and from
    /// `iat`); 0 for no limit.
    #[arg(long, env = "JWT_MAX_LIFETIME_SECONDS", default_value = "86400", value_parser = value_parser!(u64).range(0..=315_360_000))]
    pub jwt_max_lifetime_seconds: u64,
    /// Serve introspection (on for client codegen; turn off in production if you prefer).
    #[arg(long, env = "GRAPHQL_INTROSPECTION", default_value = "true", action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub graphql_introspection: bool,
    /// GraphiQL at GET /api/v1/graphql (without a query); off answers 404 there instead.
    #[arg(long, env = "GRAPHIQL_ENABLED", default_value = "true", action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub graphiql_enabled: bool,
    /// The demo app at /demo: sign in, link a bank through Link, see the data. Default: on
    /// against the Plaid emulator, off with real Plaid keys.
    #[arg(long, env = "DEMO_ENABLED", action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub demo_enabled: Option<bool>,
    /// Largest request body accepted, in bytes (checked before parsing).
    #[arg(long, env = "MAX_BODY_BYTES", default_value = "262144", value_parser = RangedU64ValueParser::<usize>::new().range(1024..=64 << 20))]
    pub max_body_bytes: usize,
    /// Longest GraphQL query text accepted, in characters.
    #[arg(long, env = "MAX_QUERY_LENGTH", default_value = "20000", value_parser = RangedU64ValueParser::<usize>::new().range(100..=10_000_000))]
    pub max_query_length: usize,
    /// Deepest selection accepted (the standard introspection query needs 13).
    #[arg(long, env = "GRAPHQL_MAX_DEPTH", default_value = "15", value_parser = RangedU64ValueParser::<usize>::new().range(2..=1000))]
    pub graphql_max_depth: usize,
    /// A persisted-documents manifest (graphql-codegen's `{hash: document}` or Apollo's
    /// persisted query manifest): only its documents run (see TRUSTED_DOCUMENTS_MODE).
    #[arg(long, env = "TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<String>,
    /// `enforce` refuses any other document (PERSISTED_QUERY_NOT_IN_LIST); `log` lets it run
    /// and counts it in `bankgraph_untrusted_documents_total`.
    #[arg(long, env = "TRUSTED_DOCUMENTS_MODE", value_enum, default_value = "enforce")]
    pub trusted_documents_mode: TrustedMode,
    /// Largest query complexity accepted (each Plaid field costs 10, others 1).
    #[arg(long, env = "GRAPHQL_MAX_COMPLEXITY", default_value = "500", value_parser = RangedU64ValueParser::<usize>::new().range(10..=1_000_000))]
    pub graphql_max_complexity: usize,
    /// Most aliases in one request.
    #[arg(long, env = "GRAPHQL_MAX_ALIASES", default_value = "15", value_parser = RangedU64ValueParser::<usize>::new().range(0..=10_000))]
    pub graphql_max_aliases: usize,
    /// Deepest `paginate.offset` of a transactions page: each skipped row costs the database,
    /// so deeper pages go by `paginate.after`, which costs the same at any depth.
    #[arg(long, env = "MAX_PAGE_OFFSET", default_value = "10000", value_parser = value_parser!(i32).range(0..=10_000_000))]
    pub max_page_offset: i32,
    /// Most directives in one request.
    #[arg(long, env = "GRAPHQL_MAX_DIRECTIVES", default_value = "10", value_parser = RangedU64ValueParser::<usize>::new().range(0..=10_000))]
    pub graphql_max_directives: usize,
    /// Seconds a request may take before it is answered with a timeout.
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", default_value = "30", value_parser = value_parser!(u64).range(1..=3600))]
    pub request_timeout_seconds: u64,
    /// Seconds a client has to send its request body (within REQUEST_TIMEOUT_SECONDS).
    #[arg(long, env = "BODY_READ_TIMEOUT_SECONDS", default_value = "10", value_parser = value_parser!(u64).range(1..=600))]
    pub body_read_timeout_seconds: u64,
    /// Open connections the public listener accepts (also bounded by the open-file limit).
    #[arg(long, env = "MAX_CONNECTIONS", default_value = "10000", value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_connections: usize,
    /// Open connections one client IP may hold (trusted proxies are exempt).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value = "256", value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_connections_per_ip: usize,
    /// Comma-separated CIDRs of load balancers whose Forwarded / X-Forwarded-For is believed
    /// (empty: the socket peer is the client).
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// The one header a trusted proxy names the client in; the other is ignored entirely (a
    /// client's own `Forwarded` passes through proxies that only append `X-Forwarded-For`).
    #[arg(long, env = "TRUSTED_PROXY_HEADER", value_enum, default_value = "x-forwarded-for")]
    pub trusted_proxy_header: ProxyHeader,
    /// Requests per second allowed per client IP (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value = "50", value_parser = value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_per_ip: u32,
    /// Requests per second allowed per caller (token `sub`) (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_USER", default_value = "20", value_parser = value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_per_user: u32,
    /// Per minute and caller, for createPlaidLinkToken, completePlaidLink and refreshPlaidBankConnections (0: no limit).
    #[arg(long, env = "RATE_LIMIT_SENSITIVE_PER_MINUTE", default_value = "10", value_parser = value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_sensitive_per_minute: u32,
    /// GraphQL WebSockets (subscriptions) open at once in this gateway.
    #[arg(long, env = "WS_MAX_SOCKETS", default_value = "10000", value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub ws_max_sockets: usize,
    /// GraphQL WebSockets one client IP may hold (behind trusted proxies: per forwarded client).
    #[arg(long, env = "WS_MAX_SOCKETS_PER_IP", default_value = "64", value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub ws_max_sockets_per_ip: usize,
    /// GraphQL WebSockets one caller (token `sub`) may hold.
    #[arg(long, env = "WS_MAX_SOCKETS_PER_USER", default_value = "8", value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub ws_max_sockets_per_user: usize,
    /// Subscriptions active at once on one WebSocket.
    #[arg(long, env = "WS_MAX_SUBSCRIPTIONS_PER_SOCKET", default_value = "16", value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000))]
    pub ws_max_subscriptions_per_socket: usize,
    /// Seconds a new WebSocket has to send connection_init.
    #[arg(long, env = "WS_INIT_TIMEOUT_SECONDS", default_value = "10", value_parser = value_parser!(u64).range(1..=300))]
    pub ws_init_timeout_seconds: u64,
    /// Seconds between the server's pings on an open WebSocket.
    #[arg(long, env = "WS_PING_INTERVAL_SECONDS", default_value = "15", value_parser = value_parser!(u64).range(1..=3600))]
    pub ws_ping_interval_seconds: u64,
    /// Seconds without anything from the client (not even a pong) before its WebSocket is closed.
    #[arg(long, env = "WS_IDLE_TIMEOUT_SECONDS", default_value = "45", value_parser = value_parser!(u64).range(1..=86_400))]
    pub ws_idle_timeout_seconds: u64,
    /// Seconds one message may wait to be written to a WebSocket client before the socket is
    /// closed (1008) as not reading.
    #[arg(long, env = "WS_SEND_TIMEOUT_SECONDS", default_value = "10", value_parser = value_parser!(u64).range(1..=300))]
    pub ws_send_timeout_seconds: u64,
    /// Comma-separated origins allowed by CORS (empty: no cross-origin access).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,
}

/// What every listener of the process shares.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Listeners")]
pub struct ListenerSettings {
    /// Internal listener: Plaid webhooks (identity service), metrics, health. Never expose it publicly.
    #[arg(long, env = "INTERNAL_BIND_ADDR", default_value = "127.0.0.1:8001")]
    pub internal_bind_addr: SocketAddr,
    /// Seconds a client has to send its request headers.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value = "10", value_parser = value_parser!(u64).range(1..=600))]
    pub header_read_timeout_seconds: u64,
    /// Per-address limits (request rates, connections, WebSockets) count an IPv6 client by this
    /// many leading bits of its address: one host is usually handed a whole /64.
    #[arg(long, env = "RATE_LIMIT_IPV6_PREFIX", default_value = "64", value_parser = value_parser!(u8).range(1..=128))]
    pub rate_limit_ipv6_prefix: u8,
    /// Seconds a kept-alive connection may idle between requests (HTTP/1.1 and HTTP/2).
    #[arg(long, env = "IDLE_TIMEOUT_SECONDS", default_value = "60", value_parser = value_parser!(u64).range(1..=3600))]
    pub idle_timeout_seconds: u64,
    /// Seconds to finish in-flight requests and jobs after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value = "30", value_parser = value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_seconds: u64,
}

/// The identity service: its database, token custody, Plaid, background work.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Identity service")]
pub struct StoreSettings {
    /// sqlite://path (embedded default) or postgres://user@host/db.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_parser = DatabaseUrl::parse)]
    pub database_url: DatabaseUrl,
    /// PostgreSQL cancels a statement that runs longer than this, in seconds.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_SECONDS", default_value = "10", value_parser = value_parser!(u64).range(1..=3600))]
    pub database_statement_timeout_seconds: u64,
    /// 32 random bytes, base64: the AES-256-GCM key for Plaid access tokens.
    #[arg(long, env = "TOKEN_ENCRYPTION_KEY", hide_env_values = true, value_parser = secret)]
    pub token_encryption_key: Option<SecretString>,
    /// Id stored with each sealed token (default: derived from the key).
    #[arg(long, env = "TOKEN_ENCRYPTION_KEY_ID")]
    pub token_encryption_key_id: Option<String>,
    /// Comma-separated keys that still open tokens sealed before a rotation: `id:base64key`
    /// (the TOKEN_ENCRYPTION_KEY_ID the key had), or `base64key` for a key that had none.
    #[arg(long, env = "TOKEN_ENCRYPTION_PREVIOUS_KEYS", hide_env_values = true, value_parser = secret)]
    pub token_encryption_previous_keys: Option<SecretString>,
    /// Plaid client id; with PLAID_SECRET, bankgraph talks to Plaid instead of the emulator.
    #[arg(long, env = "PLAID_CLIENT_ID")]
    pub plaid_client_id: Option<String>,
    #[arg(long, env = "PLAID_SECRET", hide_env_values = true, value_parser = secret)]
    pub plaid_secret: Option<SecretString>,
    /// sandbox, development or production (picks the base URL unless PLAID_BASE_URL is set).
    #[arg(long, env = "PLAID_ENV", default_value = "sandbox")]
    pub plaid_env: PlaidEnv,
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
    #[arg(long, env = "PLAID_PROXY_API_KEY", hide_env_values = true, value_parser = secret)]
    pub plaid_proxy_api_key: Option<SecretString>,
    /// Where the in-process emulator listens when no Plaid credentials are set.
    #[arg(long, env = "PLAID_EMULATOR_ADDR", default_value = "127.0.0.1:8002")]
    pub plaid_emulator_addr: SocketAddr,
    /// Let the emulator listen on a non-loopback PLAID_EMULATOR_ADDR (its control API still
    /// answers loopback peers only).
    #[arg(long, env = "EMULATOR_ALLOW_REMOTE", default_value = "false", action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub emulator_allow_remote: bool,
    /// Minimum seconds between two refreshPlaidBankConnections of one user.
    #[arg(long, env = "REFRESH_MIN_INTERVAL_SECONDS", default_value = "60", value_parser = value_parser!(u64))]
    pub refresh_min_interval_seconds: u64,
    /// Background job workers in this process (syncs, webhooks, the reconciler); 0 runs none.
    #[arg(long, env = "JOB_WORKERS", default_value = "2", value_parser = RangedU64ValueParser::<usize>::new().range(0..=64))]
    pub job_workers: usize,
    /// Seconds a worker holds a job between heartbeats; a job of a dead process is taken over
    /// after this.
    #[arg(long, env = "JOB_LEASE_SECONDS", default_value = "60", value_parser = value_parser!(u64).range(1..))]
    pub job_lease_seconds: u64,
    /// Seconds a caller's account list may be served from memory; writes in this process
    /// invalidate it at once, so this bounds staleness from other processes (0: no cache).
    #[arg(long, env = "READ_CACHE_SECONDS", default_value = "1", value_parser = value_parser!(u64))]
    pub read_cache_seconds: u64,
    /// Hours connection events are kept for subscribers resuming with `after`; older ones are
    /// dropped by the reconciler, and resuming from one of them is refused with EVENTS_EXPIRED.
    #[arg(long, env = "EVENT_RETENTION_HOURS", default_value = "24", value_parser = value_parser!(u64).range(1..=8760))]
    pub event_retention_hours: u64,
    /// Seconds between renewals of a running completePlaidLink's claim on its public token.
    #[arg(long, env = "LINK_COMPLETION_HEARTBEAT_SECONDS", default_value = "15", value_parser = value_parser!(u64).range(1..=3600))]
    pub link_completion_heartbeat_seconds: u64,
    /// Seconds without a renewal after which a completion's claim is dead (its process was
    /// killed) and a retry takes it over; more than LINK_COMPLETION_HEARTBEAT_SECONDS.
    #[arg(long, env = "LINK_COMPLETION_STALE_SECONDS", default_value = "45", value_parser = value_parser!(u64).range(2..=86_400))]
    pub link_completion_stale_seconds: u64,
    /// Seconds between two runs of the reconciler.
    #[arg(long, env = "RECONCILE_INTERVAL_SECONDS", default_value = "3600", value_parser = value_parser!(u64).range(1..))]
    pub reconcile_interval_seconds: u64,
    /// The reconciler re-syncs a connection not synced for this many seconds.
    #[arg(long, env = "RESYNC_AFTER_SECONDS", default_value = "21600", value_parser = value_parser!(u64).range(1..))]
    pub resync_after_seconds: u64,
    /// The reconciler checks each item with Plaid (/item/get) this often, in seconds.
    #[arg(long, env = "ITEM_CHECK_INTERVAL_SECONDS", default_value = "86400", value_parser = value_parser!(u64).range(1..))]
    pub item_check_interval_seconds: u64,
    /// Webhooks signed by never-seen kids whose key is looked up at once before lookups are
    /// throttled (503; Plaid delivers again); a kid's redelivery has as many of its own.
    #[arg(long, env = "WEBHOOK_KEY_LOOKUP_BURST", default_value = "3", value_parser = value_parser!(u32).range(1..=1000))]
    pub webhook_key_lookup_burst: u32,
    /// Lookups of never-seen kids regained per minute (and as many for redeliveries).
    #[arg(long, env = "WEBHOOK_KEY_LOOKUPS_PER_MINUTE", default_value = "3", value_parser = value_parser!(u32).range(1..=6000))]
    pub webhook_key_lookups_per_minute: u32,
    /// Seconds Plaid's answer that it does not know a kid is believed.
    #[arg(long, env = "WEBHOOK_UNKNOWN_KID_SECONDS", default_value = "600", value_parser = value_parser!(u64).range(1..=86_400))]
    pub webhook_unknown_kid_seconds: u64,
    /// Milliseconds without key lookups after the key endpoint fails; doubles with each further
    /// failure (with jitter), up to WEBHOOK_KEY_BACKOFF_MAX_SECONDS.
    #[arg(long, env = "WEBHOOK_KEY_BACKOFF_MIN_MS", default_value = "1000", value_parser = value_parser!(u64).range(1..=600_000))]
    pub webhook_key_backoff_min_ms: u64,
    #[arg(long, env = "WEBHOOK_KEY_BACKOFF_MAX_SECONDS", default_value = "300", value_parser = value_parser!(u64).range(1..=86_400))]
    pub webhook_key_backoff_max_seconds: u64,
}

/// Where the identity service listens for gateways (`bankgraph identity`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Identity RPC")]
pub struct RpcServerSettings {
    /// The RPC listener (gRPC) that gateways call.
    #[arg(long, env = "IDENTITY_BIND_ADDR", default_value = "127.0.0.1:8003")]
    pub identity_bind_addr: SocketAddr,
}

/// Where the gateway finds the identity service (`bankgraph gateway`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Identity RPC")]
pub struct RpcClientSettings {
    /// Comma-separated identity service endpoints, e.g. http://10.0.0.5:8003 (https:// with
    /// IDENTITY_TLS_*); calls are spread over them and a dead one is avoided.
    #[arg(long, env = "IDENTITY_URL")]
    pub identity_url: Option<String>,
}

/// How gateway and identity service trust each other (both sides set the same).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Identity RPC")]
pub struct RpcAuthSettings {
    /// Shared token on every RPC (at least 32 characters); required when the identity service
    /// listens on a non-loopback address.
    #[arg(long, env = "IDENTITY_SERVICE_TOKEN", hide_env_values = true, value_parser = secret)]
    pub identity_service_token: Option<SecretString>,
    /// This side's certificate (PEM file) for mutual TLS; with IDENTITY_TLS_KEY and IDENTITY_TLS_CA.
    #[arg(long, env = "IDENTITY_TLS_CERT")]
    pub identity_tls_cert: Option<PathBuf>,
    /// This side's private key (PEM file).
    #[arg(long, env = "IDENTITY_TLS_KEY")]
    pub identity_tls_key: Option<PathBuf>,
    /// The CA (PEM file) the other side's certificate must be signed by.
    #[arg(long, env = "IDENTITY_TLS_CA")]
    pub identity_tls_ca: Option<PathBuf>,
}

fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_string()))
}

/// A secret that is set and not blank.
pub(super) fn given(s: &Option<SecretString>) -> Option<&str> {
    s.as_ref().map(|s| s.expose_secret().trim()).filter(|s| !s.is_empty())
}

/// The one JWT algorithm accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

impl From<JwtAlgorithm> for jsonwebtoken::Algorithm {
    fn from(a: JwtAlgorithm) -> Self {
        match a {
            JwtAlgorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
            JwtAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            JwtAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// Plaid's environments, each with its base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlaidEnv {
    Sandbox,
    Development,
    Production,
}

impl PlaidEnv {
    pub fn base_url(self) -> &'static str {
        match self {
            PlaidEnv::Sandbox => "https://sandbox.plaid.com",
            PlaidEnv::Development => "https://development.plaid.com",
            PlaidEnv::Production => "https://production.plaid.com",
        }
    }
}

/// A database URL (`sqlite://…` or `postgres://…`). `Display` and `Debug` show it without its
/// password; [`DatabaseUrl::expose`] gives the URL to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// As configured: what names this database (development secrets are filed under it).
    given: String,
    /// What bankgraph connects with (an explicit `sslmode` added on this machine).
    connect: String,
}

impl DatabaseUrl {
    /// A PostgreSQL URL that names no `sslmode` gets an explicit one when the server is on this
    /// machine: `disable`, since TLS over loopback only costs CPU (13–23 % of a database-bound
    /// read, measured). To another host it keeps sqlx's default, `prefer` (encrypted when the
    /// server offers TLS, not verified), and [`DatabaseUrl::unverified_tls`] says so at start:
    /// production should name `sslmode=verify-full`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let same = |s: &str| DatabaseUrl { given: s.to_string(), connect: s.to_string() };
        if s.starts_with("sqlite:") {
            return Ok(same(s));
        }
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err("must start with sqlite:// or postgres://".into());
        }
        let mut u = url::Url::parse(s).map_err(|e| format!("is not a valid URL ({e})"))?;
        if !u.query_pairs().any(|(k, _)| k == "sslmode") && host_is_loopback(&u) {
            u.query_pairs_mut().append_pair("sslmode", "disable");
            return Ok(DatabaseUrl { given: s.to_string(), connect: u.to_string() });
        }
        Ok(same(s))
    }

    /// The URL as configured, without its password: the database's name for development
    /// secrets, unchanged by the `sslmode` bankgraph adds.
    pub fn name(&self) -> String {
        redacted(&self.given)
    }

    /// A PostgreSQL URL to another host that names no `sslmode`, or one that does not verify
    /// the server (`disable`, `allow`, `prefer`, `require`): worth a warning at start.
    pub fn unverified_tls(&self) -> bool {
        let Ok(u) = url::Url::parse(&self.connect) else { return false };
        if !self.is_postgres() || host_is_loopback(&u) {
            return false;
        }
        let mode = u.query_pairs().find(|(k, _)| k == "sslmode").map(|(_, v)| v.to_string());
        !matches!(mode.as_deref(), Some("verify-ca" | "verify-full"))
    }

    /// The URL with its password, to connect with. Never log it.
    pub fn expose(&self) -> &str {
        &self.connect
    }

    pub fn is_postgres(&self) -> bool {
        !self.connect.starts_with("sqlite:")
    }
}

/// Whether a PostgreSQL URL's server is on this machine (a loopback address, `localhost`, or a
/// Unix socket given as `host=/path`).
fn host_is_loopback(u: &url::Url) -> bool {
    if u.query_pairs().any(|(k, v)| k == "host" && v.starts_with('/')) {
        return true;
    }
    match u.host() {
        // postgres:// is not a special scheme to the URL parser: an address is an opaque host.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => true,
    }
}

/// A URL without its password.
fn redacted(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => s.to_string(),
    }
}

/// What bankgraph connects with, without the password.
impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redacted(&self.connect))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: an http(s) URL, or empty for no export.
pub fn otlp_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        Ok(s.to_string())
    } else {
        Err(format!("must be an http(s) URL, got {s:?}"))
    }
}

/// The header trusted proxies name the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, ...`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1, ...`.
    Forwarded,
}

/// What a document outside the trusted list meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrustedMode {
    /// Refused with `PERSISTED_QUERY_NOT_IN_LIST`.
    Enforce,
    /// Run, and counted.
    Log,
}
