//! The database: SQLite (embedded default) or PostgreSQL, behind sqlx's `Any` driver so one
//! set of queries serves both. SQLite gets a single writer connection (so writers never race
//! for its lock) and a pool of readers; PostgreSQL one pool for both.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyPool, Executor};

pub mod hot;

pub use hot::HotConn;

/// Which database is behind the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Everything the SQL of the two backends differs in, in one place; the rest of the
/// statements are the same text on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect(Backend);

impl Dialect {
    /// The clause that makes a claiming `select` skip rows another transaction has locked
    /// (PostgreSQL). SQLite has one writer, so there is nothing to skip.
    pub fn skip_locked(self, alias: &str) -> String {
        match self.0 {
            Backend::Postgres => format!(" for update of {alias} skip locked"),
            Backend::Sqlite => String::new(),
        }
    }

    /// The database's clock when the statement runs, in the stored timestamp format. A job's
    /// `started_at` and `finished_at` use it so they follow commit order: a worker's own clock,
    /// read before a claim that then waits for the previous run's commit, could stamp a start
    /// earlier than that run's end.
    pub fn now_text(self) -> &'static str {
        match self.0 {
            Backend::Postgres => "to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')",
        }
    }

    /// The clause that locks the rows a `select` reads until the transaction ends (PostgreSQL);
    /// SQLite's one writer holds the whole database already.
    pub fn for_update(self) -> &'static str {
        match self.0 {
            Backend::Postgres => " for update",
            Backend::Sqlite => "",
        }
    }

    /// The statement, run inside a writing transaction, that wakes every process listening for
    /// new connection events when the transaction commits (PostgreSQL `NOTIFY`). SQLite is one
    /// process's database: its writer wakes its own readers directly.
    pub fn notify_events(self) -> Option<&'static str> {
        match self.0 {
            Backend::Postgres => Some("select pg_notify('bankgraph_connection_events', '')"),
            Backend::Sqlite => None,
        }
    }

    /// The condition that `column` is one of the strings of parameter `$n`, bound as a JSON
    /// array of strings (one parameter, whatever the number of values, so one prepared
    /// statement; both backends still look each value up in `column`'s index).
    pub fn in_json_strings(self, column: &str, n: usize) -> String {
        match self.0 {
            Backend::Postgres => {
                format!("{column} = any(array(select jsonb_array_elements_text(cast(${n} as jsonb))))")
            }
            Backend::Sqlite => format!("{column} in (select value from json_each(${n}))"),
        }
    }

    /// The statement that refreshes the planner's statistics of `tables`, where the backend
    /// needs one (PostgreSQL: a table grown from nothing in seconds still reads as empty to
    /// the planner until autovacuum looks; SQLite's planner does not need this).
    pub fn refresh_statistics(self, tables: &[&str]) -> Option<String> {
        match self.0 {
            Backend::Postgres => Some(format!("analyze {}", tables.join(", "))),
            Backend::Sqlite => None,
        }
    }
}

/// The PostgreSQL channel [`Dialect::notify_events`] notifies.
pub const EVENTS_CHANNEL: &str = "bankgraph_connection_events";

/// The pools and the backend they talk to.
#[derive(Debug, Clone)]
pub struct Db {
    pub read: AnyPool,
    pub write: AnyPool,
    pub backend: Backend,
    /// The URL, for a migration connection of its own.
    url: String,
    /// The hot reads' own typed pool (see [`hot`]).
    hot: std::sync::Arc<hot::Hot>,
}

/// PostgreSQL connections per process: the hot reads' typed pool and the rest.
const POOL_SIZE: u32 = 16;

/// SQLite reading connections of the general pool (the hot reads have their own).
const SQLITE_READERS: u32 = 4;

/// Every SQLite connection's settings.
const SQLITE_PRAGMAS: &str =
    "pragma journal_mode = wal; pragma busy_timeout = 10000; pragma foreign_keys = on; pragma synchronous = normal;";

/// The options of a SQLite pool of `size` connections, whatever its driver.
fn sqlite_pool_options<DB: sqlx::Database>(size: u32) -> sqlx::pool::PoolOptions<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    sqlx::pool::PoolOptions::new().max_connections(size).acquire_timeout(Duration::from_secs(30)).after_connect(
        |conn: &mut DB::Connection, _| {
            Box::pin(async move {
                conn.execute(SQLITE_PRAGMAS).await?;
                Ok(())
            })
        },
    )
}

/// The options of a PostgreSQL pool of `size` connections, whatever its driver: each
/// connection cancels a statement running longer than `statement_timeout`.
fn postgres_pool_options<DB: sqlx::Database>(size: u32, statement_timeout: Duration) -> sqlx::pool::PoolOptions<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let millis = statement_timeout.as_millis().max(1);
    sqlx::pool::PoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings every connection it hands out by default: a round trip per request before
        // the statement. A connection in use moments ago is known to work (and sqlx pings it
        // when it comes back); one idle longer is pinged, so a database restart during a quiet
        // spell still costs no request.
        .test_before_acquire(false)
        .before_acquire(|conn: &mut DB::Connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    use sqlx::Connection;
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn: &mut DB::Connection, _| {
            Box::pin(async move {
                conn.execute(format!("set statement_timeout = {millis}").as_str()).await?;
                Ok(())
            })
        })
}

/// A pooled PostgreSQL connection idle at least this long is pinged before it is used.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(5);

/// How long one statement may run on PostgreSQL before the server cancels it, unless the
/// caller sets its own (`DATABASE_STATEMENT_TIMEOUT_SECONDS`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://…`) with the default statement
    /// timeout. A SQLite file is created if missing.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        Self::connect_with(url, DEFAULT_STATEMENT_TIMEOUT).await
    }

    /// As [`Db::connect`]; on PostgreSQL every pooled connection cancels a statement that runs
    /// longer than `statement_timeout`, so no request can hold a backend for long. (SQLite
    /// statements cannot be interrupted from here; the read paths are bounded instead.)
    pub async fn connect_with(url: &str, statement_timeout: Duration) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            #[cfg(unix)]
            create_private_sqlite_file(url)?;
            let url = if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") };
            let options = AnyConnectOptions::from_str(&url).context("DATABASE_URL is not a valid sqlite URL")?;
            let write = sqlite_pool_options(1)
                .connect_with(options.clone())
                .await
                .context("could not open the SQLite database")?;
            let read = sqlite_pool_options(SQLITE_READERS)
                .connect_with(options)
                .await
                .context("could not open the SQLite database")?;
            let hot = hot::Hot::sqlite(&url).await.context("could not open the SQLite database")?;
            #[cfg(unix)]
            restrict_sqlite_files(&url);
            Ok(Db { read, write, backend: Backend::Sqlite, url: url.to_string(), hot: std::sync::Arc::new(hot) })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = AnyConnectOptions::from_str(url).context("DATABASE_URL is not a valid postgres URL")?;
            let pool = postgres_pool_options(POOL_SIZE - hot::POSTGRES_HOT, statement_timeout)
                .connect_with(options)
                .await
                .context("could not connect to PostgreSQL")?;
            let hot = hot::Hot::postgres(url, statement_timeout).await.context("could not connect to PostgreSQL")?;
            Ok(Db {
                read: pool.clone(),
                write: pool,
                backend: Backend::Postgres,
                url: url.to_string(),
                hot: std::sync::Arc::new(hot),
            })
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres://")
        }
    }

    /// Runs one of the hot reads (accounts, balances, transaction pages) on a typed connection
    /// (see [`hot`]), kept for the next read when `work` succeeds.
    pub async fn read_with<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(hot::HotConn<'c>) -> futures::future::BoxFuture<'c, anyhow::Result<T>>,
    {
        self.hot.read_with(work).await
    }

    /// Applies the migrations of this backend (idempotent).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        match self.backend {
            // On a connection of its own, without the statement timeout: a migration that
            // backfills a large table may rightly take longer than any request.
            Backend::Postgres => {
                use sqlx::Connection;
                let mut conn = sqlx::AnyConnection::connect(&self.url).await.context("could not connect to migrate")?;
                migrator.run(&mut conn).await.context("database migration failed")?;
                conn.close().await?;
            }
            Backend::Sqlite => migrator.run(&self.write).await.context("database migration failed")?,
        }
        Ok(())
    }

    /// The URL of a PostgreSQL database (for a `LISTEN` connection of its own); `None` on SQLite.
    pub fn postgres_url(&self) -> Option<&str> {
        (self.backend == Backend::Postgres).then_some(self.url.as_str())
    }

    pub fn dialect(&self) -> Dialect {
        Dialect(self.backend)
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("select 1").execute(&self.read).await?;
        Ok(())
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Creates a missing SQLite database file as owner-only before SQLite creates it with the
/// umask's mode.
#[cfg(unix)]
fn create_private_sqlite_file(url: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = sqlite_path(url) else { return Ok(()) };
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // A missing directory and the like: SQLite will say what is wrong.
        Err(_) => Ok(()),
    }
}

/// Makes the SQLite database and its WAL files readable by their owner only (they hold sealed
/// tokens and account data; the default umask would leave them readable by every user).
#[cfg(unix)]
fn restrict_sqlite_files(url: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = sqlite_path(url) else { return };
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{path}{suffix}");
        if let Err(e) = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %file, error = %e, "could not make the database file private");
        }
    }
}

/// The stored form of a timestamp: RFC 3339, UTC, microseconds; sorts as text.
pub fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Reads a stored timestamp. Every read of an account, balance or transaction decodes a few, so
/// the exact form `ts` writes (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) is read field by field; anything
/// else goes through chrono's parser, which accepts the same format (and is ten times slower).
pub fn parse_ts(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Some(t) = parse_ts_fixed(s.as_bytes()) {
        return Ok(t);
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.6fZ")
        .with_context(|| format!("stored timestamp {s:?} is malformed"))?;
    Ok(naive.and_utc())
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` exactly, or nothing.
fn parse_ts_fixed(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() != 27 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[19] != b'.' || b[26] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    let time = chrono::NaiveTime::from_hms_micro_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?)?;
    Some(NaiveDateTime::new(date, time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_timestamps_read_back_exactly_and_malformed_ones_are_refused() {
        use chrono::TimeZone;
        let chrono_parse =
            |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.6fZ").ok().map(|n| n.and_utc());
        let samples = [
            Utc.with_ymd_and_hms(2026, 12, 2, 11, 15, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap() + chrono::Duration::microseconds(999_999),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
        ];
        for t in samples {
            let s = ts(t);
            assert_eq!(parse_ts_fixed(s.as_bytes()), Some(t), "{s}");
            assert_eq!(parse_ts(&s).unwrap(), t);
            assert_eq!(chrono_parse(&s), Some(t));
        }
        // What the fast path refuses, chrono decides; what neither reads is an error.
        for bad in [
            "2026-13-01T00:00:00.000000Z",
            "2025-02-29T00:00:00.000000Z",
            "2026-01-01T24:00:00.000000Z",
            "2026-01-01T00:60:00.000000Z",
            "2026-01-01 00:00:00.000000Z",
            "2026-01-01T00:00:00.000000",
            "2026-01-01T00:00:00.00000aZ",
            "2026-01-01T00:00:00Z",
            "+026-01-01T00:00:00.000000Z",
            "",
        ] {
            assert_eq!(parse_ts_fixed(bad.as_bytes()), None, "{bad}");
            assert_eq!(parse_ts(bad).ok(), chrono_parse(bad), "{bad}");
        }
    }

    proptest::proptest! {
        /// The fast path and chrono agree on every string of the stored shape.
        #[test]
        fn the_fast_path_agrees_with_chrono(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z") {
            let by_chrono = NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.6fZ").ok().map(|n| n.and_utc());
            proptest::prop_assert_eq!(parse_ts_fixed(s.as_bytes()), by_chrono);
        }

        #[test]
        fn every_instant_round_trips(secs in 0i64..253_402_300_799, micros in 0u32..1_000_000) {
            let t = DateTime::from_timestamp(secs, micros * 1000).unwrap();
            proptest::prop_assert_eq!(parse_ts(&ts(t)).unwrap(), t);
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bankgraph-db-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::connect(&format!("sqlite://{}/x.db", dir.display())).await.unwrap();
        db.migrate().await.unwrap();
        for f in ["x.db", "x.db-wal", "x.db-shm"] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }

    /// The statements of a migration file: comments and blank lines left out.
    fn statements(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.split("--").next().unwrap_or_default().trim_end().to_string())
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    #[test]
    fn both_migration_folders_hold_the_same_files_with_the_same_statements() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let names = |dir: &str| {
            let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".sql"))
                .collect();
            v.sort();
            v
        };
        let (sqlite, postgres) = (names("sqlite"), names("postgres"));
        assert_eq!(sqlite, postgres, "add every migration to both folders (migrations/README.md)");
        assert!(sqlite.len() >= 5);
        for name in &sqlite {
            assert_eq!(
                statements(&root.join("sqlite").join(name)),
                statements(&root.join("postgres").join(name)),
                "{name} differs between the backends"
            );
        }
    }

    #[test]
    fn timestamps_sort_as_text_and_round_trip() {
        let a = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z").unwrap().with_timezone(&Utc);
        let b = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.5Z").unwrap().with_timezone(&Utc);
        assert!(ts(a) < ts(b));
        assert_eq!(parse_ts(&ts(a)).unwrap(), a);
        assert_eq!(ts(a), "2026-01-02T03:04:05.123456Z");
    }
}
