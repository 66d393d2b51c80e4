//! What the relay's replies after the body mean, and the envelope id (issue 25, item 5): a
//! 5.1.x after DATA suppresses the address as one at RCPT does; a full mailbox the relay calls
//! permanent (5.2.2) fails its message without suppressing the address; `ENVID` goes on MAIL
//! FROM when the relay offers DSN, and `bounces import` links a DSN by it, without VERP.

use sqlx::Row;

use crate::helpers::TestApp;
use crate::on_both_backends;
use testkit::smtp_sink::{Fault, SmtpSink};

on_both_backends!(
    a_no_such_user_after_the_body_suppresses_like_one_at_rcpt,
    a_full_mailbox_the_relay_calls_permanent_fails_and_is_not_suppressed,
    envid_goes_on_mail_from_when_the_relay_offers_dsn_and_bounces_link_by_it,
);

/// (state, attempts, smtp_code) of every row of `user_id`.
async fn rows_of(app: &TestApp, user_id: &str) -> Vec<(String, i64, Option<i64>)> {
    sqlx::query("SELECT state, attempts, smtp_code FROM outbox WHERE user_id = $1 ORDER BY id")
        .bind(user_id)
        .fetch_all(app.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// (source, reason) of the suppression of `address`, if any.
async fn suppression(app: &TestApp, address: &str) -> Option<(String, String)> {
    sqlx::query("SELECT source, reason FROM suppressions WHERE address = $1")
        .bind(address)
        .fetch_optional(app.db.pool())
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

/// Delivers the examples' reminders through a sink that answers the body of U0002's email
/// (ilaria.dangelo@gmail.com) with `code text`.
async fn deliver_with_reply_to_body(app: &TestApp, code: u16, text: &str) {
    app.import_examples().await;
    app.plan().await;
    let sink = SmtpSink::start_with(vec![Fault::RejectData {
        address: "ilaria.dangelo@gmail.com".into(),
        code,
        text: text.into(),
    }])
    .await;
    let report = app.smtp(&sink.url(), &[]).deliver().await;
    assert!(!report.relay_unreachable, "{report:?}");
    // Everyone else's email went.
    assert_eq!(sink.count(), 29);
}

async fn a_no_such_user_after_the_body_suppresses_like_one_at_rcpt(app: TestApp) {
    deliver_with_reply_to_body(
        &app,
        550,
        "5.1.1 <ilaria.dangelo@gmail.com>: Recipient address rejected: User unknown",
    )
    .await;
    let rows = rows_of(&app, "U0002").await;
    assert!(
        rows.iter()
            .all(|(s, a, c)| (s.as_str(), *a, *c) == ("failed", 1, Some(550))),
        "{rows:?}"
    );
    let (source, reason) = suppression(&app, "ilaria.dangelo@gmail.com")
        .await
        .expect("suppressed");
    assert_eq!(source, "relay");
    assert!(reason.contains("5.1.1"), "{reason}");
}

async fn a_full_mailbox_the_relay_calls_permanent_fails_and_is_not_suppressed(app: TestApp) {
    deliver_with_reply_to_body(&app, 552, "5.2.2 <ilaria.dangelo@gmail.com>: mailbox full").await;
    // Failed, not retried (the relay said permanent), not suppressed (a mailbox emptied
    // tomorrow takes mail again).
    let rows = rows_of(&app, "U0002").await;
    assert!(
        rows.iter()
            .all(|(s, a, c)| (s.as_str(), *a, *c) == ("failed", 1, Some(552))),
        "{rows:?}"
    );
    assert_eq!(suppression(&app, "ilaria.dangelo@gmail.com").await, None);
}

/// A DSN from the relay that quotes no copy of the message and was not sent to a VERP
/// address: only its `Original-Envelope-Id` names the message.
fn dsn_naming_only_the_envelope(envid: &str) -> String {
    format!(
        "Return-Path: <>\r\n\
         From: Mail Delivery System <MAILER-DAEMON@relay.istruzione.it>\r\n\
         To: bounces@istruzione.it\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <dsn-envid-1@relay.istruzione.it>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\
         \r\n\
         --b\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         Your message could not be delivered.\r\n\
         --b\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; relay.istruzione.it\r\n\
         Original-Envelope-Id: {envid}\r\n\
         \r\n\
         Final-Recipient: rfc822; ilaria.dangelo@gmail.com\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 The email account that you tried to reach does not exist\r\n\
         --b--\r\n"
    )
}

async fn envid_goes_on_mail_from_when_the_relay_offers_dsn_and_bounces_link_by_it(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    // A relay without DSN: no ENVID (it would refuse the unknown parameter).
    let plain = SmtpSink::start_with(vec![Fault::RejectData {
        address: "ilaria.dangelo@gmail.com".into(),
        code: 451,
        text: "4.3.0 try again later".into(),
    }])
    .await;
    app.smtp(&plain.url(), &[]).deliver().await;
    let mails: Vec<String> = plain
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("MAIL"))
        .collect();
    assert!(!mails.is_empty());
    assert!(mails.iter().all(|c| !c.contains("ENVID")), "{mails:?}");

    // The relay offers DSN: MAIL FROM carries the message's Message-ID as its envelope id.
    app.clock.advance(chrono::Duration::hours(3));
    let dsn = SmtpSink::start_with(vec![Fault::OfferDsn]).await;
    app.smtp(&dsn.url(), &[]).deliver().await;
    let (row_id, message_id): (i64, String) = sqlx::query_as(
        "SELECT id, message_id FROM outbox WHERE user_id = 'U0002' AND (digest_of IS NULL OR digest_of = id)",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let envid = message_id.trim_matches(['<', '>']).to_string();
    // U0002's email alone was left for this relay.
    let mails: Vec<String> = dsn
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("MAIL"))
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].ends_with(&format!(" ENVID={envid}")), "{mails:?}");
    assert_eq!(rows_of(&app, "U0002").await[0].0, "sent");

    // The relay's DSN names only the envelope: `bounces import` (no VERP configured) links it
    // to U0002's message and suppresses the address.
    let folder = app.dir.path().join("bounces");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(folder.join(sub)).unwrap();
    }
    std::fs::write(
        folder.join("new").join("1795424700.M1P42.relay"),
        dsn_naming_only_the_envelope(&envid),
    )
    .unwrap();
    let list = app.dir.path().join("unrecognised.txt");
    let o = app.avvisi(
        &[
            "bounces",
            "import",
            folder.to_str().unwrap(),
            "--unrecognised",
            list.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&report["matched"], &report["hard"]),
        (&serde_json::json!(1), &serde_json::json!(1)),
        "{report}"
    );
    let linked: Option<i64> = sqlx::query_scalar(
        "SELECT outbox_id FROM bounces WHERE recipient = 'ilaria.dangelo@gmail.com'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(linked, Some(row_id));
    assert_eq!(
        suppression(&app, "ilaria.dangelo@gmail.com")
            .await
            .map(|(s, _)| s),
        Some("bounce".to_string())
    );
}
