//! `TestApp`: bankgraph on port 0 against its own emulator and its own database (a fresh
//! SQLite file, or a fresh PostgreSQL database when `TEST_DATABASE_URL` points at a server).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bankgraph::app::App;
use bankgraph::config::Settings;
use bankgraph::emulator::{EmulatorConfig, RunningEmulator};
use base64::Engine;
use clap::Parser;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sqlx::Connection;

pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-0123456789";

/// Every log line of the test binary, for the leak test.
pub fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Every response body any test received, for the leak test.
pub fn bodies() -> &'static Mutex<Vec<String>> {
    static BODIES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    BODIES.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,h2=info,rustls=info,reqwest=info")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

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
    pub http: reqwest::Client,
    pub database_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
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
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
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
        let app =
            App::build_with_listeners(config, EmulatorConfig::default(), public, internal).await.expect("app builds");
        Self::start(app, emulator, database_url).await
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
        TestApp {
            graphql: format!("{base}/api/v1/graphql"),
            base,
            internal,
            emulator,
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
            database_url,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A valid caller token with MANAGE_PAYMENT.
    pub fn token(&self, sub: &str) -> String {
        token_with(sub, "MANAGE_PAYMENT", 3600)
    }

    /// Sends raw headers and a JSON body to the GraphQL endpoint.
    pub async fn post_raw(&self, headers: &[(&str, &str)], body: Value) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.http.post(&self.graphql).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        bodies().lock().unwrap().push(text.clone());
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A GraphQL call as `token` (or anonymous).
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.post_raw(&headers, json!({"query": query, "variables": variables})).await.2
    }

    pub async fn emu_post(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.emulator.url())).json(&body).send().await.unwrap();
        r.json().await.unwrap()
    }

    pub async fn emu_get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.emulator.url())).send().await.unwrap().json().await.unwrap()
    }

    /// Plaid Link as a user would run it: a link token from bankgraph, Link finished at the
    /// emulator. Returns (public token, emulator item id).
    pub async fn link_session(&self, token: &str, input: Value, link: Value) -> (String, String) {
        let r = self.gql(Some(token), CREATE_LINK_TOKEN, json!({"input": input})).await;
        let link_token =
            r["data"]["createPlaidLinkToken"]["linkToken"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
        let mut body = link;
        body["link_token"] = json!(link_token);
        let done = self.emu_post("/emulator/link/complete", body).await;
        (
            done["public_token"].as_str().unwrap_or_else(|| panic!("{done}")).to_string(),
            done["item_id"].as_str().unwrap().to_string(),
        )
    }

    /// A complete new link; returns the `completePlaidLink` payload.
    pub async fn link(&self, token: &str) -> Value {
        self.link_at(token, "ins_109508").await
    }

    pub async fn link_at(&self, token: &str, institution: &str) -> Value {
        let (public_token, _) = self.link_session(token, json!({}), json!({"institution_id": institution})).await;
        let r = self.complete(token, &public_token, None).await;
        r["data"]["completePlaidLink"].clone()
    }

    pub async fn complete(&self, token: &str, public_token: &str, item: Option<&str>) -> Value {
        let mut input = json!({"publicToken": public_token});
        if let Some(i) = item {
            input["platformItemId"] = json!(i);
        }
        self.gql(Some(token), COMPLETE_LINK, json!({"input": input})).await
    }

    pub async fn accounts(&self, token: &str, input: Value) -> Value {
        let r = self.gql(Some(token), ACCOUNTS, json!({"input": input})).await;
        r["data"]["getPlaidBankAccounts"].clone()
    }

    pub async fn transactions(&self, token: &str, input: Value) -> Value {
        self.gql(Some(token), TRANSACTIONS, json!({"input": input})).await
    }

    /// Waits until the caller's stored history has `count` transactions.
    pub async fn wait_for_history(&self, token: &str, count: i64) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            last = self.transactions(token, json!({"paginate": {"limit": 1}})).await;
            if last["data"]["getPlaidBankTransactions"]["totalCount"].as_i64() == Some(count) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("history never reached {count}: {last}");
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
        use sqlx::Row;
        if self.is_postgres() {
            let mut c = sqlx::PgConnection::connect(&self.database_url).await.unwrap();
            sqlx::query(sql).fetch_one(&mut c).await.unwrap().try_get::<i64, _>(0).unwrap()
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.database_url).await.unwrap();
            sqlx::query(sql).fetch_one(&mut c).await.unwrap().try_get::<i64, _>(0).unwrap()
        }
    }

    /// Posts a raw webhook to the internal listener; returns the HTTP status.
    pub async fn post_webhook(&self, body: &[u8], signature: Option<&str>) -> u16 {
        let mut req =
            self.http.post(format!("{}/webhooks/plaid", self.internal)).header("content-type", "application/json");
        if let Some(s) = signature {
            req = req.header("plaid-verification", s);
        }
        req.body(body.to_vec()).send().await.unwrap().status().as_u16()
    }

    /// Waits until `check` holds, polling; panics with `what` after 30 s.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..600 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never happened: {what}");
    }

    /// Our stored transactions: Plaid transaction id -> (historical id, status, amount, category).
    pub async fn stored_transactions(
        &self,
        token: &str,
        filter: Value,
    ) -> std::collections::BTreeMap<String, (String, String, String, String)> {
        let mut out = std::collections::BTreeMap::new();
        let mut offset = 0;
        loop {
            let mut input = filter.clone();
            input["paginate"] = json!({"limit": 100, "offset": offset});
            let r = self.transactions(token, input).await;
            let page = &r["data"]["getPlaidBankTransactions"];
            let txs = page["transactions"].as_array().unwrap_or_else(|| panic!("{r}"));
            for t in txs {
                out.insert(
                    t["transactionId"].as_str().unwrap().to_string(),
                    (
                        t["historicalBankTransactionId"].as_str().unwrap().to_string(),
                        t["transactionStatus"].as_str().unwrap().to_string(),
                        t["amount"].as_str().unwrap().to_string(),
                        t["category"].as_str().unwrap_or_default().to_string(),
                    ),
                );
            }
            offset += txs.len();
            if txs.is_empty() || offset as i64 >= page["totalCount"].as_i64().unwrap() {
                return out;
            }
        }
    }

    /// The emulator's current transaction ids of an item.
    pub async fn upstream_ids(&self, item_id: &str) -> std::collections::BTreeSet<String> {
        let v = self.emu_get(&format!("/emulator/items/{item_id}/transactions")).await;
        v["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["transaction_id"].as_str().unwrap().to_string())
            .collect()
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

/// An HS256 token with the test secret.
pub fn token_with(sub: &str, scope: &str, ttl: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "scope": scope, "exp": now + ttl, "iat": now}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn code(r: &Value) -> Option<String> {
    r["errors"][0]["extensions"]["code"].as_str().map(str::to_string)
}

pub const CREATE_LINK_TOKEN: &str = "mutation($input: CreatePlaidLinkTokenInput!) { createPlaidLinkToken(input: $input) { linkToken expiration requestId mode } }";
pub const COMPLETE_LINK: &str = "mutation($input: CompletePlaidLinkInput!) { completePlaidLink(input: $input) {
    requiresAddress bankAccountId bankInstitutionAuthId newlyLinkedBankInstitutionAuthId bankInstitutionName platformItemId
    bankAccounts { bankInstitutionAuthId bankAccountId bankName lastFour type subtype } } }";
pub const ACCOUNTS: &str = "query($input: PlaidBankAccountFilterInput) { getPlaidBankAccounts(input: $input) {
    platformItemId bankInstitutionAuthId bankInstitutionName bankAccountId accountName lastFour type subtype status } }";
pub const BALANCES: &str = "query($input: PlaidBankBalanceFilterInput) { getPlaidBankBalances(input: $input) {
    platformItemId bankInstitutionAuthId bankAccountId amount current currencyCode source trigger startedAt } }";
pub const TRANSACTIONS: &str = "query($input: PlaidBankTransactionFilterInput) { getPlaidBankTransactions(input: $input) {
    totalCount transactions { historicalBankTransactionId platformItemId bankInstitutionAuthId bankAccountId transactionId
    transactionStatus transactionType transactionDate amount currencyCode description merchantName category pending } } }";
pub const REFRESH: &str = "mutation { refreshPlaidBankConnections { status balances { bankAccountId amount current }
    verifyMembers { platformItemId bankInstitutionAuthId } } }";
pub const ADDRESS: &str =
    "mutation($input: CreatePlaidLinkAddressInput!) { createPlaidLinkAddress(input: $input) { addressId } }";
pub const REMOVE: &str =
    "mutation($input: RemovePlaidBankInstitutionInput!) { removePlaidBankInstitution(input: $input) {
    removed bankInstitutionAuthId } }";

/// A real `bankgraph serve` process (the test binary's own build) on ports it picks, against a
/// test's database and emulator; its GraphQL URL is read from its banner. Rate limits are off.
pub struct Server {
    child: Option<std::process::Child>,
    pub graphql: String,
}

impl Server {
    pub fn start(database_url: &str, plaid_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn(database_url, plaid_url, extra, env, None)
    }

    /// The same, logging at `info` into the file `log`, as a deployment would keep its log.
    pub fn start_logged(
        database_url: &str,
        plaid_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Server {
        Self::spawn(database_url, plaid_url, extra, env, Some(log))
    }

    fn spawn(
        database_url: &str,
        plaid_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Server {
        use std::io::{BufRead, BufReader};
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bankgraph"));
        cmd.args([
            "serve",
            "--bind-addr=127.0.0.1:0",
            "--internal-bind-addr=127.0.0.1:0",
            &format!("--database-url={database_url}"),
            &format!("--jwt-secret={JWT_SECRET}"),
            &format!("--token-encryption-key={key}"),
            "--plaid-client-id=emulator_client_id",
            "--plaid-secret=emulator_sandbox_secret",
            &format!("--plaid-base-url={plaid_url}"),
            "--rate-limit-per-ip=0",
            "--rate-limit-per-user=0",
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped());
        match log {
            Some(path) => cmd.env("RUST_LOG", "info").stderr(std::fs::File::create(path).expect("log file")),
            None => cmd.env("RUST_LOG", "warn").stderr(std::process::Stdio::null()),
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("bankgraph starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let graphql = loop {
            let line = lines.next().expect("banner").unwrap();
            if let Some(url) = line.split("GraphQL and GraphiQL: ").nth(1) {
                break url.trim().to_string();
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child: Some(child), graphql }
    }

    /// SIGKILL: no shutdown hook, no flush, nothing finished.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
