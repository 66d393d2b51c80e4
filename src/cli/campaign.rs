//! `avvisi campaign ...` (one-off campaigns for operators) and `avvisi explain USER_ID`.
//!
//! The lifecycle itself (guarded transitions, what is legal) is in [`crate::campaign`]; this
//! module parses, renders the sample messages and prints for people.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::local;
use crate::audience::Audience;
use crate::campaign::lifecycle;
use crate::campaign::{self, NewCampaign, Overview};
use crate::clock::Clock;
use crate::config::Settings;
use crate::config::Step;
use crate::deliver::outbox;
use crate::deliver::transport::Transport;
use crate::deliver::Worker;
use crate::render::context;
use crate::render::email::{self, Envelope};
use crate::render::live::TemplateStore;
use crate::render::templates::{Rendered, TemplateSet};
use crate::store::Db;
use crate::store::{queue, CampaignState, Counts};

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Create a one-off campaign as a draft (nothing is sent until `launch`).
    #[command(
        after_help = "Audiences: registration_incomplete, email_unvalidated, code_regeneration_pending,\n\
        credential_recovery_advice, enabled_users, lapsed_registration, lapsed_email_validation,\n\
        lapsed_code_regeneration. TEMPLATE is a message folder in the templates folder.\n\n\
        Examples:\n  \
        avvisi campaign create maintenance-notice --audience enabled_users --template maintenance_notice\n  \
        avvisi campaign create reminder-bo --audience registration_incomplete \\\n      \
        --template registration_incomplete --filter province=BO --send-at 2026-11-26T09:00:00+01:00"
    )]
    Create(CreateArgs),

    /// Every campaign (reminders included): state, audience size, messages by state, times.
    #[command(after_help = "Example:\n  avvisi campaign list\n  avvisi campaign list --json")]
    List {
        /// The same as a JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },

    /// One campaign in detail.
    #[command(
        after_help = "Example:\n  avvisi campaign show maintenance-notice\n  avvisi campaign show maintenance-notice --json"
    )]
    Show {
        /// The campaign's name.
        name: String,
        /// The same as a JSON object, for scripts.
        #[arg(long)]
        json: bool,
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
        Example:\n  avvisi campaign test maintenance-notice --to operatore@istruzione.it"
    )]
    Test {
        /// The campaign's name.
        name: String,
        /// The operator's address (the only recipient).
        #[arg(long, value_name = "ADDRESS")]
        to: String,
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
    /// Who receives it (see the list below).
    #[arg(long)]
    pub audience: String,
    /// The message folder in the templates folder.
    #[arg(long)]
    pub template: String,
    /// Only users of one province: province=XX (two-letter code).
    #[arg(long, value_name = "province=XX")]
    pub filter: Option<String>,
    /// Not before this instant: RFC 3339 (2026-11-26T09:00:00+01:00), or a local time in the
    /// calendar's time zone (2026-11-26T09:00).
    #[arg(long, value_name = "TIMESTAMP")]
    pub send_at: Option<String>,
    /// Nothing goes out at or after this instant (same forms as --send-at). Default:
    /// `calendar.oneoff_expiry_days` (7) days after --send-at, or after now.
    #[arg(long, value_name = "TIMESTAMP")]
    pub expires_at: Option<String>,
}

pub async fn run(
    cmd: CampaignCommand,
    db: &Db,
    settings: Arc<Settings>,
    clock: &Clock,
) -> anyhow::Result<ExitCode> {
    let tz = settings.calendar.timezone;
    match cmd {
        CampaignCommand::Create(args) => create(db, &settings, &args, clock.now()).await,
        CampaignCommand::List { json } => list(db, tz, json).await,
        CampaignCommand::Show { name, json } => show(db, tz, &name, json).await,
        CampaignCommand::Preview { name } => preview(db, settings, clock, &name).await,
        CampaignCommand::Test { name, to } => send_test(db, settings, clock, &name, &to).await,
        CampaignCommand::Launch { name, wait } => {
            let t = lifecycle::launch(db, &name, clock.now()).await?;
            let c = campaign::get(db, &name).await?;
            let size = campaign::audience_size(db, &c).await?;
            match (t.state, c.send_at) {
                (CampaignState::Scheduled, Some(at)) => println!(
                    "campaign {name} is scheduled: the daemon starts it at {} ({size} users in the audience now)",
                    local(Some(at), tz)
                ),
                _ => println!(
                    "campaign {name} is running: the daemon plans and sends it at its next tick ({size} users in the audience now)"
                ),
            }
            if wait {
                follow(db, &c, tz).await
            } else {
                println!("follow it with `avvisi campaign show {name}`");
                Ok(ExitCode::SUCCESS)
            }
        }
        CampaignCommand::Pause { name } => {
            lifecycle::pause(db, &name).await?;
            println!(
                "campaign {name} is paused: nothing more is sent (messages on the wire finish); `avvisi campaign resume {name}` continues it"
            );
            Ok(ExitCode::SUCCESS)
        }
        CampaignCommand::Resume { name } => {
            let t = lifecycle::resume(db, &name, clock.now()).await?;
            println!("campaign {name} is {} again", t.state);
            Ok(ExitCode::SUCCESS)
        }
        CampaignCommand::Cancel { name } => {
            let t = lifecycle::cancel(db, &name, clock.now()).await?;
            println!(
                "campaign {name} is cancelled: {} pending message(s) skipped; it cannot be resumed",
                t.skipped
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn create(
    db: &Db,
    settings: &Settings,
    args: &CreateArgs,
    now: DateTime<Utc>,
) -> anyhow::Result<ExitCode> {
    campaign::check_name(&args.name)?;
    let audience: Audience = args.audience.parse()?;
    let filter_province = args
        .filter
        .as_deref()
        .map(campaign::parse_filter)
        .transpose()?;
    let tz = settings.calendar.timezone;
    let send_at = args
        .send_at
        .as_deref()
        .map(|s| parse_instant("--send-at", s, tz))
        .transpose()?;
    let days = chrono::Duration::days(i64::from(settings.calendar.oneoff_expiry_days));
    let expires_at = match args.expires_at.as_deref() {
        Some(s) => parse_instant("--expires-at", s, tz)?,
        None => send_at.unwrap_or(now).max(now) + days,
    };
    let templates = TemplateSet::load(&settings.templates_dir).context("loading templates")?;
    let new = NewCampaign {
        name: args.name.clone(),
        audience,
        template: args.template.clone(),
        filter_province,
        send_at,
        expires_at,
    };
    let c = campaign::create(db, &new, &templates.messages(), now).await?;
    let size = campaign::audience_size(db, &c).await?;
    println!(
        "created draft campaign {}: audience {}{} ({size} users now), template {}{}",
        c.name,
        c.audience,
        c.filter_province
            .as_deref()
            .map(|p| format!(", province {p}"))
            .unwrap_or_default(),
        c.template,
        c.send_at
            .map(|t| format!(", not before {}", local(Some(t), tz)))
            .unwrap_or_default()
    );
    println!(
        "it expires at {}: nothing of it goes out after that",
        local(c.expires_at, tz)
    );
    if send_at.is_some_and(|t| t <= now) {
        println!("note: --send-at is already past; once launched it starts at once");
    }
    println!(
        "next: `avvisi campaign preview {0}`, `avvisi campaign test {0} --to ADDRESS`, then `avvisi campaign launch {0}`",
        c.name
    );
    Ok(ExitCode::SUCCESS)
}

/// An RFC 3339 instant, or a local date and time in `tz` (refused when a DST change skips or
/// repeats it).
fn parse_instant(flag: &str, s: &str, tz: Tz) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .with_context(|| {
            format!("{flag} `{s}`: expected RFC 3339 such as 2026-11-26T09:00:00+01:00, or a local time such as 2026-11-26T09:00")
        })?;
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        _ => anyhow::bail!(
            "{flag} `{s}`: that local time is skipped or repeated by a daylight-saving change in {tz}; give it with its offset"
        ),
    }
}

fn audience_text(c: &campaign::Campaign) -> String {
    match &c.filter_province {
        Some(p) => format!("{} (province {p})", c.audience),
        None => c.audience.to_string(),
    }
}

/// A campaign as `list --json` and `show --json` give it: times in UTC (RFC 3339), the
/// messages by state as the outbox holds them.
#[derive(serde::Serialize)]
struct CampaignJson {
    name: String,
    kind: String,
    state: String,
    /// Why avvisi paused it itself (the circuit breaker), addresses masked.
    paused_reason: Option<String>,
    audience: String,
    filter_province: Option<String>,
    template: String,
    /// Users in the audience now.
    audience_size: u64,
    send_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    created_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// Every planned message.
    planned: u64,
    messages: Counts,
}

impl From<&Overview> for CampaignJson {
    fn from(o: &Overview) -> CampaignJson {
        let c = &o.campaign;
        CampaignJson {
            name: c.name.clone(),
            kind: c.kind.to_string(),
            state: c.state.to_string(),
            paused_reason: c
                .paused_reason
                .as_deref()
                .map(|r| crate::telemetry::scrub(r).into_owned()),
            audience: c.audience.to_string(),
            filter_province: c.filter_province.clone(),
            template: c.template.clone(),
            audience_size: o.audience_size,
            send_at: c.send_at,
            expires_at: c.expires_at,
            created_at: o.created_at,
            started_at: o.started_at,
            finished_at: o.finished_at,
            planned: o.counts.total(),
            messages: o.counts,
        }
    }
}

async fn list(db: &Db, tz: Tz, json: bool) -> anyhow::Result<ExitCode> {
    let all = campaign::overviews(db).await.context("reading campaigns")?;
    if json {
        let all: Vec<CampaignJson> = all.iter().map(CampaignJson::from).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("(no campaigns yet: `avvisi campaign create` makes one; reminders appear after `avvisi run --once`)");
        return Ok(ExitCode::SUCCESS);
    }
    let w = all
        .iter()
        .map(|o| o.campaign.name.len())
        .max()
        .unwrap_or(0)
        .max("campaign".len());
    println!(
        "{:<w$} {:<9} {:<9} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}  {:<20} finished",
        "campaign",
        "kind",
        "state",
        "audience",
        "sent",
        "skipped",
        "failed",
        "expired",
        "pending",
        "started",
    );
    for o in &all {
        let p = &o.counts;
        println!(
            "{:<w$} {:<9} {:<9} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}  {:<20} {}",
            o.campaign.name,
            o.campaign.kind,
            o.campaign.state,
            o.audience_size,
            p.sent,
            p.skipped,
            p.failed,
            p.expired,
            p.open(),
            local(o.started_at, tz),
            local(o.finished_at, tz)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(db: &Db, tz: Tz, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let o: Overview = campaign::overview(db, name).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&CampaignJson::from(&o))?);
        return Ok(ExitCode::SUCCESS);
    }
    let c = &o.campaign;
    let p = &o.counts;
    let lines = [
        ("campaign", c.name.clone()),
        ("kind", c.kind.to_string()),
        (
            "state",
            match &c.paused_reason {
                Some(why) => format!("{} ({why})", c.state),
                None => c.state.to_string(),
            },
        ),
        (
            "audience",
            format!(
                "{}: {} ({} users now)",
                audience_text(c),
                c.audience.description(),
                o.audience_size
            ),
        ),
        ("template", c.template.clone()),
        ("send at", local(c.send_at, tz)),
        ("expires at", local(c.expires_at, tz)),
        ("created", local(o.created_at, tz)),
        ("started", local(o.started_at, tz)),
        ("finished", local(o.finished_at, tz)),
        ("planned", p.total().to_string()),
        ("sent", p.sent.to_string()),
        (
            "skipped",
            format!("{} ({} suppressed address)", p.skipped, p.suppressed),
        ),
        ("failed", p.failed.to_string()),
        ("expired", p.expired.to_string()),
        (
            "pending",
            format!("{} ({} being sent)", p.open(), p.sending),
        ),
    ];
    // The paused reason quotes the relay's reply: escaped for the terminal.
    for (k, v) in lines {
        println!("{k:<11} {}", crate::telemetry::printable(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// A worker used only to render (and, when `sends`, send) one sample message. One that only
/// renders has no connection to the relay, so it needs no SMTP password.
fn sample_worker(
    db: &Db,
    settings: Arc<Settings>,
    clock: &Clock,
    sends: bool,
) -> anyhow::Result<Worker> {
    let templates = TemplateSet::load(&settings.templates_dir).context("loading templates")?;
    let transport = if sends {
        Transport::from_settings(&settings).context("setting up delivery")?
    } else {
        // Never written to: rendering sends nothing.
        Transport::Files(settings.delivery.dir.clone())
    };
    Ok(Worker::new(
        db.clone(),
        settings,
        transport,
        TemplateStore::new(templates),
        clock.clone(),
    ))
}

/// Renders the campaign's message for `row` as the worker would at `now`.
async fn render_sample(
    worker: &Worker,
    c: &campaign::Campaign,
    row: &outbox::Claimed,
    now: DateTime<Utc>,
    is_test: bool,
) -> anyhow::Result<Rendered> {
    let reopened_at = crate::campaign::phases::reopened_at(worker.db().pool()).await?;
    let reopened_at = context::local_rfc3339(&worker.settings().calendar, reopened_at);
    let context = worker.context_for(row, now, reopened_at, is_test);
    worker
        .templates()
        .current()
        .render(&c.template, &context)
        .with_context(|| format!("rendering template {}", c.template))
}

async fn preview(
    db: &Db,
    settings: Arc<Settings>,
    clock: &Clock,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let c = campaign::get(db, name).await?;
    let size = campaign::audience_size(db, &c).await?;
    println!(
        "campaign {}: audience {}, {size} users now; template {}",
        c.name,
        audience_text(&c),
        c.template
    );
    let domain = email::message_id_domain(&settings.mail);
    let message_id = format!("<{}.main.preview@{domain}>", c.uid);
    let Some(row) = outbox::first_recipient(db, &c, &message_id).await? else {
        println!("the audience is empty: there is no recipient to render the message for");
        return Ok(ExitCode::SUCCESS);
    };
    let worker = sample_worker(db, settings, clock, false)?;
    let now = clock.now();
    let rendered = render_sample(&worker, &c, &row, now, false).await?;
    println!(
        "rendered for {} ({} {} <{}>), as if sent at {}:",
        row.user_id,
        row.first_name,
        row.last_name,
        row.recipient,
        local(Some(now), worker.settings().calendar.timezone)
    );
    println!();
    println!("Subject: {}", rendered.subject);
    println!();
    println!("{}", rendered.text.trim_end());
    Ok(ExitCode::SUCCESS)
}

async fn send_test(
    db: &Db,
    settings: Arc<Settings>,
    clock: &Clock,
    name: &str,
    to: &str,
) -> anyhow::Result<ExitCode> {
    if let Some(problem) = crate::import::snapshot::email_problem(to) {
        anyhow::bail!("--to `{to}` {problem}");
    }
    let c = campaign::get(db, name).await?;
    let now = clock.now();
    let domain = email::message_id_domain(&settings.mail);
    let message_id = format!("<test.{}.{}@{domain}>", c.uid, now.timestamp());
    let Some(row) = outbox::first_recipient(db, &c, &message_id).await? else {
        anyhow::bail!(
            "the audience of campaign {name} is empty: there is no real recipient to render a test message for"
        );
    };
    let worker = sample_worker(db, settings, clock, true)?;
    let mut rendered = render_sample(&worker, &c, &row, now, true).await?;
    if !rendered.subject.starts_with("[PROVA]") {
        rendered.subject = format!("[PROVA] {}", rendered.subject);
    }
    let envelope = Envelope {
        to_address: to,
        to_name: "",
        message_id: &message_id,
        campaign: &c.name,
        step: Step::Test,
        date: now.into(),
    };
    let email = email::build(&worker.settings().mail, &envelope, &rendered)
        .context("building the test message")?;
    let stem = format!("{}.test.{}", c.name, now.timestamp());
    let mut outgoing = crate::deliver::transport::Outgoing::from(&email);
    if let Some(bounce) = &worker.settings().mail.bounce_address {
        outgoing = outgoing.with_sender(bounce.clone());
    }
    worker
        .transport()
        .send(&outgoing, &stem, None)
        .await
        .with_context(|| format!("sending the test message to {to}"))?;
    println!(
        "test message sent to {to} ({}), rendered for {}: {}",
        worker.transport().describe(),
        row.user_id,
        rendered.subject
    );
    println!(
        "nothing was written to the outbox; the campaign is still {}",
        c.state
    );
    Ok(ExitCode::SUCCESS)
}

/// Follows a launched campaign until it is finished or cancelled.
async fn follow(db: &Db, c: &campaign::Campaign, tz: Tz) -> anyhow::Result<ExitCode> {
    const PLAIN_EVERY: StdDuration = StdDuration::from_secs(5);
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(StdDuration::from_millis(200));
        bar
    });
    let say = |line: String| match &bar {
        Some(bar) => bar.println(line),
        None => println!("{line}"),
    };
    // Recent (time, sent) samples: the rate is over the last RATE_WINDOW, not since launch.
    const RATE_WINDOW: StdDuration = StdDuration::from_secs(30);
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut last_state: Option<CampaignState> = None;
    let mut last_line: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let state = campaign::get(db, &c.name).await?.state;
        let p = queue::of_campaign(db, c.id).await?;
        let now = Instant::now();
        samples.push_back((now, p.sent));
        while samples.len() > 2 && now.duration_since(samples[0].0) > RATE_WINDOW {
            samples.pop_front();
        }
        let (t0, sent0) = samples[0];
        let span = now.duration_since(t0).as_secs_f64();
        let rate = if span >= 1.0 {
            p.sent.saturating_sub(sent0) as f64 / span
        } else {
            0.0
        };
        let changed = Some(state) != last_state;
        if changed {
            match state {
                CampaignState::Paused => say(format!(
                    "campaign {} is paused: nothing is sent until `avvisi campaign resume {}` (still waiting)",
                    c.name, c.name
                )),
                CampaignState::Scheduled => say(format!(
                    "campaign {} is scheduled for {}: waiting",
                    c.name,
                    local(c.send_at, tz)
                )),
                CampaignState::Running if last_state.is_some() => {
                    say(format!("campaign {} is running", c.name))
                }
                _ => {}
            }
            last_state = Some(state);
        }
        let line = progress_line(&p, rate, state);
        match &bar {
            Some(bar) => {
                bar.set_length(p.total());
                bar.set_position(p.done());
                bar.set_message(line.clone());
            }
            None => {
                if changed || last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    println!("{line}");
                    last_line = Some(Instant::now());
                }
            }
        }
        if state.is_final() {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            println!(
                "campaign {} {}: sent {}, skipped {}, failed {}, expired {} (of {} planned)",
                c.name,
                if state == CampaignState::Finished {
                    "finished"
                } else {
                    "was cancelled"
                },
                p.sent,
                p.skipped,
                p.failed,
                p.expired,
                p.total()
            );
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(StdDuration::from_secs(1)) => {}
            _ = &mut ctrl_c => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                println!(
                    "stopped following campaign {}: it goes on in the daemon (`avvisi campaign show {}`)",
                    c.name, c.name
                );
                return Ok(ExitCode::from(130));
            }
        }
    }
}

/// "sent N/TOTAL, R msg/s, about T left", and the state when it is not running.
fn progress_line(p: &Counts, rate: f64, state: CampaignState) -> String {
    let left = if p.total() == 0 {
        "time left unknown".to_string()
    } else if p.open() == 0 {
        "nothing left".to_string()
    } else if rate > 0.0 {
        format!("about {} left", human_duration(p.open() as f64 / rate))
    } else {
        "time left unknown".to_string()
    };
    let mut line = format!("sent {}/{}, {rate:.1} msg/s, {left}", p.sent, p.total());
    if p.skipped + p.failed + p.expired > 0 {
        line.push_str(&format!(
            " (skipped {}, failed {}, expired {})",
            p.skipped, p.failed, p.expired
        ));
    }
    match state {
        CampaignState::Running if p.total() == 0 => {
            line.push_str(" [waiting for the daemon to plan it]")
        }
        CampaignState::Running => {}
        other => line.push_str(&format!(" [{other}]")),
    }
    line
}

fn human_duration(secs: f64) -> String {
    let s = secs.ceil() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}
