//! A provider's refusal of our authentication (issue 25, item 4): `550 5.7.515` (Microsoft) or
//! `5.7.26` (Gmail) is about us, not the recipient: delivery stops as for a relay-wide
//! refusal, every message stays pending (no attempt counted, nothing failed or suppressed), and
//! `/readyz` names the reply.

use std::time::Duration;

use testkit::smtp_sink::{Fault, SmtpSink};

use crate::helpers::{served_address, TestApp};
use crate::on_both_backends;

on_both_backends!(a_refusal_of_our_authentication_stops_delivery_and_fails_no_one);

const REPLY: &str =
    "5.7.515 Access denied, sending domain istruzione.it does not meet the required authentication level";

async fn a_refusal_of_our_authentication_stops_delivery_and_fails_no_one(app: TestApp) {
    let sink = SmtpSink::start_with(vec![Fault::RejectAllData {
        code: 550,
        text: REPLY.to_string(),
    }])
    .await;
    let url = sink.url();
    let run_app = app.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_app.avvisi(
            &[
                "run",
                "--once",
                "--import",
                "examples/users.csv",
                "--now",
                "2026-11-23T10:00:00+01:00",
            ],
            &testkit::smtp::settings(&url),
        )
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 3: the relay stopped delivery; its reply in the summary.
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("(550): 5.7.515 Access denied"), "{text}");
    // One message tried, refused; everything still pending, no attempt counted, none failed,
    // nobody suppressed.
    assert_eq!(sink.accepted(), 0);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 47);
    assert!(
        rows.iter().all(|r| r.state == "pending" && r.attempts == 0),
        "{rows:?}"
    );
    let suppressed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM suppressions")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(suppressed, 0);

    // The daemon: /readyz fails on the relay and names the reply.
    let log = app.dir.path().join("daemon.log");
    let url = sink.url();
    let mut env = testkit::smtp::env(&url);
    env.push(("AVVISI__HTTP__ADDRESS", "127.0.0.1:0".to_string()));
    env.push(("AVVISI__DAEMON__POLL_SECONDS", "1".to_string()));
    env.push(("AVVISI__IMPORT__MAX_AGE_HOURS", "100000".to_string()));
    let daemon = app.spawn(
        &["daemon", "--now", "2026-11-23T10:05:00+01:00"],
        &env,
        &log,
    );
    let address = served_address(&daemon, &log).await;
    let body = testkit::process::eventually(
        "/readyz naming the provider's refusal",
        Duration::from_secs(60),
        || async {
            let (code, _, body) = crate::helpers::http_get(&address, "/readyz")?;
            (code == 503 && body.contains("FAIL relay") && body.contains("5.7.515")).then_some(body)
        },
    )
    .await;
    assert!(body.contains("authentication"), "{body}");
    daemon.terminate().await;
    let rows = app.outbox().await;
    assert!(rows.iter().all(|r| r.state == "pending"), "{rows:?}");
    app.teardown().await;
}
