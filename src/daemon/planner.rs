//! The planner's ticks: on the cron schedule and once at start, never two at a time, and with
//! several daemons on one database only the one that records a tick plans it.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::clock::Clock;
use crate::config::Settings;
use crate::plan;
use crate::render::email;
use crate::render::live::TemplateStore;
use crate::store::Db;

#[derive(Clone)]
pub(super) struct Planner {
    pub(super) db: Db,
    pub(super) settings: Arc<Settings>,
    pub(super) clock: Clock,
    pub(super) templates: TemplateStore,
    /// Held while a tick runs: a tick that finds it taken is skipped, so ticks never overlap.
    pub(super) busy: Arc<tokio::sync::Mutex<()>>,
    pub(super) me: String,
}

/// What a planner tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tick {
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
    pub(super) async fn tick(&self) -> Tick {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    use crate::render::templates::TemplateSet;

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
