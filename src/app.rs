//! Wiring: database, Plaid (or the in-process emulator), identity service, schema, listeners.
//! `App::build` binds first, so tests can ask for port 0 and read the port back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::config::{Config, PlaidTarget};
use crate::db::Db;
use crate::emulator::{self, EmulatorConfig, RunningEmulator};
use crate::graphql::Gateway;
use crate::http::client_ip::TrustedProxies;
use crate::http::{self, AppState};
use crate::identity::crypto::TokenCipher;
use crate::identity::{IdentityService, PlaidIdentity};
use crate::plaid::{PlaidClient, PlaidClientConfig};
use crate::ratelimit::Limiters;

/// A built, bound application, ready to run.
pub struct App {
    public: TcpListener,
    internal: TcpListener,
    state: AppState,
    identity: PlaidIdentity,
    emulator: Option<RunningEmulator>,
    config: Config,
}

impl App {
    /// Connects and migrates the database, starts the emulator when no Plaid credentials are
    /// configured, and binds both listeners.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        Self::build_with_emulator(config, EmulatorConfig::default()).await
    }

    /// As [`App::build`], with the in-process emulator configured (when it is used).
    pub async fn build_with_emulator(config: Config, emulator_config: EmulatorConfig) -> anyhow::Result<App> {
        let public = TcpListener::bind(config.listen.public)
            .await
            .with_context(|| format!("could not listen on {} (BIND_ADDR)", config.listen.public))?;
        let internal = TcpListener::bind(config.listen.internal)
            .await
            .with_context(|| format!("could not listen on {} (INTERNAL_BIND_ADDR)", config.listen.internal))?;
        Self::build_with_listeners(config, emulator_config, public, internal).await
    }

    /// As [`App::build`], on listeners the caller bound (so it knows the ports beforehand).
    pub async fn build_with_listeners(
        mut config: Config,
        emulator_config: EmulatorConfig,
        public: TcpListener,
        internal: TcpListener,
    ) -> anyhow::Result<App> {
        let db = Db::connect_with(config.db.url.expose(), config.db.statement_timeout).await?;
        db.migrate().await?;
        if matches!(config.plaid, PlaidTarget::Emulator(_)) && config.link.webhook_url.is_none() {
            // Offline, the emulator sends its webhooks straight to our internal listener.
            config.link.webhook_url = Some(format!("http://{}/webhooks/plaid", internal.local_addr()?));
        }
        let (plaid_config, emulator) = match &config.plaid {
            PlaidTarget::Emulator(addr) => {
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
        let identity = PlaidIdentity::new(db, plaid, cipher, config.link.clone(), config.jobs.clone());
        identity.check_token_keys().await?;
        let service: Arc<dyn IdentityService> = Arc::new(identity.clone());
        crate::metrics::handle();
        let limiters = Arc::new(Limiters::new(&config.rate));
        let state = AppState {
            gateway: Arc::new(Gateway::new(service.clone(), &config.graphql, limiters.clone())),
            auth: Arc::new(Authenticator::new(&config.auth)?),
            identity: service,
            limits: Arc::new(config.http.clone()),
            graphql_limits: Arc::new(config.graphql.clone()),
            limiters,
            proxies: TrustedProxies::new(config.http.trusted_proxies.clone()),
        };
        Ok(App { public, internal, state, identity, emulator, config })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr().expect("bound listener has an address")
    }

    pub fn internal_addr(&self) -> SocketAddr {
        self.internal.local_addr().expect("bound listener has an address")
    }

    /// The in-process emulator's URL, when bankgraph runs offline.
    pub fn emulator_url(&self) -> Option<String> {
        self.emulator.as_ref().map(|e| e.url())
    }

    pub fn identity(&self) -> &PlaidIdentity {
        &self.identity
    }

    /// What a person starting the server needs to know, on stdout.
    pub fn banner(&self) -> String {
        let graphql = format!("http://{}{}", self.public_addr(), http::GRAPHQL_PATH);
        let mut lines = vec![
            format!("bankgraph {} is running", env!("CARGO_PKG_VERSION")),
            format!("  GraphQL and GraphiQL: {graphql}"),
            format!("  internal listener:    http://{} (webhooks, health)", self.internal_addr()),
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
        if self.config.auth.development {
            let db = &self.config.db.url;
            lines.push(format!(
                "  a token to try it:    DATABASE_URL={db} bankgraph token --sub demo-user   (development JWT secret in {})",
                self.config.dev_secrets_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            ));
        }
        lines.join("\n")
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes in-flight requests and
    /// waits for background work, each within `SHUTDOWN_GRACE_SECONDS`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        if self.config.jobs.workers > 0 {
            self.identity.start_workers(self.config.jobs.workers, rx.clone()).await?;
        }
        let limits = &self.config.http;
        let grace = limits.shutdown_grace;
        // Every connection is a descriptor: the public listener keeps room below the limit for
        // the database pools, Plaid calls, the internal listener and the log.
        let descriptors = http::server::raise_descriptor_limit().unwrap_or(1024) as usize;
        let public_limits = http::ConnectionLimits {
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_connections: limits.max_connections.min(descriptors.saturating_sub(512).max(64)),
            max_connections_per_ip: limits.max_connections_per_ip,
            trusted_proxies: self.state.proxies.clone(),
            grace,
        };
        // The internal listener serves Plaid and the metrics scraper: few, known clients.
        let internal_limits =
            http::ConnectionLimits { max_connections: 256, max_connections_per_ip: 256, ..public_limits.clone() };
        let public = http::serve(self.public, http::public_router(self.state.clone()), public_limits, wait(rx.clone()));
        let internal = http::serve(
            self.internal,
            http::internal_router(self.state.clone(), self.identity.clone()),
            internal_limits,
            wait(rx.clone()),
        );
        // Keyed rate limiters forget idle keys, so memory stays bounded.
        let limiters = self.state.limiters.clone();
        let janitor = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                limiters.shrink();
            }
        });
        let (a, b) = tokio::join!(public, internal);
        janitor.abort();
        a.context("public listener")?;
        b.context("internal listener")?;
        self.identity.shutdown(grace).await;
        if let Some(e) = self.emulator {
            e.stop().await;
        }
        Ok(())
    }
}
