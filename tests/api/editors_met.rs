//! What template editors met, tried as a new editor would (issue 24, item 4), each through the
//! binary where an editor uses it: a byte-order mark, a file saved in Windows-1252, a sentence
//! in one version of a message only, a date printed raw, a refused edit that stayed refused
//! after the folder was put back, the subject limit told three ways.

use std::path::Path;
use std::time::Duration;

use avvisi::editor::check::MAX_SUBJECT_CHARS;

use crate::helpers::{decode_header, header, repo_path, served_address, TestApp};
use crate::on_both_backends;
use crate::templates::{assert_caught, avvisi_bin, copy_tree, listing, stderr, stdout, Copy};

/// `avvisi templates preview --out OUT` on `copy`.
fn preview_binary(copy: &Copy, out: &Path) -> std::process::Output {
    let db = copy.dir.parent().unwrap().join("preview.db");
    avvisi_bin(
        &["templates", "preview", "--out", out.to_str().unwrap()],
        &[
            ("AVVISI__TEMPLATES__DIR", copy.dir.to_str().unwrap()),
            (
                "AVVISI__DATABASE__URL",
                &format!("sqlite://{}", db.display()),
            ),
        ],
    )
}

#[test]
fn a_byte_order_mark_is_removed_and_named() {
    let copy = Copy::new();
    for file in [
        "registration_incomplete/subject.txt",
        "registration_incomplete/body.html",
    ] {
        let text = copy.read(file);
        copy.write(file, &format!("\u{feff}{text}"));
    }
    let out = copy.check_binary();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{}{err}", stdout(&out));
    for file in [
        "registration_incomplete/subject.txt",
        "registration_incomplete/body.html",
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("{file}:1: avviso:")) && l.contains("BOM")),
            "no warning naming {file}:\n{err}"
        );
    }
    assert!(!err.contains("errore di sintassi"), "{err}");
    assert!(
        stdout(&out).contains("2 avvisi da leggere"),
        "{}",
        stdout(&out)
    );

    // The email's subject has no U+FEFF.
    let tmp = tempfile::tempdir().unwrap();
    let out = preview_binary(&copy, tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let folder = tmp.path().join("registration_incomplete");
    let mut emails = 0;
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let eml = std::fs::read_to_string(&path).unwrap();
            let subject = decode_header(&header(&eml, "Subject").unwrap());
            assert!(
                !subject.contains('\u{feff}'),
                "{}: {subject:?}",
                path.display()
            );
            assert!(subject.contains("registrazione"), "{subject}");
            emails += 1;
        }
    }
    assert!(emails > 0, "no .eml in {}", folder.display());
}

#[test]
fn a_windows_1252_file_is_named_with_its_line_and_a_hint() {
    let copy = Copy::new();
    let file = "email_unvalidated/body.txt";
    let text = copy.read(file);
    // Line 3 of the file, saved by an editor in Windows-1252: `è` is the byte 0xE8.
    let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    lines[2] = b"La scadenza \xE8 vicina.".to_vec();
    std::fs::write(copy.path(file), lines.join(&b'\n')).unwrap();
    let report = assert_caught(&copy, file, Some(3), "colonna 13");
    let message = &report.problems[0].message;
    for expected in ["UTF-8", "0xE8", "«è»", "Windows-1252", "Salva con nome"] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    assert!(!message.contains("stream did not contain"), "{message}");
}

#[test]
fn a_sentence_in_one_version_only_is_flagged() {
    // The shipped templates: the two versions of every message agree.
    let shipped = Copy::new().check();
    assert!(shipped.warnings.is_empty(), "{:?}", shipped.warnings);

    let copy = Copy::new();
    let mut text = copy.read("email_unvalidated/section.txt");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let text_line = text.lines().count() + 1;
    text.push_str("La validazione richiede pochi minuti e si completa dal portale.\n");
    copy.write("email_unvalidated/section.txt", &text);
    let html_line = copy.edit(
        "code_regeneration_pending/section.html",
        "</p>",
        "</p>\n<p>Il nuovo codice arriva per posta elettronica entro un giorno lavorativo.</p>",
    );
    let out = copy.check_binary();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "warnings only:\n{err}");
    for (file, line, other, words) in [
        (
            "email_unvalidated/section.txt",
            text_line,
            "email_unvalidated/section.html",
            "la validazione richiede pochi minuti",
        ),
        (
            "code_regeneration_pending/section.html",
            html_line + 1,
            "code_regeneration_pending/section.txt",
            "il nuovo codice arriva per posta",
        ),
    ] {
        let needle = format!("{file}:{line}: avviso: la frase «{words}");
        assert!(
            err.lines()
                .any(|l| l.contains(&needle) && l.contains(&format!("`{other}`"))),
            "no {needle:?} naming {other}:\n{err}"
        );
    }
    assert_eq!(
        copy.check().warnings.len(),
        2,
        "{:?}",
        copy.check().warnings
    );
}

#[test]
fn a_raw_date_is_refused_with_the_filter_to_use() {
    let copy = Copy::new();
    let file = "registration_incomplete/body.txt";
    let text = copy.read(file);
    let (from, _) = text
        .split_once("{{ deadline | data_estesa_it }}")
        .map(|_| ("{{ deadline | data_estesa_it }}", ()))
        .or_else(|| {
            text.split_once("{{ deadline | data_it }}")
                .map(|_| ("{{ deadline | data_it }}", ()))
        })
        .expect("a date filter in the shipped body");
    let line = copy.edit(file, from, "{{ deadline }}");
    let report = assert_caught(&copy, file, Some(line), "`{{ deadline }}` senza filtro");
    assert!(
        report.problems[0]
            .message
            .contains("`{{ deadline | data_it }}` (\"30 novembre 2026\")"),
        "{}",
        listing(&report)
    );
}

#[test]
fn the_subject_limit_is_one_number_in_the_guide_help_and_check() {
    let guide = std::fs::read_to_string(repo_path("templates/README.md")).unwrap();
    assert!(
        guide.contains(&format!("{MAX_SUBJECT_CHARS} caratteri")),
        "the guide does not say {MAX_SUBJECT_CHARS}"
    );
    assert!(
        !guide.contains("in corso di sviluppo"),
        "the guide calls working commands in development"
    );
    let help = avvisi_bin(&["templates", "check", "--help"], &[]);
    let help = stdout(&help);
    assert!(
        help.contains(&format!("at most {MAX_SUBJECT_CHARS} characters")),
        "{help}"
    );

    // At the limit the subject passes; one character more, the test message fails.
    let copy = Copy::new();
    let prefix = "[PROVA] Istanze OnLine: ";
    let filler = |n: usize| "x".repeat(n);
    let subject = |n: usize| {
        format!(
            "{{% if is_test %}}[PROVA] {{% endif %}}{{{{ service_name }}}}: {}",
            filler(n - prefix.chars().count())
        )
    };
    copy.write("test_message/subject.txt", &subject(MAX_SUBJECT_CHARS));
    let report = copy.check();
    assert!(report.is_ok(), "{}", listing(&report));
    copy.write("test_message/subject.txt", &subject(MAX_SUBJECT_CHARS + 1));
    assert_caught(
        &copy,
        "test_message/subject.txt",
        Some(1),
        &format!("più di {MAX_SUBJECT_CHARS}"),
    );
}

/// `GET path` on the daemon: the status and the body.
fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    crate::helpers::http_get(address, path).map(|(code, _, body)| (code, body))
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    testkit::process::eventually(what, Duration::from_secs(60), || std::future::ready(f())).await
}

/// The daemon reports a refused edit in one line, the same as the check, and stops reporting
/// it once the folder holds the live set again.
async fn a_refused_edit_is_cleared_when_the_folder_is_put_back(app: TestApp) {
    app.import_examples().await;
    let dir = app.dir.path().join("templates-edited");
    copy_tree(&repo_path("templates"), &dir);
    let log = app.dir.path().join("daemon.log");
    let env = [
        ("AVVISI__HTTP__ADDRESS", "127.0.0.1:0".to_string()),
        ("AVVISI__DAEMON__TEMPLATE_POLL_SECONDS", "1".to_string()),
        ("AVVISI__TEMPLATES__DIR", dir.display().to_string()),
        // Only the development mode watches the folder (a published set is what goes live).
        ("AVVISI__TEMPLATES__DEVELOPMENT", "true".to_string()),
        ("AVVISI__LOG__FORMAT", "json".to_string()),
    ];
    let child = app.spawn(
        &["daemon", "--now", "2026-11-20T10:00:00+01:00"],
        &env,
        &log,
    );
    let address = served_address(&child, &log).await;
    let (_, ready) = eventually("/readyz", || http_get(&address, "/readyz")).await;
    assert!(!ready.contains("refused"), "{ready}");

    // A tag left open in body.html: Tera cannot even parse the file.
    let file = dir.join("maintenance_notice/body.html");
    let original = std::fs::read_to_string(&file).unwrap();
    let broken = original.replacen("{% endblock content %}", "{% endblock content %", 1);
    assert_ne!(broken, original);
    std::fs::write(&file, broken).unwrap();
    let ready = eventually("/readyz reporting the refused edit", || {
        let (_, body) = http_get(&address, "/readyz")?;
        body.contains("refused").then_some(body)
    })
    .await;
    let line = ready.lines().find(|l| l.contains("refused")).unwrap();
    let (_, page) = http_get(&address, "/").unwrap();
    assert!(page.contains("id=\"templates-rejected\""), "{page}");
    // Tera escapes the slash.
    assert!(
        page.replace("&#x2F;", "/")
            .contains("maintenance_notice/body.html:"),
        "{page}"
    );
    assert!(line.contains("maintenance_notice/body.html:"), "{ready}");
    assert!(line.contains("errore di sintassi"), "{ready}");
    assert!(
        !ready.contains("-->") && !ready.contains("expected"),
        "Tera's dump: {ready}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let rejected = logged
        .lines()
        .find(|l| l.contains("new templates refused"))
        .unwrap_or_else(|| panic!("no rejection logged:\n{logged}"));
    assert!(rejected.contains("errore di sintassi"), "{rejected}");
    assert!(
        !rejected.contains("-->"),
        "Tera's dump in the log: {rejected}"
    );
    // What `templates check` says of the same file: the same message.
    let check_db = format!("sqlite://{}", app.dir.path().join("check.db").display());
    let check = avvisi_bin(
        &["templates", "check"],
        &[
            ("AVVISI__TEMPLATES__DIR", dir.to_str().unwrap()),
            ("AVVISI__DATABASE__URL", &check_db),
        ],
    );
    let check_line = stderr(&check)
        .lines()
        .find(|l| l.contains("maintenance_notice/body.html:"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}", stderr(&check)));
    let (_, message) = check_line.split_once(": ").unwrap();
    assert!(
        line.contains(message),
        "check: {check_line}\nreadyz: {line}"
    );

    // Put back: the refusal goes away, on /readyz and on the status page.
    std::fs::write(&file, &original).unwrap();
    eventually("/readyz without the refusal", || {
        let (code, body) = http_get(&address, "/readyz")?;
        (code == 200 && !body.contains("refused")).then_some(())
    })
    .await;
    let (_, page) = http_get(&address, "/").unwrap();
    assert!(!page.contains("id=\"templates-rejected\""), "{page}");
    child.terminate().await;
}
on_both_backends!(a_refused_edit_is_cleared_when_the_folder_is_put_back);
