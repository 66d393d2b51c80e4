//! The daemons on record: one row each with its heartbeat and its live template version, and on
//! SQLite the lock that keeps a second daemon out.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use crate::store::daemons::HEARTBEAT_STALE_SECONDS;
use crate::store::{Backend, DaemonLock, Db};

/// Records the live template version for `avvisi status`.
pub(super) async fn record_templates(db: &Db, me: &str, digest: &str) {
    let recorded = sqlx::query("UPDATE daemons SET templates_digest = $1 WHERE id = $2")
        .bind(digest)
        .bind(me)
        .execute(db.pool())
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "cannot record the live template version");
    }
}

/// Refuses a second daemon on one SQLite file; records this daemon's heartbeat. The lock it
/// returns is this daemon's for as long as it is kept.
pub(super) async fn register(db: &Db, me: &str) -> anyhow::Result<DaemonLock> {
    let now = Utc::now().timestamp();
    let Some(lock) = db.lock_daemon().await? else {
        let other: Option<String> =
            sqlx::query_scalar("SELECT id FROM daemons ORDER BY heartbeat_at DESC LIMIT 1")
                .fetch_optional(db.pool())
                .await?;
        let other = other.unwrap_or_else(|| "not registered yet".into());
        return Err(DaemonError::AlreadyRunning { other }.into());
    };
    // With the SQLite lock held, any other daemon on record is one that died.
    let dead = match db.backend() {
        Backend::Sqlite => now + 1,
        Backend::Postgres => now - HEARTBEAT_STALE_SECONDS + 1,
    };
    sqlx::query("DELETE FROM daemons WHERE heartbeat_at < $1")
        .bind(dead)
        .execute(db.pool())
        .await?;
    sqlx::query("INSERT INTO daemons (id, started_at, heartbeat_at) VALUES ($1, $2, $2)")
        .bind(me)
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(lock)
}

pub(super) async fn heartbeat(db: Db, me: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let beat = sqlx::query("UPDATE daemons SET heartbeat_at = $1 WHERE id = $2")
            .bind(Utc::now().timestamp())
            .bind(&me)
            .execute(db.pool())
            .await;
        if let Err(e) = beat {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

/// Takes this daemon off the record as it stops.
pub(super) async fn deregister(db: &Db, me: &str) {
    let _ = sqlx::query("DELETE FROM daemons WHERE id = $1")
        .bind(me)
        .execute(db.pool())
        .await;
}

/// Records the relay fault that stops this daemon's delivery (`None`: the relay accepts
/// messages again), addresses masked; the first instant of a fault is kept while it lasts.
pub(super) async fn record_relay(db: &Db, me: &str, fault: Option<&str>) {
    let recorded = sqlx::query(
        "UPDATE daemons SET relay_fault = $1, \
            relay_fault_since = CASE WHEN $1 IS NULL THEN NULL \
                ELSE COALESCE(relay_fault_since, $2) END \
         WHERE id = $3",
    )
    .bind(fault.map(|f| crate::telemetry::scrub(f).into_owned()))
    .bind(Utc::now().timestamp())
    .bind(me)
    .execute(db.pool())
    .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record the relay's state");
    }
}
