//! Hostile input as the binary meets it (issue 20): a relay's reply with control characters in
//! it, CSV cells that a spreadsheet would run as formulas, passwords in URLs of every shape,
//! files swapped for symlinks or FIFOs, and what the daemon's HTTP server answers.

use std::process::Output;

use crate::helpers::TestApp;
use crate::on_both_backends;
use crate::smtp_sink::{Fault, SmtpSink};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What a terminal would act on, or what starts a forged line: ESC, BEL, CR, DEL, C1 and the
/// bidirectional overrides.
fn assert_inert(what: &str, text: &str) {
    for c in [
        '\x1b', '\x07', '\r', '\x7f', '\u{85}', '\u{202e}', '\u{2066}',
    ] {
        assert!(!text.contains(c), "{what}: {c:?} in\n{text}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("INFO forged")),
        "{what}: a forged line in\n{text}"
    );
}

/// A relay refuses U0002's address with a reply that would retitle and clear the operator's
/// terminal and forge a log line. The text log, `run --once`, `status`, `explain` and
/// `suppress list` all show it escaped.
async fn a_relay_reply_with_control_characters_is_shown_escaped(app: TestApp) {
    let reply = "5.1.1 \x1b]0;owned\x07\x1b[2J no such user\r\x1b[2K\
                 INFO forged\nINFO forged log line user_id=ADMIN \u{202e}gpj.exe\u{2066}\u{85}\x7f";
    let sink = SmtpSink::start_with(vec![Fault::RejectRcpt {
        address: "ilaria.dangelo@gmail.com".into(),
        code: 550,
        text: reply.into(),
    }])
    .await;
    let url = sink.url();
    let run_app = app.clone();
    let run = tokio::task::spawn_blocking(move || {
        let smtp = [
            ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
            ("AVVISI__SMTP__URL", url.as_str()),
        ];
        run_app.avvisi(
            &[
                "run",
                "--once",
                "--import",
                "examples/users.csv",
                "--now",
                "2026-11-23T10:00:00+01:00",
                "-v",
            ],
            &smtp,
        )
    })
    .await
    .unwrap();
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let log = stderr(&run);
    // The reply reached the log, escaped.
    assert!(
        log.contains(r"5.1.1 \x1b]0;owned\x07\x1b[2J no such user\r\x1b[2KINFO forged\nINFO forged log line user_id=ADMIN \u{202e}gpj.exe\u{2066}\u{85}\x7f"),
        "{log}"
    );
    assert_inert("run --once", &format!("{}{log}", stdout(&run)));

    let escaped = r"no such user\r\x1b[2KINFO forged\nINFO forged log line";
    for args in [
        &["status"][..],
        &["explain", "U0002", "--now", "2026-11-23T10:00:00+01:00"],
        &["suppress", "list"],
    ] {
        let out = app.avvisi(args, &[]);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "{args:?}: {all}");
        assert!(all.contains(escaped), "{args:?}: {all}");
        assert_inert(&format!("{args:?}"), &all);
    }
}

on_both_backends!(a_relay_reply_with_control_characters_is_shown_escaped);
