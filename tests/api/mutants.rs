//! Promises of the README that no other case pinned down, found by reading the suite against
//! the README and by mutation testing (`docs/testing.md`): each case here fails when the code it
//! names is broken on purpose.

use crate::helpers::{at, OutboxRow, TestApp};
use crate::on_both_backends;
use testkit::smtp_sink::{Fault, SmtpSink};

fn rows_of<'a>(rows: &'a [OutboxRow], campaign: &str, step: &str) -> Vec<&'a OutboxRow> {
    rows.iter()
        .filter(|r| r.campaign.starts_with(campaign) && r.step == step)
        .collect()
}

/// The first notice planned and never sent (the daemon was stopped right after the tick); at
/// the d3 step only d3 goes out, and the first notices still pending are `skipped` as
/// superseded, with the step that superseded them as the reason. The dry run at that instant
/// counts them (`plan::pass`, `plan_step`).
async fn an_older_step_still_pending_is_skipped_as_superseded(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let first = app.outbox().await;
    assert_eq!(first.len(), 47);
    assert!(first.iter().all(|r| r.state == "pending"));
    let procedures = [
        "registration_incomplete",
        "email_unvalidated",
        "code_regeneration_pending",
    ];
    let pending_first: usize = procedures
        .iter()
        .map(|c| rows_of(&first, c, "first").len())
        .sum();
    assert_eq!(pending_first, 6 + 13 + 8);

    let d3 = "2026-11-27T10:00:00+01:00";
    let out = app.avvisi(
        &["plan", "--dry-run", "--json", "--now", d3],
        &[("AVVISI__IMPORT__MAX_AGE_HOURS", "100000")],
    );
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["superseded"].as_u64(),
        Some(pending_first as u64),
        "{report}"
    );

    app.clock.set(at(d3));
    app.run_once().await;
    let rows = app.outbox().await;
    for c in procedures {
        let old = rows_of(&rows, c, "first");
        assert!(!old.is_empty(), "{c}");
        for r in old {
            assert_eq!(r.state, "skipped", "{r:?}");
            assert_eq!(
                r.reason.as_deref(),
                Some("superseded by the later step d3"),
                "{r:?}"
            );
        }
        let new = rows_of(&rows, c, "d3");
        assert!(!new.is_empty(), "{c}");
        assert!(new.iter().all(|r| r.state == "sent"), "{new:?}");
    }
    // Nobody got a procedure's first notice: not a burst of two reminders, only the latest.
    assert!(rows
        .iter()
        .filter(|r| procedures.iter().any(|c| r.campaign.starts_with(c)) && r.step == "first")
        .all(|r| r.state != "sent"));
}

/// A calendar whose first notice and d3 step fall on the same day (the campaign starts at 08:00
/// on 27 November): a person who got the first notice at 08:30 gets no other email of that
/// campaign that day; d3 is planned for them the next day. The check is the campaign's own (no
/// other campaign reached them), on a campaign that already has rows.
async fn one_campaign_reaches_a_person_once_a_day(app: TestApp) {
    let app = app.with_settings(&[
        ("AVVISI__CALENDAR__CAMPAIGN_START", "2026-11-27T08:00:00"),
        // The maintenance notice another day: only the campaign's own rows count here.
        (
            "AVVISI__CALENDAR__MAINTENANCE_NOTICE_AT",
            "2026-11-28T12:00:00",
        ),
    ]);
    app.import_examples().await;
    app.clock.set(at("2026-11-27T08:30:00+01:00"));
    app.run_once().await;
    let morning = app.users_in("registration_incomplete", "sent").await;
    assert_eq!(morning.len(), 6, "the first notice went out at 08:30");
    assert!(app
        .outbox()
        .await
        .iter()
        .filter(|r| r.campaign.starts_with("registration_incomplete"))
        .all(|r| r.step == "first"));

    // 09:30: d3 is due, but every one of them was reached by this campaign today.
    app.clock.set(at("2026-11-27T09:30:00+01:00"));
    let (planned, _) = app.run_once().await;
    let reg = planned
        .iter()
        .find(|p| p.campaign.starts_with("registration_incomplete"))
        .unwrap();
    assert_eq!(reg.rows, 0, "{planned:?}");
    assert!(rows_of(&app.outbox().await, "registration_incomplete", "d3").is_empty());

    // The next day d3 reaches them.
    app.clock.set(at("2026-11-28T10:00:00+01:00"));
    app.run_once().await;
    let rows = app.outbox().await;
    let d3: Vec<String> = rows_of(&rows, "registration_incomplete", "d3")
        .iter()
        .filter(|r| r.state == "sent")
        .map(|r| r.user_id.clone())
        .collect();
    assert_eq!(d3, morning);
}

/// `run --once` on an hour whose quota is already used up (`rate.per_hour`): it claims nothing,
/// sends nothing, and says why, like the run that used the hour up (`deliver_due_with`'s early
/// return when the hour has no room at the start of a pass).
async fn a_run_on_a_full_hour_says_so_and_claims_nothing(app: TestApp) {
    app.import_examples().await;
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let env = [
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
        ("AVVISI__RATE__PER_HOUR", "10"),
        ("AVVISI__DELIVERY__CONCURRENCY", "1"),
        ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000"),
    ];
    let run = ["run", "--once", "--now", "2026-11-23T10:00:00+01:00"];
    let full = "the relay's hourly quota (rate.per_hour, all processes together) is used up";
    let first = app.avvisi(&run, &env);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{out}");
    assert!(out.contains(full), "the run that used the hour up: {out}");
    assert_eq!(sink.received().len(), 10);
    let before = app.outbox().await;
    // The email that met the full hour waits until the hour has room (about an hour on, when
    // its first minute leaves the sliding hour), not due again at once (`Throttle::wait`).
    let now = at("2026-11-23T10:00:00+01:00").timestamp();
    assert!(
        before
            .iter()
            .any(|r| r.state == "pending" && r.next_attempt_at > now + 30 * 60),
        "{before:?}"
    );

    let second = app.avvisi(&run, &env);
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{out}");
    assert!(out.contains(full), "a run on the full hour: {out}");
    assert_eq!(sink.received().len(), 10, "nothing more sent");
    // Nothing claimed or attempted: the outbox is as the first run left it.
    assert_eq!(app.outbox().await, before);
    assert!(before
        .iter()
        .filter(|r| r.state == "pending")
        .all(|r| r.attempts == 0));
}

/// The recovery advice's d1 goes only inside a digest (`only_in_digest`): on the d1 day U0023,
/// who has nothing else due, gets nothing (the row is skipped with the reason), while U0007 gets
/// it as a section of the email about the unvalidated address (`store::digest::skip_alone`).
async fn a_step_sent_only_in_a_digest_never_goes_alone(app: TestApp) {
    app.import_examples().await;
    for day in [
        "2026-11-23T10:00:00+01:00",
        "2026-11-27T10:00:00+01:00",
        "2026-11-29T10:00:00+01:00",
    ] {
        app.clock.set(at(day));
        app.run_once().await;
    }
    let rows = app.outbox().await;
    let row = |user: &str, campaign: &str| {
        rows.iter()
            .find(|r| r.user_id == user && r.campaign.starts_with(campaign) && r.step == "d1")
            .unwrap_or_else(|| panic!("{user} {campaign} d1: {rows:?}"))
    };
    stays_home(&rows, row("U0023", "credential_recovery_advice"));
    let section = row("U0007", "credential_recovery_advice");
    let lead = row("U0007", "email_unvalidated");
    assert_eq!(
        (section.state.as_str(), lead.state.as_str()),
        ("sent", "sent")
    );
    assert_eq!(section.message_id, lead.message_id, "one email");
}

/// A section sent only inside a digest stays home when its digest loses the rest after it was
/// planned: on the d1 day U0007's recovery advice travels inside the email about the
/// unvalidated address; that campaign is cancelled before the send, the advice is left alone
/// (`store::digest::repair_orphans`), and it is skipped with the reason of a step sent only in a
/// digest, not sent by itself (`deliver::compose`, `EmailError::OnlyInDigest`).
async fn a_section_sent_only_in_a_digest_stays_home_when_the_rest_is_withdrawn(app: TestApp) {
    app.import_examples().await;
    for day in ["2026-11-23T10:00:00+01:00", "2026-11-27T10:00:00+01:00"] {
        app.clock.set(at(day));
        app.run_once().await;
    }
    app.clock.set(at("2026-11-29T10:00:00+01:00"));
    app.plan().await;
    let planned = app.outbox().await;
    let row = |rows: &[OutboxRow], campaign: &str| {
        rows.iter()
            .find(|r| r.user_id == "U0007" && r.campaign.starts_with(campaign) && r.step == "d1")
            .cloned()
            .unwrap_or_else(|| panic!("U0007 {campaign} d1: {rows:?}"))
    };
    let (section, lead) = (
        row(&planned, "credential_recovery_advice"),
        row(&planned, "email_unvalidated"),
    );
    assert_eq!(section.message_id, lead.message_id, "planned as one email");
    let out = app.avvisi(&["campaign", "cancel", &lead.campaign], &[]);
    assert!(out.status.success(), "{out:?}");

    app.deliver().await;
    let rows = app.outbox().await;
    stays_home(&rows, &row(&rows, "credential_recovery_advice"));
}

/// `section`, of a step sent only inside a digest, was skipped for that reason, and its person
/// got nothing of that step.
fn stays_home(rows: &[OutboxRow], section: &OutboxRow) {
    assert_eq!(section.state, "skipped", "{section:?}");
    assert!(
        section
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("sent only inside a daily digest"),
        "{section:?}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.user_id == section.user_id && r.step == section.step)
            .all(|r| r.state != "sent"),
        "{rows:?}"
    );
}

/// `retry --failed` tells the operator how many messages it put back: the campaign's failed
/// messages still before their deadline, and none (`0`, in text and JSON) once every deadline
/// has passed, though there are failed messages left (`RetryReport::retried`).
async fn retry_says_how_many_it_put_back(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let sink = SmtpSink::start_with(vec![Fault::RejectMail {
        code: 550,
        text: "5.7.1 relaying temporarily denied".into(),
    }])
    .await;
    app.smtp(&sink.url(), &[("AVVISI__DELIVERY__BREAKER_THRESHOLD", "0")])
        .deliver()
        .await;
    let rows = app.outbox().await;
    assert!(rows.iter().all(|r| r.state == "failed"), "{rows:?}");
    let one = "registration_incomplete-2026-11-30";
    let of_one = rows.iter().filter(|r| r.campaign == one).count();
    assert!(of_one > 1, "{rows:?}");

    let now = "2026-11-23T11:00:00+01:00";
    let out = app.avvisi(&["retry", "--failed", "--campaign", one, "--now", now], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{of_one} message(s) back in the queue")),
        "{text}"
    );
    let back = app.outbox().await;
    assert_eq!(
        back.iter().filter(|r| r.state == "pending").count(),
        of_one,
        "{back:?}"
    );

    // Every deadline has passed: failed messages match, none comes back, and it says 0.
    let late = "2026-12-01T09:00:00+01:00";
    let out = app.avvisi(&["retry", "--failed", "--json", "--now", late], &[]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["retried"].as_u64(), Some(0), "{report}");
    let past: u64 = report["per_campaign"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["past_deadline"].as_u64().unwrap())
        .sum();
    assert_eq!(past as usize, rows.len() - of_one, "{report}");
    assert_eq!(app.outbox().await, back, "nothing changed");
}

/// A digest of three loses its lead (U0015 to U0018: the email about the unvalidated address
/// leads the code regeneration's and the recovery advice's first notices, and that campaign is
/// cancelled): the two sections left still travel together, as one email under the digest's
/// Message-ID, never as two emails carrying the same one (`store::digest::repair_orphans`).
async fn a_digest_whose_lead_is_cancelled_still_goes_as_one_email(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let planned = app.outbox().await;
    let lead = planned
        .iter()
        .find(|r| r.campaign.starts_with("email_unvalidated"))
        .unwrap()
        .campaign
        .clone();
    let users = ["U0015", "U0016", "U0017", "U0018"];
    for u in users {
        let theirs: Vec<&OutboxRow> = planned.iter().filter(|r| r.user_id == u).collect();
        assert_eq!(theirs.len(), 3, "{theirs:?}");
        assert!(theirs.iter().all(|r| r.message_id == theirs[0].message_id));
    }
    let out = app.avvisi(&["campaign", "cancel", &lead], &[]);
    assert!(out.status.success(), "{out:?}");

    let sink = SmtpSink::start().await;
    app.smtp(&sink.url(), &[]).deliver().await;
    let rows = app.outbox().await;
    let received = sink.received();
    for u in users {
        let theirs: Vec<&OutboxRow> = rows
            .iter()
            .filter(|r| r.user_id == u && r.campaign != lead)
            .collect();
        assert_eq!(theirs.len(), 2, "{theirs:?}");
        assert!(theirs.iter().all(|r| r.state == "sent"), "{theirs:?}");
        let id = &theirs[0].message_id;
        assert_eq!(&theirs[1].message_id, id, "{theirs:?}");
        let emails = received
            .iter()
            .filter(|m| m.header("Message-ID").as_ref() == Some(id))
            .count();
        assert_eq!(emails, 1, "{u}: one email for both sections");
    }
}

/// A pass whose rows are written already grouped still merges them with a row left pending by
/// an earlier pass the same day: the first notices planned at 06:30 wait for the sending hours,
/// the maintenance notice is planned at 08:30, and each person gets one email that morning, the
/// notice and their reminders under one Message-ID (`store::digest::any_pending`, which sends
/// `plan::pass` to the general merge instead of grouping at insert).
async fn a_later_pass_merges_with_what_an_earlier_one_left_pending(app: TestApp) {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = app.smtp(
        &url,
        &[
            ("AVVISI__CALENDAR__CAMPAIGN_START", "2026-11-23T06:00:00"),
            (
                "AVVISI__CALENDAR__MAINTENANCE_NOTICE_AT",
                "2026-11-23T08:15:00",
            ),
        ],
    );
    app.clock.set(at("2026-11-23T06:00:00+01:00"));
    app.import_examples().await;

    // 06:30: the first notices are planned; the sending hours hold them.
    app.clock.set(at("2026-11-23T06:30:00+01:00"));
    app.run_once().await;
    assert_eq!(sink.received().len(), 0, "nothing sent before 08:00");
    let early = app.outbox().await;
    assert!(!early.is_empty());
    assert!(early.iter().all(|r| r.state == "pending"), "{early:?}");
    assert!(early
        .iter()
        .all(|r| !r.campaign.starts_with("maintenance_notice")));

    // 08:30: the notice is planned, then everything due goes out.
    app.clock.set(at("2026-11-23T08:30:00+01:00"));
    app.run_once().await;
    let rows = app.outbox().await;
    let received = sink.received();
    let mut ids_of: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for r in &rows {
        assert_eq!(r.state, "sent", "{r:?}");
        ids_of
            .entry(r.user_id.as_str())
            .or_default()
            .insert(r.message_id.as_str());
    }
    // People with a first notice pending from 06:30 and the notice: the case's point.
    let both = early
        .iter()
        .map(|r| r.user_id.as_str())
        .filter(|u| {
            rows.iter()
                .any(|r| r.user_id == *u && r.campaign.starts_with("maintenance_notice"))
        })
        .count();
    assert!(both > 0, "{rows:?}");
    for (user, ids) in &ids_of {
        assert_eq!(ids.len(), 1, "{user}: one email that day, got {ids:?}");
        let id = ids.iter().next().unwrap();
        let emails = received
            .iter()
            .filter(|m| m.header("Message-ID").as_deref() == Some(*id))
            .count();
        assert_eq!(emails, 1, "{user}: {id} sent once");
    }
    assert_eq!(received.len(), ids_of.len(), "one email per person");
}

/// A pass leases the hour's slots a few at a time (`rate.per_hour` 700: 7 at once) and gives
/// back those it did not use at its end: after 30 emails the sliding hour holds 30, not the 35
/// leased, or the rest of the hour would send 5 fewer than the relay allows
/// (`Quota::give_back`).
async fn the_hour_counts_what_was_sent_not_what_was_leased(app: TestApp) {
    let sink = SmtpSink::start().await;
    let app = app.smtp(&sink.url(), &[("AVVISI__RATE__PER_HOUR", "700")]);
    app.import_examples().await;
    app.run_once().await;
    assert_eq!(sink.received().len(), 30);
    let used = avvisi::deliver::quota::used_last_hour(&app.db)
        .await
        .unwrap();
    assert_eq!(used, 30, "the hour counts the emails sent");
}

/// The hour is a sliding hour counted per minute in `rate_usage`, shared by every process: with
/// 9 emails counted 50 minutes ago and 1000 counted 60 minutes ago (out of the hour),
/// `rate.per_hour` 10 lets one email through; the next waits until the minute of the 9 leaves
/// the hour (about 10 minutes on), and `status`'s count is the hour's (`quota::grant`,
/// `quota::used_last_hour`).
async fn the_hour_slides_minute_by_minute(app: TestApp) {
    use avvisi::deliver::quota::used_last_hour;
    // Slots are counted on the machine's clock (the database's on PostgreSQL, on this machine
    // too), never on the calendar's.
    let minute = chrono::Utc::now().timestamp_millis().div_euclid(60_000);
    for (slot, used) in [(minute - 60, 1000_i64), (minute - 50, 9)] {
        sqlx::query("INSERT INTO rate_usage (scope, slot, used) VALUES ('hour', $1, $2)")
            .bind(slot)
            .bind(used)
            .execute(app.db.pool())
            .await
            .unwrap();
    }
    assert_eq!(used_last_hour(&app.db).await.unwrap(), 9);
    let sink = SmtpSink::start().await;
    let app = app.smtp(
        &sink.url(),
        &[
            ("AVVISI__RATE__PER_HOUR", "10"),
            ("AVVISI__DELIVERY__CONCURRENCY", "1"),
        ],
    );
    app.import_examples().await;
    let (_, delivery) = app.run_once().await;
    assert!(delivery.throttled);
    assert_eq!(sink.received().len(), 1, "room for one email in the hour");
    let now = app.clock.now().timestamp();
    let waits: Vec<i64> = app
        .outbox()
        .await
        .iter()
        .filter(|r| r.state == "pending" && r.next_attempt_at > now)
        .map(|r| r.next_attempt_at - now)
        .collect();
    assert!(
        !waits.is_empty() && waits.iter().all(|s| (7 * 60..=11 * 60).contains(s)),
        "the email that met the full hour is due when the 9 leave it: {waits:?} s"
    );
    assert_eq!(used_last_hour(&app.db).await.unwrap(), 10);
}

/// `status` names the message first in the queue and when the next ones fall due, counted
/// exactly for a short queue: after a planning at 10:00 with nothing sent, the first row planned
/// and 47 messages due at 10:00, not "at least" (`store::queue::oldest_pending`,
/// `next_attempts`).
async fn status_names_the_first_of_the_queue_and_the_next_attempts(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 47);
    let out = app.avvisi(&["status", "--json"], &[]);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let oldest = &status["oldest_pending"];
    assert_eq!(
        oldest["campaign"].as_str(),
        Some(rows[0].campaign.as_str()),
        "{status}"
    );
    assert_eq!(
        oldest["step"].as_str(),
        Some(rows[0].step.as_str()),
        "{status}"
    );
    let next = status["next_attempts"].as_array().expect("next_attempts");
    assert_eq!(next.len(), 1, "{status}");
    assert_eq!(next[0]["messages"].as_u64(), Some(47), "{status}");
    assert_eq!(next[0]["at_least"].as_bool(), Some(false), "{status}");
    let due = chrono::DateTime::parse_from_rfc3339(next[0]["at"].as_str().unwrap()).unwrap();
    assert_eq!(due.timestamp(), app.clock.now().timestamp(), "{status}");

    let out = app.avvisi(&["status"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "oldest pending: {}/{}",
            rows[0].campaign, rows[0].step
        )),
        "{text}"
    );
    assert!(text.contains("  47 message(s)"), "{text}");
}

/// An error without a reply (a connection dropped in the middle of DATA): `status` groups it
/// under no code (`null` in JSON, `-` in text), never under a code 0 that no relay sent
/// (`store::queue::errors_by_reply`).
async fn an_error_without_a_reply_has_no_code_in_status(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let sink = SmtpSink::start_with(vec![Fault::DropInData { times: 100 }]).await;
    app.smtp(&sink.url(), &[("AVVISI__DELIVERY__CONCURRENCY", "1")])
        .deliver()
        .await;
    let tried = app.outbox().await;
    assert!(
        tried
            .iter()
            .any(|r| r.attempts == 1 && r.smtp_code.is_none()),
        "{tried:?}"
    );
    let out = app.avvisi(&["status", "--json"], &[]);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = status["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{status}");
    assert!(errors[0]["code"].is_null(), "{status}");
    assert!(errors[0]["retrying"].as_u64().unwrap() >= 1, "{status}");
}

/// The sends per hour that the status page's chart and the report draw: the hour the emails
/// went out in, with every message sent in it (`store::queue::sends_per_hour`).
async fn the_sends_are_counted_in_the_hour_they_went_out(app: TestApp) {
    app.import_examples().await;
    app.run_once().await;
    let (first, last, sent): (i64, i64, i64) = sqlx::query_as(
        "SELECT MIN(sent_at), MAX(sent_at), COUNT(*) FROM outbox WHERE state = 'sent'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert!(sent > 0);
    let hour = |t: i64| chrono::DateTime::from_timestamp(t - t.rem_euclid(3600), 0).unwrap();
    assert_eq!(hour(first), hour(last), "one hour of sending");
    let since = hour(first) - chrono::Duration::hours(3);
    let until = hour(first) + chrono::Duration::hours(3);
    let per_hour = avvisi::store::queue::sends_per_hour(&app.db, None, since, until)
        .await
        .unwrap();
    let shown: Vec<(chrono::DateTime<chrono::Utc>, u64)> =
        per_hour.iter().map(|h| (h.hour, h.sent)).collect();
    assert_eq!(shown, vec![(hour(first), sent as u64)]);
}

/// A queue longer than `status` reads (`NEXT_ATTEMPTS_READ`, 10,000 rows): 10,001 first notices
/// due at 10:00 are shown as "at least 10000", the count stopped at the bound, not as exactly
/// 10,000 (`store::queue::next_attempts`).
async fn status_says_at_least_when_the_queue_is_longer_than_it_reads(app: TestApp) {
    let read = avvisi::store::queue::NEXT_ATTEMPTS_READ as usize;
    crate::crash::import_users(&app, read + 1).await;
    app.plan().await;
    let out = app.avvisi(&["status", "--json"], &[]);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let next = status["next_attempts"].as_array().expect("next_attempts");
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0]["messages"].as_u64(), Some(read as u64), "{next:?}");
    assert_eq!(next[0]["at_least"].as_bool(), Some(true), "{next:?}");
}

/// `explain` against a campaign for one province (the maintenance notice to Bologna, running):
/// U0007 (Turin) fails the province, U0008 (Bologna, enabled) is in the audience, U0040
/// (Bologna, disabled) fails only for being disabled: the province is named only for whoever
/// is outside it (`Audience::in_provinces`).
async fn explain_names_the_province_only_for_those_outside_it(app: TestApp) {
    use avvisi::audience::Audience;
    use avvisi::campaign::{self, NewCampaign};
    app.import_examples().await;
    let templates = avvisi::render::templates::TemplateSet::load(&app.settings.templates_dir)
        .expect("templates")
        .messages();
    let new = NewCampaign {
        name: "notice-bo".into(),
        audience: Audience::EnabledUsers,
        template: "maintenance_notice".into(),
        filter_province: Some("BO".into()),
        send_at: None,
        expires_at: at("2026-11-30T23:59:59+01:00"),
        transactional: None,
    };
    campaign::create(&app.db, &new, &templates, app.clock.now())
        .await
        .expect("create campaign");
    // Launched (the approval is another case's): running, not yet planned.
    sqlx::query("UPDATE campaigns SET state = 'running' WHERE name = 'notice-bo'")
        .execute(app.db.pool())
        .await
        .unwrap();
    let explain = |user: &str| {
        let out = app.avvisi(
            &["explain", user, "--now", "2026-11-23T10:00:00+01:00"],
            &[],
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let outside = explain("U0007");
    assert!(outside.contains("the campaign is for BO"), "{outside}");
    for user in ["U0008", "U0040"] {
        let text = explain(user);
        assert!(text.contains("notice-bo"), "{text}");
        assert!(!text.contains("the campaign is for BO"), "{user}: {text}");
    }
}

on_both_backends!(
    a_step_sent_only_in_a_digest_never_goes_alone,
    a_section_sent_only_in_a_digest_stays_home_when_the_rest_is_withdrawn,
    an_older_step_still_pending_is_skipped_as_superseded,
    one_campaign_reaches_a_person_once_a_day,
    a_run_on_a_full_hour_says_so_and_claims_nothing,
    retry_says_how_many_it_put_back,
    a_digest_whose_lead_is_cancelled_still_goes_as_one_email,
    a_later_pass_merges_with_what_an_earlier_one_left_pending,
    the_hour_counts_what_was_sent_not_what_was_leased,
    the_hour_slides_minute_by_minute,
    status_names_the_first_of_the_queue_and_the_next_attempts,
    an_error_without_a_reply_has_no_code_in_status,
    the_sends_are_counted_in_the_hour_they_went_out,
    status_says_at_least_when_the_queue_is_longer_than_it_reads,
    explain_names_the_province_only_for_those_outside_it,
    a_one_off_planned_with_the_first_notices_is_an_email_of_its_own,
    a_one_off_planned_before_the_first_notices_leads_no_one,
    a_message_late_for_its_claim_goes_back_as_it_was,
    the_relay_replies_are_counted_by_class_and_only_replies,
    two_workers_of_one_process_never_send_one_email_twice,
    a_stopping_daemon_says_quit_to_the_relay,
    an_email_late_for_its_claim_is_no_reply_of_the_relay,
    the_retries_are_spread_by_the_jitter,
);

/// An operator's one-off campaign is an email of its own (`campaigns.digest` = 0), even when it
/// is planned in the same pass as the reminders' first notices: none of its rows follows a
/// reminder's row, no reminder's row follows it, none shares a Message-ID (`plan::pass`: only
/// the campaigns that merge look up a lead, and only they lead). The pass that groups as it
/// writes plans the campaign expiring last first: the one-off goes after the reminders when it
/// expires before their deadline (this case), before them when it expires after
/// ([`a_one_off_planned_before_the_first_notices_leads_no_one`]).
async fn a_one_off_planned_with_the_first_notices_is_an_email_of_its_own(app: TestApp) {
    one_off_planned_with_the_first_notices(app, true).await;
}

/// [`a_one_off_planned_with_the_first_notices_is_an_email_of_its_own`], the one-off expiring a
/// week after today (the default on the real clock), after the reminders' deadline: planned
/// first, it must not become the lead that their rows follow.
async fn a_one_off_planned_before_the_first_notices_leads_no_one(app: TestApp) {
    one_off_planned_with_the_first_notices(app, false).await;
}

async fn one_off_planned_with_the_first_notices(app: TestApp, expires_before_deadline: bool) {
    app.import_examples().await;
    let args: [&[&str]; 3] = [
        &[
            "campaign",
            "create",
            "avviso-tutti",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
        ],
        &["campaign", "approve", "avviso-tutti", "--yes"],
        &["campaign", "launch", "avviso-tutti"],
    ];
    for (i, a) in args.iter().enumerate() {
        // The approval is another person's.
        let env: &[(&str, &str)] = if i == 1 {
            &[("USER", "second-person")]
        } else {
            &[]
        };
        let out = app.avvisi(a, env);
        assert!(out.status.success(), "{a:?}: {out:?}");
    }
    // Created on the real clock, it expires a week after today, after the reminders' deadline
    // (30 November): planned first. Its expiry set before the deadline orders it after them.
    if expires_before_deadline {
        sqlx::query("UPDATE campaigns SET expires_at = $1 WHERE name = 'avviso-tutti'")
            .bind(at("2026-11-29T12:00:00+01:00").timestamp())
            .execute(app.db.pool())
            .await
            .unwrap();
    }
    app.plan().await;
    let rows = app.outbox().await;
    let oneoff: Vec<&OutboxRow> = rows
        .iter()
        .filter(|r| r.campaign == "avviso-tutti")
        .collect();
    let reminders: Vec<&OutboxRow> = rows
        .iter()
        .filter(|r| r.campaign != "avviso-tutti")
        .collect();
    assert!(!oneoff.is_empty() && !reminders.is_empty(), "{rows:?}");
    // Planned together: people with both a reminder and the one-off.
    let both = oneoff
        .iter()
        .filter(|o| reminders.iter().any(|r| r.user_id == o.user_id))
        .count();
    assert!(both > 0, "no one has both: {rows:?}");
    for o in &oneoff {
        assert!(
            reminders.iter().all(|r| r.message_id != o.message_id),
            "the one-off's row of {} shares a reminder's Message-ID: {o:?}",
            o.user_id
        );
    }
    let sink = SmtpSink::start().await;
    app.smtp(&sink.url(), &[]).deliver().await;
    let ids: std::collections::HashSet<String> = app
        .outbox()
        .await
        .into_iter()
        .filter(|r| r.campaign == "avviso-tutti" && r.state == "sent")
        .map(|r| r.message_id)
        .collect();
    assert_eq!(
        ids.len(),
        oneoff.len(),
        "each person's one-off is its own email"
    );
}

/// A relay too slow for the lease (half a second per email, one connection, the whole queue
/// in one claim of 10 s): once three quarters of the claim are gone no email starts, and what
/// is left goes back to the queue as it was: pending, due at once, no attempt counted, no
/// error (`Worker::send`, the `Late` arm). Being late for its claim is no fault of the message:
/// it must not wait a retry's backoff nor spend one of its attempts.
async fn a_message_late_for_its_claim_goes_back_as_it_was(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let sink = SmtpSink::start_with(vec![Fault::SlowData { millis: 500 }]).await;
    let slow = app.smtp(
        &sink.url(),
        &[
            ("AVVISI__DELIVERY__CONCURRENCY", "1"),
            ("AVVISI__DELIVERY__BATCH_SIZE", "100"),
            ("AVVISI__DELIVERY__LEASE_SECONDS", "10"),
        ],
    );
    let report = slow.deliver().await;
    let rows = app.outbox().await;
    let sent = rows.iter().filter(|r| r.state == "sent").count();
    // 30 emails at half a second each do not fit in 7.5 s.
    assert!(sent > 0 && sent < rows.len(), "{sent} sent: {rows:?}");
    let now = app.clock.now().timestamp();
    for r in rows.iter().filter(|r| r.state != "sent") {
        crate::helpers::as_planned(r);
        assert!(r.next_attempt_at <= now, "due at once: {r:?}");
    }
    let retrying: u64 = report.per_campaign.values().map(|t| t.retrying).sum();
    assert_eq!(retrying, 0, "{report:?}");
    assert!(!report.relay_unreachable, "{report:?}");
}

/// `avvisi_relay_replies_total` counts the relay's replies to messages by class, one per
/// attempt like the send durations, as `docs/operations.md` describes it (an alert watches its
/// 5xx): a 550 under 5xx, a 451 under 4xx, the emails accepted under 2xx. An email the hourly
/// quota held back never reached the relay: it counts under no class, not even `none` (a
/// connection lost or timed out), and takes no time (`Worker::send`: which outcomes are timed).
async fn the_relay_replies_are_counted_by_class_and_only_replies(app: TestApp) {
    use crate::observe::{daemon, http_get, metric, stop};
    use std::time::Duration;
    app.import_examples().await;
    let sink = SmtpSink::start_with(vec![
        Fault::RejectRcpt {
            address: "nicolo.manco@libero.it".into(),
            code: 550,
            text: "5.7.1 rejected by policy".into(),
        },
        Fault::RejectRcpt {
            address: "ilaria.dangelo@gmail.com".into(),
            code: 451,
            text: "4.3.0 try again later".into(),
        },
    ])
    .await;
    let log = app.dir.path().join("replies.log");
    let mut env = testkit::smtp::env(&sink.url());
    env.push(("AVVISI__RATE__PER_HOUR", "20".into()));
    let now = "2026-11-23T10:00:00+01:00";
    let (child, address) = daemon(&app, now, &env, &log).await;
    // The email that met the full hour waits for the hour to have room.
    let later = at(now).timestamp() + 30 * 60;
    testkit::process::wait_until("the hour used up", Duration::from_secs(60), || {
        let app = app.clone();
        async move {
            app.outbox()
                .await
                .iter()
                .any(|r| r.state == "pending" && r.next_attempt_at > later)
        }
    })
    .await;
    let (code, text) = http_get(&address, "/metrics").expect("the metrics");
    stop(child).await;
    assert_eq!(code, 200);
    let rows = app.outbox().await;
    // Emails (Message-IDs) whose last reply had this code.
    let emails_with = |code: i64| {
        rows.iter()
            .filter(|r| r.smtp_code == Some(code))
            .map(|r| r.message_id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as f64
    };
    let (refused, deferred) = (emails_with(550), emails_with(451));
    assert_eq!((refused, deferred), (1.0, 1.0), "{rows:?}");
    let class = |c: &str| replies_of_class(&text, c);
    let accepted = sink.received().len() as f64;
    assert_eq!(
        (class("2xx"), class("4xx"), class("5xx"), class("none")),
        (accepted, deferred, refused, 0.0),
        "{text}"
    );
    assert_eq!(
        accepted + deferred + refused,
        20.0,
        "the hour's 20 attempts"
    );
    assert_eq!(
        metric(&text, "avvisi_send_duration_seconds_count", &[]),
        Some(20.0),
        "{text}"
    );
}

/// Two workers of one process (several daemons in one process, as in the tests and the
/// benchmarks, each under its own name) deliver together at one instant, in small batches:
/// neither takes the other's claim for its own, and no email goes out twice
/// (`Worker::with_id`: at one instant and one batch number, the name is all that tells their
/// claim tokens apart).
async fn two_workers_of_one_process_never_send_one_email_twice(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let sink = SmtpSink::start_with(vec![Fault::SlowData { millis: 20 }]).await;
    let smtp = app.smtp(
        &sink.url(),
        &[
            ("AVVISI__DELIVERY__BATCH_SIZE", "4"),
            ("AVVISI__DELIVERY__CONCURRENCY", "1"),
        ],
    );
    let (one, two) = (smtp.worker().with_id("one"), smtp.worker().with_id("two"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (a, b) = tokio::join!(one.deliver_due(&shutdown), two.deliver_due(&shutdown));
    let sent = |r: &avvisi::deliver::DeliveryReport| -> u64 {
        r.per_campaign.values().map(|t| t.sent).sum()
    };
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(sent(&a) > 0 && sent(&b) > 0, "both sent: {a:?} {b:?}");
    let mut ids: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.header("Message-ID").unwrap())
        .collect();
    let received = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(received, ids.len(), "an email went out twice");
    assert_eq!(ids.len(), 30, "one email per person");
    let rows = app.outbox().await;
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    assert_eq!(sent(&a) + sent(&b), 47, "each row recorded once");
}

/// A daemon that stops says QUIT on the connections it kept open to the relay, rather than
/// leave the relay to time them out (`Worker::close`, called once nothing more is sent).
async fn a_stopping_daemon_says_quit_to_the_relay(app: TestApp) {
    use crate::observe::{daemon, stop};
    use std::time::Duration;
    app.import_examples().await;
    let sink = SmtpSink::start().await;
    let log = app.dir.path().join("quit.log");
    let env = testkit::smtp::env(&sink.url());
    let (child, _) = daemon(&app, "2026-11-23T10:00:00+01:00", &env, &log).await;
    sink.wait_for(30, Duration::from_secs(60)).await;
    let quits = || {
        sink.commands()
            .iter()
            .filter(|c| c.starts_with("QUIT"))
            .count()
    };
    stop(child).await;
    assert!(quits() >= 1, "{:?}", sink.commands());
}

/// An email late for its claim (a relay too slow for the lease, see
/// [`a_message_late_for_its_claim_goes_back_as_it_was`]) never reached the relay: the daemon
/// counts it under no class of `avvisi_relay_replies_total`, not under `none` (a connection
/// lost or timed out, which an operator reads as the relay's trouble), and takes no time for
/// it. Each of the 30 emails counts once, under 2xx, when it is sent (`Worker::send`).
async fn an_email_late_for_its_claim_is_no_reply_of_the_relay(app: TestApp) {
    use crate::observe::{daemon, http_get, metric, stop};
    use std::time::Duration;
    app.import_examples().await;
    let sink = SmtpSink::start_with(vec![Fault::SlowData { millis: 500 }]).await;
    let log = app.dir.path().join("late.log");
    let mut env = testkit::smtp::env(&sink.url());
    env.extend([
        ("AVVISI__DELIVERY__CONCURRENCY", "1".to_string()),
        ("AVVISI__DELIVERY__BATCH_SIZE", "100".into()),
        ("AVVISI__DELIVERY__LEASE_SECONDS", "10".into()),
    ]);
    let (child, address) = daemon(&app, "2026-11-23T10:00:00+01:00", &env, &log).await;
    sink.wait_for(30, Duration::from_secs(90)).await;
    // The last outcome recorded, so its reply counted.
    testkit::process::wait_until("every row sent", Duration::from_secs(30), || {
        let app = app.clone();
        async move { app.outbox().await.iter().all(|r| r.state == "sent") }
    })
    .await;
    let (_, text) = http_get(&address, "/metrics").expect("the metrics");
    stop(child).await;
    let log = std::fs::read_to_string(app.dir.path().join("late.log")).unwrap();
    // An email was late (logged as handed back, or with the mutant as a failed send).
    assert!(
        log.contains("claim about to lapse") || log.contains("its claim was about to lapse"),
        "no email was late: {log}"
    );
    let class = |c: &str| replies_of_class(&text, c);
    assert_eq!((class("2xx"), class("none")), (30.0, 0.0), "{text}");
    assert_eq!(
        metric(&text, "avvisi_send_duration_seconds_count", &[]),
        Some(30.0),
        "{text}"
    );
}

/// A relay answering 451 to every email at once: the retries are spread over the +-25% of the
/// backoff (45 to 75 s for the first), not bunched at one instant where they would meet the
/// relay's trouble again all together (`Worker::after_failure`: the base wait times the jitter).
async fn the_retries_are_spread_by_the_jitter(app: TestApp) {
    app.import_examples().await;
    app.plan().await;
    let sink = SmtpSink::start_with(vec![Fault::RejectAllData {
        code: 451,
        text: "4.3.0 try again later".into(),
    }])
    .await;
    let app = app.smtp(&sink.url(), &[("AVVISI__DELIVERY__BREAKER_THRESHOLD", "0")]);
    let now = app.clock.now().timestamp();
    app.deliver().await;
    // One wait per email (the rows of a digest share theirs).
    let waits: std::collections::BTreeMap<String, i64> = app
        .outbox()
        .await
        .into_iter()
        .map(|r| (r.message_id, r.next_attempt_at - now))
        .collect();
    assert_eq!(waits.len(), 30);
    let (min, max) = (
        *waits.values().min().unwrap(),
        *waits.values().max().unwrap(),
    );
    assert!(
        (45..=75).contains(&min) && (45..=75).contains(&max),
        "{waits:?}"
    );
    // 30 draws over 30 s: all of them within 10 s of each other has odds below 1e-12.
    assert!(max - min >= 10, "bunched: {waits:?}");
}

/// The relay's replies of `class` (`2xx`, `4xx`, `5xx`, `none`) counted in the metrics `text`.
fn replies_of_class(text: &str, class: &str) -> f64 {
    crate::observe::metric(
        text,
        "avvisi_relay_replies_total",
        &[&format!("class=\"{class}\"")],
    )
    .unwrap_or(0.0)
}
