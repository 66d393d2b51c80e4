//! Faults of the relay, class by class, against a relay the test controls: a fault of the relay
//! (wrong password, blocked host, TLS trouble) changes no message; a fault of one message counts
//! an attempt and is retried or failed; a streak of identical refusals trips the circuit
//! breaker; `retry --failed` brings back what a fault failed.

use std::process::Output;
use std::time::Duration;

use crate::helpers::{untouched, OutboxRow, TestApp};
use crate::on_both_backends;
use testkit::smtp_sink::{Fault, SmtpSink};

fn avvisi(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    app.avvisi(args, env)
}

/// Relay-wide refusals, one after the other on the same outbox: not one message changes state
/// or counts an attempt; delivery stops with the relay's reply; then a good relay gets each
/// message exactly once.
async fn a_fault_of_the_relay_changes_no_message(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let with = |faults: Vec<Fault>| SmtpSink::start_with(faults);
    let password = [
        ("AVVISI__SMTP__USERNAME", "avvisi"),
        ("AVVISI__SMTP__PASSWORD", "wrong"),
    ];
    /// What, the relay, what its reply must show, extra settings.
    type Case<'a> = (&'a str, SmtpSink, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "wrong password",
            with(vec![Fault::Auth {
                code: 535,
                text: "5.7.8 Authentication credentials invalid".into(),
            }])
            .await,
            "535",
            password.to_vec(),
        ),
        (
            "blocked at the greeting",
            with(vec![Fault::Greet {
                code: 554,
                text: "5.7.1 service unavailable; client host blocked".into(),
            }])
            .await,
            "554",
            vec![],
        ),
        (
            "421 at the greeting",
            with(vec![Fault::RefuseGreeting { times: 100 }]).await,
            "421",
            vec![],
        ),
        (
            "authentication required at MAIL",
            with(vec![Fault::RejectMail {
                code: 530,
                text: "5.7.0 Authentication required".into(),
            }])
            .await,
            "530",
            vec![],
        ),
        (
            "the relay requires STARTTLS",
            with(vec![Fault::RejectMail {
                code: 530,
                text: "5.7.0 Must issue a STARTTLS command first".into(),
            }])
            .await,
            "STARTTLS",
            vec![],
        ),
    ];
    for (what, sink, expected, extra) in cases {
        let app = app.smtp(&sink.url(), &extra);
        let delivery = app.deliver().await;
        assert!(delivery.relay_unreachable, "{what}: delivery stops");
        let fault = delivery.relay_fault.clone().unwrap_or_default();
        assert!(fault.contains(expected), "{what}: {fault}");
        untouched(&app.outbox().await);
        assert!(sink.received().is_empty(), "{what}");
    }

    // avvisi requires STARTTLS and the relay does not offer it; or offers it and fails it.
    let plain = SmtpSink::start().await;
    let required = format!("{}?tls=required", plain.url());
    let delivery = app.smtp(&required, &[]).deliver().await;
    assert!(delivery
        .relay_fault
        .unwrap()
        .contains("does not offer STARTTLS"));
    untouched(&app.outbox().await);
    let broken = SmtpSink::start_with(vec![Fault::OfferStartTls]).await;
    let required = format!("{}?tls=required", broken.url());
    let delivery = app.smtp(&required, &[]).deliver().await;
    assert!(delivery.relay_unreachable);
    untouched(&app.outbox().await);

    // The operator's view: one line with the relay's reply, exit status 3, nothing failed.
    let sink = with(vec![Fault::Auth {
        code: 535,
        text: "5.7.8 Authentication credentials invalid".into(),
    }])
    .await;
    let out = avvisi(
        &app,
        &["run", "--once", "--now", "2026-11-23T10:00:00+01:00"],
        &testkit::smtp::with(
            &sink.url(),
            &[
                ("AVVISI__SMTP__USERNAME", "avvisi"),
                ("AVVISI__SMTP__PASSWORD", "wrong"),
            ],
        ),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("delivery stopped"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("535") && line.contains("5.7.8"), "{line}");
    assert!(!err.contains("wrong"), "no secret in the output: {err}");
    untouched(&app.outbox().await);

    // The relay is fixed: everything goes out, each exactly once.
    let good = SmtpSink::start().await;
    let delivery = app.smtp(&good.url(), &[]).deliver().await;
    assert!(!delivery.relay_unreachable);
    // 47 reminders to 30 people: 30 emails.
    let received = good.wait_for(30, Duration::from_secs(10)).await;
    let ids = testkit::smtp_sink::distinct_message_ids(&received);
    assert_eq!((received.len(), ids), (30, 30));
    assert!(app.outbox().await.iter().all(|r| r.state == "sent"));
}

/// Faults of one message: the attempt counts, and the message is retried later (4xx, no reply
/// once under way) or failed (5xx), with the reply recorded.
async fn a_fault_of_the_message_counts_an_attempt(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let now = app.clock.now().timestamp();
    let base = app.settings.delivery.retry_base_seconds as i64;
    let in_backoff = |r: &OutboxRow| {
        // The first retry waits retry_base_seconds, +-25%.
        let wait = r.next_attempt_at - now;
        (base * 3 / 4..=base * 5 / 4).contains(&wait)
    };

    // 4xx at MAIL, and at DATA: retried later.
    for fault in [
        Fault::RejectMail {
            code: 451,
            text: "4.3.0 try again later".into(),
        },
        Fault::RejectAllData {
            code: 452,
            text: "4.3.1 insufficient system storage".into(),
        },
    ] {
        let sink = SmtpSink::start_with(vec![fault.clone()]).await;
        let app = app.smtp(&sink.url(), &[("AVVISI__DELIVERY__CONCURRENCY", "1")]);
        let delivery = app.deliver().await;
        assert!(!delivery.relay_unreachable, "{fault:?}");
        let rows = app.outbox().await;
        let retried: Vec<&OutboxRow> = rows.iter().filter(|r| r.attempts == 1).collect();
        assert_eq!(retried.len(), 47, "{fault:?}");
        for r in &retried {
            assert_eq!(r.state, "pending");
            assert!(
                r.smtp_code == Some(451) || r.smtp_code == Some(452),
                "{r:?}"
            );
            assert!(
                in_backoff(r),
                "next attempt {} s later",
                r.next_attempt_at - now
            );
        }
        // Reset for the next case: as planned.
        sqlx::query(
            "UPDATE outbox SET attempts = 0, next_attempt_at = $1, reason = NULL, smtp_code = NULL",
        )
        .bind(now)
        .execute(app.db.pool())
        .await
        .unwrap();
    }

    // A connection dropped in the middle of DATA, and a relay that stops answering: the relay
    // may have the message, so the attempt counts; delivery stops as a whole.
    for (fault, timeout) in [
        (Fault::DropInData { times: 100 }, "30"),
        (Fault::SlowData { millis: 5_000 }, "1"),
    ] {
        let sink = SmtpSink::start_with(vec![fault.clone()]).await;
        let app = app.smtp(
            &sink.url(),
            &[
                ("AVVISI__DELIVERY__CONCURRENCY", "2"),
                ("AVVISI__SMTP__TIMEOUT_SECONDS", timeout),
            ],
        );
        let delivery = app.deliver().await;
        assert!(delivery.relay_unreachable, "{fault:?}");
        let rows = app.outbox().await;
        let tried: Vec<&OutboxRow> = rows.iter().filter(|r| r.attempts == 1).collect();
        assert!((1..=2).contains(&tried.len()), "{fault:?}: {}", tried.len());
        for r in &tried {
            assert_eq!(r.state, "pending", "{fault:?}");
            assert!(in_backoff(r), "{fault:?}");
        }
        assert!(rows.iter().all(|r| r.state == "pending"));
        sqlx::query(
            "UPDATE outbox SET attempts = 0, next_attempt_at = $1, reason = NULL, smtp_code = NULL",
        )
        .bind(now)
        .execute(app.db.pool())
        .await
        .unwrap();
    }

    // 5xx at MAIL (not 530): this message fails at once, with the reply.
    let sink = SmtpSink::start_with(vec![Fault::RejectMail {
        code: 550,
        text: "5.7.1 sender rejected".into(),
    }])
    .await;
    let app = app.smtp(&sink.url(), &[("AVVISI__DELIVERY__BREAKER_THRESHOLD", "0")]);
    app.deliver().await;
    let rows = app.outbox().await;
    assert!(
        rows.iter()
            .all(|r| r.state == "failed" && r.attempts == 1 && r.smtp_code == Some(550)),
        "{rows:?}"
    );
}

/// Fifty (here ten) different recipients in a row refused with the same reply: the relay is
/// refusing us. Delivery stops, the streak goes back to the queue untouched, the campaigns are
/// paused with the reply; a few bad addresses among good ones still fail one by one.
async fn the_circuit_breaker_pauses_instead_of_failing_everyone(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let spam = Fault::RejectAllData {
        code: 554,
        text: "5.7.1 message refused as spam".into(),
    };
    let sink = SmtpSink::start_with(vec![spam]).await;
    let breaker = [
        ("AVVISI__DELIVERY__BREAKER_THRESHOLD", "10"),
        ("AVVISI__DELIVERY__CONCURRENCY", "2"),
    ];
    let blocked = app.smtp(&sink.url(), &breaker);
    let delivery = blocked.deliver().await;
    let b = delivery.breaker.clone().expect("the breaker tripped");
    assert_eq!(b.reply, "554 5.7.1");
    // Counted in emails; their rows (a digest's with it) go back to the queue.
    assert!((10..=11).contains(&b.emails), "{b:?}");
    assert!(b.given_back >= b.emails, "{b:?}");
    assert!(delivery.relay_fault.unwrap().contains("554"));
    // Not an empty list the checks below would pass over.
    assert!(!b.paused.is_empty(), "{b:?}");
    untouched(&app.outbox().await);
    let status = avvisi(&app, &["status"], &[]);
    let out = String::from_utf8_lossy(&status.stdout);
    for campaign in &b.paused {
        assert!(
            out.contains(&format!("campaign {campaign} is paused: circuit breaker")),
            "{out}"
        );
    }
    // The history keeps what the relay said.
    let history: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox_history WHERE event = 'circuit breaker' AND smtp_code = 554",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(history as u64, b.given_back);

    // Resumed after the relay is fixed, with three bad addresses among the good ones.
    for campaign in &b.paused {
        let out = avvisi(&app, &["campaign", "resume", campaign], &[]);
        assert!(out.status.success());
    }
    // Addresses of the imported snapshot (examples/users.csv: U0001, U0007, U0009).
    let bad = [
        "nicolo.manco@libero.it",
        "giuseppe.russo@gmail.com",
        "alessandro.pirro@outlook.it",
    ];
    let faults = bad
        .iter()
        .map(|a| Fault::RejectData {
            address: a.to_string(),
            code: 554,
            text: "5.7.1 message refused as spam".into(),
        })
        .collect();
    let sink = SmtpSink::start_with(faults).await;
    let delivery = app.smtp(&sink.url(), &breaker).deliver().await;
    assert!(delivery.breaker.is_none());
    let rows = app.outbox().await;
    let failed = rows.iter().filter(|r| r.state == "failed").count();
    let sent = rows.iter().filter(|r| r.state == "sent").count();
    assert_eq!(failed + sent, 47);
    // The three bad addresses fail one by one (their digests' rows with them); no one else.
    let mut failed_users: Vec<&str> = rows
        .iter()
        .filter(|r| r.state == "failed")
        .map(|r| r.user_id.as_str())
        .collect();
    failed_users.sort();
    failed_users.dedup();
    assert_eq!(failed_users, ["U0001", "U0007", "U0009"]);
    // One email per Message-ID: a digest's rows share their lead's.
    let sent_emails: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.state == "sent")
        .map(|r| r.message_id.as_str())
        .collect();
    assert_eq!(sent_emails.len(), sink.received().len());
}

/// The way back: `retry --failed` puts failed messages back as new, filtered by reply, with the
/// failure kept in the history; a dry run changes nothing; nothing past its deadline.
async fn retry_brings_back_what_a_fault_failed(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let sink = SmtpSink::start_with(vec![Fault::RejectMail {
        code: 550,
        text: "5.7.1 relaying temporarily denied".into(),
    }])
    .await;
    app.smtp(&sink.url(), &[("AVVISI__DELIVERY__BREAKER_THRESHOLD", "0")])
        .deliver()
        .await;
    assert!(app.outbox().await.iter().all(|r| r.state == "failed"));

    let at = ["--now", "2026-11-23T11:00:00+01:00"];
    let retry = |args: &[&str]| avvisi(&app, &[&["retry", "--failed"], args, &at].concat(), &[]);
    let dry = retry(&["--reply", "550", "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{out}");
    assert!(
        out.contains("would be retried") && out.contains("dry run"),
        "{out}"
    );
    assert!(app.outbox().await.iter().all(|r| r.state == "failed"));

    let other = retry(&["--reply", "535"]);
    assert!(String::from_utf8_lossy(&other.stdout).contains("nothing to retry"));

    let one = "registration_incomplete-2026-11-30";
    let out = retry(&["--campaign", one]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let rows = app.outbox().await;
    let back: Vec<&OutboxRow> = rows.iter().filter(|r| r.campaign == one).collect();
    assert!(!back.is_empty());
    assert!(back
        .iter()
        .all(|r| r.state == "pending" && r.attempts == 0 && r.reason.is_none()));
    assert!(text.contains(one), "{text}");
    assert!(rows
        .iter()
        .filter(|r| r.campaign != one)
        .all(|r| r.state == "failed"));

    // `explain` shows the failure the retry put back.
    let user = &back[0].user_id;
    let explained = avvisi(&app, &["explain", user], &[]);
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(
        text.contains("earlier: failed")
            && text.contains("(reply 550)")
            && text.contains("retry --failed"),
        "{text}"
    );

    // After the deadline nothing comes back: every other failed message is past it.
    let after = ["--now", "2026-12-01T09:00:00+01:00"];
    let out = avvisi(&app, &[&["retry", "--failed"][..], &after].concat(), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let still_failed = app
        .outbox()
        .await
        .iter()
        .filter(|r| r.campaign != one)
        .filter(|r| r.state == "failed")
        .count();
    assert!(still_failed > 0);
    assert_eq!(
        app.outbox()
            .await
            .iter()
            .filter(|r| r.state == "failed")
            .count(),
        still_failed,
        "{text}"
    );
    assert!(text.contains("past deadline"), "{text}");

    // The retried ones go out (they were put back due at the retry's time).
    app.clock
        .set(crate::helpers::at("2026-11-23T11:00:00+01:00"));
    let good = SmtpSink::start().await;
    app.smtp(&good.url(), &[]).deliver().await;
    assert_eq!(good.received().len(), back.len());
}

on_both_backends!(
    a_fault_of_the_relay_changes_no_message,
    a_fault_of_the_message_counts_an_attempt,
    the_circuit_breaker_pauses_instead_of_failing_everyone,
    retry_brings_back_what_a_fault_failed,
);
