//! Connection health: the check with Plaid that alone moves a connection back to `ACTIVE`,
//! and the reconciler (re-syncs what is stale, checks items, re-points webhook URLs, prunes).

use chrono::{DateTime, Utc};

use super::service::PlaidIdentity;
use super::store::{ConnectionRow, LiveConnection};
use crate::domain::ConnectionStatus;
use crate::jobs::JobKind;

impl PlaidIdentity {
    /// Asks Plaid whether an item is healthy; only its answer moves a connection to `ACTIVE`.
    pub(super) async fn confirm_health(&self, conn: &ConnectionRow) -> anyhow::Result<String> {
        let store = &self.inner.store;
        let token = self.open(conn)?;
        let now = Utc::now();
        match self.inner.plaid.item_get(&token).await {
            Ok(r) => {
                store.mark_item_checked(&conn.id, now).await?;
                match r.item.error {
                    None => {
                        store.set_status(&conn.id, ConnectionStatus::Active, None, now).await?;
                        self.queue_sync(&conn.id).await;
                        Ok("status ACTIVE (confirmed with Plaid)".into())
                    }
                    Some(err) => Ok(match self.apply_item_error(&conn.id, &err, now).await? {
                        Some(status) => format!("status {} (Plaid still reports {})", status.as_str(), err.error_code),
                        None => format!("status unchanged (Plaid reports {})", err.error_code),
                    }),
                }
            }
            Err(e) => match self.apply_call_error(&conn.id, &e, now).await? {
                Some(status) => {
                    store.mark_item_checked(&conn.id, now).await?;
                    Ok(format!("status {} (Plaid answered {})", status.as_str(), e.code().unwrap_or_default()))
                }
                None => Err(e.into()),
            },
        }
    }

    /// The reconciler: re-syncs connections not updated for too long, checks items with Plaid
    /// (marking those Plaid no longer knows), re-points webhook URLs, prunes old records.
    pub(super) async fn reconcile(&self) -> anyhow::Result<String> {
        let store = &self.inner.store;
        let now = Utc::now();
        let (mut synced, mut checked, mut repointed, mut failed) = (0, 0, 0, 0);
        // One bad connection (a token that does not open, a Plaid error, a storage error) is
        // logged and skipped: the others are still reconciled.
        for conn in store.all_live_connections().await? {
            match self.reconcile_one(&conn, now).await {
                Ok((s, c, r)) => {
                    synced += s;
                    checked += c;
                    repointed += r;
                }
                Err(e) => {
                    failed += 1;
                    tracing::error!(connection_id = %conn.row.id, error = %format!("{e:#}"), "reconciling a connection failed");
                }
            }
        }
        let pruned = self.inner.jobs.prune(now - chrono::Duration::days(7)).await?;
        store.prune_webhook_events(now - chrono::Duration::days(30)).await?;
        let events = store.prune_events(now - chrono::Duration::from_std(self.inner.schedule.event_retention)?).await?;
        Ok(format!(
            "{synced} syncs queued, {checked} items checked, {repointed} webhooks re-pointed, {failed} failed, \
             {pruned} jobs pruned, {events} events pruned"
        ))
    }

    /// Reconciles one connection: (syncs queued, items checked, webhooks re-pointed).
    async fn reconcile_one(&self, conn: &LiveConnection, now: DateTime<Utc>) -> anyhow::Result<(u32, u32, u32)> {
        let store = &self.inner.store;
        let schedule = &self.inner.schedule;
        let stale_sync = now - chrono::Duration::from_std(schedule.resync_after)?;
        let stale_check = now - chrono::Duration::from_std(schedule.item_check_interval)?;
        let (mut synced, mut checked, mut repointed) = (0, 0, 0);
        if !conn.row.status().blocks_data() && conn.synced_at.is_none_or(|t| t.0 < stale_sync) {
            self.inner.jobs.enqueue(JobKind::Sync, &conn.row.id, now).await?;
            synced += 1;
        }
        // A revoked item stays revoked: only a new link replaces it.
        if conn.row.status() == ConnectionStatus::Revoked || conn.checked_at.is_some_and(|t| t.0 >= stale_check) {
            return Ok((synced, checked, repointed));
        }
        checked += 1;
        let token = self.open(&conn.row)?;
        match self.inner.plaid.item_get(&token).await {
            Ok(r) => {
                store.mark_item_checked(&conn.row.id, now).await?;
                match &r.item.error {
                    Some(err) => {
                        self.apply_item_error(&conn.row.id, err, now).await?;
                    }
                    // Plaid reports the item healthy: a status an item error set is cleared.
                    None if matches!(conn.row.status(), ConnectionStatus::LoginRequired | ConnectionStatus::Error) => {
                        store.set_status(&conn.row.id, ConnectionStatus::Active, None, now).await?;
                        self.queue_sync(&conn.row.id).await;
                    }
                    None => {}
                }
                if let Some(want) = &self.inner.link.webhook_url
                    && r.item.webhook.as_deref() != Some(want.as_str())
                {
                    self.inner.plaid.item_webhook_update(&token, Some(want)).await?;
                    repointed += 1;
                }
            }
            Err(e) => match self.apply_call_error(&conn.row.id, &e, now).await? {
                Some(status) => {
                    tracing::warn!(connection_id = %conn.row.id, item_id = %conn.row.plaid_item_id, status = status.as_str(), error = %e, "item check: Plaid reports the item unusable");
                    store.mark_item_checked(&conn.row.id, now).await?;
                }
                None => tracing::warn!(connection_id = %conn.row.id, error = %e, "item check failed; next round"),
            },
        }
        Ok((synced, checked, repointed))
    }
}
