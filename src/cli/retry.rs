//! `avvisi retry --failed`: failed messages back in the queue, per campaign counts printed.

use std::process::ExitCode;

use anyhow::Context;

use super::RetryArgs;
use crate::clock::Clock;
use crate::deliver::retry::{retry_failed, RetryFilter};
use crate::store::Db;

pub(crate) async fn run(db: &Db, args: &RetryArgs, clock: &Clock) -> anyhow::Result<ExitCode> {
    let filter = RetryFilter {
        campaign: args.campaign.clone(),
        reply: args.reply,
        since: args.since,
    };
    let now = args.now.unwrap_or_else(|| clock.now());
    let report = retry_failed(db, &filter, now, args.dry_run)
        .await
        .context("putting failed messages back in the queue")?;
    if report.per_campaign.is_empty() {
        println!("no failed message matches: nothing to retry");
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if args.dry_run {
        "would be retried"
    } else {
        "retried"
    };
    println!("{:<45} {:>9} {:>14}", "campaign", verb, "past deadline");
    for (campaign, retried, late) in &report.per_campaign {
        println!("{campaign:<45} {retried:>9} {late:>14}");
    }
    if args.dry_run {
        println!("dry run: nothing was changed");
    } else {
        println!(
            "{} message(s) back in the queue: the daemon (or `avvisi run --once`) sends them",
            report.retried()
        );
    }
    Ok(ExitCode::SUCCESS)
}
