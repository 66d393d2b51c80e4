//! The `avvisi` binary as operators run it: the README's main command, bad configuration, bad
//! snapshots, status.

use std::process::{Command, Output};

use crate::helpers::{repo_path, Backend, TestApp};
use crate::on_both_backends;

fn avvisi(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avvisi"));
    cmd.current_dir(repo_path("."))
        .args(args)
        .env("AVVISI__DATABASE__URL", &app.database_url)
        .env("AVVISI__DELIVERY__DIR", app.outbox_dir())
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run avvisi")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn readme_main_command_writes_the_reminders(app: TestApp) {
    let args = [
        "run",
        "--once",
        "--import",
        "examples/users.csv",
        "--now",
        "2026-11-23T10:00:00+01:00",
    ];
    let out = avvisi(&app, &args, &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("registration_incomplete-2026-11-30"),
        "{text}"
    );
    assert_eq!(app.eml_files().len(), 47);
    // Running it again sends nothing new.
    let again = avvisi(&app, &args, &[]);
    assert!(again.status.success());
    assert_eq!(app.eml_files().len(), 47);
    let status = avvisi(&app, &["status"], &[]);
    let text = stdout(&status);
    assert!(
        text.contains("credential_recovery_advice-2026-11-30"),
        "{text}"
    );
    assert!(text.contains("oldest pending: none"), "{text}");
}

async fn bad_snapshot_is_reported_and_nothing_is_written(app: TestApp) {
    let file = app.dir.path().join("bad.csv");
    std::fs::write(
        &file,
        "user_id,fiscal_code,first_name,last_name,email,institutional_email,registration,enabled,pending_email,code_regeneration\n\
         U1,RSSMRA85T10A562S,Mario,Rossi,mario.rossi@libero.it,,completed,true,,none\n\
         U2,RSSMRA85T10A562S,Anna,Verdi,anna.verdi@@libero.it,,completed,true,,none\n",
    )
    .unwrap();
    let out = avvisi(&app, &["import", "users", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 3, column email"), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
}

async fn bad_configuration_stops_before_anything(app: TestApp) {
    let out = avvisi(
        &app,
        &["status"],
        &[("AVVISI__CALENDAR__DEADLINE", "30 novembre")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("calendar.deadline") && err.contains("30 novembre"),
        "{err}"
    );
}

on_both_backends!(
    readme_main_command_writes_the_reminders,
    bad_snapshot_is_reported_and_nothing_is_written,
    bad_configuration_stops_before_anything,
);

#[test]
fn every_command_has_help_with_an_example() {
    for args in [
        &["run", "--help"][..],
        &["import", "users", "--help"],
        &["status", "--help"],
        &["migrate", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_avvisi"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Example"),
            "{args:?}"
        );
    }
    let _ = Backend::Sqlite;
}

/// The main errors an operator meets, word for word: what failed, where, and why, each cause
/// once (a cause quoted by the message above it is not repeated).
#[test]
fn main_errors_say_what_failed_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| -> (Option<i32>, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_avvisi"));
        cmd.current_dir(dir.path())
            .args(args)
            .env(
                "AVVISI__DATABASE__URL",
                format!("sqlite://{}/avvisi.db", dir.path().display()),
            )
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), stderr(&out).trim_end().to_string())
    };
    let missing = dir.path().join("nonexistent.csv");
    let missing = missing.to_str().unwrap();
    assert_eq!(
        run(&["import", "users", missing], &[]),
        (
            Some(1),
            format!("error: importing users: cannot open {missing}: No such file or directory (os error 2)")
        )
    );

    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    assert_eq!(
        run(&["import", "users", empty], &[]),
        (
            Some(1),
            format!("error: importing users: {empty}: the file is empty: expected a header row with the column names")
        )
    );

    assert_eq!(
        run(&["status"], &[("AVVISI__DELIVERY__CONCURRENCY", "four")]),
        (
            Some(2),
            "error: configuration: invalid type: string \"four\", expected an integer for key `delivery.concurrency` in the environment".to_string()
        )
    );

    // A PostgreSQL server that is not there: the reason at once, the password masked.
    assert_eq!(
        run(
            &["status"],
            &[(
                "AVVISI__DATABASE__URL",
                "postgres://avvisi:hunter2@127.0.0.1:1/avvisi"
            )]
        ),
        (
            Some(1),
            "error: opening the database: cannot open database postgres://avvisi:***@127.0.0.1:1/avvisi: error communicating with database: Connection refused (os error 111)".to_string()
        )
    );
}
