//! What operators watch (issue "Operating it"): the daemon's HTTP endpoints scraped during a
//! real campaign (the binary, the SMTP sink), the status page rendered by headless Chromium,
//! JSON log lines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::helpers::{repo_path, served_address, TestApp};
use crate::on_both_backends;
use testkit::process::Proc;
use testkit::smtp_sink::{Fault, SmtpSink};

/// `GET path`: the status code and the body, or `None` when nothing answers.
pub(crate) fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    crate::helpers::http_get(address, path).map(|(code, _, body)| (code, body))
}

/// The daemon binary on `app`'s database at `now`, serving HTTP on a port it binds itself; its
/// log (JSON lines) goes to `log`. Returns it with the address it serves on.
pub(crate) async fn daemon(
    app: &TestApp,
    now: &str,
    env: &[(&str, String)],
    log: &Path,
) -> (Proc, String) {
    let mut all = vec![
        ("AVVISI__HTTP__ADDRESS", "127.0.0.1:0".to_string()),
        ("AVVISI__DAEMON__PLANNER_CRON", "* * * * * *".into()),
        ("AVVISI__DAEMON__POLL_SECONDS", "1".into()),
        ("AVVISI__LOG__FORMAT", "json".into()),
    ];
    all.extend_from_slice(env);
    let child = app.spawn(&["daemon", "--now", now], &all, log);
    let address = served_address(&child, log).await;
    (child, address)
}

/// SIGTERM, and wait until it has stopped.
pub(crate) async fn stop(child: Proc) {
    child.terminate().await;
}

/// Waits until `f` returns `Some`, for at most `timeout`.
async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    testkit::process::eventually(what, timeout, || std::future::ready(f())).await
}

/// The value of the series `name{labels}` in a Prometheus text exposition, summed over the
/// series whose labels contain every one of `with`.
pub(crate) fn metric(text: &str, name: &str, with: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name == name && with.iter().all(|w| labels.contains(w)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}

/// The first notice on the example snapshot: 47 messages (outbox rows), merged into one
/// email per person (the daily digest).
const EMAILS: usize = 30;

/// Emails the outbox says were sent: the distinct Message-IDs of its sent rows.
async fn emails_sent(app: &TestApp) -> usize {
    app.outbox()
        .await
        .iter()
        .filter(|r| r.state == "sent")
        .map(|r| r.message_id.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

async fn sent_in_outbox(app: &TestApp) -> usize {
    app.outbox()
        .await
        .iter()
        .filter(|r| r.state == "sent")
        .count()
}

async fn metrics_move_during_a_campaign(app: TestApp) {
    // A slow relay, one connection: the campaign lasts long enough to be watched.
    let sink = SmtpSink::start_with(vec![Fault::SlowData { millis: 60 }]).await;
    app.import_examples().await;
    let log = app.dir.path().join("daemon.log");
    let mut env = testkit::smtp::env(&sink.url());
    env.extend([
        ("AVVISI__DELIVERY__CONCURRENCY", "1".into()),
        ("AVVISI__DELIVERY__BATCH_SIZE", "5".into()),
    ]);
    let (child, address) = daemon(&app, "2026-11-23T10:00:00+01:00", &env, &log).await;
    let healthz = eventually("/healthz", Duration::from_secs(60), || {
        http_get(&address, "/healthz")
    })
    .await;
    assert_eq!(healthz, (200, "ok\n".to_string()));

    // During the campaign: some sent, not all, and the scrape says what the outbox says.
    let during = eventually("a first send", Duration::from_secs(60), || {
        let (code, text) = http_get(&address, "/metrics")?;
        assert_eq!(code, 200);
        let sent = metric(&text, "avvisi_messages", &["state=\"sent\""])?;
        (sent >= 1.0).then_some(text)
    })
    .await;
    let sent_during = metric(&during, "avvisi_messages", &["state=\"sent\""]).unwrap();
    assert!(sent_during < 47.0, "scraped mid-campaign: {during}");
    let planned = metric(&during, "avvisi_messages", &[]).unwrap();
    assert_eq!(planned, 47.0, "every planned message is counted: {during}");
    assert!(metric(&during, "avvisi_queue_depth", &[]).unwrap() > 0.0);

    sink.wait_for(EMAILS, Duration::from_secs(120)).await;
    let after = eventually("the last outcome recorded", Duration::from_secs(30), || {
        let (_, text) = http_get(&address, "/metrics")?;
        (metric(&text, "avvisi_messages", &["state=\"sent\""])? == 47.0).then_some(text)
    })
    .await;
    assert_eq!(
        sent_in_outbox(&app).await,
        47,
        "the scrape matches the outbox"
    );
    assert_eq!(metric(&after, "avvisi_queue_depth", &[]), Some(0.0));
    assert_eq!(
        metric(&after, "avvisi_messages", &["state=\"pending\""]),
        Some(0.0),
        "a state that emptied reads 0, not its last value: {after}"
    );
    assert_eq!(
        metric(
            &after,
            "avvisi_messages",
            &["campaign=\"registration_incomplete-2026-11-30\""]
        ),
        metric(
            &during,
            "avvisi_messages",
            &["campaign=\"registration_incomplete-2026-11-30\""]
        ),
    );
    // The in-memory ones: latency, replies, ticks, live templates, snapshot age.
    assert_eq!(
        metric(&after, "avvisi_send_duration_seconds_count", &[]),
        Some(EMAILS as f64),
        "{after}"
    );
    assert!(
        metric(
            &after,
            "avvisi_send_duration_seconds_bucket",
            &["le=\"+Inf\""]
        ) == Some(EMAILS as f64)
    );
    assert_eq!(
        metric(&after, "avvisi_relay_replies_total", &["class=\"2xx\""]),
        Some(EMAILS as f64)
    );
    assert!(
        metric(
            &after,
            "avvisi_planner_ticks_total",
            &["outcome=\"planned\""]
        )
        .unwrap()
            >= 1.0
    );
    assert!(metric(&after, "avvisi_planner_tick_duration_seconds_count", &[]).unwrap() >= 1.0);
    let digest = avvisi::render::templates::TemplateSet::load(&repo_path("templates"))
        .unwrap()
        .digest()
        .to_string();
    assert_eq!(
        metric(
            &after,
            "avvisi_templates_live_info",
            &[&format!("digest=\"{digest}\"")]
        ),
        Some(1.0)
    );
    let age = metric(&after, "avvisi_snapshot_age_seconds", &[]).unwrap();
    assert!((0.0..120.0).contains(&age), "snapshot age {age}");
    assert!(after.contains("# TYPE avvisi_send_duration_seconds histogram"));

    // Ready: every check named, all passing.
    let (code, ready) = http_get(&address, "/readyz").unwrap();
    assert_eq!(code, 200, "{ready}");
    for check in [
        "database",
        "templates",
        "relay",
        "snapshot",
        "breaker",
        "deferrals",
    ] {
        assert!(ready.contains(&format!("ok {check}:")), "{ready}");
    }
    stop(child).await;
    // JSON lines: each parses; the lines about a message carry its ids, inside a batch span;
    // planning happens inside a planner tick span.
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        http_get(&address, "/healthz").is_none(),
        "the server stopped with the daemon"
    );
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let planned = events
        .iter()
        .find(|e| e["message"] == "planned")
        .expect("a planned line");
    assert_eq!(planned["spans"][0]["name"], "planner_tick", "{planned}");
    assert!(events.iter().any(|e| e["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("serving /healthz"))));
}

async fn readyz_names_the_relay_and_the_snapshot(app: TestApp) {
    app.import_examples().await;
    // The relay is down: the port answers nothing.
    let closed = testkit::smtp_sink::ClosedPort::bind();
    let relay = closed.url();
    let log = app.dir.path().join("relay-down.log");
    let env = testkit::smtp::env(&relay);
    let (child, address) = daemon(&app, "2026-11-23T10:00:00+01:00", &env, &log).await;
    let body = eventually(
        "/readyz failing on the relay",
        Duration::from_secs(60),
        || {
            let (code, body) = http_get(&address, "/readyz")?;
            (code == 503 && body.contains("FAIL relay:")).then_some(body)
        },
    )
    .await;
    assert!(body.contains("ok database:"), "{body}");
    assert!(body.contains("ok snapshot:"), "{body}");
    // `status` and `explain`, other processes, name the relay and its last fault too: a
    // message due long ago says what it waits for.
    let fresh = ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000");
    let status = app.avvisi(&["status"], &[fresh]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("HELD: the relay is down since ") && l.contains("last fault: ")),
        "{text}"
    );
    // Between two attempts (the daemon backs off), the message is back in the queue.
    let line = eventually("U0002's message pending", Duration::from_secs(60), || {
        let out = app.avvisi(
            &["explain", "U0002", "--now", "2026-11-23T12:00:00+01:00"],
            &[fresh],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| {
                l.trim_start().starts_with("registration_incomplete") && l.contains(" pending ")
            })
            .map(str::to_string)
    })
    .await;
    assert!(
        line.contains("due 2026-11-23 10:00 CET; waits: the relay is down since"),
        "{line}"
    );
    assert!(!line.contains("no daemon is running"), "{line}");
    stop(child).await;

    // Two days later, the snapshot is stale (its limit is 30 hours); files, no relay.
    let log = app.dir.path().join("stale.log");
    let (child, address) = daemon(&app, "2026-11-25T10:00:00+01:00", &[], &log).await;
    let body = eventually(
        "/readyz failing on the snapshot",
        Duration::from_secs(60),
        || {
            let (code, body) = http_get(&address, "/readyz")?;
            (code == 503).then_some(body)
        },
    )
    .await;
    assert!(
        body.contains("FAIL snapshot: the newest full snapshot is 48 hours old"),
        "{body}"
    );
    assert!(body.contains("ok relay:"), "{body}");
    stop(child).await;
}

/// The messages the status page shows as sent, over all campaigns.
fn page_sent(dom: &str) -> u64 {
    dom.split("<td class=\"n sent\">")
        .skip(1)
        .map(|rest| {
            rest.split('<')
                .next()
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

async fn status_page_renders_in_chromium_during_a_campaign(app: TestApp) {
    let Some(chromium) = crate::templates::find_chromium() else {
        crate::helpers::skip_or_fail(
            "AVVISI_REQUIRE_CHROMIUM",
            "the status page test: chromium is not installed (apt-get install chromium)",
        );
        return;
    };
    let sink = SmtpSink::start_with(vec![Fault::SlowData { millis: 400 }]).await;
    app.import_examples().await;
    let log = app.dir.path().join("daemon.log");
    let mut env = testkit::smtp::env(&sink.url());
    env.extend([
        ("AVVISI__DELIVERY__CONCURRENCY", "1".into()),
        ("AVVISI__DELIVERY__BATCH_SIZE", "5".into()),
    ]);
    let (child, address) = daemon(&app, "2026-11-23T10:00:00+01:00", &env, &log).await;
    sink.wait_for(1, Duration::from_secs(60)).await;
    let url = format!("http://{address}/");
    let profile = app.dir.path().join("chromium");
    let dom = |chromium: String, url: String, profile: PathBuf| {
        tokio::task::spawn_blocking(move || {
            crate::templates::chromium_dom_of(&chromium, &url, &profile)
        })
    };
    let first = dom(chromium.clone(), url.clone(), profile.clone())
        .await
        .unwrap();
    let sent_first = page_sent(&first);
    assert!(
        (1..47).contains(&sent_first),
        "mid-campaign, {sent_first} sent: {first}"
    );
    assert!(
        first.contains("<strong id=\"phase\" data-phase=\"reminders\">promemoria</strong>"),
        "{first}"
    );
    assert!(first.contains("data-campaign=\"registration_incomplete-2026-11-30\""));
    assert!(first.contains("<svg"), "the chart is inline SVG");
    assert!(!first.contains("<script"), "no script at all");
    let digest = avvisi::render::templates::TemplateSet::load(&repo_path("templates"))
        .unwrap()
        .digest()
        .to_string();
    assert!(first.contains(&format!("<code id=\"templates-live\">{digest}</code>")));

    sink.wait_for(EMAILS, Duration::from_secs(120)).await;
    let start = Instant::now();
    while sent_in_outbox(&app).await < 47 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "outcomes not recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = dom(chromium, url, profile).await.unwrap();
    assert_eq!(page_sent(&last), 47, "{last}");
    assert!(last.contains("<span id=\"queue-depth\">0</span>"), "{last}");
    assert!(
        last.contains("<span id=\"sent-in-chart\">47</span>"),
        "{last}"
    );
    stop(child).await;
}

async fn json_log_lines_carry_the_message_ids(app: TestApp) {
    app.import_examples().await;
    let fresh = ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000");
    let json = ("AVVISI__LOG__FORMAT", "json");
    // RUST_LOG filters: warnings only, so no line about planning or sending.
    let quiet = app.avvisi(
        &["run", "--once", "--now", "2026-11-23T10:00:00+01:00"],
        &[fresh, json, ("RUST_LOG", "warn")],
    );
    assert!(quiet.status.success());
    let stderr = String::from_utf8(quiet.stderr).unwrap();
    assert!(
        !stderr.contains("\"level\":\"INFO\"") && !stderr.contains("\"level\":\"DEBUG\""),
        "{stderr}"
    );
    assert_eq!(sent_in_outbox(&app).await, 47);
    let emails_before = emails_sent(&app).await;

    // The d3 step, with debug lines: each is JSON, and each line about a message names it.
    let out = app.avvisi(
        &["-v", "run", "--once", "--now", "2026-11-27T10:00:00+01:00"],
        &[fresh, json],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let sent: Vec<&serde_json::Value> = events.iter().filter(|e| e["message"] == "sent").collect();
    // One line per email sent (a digest is one email, one line, named by its lead row).
    let d3 = emails_sent(&app).await - emails_before;
    assert!(d3 > 0);
    assert_eq!(sent.len(), d3, "one line per email sent: {stderr}");
    for e in &sent {
        assert!(e["outbox_id"].as_i64().is_some(), "{e}");
        assert!(
            e["user_id"].as_str().is_some_and(|u| u.starts_with('U')),
            "{e}"
        );
        assert!(
            e["campaign"]
                .as_str()
                .is_some_and(|c| c.ends_with("2026-11-30")),
            "{e}"
        );
        assert_eq!(e["spans"][0]["name"], "batch", "{e}");
        assert!(e["timestamp"].is_string() && e["level"] == "DEBUG", "{e}");
    }
    // No address in any line.
    assert!(
        !stderr.contains("@gmail.com") && !stderr.contains("@libero.it"),
        "{stderr}"
    );
}

async fn campaign_list_and_show_json_match_the_outbox(app: TestApp) {
    let fresh = ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000");
    let empty = app.avvisi(&["campaign", "list", "--json"], &[fresh]);
    assert!(empty.status.success());
    assert_eq!(String::from_utf8(empty.stdout).unwrap().trim(), "[]");
    app.import_examples().await;
    let run = app.avvisi(
        &["run", "--once", "--now", "2026-11-23T10:00:00+01:00"],
        &[fresh],
    );
    assert!(run.status.success());
    let list = app.avvisi(&["campaign", "list", "--json"], &[fresh]);
    assert!(list.status.success());
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let list = list.as_array().unwrap();
    // The four reminder campaigns and the maintenance notice.
    assert_eq!(list.len(), 5, "{list:?}");
    let rows = app.outbox().await;
    for c in list {
        let name = c["name"].as_str().unwrap();
        let mine: Vec<_> = rows.iter().filter(|r| r.campaign == name).collect();
        assert_eq!(c["planned"], mine.len(), "{c}");
        for state in ["pending", "sending", "sent", "skipped", "failed", "expired"] {
            let n = mine.iter().filter(|r| r.state == state).count();
            assert_eq!(c["messages"][state], n, "{name} {state}: {c}");
        }
        // The maintenance notice is a campaign of the calendar's, like an operator's one-off.
        // It waits for its day (27 November) while the first notice goes out.
        if name.starts_with("maintenance_notice") {
            assert_eq!(
                (&c["kind"], &c["state"]),
                (&"oneoff".into(), &"scheduled".into()),
                "{c}"
            );
            assert!(c["send_at"].as_str().unwrap().ends_with('Z'), "UTC: {c}");
        } else {
            assert_eq!(
                (&c["kind"], &c["state"]),
                (&"reminder".into(), &"running".into()),
                "{c}"
            );
            assert!(c["started_at"].as_str().unwrap().ends_with('Z'), "UTC: {c}");
        }
        let show = app.avvisi(&["campaign", "show", name, "--json"], &[fresh]);
        assert!(show.status.success());
        let mut show: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
        // One campaign's view adds its audience funnel (a pass over the users: not in the list).
        let funnel = show.as_object_mut().unwrap().remove("funnel");
        let first = &funnel.expect("show --json has the funnel")[0];
        assert_eq!(first["step"], "in the snapshot", "{first}");
        assert_eq!(&show, c, "show --json is the list's entry and its funnel");
    }
    let missing = app.avvisi(&["campaign", "show", "nope", "--json"], &[fresh]);
    assert!(!missing.status.success());
}

/// The plain progress lines (off a terminal) of `what` in `stderr`: (done, total) each.
fn progress_lines(stderr: &str, what: &str) -> Vec<(String, String)> {
    stderr
        .lines()
        .filter_map(|l| l.split_once(&format!("{what}: "))?.1.split_once(" of "))
        .map(|(done, rest)| {
            let total = rest.split(" (").next().unwrap_or("");
            (
                done.to_string(),
                total.trim_end_matches(" messages").to_string(),
            )
        })
        .collect()
}

async fn progress_lines_off_a_terminal(app: TestApp) {
    let every = ("AVVISI__LOG__PROGRESS_SECONDS", "1");
    app.import_examples().await;
    // Delivery through a slow relay: a line a second, the count going up, never a bar's
    // escape codes in the output.
    let sink = SmtpSink::start_with(vec![Fault::SlowData { millis: 80 }]).await;
    let url = sink.url();
    let out = app.avvisi(
        &["run", "--once", "--now", "2026-11-23T10:00:00+01:00"],
        &testkit::smtp::with(
            &url,
            &[
                every,
                ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000"),
                ("AVVISI__DELIVERY__CONCURRENCY", "1"),
            ],
        ),
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let lines = progress_lines(&stderr, "run --once");
    assert!(lines.len() >= 2, "{stderr}");
    let done: Vec<u64> = lines.iter().map(|(d, _)| d.parse().unwrap()).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(done.last() > done.first(), "{done:?}");
    let planned: u64 = app.outbox().await.len() as u64;
    assert!(
        lines
            .iter()
            .all(|(_, t)| t.parse::<u64>().unwrap() == planned),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no terminal codes off a terminal"
    );

    // A snapshot big enough to take a few seconds, checked (a dry run) but not imported.
    let file = app.dir.path().join("big.csv");
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    testkit::synthetic::write_snapshot(&mut csv, 25_000, testkit::synthetic::Population::OneEach)
        .unwrap();
    drop(csv);
    use sqlx::Connection;
    // Another transaction holds the tables the import writes until the import has said how far
    // it is: it lasts as long as that takes, on a machine of any speed.
    let mut holder = sqlx::AnyConnection::connect(&app.database_url)
        .await
        .unwrap();
    let hold = match app.backend {
        crate::helpers::Backend::Sqlite => "BEGIN EXCLUSIVE",
        crate::helpers::Backend::Postgres => {
            "BEGIN; LOCK TABLE import_rows IN ACCESS EXCLUSIVE MODE"
        }
    };
    sqlx::raw_sql(hold).execute(&mut holder).await.unwrap();
    let err = app.dir.path().join("import.err");
    let mut cmd = app.command(&[
        "import",
        "users",
        file.to_str().unwrap(),
        "--dry-run",
        "--partial",
    ]);
    cmd.env(every.0, every.1)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap());
    let import = Proc::spawn(&mut cmd, crate::helpers::PROCESS_TIMEOUT);
    let read_err = || std::fs::read_to_string(&err).unwrap_or_default();
    eventually(
        "a progress line of the import",
        Duration::from_secs(60),
        || (!progress_lines(&read_err(), "import users").is_empty()).then_some(()),
    )
    .await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    let status = import.wait(Duration::from_secs(60)).await;
    let stderr = read_err();
    assert!(status.success(), "{stderr}");
    let lines = progress_lines(&stderr, "import users");
    assert!(!lines.is_empty(), "{stderr}");
    for (done, total) in &lines {
        assert!(
            done.ends_with("iB") || done.ends_with(" B"),
            "{done} of {total}"
        );
        assert!(total.ends_with(" MiB"), "{stderr}");
    }
}

async fn html_report_has_the_counts_and_a_chart(app: TestApp) {
    let fresh = ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000");
    app.import_examples().await;
    for now in ["2026-11-23T10:00:00+01:00", "2026-11-27T10:00:00+01:00"] {
        let run = app.avvisi(&["run", "--once", "--now", now], &[fresh]);
        assert!(run.status.success());
    }
    let name = "email_unvalidated-2026-11-30";
    // A pause and a resume by an operator: the report lists them.
    for action in ["pause", "resume"] {
        let out = app.avvisi(
            &["campaign", action, name],
            &[fresh, ("USER", "operatrice")],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (html, csv) = (app.dir.path().join("r.html"), app.dir.path().join("r.csv"));
    let out = app.avvisi(
        &[
            "report",
            name,
            "--html",
            html.to_str().unwrap(),
            "--out",
            csv.to_str().unwrap(),
        ],
        &[fresh],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    let rows = app.outbox().await;
    let mine: Vec<_> = rows.iter().filter(|r| r.campaign == name).collect();
    let sent = mine.iter().filter(|r| r.state == "sent").count();
    assert!(sent > 13, "two steps sent");
    assert!(
        page.contains(&format!("<td class=\"n planned\">{}</td>", mine.len())),
        "{page}"
    );
    assert!(
        page.contains(&format!("<td class=\"n sent\">{sent}</td>")),
        "{page}"
    );
    // For a manager: in Italian, with who it was for, the template and the subject.
    assert!(page.contains("<html lang=\"it\">"), "{page}");
    assert!(
        page.contains("Primo messaggio inviato 2026-11-23 10:00 CET, ultimo 2026-11-27 10:00 CET"),
        "{page}"
    );
    assert!(
        page.contains(
            "email_unvalidated: utenze abilitate con un nuovo indirizzo e-mail privato da validare"
        ),
        "{page}"
    );
    assert!(page.contains("nessuno (tutta Italia)"), "{page}");
    assert!(
        page.contains("<td class=\"template\">email_unvalidated</td>"),
        "{page}"
    );
    let subject = page
        .split("<td class=\"subject\">")
        .nth(1)
        .and_then(|s| s.split("</td>").next())
        .unwrap();
    assert!(subject.starts_with("Istanze OnLine: "), "{subject}");
    let pauses = page.split("<ul id=\"pauses\">").nth(1).expect("the pauses");
    assert!(
        pauses.contains("messa in pausa (operatrice (host))")
            && pauses.contains("ripresa (operatrice (host))"),
        "{pauses}"
    );
    assert!(
        page.contains("<svg") && page.contains("messaggi inviati"),
        "the chart"
    );
    assert!(
        !page.contains("<script") && !page.contains('@'),
        "no script, no address"
    );
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap().lines().count(),
        mine.len() + 1
    );
    let neither = app.avvisi(&["report", name], &[fresh]);
    assert_eq!(
        neither.status.code(),
        Some(2),
        "--out or --html is required"
    );
}

on_both_backends!(
    html_report_has_the_counts_and_a_chart,
    progress_lines_off_a_terminal,
    campaign_list_and_show_json_match_the_outbox,
    metrics_move_during_a_campaign,
    readyz_names_the_relay_and_the_snapshot,
    status_page_renders_in_chromium_during_a_campaign,
    json_log_lines_carry_the_message_ids
);
