//! `avvisi optouts list|remove`: who stopped which stream, for operators.

use std::process::ExitCode;

use clap::Subcommand;

use super::{local, print_json, show};
use crate::app::{Actor, App};
use crate::audience::optout::OptOut;
use crate::telemetry::printable;

/// The opt-outs: users who stopped a stream (the one-click unsubscribe, complaints).
#[derive(Debug, Subcommand)]
pub enum OptOutsCommand {
    /// Every opt-out: user, stream, since when, and by what (link, operator, complaint).
    #[command(after_help = "Example:\n  avvisi optouts list\n  avvisi optouts list --json")]
    List,
    /// Send STREAM to USER_ID again, from the next planning on (what was skipped stays so).
    #[command(
        after_help = "Streams: maintenance_notice, reopening_general, campaign:NAME (see `avvisi optouts list`).\n\nExample:\n  avvisi optouts remove U0002 maintenance_notice"
    )]
    Remove { user_id: String, stream: String },
}

pub(crate) async fn run(
    cmd: OptOutsCommand,
    app: &App,
    who: &Actor,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match cmd {
        OptOutsCommand::List => {
            let list = app.optouts().await?;
            if json {
                print_json(&list)?;
            } else {
                print_list(&list, app.settings().calendar.timezone);
            }
            Ok(ExitCode::SUCCESS)
        }
        OptOutsCommand::Remove { user_id, stream } => {
            let r = app.remove_optout(who, &user_id, &stream).await?;
            show(json, &r, |r| {
                println!(
                    "{} gets {} again from the next planning",
                    r.user_id, r.stream
                )
            })
        }
    }
}

fn print_list(list: &[OptOut], tz: chrono_tz::Tz) {
    if list.is_empty() {
        println!("no opt-out");
        return;
    }
    let w = list
        .iter()
        .map(|o| o.user_id.chars().count())
        .max()
        .unwrap_or(0);
    println!("{:<w$}  {:<27} {:<20} source", "user", "stream", "since");
    for o in list {
        println!(
            "{:<w$}  {:<27} {:<20} {}",
            crate::telemetry::printable(&o.user_id),
            o.stream.key(),
            local(o.at, tz),
            o.source
        );
    }
    println!("{} opt-out(s)", list.len());
}

/// Complaints: the mailbox providers' feedback-loop reports.
#[derive(Debug, Subcommand)]
pub enum ComplaintsCommand {
    /// Read a Maildir folder or an mbox file of feedback-loop reports (ARF, RFC 5965): each one
    /// linked to a message avvisi sent (VERP token, Message-ID, or Feedback-ID and recipient)
    /// is recorded once and opts its user out of every stream that is not their own procedure;
    /// a campaign over complaints.pause_percent (after complaints.min_sent emails) is paused.
    #[command(
        after_help = "Prints: read, linked, not linked (changes nothing), not reports, already imported,\n\
        users opted out, campaigns paused with the reason.\n\n\
        Example:\n  avvisi complaints import /var/mail/vhosts/istruzione.it/fbl/"
    )]
    Import {
        /// A Maildir folder (with cur/ and new/) or an mbox file.
        path: std::path::PathBuf,
    },
}

pub(crate) async fn run_complaints(
    cmd: ComplaintsCommand,
    app: &App,
    who: &Actor,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let ComplaintsCommand::Import { path } = cmd;
    let r = app.import_complaints(who, &path).await?;
    show(json, &r, |r| {
        println!("read              {}", r.read);
        println!("linked            {}", r.linked);
        println!("not linked        {}", r.unlinked);
        println!("not reports       {}", r.not_reports);
        println!("already imported  {}", r.already_imported);
        println!("users opted out   {}", r.opted_out);
        println!("set aside         {}", r.set_aside.len());
        for s in &r.set_aside {
            let moved = match &s.moved_to {
                Some(folder) => format!(", moved to {}", folder.display()),
                None => String::new(),
            };
            println!("  {}: {}{moved}", printable(&s.origin), printable(&s.why));
        }
        for (campaign, why) in &r.paused {
            println!("paused            {campaign}: {why}");
        }
    })
}
