//! The relay's quota (`rate.per_hour`, `rate.per_second`) is one for every process on the
//! database, and a restart does not forget how much of the hour was used.

use std::process::{Output, Stdio};
use std::time::Duration;

use crate::crash::{import_users, NOW};
use crate::helpers::{TestApp, PROCESS_TIMEOUT};
use crate::on_both_backends;
use testkit::process::Proc;
use testkit::smtp_sink::SmtpSink;

on_both_backends!(
    three_processes_send_one_hourly_quota,
    a_restart_remembers_the_hour,
    three_processes_keep_one_pace,
    a_lease_lapses_with_its_minute,
);

/// `avvisi run --once` processes on `app`'s database, started together; their outputs, each
/// checked to have succeeded.
fn run_together(app: &TestApp, n: usize, env: &[(&str, String)]) -> Vec<Output> {
    let children: Vec<Proc> = (0..n)
        .map(|_| {
            let mut cmd = app.command(&["run", "--once", "--now", NOW]);
            cmd.env("AVVISI__IMPORT__MAX_AGE_HOURS", "100000")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            Proc::spawn(&mut cmd, PROCESS_TIMEOUT)
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.output(PROCESS_TIMEOUT))
        .collect();
    for out in &outs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    outs
}

fn relay_env(sink: &SmtpSink, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = testkit::smtp::env(&sink.url());
    env.extend([
        ("AVVISI__DELIVERY__CONCURRENCY", "4".to_string()),
        // Small batches: the processes take turns at the queue, rather than the first one
        // claiming it all.
        ("AVVISI__DELIVERY__BATCH_SIZE", "5".to_string()),
    ]);
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

fn sent(rows: &[crate::helpers::OutboxRow]) -> usize {
    rows.iter().filter(|r| r.state == "sent").count()
}

async fn three_processes_send_one_hourly_quota(app: TestApp) {
    import_users(&app, 120).await;
    let sink = SmtpSink::start().await;
    let env = relay_env(&sink, &[("AVVISI__RATE__PER_HOUR", "30")]);
    let outs = run_together(&app, 3, &env);
    // The processes have ended: a message the sink accepted was accepted before its sender
    // read the reply, so nothing more can arrive.
    assert_eq!(sink.received().len(), 30, "one quota for the three of them");
    let rows = app.outbox().await;
    assert_eq!(sent(&rows), 30);
    assert!(
        rows.iter()
            .filter(|r| r.state != "sent")
            .all(|r| r.state == "pending" && r.attempts == 0),
        "the rest waits, no attempt spent"
    );
    // Every process that met the full hour says so.
    let said = outs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("hourly quota"))
        .count();
    assert!(said >= 1, "{outs:?}");
}

async fn a_restart_remembers_the_hour(app: TestApp) {
    import_users(&app, 40).await;
    let sink = SmtpSink::start().await;
    // A lease is 1% of the quota: 1000 leases 10 slots at a time.
    let env = relay_env(&sink, &[("AVVISI__RATE__PER_HOUR", "1000")]);
    run_together(&app, 1, &env);
    assert_eq!(sink.wait_for(40, Duration::from_secs(10)).await.len(), 40);
    // Slots leased and not used went back: the hour holds what was sent, no more.
    assert_eq!(
        avvisi::deliver::quota::used_last_hour(&app.db)
            .await
            .unwrap(),
        40
    );

    // A new process with a quota the hour has already used: it sends nothing.
    import_users(&app, 60).await;
    let env = relay_env(&sink, &[("AVVISI__RATE__PER_HOUR", "40")]);
    run_together(&app, 1, &env);
    assert_eq!(sink.received().len(), 40, "the restart remembered the hour");
    assert_eq!(sent(&app.outbox().await), 40);
    let status = app.avvisi(&["status"], &[("AVVISI__RATE__PER_HOUR", "40")]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("hourly quota: 40 of 40 used in the last hour"),
        "{status}"
    );
}

async fn three_processes_keep_one_pace(app: TestApp) {
    import_users(&app, 60).await;
    let sink = SmtpSink::start().await;
    let env = relay_env(&sink, &[("AVVISI__RATE__PER_SECOND", "10")]);
    run_together(&app, 3, &env);
    let received = sink.wait_for(60, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 60);
    let mut at: Vec<f64> = received
        .iter()
        .map(|r| (r.at - received[0].at).as_secs_f64())
        .collect();
    at.sort_by(f64::total_cmp);
    // 60 messages at 10/s for all three together: six seconds of the database's clock, so
    // more than 4 s from the first to the last (each alone at 10/s, they would take 2 s); and
    // no second-long stretch holds more than two seconds' worth, the most that the end of one
    // second and the start of the next can hold.
    assert!(*at.last().unwrap() >= 3.9, "{at:?}");
    for (i, t) in at.iter().enumerate() {
        let in_window = at[i..].iter().filter(|o| **o < t + 1.0).count();
        assert!(
            in_window <= 20,
            "{in_window} messages within a second from {t}"
        );
    }
}

/// A lease is counted in the minute it was taken and used only within it: a pass that crosses
/// a minute's end gives back what its lease had left in the old minute and counts the rest of
/// its messages in the new one. So the sliding hour holds exactly what was sent, each message
/// in the minute it went out (`quota::Shared::take`: the lease's end, and the lapsed lease
/// given back). The pass is started a few seconds before a minute ends, on the clock the
/// quota counts on (this machine's, or the database's on the same machine).
async fn a_lease_lapses_with_its_minute(app: TestApp) {
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    import_users(&app, 80).await;
    let sink = SmtpSink::start().await;
    // A lease is 60 (1% of the hour); 10 a second make the pass last 8 s.
    let env = relay_env(
        &sink,
        &[
            ("AVVISI__RATE__PER_HOUR", "6000"),
            ("AVVISI__RATE__PER_SECOND", "10"),
            // One batch and one connection: one lease held from the first message to the
            // last, and at most one message between its count and its arrival.
            ("AVVISI__DELIVERY__BATCH_SIZE", "100"),
            ("AVVISI__DELIVERY__CONCURRENCY", "1"),
        ],
    );
    let ms_now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    // Five seconds before a minute ends: time enough for the process to start and plan, and
    // a start up to seven seconds late still leaves messages on both sides.
    let into_minute = ms_now().rem_euclid(60_000);
    let wait = (55_000 - into_minute).rem_euclid(60_000);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let (wall, mono) = (ms_now(), Instant::now());
    let boundary = (wall.div_euclid(60_000) + 1) * 60_000;
    run_together(&app, 1, &env);
    let received = sink.wait_for(80, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 80);
    assert_eq!(sent(&app.outbox().await), 80);
    let at_ms = |r: &testkit::smtp_sink::Received| wall + (r.at - mono).as_millis() as i64;
    let after = received.iter().filter(|r| at_ms(r) >= boundary).count();
    assert!(
        (5..=75).contains(&after),
        "the pass should cross the minute's end with messages on both sides: {after} of 80 after it"
    );

    let used: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT slot, CAST(used AS BIGINT) FROM rate_usage WHERE scope = 'hour' AND used > 0 ORDER BY slot",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let total: i64 = used.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 80, "the hour holds what was sent, no more: {used:?}");
    let new_minute = boundary / 60_000;
    let in_new = used
        .iter()
        .find(|(slot, _)| *slot == new_minute)
        .map_or(0, |(_, n)| *n);
    // A message is counted before it goes: the one counted as the minute ended may reach the
    // sink just after it (one connection: one message at a time, give or take a retry).
    assert!(
        (after as i64 - 2..=after as i64).contains(&in_new),
        "{after} messages went out in the new minute, {in_new} counted in it: {used:?}"
    );
}
