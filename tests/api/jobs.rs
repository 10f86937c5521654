//! The job queue's leases, on both databases.

use std::time::Duration;

use bankgraph::db::Db;
use bankgraph::jobs::{JobKind, Jobs, Outcome};
use chrono::Utc;

use crate::helpers::*;

#[tokio::test]
async fn a_worker_that_lost_its_lease_can_neither_renew_nor_finish_the_job() {
    let url = fresh_database().await;
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let (a, b) = (Jobs::new(db.clone(), Duration::from_secs(10)), Jobs::new(db.clone(), Duration::from_secs(10)));
    let now = Utc::now();
    a.enqueue(JobKind::Sync, "conn-1", now).await.unwrap();
    let job = a.claim(now).await.unwrap().expect("a claims it");
    assert!(a.heartbeat(&job, now).await.unwrap(), "held");
    // A stalls past its lease; B takes the job back and runs it.
    let later = now + chrono::Duration::seconds(30);
    assert_eq!(b.reap(later).await.unwrap(), 1);
    let taken = b.claim(later).await.unwrap().expect("b claims it");
    assert_eq!(taken.id, job.id);
    assert!(!a.heartbeat(&job, later).await.unwrap(), "a's lease is gone");
    assert!(!a.finish(&job, Outcome::Done, later).await.unwrap(), "a's outcome is not recorded");
    let state: String =
        sqlx::query_scalar("select state from jobs where id = $1").bind(&job.id).fetch_one(&db.read).await.unwrap();
    assert_eq!(state, "running", "still b's");
    assert!(b.finish(&taken, Outcome::Done, later).await.unwrap());
}
