//! Wiring: two rooms, and the three ways to run them.
//!
//! - [`IdentityNode`]: the identity service (database, Plaid or the in-process emulator, token
//!   custody, job workers) with its internal listener (Plaid webhooks, metrics, health).
//! - [`GatewayNode`]: the public listener (GraphQL, GraphiQL, health) over any
//!   [`IdentityService`].
//! - [`App`] (`bankgraph serve`) runs both in one process; [`IdentityApp`] (`bankgraph
//!   identity`) runs the identity node with the RPC listener gateways call; [`GatewayApp`]
//!   (`bankgraph gateway`) runs the gateway node against [`RemoteIdentity`], with an internal
//!   listener of its own for metrics and health.
//!
//! Builders bind first, so tests can ask for port 0 and read the port back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::config::{Config, GatewayConfig, IdentityConfig, PlaidTarget, SplitGatewayConfig, SplitIdentityConfig};
use crate::db::Db;
use crate::emulator::{self, EmulatorConfig, RunningEmulator};
use crate::graphql::Gateway;
use crate::http::client_ip::TrustedProxies;
use crate::http::{self, AppState};
use crate::identity::crypto::TokenCipher;
use crate::identity::{IdentityService, PlaidIdentity};
use crate::plaid::{PlaidClient, PlaidClientConfig};
use crate::ratelimit::Limiters;
use crate::rpc::{RemoteIdentity, RpcServer};

async fn bind(addr: SocketAddr, var: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("could not listen on {addr} ({var})"))
}

/// A shutdown signal many tasks can wait for.
#[derive(Clone)]
struct Stop(watch::Receiver<bool>);

impl Stop {
    fn on(shutdown: impl Future<Output = ()> + Send + 'static) -> Stop {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        Stop(rx)
    }

    fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}

/// The internal listener's limits: it serves Plaid and the metrics scraper, few known clients.
fn internal_limits(listener: &crate::config::ListenerLimits) -> http::ConnectionLimits {
    http::ConnectionLimits {
        header_read_timeout: listener.header_read_timeout,
        idle_timeout: listener.idle_timeout,
        max_connections: 256,
        max_connections_per_ip: 256,
        ipv6_prefix: listener.ipv6_prefix,
        trusted_proxies: TrustedProxies::default(),
        grace: listener.shutdown_grace,
    }
}

/// The identity service of this process, with its internal listener.
pub struct IdentityNode {
    internal: TcpListener,
    identity: PlaidIdentity,
    emulator: Option<RunningEmulator>,
    config: IdentityConfig,
}

impl IdentityNode {
    /// Connects and migrates the database, starts the emulator when no Plaid credentials are
    /// configured, and checks the token keys against what the database holds.
    pub async fn build(
        mut config: IdentityConfig,
        mut emulator_config: EmulatorConfig,
        internal: TcpListener,
    ) -> anyhow::Result<IdentityNode> {
        if config.db.url.unverified_tls() {
            tracing::warn!(
                database = %config.db.url,
                "DATABASE_URL does not verify the database server's certificate: set sslmode=verify-full (with sslrootcert) for a database on another host"
            );
        }
        let db = Db::connect_with(config.db.url.expose(), config.db.statement_timeout).await?;
        db.migrate().await?;
        if matches!(config.plaid, PlaidTarget::Emulator(_)) && config.link.webhook_url.is_none() {
            // Offline, the emulator sends its webhooks straight to our internal listener.
            config.link.webhook_url = Some(format!("http://{}/webhooks/plaid", internal.local_addr()?));
        }
        let (plaid_config, emulator) = match &config.plaid {
            PlaidTarget::Emulator(addr) => {
                // The redirect URI bankgraph sends (PLAID_REDIRECT_URI, or the demo's) is
                // registered, as it would be in Plaid's dashboard.
                emulator_config.redirect_uris.extend(config.link.redirect_uri.clone());
                let emu = RunningEmulator::start(emulator_config, *addr)
                    .await
                    .with_context(|| format!("could not start the Plaid emulator on {addr} (PLAID_EMULATOR_ADDR)"))?;
                let cfg = PlaidClientConfig::new(
                    emu.url().parse()?,
                    emulator::DEFAULT_CLIENT_ID,
                    SecretString::from(emulator::DEFAULT_SECRET),
                );
                (cfg, Some(emu))
            }
            PlaidTarget::Remote { base_url, client_id, secret, proxy_headers } => {
                let mut cfg = PlaidClientConfig::new(base_url.clone(), client_id.clone(), secret.clone());
                cfg.extra_headers = proxy_headers.clone();
                if !proxy_headers.is_empty() {
                    cfg.transactions_paging = crate::plaid::TransactionsPaging::Page;
                    cfg.transactions_get_max_count = 100;
                }
                (cfg, None)
            }
        };
        let plaid = PlaidClient::new(plaid_config)?;
        let cipher = Arc::new(TokenCipher::from_keys(&config.custody));
        let identity =
            PlaidIdentity::new(db, plaid, cipher, config.link.clone(), config.jobs.clone(), &config.webhook_keys);
        identity.check_token_keys().await?;
        identity.load_webhook_keys().await?;
        crate::metrics::handle();
        Ok(IdentityNode { internal, identity, emulator, config })
    }

    pub fn internal_addr(&self) -> SocketAddr {
        self.internal.local_addr().expect("bound listener has an address")
    }

    pub fn service(&self) -> Arc<dyn IdentityService> {
        Arc::new(self.identity.clone())
    }

    fn banner_lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("  internal listener:    http://{} (webhooks, metrics, health)", self.internal_addr()),
            format!("  database:             {}", self.config.db.url),
        ];
        match &self.emulator {
            Some(e) => lines.push(format!(
                "  Plaid:                offline, against the built-in Plaid emulator at {} (no PLAID_CLIENT_ID/PLAID_SECRET set)",
                e.url()
            )),
            None => {
                if let PlaidTarget::Remote { base_url, .. } = &self.config.plaid {
                    lines.push(format!("  Plaid:                {base_url}"));
                }
            }
        }
        lines
    }

    /// Starts the job workers and serves the internal listener until `stop`; then waits for
    /// background work within the grace and stops the emulator.
    async fn run(self, stop: Stop) -> anyhow::Result<()> {
        self.identity.start_events(stop.0.clone());
        if self.config.jobs.workers > 0 {
            self.identity.start_workers(self.config.jobs.workers, stop.0.clone()).await?;
        }
        let router = http::internal_router(self.identity.clone());
        http::serve(self.internal, router, internal_limits(&self.config.listener), stop.wait())
            .await
            .context("internal listener")?;
        self.identity.shutdown(self.config.listener.shutdown_grace).await;
        if let Some(e) = self.emulator {
            e.stop().await;
        }
        Ok(())
    }
}

/// The public gateway of this process.
pub struct GatewayNode {
    public: TcpListener,
    state: AppState,
    config: GatewayConfig,
}

impl GatewayNode {
    /// `emulator`: the in-process Plaid emulator (its URL and handle), when there is one.
    pub fn build(
        config: GatewayConfig,
        identity: Arc<dyn IdentityService>,
        public: TcpListener,
        emulator: Option<(String, crate::emulator::Emulator)>,
    ) -> anyhow::Result<Self> {
        crate::metrics::handle();
        // The demo: on by default against the emulator, otherwise when DEMO_ENABLED says so.
        let demo = match config.demo.unwrap_or(emulator.is_some()) {
            true => Some(Arc::new(http::demo::Demo::new(&config.auth, emulator)?)),
            false => None,
        };
        let limiters = Arc::new(Limiters::new(&config.rate));
        let state = AppState {
            gateway: Arc::new(Gateway::new(identity.clone(), &config.graphql, limiters.clone())),
            auth: Arc::new(Authenticator::new(&config.auth)?),
            identity,
            limits: Arc::new(config.http.clone()),
            graphql_limits: Arc::new(config.graphql.clone()),
            limiters,
            proxies: TrustedProxies::new(config.http.trusted_proxies.clone(), config.http.trusted_proxy_header),
            sockets: Arc::new(http::ws::Sockets::new(config.ws.clone())),
            demo,
            graphiql: config.graphiql,
        };
        Ok(GatewayNode { public, state, config })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr().expect("bound listener has an address")
    }

    /// Serves the public listener until `stop`, then finishes requests in flight within the grace.
    async fn run(self, stop: Stop) -> anyhow::Result<()> {
        let limits = &self.config.http;
        // Every connection is a descriptor: the public listener keeps room below the limit for
        // the database pools, Plaid calls, the internal listener and the log.
        let descriptors = http::server::raise_descriptor_limit().unwrap_or(1024) as usize;
        let public_limits = http::ConnectionLimits {
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_connections: limits.max_connections.min(descriptors.saturating_sub(512).max(64)),
            max_connections_per_ip: limits.max_connections_per_ip,
            ipv6_prefix: limits.ipv6_prefix,
            trusted_proxies: self.state.proxies.clone(),
            grace: limits.shutdown_grace,
        };
        // Keyed rate limiters forget idle keys, so memory stays bounded.
        let limiters = self.state.limiters.clone();
        let janitor = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                limiters.shrink();
            }
        });
        // At shutdown, WebSockets close with 1001 (going away) so clients reconnect elsewhere;
        // the listener stops accepting at the same moment.
        let sockets = self.state.sockets.clone();
        let grace = limits.shutdown_grace;
        let closing = {
            let stop = stop.clone();
            tokio::spawn(async move {
                stop.wait().await;
                sockets.close_all(grace).await;
            })
        };
        let served = http::serve(self.public, http::public_router(self.state), public_limits, stop.wait()).await;
        janitor.abort();
        let _ = closing.await;
        served.context("public listener")
    }
}

/// `bankgraph serve`: the gateway and the identity service in one process.
pub struct App {
    gateway: GatewayNode,
    identity: IdentityNode,
    config: Config,
}

impl App {
    /// Binds both listeners and builds both rooms.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        Self::build_with_emulator(config, EmulatorConfig::default()).await
    }

    /// As [`App::build`], with the in-process emulator configured (when it is used).
    pub async fn build_with_emulator(config: Config, emulator_config: EmulatorConfig) -> anyhow::Result<App> {
        let public = bind(config.gateway.public, "BIND_ADDR").await?;
        let internal = bind(config.identity.internal, "INTERNAL_BIND_ADDR").await?;
        Self::build_with_listeners(config, emulator_config, public, internal).await
    }

    /// As [`App::build`], on listeners the caller bound (so it knows the ports beforehand).
    pub async fn build_with_listeners(
        config: Config,
        emulator_config: EmulatorConfig,
        public: TcpListener,
        internal: TcpListener,
    ) -> anyhow::Result<App> {
        let identity = IdentityNode::build(config.identity.clone(), emulator_config, internal).await?;
        let emulator = identity.emulator.as_ref().map(|e| (e.url(), e.emulator.clone()));
        let gateway = GatewayNode::build(config.gateway.clone(), identity.service(), public, emulator)?;
        Ok(App { gateway, identity, config })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.gateway.public_addr()
    }

    pub fn internal_addr(&self) -> SocketAddr {
        self.identity.internal_addr()
    }

    /// The in-process emulator's URL, when bankgraph runs offline.
    pub fn emulator_url(&self) -> Option<String> {
        self.identity.emulator.as_ref().map(|e| e.url())
    }

    pub fn identity(&self) -> &PlaidIdentity {
        &self.identity.identity
    }

    /// What a person starting the server needs to know, on stdout.
    pub fn banner(&self) -> String {
        let graphql = format!("http://{}{}", self.public_addr(), http::GRAPHQL_PATH);
        let mut lines = vec![
            format!("bankgraph {} is running", env!("CARGO_PKG_VERSION")),
            format!("  GraphQL and GraphiQL: {graphql}"),
        ];
        if self.gateway.state.demo.is_some() {
            lines.push(format!("  demo in a browser:    http://{}{}", self.public_addr(), crate::config::DEMO_PATH));
        }
        lines.extend(self.identity.banner_lines());
        if self.config.gateway.auth.development {
            let db = &self.config.identity.db.url;
            lines.push(format!(
                "  a token to try it:    DATABASE_URL={db} bankgraph token --sub demo-user   (development JWT secret in {})",
                self.config.identity.dev_secrets_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            ));
        }
        lines.join("\n")
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes in-flight requests and
    /// waits for background work, each within `SHUTDOWN_GRACE_SECONDS`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let stop = Stop::on(shutdown);
        let (a, b) = tokio::join!(self.gateway.run(stop.clone()), self.identity.run(stop));
        a?;
        b
    }
}

/// `bankgraph identity`: the identity service, and the RPC listener gateways call.
pub struct IdentityApp {
    identity: IdentityNode,
    rpc: RpcServer,
}

impl IdentityApp {
    pub async fn build(config: SplitIdentityConfig) -> anyhow::Result<IdentityApp> {
        let internal = bind(config.identity.internal, "INTERNAL_BIND_ADDR").await?;
        let rpc = bind(config.rpc.bind, "IDENTITY_BIND_ADDR").await?;
        Self::build_with_listeners(config, EmulatorConfig::default(), internal, rpc).await
    }

    pub async fn build_with_listeners(
        config: SplitIdentityConfig,
        emulator_config: EmulatorConfig,
        internal: TcpListener,
        rpc: TcpListener,
    ) -> anyhow::Result<IdentityApp> {
        let identity = IdentityNode::build(config.identity, emulator_config, internal).await?;
        let rpc = RpcServer::new(rpc, identity.service(), config.rpc);
        Ok(IdentityApp { identity, rpc })
    }

    pub fn internal_addr(&self) -> SocketAddr {
        self.identity.internal_addr()
    }

    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc.local_addr()
    }

    pub fn emulator_url(&self) -> Option<String> {
        self.identity.emulator.as_ref().map(|e| e.url())
    }

    pub fn banner(&self) -> String {
        let mut lines = vec![
            format!("bankgraph identity {} is running", env!("CARGO_PKG_VERSION")),
            format!("  identity RPC:         {} (gRPC, for gateways)", self.rpc_addr()),
        ];
        lines.extend(self.identity.banner_lines());
        lines.join("\n")
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let stop = Stop::on(shutdown);
        let limits = self.identity.config.listener.clone();
        let (a, b) = tokio::join!(self.rpc.run(stop.wait(), limits), self.identity.run(stop));
        a.context("identity RPC listener")?;
        b
    }
}

/// `bankgraph gateway`: the public gateway alone, calling the identity service over gRPC.
pub struct GatewayApp {
    gateway: GatewayNode,
    internal: TcpListener,
    identity: Arc<dyn IdentityService>,
    endpoints: Vec<String>,
}

impl GatewayApp {
    pub async fn build(config: SplitGatewayConfig) -> anyhow::Result<GatewayApp> {
        let public = bind(config.gateway.public, "BIND_ADDR").await?;
        let internal = bind(config.internal, "INTERNAL_BIND_ADDR").await?;
        Self::build_with_listeners(config, public, internal)
    }

    pub fn build_with_listeners(
        config: SplitGatewayConfig,
        public: TcpListener,
        internal: TcpListener,
    ) -> anyhow::Result<GatewayApp> {
        for url in &config.rpc.endpoints {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if url.scheme() == "http" && !loopback {
                tracing::warn!(
                    endpoint = %url,
                    "IDENTITY_URL is plain HTTP to another host: the service token and the callers' data cross the \
                     network unencrypted; set IDENTITY_TLS_* unless a service mesh encrypts this hop"
                );
            }
        }
        let remote = RemoteIdentity::new(&config.rpc, config.gateway.http.request_timeout)?;
        let identity: Arc<dyn IdentityService> = Arc::new(remote);
        let endpoints = config.rpc.endpoints.iter().map(|u| u.to_string()).collect();
        let gateway = GatewayNode::build(config.gateway, identity.clone(), public, None)?;
        Ok(GatewayApp { gateway, internal, identity, endpoints })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.gateway.public_addr()
    }

    pub fn internal_addr(&self) -> SocketAddr {
        self.internal.local_addr().expect("bound listener has an address")
    }

    pub fn banner(&self) -> String {
        [
            format!("bankgraph gateway {} is running", env!("CARGO_PKG_VERSION")),
            format!("  GraphQL and GraphiQL: http://{}{}", self.public_addr(), http::GRAPHQL_PATH),
            format!("  internal listener:    http://{} (metrics, health)", self.internal_addr()),
            format!("  identity service:     {}", self.endpoints.join(", ")),
        ]
        .join("\n")
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let stop = Stop::on(shutdown);
        let listener = crate::config::ListenerLimits {
            header_read_timeout: self.gateway.config.http.header_read_timeout,
            ipv6_prefix: self.gateway.config.http.ipv6_prefix,
            idle_timeout: self.gateway.config.http.idle_timeout,
            shutdown_grace: self.gateway.config.http.shutdown_grace,
        };
        let internal = http::serve(
            self.internal,
            http::gateway_internal_router(self.identity),
            internal_limits(&listener),
            stop.wait(),
        );
        let (a, b) = tokio::join!(self.gateway.run(stop), internal);
        a?;
        b.context("internal listener")
    }
}
