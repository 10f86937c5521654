//! Durable background work in the database: no in-memory-only queue. Safe with several
//! processes on one PostgreSQL (`for update skip locked`, a unique index on running jobs per
//! key), and the same code on SQLite in one process. A worker holds a job with a lease it
//! renews; a job whose process died is picked up again when its lease runs out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Any;
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;

use crate::db::{Db, parse_ts, ts};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Sync a connection's transactions (key: connection id).
    Sync,
    /// Process a stored webhook event (key: event id).
    Webhook,
    /// The periodic reconciler (key: "reconciler").
    Reconcile,
    /// Re-check a connection's health with Plaid (key: connection id).
    Health,
    /// Remove at Plaid an exchanged item that no connection holds (key: Plaid item id).
    RemoveItem,
    /// Re-seal access tokens sealed under an older key with the current one (key: "reseal").
    Reseal,
}

impl JobKind {
    pub const ALL: [JobKind; 6] =
        [JobKind::Sync, JobKind::Webhook, JobKind::Reconcile, JobKind::Health, JobKind::RemoveItem, JobKind::Reseal];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Sync => "sync",
            JobKind::Webhook => "webhook",
            JobKind::Reconcile => "reconcile",
            JobKind::Health => "health",
            JobKind::RemoveItem => "remove_item",
            JobKind::Reseal => "reseal",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sync" => JobKind::Sync,
            "webhook" => JobKind::Webhook,
            "reconcile" => JobKind::Reconcile,
            "health" => JobKind::Health,
            "remove_item" => JobKind::RemoveItem,
            "reseal" => JobKind::Reseal,
            _ => return None,
        })
    }
}

/// See [`Jobs::backlog`]. Kinds and states with no jobs are absent.
#[derive(Debug, Default)]
pub struct Backlog {
    /// (kind, state, jobs) for the states `queued`, `running` and `failed`.
    pub counts: Vec<(JobKind, String, i64)>,
    /// (kind, how long its oldest due job has waited).
    pub oldest_due: Vec<(JobKind, Duration)>,
}

impl Backlog {
    /// Sets the job gauges, writing 0 for every kind and state with no jobs, so a drained
    /// queue reads 0 rather than its last value.
    pub fn record(&self) {
        for kind in JobKind::ALL {
            for state in ["queued", "running", "failed"] {
                let n = self.counts.iter().find(|(k, s, _)| *k == kind && s == state).map_or(0, |c| c.2);
                metrics::gauge!(crate::metrics::JOBS, "kind" => kind.as_str(), "state" => state).set(n as f64);
            }
            let waited = self.oldest_due.iter().find(|(k, _)| *k == kind).map_or(0.0, |o| o.1.as_secs_f64());
            metrics::gauge!(crate::metrics::JOBS_OLDEST_DUE_SECONDS, "kind" => kind.as_str()).set(waited);
        }
    }
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub key: String,
    /// Including this run.
    pub attempts: i64,
}

/// How a job's run ended.
pub enum Outcome {
    Done,
    /// Try again later (with backoff), up to the attempt limit.
    Retry(String),
    /// Give up now.
    Fail(String),
}

/// The queue.
#[derive(Clone)]
pub struct Jobs {
    db: Db,
    worker_id: String,
    lease: Duration,
    notify: Arc<Notify>,
    max_attempts: i64,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("worker_id", &self.worker_id).finish_non_exhaustive()
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

impl Jobs {
    pub fn new(db: Db, lease: Duration) -> Self {
        Jobs {
            db,
            worker_id: format!("{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]),
            lease,
            notify: Arc::new(Notify::new()),
            max_attempts: 10,
        }
    }

    /// This process's worker id (in `jobs.locked_by`).
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Queues a job unless one for the same kind and key is already queued. Returns whether a
    /// new one was queued.
    pub async fn enqueue(&self, kind: JobKind, key: &str, run_after: DateTime<Utc>) -> anyhow::Result<bool> {
        let mut conn = self.db.write.acquire().await?;
        let queued = enqueue_on(&mut conn, kind, key, run_after).await?;
        self.notify.notify_waiters();
        Ok(queued)
    }

    /// Queues a job inside a caller's transaction (so the job exists exactly when its data does).
    pub async fn enqueue_in(
        tx: &mut sqlx::Transaction<'_, Any>,
        kind: JobKind,
        key: &str,
        run_after: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        enqueue_on(&mut *tx, kind, key, run_after).await
    }

    /// Makes a queued job of this kind and key due now (or queues one), and wakes the workers.
    pub async fn expedite(&self, kind: JobKind, key: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        let moved = sqlx::query(
            "update jobs set run_after = $1, updated_at = $1 where kind = $2 and dedupe_key = $3 and state = 'queued'",
        )
        .bind(ts(now))
        .bind(kind.as_str())
        .bind(key)
        .execute(&self.db.write)
        .await?
        .rows_affected();
        if moved == 0 {
            self.enqueue(kind, key, now).await?;
        }
        self.notify.notify_waiters();
        Ok(())
    }

    /// Wakes local workers (after `enqueue_in` commits).
    pub fn wake(&self) {
        self.notify.notify_waiters();
    }

    /// Puts jobs whose lease ran out (their process died) back in the queue.
    pub async fn reap(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let at = ts(now);
        // A newer queued twin already exists: the expired run is superseded.
        let superseded = sqlx::query(
            "update jobs set state = 'failed', last_error = 'lease expired; superseded by a queued job', \
             finished_at = $1, updated_at = $1 where state = 'running' and locked_until < $1 and exists \
             (select 1 from jobs q where q.kind = jobs.kind and q.dedupe_key = jobs.dedupe_key and q.state = 'queued')",
        )
        .bind(&at)
        .execute(&self.db.write)
        .await?
        .rows_affected();
        let requeued = sqlx::query(
            "update jobs set state = 'queued', run_after = $1, locked_by = null, locked_until = null, \
             last_error = 'lease expired (the worker stopped)', updated_at = $1 \
             where state = 'running' and locked_until < $1",
        )
        .bind(&at)
        .execute(&self.db.write)
        .await;
        let requeued = match requeued {
            Ok(r) => r.rows_affected(),
            // Another process queued a twin in between; the next pass handles it.
            Err(e) if is_unique_violation(&e) => 0,
            Err(e) => return Err(e.into()),
        };
        if superseded + requeued > 0 {
            tracing::warn!(superseded, requeued, "reclaimed jobs whose worker stopped");
        }
        Ok(superseded + requeued)
    }

    /// Claims the next ready job whose key has no running job.
    pub async fn claim(&self, now: DateTime<Utc>) -> anyhow::Result<Option<Job>> {
        let dialect = self.db.dialect();
        let lock = dialect.skip_locked("j");
        let at = ts(now);
        let until = ts(now + chrono::Duration::from_std(self.lease)?);
        let db_now = dialect.now_text();
        let sql = format!(
            "update jobs set state = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1, \
             started_at = {db_now}, updated_at = $3 where state = 'queued' and id = (select j.id from jobs j \
             where j.state = 'queued' and j.run_after <= $3 and not exists (select 1 from jobs r \
             where r.kind = j.kind and r.dedupe_key = j.dedupe_key and r.state = 'running') \
             order by j.run_after, j.created_at limit 1{lock}) \
             returning id, kind, dedupe_key, cast(attempts as bigint) as attempts"
        );
        let row = sqlx::query_as::<_, (String, String, String, i64)>(&sql)
            .bind(&self.worker_id)
            .bind(&until)
            .bind(&at)
            .fetch_optional(&self.db.write)
            .await;
        let row = match row {
            Ok(r) => r,
            // Another process started the same key between our read and write.
            Err(e) if is_unique_violation(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some((id, kind, key, attempts)) = row else { return Ok(None) };
        Ok(Some(Job {
            id,
            kind: JobKind::parse(&kind).ok_or_else(|| anyhow::anyhow!("unknown job kind {kind}"))?,
            key,
            attempts,
        }))
    }

    /// Extends the lease of a running job. `false` when this worker no longer holds it (the
    /// lease ran out and the job was taken back).
    pub async fn heartbeat(&self, job: &Job, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let until = ts(now + chrono::Duration::from_std(self.lease)?);
        let held =
            sqlx::query("update jobs set locked_until = $1 where id = $2 and locked_by = $3 and state = 'running'")
                .bind(&until)
                .bind(&job.id)
                .bind(&self.worker_id)
                .execute(&self.db.write)
                .await?
                .rows_affected();
        Ok(held == 1)
    }

    /// Records how a run ended, if this worker still holds the job (`false` when its lease was
    /// lost: the job belongs to whoever took it back, and this run's outcome is not recorded).
    pub async fn finish(&self, job: &Job, outcome: Outcome, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let at = ts(now);
        let (state, error, run_after) = match outcome {
            Outcome::Done => ("done", None, None),
            Outcome::Retry(e) if job.attempts < self.max_attempts => {
                let wait = backoff(job.attempts);
                ("queued", Some(e), Some(ts(now + chrono::Duration::from_std(wait)?)))
            }
            Outcome::Retry(e) | Outcome::Fail(e) => ("failed", Some(e), None),
        };
        let sql = format!(
            "update jobs set state = $1, last_error = $2, run_after = coalesce($3, run_after), \
             finished_at = case when $1 = 'queued' then null else {} end, locked_until = null, \
             updated_at = $4 where id = $5 and state = 'running' and locked_by = $6",
            self.db.dialect().now_text()
        );
        let done = sqlx::query(&sql)
            .bind(state)
            .bind(error.as_deref())
            .bind(run_after.as_deref())
            .bind(&at)
            .bind(&job.id)
            .bind(&self.worker_id)
            .execute(&self.db.write)
            .await;
        match done {
            Ok(r) => Ok(r.rows_affected() == 1),
            // A retry would collide with a newer queued twin, which does the work anyway.
            Err(e) if is_unique_violation(&e) => {
                let n = sqlx::query(
                    "update jobs set state = 'failed', last_error = $1, finished_at = $2, locked_by = null, \
                     locked_until = null, updated_at = $2 where id = $3 and state = 'running' and locked_by = $4",
                )
                .bind(format!("{}; superseded by a queued job", error.unwrap_or_default()))
                .bind(&at)
                .bind(&job.id)
                .bind(&self.worker_id)
                .execute(&self.db.write)
                .await?
                .rows_affected();
                Ok(n == 1)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The shared queue as it stands (every process of a deployment sees the same one): jobs
    /// by kind and state, and how long the oldest job that is due has waited, by kind.
    pub async fn backlog(&self, now: DateTime<Utc>) -> anyhow::Result<Backlog> {
        let mut b = Backlog::default();
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select kind, state, cast(count(*) as bigint) as n from jobs \
             where state in ('queued', 'running', 'failed') group by kind, state",
        )
        .fetch_all(&self.db.read)
        .await?;
        for (kind, state, n) in rows {
            if let Some(kind) = JobKind::parse(&kind) {
                b.counts.push((kind, state, n));
            }
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "select kind, min(run_after) as oldest from jobs where state = 'queued' and run_after <= $1 group by kind",
        )
        .bind(ts(now))
        .fetch_all(&self.db.read)
        .await?;
        for (kind, oldest) in rows {
            if let Some(kind) = JobKind::parse(&kind) {
                let waited = now - parse_ts(&oldest)?;
                b.oldest_due.push((kind, waited.to_std().unwrap_or_default()));
            }
        }
        Ok(b)
    }

    /// Deletes finished jobs older than `before`.
    pub async fn prune(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        Ok(sqlx::query("delete from jobs where state in ('done', 'failed') and updated_at < $1")
            .bind(ts(before))
            .execute(&self.db.write)
            .await?
            .rows_affected())
    }

    /// Counts jobs by state (for tests and metrics).
    pub async fn counts(&self) -> anyhow::Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "select kind, state, cast(count(*) as bigint) as n from jobs group by kind, state order by kind, state",
        )
        .fetch_all(&self.db.read)
        .await?)
    }

    /// When a job last finished, for a kind and key (for tests and health checks).
    pub async fn last_finished(&self, kind: JobKind, key: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let last: Option<String> = sqlx::query_scalar(
            "select max(finished_at) from jobs where kind = $1 and dedupe_key = $2 and state = 'done'",
        )
        .bind(kind.as_str())
        .bind(key)
        .fetch_one(&self.db.read)
        .await?;
        last.map(|s| parse_ts(&s)).transpose()
    }

    /// Runs `workers` workers until `stop` turns true; each finishes its current job first.
    pub fn spawn_workers(&self, workers: usize, handler: Handler, stop: watch::Receiver<bool>, tracker: &TaskTracker) {
        for n in 0..workers {
            let (jobs, handler, mut stop) = (self.clone(), handler.clone(), stop.clone());
            tracker.spawn(async move {
                let mut last_reap = tokio::time::Instant::now() - Duration::from_secs(3600);
                loop {
                    if *stop.borrow() {
                        break;
                    }
                    if n == 0 && last_reap.elapsed() > (jobs.lease / 4).min(Duration::from_secs(5)) {
                        last_reap = tokio::time::Instant::now();
                        if let Err(e) = jobs.reap(Utc::now()).await {
                            tracing::warn!(error = %format!("{e:#}"), "job reaping failed");
                        }
                    }
                    match jobs.claim(Utc::now()).await {
                        Ok(Some(job)) => jobs.run(job, &handler).await,
                        Ok(None) => {
                            let notified = jobs.notify.notified();
                            tokio::select! {
                                _ = notified => {}
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                                _ = stop.changed() => {}
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "claiming a job failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
    }

    async fn run(&self, job: Job, handler: &Handler) {
        let span = tracing::info_span!("job", kind = job.kind.as_str(), key = %job.key, attempt = job.attempts);
        // Renew the lease while the job runs; if it is lost (this worker stalled past it and
        // another took the job back), stop working on it at once: two runs of one job must
        // never overlap.
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let beat = {
            let (jobs, job) = (self.clone(), job.clone());
            let every = self.lease / 3;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match jobs.heartbeat(&job, Utc::now()).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = lost_tx.send(());
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "job heartbeat failed"),
                    }
                }
            })
        };
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            o = tracing::Instrument::instrument(handler(job.clone()), span) => o,
            Ok(()) = lost_rx => {
                beat.abort();
                metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => job.kind.as_str(), "outcome" => "lease_lost").increment(1);
                tracing::warn!(kind = job.kind.as_str(), key = %job.key, "job lease lost; stopped, the job is another worker's now");
                return;
            }
        };
        let label = match &outcome {
            Outcome::Done => "done",
            Outcome::Retry(_) => "retry",
            Outcome::Fail(_) => "failed",
        };
        metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => job.kind.as_str(), "outcome" => label).increment(1);
        metrics::histogram!(crate::metrics::JOB_SECONDS, "kind" => job.kind.as_str())
            .record(started.elapsed().as_secs_f64());
        beat.abort();
        if let Outcome::Retry(e) | Outcome::Fail(e) = &outcome {
            tracing::warn!(kind = job.kind.as_str(), key = %job.key, attempt = job.attempts, error = %e, "job failed");
        }
        match self.finish(&job, outcome, Utc::now()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job = %job.id, "job lease lost before its end was recorded; its new owner records it")
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), job = %job.id, "could not record a job's end; its lease will expire")
            }
        }
    }
}

/// What runs a job.
pub type Handler = Arc<dyn Fn(Job) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

async fn enqueue_on(
    conn: &mut sqlx::AnyConnection,
    kind: JobKind,
    key: &str,
    run_after: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let at = ts(Utc::now());
    let n = sqlx::query(
        "insert into jobs (id, kind, dedupe_key, state, attempts, run_after, created_at, updated_at) \
         values ($1, $2, $3, 'queued', 0, $4, $5, $5) \
         on conflict (kind, dedupe_key) where state = 'queued' do nothing",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(kind.as_str())
    .bind(key)
    .bind(ts(run_after))
    .bind(&at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// 5 s, 10 s, 20 s, … capped at 30 minutes.
fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    Duration::from_secs(5u64.saturating_mul(1 << exp.min(16))).min(Duration::from_secs(1800))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(3), Duration::from_secs(20));
        assert_eq!(backoff(20), Duration::from_secs(1800));
    }
}
