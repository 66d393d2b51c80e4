//! `avvisi campaign ...`: one-off campaigns for operators. Each subcommand calls one use case
//! of [`crate::app`] and prints its report; `launch --wait` then follows the campaign
//! ([`follow`]); [`print`] has the text for people.

use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};

use super::{local, print_json, show};

mod approve;
mod follow;
mod print;
use crate::app::{Actor, App, NewCampaignRequest};
use crate::audience::Audience;
use crate::store::CampaignState;
use crate::telemetry::printable;

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Create a one-off campaign as a draft (nothing is sent until `launch`).
    #[command(
        after_help = "TEMPLATE is a message folder in the templates folder.\n\n\
        Examples:\n  \
        avvisi campaign create maintenance-notice --audience enabled_users --template maintenance_notice\n  \
        avvisi campaign create reminder-bo --audience registration_incomplete \\\n      \
        --template registration_incomplete --filter province=BO --send-at 2026-11-26T09:00:00+01:00"
    )]
    Create(CreateArgs),

    /// Every campaign (reminders included): state, audience size, messages by state, times.
    #[command(after_help = "Example:\n  avvisi campaign list\n  avvisi campaign list --json")]
    List,

    /// One campaign in detail.
    #[command(
        after_help = "Example:\n  avvisi campaign show maintenance-notice\n  avvisi campaign show maintenance-notice --json"
    )]
    Show {
        /// The campaign's name.
        name: String,
    },

    /// The audience size and the message rendered for the first real recipient (nothing sent).
    #[command(after_help = "Example:\n  avvisi campaign preview maintenance-notice")]
    Preview {
        /// The campaign's name.
        name: String,
    },

    /// Send the message rendered for a real recipient to an operator only, marked [PROVA].
    #[command(
        after_help = "Nothing is written to the outbox; the campaign's state does not change.\n\n\
        Example:\n  avvisi campaign test maintenance-notice --to operatore@istruzione.it\n  \
        avvisi campaign test solleciti --to operatore@istruzione.it --now 2026-11-23T10:00:00+01:00"
    )]
    Test {
        /// The campaign's name.
        name: String,
        /// The operator's address (the only recipient).
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        /// Render it as on this instant (RFC 3339; default: the real clock): a rehearsal of
        /// the day it will go out ("today is the last day" or not).
        #[arg(long, value_name = "TIMESTAMP")]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },

    /// Start a draft campaign: the daemon plans and sends it (at --send-at, if set).
    #[command(
        after_help = "With --wait, follows the campaign until it is finished or cancelled: a progress bar on a\n\
        terminal, a plain line every few seconds otherwise. Interrupting --wait does not stop the\n\
        campaign.\n\n\
        Example:\n  avvisi campaign launch maintenance-notice --wait"
    )]
    Launch {
        /// The campaign's name.
        name: String,
        /// Follow the campaign's progress until it finishes.
        #[arg(long)]
        wait: bool,
    },

    /// Approve a draft campaign (someone other than its creator): shows its audience and ten
    /// messages rendered for real recipients, then records the approval, which freezes them.
    #[command(
        after_help = "The audience is frozen: its size and a SHA-256 of its user ids. A launch whose audience
        changed since then is refused with the difference, and needs a new approval.
        Without --yes, asks for a confirmation at the terminal; a script must pass --yes.

        Example:
  avvisi campaign approve maintenance-notice"
    )]
    Approve {
        /// The campaign's name.
        name: String,
        /// Record the approval without asking (required when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },

    /// Reject a draft campaign (someone other than its creator), with the reason.
    #[command(
        after_help = "Example:\n  avvisi campaign reject maintenance-notice --reason \"wrong province: BO, not BA\""
    )]
    Reject {
        /// The campaign's name.
        name: String,
        /// Why, for its creator.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },

    /// Pause a running or scheduled campaign: the daemon stops sending it within seconds.
    #[command(after_help = "Example:\n  avvisi campaign pause maintenance-notice")]
    Pause {
        /// The campaign's name.
        name: String,
    },

    /// Resume a paused campaign.
    #[command(after_help = "Example:\n  avvisi campaign resume maintenance-notice")]
    Resume {
        /// The campaign's name.
        name: String,
    },

    /// Cancel a campaign for good: its pending messages are skipped, it never resumes.
    #[command(after_help = "Example:\n  avvisi campaign cancel maintenance-notice")]
    Cancel {
        /// The campaign's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The campaign's name: 1 to 60 characters among a-z, 0-9, `_` and `-`.
    pub name: String,
    /// Who receives it.
    #[arg(long, value_parser = audience_parser())]
    pub audience: Audience,
    /// The message folder in the templates folder.
    #[arg(long)]
    pub template: String,
    /// Only users of one province: province=XX (two-letter code), or of several:
    /// province=XX,YY.
    #[arg(long, value_name = "province=XX", conflicts_with = "province")]
    pub filter: Option<String>,
    /// Only users of this province (two-letter code); repeat it for several:
    /// --province RM --province BO.
    #[arg(long, value_name = "XX")]
    pub province: Vec<String>,
    /// Only the users this file names: one user id or fiscal code per line (or a CSV whose
    /// first field is one). The ones that match no user are listed; nothing is guessed.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["province", "filter"])]
    pub users_file: Option<std::path::PathBuf>,
    /// Not before this instant: RFC 3339 (2026-11-26T09:00:00+01:00), or a local time in the
    /// calendar's time zone (2026-11-26T09:00).
    #[arg(long, value_name = "TIMESTAMP")]
    pub send_at: Option<String>,
    /// Nothing goes out at or after this instant (same forms as --send-at). Default:
    /// `calendar.oneoff_expiry_days` (7) days after --send-at, or after now.
    #[arg(long, value_name = "TIMESTAMP")]
    pub expires_at: Option<String>,
    /// The emails are about each user's own business (not a notice to everyone): they carry no
    /// one-click unsubscribe. The reason is stored and shown by `campaign show`.
    #[arg(long, value_name = "REASON")]
    pub transactional: Option<String>,
}

/// `--audience`: one of [`Audience::names`], so that `--help` lists them and clap refuses any
/// other before anything runs.
fn audience_parser() -> impl TypedValueParser<Value = Audience> {
    PossibleValuesParser::new(Audience::names()).try_map(|name| name.parse::<Audience>())
}

pub(crate) async fn run(
    cmd: CampaignCommand,
    app: &App,
    who: &Actor,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let tz = app.settings().calendar.timezone;
    match cmd {
        CampaignCommand::Create(args) => {
            let users = match &args.users_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                    Some(crate::app::user_list(&path.display().to_string(), &text)?)
                }
                None => None,
            };
            let req = NewCampaignRequest {
                users,
                name: args.name,
                audience: args.audience,
                template: args.template,
                filter: if args.province.is_empty() {
                    args.filter
                } else {
                    Some(format!("province={}", args.province.join(",")))
                },
                send_at: args.send_at,
                expires_at: args.expires_at,
                transactional: args.transactional,
            };
            let c = app.create_campaign(who, &req).await?;
            show(json, &c, |c| print::created(c, tz))
        }
        CampaignCommand::List => {
            let all = app.campaigns().await?;
            if json {
                print_json(&all)?;
            } else {
                print::list(&all, tz);
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCommand::Show { name } => {
            let c = app.campaign(&name).await?;
            show(json, &c, |c| print::show(c, tz))
        }
        CampaignCommand::Preview { name } => {
            let p = app.preview_campaign(who, &name).await?;
            show(json, &p, |p| print::preview(p, tz))
        }
        CampaignCommand::Test { name, to, now } => {
            let t = app.send_test_at(who, &name, &to, now).await?;
            show(json, &t, |t| {
                println!(
                    "test message sent to {} ({}), rendered for {}: {}",
                    t.to, t.delivery, t.rendered_for, t.subject
                );
                println!(
                    "nothing was written to the outbox; the campaign is still {}",
                    t.campaign_state
                );
            })
        }
        CampaignCommand::Launch { name, wait } => {
            if wait && json {
                anyhow::bail!(
                    "--wait shows the progress for people: without --json, or follow with `avvisi campaign show {name} --json`"
                );
            }
            let l = app.launch_campaign(who, &name).await?;
            show(json, &l, |l| {
                match (l.state, l.send_at) {
                (CampaignState::Scheduled, Some(at)) => println!(
                    "campaign {name} is scheduled: the daemon starts it at {} ({} users in the audience now)",
                    local(Some(at), tz),
                    l.audience_size
                ),
                _ => println!(
                    "campaign {name} is running: the daemon plans and sends it at its next tick ({} users in the audience now)",
                    l.audience_size
                ),
            }
                print::warn(&l.warnings);
            })?;
            if wait {
                follow::follow(app, &name, tz).await
            } else {
                if !json {
                    println!("follow it with `avvisi campaign show {name}`");
                }
                Ok(ExitCode::SUCCESS)
            }
        }
        CampaignCommand::Approve { name, yes } => approve::run(app, who, &name, yes, json).await,
        CampaignCommand::Reject { name, reason } => {
            let r = app.reject_campaign(who, &name, &reason).await?;
            show(json, &r, |r| {
                println!(
                    "campaign {} rejected by {}: {}; it cannot be launched until someone approves it",
                    r.campaign,
                    r.rejected_by,
                    printable(&r.reason)
                )
            })
        }
        CampaignCommand::Pause { name } => {
            let t = app.pause_campaign(who, &name).await?;
            show(json, &t, |t| {
                println!(
                "campaign {name} is paused: nothing more is sent (messages on the wire finish); `avvisi campaign resume {name}` continues it"
                );
                if t.on_the_way > 0 {
                    println!(
                        "{} of its messages were already on their way (claimed by a sender): the few on the wire finish, the rest go back to the queue unsent",
                        t.on_the_way
                    );
                }
            })
        }
        CampaignCommand::Resume { name } => {
            let t = app.resume_campaign(who, &name).await?;
            show(json, &t, |t| {
                println!("campaign {name} is {} again", t.state)
            })
        }
        CampaignCommand::Cancel { name } => {
            let t = app.cancel_campaign(who, &name).await?;
            show(json, &t, |t| {
                println!(
                "campaign {name} is cancelled: {} pending message(s) skipped; it cannot be resumed",
                t.skipped
            )
            })
        }
    }
}
