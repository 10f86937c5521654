//! Live connection events: the `plaidConnectionEvents` subscription over `graphql-transport-ws`,
//! with its authentication, its limits, its durability across reconnects and across processes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

async fn remove(app: &TestApp, token: &str, connection: &str) {
    let r = app
        .gql(Some(token), REMOVE, json!({"input": {"bankInstitutionAuthId": connection, "reason": "USER_REQUESTED"}}))
        .await;
    assert_eq!(r["data"]["removePlaidBankInstitution"]["removed"], true, "{r}");
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_subscriber_follows_its_connection_from_link_to_removal_and_sees_nobody_elses() {
    let app = TestApp::spawn_with(Options { transactions_per_item: Some(1200), ..Default::default() }).await;
    let (alice, mallory) = (app.token("alice-events"), app.token("mallory-events"));
    let mut mine = app.ws(&alice).await;
    mine.events("1", json!(null)).await;
    let mut theirs = app.ws(&mallory).await;
    theirs.events("1", json!({})).await;
    // Both subscriptions are live before anything happens (a ping round trip orders them).
    for s in [&mut mine, &mut theirs] {
        s.send(json!({"type": "ping"})).await;
        assert_eq!(s.recv().await.unwrap()["type"], "pong");
    }

    let done = app.link(&alice).await;
    let connection = done["bankInstitutionAuthId"].as_str().unwrap().to_string();
    let item = done["platformItemId"].as_str().unwrap().to_string();
    let events = mine.events_until("1", "HISTORY_READY").await;
    assert_eq!(events[0]["type"], "LINKED", "{events:?}");
    assert!(events.iter().all(|e| e["bankInstitutionAuthId"] == connection && e["platformItemId"] == item));
    // 1,200 transactions arrive in pages of 500: the first sync reports its progress.
    let progress: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "HISTORY_SYNC_PROGRESS")
        .map(|e| e["transactionCount"].as_i64().unwrap())
        .collect();
    assert!(!progress.is_empty() && progress.windows(2).all(|w| w[0] < w[1]), "{events:?}");
    let ready = events.last().unwrap();
    assert_eq!(ready["transactionCount"], 1200, "{ready}");
    // Event ids are ordered as text, as the events are.
    let ids: Vec<&str> = events.iter().map(|e| e["eventId"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // When HISTORY_READY arrives, reads have the whole history and say so.
    let page = app.transactions(&alice, json!({"paginate": {"limit": 1}})).await;
    assert_eq!(page["data"]["getPlaidBankTransactions"]["totalCount"], 1200, "{page}");
    let accounts = app.gql(Some(&alice), "{ getPlaidBankAccounts { historyStatus lastSyncedAt } }", json!({})).await;
    for a in accounts["data"]["getPlaidBankAccounts"].as_array().unwrap() {
        assert_eq!(a["historyStatus"], "READY", "{accounts}");
        assert!(a["lastSyncedAt"].is_string(), "{accounts}");
    }

    // New balances, and new activity at the bank (its webhook makes bankgraph sync).
    let r = app.gql(Some(&alice), REFRESH, json!({})).await;
    assert_eq!(r["data"]["refreshPlaidBankConnections"]["status"], "REFRESHED", "{r}");
    let e = mine.event("1").await;
    assert_eq!(e["type"], "BALANCES_UPDATED", "{e}");
    app.emu_post(&format!("/emulator/items/{item}/transactions/advance"), json!({"new": 4, "post_pending": false}))
        .await;
    let e = mine.event("1").await;
    assert_eq!(
        (e["type"].as_str(), e["addedCount"].as_i64(), e["modifiedCount"].as_i64(), e["removedCount"].as_i64()),
        (Some("TRANSACTIONS_UPDATED"), Some(4), Some(0), Some(0)),
        "{e}"
    );

    // The bank asks the user to log in again.
    app.reset_login(&item).await;
    let e = mine.event("1").await;
    assert_eq!((e["type"].as_str(), e["status"].as_str()), (Some("STATUS_CHANGED"), Some("LOGIN_REQUIRED")), "{e}");

    remove(&app, &alice, &connection).await;
    let e = mine.event("1").await;
    assert_eq!(e["type"], "REMOVED", "{e}");
    assert_eq!(e["bankInstitutionAuthId"], connection);

    // The other user saw none of it.
    theirs.silent_for(Duration::from_millis(500)).await;

    let metrics = app.http.get(format!("{}/metrics", app.internal)).send().await.unwrap().text().await.unwrap();
    // The gauges are the test process's: other tests' sockets may be open too.
    for gauge in ["bankgraph_ws_sockets_open ", "bankgraph_subscriptions_active "] {
        let n = metrics.lines().find_map(|l| l.strip_prefix(gauge)).and_then(|v| v.parse::<f64>().ok());
        assert!(n.is_some_and(|n| n >= 2.0), "{gauge}at least 2 in {metrics}");
    }
    assert!(metrics.contains("bankgraph_event_delivery_lag_seconds_count"), "{metrics}");
    let delivered = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bankgraph_events_delivered_total "))
        .and_then(|v| v.parse::<f64>().ok());
    // A counter of the whole test process too: at least this test's deliveries.
    assert!(delivered.is_some_and(|n| n >= events.len() as f64 + 4.0), "{metrics}");
}

#[tokio::test]
async fn a_new_connection_reads_as_syncing_until_its_history_is_ready() {
    let app = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let t = app.token("patient");
    app.link(&t).await;
    let r = app.gql(Some(&t), "{ getPlaidBankAccounts { historyStatus lastSyncedAt } }", json!({})).await;
    let accounts = r["data"]["getPlaidBankAccounts"].as_array().unwrap().clone();
    assert!(!accounts.is_empty(), "{r}");
    for a in &accounts {
        assert_eq!(a["historyStatus"], "SYNCING", "{r}");
        assert!(a["lastSyncedAt"].is_null(), "{r}");
    }
}

#[tokio::test]
async fn connection_init_refuses_no_token_a_bad_token_and_a_token_without_the_scope() {
    let app = TestApp::spawn().await;
    let cases = [
        json!({}),
        json!({"Authorization": "Bearer not-a-jwt"}),
        json!({"Authorization": format!("Bearer {}", token_with("scopeless", "READ_ONLY", 600))}),
        json!({"Authorization": format!("Basic {}", "dXNlcjpwYXNz")}),
    ];
    for payload in cases {
        let mut s = app.ws_raw(&[]).await.unwrap();
        s.send(json!({"type": "connection_init", "payload": payload})).await;
        let closed = s.closed().await;
        assert_eq!(closed.0, 4403, "{payload}: {closed:?}");
    }
    // A subscribe before the acknowledgement is refused as the protocol says.
    let mut s = app.ws_raw(&[]).await.unwrap();
    s.events("1", json!(null)).await;
    assert_eq!(s.closed().await.0, 4401);
    // Garbage is a bad message.
    let mut s = app.ws_raw(&[]).await.unwrap();
    s.send(json!({"type": "start", "id": "1"})).await;
    assert_eq!(s.closed().await.0, 4400);
    // A second connection_init.
    let mut s = app.ws(&app.token("twice")).await;
    s.send(json!({"type": "connection_init", "payload": {}})).await;
    assert_eq!(s.closed().await.0, 4429);
}

#[tokio::test]
async fn a_socket_that_never_initialises_or_goes_quiet_is_closed_and_an_expired_token_ends_it() {
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--ws-init-timeout-seconds=1".into(),
            "--ws-ping-interval-seconds=1".into(),
            "--ws-idle-timeout-seconds=2".into(),
        ],
        ..Default::default()
    })
    .await;
    let mut s = app.ws_raw(&[]).await.unwrap();
    assert_eq!(s.closed().await.0, 4408, "no connection_init within the timeout");

    // A client that stops answering (it reads nothing, so it answers no ping) is closed.
    let mut quiet = app.ws(&app.token("quiet")).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(quiet.closed().await.0, 1008, "idle past WS_IDLE_TIMEOUT_SECONDS");
    // One that answers pings stays.
    let mut alive = app.ws(&app.token("alive")).await;
    alive.silent_for(Duration::from_millis(3500)).await;

    // A token that expires while the socket is open closes it with 4403.
    let short = token_with("short-lived", "MANAGE_PAYMENT", 2);
    let mut s = app.ws(&short).await;
    s.events("1", json!(null)).await;
    let started = std::time::Instant::now();
    let closed = s.closed().await;
    assert_eq!(closed.0, 4403, "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn limits_hold_per_socket_per_user_and_per_origin() {
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--ws-max-subscriptions-per-socket=2".into(),
            "--ws-max-sockets-per-user=1".into(),
            "--cors-allowed-origins=https://app.example".into(),
        ],
        ..Default::default()
    })
    .await;
    let t = app.token("limited");
    let mut s = app.ws(&t).await;
    s.events("a", json!(null)).await;
    s.events("b", json!(null)).await;
    s.events("c", json!(null)).await;
    let m = s.recv().await.unwrap();
    assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("error"), Some("c")), "{m}");
    assert_eq!(m["payload"][0]["extensions"]["code"], "BAD_REQUEST", "{m}");
    // Completing one makes room.
    s.send(json!({"type": "complete", "id": "a"})).await;
    s.events("c", json!(null)).await;
    s.send(json!({"type": "ping"})).await;
    assert_eq!(s.recv().await.unwrap()["type"], "pong", "c started without an error");
    // A duplicate id is a protocol error.
    let mut second_user = app.ws(&app.token("dup")).await;
    second_user.events("x", json!(null)).await;
    second_user.events("x", json!(null)).await;
    assert_eq!(second_user.closed().await.0, 4409);

    // One socket per user here: a second is closed at init.
    let mut again = app.ws_raw(&[]).await.unwrap();
    again.send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {t}")}})).await;
    assert_eq!(again.closed().await.0, 4429);

    // A page from another origin cannot open one; an allowed origin can.
    match app.ws_raw(&[("origin", "https://evil.example")]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
    app.ws_raw(&[("origin", "https://app.example")]).await.expect("an allowed origin");

    // Queries and mutations are not served over the socket, subscriptions not over HTTP.
    let mut q = app.ws(&app.token("querier")).await;
    q.subscribe("q", "{ getPlaidBankAccounts { bankAccountId } }", json!({})).await;
    let m = q.recv().await.unwrap();
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["payload"][0]["extensions"]["code"], "METHOD_NOT_ALLOWED");
    let r = app.gql(Some(&t), EVENTS, json!({})).await;
    assert_eq!(code(&r).as_deref(), Some("METHOD_NOT_ALLOWED"), "{r}");
    // The guardrails apply to documents sent over the socket.
    let aliases: String = (0..200).map(|i| format!("a{i}: plaidConnectionEvents {{ eventId }} ")).collect();
    q.subscribe("big", &format!("subscription {{ {aliases} }}"), json!({})).await;
    let m = q.recv().await.unwrap();
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["payload"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{m}");
}

#[tokio::test]
async fn a_subscriber_that_reconnects_with_after_gets_exactly_what_it_missed_then_live_events() {
    let app = TestApp::spawn().await;
    let t = app.token("reconnecting");
    let mut s = app.ws(&t).await;
    s.events("1", json!(null)).await;
    s.send(json!({"type": "ping"})).await;
    assert_eq!(s.recv().await.unwrap()["type"], "pong");
    let first = app.link(&t).await;
    let seen = s.events_until("1", "HISTORY_READY").await;
    let second = app.link_at(&t, "ins_109511").await;
    let seen2 = s.events_until("1", "HISTORY_READY").await;
    let last = seen2.last().unwrap()["eventId"].as_str().unwrap().to_string();
    assert!(seen.len() >= 2);
    s.close().await;

    // Three changes while it is away.
    let (c1, c2) =
        (first["bankInstitutionAuthId"].as_str().unwrap(), second["bankInstitutionAuthId"].as_str().unwrap());
    app.reset_login(first["platformItemId"].as_str().unwrap()).await;
    app.eventually("the status change is stored", || async {
        app.db_i64("select count(*) from connection_events where event_type = 'STATUS_CHANGED'").await == 1
    })
    .await;
    remove(&app, &t, c2).await;
    remove(&app, &t, c1).await;

    let mut s = app.ws(&t).await;
    s.events("2", json!({"after": last})).await;
    let missed = [s.event("2").await, s.event("2").await, s.event("2").await];
    assert_eq!(types(&missed), ["STATUS_CHANGED", "REMOVED", "REMOVED"], "{missed:?}");
    assert_eq!(missed.iter().map(|e| e["bankInstitutionAuthId"].as_str().unwrap()).collect::<Vec<_>>(), [c1, c2, c1]);
    s.silent_for(Duration::from_millis(300)).await;
    // Then live ones.
    let third = app.link(&t).await;
    let e = s.event("2").await;
    assert_eq!((e["type"].as_str(), &e["bankInstitutionAuthId"]), (Some("LINKED"), &third["bankInstitutionAuthId"]));

    // One connection only, by either id.
    let mut one = app.ws(&app.token("reconnecting")).await;
    one.events("c", json!({"bankInstitutionAuthId": c2, "after": "evt_0000000000000000"})).await;
    let only = one.events_until("c", "REMOVED").await;
    assert!(only.iter().all(|e| e["bankInstitutionAuthId"] == c2), "{only:?}");
    assert_eq!(only[0]["type"], "LINKED");
}

#[tokio::test]
async fn resuming_from_an_expired_event_a_malformed_id_or_a_foreign_connection_is_a_clear_error() {
    let app = TestApp::spawn().await;
    let t = app.token("expiring");
    let done = app.link(&t).await;
    app.eventually("events are stored", || async { app.db_i64("select count(*) from connection_events").await >= 1 })
        .await;
    // Retention has dropped everything so far.
    app.sql(&["update connection_event_log set pruned_through = last_seq"]).await;
    let mut s = app.ws(&t).await;
    let cases = [
        (json!({"after": "evt_0000000000000000"}), "EVENTS_EXPIRED"),
        (json!({"after": "not-an-event"}), "BAD_USER_INPUT"),
        (json!({"bankInstitutionAuthId": "00000000-0000-0000-0000-000000000000"}), "NOT_FOUND"),
        (json!({"platformItemId": "someone-elses-item"}), "NOT_FOUND"),
    ];
    for (i, (input, expected)) in cases.iter().enumerate() {
        let id = format!("e{i}");
        s.events(&id, input.clone()).await;
        let m = s.recv().await.unwrap();
        assert_eq!(m["id"], id.as_str(), "{m}");
        let errors = if m["type"] == "error" { &m["payload"] } else { &m["payload"]["errors"] };
        assert_eq!(errors[0]["extensions"]["code"], *expected, "{input}: {m}");
        if m["type"] == "next" {
            // An execution error is a result, and the subscription completes after it.
            assert_eq!(s.recv().await.unwrap(), json!({"type": "complete", "id": id}));
        }
    }
    // Another user's connection is not found either.
    let mut other = app.ws(&app.token("someone-else")).await;
    other.events("x", json!({"bankInstitutionAuthId": done["bankInstitutionAuthId"]})).await;
    let m = other.recv().await.unwrap();
    assert_eq!(m["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{m}");
}

#[tokio::test]
async fn an_event_written_by_one_process_reaches_a_subscriber_of_another() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_with(Options {
        database_url: Some(a.database_url.clone()),
        shared_emulator: Some(a.emulator.clone()),
        args: vec!["--job-workers=0".into()],
        ..Default::default()
    })
    .await;
    let t = a.token("two-processes");
    let mut s = b.ws(&t).await;
    s.events("1", json!(null)).await;
    s.send(json!({"type": "ping"})).await;
    assert_eq!(s.recv().await.unwrap()["type"], "pong");
    // Linked through A; A's worker syncs the history.
    let done = a.link(&t).await;
    let events = s.events_until("1", "HISTORY_READY").await;
    assert_eq!(events[0]["type"], "LINKED");
    assert_eq!(events.last().unwrap()["bankInstitutionAuthId"], done["bankInstitutionAuthId"]);
    assert_eq!(events.last().unwrap()["transactionCount"], 120);
}

#[tokio::test]
async fn shutdown_closes_sockets_as_going_away() {
    let app = TestApp::spawn().await;
    let mut s = app.ws(&app.token("leaving")).await;
    s.events("1", json!(null)).await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(s.closed().await.0, 1001);
    stopping.await.unwrap();
}

#[tokio::test]
async fn sockets_per_address_are_capped_and_an_oversized_message_closes_its_socket() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--ws-max-sockets-per-ip=2".into(), "--max-body-bytes=4096".into()],
        ..Default::default()
    })
    .await;
    let first = app.ws_raw(&[]).await.unwrap();
    let mut second = app.ws(&app.token("big")).await;
    match app.ws_raw(&[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected a 429, got {:?}", other.map(|_| ())),
    }
    drop(first);
    // A place frees when a socket closes.
    let mut freed = false;
    for _ in 0..50 {
        if app.ws_raw(&[]).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the closed socket's place came back");

    let query = format!("subscription {{ plaidConnectionEvents {{ eventId }} }} # {}", "x".repeat(8192));
    second.subscribe("1", &query, json!({})).await;
    assert_eq!(second.closed().await.0, 1009);
}

/// Event ids number the caller's own events (evt_…01, …02, …), whatever other users do in
/// between, so they say nothing of the service's volume; and an id the caller was never given
/// (another user's, or beyond its own) starts the subscription as a valid one does: no error,
/// and nobody else's events.
#[tokio::test]
async fn event_ids_count_the_callers_own_events_and_an_id_never_given_resumes_like_a_valid_one() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.token("volume-a"), app.token("volume-b"));
    let (mut sa, mut sb) = (app.ws(&a).await, app.ws(&b).await);
    sa.events("a", json!(null)).await;
    sb.events("b", json!(null)).await;
    for s in [&mut sa, &mut sb] {
        s.send(json!({"type": "ping"})).await;
        assert_eq!(s.recv().await.unwrap()["type"], "pong");
    }
    app.link(&a).await;
    let mut mine = sa.events_until("a", "HISTORY_READY").await;
    // Someone else's events land between the caller's.
    let theirs = app.link(&b).await;
    let b_events = sb.events_until("b", "HISTORY_READY").await;
    app.link_at(&a, "ins_109511").await;
    mine.extend(sa.events_until("a", "HISTORY_READY").await);
    let id = |e: &Value| e["eventId"].as_str().unwrap().to_string();
    let ids: Vec<String> = mine.iter().map(id).collect();
    let own: Vec<String> = (1..=ids.len()).map(|n| format!("evt_{n:016x}")).collect();
    assert_eq!(ids, own, "the caller's own events, numbered without gaps");
    assert_eq!(id(&b_events[0]), "evt_0000000000000001", "{b_events:?}");
    sa.close().await;
    sb.close().await;

    // Resuming from ids B was never given: A's last one, and one far beyond anything stored.
    let mut resumed = Vec::new();
    for (i, after) in [ids.last().unwrap().clone(), "evt_7fffffffffffffff".to_string()].into_iter().enumerate() {
        let mut s = app.ws(&b).await;
        s.events("r", json!({"after": after})).await;
        s.send(json!({"type": "ping"})).await;
        assert_eq!(s.recv().await.unwrap()["type"], "pong", "subscription {i} started without an error");
        resumed.push(s);
    }
    // A changes something, then B does: B's subscriptions get B's change only.
    remove(&app, &a, mine[0]["bankInstitutionAuthId"].as_str().unwrap()).await;
    remove(&app, &b, theirs["bankInstitutionAuthId"].as_str().unwrap()).await;
    for s in &mut resumed {
        let e = s.event("r").await;
        assert_eq!(
            (e["type"].as_str(), &e["bankInstitutionAuthId"]),
            (Some("REMOVED"), &theirs["bankInstitutionAuthId"])
        );
        s.silent_for(Duration::from_millis(200)).await;
    }
}
