//! The command line: [`Cli`] (clap) and one file per command, each of which parses, calls one
//! use case of [`crate::app`] and prints its report: as text for people, or as JSON with
//! `--json`. No SQL and no use-case work here. Errors are `anyhow` with context.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::app::{Actor, App};
use crate::clock::Clock;
use crate::config::Settings;

mod args;
mod audit;
pub mod bounces;
pub mod campaign;
mod configuration;
mod explain;
mod import;
pub mod optouts;
mod phases;
mod plan;
mod report;
mod retry;
mod run;
pub mod service;
mod status;
pub mod suppress;
pub mod templates;
pub mod users;

pub use args::{Cli, Command, ConfigCommand, PlanArgs, RetryArgs, RunArgs, ServiceCommand};
pub use import::{ImportCommand, ImportUsersArgs};

/// Exit status when delivery stopped because the relay could not be reached.
pub(crate) const EXIT_RELAY_UNREACHABLE: u8 = 3;

/// Runs one command; `json` prints its report as JSON. `clock` is the process-wide clock
/// (`--now` or the real one).
pub async fn run(
    command: Command,
    json: bool,
    settings: Settings,
    clock: Clock,
) -> anyhow::Result<ExitCode> {
    if let Command::Config(cmd) = &command {
        // Needs no database: it must work while the database is what is being set up.
        return configuration::run(cmd, &settings, json);
    }
    // Every command applies what migrations are missing; `migrate` says which.
    let app = App::open(settings, clock).await?;
    let who = Actor::command_line();
    let result = dispatch(command, &app, &who, json).await;
    app.close().await;
    result.map_err(|e| app.explain_error(e))
}

async fn dispatch(
    command: Command,
    app: &App,
    who: &Actor,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let tz = app.settings().calendar.timezone;
    match command {
        Command::Migrate => {
            let m = app.migrations();
            show(json, &m, |m| {
                if m.applied.is_empty() {
                    println!(
                        "database is up to date ({}): no migration to apply",
                        m.backend
                    );
                } else {
                    println!(
                        "applied {} migration(s) to the database ({}):",
                        m.applied.len(),
                        m.backend
                    );
                    for m in &m.applied {
                        println!("  {:04} {}", m.version, m.description);
                    }
                }
            })
        }
        Command::Import(ImportCommand::Users(args)) => import::users(app, who, &args, json).await,
        Command::Run(args) => run::once(app, who, &args, json).await,
        Command::Plan(args) => {
            let r = app.plan(who, args.now, args.dry_run).await?;
            show(json, &r, |r| plan::print(r, tz))
        }
        Command::Status => {
            let s = app.status().await?;
            show(json, &s, |s| status::print(s, app.settings()))
        }
        Command::Templates(cmd) => templates::run(cmd, app, who, json).await,
        Command::Campaign(cmd) => campaign::run(cmd, app, who, json).await,
        Command::Daemon { now } => {
            service::daemon(app.db(), app.settings().clone(), app.clock().clone(), now).await
        }
        Command::Service(ServiceCommand::Reopen { at }) => {
            let r = app.reopen(who, at).await?;
            show(json, &r, |r| phases::print_reopened(r, tz))
        }
        Command::Calendar { now } => {
            let c = app.calendar(now).await?;
            show(json, &c, |c| phases::print_calendar(c, tz))
        }
        Command::Explain { user_id, now } => {
            let e = app.explain(&user_id, now).await?;
            show(json, &e, |e| explain::print(e, tz))
        }
        Command::Retry(args) => retry::run(app, who, &args, json).await,
        Command::Report {
            campaign,
            out,
            html,
        } => report::run(app, &campaign, out.as_deref(), html.as_deref(), json).await,
        Command::Suppress(cmd) => suppress::run(cmd, app, who, json).await,
        Command::Optouts(cmd) => optouts::run(cmd, app, who, json).await,
        Command::Complaints(cmd) => optouts::run_complaints(cmd, app, who, json).await,
        Command::Bounces(cmd) => bounces::run(cmd, app, who, json).await,
        Command::Users(cmd) => users::run(cmd, app, who, json).await,
        Command::Audit { since } => audit::run(app, since, json).await,
        Command::Config(_) => unreachable!("handled before the database is opened"),
    }
}

/// Prints `report` as pretty JSON with `--json`, else as `text` prints it; exit status 0.
fn show<T: Serialize>(json: bool, report: &T, text: impl FnOnce(&T)) -> anyhow::Result<ExitCode> {
    if json {
        print_json(report)?;
    } else {
        text(report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json<T: Serialize + ?Sized>(report: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
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
