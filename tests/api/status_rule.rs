//! One rule for what a Plaid item error does to a connection (`identity::item_error_status`,
//! tested as a table where it is written), reached through each path that uses it: relink,
//! refresh, sync, webhook events, health checks and the reconciler. Each test picks a code
//! the earlier copies of the rule disagreed on, and checks the status and its detail.

use serde_json::{Value, json};

use crate::helpers::*;

fn item_of(done: &Value) -> String {
    done["platformItemId"].as_str().unwrap().to_string()
}

async fn status(app: &TestApp, t: &str, item: &str) -> String {
    app.accounts(t, json!({"platformItemId": item})).await[0]["status"].as_str().unwrap().to_string()
}

async fn detail(app: &TestApp, item: &str) -> i64 {
    app.db_i64(&format!(
        "select count(*) from bank_connections where plaid_item_id = '{item}' and status_detail is not null"
    ))
    .await
}

async fn has_detail(app: &TestApp, item: &str, code: &str) -> bool {
    let n = app
        .db_i64(&format!(
            "select count(*) from bank_connections where plaid_item_id = '{item}' and status_detail = '{code}'"
        ))
        .await;
    n == 1
}

async fn fault(app: &TestApp, endpoint: &str, code: &str) {
    app.emu_post("/emulator/faults", json!({"endpoint": endpoint, "kind": "plaid_error", "error_code": code})).await;
}

#[tokio::test]
async fn a_relink_that_plaid_answers_with_an_item_error_sets_the_status_by_the_rule() {
    let app = TestApp::spawn().await;
    let t = app.token("rule-relink");
    let item = item_of(&app.link(&t).await);
    let (public_token, _) = app.link_session(&t, json!({"platformItemId": item}), json!({})).await;
    fault(&app, "/item/get", "ITEM_NOT_FOUND").await;
    let r = app.complete(&t, &public_token, Some(&item)).await;
    assert_eq!(code(&r).as_deref(), Some("PLAID_ERROR"), "{r}");
    assert_eq!(r["errors"][0]["extensions"]["plaid"]["errorCode"], "ITEM_NOT_FOUND");
    assert_eq!(status(&app, &t, &item).await, "REVOKED");
    assert!(has_detail(&app, &item, "ITEM_NOT_FOUND").await);
}

#[tokio::test]
async fn a_refresh_that_finds_the_account_locked_asks_for_the_user() {
    let app = TestApp::spawn().await;
    let t = app.token("rule-refresh");
    let item = item_of(&app.link(&t).await);
    fault(&app, "/accounts/get", "ITEM_LOCKED").await;
    let r = app.gql(Some(&t), REFRESH, json!({})).await;
    assert_eq!(r["data"]["refreshPlaidBankConnections"]["status"], "PARTIAL", "{r}");
    assert_eq!(status(&app, &t, &item).await, "LOGIN_REQUIRED");
    assert!(has_detail(&app, &item, "ITEM_LOCKED").await);
}

#[tokio::test]
async fn a_sync_refused_for_consent_asks_for_the_user() {
    let app = TestApp::spawn().await;
    let t = app.token("rule-sync");
    let item = item_of(&app.link(&t).await);
    app.eventually("the first sync ran", || async {
        app.db_i64(&format!(
            "select count(*) from bank_connections where plaid_item_id = '{item}' and transactions_synced_at is not null"
        ))
        .await
            == 1
    })
    .await;
    fault(&app, "/transactions/sync", "ACCESS_NOT_GRANTED").await;
    app.emu_post(&format!("/emulator/items/{item}/transactions/advance"), json!({"new": 2})).await;
    app.eventually("the sync's error moves the status", || async { status(&app, &t, &item).await == "LOGIN_REQUIRED" })
        .await;
    assert!(has_detail(&app, &item, "ACCESS_NOT_GRANTED").await);
}

#[tokio::test]
async fn an_item_error_webhook_follows_the_rule_and_a_passing_error_changes_nothing() {
    let app = TestApp::spawn().await;
    let t = app.token("rule-webhook");
    let locked = item_of(&app.link(&t).await);
    let passing = item_of(&app.link_at(&t, "ins_109511").await);
    let fire = |item: &str, error_code: &str| {
        let body = json!({"webhook_type": "ITEM", "webhook_code": "ERROR", "error_code": error_code});
        let path = format!("/emulator/items/{item}/webhook");
        let app = &app;
        async move { app.emu_post(&path, body).await }
    };
    fire(&passing, "PRODUCT_NOT_READY").await;
    fire(&locked, "ITEM_LOCKED").await;
    app.eventually("the locked item needs the user", || async { status(&app, &t, &locked).await == "LOGIN_REQUIRED" })
        .await;
    assert!(has_detail(&app, &locked, "ITEM_LOCKED").await);
    app.eventually("both events were applied", || async {
        app.db_i64("select count(*) from webhook_events where webhook_code = 'ERROR' and processed_at is not null")
            .await
            == 2
    })
    .await;
    assert_eq!(status(&app, &t, &passing).await, "ACTIVE", "data not ready yet says nothing about the item");
    assert_eq!(detail(&app, &passing).await, 0);
}

#[tokio::test]
async fn a_health_check_that_plaid_answers_with_an_item_error_sets_the_status_by_the_rule() {
    let app = TestApp::spawn().await;
    let t = app.token("rule-health");
    let item = item_of(&app.link(&t).await);
    // A LOGIN_REPAIRED notice makes the server ask Plaid; Plaid answers that the account is locked.
    fault(&app, "/item/get", "ITEM_LOCKED").await;
    app.emu_post(
        &format!("/emulator/items/{item}/webhook"),
        json!({"webhook_type": "ITEM", "webhook_code": "LOGIN_REPAIRED"}),
    )
    .await;
    app.eventually("the check's answer moves the status", || async {
        status(&app, &t, &item).await == "LOGIN_REQUIRED"
    })
    .await;
    assert!(has_detail(&app, &item, "ITEM_LOCKED").await);
}

#[tokio::test]
async fn the_reconcilers_item_check_sets_the_status_by_the_rule_and_clears_it_when_plaid_does() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--reconcile-interval-seconds=1".into(), "--item-check-interval-seconds=1".into()],
        ..Default::default()
    })
    .await;
    let t = app.token("rule-reconcile");
    let item = item_of(&app.link(&t).await);
    fault(&app, "/item/get", "USER_SETUP_REQUIRED").await;
    app.eventually("the reconciler's check moves the status", || async {
        status(&app, &t, &item).await == "LOGIN_REQUIRED"
    })
    .await;
    assert!(has_detail(&app, &item, "USER_SETUP_REQUIRED").await);
    // The user finished at the bank: Plaid reports the item healthy, and the status follows.
    app.http.delete(format!("{}/emulator/faults", app.emulator.url())).send().await.unwrap();
    app.eventually("a healthy item is active again", || async { status(&app, &t, &item).await == "ACTIVE" }).await;
    assert_eq!(detail(&app, &item).await, 0, "no stale detail");
}
