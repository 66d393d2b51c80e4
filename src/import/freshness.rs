//! Is the snapshot fresh enough to remind people? Reminders are about a procedure's state as the
//! portal last exported it: on a snapshot older than `import.max_age_hours`, a d1 reminder could go
//! to someone who completed the procedure days ago. Then reminders are neither planned nor sent:
//! they wait (and expire at the deadline as usual). Notices that do not depend on a procedure's
//! state (one-off, reopening) are not held.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::store::timestamp;

/// The age of the newest full snapshot at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// When the newest full snapshot was imported; `None` before the first.
    pub newest: Option<DateTime<Utc>>,
    /// The limit, `import.max_age_hours`.
    pub max_age_hours: u32,
    /// Reminders must wait: the newest full snapshot is older than the limit (or there is none).
    pub stale: bool,
}

impl Freshness {
    /// One line for operators, when stale.
    pub fn warning(&self, now: DateTime<Utc>) -> Option<String> {
        if !self.stale {
            return None;
        }
        Some(match self.newest {
            Some(at) => format!(
                "the newest full snapshot is {} hours old (import.max_age_hours = {}): reminders are held until a fresh export is imported (avvisi import users FILE)",
                (now - at).num_hours(),
                self.max_age_hours
            ),
            None => "no full snapshot imported yet: reminders are held (avvisi import users FILE)"
                .to_string(),
        })
    }
}

/// The freshness of the snapshot at `now`.
pub async fn freshness<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    max_age_hours: u32,
    now: DateTime<Utc>,
) -> Result<Freshness, sqlx::Error> {
    let newest: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(finished_at) FROM imports WHERE mode = 'full' AND finished_at IS NOT NULL",
    )
    .fetch_one(db)
    .await?;
    let newest = timestamp(newest);
    let stale = newest.is_none_or(|at| now - at > Duration::hours(i64::from(max_age_hours)));
    Ok(Freshness {
        newest,
        max_age_hours,
        stale,
    })
}
