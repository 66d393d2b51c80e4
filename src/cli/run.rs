//! `avvisi run --once`: import (optionally), plan what is due now, deliver it, print a table.

use std::process::ExitCode;

use super::{print_json, RunArgs, EXIT_RELAY_UNREACHABLE};
use crate::app::{Actor, App, RunReport};
use crate::config::Settings;
use crate::telemetry::printable;

pub(crate) async fn once(
    app: &App,
    who: &Actor,
    args: &RunArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let import = args.import.as_deref().map(|file| (file, args.encoding));
    let report = app.run_once(who, args.now, import).await?;
    if json {
        print_json(&report)?;
    } else {
        print(&report, app.settings());
    }
    Ok(match report.stopped {
        Some(_) => ExitCode::from(EXIT_RELAY_UNREACHABLE),
        None => ExitCode::SUCCESS,
    })
}

fn print(r: &RunReport, settings: &Settings) {
    if let Some(imported) = &r.imported {
        super::import::print(imported);
    }
    let tz = settings.calendar.timezone;
    println!(
        "run at {} ({}), delivery: {}",
        r.at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z"),
        tz,
        r.delivery
    );
    println!(
        "{:<45} {:>6} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}",
        "campaign", "step", "planned", "sent", "skipped", "failed", "expired", "retrying"
    );
    for c in &r.campaigns {
        println!(
            "{:<45} {:>6} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}",
            c.campaign,
            c.step.as_deref().unwrap_or("-"),
            c.planned,
            c.sent,
            c.skipped,
            c.failed,
            c.expired,
            c.retrying
        );
    }
    if r.throttled {
        println!(
            "the relay's hourly quota (rate.per_hour, all processes together) is used up: the \
             rest stays queued until the last hour has room (`avvisi status` shows the count)"
        );
    }
    for h in &r.held_domains {
        println!(
            "held: {} until {} (the provider asked us to slow down: {}); its messages wait, the \
             other domains went on",
            h.domain,
            h.until.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z"),
            printable(&h.reply)
        );
    }
    if r.outside_sending_hours {
        let cal = &settings.calendar;
        println!(
            "outside the sending hours ({}-{} {}): due messages wait for the next window",
            cal.sending_hours_start.format("%H:%M"),
            cal.sending_hours_end.format("%H:%M"),
            tz
        );
    }
    if let Some(dir) = &r.files_dir {
        println!(
            "emails written to {}/ (open the .eml files with any mail client)",
            dir.display()
        );
    }
    match &r.stopped {
        Some(stop) if stop.breaker_reply.is_some() => {
            let reply = stop.breaker_reply.as_deref().unwrap_or_default();
            eprintln!(
                "delivery stopped: {}",
                printable(stop.fault.as_deref().unwrap_or(reply))
            );
            eprintln!(
                "{} message(s) of the streak are back in the queue; paused: {}",
                stop.given_back,
                stop.paused.join(", ")
            );
            eprintln!(
                "when the relay is fixed: avvisi campaign resume NAME (for each paused campaign)"
            );
        }
        Some(stop) => {
            eprintln!(
                "delivery stopped, the relay's fault: {}",
                printable(
                    stop.fault
                        .as_deref()
                        .unwrap_or("the relay could not be reached")
                )
            );
            eprintln!("no message was failed for it: they stay queued for the next run");
        }
        None => {}
    }
}
