//! Bounces and the suppression list, as operators use them: `avvisi suppress`, a relay that says
//! a mailbox does not exist, the envelope sender the relay sees, `avvisi bounces import` of a
//! folder of returned mail, and the institutional address a suppressed user is written to.

use sqlx::Row;

use crate::helpers::{at, TestApp};
use crate::on_both_backends;

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the binary and expects success; returns what it printed.
fn ok(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = app.avvisi(args, env);
    assert!(o.status.success(), "avvisi {args:?}: {}", out(&o));
    out(&o)
}

/// The first outbox row of `user_id`: (id, state, reason, recipient, message_id).
async fn row_of(app: &TestApp, user_id: &str) -> (i64, String, Option<String>, String, String) {
    let r = sqlx::query(
        "SELECT id, state, reason, recipient, message_id FROM outbox WHERE user_id = $1 ORDER BY id",
    )
    .bind(user_id)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// Every outbox row of `user_id` as (state, reason, recipient).
async fn rows_of(app: &TestApp, user_id: &str) -> Vec<(String, Option<String>, String)> {
    sqlx::query("SELECT state, reason, recipient FROM outbox WHERE user_id = $1 ORDER BY id")
        .bind(user_id)
        .fetch_all(app.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn suppressed_json(app: &TestApp) -> Vec<serde_json::Value> {
    let list = ok(app, &["suppress", "list", "--json"], &[]);
    serde_json::from_str::<Vec<serde_json::Value>>(&list).unwrap()
}

/// Operators manage the list through the binary; planning skips a suppressed address, and so
/// does the send-time check for one suppressed after planning; `explain` and the counts say so.
async fn suppressed_addresses_are_skipped_when_planning_and_when_sending(app: TestApp) {
    app.import_examples().await;
    // Any case: stored lower-cased.
    let added = ok(
        &app,
        &[
            "suppress",
            "add",
            "Nicolo.Manco@LIBERO.it",
            "--reason",
            "the user asked by phone",
        ],
        &[],
    );
    assert!(
        added.contains("nicolo.manco@libero.it suppressed"),
        "{added}"
    );
    let again = ok(
        &app,
        &[
            "suppress",
            "add",
            "nicolo.manco@libero.it",
            "--reason",
            "twice",
        ],
        &[],
    );
    assert!(again.contains("already suppressed"), "{again}");
    let bad = app.avvisi(&["suppress", "add", "not an address", "--reason", "x"], &[]);
    assert!(!bad.status.success());
    assert!(
        out(&bad).contains("`not an address` is not an email address"),
        "{}",
        out(&bad)
    );
    let list = suppressed_json(&app);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["address"], "nicolo.manco@libero.it");
    assert_eq!(list[0]["source"], "operator");
    assert_eq!(list[0]["reason"], "the user asked by phone");

    // Planning: U0001's row is there, skipped as suppressed; everyone else pending.
    app.plan().await;
    let (_, state, reason, _, _) = row_of(&app, "U0001").await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("skipped", Some("suppressed"))
    );
    assert_eq!(row_of(&app, "U0002").await.1, "pending");

    // Suppressed after planning: the send-time check skips it.
    ok(
        &app,
        &[
            "suppress",
            "add",
            "ilaria.dangelo@gmail.com",
            "--reason",
            "mailbox closed",
        ],
        &[],
    );
    app.deliver().await;
    let (_, state, reason, _, _) = row_of(&app, "U0002").await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("skipped", Some("suppressed"))
    );
    let files: Vec<String> = app.eml_files().into_iter().map(|(name, _)| name).collect();
    assert!(
        !files
            .iter()
            .any(|f| f.contains(".U0001.") || f.contains(".U0002.")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.contains(".U0003.")), "{files:?}");

    let explain = ok(&app, &["explain", "U0002"], &[]);
    assert!(explain.contains("suppressed addresses"), "{explain}");
    assert!(
        explain.contains("ilaria.dangelo@gmail.com") && explain.contains("mailbox closed"),
        "{explain}"
    );
    assert!(explain.contains(" suppressed"), "{explain}");
    let status = ok(&app, &["status", "--json"], &[]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let suppressed: u64 = status["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["counts"]["suppressed"].as_u64().unwrap())
        .sum();
    assert_eq!(suppressed, 2, "{status}");
    let text = ok(&app, &["status"], &[]);
    assert!(text.contains("suppressed"), "{text}");
    let campaign = ok(
        &app,
        &["campaign", "show", "registration_incomplete-2026-11-30"],
        &[],
    );
    assert!(campaign.contains("(2 suppressed address)"), "{campaign}");

    // Removed: the next step reaches the address again.
    let removed = ok(&app, &["suppress", "remove", "NICOLO.MANCO@libero.it"], &[]);
    assert!(removed.contains("removed"), "{removed}");
    let gone = app.avvisi(&["suppress", "remove", "nicolo.manco@libero.it"], &[]);
    assert!(!gone.status.success());
    assert!(
        out(&gone).contains("is not on the suppression list"),
        "{}",
        out(&gone)
    );
    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    app.plan().await;
    let states: Vec<String> = rows_of(&app, "U0001")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(states, vec!["skipped", "pending"]);
    let states: Vec<String> = rows_of(&app, "U0002")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(states, vec!["skipped", "skipped"]);
    let list = app.avvisi(&["suppress", "list"], &[]);
    assert!(
        out(&list).contains("ilaria.dangelo@gmail.com"),
        "{}",
        out(&list)
    );
}

on_both_backends!(suppressed_addresses_are_skipped_when_planning_and_when_sending);
