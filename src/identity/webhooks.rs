//! Plaid webhooks: verified before anything is parsed, stored durably with their processing
//! job in one transaction, acknowledged; processed by a job that applies what Plaid said.
//! Unverifiable requests are stored nowhere (a log line and a counter).

use anyhow::Context;
use chrono::Utc;

use super::service::PlaidIdentity;
use super::store::{NewWebhookEvent, Received};
use crate::domain::ConnectionStatus;
use crate::jobs::{JobKind, Outcome};
use crate::plaid::WebhookRejection;
use crate::plaid::wire::WebhookEnvelope;

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

/// The envelope of a verified body, or `Malformed`: a webhook names its type and code.
fn envelope(body: &[u8]) -> Result<WebhookEnvelope, WebhookError> {
    serde_json::from_slice(body).map_err(|_| WebhookError::Malformed)
}

impl PlaidIdentity {
    /// Takes the webhook keys Plaid gave before (at start), so webhooks signed by them verify
    /// without asking Plaid again.
    pub async fn load_webhook_keys(&self) -> anyhow::Result<()> {
        let n = self.inner.verifier.load().await.context("could not read the stored webhook keys")?;
        tracing::info!(keys = n, "webhook keys loaded");
        Ok(())
    }

    /// Verifies, stores and queues one webhook request (headers and raw body as received).
    pub async fn receive_webhook(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<Received, WebhookError> {
        if let Err(rejection) = self.inner.verifier.verify(headers, body).await {
            tracing::warn!(reason = rejection.label(), "webhook rejected");
            metrics::counter!(crate::metrics::WEBHOOKS_REJECTED, "reason" => rejection.label()).increment(1);
            return Err(rejection.into());
        }
        let e = envelope(body)?;
        let body_text = std::str::from_utf8(body).map_err(|_| WebhookError::Malformed)?;
        let now = Utc::now();
        let event = NewWebhookEvent {
            body: body_text,
            webhook_type: &e.webhook_type,
            webhook_code: &e.webhook_code,
            item_id: e.item_id.as_deref(),
        };
        let received = self.inner.store.record_webhook(&event, now).await.map_err(WebhookError::Storage)?;
        let delivery = if matches!(received, Received::New(_)) { "new" } else { "redelivery" };
        metrics::counter!(crate::metrics::WEBHOOKS_RECEIVED,
            "webhook_type" => e.webhook_type.clone(),
            "webhook_code" => e.webhook_code.clone(),
            "delivery" => delivery)
        .increment(1);
        self.inner.jobs.wake();
        match &received {
            Received::New(id) => {
                tracing::info!(event = %id, webhook_type = %e.webhook_type, webhook_code = %e.webhook_code, item_id = ?e.item_id, "webhook stored")
            }
            Received::Redelivery(id) => {
                tracing::info!(event = %id, webhook_code = %e.webhook_code, "webhook redelivery counted, not processed again");
                // An identical body may still be a new notice from Plaid (the same code for the
                // same item again). It is not processed twice, but the item's state is made
                // current: a sync for a transactions notice, a health check for an item notice.
                // Both are idempotent and coalesced with any already queued.
                let follow_up = match e.webhook_type.as_str() {
                    "TRANSACTIONS" => Some(JobKind::Sync),
                    "ITEM" => Some(JobKind::Health),
                    _ => None,
                };
                if let (Some(kind), Some(item)) = (follow_up, &e.item_id)
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
                if let Err(e) = self.inner.store.mark_webhook_processed(event_id, &outcome, Utc::now()).await {
                    // Applying again is harmless: events are idempotent.
                    tracing::warn!(event = %event_id, error = %format!("{e:#}"), "could not mark a webhook processed");
                }
                Outcome::Done
            }
            Err(e) => Outcome::Retry(format!("{e:#}")),
        }
    }

    async fn apply_event(&self, event_id: &str) -> anyhow::Result<String> {
        let store = &self.inner.store;
        let Some(body) = store.webhook_body(event_id).await? else {
            return Ok("ignored: event not found".into());
        };
        let e = envelope(body.as_bytes())?;
        let (wtype, code) = (e.webhook_type.as_str(), e.webhook_code.as_str());
        let Some(item_id) = e.item_id.as_deref() else {
            return Ok(format!("ignored: {wtype} {code} is not about an item"));
        };
        let Some(conn) = store.connection_by_plaid_item(item_id).await? else {
            // Not ours (or removed): an alert for a human, not an error to retry forever.
            tracing::warn!(%item_id, webhook_type = %wtype, webhook_code = %code, "ALERT: webhook for an item bankgraph does not hold");
            return Ok("ignored: unknown item".into());
        };
        let now = Utc::now();
        let text = |k: &str| e.extra.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
        let outcome = match (wtype, code) {
            ("TRANSACTIONS", _) => {
                self.inner.jobs.enqueue(JobKind::Sync, &conn.id, now).await?;
                "sync queued".to_string()
            }
            ("ITEM", "ERROR") => match &e.error {
                Some(err) => match self.apply_item_error(&conn.id, err, now).await? {
                    Some(status) => format!("status {}", status.as_str()),
                    None => format!("status unchanged ({})", err.error_code),
                },
                None => "ignored: ERROR without an error".into(),
            },
            ("ITEM", "PENDING_EXPIRATION") => {
                let at = text("consent_expiration_time")
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                    .map(|d| d.with_timezone(&Utc));
                store.set_status(&conn.id, ConnectionStatus::PendingExpiration, None, now).await?;
                store.set_consent_expiration(&conn.id, at).await?;
                "status PENDING_EXPIRATION".into()
            }
            ("ITEM", "PENDING_DISCONNECT") => {
                store.set_status(&conn.id, ConnectionStatus::PendingDisconnect, text("reason").as_deref(), now).await?;
                "status PENDING_DISCONNECT".into()
            }
            // The codes themselves are the item errors these notices stand for.
            ("ITEM", "USER_PERMISSION_REVOKED") | ("ITEM", "USER_ACCOUNT_REVOKED") => {
                let err = crate::plaid::wire::PlaidErrorBody::item_error(code);
                let status = self.apply_item_error(&conn.id, &err, now).await?;
                format!("status {}", status.map(|s| s.as_str()).unwrap_or("unchanged"))
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
}
