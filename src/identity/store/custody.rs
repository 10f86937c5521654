//! Token custody: which keys sealed the stored access tokens, and re-sealing under the
//! current key by compare-and-set.

use super::Store;
use super::rows::{CONNECTION_COLUMNS, ConnectionRow, PendingItem};
use crate::identity::crypto::Sealed;

impl Store {
    /// Every key id that sealed a stored access token, with how many tokens it sealed.
    pub async fn token_key_ids(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "select k, cast(count(*) as bigint) as n from (\
             select access_token_key_id as k from bank_connections \
             union all select access_token_key_id as k from pending_item_removals) keys group by k order by k",
        )
        .fetch_all(&self.db.read)
        .await?)
    }

    /// One stored token sealed under `key_id` (a connection's, else a pending item's), with the
    /// user and item it is bound to, to try the key on.
    pub async fn a_token_sealed_under(&self, key_id: &str) -> anyhow::Result<Option<(String, String, Sealed)>> {
        let mut row: Option<PendingItem> = None;
        for table in ["bank_connections", "pending_item_removals"] {
            if row.is_none() {
                let sql = format!(
                    "select plaid_item_id, user_id, access_token_sealed, access_token_key_id from {table} \
                     where access_token_key_id = $1 limit 1"
                );
                row = sqlx::query_as(&sql).bind(key_id).fetch_optional(&self.db.read).await?;
            }
        }
        Ok(row.map(|r| {
            let sealed = r.sealed();
            (r.user_id, r.plaid_item_id, sealed)
        }))
    }

    /// Up to `limit` connections with an id after `after` whose token was sealed under another
    /// key than `current`, by id.
    pub async fn connections_sealed_under_other_keys(
        &self,
        current: &str,
        after: &str,
        limit: i64,
    ) -> anyhow::Result<Vec<ConnectionRow>> {
        let sql = format!(
            "select {CONNECTION_COLUMNS} from bank_connections where access_token_key_id <> $1 and id > $2 \
             order by id limit $3"
        );
        Ok(sqlx::query_as(&sql).bind(current).bind(after).bind(limit).fetch_all(&self.db.write).await?)
    }

    /// Replaces a connection's sealed token, only if it is still the one read (`old`), so a
    /// concurrent re-seal or relink is never overwritten.
    pub async fn reseal(&self, connection_id: &str, old: &Sealed, new: &Sealed) -> anyhow::Result<bool> {
        self.replace_sealed("update bank_connections", "id", connection_id, old, new).await
    }

    /// Compare-and-set of a sealed token in `update` (a table holding one), row by `key`.
    async fn replace_sealed(
        &self,
        update: &'static str,
        key: &'static str,
        id: &str,
        old: &Sealed,
        new: &Sealed,
    ) -> anyhow::Result<bool> {
        let sql = format!(
            "{update} set access_token_sealed = $1, access_token_key_id = $2 \
             where {key} = $3 and access_token_sealed = $4 and access_token_key_id = $5"
        );
        let n = sqlx::query(&sql)
            .bind(&new.blob)
            .bind(&new.key_id)
            .bind(id)
            .bind(&old.blob)
            .bind(&old.key_id)
            .execute(&self.db.write)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Re-seals pending items' tokens under the current key (rare: items in flight).
    pub async fn pending_items_sealed_under_other_keys(
        &self,
        current: &str,
    ) -> anyhow::Result<Vec<(String, String, Sealed)>> {
        let rows: Vec<PendingItem> = sqlx::query_as(
            "select plaid_item_id, user_id, access_token_sealed, access_token_key_id from pending_item_removals \
             where access_token_key_id <> $1",
        )
        .bind(current)
        .fetch_all(&self.db.write)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let sealed = r.sealed();
                (r.plaid_item_id, r.user_id, sealed)
            })
            .collect())
    }

    /// Replaces a pending item's sealed token if it is still `old`.
    pub async fn reseal_pending_item(&self, item_id: &str, old: &Sealed, new: &Sealed) -> anyhow::Result<bool> {
        self.replace_sealed("update pending_item_removals", "plaid_item_id", item_id, old, new).await
    }
}
