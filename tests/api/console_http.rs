//! The browser console over plain HTTP against the real daemon (no browser): the login page and
//! its headers, the session cookie, the throttle (kept in the database: it holds across a
//! restart), the logout, a disabled account's session; then the campaigns' buttons for each
//! role, the actions through the same use cases as the command line, the CSRF token checked,
//! and everything in `avvisi audit --json` with the account's name.

use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;
use testkit::process::Proc;
use testkit::smtp_sink::{Fault, SmtpSink};

use crate::console::{json_as, ok_as, PASSWORD};
use crate::helpers::{served_address, TestApp};
use crate::on_both_backends;

on_both_backends!(
    login_sessions_throttle_and_logout,
    each_role_sees_and_does_only_its_own_actions,
    the_new_pages_act_only_for_their_role_and_with_the_token,
    an_operator_sends_a_test_to_their_own_address_only,
    the_status_page_and_the_queue_name_what_holds_sending,
    a_password_set_by_someone_else_is_changed_at_the_first_login,
);

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'";

/// An HTTP answer: the status, the headers (names in lower case), the body.
pub(crate) struct Answer {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Set-Cookie` header of cookie `name`.
    pub(crate) fn set_cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, v)| n == "set-cookie" && v.starts_with(&format!("{name}=")))
            .map(|(_, v)| v.as_str())
    }
}

/// One request over a plain TCP connection from the loopback address `from` (any 127.x.y.z
/// reaches the daemon, and the throttle sees each as another client).
pub(crate) async fn request(
    address: &str,
    from: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> Answer {
    let cookie = cookie.map(|c| format!("avvisi_session={c}"));
    request_with(address, from, method, path, cookie.as_deref(), &[], form).await
}

/// [`request`] with a whole `Cookie` header's value and more headers.
pub(crate) async fn request_with(
    address: &str,
    from: &str,
    method: &str,
    path: &str,
    cookies: Option<&str>,
    headers: &[(&str, &str)],
    form: &[(&str, &str)],
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((from.parse::<IpAddr>().unwrap(), 0).into())
        .unwrap();
    let mut stream = socket.connect(address.parse().unwrap()).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(c) = cookies {
        head.push_str(&format!("Cookie: {c}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("an answer within 30 s")
    .unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.split("\r\n");
    let code = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    Answer {
        code: code.parse().unwrap(),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect(),
        body: body.to_string(),
    }
}

pub(crate) async fn get(address: &str, path: &str, cookie: Option<&str>) -> Answer {
    request(address, "127.0.0.1", "GET", path, cookie, &[]).await
}

pub(crate) async fn post(address: &str, path: &str, cookie: &str, form: &[(&str, &str)]) -> Answer {
    request(address, "127.0.0.1", "POST", path, Some(cookie), form).await
}

/// Signs `name` in from `from` as a browser does (the login page first, for its token and
/// cookie): the answer.
pub(crate) async fn login_from(address: &str, from: &str, name: &str, password: &str) -> Answer {
    login_with(address, from, name, password, &[]).await
}

/// [`login_from`] with more headers on the login's POST.
async fn login_with(
    address: &str,
    from: &str,
    name: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let form = request(address, from, "GET", "/accedi", None, &[]).await;
    let cookie = form
        .set_cookie("avvisi_accesso")
        .and_then(|c| c.split(';').next())
        .expect("the login form's cookie")
        .to_string();
    request_with(
        address,
        from,
        "POST",
        "/accedi",
        Some(&cookie),
        headers,
        &[
            ("csrf", &csrf(&form.body)),
            ("nome", name),
            ("password", password),
        ],
    )
    .await
}

/// Signs `name` in and returns its session cookie's token.
pub(crate) async fn signed_in(address: &str, name: &str) -> String {
    let a = login_from(address, "127.0.0.1", name, PASSWORD).await;
    assert_eq!(a.code, 303, "{name}'s login: {}", a.body);
    let cookie = a.set_cookie("avvisi_session").expect("a session cookie");
    cookie
        .strip_prefix("avvisi_session=")
        .and_then(|c| c.split(';').next())
        .expect("avvisi_session=TOKEN")
        .to_string()
}

/// The hidden CSRF field's value on a page.
pub(crate) fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The daemon on `app`'s database, serving HTTP on a port of its own; `env` on top.
pub(crate) async fn daemon(app: &TestApp, log: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let mut all = vec![
        ("AVVISI__HTTP__ADDRESS", "127.0.0.1:0"),
        ("AVVISI__DAEMON__POLL_SECONDS", "1"),
    ];
    all.extend_from_slice(env);
    let child = app.spawn(&["daemon", "--now", "2026-11-23T10:00:00+01:00"], &all, log);
    let address = served_address(&child, log).await;
    (child, address)
}

/// Adds account `name` from the host, then its owner sets their own password (`users passwd`
/// as the operating-system user of that name), as they would before using the console.
pub(crate) fn add_account(t: &TestApp, name: &str, role: &str) {
    ok_as(
        t,
        "root",
        &["users", "add", name, "--role", role],
        Some(&format!("{PASSWORD}\n")),
    );
    own_password(t, name);
}

/// `users passwd NAME` run by NAME: the password is their own from now on.
pub(crate) fn own_password(t: &TestApp, name: &str) {
    ok_as(
        t,
        name,
        &["users", "passwd", name],
        Some(&format!("{PASSWORD}\n")),
    );
}

/// The audit log's rows as `avvisi audit --json` gives them.
pub(crate) fn audit(t: &TestApp) -> Vec<Value> {
    json_as(t, "root", &["audit", "--json"])
        .as_array()
        .expect("a list")
        .clone()
}

/// The rows of `actor` doing `action`, as (object, outcome).
pub(crate) fn audited(entries: &[Value], actor: &str, action: &str) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e["actor_name"] == actor && e["action"] == action)
        .map(|e| {
            (
                e["object"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn login_sessions_throttle_and_logout(t: TestApp) {
    add_account(&t, "mario.rossi", "operator");
    add_account(&t, "anna", "approver");
    add_account(&t, "vera", "viewer");
    let log = t.dir.path().join("daemon.log");
    let (first, address) = daemon(&t, &log, &[]).await;

    // No session: to the login page, which is Italian, for phones, with the headers.
    let a = get(&address, "/console", None).await;
    assert_eq!((a.code, a.header("location")), (303, Some("/accedi")));
    let page = get(&address, "/accedi", None).await;
    assert_eq!(page.code, 200);
    assert!(page.body.contains("<html lang=\"it\">"), "{}", page.body);
    assert!(page.body.contains("name=\"viewport\""));
    assert!(page.body.contains("Nome utente"));
    assert!(!page.body.contains("<script") && !page.body.contains("style="));
    for a in [&page, &get(&address, "/console", None).await] {
        assert_eq!(a.header("content-security-policy"), Some(CSP));
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
    }
    let css = get(&address, "/console.css", None).await;
    assert_eq!(css.code, 200);
    assert!(css
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/css")));

    // A wrong password: the same page, the message, 401, no cookie.
    let wrong = login_from(
        &address,
        "127.0.0.1",
        "mario.rossi",
        "non è questa la password",
    )
    .await;
    assert_eq!(wrong.code, 401);
    assert!(wrong.body.contains("Nome utente o password errati"));
    assert!(wrong.set_cookie("avvisi_session").is_none());

    // The right one: a cookie the script cannot read, for this site only; not Secure over http.
    let right = login_from(&address, "127.0.0.1", "mario.rossi", PASSWORD).await;
    assert_eq!(
        (right.code, right.header("location")),
        (303, Some("/console"))
    );
    let cookie = right.set_cookie("avvisi_session").unwrap().to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    let token = cookie
        .strip_prefix("avvisi_session=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 64);
    let console = get(&address, "/console", Some(&token)).await;
    assert_eq!(console.code, 200, "{}", console.body);
    assert!(console.body.contains("mario.rossi (operatore)"));
    assert_eq!(console.header("content-security-policy"), Some(CSP));

    // The database keeps the token's SHA-256, never the token.
    let stored: Vec<String> = sqlx::query("SELECT token_sha256 FROM sessions")
        .fetch_all(t.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("token_sha256"))
        .collect();
    let digest: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored, [digest]);

    // A disabled account's session stops working at its next request.
    let vera = signed_in(&address, "vera").await;
    assert_eq!(get(&address, "/console", Some(&vera)).await.code, 200);
    ok_as(&t, "root", &["users", "disable", "vera"], None);
    let a = get(&address, "/console", Some(&vera)).await;
    assert_eq!((a.code, a.header("location")), (303, Some("/accedi")));

    // Five wrong passwords for anna (from one address): the sixth try is refused whatever its
    // password and wherever it comes from, with when to retry.
    for _ in 0..5 {
        let a = login_from(&address, "127.0.0.2", "anna", "sbagliata sbagliata").await;
        assert_eq!(a.code, 401);
    }
    let held = login_from(&address, "127.0.0.3", "anna", PASSWORD).await;
    assert_eq!(held.code, 429, "{}", held.body);
    assert!(
        held.body
            .contains("Troppi tentativi con una password errata. Riprovare dopo le 10:1"),
        "{}",
        held.body
    );
    assert!(held.header("retry-after").is_some());
    assert!(held.set_cookie("avvisi_session").is_none());

    // Five wrong passwords from one address, for names that do not exist: that address is
    // refused for a real account too; another address is not.
    for n in 0..5 {
        let a = login_from(&address, "127.0.0.4", &format!("nessuno{n}"), "sbagliata").await;
        assert_eq!(a.code, 401);
    }
    let from_four = login_from(&address, "127.0.0.4", "mario.rossi", PASSWORD).await;
    assert_eq!(from_four.code, 429);
    assert_eq!(
        login_from(&address, "127.0.0.5", "mario.rossi", PASSWORD)
            .await
            .code,
        303
    );

    // The logout needs the form's token, then ends the session.
    let refused = post(&address, "/esci", &token, &[]).await;
    assert_eq!(refused.code, 403);
    assert_eq!(get(&address, "/console", Some(&token)).await.code, 200);
    let out = post(&address, "/esci", &token, &[("csrf", &csrf(&console.body))]).await;
    assert_eq!((out.code, out.header("location")), (303, Some("/accedi")));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let a = get(&address, "/console", Some(&token)).await;
    assert_eq!((a.code, a.header("location")), (303, Some("/accedi")));

    // A login form posted without its page's token (a form on another site), or with another
    // page's: refused before the password is looked at, and no session.
    let forged = request(
        &address,
        "127.0.0.1",
        "POST",
        "/accedi",
        None,
        &[("nome", "mario.rossi"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(forged.code, 403, "{}", forged.body);
    assert!(forged.set_cookie("avvisi_session").is_none());
    assert!(
        forged.body.contains("nulla è stato fatto"),
        "{}",
        forged.body
    );
    let page = get(&address, "/accedi", None).await;
    let other_page = get(&address, "/accedi", None).await;
    let cookie = page.set_cookie("avvisi_accesso").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let crossed = request_with(
        &address,
        "127.0.0.1",
        "POST",
        "/accedi",
        cookie.split(';').next(),
        &[],
        &[
            ("csrf", &csrf(&other_page.body)),
            ("nome", "mario.rossi"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(crossed.code, 403);
    assert!(crossed.set_cookie("avvisi_session").is_none());

    // The throttle is in the database: a new daemon holds it too. This one is behind a proxy
    // at 127.0.0.7 (`http.trusted_proxies`): the address its X-Forwarded-For names is the
    // client's; anyone else's header is ignored.
    first.terminate().await;
    let log2 = t.dir.path().join("daemon2.log");
    let (second, address) = daemon(
        &t,
        &log2,
        &[("AVVISI__HTTP__TRUSTED_PROXIES", "127.0.0.7, ::1")],
    )
    .await;
    let held = login_from(&address, "127.0.0.6", "anna", PASSWORD).await;
    assert_eq!(held.code, 429);
    // (Another name each time: the per-account throttle is not what is tested here.)
    let tries = std::sync::atomic::AtomicU32::new(0);
    let proxied = |client: &'static str| {
        let address = address.clone();
        let name = format!(
            "via{}",
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        async move {
            login_with(
                &address,
                "127.0.0.7",
                &name,
                "sbagliata",
                &[("X-Forwarded-For", &format!("198.51.100.1, {client}"))],
            )
            .await
        }
    };
    // Five wrong passwords through the proxy from one client: that client is held, another
    // one behind the same proxy is not.
    for _ in 0..5 {
        assert_eq!(proxied("203.0.113.9").await.code, 401);
    }
    assert_eq!(proxied("203.0.113.9").await.code, 429);
    assert_eq!(proxied("203.0.113.10").await.code, 401);
    // Not from the proxy: the header is not believed.
    let spoofed = login_with(
        &address,
        "127.0.0.8",
        "via-spoofed",
        "sbagliata",
        &[("X-Forwarded-For", "203.0.113.11")],
    )
    .await;
    assert_eq!(spoofed.code, 401);
    second.terminate().await;

    // No token, password or cookie in the daemons' logs.
    let first_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        first_log.contains("signed in to the console"),
        "{first_log}"
    );
    for l in [&log, &log2] {
        let text = std::fs::read_to_string(l).unwrap();
        for secret in [token.as_str(), vera.as_str(), PASSWORD, "sbagliata"] {
            assert!(!text.contains(secret), "{secret} in the log:\n{text}");
        }
    }

    // The audit log: logins (refused ones with their reason), the logout, the refused form.
    let entries = audit(&t);
    let logins = audited(&entries, "mario.rossi", "session.login");
    assert_eq!(logins[0].1, "refused: wrong name or password", "{logins:?}");
    assert_eq!(logins[1].1, "ok");
    assert!(logins
        .iter()
        .any(|(_, o)| o.starts_with("refused: too many")));
    let anna = audited(&entries, "anna", "session.login");
    assert_eq!(anna.len(), 7, "{anna:?}");
    let logouts = audited(&entries, "mario.rossi", "session.logout");
    assert_eq!(logouts.len(), 2, "{logouts:?}");
    assert!(logouts[0].1.contains("security token"), "{logouts:?}");
    assert_eq!(logouts[1].1, "ok");
    let from: Vec<&str> = entries
        .iter()
        .filter(|e| e["action"] == "session.login" && e["actor_name"] == "anna")
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    // (The second daemon's clock started over at 10:00: its row sorts first.)
    assert_eq!(
        from.iter().filter(|f| **f == "127.0.0.2").count(),
        5,
        "{from:?}"
    );
    assert!(!serde_json::to_string(&entries).unwrap().contains(&token));
    let sources: Vec<&str> = entries
        .iter()
        .filter(|e| {
            e["action"] == "session.login"
                && e["actor_name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("via"))
        })
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources.iter().filter(|s| **s == "203.0.113.9").count(),
        6,
        "{sources:?}"
    );
    assert!(sources.contains(&"203.0.113.10") && sources.contains(&"127.0.0.8"));
    assert!(!sources
        .iter()
        .any(|s| *s == "127.0.0.7" || *s == "203.0.113.11"));
    assert!(!sources.contains(&"198.51.100.1"));
}

/// The state of campaign `name` in the database.
pub(crate) async fn state(t: &TestApp, name: &str) -> String {
    sqlx::query("SELECT state FROM campaigns WHERE name = $1")
        .bind(name)
        .fetch_one(t.db.pool())
        .await
        .unwrap()
        .get("state")
}

pub(crate) fn create(t: &TestApp, user: &str, name: &str, province: &str) {
    ok_as(
        t,
        user,
        &[
            "campaign",
            "create",
            name,
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--filter",
            &format!("province={province}"),
        ],
        None,
    );
}

/// Whether `page` has a form posting `action` for campaign `name`.
fn has_button(page: &str, name: &str, action: &str) -> bool {
    page.contains(&format!("action=\"/console/campagne/{name}/{action}\""))
}

async fn each_role_sees_and_does_only_its_own_actions(t: TestApp) {
    t.import_examples().await;
    add_account(&t, "mario.rossi", "operator");
    add_account(&t, "anna", "approver");
    add_account(&t, "vera", "viewer");
    // A running campaign (approved and launched at the command line), and a draft made by
    // someone else, waiting for its approval.
    create(&t, "alice", "avviso-ba", "BA");
    ok_as(
        &t,
        "bob",
        &["campaign", "approve", "avviso-ba", "--yes"],
        None,
    );
    ok_as(&t, "alice", &["campaign", "launch", "avviso-ba"], None);
    create(&t, "alice", "avviso-bo", "BO");

    let log = t.dir.path().join("daemon.log");
    // A relay that refuses every connection: nothing is sent, so the running campaign stays
    // running while the test clicks.
    let sink = SmtpSink::start_with(vec![Fault::Greet {
        code: 421,
        text: "4.3.2 closed for the test".into(),
    }])
    .await;
    let env = testkit::smtp::env(&sink.url());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (daemon, address) = daemon(&t, &log, &env).await;
    let mario = signed_in(&address, "mario.rossi").await;
    let anna = signed_in(&address, "anna").await;
    let vera = signed_in(&address, "vera").await;

    // The operator: pause and cancel for the running one, cancel only for the draft (no
    // launch before an approval), never an approval.
    let page = get(&address, "/console", Some(&mario)).await.body;
    assert!(
        page.contains("avviso-ba") && page.contains("in corso"),
        "{page}"
    );
    assert!(has_button(&page, "avviso-ba", "pausa"), "{page}");
    assert!(has_button(&page, "avviso-ba", "annulla"));
    assert!(!has_button(&page, "avviso-ba", "riprendi"));
    assert!(!has_button(&page, "avviso-bo", "avvia"));
    assert!(has_button(&page, "avviso-bo", "annulla"));
    assert!(!page.contains("/approva") && !page.contains("/rifiuta"));
    let token = csrf(&page);

    // A form without its token, or with another session's, changes nothing.
    let a = post(&address, "/console/campagne/avviso-ba/pausa", &mario, &[]).await;
    assert_eq!(a.code, 403, "{}", a.body);
    let vera_page = get(&address, "/console", Some(&vera)).await.body;
    let vera_token = csrf(&vera_page);
    let a = post(
        &address,
        "/console/campagne/avviso-ba/pausa",
        &mario,
        &[("csrf", &vera_token)],
    )
    .await;
    assert_eq!(a.code, 403);
    assert_eq!(state(&t, "avviso-ba").await, "running");

    // The viewer sees no button; her own valid token does not make her an operator.
    assert!(!vera_page.contains("/console/campagne/avviso-ba/"));
    let a = post(
        &address,
        "/console/campagne/avviso-ba/pausa",
        &vera,
        &[("csrf", &vera_token)],
    )
    .await;
    assert_eq!(a.code, 403);
    assert!(a.body.contains("non è consentita al tuo ruolo"));
    assert_eq!(state(&t, "avviso-ba").await, "running");

    // The operator pauses and resumes.
    let a = post(
        &address,
        "/console/campagne/avviso-ba/pausa",
        &mario,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    assert_eq!(state(&t, "avviso-ba").await, "paused");
    let page = get(&address, "/console/campagne/avviso-ba", Some(&mario))
        .await
        .body;
    assert!(has_button(&page, "avviso-ba", "riprendi") && !has_button(&page, "avviso-ba", "pausa"));
    let a = post(
        &address,
        "/console/campagne/avviso-ba/riprendi",
        &mario,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(a.code, 303);
    assert_eq!(state(&t, "avviso-ba").await, "running");
    // An illegal move: refused, said so.
    let a = post(
        &address,
        "/console/campagne/avviso-ba/riprendi",
        &mario,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(a.code, 409);
    assert!(a.body.contains("Nulla è stato fatto"));

    // The approver reads the draft: its size, its messages; approves it as shown.
    let page = get(&address, "/console/campagne/avviso-bo", Some(&anna))
        .await
        .body;
    assert!(page.contains("Approva per "), "{page}");
    assert!(page.contains("Esempi di messaggi") && page.contains("Oggetto:"));
    assert!(!has_button(&page, "avviso-bo", "avvia"));
    let anna_token = csrf(&page);
    let sha = {
        let field = "name=\"impronta\" value=\"";
        let at = page.find(field).unwrap() + field.len();
        page[at..at + 64].to_string()
    };
    let a = post(
        &address,
        "/console/campagne/avviso-bo/approva",
        &anna,
        &[("csrf", &anna_token), ("impronta", "0")],
    )
    .await;
    assert_eq!(
        a.code, 409,
        "another audience than the one shown: {}",
        a.body
    );
    let a = post(
        &address,
        "/console/campagne/avviso-bo/approva",
        &anna,
        &[("csrf", &anna_token), ("impronta", &sha)],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    // The approver does not launch.
    let a = post(
        &address,
        "/console/campagne/avviso-bo/avvia",
        &anna,
        &[("csrf", &anna_token)],
    )
    .await;
    assert_eq!(a.code, 403);
    assert_eq!(state(&t, "avviso-bo").await, "draft");

    // Now the operator may launch it.
    let page = get(&address, "/console", Some(&mario)).await.body;
    assert!(has_button(&page, "avviso-bo", "avvia"), "{page}");
    let a = post(
        &address,
        "/console/campagne/avviso-bo/avvia",
        &mario,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    assert_eq!(state(&t, "avviso-bo").await, "running");

    // The audit log in the console: the approver's and the administrator's, not the operator's.
    assert_eq!(
        get(&address, "/console/registro", Some(&mario)).await.code,
        403
    );
    let registro = get(&address, "/console/registro", Some(&anna)).await;
    assert_eq!(registro.code, 200);
    assert!(registro.body.contains("campaign.pause") && registro.body.contains("mario.rossi"));
    assert!(
        registro.body.contains("23/11/2026 10:"),
        "Rome's time: {}",
        registro.body
    );
    daemon.terminate().await;

    let entries = audit(&t);
    let source = |e: &&Value| e["source"] == "127.0.0.1";
    assert!(entries
        .iter()
        .filter(|e| e["actor_kind"] == "account")
        .all(|e| source(&e)));
    let pauses = audited(&entries, "mario.rossi", "campaign.pause");
    assert_eq!(pauses.len(), 3, "{pauses:?}");
    assert!(pauses[0].1.contains("security token") && pauses[1].1.contains("security token"));
    assert_eq!(pauses[2], ("avviso-ba".to_string(), "ok".to_string()));
    let resumes = audited(&entries, "mario.rossi", "campaign.resume");
    assert_eq!(resumes[0].1, "ok");
    assert!(resumes[1].1.starts_with("refused:"), "{resumes:?}");
    assert_eq!(
        audited(&entries, "mario.rossi", "campaign.launch"),
        [("avviso-bo".to_string(), "ok".to_string())]
    );
    let approvals = audited(&entries, "anna", "campaign.approve");
    assert_eq!(approvals.last().unwrap().1, "ok", "{approvals:?}");
    assert!(audited(&entries, "anna", "campaign.launch")[0]
        .1
        .starts_with("forbidden:"));
    assert!(audited(&entries, "vera", "campaign.pause")[0]
        .1
        .starts_with("forbidden:"));
    assert!(audited(&entries, "mario.rossi", "audit.read")[0]
        .1
        .starts_with("forbidden:"));
}

/// The pages added for operators and administrators: creating a campaign, the queue, the
/// suppression list, the accounts. Each action is refused with 403 to a viewer's and to the
/// wrong role's hand-made POST (with their valid token), and to a form without the token; done
/// by the right role, it is in the audit log with the account's name.
async fn the_new_pages_act_only_for_their_role_and_with_the_token(t: TestApp) {
    t.import_examples().await;
    add_account(&t, "mario.rossi", "operator");
    add_account(&t, "vera", "viewer");
    add_account(&t, "ada", "admin");
    let log = t.dir.path().join("daemon.log");
    let (daemon, address) = daemon(&t, &log, &[]).await;
    let mario = signed_in(&address, "mario.rossi").await;
    let vera = signed_in(&address, "vera").await;
    let ada = signed_in(&address, "ada").await;
    let token_of = |cookie: &str| {
        let (address, cookie) = (address.clone(), cookie.to_string());
        async move { csrf(&get(&address, "/console", Some(&cookie)).await.body) }
    };
    let (mario_token, vera_token, ada_token) = (
        token_of(&mario).await,
        token_of(&vera).await,
        token_of(&ada).await,
    );

    let create_form = |token: &str| {
        vec![
            ("csrf", token.to_string()),
            ("nome", "avviso-web".to_string()),
            ("pubblico", "enabled_users".to_string()),
            ("modello", "maintenance_notice".to_string()),
            ("province", "BO RM".to_string()),
            ("invio", String::new()),
        ]
    };
    let as_pairs = |v: &[(&'static str, String)]| -> Vec<(&'static str, String)> { v.to_vec() };
    let post_form = |path: &'static str, cookie: &str, form: Vec<(&'static str, String)>| {
        let (address, cookie) = (address.clone(), cookie.to_string());
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(&address, path, &cookie, &pairs).await
        }
    };

    // Every new action: by the wrong roles, with their own valid token, 403; without a token,
    // by the right role, 403. Nothing changes.
    let actions: Vec<(&'static str, Fields, &str, &str)> = vec![
        (
            "/console/nuova",
            as_pairs(&create_form("")),
            "mario",
            "campaign.create",
        ),
        (
            "/console/soppressioni/aggiungi",
            vec![
                ("indirizzo", "chiuso@example.org".into()),
                ("motivo", "casella chiusa".into()),
            ],
            "mario",
            "suppress.add",
        ),
        (
            "/console/soppressioni/rimuovi",
            vec![("indirizzo", "chiuso@example.org".into())],
            "mario",
            "suppress.remove",
        ),
        (
            "/console/account/aggiungi",
            vec![("nome", "nuovo".into()), ("ruolo", "operator".into())],
            "ada",
            "users.add",
        ),
        (
            "/console/account/vera/disattiva",
            vec![],
            "ada",
            "users.disable",
        ),
        (
            "/console/account/vera/ruolo",
            vec![("ruolo", "operator".into())],
            "ada",
            "users.role",
        ),
    ];
    for (path, fields, right, _) in &actions {
        let mut wrong = vec![(&vera, &vera_token)];
        wrong.push(if *right == "mario" {
            (&ada, &ada_token)
        } else {
            (&mario, &mario_token)
        });
        for (cookie, token) in wrong {
            let mut form = fields.clone();
            form.retain(|(k, _)| *k != "csrf");
            form.push(("csrf", token.clone()));
            let a = post_form(path, cookie, form).await;
            assert_eq!(a.code, 403, "{path}: {}", a.body);
        }
        let right_cookie = if *right == "mario" { &mario } else { &ada };
        let mut form = fields.clone();
        form.retain(|(k, _)| *k != "csrf");
        let a = post_form(path, right_cookie, form).await;
        assert_eq!(a.code, 403, "{path} without a token: {}", a.body);
    }
    assert_eq!(state_or_none(&t, "avviso-web").await, None);
    assert!(json_as(&t, "root", &["suppress", "list", "--json"])
        .to_string()
        .find("chiuso@example.org")
        .is_none());
    // The pages themselves: the form for an operator only, the accounts for an admin only.
    assert_eq!(get(&address, "/console/nuova", Some(&vera)).await.code, 403);
    assert_eq!(
        get(&address, "/console/nuova", Some(&mario)).await.code,
        200
    );
    assert_eq!(
        get(&address, "/console/account", Some(&mario)).await.code,
        403
    );
    assert_eq!(
        get(&address, "/console/account", Some(&vera)).await.code,
        403
    );
    let viewer_list = get(&address, "/console/soppressioni", Some(&vera)).await;
    assert_eq!(viewer_list.code, 200);
    assert!(!viewer_list.body.contains("/console/soppressioni/aggiungi"));

    // The operator creates a campaign (two provinces); the queue page answers.
    let a = post_form("/console/nuova", &mario, create_form(&mario_token)).await;
    assert_eq!(
        (a.code, a.header("location")),
        (303, Some("/console/campagne/avviso-web")),
        "{}",
        a.body
    );
    assert_eq!(
        state_or_none(&t, "avviso-web").await.as_deref(),
        Some("draft")
    );
    // A preview for a real recipient named by fiscal code (lower case as typed): subject,
    // text, and the HTML as escaped source. Someone outside the audience: 404, nothing guessed.
    let preview = |cookie: &str, token: &str, who: &str| {
        post_form(
            "/console/campagne/avviso-web/anteprima",
            cookie,
            vec![
                ("csrf", token.to_string()),
                ("destinatario", who.to_string()),
            ],
        )
    };
    let shown = preview(&mario, &mario_token, "frrmgr69t45a944p").await;
    assert_eq!(shown.code, 200, "{}", shown.body);
    assert!(shown.body.contains("Maria Grazia") && shown.body.contains("(U0008,"));
    assert!(
        shown.body.contains("<pre id=\"html\">&lt;"),
        "{}",
        shown.body
    );
    assert!(!shown.body.contains("<script"));
    let outside = preview(&mario, &mario_token, "U0015").await;
    assert_eq!(outside.code, 404, "{}", outside.body);
    assert!(outside.body.contains("U0015"));
    assert_eq!(preview(&vera, &vera_token, "U0008").await.code, 403);
    assert_eq!(preview(&mario, "", "U0008").await.code, 403);

    // A campaign narrowed to an uploaded list (multipart, as a browser sends a file): the
    // entry matching nobody is listed on the answer; the campaign's page says it is a list.
    let boundary = "----avvisi-test-boundary";
    let mut body = String::new();
    for (name, value) in [
        ("csrf", mario_token.as_str()),
        ("nome", "avviso-elenco"),
        ("pubblico", "enabled_users"),
        ("modello", "maintenance_notice"),
        ("province", ""),
        ("invio", ""),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"elenco\"; filename=\"elenco.txt\"\r\n\
         Content-Type: text/plain\r\n\r\nU0008\r\nRCCSLV87R55A944O\r\nNESSUNO9\r\n\r\n--{boundary}--\r\n"
    ));
    let uploaded = raw_post(
        &address,
        "/console/nuova",
        &mario,
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
    )
    .await;
    assert_eq!(uploaded.code, 200, "{}", uploaded.body);
    assert!(
        uploaded.body.contains("Bozza creata per 2 destinatari")
            && uploaded.body.contains("<li>NESSUNO9</li>"),
        "{}",
        uploaded.body
    );
    let listed = get(&address, "/console/campagne/avviso-elenco", Some(&mario)).await;
    assert!(listed.body.contains("elenco caricato"), "{}", listed.body);
    assert!(listed.body.contains("<dt>Destinatari ora</dt><dd>2</dd>"));

    let q = get(&address, "/console/coda", Some(&vera)).await;
    assert_eq!(q.code, 200);
    assert!(q.body.contains("Cosa ferma l'invio"), "{}", q.body);

    // The operator suppresses an address and removes it again; removing one not listed is
    // refused with the reason.
    let add = vec![
        ("csrf", mario_token.clone()),
        ("indirizzo", "Chiuso@Example.org".into()),
        ("motivo", "casella chiusa".into()),
    ];
    let a = post_form("/console/soppressioni/aggiungi", &mario, add).await;
    assert_eq!(a.code, 303, "{}", a.body);
    let listed = get(&address, "/console/soppressioni", Some(&mario))
        .await
        .body;
    assert!(listed.contains("chiuso@example.org") && listed.contains("casella chiusa"));
    let remove = vec![
        ("csrf", mario_token.clone()),
        ("indirizzo", "chiuso@example.org".into()),
    ];
    let a = post_form("/console/soppressioni/rimuovi", &mario, remove.clone()).await;
    assert_eq!(a.code, 303, "{}", a.body);
    let a = post_form("/console/soppressioni/rimuovi", &mario, remove).await;
    assert_eq!(a.code, 409, "{}", a.body);
    assert!(a.body.contains("not on the suppression list"), "{}", a.body);

    // The admin adds an account without a password: one is made up and shown once; it signs
    // in. Then a role change, a disable, and their own disable refused.
    let a = post_form(
        "/console/account/aggiungi",
        &ada,
        vec![
            ("csrf", ada_token.clone()),
            ("nome", "nuovo".into()),
            ("ruolo", "operator".into()),
            ("password", String::new()),
        ],
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    let shown = a
        .body
        .split("mostrata solo ora: ")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the password shown once")
        .to_string();
    assert!(shown.len() >= 12);
    assert!(!get(&address, "/console/account", Some(&ada))
        .await
        .body
        .contains(&shown));
    let first = login_from(&address, "127.0.0.1", "nuovo", &shown).await;
    assert_eq!(first.code, 303, "{}", first.body);
    let a = post_form(
        "/console/account/vera/ruolo",
        &ada,
        vec![("csrf", ada_token.clone()), ("ruolo", "approver".into())],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    let a = post_form(
        "/console/account/vera/disattiva",
        &ada,
        vec![("csrf", ada_token.clone())],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    assert_eq!(
        get(&address, "/console", Some(&vera)).await.code,
        303,
        "a disabled account's session ends"
    );
    let page = get(&address, "/console/account", Some(&ada)).await.body;
    assert!(!page.contains("/console/account/ada/disattiva"), "{page}");
    let a = post_form(
        "/console/account/ada/disattiva",
        &ada,
        vec![("csrf", ada_token.clone())],
    )
    .await;
    assert_eq!(a.code, 409, "{}", a.body);
    assert_eq!(get(&address, "/console", Some(&ada)).await.code, 200);
    daemon.terminate().await;

    // The audit log: each refusal and each action with its actor; no password anywhere.
    let entries = audit(&t);
    for (_, _, right, action) in &actions {
        let right = if *right == "mario" {
            "mario.rossi"
        } else {
            "ada"
        };
        let rows = audited(&entries, "vera", action);
        assert!(
            rows.iter().any(|(_, o)| o.starts_with("forbidden:")),
            "{action}: {rows:?}"
        );
        assert!(
            audited(&entries, right, action)
                .iter()
                .any(|(_, o)| o.contains("security token")),
            "{action}"
        );
    }
    let ok = |who: &str, action: &str| -> Vec<String> {
        audited(&entries, who, action)
            .into_iter()
            .filter(|(_, o)| o == "ok")
            .map(|(object, _)| object)
            .collect()
    };
    assert_eq!(
        ok("mario.rossi", "campaign.create"),
        ["avviso-web", "avviso-elenco"]
    );
    assert_eq!(ok("mario.rossi", "suppress.add"), ["chiuso@example.org"]);
    assert_eq!(ok("mario.rossi", "suppress.remove"), ["chiuso@example.org"]);
    assert_eq!(ok("ada", "users.add"), ["nuovo"]);
    assert_eq!(ok("ada", "users.role"), ["vera"]);
    assert_eq!(ok("ada", "users.disable"), ["vera"]);
    assert!(audited(&entries, "ada", "users.disable")
        .iter()
        .any(|(o, r)| o == "ada" && r.contains("their own account")));
    let all = serde_json::to_string(&entries).unwrap();
    assert!(!all.contains(&shown));
    let daemon_log = std::fs::read_to_string(&log).unwrap();
    assert!(!daemon_log.contains(&shown));
}

/// A form's fields.
type Fields = Vec<(&'static str, String)>;

/// The state of campaign `name`, or `None` when there is none.
async fn state_or_none(t: &TestApp, name: &str) -> Option<String> {
    sqlx::query("SELECT state FROM campaigns WHERE name = $1")
        .bind(name)
        .fetch_optional(t.db.pool())
        .await
        .unwrap()
        .map(|r| r.get("state"))
}

/// A POST of `body` as `content_type` with `cookie`'s session, over plain TCP.
async fn raw_post(
    address: &str,
    path: &str,
    cookie: &str,
    content_type: &str,
    body: &str,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Cookie: avvisi_session={cookie}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("an answer within 30 s")
    .unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Answer {
        code,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

/// The test messages the sink accepted (their Message-ID starts `<test.`), as (recipients,
/// decoded subject, To header).
fn test_messages(sink: &SmtpSink) -> Vec<(Vec<String>, String, String)> {
    sink.received()
        .iter()
        .filter(|m| {
            m.header("Message-ID")
                .is_some_and(|i| i.starts_with("<test."))
        })
        .map(|m| {
            (
                m.rcpt_to.clone(),
                crate::helpers::decode_header(&m.header("Subject").unwrap_or_default()),
                m.header("To").unwrap_or_default(),
            )
        })
        .collect()
}

async fn an_operator_sends_a_test_to_their_own_address_only(t: TestApp) {
    t.import_examples().await;
    ok_as(
        &t,
        "root",
        &[
            "users",
            "add",
            "mario.rossi",
            "--role",
            "operator",
            "--address",
            "mario.rossi@istruzione.it",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    own_password(&t, "mario.rossi");
    add_account(&t, "luca", "operator");
    add_account(&t, "vera", "viewer");
    add_account(&t, "ada", "admin");
    create(&t, "alice", "avviso-bo", "BO");
    let sink = SmtpSink::start().await;
    let env = testkit::smtp::env(&sink.url());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = t.dir.path().join("daemon.log");
    let (daemon, address) = daemon(&t, &log, &env).await;
    let mario = signed_in(&address, "mario.rossi").await;
    let luca = signed_in(&address, "luca").await;
    let vera = signed_in(&address, "vera").await;
    let ada = signed_in(&address, "ada").await;
    let path = "/console/campagne/avviso-bo/prova";

    // The operator's page has the form, with no address field; the viewer's has none.
    let page = get(&address, "/console/campagne/avviso-bo", Some(&mario))
        .await
        .body;
    assert!(page.contains("Invia una prova al mio indirizzo"), "{page}");
    assert!(has_button(&page, "avviso-bo", "prova"));
    let token = csrf(&page);
    let vera_page = get(&address, "/console/campagne/avviso-bo", Some(&vera))
        .await
        .body;
    assert!(!has_button(&vera_page, "avviso-bo", "prova"), "{vera_page}");
    assert!(!vera_page.contains("Invia una prova"));

    // Without its token, or from the viewer (her own valid token): 403, nothing sent.
    let a = post(&address, path, &mario, &[]).await;
    assert_eq!(a.code, 403, "{}", a.body);
    let a = post(&address, path, &vera, &[("csrf", &csrf(&vera_page))]).await;
    assert_eq!(a.code, 403, "{}", a.body);
    assert!(
        a.body.contains("non è consentita al tuo ruolo"),
        "{}",
        a.body
    );
    assert!(test_messages(&sink).is_empty());

    // The operator's test: to their account's address only, whatever address the form carries.
    let a = post(
        &address,
        path,
        &mario,
        &[("csrf", &token), ("indirizzo", "altro@example.org")],
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(a.body.contains("mario.rossi@istruzione.it"), "{}", a.body);
    let sent = test_messages(&sink);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (rcpt, subject, to) = &sent[0];
    assert_eq!(rcpt.len(), 1, "{rcpt:?}");
    assert!(rcpt[0].contains("mario.rossi@istruzione.it"), "{rcpt:?}");
    assert!(subject.starts_with("[PROVA]"), "{subject}");
    assert!(to.contains("mario.rossi@istruzione.it"), "{to}");
    assert!(!sink
        .received()
        .iter()
        .any(|m| m.rcpt_to.iter().any(|r| r.contains("altro@example.org"))));
    assert_eq!(state(&t, "avviso-bo").await, "draft");

    // An operator without an address: told so in Italian, nothing sent.
    let luca_page = get(&address, "/console/campagne/avviso-bo", Some(&luca))
        .await
        .body;
    let a = post(&address, path, &luca, &[("csrf", &csrf(&luca_page))]).await;
    assert_eq!(a.code, 409, "{}", a.body);
    assert!(a.body.contains("non ha un indirizzo email"), "{}", a.body);
    assert_eq!(test_messages(&sink).len(), 1);

    // The administrator sets it on the accounts page (a bad one is refused and not kept); then
    // luca's test arrives at it.
    let accounts = get(&address, "/console/account", Some(&ada)).await.body;
    assert!(accounts.contains("mario.rossi@istruzione.it"), "{accounts}");
    let ada_token = csrf(&accounts);
    let a = post(
        &address,
        "/console/account/luca/indirizzo",
        &ada,
        &[("csrf", &ada_token), ("indirizzo", "luca@@istruzione.it")],
    )
    .await;
    assert_eq!(a.code, 409, "{}", a.body);
    let a = post(
        &address,
        "/console/account/luca/indirizzo",
        &mario,
        &[("csrf", &token), ("indirizzo", "mario.rossi@istruzione.it")],
    )
    .await;
    assert_eq!(
        a.code, 403,
        "an operator does not set addresses: {}",
        a.body
    );
    let a = post(
        &address,
        "/console/account/luca/indirizzo",
        &ada,
        &[
            ("csrf", &ada_token),
            ("indirizzo", "luca.verdi@istruzione.it"),
        ],
    )
    .await;
    assert_eq!(a.code, 303, "{}", a.body);
    let accounts = get(&address, "/console/account", Some(&ada)).await.body;
    assert!(accounts.contains("luca.verdi@istruzione.it"), "{accounts}");
    let a = post(&address, path, &luca, &[("csrf", &csrf(&luca_page))]).await;
    assert_eq!(a.code, 200, "{}", a.body);
    let sent = test_messages(&sink);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[1].0.len() == 1 && sent[1].0[0].contains("luca.verdi@istruzione.it"));
    daemon.terminate().await;

    // The command line sets one too, and lists it.
    ok_as(
        &t,
        "root",
        &["users", "address", "vera", "vera@istruzione.it"],
        None,
    );
    let listed = json_as(&t, "root", &["users", "list", "--json"]);
    let vera_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "vera")
        .unwrap()
        .clone();
    assert_eq!(vera_row["address"], "vera@istruzione.it");

    // The audit log: each test with its actor and where it went, the refusals, the address set.
    let entries = audit(&t);
    assert_eq!(
        audited(&entries, "mario.rossi", "campaign.test"),
        [
            (
                "avviso-bo".to_string(),
                "refused: the form's security token is missing or wrong".to_string()
            ),
            ("avviso-bo".to_string(), "ok".to_string())
        ]
    );
    let to_mario = entries
        .iter()
        .find(|e| {
            e["actor_name"] == "mario.rossi"
                && e["action"] == "campaign.test"
                && e["outcome"] == "ok"
        })
        .unwrap();
    assert!(
        to_mario["after"]
            .as_str()
            .is_some_and(|s| s.contains("mario.rossi@istruzione.it")),
        "{to_mario}"
    );
    let vera_tests = audited(&entries, "vera", "campaign.test");
    assert_eq!(vera_tests.len(), 1, "{vera_tests:?}");
    assert!(vera_tests[0].1.starts_with("forbidden"), "{vera_tests:?}");
    let luca_tests = audited(&entries, "luca", "campaign.test");
    assert_eq!(luca_tests.len(), 2, "{luca_tests:?}");
    assert!(
        luca_tests[0]
            .1
            .starts_with("refused: l'account `luca` non ha un indirizzo"),
        "{luca_tests:?}"
    );
    assert_eq!(luca_tests[1].1, "ok");
    let set = audited(&entries, "ada", "users.address");
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(
        set[0].1.starts_with("refused") && set[1].1 == "ok",
        "{set:?}"
    );
    assert_eq!(audited(&entries, "mario.rossi", "users.address").len(), 1);
}

/// The holds a page lists: the `attribute` of each `<li>` and its text, unescaped.
fn holds_listed(page: &str, attribute: &str) -> Vec<(String, String)> {
    let marker = format!("<li {attribute}=\"");
    page.split(&marker)
        .skip(1)
        .map(|rest| {
            let (kind, rest) = rest.split_once("\">").unwrap();
            let text = &rest[..rest.find("</li>").unwrap()];
            // Tera and the console escape differently; the sentences are compared as read.
            let text = text
                .replace("&#x27;", "'")
                .replace("&#39;", "'")
                .replace("&#x2F;", "/")
                .replace("&amp;", "&");
            (kind.to_string(), text)
        })
        .collect()
}

/// At 22:30 with a campaign paused and a provider's domain held, the daemon's status page and
/// the console's queue page list the same holds, in Italian (when sending resumes, the paused
/// campaign, the held domain), from the one list `avvisi status --json` reports too.
async fn the_status_page_and_the_queue_name_what_holds_sending(t: TestApp) {
    t.import_examples().await;
    add_account(&t, "vera", "viewer");
    create(&t, "alice", "avviso-ba", "BA");
    ok_as(
        &t,
        "bob",
        &["campaign", "approve", "avviso-ba", "--yes"],
        None,
    );
    ok_as(&t, "alice", &["campaign", "launch", "avviso-ba"], None);
    ok_as(&t, "alice", &["campaign", "pause", "avviso-ba"], None);
    // A provider's request to slow down, as the sender records it: held until 2030.
    sqlx::query(
        "INSERT INTO domain_holds (domain, held_until, strikes, reply, since) \
         VALUES ('libero.it', 1893456000, 1, '421 4.7.0 rallentare', 1764000000)",
    )
    .execute(t.db.pool())
    .await
    .unwrap();
    let log = t.dir.path().join("daemon.log");
    let child = t.spawn(
        &["daemon", "--now", "2026-11-23T22:30:00+01:00"],
        &[
            ("AVVISI__HTTP__ADDRESS", "127.0.0.1:0"),
            ("AVVISI__DAEMON__POLL_SECONDS", "1"),
        ],
        &log,
    );
    let address = served_address(&child, &log).await;

    let status = get(&address, "/", None).await;
    assert_eq!(status.code, 200, "{}", status.body);
    let on_status = holds_listed(&status.body, "data-hold");
    let kinds: Vec<&str> = on_status.iter().map(|(k, _)| k.as_str()).collect();
    for kind in ["sending_hours", "paused", "domain_held"] {
        assert!(kinds.contains(&kind), "{kind} missing: {}", status.body);
    }
    assert!(!kinds.contains(&"no_daemon"), "{}", status.body);
    let said = |kind: &str| {
        on_status
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, text)| text.clone())
            .unwrap()
    };
    assert!(
        said("sending_hours").ends_with("l'invio riprende alle 08:00 del 24/11/2026."),
        "{}",
        said("sending_hours")
    );
    assert!(said("paused").starts_with("Campagna avviso-ba messa in pausa da un operatore"));
    assert!(said("domain_held").starts_with("Dominio libero.it fermo fino alle"));
    assert!(status.body.contains("lang=\"it\""));

    // The viewer's queue page: the very same sentences.
    let vera = signed_in(&address, "vera").await;
    let queue = get(&address, "/console/coda", Some(&vera)).await;
    assert_eq!(queue.code, 200, "{}", queue.body);
    let on_queue = holds_listed(&queue.body, "data-fermo");
    assert_eq!(on_queue, on_status);

    // The command line's status, from the same list: the paused campaign and the held domain.
    let json = json_as(&t, "root", &["status", "--json"]);
    let cli: Vec<&str> = json["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert!(
        cli.contains(&"paused") && cli.contains(&"domain_held"),
        "{json}"
    );
    child.terminate().await;
}

/// The `Location` of a redirect.
fn location(a: &Answer) -> &str {
    a.header("location").unwrap_or_default()
}

/// An account added by an administrator (host or page), or whose password an administrator
/// reset, reaches only the change of password until its owner sets one: the current password
/// required, the new one different and long enough; `users passwd` by the owner clears it too.
/// Each change and refusal audited, no password in the log.
async fn a_password_set_by_someone_else_is_changed_at_the_first_login(t: TestApp) {
    add_account(&t, "ada", "admin");
    ok_as(
        &t,
        "root",
        &["users", "add", "nuovo", "--role", "operator"],
        Some(&format!("{PASSWORD}\n")),
    );
    let listed = json_as(&t, "root", &["users", "list", "--json"]);
    let marked = |v: &Value, name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["must_change_password"] == true)
            .unwrap()
    };
    assert!(
        marked(&listed, "nuovo") && !marked(&listed, "ada"),
        "{listed}"
    );
    let (daemon, address) = daemon(&t, &t.dir.path().join("daemon.log"), &[]).await;
    let nuovo = signed_in(&address, "nuovo").await;

    // Every other page, and any action, leads to the change of password; nothing is done.
    for path in ["/console", "/console/coda", "/console/nuova"] {
        let a = get(&address, path, Some(&nuovo)).await;
        assert_eq!((a.code, location(&a)), (303, "/console/password"), "{path}");
    }
    let page = get(&address, "/console/password", Some(&nuovo)).await;
    assert_eq!(page.code, 200, "{}", page.body);
    assert!(
        page.body.contains("scelta da un'altra persona"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("href=\"/console/coda\""),
        "no navigation yet"
    );
    let token = csrf(&page.body);
    let a = post(
        &address,
        "/console/soppressioni/aggiungi",
        &nuovo,
        &[
            ("csrf", &token),
            ("indirizzo", "x@example.org"),
            ("motivo", "m"),
        ],
    )
    .await;
    assert_eq!((a.code, location(&a)), (303, "/console/password"));

    // Refused: no token, a wrong current password, the same one, one too short, two that
    // differ.
    let change = |current: &'static str, new: &'static str, again: &'static str| {
        let (address, nuovo, token) = (address.clone(), nuovo.clone(), token.clone());
        async move {
            post(
                &address,
                "/console/password",
                &nuovo,
                &[
                    ("csrf", token.as_str()),
                    ("attuale", current),
                    ("nuova", new),
                    ("ripeti", again),
                ],
            )
            .await
        }
    };
    let no_token = post(
        &address,
        "/console/password",
        &nuovo,
        &[
            ("attuale", PASSWORD),
            ("nuova", "una frase tutta nuova"),
            ("ripeti", "una frase tutta nuova"),
        ],
    )
    .await;
    assert_eq!(no_token.code, 403, "{}", no_token.body);
    let cases = [
        (
            change(
                "non è lei",
                "una frase tutta nuova",
                "una frase tutta nuova",
            )
            .await,
            "La password attuale non è corretta",
        ),
        (
            change(PASSWORD, PASSWORD, PASSWORD).await,
            "diversa da quella attuale",
        ),
        (
            change(PASSWORD, "corta", "corta").await,
            "almeno 12 caratteri",
        ),
        (
            change(PASSWORD, "una frase tutta nuova", "un'altra frase").await,
            "non coincidono",
        ),
    ];
    for (a, said) in &cases {
        assert_eq!(a.code, 422, "{}", a.body);
        assert!(a.body.contains(said), "{said}: {}", a.body);
    }
    assert_eq!(
        location(&get(&address, "/console", Some(&nuovo)).await),
        "/console/password"
    );

    // The right change: the console opens; the new password signs in, the old one no more.
    let done = change(PASSWORD, "una frase tutta nuova", "una frase tutta nuova").await;
    assert_eq!(
        (done.code, location(&done)),
        (303, "/console"),
        "{}",
        done.body
    );
    assert_eq!(get(&address, "/console/coda", Some(&nuovo)).await.code, 200);
    assert_eq!(
        login_from(&address, "127.0.0.1", "nuovo", PASSWORD)
            .await
            .code,
        401
    );
    assert_eq!(
        login_from(&address, "127.0.0.1", "nuovo", "una frase tutta nuova")
            .await
            .code,
        303
    );

    // An administrator's reset marks it again; the owner's own `users passwd` clears it.
    ok_as(
        &t,
        "root",
        &["users", "passwd", "nuovo"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(
        location(&get(&address, "/console", Some(&nuovo)).await),
        "/console/password"
    );
    ok_as(
        &t,
        "nuovo",
        &["users", "passwd", "nuovo"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(get(&address, "/console", Some(&nuovo)).await.code, 200);

    // An account the administrator adds on the page is marked too.
    let ada = signed_in(&address, "ada").await;
    let ada_token = csrf(&get(&address, "/console/account", Some(&ada)).await.body);
    let a = post(
        &address,
        "/console/account/aggiungi",
        &ada,
        &[
            ("csrf", &ada_token),
            ("nome", "terzo"),
            ("ruolo", "viewer"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    let terzo = signed_in(&address, "terzo").await;
    assert_eq!(
        location(&get(&address, "/console", Some(&terzo)).await),
        "/console/password"
    );

    // A wrong current password counts toward the login's throttle, or a stolen session could
    // guess passwords here without end. Two so far (the wrong current password above, the
    // login with the old password): three more are answered 422, the next try 429 with when to
    // retry, the right password too, and the login of the account from another address.
    let mut codes = Vec::new();
    for _ in 0..6 {
        let a = change(
            "non è lei",
            "una frase tutta nuova",
            "una frase tutta nuova",
        )
        .await;
        codes.push(a.code);
        if a.code == 429 {
            assert!(a.body.contains("Troppi tentativi"), "{}", a.body);
            assert!(a.header("retry-after").is_some(), "{:?}", a.headers);
            break;
        }
        assert!(a.body.contains("La password attuale non è corretta"));
    }
    assert_eq!(codes, [422, 422, 422, 429]);
    let right = change(PASSWORD, "una frase tutta nuova", "una frase tutta nuova").await;
    assert_eq!(right.code, 429, "{}", right.body);
    assert_eq!(
        login_from(&address, "127.0.0.9", "nuovo", PASSWORD)
            .await
            .code,
        429
    );
    daemon.terminate().await;

    let entries = audit(&t);
    let outcomes: Vec<String> = audited(&entries, "nuovo", "account.password")
        .into_iter()
        .map(|(object, outcome)| {
            assert_eq!(object, "nuovo");
            outcome
        })
        .collect();
    assert_eq!(outcomes.len(), 5 + 4 + 1, "{outcomes:?}");
    assert!(outcomes[0].contains("security token"), "{outcomes:?}");
    assert!(
        outcomes[1].contains("current password is wrong"),
        "{outcomes:?}"
    );
    assert!(outcomes[2].contains("is the current one"), "{outcomes:?}");
    assert!(outcomes[3].contains("too short"), "{outcomes:?}");
    assert_eq!(outcomes[4], "ok");
    assert!(
        outcomes[5..8]
            .iter()
            .all(|o| o.contains("current password is wrong")),
        "{outcomes:?}"
    );
    assert!(
        outcomes[8..]
            .iter()
            .all(|o| o.contains("too many wrong passwords")),
        "{outcomes:?}"
    );
    let passwd: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "users.passwd" && e["object"] == "nuovo")
        .map(|e| {
            (
                e["actor_name"].as_str().unwrap().to_string(),
                e["after"].to_string(),
            )
        })
        .collect();
    assert_eq!(passwd.len(), 2, "{passwd:?}");
    assert!(passwd[0].1.contains("must_change_password"), "{passwd:?}");
    assert!(!passwd[1].1.contains("must_change_password"), "{passwd:?}");
    let all = serde_json::to_string(&entries).unwrap();
    for secret in [PASSWORD, "una frase tutta nuova", "corta"] {
        assert!(!all.contains(secret), "{secret} in the audit log");
    }
}
