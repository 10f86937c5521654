//! Plaid's webhook verification keys, kept across restarts (`webhook_keys`): the verifier's
//! shelf. Only keys Plaid itself gave are written, so the table holds a handful of rows.

use anyhow::Context;

use super::Store;
use crate::db::{parse_ts, ts};
use crate::plaid::webhook::{KeyShelf, StoredKey};

#[async_trait::async_trait]
impl KeyShelf for Store {
    async fn load(&self) -> anyhow::Result<Vec<StoredKey>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("select jwk, fetched_at from webhook_keys").fetch_all(&self.db.read).await?;
        rows.into_iter()
            .map(|(jwk, fetched_at)| {
                Ok(StoredKey {
                    jwk: serde_json::from_str(&jwk).context("a stored webhook key is not a JWK")?,
                    fetched_at: parse_ts(&fetched_at)?,
                })
            })
            .collect()
    }

    /// Writes a key as Plaid gave it last (a refresh records its `expired_at`).
    async fn save(&self, key: &StoredKey) -> anyhow::Result<()> {
        sqlx::query(
            "insert into webhook_keys (kid, jwk, expired_at, fetched_at) values ($1, $2, $3, $4) \
             on conflict (kid) do update set jwk = excluded.jwk, expired_at = excluded.expired_at, \
             fetched_at = excluded.fetched_at",
        )
        .bind(&key.jwk.kid)
        .bind(serde_json::to_string(&key.jwk)?)
        .bind(key.jwk.expired_at)
        .bind(ts(key.fetched_at))
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Drops a key Plaid no longer knows.
    async fn forget(&self, kid: &str) -> anyhow::Result<()> {
        sqlx::query("delete from webhook_keys where kid = $1").bind(kid).execute(&self.db.write).await?;
        Ok(())
    }
}
