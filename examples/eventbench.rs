#![allow(clippy::unwrap_used)]
//! The live events benchmark (run it with `bash bench/events.sh`).
//!
//! A release `bankgraph serve` on its embedded defaults (SQLite, the built-in Plaid emulator;
//! `--postgres URL` for PostgreSQL) with the WebSocket caps raised. It measures:
//!
//! - **Memory per idle socket**: the server's RSS before and after N sockets (one per user,
//!   each past `connection_init` with one live `plaidConnectionEvents` subscription) have been
//!   open and quiet for a few seconds, divided by N; then the same for N more (free of one-time
//!   costs such as allocator arenas).
//! - **Fan-out latency**: N more sockets of one user, each subscribed; then K times new
//!   transactions appear at the bank (the emulator's `advance`), whose webhook makes bankgraph
//!   sync and write a TRANSACTIONS_UPDATED event. For every (event, socket) it records the time
//!   from the event's `occurredAt` (when the sync page began to be written) to its arrival, and
//!   the spread from the first socket's arrival to each other's. The client runs on the same
//!   machine, so its own scheduling is part of the numbers.
//!
//! It prints a Markdown report and writes it to `bench/results/events.md`.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bankgraph::emulator::drive::Endpoints;
use common::{Proc, SECRET, rss_kib, start_with_banner};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const EVENTS: &str = "subscription { plaidConnectionEvents { eventId type occurredAt } }";

fn opt(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

type Arrivals = Arc<Mutex<HashMap<String, Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>>>>;

/// Opens a socket as `token`, subscribes, and records every event's (occurredAt, arrival).
async fn subscriber(url: String, token: String, arrivals: Arrivals, ready: tokio::sync::mpsc::Sender<()>) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("socket opens");
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}})))
        .await
        .unwrap();
    ws.send(send(json!({"type": "subscribe", "id": "1", "payload": {"query": EVENTS}}))).await.unwrap();
    ws.send(send(json!({"type": "ping"}))).await.unwrap();
    while let Some(Ok(frame)) = ws.next().await {
        let Message::Text(t) = frame else { continue };
        let arrived = chrono::Utc::now();
        let m: Value = serde_json::from_str(t.as_str()).unwrap();
        match m["type"].as_str() {
            Some("pong") => {
                let _ = ready.send(()).await;
            }
            Some("next") => {
                let e = &m["payload"]["data"]["plaidConnectionEvents"];
                let id = e["eventId"].as_str().unwrap().to_string();
                let at: chrono::DateTime<chrono::Utc> = e["occurredAt"].as_str().unwrap().parse().unwrap();
                arrivals.lock().unwrap().entry(id).or_default().push((at, arrived));
            }
            Some("connection_ack") => {}
            _ => panic!("unexpected message {m}"),
        }
    }
}

/// Opens `n` sockets for the users `user(i)`; returns when all are subscribed.
async fn open(url: &str, n: usize, user: impl Fn(usize) -> String, arrivals: &Arrivals) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(n);
    for i in 0..n {
        let token = bankgraph::auth::mint_hs256(
            SECRET.as_bytes(),
            &user(i),
            "MANAGE_PAYMENT",
            Duration::from_secs(3600),
            None,
            None,
        )
        .unwrap();
        tokio::spawn(subscriber(url.to_string(), token, arrivals.clone(), tx.clone()));
        if i % 50 == 49 {
            // Handshakes in waves, as clients reconnecting after a deploy would not all be at once.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for _ in 0..n {
        rx.recv().await.unwrap();
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = opt(&args, "--subscribers", "1000").parse().unwrap();
    let k: usize = opt(&args, "--events", "30").parse().unwrap();
    let postgres = args.iter().position(|a| a == "--postgres").and_then(|i| args.get(i + 1)).cloned();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let bin = opt(&args, "--bankgraph", "target/release/bankgraph");
    let bin = bin.as_str();
    let tmp = std::env::temp_dir().join(format!("bankgraph-events-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (db, backend) = match &postgres {
        Some(url) => {
            let name = format!("bench_events_{}", std::process::id());
            assert!(
                Command::new("psql").args([url, "-qc", &format!("create database {name}")]).status().unwrap().success()
            );
            (format!("{}/{name}", url.rsplit_once('/').unwrap().0), "PostgreSQL")
        }
        None => (format!("sqlite://{}/bankgraph.db", tmp.display()), "SQLite"),
    };
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let (server, found): (Proc, Vec<String>) = start_with_banner(
        Command::new(bin).args([
            "serve",
            "--bind-addr=127.0.0.1:0",
            "--internal-bind-addr=127.0.0.1:0",
            "--plaid-emulator-addr=127.0.0.1:0",
            &format!("--database-url={db}"),
            &format!("--jwt-secret={SECRET}"),
            &format!("--token-encryption-key={key}"),
            "--rate-limit-per-ip=0",
            "--rate-limit-per-user=0",
            "--rate-limit-sensitive-per-minute=0",
            "--max-connections-per-ip=100000",
            "--ws-max-sockets-per-ip=100000",
            "--ws-max-sockets-per-user=10000",
        ]),
        &["GraphQL and GraphiQL: ", "Plaid emulator at "],
    );
    let (graphql, emulator) = (found[0].clone(), found[1].trim_end_matches(['(', ',']).to_string());
    let ws_url = graphql.replacen("http://", "ws://", 1);
    let pid = server.0.id();
    let arrivals: Arrivals = Arc::default();

    // Warm the server up (one socket, one link) before its baseline.
    let http = reqwest::Client::new();
    let fan_token =
        bankgraph::auth::mint_hs256(SECRET.as_bytes(), "fan", "MANAGE_PAYMENT", Duration::from_secs(3600), None, None)
            .unwrap();
    open(&ws_url, 1, |_| "warm-up".into(), &arrivals).await;
    let endpoints = Endpoints { http: &http, graphql: &graphql, emulator: &emulator, bearer: &fan_token };
    let q = "mutation($input: CompletePlaidLinkInput!) { completePlaidLink(input: $input) { platformItemId } }";
    let (_, linked) = endpoints.link_via(json!({"institution_id": "ins_109508"}), q).await.unwrap();
    let item = linked["data"]["completePlaidLink"]["platformItemId"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Memory per idle socket: one per user, n of them, then n more; the second step's growth
    // is free of one-time costs (allocator arenas, the first route table).
    let before = rss_kib(pid);
    open(&ws_url, n, |i| format!("idle-{i}"), &arrivals).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    open(&ws_url, n, |i| format!("idle-more-{i}"), &arrivals).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after2 = rss_kib(pid);
    let per_socket = (after - before) / n as f64;
    let per_socket2 = (after2 - after) / n as f64;

    // Fan-out: n sockets of one user.
    open(&ws_url, n, |_| "fan".into(), &arrivals).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    arrivals.lock().unwrap().clear();
    for _ in 0..k {
        let r = http
            .post(format!("{emulator}/emulator/items/{item}/transactions/advance"))
            .json(&json!({"new": 2, "post_pending": false}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let arrivals = arrivals.lock().unwrap().clone();
    let (mut lag, mut spread) = (Vec::new(), Vec::new());
    let mut complete = 0;
    for times in arrivals.values() {
        if times.len() == n {
            complete += 1;
        }
        let first = times.iter().map(|t| t.1).min().unwrap();
        for (at, arrived) in times {
            lag.push((*arrived - *at).num_microseconds().unwrap() as f64 / 1000.0);
            spread.push((*arrived - first).num_microseconds().unwrap() as f64 / 1000.0);
        }
    }
    lag.sort_by(f64::total_cmp);
    spread.sort_by(f64::total_cmp);
    let peak = common::peak_rss_mb(pid);
    drop(server);
    if let (Some(url), true) = (&postgres, db.starts_with("postgres")) {
        let name = db.rsplit('/').next().unwrap();
        let _ = Command::new("psql").args([url, "-qc", &format!("drop database if exists {name}")]).status();
    }
    let _ = std::fs::remove_dir_all(&tmp);

    let report = format!(
        "# Live events ({backend}, {n} subscribers)\n\n\
         Release `bankgraph serve`, the built-in emulator, client and server on this machine.\n\n\
         | measure | value | target |\n|---|---|---|\n\
         | server RSS: before / {n} idle sockets / {} idle sockets | {:.1} / {:.1} / {:.1} MiB | |\n\
         | memory per idle socket (one live subscription each): first {n} / next {n} | {per_socket:.1} / {per_socket2:.1} KiB | < 64 KiB |\n\
         | events written / reaching all {n} sockets of their user | {} / {complete} | all |\n\
         | delivery latency, occurredAt to arrival: p50 / p99 / max | {:.1} / {:.1} / {:.1} ms | p99 < 250 ms |\n\
         | fan-out spread, first socket to each other: p50 / p99 | {:.1} / {:.1} ms | |\n\
         | server peak RSS | {peak:.1} MiB | |\n",
        2 * n,
        before / 1024.0,
        after / 1024.0,
        after2 / 1024.0,
        arrivals.len(),
        pct(&lag, 0.5),
        pct(&lag, 0.99),
        lag.last().copied().unwrap_or(f64::NAN),
        pct(&spread, 0.5),
        pct(&spread, 0.99),
    );
    println!("{report}");
    std::fs::create_dir_all("bench/results").unwrap();
    std::fs::write("bench/results/events.md", &report).unwrap();
}
