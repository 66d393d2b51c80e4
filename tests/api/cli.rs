//! The `avvisi` binary as operators run it: the README's main command, bad configuration, bad
//! snapshots, status; and run unattended: unknown keys refused, `config show`, logs without
//! colours or personal data, files for their owner only.

use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::{repo_path, Backend, TestApp};
use crate::on_both_backends;
use testkit::smtp_sink::{Fault, SmtpSink};

fn avvisi(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    app.avvisi(args, env)
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
    // 47 reminders to 30 people, one email each (the daily digest).
    assert_eq!(app.eml_files().len(), 30);
    // Running it again sends nothing new, and nothing again: not one file is written anew.
    let written = app.eml_writes();
    let again = avvisi(&app, &args, &[]);
    assert!(again.status.success());
    assert_eq!(app.eml_writes(), written, "an email was written again");
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

/// The queue at a glance for scripts, and the report for a manager, both match the outbox.
async fn status_json_and_the_report_match_the_outbox(app: TestApp) {
    let args = [
        "run",
        "--once",
        "--import",
        "examples/users.csv",
        "--now",
        "2026-11-23T10:00:00+01:00",
    ];
    assert!(avvisi(&app, &args, &[]).status.success());
    let rows = app.outbox().await;

    let out = avvisi(&app, &["status", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let campaigns = status["campaigns"].as_array().unwrap();
    for c in campaigns {
        let name = c["campaign"].as_str().unwrap();
        let sent = rows
            .iter()
            .filter(|r| r.campaign == name && r.state == "sent")
            .count();
        assert_eq!(
            c["counts"]["sent"].as_u64().unwrap() as usize,
            sent,
            "{name}"
        );
        // The maintenance notice waits for its day in the calendar (27 November).
        let expected = match name.starts_with("maintenance_notice") {
            true => "scheduled",
            false => "running",
        };
        assert_eq!(c["state"], expected, "{name}");
    }
    let total: u64 = campaigns
        .iter()
        .map(|c| c["counts"]["sent"].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, rows.len());

    let campaign = "registration_incomplete-2026-11-30";
    let file = app.dir.path().join("report.csv");
    let out = avvisi(
        &app,
        &["report", campaign, "--out", file.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut reader = csv::Reader::from_path(&file).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[..4], ["user_id", "recipient", "step", "state"]);
    let mut reported: Vec<(String, String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[3].to_string(), r[10].to_string())
        })
        .collect();
    reported.sort();
    let mut expected: Vec<(String, String, String)> = rows
        .iter()
        .filter(|r| r.campaign == campaign)
        .map(|r| (r.user_id.clone(), r.state.clone(), r.message_id.clone()))
        .collect();
    expected.sort();
    assert!(!expected.is_empty());
    assert_eq!(reported, expected);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the report holds addresses");
    }

    // explain --json: the user's messages as the outbox has them.
    let user = &rows[0].user_id;
    let out = avvisi(&app, &["explain", user, "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(e["user"]["user_id"], user.as_str());
    let theirs = rows.iter().filter(|r| &r.user_id == user).count();
    assert_eq!(e["messages"].as_array().unwrap().len(), theirs);
    assert_eq!(e["messages"][0]["state"], "sent");
}

on_both_backends!(
    status_json_and_the_report_match_the_outbox,
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
        &["plan", "--help"],
        &["explain", "--help"],
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

/// The binary as a service manager runs it: from the repository (for `examples/`), on a fresh
/// SQLite database and outbox in `dir`, stderr to a pipe, no `NO_COLOR` to hide escape codes.
fn unattended(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avvisi"));
    cmd.current_dir(repo_path("."))
        .args(args)
        .env(
            "AVVISI__DATABASE__URL",
            format!("sqlite://{}/db/avvisi.db", dir.display()),
        )
        .env("AVVISI__DELIVERY__DIR", dir.join("outbox"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run avvisi")
}

/// Every email address and fiscal code in `examples/users.csv`.
fn personal_data_of_the_examples() -> Vec<String> {
    let mut reader = csv::Reader::from_path(repo_path("examples/users.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let columns: Vec<usize> = [
        "fiscal_code",
        "email",
        "institutional_email",
        "pending_email",
    ]
    .iter()
    .map(|name| headers.iter().position(|h| h == *name).unwrap())
    .collect();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        out.extend(
            columns
                .iter()
                .map(|&i| record[i].trim().to_string())
                .filter(|v| !v.is_empty()),
        );
    }
    assert!(out.len() > 80, "{out:?}");
    out
}

fn assert_no_personal_data(text: &str) {
    assert!(
        !text.contains("\x1b["),
        "escape codes in a log on a pipe:\n{text}"
    );
    for item in personal_data_of_the_examples() {
        for form in [item.clone(), item.to_lowercase()] {
            assert!(!text.contains(&form), "{form} is in the log:\n{text}");
        }
    }
}

const README_RUN: [&str; 7] = [
    "run",
    "--once",
    "--import",
    "examples/users.csv",
    "--now",
    "2026-11-23T10:00:00+01:00",
    "-v",
];

#[test]
fn logs_on_a_pipe_have_no_colour_and_name_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = unattended(dir.path(), &README_RUN, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{}{err}", stdout(&out));
    // -v: the debug lines are there, and none of them colours or names anyone.
    assert!(err.contains("DEBUG") && err.contains("planned"), "{err}");
    assert_no_personal_data(&err);
}

/// A relay's refusal often quotes the address (`550 5.1.1 <x@y>: ...`): the log line keeps the
/// user_id and masks the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_reply_quoting_the_address_is_logged_without_it() {
    let faults = personal_data_of_the_examples()
        .into_iter()
        .filter(|item| item.contains('@'))
        .map(|address| Fault::RejectRcpt {
            text: format!("5.1.1 <{address}>: Recipient address rejected"),
            address,
            code: 550,
        })
        .collect();
    let sink = SmtpSink::start_with(faults).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let url = sink.url();
    let out = tokio::task::spawn_blocking(move || {
        unattended(&path, &README_RUN, &testkit::smtp::settings(&url))
    })
    .await
    .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{}{err}", stdout(&out));
    let refused: Vec<&str> = err.lines().filter(|l| l.contains("send failed")).collect();
    // One refusal per email: 30 people.
    assert_eq!(refused.len(), 30, "{err}");
    assert!(
        refused.iter().all(
            |l| l.contains("user_id=U0") && l.contains("<***@***>: Recipient address rejected")
        ),
        "{err}"
    );
    assert_no_personal_data(&err);
    drop(dir);
}

#[test]
fn unknown_configuration_keys_stop_before_anything() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("avvisi.toml");
    std::fs::write(&file, "[smtp]\npasword = \"s3cret\"\n").unwrap();
    let out = unattended(
        dir.path(),
        &["--config", file.to_str().unwrap(), "run", "--once"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: configuration key `smtp.pasword` (in {}) is not known: did you mean `smtp.password`?\n",
            file.display()
        )
    );
    let out = unattended(
        dir.path(),
        &["status"],
        &[("AVVISI__SMPT__URL", "smtp://127.0.0.1:2525")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: configuration key `smpt.url` (from the environment variable AVVISI__SMPT__URL) \
         is not known: did you mean `smtp.url` (AVVISI__SMTP__URL)?\n"
    );
    // Nothing ran: not even the database was created.
    assert!(!dir.path().join("db").exists());
}

#[test]
fn config_show_masks_secrets_and_names_each_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    std::fs::write(&file, "[delivery]\nconcurrency = 16\n").unwrap();
    let env = [
        ("AVVISI__SMTP__USERNAME", "avvisi"),
        ("AVVISI__SMTP__PASSWORD", "s3cret-pw"),
        // Never opened: `config show` needs no database.
        (
            "AVVISI__DATABASE__URL",
            "postgres://avvisi:hunter2@127.0.0.1:1/avvisi",
        ),
    ];
    let config = ["--config", file.to_str().unwrap(), "config", "show"];
    let out = unattended(dir.path(), &config, &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let line = |start: &str| {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start}:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("password ="),
        "password = \"***\" # env AVVISI__SMTP__PASSWORD"
    );
    assert_eq!(
        line("concurrency ="),
        format!("concurrency = 16 # file {}", file.display())
    );
    assert_eq!(
        line("url = \"postgres"),
        "url = \"postgres://avvisi:***@127.0.0.1:1/avvisi\" # env AVVISI__DATABASE__URL"
    );
    assert_eq!(line("batch_size ="), "batch_size = 200 # default");
    assert!(text.contains("[smtp]\n"), "{text}");

    let json = unattended(dir.path(), &[&config[..], &["--json"]].concat(), &env);
    assert!(json.status.success(), "{}", stderr(&json));
    let entries: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let entry = |key: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .clone()
    };
    assert_eq!(
        entry("smtp.password"),
        serde_json::json!({"key": "smtp.password", "value": "***", "source": "env AVVISI__SMTP__PASSWORD"})
    );
    assert_eq!(entry("delivery.concurrency")["value"], 16);
    for o in [&out, &json] {
        let all = format!("{}{}", stdout(o), stderr(o));
        assert!(
            !all.contains("s3cret-pw") && !all.contains("hunter2"),
            "{all}"
        );
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_with_personal_data_are_for_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    // The database, its write-ahead log and shared memory, while the pool holds them open.
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let db = app.dir.path().join("avvisi.db");
    for suffix in ["", "-wal", "-shm"] {
        let path = Path::new(&format!("{}{suffix}", db.display())).to_path_buf();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    app.teardown().await;

    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = unattended(dir.path(), args, &[]);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    };
    run(&README_RUN);
    assert_eq!(mode(&dir.path().join("db")), 0o700);
    assert_eq!(mode(&dir.path().join("db/avvisi.db")), 0o600);
    let outbox = dir.path().join("outbox");
    assert_eq!(mode(&outbox), 0o700);
    let emails: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(emails.len(), 30);
    for path in emails {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    let snapshot = dir.path().join("bad.csv");
    std::fs::write(
        &snapshot,
        "user_id,fiscal_code,first_name,last_name,email,institutional_email,registration,enabled,pending_email,code_regeneration\n\
         U1,RSSMRA85T10A562S,Mario,Rossi,mario.rossi@libero.it,,completed,true,,none\n\
         U2,RSSMRA85T10A562S,Anna,Verdi,anna.verdi@@libero.it,,completed,true,,none\n",
    )
    .unwrap();
    let rejects = dir.path().join("rejects.csv");
    run(&[
        "import",
        "users",
        snapshot.to_str().unwrap(),
        "--skip-invalid",
        "--reject-file",
        rejects.to_str().unwrap(),
        "--partial",
    ]);
    assert_eq!(mode(&rejects), 0o600);
}
