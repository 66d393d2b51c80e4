//! The gauges `/metrics` reads from the database at each scrape: counts of messages come from
//! the outbox's counts (`outbox_counts`, kept by triggers with each change), so they survive a
//! restart, agree between daemons sharing a database, and cost a few rows, not a scan.
//!
//! **Adding a gauge is one entry in [`DB_GAUGES`]**: its name, help, label names and one SQL
//! query whose rows are the label values followed by the value (an integer). A query that
//! needs the current instant uses `$1` (Unix seconds) and sets `binds_now`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use metrics::{describe_gauge, gauge, Label};
use sqlx::Row;

use crate::store::Db;

/// A gauge computed by one query at scrape time.
pub struct DbGauge {
    pub name: &'static str,
    pub help: &'static str,
    /// The label names, in the order of the query's first columns.
    pub labels: &'static [&'static str],
    /// Rows of `labels.len()` text columns, then the value (integer, or NULL for unknown).
    pub sql: &'static str,
    /// The query takes the current instant as `$1` (Unix seconds).
    pub binds_now: bool,
}

/// Every gauge read from the database. One entry per gauge.
pub const DB_GAUGES: &[DbGauge] = &[
    DbGauge {
        name: "avvisi_messages",
        help: "Messages in the outbox, by campaign and state",
        labels: &["campaign", "state"],
        sql: "SELECT c.name, k.state, CAST(SUM(k.n) AS BIGINT) FROM outbox_counts k JOIN campaigns c ON c.id = k.campaign_id GROUP BY c.name, k.state",
        binds_now: false,
    },
    DbGauge {
        name: "avvisi_complaints",
        help: "Complaints (feedback-loop reports) linked to a message of the campaign",
        labels: &["campaign"],
        sql: "SELECT c.name, CAST(COUNT(*) AS BIGINT) FROM complaints k JOIN campaigns c ON c.id = k.campaign_id GROUP BY c.name",
        binds_now: false,
    },
    DbGauge {
        name: "avvisi_complaint_rate_per_million",
        help: "Complaints per million emails sent, by campaign (complaints.pause_percent 0.3 is 3000)",
        labels: &["campaign"],
        sql: "SELECT c.name, CAST(COUNT(*) * 1000000 / (SELECT CAST(CASE WHEN COALESCE(SUM(s.n), 0) = 0 THEN 1 \
              ELSE SUM(s.n) END AS BIGINT) FROM outbox_counts s WHERE s.campaign_id = c.id AND s.state = 'sent') AS BIGINT) \
              FROM complaints k JOIN campaigns c ON c.id = k.campaign_id GROUP BY c.id, c.name",
        binds_now: false,
    },
    DbGauge {
        name: "avvisi_queue_depth",
        help: "Messages waiting to be sent or on the wire (pending and sending)",
        labels: &[],
        sql: "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM outbox_counts WHERE state IN ('pending', 'sending')",
        binds_now: false,
    },
    DbGauge {
        name: "avvisi_oldest_due_seconds",
        help: "Age of the oldest pending message that is due, in seconds (0: none due)",
        labels: &[],
        sql: "SELECT COALESCE($1 - MIN(next_attempt_at), 0) FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1",
        binds_now: true,
    },
    DbGauge {
        name: "avvisi_snapshot_age_seconds",
        help: "Age of the newest full user snapshot, in seconds (NaN: none imported)",
        labels: &[],
        sql: "SELECT $1 - MAX(finished_at) FROM imports WHERE mode = 'full' AND finished_at IS NOT NULL",
        binds_now: true,
    },
    DbGauge {
        name: "avvisi_campaigns",
        help: "Campaigns, by state",
        labels: &["state"],
        sql: "SELECT state, COUNT(*) FROM campaigns GROUP BY state",
        binds_now: false,
    },
    DbGauge {
        name: "avvisi_breaker_open",
        help: "Campaigns paused by the circuit breaker (the relay refused everyone with one reply)",
        labels: &[],
        sql: "SELECT COUNT(*) FROM campaigns WHERE state = 'paused' AND paused_reason LIKE 'circuit breaker%'",
        binds_now: false,
    },
    DbGauge {
        name: "avvisi_rate_used_last_hour",
        help: "Messages counted against rate.per_hour in the last 60 minutes, all processes together",
        labels: &[],
        // Minute slots (see deliver::quota), the current one and the 59 before it.
        sql: "SELECT CAST(COALESCE(SUM(used), 0) AS BIGINT) FROM rate_usage WHERE scope = 'hour' AND slot > $1 / 60 - 60",
        binds_now: true,
    },
];

/// Whether the last scrape could read the database (the gauge `avvisi_database_up`).
static DATABASE_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets `avvisi_database_up` to `up`; true when that is a change since the last scrape.
pub fn database_up(up: bool) -> bool {
    describe_gauge!(
        "avvisi_database_up",
        "1 when the last scrape read the database, 0 when it could not (error or no answer in time)"
    );
    gauge!("avvisi_database_up").set(if up { 1.0 } else { 0.0 });
    DATABASE_UP.swap(up, std::sync::atomic::Ordering::Relaxed) != up
}

/// The label sets each gauge had at the previous scrape: one that is gone now (no message of a
/// campaign left pending) is set to 0 rather than left at its last value.
static SEEN: Mutex<BTreeMap<&'static str, BTreeSet<Vec<String>>>> = Mutex::new(BTreeMap::new());

/// Reads every gauge of [`DB_GAUGES`] from the database into the metrics recorder.
pub async fn scrape(db: &Db, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    for g in DB_GAUGES {
        describe_gauge!(g.name, g.help);
        let mut query = sqlx::query(g.sql);
        if g.binds_now {
            query = query.bind(now.timestamp());
        }
        let rows = query.fetch_all(db.pool()).await?;
        let mut present = BTreeSet::new();
        for r in &rows {
            let mut values = Vec::with_capacity(g.labels.len());
            for i in 0..g.labels.len() {
                values.push(r.try_get::<String, _>(i)?);
            }
            let value: Option<i64> = r.try_get(g.labels.len())?;
            gauge!(g.name, labels(g, &values)).set(value.map_or(f64::NAN, |v| v as f64));
            present.insert(values);
        }
        let mut seen = SEEN.lock().expect("gauge labels lock");
        let before = seen.entry(g.name).or_default();
        for gone in before.difference(&present) {
            gauge!(g.name, labels(g, gone)).set(0.0);
        }
        before.extend(present);
    }
    Ok(())
}

fn labels(g: &DbGauge, values: &[String]) -> Vec<Label> {
    g.labels
        .iter()
        .zip(values)
        .map(|(k, v)| Label::new(*k, v.clone()))
        .collect()
}
