//! `avvisi import users FILE`: load the portal's snapshot, all or nothing.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::ImportUsersArgs;
use crate::config::Settings;
use crate::import::snapshot::RowError;
use crate::import::{self, ImportError, ImportOptions};
use crate::store::Db;
use crate::telemetry::printable;
use crate::telemetry::progress::{Progress, Unit};

pub(crate) async fn users(
    db: &Db,
    settings: &Settings,
    args: &ImportUsersArgs,
    now: DateTime<Utc>,
) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        skip_invalid: args.skip_invalid,
        dry_run: args.dry_run,
        partial: args.partial,
        reject_file: args.reject_file.clone(),
        max_gone_percent: settings.import.max_gone_percent,
        encoding: args.encoding,
        // A file that cannot be read is reported by the import itself, by name.
        progress: std::fs::metadata(&args.file).ok().map(|m| {
            Progress::start(
                "import users",
                Unit::Bytes,
                m.len(),
                Duration::from_secs(settings.log.progress_seconds),
            )
        }),
    };
    let imported = import::import_users(db, &args.file, &options, now).await;
    if let Some(p) = &options.progress {
        p.finish();
    }
    match imported {
        Ok(report) => {
            let verb = if report.committed {
                "imported"
            } else {
                "dry run, nothing written:"
            };
            println!(
                "{}: {verb} {} rows ({} new users, {} known, {} stale rows kept as stored, {} rejected, {} users gone)",
                args.file.display(),
                report.rows_valid,
                report.users_new,
                report.users_known,
                report.rows_stale,
                report.rows_rejected,
                report.users_gone
            );
            print_row_errors(&report.errors, report.errors_total);
            if let Some(path) = &report.reject_file {
                println!("rejected rows written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ImportError::Invalid { path, report }) => {
            print_row_errors(&report.errors, report.errors_total);
            anyhow::bail!(
                "{}: {} problem(s) in {} of {} rows; nothing was imported (fix the file, or use --skip-invalid to import the valid rows)",
                path.display(),
                report.errors_total,
                report.rows_rejected,
                report.rows_read
            )
        }
        Err(e) => Err(e).context("importing users"),
    }
}

fn print_row_errors(errors: &[RowError], total: u64) {
    for e in errors {
        // A row error quotes the cell.
        eprintln!("  {}", printable(&e.to_string()));
    }
    if total > errors.len() as u64 {
        eprintln!("  ... and {} more", total - errors.len() as u64);
    }
}
