//! The outbox counted: what `status`, `campaign list|show`, `--wait`, the status page, `/metrics`
//! and `/readyz` read.
//!
//! Counts come from `outbox_counts`, which triggers keep in the statement that changes a row
//! (see the migration `0014_outbox_counts.sql`): a few rows per campaign, never a scan of the
//! outbox. On PostgreSQL each statement appends its change, so readers sum and [`fold`] puts
//! the rows together now and then. What is read from the outbox itself goes through an index
//! and stops early (the first of the queue, the next due times, at most [`NEXT_ATTEMPTS_READ`]
//! rows).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{CampaignState, Counts, Db, OutboxState, UnknownState};
use crate::config::Step;

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
        "SELECT c.name, c.state AS campaign_state, c.paused_reason, k.state, k.n, k.suppressed \
         FROM campaigns c LEFT JOIN (SELECT campaign_id, state, CAST(SUM(n) AS BIGINT) AS n, \
                CAST(SUM(n * suppressed) AS BIGINT) AS suppressed FROM outbox_counts \
             GROUP BY campaign_id, state) k ON k.campaign_id = c.id \
         ORDER BY c.id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out: Vec<CampaignCounts> = Vec::new();
    for r in rows {
        let name: String = r.try_get("name")?;
        if out.last().is_none_or(|c| c.campaign != name) {
            let state: String = r.try_get("campaign_state")?;
            out.push(CampaignCounts {
                campaign: name,
                state: state.parse().map_err(UnknownState::into_sqlx)?,
                paused_reason: r.try_get("paused_reason")?,
                counts: Counts::default(),
            });
        }
        add_counts(&mut out.last_mut().expect("pushed above").counts, &r)?;
    }
    Ok(out)
}

/// The counts of campaign `campaign_id`.
pub(crate) async fn of_campaign(db: &Db, campaign_id: i64) -> Result<Counts, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT state, CAST(SUM(n) AS BIGINT) AS n, \
            CAST(SUM(n * suppressed) AS BIGINT) AS suppressed FROM outbox_counts \
         WHERE campaign_id = $1 GROUP BY state",
    )
    .bind(campaign_id)
    .fetch_all(db.pool())
    .await?;
    let mut counts = Counts::default();
    for r in rows {
        add_counts(&mut counts, &r)?;
    }
    Ok(counts)
}

/// Adds one (state, n, suppressed) row of `outbox_counts`' sums; a NULL state (a campaign with
/// no rows) adds nothing.
fn add_counts(counts: &mut Counts, r: &sqlx::any::AnyRow) -> Result<(), sqlx::Error> {
    let Some(state) = r.try_get::<Option<String>, _>("state")? else {
        return Ok(());
    };
    let state: OutboxState = state.parse().map_err(UnknownState::into_sqlx)?;
    let n = |column| Ok::<_, sqlx::Error>(r.try_get::<Option<i64>, _>(column)?.unwrap_or(0) as u64);
    counts.add(state, n("n")?);
    if state == OutboxState::Skipped {
        counts.suppressed += n("suppressed")?;
    }
    Ok(())
}

/// Puts the appended changes of `outbox_counts` together, one row per key (PostgreSQL; SQLite
/// keeps one row per key already). One statement: a change appended meanwhile by another
/// transaction stays as it is, and two folds at once cannot count a change twice (the second
/// finds the rows deleted). Returns the rows there were.
pub(crate) async fn fold(
    conn: &mut sqlx::AnyConnection,
    backend: super::Backend,
) -> Result<u64, sqlx::Error> {
    if backend != super::Backend::Postgres {
        return Ok(0);
    }
    Ok(sqlx::query(
        "WITH gone AS (DELETE FROM outbox_counts RETURNING *) \
         INSERT INTO outbox_counts \
         SELECT campaign_id, state, suppressed, error_code, sent_hour, SUM(n), MAX(last_at), \
            (array_agg(last_reason ORDER BY last_at DESC NULLS LAST))[1] \
         FROM gone GROUP BY 1, 2, 3, 4, 5 HAVING SUM(n) <> 0",
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// A large insert into the outbox on SQLite, counted once at its end instead of row by row.
///
/// SQLite has row triggers only: the counts' insert trigger runs an upsert for every row, which
/// at the mission's size was most of the cost of a campaign's first planning beyond writing
/// its rows (`docs/benchmarks.md`). [`BulkInsert::begin`] sets that trigger aside inside the
/// caller's transaction, which holds the write lock; [`BulkInsert::finish`] counts the rows
/// written since (by id: they are the rows after the last id before) and puts the trigger back,
/// still inside the transaction. Schema changes are transactional in SQLite: readers keep
/// seeing the trigger, and a rollback puts it back. Only inserts may run in between: an update
/// of a row not yet counted would take it out of a count it is not in yet.
pub(crate) struct BulkInsert {
    /// The trigger's own `CREATE TRIGGER`, as stored, to put it back as it was.
    trigger: String,
    /// The last id before the insert.
    after_id: i64,
}

/// The name of the counts' insert trigger (the migrations `0014_outbox_counts.sql`, and
/// `0027_outbox_state_check.sql` on SQLite).
const INSERT_TRIGGER: &str = "outbox_counts_insert";

/// The counts' key of an outbox row, as the triggers of `0027_outbox_state_check.sql` write it out
/// (SQLite has no functions in SQL): campaign, state, suppressed, error code, hour sent.
const KEY: &str = "campaign_id, state, \
    CASE WHEN state = 'skipped' AND reason = 'suppressed' THEN 1 ELSE 0 END, \
    CASE WHEN (state = 'pending' OR state = 'failed') AND reason IS NOT NULL THEN COALESCE(smtp_code, 0) ELSE -1 END, \
    CASE WHEN state = 'sent' THEN COALESCE(sent_at, 0) / 3600 ELSE -1 END";

impl BulkInsert {
    /// Sets the counts' insert trigger aside; `None` when there is none to set aside.
    pub(crate) async fn begin(conn: &mut sqlx::AnyConnection) -> Result<Option<Self>, sqlx::Error> {
        let trigger: Option<String> = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = $1",
        )
        .bind(INSERT_TRIGGER)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(trigger) = trigger else {
            return Ok(None);
        };
        let after_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM outbox")
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query(&format!("DROP TRIGGER {INSERT_TRIGGER}"))
            .execute(&mut *conn)
            .await?;
        Ok(Some(BulkInsert { trigger, after_id }))
    }

    /// Counts the rows written since [`BulkInsert::begin`] and puts the trigger back.
    /// Almost every planned row is pending with no reason, one key per campaign, counted
    /// without sorting; only when some are not (skipped as suppressed, say) are the others
    /// grouped by their whole key. Rows the statement itself wrote pending with no reason are
    /// counted as written, without reading them back (at the mission's size, reading back the
    /// advice's 840,000 rows took a tenth of the pass: `docs/benchmarks.md`).
    pub(crate) async fn finish(
        self,
        conn: &mut sqlx::AnyConnection,
        written: Written,
    ) -> Result<(), sqlx::Error> {
        let inserted = match written {
            Written::AllPending { campaign, rows } => {
                if rows > 0 {
                    add_pending(conn, campaign, rows as i64).await?;
                }
                sqlx::query(&self.trigger).execute(&mut *conn).await?;
                return Ok(());
            }
            Written::Any { rows } => rows,
        };
        let plain = sqlx::query(
            "SELECT campaign_id, COUNT(*) AS n FROM outbox \
             WHERE id > $1 AND state = 'pending' AND reason IS NULL GROUP BY campaign_id",
        )
        .bind(self.after_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut counted = 0;
        for row in plain {
            let n: i64 = row.try_get("n")?;
            add_pending(conn, row.try_get("campaign_id")?, n).await?;
            counted += n as u64;
        }
        if counted == inserted {
            sqlx::query(&self.trigger).execute(&mut *conn).await?;
            return Ok(());
        }
        // The reason of the group's latest error goes with it, as the trigger keeps it: SQLite
        // takes a bare column from the row of the `MAX`.
        let errors = "(state = 'pending' OR state = 'failed') AND reason IS NOT NULL";
        sqlx::query(&format!(
            "INSERT INTO outbox_counts \
             SELECT {KEY}, COUNT(*), MAX(CASE WHEN {errors} THEN updated_at END), \
                CASE WHEN {errors} THEN reason END FROM outbox \
             WHERE id > $1 AND NOT (state = 'pending' AND reason IS NULL) GROUP BY 1, 2, 3, 4, 5 \
             ON CONFLICT (campaign_id, state, suppressed, error_code, sent_hour) \
             DO UPDATE SET n = n + excluded.n, \
                last_reason = CASE WHEN excluded.last_at >= COALESCE(last_at, 0) \
                    THEN excluded.last_reason ELSE last_reason END, \
                last_at = MAX(COALESCE(last_at, 0), COALESCE(excluded.last_at, 0))"
        ))
        .bind(self.after_id)
        .execute(&mut *conn)
        .await?;
        sqlx::query(&self.trigger).execute(&mut *conn).await?;
        Ok(())
    }
}

/// What a [`BulkInsert`] wrote, as its statement knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Written {
    /// `rows` rows of `campaign`, every one written pending with no reason (the statement writes
    /// those values, not expressions that could be anything else).
    AllPending { campaign: i64, rows: u64 },
    /// `rows` rows of any state: counted by reading them back.
    Any { rows: u64 },
}

/// Adds `n` rows pending with no reason to `campaign`'s count.
async fn add_pending(
    conn: &mut sqlx::AnyConnection,
    campaign: i64,
    n: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox_counts VALUES ($1, 'pending', 0, -1, -1, $2, NULL, NULL) \
         ON CONFLICT (campaign_id, state, suppressed, error_code, sent_hour) \
         DO UPDATE SET n = n + excluded.n",
    )
    .bind(campaign)
    .bind(n)
    .execute(conn)
    .await?;
    Ok(())
}

/// The oldest pending message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct OldestPending {
    pub campaign: String,
    pub step: Step,
    pub planned_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The pending message first in the queue (the earliest due, then the first planned), if any:
/// read from the queue's index, not by sorting the outbox.
pub(crate) async fn oldest_pending(db: &Db) -> Result<Option<OldestPending>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT c.name, o.step, o.created_at, o.next_attempt_at FROM outbox o \
         JOIN campaigns c ON c.id = o.campaign_id WHERE o.state = 'pending' \
         ORDER BY o.next_attempt_at, o.id LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok(OldestPending {
            campaign: r.try_get("name")?,
            step: r
                .try_get::<String, _>("step")?
                .parse()
                .map_err(UnknownState::into_sqlx)?,
            planned_at: super::timestamp(r.try_get("created_at")?),
            next_attempt_at: super::timestamp(r.try_get("next_attempt_at")?),
        })
    })
    .transpose()
}

/// Messages waiting for a later attempt, by the time it falls due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextAttempts {
    pub at: Option<DateTime<Utc>>,
    pub messages: u64,
    /// The count stopped at the reading bound: at least `messages`.
    pub at_least: bool,
}

/// Pending rows [`next_attempts`] reads at most, in queue order: the first due times of a
/// million-row queue without reading it all.
pub const NEXT_ATTEMPTS_READ: u32 = 10_000;

/// The next `limit` due times of pending messages, soonest first, counted over at most
/// [`NEXT_ATTEMPTS_READ`] rows of the queue's index (the last group then says "at least").
pub async fn next_attempts(db: &Db, limit: u32) -> Result<Vec<NextAttempts>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT next_attempt_at, COUNT(*) AS n FROM (SELECT next_attempt_at FROM outbox \
            WHERE state = 'pending' ORDER BY next_attempt_at LIMIT $2) q \
         GROUP BY next_attempt_at ORDER BY next_attempt_at LIMIT $1",
    )
    .bind(i64::from(limit))
    .bind(i64::from(NEXT_ATTEMPTS_READ))
    .fetch_all(db.pool())
    .await?;
    let read: i64 = rows
        .iter()
        .map(|r| r.try_get::<i64, _>("n"))
        .sum::<Result<_, _>>()?;
    let last = rows.len().saturating_sub(1);
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(NextAttempts {
                at: super::timestamp(r.try_get("next_attempt_at")?),
                messages: r.try_get::<i64, _>("n")? as u64,
                at_least: i == last && read >= i64::from(NEXT_ATTEMPTS_READ),
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
    // The group's reply text: the one of its latest change (`last_reason` of the greatest
    // `last_at`; PostgreSQL may hold several rows of a key until they are folded).
    let rows = sqlx::query(
        "SELECT error_code, \
            CAST(SUM(CASE WHEN state = 'failed' THEN n ELSE 0 END) AS BIGINT) AS failed, \
            CAST(SUM(CASE WHEN state = 'pending' THEN n ELSE 0 END) AS BIGINT) AS retrying, \
            MAX(last_at) AS last_at, \
            (SELECT k.last_reason FROM outbox_counts k WHERE k.error_code = g.error_code \
                AND k.last_at IS NOT NULL ORDER BY k.last_at DESC LIMIT 1) AS example \
         FROM outbox_counts g WHERE error_code >= 0 GROUP BY error_code \
         HAVING SUM(n) > 0 ORDER BY SUM(n) DESC, error_code",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let code: i64 = r.try_get("error_code")?;
            Ok(ErrorGroup {
                code: (code > 0).then_some(code),
                failed: r.try_get::<i64, _>("failed")? as u64,
                retrying: r.try_get::<i64, _>("retrying")? as u64,
                example: r
                    .try_get::<Option<String>, _>("example")?
                    .unwrap_or_default(),
                last_at: super::timestamp(r.try_get("last_at")?),
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
        let parse = |column: &str| r.try_get::<String, _>(column);
        Ok(ReportRow {
            user_id: r.try_get("user_id")?,
            recipient: r.try_get("recipient")?,
            step: parse("step")?.parse().map_err(UnknownState::into_sqlx)?,
            state: parse("state")?.parse().map_err(UnknownState::into_sqlx)?,
            reason: r.try_get("reason")?,
            smtp_code: r.try_get("smtp_code")?,
            attempts: r.try_get("attempts")?,
            planned_at: super::timestamp(r.try_get("created_at")?),
            sent_at: super::timestamp(r.try_get("sent_at")?),
            updated_at: super::timestamp(r.try_get("updated_at")?),
            message_id: r.try_get("message_id")?,
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
    // Hours as Unix seconds / 3600, as the counts keep them; an hour counts when it started
    // in the range (with `since` on an hour, as the callers give it, the same thing).
    let rows = sqlx::query(
        "SELECT sent_hour, CAST(SUM(n) AS BIGINT) AS n FROM outbox_counts \
         WHERE state = 'sent' AND sent_hour >= $1 AND sent_hour * 3600 < $2 \
            AND ($3 < 0 OR campaign_id = $3) \
         GROUP BY sent_hour HAVING SUM(n) > 0 ORDER BY 1",
    )
    .bind(since.timestamp().div_euclid(3600))
    .bind(until.timestamp())
    .bind(campaign_id.unwrap_or(-1))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let hour: i64 = r.try_get("sent_hour")?;
            Ok(HourlySends {
                hour: DateTime::from_timestamp(hour * 3600, 0).unwrap_or_default(),
                sent: r.try_get::<i64, _>("n")? as u64,
            })
        })
        .collect()
}

/// The hours of the first and last send of campaign `campaign_id` (their starts), if it sent
/// anything.
pub async fn send_span(
    db: &Db,
    campaign_id: i64,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT MIN(sent_hour) * 3600 AS first, MAX(sent_hour) * 3600 AS last FROM \
            (SELECT sent_hour FROM outbox_counts WHERE campaign_id = $1 AND state = 'sent' \
             GROUP BY sent_hour HAVING SUM(n) > 0) h",
    )
    .bind(campaign_id)
    .fetch_one(db.pool())
    .await?;
    let first = super::timestamp(row.try_get("first")?);
    let last = super::timestamp(row.try_get("last")?);
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
