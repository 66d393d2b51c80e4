//! Bounces and the suppression list, as operators use them: `avvisi suppress`, a relay that says
//! a mailbox does not exist, the envelope sender the relay sees, `avvisi bounces import` of a
//! folder of returned mail, and the institutional address a suppressed user is written to.

use std::path::Path;

use sqlx::Row;

use crate::helpers::{at, repo_path, TestApp};
use crate::on_both_backends;
use testkit::smtp_sink::{Fault, SmtpSink};

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
    let o = app.avvisi(&["suppress", "list", "--json"], &[]);
    assert!(o.status.success(), "{}", out(&o));
    serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).unwrap()
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
    let relay = app.smtp(&sink.url(), &[("AVVISI__DELIVERY__BREAKER_THRESHOLD", "2")]);
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
    app.smtp(&sink.url(), &[]).deliver().await;
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
    let delivery = app
        .smtp(&sink.url(), &[("AVVISI__DELIVERY__BREAKER_THRESHOLD", "3")])
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
    let relay = app.smtp(&sink.url(), &bounce);
    relay.deliver().await;
    let received = sink.received();
    // 47 messages, one email per person (the daily digest).
    assert_eq!(received.len(), 30);
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
    app.smtp(&sink.url(), &verp).deliver().await;
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

/// A returned mail of `tests/fixtures/bounces/`, with its placeholders filled.
fn fixture(name: &str, fill: &[(&str, &str)]) -> String {
    let path = repo_path(&format!("tests/fixtures/bounces/{name}.eml"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (key, value) in fill {
        text = text.replace(&format!("@@{key}@@"), value);
    }
    assert!(!text.contains("@@"), "{name}: a placeholder is left");
    text
}

/// The returned mail of the sample users, as the relay and the providers write it: hard
/// bounces for U0001 (Postfix, VERP), U0002 (Gmail, only the original Message-ID), U0009
/// (Outlook), U0003 (a libero.it-style notice in Italian prose); three soft bounces for U0005
/// within a week, one for U0004; and an out-of-office reply.
async fn returned_mail(app: &TestApp, sink: &SmtpSink) -> Vec<(String, String)> {
    let received = sink.received();
    let mut mail = Vec::new();
    let received = &received;
    let about = |user: &'static str| async move {
        let (_, _, _, recipient, message_id) = row_of(app, user).await;
        let verp = received_by(received, &recipient);
        (recipient, message_id, verp)
    };
    let (r, m, v) = about("U0001").await;
    let fill = [("VERP", v.as_str()), ("RECIPIENT", &r), ("MESSAGE_ID", &m)];
    mail.push((
        "postfix".to_string(),
        fixture("postfix-user-unknown", &fill),
    ));
    let (r, m, _) = about("U0002").await;
    let fill = [("RECIPIENT", r.as_str()), ("MESSAGE_ID", &m)];
    mail.push((
        "gmail".to_string(),
        fixture("gmail-address-not-found", &fill),
    ));
    let (r, m, v) = about("U0009").await;
    let local = r.split('@').next().unwrap().to_string();
    let fill = [
        ("VERP", v.as_str()),
        ("RECIPIENT", &r),
        ("MESSAGE_ID", &m),
        ("LOCAL", &local),
    ];
    mail.push((
        "outlook".to_string(),
        fixture("outlook-recipient-not-found", &fill),
    ));
    let (r, _, v) = about("U0003").await;
    let fill = [("VERP", v.as_str()), ("RECIPIENT", &r)];
    mail.push((
        "libero".to_string(),
        fixture("libero-utente-inesistente", &fill),
    ));
    let soft = [
        ("U0005", "Mon, 23 Nov 2026 14:05:10 +0100", "A1"),
        ("U0005", "Tue, 24 Nov 2026 14:05:10 +0100", "A2"),
        ("U0005", "Wed, 25 Nov 2026 14:05:10 +0100", "A3"),
        ("U0004", "Mon, 23 Nov 2026 14:05:10 +0100", "B1"),
    ];
    for (user, date, id) in soft {
        let (r, _, v) = about(user).await;
        let fill = [
            ("VERP", v.as_str()),
            ("RECIPIENT", &r),
            ("DATE", date),
            ("BOUNCE_ID", id),
        ];
        mail.push((
            format!("delayed-{id}"),
            fixture("postfix-delayed-mailbox-full", &fill),
        ));
    }
    mail.push(("ooo".to_string(), fixture("out-of-office", &[])));
    mail
}

/// The envelope sender the relay saw for `recipient`.
fn received_by(received: &[testkit::smtp_sink::Received], recipient: &str) -> String {
    received
        .iter()
        .find(|r| r.rcpt_to == [recipient])
        .unwrap_or_else(|| panic!("nothing sent to {recipient}"))
        .mail_from
        .clone()
}

fn maildir(dir: &Path, mail: &[(String, String)]) {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for (i, (name, text)) in mail.iter().enumerate() {
        // Read ones in cur/ (with their flags), the others in new/.
        let (sub, suffix) = if i % 2 == 0 {
            ("new", "")
        } else {
            ("cur", ":2,S")
        };
        let file = format!("17954247{i:02}.M{i}P42.relay.{name}{suffix}");
        std::fs::write(dir.join(sub).join(file), text).unwrap();
    }
}

fn mbox(file: &Path, mail: &[(String, String)]) {
    let mut text = String::new();
    for (_, m) in mail {
        text.push_str("From MAILER-DAEMON  Mon Nov 23 10:05:12 2026\n");
        text.push_str(m);
        if !m.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
    }
    std::fs::write(file, text).unwrap();
}

fn import_report(app: &TestApp, path: &Path, env: &[(&str, &str)]) -> serde_json::Value {
    let list = app.dir.path().join("unrecognised.txt");
    let args = [
        "bounces",
        "import",
        path.to_str().unwrap(),
        "--unrecognised",
        list.to_str().unwrap(),
        "--json",
    ];
    let o = app.avvisi(&args, env);
    assert!(o.status.success(), "{}", out(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The "done when" of the issue: a folder of returned mail for some sample users, imported
/// once, stops every later message to those addresses, with the reason in `explain`; a second
/// import, of the folder or of the same mail as an mbox, changes nothing.
async fn a_folder_of_returned_mail_stops_every_later_message(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let env = [
        ("AVVISI__MAIL__BOUNCE_ADDRESS", "bounces@istruzione.it"),
        ("AVVISI__MAIL__VERP", "true"),
    ];
    let sink = SmtpSink::start().await;
    app.smtp(&sink.url(), &env).deliver().await;
    let mail = returned_mail(&app, &sink).await;
    let folder = app.dir.path().join("bounces");
    maildir(&folder, &mail);

    let report = import_report(&app, &folder, &env);
    let n = |k: &str| report[k].as_u64().unwrap();
    assert_eq!(
        (n("read"), n("matched"), n("hard"), n("soft")),
        (9, 8, 4, 4),
        "{report}"
    );
    assert_eq!(
        (n("unrecognised"), n("already_imported")),
        (1, 0),
        "{report}"
    );
    assert_eq!(n("suppressed"), 5, "{report}");
    let listed = std::fs::read_to_string(app.dir.path().join("unrecognised.txt")).unwrap();
    assert!(
        listed.contains("ooo") && listed.contains("Risposta automatica"),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 2, "{listed}");

    let list = suppressed_json(&app);
    let reason_of = |address: &str| {
        list.iter()
            .find(|s| s["address"] == address)
            .map(|s| s["reason"].as_str().unwrap().to_string())
    };
    assert!(reason_of("nicolo.manco@libero.it")
        .unwrap()
        .starts_with("bounce 5.1.1"));
    assert!(reason_of("ilaria.dangelo@gmail.com")
        .unwrap()
        .starts_with("bounce 5.1.1"));
    assert!(reason_of("alessandro.pirro@outlook.it")
        .unwrap()
        .starts_with("bounce 5.1.10"));
    assert!(reason_of("gioele.dellacqua@virgilio.it")
        .unwrap()
        .contains("5.1.1"));
    assert!(reason_of("marco.bianchi79@alice.it")
        .unwrap()
        .starts_with("3 soft bounces within 7 days"));
    assert_eq!(reason_of("lucrezia.sciarra@tiscali.it"), None);
    assert!(list.iter().all(|s| s["source"] == "bounce"));
    // Each bounce is linked to the message that bounced, by VERP or by the original's
    // Message-ID (the Gmail one names nothing else).
    let linked: Option<i64> = sqlx::query_scalar(
        "SELECT outbox_id FROM bounces WHERE recipient = 'ilaria.dangelo@gmail.com'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(linked, Some(row_of(&app, "U0002").await.0));

    // Twice: nothing changes, nothing is listed again.
    std::fs::remove_file(app.dir.path().join("unrecognised.txt")).unwrap();
    let again = import_report(&app, &folder, &env);
    assert_eq!(again["read"], 9, "{again}");
    assert_eq!(again["already_imported"], 9, "{again}");
    for k in ["matched", "hard", "soft", "unrecognised", "suppressed"] {
        assert_eq!(again[k], 0, "{k}: {again}");
    }
    assert!(!app.dir.path().join("unrecognised.txt").exists());
    let file = app.dir.path().join("bounces.mbox");
    mbox(&file, &mail);
    let from_mbox = import_report(&app, &file, &env);
    assert_eq!(
        (&from_mbox["read"], &from_mbox["already_imported"]),
        (&serde_json::json!(9), &serde_json::json!(9)),
        "{from_mbox}"
    );
    assert_eq!(suppressed_json(&app), list);
    let bounces: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bounces")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(bounces, 9);
    // What operators read.
    let text = ok(&app, &["bounces", "import", folder.to_str().unwrap()], &env);
    assert!(text.contains("already imported  9"), "{text}");

    // Every later message to those addresses stops; the others go.
    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    app.plan().await;
    let sink = SmtpSink::start().await;
    app.smtp(&sink.url(), &env).deliver().await;
    for user in ["U0001", "U0002", "U0003", "U0005", "U0009"] {
        let rows = rows_of(&app, user).await;
        let last = rows.last().unwrap();
        assert_eq!(
            (last.0.as_str(), last.1.as_deref()),
            ("skipped", Some("suppressed")),
            "{user}"
        );
    }
    let to: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.rcpt_to[0].clone())
        .collect();
    for a in list.iter().map(|s| s["address"].as_str().unwrap()) {
        assert!(!to.iter().any(|t| t == a), "{a} got a message");
    }
    assert!(
        to.iter().any(|t| t == "lucrezia.sciarra@tiscali.it"),
        "{to:?}"
    );
    let explain = ok(&app, &["explain", "U0001"], &[]);
    assert!(explain.contains("suppressed"), "{explain}");
    assert!(explain.contains("by bounce: bounce 5.1.1"), "{explain}");

    // Not a mailbox: a clear error naming the path.
    let bad = app.avvisi(&["bounces", "import", "config/default.toml"], &[]);
    assert!(!bad.status.success());
    assert!(
        out(&bad).contains("config/default.toml is neither a Maildir folder"),
        "{}",
        out(&bad)
    );
}

/// A suppressed address on record with an institutional address to fall back on: the reminder
/// goes there, at planning or at send time, and says why; with both suppressed, nothing goes.
async fn a_suppressed_user_is_written_to_at_the_institutional_address(app: TestApp) {
    app.import_examples().await;
    let add = |address: &str| {
        ok(
            &app,
            &["suppress", "add", address, "--reason", "bounced"],
            &[],
        )
    };
    // Before planning: U0012 (gianluca.cantu@gmail.com, institutional gianluca.cantu@istruzione.it).
    add("gianluca.cantu@gmail.com");
    // Both of U0028's addresses: nowhere to write.
    add("francesco.moretti@gmail.com");
    add("f.moretti@istruzione.it");
    app.plan().await;
    // After planning: U0016 (salvatore.damico@libero.it, institutional s.damico@istruzione.it).
    add("salvatore.damico@libero.it");
    app.deliver().await;

    for (user, institutional) in [
        ("U0012", "gianluca.cantu@istruzione.it"),
        ("U0016", "s.damico@istruzione.it"),
    ] {
        let rows = rows_of(&app, user).await;
        assert!(!rows.is_empty(), "{user}");
        for (state, _, recipient) in &rows {
            assert_eq!(
                (state.as_str(), recipient.as_str()),
                ("sent", institutional),
                "{user}"
            );
        }
        let emails: Vec<String> = app
            .eml_files()
            .into_iter()
            .filter(|(name, _)| name.contains(&format!(".{user}.")))
            .map(|(_, text)| text)
            .collect();
        // One email per person and day: a digest carries several rows.
        let digests: i64 =
            sqlx::query_scalar("SELECT COUNT(DISTINCT message_id) FROM outbox WHERE user_id = $1")
                .bind(user)
                .fetch_one(app.db.pool())
                .await
                .unwrap();
        assert_eq!(emails.len() as i64, digests, "{user}");
        for eml in &emails {
            let to = crate::helpers::header(eml, "To").unwrap();
            assert!(to.contains(institutional), "{to}");
            let text = crate::helpers::part(eml, "text/plain");
            assert!(
                text.contains(
                    "Le scriviamo al Suo indirizzo istituzionale perché i messaggi inviati"
                ),
                "{text}"
            );
        }
        let explain = ok(&app, &["explain", user], &[]);
        assert!(
            explain.contains(&format!("sent to {institutional}")),
            "{explain}"
        );
    }
    for (state, reason, _) in rows_of(&app, "U0028").await {
        assert_eq!(
            (state.as_str(), reason.as_deref()),
            ("skipped", Some("suppressed"))
        );
    }
    // Everyone else: the address on record, and no such paragraph.
    let (_, eml) = app
        .eml_files()
        .into_iter()
        .find(|(name, _)| name.contains(".U0003."))
        .unwrap();
    assert!(!crate::helpers::part(&eml, "text/plain").contains("indirizzo istituzionale perché"));
}

/// A postfix report of a hard bounce with its own Message-ID `id`, delivered to `to`, naming
/// `recipient` and quoting `message_id`.
fn postfix_report(id: &str, to: &str, recipient: &str, message_id: &str) -> String {
    let fill = [
        ("VERP", to),
        ("RECIPIENT", recipient),
        ("MESSAGE_ID", message_id),
    ];
    fixture("postfix-user-unknown", &fill).replace(
        "<20261123090512.4F2A31C0E2@relay.istruzione.it>",
        &format!("<{id}@relay.istruzione.it>"),
    )
}

/// Anyone can write to the bounce mailbox: reports that are not linked to a message avvisi
/// sent to the address they name (a token with a wrong MAC, no token, another recipient's
/// message, an institutional address) are recorded as unrecognised and suppress nobody, so
/// the real users' reminders go on, also to the institutional fallback; a genuine report
/// beside them still suppresses its address.
async fn forged_bounces_suppress_nothing(app: TestApp) {
    app.import_examples().await;
    // U0012's address on record is suppressed: the reminder goes to the institutional one.
    ok(
        &app,
        &[
            "suppress",
            "add",
            "gianluca.cantu@gmail.com",
            "--reason",
            "bounced",
        ],
        &[],
    );
    app.plan().await;
    let env = [
        ("AVVISI__MAIL__BOUNCE_ADDRESS", "bounces@istruzione.it"),
        ("AVVISI__MAIL__VERP", "true"),
    ];
    let sink = SmtpSink::start().await;
    app.smtp(&sink.url(), &env).deliver().await;
    let received = sink.received();
    let (u1, _, _, _, _) = row_of(&app, "U0001").await;
    let (_, _, _, r3, m3) = row_of(&app, "U0003").await;
    let (_, _, _, r4, m4) = row_of(&app, "U0004").await;
    let mail = vec![
        (
            "wrong-mac".to_string(),
            postfix_report(
                "F1",
                &format!("bounces+{u1}-0123456789abcdef@istruzione.it"),
                "nicolo.manco@libero.it",
                "<made.up.U0001@istruzione.it>",
            ),
        ),
        (
            "never-written".to_string(),
            postfix_report(
                "F2",
                "bounces@istruzione.it",
                "mai.scritto@example.it",
                "<made.up.X@istruzione.it>",
            ),
        ),
        // U0003 knows the token and Message-ID of their own message, not whom else it names.
        (
            "other-recipient".to_string(),
            postfix_report(
                "F3",
                &received_by(&received, &r3),
                "ilaria.dangelo@gmail.com",
                &m3,
            ),
        ),
        (
            "institutional".to_string(),
            postfix_report(
                "F4",
                "bounces@istruzione.it",
                "gianluca.cantu@istruzione.it",
                "<made.up.U0012@istruzione.it>",
            ),
        ),
        (
            "genuine".to_string(),
            postfix_report("G1", &received_by(&received, &r4), &r4, &m4),
        ),
    ];
    // Soft ones too: three within a week (the soft limit) would suppress a linked address.
    let mut mail = mail;
    for (date, id) in [
        ("Mon, 23 Nov 2026 14:05:10 +0100", "S1"),
        ("Tue, 24 Nov 2026 14:05:10 +0100", "S2"),
        ("Wed, 25 Nov 2026 14:05:10 +0100", "S3"),
    ] {
        let fill = [
            ("VERP", "bounces@istruzione.it"),
            ("RECIPIENT", "marco.bianchi79@alice.it"),
            ("DATE", date),
            ("BOUNCE_ID", id),
        ];
        mail.push((
            format!("soft-{id}"),
            fixture("postfix-delayed-mailbox-full", &fill),
        ));
    }
    let folder = app.dir.path().join("bounces");
    maildir(&folder, &mail);
    let report = import_report(&app, &folder, &env);
    let n = |k: &str| report[k].as_u64().unwrap();
    assert_eq!(
        (n("read"), n("matched"), n("hard"), n("soft")),
        (8, 1, 1, 0),
        "{report}"
    );
    assert_eq!(
        (n("unrecognised"), n("unlinked"), n("suppressed")),
        (7, 7, 1),
        "{report}"
    );
    let listed = std::fs::read_to_string(app.dir.path().join("unrecognised.txt")).unwrap();
    for address in [
        "nicolo.manco@libero.it",
        "marco.bianchi79@alice.it",
        "mai.scritto@example.it",
        "ilaria.dangelo@gmail.com",
        "gianluca.cantu@istruzione.it",
    ] {
        assert!(
            listed
                .lines()
                .any(|l| l.contains(&format!("not linked: a failure of {address} "))),
            "{address}: {listed}"
        );
    }
    let addresses: Vec<String> = suppressed_json(&app)
        .iter()
        .map(|s| s["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        addresses,
        vec!["gianluca.cantu@gmail.com".to_string(), r4.clone()]
    );
    // Recorded all the same (a second import changes nothing), linked to nothing.
    let recorded: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT kind, outbox_id FROM bounces WHERE dedupe_key NOT LIKE '<S%' ORDER BY dedupe_key",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let kinds: Vec<&str> = recorded.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "unrecognised",
            "unrecognised",
            "unrecognised",
            "unrecognised",
            "hard"
        ]
    );
    assert_eq!(
        recorded.iter().filter(|(_, id)| id.is_some()).count(),
        1,
        "{recorded:?}"
    );
    let soft: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM bounces WHERE dedupe_key LIKE '<S%'")
            .fetch_all(app.db.pool())
            .await
            .unwrap();
    assert_eq!(soft, ["unrecognised"; 3]);
    let text = ok(&app, &["bounces", "import", folder.to_str().unwrap()], &env);
    assert!(text.contains("already imported  8"), "{text}");

    // Three days on: the forged ones changed nothing.
    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    app.plan().await;
    let sink = SmtpSink::start().await;
    app.smtp(&sink.url(), &env).deliver().await;
    for user in ["U0001", "U0002", "U0005"] {
        let last = rows_of(&app, user).await.pop().unwrap();
        assert_eq!((last.0.as_str(), last.1), ("sent", None), "{user}");
    }
    let last = rows_of(&app, "U0004").await.pop().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_deref()),
        ("skipped", Some("suppressed"))
    );
    let to_u0012 = rows_of(&app, "U0012").await;
    assert!(!to_u0012.is_empty());
    for (state, _, recipient) in to_u0012 {
        assert_eq!(
            (state.as_str(), recipient.as_str()),
            ("sent", "gianluca.cantu@istruzione.it")
        );
    }
    let explain = ok(&app, &["explain", "U0001"], &[]);
    assert!(!explain.contains("skipped: suppressed"), "{explain}");
}

/// `n` messages inside one another (`message/rfc822` in `message/rfc822`...), as the poison
/// message was written: ~1.5 MB for 50,000.
fn nested_messages(n: usize) -> String {
    let mut text = String::from(
        "From: MAILER-DAEMON@relay.istruzione.it\r\nSubject: Undelivered Mail\r\n\
         Message-ID: <nested@relay.istruzione.it>\r\n",
    );
    for _ in 0..n {
        text.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    text + "Subject: inside\r\n\r\nhello\r\n"
}

/// Base64, wrapped at 76 columns.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for j in 0..4 {
            if j <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * j) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
        if i % 19 == 18 {
            out.push_str("\r\n");
        }
    }
    out
}

/// Messages that would crash or hold up the import (50,000 nested messages; the same in base64,
/// whose copies grow with the square of the depth; one over the size bound) are set aside, and
/// the genuine bounce beside them is still recorded: from a Maildir (where they are moved out
/// of the way, so the next import does not meet them) and from an mbox (listed each time).
async fn a_poison_message_is_set_aside_and_the_rest_is_imported(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let env = [
        ("AVVISI__MAIL__BOUNCE_ADDRESS", "bounces@istruzione.it"),
        ("AVVISI__MAIL__VERP", "true"),
    ];
    let sink = SmtpSink::start().await;
    app.smtp(&sink.url(), &env).deliver().await;
    let (_, _, _, recipient, message_id) = row_of(&app, "U0001").await;
    let verp = received_by(&sink.received(), &recipient);
    let fill = [
        ("VERP", verp.as_str()),
        ("RECIPIENT", recipient.as_str()),
        ("MESSAGE_ID", message_id.as_str()),
    ];
    let genuine = fixture("postfix-user-unknown", &fill);

    let nested = nested_messages(50_000);
    assert!(nested.len() > 1_500_000, "{}", nested.len());
    let encoded = format!(
        "From: MAILER-DAEMON@relay.istruzione.it\r\nSubject: Undelivered Mail\r\n\
         Message-ID: <encoded@relay.istruzione.it>\r\nContent-Type: message/rfc822\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        base64(nested_messages(20_000).as_bytes())
    );
    let big_limit = avvisi::bounce::MAX_MESSAGE_BYTES as usize;
    let big = format!(
        "From: MAILER-DAEMON@relay.istruzione.it\r\nSubject: Undelivered Mail\r\n\
         Message-ID: <big@relay.istruzione.it>\r\n\r\n{}\r\n",
        "x".repeat(75).repeat(big_limit / 75 + 1).as_str()
    );
    let mail = vec![
        ("nested".to_string(), nested),
        ("encoded".to_string(), encoded),
        ("big".to_string(), big),
        ("genuine".to_string(), genuine),
    ];

    // A Maildir: the three are set aside and moved; the genuine one suppresses its address.
    let folder = app.dir.path().join("bounces");
    maildir(&folder, &mail);
    let report = import_report(&app, &folder, &env);
    let n = |k: &str| report[k].as_u64().unwrap();
    assert_eq!(
        (
            n("read"),
            n("matched"),
            n("hard"),
            n("suppressed"),
            n("set_aside")
        ),
        (1, 1, 1, 1, 3),
        "{report}"
    );
    let rejected = folder.join(avvisi::bounce::SET_ASIDE_FOLDER);
    assert_eq!(report["set_aside_folder"], rejected.to_str().unwrap());
    let moved: Vec<String> = std::fs::read_dir(rejected.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(moved.len(), 3, "{moved:?}");
    for name in ["nested", "encoded", "big"] {
        assert!(moved.iter().any(|m| m.contains(name)), "{name}: {moved:?}");
    }
    let listed = std::fs::read_to_string(app.dir.path().join("unrecognised.txt")).unwrap();
    for why in [
        "set aside: nested too deep",
        "set aside: an attached message in base64",
        "set aside: too big",
    ] {
        assert!(listed.contains(why), "{why}: {listed}");
    }
    let list = suppressed_json(&app);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["address"], recipient.as_str());
    // The next import meets only the genuine one, already recorded.
    let again = import_report(&app, &folder, &env);
    assert_eq!(
        (
            &again["read"],
            &again["already_imported"],
            &again["set_aside"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{again}"
    );

    // An mbox of the same mail (poison first): listed, and the genuine one still read.
    let file = app.dir.path().join("bounces.mbox");
    mbox(&file, &mail);
    let from_mbox = import_report(&app, &file, &env);
    assert_eq!(
        (
            &from_mbox["read"],
            &from_mbox["already_imported"],
            &from_mbox["set_aside"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(3)
        ),
        "{from_mbox}"
    );
    assert_eq!(from_mbox["set_aside_folder"], serde_json::Value::Null);
    let listed = std::fs::read_to_string(app.dir.path().join("unrecognised.txt")).unwrap();
    for n in 1..=3 {
        assert!(
            listed.contains(&format!("bounces.mbox#{n}\tset aside: ")),
            "#{n}: {listed}"
        );
    }
    // What operators read (the list in the test's folder, not the default in the repository).
    let list_file = app.dir.path().join("unrecognised-text.txt");
    let args = [
        "bounces",
        "import",
        file.to_str().unwrap(),
        "--unrecognised",
        list_file.to_str().unwrap(),
    ];
    let text = ok(&app, &args, &env);
    assert!(text.contains("set aside         3"), "{text}");
}

on_both_backends!(
    a_poison_message_is_set_aside_and_the_rest_is_imported,
    forged_bounces_suppress_nothing,
    a_suppressed_user_is_written_to_at_the_institutional_address,
    a_folder_of_returned_mail_stops_every_later_message,
    suppressed_addresses_are_skipped_when_planning_and_when_sending,
    no_such_user_at_rcpt_suppresses_the_address,
    the_relay_sees_the_bounce_address_and_verp,
);
