//! `avvisi daemon`, `avvisi service reopen`, `avvisi calendar`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::audience::Audience;
use crate::campaign;
use crate::campaign::calendar::{cadence_text, reminder_name, reminder_steps};
use crate::campaign::phases;
use crate::clock::Clock;
use crate::config::Settings;
use crate::daemon;
use crate::store::Db;

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn daemon(
    db: &Db,
    settings: Arc<Settings>,
    clock: Clock,
    now: Option<DateTime<Utc>>,
) -> anyhow::Result<ExitCode> {
    let clock = match now {
        Some(at) => Clock::starting_at(at),
        None => clock,
    };
    daemon::run_until_signal(db.clone(), settings, clock).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn reopen(
    db: &Db,
    settings: &Settings,
    clock: &Clock,
    at: Option<DateTime<Utc>>,
) -> anyhow::Result<ExitCode> {
    let now = clock.now();
    let tz = settings.calendar.timezone;
    let r = phases::declare_reopening(db, &settings.calendar, at.unwrap_or(now), now)
        .await
        .context("declaring the reopening")?;
    if r.newly_declared {
        println!(
            "reopening declared for {}: the reopening notices go out from then (within the sending hours)",
            local(r.at, tz)
        );
    } else {
        println!(
            "the reopening was already declared for {}: nothing changed",
            local(r.at, tz)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn calendar(
    db: &Db,
    settings: &Settings,
    clock: &Clock,
    now: Option<DateTime<Utc>>,
) -> anyhow::Result<ExitCode> {
    let cal = &settings.calendar;
    let tz = cal.timezone;
    let now = now.unwrap_or_else(|| clock.now());
    let reopened = phases::reopened_at(db.pool()).await?;
    let phase = phases::phase_at(cal, reopened, now);
    println!("calendar in {tz}, as of {}: phase {phase}", local(now, tz));
    println!(
        "  {:<20} {}",
        "campaign start",
        local(cal.campaign_start, tz)
    );
    println!("  {:<20} {}", "deadline", local(cal.deadline, tz));
    println!(
        "  {:<20} {}",
        "maintenance start",
        local(cal.maintenance_start, tz)
    );
    println!(
        "  {:<20} {} (every enabled user, merged into that day's digest; expires at the maintenance start)",
        "maintenance notice",
        local(cal.maintenance_notice_at, tz)
    );
    match reopened {
        Some(at) => println!("  {:<20} {}", "reopening", local(at, tz)),
        None => println!(
            "  {:<20} not declared yet (avvisi service reopen)",
            "reopening"
        ),
    }
    println!(
        "  {:<20} {}-{}",
        "sending hours",
        cal.sending_hours_start.format("%H:%M"),
        cal.sending_hours_end.format("%H:%M")
    );
    println!("cadence (calendar.cadence: the steps each audience gets):");
    for audience in Audience::REMINDERS {
        println!("  {:<27} {}", audience.name(), cadence_text(cal, audience));
    }
    println!("next reminder steps (each goes to who still qualifies at that moment):");
    let upcoming: Vec<_> = reminder_steps(cal)
        .into_iter()
        .filter(|s| s.due_at > now)
        .collect();
    if upcoming.is_empty() {
        println!("  none");
    }
    for step in upcoming {
        for audience in Audience::REMINDERS {
            if !cal.cadence.allows(audience.name(), step.step) {
                continue;
            }
            let size = campaign::size(db, audience, None).await?;
            println!(
                "  {}  {:<6} {:<45} {size} users now",
                local(step.due_at, tz),
                step.step,
                reminder_name(cal, audience)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}
