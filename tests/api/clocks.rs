//! Several daemons, several clocks (PostgreSQL): leases are set and compared on the database's
//! clock, so a daemon whose clock runs ahead of another's never takes its live claims. The
//! calendar still runs on each daemon's own clock (`--now`).

use std::time::{Duration, Instant};

use rand::Rng;

use crate::crash::{
    duplicates_per_kill, import_users, log_dir, smtp_env, wait_settled, Ending, Lives, Sent, NOW,
};
use crate::helpers::{at, spawn_app, spawn_app_with, Backend, TestApp};
use testkit::process::{eventually, wait_until};
use testkit::smtp_sink::{Fault, Received, SmtpSink};

/// Two daemons on one PostgreSQL database, one with its clock twice the lease ahead of the
/// other's, the one ahead killed (SIGKILL) and restarted again and again. Each daemon has a
/// relay of its own, so every message received tells which daemon sent it: a message is only
/// ever sent again after the process that sent it was killed, at most `delivery.concurrency`
/// per kill; none is taken from the daemon that is never killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_clock_runs_ahead_takes_no_live_claim() {
    const USERS: usize = 5_000;
    const KILLS: usize = 4;
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let started = Instant::now();
    let mut rng = rand::thread_rng();
    let (relay_behind, relay_ahead) = (SmtpSink::start().await, SmtpSink::start().await);
    import_users(&app, USERS).await;
    let (env_behind, env_ahead) = (smtp_env(&relay_behind), smtp_env(&relay_ahead));
    let setting = |key: &str| -> u64 {
        let (_, value) = env_ahead.iter().find(|(k, _)| *k == key).unwrap();
        value.parse().unwrap()
    };
    let (lease, concurrency) = (
        setting("AVVISI__DELIVERY__LEASE_SECONDS"),
        setting("AVVISI__DELIVERY__CONCURRENCY") as usize,
    );
    let ahead = (at(NOW) + chrono::Duration::seconds(2 * lease as i64)).to_rfc3339();
    let logs = log_dir("clocks");

    let behind = app.spawn(
        &["daemon", "--now", NOW],
        &env_behind,
        &logs.join("behind.log"),
    );
    // The daemon behind plans (rows due at its own time) and is sending when the other starts.
    while relay_behind.count() < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the daemon behind sent nothing: see {}",
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lives = Lives::default();
    let next = |k: usize| {
        let log = logs.join(format!("ahead-{k}.log"));
        app.spawn(&["daemon", "--now", &ahead], &env_ahead, &log)
    };
    for k in 0..KILLS {
        let daemon = next(k);
        // A random moment once it is sending, while the other daemon's claims are live (or a
        // few seconds on, should the campaign be over by then).
        let (before, start) = (relay_ahead.count(), Instant::now());
        while relay_ahead.count() == before && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1000))).await;
        daemon.kill();
        lives.ended(&relay_ahead, Ending::Killed(k));
    }
    let last = next(KILLS);
    let counts = wait_settled(&app, Duration::from_secs(180)).await;
    assert_eq!(last.terminate().await, Some(0));
    assert_eq!(behind.terminate().await, Some(0));
    lives.ended(&relay_ahead, Ending::Ended);

    assert_eq!(
        counts.get("sent").copied(),
        Some(USERS as i64),
        "{counts:?}"
    );
    let (from_behind, from_ahead) = (relay_behind.received(), relay_ahead.received());
    let id = |r: &Received| r.header("Message-ID").unwrap();
    let mut all: Vec<Sent> = from_behind
        .iter()
        .map(|r| (id(r), r, Ending::Ended))
        .collect();
    all.extend(
        from_ahead
            .iter()
            .map(|r| (id(r), r, lives.of(r.connection))),
    );
    let ids: std::collections::BTreeSet<&str> = all.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids.len(), USERS, "every message arrived");
    let per_kill = duplicates_per_kill(&all, KILLS);
    eprintln!(
        "clocks {}s apart: {USERS} messages ({} by the daemon behind, {} by the one ahead), \
         {KILLS} SIGKILLs of the one ahead, {} duplicates (per kill {per_kill:?}, at most \
         {concurrency} each), {:.1}s",
        2 * lease,
        from_behind.len(),
        from_ahead.len(),
        all.len() - USERS,
        started.elapsed().as_secs_f64()
    );
    let per_kill = per_kill.unwrap_or_else(|why| panic!("{why}: see {}", logs.display()));
    assert!(
        per_kill.iter().all(|n| *n <= concurrency),
        "more than {concurrency} duplicates for one kill: {per_kill:?}"
    );
    app.teardown().await;
}

/// A relay so slow that a claimed batch cannot be sent within its lease: the daemon that claimed
/// it starts no message once three quarters of the lease are gone, and hands the rest back; a
/// second daemon taking over the rows whose lease ran out never sends one the first is still
/// sending. No message arrives twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_starts_once_its_claim_is_about_to_lapse() {
    const USERS: usize = 60;
    let slow = SmtpSink::start_with(vec![Fault::SlowData { millis: 400 }]).await;
    let fast = SmtpSink::start().await;
    let (slow_url, fast_url) = (slow.url(), fast.url());
    let common = [
        ("AVVISI__DELIVERY__CONCURRENCY", "1"),
        ("AVVISI__DELIVERY__BATCH_SIZE", "30"),
        ("AVVISI__DELIVERY__LEASE_SECONDS", "10"),
    ];
    let with = |url: &str| {
        testkit::smtp::with(url, &common)
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let slow_settings = with(&slow_url);
    let refs: Vec<(&str, &str)> = slow_settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let Some(app) = spawn_app_with(Backend::Postgres, &refs).await else {
        return;
    };
    let fast_settings = with(&fast_url);
    let refs: Vec<(&str, &str)> = fast_settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let other = app.with_settings(&refs);
    import_users(&app, USERS).await;
    app.plan().await;

    let started = Instant::now();
    let first = tokio::spawn({
        let app = app.clone();
        async move { deliver_until_settled(&app).await }
    });
    // Once the first claims' lease is over on the database's clock, rows still claimed are
    // free for the taking.
    let pool = app.db.pool();
    let lease_until: i64 = eventually("the first claims", Duration::from_secs(30), || async {
        sqlx::query_scalar("SELECT MAX(lease_until) FROM outbox WHERE state = 'sending'")
            .fetch_one(pool)
            .await
            .unwrap()
    })
    .await;
    wait_until(
        "the end of the first lease on the database's clock",
        Duration::from_secs(30),
        || async {
            let now: i64 = sqlx::query_scalar(
                "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT)",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            now > lease_until
        },
    )
    .await;
    let second = deliver_until_settled(&other).await;
    let first = first.await.unwrap();
    let took = started.elapsed();

    let (from_slow, from_fast) = (slow.received(), fast.received());
    let mut ids: Vec<String> = from_slow
        .iter()
        .chain(&from_fast)
        .map(|r| r.header("Message-ID").unwrap())
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    eprintln!(
        "slow relay: {} sent by the first daemon, {} by the second, {total} received, {:.1}s",
        from_slow.len(),
        from_fast.len(),
        took.as_secs_f64()
    );
    assert_eq!(ids.len(), USERS, "every message arrived");
    assert_eq!(total, USERS, "no message twice");
    assert_eq!(
        first + second,
        USERS as u64,
        "every message recorded as sent once"
    );
    app.teardown().await;
}

/// Delivers as a daemon would, pass after pass, until nothing is pending or claimed; returns how
/// many messages this worker recorded as sent. (A pass ends when nothing is due: rows handed
/// back meanwhile wait for the next one.)
async fn deliver_until_settled(app: &TestApp) -> u64 {
    let started = Instant::now();
    let mut sent = 0;
    loop {
        let report = app.deliver().await;
        sent += report.per_campaign.values().map(|t| t.sent).sum::<u64>();
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')")
                .fetch_one(app.db.pool())
                .await
                .unwrap();
        if open == 0 {
            return sent;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{open} messages left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
