//! The service's phases: reminders until the deadline, maintenance from `maintenance_start`,
//! reopening when operators declare it.
//!
//! At the first planner tick at or after the maintenance start, who still had a procedure pending
//! is recorded in `lapsed`, once; that record, not a later snapshot, decides the specific
//! reopening notices. `avvisi service reopen` records the reopening once and creates the
//! reopening campaigns, scheduled at that instant; the planner sends them like any campaign.

use chrono::{DateTime, Utc};
use sqlx::Connection;

use crate::audience::Audience;
use crate::campaign;
use crate::config::CalendarSettings;
use crate::store::timestamp;
use crate::store::{Db, Stream};

/// The reopening campaigns: (template and name prefix, audience).
pub(crate) const REOPENING: [(&str, Audience); 4] = [
    ("reopening_general", Audience::EnabledUsers),
    (
        "reopening_registration_cancelled",
        Audience::LapsedRegistration,
    ),
    (
        "reopening_email_unvalidated",
        Audience::LapsedEmailValidation,
    ),
    (
        "reopening_code_regeneration",
        Audience::LapsedCodeRegeneration,
    ),
];

/// The stream of a reopening notice: the general one is a notice to everyone; the others are
/// about the user's own lapsed procedure.
fn reopening_stream(template: &str) -> Stream {
    match template {
        "reopening_general" => Stream::ReopeningGeneral,
        _ => Stream::ReopeningProcedures,
    }
}

/// Records, once, who lapsed at the deadline, on a connection of the caller's (inside a
/// transaction of the caller's, a savepoint). Returns the rows recorded now (0 when done before
/// or when the maintenance has not started).
pub(crate) async fn record_lapsed_on(
    conn: &mut sqlx::AnyConnection,
    cal: &CalendarSettings,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if now < cal.maintenance_start {
        return Ok(0);
    }
    let mut tx = conn.begin().await?;
    let first = sqlx::query(
        "INSERT INTO service_events (name, at, declared_at) VALUES ('lapsed_recorded', $1, $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(cal.maintenance_start.timestamp())
    .bind(now.timestamp())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if first == 0 {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut recorded = 0;
    for (pending, procedure, _) in Audience::LAPSES {
        let sql = format!(
            "INSERT INTO lapsed (user_id, procedure, recorded_at, email, first_name, last_name) \
             SELECT u.user_id, $1, $2, u.email, u.first_name, u.last_name FROM users u WHERE {} \
             ON CONFLICT (user_id, procedure) DO NOTHING",
            pending.condition()
        );
        recorded += sqlx::query(&sql)
            .bind(procedure)
            .bind(now.timestamp())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    tracing::info!(recorded, "recorded the procedures lapsed at the deadline");
    Ok(recorded)
}

/// The outcome of declaring the reopening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reopening {
    pub at: DateTime<Utc>,
    /// False when the reopening had been declared before (nothing changed).
    pub newly_declared: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error("the reopening ({at}) cannot be before the maintenance start ({start})")]
    ReopenBeforeMaintenance {
        at: DateTime<Utc>,
        start: DateTime<Utc>,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Declares that the upgrade is over at `at`: records it and schedules the reopening notices.
/// Declaring twice changes nothing (the first declaration stands).
pub async fn declare_reopening(
    db: &Db,
    cal: &CalendarSettings,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Reopening, PhaseError> {
    declare_reopening_on(&mut *db.pool().acquire().await?, cal, at, now).await
}

/// [`declare_reopening`] on the caller's connection (savepoints when it is a transaction).
pub(crate) async fn declare_reopening_on(
    conn: &mut sqlx::AnyConnection,
    cal: &CalendarSettings,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Reopening, PhaseError> {
    if at < cal.maintenance_start {
        return Err(PhaseError::ReopenBeforeMaintenance {
            at,
            start: cal.maintenance_start,
        });
    }
    // Recorded now if the maintenance has started; otherwise by the first planner tick after
    // it, always before any reopening notice can be planned (they are due after it).
    record_lapsed_on(&mut *conn, cal, now).await?;
    let mut tx = conn.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO service_events (name, at, declared_at) VALUES ('reopened', $1, $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(at.timestamp())
    .bind(now.timestamp())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        let at = reopened_at(&mut *conn).await?.unwrap_or(at);
        return Ok(Reopening {
            at,
            newly_declared: false,
        });
    }
    let day = cal.deadline.with_timezone(&cal.timezone).date_naive();
    // Every campaign expires: a notice held back (a relay outage, a pause) never goes out weeks late.
    let expires = at + chrono::Duration::days(i64::from(cal.reopening_notice_days));
    for (template, audience) in REOPENING {
        sqlx::query(
            "INSERT INTO campaigns (name, kind, audience, template, state, uid, send_at, expires_at, \
                created_at, stream) \
             VALUES ($1, 'reopening', $2, $3, 'scheduled', $4, $5, $7, $6, $8) ON CONFLICT (name) DO NOTHING",
        )
        .bind(format!("{template}-{}", day.format("%Y-%m-%d")))
        .bind(audience.name())
        .bind(template)
        .bind(campaign::new_uid())
        .bind(at.timestamp())
        .bind(now.timestamp())
        .bind(expires.timestamp())
        .bind(reopening_stream(template).key())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Reopening {
        at,
        newly_declared: true,
    })
}

/// The phase of the calendar at `now`, as operators name it (`avvisi calendar`, the status page).
pub fn phase_at(
    cal: &CalendarSettings,
    reopened: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> &'static str {
    if now < cal.campaign_start {
        "before the campaign"
    } else if now < cal.deadline {
        "reminders"
    } else if reopened.is_some_and(|r| now >= r) {
        "reopened"
    } else {
        "maintenance"
    }
}

/// When the service reopened (or will), if declared.
pub async fn reopened_at<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let at: Option<i64> =
        sqlx::query_scalar("SELECT at FROM service_events WHERE name = 'reopened'")
            .fetch_optional(db)
            .await?;
    Ok(timestamp(at))
}
