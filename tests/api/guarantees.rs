//! The promises of docs/guarantees.md that no other case would see break: the sending hours at
//! both ends of the window, the circuit breaker really pausing, and the retry policy's numbers
//! (backoff beyond the first retry, the cap, `max_attempts`, no retry past the deadline).

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::Row;

use crate::helpers::{at, OutboxRow, TestApp};
use crate::on_both_backends;
use testkit::process::wait_until;
use testkit::smtp_sink::{ClosedPort, Fault, SmtpSink};

/// Planned at 19:30 and not delivered: at 20:00 (the window's end) nothing goes out, nor at
/// 07:59:59 the next morning; at 08:00 everything does.
async fn nothing_is_sent_before_the_window_opens_nor_after_it_closes(app: TestApp) {
    app.import_examples().await;
    app.clock.set(at("2026-11-23T19:30:00+01:00"));
    let planned = app.plan().await;
    assert_eq!(planned.iter().map(|p| p.rows).sum::<u64>(), 47);

    for instant in ["2026-11-23T20:00:00+01:00", "2026-11-24T07:59:59+01:00"] {
        app.clock.set(at(instant));
        let delivery = app.deliver().await;
        assert!(delivery.outside_sending_hours, "{instant}");
        assert!(app.eml_files().is_empty(), "{instant}: nothing sent");
        assert!(
            app.outbox().await.iter().all(|r| r.state == "pending"),
            "{instant}"
        );
    }

    app.clock.set(at("2026-11-24T08:00:00+01:00"));
    let delivery = app.deliver().await;
    assert!(!delivery.outside_sending_hours);
    assert_eq!(app.eml_files().len(), 30, "one email per person");
    assert!(app.outbox().await.iter().all(|r| r.state == "sent"));
}

/// Every address of the imported snapshot refused after DATA with one identical reply: the
/// breaker trips, and the campaigns of the streak are paused with the reply as the reason.
async fn the_breaker_pauses_the_campaigns_of_the_streak(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let mut addresses = BTreeSet::new();
    for r in sqlx::query("SELECT email, institutional_email FROM users")
        .fetch_all(app.db.pool())
        .await
        .unwrap()
    {
        addresses.insert(r.get::<String, _>(0));
        if let Some(a) = r.get::<Option<String>, _>(1) {
            addresses.insert(a);
        }
    }
    assert!(addresses.len() >= 40, "{addresses:?}");
    let faults = addresses
        .iter()
        .map(|a| Fault::RejectData {
            address: a.clone(),
            code: 554,
            text: "5.7.1 message refused as spam".into(),
        })
        .collect();
    let sink = SmtpSink::start_with(faults).await;
    let blocked = app.smtp(
        &sink.url(),
        &[
            ("AVVISI__DELIVERY__BREAKER_THRESHOLD", "10"),
            ("AVVISI__DELIVERY__CONCURRENCY", "1"),
        ],
    );
    let delivery = blocked.deliver().await;
    let b = delivery.breaker.expect("the breaker tripped");
    assert_eq!(b.reply, "554 5.7.1");
    // The campaigns of the streak's emails (a digest's merged rows travel with their lead's).
    let streak: BTreeSet<String> = b.paused.iter().cloned().collect();
    assert!(!streak.is_empty(), "{b:?}");
    assert!(
        streak.iter().all(|c| b.per_campaign.contains_key(c)),
        "{b:?}"
    );

    // In the database: exactly the streak's campaigns paused, each with the reply.
    let rows = sqlx::query("SELECT name, state, paused_reason FROM campaigns")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    let mut paused = BTreeSet::new();
    for r in &rows {
        let (name, state): (String, String) = (r.get(0), r.get(1));
        if state == "paused" {
            let reason: Option<String> = r.get(2);
            let reason = reason.unwrap_or_default();
            assert!(
                reason.starts_with("circuit breaker") && reason.contains("554 5.7.1"),
                "{name}: {reason}"
            );
            paused.insert(name);
        }
    }
    assert_eq!(paused, streak);

    // Nothing of a paused campaign goes out, even to a relay that accepts everything now.
    let good = SmtpSink::start().await;
    let delivery = app.smtp(&good.url(), &[]).deliver().await;
    assert!(delivery.breaker.is_none());
    let outbox = app.outbox().await;
    for r in outbox.iter().filter(|r| streak.contains(&r.campaign)) {
        assert_eq!(r.state, "pending", "{r:?}");
    }
}

/// The next attempt of each row, in seconds after `now`.
/// `app` delivering to a relay that answers 451 after every DATA, the circuit breaker off (so
/// that every message meets the reply), with `extra` settings; keep the sink alive.
async fn behind_a_451_relay(app: &TestApp, extra: &[(&str, &str)]) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start_with(vec![Fault::RejectAllData {
        code: 451,
        text: "4.3.0 try again later".into(),
    }])
    .await;
    let mut settings = vec![("AVVISI__DELIVERY__BREAKER_THRESHOLD", "0")];
    settings.extend_from_slice(extra);
    (app.smtp(&sink.url(), &settings), sink)
}

fn waits(rows: &[OutboxRow], now: i64) -> Vec<i64> {
    rows.iter().map(|r| r.next_attempt_at - now).collect()
}

/// A relay answering 451 to every message: retry n waits retry_base_seconds * 2^(n-1), +-25%
/// (60, 120, 240 s); the attempts count up; the next pass waits for the latest retry.
async fn each_retry_waits_twice_as_long(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let (app, _sink) = behind_a_451_relay(&app, &[("AVVISI__DELIVERY__CONCURRENCY", "1")]).await;
    let base = app.settings.delivery.retry_base_seconds as i64;
    assert_eq!(base, 60);
    for attempt in 1..=3i64 {
        let now = app.clock.now().timestamp();
        let delivery = app.deliver().await;
        assert!(!delivery.relay_unreachable);
        let rows = app.outbox().await;
        assert_eq!(rows.len(), 47);
        let expected = base << (attempt - 1);
        for (r, wait) in rows.iter().zip(waits(&rows, now)) {
            assert_eq!(
                (r.state.as_str(), r.attempts),
                ("pending", attempt),
                "{r:?}"
            );
            assert_eq!(r.smtp_code, Some(451));
            assert!(
                (expected * 3 / 4..=expected * 5 / 4).contains(&wait),
                "attempt {attempt}: waits {wait} s, expected {expected} s +-25%"
            );
        }
        let latest = rows.iter().map(|r| r.next_attempt_at).max().unwrap();
        app.clock
            .set(chrono::DateTime::from_timestamp(latest, 0).unwrap());
    }
}

/// The backoff is capped at retry_max_seconds: a row at its eleventh attempt waits about an hour
/// (+-25%), not 60 * 2^10 s.
async fn the_backoff_is_capped(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    sqlx::query("UPDATE outbox SET attempts = 10")
        .execute(app.db.pool())
        .await
        .unwrap();
    let (app, _sink) = behind_a_451_relay(
        &app,
        &[
            ("AVVISI__DELIVERY__MAX_ATTEMPTS", "100"),
            ("AVVISI__DELIVERY__RETRY_MAX_SECONDS", "3600"),
        ],
    )
    .await;
    let now = app.clock.now().timestamp();
    app.deliver().await;
    let rows = app.outbox().await;
    for (r, wait) in rows.iter().zip(waits(&rows, now)) {
        assert_eq!((r.state.as_str(), r.attempts), ("pending", 11), "{r:?}");
        assert!((2700..=4500).contains(&wait), "waits {wait} s");
    }
}

/// `max_attempts` (here 2) attempts refused with a 4xx: the message is failed, with the reply.
async fn max_attempts_fail_the_message(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let (app, _sink) = behind_a_451_relay(&app, &[("AVVISI__DELIVERY__MAX_ATTEMPTS", "2")]).await;
    app.deliver().await;
    assert!(app
        .outbox()
        .await
        .iter()
        .all(|r| r.state == "pending" && r.attempts == 1));
    let latest = app
        .outbox()
        .await
        .iter()
        .map(|r| r.next_attempt_at)
        .max()
        .unwrap();
    app.clock
        .set(chrono::DateTime::from_timestamp(latest, 0).unwrap());
    app.deliver().await;
    let rows = app.outbox().await;
    for r in &rows {
        assert_eq!((r.state.as_str(), r.attempts), ("failed", 2), "{r:?}");
        assert_eq!(r.smtp_code, Some(451), "{r:?}");
        let reason = r.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("gave up after 2 attempts"), "{reason}");
    }
    // Nothing more is tried, however long one waits.
    app.clock.set(at("2026-11-23T18:00:00+01:00"));
    app.deliver().await;
    assert_eq!(app.outbox().await, rows);
}

/// A 4xx thirty seconds before the deadline: the first retry (60 s +-25%) would come after it, so
/// the message expires now instead of being retried late.
async fn no_retry_is_scheduled_past_the_deadline(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let now = app.clock.now().timestamp();
    sqlx::query("UPDATE outbox SET expires_at = $1")
        .bind(now + 30)
        .execute(app.db.pool())
        .await
        .unwrap();
    let (app, _sink) = behind_a_451_relay(&app, &[]).await;
    app.deliver().await;
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 47);
    for r in &rows {
        assert_eq!((r.state.as_str(), r.attempts), ("expired", 1), "{r:?}");
        let reason = r.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("deadline would pass before the next attempt")
                && reason.contains("451"),
            "{reason}"
        );
    }
}

/// The daemon (the binary) starts while nothing listens on the relay's port: it plans, finds the
/// relay unreachable, fails nothing and logs the outage once; a relay then comes back on that
/// port and the same daemon, never restarted, delivers every email exactly once.
async fn the_daemon_resumes_by_itself_after_a_relay_outage(app: TestApp) {
    use crate::crash::{log_dir, wait_settled, NOW};
    app.import_examples().await;
    // A port held here and not listening: connections to it are refused until the relay is
    // back on it.
    let port = ClosedPort::bind();
    let mut env = testkit::smtp::env(&port.url());
    env.extend([
        ("AVVISI__DAEMON__PLANNER_CRON", "* * * * * *".into()),
        ("AVVISI__DAEMON__POLL_SECONDS", "1".into()),
        ("AVVISI__DAEMON__RELAY_BACKOFF_MAX_SECONDS", "2".into()),
    ]);
    let log =
        log_dir(&format!("outage-{:?}-{}", app.backend, std::process::id())).join("daemon.log");
    // -v: each message handed back for the refusal is logged at debug level, in its batch's span
    // (the outage itself once per change, at error level).
    let daemon = app.spawn(&["-v", "daemon", "--now", NOW], &env, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let stopped = "delivery stopped by the relay";

    // Down: everything planned, the outage logged, and met again by a later pass (the daemon
    // keeps trying, backing off: two batches handed back); nothing failed or attempted.
    let passes_refused = |log: &str| -> usize {
        log.lines()
            .filter(|l| l.contains("not sent: the relay refuses the session"))
            .filter_map(|l| l.split("batch{batch=").nth(1)?.split(' ').next())
            .collect::<BTreeSet<_>>()
            .len()
    };
    wait_until("two passes refused", Duration::from_secs(60), || {
        let (log, app) = (read_log(), app.clone());
        async move {
            log.contains(stopped) && passes_refused(&log) >= 2 && app.outbox().await.len() == 47
        }
    })
    .await;
    // Waiting as planned, or claimed by the pass under way (handed back as it was).
    for r in app.outbox().await {
        match r.state.as_str() {
            "pending" => assert_eq!((r.attempts, r.reason.as_deref()), (0, None), "{r:?}"),
            "sending" => {}
            _ => panic!("a message changed for the relay's fault: {r:?}"),
        }
    }
    assert!(daemon.try_wait().is_none(), "the daemon runs on");

    // Back: the same daemon delivers everything (47 reminders to 30 people: 30 emails).
    let sink = port.open();
    let received = sink.wait_for(30, Duration::from_secs(60)).await;
    assert_eq!(received.len(), 30, "see {}", log.display());
    let states = wait_settled(&app, Duration::from_secs(60)).await;
    assert_eq!(states.get("sent"), Some(&47), "{states:?}");
    assert!(
        daemon.try_wait().is_none(),
        "never restarted: the same process delivered"
    );
    assert_eq!(daemon.terminate().await, Some(0));
    let received = sink.received();
    assert_eq!(
        (
            received.len(),
            testkit::smtp_sink::distinct_message_ids(&received)
        ),
        (30, 30),
        "each email exactly once"
    );
    let text = read_log();
    assert_eq!(text.matches(stopped).count(), 1, "logged once: {text}");
    assert!(text.contains("the relay accepts messages again"), "{text}");
}

on_both_backends!(
    the_daemon_resumes_by_itself_after_a_relay_outage,
    nothing_is_sent_before_the_window_opens_nor_after_it_closes,
    the_breaker_pauses_the_campaigns_of_the_streak,
    each_retry_waits_twice_as_long,
    the_backoff_is_capped,
    max_attempts_fail_the_message,
    no_retry_is_scheduled_past_the_deadline,
);
