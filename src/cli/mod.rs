//! The command line: [`Cli`] (clap) and one file per command, each of which opens what it needs,
//! calls the library and prints for people. No SQL here: every query is in the stages below.
//! Errors are `anyhow` with context; the stages return their own error types.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Db;

mod args;
pub mod bounces;
pub mod campaign;
mod configuration;
mod explain;
mod import;
mod plan;
mod report;
mod retry;
mod run;
pub mod service;
mod status;
pub mod suppress;
pub mod templates;

pub use args::{
    Cli, Command, ConfigCommand, ImportCommand, ImportUsersArgs, PlanArgs, RetryArgs, RunArgs,
    ServiceCommand,
};

/// Exit status when delivery stopped because the relay could not be reached.
pub(crate) const EXIT_RELAY_UNREACHABLE: u8 = 3;

/// Runs one command. `clock` is the process-wide clock (`--now` or the real one).
pub async fn run(command: Command, settings: Settings, clock: Clock) -> anyhow::Result<ExitCode> {
    if let Command::Config(cmd) = &command {
        // Needs no database: it must work while the database is what is being set up.
        return configuration::run(cmd, &settings);
    }
    let settings = Arc::new(settings);
    // Every command applies what migrations are missing; `migrate` says which.
    let (db, applied) = Db::open_settings(&settings.database)
        .await
        .context("opening the database")?;
    let result = match command {
        Command::Migrate => {
            if applied.is_empty() {
                println!(
                    "database is up to date ({:?}): no migration to apply",
                    db.backend()
                );
            } else {
                println!(
                    "applied {} migration(s) to the database ({:?}):",
                    applied.len(),
                    db.backend()
                );
                for m in &applied {
                    println!("  {:04} {}", m.version, m.description);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(ImportCommand::Users(args)) => {
            import::users(&db, &settings, &args, clock.now()).await
        }
        Command::Run(args) => run::once(&db, settings.clone(), &args, clock).await,
        Command::Plan(args) => plan::run(&db, &settings, &clock, &args).await,
        Command::Status { json } => status::run(&db, &settings, &clock, json).await,
        Command::Templates(cmd) => templates::run(cmd, &db, &settings, &clock).await,
        Command::Campaign(cmd) => campaign::run(cmd, &db, settings.clone(), &clock).await,
        Command::Daemon { now } => service::daemon(&db, settings.clone(), clock.clone(), now).await,
        Command::Service(ServiceCommand::Reopen { at }) => {
            service::reopen(&db, &settings, &clock, at).await
        }
        Command::Calendar { now } => service::calendar(&db, &settings, &clock, now).await,
        Command::Explain { user_id, json, now } => {
            let now = now.unwrap_or_else(|| clock.now());
            explain::run(&db, &settings, &user_id, json, now).await
        }
        Command::Retry(args) => retry::run(&db, &args, &clock).await,
        Command::Report {
            campaign,
            out,
            html,
        } => {
            report::run(
                &db,
                &settings,
                &clock,
                &campaign,
                out.as_deref(),
                html.as_deref(),
            )
            .await
        }
        Command::Suppress(cmd) => suppress::run(cmd, &db, &settings, &clock).await,
        Command::Bounces(cmd) => bounces::run(cmd, &db, &settings, &clock).await,
        Command::Config(_) => unreachable!("handled before the database is opened"),
    };
    db.close().await;
    result.map_err(|e| db.explain(e))
}

/// The error and its causes on one line, each cause once: a cause whose text is already in the
/// line (a message that quotes its source, as many do) is not repeated.
pub fn error_report(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A stored instant in the calendar's time zone, or `-`.
fn local(t: Option<DateTime<Utc>>, tz: Tz) -> String {
    t.map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_quoted_by_its_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(crate::import::ImportError::Open {
            path: "/x.csv".into(),
            source: io,
        })
        .context("importing users");
        assert_eq!(
            error_report(&e),
            "importing users: cannot open /x.csv: No such file"
        );
    }
}
