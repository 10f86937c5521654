//! The reads the gateway serves: accounts, latest balances, transaction pages.

use std::collections::HashMap;
use std::sync::Arc;

use super::rows::{AccountRead, BalanceRead, TransactionRead};
use super::{AccountFilter, Store, TransactionFilter, TransactionPage, Where};
use crate::db::{Db, ts};
use crate::domain::{Balance, BankAccount, BankTransaction};

impl Store {
    /// The caller's live accounts, in order: by connection (oldest first), then as the bank
    /// lists them. Concurrent reads share statements (see [`crate::batch`]).
    pub async fn accounts(&self, user_id: &str) -> anyhow::Result<Arc<Vec<BankAccount>>> {
        self.accounts_batch.get(user_id.to_owned(), ()).await
    }

    /// The live accounts of each of `users` (distinct), in one statement; a user without any
    /// has an empty list.
    pub(super) async fn accounts_of(
        db: &Db,
        users: Vec<String>,
    ) -> anyhow::Result<HashMap<String, Arc<Vec<BankAccount>>>> {
        // From the callers' connections to their accounts through (user_id, connection_id): one
        // index probe per connection rather than one per account.
        let sql = format!(
            "select c.user_id, a.id, a.connection_id, c.plaid_item_id, c.institution_name, a.plaid_account_id, a.name, \
             a.mask, a.account_type, a.subtype, c.status, c.history_ready_at, c.transactions_synced_at \
             from bank_connections c join bank_accounts a on a.user_id = c.user_id and a.connection_id = c.id \
             where {} and a.removed_at is null and c.removed_at is null \
             order by c.user_id, c.created_at, c.id, a.position, a.id",
            db.dialect().in_json_strings("c.user_id", 1)
        );
        let args = [Some(serde_json::to_string(&users)?)];
        let rows: Vec<AccountRead> =
            db.read_with(move |mut conn| Box::pin(async move { Ok(conn.fetch_all(&sql, &args).await?) })).await?;
        let mut out: HashMap<String, Arc<Vec<BankAccount>>> = HashMap::with_capacity(users.len());
        let mut rows = rows.into_iter().peekable();
        while let Some(first) = rows.next() {
            let user = first.user_id.clone();
            let mut accounts = vec![BankAccount::from(first)];
            while let Some(next) = rows.next_if(|r| r.user_id == user) {
                accounts.push(next.into());
            }
            out.insert(user, Arc::new(accounts));
        }
        for user in users {
            out.entry(user).or_default();
        }
        Ok(out)
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
        let rows: Vec<BalanceRead> = self
            .db
            .read_with(move |mut conn| Box::pin(async move { Ok(conn.fetch_all(&sql, &w.args).await?) }))
            .await?;
        let mut out: Vec<Balance> = Vec::with_capacity(rows.len());
        for r in rows {
            // Two snapshots in the same microsecond: keep one.
            if out.last().is_none_or(|b| b.account_id != r.account_id) {
                out.push(r.into());
            }
        }
        Ok(out)
    }

    /// A page of the caller's transactions, newest first, and the size of the whole filtered set.
    pub async fn transactions(&self, user_id: &str, f: &TransactionFilter) -> anyhow::Result<TransactionPage> {
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
        if let Some((at, id)) = &f.after {
            w = w.before(("t.transaction_date", "t.id"), (ts(*at), id.clone()));
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
        let count_sql = sql;
        let page_sql = format!(
            "select t.id, c.plaid_item_id, t.connection_id, t.account_id, t.plaid_transaction_id, t.amount, \
             t.currency_code, t.transaction_date, t.description, t.merchant_name, t.category, \
             cast(case when t.pending then 1 else 0 end as bigint) as pending \
             {from} where {} order by t.transaction_date desc, t.id desc limit {} offset {}",
            w.sql(),
            // One more row than the page says whether another page follows.
            f.limit + 1,
            f.offset
        );
        let (total, rows): (i64, Vec<TransactionRead>) = self
            .db
            .read_with(move |mut conn| {
                Box::pin(async move {
                    let total = conn.fetch_i64(&count_sql, &c.args).await?;
                    let rows = conn.fetch_all(&page_sql, &w.args).await?;
                    Ok((total, rows))
                })
            })
            .await?;
        let mut transactions: Vec<BankTransaction> = rows.into_iter().map(BankTransaction::from).collect();
        let has_next = transactions.len() as i64 > f.limit;
        transactions.truncate(f.limit.max(0) as usize);
        Ok(TransactionPage { total, transactions, has_next })
    }
}
