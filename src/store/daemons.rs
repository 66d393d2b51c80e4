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
    /// Why its delivery is stopped by the relay (its last fault, addresses masked), and since
    /// when; `None` while the relay accepts messages.
    pub relay_fault: Option<String>,
    pub relay_fault_since: Option<chrono::DateTime<Utc>>,
}

/// The daemons alive now (heartbeats are real time, never the calendar's clock).
pub async fn running_daemons(db: &Db) -> Result<Vec<RunningDaemon>, sqlx::Error> {
    let fresh = Utc::now().timestamp() - HEARTBEAT_STALE_SECONDS;
    let rows = sqlx::query(
        "SELECT id, templates_digest, relay_fault, relay_fault_since FROM daemons \
                     WHERE heartbeat_at > $1 ORDER BY id",
    )
    .bind(fresh)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RunningDaemon {
                id: r.try_get("id")?,
                templates_digest: r.try_get("templates_digest")?,
                relay_fault: r.try_get("relay_fault")?,
                relay_fault_since: super::timestamp(r.try_get("relay_fault_since")?),
            })
        })
        .collect()
}
