//! avvisi against a real relay, the way production talks to its own: Postfix requiring STARTTLS
//! and SASL AUTH, its certificate from a private CA (`smtp.tls_ca_file`), forwarding to the
//! test's sink (see `relay`). Each case runs the `avvisi` binary (`run --once`), as an operator
//! would: the right password gets every email across exactly once; a wrong password, or a
//! certificate from a CA avvisi does not trust, sends nothing and changes no message; the DKIM
//! signature survives the relay and covers every header it names and the body.
//!
//! The relay needs root, Postfix and Cyrus SASL (`relay`): without them the cases are skipped
//! with a message, or fail under `AVVISI_REQUIRE_RELAY=1` or `CI=true`.

use std::process::{Command, Output};
use std::time::Duration;

use crate::helpers::{repo_path, skip_or_fail, untouched, TestApp};
use crate::on_both_backends;
use crate::relay::{PostfixRelay, USERNAME};
use testkit::smtp_sink::{distinct_message_ids, SmtpSink};

/// The instant of the examples' first notice: 47 reminders to 30 people, 30 emails.
const NOW: &str = "2026-11-23T10:00:00+01:00";

/// A sink, and a relay forwarding to it; `None` when the relay cannot run here.
async fn relay_to_sink() -> Option<(SmtpSink, PostfixRelay)> {
    let sink = SmtpSink::start().await;
    let relay = PostfixRelay::start(sink.addr()).await?;
    Some((sink, relay))
}

/// `avvisi run --once` through `relay`, logging in with `password` (from a file, as in
/// production), trusting the relay's CA when `trust_ca`; `extra` on top.
fn run_once(
    app: &TestApp,
    relay: &PostfixRelay,
    password: &str,
    trust_ca: bool,
    extra: &[(&str, &str)],
) -> Output {
    let password_file = relay
        .scratch()
        .join(format!("smtp-password-{:08x}", rand::random::<u32>()));
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let ca = relay.ca_file();
    let url = relay.url();
    let mut env = vec![
        ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
        ("AVVISI__SMTP__URL", url.as_str()),
        (
            "AVVISI__UNSUBSCRIBE__PUBLIC_URL",
            testkit::smtp::UNSUBSCRIBE_URL,
        ),
        (
            "AVVISI__UNSUBSCRIBE__SECRET",
            testkit::smtp::UNSUBSCRIBE_SECRET,
        ),
        ("AVVISI__SMTP__USERNAME", USERNAME),
        (
            "AVVISI__SMTP__PASSWORD_FILE",
            password_file.to_str().unwrap(),
        ),
        ("AVVISI__SMTP__TIMEOUT_SECONDS", "10"),
    ];
    if trust_ca {
        env.push(("AVVISI__SMTP__TLS_CA_FILE", ca.to_str().unwrap()));
    }
    env.extend_from_slice(extra);
    app.avvisi(&["run", "--once", "--now", NOW], &env)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// STARTTLS and AUTH with the right password: Postfix accepts every email, over TLS and
/// authenticated (its `Received:` says `ESMTPSA`), and each arrives at the sink exactly once;
/// the outbox says sent.
async fn starttls_and_auth_carry_every_email_once(app: TestApp) {
    let Some((sink, relay)) = relay_to_sink().await else {
        return;
    };
    app.import_examples().await;
    let out = run_once(&app, &relay, relay.password(), true, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    relay.drain(Duration::from_secs(30)).await;
    let received = sink.wait_for(30, Duration::from_secs(10)).await;
    assert_eq!(
        (received.len(), distinct_message_ids(&received)),
        (30, 30),
        "{}",
        relay.log()
    );
    let mut recipients: Vec<&String> = received.iter().flat_map(|r| &r.rcpt_to).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 30);
    for r in &received {
        let hop = r.header("Received").unwrap_or_default();
        assert!(
            hop.contains("relay.avvisi-test.invalid (Postfix)") && hop.contains("with ESMTPSA"),
            "not over TLS and AUTH through the relay: {hop}"
        );
    }
    // The relay's own account: 30 messages from the authenticated user, in TLS sessions.
    let log = relay.log();
    let authenticated = log
        .lines()
        .filter(|l| l.contains(&format!("sasl_username={USERNAME}")))
        .count();
    assert_eq!(authenticated, 30, "{log}");
    assert!(log.contains("TLS connection established from"), "{log}");
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 47);
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    assert!(!format!("{stdout}{stderr}").contains(relay.password()));
}

/// A wrong password: Postfix refuses AUTH; nothing is sent or marked, every message stays
/// pending without an attempt; the operator reads that authentication failed, and no password
/// appears in the output.
async fn a_wrong_password_is_refused_and_changes_nothing(app: TestApp) {
    let Some((sink, relay)) = relay_to_sink().await else {
        return;
    };
    app.import_examples().await;
    let wrong = format!("wrong-{:016x}", rand::random::<u64>());
    let out = run_once(&app, &relay, &wrong, true, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("delivery stopped"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("535") && line.contains("authentication failed"),
        "{line}"
    );
    for secret in [wrong.as_str(), relay.password()] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a password in the output:\n{stdout}\n{stderr}"
        );
    }
    untouched(&app.outbox().await);
    relay.drain(Duration::from_secs(5)).await;
    assert!(sink.received().is_empty());
    assert!(relay.log().contains("authentication failed"));
}

/// The relay's certificate is from a CA avvisi was not told to trust (no `smtp.tls_ca_file`):
/// the session is refused before AUTH, the operator reads why, nothing is sent or changed.
async fn a_certificate_from_an_unknown_ca_is_refused(app: TestApp) {
    let Some((sink, relay)) = relay_to_sink().await else {
        return;
    };
    app.import_examples().await;
    let out = run_once(&app, &relay, relay.password(), false, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("delivery stopped"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("UnknownIssuer") && line.contains("smtp.tls_ca_file"),
        "{line}"
    );
    untouched(&app.outbox().await);
    relay.drain(Duration::from_secs(5)).await;
    assert!(sink.received().is_empty());
    let log = relay.log();
    assert!(!log.contains("sasl_username"), "{log}");
}

/// DKIM across the relay: each email as the sink received it verifies with dkimpy, and changing
/// any header named in `h=`, or the body, makes it fail.
async fn dkim_signatures_survive_the_relay_and_cover_what_they_name(app: TestApp) {
    let verifier = Command::new("python3")
        .args(["-c", "import dkim, nacl"])
        .status()
        .is_ok_and(|s| s.success());
    if !verifier {
        skip_or_fail(
            "AVVISI_REQUIRE_DKIM_VERIFIER",
            "the DKIM verification across the relay: dkimpy is not installed \
             (apt-get install python3-dkim python3-nacl, or pip install dkimpy pynacl)",
        );
        return;
    }
    let Some((sink, relay)) = relay_to_sink().await else {
        return;
    };
    app.import_examples().await;
    let (key_file, public) = ed25519_key(relay.scratch());
    let out = run_once(
        &app,
        &relay,
        relay.password(),
        true,
        &[
            ("AVVISI__DKIM__SELECTOR", "avvisi2026"),
            ("AVVISI__DKIM__DOMAIN", "istruzione.it"),
            ("AVVISI__DKIM__KEY_FILE", key_file.to_str().unwrap()),
            ("AVVISI__DKIM__ALGORITHM", "ed25519"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    relay.drain(Duration::from_secs(30)).await;
    let received = sink.wait_for(30, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 30);
    let folder = relay.scratch().join("received");
    std::fs::create_dir(&folder).unwrap();
    let mut files = Vec::new();
    for (i, r) in received.iter().enumerate() {
        assert!(
            r.header("Received").is_some_and(|h| h.contains("Postfix")),
            "not through the relay"
        );
        let file = folder.join(format!("{i:02}.eml"));
        std::fs::write(&file, &r.data).unwrap();
        files.push(file.display().to_string());
    }
    let script = repo_path("tests/tools/dkim_relayed.py");
    let mut args = vec![script.display().to_string(), "ed25519".into(), public];
    args.extend(files.iter().cloned());
    let out = Command::new("python3").args(&args).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!report.contains("tampered-pass"), "{report}");
    for file in &files {
        let of_file = |l: &&str| l.ends_with(&format!(" {file}"));
        let lines: Vec<&str> = report.lines().filter(of_file).collect();
        assert!(lines.contains(&format!("pass {file}").as_str()), "{report}");
        let signed: usize = lines
            .iter()
            .find_map(|l| l.strip_prefix("signed "))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{report}"));
        // The headers avvisi signs (`config::checks::check_dkim`), each changed once, then the body.
        assert!(signed >= 9, "{report}");
        let failed: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("tampered-fail "))
            .map(|rest| rest.split(' ').next().unwrap())
            .collect();
        assert_eq!(failed.len(), signed + 1, "{report}");
        for name in ["from", "to", "subject", "date", "message-id", "body"] {
            assert!(failed.contains(&name), "{name} not covered: {report}");
        }
    }
}

/// (key file, public key for the DNS record) of a new ed25519 key in `dir`: signing with RSA
/// takes the debug build most of a second per email.
fn ed25519_key(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64, nacl.signing; k = nacl.signing.SigningKey.generate(); \
             print(base64.b64encode(bytes(k)).decode()); \
             print(base64.b64encode(bytes(k.verify_key)).decode())",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (seed, public) = text.trim().split_once('\n').unwrap();
    let file = dir.join("dkim-ed25519.key");
    std::fs::write(&file, seed).unwrap();
    (file, public.to_string())
}

on_both_backends!(
    starttls_and_auth_carry_every_email_once,
    a_wrong_password_is_refused_and_changes_nothing,
    a_certificate_from_an_unknown_ca_is_refused,
    dkim_signatures_survive_the_relay_and_cover_what_they_name,
);
