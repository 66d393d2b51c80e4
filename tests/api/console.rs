//! The console's foundation through the real binary: accounts (`users ...`, a password piped on
//! standard input, the login check), a second person's approval before a launch (a changed
//! audience refused until approved again), roles refused with `Forbidden`, and the audit log
//! (`audit --json`; append-only in the database itself).

use std::io::Write;
use std::process::{Output, Stdio};

use avvisi::app::{Actor, App, Forbidden, LoginRefused};
use avvisi::store::accounts::Role;
use secrecy::SecretString;
use serde_json::Value;
use sqlx::Row;

use crate::helpers::TestApp;
use crate::on_both_backends;

on_both_backends!(
    accounts_are_kept_from_the_host_and_never_show_a_password,
    a_second_person_approves_and_a_changed_audience_needs_a_new_approval,
    every_action_is_in_the_audit_log_with_its_actor_and_outcome,
    the_database_refuses_to_change_the_audit_log,
    an_action_whose_audit_row_cannot_be_written_changes_nothing,
    a_campaign_shows_how_many_users_each_clause_keeps,
);

pub(crate) const PASSWORD: &str = "cavallo batteria graffetta";
const OTHER_PASSWORD: &str = "un'altra frase lunga";

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `avvisi args` as operating-system user `user`, with `stdin` piped in, logging at debug level.
pub(crate) fn run_as(app: &TestApp, user: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = vec!["-v"];
    all.extend_from_slice(args);
    let mut cmd = app.command(&all);
    cmd.env("USER", user)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run avvisi");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().expect("avvisi's output")
}

pub(crate) fn ok_as(app: &TestApp, user: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run_as(app, user, args, stdin);
    assert!(
        out.status.success(),
        "avvisi {args:?} failed:\n{}",
        text(&out)
    );
    text(&out)
}

fn fails_as(app: &TestApp, user: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run_as(app, user, args, stdin);
    assert!(
        !out.status.success(),
        "avvisi {args:?} should fail:\n{}",
        text(&out)
    );
    text(&out)
}

/// The JSON that `avvisi args --json` prints on standard output (its logs go to standard error).
pub(crate) fn json_as(app: &TestApp, user: &str, args: &[&str]) -> Value {
    let out = run_as(app, user, args, None);
    assert!(
        out.status.success(),
        "avvisi {args:?} failed:\n{}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on standard output")
}

fn app_of(t: &TestApp) -> App {
    App::new(t.db.clone(), t.settings.clone(), t.clock.clone())
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

async fn stored_hash(t: &TestApp, name: &str) -> String {
    sqlx::query("SELECT password_hash FROM accounts WHERE name = $1")
        .bind(name)
        .fetch_one(t.db.pool())
        .await
        .unwrap()
        .get("password_hash")
}

fn audit(t: &TestApp) -> Vec<Value> {
    json_as(t, "root", &["audit", "--json"])
        .as_array()
        .expect("a list")
        .clone()
}

/// Accounts added, listed, changed and disabled from the host; the password piped in becomes
/// an Argon2id hash and appears nowhere else; the login check answers right, wrong, disabled
/// and unknown.
async fn accounts_are_kept_from_the_host_and_never_show_a_password(t: TestApp) {
    let mut outputs = String::new();
    let line = format!("{PASSWORD}\n");
    outputs += &ok_as(
        &t,
        "root",
        &["users", "add", "mario.rossi", "--role", "operator"],
        Some(&line),
    );
    let short = fails_as(
        &t,
        "root",
        &["users", "add", "anna", "--role", "approver"],
        Some("corta\n"),
    );
    assert!(
        short.contains("too short: at least 12 characters"),
        "{short}"
    );
    outputs += &short;
    let unknown_role = fails_as(
        &t,
        "root",
        &["users", "add", "anna", "--role", "boss"],
        Some(&line),
    );
    assert!(unknown_role.contains("boss"), "{unknown_role}");

    let accounts = json_as(&t, "root", &["users", "list", "--json"]);
    let list = accounts.to_string();
    outputs += &list;
    assert_eq!(
        accounts.as_array().unwrap().len(),
        1,
        "the short password added nothing"
    );
    assert_eq!(accounts[0]["name"], "mario.rossi");
    assert_eq!(accounts[0]["role"], "operator");
    assert_eq!(accounts[0]["disabled"], false);
    assert!(!list.contains("argon2") && !list.contains("hash"), "{list}");

    let hash = stored_hash(&t, "mario.rossi").await;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));

    let app = app_of(&t);
    let account = app
        .verify_login("mario.rossi", &secret(PASSWORD))
        .await
        .expect("the right password");
    assert_eq!(
        (account.name.as_str(), account.role),
        ("mario.rossi", Role::Operator)
    );
    assert!(matches!(
        app.verify_login("mario.rossi", &secret(OTHER_PASSWORD))
            .await,
        Err(LoginRefused::WrongCredentials)
    ));
    assert!(matches!(
        app.verify_login("nessuno", &secret(PASSWORD)).await,
        Err(LoginRefused::WrongCredentials)
    ));

    outputs += &ok_as(
        &t,
        "root",
        &["users", "passwd", "mario.rossi"],
        Some(&format!("{OTHER_PASSWORD}\n")),
    );
    assert!(app
        .verify_login("mario.rossi", &secret(PASSWORD))
        .await
        .is_err());
    app.verify_login("mario.rossi", &secret(OTHER_PASSWORD))
        .await
        .expect("the new password");
    outputs += &ok_as(
        &t,
        "root",
        &["users", "role", "mario.rossi", "approver"],
        None,
    );
    outputs += &ok_as(&t, "root", &["users", "disable", "mario.rossi"], None);
    match app
        .verify_login("mario.rossi", &secret(OTHER_PASSWORD))
        .await
    {
        Err(LoginRefused::Disabled(name)) => assert_eq!(name, "mario.rossi"),
        other => panic!("a disabled account must be refused: {other:?}"),
    }
    let shown = ok_as(&t, "root", &["users", "list"], None);
    assert!(
        shown.contains("approver") && shown.contains("disabled"),
        "{shown}"
    );
    let missing = fails_as(&t, "root", &["users", "disable", "nessuno"], None);
    assert!(missing.contains("no account named `nessuno`"), "{missing}");

    // The passwords are in no output, no log line, no audit row; in the database only hashed.
    let entries = audit(&t);
    let log = serde_json::to_string(&entries).unwrap();
    for p in [PASSWORD, OTHER_PASSWORD, "corta"] {
        assert!(!outputs.contains(p), "{p} in the output:\n{outputs}");
        assert!(!log.contains(p), "{p} in the audit log");
    }
    assert!(!log.contains("argon2"), "a hash in the audit log: {log}");
    let rows: Vec<(String, String)> = sqlx::query("SELECT name, password_hash FROM accounts")
        .fetch_all(t.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("name"), r.get("password_hash")))
        .collect();
    for (_, h) in &rows {
        assert!(!h.contains(PASSWORD) && !h.contains(OTHER_PASSWORD));
    }
    if let Some(path) = t.database_url.strip_prefix("sqlite://") {
        // Every byte SQLite wrote, its write-ahead log included.
        let mut bytes = std::fs::read(path).unwrap();
        bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
        for p in [PASSWORD, OTHER_PASSWORD] {
            assert!(
                !bytes.windows(p.len()).any(|w| w == p.as_bytes()),
                "{p} in the database file"
            );
        }
    }
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        [
            "users.add",
            "users.add",
            "users.passwd",
            "users.role",
            "users.disable",
            "users.disable"
        ],
        "{actions:?}"
    );
    assert!(
        actions[1]
            .1
            .starts_with("refused: the password is too short"),
        "{actions:?}"
    );
    assert!(
        actions[5].1.starts_with("refused: no account named"),
        "{actions:?}"
    );
    // Its password was set by root, not by mario.rossi: the mark stays until he sets his own.
    assert_eq!(
        entries[3]["before"],
        r#"{"disabled":false,"must_change_password":true,"role":"operator"}"#
    );
    assert_eq!(
        entries[3]["after"],
        r#"{"disabled":false,"must_change_password":true,"role":"approver"}"#
    );
}

/// One line of a partial snapshot: a new enabled user in Bologna, and U0024 (Bologna) no longer
/// enabled. The audience of a Bologna campaign keeps its size and changes its people.
const BOLOGNA_CHANGES: &str = "user_id,fiscal_code,first_name,last_name,email,institutional_email,registration,enabled,pending_email,code_regeneration,province,updated_at\n\
U0100,RSSMRA85T10A562S,Mario,Rossi,mario.rossi100@libero.it,,completed,true,,none,BO,2026-11-22T10:00:00+01:00\n\
U0024,RCCSLV87R55A944O,Silvia,Ricci,silvia.ricci@gmail.com,,completed,false,,none,BO,2026-11-22T10:00:00+01:00\n";

/// A one-off campaign: its creator cannot approve it, a script must say `--yes`, someone else
/// approves (the audience and ten rendered messages frozen), the launch checks the audience:
/// changed (same size, other people) it is refused with the difference and the approval goes
/// stale; approved again, it launches and sends.
async fn a_second_person_approves_and_a_changed_audience_needs_a_new_approval(t: TestApp) {
    t.import_examples().await;
    ok_as(
        &t,
        "alice",
        &[
            "campaign",
            "create",
            "notice-bo",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--filter",
            "province=BO",
        ],
        None,
    );
    ok_as(
        &t,
        "alice",
        &[
            "campaign",
            "create",
            "notice-all",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
        ],
        None,
    );

    let refused = fails_as(&t, "alice", &["campaign", "launch", "notice-bo"], None);
    assert!(refused.contains("has not been approved"), "{refused}");
    let own = fails_as(
        &t,
        "alice",
        &["campaign", "approve", "notice-bo", "--yes"],
        None,
    );
    assert!(
        own.contains("was created by alice: someone else must approve"),
        "{own}"
    );
    let no_yes = fails_as(&t, "bob", &["campaign", "approve", "notice-bo"], None);
    assert!(no_yes.contains("pass --yes"), "{no_yes}");

    // What the approver reads: the audience, its fingerprint, ten messages rendered for real
    // recipients.
    let all = ok_as(
        &t,
        "bob",
        &["campaign", "approve", "notice-all", "--yes"],
        None,
    );
    assert!(all.contains("the first 10 messages"), "{all}");
    assert_eq!(all.matches("Subject: ").count(), 10, "{all}");
    assert!(all.contains("approved by bob"), "{all}");
    let json = json_as(
        &t,
        "bob",
        &["campaign", "approve", "notice-bo", "--yes", "--json"],
    );
    assert_eq!(json["approved"]["audience_size"], 2);
    assert_eq!(json["preview"]["samples"].as_array().unwrap().len(), 2);
    assert_eq!(json["preview"]["samples"][0]["user_id"], "U0008");
    let stored: (i64, String, String) = {
        let r = sqlx::query(
            "SELECT a.audience_size, a.audience_sha256, a.samples FROM campaign_approvals a \
             JOIN campaigns c ON c.id = a.campaign_id WHERE c.name = 'notice-bo'",
        )
        .fetch_one(t.db.pool())
        .await
        .unwrap();
        (
            r.get("audience_size"),
            r.get("audience_sha256"),
            r.get("samples"),
        )
    };
    assert_eq!(stored.0, 2);
    assert_eq!(
        stored.1,
        json["approved"]["audience_sha256"].as_str().unwrap()
    );
    assert_eq!(stored.1.len(), 64);
    assert!(
        stored.2.contains("Maria Grazia") && stored.2.contains("subject"),
        "{}",
        stored.2
    );

    // The audience changes after the approval: same size, other people.
    let snapshot = t.dir.path().join("bologna.csv");
    std::fs::write(&snapshot, BOLOGNA_CHANGES).unwrap();
    ok_as(
        &t,
        "root",
        &["import", "users", "--partial", snapshot.to_str().unwrap()],
        None,
    );
    let changed = fails_as(&t, "alice", &["campaign", "launch", "notice-bo"], None);
    assert!(
        changed.contains("the audience changed since its approval by bob: 2 users then, 2 now (1 added, 1 removed)"),
        "{changed}"
    );
    assert!(changed.contains("needs a new approval"), "{changed}");
    let stale = fails_as(&t, "alice", &["campaign", "launch", "notice-bo"], None);
    assert!(stale.contains("its approval is stale"), "{stale}");
    let shown = ok_as(&t, "alice", &["campaign", "show", "notice-bo"], None);
    assert!(shown.contains("by alice"), "{shown}");
    assert!(
        shown.contains("approved by bob") && shown.contains("stale"),
        "{shown}"
    );
    let shown = json_as(&t, "alice", &["campaign", "show", "notice-bo", "--json"]);
    assert_eq!(shown["created_by"], "alice");
    assert_eq!(shown["approval"]["decision"], "approved");
    assert!(shown["approval"]["stale_at"].is_string(), "{shown}");
    assert_eq!(
        avvisi::campaign::get(&t.db, "notice-bo")
            .await
            .unwrap()
            .state
            .as_str(),
        "draft"
    );

    ok_as(
        &t,
        "bob",
        &["campaign", "approve", "notice-bo", "--yes"],
        None,
    );
    // Only the latest approval keeps its audience's ids: the stale one's are gone.
    let kept: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT m.approval_id, COUNT(*) FROM approval_members m \
         JOIN campaign_approvals a ON a.id = m.approval_id JOIN campaigns c ON c.id = a.campaign_id \
         WHERE c.name = 'notice-bo' GROUP BY m.approval_id",
    )
    .fetch_all(t.db.pool())
    .await
    .unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1, 2, "{kept:?}");
    let launched = ok_as(&t, "alice", &["campaign", "launch", "notice-bo"], None);
    assert!(launched.contains("is running"), "{launched}");
    t.run_once().await;
    assert_eq!(t.users_in("notice-bo", "sent").await, ["U0008", "U0100"]);

    // A rejection stops a launch until someone approves again.
    ok_as(
        &t,
        "carol",
        &[
            "campaign",
            "reject",
            "notice-all",
            "--reason",
            "wrong template",
        ],
        None,
    );
    let rejected = fails_as(&t, "alice", &["campaign", "launch", "notice-all"], None);
    assert!(
        rejected.contains("was rejected by carol: wrong template"),
        "{rejected}"
    );

    // A test installation turns it off.
    ok_as(
        &t,
        "alice",
        &[
            "campaign",
            "create",
            "quick",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
        ],
        None,
    );
    let out = run_as(&t, "alice", &["campaign", "launch", "quick"], None);
    assert!(!out.status.success());
    let mut cmd = t.command(&["campaign", "launch", "quick"]);
    let out = cmd
        .env("USER", "alice")
        .env("AVVISI__APPROVAL__REQUIRED", "false")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

fn find<'a>(entries: &'a [Value], action: &str, outcome_prefix: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| {
            e["action"] == action && e["outcome"].as_str().unwrap().starts_with(outcome_prefix)
        })
        .unwrap_or_else(|| panic!("no {action} with outcome {outcome_prefix}: {entries:#?}"))
}

/// Each action that changes something, from the command line and from an account, appears in
/// `audit --json` with its actor, role, source, object and outcome: refusals (an illegal
/// transition, the creator approving, a role without the right) too.
async fn every_action_is_in_the_audit_log_with_its_actor_and_outcome(t: TestApp) {
    t.import_examples().await;
    ok_as(
        &t,
        "alice",
        &[
            "campaign",
            "create",
            "notice-bo",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--filter",
            "province=BO",
        ],
        None,
    );
    fails_as(
        &t,
        "alice",
        &["campaign", "approve", "notice-bo", "--yes"],
        None,
    );
    ok_as(
        &t,
        "bob",
        &["campaign", "approve", "notice-bo", "--yes"],
        None,
    );
    ok_as(
        &t,
        "alice",
        &[
            "campaign",
            "test",
            "notice-bo",
            "--to",
            "operatore@istruzione.it",
        ],
        None,
    );
    ok_as(&t, "alice", &["campaign", "launch", "notice-bo"], None);
    ok_as(&t, "alice", &["campaign", "pause", "notice-bo"], None);
    fails_as(&t, "alice", &["campaign", "pause", "notice-bo"], None);
    ok_as(&t, "alice", &["campaign", "resume", "notice-bo"], None);
    ok_as(
        &t,
        "alice",
        &["retry", "--failed", "--campaign", "notice-bo"],
        None,
    );
    ok_as(
        &t,
        "alice",
        &[
            "suppress",
            "add",
            "Mario.Rossi@libero.it",
            "--reason",
            "asked by phone",
        ],
        None,
    );
    ok_as(
        &t,
        "alice",
        &["suppress", "remove", "mario.rossi@libero.it"],
        None,
    );
    ok_as(
        &t,
        "alice",
        &["service", "reopen", "--at", "2026-12-14T09:00:00+01:00"],
        None,
    );
    ok_as(&t, "alice", &["campaign", "cancel", "notice-bo"], None);

    // From the console: a viewer may not pause, an operator may not approve.
    let app = app_of(&t);
    let viewer = Actor::Account {
        name: "vera".into(),
        role: Role::Viewer,
        address: Some("192.0.2.7".into()),
    };
    let e = app.pause_campaign(&viewer, "notice-bo").await.unwrap_err();
    assert!(e.downcast_ref::<Forbidden>().is_some(), "{e:#}");
    let operator = Actor::Account {
        name: "otto".into(),
        role: Role::Operator,
        address: None,
    };
    let e = app
        .approval_preview(&operator, "notice-bo")
        .await
        .unwrap_err();
    assert!(e.downcast_ref::<Forbidden>().is_some(), "{e:#}");

    let entries = audit(&t);
    let create = find(&entries, "campaign.create", "ok");
    assert_eq!(
        (
            &create["actor_kind"],
            &create["actor_name"],
            &create["role"],
            &create["source"],
            &create["object"]
        ),
        (
            &"command_line".into(),
            &"alice".into(),
            &"host".into(),
            &"cli".into(),
            &"notice-bo".into()
        )
    );
    assert!(
        create["after"]
            .as_str()
            .unwrap()
            .contains(r#""audience_size":2"#),
        "{create}"
    );
    let own = find(&entries, "campaign.approve", "refused");
    assert_eq!(own["actor_name"], "alice");
    assert!(
        own["outcome"]
            .as_str()
            .unwrap()
            .contains("someone else must approve"),
        "{own}"
    );
    assert_eq!(
        find(&entries, "campaign.approve", "ok")["actor_name"],
        "bob"
    );
    let test = find(&entries, "campaign.test", "ok");
    assert!(test["after"]
        .as_str()
        .unwrap()
        .contains("operatore@istruzione.it"));
    let launch = find(&entries, "campaign.launch", "ok");
    assert_eq!(launch["before"], r#"{"state":"draft"}"#);
    assert!(
        launch["after"]
            .as_str()
            .unwrap()
            .contains(r#""state":"running""#),
        "{launch}"
    );
    find(&entries, "campaign.pause", "ok");
    let illegal = find(&entries, "campaign.pause", "refused");
    assert!(
        illegal["outcome"]
            .as_str()
            .unwrap()
            .contains("it is paused"),
        "{illegal}"
    );
    find(&entries, "campaign.resume", "ok");
    find(&entries, "retry", "ok");
    assert_eq!(
        find(&entries, "suppress.add", "ok")["object"],
        "mario.rossi@libero.it"
    );
    find(&entries, "suppress.remove", "ok");
    find(&entries, "service.reopen", "ok");
    let cancel = find(&entries, "campaign.cancel", "ok");
    assert_eq!(cancel["before"], r#"{"state":"running"}"#);
    let forbidden = find(&entries, "campaign.pause", "forbidden");
    assert_eq!(
        (
            &forbidden["actor_kind"],
            &forbidden["actor_name"],
            &forbidden["role"],
            &forbidden["source"]
        ),
        (
            &"account".into(),
            &"vera".into(),
            &"viewer".into(),
            &"192.0.2.7".into()
        )
    );
    let forbidden = find(&entries, "campaign.approve", "forbidden");
    assert_eq!(
        (&forbidden["actor_name"], &forbidden["source"]),
        (&"otto".into(), &"console".into())
    );

    // No message body: the test message's text is not in the log.
    let log = serde_json::to_string(&entries).unwrap();
    assert!(!log.contains("Gentile"), "{log}");

    // --since, and the text form in Europe/Rome.
    let late = json_as(
        &t,
        "root",
        &["audit", "--since", "2030-01-01T00:00:00Z", "--json"],
    );
    assert_eq!(late, serde_json::json!([]));
    let shown = ok_as(&t, "root", &["audit"], None);
    assert!(
        shown.contains("CET") && shown.contains("alice (command_line, host, from cli)"),
        "{shown}"
    );
}

/// The audit log is append-only in the database itself: an UPDATE, a DELETE (and on
/// PostgreSQL a TRUNCATE) are refused, whoever runs them.
async fn the_database_refuses_to_change_the_audit_log(t: TestApp) {
    ok_as(
        &t,
        "root",
        &["users", "add", "anna", "--role", "admin"],
        Some(&format!("{PASSWORD}\n")),
    );
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log")
            .fetch_one(t.db.pool())
            .await
            .unwrap()
    };
    assert_eq!(count().await, 1);
    for sql in [
        "UPDATE audit_log SET outcome = 'nothing happened'",
        "DELETE FROM audit_log",
    ] {
        let e = sqlx::query(sql).execute(t.db.pool()).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    if t.backend == crate::helpers::Backend::Postgres {
        let e = sqlx::query("TRUNCATE audit_log")
            .execute(t.db.pool())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
    }
    assert_eq!(count().await, 1);
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM audit_log")
        .fetch_one(t.db.pool())
        .await
        .unwrap();
    assert_eq!(outcome, "ok");
}

/// The audit row is written in the action's own transaction: when the database refuses it (a
/// trigger added here for pauses), the pause is undone with it: the campaign keeps running.
async fn an_action_whose_audit_row_cannot_be_written_changes_nothing(t: TestApp) {
    t.import_examples().await;
    let env = [("AVVISI__APPROVAL__REQUIRED", "false")];
    for args in [
        &[
            "campaign",
            "create",
            "notice",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
        ][..],
        &["campaign", "launch", "notice"][..],
    ] {
        let out = t.avvisi(args, &env);
        assert!(out.status.success(), "{}", text(&out));
    }
    let refuse_pauses = match t.backend {
        crate::helpers::Backend::Sqlite => vec![
            "CREATE TRIGGER no_pause_audit BEFORE INSERT ON audit_log \
             WHEN NEW.action = 'campaign.pause' BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
        ],
        crate::helpers::Backend::Postgres => vec![
            "CREATE FUNCTION no_pause_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.action = 'campaign.pause' THEN RAISE EXCEPTION 'audit refused'; END IF; \
             RETURN NEW; END; $$",
            "CREATE TRIGGER no_pause_audit BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION no_pause_audit()",
        ],
    };
    for sql in refuse_pauses {
        sqlx::query(sql).execute(t.db.pool()).await.unwrap();
    }
    let out = t.avvisi(&["campaign", "pause", "notice"], &env);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit"), "{}", text(&out));
    assert_eq!(
        avvisi::campaign::get(&t.db, "notice")
            .await
            .unwrap()
            .state
            .as_str(),
        "running",
        "the pause must be rolled back with its audit row"
    );
    // Cancelling (audited as another action) still works, and is recorded.
    let out = t.avvisi(&["campaign", "cancel", "notice"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let actions: Vec<String> = audit(&t)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    // The first command that needs templates published the folder (the seed), audited too.
    assert_eq!(
        actions,
        [
            "templates.publish",
            "campaign.create",
            "campaign.launch",
            "campaign.cancel"
        ]
    );
}

/// The example snapshot's rows as maps from column name to value (no field there is quoted).
fn example_users() -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(crate::helpers::repo_path("examples/users.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split(',').map(str::to_string))
                .collect()
        })
        .collect()
}

/// `avvisi campaign show --json`'s funnel as (step, users) pairs.
fn funnel_of(t: &TestApp, name: &str) -> Vec<(String, u64)> {
    let v = json_as(t, "alice", &["campaign", "show", name, "--json"]);
    v["funnel"]
        .as_array()
        .unwrap_or_else(|| panic!("no funnel: {v}"))
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["users"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The funnel of a campaign for three provinces, counted from the CSV itself: every user, the
/// enabled ones, those of BO, RM and MI, the reachable ones (a suppressed address without
/// another institutional one is out, one with it stays), those who did not opt out; and a reminder's
/// audience's funnel, whose clause is its procedure's state.
async fn a_campaign_shows_how_many_users_each_clause_keeps(t: TestApp) {
    t.import_examples().await;
    let users = example_users();
    let enabled: Vec<_> = users.iter().filter(|u| u["enabled"] == "true").collect();
    let in_provinces: Vec<_> = enabled
        .iter()
        .filter(|u| ["BO", "RM", "MI"].contains(&u["province"].as_str()))
        .collect();
    // Suppressed: one without an institutional address (out), one whose institutional address
    // is another mailbox (stays: written to there), one whose institutional address is the
    // same mailbox (out); and one more opts out.
    let bare = in_provinces
        .iter()
        .find(|u| u["institutional_email"].is_empty())
        .unwrap();
    let fallback = in_provinces
        .iter()
        .find(|u| {
            !u["institutional_email"].is_empty()
                && !u["institutional_email"].eq_ignore_ascii_case(&u["email"])
        })
        .unwrap();
    let same = in_provinces
        .iter()
        .find(|u| u["institutional_email"].eq_ignore_ascii_case(&u["email"]))
        .unwrap();
    let leaving = in_provinces
        .iter()
        .find(|u| {
            ![bare, fallback, same]
                .iter()
                .any(|o| o["user_id"] == u["user_id"])
        })
        .unwrap();
    ok_as(
        &t,
        "alice",
        &[
            "campaign",
            "create",
            "avviso-tre",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
            "--province",
            "BO",
            "--province",
            "RM",
            "--province",
            "MI",
        ],
        None,
    );
    for u in [bare, fallback, same] {
        ok_as(
            &t,
            "alice",
            &["suppress", "add", &u["email"], "--reason", "chiusa"],
            None,
        );
    }
    avvisi::audience::optout::record(
        &t.db,
        &leaving["user_id"],
        &avvisi::store::Stream::Campaign("avviso-tre".into()),
        avvisi::store::OptOutSource::Link,
        t.clock.now(),
    )
    .await
    .unwrap();
    let expected: Vec<(String, u64)> = [
        ("in the snapshot", users.len()),
        ("still in the latest export", users.len()),
        ("enabled", enabled.len()),
        ("in the provinces BO, MI, RM", in_provinces.len()),
        (
            "reachable: address not suppressed (or an institutional one instead)",
            in_provinces.len() - 2,
        ),
        ("not opted out of these notices", in_provinces.len() - 3),
    ]
    .into_iter()
    .map(|(s, n)| (s.to_string(), n as u64))
    .collect();
    assert_eq!(funnel_of(&t, "avviso-tre"), expected);
    // The text says it too, and the size shown beside it is the step of the provinces.
    let shown = ok_as(&t, "alice", &["campaign", "show", "avviso-tre"], None);
    assert!(shown.contains("audience funnel"), "{shown}");
    assert!(
        shown.contains(&format!("({} users now)", in_provinces.len())),
        "{shown}"
    );

    // A reminder's audience: its procedure's state is a clause; a transactional campaign offers
    // no unsubscribe, so no opt-out step.
    let started: Vec<_> = users
        .iter()
        .filter(|u| u["registration"] == "started")
        .collect();
    ok_as(
        &t,
        "alice",
        &[
            "campaign",
            "create",
            "sollecito",
            "--audience",
            "registration_incomplete",
            "--template",
            "registration_incomplete",
            "--transactional",
            "la registrazione in sospeso dell'utente",
        ],
        None,
    );
    let unreachable = started
        .iter()
        .filter(|u| [bare, same].iter().any(|o| o["user_id"] == u["user_id"]))
        .count();
    let funnel = funnel_of(&t, "sollecito");
    assert_eq!(
        funnel,
        [
            ("in the snapshot".to_string(), users.len() as u64),
            ("still in the latest export".to_string(), users.len() as u64),
            (
                "registration started, not completed".to_string(),
                started.len() as u64
            ),
            (
                "reachable: address not suppressed (or an institutional one instead)".to_string(),
                (started.len() - unreachable) as u64
            ),
        ]
    );
}
