//! The database: one [`Db`] handle over SQLite (embedded default) or PostgreSQL (production).
//!
//! Both backends run the same SQL through sqlx's `Any` driver: placeholders are `$1`, `$2`...
//! (SQLite accepts them too), times are UTC Unix seconds in `BIGINT`/`INTEGER` columns and flags
//! are 0/1, so that every query decodes the same way on both. Where the dialects really differ
//! (row locks that skip locked rows), the query asks [`Db::backend`].
//!
//! Also here: [`state`], the stored states as types, and [`queue`], the outbox counted.

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

mod lane;
pub mod queue;
pub mod state;

pub(crate) use lane::Lane;
pub use state::{CampaignKind, CampaignState, Counts, OutboxState, UnknownState};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Now, in Unix seconds, on the clock that claims' leases are set and compared with, as SQL.
    ///
    /// A lease is real time, never the calendar's clock (`--now`, tests): it says how long a
    /// claim may go unsettled before another process may take the row. On PostgreSQL several
    /// daemons, on several machines with clocks of their own, share the rows: the one clock they
    /// all read is the server's. (`statement_timestamp()` is stable within a statement, unlike
    /// `clock_timestamp()`, so it does not stop PostgreSQL from planning with the queue's
    /// index.) SQLite is embedded, one daemon per file: its clock is this machine's.
    pub(crate) fn lease_now(self) -> &'static str {
        match self {
            Backend::Postgres => "CAST(FLOOR(EXTRACT(EPOCH FROM statement_timestamp())) AS BIGINT)",
            Backend::Sqlite => "CAST(strftime('%s', 'now') AS INTEGER)",
        }
    }
}

/// A database error at the module boundary.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot create the folder {path} for the SQLite database: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

/// A pool plus the knowledge of which dialect it speaks.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Opens the database named by `url` (creating a SQLite file and its folder when missing).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, prepare_sqlite_url(url)?)
        } else {
            (Backend::Postgres, url.to_string())
        };
        let connect_err = |source| DbError::Connect {
            url: redact_url(&url),
            source,
        };
        // Planning a million recipients is one statement of a few seconds, by design: warn
        // only about statements slow enough to be a problem.
        let options = AnyConnectOptions::from_str(&url)
            .map_err(connect_err)?
            .log_slow_statements(log::LevelFilter::Warn, std::time::Duration::from_secs(30));
        let pool = match backend {
            // One connection: SQLite has a single writer, and one connection can never deadlock
            // against itself upgrading a read transaction to a write.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                // A file, not a server: nothing to test, and the test is a round trip.
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await
                .map_err(connect_err)?,
            Backend::Postgres => {
                // One direct connection first: a server that is down or refuses us is reported
                // at once with its reason, not as a pool timeout half a minute later.
                options
                    .connect()
                    .await
                    .map_err(connect_err)?
                    .close()
                    .await
                    .map_err(connect_err)?;
                AnyPoolOptions::new()
                    .max_connections(max_connections)
                    .connect_with(options)
                    .await
                    .map_err(connect_err)?
            }
        };
        Ok(Db { pool, backend })
    }

    /// Opens the database and applies the embedded migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db, DbError> {
        let db = Db::connect(url, max_connections).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the embedded migrations of this backend; a no-op when they are applied already.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A stored Unix time (seconds) as UTC.
pub fn timestamp(secs: Option<i64>) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    secs.and_then(|s| chrono::Utc.timestamp_opt(s, 0).single())
}

/// `sqlite://data/x.db` → the same URL with `mode=rwc`, after creating `data/`.
fn prepare_sqlite_url(url: &str) -> Result<String, DbError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" {
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| DbError::Folder {
                path: parent.display().to_string(),
                source,
            })?;
        }
    }
    let mut out = format!("sqlite://{path}");
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    out.push('?');
    out.push_str(&params.join("&"));
    Ok(out)
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://avvisi:hunter2@db:5432/avvisi"),
            "postgres://avvisi:***@db:5432/avvisi"
        );
        assert_eq!(redact_url("sqlite://data/a.db"), "sqlite://data/a.db");
    }
}
