//! The application layer driven directly, as the browser console will drive it: one `App` over
//! the test's database, the use cases called with an actor, and their reports checked for what a
//! user would check. Then the command line's `--json`, which prints these same reports.

use avvisi::app::{Actor, App, NewCampaignRequest, UsersImport};
use avvisi::audience::Audience;
use avvisi::import::snapshot::Encoding;
use avvisi::store::CampaignState;

use crate::helpers::{at, repo_path, test_settings, TestApp};
use crate::on_both_backends;

on_both_backends!(
    a_run_imports_plans_and_sends_once,
    a_campaign_goes_through_its_lifecycle,
    a_user_is_explained_and_suppressed,
    only_the_use_cases_that_send_read_the_relay_password,
    json_carries_the_figures_the_text_shows,
    the_mean_message_size_is_that_of_the_emails_a_pass_writes,
);

fn app_of(t: &TestApp) -> App {
    App::new(t.db.clone(), t.settings.clone(), t.clock.clone())
}

fn operator() -> Actor {
    Actor::CommandLine {
        user: "test-operator".into(),
    }
}

/// `run --once --import` as a use case: the examples' first notice goes out, one email per
/// person, and a second pass at the same instant sends nothing again.
async fn a_run_imports_plans_and_sends_once(t: TestApp) {
    let app = app_of(&t);
    let users = repo_path("examples/users.csv");
    let at_first_notice = Some(at("2026-11-23T10:00:00+01:00"));
    let report = app
        .run_once(
            &operator(),
            at_first_notice,
            Some((&users, Encoding::default())),
        )
        .await
        .expect("run once");
    let imported = report.imported.as_ref().expect("the import's report");
    assert_eq!((imported.rows_valid, imported.users_new), (40, 40));
    assert!(imported.committed);
    assert_eq!(report.at, at("2026-11-23T10:00:00+01:00"));
    let planned: u64 = report.campaigns.iter().map(|c| c.planned).sum();
    let sent: u64 = report.campaigns.iter().map(|c| c.sent).sum();
    assert_eq!((planned, sent), (47, 47), "{report:?}");
    assert!(report
        .campaigns
        .iter()
        .all(|c| c.step.as_deref() == Some("first")));
    assert!(report.stopped.is_none());
    assert_eq!(report.files_dir.as_deref(), Some(t.outbox_dir().as_path()));
    assert_eq!(t.eml_files().len(), 30, "one email per person");

    let again = app
        .run_once(&operator(), at_first_notice, None)
        .await
        .expect("second run");
    assert!(again.imported.is_none());
    assert_eq!(again.campaigns.iter().map(|c| c.sent).sum::<u64>(), 0);
    assert_eq!(t.eml_files().len(), 30, "nothing sent twice");

    let status = app.status().await.expect("status");
    assert!(status.warning.is_none());
    let json = serde_json::to_value(&status).unwrap();
    let sent_in_status: u64 = json["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["counts"]["sent"].as_u64().unwrap())
        .sum();
    assert_eq!(sent_in_status, 47);
    t.teardown().await;
}

/// An operator's one-off campaign: created as a draft, previewed for a real recipient, tested
/// (to the operator only, nothing in the outbox), launched, paused, resumed and cancelled; an
/// action the state forbids is refused with the reason.
async fn a_campaign_goes_through_its_lifecycle(t: TestApp) {
    let app = app_of(&t);
    let who = operator();
    app.import_users(
        &who,
        &repo_path("examples/users.csv"),
        UsersImport::default(),
    )
    .await
    .expect("import");
    let created = app
        .create_campaign(
            &who,
            &NewCampaignRequest {
                name: "notice-bo".into(),
                audience: Audience::EnabledUsers,
                template: "maintenance_notice".into(),
                filter: Some("province=bo".into()),
                send_at: None,
                expires_at: None,
                transactional: None,
                users: None,
            },
        )
        .await
        .expect("create");
    assert_eq!(created.setup.filter_province.as_deref(), Some("BO"));
    assert!(created.setup.audience_size > 0, "{created:?}");
    // Without --expires-at: the configured days after now.
    let days = i64::from(t.settings.calendar.oneoff_expiry_days);
    assert_eq!(
        created.setup.expires_at,
        Some(t.clock.now() + chrono::Duration::days(days))
    );

    let preview = app
        .preview_campaign(&who, "notice-bo")
        .await
        .expect("preview");
    assert_eq!(preview.audience_size, created.setup.audience_size);
    let message = preview.message.expect("a recipient to render for");
    assert!(!message.subject.is_empty() && !message.text.is_empty());
    assert!(message.text.contains(&message.first_name), "{message:?}");

    let sent = app
        .send_test(&who, "notice-bo", "operatore@istruzione.it")
        .await
        .expect("test send");
    assert!(sent.subject.starts_with("[PROVA]"), "{sent:?}");
    assert_eq!(sent.rendered_for, message.user_id);
    assert_eq!(sent.campaign_state, CampaignState::Draft);
    let files = t.eml_files();
    assert_eq!(files.len(), 1, "the test message only");
    assert!(files[0].1.contains("To: operatore@istruzione.it"));
    let progress = app.campaign_progress("notice-bo").await.unwrap();
    assert_eq!(progress.state, CampaignState::Draft);
    assert_eq!(progress.messages.total(), 0, "nothing in the outbox");

    // A second person approves it (what they read: ten rendered messages at most), then it
    // launches.
    let approver = Actor::CommandLine {
        user: "test-approver".into(),
    };
    let preview = app.approval_preview(&approver, "notice-bo").await.unwrap();
    assert_eq!(preview.audience_size, created.setup.audience_size);
    assert_eq!(
        preview.samples.len() as u64,
        created.setup.audience_size.min(10)
    );
    app.approve_campaign(&approver, &preview).await.unwrap();
    let launched = app.launch_campaign(&who, "notice-bo").await.unwrap();
    assert_eq!(launched.state, CampaignState::Running);
    let paused = app.pause_campaign(&who, "notice-bo").await.unwrap();
    assert_eq!(paused.state, CampaignState::Paused);
    let resumed = app.resume_campaign(&who, "notice-bo").await.unwrap();
    assert_eq!(resumed.state, CampaignState::Running);
    let cancelled = app.cancel_campaign(&who, "notice-bo").await.unwrap();
    assert_eq!(cancelled.state, CampaignState::Cancelled);
    let refused = app
        .resume_campaign(&who, "notice-bo")
        .await
        .expect_err("a cancelled campaign never resumes");
    assert!(refused.to_string().contains("cancelled"), "{refused}");

    let all = app.campaigns().await.unwrap();
    let shown = all.iter().find(|c| c.name == "notice-bo").unwrap();
    assert_eq!(shown.state, "cancelled");
    assert_eq!(shown.setup.filter_province.as_deref(), Some("BO"));
    t.teardown().await;
}

/// `explain` and the suppression list as use cases: a suppressed address shows in the user's
/// explanation, and taking it off twice is refused the second time.
async fn a_user_is_explained_and_suppressed(t: TestApp) {
    let app = app_of(&t);
    let who = operator();
    t.import_examples().await;
    let before = app.explain("U0002", None).await.expect("explain");
    assert_eq!(before.user.contact.user_id, "U0002");
    assert!(before.audiences.iter().any(|(_, member)| *member));
    assert!(before.suppressions.is_empty());
    let missing = app
        .explain("u0002", None)
        .await
        .expect_err("ids are case-sensitive");
    assert!(missing.to_string().contains("no user `u0002`"), "{missing}");

    let address = before.user.contact.email.clone();
    let added = app
        .suppress(&who, &address.to_uppercase(), "asked by phone")
        .await
        .unwrap();
    assert_eq!(added.address, address.to_lowercase());
    assert!(added.already.is_none());
    let again = app.suppress(&who, &address, "twice").await.unwrap();
    assert_eq!(
        again.already.map(|s| s.reason).as_deref(),
        Some("asked by phone")
    );
    let after = app.explain("U0002", None).await.unwrap();
    assert_eq!(after.suppressions.len(), 1);
    assert_eq!(app.suppressions().await.unwrap().len(), 1);

    app.unsuppress(&who, &address).await.unwrap();
    let twice = app
        .unsuppress(&who, &address)
        .await
        .expect_err("gone already");
    assert!(twice.to_string().contains("is not on the suppression list"));
    assert!(app.suppressions().await.unwrap().is_empty());
    t.teardown().await;
}

/// With the relay's password file missing, what sends nothing works (status, a campaign's
/// preview, planning) and what sends (a test message) stops, naming the file.
async fn only_the_use_cases_that_send_read_the_relay_password(t: TestApp) {
    let missing = t.dir.path().join("no-such-password");
    let settings = test_settings(
        &t.database_url,
        t.dir.path(),
        &[
            ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
            // Nothing listens there: a use case that connected would fail differently.
            ("AVVISI__SMTP__URL", "smtp://127.0.0.1:9"),
            ("AVVISI__SMTP__USERNAME", "avvisi"),
            ("AVVISI__SMTP__PASSWORD_FILE", missing.to_str().unwrap()),
        ],
    );
    let app = App::new(t.db.clone(), settings.into(), t.clock.clone());
    let who = operator();
    t.import_examples().await;
    app.create_campaign(
        &who,
        &NewCampaignRequest {
            name: "notice".into(),
            audience: Audience::EnabledUsers,
            template: "maintenance_notice".into(),
            filter: None,
            send_at: None,
            expires_at: None,
            transactional: None,
            users: None,
        },
    )
    .await
    .expect("create");
    app.status().await.expect("status reads no password");
    let preview = app.preview_campaign(&who, "notice").await.expect("preview");
    assert!(preview.message.is_some());
    let plan = app.plan(&who, None, true).await.expect("a dry run");
    assert!(plan.dry_run);

    let e = app
        .send_test(&who, "notice", "operatore@istruzione.it")
        .await
        .expect_err("the password cannot be read");
    let chain = format!("{e:#}");
    assert!(chain.contains("no-such-password"), "{chain}");
    assert!(t.eml_files().is_empty());
    t.teardown().await;
}

/// `--json` anywhere on the line prints the command's report as JSON: it parses, and carries
/// the figures the text shows.
async fn json_carries_the_figures_the_text_shows(t: TestApp) {
    let run = |args: &[&str]| {
        let out = t.avvisi(args, &[]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let now = "2026-11-23T10:00:00+01:00";
    let text = run(&[
        "run",
        "--once",
        "--import",
        "examples/users.csv",
        "--now",
        now,
    ]);
    // The same instant again, as JSON: the import is reported, nothing new is sent.
    let json: serde_json::Value = serde_json::from_str(&run(&[
        "--json",
        "run",
        "--once",
        "--import",
        "examples/users.csv",
        "--now",
        now,
    ]))
    .expect("run --once --json parses");
    assert_eq!(json["imported"]["rows_valid"], 40);
    assert_eq!(json["imported"]["users_known"], 40);
    assert!(json["stopped"].is_null());
    assert!(json["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["sent"] == 0));
    // The first run's text: the figures per campaign.
    let sent_in_text: Vec<(String, u64)> = text
        .lines()
        .filter(|l| l.contains("-2026-11-30"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[3].parse().unwrap())
        })
        .collect();
    assert_eq!(sent_in_text.len(), 4, "{text}");

    let status_text = run(&["status"]);
    let status: serde_json::Value =
        serde_json::from_str(&run(&["status", "--json"])).expect("status --json parses");
    for (campaign, sent) in &sent_in_text {
        let c = status["campaigns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["campaign"] == campaign.as_str())
            .unwrap_or_else(|| panic!("{campaign} in {status}"));
        assert_eq!(c["counts"]["sent"].as_u64(), Some(*sent), "{campaign}");
        let line = status_text
            .lines()
            .find(|l| l.starts_with(campaign.as_str()))
            .unwrap();
        assert!(
            line.split_whitespace().any(|w| w == sent.to_string()),
            "{line}"
        );
    }

    let list: serde_json::Value =
        serde_json::from_str(&run(&["campaign", "list", "--json"])).expect("list parses");
    let list_text = run(&["campaign", "list"]);
    for (campaign, sent) in &sent_in_text {
        let c = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == campaign.as_str())
            .unwrap();
        assert_eq!(c["messages"]["sent"].as_u64(), Some(*sent));
        let cols: Vec<&str> = list_text
            .lines()
            .find(|l| l.starts_with(campaign.as_str()))
            .unwrap()
            .split_whitespace()
            .collect();
        // campaign, kind, state, audience, sent, ...
        assert_eq!(cols[4], sent.to_string());
        assert_eq!(c["audience_size"].to_string(), cols[3]);
    }

    let reopened: serde_json::Value = serde_json::from_str(&run(&[
        "service",
        "reopen",
        "--at",
        "2026-12-14T09:00:00+01:00",
        "--json",
    ]))
    .expect("reopen --json parses");
    assert_eq!(reopened["newly_declared"], true);
    assert_eq!(reopened["at"], "2026-12-14T08:00:00Z");
    t.teardown().await;
}

/// The benchmark's message size, as a use case: nothing on an empty outbox; after a pass, the
/// mean of the planned rows' emails lies among the sizes of the emails the pass wrote (a digest
/// is larger than any of its sections alone, a lone email the same size).
async fn the_mean_message_size_is_that_of_the_emails_a_pass_writes(t: TestApp) {
    let app = app_of(&t);
    assert_eq!(app.mean_message_size(0, 256).await.expect("empty"), 0);
    let users = repo_path("examples/users.csv");
    let report = app
        .run_once(
            &operator(),
            Some(at("2026-11-23T10:00:00+01:00")),
            Some((&users, Encoding::default())),
        )
        .await
        .expect("run once");
    let planned: u64 = report.campaigns.iter().map(|c| c.planned).sum();
    let sizes: Vec<u64> = t
        .eml_files()
        .iter()
        .map(|(_, eml)| eml.len() as u64)
        .collect();
    let (smallest, largest) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
    let mean = app
        .mean_message_size(planned, 256)
        .await
        .expect("mean size");
    assert!(
        (smallest..=largest).contains(&mean),
        "{mean} bytes, the pass wrote {smallest} to {largest}"
    );
    t.teardown().await;
}
