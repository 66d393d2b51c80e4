//! The claimer, the pipeline's first stage: claims batches one after the other (on the
//! database's clock, see [`outbox::claim`]) and queues their rows as jobs, one per email, until
//! nothing is due, delivery must stop, or the sending hours end.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::outbox::{self, Claimed};
use super::{digests, send_window, Batch, DeliveryReport, EnvelopeSender, Job, Stop, Worker};
use crate::render::context;
use crate::store::Lane;
use crate::telemetry::progress::Progress;

impl Worker {
    /// Claims batches and queues their rows until nothing is due or delivery must stop.
    pub(super) async fn claim_batches(
        &self,
        lane: &Lane,
        jobs: mpsc::Sender<Job>,
        stop: &Stop,
        shutdown: &CancellationToken,
        report: &mut DeliveryReport,
        progress: &Option<Progress>,
    ) -> Result<(), sqlx::Error> {
        let mut batch_no = 0u64;
        // On PostgreSQL every sent row leaves a dead index entry among the claimed ones until
        // vacuum, and the search for a dead daemon's rows walks them all, slower as a campaign
        // goes on. Those rows are a lease late already:
        // looking for them at the first batch and then every tenth of a lease is enough. The
        // snapshot's freshness, whose limit is counted in hours, is looked at on the same beat.
        let stale_every = Duration::seconds((self.settings.delivery.lease_seconds / 10) as i64);
        let mut stale_next = self.clock.now();
        let mut hold_reminders = false;
        let sender = {
            let mut conn = lane.conn().await?;
            EnvelopeSender::of(&self.settings, &mut conn).await?
        };
        while !stop.halts(shutdown) {
            let now = self.clock.now();
            if !self.in_sending_hours(now) {
                report.outside_sending_hours = true;
                break;
            }
            batch_no += 1;
            let token = format!("{}:{}:{batch_no}", self.worker_id, now.timestamp_millis());
            // Before the claim reaches the database: its lease, started there later on the
            // database's clock, lasts at least `lease_seconds` from here.
            let claimed_at = Instant::now();
            let stale = now >= stale_next;
            if stale {
                stale_next = now + stale_every;
            }
            let (rows, skipped, held, reopened_at) = self
                .claim_batch(lane, &token, now, stale, &mut hold_reminders)
                .await?;
            count_skipped(report, progress, &skipped);
            report.held_back += held;
            if rows.is_empty() {
                if skipped.is_empty() && held == 0 {
                    break;
                }
                continue;
            }
            let batch = self.batch(token, claimed_at, reopened_at, &sender, rows.len());
            if !queue(&jobs, batch, rows).await {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Claims one batch for `token`: its rows, the rows skipped per campaign, and when the
    /// service reopened. On the `stale` beat, also looks for a dead daemon's rows, reads the
    /// snapshot's freshness (into `hold_reminders`) and folds the queue counts.
    async fn claim_batch(
        &self,
        lane: &Lane,
        token: &str,
        now: DateTime<Utc>,
        stale: bool,
        hold_reminders: &mut bool,
    ) -> Result<(Vec<Claimed>, Vec<(String, u64)>, u64, Option<DateTime<Utc>>), sqlx::Error> {
        let mut conn = lane.conn().await?;
        let (backend, limit) = (self.db.backend(), self.batch_size());
        if stale {
            // Reminders wait for a fresh snapshot (see `import::freshness`).
            let max_age = self.settings.import.max_age_hours;
            let fresh = crate::import::freshness(&mut *conn, max_age, now).await?;
            *hold_reminders = fresh.stale;
            // The counts' appended changes (PostgreSQL), folded on the same beat, so that
            // a long pass (`run --once` of a million) keeps the status reads short.
            crate::store::queue::fold(&mut conn, backend).await?;
        }
        let request = outbox::ClaimRequest {
            backend,
            token,
            now,
            lease_seconds: self.settings.delivery.lease_seconds,
            limit,
            stale,
            hold_reminders: *hold_reminders,
        };
        let (rows, skipped, held) = outbox::claim(&mut conn, &request).await?;
        let reopened_at = crate::campaign::phases::reopened_at(&mut *conn).await?;
        Ok((rows, skipped, held, reopened_at))
    }

    /// A claimed batch of `rows` rows, as its jobs carry it.
    fn batch(
        &self,
        token: String,
        claimed_at: Instant,
        reopened_at: Option<DateTime<Utc>>,
        sender: &EnvelopeSender,
        rows: usize,
    ) -> Arc<Batch> {
        // The batch's messages log inside this span (JSON logs list it with each line).
        let span = tracing::info_span!("batch", batch = %token, rows = rows);
        Arc::new(Batch {
            span,
            token,
            deadline: claimed_at + send_window(self.settings.delivery.lease_seconds),
            // One template set per batch, taken when it is claimed.
            templates: self.templates.current(),
            reopened_at: context::local_rfc3339(&self.settings.calendar, reopened_at),
            sender: sender.clone(),
        })
    }
}

/// Counts the rows a claim skipped, per campaign, in the report and the progress bar.
fn count_skipped(
    report: &mut DeliveryReport,
    progress: &Option<Progress>,
    skipped: &[(String, u64)],
) {
    for (campaign, n) in skipped {
        if let Some(p) = progress {
            p.inc(*n);
        }
        report
            .per_campaign
            .entry(campaign.clone())
            .or_default()
            .skipped += n;
    }
}

/// Queues the batch's rows, one job per email; `false` when no one takes jobs any more.
async fn queue(jobs: &mpsc::Sender<Job>, batch: Arc<Batch>, rows: Vec<Claimed>) -> bool {
    for (row, merged) in digests(rows) {
        let job = Job {
            batch: batch.clone(),
            row,
            merged,
        };
        if jobs.send(job).await.is_err() {
            return false;
        }
    }
    true
}
