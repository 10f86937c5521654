//! Idempotency and throttling: completion claims on public tokens, exchanged items awaiting
//! storage or removal, the per-user refresh slot.

use chrono::{DateTime, Utc};

use super::rows::{PendingItem, Ts};
use super::{Claim, Store};
use crate::db::ts;
use crate::identity::crypto::Sealed;

impl Store {
    /// Records an item just exchanged, with a `remove_item` job due at `remove_after`, in one
    /// transaction: unless a connection holds the item by then, the job removes it at Plaid.
    pub async fn record_exchanged_item(
        &self,
        user_id: &str,
        item_id: &str,
        sealed: &Sealed,
        now: DateTime<Utc>,
        remove_after: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut tx = self.db.write.begin().await?;
        sqlx::query(
            "insert into pending_item_removals (plaid_item_id, user_id, access_token_sealed, access_token_key_id, created_at) \
             values ($1, $2, $3, $4, $5) on conflict (plaid_item_id) do nothing",
        )
        .bind(item_id)
        .bind(user_id)
        .bind(&sealed.blob)
        .bind(&sealed.key_id)
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        crate::jobs::Jobs::enqueue_in(&mut tx, crate::jobs::JobKind::RemoveItem, item_id, remove_after).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user and sealed token of an exchanged item still waiting to be stored or removed.
    pub async fn pending_item(&self, item_id: &str) -> anyhow::Result<Option<(String, Sealed)>> {
        let row: Option<PendingItem> = sqlx::query_as(
            "select plaid_item_id, user_id, access_token_sealed, access_token_key_id from pending_item_removals \
             where plaid_item_id = $1",
        )
        .bind(item_id)
        .fetch_optional(&self.db.write)
        .await?;
        Ok(row.map(|r| (r.user_id.clone(), r.sealed())))
    }

    /// The item is stored (or removed at Plaid): nothing left to clean up.
    pub async fn forget_pending_item(&self, item_id: &str) -> anyhow::Result<()> {
        sqlx::query("delete from pending_item_removals where plaid_item_id = $1")
            .bind(item_id)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Whether any connection, live or removed, holds this Plaid item.
    pub async fn item_is_held(&self, item_id: &str) -> anyhow::Result<bool> {
        let n: i64 = sqlx::query_scalar("select count(*) from bank_connections where plaid_item_id = $1")
            .bind(item_id)
            .fetch_one(&self.db.write)
            .await?;
        Ok(n > 0)
    }

    /// Claims a public token for processing. A `PENDING` claim not renewed for `stale_after`
    /// is taken over (its process died); a failed one whose error may pass is retried.
    pub async fn claim_completion(
        &self,
        user_id: &str,
        token_hash: &str,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
    ) -> anyhow::Result<Claim> {
        let at = ts(now);
        let inserted = sqlx::query(
            "insert into link_completions (user_id, public_token_sha256, state, created_at, updated_at) \
             values ($1, $2, 'PENDING', $3, $3) on conflict (user_id, public_token_sha256) do nothing",
        )
        .bind(user_id)
        .bind(token_hash)
        .bind(&at)
        .execute(&self.db.write)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Claim::Mine);
        }
        let (state, result, updated, exchanged_item): (String, Option<String>, Ts, Option<String>) = sqlx::query_as(
            "select state, result, updated_at, exchanged_item_id from link_completions \
             where user_id = $1 and public_token_sha256 = $2",
        )
        .bind(user_id)
        .bind(token_hash)
        .fetch_one(&self.db.write)
        .await?;
        match state.as_str() {
            "DONE" => Ok(Claim::Done(result.unwrap_or_default())),
            "FAILED" => Ok(Claim::Failed(result.unwrap_or_default())),
            _ if updated.0 + stale_after < now => {
                // Take over only if nobody else did in between.
                let taken = sqlx::query(
                    "update link_completions set updated_at = $1 where user_id = $2 and public_token_sha256 = $3 \
                     and state = 'PENDING' and updated_at = $4",
                )
                .bind(&at)
                .bind(user_id)
                .bind(token_hash)
                .bind(ts(updated.0))
                .execute(&self.db.write)
                .await?
                .rows_affected();
                Ok(if taken == 1 { Claim::TakenOver { exchanged_item } } else { Claim::Busy })
            }
            _ => Ok(Claim::Busy),
        }
    }

    /// The decided outcome of a public token, if any (`Done` or `Failed`), read without
    /// claiming anything.
    pub async fn decided_completion(&self, user_id: &str, token_hash: &str) -> anyhow::Result<Option<Claim>> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "select state, result from link_completions where user_id = $1 and public_token_sha256 = $2",
        )
        .bind(user_id)
        .bind(token_hash)
        .fetch_optional(&self.db.read)
        .await?;
        Ok(match row {
            Some((state, result)) if state == "DONE" => Some(Claim::Done(result.unwrap_or_default())),
            Some((state, result)) if state == "FAILED" => Some(Claim::Failed(result.unwrap_or_default())),
            _ => None,
        })
    }

    /// Records the outcome of a claimed completion (`DONE` with its result, or `FAILED`).
    pub async fn finish_completion(
        &self,
        user_id: &str,
        token_hash: &str,
        done: bool,
        result: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "update link_completions set state = $1, result = $2, updated_at = $3 \
             where user_id = $4 and public_token_sha256 = $5",
        )
        .bind(if done { "DONE" } else { "FAILED" })
        .bind(result)
        .bind(ts(now))
        .bind(user_id)
        .bind(token_hash)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Notes, on a claimed completion, the item its public token was exchanged for: the token
    /// is spent, which a retry taking over the claim must know.
    pub async fn note_exchanged_item(&self, user_id: &str, token_hash: &str, item_id: &str) -> anyhow::Result<()> {
        sqlx::query(
            "update link_completions set exchanged_item_id = $1 where user_id = $2 and public_token_sha256 = $3 \
             and state = 'PENDING'",
        )
        .bind(item_id)
        .bind(user_id)
        .bind(token_hash)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Keeps a running completion's claim fresh, so no other request takes it over as stale
    /// while this one still works on it.
    pub async fn touch_completion(&self, user_id: &str, token_hash: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query(
            "update link_completions set updated_at = $1 where user_id = $2 and public_token_sha256 = $3 \
             and state = 'PENDING'",
        )
        .bind(ts(now))
        .bind(user_id)
        .bind(token_hash)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Forgets a claim, so the same token may be tried again (after a transient failure).
    pub async fn release_completion(&self, user_id: &str, token_hash: &str) -> anyhow::Result<()> {
        sqlx::query("delete from link_completions where user_id = $1 and public_token_sha256 = $2")
            .bind(user_id)
            .bind(token_hash)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Takes the caller's refresh slot if the last refresh is older than `interval`; returns
    /// the seconds to wait otherwise. Atomic across processes.
    pub async fn take_refresh_slot(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
        interval: chrono::Duration,
    ) -> anyhow::Result<Result<(), u64>> {
        let at = ts(now);
        let cutoff = ts(now - interval);
        let updated = sqlx::query(
            "update refresh_throttle set last_refresh_at = $1 where user_id = $2 and last_refresh_at <= $3",
        )
        .bind(&at)
        .bind(user_id)
        .bind(&cutoff)
        .execute(&self.db.write)
        .await?
        .rows_affected();
        if updated == 1 {
            return Ok(Ok(()));
        }
        let inserted = sqlx::query(
            "insert into refresh_throttle (user_id, last_refresh_at) values ($1, $2) on conflict (user_id) do nothing",
        )
        .bind(user_id)
        .bind(&at)
        .execute(&self.db.write)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Ok(()));
        }
        let last: Ts = sqlx::query_scalar("select last_refresh_at from refresh_throttle where user_id = $1")
            .bind(user_id)
            .fetch_one(&self.db.write)
            .await?;
        // Rounded up: a client that waits exactly this long finds the slot free.
        let remaining = last.0 + interval - now;
        let micros = remaining.num_microseconds().unwrap_or(i64::MAX).max(0) as u64;
        let wait = micros.div_ceil(1_000_000).max(1);
        Ok(Err(wait))
    }
}
