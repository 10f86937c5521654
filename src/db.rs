//! The database: SQLite (embedded default) or PostgreSQL, behind sqlx's `Any` driver so one
//! set of queries serves both. SQLite gets a single writer connection (so writers never race
//! for its lock) and a pool of readers; PostgreSQL one pool for both.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// Which database is behind the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The pools and the backend they talk to.
#[derive(Debug, Clone)]
pub struct Db {
    pub read: AnyPool,
    pub write: AnyPool,
    pub backend: Backend,
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://…`). A SQLite file is created if missing.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            let url = if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") };
            let options = AnyConnectOptions::from_str(&url).context("DATABASE_URL is not a valid sqlite URL")?;
            fn pragmas(
                conn: &mut sqlx::AnyConnection,
                _: sqlx::pool::PoolConnectionMetadata,
            ) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    conn.execute("pragma journal_mode = wal; pragma busy_timeout = 10000; pragma foreign_keys = on; pragma synchronous = normal;")
                        .await?;
                    Ok(())
                })
            }
            let write = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(pragmas)
                .connect_with(options.clone())
                .await
                .context("could not open the SQLite database")?;
            let read = AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(pragmas)
                .connect_with(options)
                .await
                .context("could not open the SQLite database")?;
            Ok(Db { read, write, backend: Backend::Sqlite })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = AnyConnectOptions::from_str(url).context("DATABASE_URL is not a valid postgres URL")?;
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .context("could not connect to PostgreSQL")?;
            Ok(Db { read: pool.clone(), write: pool, backend: Backend::Postgres })
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres://")
        }
    }

    /// Applies the migrations of this backend (idempotent).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.run(&self.write).await.context("database migration failed")?;
        Ok(())
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("select 1").execute(&self.read).await?;
        Ok(())
    }
}

/// The stored form of a timestamp: RFC 3339, UTC, microseconds; sorts as text.
pub fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Reads a stored timestamp.
pub fn parse_ts(s: &str) -> anyhow::Result<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.6fZ")
        .with_context(|| format!("stored timestamp {s:?} is malformed"))?;
    Ok(naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_text_and_round_trip() {
        let a = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z").unwrap().with_timezone(&Utc);
        let b = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.5Z").unwrap().with_timezone(&Utc);
        assert!(ts(a) < ts(b));
        assert_eq!(parse_ts(&ts(a)).unwrap(), a);
        assert_eq!(ts(a), "2026-01-02T03:04:05.123456Z");
    }
}
