//! `avvisi suppress list|add|remove`: the suppression list, for operators.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::local;
use crate::audience::suppression;
use crate::clock::Clock;
use crate::config::Settings;
use crate::store::{Db, SuppressionSource};
use crate::telemetry::printable;

/// The suppression list: addresses avvisi no longer writes to.
#[derive(Debug, Subcommand)]
pub enum SuppressCommand {
    /// Every suppressed address with its reason, source (operator, relay, bounce) and time.
    #[command(after_help = "Example:\n  avvisi suppress list\n  avvisi suppress list --json")]
    List {
        /// The same as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
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
    db: &Db,
    settings: &Settings,
    clock: &Clock,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SuppressCommand::List { json } => {
            let list = suppression::list(db)
                .await
                .context("reading the suppression list")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                println!("no suppressed address");
                return Ok(ExitCode::SUCCESS);
            }
            // Addresses and reasons may come from a relay's reply: escaped for the terminal.
            let w = list
                .iter()
                .map(|s| printable(&s.address).chars().count())
                .max()
                .unwrap_or(0);
            let tz = settings.calendar.timezone;
            println!("{:<w$}  {:<20} {:<8} reason", "address", "since", "source");
            for s in &list {
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
        SuppressCommand::Add { address, reason } => {
            let before = suppression::add(
                db,
                &address,
                &reason,
                SuppressionSource::Operator,
                clock.now(),
            )
            .await
            .context("adding to the suppression list")?;
            let address = suppression::normalise(&address)?;
            match before {
                None => println!("{address} suppressed: no message will go to it"),
                Some(s) => println!(
                    "{address} was already suppressed (by {}: {}); left as it was",
                    s.source,
                    printable(&s.reason)
                ),
            }
        }
        SuppressCommand::Remove { address } => {
            let removed = suppression::remove(db, &address)
                .await
                .context("removing from the suppression list")?;
            let address = suppression::normalise(&address)?;
            if removed {
                println!("{address} removed from the suppression list");
            } else {
                anyhow::bail!("{address} is not on the suppression list");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
