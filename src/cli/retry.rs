//! `avvisi retry --failed`: failed messages back in the queue, per campaign counts printed.

use std::process::ExitCode;

use super::{show, RetryArgs};
use crate::app::{Actor, App, Retried};
use crate::deliver::retry::RetryFilter;

pub(crate) async fn run(
    app: &App,
    who: &Actor,
    args: &RetryArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let filter = RetryFilter {
        campaign: args.campaign.clone(),
        reply: args.reply,
        since: args.since,
    };
    let report = app
        .retry_failed(who, &filter, args.now, args.dry_run)
        .await?;
    show(json, &report, print)
}

fn print(r: &Retried) {
    if r.per_campaign.is_empty() {
        println!("no failed message matches: nothing to retry");
        return;
    }
    let verb = if r.dry_run {
        "would be retried"
    } else {
        "retried"
    };
    println!("{:<45} {:>9} {:>14}", "campaign", verb, "past deadline");
    for c in &r.per_campaign {
        println!(
            "{:<45} {:>9} {:>14}",
            c.campaign, c.retried, c.past_deadline
        );
    }
    if r.dry_run {
        println!("dry run: nothing was changed");
    } else {
        println!(
            "{} message(s) back in the queue: the daemon (or `avvisi run --once`) sends them",
            r.retried
        );
    }
}
