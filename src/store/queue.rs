//! The outbox counted: what `status`, `campaign list|show` and `--wait` print.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{CampaignState, Counts, Db, OutboxState, Step, UnknownState};

/// A campaign's messages by state.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        "SELECT c.name, c.state, o.state, COUNT(o.id), c.paused_reason FROM campaigns c \
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
        }
    }
    Ok(out)
}

/// The counts of campaign `campaign_id`.
pub(crate) async fn of_campaign(db: &Db, campaign_id: i64) -> Result<Counts, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT state, COUNT(*) AS n FROM outbox WHERE campaign_id = $1 GROUP BY state",
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
    }
    Ok(counts)
}

/// The oldest pending message.
#[derive(Debug, Clone, PartialEq, Eq)]
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
