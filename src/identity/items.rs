//! Items at Plaid that must not be left billed: removal of a connection, and the durable
//! clean-up of an exchanged item that no connection came to hold.

use chrono::Utc;
use secrecy::SecretString;

use super::service::PlaidIdentity;
use crate::domain::RemovalReason;
use crate::error::{AppError, AppResult};
use crate::jobs::{JobKind, Outcome};
use crate::plaid::ErrorClass;

/// How long after an exchange an item no connection holds is removed at Plaid. A completion
/// takes seconds; this leaves room for a slow one without racing it.
pub(super) const CLEANUP_AFTER: chrono::Duration = chrono::Duration::minutes(10);

impl PlaidIdentity {
    /// Removes the caller's connection: the item at Plaid first, then the connection is marked
    /// removed (its history kept, hidden). Removing a removed connection does nothing.
    pub(super) async fn remove(
        &self,
        user_id: &str,
        connection_id: &str,
        reason: RemovalReason,
    ) -> AppResult<Vec<String>> {
        let store = &self.inner.store;
        let conn = store.connection(user_id, connection_id, true).await?.ok_or_else(|| {
            AppError::NotFound("No bank institution found for the provided bankInstitutionAuthId.".into())
        })?;
        if conn.removed_at.is_some() {
            return Ok(store.account_ids(&conn.id).await?);
        }
        let token = self.open_token(&conn)?;
        match self.inner.plaid.item_remove(&token).await {
            Ok(_) => {}
            // Plaid no longer knows the item: nothing left to stop.
            Err(e) if e.class() == ErrorClass::ItemGone => {}
            Err(e) => return Err(e.into()),
        }
        store.mark_removed(&conn.id, reason, Utc::now()).await?;
        tracing::info!(connection_id = %conn.id, item_id = %conn.plaid_item_id, reason = reason.as_str(), "connection removed");
        Ok(store.account_ids(&conn.id).await?)
    }

    /// Makes the removal job of an exchanged item due now, recording the item first if it
    /// was not recorded. When even that fails, the item is left to the reconciler's log.
    pub(super) async fn schedule_item_cleanup(
        &self,
        user_id: &str,
        token: &SecretString,
        item_id: &str,
        now: chrono::DateTime<Utc>,
    ) {
        let store = &self.inner.store;
        let recorded = match store.pending_item(item_id).await {
            Ok(Some(_)) => Ok(()),
            _ => match self.inner.cipher.seal(token, user_id, item_id) {
                Ok(sealed) => store.record_exchanged_item(user_id, item_id, &sealed, now, now).await,
                Err(e) => Err(e),
            },
        };
        let scheduled = match recorded {
            Ok(()) => self.inner.jobs.expedite(JobKind::RemoveItem, item_id, now).await,
            Err(e) => Err(e),
        };
        if let Err(e) = scheduled {
            tracing::error!(item_id = %item_id, error = %format!("{e:#}"),
                "ALERT: an exchanged item could not be scheduled for removal at Plaid; remove it by hand");
        }
    }

    /// The `remove_item` job: removes at Plaid an exchanged item that no connection holds.
    pub(super) async fn remove_pending_item(&self, item_id: &str) -> Outcome {
        let store = &self.inner.store;
        let pending = match store.pending_item(item_id).await {
            Ok(Some(p)) => p,
            Ok(None) => return Outcome::Done,
            Err(e) => return Outcome::Retry(format!("{e:#}")),
        };
        match store.item_is_held(item_id).await {
            Ok(true) => {
                return match store.forget_pending_item(item_id).await {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Retry(format!("{e:#}")),
                };
            }
            Ok(false) => {}
            Err(e) => return Outcome::Retry(format!("{e:#}")),
        }
        let (user_id, sealed) = pending;
        let token = match self.inner.cipher.open(&sealed, &user_id, item_id) {
            Ok(t) => t,
            Err(e) => return Outcome::Retry(format!("{e:#}")),
        };
        match self.inner.plaid.item_remove(&token).await {
            Ok(_) => tracing::warn!(item_id = %item_id, "an exchanged item no connection holds was removed at Plaid"),
            Err(e) if e.class() == ErrorClass::ItemGone => {}
            Err(e) => return Outcome::Retry(format!("{e}")),
        }
        match store.forget_pending_item(item_id).await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Retry(format!("{e:#}")),
        }
    }
}
