//! One `/transactions/sync` page applied with its cursor, in one transaction.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};

use super::events::Written;
use super::rows::{ConnectionRow, Flag};
use super::{Store, new_id};
use crate::db::ts;
use crate::domain::{EventChange, IncomingTransaction, SyncPage};

impl Store {
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
        page: &SyncPage,
        now: DateTime<Utc>,
    ) -> anyhow::Result<SyncCounts> {
        let account_ids: HashMap<String, String> =
            self.account_rows(&connection.id).await?.into_iter().map(|a| (a.plaid_account_id, a.id)).collect();
        let at = ts(now);
        let mut counts = SyncCounts::default();
        let mut tx = self.db.write.begin().await?;

        let mut touched: Vec<&str> = Vec::new();
        for t in page.added.iter().chain(page.modified.iter()) {
            touched.push(&t.plaid_transaction_id);
            if let Some(p) = &t.pending_transaction_id {
                touched.push(p);
            }
        }
        touched.extend(page.removed.iter().map(String::as_str));
        touched.sort_unstable();
        touched.dedup();
        let mut rows = row_states(&mut tx, &connection.id, &touched).await?;
        let mut deltas = Deltas::default();

        // Plain upserts, in batches; the last version of a transaction in the page wins.
        let mut latest: HashMap<&str, &IncomingTransaction> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        let mut linked: Vec<&IncomingTransaction> = Vec::new();
        for t in page.added.iter().chain(page.modified.iter()) {
            if !account_ids.contains_key(&t.plaid_account_id) {
                counts.skipped += 1;
                continue;
            }
            if t.pending_transaction_id.is_some() {
                linked.push(t);
            } else if latest.insert(t.plaid_transaction_id.as_str(), t).is_none() {
                order.push(t.plaid_transaction_id.as_str());
            }
        }
        let plain: Vec<&IncomingTransaction> = order.iter().map(|id| latest[id]).collect();
        for chunk in plain.chunks(UPSERT_BATCH) {
            for t in chunk {
                let day = day_of(t);
                deltas.replace(rows.get(&t.plaid_transaction_id), &account_ids[&t.plaid_account_id], t.pending, &day);
                rows.insert(
                    t.plaid_transaction_id.clone(),
                    RowState::live(&account_ids[&t.plaid_account_id], t.pending, day),
                );
            }
            upsert_transactions(&mut tx, connection, chunk, &account_ids, &at).await?;
            counts.upserted += chunk.len();
        }

        // A posted transaction takes over its pending one's row (and historical id).
        for t in linked {
            let account_id = &account_ids[&t.plaid_account_id];
            let day = day_of(t);
            let pending_id = t.pending_transaction_id.as_deref().unwrap_or_default();
            let own = rows.get(&t.plaid_transaction_id).cloned();
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
                .bind(&t.plaid_transaction_id)
                .bind(account_id)
                .bind(t.amount.to_string())
                .bind(t.currency_code.as_deref())
                .bind(day_of(t))
                .bind(&t.description)
                .bind(t.merchant_name.as_deref())
                .bind(t.category.as_deref())
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
            rows.insert(t.plaid_transaction_id.clone(), RowState::live(account_id, t.pending, day));
        }

        for removed in &page.removed {
            if let Some(row) = rows.get(removed).cloned().filter(|row| row.live) {
                deltas.remove(&row);
                mark_removed(&mut tx, &connection.id, removed, &at).await?;
                rows.insert(removed.clone(), RowState { live: false, ..row });
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

        // What subscribers hear: the first sync's progress and its end, then every change.
        let changed = !(page.added.is_empty() && page.modified.is_empty() && page.removed.is_empty());
        let mut events = Written::default();
        let dialect = self.db.dialect();
        let mut became_ready = false;
        if connection.history_ready_at.is_none() {
            if !page.has_more && page.history_complete {
                let first = sqlx::query(
                    "update bank_connections set history_ready_at = $1 where id = $2 and history_ready_at is null",
                )
                .bind(&at)
                .bind(&connection.id)
                .execute(&mut *tx)
                .await?;
                became_ready = first.rows_affected() > 0;
                if became_ready {
                    events.record(&mut tx, dialect, &connection.id, EventChange::HistoryReady, &at).await?;
                }
            } else if changed {
                events.record(&mut tx, dialect, &connection.id, EventChange::HistorySyncProgress, &at).await?;
            }
        } else if changed {
            let change = EventChange::TransactionsUpdated {
                added: page.added.len() as i64,
                modified: page.modified.len() as i64,
                removed: page.removed.len() as i64,
            };
            events.record(&mut tx, dialect, &connection.id, change, &at).await?;
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
        if became_ready {
            // historyStatus changed: cached account reads are stale.
            self.bump();
        }
        self.events_committed(events);
        Ok(counts)
    }

    /// Refreshes the planner's statistics of the tables the read paths join (PostgreSQL). A first sync
    /// grows the table from nothing to 100,000 rows in seconds, long before autovacuum looks;
    /// with statistics that still say "empty", PostgreSQL scans and sorts the whole history for
    /// a page of 50 and for each sync page's lookups. SQLite's planner does not need this.
    pub async fn refresh_statistics(&self) -> anyhow::Result<()> {
        if let Some(sql) = self.db.dialect().refresh_statistics(&[
            "bank_transactions",
            "bank_accounts",
            "bank_connections",
            "account_transaction_counts",
            "account_transaction_day_counts",
        ]) {
            sqlx::query(&sql).execute(&self.db.write).await?;
        }
        Ok(())
    }

    /// Where the current sync pagination loop of a connection began.
    pub async fn loop_cursor(&self, connection_id: &str) -> anyhow::Result<Option<String>> {
        let cursor: Option<Option<String>> =
            sqlx::query_scalar("select transactions_loop_cursor from bank_connections where id = $1")
                .bind(connection_id)
                .fetch_optional(&self.db.write)
                .await?;
        Ok(cursor.flatten())
    }
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

/// A stored transaction row's state, as selected.
#[derive(sqlx::FromRow)]
struct StoredState {
    plaid_transaction_id: String,
    account_id: String,
    pending: Flag,
    live: Flag,
    transaction_date: String,
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
        let mut q = sqlx::query_as::<_, StoredState>(&sql).bind(connection_id);
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&mut **tx).await? {
            let state =
                RowState { account_id: r.account_id, pending: r.pending.0, live: r.live.0, day: r.transaction_date };
            out.insert(r.plaid_transaction_id, state);
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
    rows: &[&IncomingTransaction],
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
            .bind(account_ids.get(&t.plaid_account_id).map(String::as_str).unwrap_or_default())
            .bind(&t.plaid_transaction_id)
            .bind(t.amount.to_string())
            .bind(t.currency_code.as_deref())
            .bind(day_of(t))
            .bind(&t.description)
            .bind(t.merchant_name.as_deref())
            .bind(t.category.as_deref())
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

/// The stored `transaction_date` of a transaction: midnight UTC of its calendar day.
fn day_of(t: &IncomingTransaction) -> String {
    ts(t.date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}
