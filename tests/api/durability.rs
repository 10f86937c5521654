//! Durability: a process killed mid-sync loses nothing, and two processes on one PostgreSQL
//! share the work without doing any of it twice.

use serde_json::{Value, json};

use crate::helpers::*;

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
    let mut server = Server::start(&probe.database_url, &emulator, &["--job-lease-seconds=2"], &[]);

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
    let server = Server::start(&probe.database_url, &emulator, &["--job-lease-seconds=2"], &[]);
    probe
        .eventually("the whole history is stored", || async {
            probe.db_i64("select count(*) from bank_transactions").await == 20000
        })
        .await;
    let upstream = probe.upstream_ids(&item).await;
    assert_eq!(upstream.len(), 20000);
    // Walked by cursor: offsets past MAX_PAGE_OFFSET are refused.
    let pages = "query($input: PlaidBankTransactionFilterInput) { getPlaidBankTransactions(input: $input) {
        transactions { transactionId } pageInfo { endCursor hasNextPage } } }";
    let mut stored = std::collections::BTreeSet::new();
    let mut after = Value::Null;
    loop {
        let input = json!({"input": {"paginate": {"limit": 100, "after": after}}});
        let r = gql(&http, &server.graphql, &token, pages, input).await;
        let page = &r["data"]["getPlaidBankTransactions"];
        for t in page["transactions"].as_array().unwrap_or_else(|| panic!("{r}")) {
            assert!(stored.insert(t["transactionId"].as_str().unwrap().to_string()), "no duplicate");
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
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
