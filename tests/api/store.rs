//! The store's and the job queue's state machines, driven directly on both databases:
//! completion claims (claim, busy, replay, stale take-over, release), the refresh slot, and job
//! claims (coalescing, one run per key, retry, lease, reap).

use std::time::Duration;

use bankgraph::db::Db;
use bankgraph::identity::store::{Claim, Store};
use bankgraph::jobs::{JobKind, Jobs, Outcome};
use chrono::Utc;

use crate::helpers::*;

async fn db() -> Db {
    let db = Db::connect(&fresh_database().await).await.unwrap();
    db.migrate().await.unwrap();
    db
}

#[tokio::test]
async fn a_completion_claim_is_taken_once_replayed_when_decided_and_released_when_not() {
    let store = Store::new(db().await);
    let (now, stale) = (Utc::now(), chrono::Duration::minutes(2));
    assert_eq!(store.claim_completion("u1", "h1", now, stale).await.unwrap(), Claim::Mine);
    // A second request while the first works: busy, then still busy while it keeps its claim fresh.
    assert_eq!(store.claim_completion("u1", "h1", now, stale).await.unwrap(), Claim::Busy);
    let later = now + chrono::Duration::minutes(3);
    store.touch_completion("u1", "h1", later - chrono::Duration::seconds(20)).await.unwrap();
    assert_eq!(store.claim_completion("u1", "h1", later, stale).await.unwrap(), Claim::Busy);
    // The same token of another user is another claim.
    assert_eq!(store.claim_completion("u2", "h1", now, stale).await.unwrap(), Claim::Mine);

    store.finish_completion("u1", "h1", true, "{\"done\":1}", later).await.unwrap();
    assert_eq!(store.claim_completion("u1", "h1", later, stale).await.unwrap(), Claim::Done("{\"done\":1}".into()));
    store.finish_completion("u2", "h1", false, "{\"code\":\"X\"}", later).await.unwrap();
    assert_eq!(
        store.claim_completion("u2", "h1", later, stale).await.unwrap(),
        Claim::Failed("{\"code\":\"X\"}".into())
    );

    // A transient failure releases the claim: the next try is a fresh one.
    assert_eq!(store.claim_completion("u1", "h2", now, stale).await.unwrap(), Claim::Mine);
    store.release_completion("u1", "h2").await.unwrap();
    assert_eq!(store.claim_completion("u1", "h2", now, stale).await.unwrap(), Claim::Mine);
}

#[tokio::test]
async fn a_claim_whose_process_died_is_taken_over_by_exactly_one_request() {
    let store = Store::new(db().await);
    let (now, stale) = (Utc::now(), chrono::Duration::minutes(2));
    assert_eq!(store.claim_completion("u", "h", now, stale).await.unwrap(), Claim::Mine);
    // No heartbeat for longer than `stale`: the claim is free, and only one request takes it
    // over (told so, since the dead attempt may have exchanged the token already).
    let later = now + chrono::Duration::minutes(5);
    let (a, b) =
        tokio::join!(store.claim_completion("u", "h", later, stale), store.claim_completion("u", "h", later, stale));
    let mut got = [a.unwrap(), b.unwrap()];
    got.sort_by_key(|c| matches!(c, Claim::Busy));
    assert_eq!(got, [Claim::TakenOver { exchanged_item: None }, Claim::Busy]);
}

#[tokio::test]
async fn the_refresh_slot_is_taken_once_per_interval_and_says_how_long_to_wait() {
    let store = Store::new(db().await);
    let (now, every) = (Utc::now(), chrono::Duration::seconds(60));
    assert_eq!(store.take_refresh_slot("u", now, every).await.unwrap(), Ok(()));
    let wait = store.take_refresh_slot("u", now + chrono::Duration::seconds(15), every).await.unwrap().unwrap_err();
    assert_eq!(wait, 45);
    assert_eq!(store.take_refresh_slot("other", now, every).await.unwrap(), Ok(()), "per user");
    assert_eq!(store.take_refresh_slot("u", now + every, every).await.unwrap(), Ok(()), "free again after it");
    assert!(store.take_refresh_slot("u", now + every, every).await.unwrap().is_err());
}

#[tokio::test]
async fn jobs_coalesce_by_key_run_one_at_a_time_per_key_and_retry_later() {
    let db = db().await;
    let jobs = Jobs::new(db, Duration::from_secs(30));
    let now = Utc::now();
    assert!(jobs.enqueue(JobKind::Sync, "c1", now).await.unwrap());
    assert!(!jobs.enqueue(JobKind::Sync, "c1", now).await.unwrap(), "a queued twin is coalesced");
    assert!(jobs.enqueue(JobKind::Sync, "c2", now).await.unwrap());
    let first = jobs.claim(now).await.unwrap().unwrap();
    let second = jobs.claim(now).await.unwrap().unwrap();
    assert_ne!(first.key, second.key);
    assert!(jobs.claim(now).await.unwrap().is_none(), "nothing else is ready");
    // While c1 runs, a new c1 may be queued but does not start until the running one ends.
    assert!(jobs.enqueue(JobKind::Sync, &first.key, now).await.unwrap());
    assert!(jobs.claim(now).await.unwrap().is_none(), "one run per key");
    assert!(jobs.finish(&first, Outcome::Done, now).await.unwrap());
    let again = jobs.claim(now).await.unwrap().expect("the queued twin runs now");
    assert_eq!(again.key, first.key);
    // A retry is queued with a backoff, not run at once.
    assert!(jobs.finish(&again, Outcome::Retry("flaky".into()), now).await.unwrap());
    assert!(jobs.claim(now).await.unwrap().is_none(), "backing off");
    let retried = jobs.claim(now + chrono::Duration::minutes(31)).await.unwrap().expect("due after the backoff");
    assert_eq!((retried.key.as_str(), retried.attempts), (first.key.as_str(), 2));
}

#[tokio::test]
async fn an_expired_lease_is_reaped_unless_a_queued_twin_supersedes_it() {
    let db = db().await;
    let jobs = Jobs::new(db, Duration::from_secs(10));
    let now = Utc::now();
    jobs.enqueue(JobKind::Sync, "lonely", now).await.unwrap();
    jobs.enqueue(JobKind::Sync, "twinned", now).await.unwrap();
    let a = jobs.claim(now).await.unwrap().unwrap();
    let b = jobs.claim(now).await.unwrap().unwrap();
    let twinned = if a.key == "twinned" { &a } else { &b };
    jobs.enqueue(JobKind::Sync, &twinned.key, now).await.unwrap();
    let later = now + chrono::Duration::seconds(30);
    assert_eq!(jobs.reap(later).await.unwrap(), 2);
    // Each key runs again exactly once: the lonely job requeued, the twinned one by its twin.
    let mut keys = vec![];
    while let Some(j) = jobs.claim(later).await.unwrap() {
        keys.push(j.key.clone());
        jobs.finish(&j, Outcome::Done, later).await.unwrap();
    }
    keys.sort();
    assert_eq!(keys, ["lonely", "twinned"]);
}

#[tokio::test]
async fn connection_events_follow_real_changes_only_in_commit_order_and_retention_moves_the_horizon() {
    use bankgraph::domain::{ConnectionStatus, EventType, RemovalReason};
    use bankgraph::identity::crypto::Sealed;
    use bankgraph::identity::store::NewConnection;
    let store = Store::new(db().await);
    let now = Utc::now();
    let new = NewConnection {
        user_id: "ev-user".into(),
        plaid_item_id: "ev-item".into(),
        institution_id: Some("ins_1".into()),
        institution_name: "Bank".into(),
        sealed: Sealed { key_id: "k".into(), blob: "b".into() },
        accounts: vec![],
        address: None,
    };
    let (id, _) = store.create_connection(&new, ConnectionStatus::Active, now).await.unwrap();
    store.set_status(&id, ConnectionStatus::Active, None, now).await.unwrap();
    store.set_status(&id, ConnectionStatus::LoginRequired, Some("ITEM_LOGIN_REQUIRED"), now).await.unwrap();
    store.set_status(&id, ConnectionStatus::LoginRequired, Some("ITEM_LOGIN_REQUIRED"), now).await.unwrap();
    store.mark_removed(&id, RemovalReason::UserRequested, now).await.unwrap();
    store.mark_removed(&id, RemovalReason::UserRequested, now).await.unwrap();
    // Plaid reporting the removed item gone afterwards says nothing new to a subscriber.
    store.set_status(&id, ConnectionStatus::Revoked, Some("ITEM_NOT_FOUND"), now).await.unwrap();

    let events = store.events_after(0, Some("ev-user"), None, 100).await.unwrap();
    let kinds: Vec<(EventType, Option<ConnectionStatus>)> = events.iter().map(|e| (e.event_type, e.status)).collect();
    assert_eq!(
        kinds,
        [
            (EventType::Linked, None),
            (EventType::StatusChanged, Some(ConnectionStatus::LoginRequired)),
            (EventType::Removed, None),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(events.iter().all(|e| e.connection_id == id && e.plaid_item_id == "ev-item"));
    assert!(store.events_after(0, Some("someone-else"), None, 100).await.unwrap().is_empty());

    let log = store.event_log().await.unwrap();
    assert_eq!((log.last_seq, log.pruned_through), (events[2].seq, 0));
    assert_eq!(store.prune_events(now - chrono::Duration::hours(1)).await.unwrap(), 0, "nothing that old");
    assert_eq!(store.prune_events(now + chrono::Duration::seconds(1)).await.unwrap(), 3);
    let log = store.event_log().await.unwrap();
    assert_eq!((log.last_seq, log.pruned_through), (events[2].seq, events[2].seq));
}

/// Many more concurrent hot reads than the hot pool has connections: every one is answered,
/// none waits for a connection that sits kept for the next read (a first version of the
/// typed pool kept every finished connection, and a read waiting on the pool waited until its
/// acquire timed out).
#[tokio::test]
async fn an_account_read_the_database_refuses_fails_only_its_own_caller_not_those_coalesced_with_it() {
    let store = Store::new(db().await);
    // PostgreSQL refuses NUL in text: the statement with that id fails, whoever else it answers.
    let reads: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let id = if i % 4 == 3 { format!("nul\u{0}{i}") } else { format!("user-{i}") };
            tokio::spawn(async move { (id.clone(), store.accounts(&id).await) })
        })
        .collect();
    for read in futures::future::join_all(reads).await {
        let (id, answer) = read.unwrap();
        if !id.contains('\0') {
            assert!(answer.unwrap_or_else(|e| panic!("{id}: {e:#}")).is_empty());
        }
    }
}

#[tokio::test]
async fn hot_reads_beyond_the_pool_size_are_all_answered_and_none_waits_on_a_kept_connection() {
    let db = db().await;
    let sql = match db.backend {
        bankgraph::db::Backend::Postgres => "select cast(1 as bigint) from pg_sleep(0.002)",
        bankgraph::db::Backend::Sqlite => "select cast(1 as bigint)",
    };
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let n = db
                        .read_with(move |mut conn| Box::pin(async move { Ok(conn.fetch_i64(sql, &[]).await?) }))
                        .await
                        .unwrap();
                    assert_eq!(n, 1);
                }
            })
        })
        .collect();
    // Well within the pool's 10 s acquire timeout: 1,280 reads of 2 ms on 8 connections.
    tokio::time::timeout(Duration::from_secs(8), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("every read is answered; none waits on a connection kept for later");
}

#[tokio::test]
async fn webhook_keys_are_kept_with_their_expiry_read_back_exactly_and_forgotten() {
    use bankgraph::plaid::webhook::{KeyShelf, StoredKey};
    use bankgraph::plaid::wire::Jwk;
    let url = fresh_database().await;
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let store = Store::new(db);
    let jwk = |kid: &str, expired_at: Option<i64>| Jwk {
        alg: "ES256".into(),
        crv: "P-256".into(),
        kid: kid.into(),
        kty: "EC".into(),
        key_use: "sig".into(),
        x: "x-coordinate".into(),
        y: "y-coordinate".into(),
        created_at: 1_700_000_000,
        expired_at,
    };
    let at = chrono::DateTime::from_timestamp(1_700_000_100, 0).unwrap();
    store.save(&StoredKey { jwk: jwk("k1", None), fetched_at: at }).await.unwrap();
    store.save(&StoredKey { jwk: jwk("k2", None), fetched_at: at }).await.unwrap();
    // A refresh after a rotation records Plaid's expiry on the same row.
    let later = at + chrono::Duration::hours(1);
    store.save(&StoredKey { jwk: jwk("k1", Some(1_700_003_000)), fetched_at: later }).await.unwrap();
    let mut keys = store.load().await.unwrap();
    keys.sort_by(|a, b| a.jwk.kid.cmp(&b.jwk.kid));
    assert_eq!(
        keys,
        vec![
            StoredKey { jwk: jwk("k1", Some(1_700_003_000)), fetched_at: later },
            StoredKey { jwk: jwk("k2", None), fetched_at: at },
        ]
    );
    let n = "select count(*) from webhook_keys where expired_at is not null";
    assert_eq!(TestApp::count_in(&url, n).await, 1, "expired_at is a column too");
    store.forget("k2").await.unwrap();
    assert_eq!(store.load().await.unwrap().len(), 1);
}
