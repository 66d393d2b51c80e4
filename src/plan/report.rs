//! `avvisi plan`: what a planner tick plans, per campaign and step, and how it compares with the
//! last tick that planned something. With `--dry-run` the whole pass runs inside one transaction
//! on one connection, the report is read inside it, and the transaction is rolled back: the
//! database is left as it was (on PostgreSQL the id sequences advance, as sequences do; ids are
//! never reused anyway).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AnyConnection, Connection, Row};
use tracing::Instrument;

use super::{pass, Pass, Target, Write};
use crate::config::Step;
use crate::store::Db;

/// How many user ids a step's report quotes.
const SAMPLES: i64 = 5;

/// What a planning pass planned (or, in a dry run, would plan).
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// The instant planned for.
    pub at: DateTime<Utc>,
    /// True when nothing was written.
    pub dry_run: bool,
    /// Every campaign step due at `at`, in the planner's order (rows may be 0).
    pub steps: Vec<StepReport>,
    /// The emails the new rows make: digests, and rows going alone.
    pub emails: u64,
    /// Pending rows expired because their deadline passed.
    pub expired: u64,
    /// Older steps still pending, skipped as superseded by the step planned now.
    pub superseded: u64,
    /// Lapses recorded now (the first pass after the maintenance start).
    pub lapses_recorded: u64,
    /// Set when reminders are held: the snapshot is too old.
    pub snapshot_warning: Option<String>,
    /// The last pass that planned rows before this one, if any.
    pub last_tick: Option<LastTick>,
    /// Per campaign and step, the rows of the last tick against this pass's, where they differ.
    pub changes: Vec<Change>,
}

/// One campaign step of the pass.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub campaign: String,
    pub step: Step,
    /// Outbox rows planned.
    pub rows: u64,
    /// Of those, planned as skipped (a suppressed address, a step sent only inside a digest).
    pub skipped: u64,
    /// Daily digests these rows joined.
    pub digests: u64,
    /// Sections of those digests, every campaign's.
    pub sections: u64,
    /// A few of the users, by user id.
    pub samples: Vec<String>,
}

/// The last pass that planned rows: its rows share `created_at`, the pass's instant.
#[derive(Debug, Clone, Serialize)]
pub struct LastTick {
    pub at: DateTime<Utc>,
    pub steps: Vec<TickRows>,
}

/// Rows one campaign step got in a tick.
#[derive(Debug, Clone, Serialize)]
pub struct TickRows {
    pub campaign: String,
    pub step: Step,
    pub rows: u64,
}

/// One campaign step whose row count differs from the last tick's.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub campaign: String,
    pub step: Step,
    /// Rows the last tick planned.
    pub last: u64,
    /// Rows this pass plans.
    pub now: u64,
}

/// Runs a planner pass at `now` and reports what it planned. With `Write::DryRun` the pass runs
/// in a transaction that is rolled back, and nothing is written; with `Write::Commit` it plans
/// for real, as a planner tick does (nothing is delivered).
pub(crate) async fn plan_with_report(
    db: &Db,
    target: &Target<'_>,
    write: Write,
) -> Result<PlanReport, sqlx::Error> {
    let now = target.now;
    let mut conn = db.pool().acquire().await?;
    match write {
        Write::DryRun => {
            let mut tx = conn.begin().await?;
            let before = Before::read(&mut tx, now).await?;
            // A span of its own: its log lines ("planned", "rows merged") are not a real tick's.
            let outcome = pass(&mut tx, target, write)
                .instrument(tracing::info_span!("plan_dry_run"))
                .await?;
            let report = before.report(&mut tx, outcome, now, true).await;
            tx.rollback().await?;
            report
        }
        Write::Commit => {
            let before = Before::read(&mut conn, now).await?;
            let outcome = pass(&mut conn, target, write).await?;
            before.report(&mut conn, outcome, now, false).await
        }
    }
}

/// What the outbox held before the pass: where its rows end, and the last tick.
struct Before {
    /// The highest outbox id: the pass's rows come after it.
    max_id: i64,
    last_tick: Option<LastTick>,
}

impl Before {
    async fn read(conn: &mut AnyConnection, now: DateTime<Utc>) -> Result<Before, sqlx::Error> {
        let max_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM outbox")
            .fetch_one(&mut *conn)
            .await?;
        let at: Option<i64> =
            sqlx::query_scalar("SELECT MAX(created_at) FROM outbox WHERE created_at <= $1")
                .bind(now.timestamp())
                .fetch_one(&mut *conn)
                .await?;
        let last_tick = match crate::store::timestamp(at) {
            None => None,
            Some(at) => {
                let rows = sqlx::query(
                    "SELECT c.name AS campaign, o.step, COUNT(*) AS n FROM outbox o \
                     JOIN campaigns c ON c.id = o.campaign_id \
                     WHERE o.created_at = $1 GROUP BY c.id, c.name, o.step ORDER BY c.id, o.step",
                )
                .bind(at.timestamp())
                .fetch_all(&mut *conn)
                .await?;
                let mut steps = Vec::with_capacity(rows.len());
                for r in &rows {
                    steps.push(TickRows {
                        campaign: r.try_get("campaign")?,
                        step: parse_step(r.try_get("step")?)?,
                        rows: r.try_get::<i64, _>("n")? as u64,
                    });
                }
                Some(LastTick { at, steps })
            }
        };
        Ok(Before { max_id, last_tick })
    }

    /// Reads what the pass's rows are (inside the dry run's transaction, before its rollback).
    async fn report(
        self,
        conn: &mut AnyConnection,
        outcome: Pass,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<PlanReport, sqlx::Error> {
        // The pass's rows: after the highest id before it, and stamped with its instant.
        let new_rows = "o.id > $1 AND o.created_at = $2";
        let mut steps = Vec::with_capacity(outcome.planned.len());
        for p in &outcome.planned {
            let mut step = StepReport {
                campaign: p.campaign.clone(),
                step: p.step,
                rows: p.rows,
                skipped: 0,
                digests: 0,
                sections: 0,
                samples: Vec::new(),
            };
            if p.rows > 0 {
                let of_step = format!(
                    "FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
                     WHERE {new_rows} AND c.name = $3 AND o.step = $4"
                );
                let counts = sqlx::query(&format!(
                    "SELECT COALESCE(SUM(CASE WHEN o.state = 'skipped' THEN 1 ELSE 0 END), 0) AS skipped, \
                        COUNT(DISTINCT o.digest_of) AS digests {of_step}"
                ))
                .bind(self.max_id)
                .bind(now.timestamp())
                .bind(&p.campaign)
                .bind(p.step.to_string())
                .fetch_one(&mut *conn)
                .await?;
                step.skipped = counts.try_get::<i64, _>("skipped")? as u64;
                step.digests = counts.try_get::<i64, _>("digests")? as u64;
                // One row of this step per digest (one person's), so the digests' sizes add up.
                step.sections = sqlx::query_scalar::<_, i64>(&format!(
                    "SELECT COUNT(*) FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
                     JOIN outbox m ON m.digest_of = o.digest_of \
                     WHERE {new_rows} AND c.name = $3 AND o.step = $4 \
                       AND o.digest_of IS NOT NULL AND m.state = 'pending'"
                ))
                .bind(self.max_id)
                .bind(now.timestamp())
                .bind(&p.campaign)
                .bind(p.step.to_string())
                .fetch_one(&mut *conn)
                .await? as u64;
                step.samples = sqlx::query_scalar(&format!(
                    "SELECT o.user_id {of_step} ORDER BY o.user_id LIMIT {SAMPLES}"
                ))
                .bind(self.max_id)
                .bind(now.timestamp())
                .bind(&p.campaign)
                .bind(p.step.to_string())
                .fetch_all(&mut *conn)
                .await?;
            }
            steps.push(step);
        }
        // Each digest is one email, each row going alone another.
        let emails: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(DISTINCT COALESCE(o.digest_of, -o.id)) FROM outbox o \
             WHERE {new_rows} AND o.state = 'pending'"
        ))
        .bind(self.max_id)
        .bind(now.timestamp())
        .fetch_one(&mut *conn)
        .await?;
        let changes = changes(self.last_tick.as_ref(), &steps);
        Ok(PlanReport {
            at: now,
            dry_run,
            steps,
            emails: emails as u64,
            expired: outcome.expired,
            superseded: outcome.superseded,
            lapses_recorded: outcome.lapses_recorded,
            snapshot_warning: outcome.freshness.and_then(|f| f.warning(now)),
            last_tick: self.last_tick,
            changes,
        })
    }
}

/// The campaign steps whose rows differ between the last tick and this pass, the last tick's
/// first.
fn changes(last: Option<&LastTick>, steps: &[StepReport]) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for t in last.map(|l| l.steps.as_slice()).unwrap_or_default() {
        let now = steps
            .iter()
            .find(|s| s.campaign == t.campaign && s.step == t.step)
            .map_or(0, |s| s.rows);
        out.push(Change {
            campaign: t.campaign.clone(),
            step: t.step,
            last: t.rows,
            now,
        });
    }
    for s in steps {
        if !out
            .iter()
            .any(|c| c.campaign == s.campaign && c.step == s.step)
        {
            out.push(Change {
                campaign: s.campaign.clone(),
                step: s.step,
                last: 0,
                now: s.rows,
            });
        }
    }
    out.retain(|c| c.last != c.now);
    out
}

fn parse_step(s: String) -> Result<Step, sqlx::Error> {
    s.parse().map_err(crate::store::UnknownState::into_sqlx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_what_differs_from_the_last_tick() {
        let last = LastTick {
            at: Utc::now(),
            steps: vec![
                TickRows {
                    campaign: "a".into(),
                    step: Step::First,
                    rows: 6,
                },
                TickRows {
                    campaign: "b".into(),
                    step: Step::First,
                    rows: 2,
                },
            ],
        };
        let step = |campaign: &str, step, rows| StepReport {
            campaign: campaign.into(),
            step,
            rows,
            skipped: 0,
            digests: 0,
            sections: 0,
            samples: Vec::new(),
        };
        let steps = vec![step("a", Step::DaysBefore(3), 5), step("b", Step::First, 2)];
        let c: Vec<(String, Step, u64, u64)> = changes(Some(&last), &steps)
            .into_iter()
            .map(|c| (c.campaign, c.step, c.last, c.now))
            .collect();
        assert_eq!(
            c,
            vec![
                ("a".into(), Step::First, 6, 0),
                ("a".into(), Step::DaysBefore(3), 0, 5),
            ]
        );
    }
}
