//! Durability: a process killed mid-sync loses nothing, and two processes on one PostgreSQL
//! share the work without doing any of it twice.

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::*;

/// A `bankgraph serve` process on its own ports, reading its addresses from its banner.
struct Server {
    child: Child,
    graphql: String,
}

impl Server {
    fn start(database_url: &str, plaid_url: &str) -> Server {
        use std::io::{BufRead, BufReader};
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_bankgraph"))
            .args([
                "serve",
                "--bind-addr=127.0.0.1:0",
                "--internal-bind-addr=127.0.0.1:0",
                &format!("--database-url={database_url}"),
                &format!("--jwt-secret={JWT_SECRET}"),
                &format!("--token-encryption-key={key}"),
                "--plaid-client-id=emulator_client_id",
                "--plaid-secret=emulator_sandbox_secret",
                &format!("--plaid-base-url={plaid_url}"),
                "--job-lease-seconds=2",
                "--rate-limit-per-ip=0",
                "--rate-limit-per-user=0",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bankgraph starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let graphql = loop {
            let line = lines.next().expect("banner").unwrap();
            if let Some(url) = line.split("GraphQL and GraphiQL: ").nth(1) {
                break url.trim().to_string();
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, graphql }
    }

    fn kill(&mut self) {
        // SIGKILL: no shutdown hook, no flush, nothing finished.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn gql(http: &reqwest::Client, url: &str, token: &str, query: &str, variables: Value) -> Value {
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

#[tokio::test]
async fn a_process_killed_mid_sync_resumes_and_ends_with_exactly_the_banks_history() {
    // The test's app supplies the emulator and a fresh database; the server under test is a
    // separate process on the same database.
    let probe = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let emulator = probe.emulator.url();
    probe.emu_post("/emulator/faults", json!({"endpoint": "/transactions/sync", "kind": "latency", "ms": 60})).await;
    let http = reqwest::Client::new();
    let token = probe.token("crash-user");
    let mut server = Server::start(&probe.database_url, &emulator);

    let r = gql(&http, &server.graphql, &token, CREATE_LINK_TOKEN, json!({"input": {}})).await;
    let link_token = r["data"]["createPlaidLinkToken"]["linkToken"].as_str().unwrap().to_string();
    let done = probe
        .emu_post(
            "/emulator/link/complete",
            json!({"link_token": link_token, "username": "user_custom", "password": "{\"transaction_count\": 20000}"}),
        )
        .await;
    let r = gql(&http, &server.graphql, &token, COMPLETE_LINK, json!({"input": {"publicToken": done["public_token"]}}))
        .await;
    let item = r["data"]["completePlaidLink"]["platformItemId"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();

    // Kill it while the 40-page sync is part-way through.
    probe
        .eventually("part of the history is stored", || async {
            probe.db_i64("select count(*) from bank_transactions").await >= 3000
        })
        .await;
    server.kill();
    let at_kill = probe.db_i64("select count(*) from bank_transactions").await;
    assert!(at_kill < 20000, "killed mid-sync ({at_kill} stored)");

    // Restarted, it takes the dead process's job over once its lease runs out, and resumes.
    let server = Server::start(&probe.database_url, &emulator);
    probe
        .eventually("the whole history is stored", || async {
            probe.db_i64("select count(*) from bank_transactions").await == 20000
        })
        .await;
    let upstream = probe.upstream_ids(&item).await;
    assert_eq!(upstream.len(), 20000);
    let mut stored = std::collections::BTreeSet::new();
    let mut offset = 0;
    while offset < 20000 {
        let r = gql(
            &http,
            &server.graphql,
            &token,
            TRANSACTIONS,
            json!({"input": {"paginate": {"limit": 100, "offset": offset}}}),
        )
        .await;
        for t in r["data"]["getPlaidBankTransactions"]["transactions"].as_array().unwrap() {
            assert!(stored.insert(t["transactionId"].as_str().unwrap().to_string()), "no duplicate");
        }
        offset += 100;
    }
    assert_eq!(stored, upstream, "no gap, no duplicate");
    drop(server);
}

#[tokio::test]
async fn two_processes_on_one_postgres_process_every_event_once_and_never_sync_an_item_twice_at_once() {
    let database_url = fresh_database().await;
    if !database_url.starts_with("postgres") {
        eprintln!("two processes share a database only on PostgreSQL (TEST_DATABASE_URL); SQLite runs one");
        return;
    }
    let a = TestApp::spawn_with(Options { database_url: Some(database_url.clone()), ..Default::default() }).await;
    let b = TestApp::spawn_with(Options {
        database_url: Some(database_url),
        shared_emulator: Some(a.emulator.clone()),
        ..Default::default()
    })
    .await;
    let mut items = Vec::new();
    for n in 0..8 {
        let t = a.token(&format!("multi-{n}"));
        let done = if n % 2 == 0 { a.link(&t).await } else { b.link(&t).await };
        items.push((t, done["platformItemId"].as_str().unwrap().to_string()));
    }
    for (t, _) in &items {
        a.wait_for_history(t, 120).await;
    }
    // New data at the bank for every item, and its webhook delivered to both processes.
    for (_, item) in &items {
        a.emu_post(
            &format!("/emulator/items/{item}/transactions/advance"),
            json!({"new": 5, "post_pending": true, "webhooks": false}),
        )
        .await;
    }
    for (_, item) in &items {
        let body = serde_json::to_vec_pretty(&json!({
            "webhook_type": "TRANSACTIONS", "webhook_code": "DEFAULT_UPDATE", "item_id": item,
            "new_transactions": 5, "error": null, "environment": "sandbox"
        }))
        .unwrap();
        let sig = a.emulator.emulator.sign(&body).unwrap();
        let (x, y) = tokio::join!(a.post_webhook(&body, Some(&sig)), b.post_webhook(&body, Some(&sig)));
        assert_eq!((x, y), (200, 200));
    }
    for (t, item) in &items {
        a.eventually("each item ends in sync", || async {
            let ours: std::collections::BTreeSet<String> =
                a.stored_transactions(t, json!({"platformItemId": item})).await.into_keys().collect();
            ours == a.upstream_ids(item).await
        })
        .await;
    }
    let q = "select count(*) from webhook_events where webhook_code = 'DEFAULT_UPDATE' and deliveries = 2 and processed_at is not null";
    assert_eq!(a.db_i64(q).await, 8, "each event stored once though delivered to both, and processed");
    let jobs = "select count(*) from jobs j join webhook_events e on e.id = j.dedupe_key where j.kind = 'webhook' and e.webhook_code = 'DEFAULT_UPDATE'";
    assert_eq!(a.db_i64(jobs).await, 8, "one processing job per event");
    // No two sync runs of one connection ever overlapped.
    let overlaps = "select count(*) from jobs x join jobs y on x.kind = 'sync' and y.kind = 'sync' \
        and x.dedupe_key = y.dedupe_key and x.id < y.id and x.started_at is not null and y.started_at is not null \
        and x.finished_at is not null and y.finished_at is not null \
        and x.started_at < y.finished_at and y.started_at < x.finished_at";
    assert_eq!(a.db_i64(overlaps).await, 0);
    let workers = "select count(distinct locked_by) from jobs where state = 'done'";
    assert_eq!(a.db_i64(workers).await, 2, "both processes did part of the work");
}
