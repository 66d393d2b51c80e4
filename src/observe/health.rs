//! The daemon's view of itself, and the readiness checks built on it and on the database.
//!
//! `/readyz` fails (503) when any check fails, naming each failing one: an orchestrator or an
//! operator's alert reads the first word of each line, a person reads the rest.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::render::live::TemplateStore;
use crate::store::{queue, CampaignState, Db};

/// What the running daemon knows that the database does not: shared between the sender, the
/// template watcher and the HTTP handlers. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    /// The live template set.
    pub templates: TemplateStore,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Since when, and why, the relay has been failing us; `None` while it accepts.
    relay_fault: Option<(DateTime<Utc>, String)>,
}

impl Health {
    pub fn new(templates: TemplateStore) -> Health {
        Health {
            templates,
            inner: Arc::default(),
        }
    }

    /// The relay accepted messages again (or was never refused).
    pub fn relay_ok(&self) {
        self.inner.lock().expect("health lock").relay_fault = None;
    }

    /// Delivery stopped for the relay at `at`: unreachable, refusing the session, or the
    /// circuit breaker. The first instant of a fault is kept while the fault lasts.
    pub fn relay_fault(&self, at: DateTime<Utc>, reason: &str) {
        let mut inner = self.inner.lock().expect("health lock");
        let since = inner.relay_fault.as_ref().map_or(at, |(since, _)| *since);
        inner.relay_fault = Some((since, crate::telemetry::scrub(reason).into_owned()));
    }

    /// The last reload was refused for `problems` (`None`: the live set is the folder's).
    pub fn templates_rejected(&self, problems: Option<String>) {
        // Kept by the store, which also clears it when the folder is put back to the live set.
        self.templates.set_refused(problems);
    }

    fn relay(&self) -> Option<(DateTime<Utc>, String)> {
        self.inner.lock().expect("health lock").relay_fault.clone()
    }

    /// The refused template edit, if the folder holds one.
    pub fn rejected_templates(&self) -> Option<String> {
        self.templates.refused()
    }
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `database`, `templates`, `relay`, `snapshot`, `breaker` or `deferrals`.
    pub name: &'static str,
    pub ok: bool,
    /// What was found, in one line.
    pub detail: String,
}

/// Every readiness check, in a fixed order.
pub async fn readiness(
    db: &Db,
    settings: &Settings,
    health: &Health,
    now: DateTime<Utc>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let check = |name, ok, detail: String| Check { name, ok, detail };
    // A database that hangs is as unready as one that refuses.
    let reached = tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::query("SELECT 1").execute(db.pool()),
    )
    .await;
    let database_ok = matches!(reached, Ok(Ok(_)));
    checks.push(match reached {
        Ok(Ok(_)) => check("database", true, "reachable".into()),
        Ok(Err(e)) => check("database", false, db.describe(&e)),
        Err(_) => check("database", false, "no answer within 5 s".into()),
    });
    let live = health.templates.current();
    checks.push(check(
        "templates",
        true,
        match health.rejected_templates() {
            None => format!("live {}", live.digest()),
            Some(p) => format!("live {} (newer templates refused: {p})", live.digest()),
        },
    ));
    checks.push(match health.relay() {
        None => check("relay", true, "accepting".into()),
        Some((since, why)) => check(
            "relay",
            false,
            format!(
                "delivery stopped by the relay since {} ({} s): {why}",
                since.to_rfc3339(),
                (now - since).num_seconds().max(0)
            ),
        ),
    });
    if !database_ok {
        // The other two read the database: their failure would only repeat the first.
        return checks;
    }
    let max_age = settings.import.max_age_hours;
    checks.push(
        match crate::import::freshness(db.pool(), max_age, now).await {
            Ok(f) => match f.warning(now) {
                None => check(
                    "snapshot",
                    true,
                    format!(
                        "newest full snapshot {}",
                        f.newest.map_or("-".into(), |t| t.to_rfc3339())
                    ),
                ),
                Some(w) => check("snapshot", false, w),
            },
            Err(e) => check("snapshot", false, db.describe(&e)),
        },
    );
    checks.push(match queue::by_campaign(db).await {
        Ok(campaigns) => {
            let open: Vec<String> = campaigns
                .into_iter()
                .filter(|c| c.state == CampaignState::Paused)
                .filter_map(|c| {
                    c.paused_reason
                        .filter(|r| r.starts_with("circuit breaker"))
                        .map(|r| format!("{} ({})", c.campaign, crate::telemetry::scrub(&r)))
                })
                .collect();
            if open.is_empty() {
                check("breaker", true, "closed".into())
            } else {
                check(
                    "breaker",
                    false,
                    format!(
                        "open, campaigns paused: {} (avvisi campaign resume NAME when the relay is fixed)",
                        open.join("; ")
                    ),
                )
            }
        }
        Err(e) => check("breaker", false, db.describe(&e)),
    });
    // A provider's request to slow down holds one domain; the service is still ready, and says
    // which domain waits and until when.
    checks.push(match crate::deliver::hold::held(db, now).await {
        Ok(held) if held.is_empty() => check("deferrals", true, "no domain held".into()),
        Ok(held) => {
            let each: Vec<String> = held
                .iter()
                .map(|h| {
                    format!(
                        "{} until {} ({})",
                        h.domain,
                        h.until.to_rfc3339(),
                        crate::telemetry::scrub(&h.reply)
                    )
                })
                .collect();
            check(
                "deferrals",
                true,
                format!(
                    "held (the provider asked to slow down): {}",
                    each.join("; ")
                ),
            )
        }
        Err(e) => check("deferrals", false, db.describe(&e)),
    });
    checks
}
