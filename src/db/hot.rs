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
//! and keeps it afterwards, so a read costs one round trip. A connection kept past
//! [`PING_WHEN_IDLE_FOR`] goes back to the pool (pinged there) rather than being trusted; one
//! whose read did not finish (its request was cancelled) goes back to the pool, whose ping
//! drains it. SQLite runs in the process: its pool costs no round trip, so nothing is kept.

use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    Postgres {
        pool: PgPool,
        kept: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
        /// Reads waiting for (or about to wait for) a connection from the pool: while there
        /// are any, a finished read gives its connection back to the pool instead of keeping
        /// it, or they would wait for connections that sit kept.
        waiting: AtomicUsize,
    },
    Sqlite(SqlitePool),
}

/// A hot read's connection.
pub enum HotConn<'c> {
    Postgres(&'c mut PgConnection),
    Sqlite(&'c mut SqliteConnection),
}

/// A row type the hot reads decode on either backend.
pub trait HotRow: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

impl<T> HotRow for T where T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

impl HotConn<'_> {
    /// The rows of `sql`, its `$n` parameters bound to `args` as text (or null) in order.
    pub async fn fetch_all<T: HotRow>(&mut self, sql: &str, args: &[Option<String>]) -> Result<Vec<T>, sqlx::Error> {
        match self {
            HotConn::Postgres(conn) => {
                let mut q = sqlx::query_as::<Postgres, T>(sql);
                for a in args {
                    q = q.bind(a.as_deref());
                }
                q.fetch_all(&mut **conn).await
            }
            HotConn::Sqlite(conn) => {
                let mut q = sqlx::query_as::<Sqlite, T>(sql);
                for a in args {
                    q = q.bind(a.as_deref());
                }
                q.fetch_all(&mut **conn).await
            }
        }
    }

    /// The one integer `sql` selects (a count), its parameters bound as in [`HotConn::fetch_all`].
    pub async fn fetch_i64(&mut self, sql: &str, args: &[Option<String>]) -> Result<i64, sqlx::Error> {
        match self {
            HotConn::Postgres(conn) => {
                let mut q = sqlx::query_scalar::<Postgres, i64>(sql);
                for a in args {
                    q = q.bind(a.as_deref());
                }
                q.fetch_one(&mut **conn).await
            }
            HotConn::Sqlite(conn) => {
                let mut q = sqlx::query_scalar::<Sqlite, i64>(sql);
                for a in args {
                    q = q.bind(a.as_deref());
                }
                q.fetch_one(&mut **conn).await
            }
        }
    }
}

impl Hot {
    pub(super) async fn postgres(url: &str, statement_timeout: Duration) -> Result<Hot, sqlx::Error> {
        let pool = postgres_pool_options::<Postgres>(POSTGRES_HOT, statement_timeout)
            .connect_with(PgConnectOptions::from_str(url)?)
            .await?;
        Ok(Hot::Postgres { pool, kept: Mutex::new(Vec::new()), waiting: AtomicUsize::new(0) })
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
            Hot::Postgres { pool, kept, waiting } => {
                let mut conn = {
                    // Counted before looking at the kept ones: a read that finishes after this
                    // either left its connection where this one finds it or gives it to the pool.
                    let _waiting = Waiting::new(waiting);
                    match take_kept(kept) {
                        Some(c) => c,
                        None => pool.acquire().await?,
                    }
                };
                let out = work(HotConn::Postgres(&mut conn)).await;
                // Kept only when the statement completed (the connection is clean) and nobody
                // waits for the pool.
                if out.is_ok() && waiting.load(Ordering::SeqCst) == 0 {
                    kept.lock().unwrap_or_else(|p| p.into_inner()).push((conn, Instant::now()));
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

/// One read counted in `waiting` until dropped (also when its request is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection kept from a recent read, if one was kept recently enough to be trusted without a
/// ping; older ones go back to the pool, which pings them.
fn take_kept(kept: &Mutex<Vec<(PoolConnection<Postgres>, Instant)>>) -> Option<PoolConnection<Postgres>> {
    loop {
        let popped = kept.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match popped {
            Some((conn, since)) if since.elapsed() < PING_WHEN_IDLE_FOR => return Some(conn),
            Some((stale, _)) => drop(stale),
            None => return None,
        }
    }
}
