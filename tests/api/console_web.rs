//! The browser console in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromedriver`, through `fantoccini`) against the real daemon. Wrong and right logins; an
//! operator creating a campaign for two provinces in the form (a wrong code refused, the form
//! kept), pausing and resuming by clicking; an approver approving it; the operator launching,
//! pausing, resuming and cancelling it; hand-made POSTs over plain TCP (a viewer's cookie with
//! its valid CSRF token; an operator's cookie without one) refused with 403; every action in
//! `avvisi audit --json` with the account's name; axe-core finds no WCAG 2.1 A or AA violation
//! on every page.

use std::path::Path;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use testkit::process::Proc;
use testkit::smtp_sink::{Fault, SmtpSink};

use crate::console::{ok_as, PASSWORD};
use avvisi::audience::Audience;

use crate::console_http::{add_account, audit, audited, create, csrf, daemon, request, state};
use crate::helpers::TestApp;
use crate::on_both_backends;

on_both_backends!(people_use_the_console_in_a_browser);

/// `chromedriver` on a port it binds itself (read back from what it prints), or `None` when it
/// is not installed (a failure under CI: see `skip_or_fail`).
pub(crate) async fn chromedriver(log: &Path) -> Option<(Proc, u16)> {
    let path = std::env::var_os("PATH")?;
    if !std::env::split_paths(&path).any(|d| d.join("chromedriver").is_file()) {
        crate::helpers::skip_or_fail(
            "AVVISI_REQUIRE_CHROMIUM",
            "the console's browser test: chromedriver is not installed (apt-get install chromium-driver)",
        );
        return None;
    }
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = std::process::Command::new("chromedriver");
    cmd.arg("--port=0")
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let driver = Proc::spawn(&mut cmd, crate::helpers::PROCESS_TIMEOUT);
    let line = testkit::process::wait_for_line(
        log,
        "started successfully on port",
        Duration::from_secs(60),
    )
    .await;
    let port = line
        .rsplit("port ")
        .next()
        .and_then(|p| p.trim().trim_end_matches('.').parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"));
    Some((driver, port))
}

/// A headless Chromium with a profile folder of its own.
pub(crate) async fn browser(port: u16, profile: &Path) -> Client {
    // rustls has two providers in the test build (ring from lettre, aws-lc-rs from
    // fantoccini's hyper-rustls) and then picks none by itself; the driver is plain HTTP anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

/// Fills the login form and submits it.
pub(crate) async fn sign_in(b: &Client, site: &str, name: &str, password: &str) {
    b.goto(&format!("{site}/accedi")).await.unwrap();
    b.find(Locator::Id("nome"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    b.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    b.find(Locator::Css("form[action=\"/accedi\"] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The element `css` once the page shows it (a click's navigation ends when its page loads,
/// which WebDriver does not wait for).
pub(crate) async fn appears(b: &Client, css: &str) -> fantoccini::elements::Element {
    b.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within 30 s: {e}"))
}

/// Waits until the page's text contains `text`.
pub(crate) async fn shows(b: &Client, text: &str) {
    testkit::process::wait_until(
        &format!("the page to show {text:?}"),
        Duration::from_secs(30),
        || async { page(b).await.contains(text) },
    )
    .await;
}

/// Waits until campaign `name` is in state `want` in the database.
async fn until_state(t: &TestApp, name: &str, want: &str) {
    testkit::process::wait_until(
        &format!("{name} {want}"),
        Duration::from_secs(30),
        || async { state(t, name).await == want },
    )
    .await;
}

/// Clicks the button of the form posting to `action`, once the page has it.
pub(crate) async fn click(b: &Client, action: &str) {
    appears(b, &format!("form[action=\"{action}\"] button"))
        .await
        .click()
        .await
        .unwrap();
}

/// Follows the navigation link to `href`.
pub(crate) async fn click_link(b: &Client, href: &str) {
    appears(b, &format!("nav a[href=\"{href}\"]"))
        .await
        .click()
        .await
        .unwrap();
}

/// Types `text` into the field `id`.
pub(crate) async fn fill(b: &Client, id: &str, text: &str) {
    appears(b, &format!("#{id}"))
        .await
        .send_keys(text)
        .await
        .unwrap();
}

/// Chooses the option `value` of the list `id`.
pub(crate) async fn choose(b: &Client, id: &str, value: &str) {
    appears(b, &format!("#{id} option[value=\"{value}\"]"))
        .await
        .click()
        .await
        .unwrap();
}

/// axe-core's script (`npm ci` in tests/browser, which .ci/run does), or `None` when it is not
/// installed (a failure under CI).
pub(crate) fn axe_script() -> Option<String> {
    let path = crate::helpers::repo_path("tests/browser/node_modules/axe-core/axe.min.js");
    let script = std::fs::read_to_string(&path).ok();
    if script.is_none() {
        crate::helpers::skip_or_fail(
            "AVVISI_REQUIRE_CHROMIUM",
            "the console's accessibility check: axe-core is not installed (cd tests/browser && npm ci)",
        );
    }
    script
}

/// axe-core's WCAG 2.0 and 2.1 A and AA violations on the page the browser shows, one line
/// each. The script goes in through WebDriver, which the page's policy does not govern.
async fn accessibility(b: &Client, axe: Option<&str>) -> Vec<String> {
    let Some(axe) = axe else {
        return Vec::new();
    };
    b.execute(axe, vec![]).await.expect("axe-core loads");
    let found = b
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })\
               .then(r => done({ passes: r.passes.length, violations: r.violations.map(v => v.id + ': ' + v.help + ' (' + v.nodes.map(n => n.html).join(' | ') + ')') }))\
               .catch(e => done({ passes: 0, violations: ['axe failed: ' + e] }));",
            vec![],
        )
        .await
        .expect("axe-core runs");
    // Rules passed: axe really looked at the page (a page it could not read passes nothing).
    assert!(found["passes"].as_u64().unwrap_or(0) > 0, "{found}");
    found["violations"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

/// No WCAG 2.1 A or AA violation on the page shown.
pub(crate) async fn accessible(b: &Client, axe: Option<&str>, what: &str) {
    let violations = accessibility(b, axe).await;
    assert!(violations.is_empty(), "{what}: {violations:#?}");
}

pub(crate) async fn page(b: &Client) -> String {
    b.source().await.unwrap()
}

async fn people_use_the_console_in_a_browser(t: TestApp) {
    let Some((driver, port)) = chromedriver(&t.dir.path().join("chromedriver.log")).await else {
        return;
    };
    t.import_examples().await;
    add_account(&t, "mario.rossi", "operator");
    add_account(&t, "anna", "approver");
    add_account(&t, "vera", "viewer");
    add_account(&t, "ada", "admin");
    create(&t, "alice", "avviso-ba", "BA");
    ok_as(
        &t,
        "bob",
        &["campaign", "approve", "avviso-ba", "--yes"],
        None,
    );
    ok_as(&t, "alice", &["campaign", "launch", "avviso-ba"], None);
    // A relay that refuses every connection: the running campaign stays running meanwhile.
    let sink = SmtpSink::start_with(vec![Fault::Greet {
        code: 421,
        text: "4.3.2 closed for the test".into(),
    }])
    .await;
    let env = testkit::smtp::env(&sink.url());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (daemon, address) = daemon(&t, &t.dir.path().join("daemon.log"), &env).await;
    let site = format!("http://{address}");
    let b = browser(port, &t.dir.path().join("profile")).await;
    let axe = axe_script();
    let axe = axe.as_deref();

    // A wrong password shows the message; the right one opens the campaigns.
    sign_in(&b, &site, "mario.rossi", "non è questa la password").await;
    appears(&b, "p.error").await;
    assert!(page(&b).await.contains("Nome utente o password errati"));
    accessible(&b, axe, "the login page with its error").await;
    sign_in(&b, &site, "mario.rossi", PASSWORD).await;
    appears(&b, "form[action=\"/esci\"]").await;
    assert_eq!(b.current_url().await.unwrap().path(), "/console");
    let list = page(&b).await;
    assert!(list.contains("mario.rossi (operatore)"), "{list}");
    accessible(&b, axe, "the operator's campaigns").await;
    // No approve button for the operator, no launch before an approval.
    assert!(!list.contains("/approva") && !list.contains("avviso-bo/avvia"));

    // The operator creates a campaign for two provinces in the form; a wrong province code
    // shows the form again, filled, with the reason, and creates nothing.
    click_link(&b, "/console/nuova").await;
    appears(&b, "form[action=\"/console/nuova\"]").await;
    accessible(&b, axe, "the new campaign form").await;
    fill(&b, "nome", "avviso-bo").await;
    choose(&b, "pubblico", "enabled_users").await;
    choose(&b, "modello", "maintenance_notice").await;
    fill(&b, "province", "BO, R1").await;
    click(&b, "/console/nuova").await;
    appears(&b, "p.error").await;
    let refused = page(&b).await;
    assert!(
        refused.contains("La campagna non è stata creata"),
        "{refused}"
    );
    assert!(refused.contains("value=\"avviso-bo\""), "{refused}");
    accessible(&b, axe, "the new campaign form with its error").await;
    assert!(
        sqlx::query("SELECT 1 FROM campaigns WHERE name = 'avviso-bo'")
            .fetch_optional(t.db.pool())
            .await
            .unwrap()
            .is_none()
    );
    b.find(Locator::Id("province"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    fill(&b, "province", "bo rm").await;
    click(&b, "/console/nuova").await;
    shows(&b, "BO, RM").await;
    assert_eq!(
        b.current_url().await.unwrap().path(),
        "/console/campagne/avviso-bo"
    );
    // The audience size before launch: the users of both provinces.
    let bo = avvisi::campaign::size(&t.db, Audience::EnabledUsers, Some("BO"))
        .await
        .unwrap();
    let rm = avvisi::campaign::size(&t.db, Audience::EnabledUsers, Some("RM"))
        .await
        .unwrap();
    assert!(bo > 0 && rm > 0);
    let shown = page(&b).await;
    assert!(
        shown.contains(&format!("<dt>Destinatari ora</dt><dd>{}</dd>", bo + rm)),
        "{shown}"
    );
    assert!(
        !shown.contains("avviso-bo/avvia"),
        "no launch before an approval"
    );
    // The audience rule by rule: the provinces' step is the size shown above.
    assert!(
        shown.contains(&format!(
            "<td>nelle province BO, RM</td><td class=\"n\">{}</td>",
            bo + rm
        )),
        "{shown}"
    );
    accessible(&b, axe, "a draft campaign").await;
    fill(&b, "destinatario", "U0008").await;
    click(&b, "/console/campagne/avviso-bo/anteprima").await;
    appears(&b, "pre#html").await;
    accessible(&b, axe, "a recipient's preview").await;

    // A campaign for an uploaded list of user ids and fiscal codes: the entries that match
    // nobody are listed on the answer, nothing guessed.
    let list = t.dir.path().join("elenco.txt");
    std::fs::write(&list, "U0008\nrssmra72d18h501u\nU9999\nXXXXXX00X00X000X\n").unwrap();
    click_link(&b, "/console/nuova").await;
    fill(&b, "nome", "avviso-elenco").await;
    choose(&b, "pubblico", "enabled_users").await;
    choose(&b, "modello", "maintenance_notice").await;
    appears(&b, "#elenco")
        .await
        .send_keys(&list.display().to_string())
        .await
        .unwrap();
    click(&b, "/console/nuova").await;
    let missing: Vec<String> = {
        appears(&b, "ul#non-trovati").await;
        let mut out = Vec::new();
        for li in b.find_all(Locator::Css("ul#non-trovati li")).await.unwrap() {
            out.push(li.text().await.unwrap());
        }
        out
    };
    assert_eq!(missing, ["U9999", "XXXXXX00X00X000X"]);
    assert!(page(&b).await.contains("Bozza creata per 2 destinatari"));
    accessible(&b, axe, "a campaign created from a list").await;
    appears(&b, "a[href=\"/console/campagne/avviso-elenco\"]")
        .await
        .click()
        .await
        .unwrap();
    appears(&b, "#imbuto").await;
    let mut cells = Vec::new();
    for td in b.find_all(Locator::Css("#imbuto td")).await.unwrap() {
        cells.push(td.text().await.unwrap());
    }
    let kept = cells
        .iter()
        .position(|c| c == "nell'elenco caricato")
        .map(|i| cells[i + 1].clone());
    assert_eq!(kept.as_deref(), Some("2"), "{cells:?}");

    // Pause and resume by clicking, from the list.
    click_link(&b, "/console").await;
    click(&b, "/console/campagne/avviso-ba/pausa").await;
    until_state(&t, "avviso-ba", "paused").await;
    appears(&b, "form[action=\"/console/campagne/avviso-ba/riprendi\"]").await;
    assert_eq!(
        b.current_url().await.unwrap().path(),
        "/console/campagne/avviso-ba"
    );
    click(&b, "/console/campagne/avviso-ba/riprendi").await;
    until_state(&t, "avviso-ba", "running").await;
    appears(&b, "form[action=\"/console/campagne/avviso-ba/pausa\"]").await;
    click(&b, "/esci").await;
    appears(&b, "#nome").await;
    assert_eq!(b.current_url().await.unwrap().path(), "/accedi");

    // The approver reads the campaign mario created and approves it.
    sign_in(&b, &site, "anna", PASSWORD).await;
    appears(&b, "form[action=\"/esci\"]").await;
    b.goto(&format!("{site}/console/campagne/avviso-bo"))
        .await
        .unwrap();
    let shown = page(&b).await;
    assert!(shown.contains("Esempi di messaggi"), "{shown}");
    accessible(&b, axe, "a campaign to approve").await;
    click(&b, "/console/campagne/avviso-bo/approva").await;
    shows(&b, "approvata da anna").await;
    b.goto(&format!("{site}/console/registro")).await.unwrap();
    appears(&b, "table").await;
    accessible(&b, axe, "the audit log").await;
    click(&b, "/esci").await;
    appears(&b, "#nome").await;

    // The administrator's page: accounts.
    sign_in(&b, &site, "ada", PASSWORD).await;
    click_link(&b, "/console/account").await;
    appears(&b, "form[action=\"/console/account/aggiungi\"]").await;
    accessible(&b, axe, "the accounts").await;
    // An account with a password the administrator chose: its owner must change it first.
    fill(&b, "nome", "nuova.op").await;
    choose(&b, "ruolo", "viewer").await;
    fill(&b, "password", PASSWORD).await;
    click(&b, "/console/account/aggiungi").await;
    appears(&b, "p.notice").await;
    click(&b, "/esci").await;
    appears(&b, "#nome").await;
    sign_in(&b, &site, "nuova.op", PASSWORD).await;
    appears(&b, "form[action=\"/console/password\"]").await;
    assert_eq!(b.current_url().await.unwrap().path(), "/console/password");
    accessible(&b, axe, "the change of a password set by someone else").await;
    b.goto(&format!("{site}/console/coda")).await.unwrap();
    appears(&b, "form[action=\"/console/password\"]").await;
    assert_eq!(b.current_url().await.unwrap().path(), "/console/password");
    fill(&b, "attuale", PASSWORD).await;
    fill(&b, "nuova", "una frase tutta nuova").await;
    fill(&b, "ripeti", "una frase tutta nuova").await;
    click(&b, "/console/password").await;
    appears(&b, "nav a[href=\"/console/coda\"]").await;
    assert_eq!(b.current_url().await.unwrap().path(), "/console");
    click(&b, "/esci").await;
    appears(&b, "#nome").await;

    // The operator launches it, pauses, resumes and cancels it, all by clicking; the queue
    // and the suppression list on the way.
    sign_in(&b, &site, "mario.rossi", PASSWORD).await;
    click_link(&b, "/console/coda").await;
    shows(&b, "Cosa ferma l'invio").await;
    accessible(&b, axe, "the queue").await;
    click_link(&b, "/console/soppressioni").await;
    fill(&b, "indirizzo", "chiuso@example.org").await;
    fill(&b, "motivo", "casella chiusa").await;
    click(&b, "/console/soppressioni/aggiungi").await;
    appears(&b, "form[action=\"/console/soppressioni/rimuovi\"]").await;
    accessible(&b, axe, "the suppression list").await;
    click_link(&b, "/console").await;
    appears(&b, "form[action=\"/console/campagne/avviso-bo/avvia\"]").await;
    click(&b, "/console/campagne/avviso-bo/avvia").await;
    until_state(&t, "avviso-bo", "running").await;
    click(&b, "/console/campagne/avviso-bo/pausa").await;
    until_state(&t, "avviso-bo", "paused").await;
    click(&b, "/console/campagne/avviso-bo/riprendi").await;
    until_state(&t, "avviso-bo", "running").await;
    click(&b, "/console/campagne/avviso-bo/annulla").await;
    until_state(&t, "avviso-bo", "cancelled").await;
    shows(&b, "annullata").await;
    accessible(&b, axe, "a cancelled campaign").await;
    // The daemon's status page, open to anyone who reaches it, in Italian and accessible too.
    b.goto(&format!("{site}/")).await.unwrap();
    shows(&b, "Cosa ferma l'invio").await;
    shows(&b, "annullata").await;
    accessible(&b, axe, "the status page").await;
    // It reloads itself only when its reader asks (WCAG 2.2.1), and stops when asked.
    assert!(!page(&b).await.contains("http-equiv=\"refresh\""));
    appears(&b, "a#reload").await.click().await.unwrap();
    shows(&b, "smetti di ricaricarla").await;
    assert!(page(&b).await.contains("http-equiv=\"refresh\""));
    appears(&b, "a#reload").await.click().await.unwrap();
    shows(&b, "Ricarica la pagina da sola").await;
    assert!(!page(&b).await.contains("http-equiv=\"refresh\""));
    // Mario's cookie, for a form without its token.
    let mario = b
        .get_named_cookie("avvisi_session")
        .await
        .unwrap()
        .value()
        .to_string();
    b.delete_all_cookies().await.unwrap();

    // The viewer signs in; her cookie and her valid token, in a hand-made POST, do not pause.
    sign_in(&b, &site, "vera", PASSWORD).await;
    appears(&b, "form[action=\"/esci\"]").await;
    let vera = b
        .get_named_cookie("avvisi_session")
        .await
        .unwrap()
        .value()
        .to_string();
    let token = csrf(&page(&b).await);
    // The viewer sees the campaigns, the queue and the suppression list, and no action.
    let list = page(&b).await;
    assert!(list.contains("avviso-ba"), "{list}");
    for p in ["/console", "/console/coda", "/console/soppressioni"] {
        b.goto(&format!("{site}{p}")).await.unwrap();
        appears(&b, "main h1").await;
        let shown = page(&b).await;
        assert!(
            !shown.contains("action=\"/console/"),
            "{p} shows the viewer a form: {shown}"
        );
        assert!(!shown.contains("href=\"/console/nuova\""));
    }

    // Wrong passwords (one above) until the throttle answers, with the time to try again: the
    // fifth wrong one within 15 minutes is the last checked.
    let mut tries = 1;
    loop {
        sign_in(&b, &site, "mario.rossi", "ancora non è questa").await;
        appears(&b, "p.error").await;
        let shown = page(&b).await;
        if shown.contains("Troppi tentativi con una password errata") {
            break;
        }
        assert!(shown.contains("Nome utente o password errati"), "{shown}");
        tries += 1;
        assert!(
            tries <= 5,
            "no throttle after {tries} wrong passwords: {shown}"
        );
    }
    assert_eq!(tries, 5);
    assert!(page(&b).await.contains("Riprovare dopo le 10:"));
    accessible(&b, axe, "the login page, throttled").await;
    // The right password too is refused now.
    sign_in(&b, &site, "mario.rossi", PASSWORD).await;
    appears(&b, "p.error").await;
    assert!(page(&b).await.contains("Troppi tentativi"));
    b.close().await.unwrap();
    let refused = request(
        &address,
        "127.0.0.1",
        "POST",
        "/console/campagne/avviso-ba/pausa",
        Some(&vera),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(refused.code, 403, "{}", refused.body);
    let no_token = request(
        &address,
        "127.0.0.1",
        "POST",
        "/console/campagne/avviso-ba/pausa",
        Some(&mario),
        &[],
    )
    .await;
    assert_eq!(no_token.code, 403);
    assert_eq!(state(&t, "avviso-ba").await, "running");
    daemon.terminate().await;
    driver.terminate().await;

    let entries = audit(&t);
    let ok = |who: &str, action: &str| {
        audited(&entries, who, action)
            .iter()
            .filter(|(_, o)| o == "ok")
            .map(|(object, _)| object.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ok("mario.rossi", "campaign.create"),
        ["avviso-bo", "avviso-elenco"]
    );
    assert_eq!(
        ok("mario.rossi", "campaign.pause"),
        ["avviso-ba", "avviso-bo"]
    );
    assert_eq!(
        ok("mario.rossi", "campaign.resume"),
        ["avviso-ba", "avviso-bo"]
    );
    assert_eq!(ok("anna", "campaign.approve"), ["avviso-bo"]);
    assert_eq!(ok("mario.rossi", "campaign.launch"), ["avviso-bo"]);
    assert_eq!(ok("mario.rossi", "campaign.cancel"), ["avviso-bo"]);
    assert_eq!(ok("mario.rossi", "suppress.add"), ["chiuso@example.org"]);
    assert!(audited(&entries, "mario.rossi", "campaign.create")
        .iter()
        .any(|(o, r)| o == "avviso-bo" && r.starts_with("refused:")));
    assert!(audited(&entries, "vera", "campaign.pause")[0]
        .1
        .starts_with("forbidden:"));
    assert!(audited(&entries, "mario.rossi", "campaign.pause")
        .iter()
        .any(|(_, o)| o.contains("security token")));
    assert_eq!(ok("mario.rossi", "session.login").len(), 2);
}
