//! Planning: every audience gets exactly the right users, re-planning adds nothing, later steps
//! supersede earlier ones, users who complete are skipped, nothing goes out after the deadline.

use avvisi::config::Step;
use avvisi::import::ImportOptions;

use crate::helpers::{at, TestApp};
use crate::on_both_backends;

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn every_audience_gets_exactly_its_users(app: TestApp) {
    app.import_examples().await;
    let (planned, delivery) = app.run_once().await;
    assert!(planned.iter().all(|p| p.step == Step::First), "{planned:?}");
    assert_eq!(
        app.users_in("registration_incomplete", "sent").await,
        ids(&["U0001", "U0002", "U0003", "U0004", "U0005", "U0006"])
    );
    assert_eq!(
        app.users_in("email_unvalidated", "sent").await,
        ids(&[
            "U0007", "U0008", "U0009", "U0010", "U0011", "U0012", "U0013", "U0014", "U0015",
            "U0016", "U0017", "U0018", "U0022"
        ])
    );
    assert_eq!(
        app.users_in("code_regeneration_pending", "sent").await,
        ids(&["U0015", "U0016", "U0017", "U0018", "U0019", "U0020", "U0021", "U0022"])
    );
    assert_eq!(
        app.users_in("credential_recovery_advice", "sent").await,
        ids(&[
            "U0007", "U0008", "U0009", "U0010", "U0011", "U0012", "U0014", "U0015", "U0016",
            "U0017", "U0018", "U0019", "U0023", "U0024", "U0025", "U0026", "U0027", "U0028",
            "U0029", "U0030"
        ])
    );
    // Institutional users with nothing pending and enabled-less users get nothing at all.
    let rows = app.outbox().await;
    for nobody in [
        "U0031", "U0032", "U0033", "U0034", "U0035", "U0036", "U0037", "U0038", "U0039", "U0040",
    ] {
        assert!(
            rows.iter().all(|r| r.user_id != nobody),
            "{nobody} got a message"
        );
    }
    // 47 reminders to 30 people: one email each, the daily digest.
    assert_eq!(rows.len(), 47);
    assert_eq!(app.eml_files().len(), 30);
    let sent: u64 = delivery.per_campaign.values().map(|t| t.sent).sum();
    assert_eq!(sent, 47);
}

async fn planning_twice_adds_nothing(app: TestApp) {
    app.import_examples().await;
    let first: u64 = app.plan().await.iter().map(|p| p.rows).sum();
    let second: u64 = app.plan().await.iter().map(|p| p.rows).sum();
    assert_eq!((first, second), (47, 0));
    app.deliver().await;
    app.clock.advance(chrono::Duration::hours(2));
    let (planned, delivery) = app.run_once().await;
    assert_eq!(planned.iter().map(|p| p.rows).sum::<u64>(), 0);
    assert!(delivery.per_campaign.values().all(|t| t.sent == 0));
    assert_eq!(app.eml_files().len(), 30, "one email per person");
}

async fn user_who_completes_before_sending_is_skipped(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    // U0001 completes the registration; U0015 validates the email but still has a code pending.
    let csv = std::fs::read_to_string(crate::helpers::repo_path("examples/users.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("U0001,") {
                l.replace(",started,false,", ",completed,false,")
                    .replace("2026-11-18T09:12:00+01:00", "2026-11-23T09:30:00+01:00")
            } else if l.starts_with("U0015,") {
                let mut f: Vec<String> = l.split(',').map(String::from).collect();
                f[8] = String::new();
                f[11] = "2026-11-23T09:30:00+01:00".into();
                f.join(",")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect::<String>();
    app.import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    app.deliver().await;
    let rows = app.outbox().await;
    let find = |campaign: &str, user: &str| {
        rows.iter()
            .find(|r| r.campaign.starts_with(campaign) && r.user_id == user)
            .unwrap()
            .clone()
    };
    let skipped = find("registration_incomplete", "U0001");
    assert_eq!(skipped.state, "skipped");
    assert!(skipped.reason.unwrap().contains("registration completed"));
    assert_eq!(find("email_unvalidated", "U0015").state, "skipped");
    assert_eq!(find("code_regeneration_pending", "U0015").state, "sent");
    assert!(!app
        .eml_files()
        .iter()
        .any(|(name, _)| name.contains("registration_incomplete") && name.contains("U0001")));
}

async fn later_steps_go_to_those_still_pending(app: TestApp) {
    app.import_examples().await;
    app.run_once().await;
    // 27 November, 10:00: the d3 step is due.
    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    let (planned, _) = app.run_once().await;
    let reg = planned
        .iter()
        .find(|p| p.campaign.starts_with("registration_incomplete"))
        .unwrap();
    assert_eq!((reg.step, reg.rows), (Step::DaysBefore(3), 6));
    // 29 November: d1.
    app.clock.set(at("2026-11-29T09:00:00+01:00"));
    app.run_once().await;
    let steps: Vec<String> = app
        .outbox()
        .await
        .into_iter()
        .filter(|r| r.user_id == "U0002")
        .map(|r| format!("{}:{}", r.step, r.state))
        .collect();
    assert_eq!(steps, ids(&["first:sent", "d3:sent", "d1:sent"]));
}

async fn when_several_steps_are_due_only_the_latest_goes_out(app: TestApp) {
    app.import_examples().await;
    // The daemon was down until 28 November: first and d3 are both due; only d3 goes out.
    app.clock.set(at("2026-11-28T11:00:00+01:00"));
    app.run_once().await;
    let steps: Vec<String> = app
        .outbox()
        .await
        .into_iter()
        .filter(|r| r.user_id == "U0002")
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, ids(&["d3"]));
}

async fn nothing_goes_out_after_the_deadline(app: TestApp) {
    app.import_examples().await;
    // Planned at 21:00 on the last day, after the sending hours: it can only expire at the deadline.
    app.clock.set(at("2026-11-30T21:00:00+01:00"));
    let (planned, delivery) = app.run_once().await;
    assert!(delivery.outside_sending_hours);
    // The reminders' d1, and the maintenance notice (due since 27 November, never planned: this
    // is the first run), which expires at the maintenance start.
    for p in &planned {
        match p.campaign.starts_with("maintenance_notice") {
            true => assert_eq!(p.step, Step::Main),
            false => assert_eq!(p.step, Step::DaysBefore(1)),
        }
    }
    assert!(app.outbox().await.iter().all(|r| r.state == "pending"));
    app.clock.set(at("2026-12-01T09:00:00+01:00"));
    let (planned, delivery) = app.run_once().await;
    assert!(planned.is_empty(), "{planned:?}");
    assert!(delivery.per_campaign.values().all(|t| t.sent == 0));
    let rows = app.outbox().await;
    // d1: 27 procedure rows (6 + 13 + 8); the advice's 20, each merged into its person's digest
    // with the maintenance notice (so not dropped as alone); the notice to the 30 enabled users.
    assert_eq!(rows.len(), 27 + 20 + 30);
    assert!(rows.iter().all(|r| r.state == "expired"), "{rows:?}");
    assert!(rows[0].reason.as_deref().unwrap().contains("deadline"));
    assert!(app.eml_files().is_empty());
}

async fn outside_sending_hours_nothing_is_sent(app: TestApp) {
    app.import_examples().await;
    app.clock.set(at("2026-11-23T07:30:00+01:00"));
    // Before the campaign starts (09:00) nothing is even planned.
    let (planned, _) = app.run_once().await;
    assert_eq!(planned.iter().map(|p| p.rows).sum::<u64>(), 0);
    app.clock.set(at("2026-11-23T20:30:00+01:00"));
    let (planned, delivery) = app.run_once().await;
    assert_eq!(planned.iter().map(|p| p.rows).sum::<u64>(), 47);
    assert!(delivery.outside_sending_hours);
    assert!(app.eml_files().is_empty());
    app.clock.set(at("2026-11-24T08:00:00+01:00"));
    app.run_once().await;
    assert_eq!(app.eml_files().len(), 30, "one email per person");
}

/// The portal cancels incomplete registrations at the maintenance, and its next export no longer
/// lists those users. Being gone from the snapshot stops reminders, not the notice about what
/// happened to them: after the reopening, `reopening_registration_cancelled` reaches every one.
async fn a_cancelled_registration_is_told_even_when_the_export_drops_it(app: TestApp) {
    app.import_examples().await;
    let csv = std::fs::read_to_string(crate::helpers::repo_path("examples/users.csv")).unwrap();
    let started: Vec<String> = csv
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(6) == Some("started"))
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    assert!(started.len() >= 3, "{started:?}");

    // The first tick of the maintenance records who lapsed.
    app.clock.set(at("2026-12-01T09:00:00+01:00"));
    app.run_once().await;
    // The export after the maintenance: the cancelled registrations are gone.
    let after: String = csv
        .lines()
        .filter(|l| l.split(',').nth(6) != Some("started"))
        .map(|l| format!("{l}\n"))
        .collect();
    let report = app
        .import_csv(&after, ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.users_gone, started.len() as u64);

    avvisi::campaign::phases::declare_reopening(
        &app.db,
        &app.settings.calendar,
        at("2026-12-14T09:00:00+01:00"),
        app.clock.now(),
    )
    .await
    .unwrap();
    app.clock.set(at("2026-12-14T10:00:00+01:00"));
    app.run_once().await;
    let told = app
        .users_in("reopening_registration_cancelled", "sent")
        .await;
    assert_eq!(told, started, "every cancelled registration is told");
    // ...and nothing else reaches them: no general notice, no reminder.
    let rows = app.outbox().await;
    for user in &started {
        let theirs: Vec<&str> = rows
            .iter()
            .filter(|r| {
                &r.user_id == user && r.state == "sent" && r.campaign.starts_with("reopening")
            })
            .map(|r| r.campaign.as_str())
            .collect();
        assert_eq!(
            theirs,
            vec!["reopening_registration_cancelled-2026-11-30"],
            "{user}"
        );
    }
}

/// On a snapshot older than `import.max_age_hours` reminders are neither planned nor sent (a d1
/// reminder could reach someone who completed days ago); a one-off notice is not held; a fresh
/// export lets them go; `status` says it first.
async fn reminders_wait_for_a_fresh_snapshot(app: TestApp) {
    let app = app.with_settings(&[("AVVISI__IMPORT__MAX_AGE_HOURS", "30")]);
    app.import_examples().await;
    app.plan().await;
    assert_eq!(app.outbox().await.len(), 47);
    // Planned yesterday on a fresh snapshot, not sent: held once the snapshot is old.
    sqlx::query("UPDATE outbox SET state = 'pending'")
        .execute(app.db.pool())
        .await
        .unwrap();
    app.clock.set(at("2026-11-27T10:00:00+01:00"));
    let (planned, delivery) = app.run_once().await;
    // The maintenance notice does not depend on a procedure's state: it is not held.
    let notice = |c: &str| c.starts_with("maintenance_notice");
    assert!(
        planned.iter().all(|p| p.rows == 0 || notice(&p.campaign)),
        "{planned:?}"
    );
    assert!(
        delivery
            .per_campaign
            .iter()
            .all(|(c, t)| t.sent == 0 || notice(c)),
        "{delivery:?}"
    );
    assert!(app
        .outbox()
        .await
        .iter()
        .all(|r| r.state == "pending" || notice(&r.campaign)));

    let status = std::process::Command::new(env!("CARGO_BIN_EXE_avvisi"))
        .current_dir(crate::helpers::repo_path("."))
        .args(["status"])
        .env("AVVISI__DATABASE__URL", &app.database_url)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        out.starts_with("WARNING: the newest full snapshot is"),
        "{out}"
    );

    // A fresh export: the d3 reminders go, the held first notices are superseded by them (those
    // who got the maintenance notice today get theirs tomorrow: one email a day).
    app.import_examples().await;
    let (planned, _) = app.run_once().await;
    assert!(planned.iter().any(|p| p.rows > 0), "{planned:?}");
    let rows = app.outbox().await;
    assert!(rows.iter().any(|r| r.step == "d3" && r.state == "sent"));
    assert!(rows.iter().all(|r| r.state != "pending"), "{rows:?}");
}

on_both_backends!(
    reminders_wait_for_a_fresh_snapshot,
    a_cancelled_registration_is_told_even_when_the_export_drops_it,
    every_audience_gets_exactly_its_users,
    planning_twice_adds_nothing,
    user_who_completes_before_sending_is_skipped,
    later_steps_go_to_those_still_pending,
    when_several_steps_are_due_only_the_latest_goes_out,
    nothing_goes_out_after_the_deadline,
    outside_sending_hours_nothing_is_sent,
);
