//! The load generator and the servers the HTTP benchmarks drive: `bankgraph serve` against
//! the emulator as a separate process, callers seeded through the public API.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bankgraph::emulator::drive::Endpoints;
use serde_json::{Value, json};

use super::{Proc, SECRET, start};

/// The token-encryption key every benchmark server runs with.
pub const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

pub struct Run {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
    /// Every request sent, the warm-up's included (for CPU per request over the whole run).
    pub sent: usize,
}

/// What one request sends: the caller's token (none for the raw server) and the JSON body.
pub type Request = (Option<Arc<str>>, bytes::Bytes);

/// Chooses each request: called with the connection's number and its own random source.
pub type Picker = Arc<dyn Fn(usize, &mut rand_chacha::ChaCha8Rng) -> Request + Send + Sync>;

/// Drives `conns` concurrent connections against `url` for `secs` (after a 1 s warm-up), each
/// request chosen by `pick`; every answer is checked for `errors`.
pub async fn load_with(url: &str, pick: Picker, conns: usize, secs: u64) -> Run {
    use rand::SeedableRng;
    let client = reqwest::Client::builder().pool_max_idle_per_host(conns).build().unwrap();
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for n in 0..conns {
        let (client, url, pick) = (client.clone(), url.to_string(), pick.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n as u64);
            let (mut lat, mut errors, mut sent) = (Vec::with_capacity(4096), 0usize, 0usize);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                sent += 1;
                let (token, body) = pick(n, &mut rng);
                let mut req = client.post(&url).header("content-type", "application/json").body(body);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let ok = match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|b| !b.windows(8).any(|w| w == b"\"errors\"")).unwrap_or(false)
                    }
                    _ => false,
                };
                if t0 >= warm {
                    lat.push(t0.elapsed().as_micros() as u32);
                    errors += usize::from(!ok);
                }
            }
            (lat, errors, sent)
        }));
    }
    let (mut all, mut errors, mut sent) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, e, s) = t.await.unwrap();
        all.extend(l);
        errors += e;
        sent += s;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0) as f64
            / 1000.0
    };
    Run { rps: all.len() as f64 / secs as f64, p50_ms: pct(0.50), p99_ms: pct(0.99), errors, sent }
}

/// One query, one caller (or none), on every connection.
pub async fn load(url: &str, token: Option<&str>, query: &str, conns: usize, secs: u64) -> Run {
    let body = bytes::Bytes::from(serde_json::to_vec(&json!({"query": query})).unwrap());
    let token: Option<Arc<str>> = token.map(Arc::from);
    load_with(url, Arc::new(move |_, _| (token.clone(), body.clone())), conns, secs).await
}

pub async fn gql(http: &reqwest::Client, url: &str, token: &str, query: &str, variables: Value) -> Value {
    http.post(url)
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Links one item for a caller (through bankgraph and the emulator); returns its
/// `completePlaidLink` answer.
pub async fn link_one(http: &reqwest::Client, graphql: &str, emulator: &str, token: &str, link: Value) -> Value {
    let q = "mutation($input: CompletePlaidLinkInput!) { completePlaidLink(input: $input) { platformItemId bankInstitutionAuthId } }";
    let endpoints = Endpoints { http, graphql, emulator, bearer: token };
    let (_, r) = endpoints.link_via(link, q).await.unwrap();
    assert!(r["errors"].is_null(), "{r}");
    r["data"]["completePlaidLink"].clone()
}

/// Links an item with `count` transactions for `sub` and waits until its history is stored.
pub async fn seed(http: &reqwest::Client, graphql: &str, emulator: &str, token: &str, count: usize) {
    let link = json!({
        "username": "user_custom",
        "password": json!({"transaction_count": count, "seed": format!("bench-{count}")}).to_string(),
    });
    link_one(http, graphql, emulator, token, link).await;
    let count_q = "{ getPlaidBankTransactions(input: {paginate: {limit: 1}}) { totalCount } }";
    loop {
        let r = gql(http, graphql, token, count_q, json!({})).await;
        if r["data"]["getPlaidBankTransactions"]["totalCount"].as_u64() == Some(count as u64) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A caller token, from the `bankgraph token` command of `bin`.
pub fn token(bin: &str, sub: &str, db: &str) -> String {
    let out = Command::new(bin)
        .args(["token", "--sub", sub, "--ttl", "86400", "--jwt-secret", SECRET, "--database-url", db])
        .env("TOKEN_ENCRYPTION_KEY", KEY)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The Plaid emulator of `bin`, with 50 transactions per new item.
pub fn emulator(bin: &str) -> (Proc, String) {
    start(
        Command::new(bin).args(["plaid-emulator", "--addr", "127.0.0.1:0", "--transactions-per-item", "50"]),
        "listening on ",
        None,
    )
}

/// Starts `bankgraph serve` from `bin` on `db` against the emulator, as the main run does,
/// with `extra` flags.
pub fn serve_with(bin: &str, db: &str, emulator_url: &str, log: &Path, extra: &[String]) -> (Proc, String) {
    start(
        Command::new(bin)
            .args([
                "serve",
                "--bind-addr=127.0.0.1:0",
                "--internal-bind-addr=127.0.0.1:0",
                &format!("--database-url={db}"),
                &format!("--jwt-secret={SECRET}"),
                &format!("--token-encryption-key={KEY}"),
                "--plaid-client-id=emulator_client_id",
                "--plaid-secret=emulator_sandbox_secret",
                &format!("--plaid-base-url={emulator_url}"),
                "--rate-limit-per-ip=0",
                "--rate-limit-per-user=0",
                "--rate-limit-sensitive-per-minute=0",
                "--job-workers=1",
            ])
            .args(extra)
            // BENCH_RUST_LOG: another log level (the default, info, logs every request).
            .env("RUST_LOG", std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env("LOG_FORMAT", "json"),
        "GraphQL and GraphiQL: ",
        Some(log),
    )
}

/// `serve_with`, the read cache as `BENCH_READ_CACHE_SECONDS` says (the default when unset).
pub fn serve(bin: &str, db: &str, emulator_url: &str, log: &Path) -> (Proc, String) {
    let extra: Vec<String> = std::env::var("BENCH_READ_CACHE_SECONDS")
        .ok()
        .map(|s| format!("--read-cache-seconds={s}"))
        .into_iter()
        .collect();
    serve_with(bin, db, emulator_url, log, &extra)
}

/// The machine's ceiling: a raw axum handler answering `POST /api/v1/graphql` with the bytes of
/// `body_path`, from memory (the benchmarks run it as their own `raw-server` subcommand).
pub async fn raw_server(body_path: &str) {
    let body = bytes::Bytes::from(std::fs::read(body_path).unwrap());
    let app = axum::Router::new().route(
        "/api/v1/graphql",
        axum::routing::post(move || {
            let body = body.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("raw listening on http://{}/api/v1/graphql", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

/// The raw ceiling for `query`: this benchmark's own `raw-server` subcommand answering, from
/// memory, the bytes bankgraph answers `token` at `graphql`. Returns it and its URL.
pub async fn start_raw(graphql: &str, token: &str, query: &str, tmp: &Path) -> (Proc, String) {
    let answer = reqwest::Client::new()
        .post(graphql)
        .bearer_auth(token)
        .json(&json!({"query": query}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let body_path = tmp.join("raw-answer.json");
    std::fs::write(&body_path, &answer).unwrap();
    let me = std::env::current_exe().unwrap();
    start(Command::new(me).args(["raw-server", body_path.to_str().unwrap()]), "raw listening on ", None)
}
