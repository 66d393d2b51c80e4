//! The commands behind the CLI: each opens what it needs, calls the library, prints for people.
//! Errors here are `anyhow` with context; the modules below return their own error types.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

mod args;
pub use args::{Cli, Command, ImportCommand, ImportUsersArgs, RunArgs, ServiceCommand};
use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Db;
use crate::import::{self, ImportError, ImportOptions};
use crate::plan;
use crate::render::live::TemplateStore;
use crate::render::templates::TemplateSet;
use crate::deliver::transport::Transport;
use crate::deliver::{self, Worker};
use crate::deliver::outbox;
use crate::render::email;


pub mod campaign;
pub mod service;
pub mod templates;

/// Exit status when delivery stopped because the relay could not be reached.
pub const EXIT_RELAY_UNREACHABLE: u8 = 3;

/// Runs one command. `clock` is the process-wide clock (`--now` or the real one).
pub async fn run(command: Command, settings: Settings, clock: Clock) -> anyhow::Result<ExitCode> {
    let settings = Arc::new(settings);
    let db = Db::open(&settings.database.url, settings.database.max_connections)
        .await
        .context("opening the database")?;
    let result = match command {
        Command::Migrate => {
            println!("database is up to date ({:?})", db.backend());
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(ImportCommand::Users(args)) => {
            import_users(&db, &settings, &args, clock.now()).await
        }
        Command::Run(args) => run_once(&db, settings.clone(), &args, clock).await,
        Command::Status => status(&db, &settings).await,
        Command::Templates(cmd) => templates::run(cmd, &db, &settings, &clock).await,
        Command::Campaign(cmd) => campaign::run(cmd, &db, settings.clone(), &clock).await,
        Command::Daemon { now } => service::daemon(&db, settings.clone(), clock.clone(), now).await,
        Command::Service(ServiceCommand::Reopen { at }) => {
            service::reopen(&db, &settings, &clock, at).await
        }
        Command::Calendar { now } => service::calendar(&db, &settings, &clock, now).await,
        Command::Explain { user_id } => campaign::explain(&db, &settings, &user_id).await,
    };
    db.close().await;
    result
}

async fn import_users(
    db: &Db,
    settings: &Settings,
    args: &ImportUsersArgs,
    now: DateTime<Utc>,
) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        skip_invalid: args.skip_invalid,
        dry_run: args.dry_run,
        partial: args.partial,
        reject_file: args.reject_file.clone(),
        max_gone_percent: settings.import.max_gone_percent,
    };
    match import::import_users(db, &args.file, &options, now).await {
        Ok(report) => {
            let verb = if report.committed {
                "imported"
            } else {
                "dry run, nothing written:"
            };
            println!(
                "{}: {verb} {} rows ({} new users, {} known, {} stale rows kept as stored, {} rejected, {} users gone)",
                args.file.display(),
                report.rows_valid,
                report.users_new,
                report.users_known,
                report.rows_stale,
                report.rows_rejected,
                report.users_gone
            );
            print_row_errors(&report.errors, report.errors_total);
            if let Some(path) = &report.reject_file {
                println!("rejected rows written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ImportError::Invalid { path, report }) => {
            print_row_errors(&report.errors, report.errors_total);
            anyhow::bail!(
                "{}: {} problem(s) in {} of {} rows; nothing was imported (fix the file, or use --skip-invalid to import the valid rows)",
                path.display(),
                report.errors_total,
                report.rows_rejected,
                report.rows_read
            )
        }
        Err(e) => Err(e).context("importing users"),
    }
}

fn print_row_errors(errors: &[crate::import::snapshot::RowError], total: u64) {
    for e in errors {
        eprintln!("  {e}");
    }
    if total > errors.len() as u64 {
        eprintln!("  ... and {} more", total - errors.len() as u64);
    }
}

async fn run_once(
    db: &Db,
    settings: Arc<Settings>,
    args: &RunArgs,
    clock: Clock,
) -> anyhow::Result<ExitCode> {
    let clock = match args.now {
        Some(at) => Clock::manual(at),
        None => clock,
    };
    if let Some(file) = &args.import {
        let import_args = ImportUsersArgs {
            file: file.clone(),
            skip_invalid: false,
            reject_file: None,
            dry_run: false,
            partial: false,
        };
        import_users(db, &settings, &import_args, clock.now()).await?;
    }
    let templates = TemplateSet::load(&settings.templates_dir).context("loading templates")?;
    let transport = Transport::from_settings(&settings).context("setting up delivery")?;
    let now = clock.now();
    let domain = email::message_id_domain(&settings.mail);
    let planned = plan::plan_due(db, &settings, templates.digest(), &domain, now)
        .await
        .context("planning")?;
    let worker = Worker {
        db: db.clone(),
        settings: settings.clone(),
        transport: transport.clone(),
        templates: TemplateStore::new(templates),
        clock: clock.clone(),
        worker_id: deliver::worker_id(),
    };
    let delivery = worker
        .deliver_due(&CancellationToken::new())
        .await
        .context("delivering")?;
    transport.close().await;

    let tz = settings.calendar.timezone;
    println!(
        "run at {} ({}), delivery: {}",
        now.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z"),
        tz,
        transport.describe()
    );
    println!(
        "{:<45} {:>6} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}",
        "campaign", "step", "planned", "sent", "skipped", "failed", "expired", "retrying"
    );
    let mut names: Vec<&String> = planned.iter().map(|p| &p.campaign).collect();
    for name in delivery.per_campaign.keys() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for name in names {
        let p = planned.iter().find(|p| &p.campaign == name);
        let t = delivery.per_campaign.get(name).cloned().unwrap_or_default();
        println!(
            "{:<45} {:>6} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}",
            name,
            p.map(|p| p.step.as_str()).unwrap_or("-"),
            p.map(|p| p.rows).unwrap_or(0),
            t.sent,
            t.skipped,
            t.failed,
            t.expired,
            t.retrying
        );
    }
    if delivery.outside_sending_hours {
        let cal = &settings.calendar;
        println!(
            "outside the sending hours ({}-{} {}): due messages wait for the next window",
            cal.sending_hours_start.format("%H:%M"),
            cal.sending_hours_end.format("%H:%M"),
            tz
        );
    }
    if let crate::deliver::transport::Transport::Files(dir) = &transport {
        println!(
            "emails written to {}/ (open the .eml files with any mail client)",
            dir.display()
        );
    }
    if delivery.relay_unreachable {
        eprintln!(
            "the relay could not be reached: the remaining messages stay queued for the next run"
        );
        return Ok(ExitCode::from(EXIT_RELAY_UNREACHABLE));
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(db: &Db, settings: &Settings) -> anyhow::Result<ExitCode> {
    let tz = settings.calendar.timezone;
    let counts = outbox::counts(db).await.context("reading the outbox")?;
    println!(
        "{:<45} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "campaign", "state", "pending", "sending", "sent", "skipped", "failed", "expired"
    );
    for c in &counts {
        println!(
            "{:<45} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
            c.campaign, c.state, c.pending, c.sending, c.sent, c.skipped, c.failed, c.expired
        );
    }
    if counts.is_empty() {
        println!("(no campaigns yet: run `avvisi run --once` to plan the reminders)");
    }
    match outbox::oldest_pending(db).await? {
        Some((campaign, step, created, next)) => {
            let local = |s: i64| {
                Utc.timestamp_opt(s, 0)
                    .single()
                    .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
                    .unwrap_or_default()
            };
            println!(
                "oldest pending: {campaign}/{step}, planned {}, next attempt {}",
                local(created),
                local(next)
            );
        }
        None => println!("oldest pending: none"),
    }
    // Which template version is live where: the folder on disk and each running daemon.
    match TemplateSet::load(&settings.templates_dir) {
        Ok(set) => println!(
            "templates on disk: {} ({})",
            set.digest(),
            settings.templates_dir.display()
        ),
        Err(e) => println!("templates on disk: cannot be loaded: {e}"),
    }
    let fresh = Utc::now().timestamp() - 30;
    let daemons =
        sqlx::query("SELECT id, templates_digest FROM daemons WHERE heartbeat_at > $1 ORDER BY id")
            .bind(fresh)
            .fetch_all(db.pool())
            .await?;
    if daemons.is_empty() {
        println!("daemons: none running");
    }
    for d in daemons {
        let digest: Option<String> = d.get(1);
        println!(
            "daemon {}: templates live {}",
            d.get::<String, _>(0),
            digest.unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}
