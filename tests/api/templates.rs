//! The template editors' tools: `templates check` passes on the shipped templates and catches
//! each kind of breakage (one test per kind, through the library and the binary, with file and
//! line); golden renders of every message on the sample users; user data safe in every part;
//! `templates preview` (files, `--user`, and what headless Chromium shows).
//!
//! Golden files: `tests/golden/MESSAGE/SAMPLE.txt`, compared on every run; regenerate them with
//! `AVVISI_UPDATE_GOLDEN=1 cargo test --test api templates` and review the diff.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use avvisi::config::Settings;
use avvisi::editor;
use avvisi::editor::check::{self, CheckReport, Problem};
use avvisi::editor::preview::{self, PreviewInput, PreviewReport};
use avvisi::render::email::{self, Envelope};
use avvisi::render::templates::{self, TemplateSet};

use crate::helpers::{at, decode_header, header, headers, repo_path, test_settings, TestApp};
use crate::on_both_backends;

// -------------------------------------------------------------------------------------------
// Helpers

/// A copy of the shipped templates in a temporary folder, to break.
pub(crate) struct Copy {
    _tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
}

impl Copy {
    pub(crate) fn new() -> Copy {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("templates");
        copy_tree(&repo_path("templates"), &dir);
        Copy { _tmp: tmp, dir }
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub(crate) fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap()
    }

    pub(crate) fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path(file), text).unwrap();
    }

    /// Replaces the first `from` in `file` by `to`; returns the line where `to` now starts.
    pub(crate) fn edit(&self, file: &str, from: &str, to: &str) -> usize {
        let text = self.read(file);
        let at = text
            .find(from)
            .unwrap_or_else(|| panic!("{file} has no {from:?}"));
        self.write(file, &text.replacen(from, to, 1));
        text[..at].matches('\n').count() + 1
    }

    pub(crate) fn check(&self) -> CheckReport {
        check::check(&self.dir, &settings(&self.dir))
    }

    /// `avvisi templates check` on this copy.
    pub(crate) fn check_binary(&self) -> Output {
        let db = self._tmp.path().join("avvisi.db");
        avvisi_bin(
            &["templates", "check"],
            &[
                ("AVVISI__TEMPLATES__DIR", self.dir.to_str().unwrap()),
                (
                    "AVVISI__DATABASE__URL",
                    &format!("sqlite://{}", db.display()),
                ),
            ],
        )
    }
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn settings(templates_dir: &Path) -> Settings {
    let out = std::env::temp_dir();
    test_settings(
        "sqlite://unused.db",
        &out,
        &[("AVVISI__TEMPLATES__DIR", templates_dir.to_str().unwrap())],
    )
}

pub(crate) fn avvisi_bin(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avvisi"));
    cmd.current_dir(repo_path("."))
        .args(args)
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run avvisi")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn listing(report: &CheckReport) -> String {
    report.problems.iter().map(|p| format!("  {p}\n")).collect()
}

/// The problem about `file` (relative to the templates folder) at `line` whose message contains
/// `text`; fails listing every problem found.
pub(crate) fn problem<'a>(
    report: &'a CheckReport,
    file: &str,
    line: Option<usize>,
    text: &str,
) -> &'a Problem {
    report
        .problems
        .iter()
        .find(|p| p.file.ends_with(file) && p.line == line && p.message.contains(text))
        .unwrap_or_else(|| {
            panic!(
                "no problem at {file}:{line:?} mentioning {text:?}; found:\n{}",
                listing(report)
            )
        })
}

/// Checks `copy` through the library and the binary: the problem is `file:line` with `text`,
/// in both, and the binary exits non-zero.
pub(crate) fn assert_caught(
    copy: &Copy,
    file: &str,
    line: Option<usize>,
    text: &str,
) -> CheckReport {
    let report = copy.check();
    assert!(!report.is_ok());
    let p = problem(&report, file, line, text);
    let shown = p.to_string();
    match line {
        Some(line) => assert!(shown.contains(&format!("{file}:{line}: ")), "{shown}"),
        None => assert!(shown.contains(&format!("{file}: ")), "{shown}"),
    }
    let out = copy.check_binary();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    let needle = match line {
        Some(line) => format!("{file}:{line}: "),
        None => format!("{file}: "),
    };
    assert!(
        err.lines().any(|l| l.contains(&needle) && l.contains(text)),
        "the binary does not report {needle} {text:?}:\n{err}"
    );
    assert!(err.contains("problema/i"), "{err}");
    report
}

// -------------------------------------------------------------------------------------------
// The shipped templates

#[test]
fn shipped_templates_pass_the_check() {
    let dir = repo_path("templates");
    let report = check::check(&dir, &settings(&dir));
    assert!(
        report.is_ok(),
        "the shipped templates have problems:\n{}",
        listing(&report)
    );
    let set = TemplateSet::load(&dir).unwrap();
    assert_eq!(report.messages, set.messages(), "every message folder");
    assert!(report.messages.len() >= 4);
    assert_eq!(report.samples, editor::samples().len());
    assert_eq!(report.renders, report.messages.len() * report.samples);
}

#[test]
fn shipped_templates_pass_the_check_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", tmp.path().join("avvisi.db").display());
    let out = avvisi_bin(
        &["templates", "check"],
        &[
            ("AVVISI__DATABASE__URL", &db),
            (
                "AVVISI__TEMPLATES__DIR",
                repo_path("templates").to_str().unwrap(),
            ),
        ],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("tutti i modelli sono corretti"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn samples_cover_every_variant() {
    let samples = editor::samples();
    let steps: BTreeSet<String> = samples
        .iter()
        .map(|s| s.situation.step.to_string())
        .collect();
    assert_eq!(
        steps,
        BTreeSet::from(["d1", "d3", "d7", "first", "main"].map(String::from)),
        "every step"
    );
    let days: BTreeSet<i64> = samples.iter().map(|s| s.situation.days_left).collect();
    assert!([7, 3, 1, 0].iter().all(|d| days.contains(d)), "{days:?}");
    for flag in [true, false] {
        assert!(samples
            .iter()
            .any(|s| s.user.has_institutional_email == flag));
        assert!(samples.iter().any(|s| s.situation.is_test == flag));
        assert!(samples
            .iter()
            .any(|s| s.user.pending_email.is_empty() == flag));
        assert!(samples.iter().any(|s| s.situation.reopened == flag));
    }
    let names: Vec<&str> = samples.iter().map(|s| s.user.full_name.as_str()).collect();
    for wanted in ["D'Angelo", "Nicolò", "<b>", "&"] {
        assert!(
            names.iter().any(|n| n.contains(wanted)),
            "{wanted} in {names:?}"
        );
    }
    // The CR/LF user: the raw data has line breaks, the view folds them.
    assert!(editor::SAMPLE_USERS
        .iter()
        .any(|u| u.first_name.contains("\r\n")));
    assert!(names.iter().all(|n| !n.contains(['\r', '\n'])));
}

// -------------------------------------------------------------------------------------------
// One test per kind of breakage

#[test]
fn check_catches_a_syntax_error() {
    let copy = Copy::new();
    let line = copy.edit(
        "registration_incomplete/body.txt",
        "{{ user.first_name }}",
        "{{ user.first_name }",
    );
    assert_caught(
        &copy,
        "registration_incomplete/body.txt",
        Some(line),
        "errore di sintassi: `{{` non è chiuso da `}}`",
    );
}

#[test]
fn check_catches_an_unclosed_tag() {
    let copy = Copy::new();
    let line = copy.edit(
        "email_unvalidated/body.html",
        "{% if days_left == 0 -%}",
        "{% if is_test %}[prova]{% if days_left == 0 -%}",
    );
    assert_caught(
        &copy,
        "email_unvalidated/body.html",
        Some(line),
        "`{% if %}` non è chiuso",
    );
}

#[test]
fn check_catches_an_unknown_variable() {
    let copy = Copy::new();
    let line = copy.edit(
        "code_regeneration_pending/body.html",
        "{{ user.first_name }}",
        "{{ user.frist_name }}",
    );
    let report = assert_caught(
        &copy,
        "code_regeneration_pending/body.html",
        Some(line),
        "variabile sconosciuta `user.frist_name`",
    );
    let p = problem(
        &report,
        "code_regeneration_pending/body.html",
        Some(line),
        "",
    );
    assert!(p.message.contains("forse `user.first_name`?"), "{p}");
    assert_eq!(
        report.problems.len(),
        1,
        "reported once, however many samples render it:\n{}",
        listing(&report)
    );
}

#[test]
fn check_catches_an_unknown_variable_inside_a_condition() {
    // Tera treats an unknown name in `{% if %}` as false: rendering alone would never notice.
    let copy = Copy::new();
    let line = copy.edit(
        "registration_incomplete/body.txt",
        "{% if days_left == 0 -%}",
        "{% if giorni_rimasti == 0 -%}",
    );
    let report = assert_caught(
        &copy,
        "registration_incomplete/body.txt",
        Some(line),
        "variabile sconosciuta `giorni_rimasti`",
    );
    assert!(report.problems[0]
        .message
        .contains("vale falso senza errori"));
}

#[test]
fn check_catches_an_unknown_filter() {
    let copy = Copy::new();
    let line = copy.edit(
        "credential_recovery_advice/subject.txt",
        "| data_it",
        "| data_itt",
    );
    let report = assert_caught(
        &copy,
        "credential_recovery_advice/subject.txt",
        Some(line),
        "filtro sconosciuto `data_itt`",
    );
    assert!(report.problems[0].message.contains("forse `data_it`?"));
}

#[test]
fn check_catches_a_message_missing_a_part() {
    let copy = Copy::new();
    std::fs::remove_file(copy.path("registration_incomplete/subject.txt")).unwrap();
    std::fs::remove_file(copy.path("email_unvalidated/body.txt")).unwrap();
    std::fs::remove_file(copy.path("code_regeneration_pending/body.html")).unwrap();
    let report = assert_caught(
        &copy,
        "registration_incomplete/subject.txt",
        None,
        "manca l'oggetto",
    );
    problem(
        &report,
        "email_unvalidated/body.txt",
        None,
        "manca la versione testo",
    );
    problem(
        &report,
        "code_regeneration_pending/body.html",
        None,
        "manca la versione HTML",
    );
    assert_eq!(report.problems.len(), 3, "{}", listing(&report));
}

#[test]
fn check_catches_a_subject_with_a_line_break() {
    let copy = Copy::new();
    copy.write(
        "registration_incomplete/subject.txt",
        "{{ service_name }}:\ncompleti la registrazione entro il {{ deadline | data_it }}\n",
    );
    assert_caught(
        &copy,
        "registration_incomplete/subject.txt",
        Some(1),
        "l'oggetto va a capo",
    );
}

#[test]
fn check_catches_a_line_break_only_in_test_messages() {
    // The "[PROVA] " prefix followed by a line break: only the test sample shows it.
    let copy = Copy::new();
    let line = copy.edit(
        "email_unvalidated/subject.txt",
        "{% if is_test %}[PROVA] {% endif %}",
        "{% if is_test %}[PROVA]\n{% endif %}",
    );
    let report = assert_caught(
        &copy,
        "email_unvalidated/subject.txt",
        Some(line),
        "l'oggetto va a capo con l'esempio `prova-",
    );
    assert_eq!(report.problems.len(), 1, "{}", listing(&report));
}

#[test]
fn check_catches_a_subject_over_100_characters() {
    let copy = Copy::new();
    copy.write(
        "code_regeneration_pending/subject.txt",
        "{% if is_test %}[PROVA] {% endif %}{{ service_name }}: la rigenerazione del Codice \
         Personale va completata entro il {{ deadline | data_it }}",
    );
    let report = assert_caught(
        &copy,
        "code_regeneration_pending/subject.txt",
        Some(1),
        "più di 100",
    );
    // 100 characters at most without the prefix: only the test message is too long.
    assert!(
        report.problems[0].message.contains("esempio `prova-"),
        "{}",
        listing(&report)
    );
}

#[test]
fn check_catches_template_syntax_left_in_the_output() {
    let copy = Copy::new();
    let line = copy.edit(
        "reopening_general/body.html",
        "{{ user.first_name }}",
        "{user.first_name}",
    );
    assert_caught(
        &copy,
        "reopening_general/body.html",
        Some(line),
        "sintassi dei modelli rimasta nel testo: `{user.first_name}`",
    );
    let copy = Copy::new();
    let line = copy.edit(
        "registration_incomplete/body.txt",
        "{{ user.last_name }}",
        "{ { user.last_name }}",
    );
    assert_caught(
        &copy,
        "registration_incomplete/body.txt",
        Some(line),
        "sintassi dei modelli rimasta nel testo",
    );
}

#[test]
fn check_catches_user_data_unescaped_in_html() {
    let copy = Copy::new();
    let line = copy.edit(
        "registration_incomplete/body.html",
        "{{ user.last_name }}",
        "{{ user.last_name | safe }}",
    );
    assert_caught(
        &copy,
        "registration_incomplete/body.html",
        Some(line),
        "i dati dell'utente arrivano nella versione HTML senza protezione",
    );
}

#[test]
fn check_catches_escaping_artefacts_in_text() {
    let copy = Copy::new();
    let line = copy.edit(
        "email_unvalidated/body.txt",
        "{{ user.last_name }}",
        "{{ user.last_name | escape }}",
    );
    assert_caught(
        &copy,
        "email_unvalidated/body.txt",
        Some(line),
        "codice HTML `&",
    );
}

#[test]
fn check_catches_a_missing_layout() {
    let copy = Copy::new();
    let line = copy.edit(
        "registration_incomplete/body.html",
        "layout/base.html",
        "layout/basse.html",
    );
    assert_caught(
        &copy,
        "registration_incomplete/body.html",
        Some(line),
        "non esiste il modello `layout/basse.html`",
    );
}

#[test]
fn check_catches_a_date_filter_on_an_empty_value() {
    // Reminders go out before the reopening: `reopened_at` is empty for them.
    let copy = Copy::new();
    copy.edit(
        "registration_incomplete/subject.txt",
        "{{ deadline | data_it }}",
        "{{ reopened_at | data_it }}",
    );
    assert_caught(
        &copy,
        "registration_incomplete/subject.txt",
        Some(1),
        "il filtro `data_it` non funziona",
    );
    // A test message can go out any time: only the reopening notices always have the date.
    let copy = Copy::new();
    copy.edit(
        "test_message/subject.txt",
        "{{ deadline | data_it }}",
        "{{ reopened_at | data_it }}",
    );
    assert_caught(
        &copy,
        "test_message/subject.txt",
        Some(1),
        "solo gli avvisi",
    );
}

#[test]
fn check_lists_every_problem_at_once() {
    let copy = Copy::new();
    let syntax = copy.edit(
        "registration_incomplete/body.txt",
        "{{ user.first_name }}",
        "{{ user.first_name",
    );
    let variable = copy.edit(
        "email_unvalidated/body.html",
        "{{ user.email }}",
        "{{ user.mail }}",
    );
    std::fs::remove_file(copy.path("code_regeneration_pending/body.txt")).unwrap();
    let report = copy.check();
    problem(
        &report,
        "registration_incomplete/body.txt",
        Some(syntax),
        "errore di sintassi",
    );
    problem(
        &report,
        "email_unvalidated/body.html",
        Some(variable),
        "variabile sconosciuta `user.mail`",
    );
    problem(
        &report,
        "code_regeneration_pending/body.txt",
        None,
        "file mancante",
    );
    assert_eq!(report.problems.len(), 3, "{}", listing(&report));
    // What does not depend on the broken files is still rendered and checked.
    assert!(report.renders > 0);
}

#[test]
fn check_handles_a_new_message_folder() {
    let copy = Copy::new();
    copy_tree(
        &copy.path("registration_incomplete"),
        &copy.path("nuovo_avviso"),
    );
    let report = copy.check();
    assert!(report.is_ok(), "{}", listing(&report));
    assert!(report.messages.contains(&"nuovo_avviso".to_string()));
    let line = copy.edit("nuovo_avviso/body.txt", "{{ portal_url }}", "{{ portale }}");
    assert_caught(
        &copy,
        "nuovo_avviso/body.txt",
        Some(line),
        "variabile sconosciuta `portale`",
    );
}

// -------------------------------------------------------------------------------------------
// Golden renders and safety

fn golden_dir() -> PathBuf {
    repo_path("tests/golden")
}

/// Every message rendered with every sample, as golden text: (message, sample id, text).
fn golden_renders() -> Vec<(String, String, String)> {
    let dir = repo_path("templates");
    let settings = settings(&dir);
    let set = TemplateSet::load(&dir).expect("templates");
    let sources = templates::read_sources(&dir).unwrap();
    let reopening = editor::reopening_messages(&sources);
    let mut out = Vec::new();
    for message in set.messages() {
        for sample in editor::samples() {
            let ctx = editor::context(&settings, &message, &sample, reopening.contains(&message));
            let r = set
                .render(&message, &ctx)
                .unwrap_or_else(|e| panic!("{message} with {}: {e}", sample.id));
            let text = format!(
                "# {message} / {}: {}\n# to: {} <{}>\n\nSubject: {}\n\n===== text =====\n{}\n===== html =====\n{}",
                sample.id,
                sample.description,
                sample.user.full_name,
                sample.to_address,
                r.subject,
                r.text,
                r.html
            );
            out.push((message.clone(), sample.id.clone(), text));
        }
    }
    out
}

/// A short line diff: the changed region between the common first and last lines, with line
/// numbers (`-` golden, `+` now).
fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let prefix = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let suffix = e[prefix..]
        .iter()
        .rev()
        .zip(a[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = String::new();
    for (sign, lines) in [("-", &e), ("+", &a)] {
        let changed = &lines[prefix..lines.len() - suffix];
        for (k, line) in changed.iter().enumerate().take(12) {
            out.push_str(&format!("    {:>4} {sign} {line}\n", prefix + k + 1));
        }
        if changed.len() > 12 {
            out.push_str(&format!(
                "         {sign} ... {} more lines\n",
                changed.len() - 12
            ));
        }
    }
    if out.is_empty() {
        out.push_str("    (only line endings or the final newline differ)\n");
    }
    out
}

#[test]
fn golden_renders_of_every_message() {
    let update = std::env::var("AVVISI_UPDATE_GOLDEN").as_deref() == Ok("1");
    let root = golden_dir();
    let renders = golden_renders();
    let hint = "run `AVVISI_UPDATE_GOLDEN=1 cargo test --test api templates` and review the \
                changes under tests/golden/";
    let mut failures: Vec<String> = Vec::new();
    let mut expected_files: BTreeSet<PathBuf> = BTreeSet::new();
    for (message, sample, text) in &renders {
        let path = root.join(message).join(format!("{sample}.txt"));
        expected_files.insert(path.clone());
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            continue;
        }
        if !root.join(message).is_dir() {
            let m = format!("message `{message}` has no golden files (a new message?): {hint}");
            if !failures.contains(&m) {
                failures.push(m);
            }
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(golden) if golden == *text => {}
            Ok(golden) => failures.push(format!(
                "{} differs from what `{message}` renders with sample `{sample}` \
                 (- golden, + now):\n{}",
                path.display(),
                diff(&golden, text)
            )),
            Err(_) => failures.push(format!("{} is missing: {hint}", path.display())),
        }
    }
    // Golden files of messages or samples that no longer exist.
    if let Ok(folders) = std::fs::read_dir(&root) {
        for folder in folders.map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
            for file in std::fs::read_dir(&folder)
                .unwrap()
                .map(|e| e.unwrap().path())
            {
                if !expected_files.contains(&file) {
                    if update {
                        std::fs::remove_file(&file).unwrap();
                    } else {
                        failures.push(format!(
                            "{} is not rendered any more (message or sample removed): {hint}",
                            file.display()
                        ));
                    }
                }
            }
            if update && std::fs::read_dir(&folder).unwrap().next().is_none() {
                std::fs::remove_dir(&folder).unwrap();
            }
        }
    }
    if update {
        eprintln!(
            "golden files written under {} ({} renders): review them with git diff",
            root.display(),
            renders.len()
        );
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es):\n{}\nIf the changes are intended, {hint}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn user_data_is_safe_in_every_message() {
    let dir = repo_path("templates");
    let settings = settings(&dir);
    let set = TemplateSet::load(&dir).unwrap();
    let sources = templates::read_sources(&dir).unwrap();
    let reopening = editor::reopening_messages(&sources);
    let samples = editor::samples();
    for message in set.messages() {
        let mut named = false;
        for sample in &samples {
            let ctx = editor::context(&settings, &message, sample, reopening.contains(&message));
            let r = set.render(&message, &ctx).unwrap();
            let what = format!("{message} with {}", sample.id);
            // The subject is one line whatever the data.
            assert!(!r.subject.contains(['\r', '\n']), "{what}: {:?}", r.subject);
            // Text: no escaping artefacts.
            for entity in ["&amp;", "&lt;", "&gt;", "&#x27;", "&quot;", "&#x2F;"] {
                assert!(!r.text.contains(entity), "{what}: {entity} in text");
                assert!(!r.subject.contains(entity), "{what}: {entity} in subject");
            }
            // The user's name as written in text, escaped in HTML.
            let full = &sample.user.full_name;
            if r.text.contains(full.as_str()) {
                named = true;
                let escaped = tera::escape_html(full);
                assert!(r.html.contains(&escaped), "{what}: {escaped} in HTML");
            }
            if full.contains('<') {
                assert!(
                    !r.html.contains("<b>Anna"),
                    "{what}: markup from data in HTML"
                );
            }
            // CR/LF in the data: folded, so no header can be added through the name.
            if sample.id.ends_with("-a-capo") {
                assert!(
                    !r.text.contains("Mario\n") && !r.text.contains("Mario\r"),
                    "{what}"
                );
                let message_id = format!("<golden.{}@istruzione.it>", sample.id);
                let email = email::build(
                    &settings.mail,
                    &Envelope {
                        to_address: &sample.to_address,
                        to_name: full,
                        message_id: &message_id,
                        campaign: &ctx.campaign,
                        step: sample.situation.step,
                        date: at("2026-11-23T10:00:00+01:00").into(),
                    },
                    &r,
                )
                .unwrap();
                let eml = String::from_utf8(email.formatted()).unwrap();
                let names: Vec<String> = headers(&eml)
                    .into_iter()
                    .map(|(n, _)| n.to_ascii_lowercase())
                    .collect();
                assert!(!names.contains(&"bcc".to_string()), "{what}: {names:?}");
                let to = decode_header(&header(&eml, "To").unwrap());
                assert!(
                    to.contains("Mario Bcc: intruso@example.org Bianchi"),
                    "{to}"
                );
            }
        }
        assert!(named, "{message} never shows the recipient's name");
    }
}

// -------------------------------------------------------------------------------------------
// Preview

fn sample_preview(out: &Path) -> (PreviewReport, TemplateSet, Settings) {
    let dir = repo_path("templates");
    let settings = settings(&dir);
    let set = TemplateSet::load(&dir).unwrap();
    let samples = editor::samples();
    let input = PreviewInput {
        samples: &samples,
        reopened_at: None,
        description: "sample data".into(),
        now: at("2026-11-23T10:00:00+01:00"),
        day: None,
    };
    let report = preview::write_preview(&set, &settings, &input, out).unwrap();
    (report, set, settings)
}

#[test]
fn preview_writes_every_message_and_variant() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("preview");
    let (report, set, settings) = sample_preview(&out);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.messages, set.messages());
    let samples = editor::samples();
    assert_eq!(report.emails, set.messages().len() * samples.len());
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(
        index.matches("<article class=\"variant\"").count(),
        report.emails
    );
    assert_eq!(index.matches("<iframe sandbox").count(), report.emails);
    assert_eq!(index.matches("<pre>").count(), report.emails);
    let sources = templates::read_sources(&repo_path("templates")).unwrap();
    let reopening = editor::reopening_messages(&sources);
    for message in set.messages() {
        assert!(index.contains(&format!("<h2>{message}</h2>")));
        for sample in &samples {
            let id = &sample.id;
            for ext in ["html", "txt", "eml"] {
                let file = out.join(&message).join(format!("{id}.{ext}"));
                assert!(file.is_file(), "{}", file.display());
                assert!(
                    index.contains(&format!("href=\"{message}/{id}.{ext}\"")),
                    "link to {message}/{id}.{ext}"
                );
            }
            let ctx = editor::context(&settings, &message, sample, reopening.contains(&message));
            let r = set.render(&message, &ctx).unwrap();
            assert!(
                index.contains(&format!(
                    "<span class=\"subject-text\">{}</span>",
                    tera::escape_html(&r.subject)
                )),
                "subject of {message}/{id}"
            );
            assert!(index.contains(&format!("<pre>{}</pre>", tera::escape_html(&r.text))));
            // The .eml is the email as it would be sent.
            let eml =
                std::fs::read_to_string(out.join(&message).join(format!("{id}.eml"))).unwrap();
            assert_eq!(decode_header(&header(&eml, "Subject").unwrap()), r.subject);
            assert_eq!(
                header(&eml, "X-Avvisi-Campaign").unwrap(),
                format!("{}/{}", ctx.campaign, ctx.step)
            );
            assert!(header(&eml, "To").unwrap().contains(&sample.to_address));
            let html =
                std::fs::read_to_string(out.join(&message).join(format!("{id}.html"))).unwrap();
            assert_eq!(html, r.html);
        }
    }
}

async fn preview_for_a_user_from_the_database(app: TestApp) {
    app.import_examples().await;
    let templates_dir = repo_path("templates");
    // The examples were imported at the test clock (23 November): not too old for reminders.
    let env = [
        ("AVVISI__DATABASE__URL", app.database_url.as_str()),
        ("AVVISI__TEMPLATES__DIR", templates_dir.to_str().unwrap()),
        ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000"),
    ];
    let day = "2026-11-27T10:00:00+01:00";
    let preview = |user: &str| {
        let out = app.dir.path().join(format!("preview-{user}"));
        let result = avvisi_bin(
            &[
                "templates",
                "preview",
                "--out",
                out.to_str().unwrap(),
                "--user",
                user,
                "--now",
                day,
            ],
            &env,
        );
        assert!(
            result.status.success(),
            "{}{}",
            stdout(&result),
            stderr(&result)
        );
        let index = std::fs::read_to_string(out.join("index.html")).unwrap();
        (out, index)
    };

    // U0007 has a new address to validate, the maintenance notice is due and the advice on
    // credentials rides along: on 27 November, one digest with those three sections, nothing
    // else (no message of a procedure they do not have, no sample variant).
    let (out, index) = preview("U0007");
    assert!(index.contains("Giuseppe Russo"), "the user's name");
    assert!(index.contains("il 27 novembre 2026"), "the day");
    assert_eq!(
        index.matches("<article class=\"variant\"").count(),
        1,
        "{index}"
    );
    assert!(index.contains("<h2>digest</h2>"), "{index}");
    assert!(
        index.contains(
            "3 sezioni (email_unvalidated, maintenance_notice, credential_recovery_advice)"
        ),
        "{index}"
    );
    for other in [
        "registration_incomplete",
        "code_regeneration_pending",
        "reopening_general",
    ] {
        assert!(
            !index.contains(&format!("<h2>{other}</h2>")),
            "{other}: {index}"
        );
    }
    for sample_name in ["-html", "-a-capo", "-crlf", "-markup"] {
        assert!(!index.contains(sample_name), "{sample_name}: {index}");
    }
    let eml = std::fs::read_to_string(out.join("digest").join("2026-11-27-U0007.eml")).unwrap();
    assert!(header(&eml, "To")
        .unwrap()
        .contains("<giuseppe.russo@gmail.com>"));
    let preview_subject = decode_header(&header(&eml, "Subject").unwrap());
    let text = std::fs::read_to_string(out.join("digest").join("2026-11-27-U0007.txt")).unwrap();
    assert!(text.contains("Gentile Giuseppe Russo"), "{text}");

    // The real pass on that day sends U0007 the email the preview showed.
    let run = app.avvisi(&["run", "--once", "--now", day], &env[1..]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut sent = Vec::new();
    for entry in std::fs::read_dir(app.outbox_dir()).unwrap() {
        let path = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if header(&text, "To").is_some_and(|to| to.contains("giuseppe.russo@gmail.com")) {
            sent.push(decode_header(&header(&text, "Subject").unwrap()));
        }
    }
    assert_eq!(sent, [preview_subject], "what the pass sent to U0007");

    // One message alone, and nothing at all.
    let (_, index) = preview("U0002");
    assert!(
        index.contains("<h2>registration_incomplete</h2>"),
        "{index}"
    );
    assert_eq!(index.matches("<article class=\"variant\"").count(), 1);
    let (_, index) = preview("U0037");
    assert!(index.contains("non riceve alcun messaggio"), "{index}");
    assert_eq!(index.matches("<article").count(), 0);

    let unknown = avvisi_bin(
        &[
            "templates",
            "preview",
            "--out",
            app.dir.path().join("unknown").to_str().unwrap(),
            "--user",
            "U9999",
        ],
        &env,
    );
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no user `U9999`"),
        "{}",
        stderr(&unknown)
    );
}

on_both_backends!(preview_for_a_user_from_the_database);

// -------------------------------------------------------------------------------------------
// The sandbox: a template reaches nothing but the message's context

/// A value only the child process's environment holds: found in an email only if a template
/// could read the environment.
const SECRET: &str = "s3cr3t-from-the-environment-7f1c";

#[test]
fn check_refuses_get_env_by_name() {
    let copy = Copy::new();
    let line = copy.edit(
        "registration_incomplete/body.txt",
        "Gentile {{ user.first_name }}",
        "Gentile {{ get_env(name=\"AVVISI__DATABASE__URL\") }}",
    );
    assert_caught(
        &copy,
        "registration_incomplete/body.txt",
        Some(line),
        "`get_env()` è rifiutata",
    );
    // Loaded without the check (as `plan` and `run` do), it renders an error, not the value.
    let set = TemplateSet::load(&copy.dir).unwrap();
    let settings = settings(&copy.dir);
    let sample = &editor::samples()[0];
    let ctx = editor::context(&settings, "registration_incomplete", sample, false);
    let err = set
        .render("registration_incomplete", &ctx)
        .expect_err("get_env renders nothing")
        .to_string();
    assert!(err.contains("`get_env()` è rifiutata"), "{err}");
}

#[test]
fn check_refuses_a_template_outside_the_folder() {
    let copy = Copy::new();
    let secret = copy._tmp.path().join("secret.txt");
    std::fs::write(&secret, SECRET).unwrap();
    let line = copy.edit(
        "registration_incomplete/body.txt",
        "{% block content -%}",
        "{% block content -%}{% include \"../secret.txt\" %}",
    );
    assert_caught(
        &copy,
        "registration_incomplete/body.txt",
        Some(line),
        "`../secret.txt` è fuori dalla cartella dei modelli",
    );
}

/// A link in the templates folder, to a file or a folder outside it, is refused by name: by
/// the check (through the library and the binary), and when the set is loaded to render.
#[test]
fn a_symbolic_link_in_the_templates_folder_is_refused() {
    for (link, what) in [("layout/passwd.txt", "file"), ("shared", "folder")] {
        let copy = Copy::new();
        let outside = copy._tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("passwd.txt"), format!("root:{SECRET}\n")).unwrap();
        let target = if what == "file" {
            outside.join("passwd.txt")
        } else {
            outside.clone()
        };
        std::os::unix::fs::symlink(&target, copy.path(link)).unwrap();
        let included = if what == "file" {
            "layout/passwd.txt"
        } else {
            "shared/passwd.txt"
        };
        copy.edit(
            "layout/base.txt",
            "{% block content %}",
            &format!("{{% include \"{included}\" %}}{{% block content %}}"),
        );
        assert_caught(
            &copy,
            link,
            None,
            &format!("`{link}` è un collegamento simbolico"),
        );
        let err = TemplateSet::load(&copy.dir)
            .err()
            .unwrap_or_else(|| panic!("a link to a {what} was followed"))
            .to_string();
        assert!(
            err.contains(&format!("`{link}` è un collegamento simbolico")),
            "{err}"
        );
        assert!(!err.contains(SECRET), "{err}");
    }
}

/// The attack as reported, through `avvisi run --once`: a layout that prints an environment
/// variable and a layout that includes a link to a file outside the folder. Nothing secret goes
/// out: the get_env messages wait for a fixed template (the error says why), the set with a
/// link does not load, and no output or email carries the value.
async fn templates_cannot_read_the_environment_or_files_outside_the_set(app: TestApp) {
    let run = |dir: &Path| {
        app.avvisi(
            &[
                "run",
                "--once",
                "--import",
                "examples/users.csv",
                "--now",
                "2026-11-23T10:00:00+01:00",
            ],
            &[
                ("AVVISI__TEMPLATES__DIR", dir.to_str().unwrap()),
                // The folder rendered as it is (a published set passed the check, which
                // refuses both attacks): the sandbox at render time is what is tested here.
                ("AVVISI__TEMPLATES__DEVELOPMENT", "true"),
                ("AVVISI_TEST_SECRET", SECRET),
            ],
        )
    };
    let printed = |o: &Output| format!("{}{}", stdout(o), stderr(o));

    let env_dir = app.dir.path().join("templates-env");
    copy_tree(&repo_path("templates"), &env_dir);
    let base = std::fs::read_to_string(env_dir.join("layout/base.txt")).unwrap();
    std::fs::write(
        env_dir.join("layout/base.txt"),
        base.replacen(
            "{% block content %}",
            "{{ get_env(name=\"AVVISI_TEST_SECRET\") }}{% block content %}",
            1,
        ),
    )
    .unwrap();
    let o = run(&env_dir);
    assert!(!printed(&o).contains(SECRET), "{}", printed(&o));
    assert!(app.eml_files().is_empty(), "an email went out");
    let reasons: Vec<Option<String>> =
        sqlx::query_scalar("SELECT reason FROM outbox WHERE state = 'pending'")
            .fetch_all(app.db.pool())
            .await
            .unwrap();
    assert!(!reasons.is_empty());
    for reason in &reasons {
        let reason = reason.as_deref().unwrap_or_default();
        assert!(reason.contains("`get_env()` è rifiutata"), "{reason}");
        assert!(!reason.contains(SECRET), "{reason}");
    }

    let link_dir = app.dir.path().join("templates-link");
    copy_tree(&repo_path("templates"), &link_dir);
    let outside = app.dir.path().join("passwd");
    std::fs::write(&outside, format!("root:{SECRET}\n")).unwrap();
    std::os::unix::fs::symlink(&outside, link_dir.join("layout/passwd.txt")).unwrap();
    let base = std::fs::read_to_string(link_dir.join("layout/base.txt")).unwrap();
    std::fs::write(
        link_dir.join("layout/base.txt"),
        base.replacen(
            "{% block content %}",
            "{% include \"layout/passwd.txt\" %}{% block content %}",
            1,
        ),
    )
    .unwrap();
    let o = run(&link_dir);
    assert!(!o.status.success(), "{}", printed(&o));
    assert!(
        printed(&o).contains("`layout/passwd.txt` è un collegamento simbolico"),
        "{}",
        printed(&o)
    );
    assert!(!printed(&o).contains(SECRET), "{}", printed(&o));
    assert!(app.eml_files().is_empty(), "an email went out");
}

on_both_backends!(templates_cannot_read_the_environment_or_files_outside_the_set);

/// Runs headless Chromium on `file` and returns the DOM it built.
fn chromium_dom(chromium: &str, file: &Path, profile: &Path) -> String {
    chromium_dom_of(chromium, &format!("file://{}", file.display()), profile)
}

/// Runs headless Chromium on `url` and returns the DOM it built.
pub fn chromium_dom_of(chromium: &str, url: &str, profile: &Path) -> String {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Read while it runs: the DOM is larger than a pipe's buffer.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in 120 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = reader.join().unwrap();
    let errors = err_reader.join().unwrap();
    assert!(
        status.success() && !dom.is_empty(),
        "chromium failed ({status}) on {url}: {errors}"
    );
    dom
}

/// How Chromium serialises a text node.
fn dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

pub fn find_chromium() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser"] {
        if std::env::split_paths(&path).any(|d| d.join(name).is_file()) {
            return Some(name.to_string());
        }
    }
    None
}

#[test]
fn preview_renders_in_headless_chromium() {
    let Some(chromium) = find_chromium() else {
        crate::helpers::skip_or_fail(
            "AVVISI_REQUIRE_CHROMIUM",
            "the Chromium preview test: chromium is not installed (apt-get install chromium)",
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("preview");
    let (report, set, settings) = sample_preview(&out);
    let profile = tmp.path().join("profile");
    let dom = chromium_dom(&chromium, &out.join("index.html"), &profile);

    let variants = set.messages().len() * editor::samples().len();
    assert!(
        dom.contains("<h1>Anteprima dei messaggi</h1>"),
        "{}",
        &dom[..dom.len().min(2000)]
    );
    assert_eq!(dom.matches("<article class=\"variant\"").count(), variants);
    assert_eq!(dom.matches("<iframe ").count(), variants, "HTML versions");
    assert_eq!(dom.matches("<pre>").count(), variants, "text versions");
    assert_eq!(dom.matches("class=\"eml\"").count(), report.emails);
    let sources = templates::read_sources(&repo_path("templates")).unwrap();
    let reopening = editor::reopening_messages(&sources);
    for message in set.messages() {
        assert!(dom.contains(&format!("<h2>{message}</h2>")), "{message}");
        for sample in editor::samples() {
            let ctx = editor::context(&settings, &message, &sample, reopening.contains(&message));
            let r = set.render(&message, &ctx).unwrap();
            assert!(
                dom.contains(&format!(
                    "<span class=\"subject-text\">{}</span>",
                    dom_text(&r.subject)
                )),
                "Chromium shows the subject of {message}/{}",
                sample.id
            );
            assert!(
                dom.contains(&format!("<pre>{}</pre>", dom_text(&r.text))),
                "Chromium shows the text of {message}/{}",
                sample.id
            );
        }
    }

    // One email's HTML on its own: the hostile name is text, not markup.
    let message = &set.messages()[0];
    let markup = editor::samples()
        .into_iter()
        .find(|s| s.user.first_name.contains('<'))
        .unwrap();
    let email_dom = chromium_dom(
        &chromium,
        &out.join(message).join(format!("{}.html", markup.id)),
        &profile,
    );
    assert!(
        email_dom.contains("&lt;b&gt;Anna&lt;/b&gt; Rossi &amp; Figli"),
        "the name shown as written: {email_dom}"
    );
    assert!(
        !email_dom.contains("<b>Anna</b>"),
        "no markup from user data"
    );
}
