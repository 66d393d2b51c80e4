//! One-off campaigns for operators: create, launch, pause, resume, cancel, preview, test, the
//! `--wait` follower, `campaign list`, and `explain`.

use std::fs::File;
use std::process::{Command, Output};
use std::time::Duration;

use avvisi::app::{Actor, App, Launched};
use avvisi::audience::Audience;
use avvisi::campaign::lifecycle;
use avvisi::campaign::{self, CampaignError, NewCampaign};
use avvisi::render::templates::TemplateSet;
use avvisi::store::CampaignState;

use crate::helpers::{at, decode_header, header, TestApp, PROCESS_TIMEOUT};
use crate::on_both_backends;
use testkit::process::{wait_for_line, wait_until, Proc};

fn avvisi(app: &TestApp, args: &[&str]) -> Output {
    app.avvisi(args, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary and insists that it succeeds; returns its standard output.
fn ok(app: &TestApp, args: &[&str]) -> String {
    let out = avvisi(app, args);
    assert!(
        out.status.success(),
        "avvisi {args:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs the binary and insists that it fails; returns its standard error.
fn fails(app: &TestApp, args: &[&str]) -> String {
    let out = avvisi(app, args);
    assert!(
        !out.status.success(),
        "avvisi {args:?} should fail:\n{}",
        stdout(&out)
    );
    stderr(&out)
}

fn templates(app: &TestApp) -> Vec<String> {
    TemplateSet::load(&app.settings.templates_dir)
        .expect("templates")
        .messages()
}

/// Creates the maintenance notice to every enabled user (optionally one province) as a draft.
async fn create(app: &TestApp, name: &str, province: Option<&str>) -> campaign::Campaign {
    let new = NewCampaign {
        name: name.into(),
        audience: Audience::EnabledUsers,
        template: "maintenance_notice".into(),
        filter_province: province.map(String::from),
        send_at: None,
        expires_at: at("2026-11-30T23:59:59+01:00"),
        transactional: None,
    };
    campaign::create(&app.db, &new, &templates(app), app.clock.now())
        .await
        .expect("create campaign")
}

/// Approves campaign `name` from the command line as an operating-system user who created
/// nothing.
fn approve_as_another(app: &TestApp, name: &str) {
    let out = app.avvisi(
        &["campaign", "approve", name, "--yes"],
        &[("USER", "second-person")],
    );
    assert!(out.status.success(), "approve {name}: {}", stderr(&out));
}

async fn state_of(app: &TestApp, name: &str) -> String {
    campaign::get(&app.db, name)
        .await
        .unwrap()
        .state
        .to_string()
}

async fn oneoff_campaign_reaches_exactly_its_audience(app: TestApp) {
    app.import_examples().await;
    let out = ok(
        &app,
        &[
            "campaign",
            "create",
            "notice-bo",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--filter",
            "province=bo",
        ],
    );
    assert!(out.contains("created draft campaign notice-bo"), "{out}");
    assert!(out.contains("province BO"), "{out}");
    assert!(out.contains("(2 users now)"), "{out}");
    let c = campaign::get(&app.db, "notice-bo").await.unwrap();
    assert_eq!(
        (
            c.kind.as_str(),
            c.state.as_str(),
            c.filter_province.as_deref()
        ),
        ("oneoff", "draft", Some("BO"))
    );
    assert_eq!(c.uid.len(), 10);

    // A draft is never planned.
    app.run_once().await;
    assert!(app.users_in("notice-bo", "pending").await.is_empty());
    assert!(app.users_in("notice-bo", "sent").await.is_empty());

    // Launched once a second person approved it (the creator is this process's $USER).
    let out = fails(&app, &["campaign", "launch", "notice-bo"]);
    assert!(out.contains("has not been approved"), "{out}");
    approve_as_another(&app, "notice-bo");
    let out = ok(&app, &["campaign", "launch", "notice-bo"]);
    assert!(out.contains("is running"), "{out}");
    assert_eq!(state_of(&app, "notice-bo").await, "running");
    app.run_once().await;
    // Enabled users in Bologna: U0008 and U0024 (U0040 is in BO but not enabled).
    assert_eq!(app.users_in("notice-bo", "sent").await, ["U0008", "U0024"]);
    assert_eq!(
        app.outbox()
            .await
            .iter()
            .filter(|r| r.campaign == "notice-bo")
            .count(),
        2
    );
    let files = app.eml_files();
    let mail = &files
        .iter()
        .find(|(n, _)| n == "notice-bo.main.U0008.eml")
        .expect("the email of U0008")
        .1;
    assert_eq!(header(mail, "X-Avvisi-Campaign").unwrap(), "notice-bo/main");
    let subject = decode_header(&header(mail, "Subject").unwrap());
    assert!(!subject.contains("[PROVA]"), "{subject}");

    // Nothing left: the next planning pass finishes it, and `show` says so.
    app.plan().await;
    assert_eq!(state_of(&app, "notice-bo").await, "finished");
    let out = ok(&app, &["campaign", "show", "notice-bo"]);
    assert!(out.contains("finished"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("sent") && l.trim_end().ends_with(" 2")),
        "{out}"
    );
}

async fn illegal_transitions_are_refused_with_clear_errors(app: TestApp) {
    app.import_examples().await;
    create(&app, "notice", None).await;
    let now = app.clock.now();

    // From draft: only launch and cancel.
    match lifecycle::pause(&app.db, "notice").await {
        Err(CampaignError::IllegalTransition { state, .. }) => {
            assert_eq!(state, CampaignState::Draft)
        }
        other => panic!("pause of a draft: {other:?}"),
    }
    let err = lifecycle::resume(&app.db, "notice", now).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot resume campaign `notice`: it is draft; only a paused campaign can be resumed (cancelled and finished are final)"
    );
    assert_eq!(
        launch(&app, "notice").await.unwrap().state,
        CampaignState::Running
    );
    let err = launch(&app, "notice").await.unwrap_err();
    assert!(format!("{err:#}").contains("it is running"), "{err:#}");
    assert_eq!(
        lifecycle::pause(&app.db, "notice").await.unwrap().state,
        CampaignState::Paused
    );
    let err = lifecycle::pause(&app.db, "notice").await.unwrap_err();
    assert!(err.to_string().contains("it is paused"), "{err}");
    lifecycle::cancel(&app.db, "notice", now).await.unwrap();
    for err in [
        lifecycle::resume(&app.db, "notice", now)
            .await
            .unwrap_err()
            .to_string(),
        lifecycle::cancel(&app.db, "notice", now)
            .await
            .unwrap_err()
            .to_string(),
        format!("{:#}", launch(&app, "notice").await.unwrap_err()),
    ] {
        assert!(err.contains("it is cancelled"), "{err}");
    }

    // The same through the binary: a clear error naming the campaign and its state, exit 1.
    let err = fails(&app, &["campaign", "resume", "notice"]);
    assert!(
        err.contains("cannot resume campaign `notice`: it is cancelled"),
        "{err}"
    );
    let err = fails(&app, &["campaign", "pause", "nosuch"]);
    assert!(err.contains("no campaign named `nosuch`"), "{err}");

    // Reminders may be paused and resumed, never launched or created by hand.
    app.plan().await;
    let reminder = "registration_incomplete-2026-11-30";
    let err = fails(&app, &["campaign", "launch", reminder]);
    assert!(err.contains("reminder campaign"), "{err}");
    assert_eq!(
        lifecycle::pause(&app.db, reminder).await.unwrap().state,
        CampaignState::Paused
    );
    assert_eq!(
        lifecycle::resume(&app.db, reminder, now)
            .await
            .unwrap()
            .state,
        CampaignState::Running
    );

    // Bad input to create.
    let create_args = |name: &'static str, audience: &'static str, template: &'static str| {
        vec![
            "campaign",
            "create",
            name,
            "--audience",
            audience,
            "--template",
            template,
        ]
    };
    let err = fails(
        &app,
        &create_args("Notice!", "enabled_users", "maintenance_notice"),
    );
    assert!(
        err.contains("campaign name `Notice!` is not valid"),
        "{err}"
    );
    let err = fails(
        &app,
        &create_args("notice", "enabled_users", "maintenance_notice"),
    );
    assert!(err.contains("already exists"), "{err}");
    let err = fails(
        &app,
        &create_args("other", "everyone", "maintenance_notice"),
    );
    // Refused by the command line's parser, which lists every audience.
    assert!(
        err.contains("invalid value 'everyone' for '--audience <AUDIENCE>'")
            && Audience::names().iter().all(|name| err.contains(name)),
        "{err}"
    );
    let err = fails(&app, &create_args("other", "enabled_users", "nosuch"));
    assert!(
        err.contains("unknown template `nosuch`") && err.contains("maintenance_notice"),
        "{err}"
    );
    let mut args = create_args("other", "enabled_users", "maintenance_notice");
    args.extend(["--filter", "city=Bologna"]);
    let err = fails(&app, &args);
    assert!(err.contains("the only filter is province=XX"), "{err}");
    // Two letters that are no province: refused, not a campaign for nobody.
    let mut args = create_args("other", "enabled_users", "maintenance_notice");
    args.extend(["--filter", "province=zz"]);
    let err = fails(&app, &args);
    assert!(err.contains("ZZ is not an Italian province code"), "{err}");
    // A reminder's template says things true of its own audience only ("today is the last day
    // to complete your registration"): not to enabled users.
    let err = fails(
        &app,
        &create_args("other", "enabled_users", "registration_incomplete"),
    );
    assert!(
        err.contains("template `registration_incomplete` is written for the audience registration_incomplete")
            && err.contains("--audience registration_incomplete"),
        "{err}"
    );
    let err = fails(
        &app,
        &create_args("other", "enabled_users", "reopening_registration_cancelled"),
    );
    assert!(
        err.contains("written for the audience lapsed_registration"),
        "{err}"
    );
    // The digest's frame has no sections of its own to carry.
    let err = fails(&app, &create_args("other", "enabled_users", "digest"));
    assert!(err.contains("not a message of its own"), "{err}");
    let mut args = create_args("other", "enabled_users", "maintenance_notice");
    args.extend(["--send-at", "tomorrow"]);
    let err = fails(&app, &args);
    assert!(err.contains("--send-at `tomorrow`"), "{err}");
    assert!(campaign::find(&app.db, "other").await.unwrap().is_none());
}

async fn pause_stops_delivery_and_resume_continues(app: TestApp) {
    app.import_examples().await;
    create(&app, "notice", None).await;
    launch(&app, "notice").await.unwrap();
    app.plan().await;
    let planned = app.users_in("notice", "pending").await;
    assert_eq!(planned.len(), 30, "every enabled user: {planned:?}");

    lifecycle::pause(&app.db, "notice").await.unwrap();
    let report = app.deliver().await;
    assert!(!report.per_campaign.contains_key("notice"), "{report:?}");
    assert_eq!(app.users_in("notice", "pending").await, planned);
    // Planning again while paused adds nothing and does not finish it.
    app.plan().await;
    assert_eq!(state_of(&app, "notice").await, "paused");
    assert!(!app
        .eml_files()
        .iter()
        .any(|(n, _)| n.starts_with("notice.")));

    assert_eq!(
        lifecycle::resume(&app.db, "notice", app.clock.now())
            .await
            .unwrap()
            .state,
        CampaignState::Running
    );
    app.deliver().await;
    assert_eq!(app.users_in("notice", "sent").await, planned);
    assert!(app.users_in("notice", "pending").await.is_empty());
}

async fn cancel_skips_pending_messages_and_never_resumes(app: TestApp) {
    app.import_examples().await;
    create(&app, "notice", Some("CA")).await;
    launch(&app, "notice").await.unwrap();
    app.plan().await;
    let planned = app.users_in("notice", "pending").await;
    assert_eq!(planned, ["U0015", "U0029", "U0030", "U0034"]);

    let out = ok(&app, &["campaign", "cancel", "notice"]);
    assert!(out.contains("4 pending message(s) skipped"), "{out}");
    let rows: Vec<_> = app
        .outbox()
        .await
        .into_iter()
        .filter(|r| r.campaign == "notice")
        .collect();
    assert!(
        rows.iter().all(|r| r.state == "skipped"
            && r.reason.as_deref() == Some("campaign cancelled by an operator")),
        "{rows:?}"
    );
    app.run_once().await;
    assert!(app.users_in("notice", "sent").await.is_empty());
    assert!(app.users_in("notice", "pending").await.is_empty());
    assert_eq!(state_of(&app, "notice").await, "cancelled");
    let err = fails(&app, &["campaign", "resume", "notice"]);
    assert!(err.contains("it is cancelled"), "{err}");
}

async fn scheduled_campaign_waits_for_its_time(app: TestApp) {
    app.import_examples().await;
    let new = NewCampaign {
        name: "later".into(),
        audience: Audience::EnabledUsers,
        template: "maintenance_notice".into(),
        filter_province: Some("BO".into()),
        send_at: Some(at("2026-11-24T09:00:00+01:00")),
        expires_at: at("2026-11-30T23:59:59+01:00"),
        transactional: None,
    };
    campaign::create(&app.db, &new, &templates(&app), app.clock.now())
        .await
        .unwrap();
    let now = app.clock.now();
    assert_eq!(
        launch(&app, "later").await.unwrap().state,
        CampaignState::Scheduled
    );
    // Paused and resumed before its time: scheduled again.
    lifecycle::pause(&app.db, "later").await.unwrap();
    assert_eq!(
        lifecycle::resume(&app.db, "later", now)
            .await
            .unwrap()
            .state,
        CampaignState::Scheduled
    );
    app.run_once().await;
    assert!(app.users_in("later", "sent").await.is_empty());
    app.clock.set(at("2026-11-24T09:30:00+01:00"));
    app.run_once().await;
    assert_eq!(app.users_in("later", "sent").await, ["U0008", "U0024"]);
}

async fn racing_operators_cannot_both_win(app: TestApp) {
    app.import_examples().await;
    create(&app, "notice", None).await;
    let now = app.clock.now();
    let (a, b) = tokio::join!(launch(&app, "notice"), launch(&app, "notice"));
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count(),
        1,
        "{a:?} {b:?}"
    );
    let (a, b) = tokio::join!(
        lifecycle::cancel(&app.db, "notice", now),
        lifecycle::pause(&app.db, "notice")
    );
    assert_eq!(state_of(&app, "notice").await, "cancelled");
    if let Err(e) = &a {
        panic!("cancel of a running or paused campaign must win: {e} ({b:?})");
    }
}

async fn preview_and_test_use_a_real_recipient(app: TestApp) {
    app.import_examples().await;
    create(&app, "notice-bo", Some("BO")).await;
    let out = ok(&app, &["campaign", "preview", "notice-bo"]);
    assert!(out.contains("2 users now"), "{out}");
    assert!(
        out.contains("U0008"),
        "the first user of the audience: {out}"
    );
    assert!(out.contains("Subject: Istanze OnLine"), "{out}");
    assert!(out.contains("Maria Grazia"), "{out}");
    assert!(app.eml_files().is_empty(), "preview sends nothing");

    let err = fails(
        &app,
        &[
            "campaign",
            "test",
            "notice-bo",
            "--to",
            "operatore@@istruzione.it",
        ],
    );
    assert!(err.contains("--to `operatore@@istruzione.it`"), "{err}");
    let out = ok(
        &app,
        &[
            "campaign",
            "test",
            "notice-bo",
            "--to",
            "operatore@istruzione.it",
        ],
    );
    assert!(
        out.contains("test message sent to operatore@istruzione.it"),
        "{out}"
    );
    let files = app.eml_files();
    assert_eq!(
        files.len(),
        1,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let (name, mail) = &files[0];
    assert!(name.starts_with("notice-bo.test."), "{name}");
    let subject = decode_header(&header(mail, "Subject").unwrap());
    assert!(subject.starts_with("[PROVA]"), "{subject}");
    let to = header(mail, "To").unwrap();
    assert!(to.contains("operatore@istruzione.it"), "{to}");
    assert!(!to.contains("virgilio"), "never the real user: {to}");
    assert!(header(mail, "Message-ID").unwrap().starts_with("<test."));
    // Nothing in the outbox, and the campaign is still a draft.
    assert!(app.outbox().await.is_empty());
    assert_eq!(state_of(&app, "notice-bo").await, "draft");
}

async fn launch_wait_follows_the_campaign_until_it_finishes(app: TestApp) {
    app.import_examples().await;
    create(&app, "notice-bo", Some("BO")).await;
    approve_as_another(&app, "notice-bo");
    let (out, err) = (
        app.dir.path().join("launch.out"),
        app.dir.path().join("launch.err"),
    );
    let mut cmd = app.command(&["campaign", "launch", "notice-bo", "--wait"]);
    cmd.stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    let child = Proc::spawn(&mut cmd, PROCESS_TIMEOUT);
    // The daemon's part: plan and send once the campaign is running (and --wait has said so),
    // then notice it is done.
    wait_until("the launch", Duration::from_secs(10), || async {
        state_of(&app, "notice-bo").await == "running"
    })
    .await;
    wait_for_line(&out, "sent 0/", Duration::from_secs(30)).await;
    app.run_once().await;
    app.plan().await;
    assert_eq!(state_of(&app, "notice-bo").await, "finished");
    let status = child.wait(Duration::from_secs(15)).await;
    let text = std::fs::read_to_string(&out).unwrap();
    let errors = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "{text}{errors}");
    // Not a terminal: plain lines, no progress bar.
    assert!(text.contains("sent 0/"), "{text}");
    assert!(text.contains("msg/s"), "{text}");
    assert!(
        text.contains(
            "campaign notice-bo finished: sent 2, skipped 0, failed 0, expired 0 (of 2 planned)"
        ),
        "{text}"
    );
    assert!(!text.contains('\r'), "{text:?}");
}

async fn explain_shows_a_users_messages_and_audiences(app: TestApp) {
    app.import_examples().await;
    app.run_once().await;
    let out = ok(&app, &["explain", "U0002"]);
    assert!(out.contains("Ilaria D'Angelo"), "{out}");
    assert!(out.contains("present"), "{out}");
    assert!(out.contains("[x] registration_incomplete"), "{out}");
    assert!(out.contains("[ ] enabled_users"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("registration_incomplete-2026-11-30"))
        .unwrap_or_else(|| panic!("no message line: {out}"));
    assert!(line.contains("first") && line.contains("sent"), "{line}");
    // Times in the calendar's time zone.
    assert!(line.contains("2026-11-23 10:00 CET"), "{line}");
    assert!(line.contains("ilaria.dangelo@gmail.com"), "{line}");

    // A skipped message says why.
    create(&app, "notice", None).await;
    launch(&app, "notice").await.unwrap();
    app.plan().await;
    lifecycle::cancel(&app.db, "notice", app.clock.now())
        .await
        .unwrap();
    let out = ok(&app, &["explain", "U0024"]);
    assert!(
        out.lines().any(|l| l.contains("notice")
            && l.contains("skipped")
            && l.contains("campaign cancelled by an operator")),
        "{out}"
    );

    let err = fails(&app, &["explain", "U9999"]);
    assert!(err.contains("no user `U9999`"), "{err}");
}

async fn list_shows_reminders_and_oneoffs(app: TestApp) {
    app.import_examples().await;
    app.run_once().await;
    create(&app, "notice", None).await;
    let out = ok(&app, &["campaign", "list"]);
    for audience in Audience::REMINDERS {
        let name = format!("{}-2026-11-30", audience.name());
        let line = out
            .lines()
            .find(|l| l.starts_with(&name))
            .unwrap_or_else(|| panic!("no {name}: {out}"));
        assert!(
            line.contains("reminder") && line.contains("running"),
            "{line}"
        );
    }
    let line = out.lines().find(|l| l.starts_with("notice ")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[..4], ["notice", "oneoff", "draft", "30"], "{line}");
    let reg = out
        .lines()
        .find(|l| l.starts_with("registration_incomplete-2026-11-30"))
        .unwrap();
    let cols: Vec<&str> = reg.split_whitespace().collect();
    // audience 6, sent 6, skipped 0, failed 0, expired 0, pending 0.
    assert_eq!(&cols[3..9], ["6", "6", "0", "0", "0", "0"], "{reg}");
}

/// Every campaign expires, and nothing goes out past the expiry, whatever held the message back:
/// here a pause that lasted beyond it. The reopening notices expire 14 days after the reopening.
async fn nothing_goes_out_past_a_campaigns_expiry(app: TestApp) {
    app.import_examples().await;
    let new = NewCampaign {
        name: "short".into(),
        audience: Audience::EnabledUsers,
        template: "maintenance_notice".into(),
        filter_province: None,
        send_at: None,
        expires_at: at("2026-11-23T12:00:00+01:00"),
        transactional: None,
    };
    campaign::create(&app.db, &new, &templates(&app), app.clock.now())
        .await
        .unwrap();
    launch(&app, "short").await.unwrap();
    app.plan().await;
    lifecycle::pause(&app.db, "short").await.unwrap();
    app.clock.set(at("2026-11-23T12:30:00+01:00"));
    lifecycle::resume(&app.db, "short", app.clock.now())
        .await
        .unwrap();
    app.run_once().await;
    assert!(app.users_in("short", "sent").await.is_empty());
    assert_eq!(app.users_in("short", "expired").await.len(), 30);

    // An expiry before the start is refused.
    let late = NewCampaign {
        name: "backwards".into(),
        expires_at: at("2026-11-23T11:00:00+01:00"),
        transactional: None,
        send_at: Some(at("2026-11-24T09:00:00+01:00")),
        ..new
    };
    let err = campaign::create(&app.db, &late, &templates(&app), app.clock.now())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("would expire before it starts"),
        "{err}"
    );

    // Through the command line, the default expiry is announced.
    let out = ok(
        &app,
        &[
            "campaign",
            "create",
            "later",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--send-at",
            "2027-01-10T09:00",
        ],
    );
    assert!(out.contains("it expires at 2027-01-17 09:00 CET"), "{out}");

    // The reopening notices: 14 days after the declared reopening.
    app.clock.set(at("2026-12-01T09:00:00+01:00"));
    app.run_once().await;
    avvisi::campaign::phases::declare_reopening(
        &app.db,
        &app.settings.calendar,
        at("2026-12-14T09:00:00+01:00"),
        app.clock.now(),
    )
    .await
    .unwrap();
    let general = campaign::get(&app.db, "reopening_general-2026-11-30")
        .await
        .unwrap();
    assert_eq!(general.expires_at, Some(at("2026-12-28T09:00:00+01:00")));
}

/// A pause recorded while a pass is sending: the messages claimed before it go back to the
/// queue unsent within one batch (not sent to the end of what was claimed), the pause says how
/// many were on their way, and after the resume each message goes exactly once.
async fn a_pause_stops_the_claimed_messages_within_a_batch(app: TestApp) {
    use avvisi::app::{Actor, App};
    use testkit::smtp_sink::SmtpSink;
    let file = app.dir.path().join("many.csv");
    let csv = File::create(&file).unwrap();
    testkit::synthetic::write_snapshot(csv, 400, testkit::synthetic::Population::OneEach).unwrap();
    app.import_file(&file, Default::default()).await.unwrap();
    // The day's reminders first, into files: the timed pass below sends the notice alone.
    app.run_once().await;
    create(&app, "notice", None).await;
    launch(&app, "notice").await.unwrap();
    app.plan().await;
    let planned = app.users_in("notice", "pending").await.len();
    assert!(planned >= 150, "{planned}");

    // Batches of 50 (one claimed ahead) at 25 a second.
    let sink = SmtpSink::start().await;
    let timed = app.smtp(
        &sink.url(),
        &[
            ("AVVISI__RATE__PER_SECOND", "25"),
            ("AVVISI__DELIVERY__BATCH_SIZE", "50"),
        ],
    );
    let batch = 50;
    let worker = timed.worker();
    let pass = tokio::spawn(async move {
        worker
            .deliver_due(&tokio_util::sync::CancellationToken::new())
            .await
    });
    wait_until("a batch and more sent", Duration::from_secs(30), || {
        let n = sink.count();
        async move { n > batch + 10 }
    })
    .await;
    let ops = App::new(app.db.clone(), app.settings.clone(), app.clock.clone());
    let who = Actor::CommandLine {
        user: "test-operator".into(),
    };
    let paused = ops.pause_campaign(&who, "notice").await.unwrap();
    let at_pause = sink.count();
    pass.await.unwrap().unwrap();
    let after = sink.count() - at_pause;
    assert!(
        paused.on_the_way > 0 && paused.on_the_way as usize >= after,
        "on their way {} at the pause, {after} sent after it",
        paused.on_the_way
    );
    assert!(
        after <= batch / 2,
        "{after} sent after the pause (batches of {batch}, {} on their way)",
        paused.on_the_way
    );
    let rows = app.outbox().await;
    let notice: Vec<_> = rows.iter().filter(|r| r.campaign == "notice").collect();
    assert!(notice
        .iter()
        .all(|r| r.state == "sent" || r.state == "pending"));
    let sent = notice.iter().filter(|r| r.state == "sent").count();
    assert_eq!(
        sent,
        sink.count(),
        "every message sent is recorded, no other"
    );

    ops.resume_campaign(&who, "notice").await.unwrap();
    timed.deliver().await;
    let received = sink.wait_for(planned, Duration::from_secs(60)).await;
    assert_eq!(
        (
            received.len(),
            testkit::smtp_sink::distinct_message_ids(&received)
        ),
        (planned, planned),
        "each message exactly once"
    );
    assert_eq!(app.users_in("notice", "sent").await.len(), planned);
}

/// A campaign paused while the digests it leads are on their way: once the pass has handed
/// them back, the other campaigns' sections leave them (`deliver::pipeline`, `regroup_held`)
/// and go at the next pass without it. The email-change reminders lead the digests of the
/// mission's shape (with the code regeneration's and the credential advice's sections); they are
/// paused while their batch is being sent.
async fn a_pause_during_a_pass_frees_the_sections_its_digests_carried(app: TestApp) {
    use avvisi::app::{Actor, App};
    use testkit::smtp_sink::SmtpSink;
    let file = app.dir.path().join("mission.csv");
    let csv = File::create(&file).unwrap();
    testkit::synthetic::write_snapshot(csv, 1000, testkit::synthetic::Population::Mission).unwrap();
    app.import_file(&file, Default::default()).await.unwrap();
    app.plan().await;
    let lead = "email_unvalidated-2026-11-30";
    let registrations = app
        .users_in("registration_incomplete-2026-11-30", "pending")
        .await
        .len();
    assert!(registrations > 0);

    // Batches of 100 at 25 a second: the registrations' rows go first (planned first), then
    // the email-change digests.
    let sink = SmtpSink::start().await;
    let timed = app.smtp(
        &sink.url(),
        &[
            ("AVVISI__RATE__PER_SECOND", "25"),
            ("AVVISI__DELIVERY__BATCH_SIZE", "100"),
        ],
    );
    let worker = timed.worker();
    let pass = tokio::spawn(async move {
        worker
            .deliver_due(&tokio_util::sync::CancellationToken::new())
            .await
    });
    wait_until("the digests on their way", Duration::from_secs(60), || {
        let n = sink.count();
        async move { n > registrations + 10 }
    })
    .await;
    let ops = App::new(app.db.clone(), app.settings.clone(), app.clock.clone());
    let who = Actor::CommandLine {
        user: "test-operator".into(),
    };
    let paused = ops.pause_campaign(&who, lead).await.unwrap();
    assert!(paused.on_the_way > 0, "nothing of {lead} on its way");
    pass.await.unwrap().unwrap();

    let following: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox f JOIN outbox l ON l.id = f.digest_of \
         JOIN campaigns c ON c.id = l.campaign_id \
         WHERE c.name = $1 AND f.campaign_id <> l.campaign_id AND f.state = 'pending'",
    )
    .bind(lead)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(following, 0, "sections still wait for the paused {lead}");
    timed.deliver().await;
    let rows = app.outbox().await;
    assert!(
        rows.iter()
            .filter(|r| r.campaign != lead)
            .all(|r| r.state == "sent"),
        "the other campaigns' rows all went without the paused one"
    );
}

/// What an operator is told before sending: an empty audience at creation and at launch (with
/// the size), no daemon running to send it, and a rehearsal (`campaign test --now`) rendered
/// as on the day it goes out.
async fn an_operator_is_warned_before_sending_into_the_void(app: TestApp) {
    app.import_examples().await;
    let no_approval = [("AVVISI__APPROVAL__REQUIRED", "false")];
    // Aosta is a province, and nobody of the snapshot lives there.
    let out = app.avvisi(
        &[
            "campaign",
            "create",
            "aosta",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--filter",
            "province=AO",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(0 users now)"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(
            "warning: the audience is empty now: no user is in enabled_users in province AO"
        ),
        "{}",
        stderr(&out)
    );
    let out = app.avvisi(&["campaign", "launch", "aosta", "--json"], &no_approval);
    assert!(out.status.success(), "{}", stderr(&out));
    let launched: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(launched["audience_size"], 0);
    let warnings = launched["warnings"].to_string();
    assert!(warnings.contains("the audience is empty now"), "{warnings}");
    assert!(warnings.contains("no daemon is running"), "{warnings}");

    // An audience with people: no warning at creation; at launch, only the missing daemon.
    let out = app.avvisi(
        &[
            "campaign",
            "create",
            "solleciti",
            "--audience",
            "registration_incomplete",
            "--template",
            "registration_incomplete",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let out = app.avvisi(&["campaign", "show", "solleciti"], &[]);
    assert!(stdout(&out).contains("users"), "{}", stdout(&out));

    // The rehearsal: on 23 November the deadline is a week away; without --now (the real
    // clock, past the deadline) it would say that today is the last day.
    let test = |now: Option<&str>| {
        let mut args = vec![
            "campaign",
            "test",
            "solleciti",
            "--to",
            "operatore@istruzione.it",
        ];
        if let Some(now) = now {
            args.extend(["--now", now]);
        }
        let out = app.avvisi(&args, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let rehearsal = test(Some("2026-11-23T10:00:00+01:00"));
    assert!(
        rehearsal.contains("completi la registrazione entro il 30 novembre 2026"),
        "{rehearsal}"
    );
    let eml = app
        .eml_files()
        .into_iter()
        .find(|(n, _)| n.starts_with("solleciti.test."))
        .map(|(_, e)| e)
        .expect("the test message's file");
    assert!(
        header(&eml, "Date").unwrap().contains("23 Nov 2026"),
        "{:?}",
        header(&eml, "Date")
    );
    let today = test(None);
    assert!(today.contains("oggi è l'ultimo giorno"), "{today}");

    // With a daemon's heartbeat on record, the launch does not warn about it.
    let now = chrono::Utc::now().timestamp();
    sqlx::query("INSERT INTO daemons (id, started_at, heartbeat_at) VALUES ('test:1', $1, $1)")
        .bind(now)
        .execute(app.db.pool())
        .await
        .unwrap();
    let out = app.avvisi(&["campaign", "launch", "solleciti"], &no_approval);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("users in the audience now"),
        "{}",
        stdout(&out)
    );
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

on_both_backends!(
    an_operator_is_warned_before_sending_into_the_void,
    a_pause_stops_the_claimed_messages_within_a_batch,
    a_pause_during_a_pass_frees_the_sections_its_digests_carried,
    nothing_goes_out_past_a_campaigns_expiry,
    oneoff_campaign_reaches_exactly_its_audience,
    illegal_transitions_are_refused_with_clear_errors,
    pause_stops_delivery_and_resume_continues,
    cancel_skips_pending_messages_and_never_resumes,
    scheduled_campaign_waits_for_its_time,
    racing_operators_cannot_both_win,
    preview_and_test_use_a_real_recipient,
    launch_wait_follows_the_campaign_until_it_finishes,
    explain_shows_a_users_messages_and_audiences,
    list_shows_reminders_and_oneoffs,
    several_provinces_reach_exactly_their_users,
    an_uploaded_list_narrows_the_audience_to_its_users,
);

#[test]
fn every_campaign_command_has_help_with_an_example() {
    for sub in [
        "create", "list", "show", "preview", "test", "approve", "reject", "launch", "pause",
        "resume", "cancel",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_avvisi"))
            .args(["campaign", sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sub}");
        assert!(stdout(&out).contains("Example"), "{sub}");
    }
}

#[test]
fn create_help_lists_every_audience() {
    let out = Command::new(env!("CARGO_BIN_EXE_avvisi"))
        .args(["campaign", "create", "--help"])
        .output()
        .unwrap();
    let help = stdout(&out);
    let listed = help
        .split("[possible values: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no possible values for --audience:\n{help}"));
    let listed: Vec<&str> = listed.split(',').map(str::trim).collect();
    assert_eq!(listed, Audience::names(), "{help}");
}

/// Launches `name` the one way there is, the application's (as the command line does), on a
/// test installation that asks for no approval: the transitions are what these cases test.
pub(crate) async fn launch(app: &TestApp, name: &str) -> anyhow::Result<Launched> {
    let mut settings = (*app.settings).clone();
    settings.approval.required = false;
    let app = App::new(
        app.db.clone(),
        std::sync::Arc::new(settings),
        app.clock.clone(),
    );
    app.launch_campaign(
        &Actor::CommandLine {
            user: "tester".into(),
        },
        name,
    )
    .await
}

/// `--province rm --province BO` on the command line: the campaign plans and sends to the
/// users of either province (exactly the two one-province campaigns' users together); a bad
/// code among them creates nothing.
async fn several_provinces_reach_exactly_their_users(app: TestApp) {
    app.import_examples().await;
    for (name, province) in [("only-bo", "BO"), ("only-rm", "RM")] {
        create(&app, name, Some(province)).await;
        launch(&app, name).await.unwrap();
    }
    let create_args = |name: &'static str| {
        vec![
            "campaign",
            "create",
            name,
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
        ]
    };
    let mut args = create_args("both");
    args.extend(["--province", "rm", "--province", "BO", "--json"]);
    let created: serde_json::Value = serde_json::from_str(&ok(&app, &args)).unwrap();
    assert_eq!(created["filter_province"], "BO,RM", "{created}");
    launch(&app, "both").await.unwrap();
    app.plan().await;
    let mut expected = app.users_in("only-bo", "pending").await;
    expected.extend(app.users_in("only-rm", "pending").await);
    expected.sort();
    assert!(expected.len() >= 3, "{expected:?}");
    assert_eq!(created["audience_size"], expected.len() as u64);
    assert_eq!(app.users_in("both", "pending").await, expected);
    app.deliver().await;
    assert_eq!(app.users_in("both", "sent").await, expected);

    let mut args = create_args("bad");
    args.extend(["--province", "RM", "--province", "R1"]);
    let err = fails(&app, &args);
    assert!(err.contains("province=XX,YY"), "{err}");
    assert!(campaign::find(&app.db, "bad").await.unwrap().is_none());
}

/// `--users-file`: the campaign reaches exactly the users the file names (by user id, or by
/// fiscal code in any case), the entries that match nobody are listed and left out, a bad line
/// is refused naming the file and the line, and `explain` says why a user is left out.
async fn an_uploaded_list_narrows_the_audience_to_its_users(app: TestApp) {
    app.import_examples().await;
    let list = app.dir.path().join("elenco.csv");
    std::fs::write(
        &list,
        "user_id\nU0008\n\nrccslv87r55a944o,Silvia\nU0008\nNESSUNO1\nU0015\n",
    )
    .unwrap();
    let path = list.display().to_string();
    let created: serde_json::Value = serde_json::from_str(&ok(
        &app,
        &[
            "campaign",
            "create",
            "listed",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--users-file",
            &path,
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(
        created["not_found"],
        serde_json::json!(["NESSUNO1"]),
        "{created}"
    );
    assert_eq!(created["audience_size"], 3, "{created}");
    let shown = ok(&app, &["campaign", "show", "listed"]);
    assert!(shown.contains("the uploaded list of users"), "{shown}");
    launch(&app, "listed").await.unwrap();
    app.plan().await;
    assert_eq!(
        app.users_in("listed", "pending").await,
        ["U0008", "U0015", "U0024"]
    );
    app.deliver().await;
    assert_eq!(
        app.users_in("listed", "sent").await,
        ["U0008", "U0015", "U0024"]
    );
    let out = app.avvisi(&["explain", "U0029"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not on the list of users uploaded for the campaign"),
        "{text}"
    );

    let bad = app.dir.path().join("sbagliato.txt");
    std::fs::write(&bad, "U0008\nU 0009\n").unwrap();
    let bad_path = bad.display().to_string();
    let err = fails(
        &app,
        &[
            "campaign",
            "create",
            "bad",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--users-file",
            &bad_path,
        ],
    );
    assert!(
        err.contains("sbagliato.txt, line 2: `U 0009` is not a user id"),
        "{err}"
    );
    let err = fails(
        &app,
        &[
            "campaign",
            "create",
            "bad",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--users-file",
            &path,
            "--province",
            "RM",
        ],
    );
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(campaign::find(&app.db, "bad").await.unwrap().is_none());
}
