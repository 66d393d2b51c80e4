//! One delivery pass as a pipeline: the claimer queues batches, renderer threads build the
//! emails, one sender task per connection sends them, and the recorder commits the outcomes; a
//! stop on the way (relay, quota, breaker, database, shutdown) halts every stage in order.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::breaker::Breaker;
use super::outbox::Outcome;
use super::quota::{self, Quota};
use super::recorder::{record_outcomes, RECORD_CHUNK};
use super::transport::{FailureKind, Gate, Outgoing, SendFailure};
use super::{DeliveryReport, Done, Job, Stop, StopReason, Tally, Worker};
use crate::store::{Backend, Lane};
use crate::telemetry::progress::Progress;

/// What every stage of one pass shares.
#[derive(Clone)]
struct Pass {
    worker: Arc<Worker>,
    stop: Arc<Stop>,
    shutdown: CancellationToken,
    breaker: Arc<Breaker>,
    quota: Arc<Quota>,
    /// Domains whose provider asked this pass to slow down, with its reply: their messages
    /// already claimed wait for the hold without being tried (the claim holds back the rest).
    held: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

type Shared<T> = Arc<tokio::sync::Mutex<mpsc::Receiver<T>>>;

impl Worker {
    /// [`Worker::deliver_due`], counting each settled message into `progress`.
    pub async fn deliver_due_with(
        &self,
        shutdown: &CancellationToken,
        progress: Option<Progress>,
    ) -> Result<DeliveryReport, sqlx::Error> {
        let pass = Pass {
            worker: Arc::new(self.clone()),
            stop: Arc::new(Stop::default()),
            shutdown: shutdown.clone(),
            breaker: Arc::new(Breaker::new(self.settings.delivery.breaker_threshold)),
            quota: Arc::new(Quota::new(&self.db, &self.settings)),
            held: Arc::default(),
        };
        // A full hour claims nothing: rows would only be claimed and handed back at every poll.
        if hour_used_up(&pass.quota).await? {
            return Ok(DeliveryReport {
                throttled: true,
                ..DeliveryReport::default()
            });
        }
        let concurrency = self.settings.delivery.concurrency.max(1) as usize;
        // Room for a whole batch: the next claim runs while the previous batch is still being sent.
        let (job_tx, job_rx) = mpsc::channel::<Job>(self.batch_size().max(1) as usize);
        let (done_tx, done_rx) = mpsc::channel::<Done>(RECORD_CHUNK * 2);
        let (ready_tx, ready_rx) = mpsc::channel::<(Job, Outgoing)>(concurrency * 2);
        let ready_rx = Arc::new(tokio::sync::Mutex::new(ready_rx));

        // Dropping a JoinSet aborts its tasks: if the caller gives up on this future (shutdown
        // grace over), unsettled claims go back to the queue when their lease expires.
        let mut tasks = JoinSet::new();
        spawn_renderers(
            &pass,
            Arc::new(tokio::sync::Mutex::new(job_rx)),
            ready_tx,
            &done_tx,
        );
        // Only the stages hold their ends: when the stage after one is gone (the recorder failed,
        // its senders and renderers followed), the one before it sees a closed channel instead
        // of waiting for room forever.
        for _ in 0..concurrency {
            tasks.spawn(send_until_drained(
                pass.clone(),
                ready_rx.clone(),
                done_tx.clone(),
            ));
        }
        drop((done_tx, ready_rx));
        let (claim_lane, record_lane) = self.lanes();
        let mut recorder = JoinSet::new();
        recorder.spawn(record_outcomes(
            pass.worker.clone(),
            record_lane,
            done_rx,
            pass.stop.clone(),
            progress.clone(),
        ));

        let mut report = DeliveryReport::default();
        let stop = &pass.stop;
        let claimed = self
            .claim_batches(&claim_lane, job_tx, stop, shutdown, &mut report, &progress)
            .await;
        if claimed.is_err() {
            // Hand back what is queued rather than send it; the error is returned below.
            stop.set(StopReason::Database);
        }
        while tasks.join_next().await.is_some() {}
        pass.quota.give_back().await;
        let recorded = recorder
            .join_next()
            .await
            .expect("the recorder task")
            .expect("the recorder does not panic");
        claimed?;
        let recorded = recorded?;
        self.regroup_held(&pass.stop.held()).await?;
        for (campaign, tally) in recorded {
            add(report.per_campaign.entry(campaign).or_default(), &tally);
        }
        self.why_stopped(&pass, &mut report).await?;
        Ok(report)
    }

    /// The claimer's and the recorder's connections, kept between statements (see `Lane`):
    /// without them each statement pays sqlx's ping on the way back to the pool, and a sender
    /// waits for its commit. SQLite has one connection, and a small PostgreSQL pool is left one
    /// for the heartbeat and the planner: there the claimer and the recorder share theirs.
    fn lanes(&self) -> (Lane, Lane) {
        let record_lane = Lane::new(&self.db);
        let claim_lane = match self.db.backend() {
            Backend::Postgres if self.settings.database.max_connections >= 3 => Lane::new(&self.db),
            _ => record_lane.clone(),
        };
        (claim_lane, record_lane)
    }

    /// Takes the rows of the campaigns paused during the pass, handed back, out of their
    /// digests (see `digest::leave`): the pause ran while they were claimed.
    async fn regroup_held(&self, paused: &[String]) -> Result<(), sqlx::Error> {
        for name in paused {
            let mut tx = self.db.pool().begin().await?;
            let id: Option<i64> =
                sqlx::query_scalar("SELECT id FROM campaigns WHERE name = $1 AND state = 'paused'")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(id) = id {
                crate::store::digest::leave(&mut tx, id).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Completes `report` with why the pass stopped early, if it did; a tripped breaker gives
    /// its streak back here.
    async fn why_stopped(
        &self,
        pass: &Pass,
        report: &mut DeliveryReport,
    ) -> Result<(), sqlx::Error> {
        match pass.stop.get() {
            Some(StopReason::Relay(detail)) => {
                report.relay_unreachable = true;
                report.relay_fault = Some(detail);
            }
            Some(StopReason::Throttled) => report.throttled = true,
            Some(StopReason::Breaker) | Some(StopReason::Database) | None => {}
        }
        let deferred = !pass.held.lock().expect("held lock").is_empty();
        if deferred || report.held_back > 0 {
            report.held_domains = super::hold::held(&self.db, self.clock.now()).await?;
        }
        if let Some(tripped) = pass.breaker.tripped() {
            let b = self.breaker_tripped(&tripped).await?;
            // Counted as failed when they were refused; they are back in the queue now.
            for (campaign, n) in &b.per_campaign {
                let t = report.per_campaign.entry(campaign.clone()).or_default();
                t.failed = t.failed.saturating_sub(*n);
            }
            report.relay_unreachable = true;
            report.relay_fault = Some(format!(
                "circuit breaker: {} messages in a row refused with {} ({})",
                tripped.rows.len(),
                tripped.reply,
                tripped.detail
            ));
            report.breaker = Some(b);
        }
        Ok(())
    }
}

/// Whether the relay's hourly quota is used up already.
async fn hour_used_up(quota: &Quota) -> Result<bool, sqlx::Error> {
    match quota.has_room().await {
        Ok(()) => Ok(false),
        Err(quota::Throttle::HourUsedUp { .. }) => Ok(true),
        Err(quota::Throttle::Database(e)) => Err(e),
    }
}

fn add(t: &mut Tally, more: &Tally) {
    t.sent += more.sent;
    t.skipped += more.skipped;
    t.retrying += more.retrying;
    t.failed += more.failed;
    t.expired += more.expired;
}

/// Renderers, on threads of their own (one per core, and one more to cover the moments a
/// renderer waits): a connection never waits for its next message to be built, and the SMTP
/// replies are read as soon as they arrive instead of queueing behind rendering on the runtime's
/// threads.
fn spawn_renderers(
    pass: &Pass,
    job_rx: Shared<Job>,
    ready_tx: mpsc::Sender<(Job, Outgoing)>,
    done_tx: &mpsc::Sender<Done>,
) {
    let renderers = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    for _ in 0..renderers {
        let pass = pass.clone();
        let (job_rx, ready_tx, done_tx) = (job_rx.clone(), ready_tx.clone(), done_tx.clone());
        tokio::task::spawn_blocking(move || loop {
            let Some(job) = job_rx.blocking_lock().blocking_recv() else {
                break;
            };
            // A row whose claim is about to lapse is not even rendered (see `Batch::deadline`).
            let batch = job.batch.clone();
            let _in_batch = batch.span.enter();
            let settled = if pass.stop.halts(&pass.shutdown)
                || Instant::now() >= job.batch.deadline
                || pass.stop.holds(&job)
            {
                Err(Outcome::HandedBack {
                    at: pass.worker.clock.now(),
                })
            } else {
                pass.worker.prepare(&job)
            };
            let sent = match settled {
                Ok(email) => ready_tx.blocking_send((job, email)).is_ok(),
                Err(outcome) => {
                    let done = Done {
                        job,
                        outcome,
                        committed: None,
                    };
                    done_tx.blocking_send(done).is_ok()
                }
            };
            if !sent {
                break;
            }
        });
    }
}

/// One sender, for one SMTP connection, until nothing more is ready. It sends a message's
/// envelope while its previous outcome is being committed, and its body only once that is done:
/// a process killed at any moment has at most one message per sender that the relay may have
/// and the outbox does not know of (the only duplicates a restart can send).
async fn send_until_drained(
    pass: Pass,
    ready_rx: Shared<(Job, Outgoing)>,
    done_tx: mpsc::Sender<Done>,
) {
    let mut previous: Option<oneshot::Receiver<()>> = None;
    loop {
        let Some((job, email)) = ready_rx.lock().await.recv().await else {
            break;
        };
        // A campaign paused since the claim: its message goes back unsent (see `recorder`).
        let (outcome, committed) = if pass.stop.halts(&pass.shutdown) || pass.stop.holds(&job) {
            let at = pass.worker.clock.now();
            (Outcome::HandedBack { at }, None)
        } else if let Some(outcome) = held_in_pass(&pass, &job) {
            (outcome, None)
        } else {
            let gate = Gate::new(previous.take(), Some(job.batch.deadline));
            let span = job.batch.span.clone();
            let (outcome, failure) = pass
                .worker
                .send(&job, &email, Some(gate), &pass.quota)
                .instrument(span)
                .await;
            judge(&pass, &job, failure.as_ref());
            let (committed, gate) = oneshot::channel();
            previous = Some(gate);
            (outcome, Some(committed))
        };
        let done = Done {
            job,
            outcome,
            committed,
        };
        if done_tx.send(done).await.is_err() {
            break;
        }
    }
}

/// The outcome of a job whose domain's provider asked this pass to slow down: it waits with
/// the others, untried.
fn held_in_pass(pass: &Pass, job: &Job) -> Option<Outcome> {
    let held = pass.held.lock().expect("held lock");
    // The common case, no deferral this pass: no address looked at.
    if held.is_empty() {
        return None;
    }
    let domain = super::hold::domain_of(&job.row.recipient);
    let reply = held.get(&domain)?.clone();
    drop(held);
    Some(Outcome::Deferred {
        domain,
        reply,
        backoff: super::hold::Backoff::of(&pass.worker.settings),
    })
}

/// What a send's failure means for the pass: a stop, a step of the breaker's streak, or nothing.
fn judge(pass: &Pass, job: &Job, failure: Option<&SendFailure>) {
    let Some(f) = failure else {
        pass.breaker.passed();
        return;
    };
    match f.kind {
        FailureKind::Unreachable | FailureKind::Refused => {
            pass.stop.set(StopReason::Relay(f.detail.clone()))
        }
        FailureKind::Throttled => pass.stop.set(StopReason::Throttled),
        FailureKind::Permanent => {
            let row = &job.row;
            if pass.breaker.refused(row.id, &row.campaign, f) {
                pass.stop.set(StopReason::Breaker);
            }
        }
        FailureKind::Transient => pass.breaker.passed(),
        // About this recipient alone (see `breaker`).
        FailureKind::NoSuchRecipient => {}
        // About the pace towards one provider: neither the relay's fault nor a streak's step.
        FailureKind::Deferred => {
            let domain = super::hold::domain_of(&job.row.recipient);
            pass.held
                .lock()
                .expect("held lock")
                .entry(domain)
                .or_insert_with(|| f.detail.clone());
        }
        // Not the relay's answer: nothing to count.
        FailureKind::Late => {}
    }
}
