//! `avvisi run --once`: import (optionally), plan what is due now, deliver it, print a table.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{RunArgs, EXIT_RELAY_UNREACHABLE};
use crate::clock::Clock;
use crate::config::Settings;
use crate::deliver::transport::Transport;
use crate::deliver::Worker;
use crate::plan;
use crate::render::email;
use crate::render::live::TemplateStore;
use crate::render::templates::TemplateSet;
use crate::store::Db;
use crate::telemetry::printable;
use crate::telemetry::progress::{Progress, Unit};

pub(crate) async fn once(
    db: &Db,
    settings: Arc<Settings>,
    args: &RunArgs,
    clock: Clock,
) -> anyhow::Result<ExitCode> {
    let clock = match args.now {
        Some(at) => Clock::manual(at),
        None => clock,
    };
    if let Some(file) = &args.import {
        let import_args = super::ImportUsersArgs {
            file: file.clone(),
            skip_invalid: false,
            reject_file: None,
            dry_run: false,
            partial: false,
            encoding: args.encoding,
        };
        super::import::users(db, &settings, &import_args, clock.now()).await?;
    }
    let templates = TemplateSet::load(&settings.templates_dir).context("loading templates")?;
    let transport = Transport::from_settings(&settings).context("setting up delivery")?;
    let now = clock.now();
    let domain = email::message_id_domain(&settings.mail);
    let planned = plan::plan_due(db, &settings, templates.digest(), &domain, now)
        .await
        .context("planning")?;
    let worker = Worker::new(
        db.clone(),
        settings.clone(),
        transport.clone(),
        TemplateStore::new(templates),
        clock.clone(),
    );
    let due = crate::store::queue::due_now(db, now)
        .await
        .context("counting the due messages")?;
    let progress = Progress::start(
        "run --once",
        Unit::Messages,
        due,
        Duration::from_secs(settings.log.progress_seconds),
    );
    let delivery = worker
        .deliver_due_with(&CancellationToken::new(), Some(progress.clone()))
        .await;
    progress.finish();
    let delivery = delivery.context("delivering")?;
    transport.close().await;

    let tz = settings.calendar.timezone;
    println!(
        "run at {} ({}), delivery: {}",
        now.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z"),
        tz,
        transport.describe()
    );
    println!(
        "{:<45} {:>6} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}",
        "campaign", "step", "planned", "sent", "skipped", "failed", "expired", "retrying"
    );
    let mut names: Vec<&String> = planned.iter().map(|p| &p.campaign).collect();
    for name in delivery.per_campaign.keys() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for name in names {
        let p = planned.iter().find(|p| &p.campaign == name);
        let t = delivery.per_campaign.get(name).cloned().unwrap_or_default();
        println!(
            "{:<45} {:>6} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}",
            name,
            p.map(|p| p.step.to_string()).unwrap_or_else(|| "-".into()),
            p.map(|p| p.rows).unwrap_or(0),
            t.sent,
            t.skipped,
            t.failed,
            t.expired,
            t.retrying
        );
    }
    if delivery.throttled {
        println!(
            "the relay's hourly quota (rate.per_hour, all processes together) is used up: the \
             rest stays queued until the last hour has room (`avvisi status` shows the count)"
        );
    }
    if delivery.outside_sending_hours {
        let cal = &settings.calendar;
        println!(
            "outside the sending hours ({}-{} {}): due messages wait for the next window",
            cal.sending_hours_start.format("%H:%M"),
            cal.sending_hours_end.format("%H:%M"),
            tz
        );
    }
    if let crate::deliver::transport::Transport::Files(dir) = &transport {
        println!(
            "emails written to {}/ (open the .eml files with any mail client)",
            dir.display()
        );
    }
    if let Some(b) = &delivery.breaker {
        eprintln!(
            "delivery stopped: {}",
            printable(delivery.relay_fault.as_deref().unwrap_or(&b.reply))
        );
        eprintln!(
            "{} message(s) of the streak are back in the queue; paused: {}",
            b.given_back,
            b.paused.join(", ")
        );
        eprintln!(
            "when the relay is fixed: avvisi campaign resume NAME (for each paused campaign)"
        );
        return Ok(ExitCode::from(EXIT_RELAY_UNREACHABLE));
    }
    if delivery.relay_unreachable {
        eprintln!(
            "delivery stopped, the relay's fault: {}",
            printable(
                delivery
                    .relay_fault
                    .as_deref()
                    .unwrap_or("the relay could not be reached")
            )
        );
        eprintln!("no message was failed for it: they stay queued for the next run");
        return Ok(ExitCode::from(EXIT_RELAY_UNREACHABLE));
    }
    Ok(ExitCode::SUCCESS)
}
