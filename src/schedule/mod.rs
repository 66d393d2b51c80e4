//! `avvisi daemon`: a scheduled planner and a continuous sender, until the shutdown signal.
//!
//! - The planner runs on `daemon.planner_cron` (tokio-cron-scheduler, in the calendar's time
//!   zone) and once at start. It computes due steps from the calendar itself, in UTC, so a
//!   scheduler tick that drifts across a DST change can only be late by one tick, never move
//!   09:00. Ticks never overlap (a busy tick makes the next one skip), and with several daemons
//!   on one PostgreSQL only the daemon that records a tick in `planner_ticks` plans it.
//! - The sender delivers continuously; when the relay is unreachable it backs off as a whole.
//! - `http.address`, when set, serves health, readiness, metrics and the status page
//!   ([`crate::observe`]) until the daemon stops.
//! - Templates reload on SIGHUP and when the folder changes; a broken set is never used.
//! - On shutdown nothing new is claimed, sends on the wire get `shutdown_grace_seconds`, and
//!   what was claimed but not started is handed back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use sqlx::Row;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::Settings;
use crate::deliver::transport::Transport;
use crate::deliver::{self, Worker};
use crate::observe::health::Health;
use crate::observe::http;
use crate::plan;
use crate::render::email;
use crate::render::live::{Reload, TemplateStore};
use crate::render::templates::TemplateSet;
use crate::store::{Backend, DaemonLock, Db};

/// A daemon is considered alive while its heartbeat is younger than this.
const HEARTBEAT_STALE_SECONDS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    #[error("another avvisi daemon ({other}) is running on this SQLite database; SQLite supports one daemon at a time (use PostgreSQL to run several)")]
    AlreadyRunning { other: String },
}

/// Validates a template set before it goes live: problems as sentences, empty when good.
pub type TemplateCheck = Arc<dyn Fn(&TemplateSet) -> Vec<String> + Send + Sync>;

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
    let me = format!(
        "{}:{}",
        deliver::worker_id(),
        crate::audience::campaign::new_uid()
    );
    let _lock = register(&db, &me).await?;
    let result = serve(&db, settings, clock, shutdown, check, &me).await;
    let _ = sqlx::query("DELETE FROM daemons WHERE id = $1")
        .bind(&me)
        .execute(db.pool())
        .await;
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
    let first = TemplateSet::load(&settings.templates_dir).context("loading templates")?;
    let problems = check(&first);
    if !problems.is_empty() {
        anyhow::bail!(
            "the templates have problems; fix them before starting:\n  {}",
            problems.join("\n  ")
        );
    }
    tracing::info!(templates = first.digest(), "templates live");
    record_templates(db, me, first.digest()).await;
    crate::telemetry::metrics::templates_live(first.digest(), None);
    let store = TemplateStore::new(first);
    let health = Health::new(store.clone());
    let transport = Transport::from_settings(&settings).context("setting up delivery")?;
    let worker = Arc::new(Worker {
        db: db.clone(),
        settings: settings.clone(),
        transport,
        templates: store.clone(),
        clock: clock.clone(),
        worker_id: me.to_string(),
    });

    // Background duties: heartbeat, template reloads, planner ticks, the HTTP endpoints.
    let tasks = CancellationToken::new();
    let server = match settings.http.address {
        Some(address) => {
            let endpoints = http::Endpoints {
                db: db.clone(),
                settings: settings.clone(),
                clock: clock.clone(),
                health: health.clone(),
                prometheus: crate::telemetry::metrics::install(),
            };
            let (bound, task) = http::start(address, endpoints, tasks.clone()).await?;
            tracing::info!(address = %bound, "serving /healthz, /readyz, /metrics and the status page on http://{bound}/");
            Some(task)
        }
        None => None,
    };
    let heartbeat = tokio::spawn(heartbeat(db.clone(), me.to_string(), tasks.clone()));
    let reloads = tokio::spawn(watch_templates(
        store.clone(),
        settings.clone(),
        check,
        tasks.clone(),
        db.clone(),
        me.to_string(),
        health.clone(),
    ));
    let planner = Planner {
        db: db.clone(),
        settings: settings.clone(),
        clock: clock.clone(),
        templates: store.clone(),
        busy: Arc::new(tokio::sync::Mutex::new(())),
        me: me.to_string(),
    };
    planner.tick().await; // catch up at once on what became due while the daemon was down
    let mut scheduler = JobScheduler::new()
        .await
        .context("starting the scheduler")?;
    let tick = planner.clone();
    let job = Job::new_async_tz(
        settings.daemon.planner_cron.as_str(),
        settings.calendar.timezone,
        move |_, _| {
            let tick = tick.clone();
            Box::pin(async move {
                tick.tick().await;
            })
        },
    )
    .context("daemon.planner_cron")?;
    scheduler.add(job).await.context("scheduling the planner")?;
    scheduler.start().await.context("starting the scheduler")?;
    tracing::info!(daemon = me, "daemon started");

    send_until_shutdown(&worker, &settings, &shutdown, &health).await;
    worker.transport.close().await;

    tasks.cancel();
    let _ = scheduler.shutdown().await;
    let _ = tokio::join!(heartbeat, reloads);
    if let Some(server) = server {
        // A scraper's keep-alive connection must not hold the exit.
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    tracing::info!("daemon stopped");
    Ok(())
}

/// The sender: deliver, then wait (longer while the relay is down), until shutdown.
async fn send_until_shutdown(
    worker: &Worker,
    settings: &Settings,
    shutdown: &CancellationToken,
    health: &Health,
) {
    let poll = Duration::from_secs(settings.daemon.poll_seconds);
    let backoff_max = Duration::from_secs(settings.daemon.relay_backoff_max_seconds.max(1));
    let grace = Duration::from_secs(settings.daemon.shutdown_grace_seconds);
    let mut backoff = poll;
    // The last relay fault logged: a fault is logged when it starts or changes, not per pass.
    let mut fault: Option<String> = None;
    while !shutdown.is_cancelled() {
        let delivery = worker.deliver_due(shutdown);
        tokio::pin!(delivery);
        let report = tokio::select! {
            r = &mut delivery => r,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("shutdown grace period over: messages still on the wire return to the queue when their lease expires");
                return;
            }
        };
        let pause = match report {
            Ok(r) if r.relay_unreachable => {
                let now = r.relay_fault.unwrap_or_else(|| "relay unreachable".into());
                health.relay_fault(worker.clock.now(), &now);
                if fault.as_deref() != Some(now.as_str()) {
                    tracing::error!(
                        reason = %now,
                        "delivery stopped by the relay; retrying with backoff (no message is failed for it)"
                    );
                    fault = Some(now);
                }
                let pause = backoff;
                backoff = (backoff * 2).min(backoff_max);
                pause
            }
            Ok(r) => {
                if r.per_campaign.values().any(|t| t.sent > 0) {
                    health.relay_ok();
                    if fault.take().is_some() {
                        tracing::info!("the relay accepts messages again");
                    }
                }
                backoff = poll;
                poll
            }
            Err(e) => {
                let error = worker.db.describe(&e);
                tracing::error!(%error, "delivery pass failed (database?); retrying");
                backoff = (backoff * 2).min(backoff_max);
                backoff
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[derive(Clone)]
struct Planner {
    db: Db,
    settings: Arc<Settings>,
    clock: Clock,
    templates: TemplateStore,
    /// Held while a tick runs: a tick that finds it taken is skipped, so ticks never overlap.
    busy: Arc<tokio::sync::Mutex<()>>,
    me: String,
}

/// What a planner tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    Planned,
    /// The previous tick was still running.
    SkippedBusy,
    /// Another daemon (or an earlier run) already planned this tick.
    SkippedTaken,
    Failed,
}

impl Planner {
    /// One planner run: skipped when the previous one is still running, or when another daemon
    /// already took this tick. Logged inside a `planner_tick` span, counted in the metrics.
    async fn tick(&self) -> Tick {
        let started = Instant::now();
        let span = tracing::info_span!("planner_tick", at = %self.clock.now().to_rfc3339());
        let tick = self.tick_once().instrument(span).await;
        let (outcome, timed) = match tick {
            Tick::Planned => ("planned", Some(started.elapsed())),
            Tick::SkippedBusy => ("skipped_busy", None),
            Tick::SkippedTaken => ("skipped_taken", None),
            Tick::Failed => ("failed", Some(started.elapsed())),
        };
        crate::telemetry::metrics::planner_tick(outcome, timed);
        tick
    }

    async fn tick_once(&self) -> Tick {
        let Ok(_guard) = self.busy.try_lock() else {
            tracing::warn!("previous planner tick still running: this tick is skipped");
            return Tick::SkippedBusy;
        };
        let now = self.clock.now();
        match self.claim_tick(now.timestamp()).await {
            Ok(true) => {}
            Ok(false) => return Tick::SkippedTaken,
            Err(e) => {
                tracing::error!(error = %e, "cannot record the planner tick");
                return Tick::Failed;
            }
        }
        let templates = self.templates.current();
        let domain = email::message_id_domain(&self.settings.mail);
        match plan::plan_due(&self.db, &self.settings, templates.digest(), &domain, now).await {
            Ok(_) => Tick::Planned,
            Err(e) => {
                tracing::error!(error = %e, "planning failed; the next tick tries again");
                Tick::Failed
            }
        }
    }

    async fn claim_tick(&self, tick: i64) -> Result<bool, sqlx::Error> {
        let taken = sqlx::query("INSERT INTO planner_ticks (tick_at, daemon) VALUES ($1, $2) ON CONFLICT (tick_at) DO NOTHING")
            .bind(tick)
            .bind(&self.me)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM planner_ticks WHERE tick_at < $1")
            .bind(tick - 86_400)
            .execute(self.db.pool())
            .await?;
        Ok(taken == 1)
    }
}

/// Records the live template version for `avvisi status`.
async fn record_templates(db: &Db, me: &str, digest: &str) {
    let recorded = sqlx::query("UPDATE daemons SET templates_digest = $1 WHERE id = $2")
        .bind(digest)
        .bind(me)
        .execute(db.pool())
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "cannot record the live template version");
    }
}

/// A daemon whose heartbeat is fresh, with the template version it has live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunningDaemon {
    pub id: String,
    /// The digest of its live template set; `None` until it has loaded one.
    pub templates_digest: Option<String>,
}

/// The daemons alive now (heartbeats are real time, never the calendar's clock).
pub async fn running_daemons(db: &Db) -> Result<Vec<RunningDaemon>, sqlx::Error> {
    let fresh = Utc::now().timestamp() - HEARTBEAT_STALE_SECONDS;
    let rows =
        sqlx::query("SELECT id, templates_digest FROM daemons WHERE heartbeat_at > $1 ORDER BY id")
            .bind(fresh)
            .fetch_all(db.pool())
            .await?;
    rows.iter()
        .map(|r| {
            Ok(RunningDaemon {
                id: r.try_get(0)?,
                templates_digest: r.try_get(1)?,
            })
        })
        .collect()
}

/// Refuses a second daemon on one SQLite file; records this daemon's heartbeat. The lock it
/// returns is this daemon's for as long as it is kept.
async fn register(db: &Db, me: &str) -> anyhow::Result<DaemonLock> {
    let now = Utc::now().timestamp();
    let Some(lock) = db.lock_daemon().await? else {
        let other: Option<String> =
            sqlx::query_scalar("SELECT id FROM daemons ORDER BY heartbeat_at DESC LIMIT 1")
                .fetch_optional(db.pool())
                .await?;
        let other = other.unwrap_or_else(|| "not registered yet".into());
        return Err(DaemonError::AlreadyRunning { other }.into());
    };
    // With the SQLite lock held, any other daemon on record is one that died.
    let dead = match db.backend() {
        Backend::Sqlite => now + 1,
        Backend::Postgres => now - HEARTBEAT_STALE_SECONDS + 1,
    };
    sqlx::query("DELETE FROM daemons WHERE heartbeat_at < $1")
        .bind(dead)
        .execute(db.pool())
        .await?;
    sqlx::query("INSERT INTO daemons (id, started_at, heartbeat_at) VALUES ($1, $2, $2)")
        .bind(me)
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(lock)
}

async fn heartbeat(db: Db, me: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let beat = sqlx::query("UPDATE daemons SET heartbeat_at = $1 WHERE id = $2")
            .bind(Utc::now().timestamp())
            .bind(&me)
            .execute(db.pool())
            .await;
        if let Err(e) = beat {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

/// Reloads the templates on SIGHUP and when the folder's content changes.
async fn watch_templates(
    store: TemplateStore,
    settings: Arc<Settings>,
    check: TemplateCheck,
    stop: CancellationToken,
    db: Db,
    me: String,
    health: Health,
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let every = Duration::from_secs(settings.daemon.template_poll_seconds);
    let mut reported: Vec<String> = Vec::new();
    // The digest live now, for the metric of the one it replaces.
    let mut live = Some(store.current().digest().to_string());
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sighup => tracing::info!("SIGHUP: reloading templates"),
            _ = tokio::time::sleep(every) => {}
        }
        match store.reload(&settings.templates_dir, &*check) {
            Reload::Unchanged => {}
            Reload::Replaced(digest) => {
                reported.clear();
                health.templates_rejected(None);
                crate::telemetry::metrics::templates_live(&digest, live.as_deref());
                live = Some(digest.clone());
                tracing::info!(templates = %digest, "new templates live");
                record_templates(&db, &me, &digest).await;
            }
            // Logged once per distinct breakage, not at every poll.
            Reload::Rejected(problems) if problems != reported => {
                health.templates_rejected(Some(problems.join("; ")));
                for p in &problems {
                    tracing::error!(problem = %p, "template edit rejected; still sending with the last good set");
                }
                reported = problems;
            }
            Reload::Rejected(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    async fn planner() -> (Planner, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::open(&url, 1).await.unwrap();
        let settings = Settings::load_with_env(None, Vec::new()).unwrap();
        let templates = TemplateStore::new(TemplateSet::load(&settings.templates_dir).unwrap());
        let at = DateTime::parse_from_rfc3339("2026-11-23T10:00:00+01:00")
            .unwrap()
            .to_utc();
        let p = Planner {
            db,
            settings: Arc::new(settings),
            clock: Clock::manual(at),
            templates,
            busy: Arc::new(tokio::sync::Mutex::new(())),
            me: "test".into(),
        };
        (p, dir)
    }

    #[tokio::test]
    async fn ticks_never_overlap_and_each_tick_plans_once() {
        let (p, _dir) = planner().await;
        let running = p.busy.clone().lock_owned().await;
        assert_eq!(
            p.tick().await,
            Tick::SkippedBusy,
            "a tick while another runs is skipped"
        );
        drop(running);
        assert_eq!(p.tick().await, Tick::Planned);
        // The same tick again (another daemon, or the scheduler firing twice) plans nothing.
        assert_eq!(p.tick().await, Tick::SkippedTaken);
        p.clock.advance(chrono::Duration::minutes(1));
        assert_eq!(p.tick().await, Tick::Planned);
    }
}
