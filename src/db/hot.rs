//! The hot reads (accounts, balances, transaction pages): a pool of the backend's own type.
//!
//! sqlx's `Any` driver copies every row into its own representation, text columns included,
//! before a field is decoded: 12 % of the instructions of a cache-off account read (callgrind).
//! These reads are most of the traffic, so they run on a typed pool and decode straight from
//! the backend's rows; the row types decode on both backends (`store::rows`). Every other
//! statement still goes through `Any` and its pools.
//!
//! On PostgreSQL the connections these reads take are kept between requests. sqlx 0.8 pings a
//! connection every time it goes back to its pool: a second round trip for every
//! one-statement read, measured on the wire. A read here takes a connection used moments ago
//! and keeps it afterwards, so a read costs one round trip; nothing is kept while another read
//! waits for the pool (it would wait for a connection sitting kept). A connection kept past
//! [`PING_WHEN_IDLE_FOR`] goes back to the pool (pinged there) rather than being trusted; one
//! whose read did not finish (its request was cancelled) goes back to the pool, whose ping
//! drains it. SQLite runs in the process: its pool costs no round trip, so nothing is kept.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

use super::{PING_WHEN_IDLE_FOR, postgres_pool_options, sqlite_pool_options};

/// PostgreSQL connections of the hot reads' pool (out of the process's `POOL_SIZE`).
pub(super) const POSTGRES_HOT: u32 = 8;

/// SQLite connections of the hot reads' pool.
const SQLITE_HOT: u32 = 8;

/// The hot reads' pool.
#[derive(Debug)]
pub(super) enum Hot {
    Postgres { pool: PgPool, kept: Mutex<Kept> },
    Sqlite(SqlitePool),
}

/// Connections kept from recent reads, and the reads waiting for the pool. Both under one lock:
/// a read that finishes either sees a waiting read (and gives its connection to the pool) or
/// keeps it where every later look finds it, so no read waits for a connection that sits kept.
#[derive(Debug, Default)]
pub(super) struct Kept {
    conns: Vec<(PoolConnection<Postgres>, Instant)>,
    waiting: usize,
}

/// A hot read's connection.
pub enum HotConn<'c> {
    Postgres(&'c mut PgConnection),
    Sqlite(&'c mut SqliteConnection),
}

/// A row type the hot reads decode on either backend.
pub trait HotRow: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

impl<T> HotRow for T where T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

/// `$q` with `$args` bound to its `$n` parameters in order, as text or null.
macro_rules! bound {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = q.bind(a.as_deref());
        }
        q
    }};
}

impl HotConn<'_> {
    /// The rows of `sql`, its `$n` parameters bound to `args` as text (or null) in order.
    pub async fn fetch_all<T: HotRow>(&mut self, sql: &str, args: &[Option<String>]) -> Result<Vec<T>, sqlx::Error> {
        match self {
            HotConn::Postgres(conn) => bound!(sqlx::query_as::<Postgres, T>(sql), args).fetch_all(&mut **conn).await,
            HotConn::Sqlite(conn) => bound!(sqlx::query_as::<Sqlite, T>(sql), args).fetch_all(&mut **conn).await,
        }
    }

    /// The one integer `sql` selects (a count), its parameters bound as in [`HotConn::fetch_all`].
    pub async fn fetch_i64(&mut self, sql: &str, args: &[Option<String>]) -> Result<i64, sqlx::Error> {
        match self {
            HotConn::Postgres(conn) => {
                bound!(sqlx::query_scalar::<Postgres, i64>(sql), args).fetch_one(&mut **conn).await
            }
            HotConn::Sqlite(conn) => bound!(sqlx::query_scalar::<Sqlite, i64>(sql), args).fetch_one(&mut **conn).await,
        }
    }
}

impl Hot {
    pub(super) async fn postgres(url: &str, statement_timeout: Duration) -> Result<Hot, sqlx::Error> {
        let pool = postgres_pool_options::<Postgres>(POSTGRES_HOT, statement_timeout)
            .connect_with(PgConnectOptions::from_str(url)?)
            .await?;
        Ok(Hot::Postgres { pool, kept: Mutex::new(Kept::default()) })
    }

    pub(super) async fn sqlite(url: &str) -> Result<Hot, sqlx::Error> {
        let pool = sqlite_pool_options::<Sqlite>(SQLITE_HOT).connect_with(SqliteConnectOptions::from_str(url)?).await?;
        Ok(Hot::Sqlite(pool))
    }

    pub(super) async fn read_with<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(HotConn<'c>) -> BoxFuture<'c, anyhow::Result<T>>,
    {
        match self {
            Hot::Postgres { pool, kept } => {
                let mut conn = match take_kept(kept) {
                    Taken::Kept(conn) => conn,
                    // Counted as waiting until it has one (or its request is cancelled).
                    Taken::Wait(_waiting) => pool.acquire().await?,
                };
                let out = work(HotConn::Postgres(&mut conn)).await;
                // Kept only when the statement completed (the connection is clean) and no read
                // waits for the pool; otherwise it goes back to the pool, after the lock.
                if out.is_ok() {
                    let give_back = {
                        let mut kept = lock(kept);
                        if kept.waiting == 0 {
                            kept.conns.push((conn, Instant::now()));
                            None
                        } else {
                            Some(conn)
                        }
                    };
                    drop(give_back);
                }
                out
            }
            Hot::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                work(HotConn::Sqlite(&mut conn)).await
            }
        }
    }
}

fn lock(kept: &Mutex<Kept>) -> std::sync::MutexGuard<'_, Kept> {
    kept.lock().unwrap_or_else(|p| p.into_inner())
}

enum Taken<'a> {
    Kept(PoolConnection<Postgres>),
    /// None kept: this read is counted as waiting for the pool until this is dropped.
    Wait(Waiting<'a>),
}

/// One read counted in `Kept::waiting` until dropped (also when its request is cancelled).
struct Waiting<'a>(&'a Mutex<Kept>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(self.0).waiting -= 1;
    }
}

/// A connection kept from a recent read, if one was kept recently enough to be trusted without a
/// ping (older ones go back to the pool, which pings them); else this read counts as waiting.
fn take_kept(kept: &Mutex<Kept>) -> Taken<'_> {
    let mut stale = Vec::new();
    let taken = {
        let mut k = lock(kept);
        loop {
            match k.conns.pop() {
                Some((conn, since)) if since.elapsed() < PING_WHEN_IDLE_FOR => break Taken::Kept(conn),
                Some((old, _)) => stale.push(old),
                None => {
                    k.waiting += 1;
                    break Taken::Wait(Waiting(kept));
                }
            }
        }
    };
    drop(stale);
    taken
}
