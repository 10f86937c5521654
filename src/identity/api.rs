//! The identity service as the gateway sees it: each call delegates to its flow.

use chrono::Utc;
use secrecy::SecretString;

use super::service::PlaidIdentity;
use super::{
    AccountFilter, CompletedLink, DeviceOs, EventWatch, IdentityService, LinkToken, NO_ACTIVE_CONNECTION,
    RefreshOutcome, TransactionFilter, TransactionPage, Watching,
};
use crate::domain::{Address, Balance, BankAccount, RemovalReason};
use crate::error::{AppError, AppResult};

#[async_trait::async_trait]
impl IdentityService for PlaidIdentity {
    async fn create_link_token(
        &self,
        user_id: &str,
        device_os: Option<DeviceOs>,
        platform_item_id: Option<&str>,
    ) -> AppResult<LinkToken> {
        self.link_token(user_id, device_os, platform_item_id).await
    }

    async fn complete_link(
        &self,
        user_id: &str,
        public_token: SecretString,
        platform_item_id: Option<String>,
    ) -> AppResult<CompletedLink> {
        self.complete_once(user_id, public_token, platform_item_id).await
    }

    async fn replayed_link(&self, user_id: &str, public_token: &SecretString) -> AppResult<Option<CompletedLink>> {
        self.replay(user_id, public_token).await
    }

    async fn accounts(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<BankAccount>> {
        let all = self.cached_accounts(user_id).await?;
        // Cache off and nobody sharing the read, the list is this request's own: no copy.
        let mut all = std::sync::Arc::unwrap_or_clone(all);
        all.retain(|a| {
            filter.plaid_item_id.as_ref().is_none_or(|v| *v == a.plaid_item_id)
                && filter.connection_id.as_ref().is_none_or(|v| *v == a.connection_id)
                && filter.account_id.as_ref().is_none_or(|v| *v == a.id)
        });
        Ok(all)
    }

    async fn balances(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<Balance>> {
        Ok(self.inner.store.latest_balances(user_id, &filter).await?)
    }

    async fn transactions(&self, user_id: &str, filter: TransactionFilter) -> AppResult<TransactionPage> {
        Ok(self.inner.store.transactions(user_id, &filter).await?)
    }

    async fn refresh(&self, user_id: &str) -> AppResult<RefreshOutcome> {
        self.refresh_balances(user_id).await
    }

    async fn add_address(&self, user_id: &str, connection_id: &str, address: Address) -> AppResult<String> {
        let store = &self.inner.store;
        let conn = store.connection(user_id, connection_id, false).await?.ok_or_else(|| {
            AppError::NotFound("No active bank institution found for the provided bankInstitutionAuthId.".into())
        })?;
        Ok(store.add_address(&conn.id, user_id, &address, Utc::now()).await?)
    }

    async fn remove_connection(
        &self,
        user_id: &str,
        connection_id: &str,
        reason: RemovalReason,
    ) -> AppResult<Vec<String>> {
        self.remove(user_id, connection_id, reason).await
    }

    async fn ready(&self) -> AppResult<()> {
        Ok(self.inner.store.ping().await?)
    }

    async fn connection_events(&self, user_id: &str, watch: EventWatch) -> AppResult<Watching> {
        let store = &self.inner.store;
        // Removed connections count: a client resuming after a removal still gets REMOVED.
        let by_id = match &watch.connection_id {
            Some(id) => Some(store.connection(user_id, id, true).await?.map(|c| c.id).ok_or_else(|| {
                AppError::NotFound("No bank institution found for the provided bankInstitutionAuthId.".into())
            })?),
            None => None,
        };
        let by_item = match &watch.plaid_item_id {
            Some(item) => Some(
                store
                    .connection_id_by_item(user_id, item)
                    .await?
                    .ok_or_else(|| AppError::NotFound(NO_ACTIVE_CONNECTION.into()))?,
            ),
            None => None,
        };
        let connection_id = match (by_id, by_item) {
            (Some(a), Some(b)) if a != b => {
                return Err(AppError::BadInput(
                    "platformItemId and bankInstitutionAuthId name different connections.".into(),
                ));
            }
            (a, b) => a.or(b),
        };
        self.inner.events.watch(user_id, connection_id, watch.after, watch.after_own).await
    }
}
