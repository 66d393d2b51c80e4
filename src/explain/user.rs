//! One user as the database holds them: their row of the latest snapshot, and every message
//! planned for them with what happened to it before.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::config::Step;
use crate::store::{timestamp, Db, OutboxState, UnknownState, UserContact, CONTACT_COLUMNS};

/// A user as the latest snapshot left them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotUser {
    /// What a message shows of the user (its fields appear at this level in JSON).
    #[serde(flatten)]
    pub contact: UserContact,
    pub fiscal_code: String,
    pub registered_institutional: bool,
    pub registration: String,
    pub enabled: bool,
    pub code_regeneration: String,
    pub portal_updated_at: Option<DateTime<Utc>>,
    /// False once a full snapshot no longer lists the user: they get nothing more.
    pub present: bool,
    pub import_id: i64,
    pub import_at: Option<DateTime<Utc>>,
    pub import_source: Option<String>,
}

/// One planned message of the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserMessage {
    pub campaign: String,
    pub step: Step,
    pub state: OutboxState,
    pub attempts: i64,
    /// Why it was skipped, failed or expired, or the last error of a pending retry.
    pub reason: Option<String>,
    pub smtp_code: Option<i64>,
    pub recipient: String,
    pub planned_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    /// The Message-ID of the daily digest it is merged into (shared by every row of that email),
    /// or `None` for a message that goes alone.
    pub digest: Option<String>,
    /// What happened to it before its current state, oldest first.
    pub history: Vec<Earlier>,
}

/// A state a message left: a failure an operator retried, or a refusal the circuit breaker
/// gave back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Earlier {
    pub at: Option<DateTime<Utc>>,
    pub state: OutboxState,
    /// What moved it back to the queue (`retry --failed`, `circuit breaker`).
    pub event: String,
    pub reason: Option<String>,
    pub smtp_code: Option<i64>,
    pub attempts: i64,
}

/// The user's row of the latest snapshot, or `None` when the snapshot never had them.
pub(super) async fn snapshot_user(
    db: &Db,
    user_id: &str,
) -> Result<Option<SnapshotUser>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {CONTACT_COLUMNS}, u.fiscal_code, u.registration, u.enabled, u.code_regeneration, \
            u.registered_institutional, u.portal_updated_at, u.import_id, u.present, \
            i.source AS import_source, i.started_at AS import_at \
         FROM users u LEFT JOIN imports i ON i.id = u.import_id WHERE u.user_id = $1",
    ))
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?;
    let Some(u) = row else { return Ok(None) };
    Ok(Some(SnapshotUser {
        contact: UserContact::from_row(&u)?,
        fiscal_code: u.try_get("fiscal_code")?,
        registered_institutional: u.try_get::<i64, _>("registered_institutional")? == 1,
        registration: u.try_get("registration")?,
        enabled: u.try_get::<i64, _>("enabled")? == 1,
        code_regeneration: u.try_get("code_regeneration")?,
        portal_updated_at: timestamp(u.try_get("portal_updated_at")?),
        present: u.try_get::<i64, _>("present")? == 1,
        import_id: u.try_get("import_id")?,
        import_at: timestamp(u.try_get("import_at")?),
        import_source: u.try_get("import_source")?,
    }))
}

/// Every message planned for the user, oldest first, each with its history.
pub(super) async fn messages(db: &Db, user_id: &str) -> Result<Vec<UserMessage>, sqlx::Error> {
    // `campaign_id IN (...)`: a probe of the unique (campaign_id, user_id, step) key per
    // campaign, the outbox having no index by user alone.
    let rows = sqlx::query(
        "SELECT o.id, c.name, o.step, o.state, o.attempts, o.reason, o.smtp_code, o.recipient, \
            o.created_at, o.sent_at, o.updated_at, o.next_attempt_at, o.lease_until, \
            CASE WHEN o.digest_of IS NULL THEN NULL ELSE o.message_id END AS digest \
         FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         WHERE o.campaign_id IN (SELECT id FROM campaigns) AND o.user_id = $1 \
         ORDER BY o.created_at, o.id",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    let mut messages: Vec<(i64, UserMessage)> =
        rows.iter().map(message).collect::<Result<_, _>>()?;
    let history = sqlx::query(
        "SELECT h.outbox_id, h.at, h.state, h.event, h.reason, h.smtp_code, h.attempts \
         FROM outbox_history h WHERE h.outbox_id IN (SELECT o.id FROM outbox o \
            WHERE o.campaign_id IN (SELECT id FROM campaigns) AND o.user_id = $1) \
         ORDER BY h.id",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    for h in &history {
        let id: i64 = h.try_get("outbox_id")?;
        let earlier = Earlier {
            at: timestamp(h.try_get("at")?),
            state: h
                .try_get::<String, _>("state")?
                .parse()
                .map_err(UnknownState::into_sqlx)?,
            event: h.try_get("event")?,
            reason: h.try_get("reason")?,
            smtp_code: h.try_get("smtp_code")?,
            attempts: h.try_get("attempts")?,
        };
        if let Some((_, m)) = messages.iter_mut().find(|(m_id, _)| *m_id == id) {
            m.history.push(earlier);
        }
    }
    Ok(messages.into_iter().map(|(_, m)| m).collect())
}

fn message(r: &AnyRow) -> Result<(i64, UserMessage), sqlx::Error> {
    let id: i64 = r.try_get("id")?;
    Ok((
        id,
        UserMessage {
            campaign: r.try_get("name")?,
            step: r
                .try_get::<String, _>("step")?
                .parse()
                .map_err(UnknownState::into_sqlx)?,
            state: r
                .try_get::<String, _>("state")?
                .parse()
                .map_err(UnknownState::into_sqlx)?,
            attempts: r.try_get("attempts")?,
            reason: r.try_get("reason")?,
            smtp_code: r.try_get("smtp_code")?,
            recipient: r.try_get("recipient")?,
            planned_at: timestamp(r.try_get("created_at")?),
            sent_at: timestamp(r.try_get("sent_at")?),
            updated_at: timestamp(r.try_get("updated_at")?),
            next_attempt_at: timestamp(r.try_get("next_attempt_at")?),
            lease_until: timestamp(r.try_get("lease_until")?),
            digest: r.try_get("digest")?,
            history: Vec::new(),
        },
    ))
}
