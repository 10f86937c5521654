//! Plaid webhooks: verified before anything is parsed, stored durably with their processing
//! job in one transaction, acknowledged; processed by a job that applies what Plaid said.
//! Unverifiable requests are stored nowhere (a log line and a counter).

use chrono::Utc;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::service::PlaidIdentity;
use crate::db::{parse_ts, ts};
use crate::domain::ConnectionStatus;
use crate::jobs::{JobKind, Jobs, Outcome};
use crate::plaid::{ErrorClass, WebhookRejection};

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("rejected: {0}")]
    Rejected(#[from] WebhookRejection),
    #[error("the verified body is not a Plaid webhook")]
    Malformed,
    #[error("could not store the webhook: {0:#}")]
    Storage(anyhow::Error),
}

/// What happened to an accepted webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Stored and queued for processing.
    New(String),
    /// A redelivery of an event already stored.
    Redelivery(String),
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

impl PlaidIdentity {
    /// Verifies, stores and queues one webhook request (headers and raw body as received).
    pub async fn receive_webhook(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<Received, WebhookError> {
        if let Err(rejection) = self.inner.verifier.verify(headers, body).await {
            tracing::warn!(reason = rejection.label(), "webhook rejected");
            metrics::counter!(crate::metrics::WEBHOOKS_REJECTED, "reason" => rejection.label()).increment(1);
            return Err(rejection.into());
        }
        let envelope: Value = serde_json::from_slice(body).map_err(|_| WebhookError::Malformed)?;
        let (wtype, code) = (text(&envelope, "webhook_type"), text(&envelope, "webhook_code"));
        if wtype.is_none() || code.is_none() {
            return Err(WebhookError::Malformed);
        }
        let item_id = text(&envelope, "item_id");
        let body_text = String::from_utf8(body.to_vec()).map_err(|_| WebhookError::Malformed)?;
        let now = Utc::now();
        let sha = hex::encode(Sha256::digest(body));
        let hour = now.timestamp() / 3600;
        let store = || async {
            let mut tx = self.inner.store.db.write.begin().await?;
            let id = uuid::Uuid::new_v4().to_string();
            let at = ts(now);
            let inserted = sqlx::query(
                "insert into webhook_events (id, body_sha256, received_hour, body, webhook_type, webhook_code, item_id, \
                 received_at, last_received_at, deliveries) values ($1, $2, $3, $4, $5, $6, $7, $8, $8, 1) \
                 on conflict (body_sha256, received_hour) do nothing",
            )
            .bind(&id)
            .bind(&sha)
            .bind(hour)
            .bind(&body_text)
            .bind(wtype.as_deref())
            .bind(code.as_deref())
            .bind(item_id.as_deref())
            .bind(&at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let received = if inserted == 1 {
                Jobs::enqueue_in(&mut tx, JobKind::Webhook, &id, now).await?;
                Received::New(id)
            } else {
                let row = sqlx::query(
                    "update webhook_events set deliveries = deliveries + 1, last_received_at = $1 \
                     where body_sha256 = $2 and received_hour = $3 returning id",
                )
                .bind(&at)
                .bind(&sha)
                .bind(hour)
                .fetch_one(&mut *tx)
                .await?;
                Received::Redelivery(sqlx::Row::try_get(&row, "id")?)
            };
            tx.commit().await?;
            anyhow::Ok(received)
        };
        let received = store().await.map_err(WebhookError::Storage)?;
        let delivery = if matches!(received, Received::New(_)) { "new" } else { "redelivery" };
        metrics::counter!(crate::metrics::WEBHOOKS_RECEIVED,
            "webhook_type" => wtype.clone().unwrap_or_default(),
            "webhook_code" => code.clone().unwrap_or_default(),
            "delivery" => delivery)
        .increment(1);
        self.inner.jobs.wake();
        match &received {
            Received::New(id) => {
                tracing::info!(event = %id, webhook_type = ?wtype, webhook_code = ?code, item_id = ?item_id, "webhook stored")
            }
            Received::Redelivery(id) => {
                tracing::info!(event = %id, webhook_code = ?code, "webhook redelivery counted, not processed again");
                // An identical body may still be a new notice from Plaid (the same code for the
                // same item again). It is not processed twice, but the item's state is made
                // current: a sync for a transactions notice, a health check for an item notice.
                // Both are idempotent and coalesced with any already queued.
                let follow_up = match wtype.as_deref() {
                    Some("TRANSACTIONS") => Some(JobKind::Sync),
                    Some("ITEM") => Some(JobKind::Health),
                    _ => None,
                };
                if let (Some(kind), Some(item)) = (follow_up, &item_id)
                    && let Ok(Some(conn)) = self.inner.store.connection_by_plaid_item(item).await
                {
                    let _ = self.inner.jobs.enqueue(kind, &conn.id, now).await;
                }
            }
        }
        Ok(received)
    }

    /// Applies one stored webhook event. Idempotent: running it again changes nothing more.
    pub(super) async fn process_event(&self, event_id: &str) -> Outcome {
        match self.apply_event(event_id).await {
            Ok(outcome) => {
                let _ = sqlx::query("update webhook_events set processed_at = $1, outcome = $2 where id = $3")
                    .bind(ts(Utc::now()))
                    .bind(&outcome)
                    .bind(event_id)
                    .execute(&self.inner.store.db.write)
                    .await;
                Outcome::Done
            }
            Err(e) => Outcome::Retry(format!("{e:#}")),
        }
    }

    async fn apply_event(&self, event_id: &str) -> anyhow::Result<String> {
        let store = &self.inner.store;
        let row = sqlx::query("select body from webhook_events where id = $1")
            .bind(event_id)
            .fetch_optional(&store.db.read)
            .await?;
        let Some(row) = row else {
            return Ok("ignored: event not found".into());
        };
        let body: String = sqlx::Row::try_get(&row, "body")?;
        let e: Value = serde_json::from_str(&body)?;
        let wtype = text(&e, "webhook_type").unwrap_or_default();
        let code = text(&e, "webhook_code").unwrap_or_default();
        let Some(item_id) = text(&e, "item_id") else {
            return Ok(format!("ignored: {wtype} {code} is not about an item"));
        };
        let Some(conn) = store.connection_by_plaid_item(&item_id).await? else {
            // Not ours (or removed): an alert for a human, not an error to retry forever.
            tracing::warn!(%item_id, webhook_type = %wtype, webhook_code = %code, "ALERT: webhook for an item bankgraph does not hold");
            return Ok("ignored: unknown item".into());
        };
        let now = Utc::now();
        let outcome = match (wtype.as_str(), code.as_str()) {
            ("TRANSACTIONS", _) => {
                self.inner.jobs.enqueue(JobKind::Sync, &conn.id, now).await?;
                "sync queued".to_string()
            }
            ("ITEM", "ERROR") => {
                let error_code = e.pointer("/error/error_code").and_then(Value::as_str).unwrap_or("");
                let status = super::service::status_for(error_code).unwrap_or(ConnectionStatus::Error);
                store.set_status_detail(&conn.id, status, Some(error_code), now).await?;
                format!("status {}", status.as_str())
            }
            ("ITEM", "PENDING_EXPIRATION") => {
                let at = text(&e, "consent_expiration_time")
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                    .map(|d| ts(d.with_timezone(&Utc)));
                store.set_status_detail(&conn.id, ConnectionStatus::PendingExpiration, None, now).await?;
                store.set_consent_expiration(&conn.id, at.as_deref()).await?;
                "status PENDING_EXPIRATION".into()
            }
            ("ITEM", "PENDING_DISCONNECT") => {
                store
                    .set_status_detail(
                        &conn.id,
                        ConnectionStatus::PendingDisconnect,
                        text(&e, "reason").as_deref(),
                        now,
                    )
                    .await?;
                "status PENDING_DISCONNECT".into()
            }
            ("ITEM", "USER_PERMISSION_REVOKED") | ("ITEM", "USER_ACCOUNT_REVOKED") => {
                store.set_status_detail(&conn.id, ConnectionStatus::Revoked, Some(&code), now).await?;
                "status REVOKED".into()
            }
            ("ITEM", "LOGIN_REPAIRED") => self.confirm_health(&conn).await?,
            ("ITEM", "NEW_ACCOUNTS_AVAILABLE") => {
                store.set_new_accounts_available(&conn.id, true).await?;
                "new accounts recorded".into()
            }
            ("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED") => "acknowledged".into(),
            _ => format!("ignored: {wtype} {code}"),
        };
        tracing::info!(event = %event_id, connection_id = %conn.id, %outcome, "webhook applied");
        Ok(outcome)
    }

    /// Asks Plaid whether an item is healthy; only its answer moves a connection to `ACTIVE`.
    pub(super) async fn confirm_health(&self, conn: &super::store::ConnectionRow) -> anyhow::Result<String> {
        let store = &self.inner.store;
        let token = self.inner.cipher.open(&conn.sealed(), &conn.user_id, &conn.plaid_item_id)?;
        let now = Utc::now();
        match self.inner.plaid.item_get(&token).await {
            Ok(r) => {
                store.mark_item_checked(&conn.id, now).await?;
                match r.item.error {
                    None => {
                        store.set_status_detail(&conn.id, ConnectionStatus::Active, None, now).await?;
                        self.inner.jobs.enqueue(JobKind::Sync, &conn.id, now).await?;
                        Ok("status ACTIVE (confirmed with Plaid)".into())
                    }
                    Some(err) => {
                        let status = super::service::status_for(&err.error_code).unwrap_or(ConnectionStatus::Error);
                        store.set_status_detail(&conn.id, status, Some(&err.error_code), now).await?;
                        Ok(format!("status {} (Plaid still reports {})", status.as_str(), err.error_code))
                    }
                }
            }
            Err(e) if e.class() == ErrorClass::ItemGone => {
                store.set_status_detail(&conn.id, ConnectionStatus::Revoked, e.code(), now).await?;
                Ok("status REVOKED (Plaid no longer knows the item)".into())
            }
            Err(e) => Err(e.into()),
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
        Ok(format!(
            "{synced} syncs queued, {checked} items checked, {repointed} webhooks re-pointed, {failed} failed, \
             {pruned} jobs pruned"
        ))
    }

    /// Reconciles one connection: (syncs queued, items checked, webhooks re-pointed).
    async fn reconcile_one(
        &self,
        conn: &crate::identity::store::LiveConnection,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<(u32, u32, u32)> {
        let store = &self.inner.store;
        let cfg = &self.inner.config;
        let stale_sync = now - chrono::Duration::from_std(cfg.resync_after)?;
        let stale_check = now - chrono::Duration::from_std(cfg.item_check_interval)?;
        let (mut synced, mut checked, mut repointed) = (0, 0, 0);
        let last_sync = conn.synced_at.as_deref().map(parse_ts).transpose()?;
        if !conn.row.status().blocks_data() && last_sync.is_none_or(|t| t < stale_sync) {
            self.inner.jobs.enqueue(JobKind::Sync, &conn.row.id, now).await?;
            synced += 1;
        }
        let last_check = conn.checked_at.as_deref().map(parse_ts).transpose()?;
        // A revoked item stays revoked: only a new link replaces it.
        if conn.row.status() == ConnectionStatus::Revoked || last_check.is_some_and(|t| t >= stale_check) {
            return Ok((synced, checked, repointed));
        }
        checked += 1;
        let token = self.inner.cipher.open(&conn.row.sealed(), &conn.row.user_id, &conn.row.plaid_item_id)?;
        match self.inner.plaid.item_get(&token).await {
            Ok(r) => {
                store.mark_item_checked(&conn.row.id, now).await?;
                if let Some(err) = r.item.error {
                    if let Some(status) = super::service::status_for(&err.error_code) {
                        store.set_status_detail(&conn.row.id, status, Some(&err.error_code), now).await?;
                    }
                } else if conn.row.status() == ConnectionStatus::LoginRequired {
                    store.set_status_detail(&conn.row.id, ConnectionStatus::Active, None, now).await?;
                }
                if let Some(want) = &cfg.webhook_url
                    && r.item.webhook.as_deref() != Some(want.as_str())
                {
                    self.inner.plaid.item_webhook_update(&token, Some(want)).await?;
                    repointed += 1;
                }
            }
            Err(e) if e.class() == ErrorClass::ItemGone => {
                tracing::warn!(connection_id = %conn.row.id, item_id = %conn.row.plaid_item_id, "Plaid no longer knows this item");
                store.set_status_detail(&conn.row.id, ConnectionStatus::Revoked, e.code(), now).await?;
                store.mark_item_checked(&conn.row.id, now).await?;
            }
            Err(e) => tracing::warn!(connection_id = %conn.row.id, error = %e, "item check failed; next round"),
        }
        Ok((synced, checked, repointed))
    }
}
