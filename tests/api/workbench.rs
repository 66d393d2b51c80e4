//! The editors' workbench (issue 24, item 2) against the real daemon. In headless Chromium: an
//! editor starts a draft, breaks `subject.txt` and sees the check's error at its file and line
//! (no publish button), fixes it, previews the draft for a real user and a three-section digest,
//! reads "what changes" for a campaign's real recipients, publishes with a note; the next
//! `run --once` sends the new subject, each row carrying the new digest; a rollback from the
//! history page, and the next campaign's emails have the old subject again; axe-core finds no
//! WCAG 2.1 A or AA violation on each page. Over plain HTTP: the workbench's POSTs refused with
//! 403 to a viewer and an operator and without the CSRF token; a broken draft refused by the
//! server whatever the page shows; with `approval.templates = true` the author alone cannot
//! publish (nor can the command line) until another editor approved that very set; rollback.

use std::path::Path;

use sqlx::Row;

use crate::console::{ok_as, text, PASSWORD};
use crate::console_http::{
    add_account, audit, audited, create, csrf, daemon, get, post, signed_in,
};
use crate::console_web::{
    accessible, appears, axe_script, browser, choose, chromedriver, click, click_link, fill, page,
    shows, sign_in,
};
use crate::helpers::{decode_header, header, TestApp};
use crate::on_both_backends;

/// Bob approves Alice's one-off campaign `name`, she launches it, and a run at `now` sends it.
fn approve_launch_and_send(t: &TestApp, name: &str, now: &str) {
    ok_as(t, "bob", &["campaign", "approve", name, "--yes"], None);
    ok_as(t, "alice", &["campaign", "launch", name], None);
    ok_as(t, "root", &["run", "--once", "--now", now], None);
}

/// The decoded subjects of the `.eml` files written for campaign `name`.
fn subjects_of(t: &TestApp, name: &str) -> Vec<String> {
    t.eml_files()
        .into_iter()
        .filter(|(n, _)| n.starts_with(&format!("{name}.")))
        .map(|(_, eml)| decode_header(&header(&eml, "Subject").expect("a subject")))
        .collect()
}

on_both_backends!(
    an_editor_changes_a_subject_in_the_browser_and_the_next_run_sends_it,
    the_workbench_asks_the_role_the_token_the_check_and_the_approval,
);

const FILE: &str = "maintenance_notice/subject.txt";
const BROKEN: &str =
    "{{ service_name : nuovo servizio dal {{ maintenance_start | data_estesa_it }}";
const FIXED: &str = "{% if is_test %}[PROVA] {% endif %}{{ service_name }}: nuovo servizio dal \
                     {{ maintenance_start | data_estesa_it }}";

/// The publications, oldest first, as (digest, kind).
async fn publications(t: &TestApp) -> Vec<(String, String)> {
    sqlx::query("SELECT digest, kind FROM template_publications ORDER BY id")
        .fetch_all(t.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("digest"), r.get("kind")))
        .collect()
}

/// The text of `author`'s draft file `path`.
async fn draft_file(t: &TestApp, author: &str, path: &str) -> String {
    sqlx::query("SELECT content FROM template_draft_files WHERE author = $1 AND path = $2")
        .bind(author)
        .bind(path)
        .fetch_one(t.db.pool())
        .await
        .unwrap()
        .get("content")
}

/// A user of `province` among the examples' enabled users.
async fn user_of(t: &TestApp, province: &str) -> String {
    sqlx::query("SELECT user_id FROM users WHERE province = $1 ORDER BY user_id LIMIT 1")
        .bind(province)
        .fetch_one(t.db.pool())
        .await
        .unwrap()
        .get("user_id")
}

async fn an_editor_changes_a_subject_in_the_browser_and_the_next_run_sends_it(t: TestApp) {
    let Some((driver, port)) = chromedriver(&t.dir.path().join("chromedriver.log")).await else {
        return;
    };
    t.import_examples().await;
    add_account(&t, "eva", "editor");
    create(&t, "alice", "avviso-bo", "BO");
    let (daemon, address) = daemon(&t, &t.dir.path().join("daemon.log"), &[]).await;
    let site = format!("http://{address}");
    let b = browser(port, &t.dir.path().join("profile")).await;
    let axe = axe_script();
    let axe = axe.as_deref();

    sign_in(&b, &site, "eva", PASSWORD).await;
    click_link(&b, "/console/modelli").await;
    click(&b, "/console/modelli/bozza").await;
    appears(&b, "ul.file").await;
    accessible(&b, axe, "the workbench with a draft").await;
    let seed = publications(&t).await;
    assert_eq!(seed.len(), 1, "{seed:?}");

    // A broken edit: the error at its file and line, and no way to publish.
    let href = format!("/console/modelli/file/{FILE}");
    appears(&b, &format!("a[href=\"{href}\"]"))
        .await
        .click()
        .await
        .unwrap();
    appears(&b, "#riga-1").await;
    accessible(&b, axe, "a file of the draft").await;
    let area = appears(&b, "#contenuto").await;
    area.clear().await.unwrap();
    area.send_keys(BROKEN).await.unwrap();
    click(&b, &href).await;
    appears(&b, "#problemi").await;
    let shown = page(&b).await;
    assert!(shown.contains(&format!("{FILE}:1")), "{shown}");
    assert!(
        shown.contains("Salvato nella bozza (non pubblicato)"),
        "{shown}"
    );
    accessible(&b, axe, "a file with a check error").await;
    assert_eq!(draft_file(&t, "eva", FILE).await, BROKEN);
    // A save is never live.
    assert_eq!(publications(&t).await, seed);
    b.goto(&format!("{site}/console/modelli")).await.unwrap();
    appears(&b, "#problemi").await;
    assert!(!page(&b)
        .await
        .contains("action=\"/console/modelli/pubblica\""));

    // Fixed: the check passes.
    b.goto(&format!("{site}{href}")).await.unwrap();
    let area = appears(&b, "#contenuto").await;
    area.clear().await.unwrap();
    area.send_keys(FIXED).await.unwrap();
    click(&b, &href).await;
    appears(&b, "p.notice#esito").await;
    assert_eq!(draft_file(&t, "eva", FILE).await, FIXED);

    // The draft for a real user, only that user.
    let user = user_of(&t, "BO").await;
    click_link(&b, "/console/modelli").await;
    fill(&b, "destinatario", &user).await;
    click(&b, "/console/modelli/anteprima").await;
    appears(&b, "p#descrizione").await;
    let shown = page(&b).await;
    assert!(shown.contains(&format!("Utente {user} (")), "{shown}");
    accessible(&b, axe, "the draft for a real user").await;
    // A three-section digest of the samples.
    click_link(&b, "/console/modelli").await;
    choose(&b, "messaggio", "digest").await;
    choose(&b, "esempio", "7-giorni-nicolo").await;
    click(&b, "/console/modelli/esempio").await;
    shows(&b, "riepilogo di 3 sezioni").await;
    appears(&b, "pre.intestazioni").await;
    accessible(&b, axe, "a sample digest of the draft").await;

    // What changes: the campaign's real recipients, the old subject removed, the new added.
    b.goto(&format!("{site}/console/modelli/modifiche"))
        .await
        .unwrap();
    appears(&b, "pre.diff").await;
    let shown = page(&b).await;
    assert!(shown.contains("avviso-bo"), "{shown}");
    assert!(
        shown.contains("<del class=\"tolta\">- ") && shown.contains("aggiornamento del servizio"),
        "{shown}"
    );
    assert!(
        shown.contains("<ins class=\"aggiunta\">+ ") && shown.contains("nuovo servizio dal"),
        "{shown}"
    );
    accessible(&b, axe, "what changes").await;

    // Publish, with a note.
    b.goto(&format!("{site}/console/modelli")).await.unwrap();
    fill(&b, "nota", "oggetto dell'avviso di manutenzione").await;
    click(&b, "/console/modelli/pubblica").await;
    shows(&b, "oggetto dell'avviso di manutenzione").await;
    accessible(&b, axe, "the published versions").await;
    let after = publications(&t).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1].1, "publish");
    let published = after[1].0.clone();
    b.close().await.unwrap();
    daemon.terminate().await;
    driver.terminate().await;

    // The next run sends the new subject, every row of the campaign with the new digest.
    approve_launch_and_send(&t, "avviso-bo", "2026-11-23T10:30:00+01:00");
    let digests: Vec<String> = sqlx::query(
        "SELECT DISTINCT o.template_digest FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         WHERE c.name = 'avviso-bo' AND o.state = 'sent'",
    )
    .fetch_all(t.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(digests, [published]);
    let subjects = subjects_of(&t, "avviso-bo");
    assert!(!subjects.is_empty());
    for subject in &subjects {
        assert!(subject.contains("nuovo servizio dal"), "{subject}");
    }

    // Rollback from the history page, in the browser: what is sent next has the old wording.
    let (driver, port) = chromedriver(&t.dir.path().join("chromedriver-2.log"))
        .await
        .expect("chromedriver, which ran a moment ago");
    let (daemon, address) =
        crate::console_http::daemon(&t, &t.dir.path().join("daemon-2.log"), &[]).await;
    let site = format!("http://{address}");
    let b = browser(port, &t.dir.path().join("profile-2")).await;
    sign_in(&b, &site, "eva", PASSWORD).await;
    b.goto(&format!("{site}/console/modelli/storia"))
        .await
        .unwrap();
    let seed_digest = seed[0].0.clone();
    fill(&b, "nota-1", "torna come prima").await;
    click(&b, &format!("/console/modelli/ripristina/{seed_digest}")).await;
    shows(&b, "torna come prima").await;
    accessible(&b, axe, "the published versions after a rollback").await;
    let last = publications(&t).await.pop().unwrap();
    assert_eq!(last, (seed_digest.clone(), "rollback".to_string()));
    b.close().await.unwrap();
    daemon.terminate().await;
    driver.terminate().await;
    create(&t, "alice", "avviso-mi", "MI");
    approve_launch_and_send(&t, "avviso-mi", "2026-11-23T10:45:00+01:00");
    let rolled_back = subjects_of(&t, "avviso-mi");
    assert!(!rolled_back.is_empty());
    for subject in &rolled_back {
        assert!(
            subject.contains("aggiornamento del servizio")
                && !subject.contains("nuovo servizio dal"),
            "{subject}"
        );
    }

    let entries = audit(&t);
    let saves = audited(&entries, "eva", "templates.save");
    assert_eq!(
        saves.iter().filter(|(o, r)| o == FILE && r == "ok").count(),
        2,
        "{saves:?}"
    );
    // The audit log names the file, never its text.
    let raw = serde_json::to_string(&entries).unwrap();
    assert!(!raw.contains("nuovo servizio dal"), "{raw}");
    assert_eq!(
        audited(&entries, "eva", "templates.publish")
            .iter()
            .filter(|(_, r)| r == "ok")
            .count(),
        1
    );
}

/// `avvisi templates publish DIR` with `approval.templates = true`, as `user`.
fn publish_cli(t: &TestApp, user: &str, dir: &Path) -> std::process::Output {
    let mut cmd = t.command(&[
        "templates",
        "publish",
        dir.to_str().unwrap(),
        "--note",
        "dalla riga di comando",
    ]);
    cmd.env("USER", user)
        .env("AVVISI__APPROVAL__TEMPLATES", "true")
        .output()
        .expect("avvisi")
}

async fn the_workbench_asks_the_role_the_token_the_check_and_the_approval(t: TestApp) {
    t.import_examples().await;
    for (name, role) in [
        ("eva", "editor"),
        ("ugo", "editor"),
        ("vera", "viewer"),
        ("mario", "operator"),
        ("anna", "approver"),
    ] {
        add_account(&t, name, role);
    }
    let approval = [("AVVISI__APPROVAL__TEMPLATES", "true")];
    let (daemon, address) = daemon(&t, &t.dir.path().join("daemon.log"), &approval).await;
    let eva = signed_in(&address, "eva").await;
    let ugo = signed_in(&address, "ugo").await;
    let vera = signed_in(&address, "vera").await;
    let mario = signed_in(&address, "mario").await;
    let token = |who: &'static str, cookie: String| {
        let address = address.clone();
        async move {
            let page = get(&address, "/console/coda", Some(&cookie)).await;
            assert_eq!(page.code, 200, "{who}");
            csrf(&page.body)
        }
    };
    let eva_csrf = token("eva", eva.clone()).await;
    let ugo_csrf = token("ugo", ugo.clone()).await;
    let vera_csrf = token("vera", vera.clone()).await;
    let mario_csrf = token("mario", mario.clone()).await;
    let file_path = format!("/console/modelli/file/{FILE}");

    // Not for a viewer or an operator, whatever they post.
    assert_eq!(
        get(&address, "/console/modelli", Some(&vera)).await.code,
        403
    );
    for (cookie, csrf, path) in [
        (&vera, &vera_csrf, "/console/modelli/bozza"),
        (&mario, &mario_csrf, "/console/modelli/bozza"),
        (&mario, &mario_csrf, file_path.as_str()),
        (&vera, &vera_csrf, "/console/modelli/pubblica"),
        (&mario, &mario_csrf, "/console/modelli/approva/eva"),
    ] {
        let a = post(
            &address,
            path,
            cookie,
            &[("csrf", csrf), ("contenuto", FIXED), ("nota", "x")],
        )
        .await;
        assert_eq!(a.code, 403, "{path}: {}", a.body);
    }
    // The editor starts a draft; a save without the token is refused and changes nothing.
    let a = post(
        &address,
        "/console/modelli/bozza",
        &eva,
        &[("csrf", &eva_csrf)],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    let original = draft_file(&t, "eva", FILE).await;
    let a = post(&address, &file_path, &eva, &[("contenuto", FIXED)]).await;
    assert_eq!(a.code, 403, "{}", a.body);
    assert_eq!(draft_file(&t, "eva", FILE).await, original);

    // A broken draft: the server refuses its publication, whatever a page shows.
    let a = post(
        &address,
        &file_path,
        &eva,
        &[("csrf", &eva_csrf), ("contenuto", BROKEN)],
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(a.body.contains(&format!("{FILE}:1")), "{}", a.body);
    let a = post(
        &address,
        "/console/modelli/pubblica",
        &eva,
        &[("csrf", &eva_csrf), ("nota", "rotto")],
    )
    .await;
    assert_eq!(a.code, 409, "{}", a.body);
    // Refused by the check (before any approval is looked at), with the file and line.
    assert!(a.body.contains(&format!("{FILE}:1")), "{}", a.body);
    assert!(!a.body.contains("non è approvata"), "{}", a.body);
    assert_eq!(publications(&t).await.len(), 1);

    // Fixed, but not approved: the author alone cannot publish, nor approve it.
    let a = post(
        &address,
        &file_path,
        &eva,
        &[("csrf", &eva_csrf), ("contenuto", FIXED)],
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    let a = post(
        &address,
        "/console/modelli/pubblica",
        &eva,
        &[("csrf", &eva_csrf), ("nota", "nuovo oggetto")],
    )
    .await;
    assert_eq!(a.code, 409, "{}", a.body);
    assert!(a.body.contains("non è approvata"), "{}", a.body);
    let a = post(
        &address,
        "/console/modelli/approva/eva",
        &eva,
        &[("csrf", &eva_csrf)],
    )
    .await;
    assert_eq!(a.code, 409, "{}", a.body);
    assert_eq!(publications(&t).await.len(), 1);

    // Nor the command line, with the very same files.
    let live = publications(&t).await[0].0.clone();
    let dir = t.dir.path().join("cartella");
    ok_as(
        &t,
        "root",
        &["templates", "export", &live, dir.to_str().unwrap()],
        None,
    );
    std::fs::write(dir.join(FILE), FIXED).unwrap();
    let out = publish_cli(&t, "root", &dir);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("non è approvata"), "{}", text(&out));

    // Another editor reads what changes and approves; then the author publishes.
    let a = get(&address, "/console/modelli", Some(&ugo)).await;
    assert!(
        a.body.contains("action=\"/console/modelli/approva/eva\""),
        "{}",
        a.body
    );
    assert_eq!(
        get(&address, "/console/modelli/modifiche/eva", Some(&ugo))
            .await
            .code,
        200
    );
    let a = post(
        &address,
        "/console/modelli/approva/eva",
        &ugo,
        &[("csrf", &ugo_csrf)],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    let a = post(
        &address,
        "/console/modelli/pubblica",
        &eva,
        &[("csrf", &eva_csrf), ("nota", "nuovo oggetto")],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    let after = publications(&t).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_ne!(after[1].0, live);
    // The same set from the command line is approved too (by its digest).
    let out = publish_cli(&t, "root", &dir);
    assert!(out.status.success(), "{}", text(&out));

    // Rollback to the first set from the history page's form.
    let a = get(&address, "/console/modelli/storia", Some(&eva)).await;
    assert!(
        a.body
            .contains(&format!("action=\"/console/modelli/ripristina/{live}\"")),
        "{}",
        a.body
    );
    let a = post(
        &address,
        &format!("/console/modelli/ripristina/{live}"),
        &vera,
        &[("csrf", &vera_csrf)],
    )
    .await;
    assert_eq!(a.code, 403);
    let a = post(
        &address,
        &format!("/console/modelli/ripristina/{live}"),
        &eva,
        &[("csrf", &eva_csrf), ("nota", "torna come prima")],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    let last = publications(&t).await.pop().unwrap();
    assert_eq!(last, (live.clone(), "rollback".to_string()));
    daemon.terminate().await;

    let entries = audit(&t);
    let outcomes = |who: &str, action: &str| -> Vec<String> {
        audited(&entries, who, action)
            .into_iter()
            .map(|(_, o)| o)
            .collect()
    };
    assert!(outcomes("vera", "templates.save")[0].starts_with("forbidden:"));
    assert!(outcomes("mario", "templates.save")
        .iter()
        .all(|o| o.starts_with("forbidden:")));
    assert!(outcomes("mario", "templates.approve")[0].starts_with("forbidden:"));
    assert!(outcomes("eva", "templates.save")
        .iter()
        .any(|o| o.contains("security token")));
    assert_eq!(
        outcomes("ugo", "templates.approve"),
        ["ok".to_string()],
        "{entries:?}"
    );
    assert!(outcomes("eva", "templates.approve")[0].starts_with("refused:"));
    let published = outcomes("eva", "templates.publish");
    assert_eq!(published.iter().filter(|o| *o == "ok").count(), 1);
    assert_eq!(
        published
            .iter()
            .filter(|o| o.starts_with("refused:"))
            .count(),
        2,
        "{published:?}"
    );
    assert_eq!(outcomes("eva", "templates.rollback"), ["ok".to_string()]);
    let raw = serde_json::to_string(&entries).unwrap();
    assert!(
        !raw.contains("nuovo servizio dal"),
        "no body in the audit log"
    );
}
