//! Transaction sync with `/transactions/sync`: page by page, each page written with its
//! cursor in one database transaction, so a crash resumes where it stopped and memory stays
//! bounded. `TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION` restarts from the cursor the
//! pagination loop began with (saved with the last page of the previous loop), as Plaid
//! requires; pages re-applied after a restart change nothing twice. At most one sync per
//! connection runs at a time (the job queue across processes, a lock within one).

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;

use super::service::PlaidIdentity;
use crate::domain::SyncPage;
use crate::plaid::ErrorClass;

/// Plaid's maximum page.
const PAGE: u32 = 500;
/// Restarts after `TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION` before giving up for now.
const MAX_RESTARTS: u32 = 5;
/// Rows written between two refreshes of the planner's statistics during a sync.
const STATISTICS_EVERY: usize = 20_000;

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub pages: u32,
    pub upserted: usize,
    pub posted: usize,
    pub removed: usize,
    pub restarts: u32,
}

impl PlaidIdentity {
    fn sync_lock(&self, connection_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.sync_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(connection_id.to_string()).or_default().clone()
    }

    /// Brings a connection's stored transactions up to date with Plaid.
    #[tracing::instrument(name = "transactions.sync", skip(self))]
    pub async fn sync_connection(&self, connection_id: &str) -> anyhow::Result<SyncReport> {
        let lock = self.sync_lock(connection_id);
        let _guard = lock.lock().await;
        let store = &self.inner.store;
        let mut report = SyncReport::default();
        let mut restart_from: Option<Option<String>> = None;
        let mut since_statistics = 0usize;
        'restart: loop {
            let Some(conn) = store.connection_by_id(connection_id).await? else {
                return Ok(report);
            };
            if conn.removed_at.is_some() || conn.status().blocks_data() {
                return Ok(report);
            }
            let token = self.open(&conn)?;
            // Resume from the last saved page, or after a mutation from the loop's start.
            let mut cursor = match restart_from.take() {
                Some(loop_start) => loop_start,
                None => conn.transactions_cursor.clone(),
            };
            loop {
                match self.inner.plaid.transactions_sync(&token, cursor.as_deref(), PAGE).await {
                    Ok(page) => {
                        let counts = store
                            .apply_sync_page(&conn, &SyncPage::from(&page), Utc::now())
                            .await
                            .context("saving a sync page")?;
                        report.pages += 1;
                        metrics::counter!(crate::metrics::SYNC_TRANSACTIONS, "change" => "upserted")
                            .increment(counts.upserted as u64);
                        metrics::counter!(crate::metrics::SYNC_TRANSACTIONS, "change" => "posted")
                            .increment(counts.posted as u64);
                        metrics::counter!(crate::metrics::SYNC_TRANSACTIONS, "change" => "removed")
                            .increment(counts.removed as u64);
                        report.upserted += counts.upserted;
                        since_statistics += counts.upserted;
                        if since_statistics >= STATISTICS_EVERY {
                            since_statistics = 0;
                            store.refresh_statistics().await?;
                        }
                        report.posted += counts.posted;
                        report.removed += counts.removed;
                        if !page.has_more {
                            if report.upserted >= 1_000 {
                                store.refresh_statistics().await?;
                            }
                            tracing::info!(?report, "transactions synced");
                            return Ok(report);
                        }
                        cursor = Some(page.next_cursor);
                    }
                    Err(e) if e.class() == ErrorClass::RestartSync && report.restarts < MAX_RESTARTS => {
                        report.restarts += 1;
                        metrics::counter!(crate::metrics::SYNC_RESTARTS).increment(1);
                        tracing::info!(
                            restarts = report.restarts,
                            "data changed during pagination; restarting the loop from its first cursor"
                        );
                        restart_from = Some(store.loop_cursor(connection_id).await?);
                        continue 'restart;
                    }
                    Err(e) => {
                        self.apply_call_error(&conn.id, &e, Utc::now()).await?;
                        return Err(anyhow::Error::new(e).context("transactions sync"));
                    }
                }
            }
        }
    }
}
