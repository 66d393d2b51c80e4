//! The way back: failed messages put back in the queue by an operator (`avvisi retry --failed`),
//! after a fault that failed them wrongly (a relay that refused everyone for an hour, a
//! misconfiguration since fixed).
//!
//! A message comes back as new: pending, due now, attempts reset; its failure moves to its
//! history, which `explain` shows. A message whose deadline has passed stays failed: retrying
//! never sends anything late. A finished campaign with messages back in the queue runs again;
//! a paused one stays paused, a cancelled one is left alone.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::campaign::lifecycle;

/// Which failed messages to put back.
#[derive(Debug, Clone, Default)]
pub struct RetryFilter {
    /// Only this campaign.
    pub campaign: Option<String>,
    /// Only messages the relay refused with this reply code (e.g. 535).
    pub reply: Option<u16>,
    /// Only messages that failed at or after this instant.
    pub since: Option<DateTime<Utc>>,
}

/// What a retry did (or, in a dry run, would do), per campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// (campaign, messages put back, messages left failed because their deadline has passed).
    pub per_campaign: Vec<(String, u64, u64)>,
}

impl RetryReport {
    /// Messages put back in all.
    pub fn retried(&self) -> u64 {
        self.per_campaign.iter().map(|(_, n, _)| n).sum()
    }
}

/// The failed messages matching `filter`: `$1` campaign, `$2` reply code, `$3` since.
const MATCHING: &str = "o.state = 'failed' AND c.state <> 'cancelled' \
     AND ($1 IS NULL OR c.name = $1) AND ($2 IS NULL OR o.smtp_code = $2) \
     AND ($3 IS NULL OR o.updated_at >= $3)";

/// Still before its deadline at `$4`.
const IN_TIME: &str = "(o.expires_at IS NULL OR o.expires_at > $4)";

/// Puts the failed messages matching `filter` back in the queue, due at `now`, on the caller's
/// connection (a savepoint when it is a transaction); with `dry_run` only counts them. Called by
/// `App::retry_failed`, which writes the audit row in the same transaction.
pub(crate) async fn retry_failed_on(
    conn: &mut sqlx::AnyConnection,
    filter: &RetryFilter,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<RetryReport, sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    let counts = format!(
        "SELECT c.name, SUM(CASE WHEN {IN_TIME} THEN 1 ELSE 0 END) AS in_time, \
            SUM(CASE WHEN {IN_TIME} THEN 0 ELSE 1 END) AS too_late \
         FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         WHERE {MATCHING} GROUP BY c.id, c.name ORDER BY c.id"
    );
    let mut report = RetryReport::default();
    for r in bound(&counts, filter, now).fetch_all(&mut *tx).await? {
        report.per_campaign.push((
            r.try_get("name")?,
            r.try_get::<i64, _>("in_time")? as u64,
            r.try_get::<i64, _>("too_late")? as u64,
        ));
    }
    if dry_run || report.retried() == 0 {
        tx.rollback().await?;
        return Ok(report);
    }
    let rows = format!(
        "SELECT o.id FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         WHERE {MATCHING} AND {IN_TIME}"
    );
    let history = format!(
        "INSERT INTO outbox_history (outbox_id, at, state, event, reason, smtp_code, attempts) \
         SELECT id, $4, state, 'retry --failed', reason, smtp_code, attempts FROM outbox \
         WHERE id IN ({rows})"
    );
    let back = format!(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $4, updated_at = $4, \
            reason = NULL, smtp_code = NULL, claim_token = NULL, lease_until = NULL \
         WHERE id IN ({rows})"
    );
    for sql in [history, back] {
        bound(&sql, filter, now).execute(&mut *tx).await?;
    }
    // A digest's rows back in the queue without their lead travel without it.
    crate::store::digest::repair_orphans(&mut tx, None).await?;
    lifecycle::run_again_when_pending(&mut tx, now).await?;
    tx.commit().await?;
    tracing::info!(
        retried = report.retried(),
        "failed messages put back in the queue"
    );
    Ok(report)
}

/// `sql` with the filter's parameters `$1`..`$4` bound.
fn bound<'q>(
    sql: &'q str,
    filter: &RetryFilter,
    now: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(filter.campaign.clone())
        .bind(filter.reply.map(i64::from))
        .bind(filter.since.map(|t| t.timestamp()))
        .bind(now.timestamp())
}
