//! `avvisi status`: counts per campaign and message state, the oldest pending message, and which
//! template version is live where.

use std::process::ExitCode;

use anyhow::Context;

use super::local;
use crate::config::Settings;
use crate::render::templates::TemplateSet;
use crate::schedule;
use crate::store::{queue, Db};

pub(crate) async fn run(db: &Db, settings: &Settings) -> anyhow::Result<ExitCode> {
    let tz = settings.calendar.timezone;
    let all = queue::by_campaign(db).await.context("reading the outbox")?;
    println!(
        "{:<45} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "campaign", "state", "pending", "sending", "sent", "skipped", "failed", "expired"
    );
    for c in &all {
        let n = &c.counts;
        println!(
            "{:<45} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
            c.campaign,
            c.state.as_str(),
            n.pending,
            n.sending,
            n.sent,
            n.skipped,
            n.failed,
            n.expired
        );
    }
    for c in &all {
        if let Some(why) = &c.paused_reason {
            println!("campaign {} is paused: {why}", c.campaign);
            println!(
                "  resume it when the relay is fixed: avvisi campaign resume {}",
                c.campaign
            );
        }
    }
    if all.is_empty() {
        println!("(no campaigns yet: run `avvisi run --once` to plan the reminders)");
    }
    match queue::oldest_pending(db)
        .await
        .context("reading the outbox")?
    {
        Some(p) => println!(
            "oldest pending: {}/{}, planned {}, next attempt {}",
            p.campaign,
            p.step,
            local(p.planned_at, tz),
            local(p.next_attempt_at, tz)
        ),
        None => println!("oldest pending: none"),
    }
    // Which template version is live where: the folder on disk and each running daemon.
    match TemplateSet::load(&settings.templates_dir) {
        Ok(set) => println!(
            "templates on disk: {} ({})",
            set.digest(),
            settings.templates_dir.display()
        ),
        Err(e) => println!("templates on disk: cannot be loaded: {e}"),
    }
    let daemons = schedule::running_daemons(db)
        .await
        .context("reading the daemons")?;
    if daemons.is_empty() {
        println!("daemons: none running");
    }
    for d in daemons {
        println!(
            "daemon {}: templates live {}",
            d.id,
            d.templates_digest.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
