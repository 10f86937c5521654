//! Connections and their accounts, statuses, flags and addresses.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};

use super::events::Written;
use super::rows::{AccountRow, CONNECTION_COLUMNS, ConnectionRow, Flag, LiveConnection};
use super::{NewConnection, Store, new_id};
use crate::db::ts;
use crate::domain::{
    Address, BalanceSource, BalanceTrigger, ConnectionStatus, EventChange, IncomingAccount, RemovalReason,
};
use crate::identity::crypto::Sealed;

impl Store {
    pub async fn connection(
        &self,
        user_id: &str,
        id: &str,
        include_removed: bool,
    ) -> anyhow::Result<Option<ConnectionRow>> {
        let sql = format!(
            "select {CONNECTION_COLUMNS} from bank_connections where user_id = $1 and id = $2{}",
            if include_removed { "" } else { " and removed_at is null" }
        );
        Ok(sqlx::query_as(&sql).bind(user_id).bind(id).fetch_optional(&self.db.read).await?)
    }

    /// The caller's live connection on this Plaid item.
    pub async fn connection_by_item(&self, user_id: &str, item_id: &str) -> anyhow::Result<Option<ConnectionRow>> {
        let sql = format!(
            "select {CONNECTION_COLUMNS} from bank_connections where user_id = $1 and plaid_item_id = $2 and removed_at is null"
        );
        Ok(sqlx::query_as(&sql).bind(user_id).bind(item_id).fetch_optional(&self.db.read).await?)
    }

    /// The id of the caller's connection on this Plaid item, removed or not (an item belongs to
    /// one connection for good).
    pub async fn connection_id_by_item(&self, user_id: &str, item_id: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar("select id from bank_connections where user_id = $1 and plaid_item_id = $2")
            .bind(user_id)
            .bind(item_id)
            .fetch_optional(&self.db.read)
            .await?)
    }

    /// A connection by id, whoever owns it (background work only).
    pub async fn connection_by_id(&self, id: &str) -> anyhow::Result<Option<ConnectionRow>> {
        let sql = format!("select {CONNECTION_COLUMNS} from bank_connections where id = $1");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(&self.db.read).await?)
    }

    /// The caller's live connections, oldest first.
    pub async fn connections(&self, user_id: &str) -> anyhow::Result<Vec<ConnectionRow>> {
        let sql = format!(
            "select {CONNECTION_COLUMNS} from bank_connections where user_id = $1 and removed_at is null order by created_at, id"
        );
        Ok(sqlx::query_as(&sql).bind(user_id).fetch_all(&self.db.read).await?)
    }

    /// The caller's live connections at an institution, with their live accounts.
    pub async fn connections_at(
        &self,
        user_id: &str,
        institution_id: &str,
    ) -> anyhow::Result<Vec<(ConnectionRow, Vec<AccountRow>)>> {
        let sql = format!(
            "select {CONNECTION_COLUMNS} from bank_connections \
             where user_id = $1 and institution_id = $2 and removed_at is null order by created_at, id"
        );
        let conns: Vec<ConnectionRow> =
            sqlx::query_as(&sql).bind(user_id).bind(institution_id).fetch_all(&self.db.read).await?;
        let mut out = Vec::with_capacity(conns.len());
        for c in conns {
            let accounts = self.account_rows(&c.id).await?;
            out.push((c, accounts));
        }
        Ok(out)
    }

    /// The ids of all a connection's accounts, removed ones included, in their order.
    pub async fn account_ids(&self, connection_id: &str) -> anyhow::Result<Vec<String>> {
        Ok(sqlx::query_scalar("select id from bank_accounts where connection_id = $1 order by position, id")
            .bind(connection_id)
            .fetch_all(&self.db.read)
            .await?)
    }

    /// A connection's live accounts.
    pub async fn account_rows(&self, connection_id: &str) -> anyhow::Result<Vec<AccountRow>> {
        Ok(sqlx::query_as(
            "select id, connection_id, plaid_account_id, name, mask, account_type, subtype from bank_accounts \
             where connection_id = $1 and removed_at is null order by position, id",
        )
        .bind(connection_id)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Writes a new connection, its accounts, their first balances and any address, in one
    /// transaction. Returns the connection id and the account ids in the order given.
    pub async fn create_connection(
        &self,
        new: &NewConnection,
        status: ConnectionStatus,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(String, Vec<String>)> {
        let mut tx = self.db.write.begin().await?;
        let id = new_id();
        let at = ts(now);
        sqlx::query(
            "insert into bank_connections (id, user_id, plaid_item_id, institution_id, institution_name, \
             access_token_sealed, access_token_key_id, status, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&id)
        .bind(&new.user_id)
        .bind(&new.plaid_item_id)
        .bind(new.institution_id.as_deref())
        .bind(&new.institution_name)
        .bind(&new.sealed.blob)
        .bind(&new.sealed.key_id)
        .bind(status.as_str())
        .bind(&at)
        .execute(&mut *tx)
        .await
        .context("insert bank_connections")?;
        let mut ids = Vec::with_capacity(new.accounts.len());
        for (position, a) in new.accounts.iter().enumerate() {
            let account_id = new_id();
            insert_account(&mut tx, &account_id, &id, &new.user_id, a, position, &at).await?;
            insert_balance(&mut tx, &account_id, &new.user_id, a, BalanceTrigger::Link, &at).await?;
            ids.push(account_id);
        }
        if let Some(addr) = &new.address {
            insert_address(&mut tx, &id, &new.user_id, addr, "PLAID_IDENTITY", &at).await?;
        }
        let mut events = Written::default();
        events.record(&mut tx, self.db.dialect(), &id, EventChange::Linked, &at).await?;
        tx.commit().await?;
        // After the commit: a reader that saw the old generation refetches.
        self.bump();
        self.events_committed(events);
        Ok((id, ids))
    }

    /// Points an existing connection at a (possibly new) Plaid item and refreshes its accounts:
    /// an incoming account keeps the id of the stored one with the same Plaid id, else the
    /// same mask, name and type; new ones are added; balances are stored with `trigger`.
    /// Returns the account ids in the order given.
    #[allow(clippy::too_many_arguments)]
    pub async fn repair_connection(
        &self,
        connection: &ConnectionRow,
        plaid_item_id: &str,
        sealed: &Sealed,
        accounts: &[IncomingAccount],
        status: ConnectionStatus,
        trigger: BalanceTrigger,
        new_item: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<String>> {
        let existing = self.account_rows(&connection.id).await?;
        let mut tx = self.db.write.begin().await?;
        let at = ts(now);
        sqlx::query(
            "update bank_connections set plaid_item_id = $1, access_token_sealed = $2, access_token_key_id = $3, \
             status = $4, status_detail = null, updated_at = $5 where id = $6",
        )
        .bind(plaid_item_id)
        .bind(&sealed.blob)
        .bind(&sealed.key_id)
        .bind(status.as_str())
        .bind(&at)
        .bind(&connection.id)
        .execute(&mut *tx)
        .await
        .context("update bank_connections")?;
        if new_item {
            // The new item's sync brings the whole history again, under new Plaid ids: retire
            // the old item's rows and its cursor so nothing is counted twice.
            sqlx::query(
                "update bank_transactions set removed_at = $1, updated_at = $1 where connection_id = $2 and removed_at is null",
            )
            .bind(&at)
            .bind(&connection.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "update account_transaction_counts set posted = 0, pending = 0 \
                 where account_id in (select id from bank_accounts where connection_id = $1)",
            )
            .bind(&connection.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "delete from account_transaction_day_counts \
                 where account_id in (select id from bank_accounts where connection_id = $1)",
            )
            .bind(&connection.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "update bank_connections set transactions_cursor = null, transactions_loop_cursor = null, \
                 history_ready_at = null where id = $1",
            )
            .bind(&connection.id)
            .execute(&mut *tx)
            .await?;
        }
        let mut used = std::collections::HashSet::new();
        let mut ids = Vec::with_capacity(accounts.len());
        for (position, a) in accounts.iter().enumerate() {
            let same_id = existing.iter().find(|e| e.plaid_account_id == a.plaid_account_id && !used.contains(&e.id));
            let same_shape = || {
                existing.iter().find(|e| {
                    !used.contains(&e.id)
                        && e.mask == a.mask
                        && e.name.as_deref() == Some(a.name.as_str())
                        && e.account_type == a.account_type
                        && e.subtype == a.subtype
                })
            };
            let account_id = match same_id.or_else(same_shape) {
                Some(e) => {
                    sqlx::query(
                        "update bank_accounts set plaid_account_id = $1, name = $2, official_name = $3, mask = $4, \
                         account_type = $5, subtype = $6, updated_at = $7, position = $9, removed_at = null where id = $8",
                    )
                    .bind(&a.plaid_account_id)
                    .bind(&a.name)
                    .bind(a.official_name.as_deref())
                    .bind(a.mask.as_deref())
                    .bind(&a.account_type)
                    .bind(a.subtype.as_deref())
                    .bind(&at)
                    .bind(&e.id)
                    .bind(position as i64)
                    .execute(&mut *tx)
                    .await
                    .context("update bank_accounts")?;
                    e.id.clone()
                }
                None => {
                    let id = new_id();
                    insert_account(&mut tx, &id, &connection.id, &connection.user_id, a, position, &at).await?;
                    id
                }
            };
            used.insert(account_id.clone());
            insert_balance(&mut tx, &account_id, &connection.user_id, a, trigger, &at).await?;
            ids.push(account_id);
        }
        let mut events = Written::default();
        if connection.status() != status {
            events.record(&mut tx, self.db.dialect(), &connection.id, EventChange::StatusChanged(status), &at).await?;
        }
        tx.commit().await?;
        // After the commit: a reader that saw the old generation refetches.
        self.bump();
        self.events_committed(events);
        Ok(ids)
    }

    /// Marks a connection and its accounts removed (history kept, hidden). Idempotent.
    pub async fn mark_removed(
        &self,
        connection_id: &str,
        reason: RemovalReason,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let at = ts(now);
        let mut tx = self.db.write.begin().await?;
        let removed = sqlx::query(
            "update bank_connections set removed_at = $1, removal_reason = $2, updated_at = $1 \
             where id = $3 and removed_at is null",
        )
        .bind(&at)
        .bind(reason.as_str())
        .bind(connection_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "update bank_accounts set removed_at = $1, updated_at = $1 where connection_id = $2 and removed_at is null",
        )
        .bind(&at)
        .bind(connection_id)
        .execute(&mut *tx)
        .await?;
        let mut events = Written::default();
        if removed.rows_affected() > 0 {
            events.record(&mut tx, self.db.dialect(), connection_id, EventChange::Removed, &at).await?;
        }
        tx.commit().await?;
        // After the commit: a reader that saw the old generation refetches.
        self.bump();
        self.events_committed(events);
        Ok(())
    }

    /// The live connection on a Plaid item, whoever owns it (webhooks and background work).
    pub async fn connection_by_plaid_item(&self, item_id: &str) -> anyhow::Result<Option<ConnectionRow>> {
        let sql = format!(
            "select {CONNECTION_COLUMNS} from bank_connections where plaid_item_id = $1 and removed_at is null"
        );
        Ok(sqlx::query_as(&sql).bind(item_id).fetch_optional(&self.db.read).await?)
    }

    /// Every live connection with when it was last synced and checked (the reconciler).
    pub async fn all_live_connections(&self) -> anyhow::Result<Vec<LiveConnection>> {
        let sql = format!(
            "select {CONNECTION_COLUMNS}, transactions_synced_at, item_checked_at from bank_connections \
             where removed_at is null order by created_at, id"
        );
        Ok(sqlx::query_as(&sql).fetch_all(&self.db.read).await?)
    }

    /// The one status setter: a connection's status and the Plaid code behind it (`None`
    /// clears a stale one), written together.
    pub async fn set_status(
        &self,
        connection_id: &str,
        status: ConnectionStatus,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let at = ts(now);
        let dialect = self.db.dialect();
        let mut tx = self.db.write.begin().await?;
        // (status, removed): a removed connection's subscribers already heard REMOVED, and
        // Plaid reporting its item gone afterwards is nothing new to them.
        let before: Option<(String, Flag)> = sqlx::query_as(&format!(
            "select status, cast(case when removed_at is null then 0 else 1 end as bigint) from bank_connections \
             where id = $1{}",
            dialect.for_update()
        ))
        .bind(connection_id)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query("update bank_connections set status = $1, status_detail = $2, updated_at = $3 where id = $4")
            .bind(status.as_str())
            .bind(detail)
            .bind(&at)
            .bind(connection_id)
            .execute(&mut *tx)
            .await?;
        let mut events = Written::default();
        if before.is_some_and(|(b, Flag(removed))| b != status.as_str() && !removed) {
            events.record(&mut tx, dialect, connection_id, EventChange::StatusChanged(status), &at).await?;
        }
        tx.commit().await?;
        // After the commit: a reader that saw the old generation refetches.
        self.bump();
        self.events_committed(events);
        Ok(())
    }

    pub async fn set_consent_expiration(&self, connection_id: &str, at: Option<DateTime<Utc>>) -> anyhow::Result<()> {
        sqlx::query("update bank_connections set consent_expires_at = $1 where id = $2")
            .bind(at.map(ts))
            .bind(connection_id)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    pub async fn set_new_accounts_available(&self, connection_id: &str, available: bool) -> anyhow::Result<()> {
        sqlx::query("update bank_connections set new_accounts_available = $1 where id = $2")
            .bind(available)
            .bind(connection_id)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    pub async fn new_accounts_available(&self, connection_id: &str) -> anyhow::Result<bool> {
        let (Flag(available),): (Flag,) = sqlx::query_as(
            "select cast(case when new_accounts_available then 1 else 0 end as bigint) from bank_connections where id = $1",
        )
        .bind(connection_id)
        .fetch_one(&self.db.read)
        .await?;
        Ok(available)
    }

    pub async fn mark_item_checked(&self, connection_id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query("update bank_connections set item_checked_at = $1 where id = $2")
            .bind(ts(now))
            .bind(connection_id)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    pub async fn add_address(
        &self,
        connection_id: &str,
        user_id: &str,
        address: &Address,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let mut tx = self.db.write.begin().await?;
        let id = insert_address(&mut tx, connection_id, user_id, address, "USER", &ts(now)).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn has_address(&self, connection_id: &str) -> anyhow::Result<bool> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from connection_addresses where connection_id = $1")
            .bind(connection_id)
            .fetch_one(&self.db.read)
            .await?;
        Ok(n > 0)
    }

    /// Stores a balance snapshot for each account of a connection (matched by Plaid id).
    pub async fn store_balances(
        &self,
        connection: &ConnectionRow,
        accounts: &[IncomingAccount],
        trigger: BalanceTrigger,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let rows = self.account_rows(&connection.id).await?;
        let at = ts(now);
        let mut tx = self.db.write.begin().await?;
        let mut stored = 0;
        for a in accounts {
            if let Some(row) = rows.iter().find(|r| r.plaid_account_id == a.plaid_account_id) {
                insert_balance(&mut tx, &row.id, &connection.user_id, a, trigger, &at).await?;
                stored += 1;
            }
        }
        let mut events = Written::default();
        if stored > 0 {
            events.record(&mut tx, self.db.dialect(), &connection.id, EventChange::BalancesUpdated, &at).await?;
        }
        tx.commit().await?;
        self.events_committed(events);
        Ok(())
    }
}

async fn insert_account(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    connection_id: &str,
    user_id: &str,
    a: &IncomingAccount,
    position: usize,
    at: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into bank_accounts (id, connection_id, user_id, plaid_account_id, name, official_name, mask, \
         account_type, subtype, position, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $11, $10, $10)",
    )
    .bind(id)
    .bind(connection_id)
    .bind(user_id)
    .bind(&a.plaid_account_id)
    .bind(&a.name)
    .bind(a.official_name.as_deref())
    .bind(a.mask.as_deref())
    .bind(&a.account_type)
    .bind(a.subtype.as_deref())
    .bind(at)
    .bind(position as i64)
    .execute(&mut **tx)
    .await
    .context("insert bank_accounts")?;
    Ok(())
}

async fn insert_balance(
    tx: &mut Transaction<'_, Any>,
    account_id: &str,
    user_id: &str,
    a: &IncomingAccount,
    trigger: BalanceTrigger,
    at: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into balance_snapshots (id, account_id, user_id, available, current_balance, limit_amount, \
         currency_code, source, balance_trigger, started_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(new_id())
    .bind(account_id)
    .bind(user_id)
    .bind(a.available.map(|d| d.to_string()))
    .bind(a.current.map(|d| d.to_string()))
    .bind(a.limit.map(|d| d.to_string()))
    .bind(a.currency_code.as_deref())
    .bind(BalanceSource::PlaidCached.as_str())
    .bind(trigger.as_str())
    .bind(at)
    .execute(&mut **tx)
    .await
    .context("insert balance_snapshots")?;
    Ok(())
}

async fn insert_address(
    tx: &mut Transaction<'_, Any>,
    connection_id: &str,
    user_id: &str,
    a: &Address,
    source: &str,
    at: &str,
) -> anyhow::Result<String> {
    let id = new_id();
    sqlx::query(
        "insert into connection_addresses (id, connection_id, user_id, line1, line2, city, state, postal_code, \
         country, source, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(connection_id)
    .bind(user_id)
    .bind(&a.line1)
    .bind(a.line2.as_deref())
    .bind(&a.city)
    .bind(&a.state)
    .bind(&a.postal_code)
    .bind(&a.country)
    .bind(source)
    .bind(at)
    .execute(&mut **tx)
    .await
    .context("insert connection_addresses")?;
    Ok(id)
}
