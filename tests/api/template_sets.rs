//! Template sets kept in the database (issue 24): `templates publish` refuses a broken folder
//! with the checker's messages; a publication is what the next run renders with, each row
//! carrying its digest; a rollback restores the old wording; export round-trips byte for byte;
//! two daemons sharing PostgreSQL follow a publication within seconds, no email mixing two sets;
//! an edit of the folder is not live by itself.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use avvisi::render::templates::TemplateSet;
use sqlx::Row;

use crate::helpers::{part, repo_path, Backend, TestApp};
use crate::on_both_backends;
use testkit::process::wait_until;

/// A copy of the repository's templates in the test's folder.
fn copy_templates(app: &TestApp, name: &str) -> PathBuf {
    let to = app.dir.path().join(name);
    copy_dir(&repo_path("templates"), &to);
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Replaces `from` by `to` in `dir/file` (which must contain it).
fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `avvisi ARGS` with the templates folder `templates`; must succeed.
fn ok(app: &TestApp, templates: &Path, args: &[&str]) -> String {
    let out = app.avvisi(
        args,
        &[
            ("AVVISI__TEMPLATES__DIR", templates.to_str().unwrap()),
            // The snapshot is imported once, at the test clock's start.
            ("AVVISI__IMPORT__MAX_AGE_HOURS", "100000"),
        ],
    );
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The published sets' digests, newest first.
fn history(app: &TestApp, templates: &Path) -> Vec<String> {
    let json = ok(app, templates, &["templates", "history", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The distinct template digests of the sent rows of `step`.
async fn digests_of(app: &TestApp, step: &str) -> Vec<String> {
    sqlx::query(
        "SELECT DISTINCT template_digest FROM outbox WHERE state = 'sent' AND step = $1 ORDER BY 1",
    )
    .bind(step)
    .fetch_all(app.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The text part of every email of the registration reminder at `step`.
fn registration_texts(app: &TestApp, step: &str) -> Vec<String> {
    let texts: Vec<String> = app
        .eml_files()
        .into_iter()
        .filter(|(n, _)| n.contains("registration_incomplete") && n.contains(&format!(".{step}.")))
        .map(|(_, eml)| part(&eml, "text/plain"))
        .collect();
    assert!(!texts.is_empty(), "no registration reminder at {step}");
    texts
}

async fn publish_refuses_a_broken_folder_with_the_checkers_messages(app: TestApp) {
    let broken = copy_templates(&app, "broken");
    edit(
        &broken,
        "registration_incomplete/body.txt",
        "Gentile {{ user.first_name }}",
        "Gentile {{ user.nome }}",
    );
    let out = app.avvisi(
        &[
            "templates",
            "publish",
            broken.to_str().unwrap(),
            "--note",
            "prova",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    let file = broken.join("registration_incomplete/body.txt");
    assert!(
        err.contains(&format!(
            "{}:3: variabile sconosciuta `user.nome`",
            file.display()
        )),
        "the checker's message with file and line: {err}"
    );
    assert!(err.contains("non è stato pubblicato nulla"), "{err}");
    assert!(
        history(&app, &repo_path("templates")).is_empty(),
        "nothing published"
    );
    // The refusal is in the audit log.
    let audit = ok(&app, &repo_path("templates"), &["audit"]);
    assert!(
        audit.contains("templates.publish")
            && audit.contains("refused: the templates have 1 problem"),
        "{audit}"
    );
}

async fn a_publication_is_what_the_next_run_renders_and_rollback_restores_it(app: TestApp) {
    let seed = copy_templates(&app, "templates");
    app.import_examples().await;
    let seeded = TemplateSet::load(&seed).unwrap().digest().to_string();
    // The first run publishes the folder (the seed) and renders with it.
    ok(
        &app,
        &seed,
        &["run", "--once", "--now", "2026-11-23T10:00:00+01:00"],
    );
    assert_eq!(history(&app, &seed), [seeded.as_str()]);
    assert_eq!(digests_of(&app, "first").await, [seeded.as_str()]);
    assert!(registration_texts(&app, "first")
        .iter()
        .all(|t| t.contains("Gentile ")));

    // An edit of the configured folder is not live by itself; a publication is: the next run
    // renders the published wording, its rows carry the new digest.
    edit(
        &seed,
        "registration_incomplete/body.txt",
        "Gentile {{",
        "Egregia/o {{",
    );
    let draft = copy_templates(&app, "draft");
    edit(
        &draft,
        "registration_incomplete/body.txt",
        "Gentile {{",
        "Gentilissima/o {{",
    );
    let new = TemplateSet::load(&draft).unwrap().digest().to_string();
    let out = ok(
        &app,
        &seed,
        &[
            "templates",
            "publish",
            draft.to_str().unwrap(),
            "--note",
            "saluto",
        ],
    );
    assert!(
        out.contains(&format!("published template set {new}")),
        "{out}"
    );
    assert!(out.contains(&format!("replacing {seeded}")), "{out}");
    ok(
        &app,
        &seed,
        &["run", "--once", "--now", "2026-11-27T10:00:00+01:00"],
    );
    assert_eq!(digests_of(&app, "d3").await, [new.as_str()]);
    assert!(registration_texts(&app, "d3")
        .iter()
        .all(|t| t.contains("Gentilissima/o ") && !t.contains("Egregia")));

    // Rolled back: the seed's wording again, its digest on the rows.
    let out = ok(&app, &seed, &["templates", "rollback", &seeded]);
    assert!(
        out.contains(&format!("rolled back to template set {seeded}")),
        "{out}"
    );
    assert_eq!(
        history(&app, &seed),
        [seeded.clone(), new.clone(), seeded.clone()]
    );
    ok(
        &app,
        &seed,
        &["run", "--once", "--now", "2026-11-29T10:00:00+01:00"],
    );
    assert_eq!(digests_of(&app, "d1").await, [seeded.as_str()]);
    assert!(registration_texts(&app, "d1")
        .iter()
        .all(|t| t.contains("Gentile ") && !t.contains("Gentilissima") && !t.contains("Egregia")));
    // Each publication and the rollback are in the audit log, by the command line's user.
    let audit = ok(&app, &seed, &["audit"]);
    assert_eq!(audit.matches("templates.publish").count(), 2, "{audit}");
    assert!(audit.contains("templates.rollback"), "{audit}");
}

async fn export_round_trips_byte_for_byte(app: TestApp) {
    let dir = copy_templates(&app, "source");
    // Bytes an editor's tools may leave: CRLF line ends (and the accents already there).
    let body = dir.join("test_message/body.txt");
    let original = std::fs::read_to_string(&body).unwrap();
    std::fs::write(&body, original.replace('\n', "\r\n")).unwrap();
    let digest = TemplateSet::load(&dir).unwrap().digest().to_string();
    ok(
        &app,
        &dir,
        &[
            "templates",
            "publish",
            dir.to_str().unwrap(),
            "--note",
            "crlf",
        ],
    );
    let out_dir = app.dir.path().join("exported");
    let out = ok(
        &app,
        &dir,
        &["templates", "export", &digest, out_dir.to_str().unwrap()],
    );
    assert!(out.contains(&format!("template set {digest}")), "{out}");
    let source = avvisi::render::templates::read_sources(&dir).unwrap();
    let exported = avvisi::render::templates::read_sources(&out_dir).unwrap();
    assert_eq!(
        source.keys().collect::<Vec<_>>(),
        exported.keys().collect::<Vec<_>>()
    );
    for name in source.keys() {
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            std::fs::read(out_dir.join(name)).unwrap(),
            "{name} byte for byte"
        );
    }
    assert_eq!(TemplateSet::load(&out_dir).unwrap().digest(), digest);
    // Into a folder that is not empty: refused, nothing written.
    let out = app.avvisi(
        &["templates", "export", &digest, out_dir.to_str().unwrap()],
        &[("AVVISI__TEMPLATES__DIR", dir.to_str().unwrap())],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not an empty folder"),
        "{}",
        stderr(&out)
    );
    // An unknown digest: said so.
    let out = app.avvisi(
        &["templates", "export", "0123456789abcdef", "/tmp/none"],
        &[],
    );
    assert!(stderr(&out).contains("no template set has the digest `0123456789abcdef`"));
}

on_both_backends!(
    publish_refuses_a_broken_folder_with_the_checkers_messages,
    a_publication_is_what_the_next_run_renders_and_rollback_restores_it,
    export_round_trips_byte_for_byte,
);

/// The digest each running daemon has live.
async fn live_digests(app: &TestApp) -> Vec<Option<String>> {
    avvisi::daemon::running_daemons(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.templates_digest)
        .collect()
}

/// Two daemon processes on one PostgreSQL database: a publication is live in both within a few
/// seconds, the reopening notices sent after it all carry its digest, and no email mixes the
/// two sets (the marker of the new layout is in both parts of every email, or in neither).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_follow_a_publication_within_seconds() {
    let Some(app) = crate::helpers::spawn_app(Backend::Postgres).await else {
        return;
    };
    let seed = copy_templates(&app, "templates");
    app.import_examples().await;
    let env = [
        ("AVVISI__TEMPLATES__DIR", seed.display().to_string()),
        ("AVVISI__DAEMON__PLANNER_CRON", "* * * * * *".to_string()),
        ("AVVISI__DAEMON__POLL_SECONDS", "1".to_string()),
        ("AVVISI__DAEMON__TEMPLATE_POLL_SECONDS", "1".to_string()),
        ("AVVISI__HTTP__ADDRESS", "".to_string()),
    ];
    // After the deadline, before the reopening is declared: nothing of the reopening is due.
    let now = "2026-12-14T10:00:00+01:00";
    let daemons: Vec<_> = (0..2)
        .map(|i| {
            let log = app.dir.path().join(format!("daemon{i}.log"));
            app.spawn(&["daemon", "--now", now], &env, &log)
        })
        .collect();
    let seeded = TemplateSet::load(&seed).unwrap().digest().to_string();
    wait_until(
        "both daemons live with the seed",
        Duration::from_secs(60),
        || async {
            let live = live_digests(&app).await;
            live.len() == 2 && live.iter().all(|d| d.as_deref() == Some(seeded.as_str()))
        },
    )
    .await;

    let draft = copy_templates(&app, "draft");
    for (file, from, to) in [
        (
            "layout/base.txt",
            "{% block content %}",
            "Versione B.\n{% block content %}",
        ),
        (
            "layout/base.html",
            "{% block content %}",
            "<p>Versione B.</p>\n{% block content %}",
        ),
    ] {
        edit(&draft, file, from, to);
    }
    let new = TemplateSet::load(&draft).unwrap().digest().to_string();
    ok(
        &app,
        &seed,
        &[
            "templates",
            "publish",
            draft.to_str().unwrap(),
            "--note",
            "versione B",
        ],
    );
    let published = Instant::now();
    wait_until(
        "both daemons live with the publication",
        Duration::from_secs(10),
        || async {
            let live = live_digests(&app).await;
            live.len() == 2 && live.iter().all(|d| d.as_deref() == Some(new.as_str()))
        },
    )
    .await;
    eprintln!(
        "live in both daemons {:?} after the publication",
        published.elapsed()
    );

    // The reopening, declared now: its notices are sent by the daemons with the new set.
    ok(
        &app,
        &seed,
        &["service", "reopen", "--at", "2026-12-14T09:00:00+01:00"],
    );
    wait_until("the reopening notices", Duration::from_secs(60), || async {
        let rows = app.outbox().await;
        let reopening: Vec<_> = rows
            .iter()
            .filter(|r| r.campaign.starts_with("reopening"))
            .collect();
        !reopening.is_empty() && reopening.iter().all(|r| r.state == "sent")
    })
    .await;
    let digests: Vec<String> = sqlx::query(
        "SELECT DISTINCT o.template_digest FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         WHERE c.kind = 'reopening'",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(
        digests,
        [new.as_str()],
        "every reopening row carries the new digest"
    );
    let emails = app.eml_files();
    let mut reopening = 0;
    for (name, eml) in &emails {
        let (text, html) = (part(eml, "text/plain"), part(eml, "text/html"));
        assert_eq!(
            text.contains("Versione B."),
            html.contains("Versione B."),
            "{name} mixes two sets"
        );
        if name.contains("reopening") {
            reopening += 1;
            assert!(text.contains("Versione B."), "{name}: the new set");
        }
    }
    assert!(reopening > 0);
    for d in &daemons {
        assert_eq!(d.terminate().await, Some(0));
    }
    app.teardown().await;
}
