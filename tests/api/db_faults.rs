//! Database faults: a SQLite file locked by another process, PostgreSQL connections killed in
//! the middle of a campaign.

use std::process::Output;
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::crash::{import_users, smtp_env, wait_settled, NOW};
use crate::helpers::{spawn_app, Backend, TestApp};
use testkit::smtp_sink::SmtpSink;

/// Runs the binary on `app`'s database with `args` and `env`, to the end.
fn avvisi(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    app.avvisi(args, env)
}

/// Another process holds the SQLite file in a write transaction: avvisi waits for it up to
/// `database.busy_timeout_seconds`, then fails with a message that names the file and says what
/// to do; the file is intact, and once it is released the same command does the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_is_waited_for_then_named_and_left_intact() {
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    app.import_examples().await;
    let file = app.dir.path().join("avvisi.db").display().to_string();
    // A connection of its own is another holder for SQLite, as another process would be.
    let mut holder = sqlx::AnyConnection::connect(&app.database_url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();

    let now = ["--now", "2026-11-23T10:00:00+01:00"];
    let timeout = [("AVVISI__DATABASE__BUSY_TIMEOUT_SECONDS", "1")];
    for command in [&["run", "--once"][..], &["daemon"][..]] {
        let args: Vec<&str> = command.iter().chain(&now).copied().collect();
        let started = Instant::now();
        let out = avvisi(&app, &args, &timeout);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{command:?} succeeded on a locked file"
        );
        for words in [
            file.as_str(),
            "locked by another process",
            "waited 1s",
            "database.busy_timeout_seconds",
            "run the command again",
        ] {
            assert!(
                stderr.contains(words),
                "{command:?}: no {words:?} in: {stderr}"
            );
        }
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(15),
            "{command:?} gave up after {took:?}, with a busy timeout of 1s"
        );
        eprintln!("{command:?} on a locked file: {took:?}: {stderr}");
    }

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    holder.close().await.unwrap();
    let out = avvisi(&app, &["run", "--once", now[0], now[1]], &timeout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = app
        .outbox()
        .await
        .iter()
        .filter(|r| r.state == "sent")
        .count();
    assert_eq!(
        sent, 47,
        "the run after the lock does the work (47 rows, 30 emails)"
    );
    app.teardown().await;
}

/// Every connection to the test database killed by the server (`pg_terminate_backend`), three
/// times in the middle of a campaign, with the daemon running: the daemon logs it, waits,
/// resumes on new connections, loses nothing, and sends again only what was in flight at a kill
/// (at most `delivery.concurrency` each time). Restarting the whole server would test the same
/// path and disturb every other user of a shared machine's PostgreSQL: not done here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_mid_campaign_lose_nothing() {
    const USERS: usize = 3_000;
    const KILLS: usize = 3;
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let sink = SmtpSink::start().await;
    import_users(&app, USERS).await;
    let env = smtp_env(&sink);
    let concurrency: usize = env
        .iter()
        .find(|(k, _)| *k == "AVVISI__DELIVERY__CONCURRENCY")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let log = crate::crash::log_dir("db-faults").join("daemon.log");
    let daemon = app.spawn(&["daemon", "--now", NOW], &env, &log);
    let database = app.database_url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::AnyConnection::connect(&app.database_url)
        .await
        .unwrap();
    let started = Instant::now();
    for k in 1..=KILLS {
        let target = USERS * (k * 2 - 1) / (KILLS * 2 + 1);
        while sink.count() < target {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "stalled at {}",
                sink.count()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(killed > 0, "no connection to kill");
        eprintln!("killed {killed} connections at {} messages", sink.count());
    }
    let counts = wait_settled(&app, Duration::from_secs(120)).await;
    assert!(
        daemon.try_wait().is_none(),
        "the daemon exited: see {}",
        log.display()
    );
    assert_eq!(daemon.terminate().await, Some(0), "a clean stop");

    assert_eq!(
        counts.get("sent").copied(),
        Some(USERS as i64),
        "{counts:?}"
    );
    let received = sink.received();
    let distinct = testkit::smtp_sink::distinct_message_ids(&received);
    assert_eq!(distinct, USERS, "every message arrived");
    let duplicates = received.len() - distinct;
    let text = std::fs::read_to_string(&log).unwrap();
    let failed = text.matches("delivery pass failed").count();
    eprintln!(
        "PostgreSQL connections killed {KILLS} times: {USERS} messages, {duplicates} duplicates \
         (at most {}), {failed} failed passes logged, {:.1}s",
        concurrency * KILLS,
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed > 0,
        "the daemon did not log the lost connections:\n{text}"
    );
    assert!(
        duplicates <= concurrency * KILLS,
        "{duplicates} duplicates for {KILLS} kills of {concurrency} connections"
    );
    app.teardown().await;
}
