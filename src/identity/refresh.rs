//! `refreshPlaidBankConnections`: balances now from Plaid for each usable connection, at
//! most once per user per `REFRESH_INTERVAL_SECONDS`, a sync queued behind each.

use chrono::Utc;

use super::service::PlaidIdentity;
use super::store::{AccountFilter, ConnectionRow};
use super::{RefreshOutcome, RefreshStatus, VerifyMember, incoming};
use crate::domain::BalanceTrigger;
use crate::error::{AppError, AppResult};

impl PlaidIdentity {
    pub(super) async fn refresh_balances(&self, user_id: &str) -> AppResult<RefreshOutcome> {
        let store = &self.inner.store;
        let conns = store.connections(user_id).await?;
        let verify_of = |conns: &[ConnectionRow]| -> Vec<VerifyMember> {
            conns
                .iter()
                .filter(|c| c.status().needs_user())
                .map(|c| VerifyMember { plaid_item_id: c.plaid_item_id.clone(), connection_id: c.id.clone() })
                .collect()
        };
        if conns.is_empty() {
            return Ok(RefreshOutcome {
                status: RefreshStatus::NoConnections,
                balances: vec![],
                verify: vec![],
                retry_after_seconds: None,
            });
        }
        let interval = chrono::Duration::from_std(self.inner.schedule.refresh_interval).map_err(AppError::internal)?;
        if let Err(wait) = store.take_refresh_slot(user_id, Utc::now(), interval).await? {
            return Ok(RefreshOutcome {
                status: RefreshStatus::Throttled,
                balances: store.latest_balances(user_id, &AccountFilter::default()).await?,
                verify: verify_of(&conns),
                retry_after_seconds: Some(wait),
            });
        }
        let runs = conns.iter().filter(|c| !c.status().blocks_data()).map(|c| self.refresh_one(c));
        let results = futures::future::join_all(runs).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let blocked = conns.iter().filter(|c| c.status().blocks_data()).count();
        // Statuses may have changed during the refresh.
        let conns = store.connections(user_id).await?;
        Ok(RefreshOutcome {
            status: if failed + blocked == 0 { RefreshStatus::Refreshed } else { RefreshStatus::Partial },
            balances: store.latest_balances(user_id, &AccountFilter::default()).await?,
            verify: verify_of(&conns),
            retry_after_seconds: None,
        })
    }

    async fn refresh_one(&self, conn: &ConnectionRow) -> Result<(), ()> {
        let token = self.open(conn).map_err(|e| {
            tracing::error!(connection_id = %conn.id, error = %e, "cannot open access token");
        })?;
        match self.inner.plaid.accounts_get(&token, None).await {
            Ok(r) => {
                if let Err(e) = self
                    .inner
                    .store
                    .store_balances(conn, &incoming::accounts(&r.accounts), BalanceTrigger::Refresh, Utc::now())
                    .await
                {
                    tracing::error!(connection_id = %conn.id, error = %format!("{e:#}"), "storing balances failed");
                    return Err(());
                }
                self.queue_sync(&conn.id).await;
                Ok(())
            }
            Err(e) => {
                if let Err(se) = self.apply_call_error(&conn.id, &e, Utc::now()).await {
                    tracing::error!(connection_id = %conn.id, error = %format!("{se:#}"), "could not record the connection's status");
                }
                tracing::warn!(connection_id = %conn.id, error = %e, "refresh failed");
                Err(())
            }
        }
    }
}
