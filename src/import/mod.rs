//! Loading a snapshot into the `users` table: all or nothing, in one transaction.
//!
//! Valid rows are streamed in batches into the staging table `import_rows`; duplicates are then
//! found with one query, and the users are upserted from staging with one statement. A row whose
//! portal `updated_at` is older than what is stored does not overwrite it (a late, stale export
//! cannot undo a completed procedure). By default a snapshot is the portal's whole truth: users
//! missing from it are marked gone and qualify for nothing; `partial` imports leave them alone.
//! The users change between two planning passes, never during one: the upsert waits for the
//! planning lock.

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments, Row as _, Transaction};

mod fields;
mod freshness;
mod record;
pub mod snapshot;

pub use freshness::{freshness, Freshness};

#[cfg(test)]
mod proptests;

use self::snapshot::{Encoding, RowError, SnapshotError, SnapshotReader, UserRecord};
use crate::store::{Backend, Db};
use crate::telemetry::progress::{Counted, Progress};

/// Staged rows sent in one INSERT (15 parameters each, well under both backends' limits).
const BATCH_ROWS: usize = 1000;

/// Errors kept for the report; the rest are only counted.
const ERRORS_KEPT: usize = 200;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Write the good rows and list the bad ones in a reject file, instead of writing nothing.
    pub skip_invalid: bool,
    /// Check and count everything, then roll back.
    pub dry_run: bool,
    /// A delta: do not mark users missing from the file as gone.
    pub partial: bool,
    /// Where rejected rows go (default: `FILE.rejects.csv` beside the snapshot).
    pub reject_file: Option<PathBuf>,
    /// Refuse a full import that would mark more than this share of known users as gone.
    pub max_gone_percent: u32,
    /// The file's character encoding (default UTF-8).
    pub encoding: Encoding,
    /// Counts the bytes read, for a progress bar or line.
    pub progress: Option<Progress>,
}

/// What an import did (or, for a dry run or a refusal, would have done).
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub import_id: i64,
    pub rows_read: u64,
    pub rows_valid: u64,
    pub rows_rejected: u64,
    /// The first problems found (at most 200); `errors_total` counts them all.
    pub errors: Vec<RowError>,
    pub errors_total: u64,
    pub users_new: u64,
    pub users_known: u64,
    /// Rows older than the stored state, not applied.
    pub rows_stale: u64,
    pub users_gone: u64,
    pub committed: bool,
    pub reject_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    Snapshot {
        path: PathBuf,
        source: SnapshotError,
    },
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the reject file {}: {source}", path.display())]
    RejectFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {} invalid row(s); nothing was imported (use --skip-invalid to import the valid rows)", path.display(), report.errors_total)]
    Invalid {
        path: PathBuf,
        report: Box<ImportReport>,
    },
    #[error("{}: no valid user rows; nothing was imported", path.display())]
    Empty { path: PathBuf },
    #[error("{}: this full snapshot would mark {gone} of {present} known users as gone (over {limit}%); nothing was imported. If the file is a delta, use --partial", path.display())]
    TooManyGone {
        path: PathBuf,
        gone: u64,
        present: u64,
        limit: u32,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Imports the snapshot at `path`; see the module notes for the guarantees.
pub async fn import_users(
    db: &Db,
    path: &Path,
    options: &ImportOptions,
    now: DateTime<Utc>,
) -> Result<ImportReport, ImportError> {
    let file = open_regular(path).map_err(|source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let snapshot_err = |path: &Path, source| ImportError::Snapshot {
        path: path.to_path_buf(),
        source,
    };
    let file = Counted::new(file, options.progress.clone());
    let reader =
        SnapshotReader::with_encoding(file, options.encoding).map_err(|e| snapshot_err(path, e))?;
    let rejects = RejectWriter::new(path, options, reader.header());

    let mut tx = db.pool().begin().await?;
    let mode = if options.partial { "partial" } else { "full" };
    let import_id: i64 = sqlx::query(
        "INSERT INTO imports (source, mode, started_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(path.display().to_string())
    .bind(mode)
    .bind(now.timestamp())
    .fetch_one(&mut *tx)
    .await?
    .get("id");

    // Reading and validating (CPU) runs on its own thread while the database stores the
    // previous batch; the channel holds two batches, so memory stays flat.
    let mut phase = Phase::start();
    let (batches, mut received) = tokio::sync::mpsc::channel::<Vec<(u64, UserRecord)>>(2);
    let owned_path = path.to_path_buf();
    let reading = tokio::task::spawn_blocking(move || {
        read_rows(reader, rejects, batches).map_err(|e| match e {
            ReadError::Snapshot(source) => snapshot_err(&owned_path, source),
            ReadError::Import(e) => e,
        })
    });
    let mut staged = Ok(());
    while let Some(batch) = received.recv().await {
        staged = stage(&mut tx, db.backend(), import_id, batch).await;
        if staged.is_err() {
            break;
        }
    }
    // Dropping the receiver stops the reader if staging failed.
    drop(received);
    let read = match reading.await {
        Ok(read) => read,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    staged?;
    let (mut report, mut rejects) = read?;
    report.import_id = import_id;
    phase.done("read and stage");

    // The same user twice: neither row is trusted.
    let duplicates = sqlx::query(
        "SELECT s.line, s.user_id, d.first_line FROM import_rows s \
         JOIN (SELECT user_id, MIN(line) AS first_line FROM import_rows WHERE import_id = $1 \
               GROUP BY user_id HAVING COUNT(*) > 1) d ON d.user_id = s.user_id \
         WHERE s.import_id = $1 ORDER BY s.line",
    )
    .bind(report.import_id)
    .fetch_all(&mut *tx)
    .await?;
    for dup in &duplicates {
        let (line, user_id, first): (i64, String, i64) =
            (dup.get("line"), dup.get("user_id"), dup.get("first_line"));
        let reason = if line == first {
            "user_id appears again later in the file; neither row is imported".to_string()
        } else {
            format!("user_id already appears at line {first}; neither row is imported")
        };
        let error = RowError {
            line: line as u64,
            column: "user_id".into(),
            reason,
        };
        report.rows_rejected += 1;
        rejects.write_user_id(line as u64, user_id, std::slice::from_ref(&error))?;
        report.add_errors(vec![error]);
    }
    if !duplicates.is_empty() {
        sqlx::query(
            "DELETE FROM import_rows WHERE import_id = $1 AND user_id IN \
             (SELECT user_id FROM import_rows WHERE import_id = $1 GROUP BY user_id HAVING COUNT(*) > 1)",
        )
        .bind(report.import_id)
        .execute(&mut *tx)
        .await?;
    }
    report.rows_valid = report.rows_read - report.rows_rejected;
    report.errors.sort_by_key(|e| e.line);
    phase.done("duplicates");

    if report.errors_total > 0 && !options.skip_invalid {
        tx.rollback().await?;
        return Err(ImportError::Invalid {
            path: path.to_path_buf(),
            report: Box::new(report),
        });
    }
    if report.rows_valid == 0 {
        tx.rollback().await?;
        return Err(ImportError::Empty {
            path: path.to_path_buf(),
        });
    }
    report.reject_file = rejects.finish()?;

    // A planning pass decides from one state of the users: the rows change between two passes,
    // never in the middle of one. On PostgreSQL the pass's statements each see what is committed
    // when they start, so the import waits for the pass's lock (held until this commit); SQLite's
    // one writer gives the same already.
    crate::store::lock_planning(&mut tx, db.backend()).await?;
    apply(&mut tx, &mut report, options, path).await?;
    // Planning selects from the users right after an import: on their statistics.
    crate::store::analyze(&mut tx, db.backend(), "users").await?;
    phase.done("apply");
    if options.dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
        report.committed = true;
    }
    phase.done("commit");
    Ok(report)
}

enum ReadError {
    Snapshot(SnapshotError),
    Import(ImportError),
}

/// Reads and validates every row, sends the valid ones in batches and writes the rejected ones;
/// returns the counts and errors, and the reject file for the duplicates found later.
fn read_rows(
    mut reader: SnapshotReader<Counted<File>>,
    mut rejects: RejectWriter,
    batches: tokio::sync::mpsc::Sender<Vec<(u64, UserRecord)>>,
) -> Result<(ImportReport, RejectWriter), ReadError> {
    let mut report = ImportReport::default();
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    while let Some(row) = reader.next_row() {
        let row = row.map_err(ReadError::Snapshot)?;
        report.rows_read += 1;
        match row.result {
            Ok(user) => {
                batch.push((row.line, user));
                if batch.len() == BATCH_ROWS {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                    if batches.blocking_send(full).is_err() {
                        // Staging failed; its error is the one reported.
                        return Ok((report, rejects));
                    }
                }
            }
            Err(errors) => {
                report.rows_rejected += 1;
                rejects
                    .write(row.line, &row.raw, &errors)
                    .map_err(ReadError::Import)?;
                report.add_errors(errors);
            }
        }
    }
    if !batch.is_empty() {
        let _ = batches.blocking_send(batch);
    }
    Ok((report, rejects))
}

impl ImportReport {
    fn add_errors(&mut self, errors: Vec<RowError>) {
        self.errors_total += errors.len() as u64;
        let room = ERRORS_KEPT.saturating_sub(self.errors.len());
        self.errors.extend(errors.into_iter().take(room));
    }
}

/// Logs how long each step of an import took (at debug level: `-v`).
struct Phase(std::time::Instant);

impl Phase {
    fn start() -> Phase {
        Phase(std::time::Instant::now())
    }

    fn done(&mut self, name: &str) {
        tracing::debug!(
            phase = name,
            seconds = self.0.elapsed().as_secs_f64(),
            "import"
        );
        self.0 = std::time::Instant::now();
    }
}

/// Moves the staged rows into `users` and records the import.
async fn apply(
    tx: &mut Transaction<'static, Any>,
    report: &mut ImportReport,
    options: &ImportOptions,
    path: &Path,
) -> Result<(), ImportError> {
    let id = report.import_id;
    let mut phase = Phase::start();
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(id);
    report.users_new = count(
        "SELECT COUNT(*) FROM import_rows s WHERE s.import_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = s.user_id)",
    )
    .fetch_one(&mut **tx)
    .await? as u64;
    report.users_known = report.rows_valid - report.users_new;
    report.rows_stale = count(
        "SELECT COUNT(*) FROM import_rows s JOIN users u ON u.user_id = s.user_id \
         WHERE s.import_id = $1 AND s.portal_updated_at < u.portal_updated_at",
    )
    .fetch_one(&mut **tx)
    .await? as u64;
    phase.done("count new and stale");

    sqlx::query(
        "INSERT INTO users (user_id, fiscal_code, first_name, last_name, email, institutional_email, \
            registration, enabled, pending_email, code_regeneration, province, \
            registered_institutional, portal_updated_at, import_id, present) \
         SELECT user_id, fiscal_code, first_name, last_name, email, institutional_email, \
            registration, enabled, pending_email, code_regeneration, province, \
            registered_institutional, portal_updated_at, import_id, 1 \
         FROM import_rows WHERE import_id = $1 \
         ON CONFLICT (user_id) DO UPDATE SET \
            fiscal_code = excluded.fiscal_code, first_name = excluded.first_name, \
            last_name = excluded.last_name, email = excluded.email, \
            institutional_email = excluded.institutional_email, \
            registration = excluded.registration, enabled = excluded.enabled, \
            pending_email = excluded.pending_email, code_regeneration = excluded.code_regeneration, \
            province = excluded.province, registered_institutional = excluded.registered_institutional, \
            portal_updated_at = excluded.portal_updated_at, import_id = excluded.import_id, present = 1 \
         WHERE excluded.portal_updated_at IS NULL OR users.portal_updated_at IS NULL \
            OR excluded.portal_updated_at >= users.portal_updated_at",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    phase.done("upsert");
    // Stale rows keep their stored state but still count as seen in this snapshot. The upsert
    // applied every row that is not stale, so without stale rows there is nothing to do (and
    // the statement would cost a pass over both tables).
    if report.rows_stale > 0 {
        sqlx::query(
            "UPDATE users SET import_id = $1, present = 1 WHERE import_id <> $1 \
             AND user_id IN (SELECT user_id FROM import_rows WHERE import_id = $1)",
        )
        .bind(id)
        .execute(&mut **tx)
        .await?;
        phase.done("stale rows seen");
    }
    if !options.partial {
        let present: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE present = 1")
            .fetch_one(&mut **tx)
            .await?;
        let gone: i64 = count("SELECT COUNT(*) FROM users WHERE present = 1 AND import_id <> $1")
            .fetch_one(&mut **tx)
            .await?;
        if gone > 0 && gone * 100 > present * i64::from(options.max_gone_percent) {
            return Err(ImportError::TooManyGone {
                path: path.to_path_buf(),
                gone: gone as u64,
                present: present as u64,
                limit: options.max_gone_percent,
            });
        }
        sqlx::query("UPDATE users SET present = 0 WHERE present = 1 AND import_id <> $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        report.users_gone = gone as u64;
        phase.done("gone");
    }

    sqlx::query("DELETE FROM import_rows WHERE import_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    phase.done("clear staging");
    sqlx::query(
        "UPDATE imports SET finished_at = started_at, rows_read = $2, rows_new = $3, rows_known = $4, \
         rows_stale = $5, rows_rejected = $6, users_gone = $7 WHERE id = $1",
    )
    .bind(id)
    .bind(report.rows_read as i64)
    .bind(report.users_new as i64)
    .bind(report.users_known as i64)
    .bind(report.rows_stale as i64)
    .bind(report.rows_rejected as i64)
    .bind(report.users_gone as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One multi-row INSERT of validated rows into staging.
async fn stage(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    import_id: i64,
    rows: Vec<(u64, UserRecord)>,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    const COLS: usize = 15;
    let mut sql = String::from(
        "INSERT INTO import_rows (import_id, line, user_id, fiscal_code, first_name, last_name, \
         email, institutional_email, registration, enabled, pending_email, code_regeneration, \
         province, registered_institutional, portal_updated_at) VALUES ",
    );
    let mut args = AnyArguments::default();
    for (i, (line, u)) in rows.into_iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..COLS {
            if c > 0 {
                sql.push(',');
            }
            // SQLite looks a named parameter up among all the statement's names (quadratic in
            // their number); anonymous `?` are bound by position.
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(i * COLS + c + 1).to_string());
                }
            }
        }
        sql.push(')');
        let registration = if u.registration_completed {
            "completed"
        } else {
            "started"
        };
        let regeneration = if u.code_regeneration_started {
            "started"
        } else {
            "none"
        };
        add(&mut args, import_id)?;
        let institutional = u.registered_institutional();
        add(&mut args, line as i64)?;
        add(&mut args, u.contact.user_id)?;
        add(&mut args, u.fiscal_code)?;
        add(&mut args, u.contact.first_name)?;
        add(&mut args, u.contact.last_name)?;
        add(&mut args, u.contact.email)?;
        add(&mut args, u.contact.institutional_email)?;
        add(&mut args, registration)?;
        add(&mut args, i64::from(u.enabled))?;
        add(&mut args, u.contact.pending_email)?;
        add(&mut args, regeneration)?;
        add(&mut args, u.contact.province)?;
        add(&mut args, i64::from(institutional))?;
        add(&mut args, u.updated_at.map(|t| t.timestamp()))?;
    }
    sqlx::query_with(&sql, args).execute(&mut **tx).await?;
    Ok(())
}

fn add<'q, T>(args: &mut AnyArguments<'q>, value: T) -> Result<(), sqlx::Error>
where
    T: 'q + sqlx::Encode<'q, Any> + sqlx::Type<Any>,
{
    args.add(value).map_err(sqlx::Error::Encode)
}

/// The reject file, opened on the first rejected row of a `--skip-invalid` import.
struct RejectWriter {
    path: PathBuf,
    enabled: bool,
    header: Vec<String>,
    out: Option<csv::Writer<File>>,
}

impl RejectWriter {
    fn new(input: &Path, options: &ImportOptions, header: &[String]) -> RejectWriter {
        let path = options.reject_file.clone().unwrap_or_else(|| {
            let mut name = input.as_os_str().to_owned();
            name.push(".rejects.csv");
            PathBuf::from(name)
        });
        RejectWriter {
            path,
            enabled: options.skip_invalid && !options.dry_run,
            header: header.to_vec(),
            out: None,
        }
    }

    fn write(&mut self, line: u64, raw: &[String], errors: &[RowError]) -> Result<(), ImportError> {
        if !self.enabled {
            return Ok(());
        }
        let err = |source| ImportError::RejectFile {
            path: self.path.clone(),
            source,
        };
        if self.out.is_none() {
            let file = create_private(&self.path).map_err(err)?;
            // Flexible: a row with the wrong number of fields is written back as it came.
            let mut w = csv::WriterBuilder::new().flexible(true).from_writer(file);
            let mut header = vec!["line".to_string(), "errors".to_string()];
            header.extend(self.header.iter().cloned());
            write_safe_record(&mut w, &header).map_err(|e| err(e.into()))?;
            self.out = Some(w);
        }
        let reasons: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.column, e.reason))
            .collect();
        let mut record = vec![line.to_string(), reasons.join("; ")];
        record.extend(raw.iter().cloned());
        let out = self.out.as_mut().expect("opened above");
        write_safe_record(out, &record).map_err(|e| err(e.into()))
    }

    /// A rejected duplicate: its staged fields are gone, so the row carries the user_id only.
    fn write_user_id(
        &mut self,
        line: u64,
        user_id: String,
        errors: &[RowError],
    ) -> Result<(), ImportError> {
        let mut raw = vec![String::new(); self.header.len()];
        if let Some(i) = self.header.iter().position(|h| h == "user_id") {
            raw[i] = user_id;
        }
        self.write(line, &raw, errors)
    }

    fn finish(self) -> Result<Option<PathBuf>, ImportError> {
        match self.out {
            Some(mut w) => {
                w.flush().map_err(|source| ImportError::RejectFile {
                    path: self.path.clone(),
                    source,
                })?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

/// A cell of a CSV file avvisi writes for people (a report, a reject file), as a spreadsheet
/// will not run it: text starting with `=`, `+`, `-`, `@`, a tab or a CR is a formula to Excel
/// and LibreOffice (`=cmd|'/Ccalc'!A0@evil.it` as an address), so it gets a leading `'`, as
/// OWASP advises against CSV injection.
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Writes one record of `cells`, each through [`spreadsheet_safe`].
pub(crate) fn write_safe_record<W: std::io::Write>(
    w: &mut csv::Writer<W>,
    cells: impl IntoIterator<Item = impl AsRef<str>>,
) -> csv::Result<()> {
    for cell in cells {
        w.write_field(spreadsheet_safe(cell.as_ref()).as_bytes())?;
    }
    // No more fields: ends the record.
    w.write_record(None::<&[u8]>)
}

/// Opens the snapshot at `path` for reading, refusing without reading a byte what is not a
/// regular file: a symlink (it may point at a file the operator did not mean, whose first
/// cell an error would quote: `/etc/shadow`), a FIFO (it would block the import forever), a
/// device.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: a FIFO opens at once, to be refused below; a regular file reads as ever.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(not_a_symlink)?;
    regular(&file)?;
    Ok(file)
}

/// Creates or truncates `path` as a file readable by its owner only (reject files and reports
/// hold personal data): mode 0600 whatever the mode of a file already there; a symlink, a FIFO
/// or anything else but a regular file is refused, not written through.
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    // Truncated only once known to be a regular file.
    options.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
        // Non-blocking: a FIFO without a reader fails at once instead of waiting for one.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(not_a_symlink)?;
    regular(&file)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.set_len(0)?;
    Ok(file)
}

/// The errors of `O_NOFOLLOW` on a symlink and of `O_NONBLOCK` on a FIFO without a reader,
/// said plainly.
fn not_a_symlink(e: std::io::Error) -> std::io::Error {
    #[cfg(unix)]
    match e.raw_os_error() {
        Some(libc::ELOOP) => {
            return std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is a symbolic link, refused: name the file itself",
            )
        }
        Some(libc::ENXIO) => return not_regular(),
        _ => {}
    }
    e
}

fn regular(file: &File) -> std::io::Result<()> {
    match file.metadata()?.is_file() {
        true => Ok(()),
        false => Err(not_regular()),
    }
}

fn not_regular() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "not a regular file (a FIFO, a device or a folder), refused",
    )
}
