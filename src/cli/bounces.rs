//! `avvisi bounces import PATH`: returned mail read into the bounce records and the
//! suppression list.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::show;
use crate::app::{Actor, App};
use crate::bounce::BounceReport;

/// Returned mail (bounces).
#[derive(Debug, Subcommand)]
pub enum BouncesCommand {
    /// Read a Maildir folder or an mbox file of returned mail: hard bounces (5.x.x) of a
    /// message avvisi sent suppress the address it went to, soft ones (4.x.x) are counted
    /// (bounce.soft_limit within bounce.soft_window_days suppress it). Importing the same mail
    /// twice changes nothing.
    #[command(
        after_help = "Prints: read, matched (linked to the message that bounced), hard, soft, unrecognised\n\
        (of which not linked: a failure report that names no message avvisi sent to that address,\n\
        which changes nothing), already imported, newly suppressed, set aside (a message over 4 MiB,\n\
        nested too deep or too slow to read: moved to the Maildir's .avvisi-rejected/ folder).\n\
        Unrecognised and set-aside messages are listed in bounce.unrecognised_file\n\
        (or --unrecognised FILE) for a human.\n\n\
        Examples:\n  avvisi bounces import /var/mail/vhosts/istruzione.it/bounces/\n  \
        avvisi bounces import /var/mail/bounces --unrecognised /srv/avvisi/unrecognised.txt"
    )]
    Import {
        /// A Maildir folder (with cur/ and new/) or an mbox file.
        path: PathBuf,
        /// Where to list the unrecognised messages (default: bounce.unrecognised_file).
        #[arg(long, value_name = "FILE")]
        unrecognised: Option<PathBuf>,
    },
}

pub(crate) async fn run(
    cmd: BouncesCommand,
    app: &App,
    who: &Actor,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let BouncesCommand::Import { path, unrecognised } = cmd;
    let report = app
        .import_bounces(who, &path, unrecognised.as_deref())
        .await?;
    show(json, &report, print)
}

fn print(report: &BounceReport) {
    println!("read              {}", report.read);
    println!("matched           {}", report.matched);
    println!("hard              {}", report.hard);
    println!("soft              {}", report.soft);
    println!("unrecognised      {}", report.unrecognised);
    println!("  not linked      {}", report.unlinked);
    println!("already imported  {}", report.already_imported);
    println!("newly suppressed  {}", report.suppressed);
    println!("set aside         {}", report.set_aside);
    if let Some(folder) = &report.set_aside_folder {
        println!(
            "the messages set aside (too big, nested too deep, too slow to read) were moved to {}",
            folder.display()
        );
    }
    if let Some(file) = &report.unrecognised_file {
        println!(
            "the unrecognised messages are listed in {} for a human to read",
            file.display()
        );
    }
}
