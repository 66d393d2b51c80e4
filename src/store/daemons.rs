//! The daemons on record, as anyone reads them (`status`, the page): the rows that the daemon's
//! registry (`daemon/registry.rs`) writes with each heartbeat.

use chrono::Utc;
use sqlx::Row;

use super::Db;

/// A daemon is considered alive while its heartbeat is younger than this.
pub(crate) const HEARTBEAT_STALE_SECONDS: i64 = 30;

/// A daemon whose heartbeat is fresh, with the template version it has live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunningDaemon {
    pub id: String,
    /// The digest of its live template set; `None` until it has loaded one.
    pub templates_digest: Option<String>,
}

/// The daemons alive now (heartbeats are real time, never the calendar's clock).
pub async fn running_daemons(db: &Db) -> Result<Vec<RunningDaemon>, sqlx::Error> {
    let fresh = Utc::now().timestamp() - HEARTBEAT_STALE_SECONDS;
    let rows =
        sqlx::query("SELECT id, templates_digest FROM daemons WHERE heartbeat_at > $1 ORDER BY id")
            .bind(fresh)
            .fetch_all(db.pool())
            .await?;
    rows.iter()
        .map(|r| {
            Ok(RunningDaemon {
                id: r.try_get("id")?,
                templates_digest: r.try_get("templates_digest")?,
            })
        })
        .collect()
}
