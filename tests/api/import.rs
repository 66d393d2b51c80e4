//! Importing the portal's snapshot: validation, all-or-nothing, upserts, stale rows, gone users;
//! files in Windows-1252 (with `--encoding`, and refused once without it); hostile values (line
//! breaks, markup, invisible characters, 10 MB fields, non-ASCII addresses), each stored as
//! written or refused with its line and column, never echoed.

use std::time::{Duration, Instant};

use avvisi::import::snapshot::{Encoding, RowError};
use avvisi::import::{ImportError, ImportOptions};
use avvisi::store::lock_planning;
use sqlx::Row;

use crate::helpers::TestApp;
use crate::on_both_backends;

const HEADER: &str = "user_id,fiscal_code,first_name,last_name,email,institutional_email,registration,enabled,pending_email,code_regeneration,province,updated_at";

async fn user_field(app: &TestApp, user_id: &str, column: &str) -> Option<String> {
    sqlx::query(&format!(
        "SELECT CAST({column} AS TEXT) FROM users WHERE user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(app.db.pool())
    .await
    .unwrap()
    .map(|r| r.get::<Option<String>, _>(0).unwrap_or_default())
}

async fn user_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

async fn examples_import_and_reimport(app: TestApp) {
    let first = app.import_examples().await;
    assert_eq!(
        (first.rows_valid, first.users_new, first.users_known),
        (40, 40, 0)
    );
    let again = app.import_examples().await;
    assert_eq!(
        (again.rows_valid, again.users_new, again.users_known),
        (40, 0, 40)
    );
    assert_eq!(user_count(&app).await, 40);
    assert_eq!(
        user_field(&app, "U0002", "last_name").await.as_deref(),
        Some("D'Angelo")
    );
    assert_eq!(
        user_field(&app, "U0001", "first_name").await.as_deref(),
        Some("Nicolò")
    );
    // Mixed-case institutional domains count as institutional.
    assert_eq!(
        user_field(&app, "U0031", "registered_institutional")
            .await
            .as_deref(),
        Some("1")
    );
}

async fn one_bad_row_writes_nothing_and_names_line_and_column(app: TestApp) {
    let csv = format!(
        "{HEADER}\n\
         U1,RSSMRA85T10A562S,Mario,Rossi,mario.rossi@libero.it,,completed,true,,none,BO,\n\
         U2,RSSMRA85T10A562X,Anna,Verdi,anna.verdi@libero,,completed,maybe,,none,BO,\n\
         U3,RSSMRA85T10A562S,Luca,Neri,luca.neri@libero.it,,finished,false,,none,,\n"
    );
    let err = app
        .import_csv(&csv, ImportOptions::default())
        .await
        .unwrap_err();
    let ImportError::Invalid { report, .. } = err else {
        panic!("expected Invalid, got {err}")
    };
    let found: Vec<(u64, &str)> = report
        .errors
        .iter()
        .map(|e| (e.line, e.column.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (3, "fiscal_code"),
            (3, "email"),
            (3, "enabled"),
            (4, "registration")
        ]
    );
    assert!(
        report.errors[0].reason.contains("check character"),
        "{:?}",
        report.errors[0]
    );
    assert_eq!(user_count(&app).await, 0, "nothing may be written");
}

async fn skip_invalid_imports_good_rows_and_writes_rejects(app: TestApp) {
    let csv = format!(
        "{HEADER}\n\
         U1,RSSMRA85T10A562S,Mario,Rossi,mario.rossi@libero.it,,completed,true,,none,BO,\n\
         U2,RSSMRA85T10A562S,\"Anna\r\nBcc: evil@example.com\",Verdi,anna.verdi@libero.it,,completed,true,,none,BO,\n\
         U3,RSSMRA85T10A562S,Luca,Neri,luca.neri@libero.it,,completed,true,,none,,\n\
         U3,RSSMRA85T10A562S,Luca,Neri,luca.neri@libero.it,,completed,false,,none,,\n"
    );
    let options = ImportOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let report = app.import_csv(&csv, options).await.unwrap();
    assert_eq!(
        (report.rows_read, report.rows_valid, report.rows_rejected),
        (4, 1, 3)
    );
    assert_eq!(user_count(&app).await, 1);
    let rejects = std::fs::read_to_string(report.reject_file.expect("reject file")).unwrap();
    assert!(
        rejects.contains("first_name: contains a line break"),
        "{rejects}"
    );
    assert!(
        rejects.contains("user_id already appears at line 5"),
        "{rejects}"
    );
}

async fn semicolons_and_bom_are_accepted(app: TestApp) {
    let csv = "\u{feff}user_id;fiscal_code;first_name;last_name;email;institutional_email;registration;enabled;pending_email;code_regeneration\n\
               U1;RSSMRA85T10A562S;Nicolò;D'Angelo;n.dangelo@libero.it;;completed;true;;started\n";
    let report = app.import_csv(csv, ImportOptions::default()).await.unwrap();
    assert_eq!(report.rows_valid, 1);
    assert_eq!(
        user_field(&app, "U1", "code_regeneration").await.as_deref(),
        Some("started")
    );
}

async fn empty_and_headerless_files_are_refused(app: TestApp) {
    let err = app
        .import_csv("", ImportOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = app
        .import_csv(&format!("{HEADER}\n"), ImportOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Empty { .. }), "{err}");
    let err = app
        .import_csv("nome,cognome\nMario,Rossi\n", ImportOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown column `nome`"), "{err}");
}

async fn stale_rows_do_not_undo_newer_state(app: TestApp) {
    let row = |state: &str, updated: &str| {
        format!("{HEADER}\nU1,RSSMRA85T10A562S,Mario,Rossi,mario.rossi@libero.it,,{state},false,,none,BO,{updated}\n")
    };
    app.import_csv(
        &row("completed", "2026-11-22T10:00:00+01:00"),
        ImportOptions::default(),
    )
    .await
    .unwrap();
    // An older export arrives late: it must not bring the registration back to "started".
    let report = app
        .import_csv(
            &row("started", "2026-11-20T10:00:00+01:00"),
            ImportOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.rows_stale, 1);
    assert_eq!(
        user_field(&app, "U1", "registration").await.as_deref(),
        Some("completed")
    );
}

async fn full_snapshot_marks_missing_users_gone(app: TestApp) {
    app.import_examples().await;
    let csv = std::fs::read_to_string(crate::helpers::repo_path("examples/users.csv")).unwrap();
    let without_first: String = csv
        .lines()
        .filter(|l| !l.starts_with("U0001,"))
        .map(|l| format!("{l}\n"))
        .collect();
    let report = app
        .import_csv(
            &without_first,
            ImportOptions {
                max_gone_percent: 20,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.users_gone, 1);
    assert_eq!(
        user_field(&app, "U0001", "present").await.as_deref(),
        Some("0")
    );

    // A truncated export that would silence most of the campaign is refused.
    let truncated: String = csv.lines().take(5).map(|l| format!("{l}\n")).collect();
    let err = app
        .import_csv(
            &truncated,
            ImportOptions {
                max_gone_percent: 20,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::TooManyGone { .. }), "{err}");
    assert_eq!(
        user_field(&app, "U0030", "present").await.as_deref(),
        Some("1")
    );
    // The same file as a delta is fine.
    app.import_csv(
        &truncated,
        ImportOptions {
            partial: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

async fn dry_run_writes_nothing(app: TestApp) {
    let report = app
        .import_file(
            &crate::helpers::repo_path("examples/users.csv"),
            ImportOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((report.users_new, report.committed), (40, false));
    assert_eq!(user_count(&app).await, 0);
}

/// A data row for user `id` with these names and address (enabled, completed, code pending).
fn row(id: &str, first: &str, last: &str, email: &str) -> String {
    format!("{id},RSSMRA85T10A562S,{first},{last},{email},,completed,true,,none,BO,\n")
}

/// The Excel export of the issue: `D'Angelo`, `Nicolò`, `Niccolò Fabbrì` on lines 2 to 4.
fn excel_export() -> Vec<u8> {
    let text = format!(
        "{HEADER}\n{}{}{}",
        row("U1", "Mario", "D'Angelo", "m.dangelo@libero.it"),
        row("U2", "Nicolò", "Rossi", "n.rossi@libero.it"),
        row("U3", "Niccolò", "Fabbrì", "n.fabbri@libero.it"),
    );
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
    assert!(!unmappable);
    bytes.into_owned()
}

fn write_file(app: &TestApp, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = app.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn import_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM imports")
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

async fn windows_1252_is_imported_with_its_encoding(app: TestApp) {
    let path = write_file(&app, "excel.csv", &excel_export());
    let options = ImportOptions {
        encoding: "windows-1252".parse().unwrap(),
        ..Default::default()
    };
    let report = app.import_file(&path, options).await.unwrap();
    assert_eq!(report.rows_valid, 3);
    for (user, column, value) in [
        ("U1", "last_name", "D'Angelo"),
        ("U2", "first_name", "Nicolò"),
        ("U3", "first_name", "Niccolò"),
        ("U3", "last_name", "Fabbrì"),
    ] {
        assert_eq!(user_field(&app, user, column).await.as_deref(), Some(value));
    }
}

async fn windows_1252_read_as_utf8_is_refused_once_and_nothing_is_imported(app: TestApp) {
    let path = write_file(&app, "excel.csv", &excel_export());
    for skip_invalid in [false, true] {
        let options = ImportOptions {
            skip_invalid,
            ..Default::default()
        };
        let err = app.import_file(&path, options).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: line 3 is not UTF-8 (it looks like Windows-1252, as Excel writes it): pass --encoding windows-1252",
                path.display()
            )
        );
        assert_eq!(user_count(&app).await, 0, "nothing may be written");
        assert_eq!(import_count(&app).await, 0, "no import is recorded");
        assert!(!app.dir.path().join("excel.csv.rejects.csv").exists());
    }
}

async fn a_utf8_byte_order_mark_wins_over_the_encoding_given(app: TestApp) {
    let text = format!(
        "\u{feff}{HEADER}\n{}",
        row("U1", "Niccolò", "Fabbrì", "n.fabbri@libero.it")
    );
    for encoding in [Encoding::default(), Encoding::windows_1252()] {
        let options = ImportOptions {
            encoding,
            ..Default::default()
        };
        app.import_csv(&text, options).await.unwrap();
        assert_eq!(
            user_field(&app, "U1", "last_name").await.as_deref(),
            Some("Fabbrì"),
            "{encoding}"
        );
    }
}

/// The errors of an import that must fail on its invalid rows; nothing may have been written.
async fn refused(app: &TestApp, csv: &str) -> Vec<RowError> {
    let err = app
        .import_csv(csv, ImportOptions::default())
        .await
        .unwrap_err();
    let ImportError::Invalid { report, .. } = err else {
        panic!("expected Invalid, got {err}")
    };
    assert_eq!(user_count(app).await, 0, "nothing may be written");
    report.errors
}

async fn hostile_values_are_refused_with_line_and_column_and_not_echoed(app: TestApp) {
    // (first_name, email, the column refused, a word of the reason)
    let cases = [
        (
            "\"Anna\r\nBcc: x@example.org\"",
            "a@libero.it",
            "first_name",
            "line break",
        ),
        (
            "\"Anna\u{2028}Maria\"",
            "a@libero.it",
            "first_name",
            "line break",
        ),
        (
            "<script>alert(1)</script>",
            "a@libero.it",
            "first_name",
            "< or >",
        ),
        (
            "Anna\u{202E}airaM",
            "a@libero.it",
            "first_name",
            "invisible",
        ),
        ("An\u{200B}na", "a@libero.it", "first_name", "invisible"),
        (
            "Anna",
            "\"a@libero.it\r\nBcc: x@example.org\"",
            "email",
            "line breaks",
        ),
        ("Anna", "<script>@libero.it", "email", "not a valid email"),
        ("Anna", "a\u{202E}@libero.it", "email", "non-ASCII"),
        // Valid for RFC 5321, but no email to them could be built.
        (
            "Anna",
            "\"\"\"<b>\"\"@libero.it\"",
            "email",
            "plain name@domain",
        ),
        ("Anna", "anna@[127.0.0.1]", "email", "host name"),
    ];
    let mut csv = format!("{HEADER}\n");
    // Each row's line: quoted line breaks push the rows after them further down.
    let mut expected: Vec<(u64, &str)> = Vec::new();
    for (i, (first, email, column, _)) in cases.iter().enumerate() {
        expected.push((csv.matches('\n').count() as u64 + 1, *column));
        csv.push_str(&row(&format!("U{i}"), first, "Rossi", email));
    }
    let errors = refused(&app, &csv).await;
    let found: Vec<(u64, &str)> = errors.iter().map(|e| (e.line, e.column.as_str())).collect();
    assert_eq!(found, expected);
    for (error, (first, email, _, reason)) in errors.iter().zip(cases) {
        assert!(error.reason.contains(reason), "{error}");
        let shown = error.to_string();
        for value in [first.trim_matches('"'), email.trim_matches('"')] {
            assert!(!shown.contains(value), "{shown} echoes a value");
        }
    }
}

async fn harmless_oddities_are_stored_as_written(app: TestApp) {
    // (first_name as in the file, as stored; email)
    let cases = [
        ("D'Angelo", "D'Angelo", "g.d'angelo@libero.it"),
        (
            "\"\"\"Mimmo\"\" Rossi\"",
            "\"Mimmo\" Rossi",
            "mimmo@libero.it",
        ),
        ("Anna & Maria", "Anna & Maria", "anna.maria@libero.it"),
        ("Anna\u{A0}Maria", "Anna Maria", "a.maria@xn--citt-5qa.it"),
        ("Zoë", "Zoë", "zoe@libero.it"),
    ];
    let mut csv = format!("{HEADER}\n");
    for (i, (first, _, email)) in cases.iter().enumerate() {
        csv.push_str(&row(&format!("U{i}"), first, "Rossi", email));
    }
    let report = app
        .import_csv(&csv, ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.rows_valid, cases.len() as u64);
    for (i, (_, stored, email)) in cases.iter().enumerate() {
        let id = format!("U{i}");
        assert_eq!(
            user_field(&app, &id, "first_name").await.as_deref(),
            Some(*stored)
        );
        assert_eq!(
            user_field(&app, &id, "email").await.as_deref(),
            Some(*email)
        );
    }
}

async fn non_ascii_addresses_are_refused_for_smtputf8(app: TestApp) {
    let csv = format!(
        "{HEADER}\n\
         U1,RSSMRA85T10A562S,Nicolò,Rossi,nicolò@libero.it,,completed,true,,none,BO,\n\
         U2,RSSMRA85T10A562S,Mario,Rossi,mario@città.it,,completed,true,,none,BO,\n\
         U3,RSSMRA85T10A562S,Anna,Rossi,anna@libero.it,anna.rossi@istruzióne.it,completed,true,,none,BO,\n\
         U4,RSSMRA85T10A562S,Luca,Rossi,luca@libero.it,,completed,true,lucà@libero.it,none,BO,\n"
    );
    let errors = refused(&app, &csv).await;
    let found: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        found,
        [
            "line 2, column email: is a non-ASCII address: the relay would need SMTPUTF8, which avvisi does not use",
            "line 3, column email: has a non-ASCII domain: the relay would need SMTPUTF8, which avvisi does not use (write the domain in its ASCII form, xn--...)",
            "line 4, column institutional_email: has a non-ASCII domain: the relay would need SMTPUTF8, which avvisi does not use (write the domain in its ASCII form, xn--...)",
            "line 5, column pending_email: is a non-ASCII address: the relay would need SMTPUTF8, which avvisi does not use",
        ]
    );
}

async fn ten_megabyte_fields_are_refused_quickly(app: TestApp) {
    let big = "A".repeat(10_000_000);
    let csv = format!(
        "{HEADER}\n{}{}{}",
        row("U1", "Mario", &big, "m.rossi@libero.it"),
        row("U2", "Anna", "Verdi", &format!("{big}@libero.it")),
        row("U3", "Luca", "Neri", "l.neri@libero.it"),
    );
    let started = Instant::now();
    let report = app
        .import_csv(
            &csv,
            ImportOptions {
                skip_invalid: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let took = started.elapsed();
    let found: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        found,
        [
            "line 2, column last_name: is longer than 100 characters",
            "line 3, column email: is longer than 254 characters",
        ]
    );
    assert_eq!((report.rows_valid, report.rows_rejected), (1, 2));
    // A bound for a slow, shared machine: what it guards against is a pass per character.
    assert!(took < Duration::from_secs(30), "{took:?}");
}

/// The binary, as operators run it, against `app`'s database.
fn avvisi(app: &TestApp, args: &[&str]) -> std::process::Output {
    app.avvisi(args, &[])
}

async fn the_command_names_the_encoding_to_pass_and_takes_it(app: TestApp) {
    let path = write_file(&app, "excel.csv", &excel_export());
    let file = path.to_str().unwrap();
    let out = avvisi(&app, &["import", "users", file]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!("error: importing users: {file}: line 3 is not UTF-8 (it looks like Windows-1252, as Excel writes it): pass --encoding windows-1252")
    );
    assert_eq!(user_count(&app).await, 0);

    let out = avvisi(
        &app,
        &["import", "users", file, "--encoding", "windows-1252"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        user_field(&app, "U3", "last_name").await.as_deref(),
        Some("Fabbrì")
    );

    let out = avvisi(&app, &["import", "users", file, "--encoding", "klingon"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown encoding `klingon`"), "{err}");
}

/// A planning pass decides from one state of the users: an import arriving while a pass runs
/// applies its rows only once the pass has committed. The pass is stood for here by its lock,
/// `store::lock_planning` (PostgreSQL: an advisory lock, which nothing else would make the
/// import wait for; SQLite: the file's write lock).
async fn an_import_waits_for_the_planning_pass_in_progress(app: TestApp) {
    app.import_examples().await;
    let mut pass = app.db.pool().begin().await.unwrap();
    lock_planning(&mut pass, app.db.backend()).await.unwrap();
    let importing = tokio::spawn({
        let app = app.clone();
        async move {
            let row = "U0002,DNGLRI88L42A662Y,Ilaria,De Angelis,ilaria.dangelo@gmail.com,,started,false,,none,BA,2026-11-03T09:00:00+01:00";
            let options = ImportOptions {
                partial: true,
                ..ImportOptions::default()
            };
            app.import_csv(&format!("{HEADER}\n{row}\n"), options).await
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !importing.is_finished(),
        "the import applied its rows in the middle of a planning pass"
    );
    // The pass still reads the users as they were when it started.
    let seen: String = sqlx::query_scalar("SELECT last_name FROM users WHERE user_id = 'U0002'")
        .fetch_one(&mut *pass)
        .await
        .unwrap();
    assert_eq!(seen, "D'Angelo");
    pass.commit().await.unwrap();
    let report = importing.await.unwrap().unwrap();
    assert!(report.committed);
    assert_eq!(
        user_field(&app, "U0002", "last_name").await.as_deref(),
        Some("De Angelis")
    );
}

on_both_backends!(
    windows_1252_is_imported_with_its_encoding,
    windows_1252_read_as_utf8_is_refused_once_and_nothing_is_imported,
    a_utf8_byte_order_mark_wins_over_the_encoding_given,
    hostile_values_are_refused_with_line_and_column_and_not_echoed,
    harmless_oddities_are_stored_as_written,
    non_ascii_addresses_are_refused_for_smtputf8,
    ten_megabyte_fields_are_refused_quickly,
    the_command_names_the_encoding_to_pass_and_takes_it,
    examples_import_and_reimport,
    one_bad_row_writes_nothing_and_names_line_and_column,
    skip_invalid_imports_good_rows_and_writes_rejects,
    semicolons_and_bom_are_accepted,
    empty_and_headerless_files_are_refused,
    stale_rows_do_not_undo_newer_state,
    full_snapshot_marks_missing_users_gone,
    dry_run_writes_nothing,
    an_import_waits_for_the_planning_pass_in_progress,
);
