//! `avvisi import users FILE`: load the portal's snapshot, all or nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::show;
use crate::app::{Actor, App, ImportRefused, UsersImport, UsersImported};
use crate::import::snapshot::Encoding;
use crate::telemetry::printable;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Load the portal's user snapshot (CSV, comma or semicolon separated, UTF-8 unless --encoding).
    #[command(
        after_help = "Columns (header row required, any order): user_id, fiscal_code, first_name, last_name,\n\
        email, institutional_email, registration (started|completed), enabled (true|false),\n\
        pending_email, code_regeneration (none|started), province (optional), updated_at (optional, RFC 3339).\n\n\
        Example:\n  avvisi import users examples/users.csv --dry-run\n  avvisi import users snapshot.csv --skip-invalid\n  \
        avvisi import users export-excel.csv --encoding windows-1252"
    )]
    Users(ImportUsersArgs),
}

#[derive(Debug, Args)]
pub struct ImportUsersArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// Import the valid rows and write the invalid ones to a reject file (FILE.rejects.csv).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Where to write rejected rows (with --skip-invalid).
    #[arg(long, value_name = "FILE", requires = "skip_invalid")]
    pub reject_file: Option<PathBuf>,
    /// Check everything and report, without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// The file is a delta: users missing from it are not marked as gone.
    #[arg(long)]
    pub partial: bool,
    /// The file's character encoding: windows-1252 for Excel's "CSV" (a file with a byte order
    /// mark is read as the mark says).
    #[arg(long, value_name = "NAME", default_value = "utf-8")]
    pub encoding: Encoding,
}

pub(crate) async fn users(
    app: &App,
    who: &Actor,
    args: &ImportUsersArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let options = UsersImport {
        skip_invalid: args.skip_invalid,
        reject_file: args.reject_file.clone(),
        dry_run: args.dry_run,
        partial: args.partial,
        encoding: args.encoding,
    };
    match app.import_users(who, &args.file, options).await {
        Ok(report) => show(json, &report, print),
        Err(e) => {
            if let Some(refused) = e.downcast_ref::<ImportRefused>() {
                print_row_errors(&refused.errors, refused.errors_total);
            }
            Err(e)
        }
    }
}

/// The import's line, its first row errors, and where the rejected rows went.
pub(crate) fn print(r: &UsersImported) {
    let verb = if r.committed {
        "imported"
    } else {
        "dry run, nothing written:"
    };
    println!(
        "{}: {verb} {} rows ({} new users, {} known, {} stale rows kept as stored, {} rejected, {} users gone)",
        r.file.display(),
        r.rows_valid,
        r.users_new,
        r.users_known,
        r.rows_stale,
        r.rows_rejected,
        r.users_gone
    );
    print_row_errors(&r.errors, r.errors_total);
    if let Some(path) = &r.reject_file {
        println!("rejected rows written to {}", path.display());
    }
}

fn print_row_errors(errors: &[String], total: u64) {
    for e in errors {
        // A row error quotes the cell.
        eprintln!("  {}", printable(e));
    }
    if total > errors.len() as u64 {
        eprintln!("  ... and {} more", total - errors.len() as u64);
    }
}
