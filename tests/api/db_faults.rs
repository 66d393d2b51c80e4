//! Database faults: a SQLite file locked by another process, PostgreSQL connections killed in
//! the middle of a campaign.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::helpers::{repo_path, spawn_app, Backend, TestApp};

/// Runs the binary on `app`'s database with `args` and `env`, to the end.
fn avvisi(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avvisi"));
    cmd.current_dir(repo_path("."))
        .args(args)
        .env("AVVISI__DATABASE__URL", &app.database_url)
        .env("AVVISI__DELIVERY__DIR", app.outbox_dir())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run avvisi")
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
    assert_eq!(sent, 47, "the run after the lock does the work");
    app.teardown().await;
}
