//! Connection events: written inside the transaction of the change that causes them, read
//! back in their one order, and dropped after the retention window.

use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};

use super::Store;
use super::rows::EventRead;
use crate::db::{Dialect, ts};
use crate::domain::{ConnectionEvent, EventChange};

/// The connection's live transactions, counted from the per-account counts (no history scan).
const TRANSACTIONS_OF_CONNECTION: &str = "(select cast(coalesce(sum(n.posted + n.pending), 0) as bigint) \
     from account_transaction_counts n join bank_accounts a on a.id = n.account_id \
     where a.connection_id = c.id and a.removed_at is null)";

/// Events written by one transaction, recorded in it; [`Store`] wakes subscribers after the
/// commit when there was any.
#[derive(Default)]
#[must_use = "call Store::events_committed after the commit"]
pub(super) struct Written(usize);

impl Written {
    /// Writes one event for `connection_id` in `tx`. Call it after the transaction's other
    /// statements: it takes the event log's row lock, which it holds until the commit, so
    /// events are numbered in commit order (see the migration).
    pub(super) async fn record(
        &mut self,
        tx: &mut Transaction<'_, Any>,
        dialect: Dialect,
        connection_id: &str,
        change: EventChange,
        at: &str,
    ) -> anyhow::Result<()> {
        let seq: i64 = sqlx::query_scalar(
            "update connection_event_log set last_seq = last_seq + 1 where id = 1 returning last_seq",
        )
        .fetch_one(&mut **tx)
        .await?;
        // The user's own number, under the event log's lock (see migration 0009).
        let user_seq: i64 = sqlx::query_scalar(
            "insert into connection_event_users (user_id, last_user_seq) \
             select c.user_id, 1 from bank_connections c where c.id = $1 \
             on conflict (user_id) do update set last_user_seq = connection_event_users.last_user_seq + 1 \
             returning last_user_seq",
        )
        .bind(connection_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no connection {connection_id} to record an event for"))?;
        let (status, counts) = match change {
            EventChange::StatusChanged(s) => (Some(s.as_str()), None),
            EventChange::TransactionsUpdated { added, modified, removed } => (None, Some((added, modified, removed))),
            _ => (None, None),
        };
        let counted = matches!(change, EventChange::HistorySyncProgress | EventChange::HistoryReady);
        let sql = format!(
            "insert into connection_events (seq, user_seq, user_id, connection_id, plaid_item_id, event_type, status, \
             transactions, added, modified, removed, occurred_at) \
             select $1, $9, c.user_id, c.id, c.plaid_item_id, $2, $3, {}, $4, $5, $6, $7 from bank_connections c where c.id = $8",
            if counted { TRANSACTIONS_OF_CONNECTION } else { "null" }
        );
        let inserted = sqlx::query(&sql)
            .bind(seq)
            .bind(change.event_type().as_str())
            .bind(status)
            .bind(counts.map(|c| c.0))
            .bind(counts.map(|c| c.1))
            .bind(counts.map(|c| c.2))
            .bind(at)
            .bind(connection_id)
            .bind(user_seq)
            .execute(&mut **tx)
            .await?;
        anyhow::ensure!(inserted.rows_affected() == 1, "no connection {connection_id} to record an event for");
        if self.0 == 0
            && let Some(notify) = dialect.notify_events()
        {
            sqlx::query(notify).execute(&mut **tx).await?;
        }
        self.0 += 1;
        Ok(())
    }
}

/// Where the event log stands: the last event written, and the last one dropped by retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLog {
    pub last_seq: i64,
    pub pruned_through: i64,
}

impl Store {
    /// Wakes this process's event dispatcher after a commit that wrote events.
    pub(super) fn events_committed(&self, written: Written) {
        if written.0 > 0 {
            self.events_signal.notify_one();
        }
    }

    /// What the dispatcher of this process waits on (events committed by this process).
    pub fn events_signal(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.events_signal.clone()
    }

    /// The URL to `LISTEN` on for other processes' events (PostgreSQL only).
    pub fn events_listen_url(&self) -> Option<&str> {
        self.db.postgres_url()
    }

    /// Records a change that has no transaction of its own.
    pub async fn record_event(
        &self,
        connection_id: &str,
        change: EventChange,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut tx = self.db.write.begin().await?;
        let mut written = Written::default();
        written.record(&mut tx, self.db.dialect(), connection_id, change, &ts(now)).await?;
        tx.commit().await?;
        self.events_committed(written);
        Ok(())
    }

    pub async fn event_log(&self) -> anyhow::Result<EventLog> {
        let (last_seq, pruned_through): (i64, i64) =
            sqlx::query_as("select last_seq, pruned_through from connection_event_log where id = 1")
                .fetch_one(&self.db.read)
                .await?;
        Ok(EventLog { last_seq, pruned_through })
    }

    /// Up to `limit` events after `after`, in order: every user's (the dispatcher), or one
    /// user's, optionally one connection's (a subscriber catching up).
    pub async fn events_after(
        &self,
        after: i64,
        user_id: Option<&str>,
        connection_id: Option<&str>,
        limit: i64,
    ) -> anyhow::Result<Vec<ConnectionEvent>> {
        let mut sql = String::from(
            "select seq, user_seq, user_id, connection_id, plaid_item_id, event_type, status, transactions, added, modified, \
             removed, occurred_at from connection_events where seq > $1",
        );
        let mut n = 1;
        for (column, value) in [("user_id", user_id), ("connection_id", connection_id)] {
            if value.is_some() {
                n += 1;
                sql.push_str(&format!(" and {column} = ${n}"));
            }
        }
        sql.push_str(&format!(" order by seq limit ${}", n + 1));
        let mut q = sqlx::query_as::<_, EventRead>(&sql).bind(after);
        for v in [user_id, connection_id].into_iter().flatten() {
            q = q.bind(v);
        }
        let rows = q.bind(limit).fetch_all(&self.db.read).await?;
        rows.into_iter().map(ConnectionEvent::try_from).collect()
    }

    /// Where a user's stream resumes after the user's own event number `own` (the public
    /// event id): the global seq to read after, or `None` when events the user has not seen were
    /// dropped by retention (`pruned_through` and before). A number the user was never given
    /// (beyond its last event) resumes as its last event does: nothing tells it from a real one.
    pub async fn event_resume_point(
        &self,
        user_id: &str,
        own: i64,
        pruned_through: i64,
    ) -> anyhow::Result<Option<i64>> {
        let (first_kept, last, through_own): (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
            "select (select min(user_seq) from connection_events where user_id = $1 and seq > $2), \
                    (select last_user_seq from connection_event_users where user_id = $1), \
                    (select max(seq) from connection_events where user_id = $1 and user_seq <= $3)",
        )
        .bind(user_id)
        .bind(pruned_through)
        .bind(own)
        .fetch_one(&self.db.read)
        .await?;
        // The user's kept events are the numbers first_kept..=last; any number after `own`
        // below them is gone.
        let missed = match first_kept {
            Some(first) => own < first - 1,
            None => own < last.unwrap_or(0),
        };
        if missed {
            return Ok(None);
        }
        Ok(Some(through_own.unwrap_or(0).max(pruned_through)))
    }

    /// Drops the events older than `before` and moves the horizon past them; returns how many.
    pub async fn prune_events(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        let mut tx = self.db.write.begin().await?;
        let through: Option<i64> = sqlx::query_scalar("select max(seq) from connection_events where occurred_at < $1")
            .bind(ts(before))
            .fetch_one(&mut *tx)
            .await?;
        let Some(through) = through else {
            return Ok(0);
        };
        let gone = sqlx::query("delete from connection_events where seq <= $1").bind(through).execute(&mut *tx).await?;
        sqlx::query(
            "update connection_event_log set pruned_through = case when pruned_through > $1 then pruned_through else $1 end \
             where id = 1",
        )
        .bind(through)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(gone.rows_affected())
    }
}
