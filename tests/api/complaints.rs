//! Complaints (issue 25): the providers' feedback-loop reports (ARF) read from an mbox through
//! the binary, linked to the message by its Message-ID or its Feedback-ID, recorded once; the
//! user opted out of every notice; the rate per campaign in `status` and `/metrics`; a campaign
//! over `complaints.pause_percent` paused with the reason.

use sqlx::Row;

use crate::helpers::{served_address, TestApp};
use crate::on_both_backends;

on_both_backends!(
    complaints_opt_out_move_the_rate_and_pause_the_campaign,
    a_poison_report_is_set_aside_and_the_others_are_read,
);

const MAINTENANCE: &str = "maintenance_notice-2026-11-30";

/// The first top-level header `name` of `email`.
fn header(email: &str, name: &str) -> Option<String> {
    email.split("\r\n\r\n").next()?.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// An ARF report (RFC 5965) about `original` (a full copy, or its headers only), as a
/// provider's feedback loop sends it.
fn arf(id: &str, rcpt: &str, original: &str, headers_only: bool) -> String {
    let (ctype, copy) = match headers_only {
        false => ("message/rfc822", original.to_string()),
        true => (
            "text/rfc822-headers",
            format!("{}\r\n", original.split("\r\n\r\n").next().unwrap()),
        ),
    };
    format!(
        "From: staff@hotmail.example\r\nTo: fbl@istruzione.it\r\nSubject: complaint\r\n\
         Message-ID: <{id}@hotmail.example>\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\r\n\r\n\
         --arf\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\r\n\
         --arf\r\nContent-Type: message/feedback-report\r\n\r\n\
         Feedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: {rcpt}\r\n\r\n\
         --arf\r\nContent-Type: {ctype}\r\n\r\n{copy}\r\n--arf--\r\n"
    )
}

/// Messages as an mbox file.
fn mbox(messages: &[String]) -> String {
    messages
        .iter()
        .map(|m| {
            let body: Vec<String> = m
                .replace("\r\n", "\n")
                .lines()
                .map(|l| match l.starts_with("From ") {
                    true => format!(">{l}"),
                    false => l.to_string(),
                })
                .collect();
            format!(
                "From fbl@hotmail.example Fri Nov 27 12:00:00 2026\n{}\n\n",
                body.join("\n")
            )
        })
        .collect()
}

fn ok(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = app.avvisi(args, env);
    assert!(
        out.status.success(),
        "avvisi {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

async fn complaints_opt_out_move_the_rate_and_pause_the_campaign(app: TestApp) {
    ok(
        &app,
        &[
            "run",
            "--once",
            "--import",
            "examples/users.csv",
            "--now",
            "2026-11-27T09:30:00+01:00",
        ],
        &[],
    );
    // The maintenance notice's own emails: (user, recipient, the email).
    let notices: Vec<(String, String, String)> = app
        .eml_files()
        .into_iter()
        .filter(|(_, email)| header(email, "List-Unsubscribe").is_some())
        .map(|(name, email)| {
            let user = name.split('.').nth(2).unwrap().to_string();
            let to = header(&email, "To").unwrap();
            let to = to
                .rsplit_once('<')
                .map_or(to.as_str(), |(_, a)| a.trim_end_matches('>'))
                .to_string();
            (user, to, email)
        })
        .collect();
    assert!(notices.len() >= 4, "{}", notices.len());
    let [a, b, c] = [&notices[0], &notices[1], &notices[2]];

    // a: linked by its Message-ID (a full copy); b: by its Feedback-ID and recipient (headers
    // without the Message-ID); a forged one about a message never sent; and a message that is
    // no report at all.
    let b_headers: String =
        b.2.split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("message-id:"))
            .collect::<Vec<_>>()
            .join("\r\n");
    let forged =
        a.2.replace(
            &header(&a.2, "Message-ID").unwrap(),
            "<nosuch.main.U9999@istruzione.it>",
        )
        .replace(
            &header(&a.2, "Feedback-ID").unwrap(),
            "nosuch:maintenance-notice:istanzeonline",
        );
    let first = app.dir.path().join("fbl-1.mbox");
    std::fs::write(
        &first,
        mbox(&[
            arf("r1", &a.1, &a.2, false),
            arf("r2", &b.1, &b_headers, true),
            arf("r3", "someone@example.org", &forged, false),
            "From: a.person@example.org\r\nSubject: grazie\r\n\r\nGrazie dell'avviso.\r\n"
                .to_string(),
        ]),
    )
    .unwrap();
    let path = first.to_str().unwrap();
    let report = json(&ok(&app, &["complaints", "import", path, "--json"], &[]));
    assert_eq!(
        (
            &report["read"],
            &report["linked"],
            &report["unlinked"],
            &report["not_reports"],
            &report["opted_out"]
        ),
        (&4.into(), &2.into(), &1.into(), &1.into(), &2.into()),
        "{report}"
    );
    assert_eq!(report["paused"], serde_json::json!([]), "{report}");
    // Recorded once: the same mailbox again changes nothing.
    let again = json(&ok(&app, &["complaints", "import", path, "--json"], &[]));
    assert_eq!(
        (&again["linked"], &again["already_imported"]),
        (&0.into(), &3.into()),
        "{again}"
    );

    // a and b are opted out of every notice, by complaint.
    let optouts: Vec<(String, String, String)> =
        sqlx::query("SELECT user_id, stream, source FROM optouts ORDER BY user_id")
            .fetch_all(app.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    let mut expected = [a.0.clone(), b.0.clone()];
    expected.sort();
    assert_eq!(
        optouts,
        expected
            .iter()
            .map(|u| (
                u.clone(),
                "all_notices".to_string(),
                "complaint".to_string()
            ))
            .collect::<Vec<_>>()
    );
    // Nothing more of any notice is planned for them, a campaign created after the
    // complaint included; c, who did not complain, gets it.
    for args in [
        &[
            "campaign",
            "create",
            "avviso_extra",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
        ][..],
        &["campaign", "launch", "avviso_extra"],
        &["plan", "--now", "2026-11-27T09:45:00+01:00"],
    ] {
        // The second person's approval is the console's business (tests/api/console.rs):
        // here the campaign launches as on a test installation.
        ok(&app, args, &[("AVVISI__APPROVAL__REQUIRED", "false")]);
    }
    let planned: Vec<String> = sqlx::query(
        "SELECT o.user_id FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         WHERE c.name = 'avviso_extra' ORDER BY o.user_id",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(planned.contains(&c.0), "{planned:?}");
    assert!(
        !planned.contains(&a.0) && !planned.contains(&b.0),
        "{} {}: {planned:?}",
        a.0,
        b.0
    );
    let explained = ok(
        &app,
        &["explain", &a.0, "--now", "2026-11-27T10:00:00+01:00"],
        &[],
    );
    assert!(
        explained.contains("opted out of every notice that offers an unsubscribe"),
        "{explained}"
    );

    // The rate in `status`: 2 of the campaign's sent emails.
    let status = json(&ok(&app, &["status", "--json"], &[]));
    let rates = status["complaints"].as_array().unwrap();
    assert_eq!(rates.len(), 1, "{status}");
    assert_eq!(rates[0]["campaign"], MAINTENANCE);
    assert_eq!(rates[0]["complaints"], 2);
    let sent = rates[0]["sent"].as_u64().unwrap();
    assert!(sent >= 2);
    let percent = rates[0]["percent"].as_f64().unwrap();
    assert!((percent - 200.0 / sent as f64).abs() < 1e-9, "{status}");

    // A complaint about a reminder (the campaign still running), with complaints.min_sent
    // reached: over 0.3%, the campaign is paused with the reason.
    let reminder = "registration_incomplete-2026-11-30";
    let (to, email) = app
        .eml_files()
        .into_iter()
        .find_map(|(_, email)| {
            let campaign = header(&email, "X-Avvisi-Campaign")?;
            let to = header(&email, "To")?;
            let to = to.rsplit_once('<')?.1.trim_end_matches('>').to_string();
            campaign
                .starts_with(&format!("{reminder}/"))
                .then_some((to, email))
        })
        .expect("a reminder's email");
    let second = app.dir.path().join("fbl-2.mbox");
    std::fs::write(&second, mbox(&[arf("r4", &to, &email, false)])).unwrap();
    let env = [("AVVISI__COMPLAINTS__MIN_SENT", "2")];
    let report = json(&ok(
        &app,
        &["complaints", "import", second.to_str().unwrap(), "--json"],
        &env,
    ));
    assert_eq!(report["linked"], 1, "{report}");
    let paused = &report["paused"][0];
    assert_eq!(paused[0], reminder, "{report}");
    assert!(
        paused[1].as_str().unwrap().starts_with("complaints: 1 of ")
            && paused[1]
                .as_str()
                .unwrap()
                .contains("over complaints.pause_percent (0.3%)"),
        "{report}"
    );
    let (state, reason): (String, Option<String>) =
        sqlx::query("SELECT state, paused_reason FROM campaigns WHERE name = $1")
            .bind(reminder)
            .fetch_one(app.db.pool())
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
    assert_eq!(state, "paused");
    assert!(reason.unwrap().contains("complaints.pause_percent"));
    // The notice, with 2 complaints, was finished: nothing to pause.
    assert!(report["paused"].as_array().unwrap().len() == 1, "{report}");

    // `/metrics`: the count and the rate per million, from the daemon's endpoint.
    let log = app.dir.path().join("daemon.log");
    let daemon = app.spawn(
        &["daemon", "--now", "2026-11-27T21:00:00+01:00"],
        &[("AVVISI__HTTP__ADDRESS", "127.0.0.1:0")],
        &log,
    );
    let address = served_address(&daemon, &log).await;
    let (code, _, metrics) = crate::helpers::http_get(&address, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "avvisi_complaints{{campaign=\"{MAINTENANCE}\"}} 2"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "avvisi_complaint_rate_per_million{{campaign=\"{MAINTENANCE}\"}} {}",
            2_000_000 / sent
        )),
        "{metrics}"
    );
    daemon.terminate().await;
    app.teardown().await;
}

/// The feedback mailbox is anyone's to write to: a report nested too deep to parse safely, or
/// too big, is set aside (a Maildir's file moved to `.avvisi-rejected/`, an mbox's message
/// listed in the report) and the import goes on with the others, as `bounces import` does.
async fn a_poison_report_is_set_aside_and_the_others_are_read(app: TestApp) {
    ok(
        &app,
        &[
            "run",
            "--once",
            "--import",
            "examples/users.csv",
            "--now",
            "2026-11-27T09:30:00+01:00",
        ],
        &[],
    );
    let notices: Vec<(String, String)> = app
        .eml_files()
        .into_iter()
        .filter(|(_, email)| header(email, "List-Unsubscribe").is_some())
        .map(|(_, email)| {
            let to = header(&email, "To").unwrap();
            let to = to
                .rsplit_once('<')
                .map_or(to.as_str(), |(_, a)| a.trim_end_matches('>'))
                .to_string();
            (to, email)
        })
        .collect();
    let [a, b] = [&notices[0], &notices[1]];
    // A copy inside 150 copies of itself: the parser would recurse 150 levels deep.
    let mut nested = a.1.clone();
    for _ in 0..150 {
        nested = format!("Content-Type: message/rfc822\r\n\r\n{nested}");
    }
    let poison = arf("poison", &a.0, &nested, false);

    // An mbox: the poison first, then a good report; the poison is listed, the other read.
    let file = app.dir.path().join("fbl.mbox");
    std::fs::write(
        &file,
        mbox(&[poison.clone(), arf("good-a", &a.0, &a.1, false)]),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let report = json(&ok(&app, &["complaints", "import", path, "--json"], &[]));
    assert_eq!(
        (&report["read"], &report["linked"], &report["opted_out"]),
        (&2.into(), &1.into(), &1.into()),
        "{report}"
    );
    let aside = report["set_aside"].as_array().unwrap();
    assert_eq!(aside.len(), 1, "{report}");
    assert_eq!(aside[0]["origin"], format!("{path}#1"), "{report}");
    assert!(
        aside[0]["why"]
            .as_str()
            .unwrap()
            .contains("nested too deep"),
        "{report}"
    );
    assert_eq!(aside[0]["moved_to"], serde_json::Value::Null);
    // The text report says it too.
    let text = ok(&app, &["complaints", "import", path], &[]);
    assert!(text.contains("set aside         1"), "{text}");
    assert!(text.contains("nested too deep"), "{text}");

    // A Maildir: the poison and a message over 4 MiB are moved to .avvisi-rejected/; the good
    // report beside them is read.
    let folder = app.dir.path().join("fbl");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(folder.join(sub)).unwrap();
    }
    std::fs::write(folder.join("new").join("1.M1P1.fbl"), &poison).unwrap();
    let big = format!("Subject: big\r\n\r\n{}", "x".repeat(4 * 1024 * 1024 + 10));
    std::fs::write(folder.join("new").join("2.M2P1.fbl"), big).unwrap();
    std::fs::write(
        folder.join("cur").join("3.M3P1.fbl:2,S"),
        arf("good-b", &b.0, &b.1, false),
    )
    .unwrap();
    let path = folder.to_str().unwrap();
    let report = json(&ok(&app, &["complaints", "import", path, "--json"], &[]));
    assert_eq!(
        (&report["read"], &report["linked"]),
        (&3.into(), &1.into()),
        "{report}"
    );
    let aside = report["set_aside"].as_array().unwrap();
    assert_eq!(aside.len(), 2, "{report}");
    let rejected = folder.join(".avvisi-rejected");
    for s in aside {
        assert_eq!(s["moved_to"], rejected.to_str().unwrap(), "{report}");
    }
    let whys: Vec<&str> = aside.iter().map(|s| s["why"].as_str().unwrap()).collect();
    assert!(whys.iter().any(|w| w.starts_with("too big")), "{whys:?}");
    assert!(
        whys.iter().any(|w| w.contains("nested too deep")),
        "{whys:?}"
    );
    for name in ["1.M1P1.fbl", "2.M2P1.fbl"] {
        assert!(rejected.join("cur").join(name).is_file(), "{name}");
        assert!(!folder.join("new").join(name).exists(), "{name}");
    }
    // Again: only the good one is met, already imported.
    let again = json(&ok(&app, &["complaints", "import", path, "--json"], &[]));
    assert_eq!(
        (
            &again["read"],
            &again["already_imported"],
            &again["set_aside"]
        ),
        (&1.into(), &1.into(), &serde_json::json!([])),
        "{again}"
    );
}
