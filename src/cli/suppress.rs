//! `avvisi suppress list|add|remove`: the suppression list, for operators.

use std::process::ExitCode;

use clap::Subcommand;

use super::{local, print_json, show};
use crate::app::{Actor, App};
use crate::audience::suppression::Suppression;
use crate::telemetry::printable;

/// The suppression list: addresses avvisi no longer writes to.
#[derive(Debug, Subcommand)]
pub enum SuppressCommand {
    /// Every suppressed address with its reason, source (operator, relay, bounce) and time.
    #[command(after_help = "Example:\n  avvisi suppress list\n  avvisi suppress list --json")]
    List,
    /// Stop writing to ADDRESS (stored lower-cased); planned messages to it are skipped as
    /// `suppressed`, or go to the user's institutional address when there is one.
    #[command(
        after_help = "Example:\n  avvisi suppress add mario.rossi@libero.it --reason \"the user asked by phone\""
    )]
    Add {
        address: String,
        /// Why, for whoever looks later (`avvisi explain`, `suppress list`).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Write to ADDRESS again (from the next planned message on).
    #[command(after_help = "Example:\n  avvisi suppress remove mario.rossi@libero.it")]
    Remove { address: String },
}

pub(crate) async fn run(
    cmd: SuppressCommand,
    app: &App,
    who: &Actor,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SuppressCommand::List => {
            let list = app.suppressions().await?;
            if json {
                print_json(&list)?;
            } else {
                print_list(&list, app.settings().calendar.timezone);
            }
            Ok(ExitCode::SUCCESS)
        }
        SuppressCommand::Add { address, reason } => {
            let r = app.suppress(who, &address, &reason).await?;
            show(json, &r, |r| match &r.already {
                None => println!("{} suppressed: no message will go to it", r.address),
                Some(s) => println!(
                    "{} was already suppressed (by {}: {}); left as it was",
                    r.address,
                    s.source,
                    printable(&s.reason)
                ),
            })
        }
        SuppressCommand::Remove { address } => {
            let r = app.unsuppress(who, &address).await?;
            show(json, &r, |r| {
                println!("{} removed from the suppression list", r.address)
            })
        }
    }
}

fn print_list(list: &[Suppression], tz: chrono_tz::Tz) {
    if list.is_empty() {
        println!("no suppressed address");
        return;
    }
    // Addresses and reasons may come from a relay's reply: escaped for the terminal.
    let w = list
        .iter()
        .map(|s| printable(&s.address).chars().count())
        .max()
        .unwrap_or(0);
    println!("{:<w$}  {:<20} {:<8} reason", "address", "since", "source");
    for s in list {
        println!(
            "{:<w$}  {:<20} {:<8} {}",
            printable(&s.address),
            local(s.created_at, tz),
            s.source,
            printable(&s.reason)
        );
    }
    println!("{} address(es)", list.len());
}
