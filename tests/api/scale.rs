//! Several daemons on one PostgreSQL database: each message is claimed by one daemon only, and
//! the claims of a daemon that died go back to the queue after the lease.

use std::time::{Duration, Instant};

use avvisi::import::ImportOptions;
use tokio_util::sync::CancellationToken;

use crate::helpers::{at, spawn_app_with, Backend, TestApp};
use testkit::smtp_sink::{Fault, SmtpSink};

/// `n` enabled users registered with a private address: all in credential_recovery_advice.
fn synthetic_snapshot(n: usize) -> String {
    let mut csv = String::from(
        "user_id,fiscal_code,first_name,last_name,email,institutional_email,registration,enabled,pending_email,code_regeneration\n",
    );
    for i in 0..n {
        csv.push_str(&format!(
            "S{i:06},RSSMRA85T10A562S,Nicolò,D'Angelo,utente{i}@libero.it,,completed,true,,none\n"
        ));
    }
    csv
}

fn start(app: &TestApp, stop: &CancellationToken) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(avvisi::daemon::run(
        app.db.clone(),
        app.settings.clone(),
        app.clock.clone(),
        stop.clone(),
        avvisi::daemon::full_check(app.settings.clone()),
    ))
}

async fn postgres_app(extra: &[(&str, &str)]) -> Option<TestApp> {
    spawn_app_with(Backend::Postgres, extra).await
}

/// Three daemons on one database, each with a relay of its own (so every message received tells
/// which daemon sent it): every message is sent exactly once, and each daemon sends a share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_deliver_10000_messages_each_exactly_once() {
    let fast = [
        ("AVVISI__DELIVERY__CONCURRENCY", "4"),
        ("AVVISI__DELIVERY__BATCH_SIZE", "100"),
        ("AVVISI__DAEMON__PLANNER_CRON", "* * * * * *"),
        ("AVVISI__DAEMON__POLL_SECONDS", "1"),
    ];
    let Some(app) = postgres_app(&fast).await else {
        return;
    };
    app.import_csv(&synthetic_snapshot(10_000), ImportOptions::default())
        .await
        .unwrap();
    let mut sinks = Vec::new();
    for _ in 0..3 {
        sinks.push(SmtpSink::start().await);
    }
    let stop = CancellationToken::new();
    let daemons: Vec<_> = sinks
        .iter()
        .map(|sink| {
            let url = sink.url();
            start(&app.smtp(&url, &fast), &stop)
        })
        .collect();
    let started = Instant::now();
    while sinks.iter().map(|s| s.count()).sum::<usize>() < 10_000 {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "not all sent within 4 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped: whatever was still to arrive (a second copy) has arrived now.
    stop.cancel();
    for d in daemons {
        d.await.unwrap().unwrap();
    }
    let shares: Vec<usize> = sinks.iter().map(|s| s.count()).collect();
    assert_eq!(
        shares.iter().sum::<usize>(),
        10_000,
        "no message twice: {shares:?}"
    );
    assert!(
        shares.iter().all(|n| *n > 0),
        "each daemon sends: {shares:?}"
    );
    let received: Vec<_> = sinks.iter().flat_map(|s| s.received()).collect();
    assert_eq!(testkit::smtp_sink::distinct_message_ids(&received), 10_000);
    let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(sent, 10_000);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_daemons_claims_are_delivered_by_the_others_after_the_lease() {
    let slow = SmtpSink::start_with(vec![Fault::SlowData { millis: 300 }]).await;
    let url = slow.url();
    let Some(app) = postgres_app(&testkit::smtp::with(
        &url,
        &[
            ("AVVISI__DELIVERY__LEASE_SECONDS", "10"),
            ("AVVISI__DAEMON__PLANNER_CRON", "* * * * * *"),
            ("AVVISI__DAEMON__POLL_SECONDS", "1"),
        ],
    ))
    .await
    else {
        return;
    };
    app.import_examples().await;

    // A daemon claims a batch, starts sending slowly, and is killed (SIGKILL: no hand-back).
    let doomed = app.spawn(
        &["daemon", "--now", "2026-11-23T10:00:00+01:00"],
        &testkit::smtp::with(
            &url,
            &[
                ("AVVISI__DELIVERY__LEASE_SECONDS", "10"),
                ("AVVISI__DELIVERY__CONCURRENCY", "2"),
                ("AVVISI__DELIVERY__BATCH_SIZE", "20"),
            ],
        ),
        &app.dir.path().join("doomed.log"),
    );
    slow.wait_for(3, Duration::from_secs(20)).await;
    doomed.kill();
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'sending'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert!(held > 0, "the killed daemon held claims");

    // Two healthy daemons, a minute later by the calendar. The killed daemon's claims are theirs
    // once its lease is over on the database's clock: real seconds, whatever the calendar says.
    app.clock.set(at("2026-11-23T10:01:00+01:00"));
    let stop = CancellationToken::new();
    let daemons: Vec<_> = (0..2).map(|_| start(&app, &stop)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
        if sent == 47 {
            break;
        }
        assert!(Instant::now() < deadline, "only {sent} of 47 sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    for d in daemons {
        d.await.unwrap().unwrap();
    }
    // 47 rows, 30 emails: one per person (the daily digest).
    let received = slow.received();
    assert_eq!(
        testkit::smtp_sink::distinct_message_ids(&received),
        30,
        "every email arrived"
    );
    // The only duplicates are messages that were on the wire at the kill (at most one per
    // connection, 2 here: a message counts as on the wire until its outcome is committed),
    // with the same Message-ID as the original.
    assert!(
        received.len() - 30 <= 2,
        "{} duplicates",
        received.len() - 30
    );
    app.teardown().await;
}
