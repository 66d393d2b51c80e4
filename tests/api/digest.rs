//! The daily digest: everything due for one person on one local day goes out as one email; the
//! outbox keeps one row per (campaign, user, step), the rows of a digest share its Message-ID and
//! are recorded with it; each section is checked again just before sending.

use std::collections::{BTreeMap, BTreeSet};

use avvisi::import::ImportOptions;
use sqlx::Row;

use crate::helpers::{decode_header, header, part, repo_path, OutboxRow, TestApp};
use crate::on_both_backends;

/// The email of `user` among the `.eml` files (named after the lead row: CAMPAIGN.STEP.USER).
fn email_of(app: &TestApp, user: &str) -> Vec<String> {
    app.eml_files()
        .into_iter()
        .filter(|(name, _)| name.ends_with(&format!(".{user}.eml")))
        .map(|(_, eml)| eml)
        .collect()
}

fn subject(eml: &str) -> String {
    decode_header(&header(eml, "Subject").unwrap())
}

/// `csv` with field `col` of `user`'s row set to `value` (and no portal timestamp, so that the
/// row is applied).
fn edit(csv: &str, user: &str, col: usize, value: &str) -> String {
    csv.lines()
        .map(|l| {
            if l.starts_with(&format!("{user},")) {
                let mut f: Vec<String> = l.split(',').map(String::from).collect();
                f[col] = value.to_string();
                f[11] = String::new();
                f.join(",")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

fn rows_of<'a>(rows: &'a [OutboxRow], user: &str) -> Vec<&'a OutboxRow> {
    rows.iter().filter(|r| r.user_id == user).collect()
}

async fn the_example_snapshot_gets_one_email_per_person(app: TestApp) {
    app.import_examples().await;
    app.run_once().await;
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 47, "one row per (campaign, user, step)");
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    // Nobody gets two emails: one file per person, one Message-ID per person.
    let files = app.eml_files();
    let mut people: BTreeMap<String, usize> = BTreeMap::new();
    for (name, _) in &files {
        let user = name.trim_end_matches(".eml").rsplit('.').next().unwrap();
        *people.entry(user.to_string()).or_default() += 1;
    }
    assert_eq!(people.len(), 30, "{people:?}");
    assert!(people.values().all(|n| *n == 1), "{people:?}");
    let mut ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &rows {
        ids.entry(&r.user_id).or_default().insert(&r.message_id);
    }
    assert!(ids.values().all(|m| m.len() == 1), "{ids:?}");

    // U0015: a changed email, a code regeneration and the recovery advice: one digest with a
    // section each, the advice last, the count in the subject.
    let u15 = email_of(&app, "U0015");
    assert_eq!(u15.len(), 1);
    assert_eq!(
        subject(&u15[0]),
        "Istanze OnLine: 2 procedure da completare entro il 30 novembre 2026"
    );
    let text = part(&u15[0], "text/plain");
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("no `{s}` in {text}"));
    assert!(at("NUOVO INDIRIZZO E-MAIL DA VALIDARE") < at("RIGENERAZIONE CODICE PERSONALE"));
    assert!(at("RIGENERAZIONE CODICE PERSONALE") < at("RECUPERO DELLE CREDENZIALI"));
    assert_eq!(text.matches("aggiornamento software").count(), 1, "{text}");
    let html = part(&u15[0], "text/html");
    assert!(
        html.contains("NUOVO INDIRIZZO E-MAIL DA VALIDARE"),
        "{html}"
    );
    assert!(html.contains("RECUPERO DELLE CREDENZIALI"), "{html}");
    // Its three rows are sent with one Message-ID, the one in the email.
    let mine = rows_of(&rows, "U0015");
    assert_eq!(mine.len(), 3);
    let id = header(&u15[0], "Message-ID").unwrap();
    assert!(mine.iter().all(|r| r.message_id == id), "{mine:?} {id}");

    // `explain` tells each row's email.
    let out = app.avvisi(&["explain", "U0015"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches(&format!("merged into digest {id}")).count(),
        3,
        "{text}"
    );

    // A person due for one thing gets today's single email, unchanged.
    let u2 = email_of(&app, "U0002");
    assert_eq!(u2.len(), 1);
    assert_eq!(
        subject(&u2[0]),
        "Istanze OnLine: completi la registrazione entro il 30 novembre 2026"
    );
    assert!(!part(&u2[0], "text/plain").contains("in un unico messaggio"));
    // U0020: the code reminder only.
    assert!(subject(&email_of(&app, "U0020")[0]).contains("Codice Personale"));
}

/// Eligibility is checked section by section just before sending: a completed procedure's
/// section is dropped, one section left is the single email, none left is no email.
async fn completed_sections_are_dropped_at_send_time(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let csv = std::fs::read_to_string(repo_path("examples/users.csv")).unwrap();
    // U0015 validates the new address (the lead's section): the code and the advice remain.
    let csv = edit(&csv, "U0015", 8, "");
    // U0016 validates and completes the code: only the advice remains.
    let csv = edit(&csv, "U0016", 8, "");
    let csv = edit(&csv, "U0016", 9, "none");
    // U0018 has nothing left: validated, code completed, and no longer enabled.
    let csv = edit(&csv, "U0018", 8, "");
    let csv = edit(&csv, "U0018", 9, "none");
    let csv = edit(&csv, "U0018", 7, "false");
    app.import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    let (_, delivery) = app.run_once().await;
    let rows = app.outbox().await;

    let u15 = email_of(&app, "U0015");
    assert_eq!(u15.len(), 1);
    assert_eq!(
        subject(&u15[0]),
        "Istanze OnLine: una procedura da completare entro il 30 novembre 2026"
    );
    let text = part(&u15[0], "text/plain");
    assert!(!text.contains("NUOVO INDIRIZZO"), "{text}");
    assert!(text.contains("RIGENERAZIONE CODICE PERSONALE"), "{text}");
    let state = |user: &str, prefix: &str| {
        rows_of(&rows, user)
            .into_iter()
            .find(|r| r.campaign.starts_with(prefix))
            .map(|r| (r.state.clone(), r.reason.clone().unwrap_or_default()))
            .unwrap()
    };
    let (lead_state, lead_reason) = state("U0015", "email_unvalidated");
    assert_eq!(lead_state, "skipped");
    assert!(lead_reason.contains("validated"), "{lead_reason}");
    assert_eq!(state("U0015", "code_regeneration").0, "sent");
    assert_eq!(state("U0015", "credential_recovery").0, "sent");
    let id = header(&u15[0], "Message-ID").unwrap();
    assert!(rows_of(&rows, "U0015").iter().all(|r| r.message_id == id));

    // U0016: one section left, the advice's own email.
    let u16 = email_of(&app, "U0016");
    assert_eq!(u16.len(), 1);
    assert!(
        subject(&u16[0]).contains("recuperi le credenziali"),
        "{}",
        subject(&u16[0])
    );
    assert_eq!(state("U0016", "email_unvalidated").0, "skipped");
    assert_eq!(state("U0016", "code_regeneration").0, "skipped");
    assert_eq!(state("U0016", "credential_recovery").0, "sent");

    // U0018: nothing left, nothing sent.
    assert!(email_of(&app, "U0018").is_empty());
    assert!(rows_of(&rows, "U0018").iter().all(|r| r.state == "skipped"));
    // The counts stay per row: 1 + 2 + 3 rows skipped.
    let skipped: u64 = delivery.per_campaign.values().map(|t| t.skipped).sum();
    assert_eq!(skipped, 6, "{delivery:?}");
    assert_eq!(app.eml_files().len(), 29);
}

on_both_backends!(
    the_example_snapshot_gets_one_email_per_person,
    completed_sections_are_dropped_at_send_time,
);

/// A calendar whose maintenance notice goes out in the afternoon of a reminder day: the people
/// who got the morning's reminder get the notice the next day, never a second email that day,
/// also when the notice's campaign is planned for the first time (it has no rows yet).
async fn a_notice_later_the_same_day_waits_for_the_next(app: TestApp) {
    let app = app.with_settings(&[(
        "AVVISI__CALENDAR__MAINTENANCE_NOTICE_AT",
        "2026-11-27T15:00:00",
    )]);
    app.import_examples().await;
    app.clock
        .set(crate::helpers::at("2026-11-27T09:30:00+01:00"));
    app.run_once().await;
    let morning: BTreeSet<String> = app
        .outbox()
        .await
        .into_iter()
        .filter(|r| r.state == "sent")
        .map(|r| r.user_id)
        .collect();
    assert!(
        !morning.is_empty(),
        "the d3 reminders went out in the morning"
    );

    app.clock
        .set(crate::helpers::at("2026-11-27T15:30:00+01:00"));
    app.run_once().await;
    let rows = app.outbox().await;
    let notice = |r: &&OutboxRow| r.campaign.starts_with("maintenance_notice");
    let afternoon: Vec<&OutboxRow> = rows.iter().filter(notice).collect();
    assert!(
        afternoon.iter().any(|r| r.state == "sent"),
        "the notice went to the enabled users not reached this morning: {afternoon:?}"
    );
    for r in &afternoon {
        assert!(
            !(morning.contains(&r.user_id) && r.state == "sent"),
            "{} got the morning's reminder and the notice the same day: {r:?}",
            r.user_id
        );
    }
    // The next morning the notice reaches them (with that day's reminder when one is due).
    app.clock
        .set(crate::helpers::at("2026-11-28T09:30:00+01:00"));
    app.run_once().await;
    let rows = app.outbox().await;
    let enabled: BTreeSet<String> =
        sqlx::query_scalar("SELECT user_id FROM users WHERE enabled = 1 AND present = 1")
            .fetch_all(app.db.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    let waited: Vec<&String> = morning.intersection(&enabled).collect();
    assert!(
        !waited.is_empty(),
        "some enabled users got the morning's reminder"
    );
    for user in waited {
        let got: Vec<&OutboxRow> = rows
            .iter()
            .filter(|r| &r.user_id == user && r.campaign.starts_with("maintenance_notice"))
            .collect();
        assert!(
            got.iter().any(|r| r.state == "sent"),
            "{user}: the notice the next day: {got:?}"
        );
    }
}

on_both_backends!(a_notice_later_the_same_day_waits_for_the_next);

/// The people whose digest a row of `campaign` leads, with another campaign's section in it,
/// and the digest's Message-ID.
async fn digests_led_by(app: &TestApp, campaign: &str) -> Vec<(String, String)> {
    sqlx::query(
        "SELECT l.user_id, l.message_id FROM outbox l JOIN campaigns c ON c.id = l.campaign_id \
         WHERE c.name = $1 AND l.digest_of = l.id AND l.state = 'pending' AND EXISTS \
           (SELECT 1 FROM outbox f WHERE f.digest_of = l.id AND f.campaign_id <> l.campaign_id) \
         ORDER BY l.user_id",
    )
    .bind(campaign)
    .fetch_all(app.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("user_id"), r.get("message_id")))
    .collect()
}

/// Pausing the maintenance notice on 27 November, when it leads the day's digests (it expires
/// last): the d3 reminders of those digests still go that day without its section; the notice
/// waits, and after the resume goes alone under a Message-ID of its own.
async fn a_pause_holds_only_its_own_sections_of_a_digest(app: TestApp) {
    use avvisi::app::{Actor, App};
    let notice = "maintenance_notice-2026-11-30";
    app.import_examples().await;
    app.clock
        .set(crate::helpers::at("2026-11-27T09:30:00+01:00"));
    app.plan().await;
    let led = digests_led_by(&app, notice).await;
    assert!(!led.is_empty(), "the notice leads some digests today");

    let ops = App::new(app.db.clone(), app.settings.clone(), app.clock.clone());
    let who = Actor::CommandLine {
        user: "test-operator".into(),
    };
    ops.pause_campaign(&who, notice).await.unwrap();
    app.deliver().await;
    let rows = app.outbox().await;
    for (user, digest_id) in &led {
        let mine = rows_of(&rows, user);
        let (held, others): (Vec<&&OutboxRow>, Vec<&&OutboxRow>) =
            mine.iter().partition(|r| r.campaign == notice);
        assert_eq!(held.len(), 1, "{mine:?}");
        assert_eq!(held[0].state, "pending", "the notice waits: {mine:?}");
        assert!(
            others.iter().all(|r| r.state == "sent"),
            "{user}: the other sections go today: {mine:?}"
        );
        let emails = email_of(&app, user);
        assert_eq!(emails.len(), 1, "{user}: one email today");
        let text = part(&emails[0], "text/plain");
        assert!(!text.contains("AGGIORNAMENTO DEL SERVIZIO"), "{text}");
        assert_eq!(header(&emails[0], "Message-ID").as_ref(), Some(digest_id));
        assert_ne!(
            &held[0].message_id, digest_id,
            "the held row's ID is its own"
        );
    }

    ops.resume_campaign(&who, notice).await.unwrap();
    app.run_once().await;
    let rows = app.outbox().await;
    for (user, digest_id) in &led {
        let notice_row = rows_of(&rows, user)
            .into_iter()
            .find(|r| r.campaign == notice)
            .unwrap();
        assert_eq!(notice_row.state, "sent", "{notice_row:?}");
        let emails = email_of(&app, user);
        assert_eq!(emails.len(), 2, "{user}: the notice after the resume");
        let ids: BTreeSet<String> = emails
            .iter()
            .map(|e| header(e, "Message-ID").unwrap())
            .collect();
        assert_eq!(ids.len(), 2, "{user}: two emails, two Message-IDs: {ids:?}");
        assert!(ids.contains(digest_id));
    }
}

on_both_backends!(a_pause_holds_only_its_own_sections_of_a_digest);

/// A pass with nothing pending before it writes a row as its digest's lead (pointing to itself)
/// when a campaign planned after it in the pass takes the same person. On 27 November the
/// reminders' third step is due, but the credential advice has nothing new (its last step was
/// planned on the 23rd): the email-change reminder of someone who also gets the advice was
/// written as a lead, nothing followed it, and it must go as an email of its own.
async fn a_row_written_as_a_lead_that_nothing_follows_goes_alone(app: TestApp) {
    use testkit::synthetic::{write_snapshot, Population};
    // The maintenance notice after the case, so that it merges with nothing on the 27th.
    let app = app.with_settings(&[(
        "AVVISI__CALENDAR__MAINTENANCE_NOTICE_AT",
        "2026-11-28T09:00:00",
    )]);
    let mut csv = Vec::new();
    write_snapshot(&mut csv, 200, Population::Mission).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    app.clock
        .set(crate::helpers::at("2026-11-23T10:00:00+01:00"));
    app.import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    app.run_once().await;
    assert!(app.outbox().await.iter().all(|r| r.state == "sent"));

    app.clock
        .set(crate::helpers::at("2026-11-27T10:00:00+01:00"));
    app.import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    let planned = app.plan().await;
    let advice = planned
        .iter()
        .find(|p| p.campaign.starts_with("credential_recovery_advice"))
        .expect("the advice is due");
    assert_eq!(advice.rows, 0, "the advice's step was planned on the 23rd");
    let lone: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox l WHERE l.digest_of = l.id \
         AND NOT EXISTS (SELECT 1 FROM outbox f WHERE f.digest_of = l.id AND f.id <> l.id)",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(lone, 0, "a row leads a digest that nothing follows");
    // The case's point: people with an email-change reminder alone today who also get the advice.
    let alone: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         WHERE c.name LIKE 'email_unvalidated%' AND o.step = 'd3' AND o.state = 'pending' \
           AND o.digest_of IS NULL AND EXISTS (SELECT 1 FROM outbox a JOIN campaigns ca \
             ON ca.id = a.campaign_id WHERE ca.name LIKE 'credential_recovery_advice%' \
             AND a.user_id = o.user_id)",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert!(
        alone > 0,
        "no email-change reminder goes alone to someone advised"
    );
    // Every digest still has two sections or more, and each person gets one email.
    let before = app.eml_files().len();
    let report = app.deliver().await;
    let people: BTreeSet<String> = app
        .outbox()
        .await
        .into_iter()
        .filter(|r| r.step == "d3")
        .map(|r| r.user_id)
        .collect();
    assert_eq!(app.eml_files().len() - before, people.len(), "{report:?}");
}

on_both_backends!(a_row_written_as_a_lead_that_nothing_follows_goes_alone);
