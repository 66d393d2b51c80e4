//! The outbox's counts (`outbox_counts`, kept by triggers in the statement that changes a row):
//! what `status --json` and `/metrics` show equals a full count of the outbox after every kind of
//! change the product makes: planning with digests, cancellation (and the digests it breaks),
//! sends, refusals, retries, a crash with messages on the wire, `retry --failed`, suppression and
//! expiry at the deadline.

use std::collections::BTreeMap;

use chrono::Duration;
use sqlx::Row;

use crate::helpers::{at, TestApp};
use crate::on_both_backends;
use testkit::smtp_sink::{Fault, SmtpSink};
use testkit::synthetic::{user, write_snapshot, Population};

/// (campaign, state) -> messages, and campaign -> suppressed, counted over the whole outbox.
type Full = (BTreeMap<(String, String), u64>, BTreeMap<String, u64>);

async fn full_count(app: &TestApp) -> Full {
    let mut by_state = BTreeMap::new();
    let mut suppressed = BTreeMap::new();
    let rows = sqlx::query(
        "SELECT c.name, o.state, COUNT(*) AS n, \
            SUM(CASE WHEN o.state = 'skipped' AND o.reason = 'suppressed' THEN 1 ELSE 0 END) AS s \
         FROM outbox o JOIN campaigns c ON c.id = o.campaign_id GROUP BY c.name, o.state",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    for r in rows {
        let name: String = r.get("name");
        let n: i64 = r.get("n");
        let s: i64 = r.get("s");
        by_state.insert((name.clone(), r.get("state")), n as u64);
        *suppressed.entry(name).or_insert(0) += s as u64;
    }
    (by_state, suppressed)
}

/// The errors by reply code counted over the whole outbox: code -> (failed, retrying).
async fn full_errors(app: &TestApp) -> BTreeMap<Option<i64>, (u64, u64)> {
    let rows = sqlx::query(
        "SELECT smtp_code, state, COUNT(*) AS n FROM outbox \
         WHERE reason IS NOT NULL AND state IN ('failed', 'pending') GROUP BY smtp_code, state",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let mut out: BTreeMap<Option<i64>, (u64, u64)> = BTreeMap::new();
    for r in rows {
        let code: Option<i64> = r.get("smtp_code");
        let state: String = r.get("state");
        let n = r.get::<i64, _>("n") as u64;
        let e = out.entry(code.filter(|c| *c > 0)).or_default();
        if state == "failed" {
            e.0 += n
        } else {
            e.1 += n
        }
    }
    out
}

/// `status --json` and `/metrics`' `avvisi_messages` against the full count.
async fn counts_match(app: &TestApp, when: &str) {
    let (full, full_suppressed) = full_count(app).await;
    let out = app.avvisi(&["status", "--json"], &[]);
    assert!(out.status.success(), "{when}: status: {out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut shown = BTreeMap::new();
    let mut shown_suppressed = BTreeMap::new();
    for c in status["campaigns"].as_array().unwrap() {
        let name = c["campaign"].as_str().unwrap().to_string();
        for state in ["pending", "sending", "sent", "skipped", "failed", "expired"] {
            let n = c["counts"][state].as_u64().unwrap();
            if n > 0 {
                shown.insert((name.clone(), state.to_string()), n);
            }
        }
        let s = c["counts"]["suppressed"].as_u64().unwrap();
        if s > 0 || full_suppressed.contains_key(&name) {
            shown_suppressed.insert(name, s);
        }
    }
    assert_eq!(shown, full, "{when}: status --json against a full count");
    assert_eq!(
        shown_suppressed, full_suppressed,
        "{when}: suppressed, status --json against a full count"
    );
    let mut errors = BTreeMap::new();
    for e in status["errors"].as_array().unwrap() {
        let code = e["code"].as_i64();
        errors.insert(
            code,
            (
                e["failed"].as_u64().unwrap(),
                e["retrying"].as_u64().unwrap(),
            ),
        );
    }
    assert_eq!(errors, full_errors(app).await, "{when}: errors by reply");

    avvisi::observe::metrics::scrape(&app.db, app.clock.now())
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT c.name, k.state, CAST(SUM(k.n) AS BIGINT) AS n FROM outbox_counts k \
         JOIN campaigns c ON c.id = k.campaign_id GROUP BY c.name, k.state",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let gauges: BTreeMap<(String, String), u64> = rows
        .iter()
        .map(|r| {
            let n: i64 = r.get("n");
            ((r.get("name"), r.get("state")), n as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        gauges, full,
        "{when}: the gauges' query against a full count"
    );
}

async fn campaign_named(app: &TestApp, prefix: &str) -> String {
    sqlx::query_scalar("SELECT name FROM campaigns WHERE name LIKE $1")
        .bind(format!("{prefix}%"))
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

/// Imports `n` users of the mission population.
async fn import_mission(app: &TestApp, n: u64) {
    let mut csv = Vec::new();
    write_snapshot(&mut csv, n, Population::Mission).unwrap();
    app.import_csv(std::str::from_utf8(&csv).unwrap(), Default::default())
        .await
        .unwrap();
}

/// Plans the first notice (23 November), which puts one user in ten in a digest.
async fn plan_the_first_notice(app: &TestApp) {
    app.clock.set(at("2026-11-23T10:00:00+01:00"));
    app.plan().await;
    let merged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE digest_of IS NOT NULL")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert!(merged > 0, "the population has digests");
}

/// Checks the digests a first pass wrote, from the rows alone: a person with several pending
/// rows has one email, led by the row of the campaign planned first (all the reminders expire
/// together, so the oldest), which points to itself; the others point to it and carry its
/// Message-ID; a person with one pending row has no digest. Both ways of finding the lead on
/// SQLite answer for it: computed when nobody is suppressed, looked up otherwise.
async fn digests_well_formed(app: &TestApp) -> usize {
    let rows = sqlx::query(
        "SELECT o.id, o.campaign_id, o.user_id, o.message_id, o.digest_of FROM outbox o \
         JOIN campaigns c ON c.id = o.campaign_id WHERE c.digest = 1 AND o.state = 'pending' \
         ORDER BY o.user_id, o.campaign_id",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    type Row4 = (i64, i64, String, Option<i64>);
    let mut people: BTreeMap<String, Vec<Row4>> = BTreeMap::new();
    for r in &rows {
        people.entry(r.get("user_id")).or_default().push((
            r.get("id"),
            r.get("campaign_id"),
            r.get("message_id"),
            r.get("digest_of"),
        ));
    }
    let mut digests = 0;
    for (user, rows) in &people {
        if rows.len() == 1 {
            assert_eq!(
                rows[0].3, None,
                "{user}: a lone row leads no digest: {rows:?}"
            );
            continue;
        }
        digests += 1;
        let (lead, _, lead_message_id, lead_of) = &rows[0];
        assert_eq!(
            lead_of,
            &Some(*lead),
            "{user}: the first campaign's row leads: {rows:?}"
        );
        for (_, _, message_id, of) in &rows[1..] {
            assert_eq!(
                of,
                &Some(*lead),
                "{user}: a section follows its lead: {rows:?}"
            );
            assert_eq!(message_id, lead_message_id, "{user}: one email: {rows:?}");
        }
    }
    digests
}

/// Puts the address of the mission population's user `i` on the suppression list, as an operator.
fn suppress(app: &TestApp, i: u64) {
    let email = user(i, Population::Mission).email;
    let out = app.avvisi(&["suppress", "add", &email, "--reason", "asked"], &[]);
    assert!(out.status.success(), "{out:?}");
}

async fn counts_stay_exact_through_every_change(app: TestApp) {
    import_mission(&app, 600).await;
    // The first notice: N + 15% rows, one user in ten in a digest.
    plan_the_first_notice(&app).await;
    assert!(digests_well_formed(&app).await > 0);
    counts_match(&app, "after planning with digests").await;

    // Cancelling a campaign whose rows lead or follow digests.
    let code = campaign_named(&app, "code_regeneration_pending").await;
    let out = app.avvisi(&["campaign", "cancel", &code], &[]);
    assert!(out.status.success(), "{out:?}");
    counts_match(&app, "after a cancellation").await;

    // A pass through a relay that refuses some recipients for good, some for now, some after DATA.
    let refuse = |i: u64, code: u16, text: &str| Fault::RejectRcpt {
        address: user(i, Population::Mission).email,
        code,
        text: text.into(),
    };
    let sink = SmtpSink::start_with(vec![
        refuse(0, 550, "5.1.1 no such user"),
        refuse(1, 550, "5.1.1 no such user"),
        refuse(8, 451, "4.3.0 try later"),
        refuse(9, 451, "4.3.0 try later"),
        refuse(10, 452, "4.2.2 mailbox full"),
        Fault::RejectData {
            address: user(11, Population::Mission).email,
            code: 554,
            text: "5.6.0 content refused".into(),
        },
    ])
    .await;
    let smtp = app.smtp(&sink.url(), &[]);
    // A crashed process left some messages on the wire (claimed, never recorded).
    let on_the_wire = sqlx::query(
        "UPDATE outbox SET state = 'sending', claim_token = 'crashed', lease_until = 0 \
         WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' ORDER BY id DESC LIMIT 7)",
    )
    .execute(app.db.pool())
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(on_the_wire, 7);
    counts_match(&app, "with messages left on the wire by a crash").await;
    smtp.deliver().await;
    counts_match(&app, "after a pass with refusals").await;

    // The retries come due; the leases of the crashed process are over.
    app.clock.advance(Duration::hours(2));
    smtp.deliver().await;
    counts_match(&app, "after the retries and the crash's messages").await;
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'failed'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert!(failed > 0, "the refusals failed messages");

    // `retry --failed` puts failures back; suppression skips at the next step.
    let out = app.avvisi(&["retry", "--failed", "--reply", "554"], &[]);
    assert!(out.status.success(), "{out:?}");
    counts_match(&app, "after retry --failed").await;
    suppress(&app, 12);
    app.clock.set(at("2026-11-27T09:30:00+01:00"));
    app.plan().await;
    counts_match(&app, "after a later step with a suppressed address").await;

    // The deadline: what is still pending expires.
    app.clock.set(at("2026-12-01T00:30:00+01:00"));
    app.plan().await;
    let expired: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'expired'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert!(expired > 0, "something expired at the deadline");
    counts_match(&app, "after expiry at the deadline").await;
}

on_both_backends!(counts_stay_exact_through_every_change);

/// A campaign's first planning on SQLite is counted once at its end, not row by row
/// (`store::queue::BulkInsert`): its rows pending with no reason one way, the others (skipped
/// because the address is suppressed) by their whole key. Both kinds in one first planning, with
/// digests, and the counts equal a full count.
async fn a_first_planning_with_suppressed_addresses_is_counted_exactly(app: TestApp) {
    import_mission(&app, 300).await;
    for i in 0..40 {
        suppress(&app, i);
    }
    plan_the_first_notice(&app).await;
    let (_, suppressed) = full_count(&app).await;
    assert!(
        suppressed.values().sum::<u64>() > 0,
        "some rows skipped as suppressed: {suppressed:?}"
    );
    assert!(digests_well_formed(&app).await > 0);
    counts_match(&app, "after a first planning with suppressed addresses").await;
}

on_both_backends!(a_first_planning_with_suppressed_addresses_is_counted_exactly);
