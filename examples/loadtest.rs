#![allow(clippy::unwrap_used)]
//! The HTTP load benchmark (run it with `bash bench/load.sh`).
//!
//! For SQLite and PostgreSQL, a release `bankgraph serve` (rate limits off) and the Plaid
//! emulator run as separate processes. It measures an authenticated `getPlaidBankAccounts` at
//! 1, 32 and 128 connections (req/s, p50, p99, every response checked for `errors`) and the
//! server's peak RSS; the machine's ceiling, a raw axum handler in its own process returning
//! the same JSON bytes from memory, at the same concurrency; and a `getPlaidBankTransactions`
//! page on an account with 100,000 transactions against one with 1,000, unfiltered and with a
//! date range over the whole history. bankgraph runs as it would in production, logging every
//! request at `info` as JSON lines into a file. On PostgreSQL it also measures the split
//! deployment (`bankgraph identity` + `bankgraph gateway`, gRPC between them, on the same
//! database) beside the one-process numbers, with the server CPU each request costs in both. It
//! prints a Markdown report and writes it to `bench/results/load.md`. `--bankgraph PATH` measures another build of bankgraph;
//! `compare PATH` measures that build and this one side by side (see `compare`).

#[path = "common/mod.rs"]
mod common;

use std::process::Command;

use common::load::{Run, emulator, load, raw_server, seed, serve, start_raw, token};
use common::{Proc, SECRET, cpu_seconds, peak_rss_mb, postgres_cpu_seconds, start};
use serde_json::json;

const ACCOUNTS: &str = "{ getPlaidBankAccounts { platformItemId bankInstitutionAuthId bankInstitutionName bankAccountId accountName lastFour type subtype status } }";
const PAGE: &str = "{ getPlaidBankTransactions(input: {paginate: {limit: 50}}) { totalCount transactions { historicalBankTransactionId transactionId amount transactionType transactionDate merchantName category pending } } }";
/// The same page with a date range covering the whole history: its `totalCount` must not
/// count the range row by row.
const FILTERED_PAGE: &str = "{ getPlaidBankTransactions(input: {startDate: \"2000-01-01T00:00:00Z\", endDate: \"2100-01-01T00:00:00Z\", paginate: {limit: 50}}) { totalCount transactions { historicalBankTransactionId transactionId amount transactionType transactionDate merchantName category pending } } }";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("raw-server") {
        return raw_server(&args[2]).await;
    }
    // `loadtest probe URL TOKEN QUERY CONNECTIONS SECONDS`: one measurement, for profiling.
    if args.get(1).map(String::as_str) == Some("probe") {
        let token = Some(args[3].as_str()).filter(|t| !t.is_empty());
        let run = load(&args[2], token, &args[4], args[5].parse().unwrap(), args[6].parse().unwrap()).await;
        println!("{:.0} req/s p50 {:.2} ms p99 {:.2} ms errors {}", run.rps, run.p50_ms, run.p99_ms, run.errors);
        return;
    }
    // `loadtest split [--rounds 5] [--seconds 3]`: one process and the split deployment on one
    // PostgreSQL database, side by side (see `split_compare`).
    if args.get(1).map(String::as_str) == Some("split") {
        let opt = |name: &str, default: u64| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        return split_compare(opt("--rounds", 5) as usize, opt("--seconds", 3)).await;
    }
    // `loadtest compare OTHER_BANKGRAPH [--rounds 5] [--seconds 3]`: this build and another,
    // side by side (see `compare`).
    if args.get(1).map(String::as_str) == Some("compare") {
        let opt = |name: &str, default: u64| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        return compare(&args[2], opt("--rounds", 5) as usize, opt("--seconds", 3)).await;
    }
    let arg = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let secs: u64 = arg("--seconds", "5").parse().unwrap();
    let postgres = arg("--postgres", "postgres://postgres@127.0.0.1:5432/postgres");
    let root = env!("CARGO_MANIFEST_DIR");
    // `--bankgraph PATH` measures another build (an older commit's, side by side).
    let bin = arg("--bankgraph", &format!("{root}/target/release/bankgraph"));
    let me = std::env::current_exe().unwrap();
    let http = reqwest::Client::new();
    let tmp = std::env::temp_dir().join(format!("bankgraph-load-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();

    let (_emu, emulator_url) = emulator(&bin);
    let pg_db = format!("bankgraph_load_{}", std::process::id());
    let pg_ok = Command::new("psql")
        .args([&postgres, "-qc", &format!("create database {pg_db}")])
        .status()
        .is_ok_and(|s| s.success());
    let mut backends = vec![("SQLite", format!("sqlite://{}/load.db", tmp.display()))];
    if pg_ok {
        backends.push(("PostgreSQL", format!("{}/{pg_db}", postgres.rsplit_once('/').unwrap().0)));
    } else {
        eprintln!("PostgreSQL unavailable at {postgres}: skipped");
    }

    let levels = [1usize, 32, 128];
    let mut report = String::new();
    let mut accounts_body = Vec::new();
    let mut rows: Vec<(String, usize, Run, f64)> = Vec::new();
    // (label, server CPU µs per request at 32 connections, req/s, p50 at 1 connection)
    let mut cpu: Vec<(String, f64, f64, f64)> = Vec::new();
    let mut pages: Vec<(String, Run, Run)> = Vec::new();
    let mut filtered: Vec<(String, Run, Run)> = Vec::new();
    for (name, db) in &backends {
        let (server, graphql) = serve(&bin, db, &emulator_url, &tmp.join(format!("{name}.log")));
        let (small, large, reader) =
            (token(&bin, "bench-1k", db), token(&bin, "bench-100k", db), token(&bin, "bench-reader", db));
        seed(&http, &graphql, &emulator_url, &reader, 50).await;
        seed(&http, &graphql, &emulator_url, &small, 1_000).await;
        seed(&http, &graphql, &emulator_url, &large, 100_000).await;
        if accounts_body.is_empty() {
            accounts_body = http
                .post(&graphql)
                .bearer_auth(&reader)
                .json(&json!({"query": ACCOUNTS}))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec();
        }
        let label = format!("one process, {name}");
        account_levels(&label, &[server.0.id()], &graphql, &reader, &levels, secs, &mut rows, &mut cpu).await;
        let p1k = load(&graphql, Some(&small), PAGE, 32, secs).await;
        let p100k = load(&graphql, Some(&large), PAGE, 32, secs).await;
        eprintln!("{name} page 1k {:.0} req/s, 100k {:.0} req/s", p1k.rps, p100k.rps);
        pages.push((name.to_string(), p1k, p100k));
        let f1k = load(&graphql, Some(&small), FILTERED_PAGE, 32, secs).await;
        let f100k = load(&graphql, Some(&large), FILTERED_PAGE, 32, secs).await;
        eprintln!("{name} date-filtered page 1k {:.0} req/s, 100k {:.0} req/s", f1k.rps, f100k.rps);
        filtered.push((name.to_string(), f1k, f100k));
        drop(server);
        let lines = std::fs::read_to_string(tmp.join(format!("{name}.log"))).map(|l| l.lines().count()).unwrap_or(0);
        eprintln!("{name}: bankgraph wrote {lines} log lines");
        if *name == "PostgreSQL" {
            // The same database and caller, served by the two services apart.
            let (identity, gateway, graphql, _) = split(&bin, db, &emulator_url, &tmp);
            let label = format!("split (gateway + identity), {name}");
            let pids = [identity.0.id(), gateway.0.id()];
            account_levels(&label, &pids, &graphql, &reader, &levels, secs, &mut rows, &mut cpu).await;
        }
    }
    if pg_ok {
        let _ = Command::new("psql").args([&postgres, "-qc", &format!("drop database if exists {pg_db}")]).status();
    }

    let body_path = tmp.join("accounts.json");
    std::fs::write(&body_path, &accounts_body).unwrap();
    let (_raw, raw_url) =
        start(Command::new(&me).args(["raw-server", body_path.to_str().unwrap()]), "raw listening on ", None);
    let mut ceiling = Vec::new();
    for &c in &levels {
        let run = load(&raw_url, None, ACCOUNTS, c, secs).await;
        eprintln!("raw c={c}: {:.0} req/s p50 {:.2} ms p99 {:.2} ms", run.rps, run.p50_ms, run.p99_ms);
        ceiling.push((c, run));
    }

    report.push_str(&format!(
        "Load benchmark: {} s per run after 1 s warm-up, {} cores, client and servers on this machine; bankgraph logs every request at info as JSON into a file. \
         PostgreSQL is on loopback without TLS (`sslmode=disable`, bankgraph's choice for a database on this machine).\n\n",
        secs,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ));
    report.push_str("| target | connections | req/s | p50 ms | p99 ms | errors | share of raw ceiling | peak RSS MB |\n|---|---|---|---|---|---|---|---|\n");
    for (c, run) in &ceiling {
        report.push_str(&format!(
            "| raw axum, same bytes | {c} | {:.0} | {:.2} | {:.2} | {} | 1.00 | |\n",
            run.rps, run.p50_ms, run.p99_ms, run.errors
        ));
    }
    for (name, c, run, rss) in &rows {
        let raw = ceiling.iter().find(|(rc, _)| rc == c).map(|(_, r)| r.rps).unwrap_or(f64::NAN);
        report.push_str(&format!(
            "| bankgraph {name}, getPlaidBankAccounts | {c} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {:.0} |\n",
            run.rps,
            run.p50_ms,
            run.p99_ms,
            run.errors,
            run.rps / raw,
            rss
        ));
    }
    let one = cpu.iter().find(|c| c.0 == "one process, PostgreSQL");
    let split = cpu.iter().find(|c| c.0.starts_with("split"));
    if let (Some(one), Some(split)) = (one, split) {
        report.push_str(&format!(
            "\nThe split deployment's hop (PostgreSQL, getPlaidBankAccounts): at 32 connections it serves {:.2} of the one-process throughput; \
             server CPU per request (all bankgraph processes, from /proc) {:.0} µs one-process, {:.0} µs split, so the hop costs {:.0} µs of CPU \
             (a second HTTP/2 exchange: protobuf encoding on both sides, a gRPC call through tonic and hyper, and the gateway's own \
             request handling now in its own process); at 1 connection the p50 latency goes from {:.2} ms to {:.2} ms.\n",
            split.2 / one.2,
            one.1,
            split.1,
            split.1 - one.1,
            one.3,
            split.3
        ));
    }
    page_table(&mut report, "page on 1,000 (req/s, p50 ms) | page on 100,000 (req/s, p50 ms)", &pages);
    page_table(&mut report, "date-filtered page on 1,000 (req/s, p50 ms) | on 100,000 (req/s, p50 ms)", &filtered);
    println!("{report}");
    let dir = format!("{root}/bench/results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/load.md"), report).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The account read at each concurrency against `graphql`, served by the processes `pids`:
/// a row per level (req/s, latency, peak RSS of all of them) and, at 32 connections, the server
/// CPU per request (with the p50 at 1 connection).
#[allow(clippy::too_many_arguments)]
async fn account_levels(
    label: &str,
    pids: &[u32],
    graphql: &str,
    reader: &str,
    levels: &[usize],
    secs: u64,
    rows: &mut Vec<(String, usize, Run, f64)>,
    cpu: &mut Vec<(String, f64, f64, f64)>,
) {
    let used = || pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let mut p50_at_1 = f64::NAN;
    for &c in levels {
        let before = used();
        let run = load(graphql, Some(reader), ACCOUNTS, c, secs).await;
        let spent = used() - before;
        let rss = pids.iter().map(|p| peak_rss_mb(*p)).sum::<f64>();
        eprintln!(
            "{label} accounts c={c}: {:.0} req/s p50 {:.2} ms p99 {:.2} ms errors {}",
            run.rps, run.p50_ms, run.p99_ms, run.errors
        );
        if c == 1 {
            p50_at_1 = run.p50_ms;
        }
        if c == 32 {
            // The warm-up second is included in both: CPU per request over (secs + 1) s.
            cpu.push((label.to_string(), spent / (run.rps * (secs + 1) as f64) * 1e6, run.rps, p50_at_1));
        }
        rows.push((label.to_string(), c, run, rss));
    }
}

/// `TOKIO_WORKER_THREADS` for a split process when `var` is set (default: tokio's, one worker
/// per core the process may use).
fn workers(var: &str) -> Vec<(&'static str, String)> {
    std::env::var(var).map(|n| vec![("TOKIO_WORKER_THREADS", n)]).unwrap_or_default()
}

/// `bankgraph identity` on `db` and a `bankgraph gateway` calling it, as the split deployment
/// runs; returns both and the gateway's GraphQL URL.
/// The split deployment: (identity, gateway, its GraphQL URL, its internal listener's address).
fn split(bin: &str, db: &str, emulator_url: &str, tmp: &std::path::Path) -> (Proc, Proc, String, String) {
    let key = common::load::KEY;
    // A free port for the gateway's internal listener, whose metrics the report reads.
    let internal = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let token = "bench-service-token-0123456789abcdef-0123";
    let (identity, rpc) = start(
        Command::new(bin)
            .args([
                "identity",
                "--identity-bind-addr=127.0.0.1:0",
                "--internal-bind-addr=127.0.0.1:0",
                &format!("--identity-service-token={token}"),
                &format!("--database-url={db}"),
                &format!("--token-encryption-key={key}"),
                "--plaid-client-id=emulator_client_id",
                "--plaid-secret=emulator_sandbox_secret",
                &format!("--plaid-base-url={emulator_url}"),
                "--job-workers=1",
            ])
            .env("RUST_LOG", "info")
            .envs(workers("BENCH_IDENTITY_WORKERS"))
            .env("LOG_FORMAT", "json"),
        "identity RPC:",
        Some(&tmp.join("identity.log")),
    );
    let (gateway, graphql) = start(
        Command::new(bin)
            .args([
                "gateway",
                "--bind-addr=127.0.0.1:0",
                &format!("--internal-bind-addr={internal}"),
                &format!("--jwt-secret={SECRET}"),
                &format!("--identity-url=http://{rpc}"),
                &format!("--identity-service-token={token}"),
                "--rate-limit-per-ip=0",
                "--rate-limit-per-user=0",
                "--rate-limit-sensitive-per-minute=0",
            ])
            .env("RUST_LOG", "info")
            .envs(workers("BENCH_GATEWAY_WORKERS"))
            .env("LOG_FORMAT", "json"),
        "GraphQL and GraphiQL: ",
        Some(&tmp.join("gateway.log")),
    );
    (identity, gateway, graphql, internal)
}

/// The sum and count of the gateway's account-read batches (requests answered, calls made).
async fn batches(http: &reqwest::Client, internal: &str) -> (f64, f64) {
    let text = http.get(format!("http://{internal}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    (value("bankgraph_identity_rpc_batch_requests_sum "), value("bankgraph_identity_rpc_batch_requests_count "))
}

/// This build and `other` side by side: both serve the account read from their own database
/// (SQLite and PostgreSQL each), and every round measures the raw ceiling and each server at
/// 32 connections, one after the other in a rotating order, so drift of the machine falls on
/// all of them alike. Reports each target's median req/s and its median share of the ceiling
/// measured in the same round; writes `bench/results/compare.md`.
async fn compare(other: &str, rounds: usize, secs: u64) {
    let root = env!("CARGO_MANIFEST_DIR");
    let this = format!("{root}/target/release/bankgraph");
    let http = reqwest::Client::new();
    let tmp = std::env::temp_dir().join(format!("bankgraph-compare-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (_emu, emulator_url) = emulator(&this);
    let postgres = "postgres://postgres@127.0.0.1:5432/postgres";
    let mut targets: Vec<(String, Proc, String, String)> = Vec::new();
    let mut pg_dbs = Vec::new();
    for (label, bin) in [("other", other), ("this", this.as_str())] {
        let pg_db = format!("bankgraph_compare_{}_{label}", std::process::id());
        let pg_ok = Command::new("psql")
            .args([postgres, "-qc", &format!("create database {pg_db}")])
            .status()
            .is_ok_and(|s| s.success());
        let mut dbs = vec![("SQLite", format!("sqlite://{}/{label}.db", tmp.display()))];
        if pg_ok {
            dbs.push(("PostgreSQL", format!("postgres://postgres@127.0.0.1:5432/{pg_db}")));
            pg_dbs.push(pg_db);
        }
        for (backend, db) in dbs {
            let name = format!("{label} build, {backend}");
            let (proc_, graphql) = serve(bin, &db, &emulator_url, &tmp.join(format!("{label}-{backend}.log")));
            let reader = token(bin, "bench-reader", &db);
            seed(&http, &graphql, &emulator_url, &reader, 50).await;
            targets.push((name, proc_, graphql, reader));
        }
    }
    let (_raw, raw_url) = start_raw(&targets[0].2, &targets[0].3, ACCOUNTS, &tmp).await;
    // Per target and round: req/s, share of the round's ceiling, p99, and CPU µs per request
    // of the server, of PostgreSQL and of the load generator.
    let mut results: Vec<Vec<[f64; 6]>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds {
        let mut order: Vec<Option<usize>> = std::iter::once(None).chain((0..targets.len()).map(Some)).collect();
        let n = order.len();
        order.rotate_left(round % n);
        let mut raw = f64::NAN;
        let mut measured = Vec::new();
        for t in order {
            match t {
                None => raw = load(&raw_url, None, ACCOUNTS, 32, secs).await.rps,
                Some(i) => {
                    let cpu =
                        || [cpu_seconds(targets[i].1.0.id()), postgres_cpu_seconds(), cpu_seconds(std::process::id())];
                    let before = cpu();
                    let run = load(&targets[i].2, Some(&targets[i].3), ACCOUNTS, 32, secs).await;
                    let after = cpu();
                    assert_eq!(run.errors, 0, "{} answered with errors", targets[i].0);
                    let per = |k: usize| (after[k] - before[k]) / run.sent as f64 * 1e6;
                    measured.push((i, [run.rps, 0.0, run.p99_ms, per(0), per(1), per(2)]));
                }
            }
        }
        for (i, mut m) in measured {
            m[1] = m[0] / raw;
            results[i].push(m);
        }
        eprintln!("round {}: raw {raw:.0} req/s", round + 1);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut report = format!(
        "Side by side: `{other}` (other) and this build, getPlaidBankAccounts at 32 connections (READ_CACHE_SECONDS={}), {rounds} rounds of {secs} s, \
         the raw ceiling measured in every round, {} cores, PostgreSQL on loopback (`sslmode` as each build chooses: this one `disable`). \
         CPU per request (µs, from /proc, warm-up included): the server process, every PostgreSQL process on the machine, and the load generator.\n\n\
         | target | median req/s | median p99 ms | median share of the round's raw ceiling | shares by round | server CPU µs | PostgreSQL CPU µs | load generator CPU µs |\n|---|---|---|---|---|---|---|---|\n",
        std::env::var("BENCH_READ_CACHE_SECONDS").unwrap_or_else(|_| "1, the default".into()),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    for (i, (name, ..)) in targets.iter().enumerate() {
        let shares: Vec<String> = results[i].iter().map(|r| format!("{:.3}", r[1])).collect();
        let m = |k: usize| median(results[i].iter().map(|r| r[k]).collect());
        report.push_str(&format!(
            "| {name} | {:.0} | {:.2} | {:.3} | {} | {:.0} | {:.0} | {:.0} |\n",
            m(0),
            m(2),
            m(1),
            shares.join(", "),
            m(3),
            m(4),
            m(5)
        ));
    }
    println!("{report}");
    drop(targets);
    for db in pg_dbs {
        let _ = Command::new("psql").args([postgres, "-qc", &format!("drop database if exists {db}")]).status();
    }
    let dir = format!("{root}/bench/results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/compare.md"), report).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// One process (`serve`) and the split deployment (`identity` + `gateway`) of this build on one
/// PostgreSQL database and caller, with the raw ceiling, measured in rotating order in every
/// round at 32 connections (and once at 1 connection): req/s, p50, p99, and the server CPU per
/// request (every bankgraph process of the topology, from /proc). Writes `bench/results/split.md`.
async fn split_compare(rounds: usize, secs: u64) {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin = format!("{root}/target/release/bankgraph");
    let http = reqwest::Client::new();
    let tmp = std::env::temp_dir().join(format!("bankgraph-split-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (_emu, emulator_url) = emulator(&bin);
    let postgres = "postgres://postgres@127.0.0.1:5432/postgres";
    let pg_db = format!("bankgraph_split_{}", std::process::id());
    assert!(
        Command::new("psql").args([postgres, "-qc", &format!("create database {pg_db}")]).status().unwrap().success()
    );
    let db = format!("postgres://postgres@127.0.0.1:5432/{pg_db}");
    let (one, one_url) = serve(&bin, &db, &emulator_url, &tmp.join("serve.log"));
    let reader = token(&bin, "bench-reader", &db);
    seed(&http, &one_url, &emulator_url, &reader, 50).await;
    let (identity, gateway, split_url, gateway_internal) = split(&bin, &db, &emulator_url, &tmp);
    let (_raw, raw_url) = start_raw(&one_url, &reader, ACCOUNTS, &tmp).await;
    let pids = [vec![one.0.id()], vec![identity.0.id(), gateway.0.id()]];
    let urls = [one_url.clone(), split_url.clone()];
    let cpu = |i: usize| pids[i].iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    // Per topology and round: (req/s, p50, p99, CPU µs per request, share of the round's ceiling).
    type Measured = (f64, f64, f64, f64, f64);
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(), Vec::new()];
    // Per split round: the gateway's and the identity service's CPU µs per request, and the
    // requests one account-read call answered on average.
    let mut split_parts: Vec<(f64, f64, f64)> = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<Option<usize>> = vec![None, Some(0), Some(1)];
        order.rotate_left(round % 3);
        let mut raw = f64::NAN;
        let mut measured = Vec::new();
        for t in order {
            match t {
                None => raw = load(&raw_url, None, ACCOUNTS, 32, secs).await.rps,
                Some(i) => {
                    let before = cpu(i);
                    let parts_before = (cpu_seconds(pids[1][1]), cpu_seconds(pids[1][0]));
                    let batches_before = batches(&http, &gateway_internal).await;
                    let run = load(&urls[i], Some(&reader), ACCOUNTS, 32, secs).await;
                    let requests = run.rps * (secs + 1) as f64;
                    let per = (cpu(i) - before) / requests * 1e6;
                    assert_eq!(run.errors, 0);
                    if i == 1 {
                        let b = batches(&http, &gateway_internal).await;
                        split_parts.push((
                            (cpu_seconds(pids[1][1]) - parts_before.0) / requests * 1e6,
                            (cpu_seconds(pids[1][0]) - parts_before.1) / requests * 1e6,
                            (b.0 - batches_before.0) / (b.1 - batches_before.1).max(1.0),
                        ));
                    }
                    measured.push((i, run, per));
                }
            }
        }
        for (i, run, per) in measured {
            results[i].push((run.rps, run.p50_ms, run.p99_ms, per, run.rps / raw));
        }
        eprintln!(
            "round {}: raw {raw:.0}, one {:.0}, split {:.0} req/s",
            round + 1,
            results[0][round].0,
            results[1][round].0
        );
    }
    let single = [
        load(&urls[0], Some(&reader), ACCOUNTS, 1, secs).await,
        load(&urls[1], Some(&reader), ACCOUNTS, 1, secs).await,
    ];
    let median = |i: usize, f: fn(&Measured) -> f64| {
        let mut v: Vec<f64> = results[i].iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut report = format!(
        "One process and the split deployment of this build on one PostgreSQL database (loopback, `sslmode=disable`), getPlaidBankAccounts (9 accounts), \
         {rounds} rounds of {secs} s at 32 connections in rotating order with the raw ceiling, {} cores; medians.\n\n\
         | topology | req/s | p50 ms | p99 ms | share of the round's ceiling | server CPU µs per request | p50 ms at 1 connection |\n|---|---|---|---|---|---|---|\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    for (i, name) in ["one process (`serve`)", "split (`gateway` + `identity`)"].iter().enumerate() {
        report.push_str(&format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.3} | {:.0} | {:.2} |\n",
            median(i, |r| r.0),
            median(i, |r| r.1),
            median(i, |r| r.2),
            median(i, |r| r.4),
            median(i, |r| r.3),
            single[i].p50_ms
        ));
    }
    report.push_str(&format!(
        "\nSplit / one process: throughput {:.2}, CPU per request {:.2} (the hop: {:.0} µs of server CPU per request; {:.2} ms of latency at 1 connection).\n",
        median(1, |r| r.0) / median(0, |r| r.0),
        median(1, |r| r.3) / median(0, |r| r.3),
        median(1, |r| r.3) - median(0, |r| r.3),
        single[1].p50_ms - single[0].p50_ms
    ));
    let mid = |f: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = split_parts.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    report.push_str(&format!(
        "Split, by process: the gateway {:.0} µs and the identity service {:.0} µs of CPU per request; one account-read call \
         to the identity service answered {:.1} requests on average.\n",
        mid(|p| p.0),
        mid(|p| p.1),
        mid(|p| p.2)
    ));
    println!("{report}");
    drop((one, identity, gateway));
    let _ = Command::new("psql").args([postgres, "-qc", &format!("drop database if exists {pg_db}")]).status();
    let dir = format!("{root}/bench/results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/split.md"), report).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A table of page runs on 1,000 and on 100,000 transactions, and their cost ratio.
fn page_table(report: &mut String, columns: &str, runs: &[(String, Run, Run)]) {
    report.push_str(&format!("\n| backend | {columns} | cost at 100,000 / cost at 1,000 |\n|---|---|---|---|\n"));
    for (name, small, large) in runs {
        report.push_str(&format!(
            "| {name} | {:.0}, {:.2} | {:.0}, {:.2} | {:.2} |\n",
            small.rps,
            small.p50_ms,
            large.rps,
            large.p50_ms,
            small.rps / large.rps
        ));
    }
}
