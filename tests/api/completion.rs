//! completePlaidLink: idempotent, cancellation-safe, compensating, deduplicating.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn the_same_public_token_twice_gives_one_connection_and_the_same_answer() {
    let app = TestApp::spawn().await;
    let t = app.token("dave");
    let (pt, _) = app.link_session(&t, json!({}), json!({})).await;
    let first = app.complete(&t, &pt, None).await;
    let second = app.complete(&t, &pt, None).await;
    assert!(first["errors"].is_null(), "{first}");
    assert_eq!(first, second);
    assert_eq!(app.accounts(&t, json!({})).await.as_array().unwrap().len(), 9);
}

#[tokio::test]
async fn concurrent_duplicates_wait_for_the_first_and_agree() {
    let app = TestApp::spawn().await;
    let t = app.token("erin");
    let (pt, _) = app.link_session(&t, json!({}), json!({})).await;
    // Slow the upstream so the duplicates really overlap.
    app.emu_post("/emulator/faults", json!({"endpoint": "/accounts/get", "kind": "latency", "ms": 300, "times": 1}))
        .await;
    let (a, b, c) = tokio::join!(app.complete(&t, &pt, None), app.complete(&t, &pt, None), app.complete(&t, &pt, None));
    assert!(a["errors"].is_null(), "{a}");
    assert_eq!(a, b);
    assert_eq!(a, c);
    let accounts = app.accounts(&t, json!({})).await;
    assert_eq!(accounts.as_array().unwrap().len(), 9, "one connection");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_request_still_finds_the_link_completed() {
    let app = TestApp::spawn().await;
    let t = app.token("frank");
    let (pt, _) = app.link_session(&t, json!({}), json!({})).await;
    app.emu_post("/emulator/faults", json!({"endpoint": "/accounts/get", "kind": "latency", "ms": 800, "times": 1}))
        .await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let sent = impatient
        .post(&app.graphql)
        .bearer_auth(&t)
        .json(&json!({"query": COMPLETE_LINK, "variables": {"input": {"publicToken": pt}}}))
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up");
    let mut found = 0;
    for _ in 0..100 {
        found = app.accounts(&t, json!({})).await.as_array().map(|a| a.len()).unwrap_or(0);
        if found > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found, 9, "the work finished without the client");
    // The client's retry with the same token gets the stored answer.
    let again = app.complete(&t, &pt, None).await;
    assert!(again["errors"].is_null(), "{again}");
}

#[tokio::test]
async fn a_storage_failure_after_the_exchange_removes_the_new_item_at_plaid() {
    let app = TestApp::spawn().await;
    let t = app.token("grace");
    if app.is_postgres() {
        app.sql(&[
            "create function refuse() returns trigger language plpgsql as $$ begin raise exception 'injected failure'; end $$",
            "create trigger refuse before insert on bank_connections for each row execute function refuse()",
        ])
        .await;
    } else {
        app.sql(&["create trigger refuse before insert on bank_connections begin select raise(abort, 'injected failure'); end"])
            .await;
    }
    let (pt, item) = app.link_session(&t, json!({}), json!({})).await;
    // The first removal at Plaid fails too (every attempt of the client's retries).
    app.emu_post(
        "/emulator/faults",
        json!({"endpoint": "/item/remove", "kind": "http_error", "status": 500, "times": 3}),
    )
    .await;
    let r = app.complete(&t, &pt, None).await;
    // The public token is spent: the answer says to run Link again, not to retry.
    assert_eq!(code(&r).as_deref(), Some("LINK_RESTART_REQUIRED"), "{r}");
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("run Plaid Link again"), "{msg}");
    assert!(!msg.contains("injected") && !msg.to_lowercase().contains("insert"), "no SQL in the message");
    // A retry of the same token gets the same answer, without a second exchange.
    assert_eq!(app.complete(&t, &pt, None).await, r);
    // The durable clean-up removes the item at Plaid once Plaid answers again.
    app.eventually("the new item is removed at Plaid", || async {
        app.emu_get(&format!("/emulator/items/{item}")).await["removed"] == true
    })
    .await;
    app.eventually("the clean-up record is gone", || async {
        app.db_i64("select count(*) from pending_item_removals").await == 0
    })
    .await;
    assert_eq!(app.accounts(&t, json!({})).await, json!([]));
}

#[tokio::test]
async fn an_update_mode_token_sent_without_its_item_relinks_and_loses_nothing() {
    let app = TestApp::spawn().await;
    let t = app.token("slip");
    let done = app.link(&t).await;
    let item = done["platformItemId"].as_str().unwrap().to_string();
    app.wait_for_history(&t, 120).await;
    // Update mode, but the client forgets platformItemId when completing.
    let (pt, emu_item) = app.link_session(&t, json!({"platformItemId": item}), json!({})).await;
    assert_eq!(emu_item, item);
    let r = app.complete(&t, &pt, None).await;
    let relinked = &r["data"]["completePlaidLink"];
    assert_eq!(relinked["bankInstitutionAuthId"], done["bankInstitutionAuthId"], "{r}");
    assert_eq!(relinked["platformItemId"], item.as_str());
    assert!(relinked["newlyLinkedBankInstitutionAuthId"].is_null());
    let accounts = app.accounts(&t, json!({})).await;
    assert_eq!(accounts.as_array().unwrap().len(), 9);
    assert!(accounts.as_array().unwrap().iter().all(|a| a["status"] == "ACTIVE"), "{accounts}");
    app.wait_for_history(&t, 120).await;
    assert_eq!(app.emu_get(&format!("/emulator/items/{item}")).await["removed"], false, "the item lives on at Plaid");
    assert_eq!(app.db_i64("select count(*) from pending_item_removals").await, 0);
}

#[tokio::test]
async fn linking_the_same_bank_again_repairs_the_existing_connection() {
    let app = TestApp::spawn().await;
    let t = app.token("heidi");
    let first = app.link(&t).await;
    app.wait_for_history(&t, 120).await;
    let (pt, new_item) = app.link_session(&t, json!({}), json!({"institution_id": "ins_109508"})).await;
    let r = app.complete(&t, &pt, None).await;
    let second = &r["data"]["completePlaidLink"];
    assert_eq!(second["bankInstitutionAuthId"], first["bankInstitutionAuthId"], "{r}");
    assert!(second["newlyLinkedBankInstitutionAuthId"].is_null());
    assert_eq!(second["platformItemId"], new_item);
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["bankAccounts"].as_array().unwrap().iter().map(|a| a["bankAccountId"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(second), ids(&first), "matching accounts keep their ids");
    let old_item = first["platformItemId"].as_str().unwrap();
    assert_eq!(
        app.emu_get(&format!("/emulator/items/{old_item}")).await["removed"],
        true,
        "the superseded item is removed"
    );
    let accounts = app.accounts(&t, json!({})).await;
    assert_eq!(accounts.as_array().unwrap().len(), 9, "still one connection");
    assert!(accounts.as_array().unwrap().iter().all(|a| a["platformItemId"] == new_item));
    // The history is the new item's, once, not both items'.
    app.wait_for_history(&t, 120).await;

    // A different bank is a new connection.
    let other = app.link_at(&t, "ins_109511").await;
    assert!(other["newlyLinkedBankInstitutionAuthId"].is_string());
    assert_ne!(other["bankInstitutionAuthId"], first["bankInstitutionAuthId"]);
}

#[tokio::test]
async fn accounts_that_need_manual_micro_deposit_verification_are_refused_and_the_item_removed() {
    let app =
        TestApp::spawn_with(Options { args: vec!["--plaid-products".into(), "auth".into()], ..Default::default() })
            .await;
    let t = app.token("ivan");
    let (pt, item) = app
        .link_session(&t, json!({}), json!({"institution_id": "ins_109512", "password": "microdeposits_good"}))
        .await;
    let r = app.complete(&t, &pt, None).await;
    assert_eq!(code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("micro-deposit"));
    assert_eq!(app.emu_get(&format!("/emulator/items/{item}")).await["removed"], true);
    assert_eq!(app.accounts(&t, json!({})).await, json!([]));
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    variables: serde_json::Value,
) -> serde_json::Value {
    let r =
        http.post(url).bearer_auth(token).json(&json!({"query": query, "variables": variables})).send().await.unwrap();
    r.json().await.unwrap()
}

/// Short claim intervals, so a dead completion is found out in seconds, not 45.
const SHORT_CLAIMS: [(&str, &str); 2] =
    [("LINK_COMPLETION_HEARTBEAT_SECONDS", "1"), ("LINK_COMPLETION_STALE_SECONDS", "3")];

#[tokio::test]
async fn a_completion_killed_after_the_exchange_answers_link_restart_required_once_its_heartbeat_stops() {
    // The test's app supplies the emulator and a fresh database; the server under test is a
    // separate process on the same database, killed mid-completion.
    let probe = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let emulator = probe.emulator.url();
    let http = reqwest::Client::new();
    let t = probe.token("killed-completion");
    let mut server = Server::start(&probe.database_url, &emulator, &[], &SHORT_CLAIMS);
    let r = post(&http, &server.graphql, &t, CREATE_LINK_TOKEN, json!({"input": {}})).await;
    let link_token =
        r["data"]["createPlaidLinkToken"]["linkToken"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    let done = probe.emu_post("/emulator/link/complete", json!({"link_token": link_token})).await;
    let public_token = done["public_token"].as_str().unwrap().to_string();
    // The step after the exchange hangs, so the process dies with the item exchanged and
    // recorded for removal, and the claim left PENDING.
    probe
        .emu_post("/emulator/faults", json!({"endpoint": "/accounts/get", "kind": "latency", "ms": 30000, "times": 1}))
        .await;
    let completing = {
        let (http, url, t, pt) = (http.clone(), server.graphql.clone(), t.clone(), public_token.clone());
        tokio::spawn(async move { post(&http, &url, &t, COMPLETE_LINK, json!({"input": {"publicToken": pt}})).await })
    };
    probe
        .eventually("the token is exchanged and its item awaits removal", || async {
            probe.db_i64("select count(*) from pending_item_removals").await == 1
        })
        .await;
    server.kill();
    completing.abort();

    // A retry on a new process: once the dead claim's heartbeat is stale it is taken over, and
    // since the spent token's item is waiting for its removal, the answer is to run Link again.
    let server = Server::start(&probe.database_url, &emulator, &[], &SHORT_CLAIMS);
    let started = std::time::Instant::now();
    let input = json!({"input": {"publicToken": public_token}});
    let r = post(&http, &server.graphql, &t, COMPLETE_LINK, input.clone()).await;
    assert_eq!(code(&r).as_deref(), Some("LINK_RESTART_REQUIRED"), "{r}");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("run Plaid Link again"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(15), "answered in {:?}", started.elapsed());
    // The same answer again, and nothing exchanged or stored twice.
    assert_eq!(post(&http, &server.graphql, &t, COMPLETE_LINK, input).await, r);
    assert_eq!(probe.db_i64("select count(*) from bank_connections").await, 0);
    assert_eq!(probe.db_i64("select count(*) from pending_item_removals").await, 1, "its removal is still due");
}

#[tokio::test]
async fn a_running_completion_keeps_its_claim_fresh_and_is_never_taken_over() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--link-completion-heartbeat-seconds=1".into(), "--link-completion-stale-seconds=2".into()],
        ..Default::default()
    })
    .await;
    let t = app.token("slow-completion");
    let (pt, _) = app.link_session(&t, json!({}), json!({})).await;
    // Longer than the claim's staleness: only its heartbeat keeps a retry from taking over.
    app.emu_post("/emulator/faults", json!({"endpoint": "/accounts/get", "kind": "latency", "ms": 5000, "times": 1}))
        .await;
    let first = app.complete(&t, &pt, None);
    let retry = async {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        app.complete(&t, &pt, None).await
    };
    let (a, b) = tokio::join!(first, retry);
    assert!(a["errors"].is_null(), "{a}");
    assert_eq!(a, b, "the retry waited for the running completion");
    assert_eq!(app.accounts(&t, json!({})).await.as_array().unwrap().len(), 9, "one connection");
}
