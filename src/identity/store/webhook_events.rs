//! Verified Plaid webhooks: stored with their processing job in one transaction, counted
//! once per identical body and hour, marked processed, pruned.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Store, new_id};
use crate::db::ts;
use crate::jobs::{JobKind, Jobs};

/// A verified webhook, as it is stored.
#[derive(Debug, Clone)]
pub struct NewWebhookEvent<'a> {
    /// The raw body, exactly as received (it is what was signed).
    pub body: &'a str,
    pub webhook_type: &'a str,
    pub webhook_code: &'a str,
    pub item_id: Option<&'a str>,
}

/// What happened to an accepted webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Stored and queued for processing.
    New(String),
    /// A redelivery of an event already stored.
    Redelivery(String),
}

impl Store {
    /// Stores a webhook with its processing job, in one transaction; an identical body within
    /// the same hour is a redelivery, counted on the stored event and not queued again.
    pub async fn record_webhook(&self, event: &NewWebhookEvent<'_>, now: DateTime<Utc>) -> anyhow::Result<Received> {
        let sha = hex::encode(Sha256::digest(event.body.as_bytes()));
        let hour = now.timestamp() / 3600;
        let at = ts(now);
        let mut tx = self.db.write.begin().await?;
        let id = new_id();
        let inserted = sqlx::query(
            "insert into webhook_events (id, body_sha256, received_hour, body, webhook_type, webhook_code, item_id, \
             received_at, last_received_at, deliveries) values ($1, $2, $3, $4, $5, $6, $7, $8, $8, 1) \
             on conflict (body_sha256, received_hour) do nothing",
        )
        .bind(&id)
        .bind(&sha)
        .bind(hour)
        .bind(event.body)
        .bind(event.webhook_type)
        .bind(event.webhook_code)
        .bind(event.item_id)
        .bind(&at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let received = if inserted == 1 {
            Jobs::enqueue_in(&mut tx, JobKind::Webhook, &id, now).await?;
            Received::New(id)
        } else {
            let id: String = sqlx::query_scalar(
                "update webhook_events set deliveries = deliveries + 1, last_received_at = $1 \
                 where body_sha256 = $2 and received_hour = $3 returning id",
            )
            .bind(&at)
            .bind(&sha)
            .bind(hour)
            .fetch_one(&mut *tx)
            .await?;
            Received::Redelivery(id)
        };
        tx.commit().await?;
        Ok(received)
    }

    /// The stored body of a webhook event.
    pub async fn webhook_body(&self, event_id: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar("select body from webhook_events where id = $1")
            .bind(event_id)
            .fetch_optional(&self.db.read)
            .await?)
    }

    /// Records when and how an event was applied.
    pub async fn mark_webhook_processed(
        &self,
        event_id: &str,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query("update webhook_events set processed_at = $1, outcome = $2 where id = $3")
            .bind(ts(now))
            .bind(outcome)
            .bind(event_id)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Deletes processed webhook events older than `before`.
    pub async fn prune_webhook_events(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        Ok(sqlx::query("delete from webhook_events where processed_at is not null and received_at < $1")
            .bind(ts(before))
            .execute(&self.db.write)
            .await?
            .rows_affected())
    }
}
