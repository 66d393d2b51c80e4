//! `avvisi explain USER_ID --now TS` answers "why not": for each campaign without a message of its
//! current step, the reason, as the real binary prints it and as JSON (`why_not`).

use avvisi::audience::Audience;
use avvisi::campaign::lifecycle;
use avvisi::campaign::{self, NewCampaign};
use avvisi::import::ImportOptions;
use avvisi::render::templates::TemplateSet;
use serde_json::Value;

use crate::helpers::{at, repo_path, TestApp};
use crate::on_both_backends;

/// Reminders are not held for the snapshot's age unless a case says so.
const FRESH: (&str, &str) = ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000");

/// `avvisi explain USER --now NOW`, insisting that it succeeds; its standard output.
fn explain(app: &TestApp, user: &str, now: &str, env: &[(&str, &str)]) -> String {
    let out = app.avvisi(&["explain", user, "--now", now], env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "explain {user} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn explain_json(app: &TestApp, user: &str, now: &str, env: &[(&str, &str)]) -> Value {
    let out = app.avvisi(&["explain", user, "--now", now, "--json"], env);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("explain --json")
}

/// The line of the "why not" section about the campaign whose name starts with `prefix`.
fn why_not_line(out: &str, prefix: &str) -> String {
    let section = out
        .split("\nwhy not (as of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no why-not section:\n{out}"));
    section
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no why-not line for {prefix}:\n{out}"))
        .to_string()
}

/// The JSON verdict on the campaign whose name starts with `prefix`.
fn verdict<'a>(e: &'a Value, prefix: &str) -> &'a Value {
    &e["why_not"]
        .as_array()
        .expect("why_not")
        .iter()
        .find(|v| v["campaign"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no verdict for {prefix}: {e}"))["verdict"]
}

/// `examples/users.csv` with `edit` applied to each line.
fn examples_with(edit: impl Fn(&str) -> Option<String>) -> String {
    std::fs::read_to_string(repo_path("examples/users.csv"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            if l.starts_with("user_id,") {
                Some(l.to_string())
            } else {
                edit(l)
            }
        })
        .map(|l| l + "\n")
        .collect()
}

async fn before_the_first_notice_it_says_when(app: TestApp) {
    app.clock.set(at("2026-11-22T10:00:00+01:00"));
    app.import_examples().await;
    let now = "2026-11-22T10:00:00+01:00";
    let out = explain(&app, "U0002", now, &[FRESH]);
    assert!(out.contains("messages: none planned"), "{out}");
    let line = why_not_line(&out, "registration_incomplete-2026-11-30");
    assert!(
        line.contains("not yet due: first on 23 Nov 2026 09:00 CET"),
        "{line}"
    );
    // The calendar's campaigns are explained before the first tick creates them.
    let line = why_not_line(&explain(&app, "U0024", now, &[FRESH]), "maintenance_notice");
    assert!(
        line.contains("not yet due: scheduled for 27 Nov 2026 09:00 CET"),
        "{line}"
    );
    let e = explain_json(&app, "U0002", now, &[FRESH]);
    let v = verdict(&e, "registration_incomplete");
    assert_eq!(v["reason"], "not_yet_due");
    assert_eq!(v["step"], "first");
    assert_eq!(v["at"], "2026-11-23T08:00:00Z");

    // Due, and nobody has planned yet (the daemon was down): the next tick plans it.
    let line = why_not_line(
        &explain(&app, "U0002", "2026-11-23T10:00:00+01:00", &[FRESH]),
        "registration_incomplete",
    );
    assert!(
        line.contains("due now (first): the next planner tick plans it"),
        "{line}"
    );
    // Nothing was written by explaining: the calendar's campaigns are still to be created.
    let campaigns: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM campaigns")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(campaigns, 0);
}

async fn a_paused_or_cancelled_campaign_says_so(app: TestApp) {
    app.import_examples().await;
    app.run_once().await;
    lifecycle::pause(&app.db, "registration_incomplete-2026-11-30")
        .await
        .unwrap();
    lifecycle::cancel(&app.db, "maintenance_notice-2026-11-30", app.clock.now())
        .await
        .unwrap();
    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    app.run_once().await;
    let now = "2026-11-27T10:00:00+01:00";
    let out = explain(&app, "U0002", now, &[FRESH]);
    let line = why_not_line(&out, "registration_incomplete-2026-11-30");
    assert!(line.contains("the campaign is paused"), "{line}");
    // Its first notice went out before the pause: the message is there, d3 is not.
    assert!(
        out.lines()
            .any(|l| l.contains("registration_incomplete-2026-11-30") && l.contains("sent")),
        "{out}"
    );
    let out = explain(&app, "U0024", now, &[FRESH]);
    let line = why_not_line(&out, "maintenance_notice-2026-11-30");
    assert!(line.contains("the campaign is cancelled"), "{line}");
    let e = explain_json(&app, "U0002", now, &[FRESH]);
    let v = verdict(&e, "registration_incomplete");
    assert_eq!(v["reason"], "campaign_not_running");
    assert_eq!(v["state"], "paused");
}

async fn a_user_outside_the_audience_hears_which_rule_fails(app: TestApp) {
    app.import_examples().await;
    // U0002 completes the registration (not yet enabled: identification in person).
    let csv = examples_with(|l| {
        Some(if l.starts_with("U0002,") {
            l.replace(",started,false,", ",completed,false,")
                .replace("2026-11-02T21:47:00+01:00", "2026-11-23T09:30:00+01:00")
        } else {
            l.to_string()
        })
    });
    app.import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    let templates = TemplateSet::load(&app.settings.templates_dir)
        .unwrap()
        .messages();
    let new = NewCampaign {
        name: "rome".into(),
        audience: Audience::EnabledUsers,
        template: "maintenance_notice".into(),
        filter_province: Some("RM".into()),
        send_at: None,
        expires_at: at("2026-11-30T23:59:59+01:00"),
        transactional: None,
    };
    campaign::create(&app.db, &new, &templates, app.clock.now())
        .await
        .unwrap();
    crate::campaigns::launch(&app, "rome").await.unwrap();
    app.run_once().await;
    let now = "2026-11-23T10:00:00+01:00";

    let out = explain(&app, "U0002", now, &[FRESH]);
    assert!(out.contains("messages: none planned"), "{out}");
    let line = why_not_line(&out, "registration_incomplete-2026-11-30");
    assert!(
        line.contains(
            "not in the audience registration_incomplete: registration is `completed`, the audience needs `started`"
        ),
        "{line}"
    );
    let line = why_not_line(&out, "email_unvalidated-2026-11-30");
    assert!(
        line.contains("not enabled; no changed email address awaiting validation"),
        "{line}"
    );
    let out = explain(&app, "U0020", now, &[FRESH]);
    let line = why_not_line(&out, "credential_recovery_advice-2026-11-30");
    assert!(line.contains("registered with @istruzione.it"), "{line}");
    // U0024 lives in Bologna: the campaign is for Rome.
    let out = explain(&app, "U0024", now, &[FRESH]);
    let line = why_not_line(&out, "rome");
    assert!(
        line.contains("province BO, the campaign is for RM"),
        "{line}"
    );
    // U0031 (Rome) got it: no why-not line for it.
    let out = explain(&app, "U0031", now, &[FRESH]);
    let section = out.split("\nwhy not (as of ").nth(1).unwrap();
    assert!(
        !section.lines().any(|l| l.trim_start().starts_with("rome ")),
        "{out}"
    );
    let e = explain_json(&app, "U0002", now, &[FRESH]);
    assert_eq!(
        verdict(&e, "registration_incomplete")["failed"],
        serde_json::json!(["registration is `completed`, the audience needs `started`"])
    );

    // Once the campaign has finished, the reason stays the user's own, not "finished".
    app.clock.set(at("2026-11-23T11:00:00+01:00"));
    app.run_once().await;
    assert_eq!(
        campaign::get(&app.db, "rome")
            .await
            .unwrap()
            .state
            .to_string(),
        "finished"
    );
    let later = "2026-11-23T11:00:00+01:00";
    let out = explain(&app, "U0024", later, &[FRESH]);
    let line = why_not_line(&out, "rome");
    assert!(
        line.contains("province BO, the campaign is for RM"),
        "{line}"
    );
    let e = explain_json(&app, "U0024", later, &[FRESH]);
    assert_eq!(verdict(&e, "rome")["reason"], "not_in_audience", "{e}");
    // A user it did include: the message, sent.
    let out = explain(&app, "U0031", later, &[FRESH]);
    let section = out.split("\nwhy not (as of ").nth(1).unwrap();
    assert!(
        !section.lines().any(|l| l.trim_start().starts_with("rome ")),
        "{out}"
    );
}

async fn a_user_gone_from_the_snapshot_is_told_apart(app: TestApp) {
    app.import_examples().await;
    app.run_once().await;
    // The next full export no longer lists U0002.
    app.clock.set(at("2026-11-27T08:00:00+01:00"));
    let csv = examples_with(|l| (!l.starts_with("U0002,")).then(|| l.to_string()));
    app.import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    app.run_once().await;
    let out = explain(&app, "U0002", "2026-11-27T10:00:00+01:00", &[FRESH]);
    let line = why_not_line(&out, "registration_incomplete-2026-11-30");
    assert!(line.contains("gone from the snapshot"), "{line}");
    // Their first notice is still there, the d3 one was never planned.
    let rows = app.outbox().await;
    assert!(rows
        .iter()
        .all(|r| r.user_id != "U0002" || r.step == "first"));
}

async fn a_stale_snapshot_holds_the_reminders(app: TestApp) {
    // Imported on 23 November at 10:00; two days later, with the default 30 hours, it is stale.
    app.import_examples().await;
    let now = "2026-11-25T10:00:00+01:00";
    let out = explain(
        &app,
        "U0002",
        now,
        &[("AVVISI__IMPORT__MAX_AGE_HOURS", "30")],
    );
    let line = why_not_line(&out, "registration_incomplete-2026-11-30");
    assert!(
        line.contains("the snapshot is too old: the newest full snapshot is 48 hours old"),
        "{line}"
    );
    // The same planner pass, for real, plans nothing for them.
    let app = app.with_settings(&[("AVVISI__IMPORT__MAX_AGE_HOURS", "30")]);
    app.clock.set(at(now));
    app.plan().await;
    assert!(app
        .users_in("registration_incomplete", "pending")
        .await
        .is_empty());
    // With a fresh limit the same instant is due now.
    let line = why_not_line(&explain(&app, "U0002", now, &[FRESH]), "registration");
    assert!(line.contains("due now (first)"), "{line}");
}

async fn a_user_reached_today_gets_the_rest_tomorrow(app: TestApp) {
    app.import_examples().await;
    app.run_once().await;
    // At 15:00 a new export: U0024, who got the recovery advice at 10:00, now has a changed
    // address awaiting validation.
    app.clock.set(at("2026-11-23T15:00:00+01:00"));
    let csv = examples_with(|l| {
        Some(if l.starts_with("U0024,") {
            l.replace(
                ",,none,BO,2026-11-07T18:48:00+01:00",
                ",silvia.r@libero.it,none,BO,",
            )
        } else {
            l.to_string()
        })
    });
    app.import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    let now = "2026-11-23T15:00:00+01:00";
    app.run_once().await;
    // The planner left them out today, and explain says so.
    assert!(!app
        .outbox()
        .await
        .iter()
        .any(|r| r.user_id == "U0024" && r.campaign.starts_with("email_unvalidated")));
    let out = explain(&app, "U0024", now, &[FRESH]);
    let line = why_not_line(&out, "email_unvalidated-2026-11-30");
    assert!(
        line.contains(
            "already reached today (an email of credential_recovery_advice-2026-11-30): first is planned from 24 Nov 2026 00:00 CET"
        ),
        "{line}"
    );
    // And the next day it is planned.
    app.clock.set(at("2026-11-24T10:00:00+01:00"));
    app.import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    app.run_once().await;
    assert!(app
        .users_in("email_unvalidated", "sent")
        .await
        .contains(&"U0024".to_string()));

    // U0015's three messages travel in one digest: each verdict names it.
    let e = explain_json(&app, "U0015", now, &[FRESH]);
    let v = verdict(&e, "code_regeneration_pending");
    assert_eq!(v["reason"], "merged_into_digest");
    let digest = e["messages"][0]["digest"].as_str().unwrap();
    assert_eq!(v["message_id"], digest);
}

async fn a_suppressed_address_without_fallback_is_the_reason(app: TestApp) {
    app.import_examples().await;
    let out = app.avvisi(
        &[
            "suppress",
            "add",
            "silvia.ricci@gmail.com",
            "--reason",
            "mailbox closed",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let now = "2026-11-23T10:00:00+01:00";
    // Before planning, and after: the row is planned skipped, and the reason stays the same.
    for planned in [false, true] {
        if planned {
            app.run_once().await;
        }
        let out = explain(&app, "U0024", now, &[FRESH]);
        let line = why_not_line(&out, "credential_recovery_advice-2026-11-30");
        assert!(
            line.contains(
                "the address silvia.ricci@gmail.com is suppressed and there is no institutional address to fall back on"
            ),
            "planned {planned}: {line}"
        );
    }
    assert_eq!(
        app.users_in("credential_recovery_advice", "skipped").await,
        ["U0024"]
    );
}

/// A message due already says what it waits for: the sending hours (until when), no daemon, a
/// pause; `status` says the same at the top.
async fn a_due_message_says_what_holds_it(app: TestApp) {
    app.import_examples().await;
    // Planned at 20:22, after the sending hours: due, and nothing sent.
    app.clock.set(at("2026-11-23T20:22:00+01:00"));
    app.run_once().await;
    let night = "2026-11-24T06:22:00+01:00";
    let out = explain(&app, "U0002", night, &[FRESH]);
    let line = message_line(&out, "registration_incomplete");
    assert!(
        line.contains("due 2026-11-23 20:22 CET; waits: ")
            && line.contains(
                "outside the sending hours (08:00-20:00 Europe/Rome): sending waits for 08:00 (2026-11-24 08:00 CET)"
            )
            && line.contains("no daemon is running"),
        "{line}"
    );
    let e = explain_json(&app, "U0002", night, &[FRESH]);
    let kinds: Vec<&str> = e["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"sending_hours") && kinds.contains(&"no_daemon"),
        "{e}"
    );

    // Paused by an operator: that campaign's message names the pause, inside the hours.
    lifecycle::pause(&app.db, "registration_incomplete-2026-11-30")
        .await
        .unwrap();
    let out = explain(&app, "U0002", "2026-11-24T10:00:00+01:00", &[FRESH]);
    let line = message_line(&out, "registration_incomplete");
    assert!(
        line.contains("waits: ")
            && line
                .contains("campaign registration_incomplete-2026-11-30 is paused by an operator")
            && !line.contains("sending hours"),
        "{line}"
    );
    let status = app.avvisi(&["status"], &[FRESH]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("HELD: campaign registration_incomplete-2026-11-30 is paused by an operator")
            && text.contains("HELD: no daemon is running"),
        "{text}"
    );
}

/// The line of the messages' table about the campaign whose name starts with `prefix`.
fn message_line(out: &str, prefix: &str) -> String {
    out.split("\nwhy not (as of ")
        .next()
        .unwrap()
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no message of {prefix}:\n{out}"))
        .to_string()
}

on_both_backends!(
    a_due_message_says_what_holds_it,
    before_the_first_notice_it_says_when,
    a_paused_or_cancelled_campaign_says_so,
    a_user_outside_the_audience_hears_which_rule_fails,
    a_user_gone_from_the_snapshot_is_told_apart,
    a_stale_snapshot_holds_the_reminders,
    a_user_reached_today_gets_the_rest_tomorrow,
    a_suppressed_address_without_fallback_is_the_reason,
);
