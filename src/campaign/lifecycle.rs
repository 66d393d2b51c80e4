//! The campaign lifecycle: every legal move, written once.
//!
//! ```text
//! draft --launch--> scheduled (send_at in the future) --planner, at send_at--> running
//! draft --launch--> running --planner, all planned and sent--> finished
//! running | scheduled --pause--> paused --resume--> running | scheduled
//! draft | scheduled | running | paused --cancel--> cancelled (its pending messages are skipped)
//! ```
//! Every transition is one guarded `UPDATE ... WHERE name = $1 AND state IN (...)`, the list
//! taken from [`Action::applies_to`]: of two operators racing, one wins and the other gets a
//! clear error. The worker only claims messages of running campaigns, and hands back unsent the
//! claimed messages of a campaign paused meanwhile, so a pause takes effect within one batch.
//! The planner's two moves (scheduled to running, running to finished) are here too.

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, Connection, Row};

use super::action::Action;
use super::{get_on, CampaignError};
use crate::store::{CampaignKind, CampaignState, Db, UnknownState};

/// The outcome of a lifecycle command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub name: String,
    /// The state the campaign is in now.
    pub state: CampaignState,
    /// Pending messages skipped by a cancel.
    pub skipped: u64,
    /// A pause: its messages already claimed by a sender at that moment. The few on the wire
    /// finish; the others go back to the queue unsent within one batch.
    pub on_the_way: u64,
}

/// draft -> scheduled (send_at in the future) or running. Not for reminder campaigns. This is
/// the bare transition, on the caller's transaction: crate-private because the only way to
/// launch is the application's ([`crate::app::App::launch_campaign`]), which checks the second
/// person's approval first in the same transaction.
pub(crate) async fn launch_on(
    conn: &mut AnyConnection,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Transition, CampaignError> {
    let row = sqlx::query(&format!(
        "UPDATE campaigns SET \
            state = CASE WHEN send_at IS NOT NULL AND send_at > $2 THEN 'scheduled' ELSE 'running' END, \
            started_at = CASE WHEN send_at IS NOT NULL AND send_at > $2 THEN NULL ELSE $2 END \
         WHERE name = $1 AND kind <> 'reminder' AND {} RETURNING state",
        Action::Launch.guard()
    ))
    .bind(name)
    .bind(now.timestamp())
    .fetch_optional(&mut *conn)
    .await?;
    transition_result(conn, name, Action::Launch, row, 0).await
}

/// running | scheduled -> paused. The worker stops claiming its messages at once, and hands
/// back unsent those it had claimed already within one batch (see `deliver`); its rows leave
/// the daily digests they were merged into, whose other sections still go.
pub async fn pause(db: &Db, name: &str) -> Result<Transition, CampaignError> {
    pause_on(&mut *db.pool().acquire().await?, name).await
}

/// [`pause`] on the caller's connection (or transaction).
pub(crate) async fn pause_on(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Transition, CampaignError> {
    let mut tx = conn.begin().await?;
    let row = sqlx::query(&format!(
        "UPDATE campaigns SET state = 'paused' WHERE name = $1 AND {} RETURNING id, state",
        Action::Pause.guard()
    ))
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let mut on_the_way = 0;
    if let Some(row) = &row {
        let id: i64 = row.try_get("id")?;
        // The other campaigns' sections of its digests still go today.
        crate::store::digest::leave(&mut tx, id).await?;
        on_the_way = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM outbox WHERE campaign_id = $1 AND state = 'sending'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await? as u64;
    }
    tx.commit().await?;
    let t = transition_result(conn, name, Action::Pause, row, 0).await?;
    Ok(Transition { on_the_way, ..t })
}

/// running | scheduled -> paused by avvisi itself (the circuit breaker), with `reason` for the
/// operators. False when the campaign was not running or scheduled (already paused, say).
pub(crate) async fn pause_for(db: &Db, name: &str, reason: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    let id: Option<i64> = sqlx::query_scalar(&format!(
        "UPDATE campaigns SET state = 'paused', paused_reason = $2 WHERE name = $1 AND {} \
         RETURNING id",
        Action::Pause.guard()
    ))
    .bind(name)
    .bind(reason)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = id {
        crate::store::digest::leave(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(id.is_some())
}

/// paused -> running, or scheduled when its send_at is still in the future.
pub async fn resume(db: &Db, name: &str, now: DateTime<Utc>) -> Result<Transition, CampaignError> {
    resume_on(&mut *db.pool().acquire().await?, name, now).await
}

/// [`resume`] on the caller's connection (or transaction).
pub(crate) async fn resume_on(
    conn: &mut AnyConnection,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Transition, CampaignError> {
    let row = sqlx::query(&format!(
        "UPDATE campaigns SET \
            state = CASE WHEN send_at IS NOT NULL AND send_at > $2 THEN 'scheduled' ELSE 'running' END, \
            started_at = CASE WHEN started_at IS NULL AND (send_at IS NULL OR send_at <= $2) \
                              THEN $2 ELSE started_at END, \
            paused_reason = NULL \
         WHERE name = $1 AND {} RETURNING state",
        Action::Resume.guard()
    ))
    .bind(name)
    .bind(now.timestamp())
    .fetch_optional(&mut *conn)
    .await?;
    transition_result(conn, name, Action::Resume, row, 0).await
}

/// The reason recorded on the messages a cancel skips.
pub(crate) const CANCELLED_REASON: &str = "campaign cancelled by an operator";

/// draft | scheduled | running | paused -> cancelled; in the same transaction every pending
/// message of the campaign becomes skipped. Messages already on the wire finish.
pub async fn cancel(db: &Db, name: &str, now: DateTime<Utc>) -> Result<Transition, CampaignError> {
    cancel_on(&mut *db.pool().acquire().await?, name, now).await
}

/// [`cancel`] on the caller's connection (a savepoint when it is a transaction).
pub(crate) async fn cancel_on(
    conn: &mut AnyConnection,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Transition, CampaignError> {
    let mut tx = conn.begin().await?;
    let row = sqlx::query(&format!(
        "UPDATE campaigns SET state = 'cancelled', finished_at = $2, paused_reason = NULL \
         WHERE name = $1 AND {} RETURNING id, state",
        Action::Cancel.guard()
    ))
    .bind(name)
    .bind(now.timestamp())
    .fetch_optional(&mut *tx)
    .await?;
    let mut skipped = 0;
    if let Some(row) = &row {
        let id: i64 = row.try_get("id")?;
        skipped = sqlx::query(
            "UPDATE outbox SET state = 'skipped', reason = $2, updated_at = $3 \
             WHERE campaign_id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(CANCELLED_REASON)
        .bind(now.timestamp())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // The other campaigns' sections of its digests go out without it.
        crate::store::digest::repair_orphans(&mut tx, Some(id)).await?;
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    transition_result(conn, name, Action::Cancel, row, skipped).await
}

/// Turns the row returned by a guarded UPDATE into the transition, or explains the refusal.
async fn transition_result(
    conn: &mut AnyConnection,
    name: &str,
    action: Action,
    row: Option<sqlx::any::AnyRow>,
    skipped: u64,
) -> Result<Transition, CampaignError> {
    if let Some(row) = row {
        let state: CampaignState = row
            .try_get::<String, _>("state")?
            .parse()
            .map_err(UnknownState::into_sqlx)?;
        tracing::info!(campaign = name, %action, %state, skipped, "campaign transition");
        return Ok(Transition {
            name: name.to_string(),
            state,
            skipped,
            on_the_way: 0,
        });
    }
    let c = get_on(conn, name).await?;
    if c.kind == CampaignKind::Reminder && action == Action::Launch {
        return Err(CampaignError::Reminder {
            name: c.name,
            action,
        });
    }
    Err(CampaignError::IllegalTransition {
        name: c.name,
        action,
        state: c.state,
    })
}

/// scheduled -> running, for every launched campaign whose time has come (the planner's tick).
pub(crate) async fn start_scheduled(
    conn: &mut sqlx::AnyConnection,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE campaigns SET state = 'running', started_at = $1 \
         WHERE state = 'scheduled' AND (send_at IS NULL OR send_at <= $1)",
    )
    .bind(now.timestamp())
    .execute(conn)
    .await?;
    Ok(())
}

/// finished -> running, for every campaign with messages back in the queue (`retry --failed`).
pub(crate) async fn run_again_when_pending(
    conn: &mut sqlx::AnyConnection,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE campaigns SET state = 'running', finished_at = NULL \
         WHERE state = 'finished' AND (expires_at IS NULL OR expires_at > $1) \
           AND EXISTS (SELECT 1 FROM outbox o WHERE o.campaign_id = campaigns.id \
                       AND o.state = 'pending')",
    )
    .bind(now.timestamp())
    .execute(conn)
    .await?;
    Ok(())
}

/// running -> finished, for every campaign that can plan nothing more and has nothing left in
/// flight: a one-off once planned, a reminder once its deadline has passed.
pub(crate) async fn finish_done(
    conn: &mut sqlx::AnyConnection,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE campaigns SET state = 'finished', finished_at = $1 \
         WHERE state = 'running' \
           AND ((kind <> 'reminder' AND (send_at IS NULL OR send_at <= $1)) \
                OR (expires_at IS NOT NULL AND expires_at <= $1)) \
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.campaign_id = campaigns.id \
                           AND o.state IN ('pending', 'sending'))",
    )
    .bind(now.timestamp())
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error texts operators see stay as they were when each was written by hand.
    #[test]
    fn the_allowed_sentence_is_derived_from_the_table() {
        assert_eq!(
            Action::Launch.allowed(),
            "only a draft campaign can be launched (cancelled and finished are final)"
        );
        assert_eq!(
            Action::Pause.allowed(),
            "only a running or scheduled campaign can be paused (cancelled and finished are final)"
        );
        assert_eq!(
            Action::Cancel.allowed(),
            "only a draft, scheduled, running or paused campaign can be cancelled (cancelled and finished are final)"
        );
        assert_eq!(Action::Pause.guard(), "state IN ('running', 'scheduled')");
    }
}
