//! Provider deferrals (issue 25, item 4): a mailbox provider that asks us to slow down
//! (`421 4.7.28`) holds only its domain's recipients, with a backoff of its own that grows;
//! the other domains are delivered in the same pass; the breaker and the relay's fault never
//! hear of it; a message whose deadline comes first expires; after the hold the held ones go.

use chrono::Duration;

use crate::helpers::TestApp;
use crate::on_both_backends;
use testkit::smtp_sink::{Fault, SmtpSink};

on_both_backends!(a_slow_down_holds_only_that_domain_and_it_goes_after_the_hold);

const GMAIL: &str = "4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited \
     mail originating from your IP address. To protect our users from spam, mail sent from your \
     IP address has been temporarily rate limited.";

/// A sink that defers every gmail.com recipient with Gmail's words.
async fn gmail_defers() -> SmtpSink {
    SmtpSink::start_with(vec![Fault::DeferDomain {
        domain: "gmail.com".into(),
        code: 421,
        text: GMAIL.into(),
        times: u32::MAX,
    }])
    .await
}

/// The users with mail planned whose address on record is at gmail.com (none is suppressed
/// here: that address is where their email goes).
async fn gmail_users(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT user_id FROM users WHERE email LIKE '%@gmail.com' \
         AND user_id IN (SELECT user_id FROM outbox) ORDER BY user_id",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap()
}

/// RCPT commands the sink got for gmail.com addresses.
fn gmail_rcpts(sink: &SmtpSink) -> usize {
    sink.commands()
        .iter()
        .filter(|c| c.starts_with("RCPT") && c.to_ascii_lowercase().contains("@gmail.com"))
        .count()
}

async fn hold_row(app: &TestApp) -> (i64, i64) {
    sqlx::query_as("SELECT held_until, strikes FROM domain_holds WHERE domain = 'gmail.com'")
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

async fn a_slow_down_holds_only_that_domain_and_it_goes_after_the_hold(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let gmail = gmail_users(&app).await;
    let t0 = app.clock.now();
    // One gmail.com user's deadline falls inside the first hold (300 s): it must expire, not
    // be sent late.
    let late_user = gmail.last().unwrap().clone();
    sqlx::query("UPDATE outbox SET expires_at = $1 WHERE user_id = $2")
        .bind(t0.timestamp() + 120)
        .bind(&late_user)
        .execute(app.db.pool())
        .await
        .unwrap();
    let rows = app.outbox().await;
    let is_gmail = |u: &str| gmail.iter().any(|g| g == u);
    // One email per user (a digest is one).
    let emails_to = |pred: &dyn Fn(&str) -> bool| {
        let users: std::collections::BTreeSet<&str> = rows
            .iter()
            .map(|r| r.user_id.as_str())
            .filter(|u| pred(u))
            .collect();
        users.len()
    };
    let others = emails_to(&|u| !is_gmail(u));
    assert!(emails_to(&is_gmail) >= 3 && others >= 10, "{rows:?}");

    // The pass: gmail.com defers; everyone else is delivered in this very pass.
    let sink = gmail_defers().await;
    let smtp = app.smtp(
        &sink.url(),
        &[
            ("AVVISI__DELIVERY__CONCURRENCY", "1"),
            ("AVVISI__DELIVERY__BREAKER_THRESHOLD", "2"),
        ],
    );
    let report = smtp.deliver().await;
    assert!(!report.relay_unreachable, "{report:?}");
    assert!(report.breaker.is_none(), "{report:?}");
    assert_eq!(sink.count(), others, "every other domain delivered");
    assert!(sink
        .received()
        .iter()
        .flat_map(|m| &m.rcpt_to)
        .all(|to| !to.to_ascii_lowercase().ends_with("@gmail.com")));
    // Asked once: the domain's other messages were held, not tried one by one.
    assert_eq!(gmail_rcpts(&sink), 1);
    let (until, strikes) = hold_row(&app).await;
    assert_eq!((until - t0.timestamp(), strikes), (300, 1));
    let held = avvisi::deliver::hold::held(&app.db, t0).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].domain, "gmail.com");
    assert!(held[0].reply.contains("4.7.28"), "{held:?}");
    assert_eq!(report.held_domains, held, "the pass's report names it");
    for r in app.outbox().await {
        if !is_gmail(&r.user_id) {
            assert_eq!(r.state, "sent", "{r:?}");
        } else if r.user_id == late_user {
            assert_eq!(r.state, "expired", "{r:?}");
            let reason = r.reason.clone().unwrap_or_default();
            assert!(reason.contains("while gmail.com is held"), "{r:?}");
        } else {
            // Waiting for the hold, the attempt not counted.
            assert_eq!(
                (r.state.as_str(), r.attempts, r.next_attempt_at),
                ("pending", 0, until),
                "{r:?}"
            );
            let reason = r.reason.clone().unwrap_or_default();
            assert!(reason.contains("gmail.com asked to slow down"), "{r:?}");
        }
    }
    // Visible: `status` (and its JSON), `explain` for a held recipient, `/readyz` (still ready).
    let ops = avvisi::app::App::new(app.db.clone(), app.settings.clone(), app.clock.clone());
    let status = serde_json::to_value(ops.status().await.unwrap()).unwrap();
    assert_eq!(status["held_domains"][0]["domain"], "gmail.com", "{status}");
    assert_eq!(
        status["held_domains"][0]["until"],
        serde_json::to_value(held[0].until).unwrap()
    );
    let waiting_user = gmail.iter().find(|u| **u != late_user).unwrap();
    let explained = ops.explain(waiting_user, None).await.unwrap();
    assert_eq!(explained.held, held, "{explained:?}");
    let explained = ops.explain("U0001", None).await.unwrap();
    assert!(explained.held.is_empty(), "libero.it is not held");
    let health = avvisi::observe::health::Health::new(avvisi::render::live::TemplateStore::new(
        avvisi::render::templates::TemplateSet::load(&app.settings.templates_dir).unwrap(),
    ));
    let checks = avvisi::observe::health::readiness(&app.db, &app.settings, &health, t0).await;
    let deferrals = checks.iter().find(|c| c.name == "deferrals").unwrap();
    assert!(deferrals.ok, "{}", deferrals.detail);
    assert!(
        deferrals
            .detail
            .contains("gmail.com until 2026-11-23T09:05:00+00:00"),
        "{}",
        deferrals.detail
    );
    let waiting = app
        .outbox()
        .await
        .iter()
        .filter(|r| r.state == "pending")
        .count();
    assert!(waiting > 0);

    // A minute later, the domain's rows due again (as if planned since, or by a daemon that
    // did not hear the reply): the claim holds them back, untried, until the hold's end.
    app.clock.advance(Duration::seconds(60));
    sqlx::query("UPDATE outbox SET next_attempt_at = $1 WHERE state = 'pending'")
        .bind(app.clock.now().timestamp())
        .execute(app.db.pool())
        .await
        .unwrap();
    let report = smtp.deliver().await;
    assert!(!report.relay_unreachable, "{report:?}");
    assert_eq!((sink.count(), gmail_rcpts(&sink)), (others, 1));
    assert!(report.held_back > 0, "{report:?}");
    for r in app.outbox().await.iter().filter(|r| r.state == "pending") {
        assert_eq!((r.attempts, r.next_attempt_at), (0, until), "{r:?}");
    }

    // The hold is over, the provider still defers: a second hold, twice as long.
    app.clock.set(t0 + Duration::seconds(301));
    smtp.deliver().await;
    assert_eq!((sink.count(), gmail_rcpts(&sink)), (others, 2));
    let (until, strikes) = hold_row(&app).await;
    assert_eq!((until - (t0.timestamp() + 301), strikes), (600, 2));

    // After it, the provider accepts again: the held ones go, each once.
    app.clock.set(t0 + Duration::seconds(301 + 601));
    let good = SmtpSink::start().await;
    let report = app.smtp(&good.url(), &[]).deliver().await;
    assert!(!report.relay_unreachable, "{report:?}");
    // One email each (a digest is one), the expired one's user excepted.
    assert_eq!(good.count(), gmail.len() - 1);
    assert!(avvisi::deliver::hold::held(&app.db, app.clock.now())
        .await
        .unwrap()
        .is_empty());
    for r in app.outbox().await {
        let want = if r.user_id == late_user {
            "expired"
        } else {
            "sent"
        };
        assert_eq!(r.state, want, "{r:?}");
    }
}
