//! Plaid's webhook signing keys under a flood of forged kids: the outside probe found that one
//! forged webhook a second, each with a random `kid`, kept Plaid's real new key from being
//! looked up after a restart or a key rotation, so genuine webhooks were lost. Here an attacker
//! sends forged webhooks all along, across a restart and two rotations, and every genuine
//! webhook must be accepted on its first or second delivery.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::helpers::*;

/// A body shaped like Plaid's, for the forged webhooks.
fn forged_body() -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE",
        "item_id": "forged-item-000000000000000000000000", "environment": "sandbox"
    }))
    .unwrap()
}

/// A well-formed ES256 JWT naming a random kid: what an attacker sends (no key Plaid holds).
fn forged_jwt(genuine: &str) -> String {
    let header = json!({"alg": "ES256", "kid": uuid::Uuid::new_v4().to_string(), "typ": "JWT"});
    let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
    parts[0] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    parts.join(".")
}

/// Posts one forged webhook to `internal` (an app's internal listener); its HTTP status.
async fn post_forged(http: &reqwest::Client, internal: &str, jwt: &str) -> u16 {
    let r = http
        .post(format!("{internal}/webhooks/plaid"))
        .header("content-type", "application/json")
        .header("plaid-verification", forged_jwt(jwt))
        .body(forged_body())
        .send()
        .await;
    r.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Sends a forged webhook with a fresh random kid to the current target every `every`, until
/// dropped.
struct Forger {
    target: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forger {
    fn start(app: &TestApp, every: Duration) -> Forger {
        let target = Arc::new(Mutex::new(app.internal.clone()));
        let jwt = app.emulator.emulator.sign(&forged_body()).unwrap();
        let (http, to) = (app.http.clone(), target.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let internal = to.lock().unwrap().clone();
                post_forged(&http, &internal, &jwt).await;
            }
        });
        Forger { target, task }
    }

    fn retarget(&self, app: &TestApp) {
        *self.target.lock().unwrap() = app.internal.clone();
    }
}

impl Drop for Forger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forged webhooks until one is answered 503: the lookups a stranger may cause are used up, so
/// the genuine webhooks that follow meet an armed throttle.
async fn exhaust_lookups(app: &TestApp) {
    let jwt = app.emulator.emulator.sign(&forged_body()).unwrap();
    assert_eq!(post_forged(&app.http, &app.internal, &jwt).await, 401, "a forged kid is refused");
    app.eventually("a forged kid is throttled", || async { post_forged(&app.http, &app.internal, &jwt).await == 503 })
        .await;
}

/// The emulator's record of every webhook delivered to `app` after delivery `since`.
async fn deliveries_to(app: &TestApp, since: u64) -> Vec<Value> {
    let all = app.emu_get("/emulator/webhooks").await;
    all["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["url"].as_str().unwrap().starts_with(&app.internal) && d["id"].as_u64().unwrap() > since)
        .cloned()
        .collect()
}

/// The highest delivery id so far.
async fn last_delivery(app: &TestApp) -> u64 {
    let all = app.emu_get("/emulator/webhooks").await;
    all["webhooks"].as_array().unwrap().iter().filter_map(|d| d["id"].as_u64()).max().unwrap_or(0)
}

/// Waits until the webhooks with `codes` sent to `app` after `since` have been answered, then
/// asserts that every webhook sent to it since was accepted within `max_attempts` deliveries.
async fn accepted_within(app: &TestApp, since: u64, codes: &[&str], max_attempts: u64) {
    app.eventually("the emulator has delivered the webhooks", || async {
        let done = deliveries_to(app, since).await;
        codes.iter().all(|c| done.iter().any(|d| d["webhook_code"] == *c))
    })
    .await;
    for d in deliveries_to(app, since).await {
        assert!(
            d["delivered"] == true && d["attempts"].as_u64().unwrap() <= max_attempts,
            "a genuine webhook was accepted on delivery {max_attempts} at the latest: {d}"
        );
    }
}

async fn in_sync(app: &TestApp, t: &str, item: &str) -> bool {
    let ours: std::collections::BTreeSet<String> =
        app.stored_transactions(t, json!({"platformItemId": item})).await.into_keys().collect();
    ours == app.upstream_ids(item).await
}

/// New transactions at the bank, announced by webhooks alone (signed with the current key),
/// arrive; those webhooks were accepted on their first or second delivery.
async fn bank_activity_arrives(app: &TestApp, t: &str, item: &str) {
    let since = last_delivery(app).await;
    app.emu_post(&format!("/emulator/items/{item}/transactions/advance"), json!({"new": 4, "post_pending": true}))
        .await;
    app.eventually("the new transactions arrive by webhook", || in_sync(app, t, item)).await;
    accepted_within(app, since, &["SYNC_UPDATES_AVAILABLE", "DEFAULT_UPDATE"], 2).await;
}

#[tokio::test]
async fn forged_kids_every_second_lose_no_genuine_webhook_across_a_restart_and_key_rotations() {
    let first = TestApp::spawn().await;
    let forger = Forger::start(&first, Duration::from_millis(250));
    exhaust_lookups(&first).await;

    // A new process meets Plaid's key for the first time while forged kids arrive.
    let t1 = first.token("keys-1");
    let since = last_delivery(&first).await;
    let item1 = first.link(&t1).await["platformItemId"].as_str().unwrap().to_string();
    first.wait_for_history(&t1, 120).await;
    accepted_within(&first, since, &["INITIAL_UPDATE", "HISTORICAL_UPDATE", "SYNC_UPDATES_AVAILABLE"], 2).await;

    // Plaid rotates its key: the new kid is looked up though forged kids keep coming.
    first.emu_post("/emulator/webhook_keys/rotate", json!({})).await;
    bank_activity_arrives(&first, &t1, &item1).await;

    // A restart on the same database: the key it verified before is known without Plaid, so
    // even the first delivery of every webhook is accepted.
    let (database_url, emulator) = (first.database_url.clone(), first.emulator.clone());
    drop(first);
    let second = TestApp::spawn_with(Options {
        database_url: Some(database_url),
        shared_emulator: Some(emulator),
        ..Default::default()
    })
    .await;
    forger.retarget(&second);
    exhaust_lookups(&second).await;
    let t2 = second.token("keys-2");
    let since = last_delivery(&second).await;
    let item2 = second.link(&t2).await["platformItemId"].as_str().unwrap().to_string();
    second.wait_for_history(&t2, 120).await;
    accepted_within(&second, since, &["INITIAL_UPDATE", "HISTORICAL_UPDATE", "SYNC_UPDATES_AVAILABLE"], 1).await;

    // And another rotation, in the restarted process.
    second.emu_post("/emulator/webhook_keys/rotate", json!({})).await;
    bank_activity_arrives(&second, &t2, &item2).await;

    second
        .eventually("every stored webhook is processed", || async {
            second.db_i64("select count(*) from webhook_events where processed_at is null").await == 0
        })
        .await;
    drop(forger);
}
