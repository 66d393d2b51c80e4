//! The bulk senders' rules (issue 25): every email labelled with its stream (`List-Id`,
//! `Feedback-ID`), the one-click unsubscribe (RFC 8058) on the streams that are not the user's
//! own procedure, signed by DKIM, and the endpoint that records the opt-out, which the planner
//! and the send-time check then honour. Through the real binary, the files transport, the SMTP
//! sink, dkimpy and the daemon's own listener.

use std::path::Path;
use std::time::Duration;

use sqlx::Row;
use testkit::process::Proc;
use testkit::smtp_sink::SmtpSink;

use crate::helpers::TestApp;
use crate::on_both_backends;

on_both_backends!(
    every_email_is_labelled_and_only_the_notices_offer_an_unsubscribe,
    the_labels_are_signed_and_verify_over_smtp,
    smtp_without_the_public_url_is_refused,
    the_link_stops_its_stream_for_its_user_and_nothing_else,
    a_one_off_campaign_is_a_stream_and_transactional_ones_offer_no_unsubscribe,
    an_opted_out_section_leaves_its_digest_and_the_rest_goes,
);

const PUBLIC_URL: &str = "https://avvisi.example.it/disiscrizione";
const SECRET: &str = "unsubscribe-case-key-0123456789abcdefghij";
const MAINTENANCE: &str = "maintenance_notice-2026-11-30";
const NOTICE_DAY: &str = "2026-11-27T09:30:00+01:00";

/// The first top-level header `name` of `email` (case-insensitive), unfolded.
fn header(email: &str, name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    let mut current: Option<(String, String)> = None;
    for line in email.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = current.take() {
            if found.is_none() && n.eq_ignore_ascii_case(name) {
                found = Some(v.trim().to_string());
            }
        }
        current = line
            .split_once(':')
            .map(|(n, v)| (n.trim().to_string(), v.to_string()));
    }
    if let Some((n, v)) = current {
        if found.is_none() && n.eq_ignore_ascii_case(name) {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// Runs the binary, expecting success; its standard output.
fn avvisi_ok(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = app.avvisi(args, env);
    assert!(
        out.status.success(),
        "avvisi {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `run --once` with the example snapshot imported at `now`.
fn run_once(app: &TestApp, now: &str, env: &[(&str, &str)]) -> String {
    avvisi_ok(
        app,
        &[
            "run",
            "--once",
            "--import",
            "examples/users.csv",
            "--now",
            now,
        ],
        env,
    )
}

/// Checks the labels of one email and returns its `List-Unsubscribe`, if any: a maintenance
/// notice's email carries all four headers, every other one the labels of its procedure's
/// stream and no unsubscribe.
fn check_labels(name: &str, email: &str, url_base: &str) -> Option<String> {
    let campaign = header(email, "X-Avvisi-Campaign").expect("X-Avvisi-Campaign");
    let campaign = campaign.split('/').next().unwrap();
    let list_id = header(email, "List-Id").unwrap_or_else(|| panic!("{name}: no List-Id"));
    let feedback = header(email, "Feedback-ID").unwrap_or_else(|| panic!("{name}: no Feedback-ID"));
    let unsubscribe = header(email, "List-Unsubscribe");
    let post = header(email, "List-Unsubscribe-Post");
    match list_id.as_str() {
        "<maintenance-notice.avvisi.istruzione.it>" => {
            assert_eq!(campaign, MAINTENANCE, "{name}");
            assert_eq!(
                feedback,
                format!("{MAINTENANCE}:maintenance-notice:istanzeonline"),
                "{name}"
            );
            let link = unsubscribe
                .clone()
                .unwrap_or_else(|| panic!("{name}: no List-Unsubscribe"));
            assert!(
                link.starts_with(&format!("<{url_base}/u/")) && link.ends_with('>'),
                "{name}: {link}"
            );
            assert_eq!(
                post.as_deref(),
                Some("List-Unsubscribe=One-Click"),
                "{name}"
            );
        }
        "<reminders.avvisi.istruzione.it>" => {
            // A digest led by another section is labelled by its procedure's campaign.
            let labelled = feedback
                .strip_suffix(":reminders:istanzeonline")
                .unwrap_or_else(|| panic!("{name}: {feedback}"));
            assert!(
                labelled.ends_with("-2026-11-30") && !labelled.starts_with("maintenance"),
                "{name}: {feedback} ({campaign})"
            );
            assert!(
                unsubscribe.is_none() && post.is_none(),
                "{name}: a reminder offers an unsubscribe"
            );
        }
        other => panic!("{name}: unexpected List-Id {other}"),
    }
    unsubscribe
}

/// The files transport: the first notice's reminders carry their labels and no unsubscribe;
/// on the maintenance notice's day, the notice's own emails carry the four headers, with the
/// placeholder link while `unsubscribe.public_url` is not set.
async fn every_email_is_labelled_and_only_the_notices_offer_an_unsubscribe(app: TestApp) {
    run_once(&app, "2026-11-23T10:00:00+01:00", &[]);
    let first = app.eml_files();
    assert_eq!(first.len(), 30);
    for (name, email) in &first {
        assert_eq!(
            check_labels(name, email, ""),
            None,
            "{name}: a reminder offers an unsubscribe"
        );
    }
    run_once(&app, NOTICE_DAY, &[]);
    let placeholder = "https://unsubscribe-public-url-not-set.invalid";
    let notices: Vec<String> = app
        .eml_files()
        .iter()
        .filter(|(name, _)| !first.iter().any(|(n, _)| n == name))
        .filter_map(|(name, email)| check_labels(name, email, placeholder))
        .collect();
    assert!(notices.len() >= 3, "{notices:?}");
    app.teardown().await;
}

/// Over SMTP with DKIM: dkimpy verifies every email the sink received with the labels signed
/// (`h=` lists them), and fails each once its Subject is changed.
async fn the_labels_are_signed_and_verify_over_smtp(app: TestApp) {
    if !crate::dkim::verifier_available() {
        app.teardown().await;
        return;
    }
    let (key, public) = crate::dkim::new_key("rsa", app.dir.path());
    let key_file = app.dir.path().join("rsa.key");
    std::fs::write(&key_file, key).unwrap();
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let run_app = app.clone();
    tokio::task::spawn_blocking(move || {
        let env = testkit::smtp::with(
            &url,
            &[
                ("AVVISI__DKIM__SELECTOR", "avvisi2026"),
                ("AVVISI__DKIM__DOMAIN", "istruzione.it"),
                ("AVVISI__DKIM__KEY_FILE", key_file.to_str().unwrap()),
            ],
        );
        run_once(&run_app, NOTICE_DAY, &env)
    })
    .await
    .unwrap();
    let received = sink.received();
    assert!(!received.is_empty());
    let dir = app.dir.path().join("received");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    let mut notices = 0;
    for (i, r) in received.iter().enumerate() {
        let email = r.text();
        let name = format!("{i}.eml");
        if check_labels(&name, &email, testkit::smtp::UNSUBSCRIBE_URL).is_some() {
            notices += 1;
            let signature = header(&email, "DKIM-Signature").expect("signed");
            let h = signature
                .split(';')
                .map(str::trim)
                .find_map(|tag| tag.strip_prefix("h="))
                .expect("h=")
                .replace(' ', "");
            let signed: Vec<&str> = h.split(':').collect();
            for name in [
                "list-id",
                "feedback-id",
                "list-unsubscribe",
                "list-unsubscribe-post",
            ] {
                assert!(signed.contains(&name), "{name} not in h={h}");
            }
        }
        let path = dir.join(&name);
        std::fs::write(&path, &r.data).unwrap();
        files.push(path.display().to_string());
    }
    assert!(notices >= 3, "{notices} maintenance notices");
    let script = crate::helpers::repo_path("tests/tools/dkim_verify.py");
    let mut args = vec![script.to_str().unwrap(), "rsa", public.trim()];
    args.extend(files.iter().map(String::as_str));
    let report = crate::dkim::run("python3", &args);
    let passed = report.lines().filter(|l| l.starts_with("pass ")).count();
    let tampered = report
        .lines()
        .filter(|l| l.starts_with("tampered-fail "))
        .count();
    assert_eq!((passed, tampered), (files.len(), files.len()), "{report}");
    app.teardown().await;
}

/// SMTP without `unsubscribe.public_url`: refused before anything is sent (exit 2), naming the
/// setting; nothing reaches the relay.
async fn smtp_without_the_public_url_is_refused(app: TestApp) {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let run_app = app.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_app.avvisi(
            &[
                "run",
                "--once",
                "--import",
                "examples/users.csv",
                "--now",
                NOTICE_DAY,
            ],
            &[
                ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
                ("AVVISI__SMTP__URL", url.as_str()),
            ],
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unsubscribe.public_url") && stderr.contains("SMTP delivery is refused"),
        "{stderr}"
    );
    assert_eq!(sink.count(), 0);
    app.teardown().await;
}

/// `POST path` with the one-click body: the status, the headers, the body.
fn http_post(address: &str, path: &str) -> crate::helpers::Response {
    use std::io::{Read, Write};
    let body = "List-Unsubscribe=One-Click";
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let code = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code.parse().unwrap(), headers, body.to_string())
}

fn get(address: &str, path: &str) -> crate::helpers::Response {
    crate::helpers::http_get(address, path).expect("the endpoint answers")
}

/// The address the daemon serves the unsubscribe endpoint on, from its log.
async fn unsubscribe_address(daemon: &Proc, log: &Path) -> String {
    let line = testkit::process::eventually(
        "the unsubscribe endpoint's address in the daemon's log",
        Duration::from_secs(60),
        || async {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(status) = daemon.try_wait() {
                panic!("the daemon ended ({status}): {text}");
            }
            text.lines()
                .find(|l| l.contains("serving the one-click unsubscribe"))
                .map(str::to_string)
        },
    )
    .await;
    line.split("on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line}"))
        .to_string()
}

async fn optouts(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query("SELECT user_id, stream, source FROM optouts ORDER BY user_id")
        .fetch_all(app.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// `user`'s row of the maintenance notice: (state, reason), if planned.
async fn notice_row(app: &TestApp, user: &str) -> Option<(String, Option<String>)> {
    sqlx::query(
        "SELECT o.state, o.reason FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         WHERE c.name = $1 AND o.user_id = $2",
    )
    .bind(MAINTENANCE)
    .bind(user)
    .fetch_optional(app.db.pool())
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

/// Takes `user`'s maintenance notice out of the outbox, as if it had not been planned yet.
async fn unplan(app: &TestApp, user: &str) {
    sqlx::query(
        "DELETE FROM outbox WHERE user_id = $1 \
         AND campaign_id = (SELECT id FROM campaigns WHERE name = $2)",
    )
    .bind(user)
    .bind(MAINTENANCE)
    .execute(app.db.pool())
    .await
    .unwrap();
}

/// The daemon's endpoint behind the emailed link: GET changes nothing, an altered or forged
/// token is refused and records nothing, POST records the opt-out (twice is fine). Then the
/// next planning leaves that user out of the stream, a message already planned is skipped at
/// send time, another user is untouched; `explain`, `status` and `optouts list|remove` show it.
async fn the_link_stops_its_stream_for_its_user_and_nothing_else(app: TestApp) {
    let env = [
        ("AVVISI__UNSUBSCRIBE__PUBLIC_URL", PUBLIC_URL),
        ("AVVISI__UNSUBSCRIBE__SECRET", SECRET),
    ];
    run_once(&app, NOTICE_DAY, &env);
    // (user, path of the emailed link) of the maintenance notices, from the emails themselves.
    let links: Vec<(String, String)> = app
        .eml_files()
        .iter()
        .filter_map(|(name, email)| {
            let link = check_labels(name, email, PUBLIC_URL)?;
            let user = name.split('.').nth(2).unwrap().to_string();
            let path = link
                .trim_start_matches('<')
                .trim_end_matches('>')
                .strip_prefix(PUBLIC_URL)
                .unwrap()
                .to_string();
            Some((user, path))
        })
        .collect();
    assert!(links.len() >= 3, "{links:?}");
    let [(x, x_path), (y, _), (z, z_path)] = [&links[0], &links[1], &links[2]].map(Clone::clone);

    // z's notice is planned again (pending) before z opts out.
    unplan(&app, &z).await;
    avvisi_ok(&app, &["plan", "--now", "2026-11-27T09:40:00+01:00"], &env);
    assert_eq!(notice_row(&app, &z).await.unwrap().0, "pending");

    // The daemon, outside the sending hours: it serves the endpoint and sends nothing.
    let log = app.dir.path().join("daemon.log");
    let mut daemon_env = env.to_vec();
    daemon_env.push(("AVVISI__UNSUBSCRIBE__ADDRESS", "127.0.0.1:0"));
    let daemon = app.spawn(
        &["daemon", "--now", "2026-11-27T21:00:00+01:00"],
        &daemon_env,
        &log,
    );
    let address = unsubscribe_address(&daemon, &log).await;

    // GET: a confirmation page with a button; nothing recorded.
    let (code, headers, page) = get(&address, &x_path);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<html lang=\"it\">") && page.contains("<form method=\"post\">"));
    assert!(page.contains("gli avvisi di manutenzione"), "{page}");
    assert!(
        !page.contains("<script") && !page.contains("src="),
        "{page}"
    );
    assert!(headers.iter().any(|(n, v)| n == "content-security-policy"
        && v.contains("default-src 'none'")
        && !v.contains("script-src")));
    assert!(optouts(&app).await.is_empty());

    // Altered (one character of the MAC), cut, or another user's payload under x's MAC.
    let mut altered = x_path.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let (_, mac) = x_path.rsplit_once('.').unwrap();
    let (z_payload, _) = z_path.rsplit_once('.').unwrap();
    let forged = format!("{z_payload}.{mac}");
    for bad in [&altered, &x_path[..x_path.len() - 5].to_string(), &forged] {
        let (code, _, page) = http_post(&address, bad);
        assert_eq!(code, 400, "{bad}: {page}");
        assert!(page.contains("Link non valido"), "{page}");
        assert_eq!(get(&address, bad).0, 400);
    }
    assert_eq!(get(&address, "/").0, 404);
    assert!(optouts(&app).await.is_empty());

    // POST: recorded, a short page, no cookie, no redirect; again: fine, still one.
    for _ in 0..2 {
        let (code, headers, page) = http_post(&address, &x_path);
        assert_eq!(code, 200, "{page}");
        assert!(page.contains("Iscrizione annullata") && page.contains("lang=\"it\""));
        assert!(
            !headers
                .iter()
                .any(|(n, _)| n == "set-cookie" || n == "location"),
            "{headers:?}"
        );
    }
    assert_eq!(http_post(&address, &z_path).0, 200);
    assert_eq!(
        optouts(&app).await,
        [&x, &z]
            .map(|u| (u.clone(), "maintenance_notice".into(), "link".into()))
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    // The pages a citizen sees, in a real browser, checked by axe-core (WCAG 2.1 A and AA):
    // the confirmation, the button, the answer, and a link that is not valid.
    pages_are_accessible(&app, &address, &x_path, &altered).await;
    assert_eq!(
        optouts(&app).await.len(),
        2,
        "x's opt-out again is still one"
    );
    daemon.terminate().await;

    // The next planning: y's notice is planned again, x's is not.
    unplan(&app, &x).await;
    unplan(&app, &y).await;
    avvisi_ok(&app, &["plan", "--now", "2026-11-27T09:50:00+01:00"], &env);
    assert_eq!(notice_row(&app, &y).await.unwrap().0, "pending");
    assert_eq!(notice_row(&app, &x).await, None);
    // At send time: y's goes, z's (planned before the opt-out) is skipped.
    avvisi_ok(
        &app,
        &["run", "--once", "--now", "2026-11-27T09:55:00+01:00"],
        &env,
    );
    assert_eq!(notice_row(&app, &y).await.unwrap().0, "sent");
    assert_eq!(
        notice_row(&app, &z).await,
        Some((
            "skipped".to_string(),
            Some("opted out of this stream".to_string())
        ))
    );

    // explain, status, optouts list|remove.
    let explained = avvisi_ok(
        &app,
        &["explain", &x, "--now", "2026-11-27T10:00:00+01:00"],
        &env,
    );
    assert!(
        explained.contains("opted out of the maintenance notice (maintenance_notice)"),
        "{explained}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&avvisi_ok(&app, &["status", "--json"], &env)).unwrap();
    assert_eq!(
        status["optouts"],
        serde_json::json!([{"stream": "maintenance_notice", "users": 2}])
    );
    let listed: serde_json::Value =
        serde_json::from_str(&avvisi_ok(&app, &["optouts", "list", "--json"], &env)).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed
        .iter()
        .all(|o| o["source"] == "link" && o["stream"] == "maintenance_notice"));
    avvisi_ok(&app, &["optouts", "remove", &x, "maintenance_notice"], &env);
    assert_eq!(optouts(&app).await.len(), 1);
    let again = app.avvisi(&["optouts", "remove", &x, "maintenance_notice"], &env);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("has not opted out"));
    app.teardown().await;
}

/// The unsubscribe pages in headless Chromium, each checked by axe-core: the confirmation of
/// `path`, the answer after its button, and the page of the invalid link `bad`. Skipped, loudly
/// under CI, without chromedriver or axe-core (as the console's browser case).
async fn pages_are_accessible(app: &TestApp, address: &str, path: &str, bad: &str) {
    use crate::console_web::{accessible, appears, axe_script, browser, chromedriver, shows};
    let Some((driver, port)) = chromedriver(&app.dir.path().join("chromedriver.log")).await else {
        return;
    };
    let axe = axe_script();
    let b = browser(port, &app.dir.path().join("profile")).await;
    b.goto(&format!("http://{address}{path}")).await.unwrap();
    shows(&b, "Annullare l'iscrizione?").await;
    accessible(&b, axe.as_deref(), "the unsubscribe confirmation").await;
    appears(&b, "button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    shows(&b, "Iscrizione annullata").await;
    accessible(&b, axe.as_deref(), "the unsubscribe answer").await;
    b.goto(&format!("http://{address}{bad}")).await.unwrap();
    shows(&b, "Link non valido").await;
    accessible(&b, axe.as_deref(), "an invalid unsubscribe link").await;
    b.close().await.unwrap();
    driver.terminate().await;
}

/// Each one-off campaign is a stream of its own (`<NAME.campaign.DOMAIN>`) with a one-click
/// unsubscribe, unless created `--transactional REASON`: stored, shown, and no unsubscribe.
async fn a_one_off_campaign_is_a_stream_and_transactional_ones_offer_no_unsubscribe(app: TestApp) {
    let now = "2026-11-24T10:00:00+01:00";
    let env = [
        ("AVVISI__UNSUBSCRIBE__PUBLIC_URL", PUBLIC_URL),
        ("AVVISI__UNSUBSCRIBE__SECRET", SECRET),
    ];
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "campaign",
            "create",
            name,
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--filter",
            "province=bo",
        ];
        args.extend_from_slice(extra);
        avvisi_ok(&app, &args, &env)
    };
    let out = create("avviso_bo", &[]);
    assert!(out.contains("carry a one-click unsubscribe"), "{out}");
    let out = create(
        "esito_bo",
        &["--transactional", "esito della domanda presentata"],
    );
    assert!(
        out.contains("transactional (esito della domanda presentata)"),
        "{out}"
    );
    let shown = avvisi_ok(&app, &["campaign", "show", "esito_bo", "--json"], &env);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["stream"], "campaign:esito_bo");
    assert_eq!(shown["unsubscribe"], false);
    assert_eq!(shown["transactional"], "esito della domanda presentata");
    let refused = app.avvisi(
        &[
            "campaign",
            "create",
            "vuoto",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--transactional",
            " ",
        ],
        &env,
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--transactional needs the reason"));
    // The second person's approval is the console's business (tests/api/console.rs): here
    // the campaigns launch as on a test installation.
    let launch_env: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("AVVISI__APPROVAL__REQUIRED", "false")])
        .collect();
    for name in ["avviso_bo", "esito_bo"] {
        avvisi_ok(&app, &["campaign", "launch", name], &launch_env);
    }
    run_once(&app, now, &env);
    // Enabled users in Bologna: U0008 and U0024, one email of each campaign.
    let mut seen = Vec::new();
    for (name, email) in app.eml_files() {
        let campaign = name.split('.').next().unwrap().to_string();
        if campaign != "avviso_bo" && campaign != "esito_bo" {
            continue;
        }
        let label = campaign.replace('_', "-");
        assert_eq!(
            header(&email, "List-Id").as_deref(),
            Some(format!("<{label}.campaign.avvisi.istruzione.it>").as_str()),
            "{name}"
        );
        assert_eq!(
            header(&email, "Feedback-ID"),
            Some(format!("{campaign}:{label}.campaign:istanzeonline")),
            "{name}"
        );
        let unsubscribe = header(&email, "List-Unsubscribe");
        match campaign.as_str() {
            "avviso_bo" => {
                assert!(
                    unsubscribe.is_some_and(|u| u.starts_with(&format!("<{PUBLIC_URL}/u/"))),
                    "{name}"
                );
                assert!(header(&email, "List-Unsubscribe-Post").is_some(), "{name}");
            }
            _ => assert!(
                unsubscribe.is_none() && header(&email, "List-Unsubscribe-Post").is_none(),
                "{name}: a transactional campaign offers an unsubscribe"
            ),
        }
        seen.push(campaign);
    }
    seen.sort();
    assert_eq!(seen, ["avviso_bo", "avviso_bo", "esito_bo", "esito_bo"]);
    app.teardown().await;
}

/// A two-row digest of the maintenance notice and a reminder, planned before its user opted out
/// of the notice: at send time the notice's section is dropped (the digest's lead), its row
/// skipped, and the reminder goes as an email of its own.
async fn an_opted_out_section_leaves_its_digest_and_the_rest_goes(app: TestApp) {
    // Planned in the evening, outside the sending hours: nothing sent yet.
    run_once(&app, "2026-11-27T20:30:00+01:00", &[]);
    assert!(app.eml_files().is_empty());
    // (user, whether the notice leads) of the notices in a digest of two rows.
    let rows = sqlx::query(
        "SELECT o.user_id, CASE WHEN o.digest_of = o.id THEN 1 ELSE 0 END AS leads \
         FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         WHERE c.name = $1 AND o.digest_of IS NOT NULL \
           AND (SELECT COUNT(*) FROM outbox d WHERE d.digest_of = o.digest_of) = 2 \
         ORDER BY o.user_id",
    )
    .bind(MAINTENANCE)
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let pick = |leads: i32| -> String {
        rows.iter()
            .find(|r| r.get::<i32, _>("leads") == leads)
            .map(|r| r.get("user_id"))
            .unwrap_or_else(|| panic!("no two-row digest where the notice leads = {leads}"))
    };
    // The calendar plans the notice before the reminders' sections of the day: it leads.
    let lead = pick(1);
    avvisi::audience::optout::record(
        &app.db,
        &lead,
        &avvisi::store::Stream::MaintenanceNotice,
        avvisi::store::OptOutSource::Operator,
        crate::helpers::at("2026-11-27T21:00:00+01:00"),
    )
    .await
    .unwrap();
    run_once(&app, "2026-11-28T09:30:00+01:00", &[]);
    let user = &lead;
    let row = notice_row(&app, user).await.unwrap();
    assert_eq!(row.0, "skipped", "{user}");
    assert!(
        row.1
            .as_deref()
            .unwrap()
            .starts_with("opted out of this stream"),
        "{user}: {row:?}"
    );
    // Their email went, the reminder alone: its own campaign, its labels, no unsubscribe.
    let emails: Vec<(String, String)> = app
        .eml_files()
        .into_iter()
        .filter(|(name, _)| name.ends_with(&format!(".{user}.eml")))
        .collect();
    assert_eq!(emails.len(), 1, "{user}: {emails:?}");
    let (name, email) = &emails[0];
    let campaign = header(email, "X-Avvisi-Campaign").unwrap();
    assert!(!campaign.starts_with("maintenance"), "{name}: {campaign}");
    assert_eq!(check_labels(name, email, ""), None, "{name}");
    let sent: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE user_id = $1 AND state = 'sent'")
            .bind(user)
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(sent, 1, "{user}");
    app.teardown().await;
}
