//! The outbox counted: what `status`, `campaign list|show` and `--wait` print.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{CampaignState, Counts, Db, OutboxState, Step, UnknownState};

/// A campaign's messages by state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CampaignCounts {
    pub campaign: String,
    pub state: CampaignState,
    /// Why avvisi paused it itself (the circuit breaker).
    pub paused_reason: Option<String>,
    pub counts: Counts,
}

/// Counts per campaign (every campaign, even one with no rows yet), oldest campaign first.
pub(crate) async fn by_campaign(db: &Db) -> Result<Vec<CampaignCounts>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT c.name, c.state, o.state, COUNT(o.id), c.paused_reason, \
            SUM(CASE WHEN o.reason = 'suppressed' THEN 1 ELSE 0 END) FROM campaigns c \
         LEFT JOIN outbox o ON o.campaign_id = c.id \
         GROUP BY c.id, c.name, c.state, o.state, c.paused_reason ORDER BY c.id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out: Vec<CampaignCounts> = Vec::new();
    for r in rows {
        let name: String = r.try_get(0)?;
        if out.last().is_none_or(|c| c.campaign != name) {
            let state: String = r.try_get(1)?;
            out.push(CampaignCounts {
                campaign: name,
                state: state.parse().map_err(UnknownState::into_sqlx)?,
                paused_reason: r.try_get(4)?,
                counts: Counts::default(),
            });
        }
        let entry = out.last_mut().expect("pushed above");
        if let Some(state) = r.try_get::<Option<String>, _>(2)? {
            let state: OutboxState = state.parse().map_err(UnknownState::into_sqlx)?;
            entry.counts.add(state, r.try_get::<i64, _>(3)? as u64);
            if state == OutboxState::Skipped {
                entry.counts.suppressed += r.try_get::<Option<i64>, _>(5)?.unwrap_or(0) as u64;
            }
        }
    }
    Ok(out)
}

/// The counts of campaign `campaign_id`.
pub(crate) async fn of_campaign(db: &Db, campaign_id: i64) -> Result<Counts, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT state, COUNT(*) AS n, SUM(CASE WHEN reason = 'suppressed' THEN 1 ELSE 0 END) AS s \
         FROM outbox WHERE campaign_id = $1 GROUP BY state",
    )
    .bind(campaign_id)
    .fetch_all(db.pool())
    .await?;
    let mut counts = Counts::default();
    for r in rows {
        let state: OutboxState = r
            .try_get::<String, _>("state")?
            .parse()
            .map_err(UnknownState::into_sqlx)?;
        counts.add(state, r.try_get::<i64, _>("n")? as u64);
        if state == OutboxState::Skipped {
            counts.suppressed += r.try_get::<Option<i64>, _>("s")?.unwrap_or(0) as u64;
        }
    }
    Ok(counts)
}

/// The oldest pending message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct OldestPending {
    pub campaign: String,
    pub step: Step,
    pub planned_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The oldest pending message, if any.
pub(crate) async fn oldest_pending(db: &Db) -> Result<Option<OldestPending>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT c.name, o.step, o.created_at, o.next_attempt_at FROM outbox o \
         JOIN campaigns c ON c.id = o.campaign_id WHERE o.state = 'pending' \
         ORDER BY o.created_at, o.id LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok(OldestPending {
            campaign: r.try_get(0)?,
            step: r
                .try_get::<String, _>(1)?
                .parse()
                .map_err(UnknownState::into_sqlx)?,
            planned_at: super::timestamp(r.try_get(2)?),
            next_attempt_at: super::timestamp(r.try_get(3)?),
        })
    })
    .transpose()
}

/// Messages waiting for a later attempt, by the time it falls due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextAttempts {
    pub at: Option<DateTime<Utc>>,
    pub messages: u64,
}

/// The next `limit` due times of pending messages, soonest first.
pub async fn next_attempts(db: &Db, limit: u32) -> Result<Vec<NextAttempts>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT next_attempt_at, COUNT(*) FROM outbox WHERE state = 'pending' \
         GROUP BY next_attempt_at ORDER BY next_attempt_at LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(NextAttempts {
                at: super::timestamp(r.try_get(0)?),
                messages: r.try_get::<i64, _>(1)? as u64,
            })
        })
        .collect()
}

/// Messages whose last attempt the relay refused, grouped by its reply code, as `mailq` shows
/// deferral reasons. Failed and retrying messages count; a reply text is one of the group's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorGroup {
    /// The relay's reply code; `None` for errors without one (a dropped connection, a template).
    pub code: Option<i64>,
    pub failed: u64,
    pub retrying: u64,
    /// The latest reply text of the group (personal data masked by the caller before printing).
    pub example: String,
    pub last_at: Option<DateTime<Utc>>,
}

/// The error groups, the most frequent first.
pub async fn errors_by_reply(db: &Db) -> Result<Vec<ErrorGroup>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT smtp_code, SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), \
            SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), MAX(reason), MAX(updated_at) \
         FROM outbox WHERE reason IS NOT NULL AND state IN ('failed', 'pending') \
         GROUP BY smtp_code ORDER BY COUNT(*) DESC",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ErrorGroup {
                code: r.try_get(0)?,
                failed: r.try_get::<i64, _>(1)? as u64,
                retrying: r.try_get::<i64, _>(2)? as u64,
                example: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                last_at: super::timestamp(r.try_get(4)?),
            })
        })
        .collect()
}

/// One planned message of a campaign, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub user_id: String,
    pub recipient: String,
    pub step: Step,
    pub state: OutboxState,
    pub reason: Option<String>,
    pub smtp_code: Option<i64>,
    pub attempts: i64,
    pub planned_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub message_id: String,
}

/// Every planned message of campaign `campaign_id`, streamed in planning order: a million rows
/// in flat memory.
pub fn report_rows(
    db: &Db,
    campaign_id: i64,
) -> impl futures::Stream<Item = Result<ReportRow, sqlx::Error>> + '_ {
    use futures::StreamExt;
    sqlx::query(
        "SELECT user_id, recipient, step, state, reason, smtp_code, attempts, created_at, sent_at, \
            updated_at, message_id FROM outbox WHERE campaign_id = $1 ORDER BY id",
    )
    .bind(campaign_id)
    .fetch(db.pool())
    .map(|row| {
        let r = row?;
        let parse = |i: usize| r.try_get::<String, _>(i);
        Ok(ReportRow {
            user_id: r.try_get(0)?,
            recipient: r.try_get(1)?,
            step: parse(2)?.parse().map_err(UnknownState::into_sqlx)?,
            state: parse(3)?.parse().map_err(UnknownState::into_sqlx)?,
            reason: r.try_get(4)?,
            smtp_code: r.try_get(5)?,
            attempts: r.try_get(6)?,
            planned_at: super::timestamp(r.try_get(7)?),
            sent_at: super::timestamp(r.try_get(8)?),
            updated_at: super::timestamp(r.try_get(9)?),
            message_id: r.try_get(10)?,
        })
    })
}

/// Messages sent in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HourlySends {
    /// The start of the hour (UTC).
    pub hour: DateTime<Utc>,
    pub sent: u64,
}

/// Messages sent per hour from `since` to `until`, of one campaign or of all; hours with no
/// sends are left out.
pub async fn sends_per_hour(
    db: &Db,
    campaign_id: Option<i64>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<HourlySends>, sqlx::Error> {
    // Integer division on both backends: sent_at is Unix seconds.
    let rows = sqlx::query(
        "SELECT sent_at / 3600, COUNT(*) FROM outbox \
         WHERE state = 'sent' AND sent_at >= $1 AND sent_at < $2 \
            AND ($3 < 0 OR campaign_id = $3) \
         GROUP BY sent_at / 3600 ORDER BY 1",
    )
    .bind(since.timestamp())
    .bind(until.timestamp())
    .bind(campaign_id.unwrap_or(-1))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let hour: i64 = r.try_get(0)?;
            Ok(HourlySends {
                hour: DateTime::from_timestamp(hour * 3600, 0).unwrap_or_default(),
                sent: r.try_get::<i64, _>(1)? as u64,
            })
        })
        .collect()
}

/// The first and last send of campaign `campaign_id`, if it sent anything.
pub async fn send_span(
    db: &Db,
    campaign_id: i64,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT MIN(sent_at), MAX(sent_at) FROM outbox WHERE campaign_id = $1 AND state = 'sent'",
    )
    .bind(campaign_id)
    .fetch_one(db.pool())
    .await?;
    let first = super::timestamp(row.try_get(0)?);
    let last = super::timestamp(row.try_get(1)?);
    Ok(first.zip(last))
}

/// Messages due at `now` (pending, next attempt reached): what a delivery pass has ahead of it,
/// less what paused campaigns and held reminders keep back.
pub async fn due_now(db: &Db, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1",
    )
    .bind(now.timestamp())
    .fetch_one(db.pool())
    .await?;
    Ok(n as u64)
}
