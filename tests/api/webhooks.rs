//! Webhooks, transaction sync and connection health: nothing lost, nothing twice.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::helpers::*;

fn item_of(done: &Value) -> String {
    done["platformItemId"].as_str().unwrap().to_string()
}

async fn in_sync(app: &TestApp, t: &str, item: &str) -> bool {
    let ours: std::collections::BTreeSet<String> =
        app.stored_transactions(t, json!({"platformItemId": item})).await.into_keys().collect();
    ours == app.upstream_ids(item).await
}

#[tokio::test]
async fn the_signed_sync_webhook_brings_the_history_and_later_changes_arrive_by_webhook_alone() {
    let app = TestApp::spawn().await;
    // The bank takes a moment to answer: the first sync after the link finds nothing.
    app.emu_post("/emulator/settings", json!({"history_delay_ms": 500})).await;
    let t = app.token("hook-1");
    let done = app.link(&t).await;
    let item = item_of(&done);
    let early = app.transactions(&t, json!({})).await;
    assert_eq!(early["data"]["getPlaidBankTransactions"]["totalCount"], 0, "nothing before the bank is ready");
    app.wait_for_history(&t, 120).await;
    let processed = app
        .db_i64("select count(*) from webhook_events where webhook_code = 'SYNC_UPDATES_AVAILABLE' and processed_at is not null")
        .await;
    assert!(processed >= 1, "Plaid's signed SYNC_UPDATES_AVAILABLE was verified, stored and processed");

    // Later activity at the bank, announced only by webhooks.
    let changes = app
        .emu_post(
            &format!("/emulator/items/{item}/transactions/advance"),
            json!({"new": 5, "post_pending": true, "modify": 3, "remove": 2}),
        )
        .await;
    app.eventually("our history equals the bank's", || in_sync(&app, &t, &item)).await;
    let stored = app.stored_transactions(&t, json!({})).await;
    for id in changes["removed"].as_array().unwrap() {
        assert!(!stored.contains_key(id.as_str().unwrap()), "removed transactions disappear");
    }
    for id in changes["modified"].as_array().unwrap() {
        assert_eq!(stored[id.as_str().unwrap()].3, "GENERAL_MERCHANDISE", "modifications are applied");
    }
}

#[tokio::test]
async fn a_pending_transaction_that_posts_keeps_its_id_and_is_never_shown_twice() {
    let app = TestApp::spawn().await;
    let t = app.token("hook-2");
    let done = app.link(&t).await;
    let item = item_of(&done);
    app.wait_for_history(&t, 120).await;
    app.emu_post(&format!("/emulator/items/{item}/transactions/advance"), json!({"new": 6, "post_pending": false}))
        .await;
    app.eventually("new pending transactions arrive", || in_sync(&app, &t, &item)).await;
    let before = app.stored_transactions(&t, json!({})).await;
    let pending: Vec<(String, String)> =
        before.iter().filter(|(_, v)| v.1 == "PENDING").map(|(k, v)| (k.clone(), v.0.clone())).collect();
    assert!(pending.len() >= 3, "{pending:?}");

    app.emu_post(&format!("/emulator/items/{item}/transactions/advance"), json!({"new": 0, "post_pending": true}))
        .await;
    app.eventually("the posted transactions arrive", || in_sync(&app, &t, &item)).await;
    let after = app.stored_transactions(&t, json!({})).await;
    assert_eq!(after.len(), before.len(), "one row per purchase: no pending and posted copies side by side");
    for (pending_id, historical) in &pending {
        assert!(!after.contains_key(pending_id), "the pending Plaid id is gone");
        let posted: Vec<_> = after.values().filter(|v| &v.0 == historical).collect();
        assert_eq!(posted.len(), 1, "the same historicalBankTransactionId, once");
        assert_eq!(posted[0].1, "POSTED");
    }
}

/// A body shaped like Plaid's, serialised as Plaid does (2-space indent).
fn webhook_body(item: &str) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE", "item_id": item,
        "initial_update_complete": true, "historical_update_complete": true, "environment": "sandbox"
    }))
    .unwrap()
}

fn with_jwt_header(jwt: &str, header: Value) -> String {
    let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
    parts[0] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    parts.join(".")
}

#[tokio::test]
async fn unverifiable_webhooks_are_refused_and_stored_nowhere_and_redeliveries_are_processed_once() {
    let app = TestApp::spawn().await;
    let body = webhook_body("not-an-item-of-ours-00000000000000000");
    let emu = &app.emulator.emulator;
    let good = emu.sign(&body).unwrap();
    let kid = emu.current_kid();

    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'S').unwrap();
    tampered[at] = b'X';
    app.emu_post("/emulator/clock/advance", json!({"seconds": -400})).await;
    let stale = emu.sign(&body).unwrap();
    app.emu_post("/emulator/clock/advance", json!({"seconds": 400})).await;
    let unknown_kid =
        with_jwt_header(&good, json!({"alg": "ES256", "kid": "00000000-1111-2222-3333-444444444444", "typ": "JWT"}));
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header { alg: jsonwebtoken::Algorithm::HS256, kid: Some(kid), ..Default::default() },
        &json!({"iat": chrono::Utc::now().timestamp(), "request_body_sha256": "00"}),
        &jsonwebtoken::EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    for (case, body, sig) in [
        ("tampered body", &tampered, Some(good.as_str())),
        ("stale iat", &body, Some(stale.as_str())),
        ("unknown kid", &body, Some(unknown_kid.as_str())),
        ("wrong alg", &body, Some(hs256.as_str())),
        ("missing header", &body, None),
    ] {
        assert_eq!(app.post_webhook(body, sig).await, 401, "{case}");
    }
    assert_eq!(app.db_i64("select count(*) from webhook_events").await, 0, "nothing stored");
    assert_eq!(app.db_i64("select count(*) from jobs where kind = 'webhook'").await, 0, "nothing processed");
    assert!(String::from_utf8_lossy(&logs().lock().unwrap()).contains("webhook rejected"), "a log line says so");

    // The same genuine webhook three times: stored once, processed once.
    for _ in 0..3 {
        assert_eq!(app.post_webhook(&body, Some(&good)).await, 200);
    }
    assert_eq!(app.db_i64("select count(*) from webhook_events").await, 1);
    assert_eq!(app.db_i64("select cast(max(deliveries) as bigint) from webhook_events").await, 3);
    app.eventually("the event is processed", || async {
        app.db_i64("select count(*) from webhook_events where processed_at is not null").await == 1
    })
    .await;
    assert_eq!(app.db_i64("select count(*) from jobs where kind = 'webhook'").await, 1, "one processing job");
    // An item that is not ours is an alert, not an error loop.
    assert_eq!(app.db_i64("select count(*) from webhook_events where outcome = 'ignored: unknown item'").await, 1);
    assert_eq!(app.db_i64("select count(*) from jobs where kind = 'webhook' and state = 'done'").await, 1);
}

#[tokio::test]
async fn a_change_during_pagination_restarts_the_sync_which_ends_with_exactly_the_banks_data() {
    let app = TestApp::spawn_with(Options { transactions_per_item: Some(3000), ..Default::default() }).await;
    app.emu_post("/emulator/faults", json!({"endpoint": "/transactions/sync", "kind": "latency", "ms": 120})).await;
    let t = app.token("hook-3");
    let done = app.link(&t).await;
    let item = item_of(&done);
    // Mid-way through the first sync's six pages, the data changes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.emu_post(
        &format!("/emulator/items/{item}/transactions/advance"),
        json!({"new": 4, "post_pending": true, "modify": 5, "remove": 5}),
    )
    .await;
    app.eventually("our history equals the bank's", || in_sync(&app, &t, &item)).await;
    let upstream = app.emu_get(&format!("/emulator/items/{item}/transactions")).await;
    let n = upstream["transactions"].as_array().unwrap().len() as i64;
    app.wait_for_history(&t, n).await;
    assert!(String::from_utf8_lossy(&logs().lock().unwrap()).contains("restarting the loop from its first cursor"));
}

#[tokio::test]
async fn webhooks_move_connection_health_and_verify_members_lists_exactly_those_needing_the_user() {
    let app = TestApp::spawn().await;
    let t = app.token("hook-4");
    let mut items = vec![];
    for inst in ["ins_109508", "ins_109509", "ins_109510", "ins_109511", "ins_109512"] {
        items.push(item_of(&app.link_at(&t, inst).await));
    }
    let status_of = |item: String| {
        let app = &app;
        let t = t.clone();
        async move {
            let accounts = app.accounts(&t, json!({"platformItemId": item})).await;
            accounts[0]["status"].as_str().unwrap().to_string()
        }
    };
    let fire = |item: &str, wtype: &str, code: &str| {
        let body = json!({"webhook_type": wtype, "webhook_code": code});
        let path = format!("/emulator/items/{item}/webhook");
        let app = &app;
        async move { app.emu_post(&path, body).await }
    };
    fire(&items[0], "ITEM", "ERROR").await;
    fire(&items[1], "ITEM", "PENDING_EXPIRATION").await;
    fire(&items[2], "ITEM", "PENDING_DISCONNECT").await;
    fire(&items[3], "ITEM", "USER_PERMISSION_REVOKED").await;
    fire(&items[4], "ITEM", "NEW_ACCOUNTS_AVAILABLE").await;
    for (item, want) in [
        (&items[0], "LOGIN_REQUIRED"),
        (&items[1], "PENDING_EXPIRATION"),
        (&items[2], "PENDING_DISCONNECT"),
        (&items[3], "REVOKED"),
    ] {
        app.eventually(&format!("{item} becomes {want}"), || {
            let s = status_of(item.clone());
            async move { s.await == want }
        })
        .await;
    }
    app.eventually("new accounts are recorded", || async {
        app.db_i64("select count(*) from bank_connections where cast(case when new_accounts_available then 1 else 0 end as bigint) = 1").await == 1
    })
    .await;
    let consent = app.db_i64("select count(*) from bank_connections where consent_expires_at is not null").await;
    assert_eq!(consent, 1, "PENDING_EXPIRATION stores consent_expiration_time");

    // Only the server decides ACTIVE: a LOGIN_REPAIRED that Plaid does not confirm changes nothing.
    let forged = serde_json::to_vec_pretty(&json!({"webhook_type": "ITEM", "webhook_code": "LOGIN_REPAIRED", "item_id": items[0], "environment": "sandbox"})).unwrap();
    let sig = app.emulator.emulator.sign(&forged).unwrap();
    assert_eq!(app.post_webhook(&forged, Some(&sig)).await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(items[0].clone()).await, "LOGIN_REQUIRED", "Plaid still reports the error");
    // When Plaid has the item repaired, LOGIN_REPAIRED brings it back after /item/get confirms.
    fire(&items[0], "ITEM", "LOGIN_REPAIRED").await;
    app.eventually("repaired", || {
        let s = status_of(items[0].clone());
        async move { s.await == "ACTIVE" }
    })
    .await;

    let r = app.gql(Some(&t), REFRESH, json!({})).await;
    let mut listed: Vec<String> = r["data"]["refreshPlaidBankConnections"]["verifyMembers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["platformItemId"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut want = vec![items[1].clone(), items[2].clone(), items[3].clone()];
    want.sort();
    assert_eq!(listed, want, "exactly the connections that need the user");
    // New accounts make the next relink token ask the user to pick accounts.
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": items[4]}})).await;
    let lt = r["data"]["createPlaidLinkToken"]["linkToken"].as_str().unwrap().to_string();
    assert!(lt.starts_with("link-sandbox-"));
}

#[tokio::test]
async fn the_reconciler_resyncs_marks_items_plaid_forgot_and_repoints_webhooks() {
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--reconcile-interval-seconds=1".into(),
            "--item-check-interval-seconds=1".into(),
            "--resync-after-seconds=1".into(),
        ],
        ..Default::default()
    })
    .await;
    let t = app.token("hook-5");
    let gone = item_of(&app.link(&t).await);
    let moved = item_of(&app.link_at(&t, "ins_109511").await);
    // Plaid forgets one item behind our back; the other's webhook URL is out of date.
    let access = |item: String| {
        let app = &app;
        async move { app.emu_get(&format!("/emulator/items/{item}")).await["access_token"].as_str().unwrap().to_string() }
    };
    let creds = json!({"client_id": "emulator_client_id", "secret": "emulator_sandbox_secret"});
    let mut remove = creds.clone();
    remove["access_token"] = json!(access(gone.clone()).await);
    app.http.post(format!("{}/item/remove", app.emulator.url())).json(&remove).send().await.unwrap();
    let mut update = creds.clone();
    update["access_token"] = json!(access(moved.clone()).await);
    update["webhook"] = json!("http://127.0.0.1:9/old-hooks");
    app.http.post(format!("{}/item/webhook/update", app.emulator.url())).json(&update).send().await.unwrap();
    // And new data arrives without any webhook reaching us.
    app.emu_post(&format!("/emulator/items/{moved}/transactions/advance"), json!({"new": 4, "webhooks": false})).await;

    app.eventually("the forgotten item is marked", || async {
        app.accounts(&t, json!({"platformItemId": gone})).await[0]["status"] == "REVOKED"
    })
    .await;
    app.eventually("the webhook URL is re-pointed", || async {
        let v = app.emu_get(&format!("/emulator/items/{moved}")).await;
        v["webhook"].as_str().is_some_and(|w| w.ends_with("/webhooks/plaid"))
    })
    .await;
    app.eventually("the stale connection is re-synced", || in_sync(&app, &t, &moved)).await;
}

#[tokio::test]
async fn one_bad_connection_does_not_stop_the_reconciler() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--reconcile-interval-seconds=1".into(), "--item-check-interval-seconds=1".into()],
        ..Default::default()
    })
    .await;
    let t = app.token("hook-6");
    let broken = item_of(&app.link(&t).await);
    let fine = item_of(&app.link_at(&t, "ins_109511").await);
    // The first connection's token can no longer be opened.
    app.sql(&[&format!(
        "update bank_connections set access_token_sealed = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' where plaid_item_id = '{broken}'"
    )])
    .await;
    let creds = json!({"client_id": "emulator_client_id", "secret": "emulator_sandbox_secret"});
    let mut update = creds.clone();
    update["access_token"] = app.emu_get(&format!("/emulator/items/{fine}")).await["access_token"].clone();
    update["webhook"] = json!("http://127.0.0.1:9/old-hooks");
    app.http.post(format!("{}/item/webhook/update", app.emulator.url())).json(&update).send().await.unwrap();
    app.eventually("the healthy connection is still reconciled", || async {
        let v = app.emu_get(&format!("/emulator/items/{fine}")).await;
        v["webhook"].as_str().is_some_and(|w| w.ends_with("/webhooks/plaid"))
    })
    .await;
    assert!(String::from_utf8_lossy(&logs().lock().unwrap()).contains("reconciling a connection failed"));
}
