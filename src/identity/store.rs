//! The identity service's storage: one set of SQL for SQLite and PostgreSQL. Every read is
//! scoped to a user; every multi-statement write runs in one transaction.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{Any, Row, Transaction};

use crate::db::{Db, parse_ts, ts};
use crate::domain::{
    Address, Balance, BalanceSource, BalanceTrigger, BankAccount, BankTransaction, ConnectionStatus, RemovalReason,
};
use crate::identity::crypto::Sealed;
use crate::plaid::wire;

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn dec(s: Option<String>) -> anyhow::Result<Option<Decimal>> {
    s.map(|s| Decimal::from_str(&s).with_context(|| format!("stored amount {s:?} is malformed"))).transpose()
}

/// A connection as stored, with its sealed token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRow {
    pub id: String,
    pub user_id: String,
    pub plaid_item_id: String,
    pub institution_id: Option<String>,
    pub institution_name: String,
    pub access_token_sealed: String,
    pub access_token_key_id: String,
    pub status: String,
    pub transactions_cursor: Option<String>,
    pub removed_at: Option<String>,
}

impl ConnectionRow {
    pub fn sealed(&self) -> Sealed {
        Sealed { key_id: self.access_token_key_id.clone(), blob: self.access_token_sealed.clone() }
    }

    pub fn status(&self) -> ConnectionStatus {
        ConnectionStatus::parse(&self.status).unwrap_or(ConnectionStatus::Error)
    }
}

const CONNECTION_COLUMNS: &str = "id, user_id, plaid_item_id, institution_id, institution_name, access_token_sealed, \
     access_token_key_id, status, transactions_cursor, removed_at";

/// An account as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: String,
    pub connection_id: String,
    pub plaid_account_id: String,
    pub name: Option<String>,
    pub mask: Option<String>,
    pub account_type: String,
    pub subtype: Option<String>,
}

/// Filters shared by the account and balance reads.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    pub plaid_item_id: Option<String>,
    pub connection_id: Option<String>,
    pub account_id: Option<String>,
}

/// Filters of the transaction read.
#[derive(Debug, Clone, Default)]
pub struct TransactionFilter {
    pub accounts: AccountFilter,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub pending: Option<bool>,
    pub limit: i64,
    pub offset: i64,
}

/// One account from Plaid, ready to be stored with its balance.
#[derive(Debug, Clone)]
pub struct IncomingAccount {
    pub plaid: wire::Account,
}

/// What a new link writes.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub user_id: String,
    pub plaid_item_id: String,
    pub institution_id: Option<String>,
    pub institution_name: String,
    pub sealed: Sealed,
    pub accounts: Vec<wire::Account>,
    pub address: Option<Address>,
}

/// The outcome of a claim on a public token (idempotency of `completePlaidLink`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to process.
    Mine,
    /// Another request is processing it.
    Busy,
    /// Already done: the stored result.
    Done(String),
    /// Already failed: the stored error.
    Failed(String),
}

/// A builder of `where` clauses with `$n` placeholders, for reads whose filters vary.
struct Where {
    clauses: Vec<String>,
    args: Vec<Option<String>>,
}

impl Where {
    fn new(user_id: &str) -> Self {
        Where { clauses: vec![], args: vec![] }.text("a.user_id", user_id)
    }

    fn text(mut self, column: &str, value: &str) -> Self {
        self.args.push(Some(value.to_string()));
        self.clauses.push(format!("{column} = ${}", self.args.len()));
        self
    }

    fn opt(self, column: &str, value: &Option<String>) -> Self {
        match value {
            Some(v) => self.text(column, v),
            None => self,
        }
    }

    fn raw(mut self, clause: &str) -> Self {
        self.clauses.push(clause.to_string());
        self
    }

    fn cmp(mut self, column: &str, op: &str, value: String) -> Self {
        self.args.push(Some(value));
        self.clauses.push(format!("{column} {op} ${}", self.args.len()));
        self
    }

    fn sql(&self) -> String {
        self.clauses.join(" and ")
    }

    fn accounts(self, f: &AccountFilter) -> Self {
        self.opt("c.plaid_item_id", &f.plaid_item_id).opt("c.id", &f.connection_id).opt("a.id", &f.account_id)
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [Option<String>],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = q.bind(a.as_deref());
    }
    q
}

/// The identity service's SQL.
#[derive(Debug, Clone)]
pub struct Store {
    pub db: Db,
    /// Bumped by every write in this process that changes what `accounts` returns; read
    /// caches compare it to know they are stale.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Store { db, generation: Default::default() }
    }

    /// The write generation of this process (see [`Store::generation`]'s field).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    // ----- connections -----------------------------------------------------------------------

    /// The caller's connection with this id (removed ones only if asked).
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
        tx.commit().await?;
        // After the commit: a reader that saw the old generation refetches.
        self.bump();
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
        accounts: &[wire::Account],
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
                "update bank_connections set transactions_cursor = null, transactions_loop_cursor = null where id = $1",
            )
            .bind(&connection.id)
            .execute(&mut *tx)
            .await?;
        }
        let mut used = std::collections::HashSet::new();
        let mut ids = Vec::with_capacity(accounts.len());
        for (position, a) in accounts.iter().enumerate() {
            let same_id = existing.iter().find(|e| e.plaid_account_id == a.account_id && !used.contains(&e.id));
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
                    .bind(&a.account_id)
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
        tx.commit().await?;
        // After the commit: a reader that saw the old generation refetches.
        self.bump();
        Ok(ids)
    }

    pub async fn set_status(
        &self,
        connection_id: &str,
        status: ConnectionStatus,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query("update bank_connections set status = $1, updated_at = $2 where id = $3")
            .bind(status.as_str())
            .bind(ts(now))
            .bind(connection_id)
            .execute(&self.db.write)
            .await?;
        // After the commit: a reader that saw the old generation refetches.
        self.bump();
        Ok(())
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
        sqlx::query(
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
        tx.commit().await?;
        // After the commit: a reader that saw the old generation refetches.
        self.bump();
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
        let rows = sqlx::query(&sql).fetch_all(&self.db.read).await?;
        rows.iter()
            .map(|r| {
                Ok(LiveConnection {
                    row: <ConnectionRow as sqlx::FromRow<sqlx::any::AnyRow>>::from_row(r)?,
                    synced_at: r.try_get("transactions_synced_at")?,
                    checked_at: r.try_get("item_checked_at")?,
                })
            })
            .collect()
    }

    /// Sets a connection's status and the Plaid code behind it.
    pub async fn set_status_detail(
        &self,
        connection_id: &str,
        status: ConnectionStatus,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query("update bank_connections set status = $1, status_detail = $2, updated_at = $3 where id = $4")
            .bind(status.as_str())
            .bind(detail)
            .bind(ts(now))
            .bind(connection_id)
            .execute(&self.db.write)
            .await?;
        // After the commit: a reader that saw the old generation refetches.
        self.bump();
        Ok(())
    }

    pub async fn set_consent_expiration(&self, connection_id: &str, at: Option<&str>) -> anyhow::Result<()> {
        sqlx::query("update bank_connections set consent_expires_at = $1 where id = $2")
            .bind(at)
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
        let row = sqlx::query(
            "select cast(case when new_accounts_available then 1 else 0 end as bigint) as n from bank_connections where id = $1",
        )
        .bind(connection_id)
        .fetch_one(&self.db.read)
        .await?;
        Ok(row.try_get::<i64, _>("n")? != 0)
    }

    pub async fn mark_item_checked(&self, connection_id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query("update bank_connections set item_checked_at = $1 where id = $2")
            .bind(ts(now))
            .bind(connection_id)
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

    // ----- addresses --------------------------------------------------------------------------

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
        let row = sqlx::query("select count(*) as n from connection_addresses where connection_id = $1")
            .bind(connection_id)
            .fetch_one(&self.db.read)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    // ----- reads ------------------------------------------------------------------------------

    /// The caller's live accounts, filtered.
    pub async fn accounts(&self, user_id: &str, f: &AccountFilter) -> anyhow::Result<Vec<BankAccount>> {
        let w = Where::new(user_id).accounts(f).raw("a.removed_at is null").raw("c.removed_at is null");
        let sql = format!(
            "select a.id, a.connection_id, c.plaid_item_id, c.institution_name, a.plaid_account_id, a.name, a.mask, \
             a.account_type, a.subtype, c.status from bank_accounts a join bank_connections c on c.id = a.connection_id \
             where {} order by c.created_at, c.id, a.position, a.id",
            w.sql()
        );
        let rows = bind_all(sqlx::query(&sql), &w.args).fetch_all(&self.db.read).await?;
        rows.iter()
            .map(|r| {
                Ok(BankAccount {
                    id: r.try_get("id")?,
                    connection_id: r.try_get("connection_id")?,
                    plaid_item_id: r.try_get("plaid_item_id")?,
                    institution_name: r.try_get("institution_name")?,
                    plaid_account_id: r.try_get("plaid_account_id")?,
                    name: r.try_get("name")?,
                    mask: r.try_get("mask")?,
                    account_type: r.try_get("account_type")?,
                    subtype: r.try_get("subtype")?,
                    status: ConnectionStatus::parse(&r.try_get::<String, _>("status")?)
                        .unwrap_or(ConnectionStatus::Error),
                })
            })
            .collect()
    }

    /// The latest stored balance of each of the caller's live accounts, filtered.
    pub async fn latest_balances(&self, user_id: &str, f: &AccountFilter) -> anyhow::Result<Vec<Balance>> {
        let w = Where::new(user_id)
            .accounts(f)
            .raw("a.removed_at is null")
            .raw("c.removed_at is null")
            .raw("b.started_at = (select max(b2.started_at) from balance_snapshots b2 where b2.account_id = a.id)");
        let sql = format!(
            "select a.id as account_id, a.connection_id, c.plaid_item_id, b.available, b.current_balance, \
             b.currency_code, b.source, b.balance_trigger, b.started_at \
             from bank_accounts a join bank_connections c on c.id = a.connection_id \
             join balance_snapshots b on b.account_id = a.id \
             where {} order by c.created_at, c.id, a.position, a.id",
            w.sql()
        );
        let rows = bind_all(sqlx::query(&sql), &w.args).fetch_all(&self.db.read).await?;
        let mut out: Vec<Balance> = Vec::with_capacity(rows.len());
        for r in &rows {
            let account_id: String = r.try_get("account_id")?;
            // Two snapshots in the same microsecond: keep one.
            if out.last().is_some_and(|b| b.account_id == account_id) {
                continue;
            }
            out.push(Balance {
                account_id,
                connection_id: r.try_get("connection_id")?,
                plaid_item_id: r.try_get("plaid_item_id")?,
                available: dec(r.try_get("available")?)?,
                current: dec(r.try_get("current_balance")?)?,
                currency_code: r.try_get("currency_code")?,
                source: BalanceSource::parse(&r.try_get::<String, _>("source")?).unwrap_or(BalanceSource::PlaidCached),
                trigger: BalanceTrigger::parse(&r.try_get::<String, _>("balance_trigger")?)
                    .unwrap_or(BalanceTrigger::Refresh),
                started_at: parse_ts(&r.try_get::<String, _>("started_at")?)?,
            });
        }
        Ok(out)
    }

    /// Stores a balance snapshot for each account of a connection (matched by Plaid id).
    pub async fn store_balances(
        &self,
        connection: &ConnectionRow,
        accounts: &[wire::Account],
        trigger: BalanceTrigger,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let rows = self.account_rows(&connection.id).await?;
        let at = ts(now);
        let mut tx = self.db.write.begin().await?;
        for a in accounts {
            if let Some(row) = rows.iter().find(|r| r.plaid_account_id == a.account_id) {
                insert_balance(&mut tx, &row.id, &connection.user_id, a, trigger, &at).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A page of the caller's transactions, newest first, and the size of the whole filtered set.
    pub async fn transactions(
        &self,
        user_id: &str,
        f: &TransactionFilter,
    ) -> anyhow::Result<(i64, Vec<BankTransaction>)> {
        let mut w = Where::new(user_id)
            .opt("a.id", &f.accounts.account_id)
            .opt("c.id", &f.accounts.connection_id)
            .opt("c.plaid_item_id", &f.accounts.plaid_item_id)
            .raw("t.removed_at is null")
            .raw("a.removed_at is null")
            .raw("c.removed_at is null");
        // The user filter applies to the transaction row itself so its index is usable.
        w.clauses[0] = "t.user_id = $1".into();
        if let Some(s) = f.start {
            w = w.cmp("t.transaction_date", ">=", ts(s));
        }
        if let Some(e) = f.end {
            w = w.cmp("t.transaction_date", "<=", ts(e));
        }
        if let Some(p) = f.pending {
            w = w.raw(if p { "t.pending = true" } else { "t.pending = false" });
        }
        let from = "from bank_transactions t join bank_accounts a on a.id = t.account_id \
                    join bank_connections c on c.id = t.connection_id";
        // The total never counts the history: without a date range the per-account counts
        // answer, with one the per-day counts of the days in range (at most one row per
        // account and day).
        let sum = match f.pending {
            None => "coalesce(n.posted, 0) + coalesce(n.pending, 0)",
            Some(true) => "coalesce(n.pending, 0)",
            Some(false) => "coalesce(n.posted, 0)",
        };
        let mut c = Where::new(user_id).accounts(&f.accounts).raw("a.removed_at is null").raw("c.removed_at is null");
        let counts = if f.start.is_none() && f.end.is_none() {
            "left join account_transaction_counts n on n.account_id = a.id"
        } else {
            if let Some(s) = f.start {
                c = c.cmp("n.day", ">=", ts(s));
            }
            if let Some(e) = f.end {
                c = c.cmp("n.day", "<=", ts(e));
            }
            "join account_transaction_day_counts n on n.account_id = a.id"
        };
        let sql = format!(
            "select cast(coalesce(sum({sum}), 0) as bigint) as n from bank_accounts a \
             join bank_connections c on c.id = a.connection_id {counts} where {}",
            c.sql()
        );
        let total: i64 = bind_all(sqlx::query(&sql), &c.args).fetch_one(&self.db.read).await?.try_get("n")?;
        let page_sql = format!(
            "select t.id, c.plaid_item_id, t.connection_id, t.account_id, t.plaid_transaction_id, t.amount, \
             t.currency_code, t.transaction_date, t.description, t.merchant_name, t.category, \
             cast(case when t.pending then 1 else 0 end as bigint) as pending \
             {from} where {} order by t.transaction_date desc, t.id desc limit {} offset {}",
            w.sql(),
            f.limit,
            f.offset
        );
        let rows = bind_all(sqlx::query(&page_sql), &w.args).fetch_all(&self.db.read).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(BankTransaction {
                id: r.try_get("id")?,
                plaid_item_id: r.try_get("plaid_item_id")?,
                connection_id: r.try_get("connection_id")?,
                account_id: r.try_get("account_id")?,
                plaid_transaction_id: r.try_get("plaid_transaction_id")?,
                amount: dec(Some(r.try_get("amount")?))?.unwrap_or_default(),
                currency_code: r.try_get("currency_code")?,
                date: parse_ts(&r.try_get::<String, _>("transaction_date")?)?,
                description: r.try_get("description")?,
                merchant_name: r.try_get("merchant_name")?,
                category: r.try_get("category")?,
                pending: r.try_get::<i64, _>("pending")? != 0,
            });
        }
        Ok((total, out))
    }

    // ----- transaction sync -------------------------------------------------------------------

    /// Applies one `/transactions/sync` page and saves `next_cursor`, in one transaction: a
    /// crash leaves either the page and its cursor, or neither.
    ///
    /// The state of every row the page touches is read first and followed in memory, so the
    /// page is applied in its order (upserts, then posted transactions taking over their
    /// pending rows, then removals), the per-account counts move by exact deltas, and a page
    /// applied a second time (after a restart of the pagination loop) converges instead of
    /// colliding.
    pub async fn apply_sync_page(
        &self,
        connection: &ConnectionRow,
        page: &wire::TransactionsSyncResponse,
        now: DateTime<Utc>,
    ) -> anyhow::Result<SyncCounts> {
        let account_ids: HashMap<String, String> =
            self.account_rows(&connection.id).await?.into_iter().map(|a| (a.plaid_account_id, a.id)).collect();
        let at = ts(now);
        let mut counts = SyncCounts::default();
        let mut tx = self.db.write.begin().await?;

        let mut touched: Vec<&str> = Vec::new();
        for t in page.added.iter().chain(page.modified.iter()) {
            touched.push(&t.transaction_id);
            if let Some(p) = &t.pending_transaction_id {
                touched.push(p);
            }
        }
        touched.extend(page.removed.iter().map(|r| r.transaction_id.as_str()));
        touched.sort_unstable();
        touched.dedup();
        let mut rows = row_states(&mut tx, &connection.id, &touched).await?;
        let mut deltas = Deltas::default();

        // Plain upserts, in batches; the last version of a transaction in the page wins.
        let mut latest: HashMap<&str, &wire::Transaction> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        let mut linked: Vec<&wire::Transaction> = Vec::new();
        for t in page.added.iter().chain(page.modified.iter()) {
            if !account_ids.contains_key(&t.account_id) {
                counts.skipped += 1;
                continue;
            }
            if t.pending_transaction_id.is_some() {
                linked.push(t);
            } else if latest.insert(t.transaction_id.as_str(), t).is_none() {
                order.push(t.transaction_id.as_str());
            }
        }
        let plain: Vec<&wire::Transaction> = order.iter().map(|id| latest[id]).collect();
        for chunk in plain.chunks(UPSERT_BATCH) {
            for t in chunk {
                let day = tx_date(t);
                deltas.replace(rows.get(&t.transaction_id), &account_ids[&t.account_id], t.pending, &day);
                rows.insert(t.transaction_id.clone(), RowState::live(&account_ids[&t.account_id], t.pending, day));
            }
            upsert_transactions(&mut tx, connection, chunk, &account_ids, &at).await?;
            counts.upserted += chunk.len();
        }

        // A posted transaction takes over its pending one's row (and historical id).
        for t in linked {
            let account_id = &account_ids[&t.account_id];
            let day = tx_date(t);
            let pending_id = t.pending_transaction_id.as_deref().unwrap_or_default();
            let own = rows.get(&t.transaction_id).cloned();
            let pending_row = rows.get(pending_id).cloned();
            if own.is_some() {
                // Already taken over (a replayed page): refresh it, and retire a pending row
                // that the replay brought back.
                deltas.replace(own.as_ref(), account_id, t.pending, &day);
                upsert_transactions(&mut tx, connection, &[t], &account_ids, &at).await?;
                counts.upserted += 1;
                if let Some(p) = pending_row.filter(|p| p.live) {
                    deltas.remove(&p);
                    mark_removed(&mut tx, &connection.id, pending_id, &at).await?;
                    rows.insert(pending_id.to_string(), RowState { live: false, ..p });
                }
            } else if let Some(p) = pending_row {
                deltas.replace(Some(&p), account_id, t.pending, &day);
                sqlx::query(
                    "update bank_transactions set plaid_transaction_id = $1, account_id = $2, amount = $3, \
                     currency_code = $4, transaction_date = $5, description = $6, merchant_name = $7, category = $8, \
                     pending = $9, removed_at = null, updated_at = $10 \
                     where connection_id = $11 and plaid_transaction_id = $12",
                )
                .bind(&t.transaction_id)
                .bind(account_id)
                .bind(t.amount.to_string())
                .bind(currency(t))
                .bind(tx_date(t))
                .bind(&t.name)
                .bind(t.merchant_name.as_deref())
                .bind(category(t))
                .bind(t.pending)
                .bind(&at)
                .bind(&connection.id)
                .bind(pending_id)
                .execute(&mut *tx)
                .await?;
                rows.remove(pending_id);
                counts.posted += 1;
            } else {
                deltas.replace(None, account_id, t.pending, &day);
                upsert_transactions(&mut tx, connection, &[t], &account_ids, &at).await?;
                counts.upserted += 1;
            }
            rows.insert(t.transaction_id.clone(), RowState::live(account_id, t.pending, day));
        }

        for r in &page.removed {
            if let Some(row) = rows.get(&r.transaction_id).cloned().filter(|row| row.live) {
                deltas.remove(&row);
                mark_removed(&mut tx, &connection.id, &r.transaction_id, &at).await?;
                rows.insert(r.transaction_id.clone(), RowState { live: false, ..row });
                counts.removed += 1;
            }
        }

        for ((account_id, day), (posted, pending)) in deltas.0.iter().filter(|(_, d)| **d != (0, 0)) {
            sqlx::query(
                "insert into account_transaction_day_counts (account_id, day, posted, pending) values ($1, $2, $3, $4) \
                 on conflict (account_id, day) do update set \
                 posted = account_transaction_day_counts.posted + excluded.posted, \
                 pending = account_transaction_day_counts.pending + excluded.pending",
            )
            .bind(account_id)
            .bind(day)
            .bind(*posted)
            .bind(*pending)
            .execute(&mut *tx)
            .await
            .context("update account_transaction_day_counts")?;
        }
        for (account_id, (posted, pending)) in deltas.by_account().into_iter().filter(|(_, d)| *d != (0, 0)) {
            sqlx::query(
                "insert into account_transaction_counts (account_id, posted, pending) values ($1, $2, $3) \
                 on conflict (account_id) do update set posted = account_transaction_counts.posted + excluded.posted, \
                 pending = account_transaction_counts.pending + excluded.pending",
            )
            .bind(account_id)
            .bind(posted)
            .bind(pending)
            .execute(&mut *tx)
            .await
            .context("update account_transaction_counts")?;
        }

        // The end of a loop is also where the next loop begins.
        sqlx::query(
            "update bank_connections set transactions_cursor = $1, transactions_synced_at = $2, \
             transactions_loop_cursor = case when $4 then $1 else transactions_loop_cursor end where id = $3",
        )
        .bind(&page.next_cursor)
        .bind(&at)
        .bind(&connection.id)
        .bind(!page.has_more)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// Refreshes the planner's statistics of the tables the read paths join (PostgreSQL). A first sync
    /// grows the table from nothing to 100,000 rows in seconds, long before autovacuum looks;
    /// with statistics that still say "empty", PostgreSQL scans and sorts the whole history for
    /// a page of 50 and for each sync page's lookups. SQLite's planner does not need this.
    pub async fn refresh_statistics(&self) -> anyhow::Result<()> {
        if self.db.backend == crate::db::Backend::Postgres {
            // The small tables too: below autovacuum's threshold they may never be analyzed,
            // and a join estimated at one row makes the planner sort the whole history.
            sqlx::query(
                "analyze bank_transactions, bank_accounts, bank_connections, account_transaction_counts, \
                 account_transaction_day_counts",
            )
            .execute(&self.db.write)
            .await?;
        }
        Ok(())
    }

    /// Where the current sync pagination loop of a connection began.
    pub async fn loop_cursor(&self, connection_id: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("select transactions_loop_cursor from bank_connections where id = $1")
            .bind(connection_id)
            .fetch_optional(&self.db.write)
            .await?;
        Ok(row.map(|r| r.try_get::<Option<String>, _>("transactions_loop_cursor")).transpose()?.flatten())
    }

    // ----- items exchanged, not yet stored ------------------------------------------------------

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
        let row = sqlx::query(
            "select user_id, access_token_sealed, access_token_key_id from pending_item_removals where plaid_item_id = $1",
        )
        .bind(item_id)
        .fetch_optional(&self.db.write)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get("user_id")?,
                Sealed { blob: r.try_get("access_token_sealed")?, key_id: r.try_get("access_token_key_id")? },
            ))
        })
        .transpose()
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
        let row = sqlx::query("select count(*) as n from bank_connections where plaid_item_id = $1")
            .bind(item_id)
            .fetch_one(&self.db.write)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    // ----- token keys ----------------------------------------------------------------------------

    /// Every key id that sealed a stored access token, with how many tokens it sealed.
    pub async fn token_key_ids(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "select k, cast(count(*) as bigint) as n from (\
             select access_token_key_id as k from bank_connections \
             union all select access_token_key_id as k from pending_item_removals) keys group by k order by k",
        )
        .fetch_all(&self.db.read)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("k")?, r.try_get("n")?))).collect()
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
        let rows = sqlx::query(
            "select plaid_item_id, user_id, access_token_sealed, access_token_key_id from pending_item_removals \
             where access_token_key_id <> $1",
        )
        .bind(current)
        .fetch_all(&self.db.write)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("plaid_item_id")?,
                    r.try_get("user_id")?,
                    Sealed { blob: r.try_get("access_token_sealed")?, key_id: r.try_get("access_token_key_id")? },
                ))
            })
            .collect()
    }

    /// Replaces a pending item's sealed token if it is still `old`.
    pub async fn reseal_pending_item(&self, item_id: &str, old: &Sealed, new: &Sealed) -> anyhow::Result<bool> {
        self.replace_sealed("update pending_item_removals", "plaid_item_id", item_id, old, new).await
    }

    // ----- idempotency and throttling ------------------------------------------------------------

    /// Claims a public token for processing. A `PENDING` claim older than `stale_after` is
    /// taken over (its process died); a failed one whose error may pass is retried.
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
        let row = sqlx::query(
            "select state, result, updated_at from link_completions where user_id = $1 and public_token_sha256 = $2",
        )
        .bind(user_id)
        .bind(token_hash)
        .fetch_one(&self.db.write)
        .await?;
        let state: String = row.try_get("state")?;
        let result: Option<String> = row.try_get("result")?;
        let updated: String = row.try_get("updated_at")?;
        match state.as_str() {
            "DONE" => Ok(Claim::Done(result.unwrap_or_default())),
            "FAILED" => Ok(Claim::Failed(result.unwrap_or_default())),
            _ if parse_ts(&updated)? + stale_after < now => {
                // Take over only if nobody else did in between.
                let taken = sqlx::query(
                    "update link_completions set updated_at = $1 where user_id = $2 and public_token_sha256 = $3 \
                     and state = 'PENDING' and updated_at = $4",
                )
                .bind(&at)
                .bind(user_id)
                .bind(token_hash)
                .bind(&updated)
                .execute(&self.db.write)
                .await?
                .rows_affected();
                Ok(if taken == 1 { Claim::Mine } else { Claim::Busy })
            }
            _ => Ok(Claim::Busy),
        }
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
        let last: String = sqlx::query("select last_refresh_at from refresh_throttle where user_id = $1")
            .bind(user_id)
            .fetch_one(&self.db.write)
            .await?
            .try_get("last_refresh_at")?;
        let wait = (parse_ts(&last)? + interval - now).num_seconds().max(1) as u64;
        Ok(Err(wait))
    }
}

/// A connection with its sync and check times.
#[derive(Debug, Clone)]
pub struct LiveConnection {
    pub row: ConnectionRow,
    pub synced_at: Option<String>,
    pub checked_at: Option<String>,
}

/// The state of a stored transaction row, as a sync page sees it.
#[derive(Debug, Clone)]
struct RowState {
    account_id: String,
    pending: bool,
    live: bool,
    /// The stored `transaction_date`.
    day: String,
}

impl RowState {
    fn live(account_id: &str, pending: bool, day: String) -> Self {
        RowState { account_id: account_id.to_string(), pending, live: true, day }
    }
}

/// Changes to the live counts: (posted, pending) by account and day. The per-account totals
/// are their sums.
#[derive(Default)]
struct Deltas(HashMap<(String, String), (i64, i64)>);

impl Deltas {
    fn add(&mut self, account_id: &str, day: &str, pending: bool, n: i64) {
        let d = self.0.entry((account_id.to_string(), day.to_string())).or_default();
        if pending {
            d.1 += n;
        } else {
            d.0 += n;
        }
    }

    fn remove(&mut self, row: &RowState) {
        self.add(&row.account_id, &row.day, row.pending, -1);
    }

    /// A row becomes (or stays) live as `account_id`/`pending` on `day`, replacing `old` if it
    /// was live.
    fn replace(&mut self, old: Option<&RowState>, account_id: &str, pending: bool, day: &str) {
        if let Some(old) = old.filter(|o| o.live) {
            self.remove(old);
        }
        self.add(account_id, day, pending, 1);
    }

    /// The per-account sums.
    fn by_account(&self) -> HashMap<&str, (i64, i64)> {
        let mut out: HashMap<&str, (i64, i64)> = HashMap::new();
        for ((account, _), (posted, pending)) in &self.0 {
            let e = out.entry(account.as_str()).or_default();
            e.0 += posted;
            e.1 += pending;
        }
        out
    }
}

/// The current state of the rows with these Plaid ids on a connection.
async fn row_states(
    tx: &mut Transaction<'_, Any>,
    connection_id: &str,
    plaid_ids: &[&str],
) -> anyhow::Result<HashMap<String, RowState>> {
    let mut out = HashMap::new();
    for chunk in plaid_ids.chunks(500) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "select plaid_transaction_id, account_id, cast(case when pending then 1 else 0 end as bigint) as pending, \
             cast(case when removed_at is null then 1 else 0 end as bigint) as live, transaction_date \
             from bank_transactions \
             where connection_id = $1 and plaid_transaction_id in ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(connection_id);
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&mut **tx).await? {
            out.insert(
                r.try_get::<String, _>("plaid_transaction_id")?,
                RowState {
                    account_id: r.try_get("account_id")?,
                    pending: r.try_get::<i64, _>("pending")? != 0,
                    live: r.try_get::<i64, _>("live")? != 0,
                    day: r.try_get("transaction_date")?,
                },
            );
        }
    }
    Ok(out)
}

async fn mark_removed(
    tx: &mut Transaction<'_, Any>,
    connection_id: &str,
    plaid_id: &str,
    at: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "update bank_transactions set removed_at = $1, updated_at = $1 \
         where connection_id = $2 and plaid_transaction_id = $3 and removed_at is null",
    )
    .bind(at)
    .bind(connection_id)
    .bind(plaid_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Rows per multi-row upsert (13 parameters each, far below both backends' limits).
const UPSERT_BATCH: usize = 100;

/// Inserts or updates transactions by their Plaid id, in one statement.
async fn upsert_transactions(
    tx: &mut Transaction<'_, Any>,
    connection: &ConnectionRow,
    rows: &[&wire::Transaction],
    account_ids: &std::collections::HashMap<String, String>,
    at: &str,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    const COLS: usize = 13;
    let values: Vec<String> = (0..rows.len())
        .map(|r| {
            let mut p: Vec<String> = (1..=COLS).map(|c| format!("${}", r * COLS + c)).collect();
            // created_at and updated_at share the last parameter.
            p.push(format!("${}", r * COLS + COLS));
            format!("({})", p.join(", "))
        })
        .collect();
    let sql = format!(
        "insert into bank_transactions (id, user_id, connection_id, account_id, plaid_transaction_id, amount, \
         currency_code, transaction_date, description, merchant_name, category, pending, created_at, updated_at) \
         values {} on conflict (connection_id, plaid_transaction_id) do update set account_id = excluded.account_id, \
         amount = excluded.amount, currency_code = excluded.currency_code, \
         transaction_date = excluded.transaction_date, description = excluded.description, \
         merchant_name = excluded.merchant_name, category = excluded.category, pending = excluded.pending, \
         removed_at = null, updated_at = excluded.updated_at",
        values.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for t in rows {
        q = q
            .bind(new_id())
            .bind(&connection.user_id)
            .bind(&connection.id)
            .bind(account_ids.get(&t.account_id).map(String::as_str).unwrap_or_default())
            .bind(&t.transaction_id)
            .bind(t.amount.to_string())
            .bind(currency(t))
            .bind(tx_date(t))
            .bind(&t.name)
            .bind(t.merchant_name.as_deref())
            .bind(category(t))
            .bind(t.pending)
            .bind(at);
    }
    q.execute(&mut **tx).await.context("upsert bank_transactions")?;
    Ok(())
}

/// What one sync page changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub upserted: usize,
    pub posted: usize,
    pub removed: usize,
    pub skipped: usize,
}

fn currency(t: &wire::Transaction) -> Option<&str> {
    t.iso_currency_code.as_deref().or(t.unofficial_currency_code.as_deref())
}

fn tx_date(t: &wire::Transaction) -> String {
    ts(t.date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}

fn category(t: &wire::Transaction) -> Option<String> {
    match (&t.personal_finance_category, &t.category) {
        (Some(p), _) => Some(p.primary.clone()),
        (None, Some(c)) if !c.is_empty() => Some(c.join(" > ")),
        _ => None,
    }
}

async fn insert_account(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    connection_id: &str,
    user_id: &str,
    a: &wire::Account,
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
    .bind(&a.account_id)
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
    a: &wire::Account,
    trigger: BalanceTrigger,
    at: &str,
) -> anyhow::Result<()> {
    let b = &a.balances;
    sqlx::query(
        "insert into balance_snapshots (id, account_id, user_id, available, current_balance, limit_amount, \
         currency_code, source, balance_trigger, started_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(new_id())
    .bind(account_id)
    .bind(user_id)
    .bind(b.available.map(|d| d.to_string()))
    .bind(b.current.map(|d| d.to_string()))
    .bind(b.limit.map(|d| d.to_string()))
    .bind(b.iso_currency_code.as_deref().or(b.unofficial_currency_code.as_deref()))
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
