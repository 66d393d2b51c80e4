//! The command line (clap). Each subcommand's `--help` carries an example.
//! New commands are added here and dispatched in [`crate::cli`].

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::import::snapshot::Encoding;

/// avvisi: Italian email reminders for the Istanze OnLine maintenance.
#[derive(Debug, Parser)]
#[command(name = "avvisi", version, about, long_about = None)]
pub struct Cli {
    /// Extra TOML file layered over config/default.toml (AVVISI__SECTION__KEY variables win over both).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log output (-q: warnings only, -qq: errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Print the command's report as JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the embedded database migrations (every command also does it first).
    #[command(
        after_help = "Example:\n  avvisi migrate\n  AVVISI__DATABASE__URL=postgres://postgres@127.0.0.1/avvisi avvisi migrate"
    )]
    Migrate,

    /// Load data into the database.
    #[command(subcommand)]
    Import(crate::cli::ImportCommand),

    /// Plan what is due and deliver it.
    #[command(
        after_help = "Example:\n  avvisi run --once --import examples/users.csv --now 2026-11-23T10:00:00+01:00\n\nExit status: 0 when everything due was handled, 3 when the relay was unreachable\n(the rest stays queued for the next run)."
    )]
    Run(RunArgs),

    /// What a planner tick would plan now, per campaign and step (--dry-run: nothing written),
    /// or plan it for real without delivering.
    #[command(
        after_help = "With --dry-run the whole planning pass runs in one transaction that is rolled back: the\n\
        database is left as it was. Without it, what is due is planned for real (the daemon or\n\
        `avvisi run --once` delivers it). Either way it prints, per campaign and step, the rows,\n\
        the daily digests they join and their sections, a few user ids, and the difference from\n\
        the last tick that planned something.\n\n\
        Examples:\n  avvisi plan --dry-run\n  \
        avvisi plan --dry-run --now 2026-11-27T09:00:00+01:00 --json\n  \
        avvisi plan --now 2026-11-23T09:00:00+01:00"
    )]
    Plan(PlanArgs),

    /// Counts per campaign and message state, and the oldest pending message.
    #[command(after_help = "Example:\n  avvisi status\n  avvisi status --json")]
    Status,

    /// Check, preview and publish the templates (for template editors); history, export, rollback.
    #[command(subcommand)]
    Templates(crate::cli::templates::TemplatesCommand),

    /// One-off campaigns for operators: create, preview, test, launch, pause, resume, cancel.
    #[command(subcommand)]
    Campaign(crate::cli::campaign::CampaignCommand),

    /// Run unattended: plan on schedule, deliver continuously, until SIGTERM or Ctrl-C.
    #[command(
        after_help = "Example:\n  avvisi daemon\n  kill -HUP $(pidof avvisi)   # look for a newer published template set now\n\nExit status 0 after a clean stop."
    )]
    Daemon {
        /// Start the clock at this instant (RFC 3339) and let it run from there (rehearsals).
        #[arg(long, value_name = "TIMESTAMP")]
        now: Option<DateTime<Utc>>,
    },

    /// Service phases declared by operators.
    #[command(subcommand)]
    Service(ServiceCommand),

    /// The phases of the calendar and the next planned steps with dates and audience sizes.
    #[command(
        after_help = "Example:\n  avvisi calendar\n  avvisi calendar --now 2026-11-28T12:00:00+01:00"
    )]
    Calendar {
        /// Show the calendar as of this instant (RFC 3339).
        #[arg(long, value_name = "TIMESTAMP")]
        now: Option<DateTime<Utc>>,
    },

    /// The configuration in effect (secrets masked) and where each value comes from.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Everything about one user: snapshot state, audiences, every message and why, and for
    /// each campaign without a message for its current step, why not.
    #[command(
        after_help = "Example:\n  avvisi explain U0002\n  avvisi explain U0037 --now 2026-11-27T10:00:00+01:00 --json"
    )]
    Explain {
        /// The portal's user id.
        user_id: String,
        /// Explain as of this instant (RFC 3339; default: the real clock).
        #[arg(long, value_name = "TIMESTAMP")]
        now: Option<DateTime<Utc>>,
    },

    /// Put failed messages back in the queue (after a fault that failed them wrongly).
    #[command(
        after_help = "Each message comes back as new (pending, due now, attempts reset); its failure is kept\n\
        in its history (`avvisi explain USER_ID`). A message whose deadline has passed stays failed.\n\
        A finished campaign runs again; a paused campaign stays paused until resumed.\n\n\
        Examples:\n  avvisi retry --failed --dry-run\n  \
        avvisi retry --failed --reply 535\n  \
        avvisi retry --failed --campaign maintenance-notice --since 2026-11-26T08:00:00+01:00"
    )]
    Retry(RetryArgs),

    /// One row per planned message of a campaign, as CSV, and a one-page HTML summary with a
    /// chart, for a manager or an audit.
    #[command(
        after_help = "CSV columns: user_id, recipient, step, state, reason, reply_code, attempts, planned_at,\n\
        sent_at, updated_at, message_id (times in the calendar's time zone). Streamed: a million\n\
        rows in flat memory. The file is readable by its owner only (it holds addresses).\n\
        The HTML page has the counts and a chart of the messages sent per hour, and no address.\n\n\
        Examples:\n  avvisi report registration_incomplete-2026-11-30 --out registration.csv\n  \
        avvisi report registration_incomplete-2026-11-30 --html registration.html"
    )]
    Report {
        /// The campaign's name (see `avvisi campaign list`).
        campaign: String,
        /// The CSV file to write.
        #[arg(long, value_name = "FILE.csv", required_unless_present = "html")]
        out: Option<PathBuf>,
        /// The HTML summary to write (counts and a chart of sends per hour).
        #[arg(long, value_name = "FILE.html")]
        html: Option<PathBuf>,
    },

    /// The suppression list: addresses avvisi no longer writes to (unknown users, bounces,
    /// operators' requests).
    #[command(subcommand)]
    Suppress(crate::cli::suppress::SuppressCommand),

    /// The opt-outs: users who stopped a stream that is not their own procedure (the one-click
    /// unsubscribe of the maintenance notice, the general reopening notice, one-off campaigns).
    #[command(subcommand)]
    Optouts(crate::cli::optouts::OptOutsCommand),

    /// Complaints: `complaints import PATH` reads the providers' feedback-loop reports.
    #[command(subcommand)]
    Complaints(crate::cli::optouts::ComplaintsCommand),

    /// Returned mail: `bounces import PATH` reads a Maildir folder or an mbox file of bounces.
    #[command(subcommand)]
    Bounces(crate::cli::bounces::BouncesCommand),

    /// The console's accounts: add, list, disable, change a password or a role.
    #[command(subcommand)]
    Users(crate::cli::users::UsersCommand),

    /// The audit log: who did what, when, from where, and how it ended.
    #[command(
        after_help = "Every action that changes something is recorded, in the same transaction as the
        change; a refused one too, with its reason. Times in the calendar's time zone (JSON: UTC).

        Examples:
  avvisi audit
  avvisi audit --since 2026-11-26T00:00:00+01:00 --json"
    )]
    Audit {
        /// Only what happened at or after this instant (RFC 3339).
        #[arg(long, value_name = "TIMESTAMP")]
        since: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Plan in a transaction that is rolled back: print what would be planned, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Plan as of this instant (RFC 3339; default: the real clock).
    #[arg(long, value_name = "TIMESTAMP")]
    pub now: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Which messages: the failed ones (the only kind that can be retried).
    #[arg(long, required = true)]
    pub failed: bool,
    /// Only this campaign.
    #[arg(long, value_name = "NAME")]
    pub campaign: Option<String>,
    /// Only messages the relay refused with this reply code (e.g. 535, 554).
    #[arg(long, value_name = "CODE")]
    pub reply: Option<u16>,
    /// Only messages that failed at or after this instant (RFC 3339).
    #[arg(long, value_name = "TIMESTAMP")]
    pub since: Option<DateTime<Utc>>,
    /// Count what would be retried, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Decide deadlines as of this instant (RFC 3339; default: the real clock).
    #[arg(long, value_name = "TIMESTAMP")]
    pub now: Option<DateTime<Utc>>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Declare that the upgrade is over (now, or at a planned time): the reopening notices then
    /// go out by themselves. Declaring twice changes nothing.
    #[command(
        after_help = "Example:\n  avvisi service reopen\n  avvisi service reopen --at 2026-12-14T09:00:00+01:00"
    )]
    Reopen {
        /// When the service reopens (RFC 3339); default now.
        #[arg(long, value_name = "TIMESTAMP")]
        at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Every key with the value in effect and its source: `default`, `file PATH` or
    /// `env AVVISI__SECTION__KEY`. Passwords, and the password in a URL, are shown as ***.
    #[command(
        after_help = "Example:\n  avvisi config show\n  avvisi --config /etc/avvisi.toml config show --json\n\n\
        With --json: a JSON array of {key, value, source} objects instead of TOML-like text.\n\
        The configuration is checked first: an unknown key or a bad value stops with exit status 2."
    )]
    Show,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Plan and deliver what is due now, then exit (the daemon is `avvisi daemon`).
    #[arg(long, required = true)]
    pub once: bool,
    /// The current instant, RFC 3339 (default: the real clock). Used for planning and sending.
    #[arg(long, value_name = "TIMESTAMP")]
    pub now: Option<DateTime<Utc>>,
    /// Import this snapshot first (same as `avvisi import users FILE`).
    #[arg(long, value_name = "FILE")]
    pub import: Option<PathBuf>,
    /// The character encoding of the --import file (as for `avvisi import users`).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "utf-8",
        requires = "import"
    )]
    pub encoding: Encoding,
}
