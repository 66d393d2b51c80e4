//! `avvisi audit [--since TS]`: the audit log, times in the calendar's time zone.

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use super::{local, print_json};
use crate::app::App;
use crate::telemetry::printable;

pub(crate) async fn run(
    app: &App,
    since: Option<DateTime<Utc>>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let entries = app.audit_log(since).await?;
    if json {
        print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!(
            "the audit log has nothing{}",
            match since {
                Some(_) => " since then",
                None => " yet",
            }
        );
    }
    let tz = app.settings().calendar.timezone;
    for e in &entries {
        println!(
            "{}  {} ({}, {}, from {})  {} {}: {}",
            local(Some(e.at), tz),
            printable(&e.actor_name),
            e.actor_kind,
            e.role,
            printable(&e.source),
            e.action,
            printable(&e.object),
            printable(&e.outcome)
        );
        match (&e.before, &e.after) {
            (None, None) => {}
            (before, after) => println!(
                "    {} -> {}",
                printable(before.as_deref().unwrap_or("-")),
                printable(after.as_deref().unwrap_or("-"))
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
