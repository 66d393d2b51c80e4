//! Delivery: the emails themselves (headers, encodings, escaping), over files and over SMTP to a
//! real TCP server, and what happens when the relay refuses, defers or is down.

use avvisi::import::ImportOptions;

use crate::helpers::{decode_header, header, part, TestApp};
use crate::on_both_backends;
use testkit::smtp_sink::{Fault, SmtpSink};

fn eml<'a>(files: &'a [(String, String)], name_part: &str) -> &'a str {
    &files
        .iter()
        .find(|(n, _)| n.contains(name_part))
        .unwrap_or_else(|| panic!("no file {name_part}"))
        .1
}

async fn emails_have_the_promised_headers_and_italian_text(app: TestApp) {
    app.import_examples().await;
    app.run_once().await;
    let files = app.eml_files();
    let mail = eml(&files, "registration_incomplete-2026-11-30.first.U0002");
    let subject = decode_header(&header(mail, "Subject").unwrap());
    assert!(subject.contains("30 novembre 2026"), "{subject}");
    assert!(!subject.contains('\n'));
    assert_eq!(
        header(mail, "X-Avvisi-Campaign").unwrap(),
        "registration_incomplete-2026-11-30/first"
    );
    assert_eq!(header(mail, "Auto-Submitted").unwrap(), "auto-generated");
    assert_eq!(header(mail, "Content-Language").unwrap(), "it");
    assert!(header(mail, "From")
        .unwrap()
        .contains("noreply@istruzione.it"));
    assert!(header(mail, "To")
        .unwrap()
        .contains("<ilaria.dangelo@gmail.com>"));
    assert!(header(mail, "Date").is_some());
    assert!(header(mail, "Content-Type")
        .unwrap()
        .starts_with("multipart/alternative"));
    let message_id = header(mail, "Message-ID").unwrap();
    let row = app
        .outbox()
        .await
        .into_iter()
        .find(|r| r.user_id == "U0002")
        .unwrap();
    assert_eq!(message_id, row.message_id);

    let text = part(mail, "text/plain");
    assert!(text.contains("Gentile Ilaria D'Angelo"), "{text}");
    assert!(text.contains("lunedì 30 novembre 2026"), "{text}");
    assert!(text.contains("annullata"), "{text}");
    assert!(!text.contains('<'), "no HTML in the text part: {text}");
    let html = part(mail, "text/html");
    assert!(html.contains("D&#x27;Angelo"), "apostrophe escaped in HTML");
    assert!(!html.contains("<script"));

    // The stronger consequence only for users without an institutional address.
    let without = part(
        eml(&files, "email_unvalidated-2026-11-30.first.U0007"),
        "text/plain",
    );
    let with = part(
        eml(&files, "email_unvalidated-2026-11-30.first.U0012"),
        "text/plain",
    );
    assert!(without.contains("identificazione"), "{without}");
    assert!(!with.contains("identificazione"), "{with}");
}

async fn hostile_names_cannot_add_headers_or_markup(app: TestApp) {
    // Names with "&" and quotes pass validation; they must be escaped in HTML and stay one line.
    let csv = "user_id,fiscal_code,first_name,last_name,email,institutional_email,registration,enabled,pending_email,code_regeneration\n\
               U1,RSSMRA85T10A562S,\"Anna \"\"Bcc: x@evil.example\"\"\",Rossi & Figli,anna.rossi@libero.it,,started,false,,none\n";
    app.import_csv(csv, ImportOptions::default()).await.unwrap();
    app.run_once().await;
    let files = app.eml_files();
    let mail = &files[0].1;
    let names: Vec<String> = crate::helpers::headers(mail)
        .into_iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    assert!(!names.contains(&"bcc".to_string()), "{names:?}");
    let html = part(mail, "text/html");
    assert!(html.contains("Rossi &amp; Figli"), "{html}");
    let text = part(mail, "text/plain");
    assert!(
        text.contains("Rossi & Figli"),
        "no escaping artefacts in text: {text}"
    );
}

async fn smtp_delivery_reaches_the_relay(app: TestApp) {
    let sink = SmtpSink::start().await;
    let app = app.smtp(&sink.url(), &[]);
    app.import_examples().await;
    let (_, delivery) = app.run_once().await;
    assert!(!delivery.relay_unreachable);
    let received = sink.wait_for(30, std::time::Duration::from_secs(10)).await;
    assert_eq!(received.len(), 30);
    let mut to: Vec<String> = received.iter().flat_map(|r| r.rcpt_to.clone()).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 30, "47 reminders to 30 people, one email each");
    assert!(received
        .iter()
        .all(|r| r.mail_from == "noreply@istruzione.it"));
    let campaigns: Vec<String> = received
        .iter()
        .map(|r| r.header("X-Avvisi-Campaign").unwrap())
        .collect();
    // The advice alone (U0023-U0030) keeps its own email; with a procedure due it is a section
    // of that person's digest, which names its lead's campaign.
    assert_eq!(
        campaigns
            .iter()
            .filter(|c| c.starts_with("credential_recovery_advice"))
            .count(),
        8
    );
    assert!(app.outbox().await.iter().all(|r| r.state == "sent"));
    assert!(
        app.eml_files().is_empty(),
        "nothing written to files with smtp"
    );
}

async fn a_counting_sink_counts_and_keeps_nothing(app: TestApp) {
    // The pipeline benchmark's built-in sink: a million messages must not stay in memory.
    let sink = SmtpSink::start_counting().await;
    let app = app.smtp(&sink.url(), &[]);
    app.import_examples().await;
    let (_, delivery) = app.run_once().await;
    assert!(!delivery.relay_unreachable);
    assert_eq!(sink.accepted(), 30);
    let bytes = sink.accepted_bytes();
    assert!(bytes > 30 * 1000, "{bytes} bytes");
    assert!(sink.received().is_empty());
    assert!(sink.commands().is_empty() && sink.grouped().is_empty());
    assert!(app.outbox().await.iter().all(|r| r.state == "sent"));
}

async fn the_envelope_is_pipelined_when_the_relay_offers_it(app: TestApp) {
    // Offered and allowed: MAIL and RCPT reach the relay with the rest of the envelope behind
    // them; DATA ends the group (the body waits for its 354).
    let sink = SmtpSink::start().await;
    let piped = app.smtp(&sink.url(), &[]);
    piped.import_examples().await;
    piped.run_once().await;
    assert_eq!(
        sink.wait_for(30, std::time::Duration::from_secs(10))
            .await
            .len(),
        30
    );
    let grouped = sink.grouped();
    let count = |verb: &str| grouped.iter().filter(|v| *v == verb).count();
    assert_eq!(
        (count("MAIL"), count("RCPT"), count("DATA")),
        (30, 30, 0),
        "{grouped:?}"
    );

    // Not offered, or turned off: one command at a time, and the same emails.
    for (faults, setting) in [(vec![Fault::NoPipelining], "true"), (vec![], "false")] {
        let sink = SmtpSink::start_with(faults).await;
        let app = piped.smtp(&sink.url(), &[("AVVISI__SMTP__PIPELINING", setting)]);
        let transport =
            avvisi::deliver::transport::Transport::from_settings(&app.settings).unwrap();
        let email = lettre::Message::builder()
            .from("noreply@istruzione.it".parse().unwrap())
            .to("operatore@istruzione.it".parse().unwrap())
            .subject("Prova")
            .body("Messaggio di prova".to_string())
            .unwrap();
        for _ in 0..2 {
            transport
                .send(&(&email).into(), "prova", None)
                .await
                .unwrap();
        }
        let received = sink.wait_for(2, std::time::Duration::from_secs(10)).await;
        assert_eq!(received.len(), 2);
        assert_eq!(
            sink.commands()
                .iter()
                .filter(|c| c.starts_with("MAIL"))
                .count(),
            2
        );
        assert!(sink.grouped().is_empty(), "{:?}", sink.grouped());
    }
}

async fn relay_replies_decide_retry_or_failure(app: TestApp) {
    let sink = SmtpSink::start_with(vec![
        Fault::RejectRcpt {
            address: "ilaria.dangelo@gmail.com".into(),
            code: 550,
            text: "5.1.1 no such user".into(),
        },
        Fault::RejectData {
            address: "nicolo.manco@libero.it".into(),
            code: 451,
            text: "4.3.0 try later".into(),
        },
    ])
    .await;
    let app = app.smtp(&sink.url(), &[]);
    app.import_examples().await;
    let now = app.clock.now().timestamp();
    app.run_once().await;
    let rows = app.outbox().await;
    let reg = |user: &str| {
        rows.iter()
            .find(|r| r.campaign.starts_with("registration") && r.user_id == user)
            .unwrap()
            .clone()
    };
    let rejected = reg("U0002");
    assert_eq!(
        (rejected.state.as_str(), rejected.smtp_code),
        ("failed", Some(550))
    );
    assert!(rejected.reason.unwrap().contains("no such user"));
    let deferred = reg("U0001");
    assert_eq!(
        (
            deferred.state.as_str(),
            deferred.smtp_code,
            deferred.attempts
        ),
        ("pending", Some(451), 1)
    );
    // First retry after retry_base_seconds (60) +-25% jitter.
    let wait = deferred.next_attempt_at - now;
    assert!((45..=75).contains(&wait), "retry in {wait}s");
    assert_eq!(rows.iter().filter(|r| r.state == "sent").count(), 45);

    // Later the relay accepts it, with the same Message-ID.
    drop(sink);
    let sink = SmtpSink::start().await;
    let app = app.smtp(&sink.url(), &[]);
    app.clock.advance(chrono::Duration::minutes(2));
    app.deliver().await;
    let received = sink.wait_for(1, std::time::Duration::from_secs(5)).await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("Message-ID").unwrap(),
        deferred.message_id
    );
    assert_eq!(reg("U0002").state, "failed", "a 5xx is never retried");
}

async fn relay_down_hands_the_batch_back(app: TestApp) {
    // A port held and not listening: connections to it are refused.
    let closed = testkit::smtp_sink::ClosedPort::bind();
    let app = app.smtp(&closed.url(), &[]);
    app.import_examples().await;
    let (_, delivery) = app.run_once().await;
    assert!(delivery.relay_unreachable);
    let rows = app.outbox().await;
    assert!(rows.iter().all(|r| r.state == "pending"), "{rows:?}");
    // Nothing reached the relay: no message counts an attempt (a fault of the relay).
    assert!(rows.iter().all(|r| r.attempts == 0), "{rows:?}");

    // The relay comes back: everything goes out, each exactly once.
    let sink = SmtpSink::start().await;
    let app = app.smtp(&sink.url(), &[]);
    app.clock.advance(chrono::Duration::hours(2));
    app.deliver().await;
    assert_eq!(
        sink.wait_for(30, std::time::Duration::from_secs(10))
            .await
            .len(),
        30
    );
    assert!(app.outbox().await.iter().all(|r| r.state == "sent"));
}

async fn refused_greetings_and_dropped_connections_are_retried(app: TestApp) {
    let sink = SmtpSink::start_with(vec![
        Fault::RefuseGreeting { times: 1 },
        Fault::DropOnMail { times: 1 },
    ])
    .await;
    let app = app.smtp(&sink.url(), &[]);
    app.import_examples().await;
    let (_, delivery) = app.run_once().await;
    assert!(
        delivery.relay_unreachable,
        "a dropped connection stops the batch"
    );
    let rows = app.outbox().await;
    let waiting: Vec<_> = rows.iter().filter(|r| r.state == "pending").collect();
    assert!(!waiting.is_empty());
    assert!(
        rows.iter()
            .all(|r| r.state == "pending" || r.state == "sent"),
        "{rows:?}"
    );
    // Each fault stops the pass it falls in (which pass depends on the timing of the
    // connections): at most one more pass per fault.
    for _ in 0..2 {
        app.clock.advance(chrono::Duration::hours(2));
        if !app.deliver().await.relay_unreachable {
            break;
        }
    }
    let received = sink.wait_for(30, std::time::Duration::from_secs(10)).await;
    let ids = testkit::smtp_sink::distinct_message_ids(&received);
    assert_eq!((received.len(), ids), (30, 30), "each email exactly once");
    assert!(app.outbox().await.iter().all(|r| r.state == "sent"));
}

async fn the_per_second_rate_limit_holds(app: TestApp) {
    let sink = SmtpSink::start().await;
    let app = app.smtp(&sink.url(), &[("AVVISI__RATE__PER_SECOND", "20")]);
    app.import_examples().await;
    app.run_once().await;
    let received = sink.wait_for(30, std::time::Duration::from_secs(10)).await;
    assert_eq!(received.len(), 30);
    let start = received[0].at;
    let offsets: Vec<f64> = received
        .iter()
        .map(|r| (r.at - start).as_secs_f64())
        .collect();
    // 30 emails at 20/s take at least 29/20 s, and no one-second window at the sink holds more
    // than 20 plus one per connection (4): the limiter admits a send when it starts, and on a
    // loaded machine the messages admitted just before a window may arrive late, bunched with
    // those of the window. Without the limiter all 30 arrive within a fraction of a second.
    assert!(*offsets.last().unwrap() >= 29.0 / 20.0 * 0.9, "{offsets:?}");
    for (i, t) in offsets.iter().enumerate() {
        let in_window = offsets[i..].iter().filter(|o| **o < t + 1.0).count();
        assert!(
            in_window <= 20 + 4,
            "{in_window} messages within one second from {t}"
        );
    }
}

async fn the_hourly_quota_stops_and_keeps_the_rest(app: TestApp) {
    let sink = SmtpSink::start().await;
    let app = app.smtp(
        &sink.url(),
        &[
            ("AVVISI__RATE__PER_HOUR", "10"),
            ("AVVISI__DELIVERY__CONCURRENCY", "1"),
        ],
    );
    app.import_examples().await;
    let (_, delivery) = app.run_once().await;
    assert!(delivery.throttled);
    assert_eq!(
        sink.wait_for(10, std::time::Duration::from_secs(5))
            .await
            .len(),
        10
    );
    // Counted in emails: a digest's rows go with their lead's email.
    let rows = app.outbox().await;
    let emails = |state: &str| {
        let mut ids: Vec<&str> = rows
            .iter()
            .filter(|r| r.state == state)
            .map(|r| r.message_id.as_str())
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    assert_eq!((emails("sent"), emails("pending")), (10, 20));
    let waiting: Vec<_> = rows.iter().filter(|r| r.state == "pending").collect();
    assert!(rows
        .iter()
        .all(|r| r.state == "sent" || r.state == "pending"));
    assert!(
        waiting.iter().all(|r| r.attempts == 0),
        "throttled messages spend no attempt"
    );
}

async fn dkim_signs_every_email(app: TestApp) {
    let key = app.dir.path().join("dkim.key");
    // An ed25519 secret key: 32 bytes, base64.
    std::fs::write(&key, "dGhpcyBpcyBhIDMyLWJ5dGUga2V5IGZvciB0ZXN0cyE=\n").unwrap();
    let key = key.display().to_string();
    let app = app.with_settings(&[
        ("AVVISI__DKIM__SELECTOR", "avvisi2026"),
        ("AVVISI__DKIM__DOMAIN", "istruzione.it"),
        ("AVVISI__DKIM__KEY_FILE", &key),
        ("AVVISI__DKIM__ALGORITHM", "ed25519"),
    ]);
    app.import_examples().await;
    app.run_once().await;
    let files = app.eml_files();
    assert_eq!(files.len(), 30);
    for (name, eml) in &files {
        let sig = header(eml, "DKIM-Signature").unwrap_or_else(|| panic!("{name} is not signed"));
        assert!(
            sig.contains("d=istruzione.it") && sig.contains("s=avvisi2026"),
            "{sig}"
        );
        assert!(sig.contains("a=ed25519-sha256"), "{sig}");
    }
}

on_both_backends!(
    the_per_second_rate_limit_holds,
    the_hourly_quota_stops_and_keeps_the_rest,
    dkim_signs_every_email,
    refused_greetings_and_dropped_connections_are_retried,
    emails_have_the_promised_headers_and_italian_text,
    hostile_names_cannot_add_headers_or_markup,
    smtp_delivery_reaches_the_relay,
    a_counting_sink_counts_and_keeps_nothing,
    relay_replies_decide_retry_or_failure,
    relay_down_hands_the_batch_back,
    the_envelope_is_pipelined_when_the_relay_offers_it,
);
