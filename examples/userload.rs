#![allow(clippy::unwrap_used)]
//! Traffic shaped like users, and the soak (run them with `bash bench/load.sh users` and
//! `bash bench/soak.sh`).
//!
//! `users [--users 2000] [--seconds 5]`: on PostgreSQL, a release `bankgraph serve` and the
//! emulator as separate processes; 2,000 callers with one to three connections each (9 accounts
//! per connection, 50 transactions each), linked through the public API. At 32 connections it
//! measures, with the read cache on (1 s, the default) and then off (the same database, a
//! restarted server): one caller reading its accounts over and over; the account read of a
//! caller chosen at random per request; and a mixed run (per request: 55 % accounts, 20 %
//! balances, 24 % a page of one of the caller's connections' transactions, 1 % a refresh). The
//! raw ceiling (an axum handler answering the same bytes from memory) is measured before and
//! after, in the same run. Writes `bench/results/users.md`.
//!
//! `users-compare OTHER [--users 2000] [--rounds 3] [--seconds 3]`: another build and this one,
//! read cache off, serving the same callers from one database: the random-caller account read
//! and the mixed traffic, with the raw ceiling, in rotating rounds; CPU per request of the
//! server, PostgreSQL and the load generator. Writes `bench/results/users-compare.md`.
//!
//! `soak [--minutes 30] [--users 200] [--conns 32]`: the account read of random callers with the
//! cache off for that long, the server's RSS sampled every 10 s into `bench/results/soak.csv`,
//! then 30 s idle; fails (exit 1) if RSS grows more than 10 MiB after the first minute. Writes
//! `bench/results/soak.md`; `bench/soak.sh` plots the samples.

#[path = "common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::load::{Picker, Run, emulator, link_one, load_with, raw_server, serve_with, start_raw};
use common::{Proc, SECRET, cpu_seconds, postgres_cpu_seconds, rss_kib};
use rand::Rng;
use serde_json::json;

const ACCOUNTS: &str = "{ getPlaidBankAccounts { platformItemId bankInstitutionAuthId bankInstitutionName bankAccountId accountName lastFour type subtype status } }";
const BALANCES: &str =
    "{ getPlaidBankBalances { bankAccountId amount current currencyCode source trigger startedAt } }";
const PAGE: &str = "query($input: PlaidBankTransactionFilterInput) { getPlaidBankTransactions(input: $input) { totalCount transactions { historicalBankTransactionId transactionId amount transactionType transactionDate merchantName category pending } } }";
const REFRESH: &str = "mutation { refreshPlaidBankConnections { status } }";
const INSTITUTIONS: [&str; 4] = ["ins_109508", "ins_109509", "ins_109510", "ins_109511"];

/// One caller: its token and, per connection, the request body of a page of its transactions.
struct User {
    token: Arc<str>,
    pages: Vec<bytes::Bytes>,
}

fn body(query: &str) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(&json!({"query": query})).unwrap())
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `n` callers with one to three connections each, linked 16 at a time.
async fn seed_users(graphql: &str, emulator: &str, n: usize) -> Vec<User> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2000);
    let plan: Vec<(String, usize)> = (0..n).map(|i| (format!("bench-user-{i}"), rng.random_range(1..=3))).collect();
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (plan, next, graphql, emulator) = (plan.clone(), next.clone(), graphql.to_string(), emulator.to_string());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((sub, connections)) = plan.get(i) else { break };
                let token = bankgraph::auth::mint_hs256(
                    SECRET.as_bytes(),
                    sub,
                    "MANAGE_PAYMENT",
                    Duration::from_secs(86_400),
                    None,
                    None,
                )
                .unwrap();
                let mut pages = Vec::new();
                for c in 0..*connections {
                    let link = json!({"institution_id": INSTITUTIONS[(i + c) % INSTITUTIONS.len()]});
                    let r = link_one(&http, &graphql, &emulator, &token, link).await;
                    let input = json!({"bankInstitutionAuthId": r["bankInstitutionAuthId"], "paginate": {"limit": 25}});
                    pages.push(bytes::Bytes::from(
                        serde_json::to_vec(&json!({"query": PAGE, "variables": {"input": input}})).unwrap(),
                    ));
                }
                done.push((i, User { token: Arc::from(token.as_str()), pages }));
            }
            done
        }));
    }
    let mut users: Vec<(usize, User)> = Vec::new();
    for w in workers {
        users.extend(w.await.unwrap());
    }
    users.sort_by_key(|(i, _)| *i);
    let connections: usize = users.iter().map(|(_, u)| u.pages.len()).sum();
    eprintln!("seeded {n} callers, {connections} connections in {:.0} s", started.elapsed().as_secs_f64());
    users.into_iter().map(|(_, u)| u).collect()
}

/// Waits until the server is idle (its first syncs done): under 2 % of a core for 2 s.
async fn settle(pid: u32) {
    let until = Instant::now() + Duration::from_secs(600);
    let mut quiet = 0;
    while Instant::now() < until && quiet < 2 {
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        quiet = if cpu_seconds(pid) - before < 0.02 { quiet + 1 } else { 0 };
    }
}

/// Makes the requests of one kind of traffic over the callers.
type Scenario = fn(&Arc<Vec<User>>) -> Picker;

/// The account read of one caller, always the same.
fn one_user(users: &Arc<Vec<User>>) -> Picker {
    let (token, b) = (users[0].token.clone(), body(ACCOUNTS));
    Arc::new(move |_, _| (Some(token.clone()), b.clone()))
}

/// The account read of a caller chosen at random per request.
fn many_users(users: &Arc<Vec<User>>) -> Picker {
    let (users, b) = (users.clone(), body(ACCOUNTS));
    Arc::new(move |_, rng| {
        let u = &users[rng.random_range(0..users.len())];
        (Some(u.token.clone()), b.clone())
    })
}

/// Random callers, each request one of: accounts, balances, a transaction page, a refresh.
fn mixed(users: &Arc<Vec<User>>) -> Picker {
    let (users, accounts, balances, refresh) = (users.clone(), body(ACCOUNTS), body(BALANCES), body(REFRESH));
    Arc::new(move |_, rng| {
        let u = &users[rng.random_range(0..users.len())];
        let b = match rng.random_range(0..100) {
            0..55 => accounts.clone(),
            55..75 => balances.clone(),
            75..99 => u.pages[rng.random_range(0..u.pages.len())].clone(),
            _ => refresh.clone(),
        };
        (Some(u.token.clone()), b)
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("raw-server") => raw_server(&args[2]).await,
        // `userload count URL TOKEN QUERY N`: N requests one after another (for callgrind).
        Some("count") => {
            let (url, token, query, n) = (&args[2], &args[3], &args[4], args[5].parse::<usize>().unwrap());
            let http = reqwest::Client::new();
            let body = body(query);
            for _ in 0..n {
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let b = r.bytes().await.unwrap();
                assert!(!b.windows(8).any(|w| w == b"\"errors\""), "{}", String::from_utf8_lossy(&b));
            }
        }
        // `userload seed URL EMULATOR SUB`: links one item for SUB (50 transactions), waits for its history.
        Some("seed") => {
            let token = bankgraph::auth::mint_hs256(
                SECRET.as_bytes(),
                &args[4],
                "MANAGE_PAYMENT",
                Duration::from_secs(86_400),
                None,
                None,
            )
            .unwrap();
            common::load::seed(&reqwest::Client::new(), &args[2], &args[3], &token, 50).await;
            println!("{token}");
        }
        // `userload users-compare OTHER_BANKGRAPH [--users 2000] [--rounds 3] [--seconds 3]`.
        Some("users-compare") => {
            users_compare(
                &args[2],
                arg(&args, "--users", 2000) as usize,
                arg(&args, "--rounds", 3) as usize,
                arg(&args, "--seconds", 3),
            )
            .await
        }
        Some("soak") => {
            let ok = soak(
                arg(&args, "--minutes", 30),
                arg(&args, "--users", 200) as usize,
                arg(&args, "--conns", 32) as usize,
            )
            .await;
            std::process::exit(if ok { 0 } else { 1 });
        }
        _ => users(arg(&args, "--users", 2000) as usize, arg(&args, "--seconds", 5)).await,
    }
}

/// A fresh PostgreSQL database for one run, dropped by the returned guard.
struct Database(String, String);

impl Database {
    fn create(tag: &str) -> Database {
        let admin = "postgres://postgres@127.0.0.1:5432/postgres".to_string();
        let name = format!("bankgraph_{tag}_{}", std::process::id());
        assert!(
            Command::new("psql").args([&admin, "-qc", &format!("create database {name}")]).status().unwrap().success()
        );
        Database(admin, name)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.1)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql").args([&self.0, "-qc", &format!("drop database if exists {}", self.1)]).status();
    }
}

fn paths() -> (String, String, std::path::PathBuf) {
    let root = env!("CARGO_MANIFEST_DIR").to_string();
    let bin = format!("{root}/target/release/bankgraph");
    let tmp = std::env::temp_dir().join(format!("bankgraph-users-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    (root, bin, tmp)
}

async fn users(n: usize, secs: u64) {
    let (root, bin, tmp) = paths();
    let (_emu, emulator_url) = emulator(&bin);
    let db = Database::create("users");
    let cache = |s: u64| vec![format!("--read-cache-seconds={s}")];
    let (server, graphql) = serve_with(&bin, &db.url(), &emulator_url, &tmp.join("on.log"), &cache(1));
    let users = Arc::new(seed_users(&graphql, &emulator_url, n).await);
    settle(server.0.id()).await;
    let (_raw, raw_url) = start_raw(&graphql, &users[0].token, ACCOUNTS, &tmp).await;
    let raw_picker: Picker = {
        let b = body(ACCOUNTS);
        Arc::new(move |_, _| (None, b.clone()))
    };
    let raw_before = load_with(&raw_url, raw_picker.clone(), 32, secs).await;
    eprintln!("raw: {:.0} req/s", raw_before.rps);

    let scenarios: [(&str, Scenario); 3] = [
        ("one caller, its accounts over and over", one_user),
        ("accounts of a random caller per request", many_users),
        ("mixed: accounts, balances, transaction pages, refresh", mixed),
    ];
    let mut rows: Vec<(String, &str, Run)> = Vec::new();
    let mut server = Some(server);
    for (cache_label, seconds) in [("on (1 s)", 1u64), ("off", 0)] {
        let graphql = if seconds == 1 {
            graphql.clone()
        } else {
            drop(server.take());
            let (s, url) = serve_with(&bin, &db.url(), &emulator_url, &tmp.join("off.log"), &cache(0));
            server = Some(s);
            url
        };
        for (name, picker) in &scenarios {
            let run = load_with(&graphql, picker(&users), 32, secs).await;
            eprintln!(
                "cache {cache_label}, {name}: {:.0} req/s p99 {:.2} ms errors {}",
                run.rps, run.p99_ms, run.errors
            );
            rows.push((format!("cache {cache_label}"), name, run));
        }
    }
    drop(server);
    let raw_after = load_with(&raw_url, raw_picker, 32, secs).await;
    let raw = (raw_before.rps + raw_after.rps) / 2.0;
    let connections: usize = users.iter().map(|u| u.pages.len()).sum();
    let mut report = format!(
        "Traffic shaped like users: {n} callers with {connections} connections (1 to 3 each, 9 accounts and 50 transactions per connection), \
         PostgreSQL on loopback (`sslmode=disable`), 32 connections, {secs} s per run after 1 s warm-up, {} cores, client and servers on this machine; \
         bankgraph logs every request at info as JSON into a file. The raw ceiling (an axum handler answering one caller's account read from memory) \
         was {:.0} req/s before and {:.0} after.\n\n\
         | read cache | traffic | req/s | p50 ms | p99 ms | errors | share of the raw ceiling |\n|---|---|---|---|---|---|---|\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        raw_before.rps,
        raw_after.rps,
    );
    for (cache, name, run) in &rows {
        report.push_str(&format!(
            "| {cache} | {name} | {:.0} | {:.2} | {:.2} | {} | {:.2} |\n",
            run.rps,
            run.p50_ms,
            run.p99_ms,
            run.errors,
            run.rps / raw
        ));
    }
    report.push_str(
        "\nWith many callers each reading now and then, the 1-second per-caller cache rarely hits: the random-caller rows are what real traffic gets, \
         and the cache-on and cache-off numbers for them are close. Only one caller reading over and over is served from memory.\n",
    );
    println!("{report}");
    let dir = format!("{root}/bench/results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/users.md"), report).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Another build and this one side by side on traffic shaped like users, with the read cache
/// off: both serve the same PostgreSQL database and callers, and each round measures the raw
/// ceiling and each build on the random-caller account read and on the mixed traffic, in a
/// rotating order. Reports medians, with the CPU each request cost the server, PostgreSQL and
/// the load generator (from /proc). Writes `bench/results/users-compare.md`.
async fn users_compare(other: &str, n: usize, rounds: usize, secs: u64) {
    let (root, bin, tmp) = paths();
    let (_emu, emulator_url) = emulator(&bin);
    let db = Database::create("users_compare");
    let off = vec!["--read-cache-seconds=0".to_string()];
    let (this_server, this_url) = serve_with(&bin, &db.url(), &emulator_url, &tmp.join("this.log"), &off);
    let users = Arc::new(seed_users(&this_url, &emulator_url, n).await);
    settle(this_server.0.id()).await;
    let (other_server, other_url) = serve_with(other, &db.url(), &emulator_url, &tmp.join("other.log"), &off);
    let (_raw, raw_url) = start_raw(&this_url, &users[0].token, ACCOUNTS, &tmp).await;
    let raw_picker: Picker = {
        let b = body(ACCOUNTS);
        Arc::new(move |_, _| (None, b.clone()))
    };
    let targets = [("other build", other_server.0.id(), other_url), ("this build", this_server.0.id(), this_url)];
    let scenarios: [(&str, Scenario); 2] = [("accounts of a random caller per request", many_users), ("mixed", mixed)];
    // Per (scenario, target): per round [req/s, p99, share of the round's ceiling, server µs,
    // PostgreSQL µs, load generator µs].
    let mut results: Vec<Vec<Vec<[f64; 6]>>> = vec![vec![Vec::new(); targets.len()]; scenarios.len()];
    for round in 0..rounds {
        let mut order: Vec<Option<(usize, usize)>> = std::iter::once(None)
            .chain((0..scenarios.len()).flat_map(|s| (0..targets.len()).map(move |t| Some((s, t)))))
            .collect();
        let len = order.len();
        order.rotate_left(round % len);
        let mut raw = f64::NAN;
        let mut measured = Vec::new();
        for step in order {
            let Some((s, t)) = step else {
                raw = load_with(&raw_url, raw_picker.clone(), 32, secs).await.rps;
                continue;
            };
            let (name, pid, url) = &targets[t];
            let cpu = || [cpu_seconds(*pid), postgres_cpu_seconds(), cpu_seconds(std::process::id())];
            let before = cpu();
            let run = load_with(url, (scenarios[s].1)(&users), 32, secs).await;
            let after = cpu();
            assert_eq!(run.errors, 0, "{name} answered with errors");
            let per = |k: usize| (after[k] - before[k]) / run.sent as f64 * 1e6;
            measured.push((s, t, [run.rps, run.p99_ms, 0.0, per(0), per(1), per(2)]));
        }
        for (s, t, mut m) in measured {
            m[2] = m[0] / raw;
            eprintln!(
                "round {}: {}, {}: {:.0} req/s p99 {:.2} ms",
                round + 1,
                targets[t].0,
                scenarios[s].0,
                m[0],
                m[1]
            );
            results[s][t].push(m);
        }
    }
    drop((this_server, other_server));
    let median = |v: &[[f64; 6]], k: usize| {
        let mut v: Vec<f64> = v.iter().map(|r| r[k]).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let connections: usize = users.iter().map(|u| u.pages.len()).sum();
    let mut report = format!(
        "Side by side, read cache off: `{other}` (other) and this build serving the same PostgreSQL database (loopback, `sslmode=disable`), \
         {n} callers with {connections} connections, 32 connections, {rounds} rounds of {secs} s in rotating order with the raw ceiling in each, {} cores; \
         medians. CPU per request in µs (from /proc, warm-up included): the server, every PostgreSQL process, the load generator.\n\n\
         | traffic | build | req/s | p99 ms | share of the round's ceiling | server CPU µs | PostgreSQL CPU µs | load generator CPU µs |\n|---|---|---|---|---|---|---|---|\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    );
    for (s, (scenario, _)) in scenarios.iter().enumerate() {
        for (t, (name, ..)) in targets.iter().enumerate() {
            let r = &results[s][t];
            report.push_str(&format!(
                "| {scenario} | {name} | {:.0} | {:.2} | {:.3} | {:.0} | {:.0} | {:.0} |\n",
                median(r, 0),
                median(r, 1),
                median(r, 2),
                median(r, 3),
                median(r, 4),
                median(r, 5)
            ));
        }
        report.push_str(&format!(
            "\n{scenario}: this build / other: {:.2}× the throughput.\n\n",
            median(&results[s][1], 0) / median(&results[s][0], 0)
        ));
    }
    println!("{report}");
    let dir = format!("{root}/bench/results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/users-compare.md"), report).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Returns whether RSS stayed within 10 MiB of its value at one minute.
async fn soak(minutes: u64, n: usize, conns: usize) -> bool {
    let (root, bin, tmp) = paths();
    let (_emu, emulator_url) = emulator(&bin);
    let db = Database::create("soak");
    let (server, graphql): (Proc, String) =
        serve_with(&bin, &db.url(), &emulator_url, &tmp.join("soak.log"), &["--read-cache-seconds=0".to_string()]);
    let users = Arc::new(seed_users(&graphql, &emulator_url, n).await);
    settle(server.0.id()).await;
    let pid = server.0.id();
    let total = minutes * 60;
    let started = Instant::now();
    let load = tokio::spawn({
        let (graphql, picker) = (graphql.clone(), many_users(&users));
        async move { load_with(&graphql, picker, conns, total).await }
    });
    let mut samples: Vec<(u64, f64)> = vec![(0, rss_kib(pid) / 1024.0)];
    let mut t = 0;
    while !load.is_finished() {
        t += 10;
        tokio::time::sleep_until((started + Duration::from_secs(t)).into()).await;
        samples.push((t, rss_kib(pid) / 1024.0));
        if t % 300 == 0 {
            eprintln!("{} min: RSS {:.1} MiB", t / 60, samples.last().unwrap().1);
        }
    }
    let run = load.await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle = rss_kib(pid) / 1024.0;
    let at_minute = samples.iter().find(|(s, _)| *s >= 60).map(|s| s.1).unwrap_or(f64::NAN);
    let peak_after = samples.iter().filter(|(s, _)| *s >= 60).map(|s| s.1).fold(f64::NAN, f64::max);
    let last = samples.last().unwrap().1;
    let growth = peak_after - at_minute;
    let ok = growth <= 10.0 && run.errors == 0;
    let requests = run.rps * total as f64;
    let csv: String = std::iter::once("seconds,rss_mib\n".to_string())
        .chain(samples.iter().map(|(s, r)| format!("{s},{r:.2}\n")))
        .collect();
    let report = format!(
        "Soak: {minutes} min at {conns} connections, the account read of one of {n} random callers per request, read cache off, PostgreSQL on loopback; \
         {:.0} req/s on average ({:.1} million requests), {} errors, p99 {:.2} ms.\n\n\
         | RSS at start | at 1 min | peak after 1 min | at the end | 30 s idle after | growth after 1 min | bytes per request after 1 min | verdict |\n|---|---|---|---|---|---|---|---|\n\
         | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} | {} |\n",
        run.rps,
        requests / 1e6,
        run.errors,
        run.p99_ms,
        samples[0].1,
        at_minute,
        peak_after,
        last,
        idle,
        growth,
        (last - at_minute) * 1024.0 * 1024.0 / (requests * (total - 60) as f64 / total as f64),
        if ok { "pass (at most 10 MiB)" } else { "FAIL (more than 10 MiB, or errors)" },
    );
    println!("{report}");
    let dir = format!("{root}/bench/results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/soak.csv"), csv).unwrap();
    std::fs::write(format!("{dir}/soak.md"), report).unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(&tmp);
    ok
}
