//! The database: one [`Db`] handle over SQLite (embedded default) or PostgreSQL (production).
//!
//! Both backends run the same SQL through sqlx's `Any` driver: placeholders are `$1`, `$2`...
//! (SQLite accepts them too), times are UTC Unix seconds in `BIGINT`/`INTEGER` columns and flags
//! are 0/1, so that every query decodes the same way on both. Where the dialects really differ
//! (row locks that skip locked rows), the query asks [`Db::backend`].
//!
//! Also here: [`state`], the stored states as types, [`queue`], the outbox counted, and
//! `digest`, which rows travel together as one email.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

use crate::config::{redact_url, DatabaseSettings, DEFAULT_BUSY_TIMEOUT};

pub mod accounts;
pub mod audit;
pub mod daemons;
pub(crate) mod digest;
mod lane;
pub mod queue;
pub mod sessions;
pub mod state;
mod stream;
pub mod template_drafts;
pub mod template_sets;
mod user;

pub(crate) use lane::Lane;
pub use state::{
    BounceKind, CampaignKind, CampaignState, Counts, OptOutSource, OutboxState, SuppressionSource,
    UnknownState,
};
pub use stream::{Stream, UnknownStream, ALL_NOTICES};
pub(crate) use user::id_by_id_or_fiscal_code;
pub use user::{UserContact, CONTACT_COLUMNS};

/// A migration applied by [`Db::migrate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub description: String,
}

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

/// Refreshes PostgreSQL's statistics of `tables` (a no-op on SQLite, whose planner needs none).
///
/// PostgreSQL plans every statement from its statistics, and autovacuum refreshes them only
/// after the fact, never for rows still inside a transaction: a pass that inserts a million rows
/// and then joins them (the digest's merge) would be planned as if the table were empty, nested
/// loops over a million rows. `ANALYZE` inside the transaction samples its own uncommitted rows
/// too (a fixed sample, well under a second at any size), and commits with it; rolled back, it
/// leaves no trace. It waits only for another `ANALYZE` or a vacuum of the same table. Done after
/// any write of rows that the same transaction then joins, whatever their number: without
/// statistics a merge of 1,150 rows took minutes (the planner's guesses for a join of unanalyzed
/// tables, without the foreign key that once hinted it, run nested loops many levels deep).
pub(crate) async fn analyze(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    tables: &str,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        sqlx::query(&format!("ANALYZE {tables}"))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Takes the planning lock for the rest of the transaction on `conn`: one pass at a time
/// across processes, taken before the pass reads anything, and by an import before it changes
/// the users (so a pass decides from one state of them). PostgreSQL: an advisory lock.
/// SQLite: the file's write lock, taken by a statement that writes nothing; a transaction that
/// read first and wrote after another process's commit would fail at once (`SQLITE_BUSY_SNAPSHOT`)
/// instead of waiting its turn.
pub async fn lock_planning(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> Result<(), sqlx::Error> {
    let sql = match backend {
        Backend::Postgres => "SELECT 1 FROM pg_advisory_xact_lock(hashtext('avvisi planning'))",
        Backend::Sqlite => "UPDATE campaigns SET id = id WHERE id < 0",
    };
    sqlx::query(sql).execute(conn).await?;
    Ok(())
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
    #[error("cannot create the SQLite database file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Locked(#[from] Locked),
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

/// The SQLite file stayed locked by another process for the whole busy timeout.
///
/// SQLite has one writer at a time: a statement waits for the file up to the timeout, then
/// gives up without writing anything, and the file stays as the other process leaves it
/// (SQLite's journal makes every transaction all or nothing).
#[derive(Debug, thiserror::Error)]
#[error(
    "the SQLite database {path} is locked by another process: avvisi waited {seconds}s for it \
     (database.busy_timeout_seconds), then gave up; what it was about to write was not written \
     and the file is intact. Let the other program finish, or stop it (another avvisi, a sqlite3 \
     shell or a backup holding a transaction open; `fuser {path}` lists the processes that have \
     it open), then run the command again"
)]
pub struct Locked {
    /// The database file.
    pub path: String,
    /// How long each statement waited.
    pub seconds: u64,
}

/// While held, no other daemon runs on this SQLite file (see [`Db::lock_daemon`]); dropped
/// with the daemon.
#[derive(Debug)]
pub(crate) struct DaemonLock {
    /// The connection whose open transaction is the lock (none where no lock is needed).
    _held: Option<sqlx::AnyConnection>,
}

/// A pool plus the knowledge of which dialect it speaks.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// The SQLite file and its busy timeout, for [`Db::explain`].
    sqlite: Option<(String, Duration)>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Opens the database named by `url` (creating a SQLite file and its folder when missing).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        Db::connect_with(url, max_connections, DEFAULT_BUSY_TIMEOUT).await
    }

    /// Like [`Db::connect`]; a statement on a SQLite file locked by another process waits up to
    /// `busy_timeout` before it fails (see [`Locked`]).
    pub(crate) async fn connect_with(
        url: &str,
        max_connections: u32,
        busy_timeout: Duration,
    ) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, prepare_sqlite_url(url)?)
        } else {
            (Backend::Postgres, url.to_string())
        };
        let sqlite = (backend == Backend::Sqlite).then(|| (sqlite_path(&url), busy_timeout));
        let connect_err = |source| match locked(&sqlite, &source) {
            Some(locked) => DbError::Locked(locked),
            None => DbError::Connect {
                url: redact_url(&url),
                source,
            },
        };
        // Planning a million recipients is one statement of a few seconds, by design: warn
        // only about statements slow enough to be a problem.
        let options = AnyConnectOptions::from_str(&url)
            .map_err(connect_err)?
            .log_slow_statements(log::LevelFilter::Warn, std::time::Duration::from_secs(30));
        let busy_ms = busy_timeout.as_millis().min(i32::MAX as u128);
        let pool = match backend {
            // One connection: SQLite has a single writer, and one connection can never deadlock
            // against itself upgrading a read transaction to a write.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                // A file, not a server: nothing to test, and the test is a round trip.
                .test_before_acquire(false)
                // Nor anything to reap or renew: without an idle timeout and a lifetime, sqlx
                // runs no maintenance task, whose idle count can wrap and spin a core forever
                // (sqlx issue 3645; seen here as a CLI command that never exited).
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        // The timeout first: the other pragmas may have to wait for the file.
                        conn.execute(&*format!(
                            "PRAGMA busy_timeout = {busy_ms}; PRAGMA journal_mode = WAL; \
                             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
                        ))
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
        Ok(Db {
            pool,
            backend,
            sqlite,
        })
    }

    /// Opens the database and applies the embedded migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db, DbError> {
        Db::open_with(url, max_connections, DEFAULT_BUSY_TIMEOUT).await
    }

    /// Opens the database as configured (`database.*`) and applies the embedded migrations;
    /// also returns the migrations it applied (for `avvisi migrate` to say so).
    pub(crate) async fn open_settings(
        settings: &DatabaseSettings,
    ) -> Result<(Db, Vec<Applied>), DbError> {
        let busy_timeout = Duration::from_secs(settings.busy_timeout_seconds);
        Db::open_applying(&settings.url, settings.max_connections, busy_timeout).await
    }

    async fn open_with(
        url: &str,
        max_connections: u32,
        busy_timeout: Duration,
    ) -> Result<Db, DbError> {
        Ok(Db::open_applying(url, max_connections, busy_timeout)
            .await?
            .0)
    }

    async fn open_applying(
        url: &str,
        max_connections: u32,
        busy_timeout: Duration,
    ) -> Result<(Db, Vec<Applied>), DbError> {
        let db = Db::connect_with(url, max_connections, busy_timeout).await?;
        let applied = db.migrate().await.map_err(|e| {
            let cause = match &e {
                DbError::Migrate(
                    sqlx::migrate::MigrateError::Execute(e)
                    | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
                )
                | DbError::Query(e) => db.locked(e),
                _ => None,
            };
            cause.map_or(e, DbError::Locked)
        })?;
        Ok((db, applied))
    }

    /// Applies the embedded migrations of this backend that are not applied yet, and returns
    /// them (none when the database is up to date).
    pub async fn migrate(&self) -> Result<Vec<Applied>, DbError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let before = self.applied_versions().await?;
        migrator.run(&self.pool).await?;
        Ok(migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !before.contains(&m.version))
            .map(|m| Applied {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect())
    }

    /// The versions in sqlx's migrations table; none before the first migration creates it.
    async fn applied_versions(&self) -> Result<Vec<i64>, DbError> {
        let exists = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
        };
        let count: i64 = sqlx::query_scalar(exists).fetch_one(&self.pool).await?;
        if count == 0 {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
            .fetch_all(&self.pool)
            .await?)
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

    /// SQLite: takes the file's daemon lock, or `None` while another daemon holds it.
    /// PostgreSQL: always taken (several daemons share a database).
    ///
    /// The lock is SQLite's own write lock on a small file next to the database (`PATH-daemon`),
    /// held by an open transaction for the daemon's life. The operating system drops it with
    /// the process however that ends, SIGKILL included: a daemon restarted after a crash starts
    /// at once, where a heartbeat would first have to go stale.
    pub(crate) async fn lock_daemon(&self) -> Result<Option<DaemonLock>, sqlx::Error> {
        let Some((path, _)) = &self.sqlite else {
            return Ok(Some(DaemonLock { _held: None }));
        };
        if path == ":memory:" {
            return Ok(Some(DaemonLock { _held: None }));
        }
        let mut conn =
            sqlx::AnyConnection::connect(&format!("sqlite://{path}-daemon?mode=rwc")).await?;
        // Taken at once or not at all: the holder keeps it for as long as it runs.
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut conn)
            .await?;
        match sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await {
            Ok(_) => Ok(Some(DaemonLock { _held: Some(conn) })),
            Err(e) if self.locked(&e).is_some() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `e` as [`Locked`] when it is SQLite giving up on a file another process holds.
    pub(crate) fn locked(&self, e: &sqlx::Error) -> Option<Locked> {
        locked(&self.sqlite, e)
    }

    /// `e`, explained first in a sentence when one of its causes is a locked SQLite file (see
    /// [`Locked`]): the raw "database is locked" names neither the file nor the way out.
    pub(crate) fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let locked = e.chain().find_map(|cause| {
            let sqlx = cause.downcast_ref::<sqlx::Error>().or_else(|| {
                match cause.downcast_ref::<DbError>() {
                    Some(DbError::Query(e)) => Some(e),
                    _ => None,
                }
            })?;
            self.locked(sqlx)
        });
        match locked {
            Some(locked) if e.downcast_ref::<Locked>().is_none() => e.context(locked),
            _ => e,
        }
    }

    /// `e` in one line, explained as [`Db::explain`] does: for logs.
    pub(crate) fn describe(&self, e: &sqlx::Error) -> String {
        match self.locked(e) {
            Some(locked) => format!("{locked}: {e}"),
            None => e.to_string(),
        }
    }
}

/// `e` as [`Locked`] when it is SQLite (`sqlite`: its file and busy timeout) giving up on a file
/// another process holds.
fn locked(sqlite: &Option<(String, Duration)>, e: &sqlx::Error) -> Option<Locked> {
    let (path, timeout) = sqlite.as_ref()?;
    let code = match e {
        sqlx::Error::Database(e) => e.code()?.parse::<i64>().ok()?,
        _ => return None,
    };
    // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes (the primary code is the low
    // byte).
    matches!(code & 0xff, 5 | 6).then(|| Locked {
        path: path.clone(),
        seconds: timeout.as_secs(),
    })
}

/// The file of a `sqlite://PATH?...` URL, for messages.
fn sqlite_path(url: &str) -> String {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    rest.split_once('?')
        .map_or(rest, |(path, _)| path)
        .to_string()
}

/// SQLite's plan of `sql` (the `detail` lines of `EXPLAIN QUERY PLAN`) on a fresh database with
/// the migrations applied, `params` bound in order: for the tests that check a statement finds
/// its rows through an index (SQLite plans without statistics, so the plan is the schema's).
#[cfg(test)]
pub(crate) async fn sqlite_query_plan(sql: &str, params: &[Option<i64>]) -> Vec<String> {
    use sqlx::Row;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&format!("sqlite://{}/plan.db", dir.path().display()), 1)
        .await
        .unwrap();
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query(&explain);
    for p in params {
        q = q.bind(*p);
    }
    q.fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect()
}

/// A stored Unix time (seconds) as UTC.
pub fn timestamp(secs: Option<i64>) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    secs.and_then(|s| chrono::Utc.timestamp_opt(s, 0).single())
}

/// `sqlite://data/x.db` → the same URL with `mode=rwc`, after creating `data/` and an empty
/// `x.db`, both readable by their owner only (unix): the database holds every recipient's
/// address and fiscal code. SQLite gives its `-wal` and `-shm` files the database file's mode.
fn prepare_sqlite_url(url: &str) -> Result<String, DbError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let creates = match params.iter().find_map(|p| p.strip_prefix("mode=")) {
        None => {
            params.push("mode=rwc");
            true
        }
        Some(mode) => mode == "rwc",
    };
    if path != ":memory:" && !path.is_empty() && creates {
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            create_private_dir(parent).map_err(|source| DbError::Folder {
                path: parent.display().to_string(),
                source,
            })?;
        }
        create_private_file(Path::new(path)).map_err(|source| DbError::File {
            path: path.to_string(),
            source,
        })?;
    }
    let mut out = format!("sqlite://{path}");
    out.push('?');
    out.push_str(&params.join("&"));
    Ok(out)
}

/// Creates `dir` and its missing parents, each new one with mode 0700 on unix.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `path` empty with mode 0600 on unix, unless it exists (its mode is then left as the
/// operator set it).
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;
    use sqlx::Row;

    /// The migration that rewrites the outbox's state check in the schema (`0027`) keeps every
    /// row, id, count and reference of a database planned and sent from before it; ids go on
    /// from the last ever given; the check still refuses a state it does not know, on the
    /// connection that migrated; the counts' triggers still count; the schema is sound.
    #[tokio::test]
    async fn the_outbox_state_check_rewritten_in_place_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/upgrade.db", dir.path().display());
        let db = Db::connect(&url, 1).await.unwrap();
        let before_0027 = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                SQLITE_MIGRATIONS
                    .iter()
                    .filter(|m| m.version < 27)
                    .cloned()
                    .collect(),
            ),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before_0027.run(db.pool()).await.unwrap();
        for sql in [
            "INSERT INTO campaigns (id, name, kind, audience, template, state, uid, created_at) \
             VALUES (7, 'c', 'oneoff', 'all', 't', 'running', 'u', 0)",
            // A pending lead and its follower, a sent row, a retried one, a suppressed one.
            "INSERT INTO outbox (id, campaign_id, user_id, step, recipient, template, \
                template_digest, state, attempts, next_attempt_at, reason, smtp_code, message_id, \
                created_at, updated_at, sent_at, digest_of) VALUES \
             (3, 7, 'a', 'main', 'a@x.it', 't', 'd', 'pending', 0, 5, NULL, NULL, '<3>', 1, 1, NULL, 3), \
             (4, 7, 'b', 'main', 'b@x.it', 't', 'd', 'pending', 0, 5, NULL, NULL, '<3>', 1, 1, NULL, 3), \
             (9, 7, 'c', 'main', 'c@x.it', 't', 'd', 'sent', 1, 5, NULL, NULL, '<9>', 1, 7300, 7300, NULL), \
             (10, 7, 'd', 'main', 'd@x.it', 't', 'd', 'pending', 2, 9, '451 busy', 451, '<10>', 1, 8, NULL, NULL), \
             (12, 7, 'e', 'main', 'e@x.it', 't', 'd', 'skipped', 0, 5, 'suppressed', NULL, '<12>', 1, 1, NULL, NULL)",
            "INSERT INTO outbox_history (outbox_id, at, state, event, reason, smtp_code, attempts) \
             VALUES (10, 8, 'sending', 'retry', '451 busy', 451, 1)",
            // Row 13 was written and deleted: its id is never given again.
            "UPDATE sqlite_sequence SET seq = 13 WHERE name = 'outbox'",
        ] {
            sqlx::query(sql).execute(db.pool()).await.unwrap();
        }
        let dump = |sql: &'static str| {
            let pool = db.pool().clone();
            async move {
                sqlx::query(sql)
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect::<Vec<_>>()
            }
        };
        let rows = "SELECT id || '|' || campaign_id || '|' || user_id || '|' || step || '|' || \
            recipient || '|' || template || '|' || template_digest || '|' || state || '|' || \
            attempts || '|' || next_attempt_at || '|' || quote(expires_at) || '|' || quote(reason) \
            || '|' || quote(smtp_code) || '|' || message_id || '|' || quote(claim_token) || '|' || \
            quote(lease_until) || '|' || created_at || '|' || updated_at || '|' || quote(sent_at) \
            || '|' || quote(digest_of) FROM outbox ORDER BY id";
        let counts =
            "SELECT campaign_id || '|' || state || '|' || suppressed || '|' || error_code \
            || '|' || sent_hour || '|' || n || '|' || quote(last_at) || '|' || quote(last_reason) \
            FROM outbox_counts WHERE n <> 0 ORDER BY 1";
        let (rows_before, counts_before) = (dump(rows).await, dump(counts).await);
        assert_eq!(rows_before.len(), 5);
        assert_eq!(counts_before.len(), 4, "{counts_before:?}");

        let applied = db.migrate().await.unwrap();
        assert!(applied.iter().any(|m| m.version == 27), "{applied:?}");

        assert_eq!(dump(rows).await, rows_before);
        assert_eq!(dump(counts).await, counts_before);
        let fk: Vec<_> = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert!(fk.is_empty(), "rows refer to no row");
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(integrity, "ok");
        let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'outbox'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert!(!sql.contains(" IN ("), "{sql}");

        let insert = |state: &'static str| {
            let pool = db.pool().clone();
            async move {
                sqlx::query(
                    "INSERT INTO outbox (campaign_id, user_id, step, recipient, template, \
                        template_digest, state, next_attempt_at, message_id, created_at, updated_at) \
                     VALUES (7, 'f', 'main', 'f@x.it', 't', 'd', $1, 5, '<f>', 1, 1) RETURNING id",
                )
                .bind(state)
                .fetch_one(&pool)
                .await
                .map(|r| r.get::<i64, _>("id"))
            }
        };
        let err = insert("lost").await.unwrap_err().to_string();
        // Named by its new text: the connection that migrated reads the new definition.
        assert!(
            err.contains("CHECK constraint failed: state = 'pending' OR"),
            "{err}"
        );
        let id = insert("pending").await.unwrap();
        assert_eq!(id, 14, "an id is given again");
        let pending: i64 = sqlx::query_scalar(
            "SELECT n FROM outbox_counts WHERE campaign_id = 7 AND state = 'pending' \
               AND error_code = -1",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(pending, 3, "the counts' trigger counts");
    }
}
