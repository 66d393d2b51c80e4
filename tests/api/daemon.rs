//! The daemon and its calendar: a whole campaign driven by the injected clock, SIGTERM during
//! sends, pause and resume in a running daemon, template reloads (development mode; published
//! sets: `template_sets.rs`), DST, one daemon per SQLite file.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use avvisi::clock::Clock;
use avvisi::import::ImportOptions;
use avvisi::render::templates::TemplateSet;
use chrono::{Timelike, Utc};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::helpers::{at, repo_path, Backend, TestApp};
use crate::on_both_backends;
use testkit::process::{holds_for, wait_until, Proc};
use testkit::smtp_sink::{Fault, SmtpSink};

type Daemon = (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// Starts the daemon in this process on `app`'s database and clock; returns its stop handle.
fn start_daemon(app: &TestApp) -> Daemon {
    start_daemon_checking(app, avvisi::daemon::full_check(app.settings.clone()))
}

/// Like [`start_daemon`], with `check` as the gate of new template sets.
fn start_daemon_checking(app: &TestApp, check: avvisi::daemon::TemplateCheck) -> Daemon {
    let stop = CancellationToken::new();
    let handle = tokio::spawn(avvisi::daemon::run(
        app.db.clone(),
        app.settings.clone(),
        app.clock.clone(),
        stop.clone(),
        check,
    ));
    (stop, handle)
}

/// The template digest the (single) running daemon has live, if any.
async fn live_digest(app: &TestApp) -> Option<String> {
    avvisi::daemon::running_daemons(&app.db)
        .await
        .unwrap()
        .into_iter()
        .find_map(|d| d.templates_digest)
}

const FAST: [(&str, &str); 3] = [
    ("AVVISI__DAEMON__PLANNER_CRON", "* * * * * *"),
    ("AVVISI__DAEMON__POLL_SECONDS", "1"),
    ("AVVISI__DAEMON__TEMPLATE_POLL_SECONDS", "1"),
];

fn with_fast(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut all: Vec<(&'static str, String)> =
        FAST.iter().map(|(k, v)| (*k, v.to_string())).collect();
    all.extend(extra.iter().cloned());
    all
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The daemon binary at `now`, its log in the test's folder.
fn spawn_binary(app: &TestApp, env: &[(&'static str, String)], now: &str) -> Proc {
    let log = app.dir.path().join("daemon.log");
    app.spawn(&["daemon", "--now", now], env, &log)
}

/// No row on the wire, and one email at the relay per Message-ID recorded as sent (a digest's
/// rows share their lead's): whatever was in flight has landed and been recorded.
async fn settled_with(app: &TestApp, sink: &SmtpSink) -> bool {
    let rows = app.outbox().await;
    rows.iter().all(|r| r.state != "sending") && sink.count() == sent_emails(&rows)
}

async fn sigterm_during_sends_loses_nothing_and_sends_nothing_twice(app: TestApp) {
    let sink = SmtpSink::start_with(vec![Fault::SlowData { millis: 150 }]).await;
    let mut env = with_fast(&testkit::smtp::env(&sink.url()));
    env.extend([
        ("AVVISI__DELIVERY__CONCURRENCY", "2".into()),
        ("AVVISI__DELIVERY__BATCH_SIZE", "10".into()),
    ]);
    app.import_examples().await;
    let daemon = spawn_binary(&app, &env, "2026-11-23T10:00:00+01:00");
    let first = sink.wait_for(5, Duration::from_secs(60)).await;
    assert!(
        first.len() >= 5,
        "the daemon sent {} of 5 messages within a minute",
        first.len()
    );
    assert_eq!(daemon.terminate().await, Some(0), "a clean stop exits 0");
    let received = sink.received().len();
    let rows = app.outbox().await;
    assert!(received < 30, "stopped mid-campaign");
    assert_eq!(
        sent_emails(&rows),
        received,
        "every accepted email is recorded as sent"
    );
    assert!(
        rows.iter()
            .all(|r| r.state == "sent" || r.state == "pending"),
        "nothing left claimed: {rows:?}"
    );

    let daemon = spawn_binary(&app, &env, "2026-11-23T10:05:00+01:00");
    // 47 reminders to 30 people: 30 emails.
    let all = sink.wait_for(30, Duration::from_secs(40)).await;
    assert_eq!(daemon.terminate().await, Some(0));
    let ids = testkit::smtp_sink::distinct_message_ids(&all);
    assert_eq!((all.len(), ids), (30, 30), "each email exactly once");
    assert!(app.outbox().await.iter().all(|r| r.state == "sent"));
}

async fn pause_and_resume_act_on_a_running_daemon(app: TestApp) {
    let sink = SmtpSink::start_with(vec![Fault::SlowData { millis: 100 }]).await;
    let mut extra = with_fast(&testkit::smtp::env(&sink.url()));
    extra.extend([
        ("AVVISI__DELIVERY__CONCURRENCY", "1".into()),
        ("AVVISI__DELIVERY__BATCH_SIZE", "2".into()),
    ]);
    let app = app.with_settings(&as_refs(&extra));
    app.import_examples().await;
    let (stop, handle) = start_daemon(&app);
    sink.wait_for(3, Duration::from_secs(60)).await;
    // The operator pauses every reminder from the command line, then cancels one for good.
    for name in REMINDERS {
        operator(&app, &["campaign", "pause", name]);
    }
    // What was on the wire lands; then nothing more goes out (an absence: checked over a
    // window of two seconds, two of the daemon's polls).
    wait_until("the messages in flight", Duration::from_secs(30), || {
        settled_with(&app, &sink)
    })
    .await;
    let paused_at = sink.count();
    holds_for(
        "a paused campaign sends nothing",
        Duration::from_secs(2),
        || async { sink.count() == paused_at },
    )
    .await;
    assert!(paused_at < 30);
    operator(
        &app,
        &[
            "campaign",
            "cancel",
            "credential_recovery_advice-2026-11-30",
        ],
    );
    for name in &REMINDERS[..3] {
        operator(&app, &["campaign", "resume", name]);
    }
    // The three resumed campaigns finish; the cancelled one never resumes.
    let rows = app.outbox().await;
    let cancelled_left = rows
        .iter()
        .filter(|r| r.campaign.starts_with("credential") && r.state == "skipped")
        .count();
    assert!(
        cancelled_left > 0,
        "the cancelled campaign's pending rows are skipped"
    );
    wait_until("the resumed campaigns", Duration::from_secs(40), || async {
        app.outbox()
            .await
            .iter()
            .filter(|r| !r.campaign.starts_with("credential"))
            .all(|r| r.state == "sent")
    })
    .await;
    // One email per Message-ID recorded as sent: a digest's rows share their lead's.
    wait_until(
        "as many emails at the relay as recorded",
        Duration::from_secs(30),
        || settled_with(&app, &sink),
    )
    .await;
    assert!(operator_fails(
        &app,
        &[
            "campaign",
            "resume",
            "credential_recovery_advice-2026-11-30"
        ]
    ));
    stop.cancel();
    handle.await.unwrap().unwrap();
}

async fn broken_template_edit_never_reaches_a_recipient(app: TestApp) {
    let templates = app.dir.path().join("templates");
    copy_dir(&repo_path("templates"), &templates);
    let mut extra = with_fast(&[]);
    extra.push(("AVVISI__TEMPLATES__DIR", templates.display().to_string()));
    // The folder as the live set: development mode (otherwise only a publication is live).
    extra.push(("AVVISI__TEMPLATES__DEVELOPMENT", "true".to_string()));
    let app = app.with_settings(&as_refs(&extra));
    app.import_examples().await;
    app.clock.set(at("2026-11-23T08:30:00+01:00"));
    // The editors' check, recording every set it refuses.
    let refused: Arc<std::sync::Mutex<Vec<Vec<String>>>> = Arc::default();
    let check: avvisi::daemon::TemplateCheck = {
        let (full, refused) = (
            avvisi::daemon::full_check(app.settings.clone()),
            refused.clone(),
        );
        Arc::new(move |set| {
            let problems = full(set);
            if !problems.is_empty() {
                refused.lock().unwrap().push(problems.clone());
            }
            problems
        })
    };
    let (stop, handle) = start_daemon_checking(&app, check);
    // The good set goes live first (a daemon refuses to start on broken templates).
    let good = TemplateSet::load(&templates).unwrap().digest().to_string();
    wait_until(
        "the good set to go live",
        Duration::from_secs(30),
        || async { live_digest(&app).await.as_deref() == Some(good.as_str()) },
    )
    .await;
    assert!(!handle.is_finished(), "the daemon stopped early");

    // An editor breaks the registration reminder while the daemon runs: the daemon sees the
    // broken set, refuses it, and keeps the good one live.
    let body = templates.join("registration_incomplete/body.txt");
    let original = std::fs::read_to_string(&body).unwrap();
    std::fs::write(
        &body,
        original.replace("Gentile", "{{ user.nome }} Gentile"),
    )
    .unwrap();
    wait_until(
        "the broken set to be refused",
        Duration::from_secs(30),
        || async {
            refused
                .lock()
                .unwrap()
                .iter()
                .any(|problems| problems.iter().any(|p| p.contains("nome")))
        },
    )
    .await;
    assert_eq!(
        live_digest(&app).await,
        Some(good.clone()),
        "the good set stays live"
    );
    app.clock.set(at("2026-11-23T10:00:00+01:00"));
    // 47 reminders to 30 people: one email each.
    wait_until("the first notices", Duration::from_secs(60), || async {
        app.eml_files().len() == 30
    })
    .await;
    for (_, eml) in app.eml_files() {
        assert!(
            !eml.contains("nome"),
            "nothing rendered with the broken set"
        );
    }

    // The next good edit goes live.
    std::fs::write(&body, original.replace("Gentile", "Gentilissima/o")).unwrap();
    let fixed = TemplateSet::load(&templates).unwrap().digest().to_string();
    wait_until(
        "the fixed set to go live",
        Duration::from_secs(30),
        || async { live_digest(&app).await.as_deref() == Some(fixed.as_str()) },
    )
    .await;
    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    // d3: the 22 people with a procedure pending (calendar.cadence: no advice at d3) and the
    // maintenance notice to the 30 enabled users, one email each: 36 people (U0001-U0036).
    wait_until("the d3 reminders", Duration::from_secs(60), || async {
        app.eml_files().len() == 30 + 36
    })
    .await;
    let d3 = app
        .eml_files()
        .into_iter()
        .find(|(n, _)| n.contains("registration_incomplete") && n.contains(".d3."))
        .unwrap();
    assert!(crate::helpers::part(&d3.1, "text/plain").contains("Gentilissima/o"));
    let digests: Vec<String> =
        sqlx::query("SELECT DISTINCT template_digest FROM outbox WHERE state = 'sent'")
            .fetch_all(app.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(
        digests.len(),
        2,
        "each row records the template version it was sent with"
    );
    let live: String =
        sqlx::query_scalar("SELECT template_digest FROM outbox WHERE step = 'd3' LIMIT 1")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_avvisi"))
        .current_dir(repo_path("."))
        .arg("status")
        .env("AVVISI__DATABASE__URL", &app.database_url)
        .env("AVVISI__TEMPLATES__DIR", &templates)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        out.contains(&format!("templates live {live}")),
        "status shows the live version: {out}"
    );
    assert!(out.contains(&format!("templates on disk: {live}")), "{out}");
    stop.cancel();
    handle.await.unwrap().unwrap();
}

async fn dst_change_keeps_nine_at_nine(app: TestApp) {
    // 28 March 2027: clocks go from 02:00 to 03:00 in Rome. The d3 step is at 09:00 that day.
    let mut extra = with_fast(&[
        (
            "AVVISI__CALENDAR__CAMPAIGN_START",
            "2027-03-22T09:00:00".into(),
        ),
        ("AVVISI__CALENDAR__DEADLINE", "2027-03-31T23:59:59".into()),
        (
            "AVVISI__CALENDAR__MAINTENANCE_START",
            "2027-04-01T00:00:00".into(),
        ),
    ]);
    extra.push(("AVVISI__CALENDAR__REMINDER_DAYS_BEFORE", "3".into()));
    // The maintenance notice on the d3 day, as on the default calendar.
    extra.push((
        "AVVISI__CALENDAR__MAINTENANCE_NOTICE_AT",
        "2027-03-28T09:00:00".into(),
    ));
    let app = app.with_settings(&as_refs(&extra));
    app.import_examples().await;
    app.clock.set(at("2027-03-27T10:00:00+01:00"));
    let (stop, handle) = start_daemon(&app);
    // 47 reminders to 30 people: one email each.
    wait_until("the first notices", Duration::from_secs(60), || async {
        app.eml_files().len() == 30
    })
    .await;
    app.clock.set(at("2027-03-28T08:59:00+02:00"));
    // An absence: checked over a window of the planner's ticks (one a second).
    holds_for(
        "nothing at 08:59 CEST",
        Duration::from_millis(2500),
        || async { app.outbox().await.iter().all(|r| r.step == "first") },
    )
    .await;
    app.clock.set(at("2027-03-28T09:00:00+02:00"));
    // As on the default calendar: 36 people at d3 (procedures and the maintenance notice).
    wait_until("the d3 step", Duration::from_secs(60), || async {
        app.eml_files().len() == 30 + 36
    })
    .await;
    let created: Vec<i64> = sqlx::query_scalar("SELECT created_at FROM outbox WHERE step = 'd3'")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    let nine_cest = at("2027-03-28T09:00:00+02:00").timestamp();
    assert!(
        created.iter().all(|t| (*t - nine_cest).abs() <= 2),
        "planned at 09:00 local, 07:00 UTC"
    );
    stop.cancel();
    handle.await.unwrap().unwrap();
}

const REMINDERS: [&str; 4] = [
    "registration_incomplete-2026-11-30",
    "email_unvalidated-2026-11-30",
    "code_regeneration_pending-2026-11-30",
    "credential_recovery_advice-2026-11-30",
];

fn run_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_avvisi"))
        .current_dir(repo_path("."))
        .args(args)
        .env("AVVISI__DATABASE__URL", &app.database_url)
        .env("AVVISI__DELIVERY__DIR", app.outbox_dir())
        .output()
        .unwrap()
}

fn operator(app: &TestApp, args: &[&str]) -> String {
    let out = run_cli(app, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn operator_fails(app: &TestApp, args: &[&str]) -> bool {
    !run_cli(app, args).status.success()
}

async fn sighup_reloads_templates_at_once(app: TestApp) {
    let templates = app.dir.path().join("templates");
    copy_dir(&repo_path("templates"), &templates);
    let env = vec![
        ("AVVISI__TEMPLATES__DIR", templates.display().to_string()),
        ("AVVISI__TEMPLATES__DEVELOPMENT", "true".to_string()),
        // Only the signal can trigger the reload within this test.
        ("AVVISI__DAEMON__TEMPLATE_POLL_SECONDS", "3600".to_string()),
    ];
    let daemon = spawn_binary(&app, &env, "2026-11-23T07:00:00+01:00");
    let live = |app: TestApp| async move {
        let out = operator(&app, &["status"]);
        out.lines()
            .find(|l| l.starts_with("daemon ") && l.contains("templates live"))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    wait_until("the daemon", Duration::from_secs(60), || {
        let app = app.clone();
        async move { live(app).await.is_some_and(|d| d != "-") }
    })
    .await;
    let before = live(app.clone()).await.unwrap();
    let body = templates.join("test_message/body.txt");
    let text = std::fs::read_to_string(&body).unwrap();
    std::fs::write(&body, text.replacen("Gentile", "Gentilissima/o", 1)).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the reload", Duration::from_secs(10), || {
        let app = app.clone();
        let before = before.clone();
        async move { live(app).await.is_some_and(|d| d != before) }
    })
    .await;
    assert_eq!(daemon.terminate().await, Some(0));
}

async fn reopening_declared_twice_changes_nothing(app: TestApp) {
    app.import_examples().await;
    app.clock.set(at("2026-12-02T10:00:00+01:00"));
    app.run_once().await;
    let first = operator(
        &app,
        &["service", "reopen", "--at", "2026-12-14T09:00:00+01:00"],
    );
    assert!(
        first.contains("reopening declared for 2026-12-14 09:00"),
        "{first}"
    );
    let again = operator(
        &app,
        &["service", "reopen", "--at", "2026-12-20T09:00:00+01:00"],
    );
    assert!(
        again.contains("already declared for 2026-12-14 09:00"),
        "{again}"
    );
    let campaigns: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM campaigns WHERE kind = 'reopening'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(campaigns, 4);
    let calendar = operator(&app, &["calendar", "--now", "2026-11-28T12:00:00+01:00"]);
    assert!(calendar.contains("phase reminders"), "{calendar}");
    assert!(calendar.contains("2026-11-29 09:00 CET  d1"), "{calendar}");
    assert!(
        calendar.contains("reopening            2026-12-14 09:00"),
        "{calendar}"
    );
}

on_both_backends!(
    sighup_reloads_templates_at_once,
    reopening_declared_twice_changes_nothing,
    sigterm_during_sends_loses_nothing_and_sends_nothing_twice,
    pause_and_resume_act_on_a_running_daemon,
    broken_template_edit_never_reaches_a_recipient,
    dst_change_keeps_nine_at_nine,
    whole_campaign_from_notice_to_reopening,
);

#[tokio::test]
async fn a_second_daemon_on_one_sqlite_file_is_refused() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let app = app.with_settings(&as_refs(&with_fast(&[])));
    let (stop, handle) = start_daemon(&app);
    // Registered: the first daemon holds the file's lock (taken before its row is written).
    wait_until(
        "the first daemon's lock",
        Duration::from_secs(30),
        || async {
            !avvisi::daemon::running_daemons(&app.db)
                .await
                .unwrap()
                .is_empty()
        },
    )
    .await;
    // Refused at once, or stopped here: never a second daemon running on.
    let second = tokio::time::timeout(
        Duration::from_secs(30),
        avvisi::daemon::run(
            app.db.clone(),
            app.settings.clone(),
            Clock::system(),
            CancellationToken::new(),
            avvisi::daemon::full_check(app.settings.clone()),
        ),
    )
    .await
    .expect("the second daemon was not refused");
    let err = second.unwrap_err().to_string();
    assert!(err.contains("SQLite supports one daemon"), "{err}");
    stop.cancel();
    handle.await.unwrap().unwrap();
}

/// From the day of the notice to after the reopening, one tick an hour, with the population
/// changing between snapshots.
async fn whole_campaign_from_notice_to_reopening(app: TestApp) {
    let csv = std::fs::read_to_string(repo_path("examples/users.csv")).unwrap();
    let edit = |csv: &str, user: &str, col: usize, value: &str| -> String {
        csv.lines()
            .map(|l| {
                if l.starts_with(&format!("{user},")) {
                    let mut f: Vec<String> = l.split(',').map(String::from).collect();
                    f[col] = value.to_string();
                    f[11] = String::new(); // no portal timestamp: always applied
                    f.join(",")
                } else {
                    l.to_string()
                }
            })
            .map(|l| l + "\n")
            .collect()
    };
    app.import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    let mut t = at("2026-11-22T00:00:00+01:00");
    let end = at("2026-12-16T00:00:00+01:00");
    let mut snapshot = csv.clone();
    while t < end {
        app.clock.set(t);
        let local = t.with_timezone(&chrono_tz::Europe::Rome);
        // 25 Nov: U0001 completes the registration; 26 Nov: a new user starts one.
        if local.format("%Y-%m-%d %H").to_string() == "2026-11-25 12" {
            snapshot = edit(&snapshot, "U0001", 6, "completed");
            app.import_csv(&snapshot, ImportOptions::default())
                .await
                .unwrap();
        }
        if local.format("%Y-%m-%d %H").to_string() == "2026-11-26 12" {
            snapshot.push_str("U0099,RSSMRA85T10A562S,Mario,Rossi,mario.rossi99@libero.it,,started,false,,none,BO,\n");
            app.import_csv(&snapshot, ImportOptions::default())
                .await
                .unwrap();
        }
        if local.format("%Y-%m-%d %H").to_string() == "2026-12-10 12" {
            avvisi::campaign::phases::declare_reopening(
                &app.db,
                &app.settings.calendar,
                at("2026-12-14T09:00:00+01:00"),
                t,
            )
            .await
            .unwrap();
        }
        app.run_once().await;
        t += chrono::Duration::hours(1);
    }

    let rows = sqlx::query(
        "SELECT c.name, o.user_id, o.step, o.state, o.sent_at, o.message_id FROM outbox o JOIN campaigns c ON c.id = o.campaign_id ORDER BY o.id",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let deadline = app.settings.calendar.deadline.timestamp();
    let mut of = std::collections::BTreeMap::<String, Vec<String>>::new();
    for r in &rows {
        let (campaign, user, step, state): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if state == "sent" {
            let sent: i64 = r.get(4);
            let local = chrono::DateTime::<Utc>::from_timestamp(sent, 0)
                .unwrap()
                .with_timezone(&chrono_tz::Europe::Rome);
            assert!(
                (8..20).contains(&local.hour()),
                "{campaign} to {user} sent at {local}, outside the sending hours"
            );
            if !campaign.starts_with("reopening") {
                assert!(
                    sent < deadline,
                    "{campaign} to {user} sent after the deadline"
                );
            }
            let short = campaign.rsplit_once('-').map(|(a, _)| a).unwrap();
            let short = short.trim_end_matches("-2026-11");
            of.entry(user).or_default().push(format!("{short}:{step}"));
        }
    }
    let get = |u: &str| of.get(u).cloned().unwrap_or_default();
    // U0002 kept the registration pending: every step, then the specific reopening notice.
    assert_eq!(
        get("U0002"),
        vec![
            "registration_incomplete:first",
            "registration_incomplete:d3",
            "registration_incomplete:d1",
            "reopening_registration_cancelled:main"
        ]
    );
    // U0001 completed on 25 November: no reminder after that, no lapse notice.
    assert_eq!(get("U0001"), vec!["registration_incomplete:first"]);
    // The newcomer entered late (26 November): the latest due step at once, then the rest.
    assert_eq!(
        get("U0099"),
        vec![
            "registration_incomplete:first",
            "registration_incomplete:d3",
            "registration_incomplete:d1",
            "reopening_registration_cancelled:main"
        ]
    );
    // An institutional user with nothing pending: the maintenance notice (27 November, from the
    // calendar) and the general reopening notice.
    assert_eq!(
        get("U0031"),
        vec!["maintenance_notice:main", "reopening_general:main"]
    );
    // The advice alone (U0023): the first notice; its d1 goes only inside a digest, and U0023
    // has nothing else due that day. The maintenance notice goes to every enabled user.
    assert_eq!(
        get("U0023"),
        vec![
            "credential_recovery_advice:first",
            "maintenance_notice:main",
            "reopening_general:main"
        ]
    );
    // U0007: email unvalidated and recovery advice, then both reopening notices.
    let u7 = get("U0007");
    assert!(
        u7.contains(&"reopening_email_unvalidated:main".to_string()),
        "{u7:?}"
    );
    assert!(u7.contains(&"reopening_general:main".to_string()), "{u7:?}");
    assert_eq!(
        u7.iter()
            .filter(|m| m.starts_with("email_unvalidated"))
            .count(),
        3
    );
    // The advice: the first notice and, inside that day's digest, d1 (calendar.cadence).
    assert_eq!(
        u7.iter()
            .filter(|m| m.starts_with("credential_recovery_advice"))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            "credential_recovery_advice:first",
            "credential_recovery_advice:d1"
        ]
    );
    // Per person and local day: at most one email, and it covers every procedure due that day.
    let mut emails: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut covered: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        if r.get::<String, _>(3) != "sent" {
            continue;
        }
        let (campaign, user): (String, String) = (r.get(0), r.get(1));
        let day = chrono::DateTime::<Utc>::from_timestamp(r.get(4), 0)
            .unwrap()
            .with_timezone(&chrono_tz::Europe::Rome)
            .format("%Y-%m-%d")
            .to_string();
        emails
            .entry((user.clone(), day.clone()))
            .or_default()
            .insert(r.get(5));
        let short = campaign.rsplit_once('-').map(|(a, _)| a).unwrap();
        covered
            .entry((user, day))
            .or_default()
            .insert(short.trim_end_matches("-2026-11").to_string());
    }
    for ((user, day), ids) in &emails {
        assert_eq!(ids.len(), 1, "{user} got {} emails on {day}", ids.len());
    }
    // U0015-U0018: a changed address and a code regeneration pending, and the advice: one email
    // on each reminder day with both procedures (and the advice at the first notice and on d1,
    // the maintenance notice on d3).
    for user in ["U0015", "U0016", "U0017", "U0018"] {
        for (day, extra) in [
            ("2026-11-23", "credential_recovery_advice"),
            ("2026-11-27", "maintenance_notice"),
            ("2026-11-29", "credential_recovery_advice"),
        ] {
            let got = covered
                .get(&(user.to_string(), day.to_string()))
                .cloned()
                .unwrap_or_default();
            for procedure in ["email_unvalidated", "code_regeneration_pending", extra] {
                assert!(got.contains(procedure), "{user} on {day}: {got:?}");
            }
        }
    }
    // The reopening notices merge the same way: general and specific, one email.
    let u7_reopening = covered
        .get(&("U0007".to_string(), "2026-12-14".to_string()))
        .cloned()
        .unwrap_or_default();
    assert!(
        u7_reopening.contains("reopening_general")
            && u7_reopening.contains("reopening_email_unvalidated"),
        "{u7_reopening:?}"
    );
    let reopening_sent: Vec<i64> = rows
        .iter()
        .filter(|r| {
            r.get::<String, _>(0).starts_with("reopening") && r.get::<String, _>(3) == "sent"
        })
        .map(|r| r.get(4))
        .collect();
    assert!(reopening_sent
        .iter()
        .all(|s| *s >= at("2026-12-14T09:00:00+01:00").timestamp()));
}

/// The emails the sent rows stand for: a digest's rows share one Message-ID.
fn sent_emails(rows: &[crate::helpers::OutboxRow]) -> usize {
    rows.iter()
        .filter(|r| r.state == "sent")
        .map(|r| r.message_id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
