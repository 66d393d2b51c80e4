//! The deployment files: the systemd unit passes `systemd-analyze verify`, the production
//! configuration loads as the unit loads it (secrets from the environment and a file), and the
//! deployment and upgrade recipes of docs/operations.md run as written in a scratch root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use sqlx::Connection;

use crate::helpers::repo_path;

#[test]
fn the_systemd_unit_verifies() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        crate::helpers::skip_or_fail(
            "AVVISI_REQUIRE_SYSTEMD_ANALYZE",
            "the systemd unit check: systemd-analyze is not installed (apt-get install systemd)",
        );
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(repo_path("deploy/avvisi.service")).unwrap();
    // The unit names the installed binary; verify checks that it exists and is executable.
    assert!(unit
        .contains("ExecStart=/usr/local/bin/avvisi --config /etc/avvisi/production.toml daemon"));
    let unit = unit.replace("/usr/local/bin/avvisi", env!("CARGO_BIN_EXE_avvisi"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avvisi.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Warnings about this unit (an unknown key, a bad value) are printed but do not fail it.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("avvisi.service"))
        .collect();
    assert!(ours.is_empty(), "{stderr}");
    for hardening in [
        "User=avvisi",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            std::fs::read_to_string(&path).unwrap().contains(hardening),
            "{hardening}"
        );
    }
}

#[test]
fn the_production_configuration_loads() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("smtp-password");
    std::fs::write(&password, "relay-s3cret\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_avvisi"))
        .current_dir(repo_path("."))
        .args([
            "--config",
            "deploy/production.toml",
            "config",
            "show",
            "--json",
        ])
        // As the unit's environment file and credential provide them.
        .env(
            "AVVISI__DATABASE__URL",
            "postgres://avvisi:db-s3cret@db.example.internal:5432/avvisi",
        )
        .env("AVVISI__SMTP__PASSWORD_FILE", &password)
        .env(
            "AVVISI__UNSUBSCRIBE__SECRET",
            "unsubscribe-s3cret-0123456789abcdefghij",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("s3cret"), "secrets masked: {stdout}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let get = |key: &str| {
        entries
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {stdout}"))
            .clone()
    };
    assert_eq!(get("delivery.transport")["value"], "smtp");
    assert!(get("delivery.transport")["source"]
        .as_str()
        .unwrap()
        .contains("deploy/production.toml"));
    assert_eq!(
        get("smtp.url")["value"],
        "smtp://relay.example.internal:587?tls=required"
    );
    assert!(get("database.url")["value"]
        .as_str()
        .unwrap()
        .starts_with("postgres://avvisi:***@db.example.internal"));
    assert_eq!(get("http.address")["value"], "127.0.0.1:9025");
    // SMTP delivery needs the unsubscribe links' address; their key comes from the environment
    // file and is never shown.
    assert_eq!(
        get("unsubscribe.public_url")["value"],
        "https://avvisi.istruzione.it/disiscrizione"
    );
    assert_eq!(get("unsubscribe.secret")["value"], "***");
    assert!(!stdout.contains("unsubscribe-s3cret"), "{stdout}");
}

/// The commands of the "Deployment" code blocks (docs/operations.md) that need systemd, a real
/// service user or a build: not run here, each for the reason given (everything else is run).
const NOT_RUN: &[(&str, &str)] = &[
    ("cargo build", "the test runs the binary cargo built for it"),
    ("useradd", "the service user is `nobody` here"),
    ("systemctl", "no systemd here"),
    ("journalctl", "no systemd here"),
    ("systemd-run", "no systemd here"),
    ("curl", "no daemon under systemd here"),
    (
        "runuser -u postgres -- pg_dump",
        "on the database host, as its superuser",
    ),
];

/// The "Deployment" section of docs/operations.md: its code blocks (each a list of commands,
/// comments cut) and its whole text.
fn operations() -> (Vec<Vec<String>>, String) {
    let readme = std::fs::read_to_string(repo_path("docs/operations.md")).unwrap();
    let start = readme
        .find("\n## Deployment\n")
        .expect("a Deployment section");
    let end = start
        + readme[start..]
            .find("\n## Commands\n")
            .expect("then Commands");
    let text = readme[start..end].to_string();
    let mut blocks = Vec::new();
    let mut block: Option<Vec<String>> = None;
    for line in text.lines() {
        if line.starts_with("```") {
            match block.take() {
                Some(done) => blocks.push(done),
                None => block = Some(Vec::new()),
            }
        } else if let Some(block) = &mut block {
            // A comment after a command is set off by two spaces or more.
            let command = line.split("  #").next().unwrap().trim();
            if !command.is_empty() {
                block.push(command.to_string());
            }
        }
    }
    (blocks, text)
}

/// A shell as root, in the scratch root's PATH, in `dir`, with nothing else in its environment.
fn root_shell(root: &Path, dir: &Path, command: &str) -> Output {
    let path = format!(
        "{0}/usr/local/sbin:{0}/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        root.display()
    );
    Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `text` with `from` replaced, which must be there: an edit that drops it fails here.
fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} in:\n{text}");
    text.replace(from, to)
}

/// The deployment and upgrade recipes (docs/operations.md, "Deployment": Install, Configure,
/// Start and import, the dry run, the template check, Upgrade, the relay's commands outside the
/// unit), run as written in a scratch root standing for `/`: the same commands and files, the same
/// modes, root where the recipe is root's and `nobody` for the service user, on an empty
/// PostgreSQL database, with `deploy/production.toml` as installed (its relay password is the
/// systemd credential, absent here as outside any unit). Only what needs systemd is left out
/// ([`NOT_RUN`]).
#[tokio::test]
async fn the_operations_recipes_work_as_written() {
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    if !root_user || Command::new("runuser").arg("--help").output().is_err() {
        crate::helpers::skip_or_fail(
            "AVVISI_REQUIRE_RUNBOOK",
            "the Operations recipes: they need root and runuser (util-linux) to run as the service user",
        );
        return;
    }
    let Some(db) = crate::helpers::empty_postgres().await else {
        return;
    };
    let (blocks, section) = operations();
    let block = |needle: &str| -> &Vec<String> {
        let found: Vec<&Vec<String>> = blocks
            .iter()
            .filter(|b| b.iter().any(|l| l.contains(needle)))
            .collect();
        assert_eq!(found.len(), 1, "one block with {needle:?} in {blocks:#?}");
        found[0]
    };
    let install = block("useradd");
    let start = block("systemctl daemon-reload");
    let dry_run = block("plan --dry-run");
    let upgrade = block("systemctl stop");
    let in_a_unit = block("systemd-run");
    let as_root = block("(set -a");
    // Every block is one of these: a new recipe must be run here too.
    assert_eq!(blocks.len(), 6, "{blocks:#?}");

    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    for dir in [
        "etc/systemd/system",
        "usr/local/bin",
        "usr/local/sbin",
        "srv/snapshots",
        "root",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(root, 0o755);
    mode(&root.join("root"), 0o700);
    let home = root.join("root");
    let at_root = |command: &str| {
        let r = root.display();
        command
            .replace("/etc/", &format!("{r}/etc/"))
            .replace("/usr/local/", &format!("{r}/usr/local/"))
            .replace("/srv/", &format!("{r}/srv/"))
            .replace("target/release/avvisi", env!("CARGO_BIN_EXE_avvisi"))
    };
    let run = |command: &str, dir: &Path| -> Option<Output> {
        if let Some((_, why)) = NOT_RUN.iter().find(|(p, _)| command.starts_with(p)) {
            eprintln!("not run ({why}): {command}");
            return None;
        }
        Some(root_shell(root, dir, &at_root(command)))
    };
    let succeeds = |command: &str, out: Output| -> String {
        assert!(out.status.success(), "{command}\n{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };

    // Install, from the repository's folder.
    for command in install {
        if let Some(out) = run(command, &repo_path(".")) {
            succeeds(command, out);
        }
    }
    // Adapted here: the scratch root's paths, a relay that refuses at once
    // (nothing here must reach a real one), the service user `nobody`.
    let etc = root.join("etc/avvisi");
    let config = std::fs::read_to_string(etc.join("production.toml")).unwrap();
    let config = rewrite(&config, "\"/etc/avvisi/", &format!("\"{}/", etc.display()));
    let config = rewrite(&config, "relay.example.internal:587", "127.0.0.1:1");
    assert!(config.contains("password_file = \"/run/credentials/avvisi.service/smtp-password\""));
    std::fs::write(etc.join("production.toml"), config).unwrap();
    let ops = root.join("usr/local/sbin/avvisi-ops");
    let script = std::fs::read_to_string(&ops).unwrap();
    let script = rewrite(&script, "/etc/avvisi/", &format!("{}/", etc.display()));
    let script = rewrite(
        &script,
        "/usr/local/bin/avvisi ",
        &format!("{}/usr/local/bin/avvisi ", root.display()),
    );
    let script = rewrite(&script, "runuser -u avvisi --", "runuser -u nobody --");
    std::fs::write(&ops, script).unwrap();
    assert_eq!(
        std::fs::metadata(&ops).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    // The secrets, as "Configure" says: mode 0600, owner root. The environment file's line is
    // the documented one, with this database (its password, which trust ignores, must never show).
    for file in ["avvisi.env", "smtp-password"] {
        assert!(
            section.contains(&format!("`/etc/avvisi/{file}`, mode 0600, owner root")),
            "{file}"
        );
    }
    let env_line = section
        .split('`')
        .find(|s| s.starts_with("AVVISI__DATABASE__URL='"))
        .expect("the environment file's line");
    let mut url = url::Url::parse(&db.url).unwrap();
    if url.password().is_none() {
        url.set_password(Some("db-s3cret")).unwrap();
    }
    let env_line = rewrite(
        env_line,
        "postgres://avvisi:PASSWORD@db.example.internal:5432/avvisi",
        url.as_str(),
    );
    let secret = |name: &str, content: String| {
        let path = etc.join(name);
        std::fs::write(&path, content).unwrap();
        mode(&path, 0o600);
    };
    // The key of the unsubscribe links, the documented line with a key of the right length.
    let unsubscribe_line = section
        .split('`')
        .find(|s| s.starts_with("AVVISI__UNSUBSCRIBE__SECRET='"))
        .expect("the unsubscribe key's line");
    let unsubscribe_line = rewrite(
        unsubscribe_line,
        "'KEY'",
        "'unsubscribe-s3cret-0123456789abcdefghij'",
    );
    secret("avvisi.env", format!("{env_line}\n{unsubscribe_line}\n"));
    secret("smtp-password", "relay-s3cret\n".to_string());
    // The service user cannot read them: the reason avvisi-ops reads the environment as root.
    let cat = root_shell(
        root,
        &home,
        &format!("runuser -u nobody -- cat {}/avvisi.env", etc.display()),
    );
    assert!(!cat.status.success(), "{}", text(&cat));
    let no_secret = |out: &str| {
        assert!(
            !out.contains("db-s3cret")
                && !out.contains("relay-s3cret")
                && !out.contains("unsubscribe-s3cret"),
            "{out}"
        );
    };

    // The check before starting: the relay's password is not read (its credential is absent
    // here), its file is named; the database password masked.
    let check = "avvisi-ops config show";
    assert!(section.contains(&format!("`{check}`")));
    let shown = succeeds(check, run(check, &home).unwrap());
    no_secret(&shown);
    assert!(
        shown.contains("password_file = \"/run/credentials/avvisi.service/smtp-password\""),
        "{shown}"
    );
    let masked = format!("url = \"postgres://{}:***@", url.username());
    assert!(shown.contains(&masked), "{masked} in {shown}");

    // Start and import: the migrations applied and listed, the snapshot imported.
    std::fs::copy(
        repo_path("examples/users.csv"),
        root.join("srv/snapshots/users-2026-11-23.csv"),
    )
    .unwrap();
    mode(&root.join("srv/snapshots/users-2026-11-23.csv"), 0o644);
    let mut migrated = false;
    for command in start {
        let Some(out) = run(command, &home) else {
            continue;
        };
        let stdout = succeeds(command, out);
        no_secret(&stdout);
        if command == "avvisi-ops migrate" {
            assert!(stdout.starts_with("applied "), "{stdout}");
            assert!(stdout.contains("\n  0001 "), "{stdout}");
            migrated = true;
        }
        if command.starts_with("avvisi-ops import users ") {
            assert!(stdout.contains("40"), "{stdout}");
        }
    }
    assert!(migrated, "{start:?}");
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut sqlx::PgConnection::connect(&db.url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(users, 40);

    // The dry run before a step, and the template check of "Act".
    for command in dry_run {
        let stdout = succeeds(command, run(command, &home).unwrap());
        assert!(stdout.contains("registration_incomplete"), "{stdout}");
    }
    let check = "avvisi-ops templates check";
    assert!(section.contains(&format!("`{check}`")));
    succeeds(check, run(check, &home).unwrap());

    // Upgrade: the new binary installed, nothing left to migrate.
    let mut migrated = false;
    for command in upgrade {
        let Some(out) = run(command, &home) else {
            continue;
        };
        let stdout = succeeds(command, out);
        if command == "avvisi-ops migrate" {
            assert!(stdout.starts_with("database is up to date"), "{stdout}");
            migrated = true;
        }
    }
    assert!(migrated, "{upgrade:?}");

    // The relay's commands outside the unit. Through avvisi-ops the relay's password is the
    // absent credential: exit 2, the file named, and what to do.
    let out = run("avvisi-ops run --once", &home).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr.contains(
            "configuration key `smtp.password_file`: cannot read \
             /run/credentials/avvisi.service/smtp-password"
        ) && stderr.contains("only inside the running unit"),
        "{stderr}"
    );
    // As root, reading the password file: past the password, on to the relay (which refuses
    // at once here: exit 3 when something was due at this instant, else 0).
    for command in as_root {
        let out = run(command, &home).unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{command}\n{}",
            text(&out)
        );
        no_secret(&text(&out));
        assert!(!text(&out).contains("password_file"), "{}", text(&out));
    }
    // In a unit of its own: not run here; it loads the credential as the daemon's unit does and
    // points smtp.password_file at that unit's credentials folder.
    let unit = std::fs::read_to_string(repo_path("deploy/avvisi.service")).unwrap();
    let [command] = &in_a_unit[..] else {
        panic!("{in_a_unit:?}")
    };
    let credential = unit
        .lines()
        .find_map(|l| l.strip_prefix("LoadCredential="))
        .unwrap();
    assert!(command.contains(&format!("-p LoadCredential={credential} ")));
    assert!(command.contains("-p EnvironmentFile=/etc/avvisi/avvisi.env "));
    let name = command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--unit="))
        .unwrap();
    assert!(command.contains(&format!(
        "AVVISI__SMTP__PASSWORD_FILE=/run/credentials/{name}.service/smtp-password "
    )));
    assert!(run(command, &home).is_none());
}

crate::on_both_backends!(only_the_commands_that_connect_to_the_relay_read_its_password);

/// With an SMTP relay whose password file cannot be read (the production file's systemd
/// credential, outside the unit), the commands that do not connect to the relay work, and the
/// ones that do stop with exit 2 naming the file.
async fn only_the_commands_that_connect_to_the_relay_read_its_password(
    app: crate::helpers::TestApp,
) {
    app.import_examples().await;
    let credential = "/run/credentials/avvisi.service/smtp-password";
    assert!(!Path::new(credential).exists());
    // Held and not listening: a command that connected would fail at once.
    let closed = testkit::smtp_sink::ClosedPort::bind();
    let url = closed.url();
    let relay = testkit::smtp::with(
        &url,
        &[
            ("AVVISI__SMTP__USERNAME", "avvisi"),
            ("AVVISI__SMTP__PASSWORD_FILE", credential),
        ],
    );
    let avvisi = |args: &[&str]| {
        let out = app.avvisi(args, &relay);
        (out.status.code(), text(&out))
    };
    for args in [
        &["migrate"][..],
        &["config", "show"],
        &["templates", "check"],
        &["status"],
        &["plan", "--dry-run", "--now", "2026-11-23T09:00:00+01:00"],
        &[
            "campaign",
            "create",
            "notice",
            "--audience",
            "enabled_users",
            "--template",
            "maintenance_notice",
        ],
        &["campaign", "preview", "notice"],
    ] {
        let (code, out) = avvisi(args);
        assert_eq!(code, Some(0), "{args:?}: {out}");
    }
    for args in [
        &["run", "--once", "--now", "2026-11-23T10:00:00+01:00"][..],
        &[
            "campaign",
            "test",
            "notice",
            "--to",
            "operatore@istruzione.it",
        ],
    ] {
        let (code, out) = avvisi(args);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(
            out.contains(&format!(
                "error: setting up delivery: configuration key `smtp.password_file`: cannot read \
                 {credential}: No such file or directory"
            )) && out.contains("only inside the running unit"),
            "{args:?}: {out}"
        );
    }
    // Nothing was planned or sent by the run that could not set up delivery.
    assert!(app.outbox().await.is_empty());
}
