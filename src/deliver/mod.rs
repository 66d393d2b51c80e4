//! Delivery: a pipeline from the outbox to the relay and back.
//!
//! ```text
//! outbox --claimer--> jobs --> renderers (threads) --> emails --> senders (one per connection)
//!   ^                               | settled unsent (expired,                 |
//!   |                               v broken template, bad address)           v
//!   +------------------ recorder: outcomes, a chunk per transaction <----------+
//! ```
//! The loop never holds a database transaction while a message is on the wire. When the relay
//! is unreachable or the hourly quota is used up, nothing more is claimed and the rows not yet
//! attempted are handed back untouched (the caller backs off as a whole). On shutdown the same
//! hand-back happens for what was not started; what is already on the wire finishes and is
//! recorded.
//!
//! Here: the worker and sending one email. The stages are wired in [`pipeline`], batches are
//! claimed by [`claimer`] (the statements are [`outbox`]'s), a row's email is built in
//! [`compose`], outcomes are committed by [`recorder`] and written by [`outbox`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use rand::Rng;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Db;
mod breaker;
mod claimer;
mod compose;
pub mod hold;
pub mod outbox;
mod pipeline;
pub mod quota;
mod recorder;
pub mod retry;
pub mod transport;
pub mod verp;

use self::breaker::Tripped;
pub use self::compose::EmailError;
use self::outbox::{Claimed, Outcome};
use self::quota::Quota;
use self::transport::{FailureKind, Gate, Outgoing, SendFailure, Transport};
use self::verp::VerpKey;
use crate::campaign::lifecycle;
use crate::render::live::TemplateStore;
use crate::render::templates::TemplateSet;

/// What one delivery pass did, per campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub skipped: u64,
    pub failed: u64,
    pub expired: u64,
    /// Transient failures, to be retried later.
    pub retrying: u64,
}

/// The result of [`Worker::deliver_due`].
#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    pub per_campaign: BTreeMap<String, Tally>,
    /// Delivery stopped because of the relay: unreachable, or refusing the session (wrong
    /// password, blocked host...), or the circuit breaker tripped. The rest stays queued.
    pub relay_unreachable: bool,
    /// Why, in one line with the relay's reply when there was one.
    pub relay_fault: Option<String>,
    /// The circuit breaker tripped: what it gave back and paused.
    pub breaker: Option<BreakerReport>,
    /// Nothing was sent because `now` is outside the sending hours.
    pub outside_sending_hours: bool,
    /// Delivery stopped because the relay's hourly quota is used up.
    pub throttled: bool,
    /// Rows that waited for their domain's hold this pass, untried (see [`hold`]).
    pub held_back: u64,
    /// The domains held at the end of the pass, when this pass met one.
    pub held_domains: Vec<hold::DomainHold>,
}

/// What the circuit breaker did when it tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerReport {
    /// The reply every message of the streak got, e.g. `554 5.7.1`.
    pub reply: String,
    /// Emails of the streak.
    pub emails: u64,
    /// Their rows put back in the queue (a digest's with it), attempt not counted.
    pub given_back: u64,
    /// The rows put back, per campaign.
    pub per_campaign: BTreeMap<String, u64>,
    /// Campaigns paused with the reply as the reason.
    pub paused: Vec<String>,
}

/// Sends what is due, on behalf of one process. Cheap to clone (handles only).
#[derive(Clone)]
pub struct Worker {
    db: Db,
    settings: Arc<Settings>,
    transport: Transport,
    /// The live templates; each batch renders with the set current when it starts.
    templates: TemplateStore,
    clock: Clock,
    /// Identifies this process in claim tokens (host and pid unless told otherwise).
    worker_id: String,
}

impl Worker {
    /// A worker that sends through `transport` with the live `templates`, identified in claim
    /// tokens by this process ([`worker_id`]).
    pub fn new(
        db: Db,
        settings: Arc<Settings>,
        transport: Transport,
        templates: TemplateStore,
        clock: Clock,
    ) -> Worker {
        Worker {
            db,
            settings,
            transport,
            templates,
            clock,
            worker_id: worker_id(),
        }
    }

    /// The same worker under another name in claim tokens: several daemons in one process
    /// (tests, benchmarks) must not take each other's claims for their own.
    pub fn with_id(self, worker_id: impl Into<String>) -> Worker {
        Worker {
            worker_id: worker_id.into(),
            ..self
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The live templates.
    pub fn templates(&self) -> &TemplateStore {
        &self.templates
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Closes the transport's connections (SMTP `QUIT`), once nothing more is to be sent.
    pub async fn close(&self) {
        self.transport.close().await;
    }

    /// Whether `now` falls inside the configured sending hours (local time).
    pub fn in_sending_hours(&self, now: DateTime<Utc>) -> bool {
        let cal = &self.settings.calendar;
        let local: NaiveTime = now.with_timezone(&cal.timezone).time();
        local >= cal.sending_hours_start && local < cal.sending_hours_end
    }

    /// Delivers batches until nothing is due, the relay is unreachable, or `shutdown` fires.
    ///
    /// The pipeline of the module's note: this task claims batches (one ahead) and queues their
    /// rows; renderer threads build the emails; `delivery.concurrency` sender tasks, one per
    /// connection, send them; a recorder task commits outcomes in chunks as they complete. A
    /// process killed at any moment re-sends only what was on the wire (at most one message per
    /// connection). When a send finds the relay unreachable or the hourly quota used up, nothing
    /// more is claimed and queued rows are handed back.
    pub async fn deliver_due(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<DeliveryReport, sqlx::Error> {
        self.deliver_due_with(shutdown, None).await
    }

    /// Gives back the streak's messages (their failures are committed by now) and pauses their
    /// campaigns with the reply as the reason.
    async fn breaker_tripped(&self, t: &Tripped) -> Result<BreakerReport, sqlx::Error> {
        let now = self.clock.now();
        let reason = format!(
            "circuit breaker: {} messages in a row refused with {} ({})",
            t.rows.len(),
            t.reply,
            t.detail
        );
        let ids: Vec<i64> = t.rows.iter().map(|(id, _)| *id).collect();
        let back = outbox::give_back(&self.db, &ids, "circuit breaker", now).await?;
        let given_back = back.values().sum();
        let mut paused = Vec::new();
        for campaign in &t.campaigns {
            if lifecycle::pause_for(&self.db, campaign, &reason).await? {
                paused.push(campaign.clone());
            }
        }
        tracing::error!(reply = %t.reply, given_back, paused = ?paused, "circuit breaker tripped: delivery stopped, campaigns paused");
        Ok(BreakerReport {
            reply: t.reply.clone(),
            emails: t.rows.len() as u64,
            given_back,
            per_campaign: back,
            paused,
        })
    }

    /// Rows to claim at once: never more than the per-second limit lets out in a quarter of the
    /// lease, so a throttled batch cannot outlive its claim.
    fn batch_size(&self) -> u32 {
        let d = &self.settings.delivery;
        match self.settings.rate.per_second {
            0 => d.batch_size,
            rate => d
                .batch_size
                .min((rate as u64 * d.lease_seconds / 4).max(1) as u32),
        }
    }

    /// Sends one built email; the failure kind, if any, tells the pipeline whether to stop.
    async fn send(
        &self,
        job: &Job,
        email: &Outgoing,
        gate: Option<Gate>,
        quota: &Quota,
    ) -> (Outcome, Option<SendFailure>) {
        let row = &job.row;
        if let Err(throttle) = quota.admit().await {
            if let quota::Throttle::Database(e) = &throttle {
                tracing::error!(error = %e, "cannot read the shared quota: nothing is sent until it can");
            }
            // Not attempted: back in the queue for when the quota has room, attempt not counted.
            let at = self.clock.now() + Duration::from_std(throttle.wait()).unwrap_or_default();
            let failure = SendFailure {
                kind: FailureKind::Throttled,
                code: None,
                detail: throttle.to_string(),
            };
            return (Outcome::HandedBack { at }, Some(failure));
        }
        let stem = format!("{}.{}.{}", row.campaign, row.step, row.user.user_id);
        let started = Instant::now();
        let result = self.transport.send(email, &stem, gate).await;
        match &result {
            Ok(()) => crate::telemetry::metrics::sent(started.elapsed(), Some(250)),
            // Not on the wire: nothing to time, no reply to count.
            Err(f) if matches!(f.kind, FailureKind::Late | FailureKind::Throttled) => {}
            Err(f) => crate::telemetry::metrics::sent(started.elapsed(), f.code),
        }
        match result {
            Ok(()) => {
                tracing::debug!(outbox_id = row.id, user_id = %row.user.user_id, campaign = %row.campaign, step = %row.step, "sent");
                let outcome = Outcome::Sent {
                    recipient: row.recipient.clone(),
                    template_digest: job.batch.templates.digest().to_string(),
                };
                (outcome, None)
            }
            // Nothing of it sent: as it was, due now, for a fresh claim.
            Err(failure) if failure.kind == FailureKind::Late => {
                tracing::info!(outbox_id = row.id, user_id = %row.user.user_id, campaign = %row.campaign, "claim about to lapse: handed back unsent");
                (
                    Outcome::HandedBack {
                        at: self.clock.now(),
                    },
                    Some(failure),
                )
            }
            // The relay refusing the session is the pass's fault, not the message's: said once
            // per change by whoever runs the pass (the daemon's loop, `run --once`), not once
            // per message in flight.
            Err(failure) if failure.kind == FailureKind::Refused => {
                tracing::debug!(
                    outbox_id = row.id, user_id = %row.user.user_id, campaign = %row.campaign, code = ?failure.code,
                    error = %crate::telemetry::scrub(&failure.detail), "not sent: the relay refuses the session"
                );
                let outcome = self.after_failure(row, self.clock.now(), &failure);
                (outcome, Some(failure))
            }
            Err(failure) => {
                tracing::warn!(
                    outbox_id = row.id, user_id = %row.user.user_id, campaign = %row.campaign, code = ?failure.code,
                    kind = ?failure.kind, error = %crate::telemetry::scrub(&failure.detail), "send failed"
                );
                let outcome = self.after_failure(row, self.clock.now(), &failure);
                (outcome, Some(failure))
            }
        }
    }

    /// Retry with exponential backoff and jitter, never past the deadline; 5xx fails at once.
    fn after_failure(&self, row: &Claimed, now: DateTime<Utc>, failure: &SendFailure) -> Outcome {
        let d = &self.settings.delivery;
        let error = failure.detail.clone();
        let code = failure.code;
        match failure.kind {
            // Not attempted: back in the queue for a later pass, attempt not counted.
            FailureKind::Throttled => {
                let at = now + Duration::seconds(60);
                return Outcome::HandedBack { at };
            }
            // The relay's fault, and nothing of the message was sent: as it was, due now (the
            // caller backs off as a whole).
            FailureKind::Refused => return Outcome::HandedBack { at: now },
            // The provider asked us to slow down: its domain waits, whatever the attempts.
            FailureKind::Deferred => {
                return Outcome::Deferred {
                    domain: hold::domain_of(&row.recipient),
                    reply: error,
                    backoff: hold::Backoff::of(&self.settings),
                }
            }
            _ => {}
        }
        if failure.kind == FailureKind::NoSuchRecipient {
            let recipient = row.recipient.clone();
            return Outcome::NoSuchRecipient {
                recipient,
                error,
                code,
            };
        }
        if failure.kind == FailureKind::Permanent {
            return Outcome::Failed { error, code };
        }
        if row.attempts >= i64::from(d.max_attempts) {
            let error = format!("gave up after {} attempts: {error}", row.attempts);
            return Outcome::Failed { error, code };
        }
        let exp = (row.attempts.max(1) - 1).min(30) as u32;
        let base = d
            .retry_base_seconds
            .saturating_mul(1u64 << exp)
            .min(d.retry_max_seconds) as f64;
        let jittered = base * rand::thread_rng().gen_range(0.75..1.25);
        let at = now + Duration::milliseconds((jittered * 1000.0) as i64);
        if row.expires_at.is_some_and(|e| at.timestamp() >= e) {
            let reason =
                format!("deadline would pass before the next attempt (last error: {error})");
            return Outcome::Expired { reason };
        }
        Outcome::Retry { at, error, code }
    }
}

/// How long after a claim its messages may still start: three quarters of the lease. The last
/// quarter is left for the body, the relay's reply and the commit of the outcome, all before
/// another process may take the row.
fn send_window(lease_seconds: u64) -> std::time::Duration {
    std::time::Duration::from_millis(lease_seconds * 750)
}

/// One claimed batch: its claim token and what its rows render with.
struct Batch {
    span: tracing::Span,
    token: String,
    /// No body of this batch starts after this: its claim may lapse soon after (see
    /// [`send_window`]). Later rows go back to the queue unsent.
    deadline: Instant,
    templates: Arc<TemplateSet>,
    reopened_at: String,
    sender: EnvelopeSender,
}

/// The envelope sender (MAIL FROM) of a pass's messages: see [`verp`].
#[derive(Clone)]
enum EnvelopeSender {
    /// The address of the `From` header (no `mail.bounce_address`).
    FromHeader,
    /// `mail.bounce_address`.
    Fixed(lettre::Address),
    /// `mail.bounce_address` with a token per message (`mail.verp`).
    Verp(lettre::Address, VerpKey),
}

impl EnvelopeSender {
    async fn of(
        settings: &Settings,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<EnvelopeSender, sqlx::Error> {
        Ok(match (&settings.mail.bounce_address, settings.mail.verp) {
            (None, _) => EnvelopeSender::FromHeader,
            (Some(a), false) => EnvelopeSender::Fixed(a.clone()),
            (Some(a), true) => EnvelopeSender::Verp(a.clone(), VerpKey::load(conn).await?),
        })
    }

    /// `email` with the envelope sender of outbox row `outbox_id`.
    fn apply(&self, email: Outgoing, outbox_id: i64) -> Outgoing {
        match self {
            EnvelopeSender::FromHeader => email,
            EnvelopeSender::Fixed(a) => email.with_sender(a.clone()),
            EnvelopeSender::Verp(a, key) => email.with_sender(key.sender(a, outbox_id)),
        }
    }
}

/// A claimed row on its way to a sender, with the rows merged into its email.
struct Job {
    batch: Arc<Batch>,
    /// The lead of a digest, or a row sent alone: its Message-ID is the email's.
    row: Claimed,
    /// The other rows of the digest, whose sections the email carries.
    merged: Vec<Claimed>,
}

impl Job {
    /// Every row the email stands for, with the outcome each one gets when the email has
    /// `outcome`: all share it, except a lead whose own section was dropped, which is skipped
    /// when the email goes without it.
    fn outcomes<'a>(
        &'a self,
        outcome: &'a Outcome,
    ) -> impl Iterator<Item = (&'a Claimed, Outcome)> {
        std::iter::once(&self.row)
            .chain(&self.merged)
            .map(move |row| match (outcome, row.section_dropped) {
                (Outcome::Sent { .. }, Some(reason)) => (
                    row,
                    Outcome::Skipped {
                        reason: format!("{reason} (its digest went without it)"),
                    },
                ),
                _ => (row, outcome.clone()),
            })
    }
}

/// The claimed rows grouped by email: each lead (or row sent alone) with the rows of its
/// digest, in claim order.
fn digests(rows: Vec<Claimed>) -> Vec<(Claimed, Vec<Claimed>)> {
    let mut out: Vec<(Claimed, Vec<Claimed>)> = Vec::with_capacity(rows.len());
    let mut followers: Vec<Claimed> = Vec::new();
    for row in rows {
        match row.digest_of {
            Some(lead) if lead != row.id => followers.push(row),
            _ => out.push((row, Vec::new())),
        }
    }
    for row in followers {
        let lead = row.digest_of;
        match out.iter_mut().find(|(l, _)| Some(l.id) == lead) {
            Some((_, merged)) => merged.push(row),
            // Its lead was not claimed with it (never happens: followers are claimed through
            // their lead): an email of its own rather than none.
            None => out.push((row, Vec::new())),
        }
    }
    out
}

/// A row's outcome on its way to the recorder.
struct Done {
    job: Job,
    outcome: Outcome,
    /// Opened once the outcome is committed (attempted messages only, see the senders).
    committed: Option<oneshot::Sender<()>>,
}

/// Why delivery stopped early.
#[derive(Debug, Clone)]
enum StopReason {
    /// The relay is unreachable or refuses the session: its reply, or what went wrong.
    Relay(String),
    /// The hourly quota is used up.
    Throttled,
    /// The circuit breaker tripped.
    Breaker,
    /// The outbox could not be read or written.
    Database,
}

/// Why delivery stopped early (the first reason wins), and the campaigns paused during the pass.
#[derive(Default)]
struct Stop {
    reason: std::sync::OnceLock<StopReason>,
    /// The campaigns paused now, as the recorder last read them (see [`recorder`]): their
    /// claimed messages not yet started go back to the queue.
    paused: std::sync::RwLock<std::collections::BTreeSet<String>>,
    /// Whether `paused` has any: the common case is read without the lock.
    any_paused: std::sync::atomic::AtomicBool,
    /// Whether a message was handed back for its paused campaign (its digests are regrouped
    /// after the pass).
    held: std::sync::atomic::AtomicBool,
}

impl Stop {
    fn set(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
    }
    /// Whether nothing more may be sent: a stop reason, or shutdown.
    fn halts(&self, shutdown: &CancellationToken) -> bool {
        self.reason.get().is_some() || shutdown.is_cancelled()
    }
    fn get(&self) -> Option<StopReason> {
        self.reason.get().cloned()
    }
    /// The campaigns paused now.
    fn set_paused(&self, names: std::collections::BTreeSet<String>) {
        use std::sync::atomic::Ordering;
        let any = !names.is_empty();
        *self.paused.write().unwrap_or_else(|e| e.into_inner()) = names;
        self.any_paused.store(any, Ordering::Release);
    }
    /// Whether `job`'s email carries a section of a campaign paused since it was claimed: then
    /// it goes back to the queue unsent (noted for [`Stop::held`]).
    fn holds(&self, job: &Job) -> bool {
        use std::sync::atomic::Ordering;
        if !self.any_paused.load(Ordering::Acquire) {
            return false;
        }
        let paused = self.paused.read().unwrap_or_else(|e| e.into_inner());
        let held = std::iter::once(&job.row)
            .chain(&job.merged)
            .any(|r| paused.contains(&r.campaign));
        if held {
            self.held.store(true, Ordering::Release);
        }
        held
    }
    /// The paused campaigns, when a message of theirs was handed back in this pass.
    fn held(&self) -> Vec<String> {
        use std::sync::atomic::Ordering;
        match self.held.load(Ordering::Acquire) {
            true => self
                .paused
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
            false => Vec::new(),
        }
    }
}

/// An identifier for this process: host name and pid.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "avvisi".into());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::send_window;
    use std::time::Duration;

    /// A claim's messages start only in the first three quarters of its lease: with the lease
    /// of the tests (10 s), the default one (300 s) and a long one, the window ends at exactly
    /// 3/4 of it, well before another process may take the rows (at the lease's end).
    #[test]
    fn messages_start_only_in_the_first_three_quarters_of_the_lease() {
        assert_eq!(send_window(10), Duration::from_millis(7_500));
        assert_eq!(send_window(300), Duration::from_secs(225));
        assert_eq!(send_window(3_600), Duration::from_secs(2_700));
        for lease in [10, 11, 60, 301, 86_400] {
            let window = send_window(lease);
            assert!(
                window < Duration::from_secs(lease),
                "lease {lease}: {window:?}"
            );
            assert_eq!(window * 4, Duration::from_secs(lease * 3), "lease {lease}");
        }
    }
}
