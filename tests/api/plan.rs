//! `avvisi plan [--dry-run] [--now TS] [--json]`: what a planner tick plans, per campaign and
//! step. The dry run leaves the database exactly as it was, and its counts are what a real tick
//! at the same instant then plans; without `--dry-run` it plans for real and delivers nothing.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::Row;

use crate::helpers::{at, TestApp};
use crate::on_both_backends;

const FRESH: (&str, &str) = ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000");

/// Every row of every table a planner pass may touch, rendered and sorted.
async fn fingerprint(app: &TestApp) -> BTreeMap<&'static str, Vec<String>> {
    let mut out = BTreeMap::new();
    for table in [
        "users",
        "imports",
        "campaigns",
        "outbox",
        "outbox_history",
        "lapsed",
        "service_events",
        "suppressions",
        "planner_ticks",
        "rate_usage",
    ] {
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(app.db.pool())
            .await
            .unwrap();
        let mut rendered: Vec<String> = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                            format!("{v:?}")
                        } else if let Ok(v) = r.try_get::<Option<String>, _>(i) {
                            format!("{v:?}")
                        } else {
                            format!("{:?}", r.try_get::<Option<f64>, _>(i).unwrap())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        rendered.sort();
        out.insert(table, rendered);
    }
    out
}

fn plan(app: &TestApp, args: &[&str]) -> String {
    let mut all = vec!["plan"];
    all.extend_from_slice(args);
    let out = app.avvisi(&all, &[FRESH]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "avvisi {all:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn plan_json(app: &TestApp, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&plan(app, &all)).expect("plan --json")
}

/// Rows per (campaign, step) of a report, the steps with rows only.
fn rows_of(report: &Value) -> BTreeMap<(String, String), u64> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["rows"].as_u64().unwrap() > 0)
        .map(|s| {
            (
                (
                    s["campaign"].as_str().unwrap().to_string(),
                    s["step"].as_str().unwrap().to_string(),
                ),
                s["rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Rows per (campaign, step) a real pass planned.
fn rows_planned(planned: &[avvisi::plan::Planned]) -> BTreeMap<(String, String), u64> {
    planned
        .iter()
        .filter(|p| p.rows > 0)
        .map(|p| ((p.campaign.clone(), p.step.to_string()), p.rows))
        .collect()
}

/// The emails the pending rows planned at `now` make: one per Message-ID.
async fn emails_planned_at(app: &TestApp, now: &str) -> u64 {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT message_id) FROM outbox WHERE created_at = $1 AND state = 'pending'",
    )
    .bind(at(now).timestamp())
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    n as u64
}

async fn a_dry_run_writes_nothing_and_counts_what_a_tick_plans(app: TestApp) {
    app.import_examples().await;
    let first = "2026-11-23T10:00:00+01:00";

    // The first notice: 47 rows, 30 emails, nothing written.
    let before = fingerprint(&app).await;
    let report = plan_json(&app, &["--dry-run", "--now", first]);
    assert_eq!(
        fingerprint(&app).await,
        before,
        "the dry run wrote something"
    );
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["emails"], 30);
    assert!(report["last_tick"].is_null());
    let u15 = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["campaign"] == "code_regeneration_pending-2026-11-30")
        .unwrap();
    assert_eq!(
        u15["samples"],
        serde_json::json!(["U0015", "U0016", "U0017", "U0018", "U0019"])
    );
    // U0015 to U0018 have three sections each, U0019 and U0022 two: six digests, 16 sections.
    assert_eq!(
        (u15["digests"].as_u64(), u15["sections"].as_u64()),
        (Some(6), Some(16))
    );

    // A real tick at the same instant plans exactly that.
    app.clock.set(at(first));
    let planned = app.plan().await;
    assert_ne!(fingerprint(&app).await, before, "a real tick is seen");
    assert_eq!(rows_of(&report), rows_planned(&planned));
    assert_eq!(rows_of(&report).values().sum::<u64>(), 47);
    assert_eq!(emails_planned_at(&app, first).await, 30);
    app.deliver().await;

    // The d3 step, compared with the last tick.
    let d3 = "2026-11-27T10:00:00+01:00";
    let before = fingerprint(&app).await;
    let out = plan(&app, &["--dry-run", "--now", d3]);
    assert_eq!(
        fingerprint(&app).await,
        before,
        "the dry run wrote something"
    );
    assert!(
        out.starts_with("dry run at 2026-11-27 10:00 CET (Europe/Rome): nothing written"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("registration_incomplete-2026-11-30"))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["d3", "6"], "{line}");
    assert!(
        line.ends_with("U0001 U0002 U0003 U0004 U0005 ..."),
        "{line}"
    );
    assert!(
        out.contains("compared with the last tick that planned (2026-11-23 10:00 CET):"),
        "{out}"
    );
    let change = out
        .lines()
        .find(|l| l.contains("registration_incomplete-2026-11-30") && l.contains(" first "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(change.trim_end().ends_with("-6"), "{change}");
    let report = plan_json(&app, &["--dry-run", "--now", d3]);
    assert_eq!(report["last_tick"]["at"], "2026-11-23T09:00:00Z");
    app.clock.set(at(d3));
    let planned = app.plan().await;
    assert_eq!(rows_of(&report), rows_planned(&planned));
    assert_eq!(
        report["emails"].as_u64().unwrap(),
        emails_planned_at(&app, d3).await
    );
    app.deliver().await;

    // The maintenance: the lapses are recorded and what is left expires, in the dry run only.
    sqlx::query("UPDATE outbox SET state = 'pending' WHERE step = 'd3'")
        .execute(app.db.pool())
        .await
        .unwrap();
    let before = fingerprint(&app).await;
    let report = plan_json(&app, &["--dry-run", "--now", "2026-12-01T09:00:00+01:00"]);
    assert_eq!(
        fingerprint(&app).await,
        before,
        "the dry run wrote something"
    );
    assert!(report["lapses_recorded"].as_u64().unwrap() > 0, "{report}");
    assert!(report["expired"].as_u64().unwrap() > 0, "{report}");
    assert!(rows_of(&report).is_empty(), "{report}");
}

async fn plan_without_dry_run_plans_and_delivers_nothing(app: TestApp) {
    app.import_examples().await;
    let now = "2026-11-23T10:00:00+01:00";
    let out = plan(&app, &["--now", now]);
    assert!(
        out.starts_with("planned at 2026-11-23 10:00 CET (Europe/Rome): nothing delivered"),
        "{out}"
    );
    assert!(out.contains("47 rows, 30 emails"), "{out}");
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 47);
    assert!(rows.iter().all(|r| r.state == "pending"), "{rows:?}");
    assert!(app.eml_files().is_empty());
    // Planning again at the same instant adds nothing, and says the tick differs from the last.
    let report = plan_json(&app, &["--now", now]);
    assert!(rows_of(&report).is_empty(), "{report}");
    assert_eq!(report["changes"].as_array().unwrap().len(), 4, "{report}");
    // What was planned goes out with the next delivery.
    app.clock.set(at(now));
    app.deliver().await;
    assert_eq!(app.eml_files().len(), 30);
}

on_both_backends!(
    a_dry_run_writes_nothing_and_counts_what_a_tick_plans,
    plan_without_dry_run_plans_and_delivers_nothing,
);
