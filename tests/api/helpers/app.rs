//! `TestApp`: bankgraph on port 0 against its own emulator and its own database (a fresh
//! SQLite file, or a fresh PostgreSQL database when `TEST_DATABASE_URL` points at a server).
//!
//! Two topologies: one process (`bankgraph serve`, the default), or, with
//! `TEST_TOPOLOGY=split` (or `Options::topology`), the identity service and the gateway as
//! two servers talking gRPC over loopback with the service token, as `bankgraph identity` and
//! `bankgraph gateway` run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bankgraph::app::{App, GatewayApp, IdentityApp};
use bankgraph::config::{RpcClientConfig, RpcServerConfig, RpcTls, Settings, SplitGatewayConfig, SplitIdentityConfig};
use bankgraph::emulator::{EmulatorConfig, RunningEmulator};
use base64::Engine;
use clap::Parser;
use sqlx::Connection;

use super::logs::init_logs;
use super::queries::{JWT_SECRET, token_with};

#[derive(Parser)]
struct SettingsParser {
    #[command(flatten)]
    settings: Settings,
}

/// Settings from flags only (the environment of the test process is not consulted for them).
pub fn settings(args: &[String]) -> Settings {
    let mut all = vec!["bankgraph".to_string()];
    all.extend_from_slice(args);
    SettingsParser::try_parse_from(all).expect("test settings parse").settings
}

/// A fresh database URL for one test.
pub async fn fresh_database() -> String {
    match std::env::var("TEST_DATABASE_URL").ok().filter(|s| !s.is_empty()) {
        Some(admin) if admin.starts_with("postgres") => {
            let name = format!("bankgraph_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to TEST_DATABASE_URL");
            sqlx::query(&format!("create database {name}")).execute(&mut conn).await.expect("create test database");
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
        _ => {
            let dir = std::env::temp_dir().join(format!("bankgraph-test-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}/bankgraph.db", dir.display())
        }
    }
}

pub struct TestApp {
    pub graphql: String,
    pub base: String,
    pub internal: String,
    pub emulator: Arc<RunningEmulator>,
    /// The emulator's base URL.
    pub emulator_url: String,
    pub http: reqwest::Client,
    pub database_url: String,
    /// Split topology: the identity service's RPC address.
    pub rpc: Option<String>,
    pub(super) shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Extra settings for a test app.
#[derive(Default, Clone)]
pub struct Options {
    pub args: Vec<String>,
    pub transactions_per_item: Option<usize>,
    /// Leave out the HS256 secret (the test configures a public key or JWKS instead).
    pub without_jwt_secret: bool,
    /// Reach the emulator through its proxy flavour (`/v1/plaid`).
    pub proxy: bool,
    /// Use this database instead of a fresh one (several apps on one database).
    pub database_url: Option<String>,
    /// Configure the emulator this app talks to.
    pub emulator: Option<EmulatorConfig>,
    /// Talk to this (running) emulator instead of starting one.
    pub shared_emulator: Option<Arc<RunningEmulator>>,
    /// The TOKEN_ENCRYPTION_KEY (base64) instead of the tests' fixed one.
    pub token_key: Option<String>,
    /// One process or two (default: `TEST_TOPOLOGY`, else one).
    pub topology: Option<Topology>,
    /// Split topology: mutual TLS between the two (the identity service's side, the gateway's).
    pub rpc_tls: Option<(RpcTls, RpcTls)>,
}

/// How the app under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `bankgraph serve`.
    OneProcess,
    /// `bankgraph identity` + `bankgraph gateway`, gRPC between them.
    Split,
}

impl Topology {
    /// `TEST_TOPOLOGY=split` runs every test against the split deployment.
    pub fn from_env() -> Topology {
        match std::env::var("TEST_TOPOLOGY").as_deref() {
            Ok("split") => Topology::Split,
            Ok("" | "one-process") | Err(_) => Topology::OneProcess,
            Ok(other) => panic!("TEST_TOPOLOGY must be split or one-process, not {other:?}"),
        }
    }
}

/// The service token of split test apps.
pub const SERVICE_TOKEN: &str = "test-service-token-0123456789abcdef";

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let p = Prepared::new(&options).await;
        if options.topology.unwrap_or_else(Topology::from_env) == Topology::Split {
            return Self::start_split(p, options.rpc_tls.clone()).await;
        }
        let app = App::build_with_listeners(p.config, EmulatorConfig::default(), p.public, p.internal)
            .await
            .expect("app builds");
        Self::start(app, p.emulator, p.database_url).await
    }
}

/// A test app's configuration and listeners, before it is built (for tests that assemble
/// the split deployment themselves).
pub struct Prepared {
    pub config: bankgraph::config::Config,
    pub public: tokio::net::TcpListener,
    pub internal: tokio::net::TcpListener,
    pub emulator: Arc<RunningEmulator>,
    pub database_url: String,
}

impl Prepared {
    pub async fn new(options: &Options) -> Prepared {
        init_logs();
        let mut emu = EmulatorConfig {
            transactions_per_item: options.transactions_per_item.unwrap_or(120),
            ..Default::default()
        };
        emu.webhook_policy.retry_delay = Duration::from_millis(50);
        if let Some(custom) = &options.emulator {
            emu = custom.clone();
        }
        let emulator = match &options.shared_emulator {
            Some(shared) => shared.clone(),
            None => Arc::new(RunningEmulator::start(emu, "127.0.0.1:0".parse::<SocketAddr>().unwrap()).await.unwrap()),
        };
        let database_url = match &options.database_url {
            Some(u) => u.clone(),
            None => fresh_database().await,
        };
        let plaid_url = if options.proxy { format!("{}/v1/plaid", emulator.url()) } else { emulator.url() };
        let key =
            options.token_key.clone().unwrap_or_else(|| base64::engine::general_purpose::STANDARD.encode([42u8; 32]));
        let mut args: Vec<String> = [
            "--bind-addr",
            "127.0.0.1:0",
            "--internal-bind-addr",
            "127.0.0.1:0",
            "--database-url",
            &database_url,
            "--jwt-secret",
            JWT_SECRET,
            "--token-encryption-key",
            &key,
            "--plaid-client-id",
            bankgraph::emulator::DEFAULT_CLIENT_ID,
            "--plaid-secret",
            bankgraph::emulator::DEFAULT_SECRET,
            "--plaid-base-url",
            &plaid_url,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if options.without_jwt_secret {
            let at = args.iter().position(|a| a == "--jwt-secret").unwrap();
            args.drain(at..at + 2);
        }
        args.extend(options.args.iter().cloned());
        // Rate limits are off unless a test sets them (tests call fast, as one caller).
        for limit in ["--rate-limit-per-ip", "--rate-limit-per-user", "--rate-limit-sensitive-per-minute"] {
            if !args.iter().any(|a| a.starts_with(limit)) {
                args.push(format!("{limit}=0"));
            }
        }
        // Bound first, so Plaid's webhooks can be pointed at our own internal listener.
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        if !args.iter().any(|a| a.starts_with("--plaid-webhook-url")) {
            args.push(format!("--plaid-webhook-url=http://{}/webhooks/plaid", internal.local_addr().unwrap()));
        }
        let config = settings(&args).resolve().expect("test config resolves");
        Prepared { config, public, internal, emulator, database_url }
    }
}

impl TestApp {
    /// The same configuration as two servers: the identity service (internal listener, RPC
    /// listener) and the gateway (public listener, its own internal listener).
    async fn start_split(p: Prepared, tls: Option<(RpcTls, RpcTls)>) -> TestApp {
        let Prepared { config, public, internal, emulator, database_url } = p;
        let token = Some(secrecy::SecretString::from(SERVICE_TOKEN.to_string()));
        let rpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let rpc_url = format!("{scheme}://{}", rpc.local_addr().unwrap());
        let (server_tls, client_tls) = match tls {
            Some((s, c)) => (Some(s), Some(c)),
            None => (None, None),
        };
        let identity = IdentityApp::build_with_listeners(
            SplitIdentityConfig {
                identity: config.identity,
                rpc: RpcServerConfig { bind: rpc.local_addr().unwrap(), token: token.clone(), tls: server_tls },
            },
            EmulatorConfig::default(),
            internal,
            rpc,
        )
        .await
        .expect("identity service builds");
        let gateway_internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = GatewayApp::build_with_listeners(
            SplitGatewayConfig {
                gateway: config.gateway,
                internal: gateway_internal.local_addr().unwrap(),
                rpc: RpcClientConfig { endpoints: vec![rpc_url.parse().unwrap()], token, tls: client_tls },
            },
            public,
            gateway_internal,
        )
        .expect("gateway builds");
        let base = format!("http://{}", gateway.public_addr());
        let internal = format!("http://{}", identity.internal_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let gateway = tokio::spawn(gateway.run(async {
                let _ = gateway_stopped.await;
            }));
            let identity = tokio::spawn(identity.run(async {
                let _ = rx.await;
            }));
            // The gateway stops first, as in a rolling deployment.
            let identity_result = identity.await?;
            let _ = stop_gateway.send(());
            gateway.await??;
            identity_result
        });
        let mut app = Self::started(base, internal, emulator, database_url, tx, task);
        app.rpc = Some(rpc_url);
        app
    }

    /// What `App::build` says for these options, when it refuses to start.
    pub async fn build_error(options: Options) -> String {
        let database_url = options.database_url.clone().expect("a database");
        let emulator = options.shared_emulator.clone().expect("an emulator");
        let key =
            options.token_key.clone().unwrap_or_else(|| base64::engine::general_purpose::STANDARD.encode([42u8; 32]));
        let mut args: Vec<String> = vec![
            "--bind-addr=127.0.0.1:0".into(),
            "--internal-bind-addr=127.0.0.1:0".into(),
            format!("--database-url={database_url}"),
            format!("--jwt-secret={JWT_SECRET}"),
            format!("--token-encryption-key={key}"),
            format!("--plaid-client-id={}", bankgraph::emulator::DEFAULT_CLIENT_ID),
            format!("--plaid-secret={}", bankgraph::emulator::DEFAULT_SECRET),
            format!("--plaid-base-url={}", emulator.url()),
        ];
        args.extend(options.args.iter().cloned());
        let config = settings(&args).resolve().expect("test config resolves");
        match App::build(config).await {
            Ok(_) => panic!("the app started"),
            Err(e) => format!("{e:#}"),
        }
    }

    pub async fn start(app: App, emulator: Arc<RunningEmulator>, database_url: String) -> TestApp {
        let base = format!("http://{}", app.public_addr());
        let internal = format!("http://{}", app.internal_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async {
            let _ = rx.await;
        }));
        Self::started(base, internal, emulator, database_url, tx, task)
    }

    fn started(
        base: String,
        internal: String,
        emulator: Arc<RunningEmulator>,
        database_url: String,
        tx: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    ) -> TestApp {
        TestApp {
            graphql: format!("{base}/api/v1/graphql"),
            base,
            internal,
            emulator_url: emulator.url(),
            emulator,
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
            database_url,
            rpc: None,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A valid caller token with MANAGE_PAYMENT.
    pub fn token(&self, sub: &str) -> String {
        token_with(sub, "MANAGE_PAYMENT", 3600)
    }

    /// Runs SQL on the app's database (for injected storage failures).
    pub async fn sql(&self, statements: &[&str]) {
        if self.database_url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(&self.database_url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.database_url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        }
    }

    /// One number from the app's database.
    pub async fn db_i64(&self, sql: &str) -> i64 {
        Self::count_in(&self.database_url, sql).await
    }

    /// One number from any test database.
    pub async fn count_in(database_url: &str, sql: &str) -> i64 {
        use sqlx::Row;
        if database_url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(database_url).await.unwrap();
            sqlx::query(sql).fetch_one(&mut c).await.unwrap().try_get::<i64, _>(0).unwrap()
        } else {
            let mut c = sqlx::SqliteConnection::connect(database_url).await.unwrap();
            sqlx::query(sql).fetch_one(&mut c).await.unwrap().try_get::<i64, _>(0).unwrap()
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    /// Stops the app and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
