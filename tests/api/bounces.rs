//! Bounces and the suppression list, as operators use them: `avvisi suppress`, a relay that says
//! a mailbox does not exist, the envelope sender the relay sees, `avvisi bounces import` of a
//! folder of returned mail, and the institutional address a suppressed user is written to.

use sqlx::Row;

use crate::helpers::{at, TestApp};
use crate::on_both_backends;
use crate::smtp_sink::{Fault, SmtpSink};

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

fn smtp(app: &TestApp, url: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![
        ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
        ("AVVISI__SMTP__URL", url),
    ];
    settings.extend_from_slice(extra);
    app.with_settings(&settings)
}

/// `550 5.1.1` at RCPT: that message fails with the reply, the address is suppressed at once
/// (source relay), later steps skip it, and the circuit breaker neither trips nor is held back.
/// A 5.1.8 to MAIL FROM (our sender refused) suppresses nobody: it is the breaker's.
async fn no_such_user_at_rcpt_suppresses_the_address(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let unknown = ["nicolo.manco@libero.it", "ilaria.dangelo@gmail.com"];
    let mut faults: Vec<Fault> = unknown
        .iter()
        .map(|a| Fault::RejectRcpt {
            address: a.to_string(),
            code: 550,
            text: "5.1.1 <mailbox> Recipient address rejected: User unknown".into(),
        })
        .collect();
    // A full mailbox is not a dead one: it fails the message, suppresses nothing.
    faults.push(Fault::RejectRcpt {
        address: "gioele.dellacqua@virgilio.it".into(),
        code: 552,
        text: "5.2.2 mailbox full".into(),
    });
    let sink = SmtpSink::start_with(faults).await;
    let relay = smtp(
        &app,
        &sink.url(),
        &[("AVVISI__DELIVERY__BREAKER_THRESHOLD", "2")],
    );
    let delivery = relay.deliver().await;
    assert!(delivery.breaker.is_none(), "{:?}", delivery.breaker);
    for user in ["U0001", "U0002", "U0003"] {
        assert_eq!(row_of(&app, user).await.1, "failed", "{user}");
    }
    let list = suppressed_json(&app);
    let addresses: Vec<&str> = list
        .iter()
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses.len(), 2, "{list:?}");
    for a in unknown {
        assert!(addresses.contains(&a), "{list:?}");
    }
    assert!(list.iter().all(|s| s["source"] == "relay"
        && s["reason"].as_str().unwrap().contains("550")
        && s["reason"].as_str().unwrap().contains("5.1.1")));
    let explain = ok(&app, &["explain", "U0001"], &[]);
    assert!(explain.contains("by relay"), "{explain}");

    // The next step: skipped as suppressed, nothing sent to them.
    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    app.plan().await;
    let sink = SmtpSink::start().await;
    smtp(&app, &sink.url(), &[]).deliver().await;
    for user in ["U0001", "U0002"] {
        let last = rows_of(&app, user).await.pop().unwrap();
        assert_eq!(
            (last.0.as_str(), last.1.as_deref()),
            ("skipped", Some("suppressed"))
        );
    }
    assert!(sink
        .received()
        .iter()
        .all(|r| !unknown.contains(&r.rcpt_to[0].as_str())));
    assert_eq!(rows_of(&app, "U0003").await.pop().unwrap().0, "sent");

    // Our sender refused with 5.1.8 for everyone: the breaker trips, nobody is suppressed.
    app.clock.set(at("2026-11-29T10:00:00+01:00"));
    app.plan().await;
    let sink = SmtpSink::start_with(vec![Fault::RejectMail {
        code: 553,
        text: "5.1.8 sender address domain does not resolve".into(),
    }])
    .await;
    let delivery = smtp(
        &app,
        &sink.url(),
        &[("AVVISI__DELIVERY__BREAKER_THRESHOLD", "3")],
    )
    .deliver()
    .await;
    assert_eq!(delivery.breaker.expect("tripped").reply, "553 5.1.8");
    assert_eq!(suppressed_json(&app).len(), 2);
}

/// `mail.bounce_address` is the envelope sender the relay sees; with `mail.verp` each message
/// has its own, whose token names its outbox row.
async fn the_relay_sees_the_bounce_address_and_verp(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let sink = SmtpSink::start().await;
    let bounce = [("AVVISI__MAIL__BOUNCE_ADDRESS", "bounces@istruzione.it")];
    let relay = smtp(&app, &sink.url(), &bounce);
    relay.deliver().await;
    let received = sink.received();
    assert_eq!(received.len(), 47);
    assert!(received
        .iter()
        .all(|r| r.mail_from == "bounces@istruzione.it"));
    // The From header is unchanged.
    assert!(received[0]
        .header("From")
        .unwrap()
        .contains("noreply@istruzione.it"));

    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    app.plan().await;
    let sink = SmtpSink::start().await;
    let verp = [
        ("AVVISI__MAIL__BOUNCE_ADDRESS", "bounces@istruzione.it"),
        ("AVVISI__MAIL__VERP", "true"),
    ];
    smtp(&app, &sink.url(), &verp).deliver().await;
    let received = sink.received();
    assert!(!received.is_empty());
    let mut senders = std::collections::BTreeSet::new();
    for r in &received {
        let token = r
            .mail_from
            .strip_prefix("bounces+")
            .and_then(|t| t.strip_suffix("@istruzione.it"))
            .unwrap_or_else(|| panic!("{}", r.mail_from));
        let (id, mac) = token.split_once('-').unwrap();
        assert_eq!(mac.len(), 16, "{token}");
        let id: i64 = id.parse().unwrap();
        let (recipient, message_id): (String, String) =
            sqlx::query_as("SELECT recipient, message_id FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_one(app.db.pool())
                .await
                .unwrap();
        assert_eq!(r.rcpt_to, vec![recipient]);
        assert_eq!(r.header("Message-ID").unwrap(), message_id);
        senders.insert(r.mail_from.clone());
    }
    assert_eq!(senders.len(), received.len());

    // VERP without a bounce address is refused up front, naming the key.
    let refused = app.avvisi(&["config", "show"], &[("AVVISI__MAIL__VERP", "true")]);
    assert!(!refused.status.success());
    assert!(out(&refused).contains("mail.verp"), "{}", out(&refused));
}

on_both_backends!(
    suppressed_addresses_are_skipped_when_planning_and_when_sending,
    no_such_user_at_rcpt_suppresses_the_address,
    the_relay_sees_the_bounce_address_and_verp,
);
