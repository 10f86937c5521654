//! The job worker: what each durable job does, and the reconciler's schedule.

use std::sync::Arc;

use chrono::Utc;

use super::service::PlaidIdentity;
use crate::jobs::{Handler, Job, JobKind, Outcome};
use crate::plaid::ErrorClass;

impl PlaidIdentity {
    /// Starts `workers` job workers and schedules the reconciler; they stop when `stop` turns
    /// true, finishing the job in hand.
    pub async fn start_workers(&self, workers: usize, stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
        let this = self.clone();
        let handler: Handler = Arc::new(move |job| {
            let this = this.clone();
            Box::pin(async move { this.run_job(job).await })
        });
        self.inner.jobs.spawn_workers(workers, handler, stop, &self.inner.tasks);
        self.inner.jobs.enqueue(JobKind::Reconcile, "reconciler", Utc::now()).await?;
        Ok(())
    }

    /// Runs one job.
    async fn run_job(&self, job: Job) -> Outcome {
        match job.kind {
            JobKind::Sync => match self.sync_connection(&job.key).await {
                Ok(_) => Outcome::Done,
                Err(e) => {
                    let class = e.downcast_ref::<crate::plaid::PlaidError>().map(|p| p.class());
                    match class {
                        // The connection's status now says what the user must do; a relink re-syncs.
                        Some(ErrorClass::UserActionRequired) | Some(ErrorClass::ItemGone) => {
                            Outcome::Fail(format!("{e:#}"))
                        }
                        _ => Outcome::Retry(format!("{e:#}")),
                    }
                }
            },
            JobKind::Webhook => self.process_event(&job.key).await,
            JobKind::RemoveItem => self.remove_pending_item(&job.key).await,
            JobKind::Reseal => match self.reseal_all().await {
                Ok(n) => {
                    tracing::info!(resealed = n, key_id = %self.inner.cipher.current_key_id(), "access tokens re-sealed");
                    Outcome::Done
                }
                Err(e) => Outcome::Retry(format!("{e:#}")),
            },
            JobKind::Health => match self.inner.store.connection_by_id(&job.key).await {
                Ok(Some(conn)) if conn.removed_at.is_none() => match self.confirm_health(&conn).await {
                    Ok(outcome) => {
                        tracing::info!(connection_id = %conn.id, %outcome, "health checked");
                        Outcome::Done
                    }
                    Err(e) => Outcome::Retry(format!("{e:#}")),
                },
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Retry(format!("{e:#}")),
            },
            JobKind::Reconcile => {
                let outcome = match self.reconcile().await {
                    Ok(summary) => {
                        tracing::info!(%summary, "reconciler ran");
                        Outcome::Done
                    }
                    Err(e) => Outcome::Retry(format!("{e:#}")),
                };
                let every = chrono::Duration::from_std(self.inner.schedule.reconcile_interval)
                    .unwrap_or(chrono::Duration::hours(1));
                if let Err(e) = self.inner.jobs.enqueue(JobKind::Reconcile, "reconciler", Utc::now() + every).await {
                    tracing::error!(error = %format!("{e:#}"), "could not schedule the next reconciler run");
                }
                outcome
            }
        }
    }
}
