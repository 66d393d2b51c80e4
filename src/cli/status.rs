//! `avvisi status`: the queue at a glance, as `mailq` shows Postfix's: counts per campaign and
//! message state, paused campaigns with their reason, the oldest pending message, the next
//! attempt times, the errors grouped by the relay's reply, and which template version is live
//! where. `--json` gives the same for scripts.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::local;
use crate::clock::Clock;
use crate::config::Settings;
use crate::daemon::{self, RunningDaemon};
use crate::deliver::quota;
use crate::import::{freshness, Freshness};
use crate::render::templates::TemplateSet;
use crate::store::queue::{self, CampaignCounts, ErrorGroup, NextAttempts, OldestPending};
use crate::store::Db;
use crate::telemetry::{printable, scrub};

/// Everything `status` shows.
#[derive(Serialize)]
struct Status {
    /// Whether reminders are held for an old snapshot.
    snapshot: Freshness,
    /// Said first when reminders are held.
    warning: Option<String>,
    campaigns: Vec<CampaignCounts>,
    oldest_pending: Option<OldestPending>,
    next_attempts: Vec<NextAttempts>,
    errors: Vec<ErrorGroup>,
    /// The digest of the template set on disk, or why it cannot be loaded.
    templates_on_disk: Option<String>,
    templates_error: Option<String>,
    daemons: Vec<RunningDaemon>,
    /// Messages counted against `rate.per_hour` in the last hour, all processes together, and
    /// the quota; absent when no hourly quota is set.
    hourly_quota: Option<HourlyQuota>,
}

#[derive(Serialize)]
struct HourlyQuota {
    used_last_hour: i64,
    per_hour: u32,
}

pub(crate) async fn run(
    db: &Db,
    settings: &Settings,
    clock: &Clock,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let read = "reading the outbox";
    let mut errors = queue::errors_by_reply(db).await.context(read)?;
    for e in &mut errors {
        e.example = scrub(&e.example).into_owned();
    }
    let loaded = TemplateSet::load(&settings.templates_dir);
    let now = clock.now();
    let snapshot = freshness(db.pool(), settings.import.max_age_hours, now)
        .await
        .context("reading the imports")?;
    let status = Status {
        snapshot,
        warning: snapshot.warning(now),
        campaigns: queue::by_campaign(db).await.context(read)?,
        oldest_pending: queue::oldest_pending(db).await.context(read)?,
        next_attempts: queue::next_attempts(db, 5).await.context(read)?,
        errors,
        templates_on_disk: loaded.as_ref().ok().map(|set| set.digest().to_string()),
        templates_error: loaded.as_ref().err().map(|e| e.to_string()),
        daemons: daemon::running_daemons(db)
            .await
            .context("reading the daemons")?,
        hourly_quota: match settings.rate.per_hour {
            0 => None,
            per_hour => Some(HourlyQuota {
                used_last_hour: quota::used_last_hour(db)
                    .await
                    .context("reading the shared quota")?,
                per_hour,
            }),
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print(&status, settings);
    }
    Ok(ExitCode::SUCCESS)
}

fn print(s: &Status, settings: &Settings) {
    let tz = settings.calendar.timezone;
    // What needs an operator comes first.
    if let Some(warning) = &s.warning {
        println!("WARNING: {}", printable(warning));
    }
    for c in &s.campaigns {
        if let Some(why) = &c.paused_reason {
            println!("campaign {} is paused: {}", c.campaign, printable(why));
            println!(
                "  resume it when the relay is fixed: avvisi campaign resume {}",
                c.campaign
            );
        }
    }
    println!(
        "{:<45} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10}",
        "campaign",
        "state",
        "pending",
        "sending",
        "sent",
        "skipped",
        "failed",
        "expired",
        "suppressed"
    );
    for c in &s.campaigns {
        let n = &c.counts;
        println!(
            "{:<45} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10}",
            c.campaign,
            c.state.as_str(),
            n.pending,
            n.sending,
            n.sent,
            n.skipped,
            n.failed,
            n.expired,
            n.suppressed
        );
    }
    if s.campaigns.is_empty() {
        println!("(no campaigns yet: run `avvisi run --once` to plan the reminders)");
    }
    match &s.oldest_pending {
        Some(p) => println!(
            "oldest pending: {}/{}, planned {}, next attempt {}",
            p.campaign,
            p.step,
            local(p.planned_at, tz),
            local(p.next_attempt_at, tz)
        ),
        None => println!("oldest pending: none"),
    }
    if !s.next_attempts.is_empty() {
        println!("next attempts:");
        for n in &s.next_attempts {
            let at_least = if n.at_least { "at least " } else { "" };
            println!("  {}  {at_least}{} message(s)", local(n.at, tz), n.messages);
        }
    }
    if let Some(q) = &s.hourly_quota {
        println!(
            "hourly quota: {} of {} used in the last hour (all processes)",
            q.used_last_hour, q.per_hour
        );
    }
    if !s.errors.is_empty() {
        println!("errors by reply (failed, waiting to retry, last seen, an example):");
        for e in &s.errors {
            let code = e.code.map_or("-".to_string(), |c| c.to_string());
            println!(
                "  {code:>4}  {:>7} failed {:>7} retrying  {}  {}",
                e.failed,
                e.retrying,
                local(e.last_at, tz),
                printable(&e.example)
            );
        }
    }
    // Which template version is live where: the folder on disk and each running daemon.
    match (&s.templates_on_disk, &s.templates_error) {
        (Some(digest), _) => println!(
            "templates on disk: {digest} ({})",
            settings.templates_dir.display()
        ),
        (None, e) => println!(
            "templates on disk: cannot be loaded: {}",
            printable(e.as_deref().unwrap_or("-"))
        ),
    }
    if s.daemons.is_empty() {
        println!("daemons: none running");
    }
    for d in &s.daemons {
        println!(
            "daemon {}: templates live {}",
            d.id,
            d.templates_digest.as_deref().unwrap_or("-")
        );
    }
}
