//! One backend in its own process (`--one BACKEND`): import the snapshot, plan the first notice
//! of the reminder campaigns, deliver it over SMTP to the parent's sink, through the library's
//! public API; then print the figures as one JSON line on standard output for the parent.
//!
//! The peak resident set is reset before each phase (see `proc_stats`), so each phase's peak is
//! its own.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::Duration as ChronoDuration;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use avvisi::app::App;
use avvisi::clock::Clock;
use avvisi::config::Settings;
use avvisi::deliver::transport::Transport;
use avvisi::deliver::Worker;
use avvisi::import::{self, ImportOptions};
use avvisi::plan::{self, Planned};
use avvisi::render::email;
use avvisi::render::live::TemplateStore;
use avvisi::render::templates::TemplateSet;
use avvisi::store::Db;

use crate::proc_stats::{machine_cpu_secs, peak_kib, process_cpu_secs, reset_peak};
use crate::Args;
use testkit::synthetic;

/// The line of the child's standard output that carries its figures.
pub const RESULT_PREFIX: &str = "AVVISI-BENCH-RESULT ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OneBackend {
    Sqlite,
    Postgres,
}

impl OneBackend {
    pub fn name(self) -> &'static str {
        match self {
            OneBackend::Sqlite => "sqlite",
            OneBackend::Postgres => "postgres",
        }
    }
}

/// What one backend's child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendFigures {
    pub backend: String,
    pub users: u64,
    pub import_secs: f64,
    pub rows_imported: u64,
    pub plan_secs: f64,
    pub planned: u64,
    /// Campaigns whose planned messages differ from the snapshot's audience (should be none).
    pub audience_mismatches: Vec<String>,
    pub deliver_secs: f64,
    /// Outbox rows sent (a digest's rows each count).
    pub sent: u64,
    /// Emails sent (a digest is one).
    pub emails: u64,
    /// Anything else than sent (should be 0).
    pub not_sent: u64,
    /// Different users among the sent messages (should be `users`).
    pub recipients: u64,
    /// avvisi's own CPU time (user + system) during delivery.
    pub deliver_cpu_secs: f64,
    /// Every process of the machine (database, sink, avvisi) during delivery.
    pub machine_cpu_secs: f64,
    pub avg_message_bytes: u64,
    pub peak_import_kib: u64,
    pub peak_plan_kib: u64,
    pub peak_deliver_kib: u64,
    /// The same rows written by one plain `INSERT ... SELECT` into a copy of the outbox (same
    /// columns and indexes, no triggers or foreign keys): the yardstick of planning.
    pub yardstick_secs: f64,
    /// The status reads with the planned queue in place (the best of three, milliseconds): the
    /// status page, a `/metrics` scrape, `/readyz`.
    pub status_page_ms: f64,
    pub metrics_ms: f64,
    pub readyz_ms: f64,
    /// False when the peak could not be reset between phases (then each is cumulative).
    pub peak_per_phase: bool,
}

pub async fn run(args: &Args, backend: OneBackend) -> anyhow::Result<()> {
    let (Some(url), Some(snapshot), Some(port)) =
        (&args.database_url, &args.snapshot, args.smtp_port)
    else {
        bail!("--one needs --database-url, --snapshot and --smtp-port");
    };
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    let mut overrides = testkit::smtp::env(&format!("smtp://127.0.0.1:{port}"));
    overrides.extend([
        ("AVVISI__DATABASE__URL", url.clone()),
        ("AVVISI__SMTP__USERNAME", String::new()),
        ("AVVISI__SMTP__PASSWORD", String::new()),
        ("AVVISI__SMTP__PASSWORD_FILE", String::new()),
    ]);
    env.extend(overrides.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let Some(c) = args.concurrency {
        env.push(("AVVISI__DELIVERY__CONCURRENCY".into(), c.to_string()));
    }
    let settings = Arc::new(Settings::load_with_env(None, env)?);
    let db = Db::open(url, settings.database.max_connections)
        .await
        .context("opening the benchmark database")?;
    let templates = TemplateSet::load(&settings.templates_dir).context("loading templates")?;
    let digest = templates.digest().to_string();

    // The first notice of the reminder campaigns: inside the campaign and the sending hours.
    let cal = &settings.calendar;
    let now = cal.campaign_start + ChronoDuration::hours(1);
    let clock = Clock::manual(now);
    let worker = Worker::new(
        db.clone(),
        settings.clone(),
        Transport::from_settings(&settings)?,
        TemplateStore::new(templates),
        clock.clone(),
    );
    if now >= cal.deadline || !worker.in_sending_hours(now) {
        bail!("the calendar's first notice (campaign_start + 1 h) is not inside the sending hours");
    }
    let peak_per_phase = reset_peak();

    // Import.
    let started = Instant::now();
    let options = ImportOptions {
        max_gone_percent: settings.import.max_gone_percent,
        ..ImportOptions::default()
    };
    let report = import::import_users(&db, snapshot, &options, now).await?;
    let import_secs = started.elapsed().as_secs_f64();
    let peak_import_kib = peak_kib();
    eprintln!(
        "{}: imported {} rows in {import_secs:.2} s",
        backend.name(),
        report.rows_valid
    );

    // Planning.
    reset_peak();
    let started = Instant::now();
    let domain = email::message_id_domain(&settings.mail);
    let planned = plan::plan_due(&db, &settings, &digest, &domain, now).await?;
    let plan_secs = started.elapsed().as_secs_f64();
    let peak_plan_kib = peak_kib();
    let audience_mismatches = audience_mismatches(&planned, report.rows_valid, args.population);
    let planned: u64 = planned.iter().map(|p| p.rows).sum();
    eprintln!(
        "{}: planned {planned} messages in {plan_secs:.2} s",
        backend.name()
    );
    let expected = synthetic::reminder_rows(report.rows_valid, args.population);
    if planned != expected {
        eprintln!(
            "warning: planned {planned} messages for {} users, {expected} expected",
            report.rows_valid
        );
    }
    // The mean size of the emails as a pass builds them, over up to 256 planned rows spread
    // across the outbox (smtp-source then sends messages of that size).
    let avg_message_bytes = App::new(db.clone(), settings.clone(), clock.clone())
        .mean_message_size(planned, 256)
        .await?;
    let yardstick_secs = yardstick(&db).await?;
    let health = avvisi::observe::health::Health::new(worker.templates().clone());
    let page = best_of_three_ms(|| async {
        avvisi::observe::page::status(&db, &settings, Some(&health), now, false)
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from)
    })
    .await?;
    let metrics = best_of_three_ms(|| async {
        avvisi::observe::metrics::scrape(&db, now)
            .await
            .map_err(anyhow::Error::from)
    })
    .await?;
    let readyz = best_of_three_ms(|| async {
        avvisi::observe::health::readiness(&db, &settings, &health, now).await;
        Ok(())
    })
    .await?;
    eprintln!(
        "{}: yardstick INSERT ... SELECT {yardstick_secs:.2} s; status page {page:.1} ms, \
         /metrics {metrics:.1} ms, /readyz {readyz:.1} ms",
        backend.name()
    );

    // Delivery.
    reset_peak();
    let (cpu0, machine0) = (process_cpu_secs(), machine_cpu_secs());
    let started = Instant::now();
    let delivery = worker.deliver_due(&CancellationToken::new()).await?;
    let deliver_secs = started.elapsed().as_secs_f64();
    let (cpu1, machine1) = (process_cpu_secs(), machine_cpu_secs());
    let peak_deliver_kib = peak_kib();
    if delivery.relay_unreachable {
        bail!("the sink on 127.0.0.1:{port} could not be reached");
    }
    let mut sent = 0;
    let mut not_sent = 0;
    for t in delivery.per_campaign.values() {
        sent += t.sent;
        not_sent += t.skipped + t.failed + t.expired + t.retrying;
    }
    eprintln!(
        "{}: delivered {sent} messages in {deliver_secs:.2} s",
        backend.name()
    );
    // After the timing: who got the messages.
    let recipients: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT user_id) FROM outbox WHERE state = 'sent'")
            .fetch_one(db.pool())
            .await
            .context("counting the recipients")?;
    // A digest's rows share its Message-ID: one email.
    let emails: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT message_id) FROM outbox WHERE state = 'sent'")
            .fetch_one(db.pool())
            .await
            .context("counting the emails")?;
    db.close().await;

    let figures = BackendFigures {
        backend: backend.name().into(),
        users: args.users(),
        import_secs,
        rows_imported: report.rows_valid,
        plan_secs,
        planned,
        audience_mismatches,
        deliver_secs,
        sent,
        emails: emails as u64,
        not_sent,
        recipients: recipients as u64,
        deliver_cpu_secs: cpu1 - cpu0,
        machine_cpu_secs: machine1 - machine0,
        avg_message_bytes,
        peak_import_kib,
        peak_plan_kib,
        peak_deliver_kib,
        yardstick_secs,
        status_page_ms: page,
        metrics_ms: metrics,
        readyz_ms: readyz,
        peak_per_phase,
    };
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// The reminder campaigns whose planned messages differ from the synthetic snapshot's audience
/// sizes (`AUDIENCE-DEADLINE` campaigns; the snapshot has `users` rows).
fn audience_mismatches(
    planned: &[Planned],
    users: u64,
    population: synthetic::Population,
) -> Vec<String> {
    let mut mismatches = Vec::new();
    for (audience, expected) in synthetic::audience_sizes(users, population) {
        // Every enabled user: the maintenance notice, not due at the first reminder.
        if audience == avvisi::audience::Audience::EnabledUsers {
            continue;
        }
        let prefix = format!("{}-", audience.name());
        let rows: u64 = planned
            .iter()
            .filter(|p| p.campaign.starts_with(&prefix))
            .map(|p| p.rows)
            .sum();
        if rows != expected {
            mismatches.push(format!(
                "{}: {rows} messages planned for {expected} users of the audience",
                audience.name()
            ));
        }
    }
    mismatches
}

/// The best of three runs of `read`, in milliseconds.
async fn best_of_three_ms<F, Fut>(read: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        read().await?;
        best = best.min(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(best)
}

/// Seconds for one plain `INSERT ... SELECT` of every outbox row into a copy of the outbox with
/// the same columns and indexes (no triggers, no foreign keys); the copy is dropped after.
async fn yardstick(db: &Db) -> anyhow::Result<f64> {
    let mut conn = db.pool().acquire().await?;
    let sqlite = db.backend() == avvisi::store::Backend::Sqlite;
    let mut setup = vec!["DROP TABLE IF EXISTS bench_yardstick".to_string()];
    if sqlite {
        setup.push("CREATE TABLE bench_yardstick AS SELECT * FROM outbox WHERE 0".into());
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox' \
             AND sql IS NOT NULL",
        )
        .fetch_all(&mut *conn)
        .await?;
        for sql in indexes {
            setup.push(
                sql.replacen("INDEX ", "INDEX bench_", 1)
                    .replace(" ON outbox", " ON bench_yardstick"),
            );
        }
        // The unique key (campaign, user, step) is the table's own constraint: its index too.
        setup.push(
            "CREATE UNIQUE INDEX bench_key ON bench_yardstick (campaign_id, user_id, step)".into(),
        );
    } else {
        setup.push(
            "CREATE TABLE bench_yardstick (LIKE outbox INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
             INCLUDING INDEXES)"
                .into(),
        );
    }
    for sql in &setup {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    let started = Instant::now();
    sqlx::query("INSERT INTO bench_yardstick SELECT * FROM outbox")
        .execute(&mut *conn)
        .await?;
    let secs = started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_yardstick")
        .execute(&mut *conn)
        .await?;
    Ok(secs)
}
