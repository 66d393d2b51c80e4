//! The sender: delivers continuously, backs off as a whole while the relay is down, and on
//! shutdown gives the sends on the wire their grace period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::deliver::Worker;
use crate::observe::health::Health;

/// The sender: deliver, then wait (longer while the relay is down), until shutdown.
pub(super) async fn send_until_shutdown(
    worker: &Worker,
    settings: &Settings,
    shutdown: &CancellationToken,
    health: &Health,
    me: &str,
) {
    let poll = Duration::from_secs(settings.daemon.poll_seconds);
    let backoff_max = Duration::from_secs(settings.daemon.relay_backoff_max_seconds.max(1));
    let grace = Duration::from_secs(settings.daemon.shutdown_grace_seconds);
    let mut backoff = poll;
    // The last relay fault logged: a fault is logged when it starts or changes, not per pass.
    let mut fault: Option<String> = None;
    while !shutdown.is_cancelled() {
        let delivery = worker.deliver_due(shutdown);
        tokio::pin!(delivery);
        let report = tokio::select! {
            r = &mut delivery => r,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("shutdown grace period over: messages still on the wire return to the queue when their lease expires");
                return;
            }
        };
        let pause = match report {
            Ok(r) if r.relay_unreachable => {
                let now = r.relay_fault.unwrap_or_else(|| "relay unreachable".into());
                health.relay_fault(worker.clock().now(), &now);
                if fault.as_deref() != Some(now.as_str()) {
                    // On record for `status` and `explain`, run by other processes.
                    super::registry::record_relay(worker.db(), me, Some(&now)).await;
                    tracing::error!(
                        reason = %now,
                        "delivery stopped by the relay; retrying with backoff (no message is failed for it)"
                    );
                    fault = Some(now);
                }
                let pause = backoff;
                backoff = (backoff * 2).min(backoff_max);
                pause
            }
            Ok(r) => {
                if r.per_campaign.values().any(|t| t.sent > 0) {
                    health.relay_ok();
                    if fault.take().is_some() {
                        tracing::info!("the relay accepts messages again");
                        super::registry::record_relay(worker.db(), me, None).await;
                    }
                }
                backoff = poll;
                poll
            }
            Err(e) => {
                let error = worker.db().describe(&e);
                tracing::error!(%error, "delivery pass failed (database?); retrying");
                backoff = (backoff * 2).min(backoff_max);
                backoff
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
