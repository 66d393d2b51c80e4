//! The recorder: the outcomes of a delivery pass written as they complete, grouped so that one
//! commit serves every connection waiting for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::outbox::{self, Outcome};
use super::{Done, Stop, StopReason, Tally, Worker};
use crate::store::Lane;
use crate::telemetry::progress::Progress;

/// Outcomes are written this many at most per transaction.
pub(super) const RECORD_CHUNK: usize = 256;

/// How long a commit waits for the senders it expects (see [`record_outcomes`]): a few round
/// trips to a fast relay; a slow relay's connections are not waited for.
const GROUP_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// How often, at most, the recorder reads which campaigns are paused (see [`Stop::holds`]): a
/// pause stops the sends of the messages claimed before it within a fraction of a batch. One
/// read of the few campaigns' rows, between commits.
const PAUSE_LOOK: std::time::Duration = std::time::Duration::from_millis(50);

/// Outcomes of attempted messages, whose senders wait for their commit.
fn gated(chunk: &[Done]) -> usize {
    chunk.iter().filter(|d| d.committed.is_some()).count()
}

/// The recorder: writes outcomes as they complete, whatever is waiting (up to [`RECORD_CHUNK`])
/// in one transaction per claim token, and counts them per campaign.
///
/// Group commit: the senders whose gates a commit opens each send a body at once and hand in
/// its outcome a round trip later. The next commit waits for them (at most [`GROUP_WAIT`]), so
/// that one commit serves every connection instead of one each: a commit, not the relay, is
/// what a sender waits for.
pub(super) async fn record_outcomes(
    worker: Arc<Worker>,
    lane: Lane,
    mut done: mpsc::Receiver<Done>,
    stop: Arc<Stop>,
    progress: Option<Progress>,
) -> Result<BTreeMap<String, Tally>, sqlx::Error> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut chunk = Vec::with_capacity(RECORD_CHUNK);
    // Gates the last commit opened: senders with a body on the wire now.
    let mut opened = 0;
    let mut looked = std::time::Instant::now();
    while done.recv_many(&mut chunk, RECORD_CHUNK).await > 0 {
        let until = tokio::time::Instant::now() + GROUP_WAIT;
        while gated(&chunk) < opened && chunk.len() < RECORD_CHUNK {
            let room = RECORD_CHUNK - chunk.len();
            let more = done.recv_many(&mut chunk, room);
            match tokio::time::timeout_at(until, more).await {
                Ok(n) if n > 0 => {}
                _ => break, // waited long enough (a slow relay), or no more senders
            }
        }
        opened = gated(&chunk);
        if let Some(p) = &progress {
            p.inc(chunk.len() as u64);
        }
        let mut by_token: BTreeMap<&str, Vec<(i64, Outcome)>> = BTreeMap::new();
        for Done { job, outcome, .. } in &chunk {
            // A digest's rows are recorded with its lead, in the same statement.
            for (row, outcome) in job.outcomes(outcome) {
                let tally = tallies.entry(row.campaign.clone()).or_default();
                match outcome {
                    Outcome::Sent { .. } => tally.sent += 1,
                    Outcome::Retry { .. } | Outcome::Deferred { .. } => tally.retrying += 1,
                    Outcome::Failed { .. } | Outcome::NoSuchRecipient { .. } => tally.failed += 1,
                    Outcome::Expired { .. } => tally.expired += 1,
                    Outcome::Skipped { .. } => tally.skipped += 1,
                    Outcome::HandedBack { .. } => {}
                }
                by_token
                    .entry(job.batch.token.as_str())
                    .or_default()
                    .push((row.id, outcome));
            }
        }
        for (token, outcomes) in by_token {
            let now = worker.clock.now();
            let recorded = match lane.conn().await {
                Ok(mut conn) => outbox::record(&mut conn, token, now, &outcomes).await,
                Err(e) => Err(e),
            };
            let held = match recorded {
                Ok(held) => held,
                Err(e) => {
                    // Stop sending; the unrecorded claims return to the queue with their lease.
                    stop.set(StopReason::Database);
                    return Err(e);
                }
            };
            if held < outcomes.len() as u64 {
                tracing::warn!(
                    lost = outcomes.len() as u64 - held,
                    "some claims expired before their outcome was recorded; another worker owns them now"
                );
            }
        }
        for done in chunk.drain(..) {
            if let Some(committed) = done.committed {
                let _ = committed.send(());
            }
        }
        if looked.elapsed() >= PAUSE_LOOK {
            looked = std::time::Instant::now();
            let paused = match lane.conn().await {
                Ok(mut conn) => outbox::paused_campaigns(&mut conn).await,
                Err(e) => Err(e),
            };
            match paused {
                Ok(paused) => stop.set_paused(paused),
                Err(e) => {
                    stop.set(StopReason::Database);
                    return Err(e);
                }
            }
        }
    }
    Ok(tallies)
}
