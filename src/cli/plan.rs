//! `avvisi plan [--dry-run] [--now TS] [--json]`: what a planner tick plans, per campaign and
//! step, and the difference from the last tick; with `--dry-run`, nothing written.

use super::local;
use crate::plan::report::PlanReport;

pub(crate) fn print(r: &PlanReport, tz: chrono_tz::Tz) {
    if r.dry_run {
        println!(
            "dry run at {} ({tz}): nothing written",
            local(Some(r.at), tz)
        );
    } else {
        println!(
            "planned at {} ({tz}): nothing delivered (the daemon or `avvisi run --once` sends it)",
            local(Some(r.at), tz)
        );
    }
    if let Some(warning) = &r.snapshot_warning {
        println!("warning: {warning}");
    }
    let w = r
        .steps
        .iter()
        .map(|s| s.campaign.len())
        .chain(r.changes.iter().map(|c| c.campaign.len()))
        .max()
        .unwrap_or(0)
        .max("campaign".len());
    if r.steps.is_empty() {
        println!("no campaign step is due at this instant");
    } else {
        println!(
            "{:<w$}  {:<6} {:>7} {:>8}  {:<19} samples",
            "campaign", "step", "rows", "skipped", "digests (sections)"
        );
        for s in &r.steps {
            let mut samples = s.samples.join(" ");
            if s.rows > s.samples.len() as u64 {
                samples.push_str(" ...");
            }
            let line = format!(
                "{:<w$}  {:<6} {:>7} {:>8}  {:<19} {}",
                s.campaign,
                s.step,
                s.rows,
                s.skipped,
                format!("{} ({})", s.digests, s.sections),
                samples.trim_start()
            );
            println!("{}", line.trim_end());
        }
    }
    let rows: u64 = r.steps.iter().map(|s| s.rows).sum();
    println!(
        "{rows} rows, {} emails; {} expired, {} superseded, {} lapses recorded",
        r.emails, r.expired, r.superseded, r.lapses_recorded
    );
    match &r.last_tick {
        None => println!("no earlier tick planned anything"),
        Some(last) if r.changes.is_empty() => println!(
            "the same rows per campaign and step as the last tick that planned ({})",
            local(Some(last.at), tz)
        ),
        Some(last) => {
            println!(
                "compared with the last tick that planned ({}):",
                local(Some(last.at), tz)
            );
            println!(
                "  {:<w$}  {:<6} {:>7} {:>7} {:>7}",
                "campaign", "step", "then", "now", "change"
            );
            for c in &r.changes {
                println!(
                    "  {:<w$}  {:<6} {:>7} {:>7} {:>+7}",
                    c.campaign,
                    c.step,
                    c.last,
                    c.now,
                    c.now as i64 - c.last as i64
                );
            }
        }
    }
}
