//! `avvisi daemon`: a scheduled planner and a continuous sender, until the shutdown signal.
//!
//! - The planner runs on `daemon.planner_cron` (tokio-cron-scheduler, in the calendar's time
//!   zone) and once at start. It computes due steps from the calendar itself, in UTC, so a
//!   scheduler tick that drifts across a DST change can only be late by one tick, never move
//!   09:00. Ticks never overlap (a busy tick makes the next one skip), and with several daemons
//!   on one PostgreSQL only the daemon that records a tick in `planner_ticks` plans it
//!   ([`planner`]).
//! - The sender delivers continuously; when the relay is unreachable it backs off as a whole
//!   ([`sender`]).
//! - `http.address`, when set, serves health, readiness, metrics and the status page
//!   ([`crate::observe`]) until the daemon stops; `unsubscribe.address`, on a listener of its
//!   own, the one-click unsubscribe ([`unsubscribe`]).
//! - Templates: the newest published set, followed on a beat (or at once on SIGHUP); in
//!   development mode the folder, reloaded when it changes. A broken set is never used
//!   ([`templates`]).
//! - On shutdown (SIGTERM, Ctrl-C) nothing new is claimed, sends on the wire get
//!   `shutdown_grace_seconds`, and what was claimed but not started is handed back.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Settings;
use crate::deliver::transport::Transport;
use crate::deliver::{self, Worker};
use crate::observe::health::Health;
use crate::observe::http;
use crate::render::live::TemplateStore;
use crate::render::templates::TemplateSet;
use crate::store::Db;

mod planner;
mod registry;
mod sender;
mod templates;
mod unsubscribe;

use self::planner::Planner;
use self::registry::{deregister, heartbeat, record_templates, register};
pub use self::templates::full_check;
pub use crate::store::daemons::{running_daemons, RunningDaemon};

#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    #[error("another avvisi daemon ({other}) is running on this SQLite database; SQLite supports one daemon at a time (use PostgreSQL to run several)")]
    AlreadyRunning { other: String },
}

/// Validates a template set before it goes live: problems as sentences, empty when good.
pub type TemplateCheck = Arc<dyn Fn(&TemplateSet) -> Vec<String> + Send + Sync>;

/// `avvisi daemon`: runs until SIGTERM or Ctrl-C, every template set checked as the editors'
/// check does ([`full_check`]).
pub async fn run_until_signal(db: Db, settings: Arc<Settings>, clock: Clock) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let check = full_check(settings.clone());
    run(db, settings, clock, shutdown, check).await
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: stopping"),
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}

/// Runs the daemon until `shutdown` is cancelled. `check` validates every template set before
/// it goes live.
pub async fn run(
    db: Db,
    settings: Arc<Settings>,
    clock: Clock,
    shutdown: CancellationToken,
    check: TemplateCheck,
) -> anyhow::Result<()> {
    // Unique even for several daemons started together in one process (tests, benchmarks).
    let me = format!("{}:{}", deliver::worker_id(), crate::campaign::new_uid());
    let _lock = register(&db, &me).await?;
    let result = serve(&db, settings, clock, shutdown, check, &me).await;
    deregister(&db, &me).await;
    result
}

async fn serve(
    db: &Db,
    settings: Arc<Settings>,
    clock: Clock,
    shutdown: CancellationToken,
    check: TemplateCheck,
    me: &str,
) -> anyhow::Result<()> {
    if settings.http.address.is_some() {
        // Before the first recording: a metric recorded without a recorder is lost.
        crate::telemetry::metrics::install();
    }
    let (store, source) = first_templates(db, &settings, &clock, &check, me).await?;
    let health = Health::new(store.clone());
    let transport = Transport::from_settings(&settings).context("setting up delivery")?;
    let worker = Worker::new(
        db.clone(),
        settings.clone(),
        transport,
        store.clone(),
        clock.clone(),
    )
    .with_id(me);

    // Background duties: heartbeat, template reloads, planner ticks, the HTTP endpoints.
    let tasks = CancellationToken::new();
    let server = start_http(db, &settings, &clock, &health, &tasks).await?;
    let unsubscribe = match settings.unsubscribe.address {
        Some(address) => {
            let (bound, task) = unsubscribe::start(
                address,
                db.clone(),
                settings.clone(),
                clock.clone(),
                tasks.clone(),
            )
            .await?;
            tracing::info!(address = %bound, "serving the one-click unsubscribe on http://{bound}/u/");
            Some(task)
        }
        None => None,
    };
    let heartbeat = tokio::spawn(heartbeat(db.clone(), me.to_string(), tasks.clone()));
    let follow = templates::Follow {
        store: store.clone(),
        settings: settings.clone(),
        check,
        db: db.clone(),
        me: me.to_string(),
        health: health.clone(),
    };
    let reloads = tokio::spawn(templates::follow_templates(follow, source, tasks.clone()));
    let planner = Planner {
        db: db.clone(),
        settings: settings.clone(),
        clock: clock.clone(),
        templates: store.clone(),
        busy: Arc::new(tokio::sync::Mutex::new(())),
        me: me.to_string(),
    };
    planner.tick().await; // catch up at once on what became due while the daemon was down
    let mut scheduler = schedule_planner(planner, &settings).await?;
    tracing::info!(daemon = me, "daemon started");

    sender::send_until_shutdown(&worker, &settings, &shutdown, &health, me).await;
    worker.close().await;

    tasks.cancel();
    let _ = scheduler.shutdown().await;
    let _ = tokio::join!(heartbeat, reloads);
    for server in [server, unsubscribe].into_iter().flatten() {
        // A scraper's keep-alive connection must not hold the exit.
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    tracing::info!("daemon stopped");
    Ok(())
}

/// The template set the daemon starts with: the newest published one (the folder is published
/// first when the database has none), or the folder in development mode. Refused, and the
/// daemon with it, when it has problems.
async fn first_templates(
    db: &Db,
    settings: &Arc<Settings>,
    clock: &Clock,
    check: &TemplateCheck,
    me: &str,
) -> anyhow::Result<(TemplateStore, templates::Source)> {
    let app = crate::app::App::new(db.clone(), settings.clone(), clock.clone());
    let (publication, first) = app.live_templates().await.context("loading templates")?;
    let problems = check(&first);
    if !problems.is_empty() {
        anyhow::bail!(
            "the templates have problems; fix them before starting:\n  {}",
            problems.join("\n  ")
        );
    }
    let source = match publication {
        Some(p) => templates::Source::Published { seen: p.id },
        None => templates::Source::Folder,
    };
    tracing::info!(
        templates = first.digest(),
        development = settings.templates_development,
        "templates live"
    );
    record_templates(db, me, first.digest()).await;
    crate::telemetry::metrics::templates_live(first.digest(), None);
    Ok((TemplateStore::new(first), source))
}

/// Serves the HTTP endpoints when `http.address` is set, until `tasks` is cancelled.
async fn start_http(
    db: &Db,
    settings: &Arc<Settings>,
    clock: &Clock,
    health: &Health,
    tasks: &CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(address) = settings.http.address else {
        return Ok(None);
    };
    let endpoints = http::Endpoints {
        db: db.clone(),
        settings: settings.clone(),
        clock: clock.clone(),
        health: health.clone(),
        prometheus: crate::telemetry::metrics::install(),
    };
    let console = crate::console::router(crate::app::App::new(
        db.clone(),
        settings.clone(),
        clock.clone(),
    ));
    let (bound, task) = http::start(address, endpoints, console, tasks.clone()).await?;
    tracing::info!(address = %bound, "serving /healthz, /readyz, /metrics, the status page and the console (/accedi) on http://{bound}/");
    Ok(Some(task))
}

/// Starts the planner's ticks on `daemon.planner_cron`, in the calendar's time zone.
async fn schedule_planner(planner: Planner, settings: &Settings) -> anyhow::Result<JobScheduler> {
    let scheduler = JobScheduler::new()
        .await
        .context("starting the scheduler")?;
    let job = Job::new_async_tz(
        settings.daemon.planner_cron.as_str(),
        settings.calendar.timezone,
        move |_, _| {
            let tick = planner.clone();
            Box::pin(async move {
                tick.tick().await;
            })
        },
    )
    .context("daemon.planner_cron")?;
    scheduler.add(job).await.context("scheduling the planner")?;
    scheduler.start().await.context("starting the scheduler")?;
    Ok(scheduler)
}
