//! Hostile input as the binary meets it (issue 20): a relay's reply with control characters in
//! it, CSV cells that a spreadsheet would run as formulas, passwords in URLs of every shape,
//! files swapped for symlinks or FIFOs, and what the daemon's HTTP server answers.

use std::process::Output;

use crate::helpers::{http_get, served_address, Response, TestApp};
use crate::on_both_backends;
use testkit::process::{eventually, Proc};
use testkit::smtp_sink::{Fault, SmtpSink};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What a terminal would act on, or what starts a forged line: ESC, BEL, CR, DEL, C1 and the
/// bidirectional overrides.
fn assert_inert(what: &str, text: &str) {
    for c in [
        '\x1b', '\x07', '\r', '\x7f', '\u{85}', '\u{202e}', '\u{2066}',
    ] {
        assert!(!text.contains(c), "{what}: {c:?} in\n{text}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("INFO forged")),
        "{what}: a forged line in\n{text}"
    );
}

/// A relay refuses U0002's address with a reply that would retitle and clear the operator's
/// terminal and forge a log line. The text log, `run --once`, `status`, `explain` and
/// `suppress list` all show it escaped.
async fn a_relay_reply_with_control_characters_is_shown_escaped(app: TestApp) {
    let reply = "5.1.1 \x1b]0;owned\x07\x1b[2J no such user\r\x1b[2K\
                 INFO forged\nINFO forged log line user_id=ADMIN \u{202e}gpj.exe\u{2066}\u{85}\x7f";
    let sink = SmtpSink::start_with(vec![Fault::RejectRcpt {
        address: "ilaria.dangelo@gmail.com".into(),
        code: 550,
        text: reply.into(),
    }])
    .await;
    let url = sink.url();
    let run_app = app.clone();
    let run = tokio::task::spawn_blocking(move || {
        let smtp = testkit::smtp::settings(&url);
        run_app.avvisi(
            &[
                "run",
                "--once",
                "--import",
                "examples/users.csv",
                "--now",
                "2026-11-23T10:00:00+01:00",
                "-v",
            ],
            &smtp,
        )
    })
    .await
    .unwrap();
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let log = stderr(&run);
    // The reply reached the log, escaped.
    assert!(
        log.contains(r"5.1.1 \x1b]0;owned\x07\x1b[2J no such user\r\x1b[2KINFO forged\nINFO forged log line user_id=ADMIN \u{202e}gpj.exe\u{2066}\u{85}\x7f"),
        "{log}"
    );
    assert_inert("run --once", &format!("{}{log}", stdout(&run)));

    let escaped = r"no such user\r\x1b[2KINFO forged\nINFO forged log line";
    for args in [
        &["status"][..],
        &["explain", "U0002", "--now", "2026-11-23T10:00:00+01:00"],
        &["suppress", "list"],
    ] {
        let out = app.avvisi(args, &[]);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "{args:?}: {all}");
        assert!(all.contains(escaped), "{args:?}: {all}");
        assert_inert(&format!("{args:?}"), &all);
    }
}

/// The same reply to every message trips the circuit breaker, which pauses the campaigns
/// with the reply as the reason: `run --once`, `status` and `campaign show` print it escaped.
async fn a_breaker_reply_with_control_characters_is_shown_escaped(app: TestApp) {
    let reply = "5.7.1 \x1b]0;owned\x07\x1b[2J blocked\r\x1b[2KINFO forged\u{202e}";
    let sink = SmtpSink::start_with(vec![Fault::RejectAllData {
        code: 554,
        text: reply.into(),
    }])
    .await;
    let url = sink.url();
    let run_app = app.clone();
    let run = tokio::task::spawn_blocking(move || {
        let smtp = testkit::smtp::with(
            &url,
            &[
                ("AVVISI__DELIVERY__BREAKER_THRESHOLD", "5"),
                ("AVVISI__DELIVERY__CONCURRENCY", "2"),
            ],
        );
        run_app.avvisi(
            &[
                "run",
                "--once",
                "--import",
                "examples/users.csv",
                "--now",
                "2026-11-23T10:00:00+01:00",
            ],
            &smtp,
        )
    })
    .await
    .unwrap();
    let all = format!("{}{}", stdout(&run), stderr(&run));
    assert_eq!(run.status.code(), Some(3), "{all}");
    let escaped = r"\x1b]0;owned\x07\x1b[2J blocked\r\x1b[2KINFO forged\u{202e}";
    assert!(all.contains(escaped), "{all}");
    assert_inert("run --once", &all);
    for args in [
        &["status"][..],
        &["campaign", "show", "registration_incomplete-2026-11-30"],
    ] {
        let out = app.avvisi(args, &[]);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "{args:?}: {all}");
        assert!(
            all.contains("paused") && all.contains(escaped),
            "{args:?}: {all}"
        );
        assert_inert(&format!("{args:?}"), &all);
    }
}

on_both_backends!(
    a_relay_reply_with_control_characters_is_shown_escaped,
    a_breaker_reply_with_control_characters_is_shown_escaped
);

/// Every cell of the CSV file at `path`, by row.
fn csv_cells(path: &std::path::Path) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect()
}

fn assert_no_formula(path: &std::path::Path, rows: &[Vec<String>]) {
    for cell in rows.iter().flatten() {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{}: a formula {cell:?} in {rows:?}",
            path.display()
        );
    }
}

/// An address and names that a spreadsheet would run as formulas: `report --out` and the
/// import's reject file write them with a leading `'`.
async fn csv_cells_that_are_formulas_are_neutralised(app: TestApp) {
    let header = std::fs::read_to_string(crate::helpers::repo_path("examples/users.csv"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let snapshot = app.dir.path().join("formulas.csv");
    std::fs::write(
        &snapshot,
        format!(
            "{header}\n\
             U9001,MNCNCL91C14F839U,Mario,Rossi,=cmd|'/Ccalc'!A0@evil.it,,started,false,,none,NA,2026-11-18T09:12:00+01:00\n\
             U9002,RSSMRA85T10A562S,@SUM(1+1),+Verdi,-bad@@x.it,,started,false,,none,NA,\n"
        ),
    )
    .unwrap();
    let rejects = app.dir.path().join("rejects.csv");
    let out = app.avvisi(
        &[
            "import",
            "users",
            snapshot.to_str().unwrap(),
            "--skip-invalid",
            "--reject-file",
            rejects.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let rows = csv_cells(&rejects);
    assert_no_formula(&rejects, &rows);
    assert_eq!(
        rows[1][2..7],
        [
            "U9002",
            "RSSMRA85T10A562S",
            "'@SUM(1+1)",
            "'+Verdi",
            "'-bad@@x.it"
        ],
        "{rows:?}"
    );

    let out = app.avvisi(
        &["run", "--once", "--now", "2026-11-23T10:00:00+01:00"],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let report = app.dir.path().join("report.csv");
    let out = app.avvisi(
        &[
            "report",
            "registration_incomplete-2026-11-30",
            "--out",
            report.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let rows = csv_cells(&report);
    assert_no_formula(&report, &rows);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[1][..2],
        ["U9001", "'=cmd|'/Ccalc'!A0@evil.it"],
        "{rows:?}"
    );
}

on_both_backends!(csv_cells_that_are_formulas_are_neutralised);

/// A database URL with its password where `redact_url` used not to look (a `password=`
/// parameter) or in a shape no parser takes (one slash, a bad port, a broken IPv6 host): no
/// error of a command that opens the database, or of the configuration, shows the password.
#[test]
fn no_error_shows_a_database_password_whatever_the_url() {
    let dir = tempfile::tempdir().unwrap();
    for (url, code, shown) in [
        (
            "postgres://avvisi@127.0.0.1:1/avvisi?sslmode=disable&password=hunter2",
            1,
            "postgres://avvisi@127.0.0.1:1/avvisi?sslmode=disable&password=***",
        ),
        (
            "postgresql://avvisi:hunter2@127.0.0.1:1/avvisi?PASSWORD=hunter2",
            1,
            "postgresql://avvisi:***@127.0.0.1:1/avvisi?PASSWORD=***",
        ),
        (
            "postgres:/avvisi:hunter2@127.0.0.1:1",
            2,
            "postgres:(the rest is not shown",
        ),
        (
            "postgres:avvisi:hunter2@127.0.0.1",
            2,
            "postgres:(the rest is not shown",
        ),
        (
            "postgres://avvisi:hunter2@127.0.0.1:port/avvisi",
            1,
            "postgres:(the rest is not shown",
        ),
        (
            "postgres://avvisi:hunter2@[::1/avvisi",
            1,
            "postgres:(the rest is not shown",
        ),
        (
            "mysql://avvisi:hunter2@127.0.0.1/avvisi",
            2,
            "mysql://avvisi:***@127.0.0.1/avvisi",
        ),
    ] {
        for command in ["status", "migrate"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_avvisi"))
                .current_dir(dir.path())
                .arg(command)
                .env("AVVISI__DATABASE__URL", url)
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            let all = format!("{}{}", stdout(&out), stderr(&out));
            assert_eq!(out.status.code(), Some(code), "{url}: {all}");
            assert!(all.contains(shown), "{url}: {all}");
            assert!(!all.contains("hunter2"), "{url}: {all}");
        }
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
fn mkfifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

/// Runs `avvisi args` for `app`, killed after 20 s: a FIFO must not block it.
#[cfg(unix)]
fn avvisi_within_20s(app: &TestApp, args: &[&str]) -> Output {
    let mut cmd = app.command(args);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let within = std::time::Duration::from_secs(20);
    Proc::spawn(&mut cmd, within).output(within)
}

/// Files swapped under avvisi: the `.eml` temporary files replaced by a symlink or a stale
/// world-writable file, `report --out` and the reject file pointed at a symlink, a FIFO or a
/// 0666 file, an import file that is a symlink to a secret or a FIFO. Nothing is written
/// through a symlink, every file written is 0600, and what is not a regular file is refused
/// at once, without a byte of it in the error.
#[cfg(unix)]
async fn files_swapped_for_symlinks_and_fifos_are_not_followed(app: TestApp) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = app.dir.path();
    let now = "2026-11-23T10:00:00+01:00";
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "victim\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The file names of the emails this run writes, from the same run on a scratch database.
    let scratch = tempfile::tempdir().unwrap();
    let scratch_db = format!("sqlite://{}/avvisi.db", scratch.path().display());
    let scratch_outbox = scratch.path().join("outbox");
    let out = app.avvisi(
        &[
            "run",
            "--once",
            "--import",
            "examples/users.csv",
            "--now",
            now,
        ],
        &[
            ("AVVISI__DATABASE__URL", &scratch_db),
            ("AVVISI__DELIVERY__DIR", scratch_outbox.to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut names: Vec<String> = std::fs::read_dir(&scratch_outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 30);

    // In the real outbox: a symlink and a stale 0666 file where the temporary files go, a
    // symlink where an email goes.
    let outbox = app.outbox_dir();
    std::fs::create_dir_all(&outbox).unwrap();
    symlink(&victim, outbox.join(format!(".{}.tmp", names[0]))).unwrap();
    let stale = outbox.join(format!(".{}.tmp", names[1]));
    std::fs::write(&stale, "stale").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o666)).unwrap();
    symlink(&victim, outbox.join(&names[2])).unwrap();
    let out = app.avvisi(
        &[
            "run",
            "--once",
            "--import",
            "examples/users.csv",
            "--now",
            now,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut written: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written, names,
        "no temporary file left, every email in place"
    );
    for name in &written {
        let path = outbox.join(name);
        assert!(
            std::fs::symlink_metadata(&path).unwrap().is_file(),
            "{name}"
        );
        assert_eq!(mode(&path), 0o600, "{name}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");

    // report --out: a symlink and a FIFO refused, a 0666 file rewritten 0600.
    let campaign = "registration_incomplete-2026-11-30";
    let link = dir.join("report-link.csv");
    symlink(&victim, &link).unwrap();
    let fifo = dir.join("report-fifo.csv");
    mkfifo(&fifo);
    for (path, why) in [(&link, "symbolic link"), (&fifo, "not a regular file")] {
        for flag in ["--out", "--html"] {
            let out = avvisi_within_20s(&app, &["report", campaign, flag, path.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            assert!(stderr(&out).contains(why), "{}", stderr(&out));
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
    assert_eq!(mode(&victim), 0o644);
    let open = dir.join("report.csv");
    std::fs::write(&open, "old").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = app.avvisi(&["report", campaign, "--out", open.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&open), 0o600);
    assert!(std::fs::read_to_string(&open)
        .unwrap()
        .starts_with("user_id,"));

    // The import: a symlink to a secret and a FIFO refused without reading them.
    let secret = dir.join("shadow");
    std::fs::write(&secret, "root:*:20228:0:99999:7:::\n").unwrap();
    let link = dir.join("snapshot-link.csv");
    symlink(&secret, &link).unwrap();
    let fifo = dir.join("snapshot-fifo.csv");
    mkfifo(&fifo);
    for (path, why) in [(&link, "symbolic link"), (&fifo, "not a regular file")] {
        for args in [
            &["import", "users", path.to_str().unwrap()][..],
            &[
                "run",
                "--once",
                "--now",
                now,
                "--import",
                path.to_str().unwrap(),
            ],
        ] {
            let out = avvisi_within_20s(&app, args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(why), "{args:?}: {err}");
            assert!(!err.contains("root:"), "{args:?}: {err}");
        }
    }

    // The reject file: a 0666 file there is rewritten 0600; a symlink is refused.
    let snapshot = crate::helpers::repo_path("examples/users.csv");
    let header = std::fs::read_to_string(snapshot).unwrap();
    let header = header.lines().next().unwrap();
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        format!("{header}\nU9002,RSSMRA85T10A562S,Anna,Verdi,bad@@x.it,,started,false,,none,NA,\n"),
    )
    .unwrap();
    let rejects = dir.join("rejects.csv");
    std::fs::write(&rejects, "old").unwrap();
    std::fs::set_permissions(&rejects, std::fs::Permissions::from_mode(0o666)).unwrap();
    let import = |rejects: &std::path::Path| {
        app.avvisi(
            &[
                "import",
                "users",
                bad.to_str().unwrap(),
                "--skip-invalid",
                "--partial",
                "--reject-file",
                rejects.to_str().unwrap(),
            ],
            &[],
        )
    };
    let out = import(&rejects);
    assert!(
        !stderr(&out).contains("cannot write the reject file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&rejects), 0o600);
    assert!(std::fs::read_to_string(&rejects)
        .unwrap()
        .starts_with("line,errors,"));
    let link = dir.join("rejects-link.csv");
    symlink(&victim, &link).unwrap();
    let out = import(&link);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
}

#[cfg(unix)]
on_both_backends!(files_swapped_for_symlinks_and_fifos_are_not_followed);

/// The daemon's HTTP server on every interface (`0.0.0.0`), behind a relay that greets with
/// markup and control characters: a warning in the log, the security headers on every
/// response (a 404 too), and `/readyz` quoting the reply inert.
async fn http_answers_with_security_headers_and_an_inert_readyz(app: TestApp) {
    app.import_examples().await;
    let reply = "5.7.1 <script>alert(1)</script> \x1b]0;owned\x07\x1b[2J\rforged & <b>bold</b>";
    let sink = SmtpSink::start_with(vec![Fault::Greet {
        code: 554,
        text: reply.into(),
    }])
    .await;
    let log = app.dir.path().join("daemon.log");
    // Every interface, on a port the daemon binds itself and logs.
    let child = daemon(
        &app,
        &app.database_url,
        "0.0.0.0:0",
        &testkit::smtp::settings(&sink.url()),
        &log,
    );
    let address = served_address(&child, &log).await;
    let body = eventually(
        "/readyz failing on the relay",
        std::time::Duration::from_secs(60),
        || async {
            match http_get(&address, "/readyz") {
                Some((503, _, body)) if body.contains("FAIL relay:") => Some(body),
                _ => None,
            }
        },
    )
    .await;
    let results: Vec<_> = ["/", "/healthz", "/readyz", "/metrics", "/nonexistent"]
        .iter()
        .map(|path| (path, http_get(&address, path)))
        .collect();
    child.terminate().await;

    assert!(
        body.contains(r"5.7.1 &lt;script&gt;alert(1)&lt;/script&gt; \x1b]0;owned\x07\x1b[2J\rforged &amp; &lt;b&gt;bold&lt;/b&gt;"),
        "{body}"
    );
    assert_inert("/readyz", &body);
    for (path, got) in results {
        let (code, headers, _) = got.unwrap_or_else(|| panic!("{path}: no answer"));
        assert_eq!(code == 404, *path == "/nonexistent", "{path}: {code}");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{path}: no {name} in {headers:?}"))
        };
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("referrer-policy"), "no-referrer");
        let csp = header("content-security-policy");
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
    }
    let log = std::fs::read_to_string(&log).unwrap();
    let warning: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("http.address is not a loopback address"))
        .collect();
    assert_eq!(warning.len(), 1, "{log}");
    assert!(warning[0].contains("WARN"), "{log}");
}

on_both_backends!(http_answers_with_security_headers_and_an_inert_readyz);

/// `migrate` on an empty database lists what it applied (every migration of the backend), and
/// says it is up to date only when there was nothing to apply.
async fn migrate_says_what_it_applied(app: TestApp) {
    let (url, folder) = match app.backend {
        crate::helpers::Backend::Sqlite => (
            format!("sqlite://{}/empty.db", app.dir.path().display()),
            "sqlite",
        ),
        crate::helpers::Backend::Postgres => {
            let name = format!("avvisi_migrate_{}", std::process::id());
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(app.db.pool())
                .await
                .unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(app.db.pool())
                .await
                .unwrap();
            let base = app.database_url.rsplit_once('/').unwrap().0;
            (format!("{base}/{name}"), "postgres")
        }
    };
    let migrations = std::fs::read_dir(crate::helpers::repo_path("migrations").join(folder))
        .unwrap()
        .count();
    let migrate = || app.avvisi(&["migrate"], &[("AVVISI__DATABASE__URL", &url)]);
    let first = migrate();
    let text = stdout(&first);
    assert!(first.status.success(), "{text}{}", stderr(&first));
    assert!(
        text.starts_with(&format!(
            "applied {migrations} migration(s) to the database"
        )),
        "{text}"
    );
    assert!(text.contains("\n  0001 init\n"), "{text}");
    assert_eq!(text.lines().count(), migrations + 1, "{text}");
    assert!(!text.contains("up to date"), "{text}");
    let again = migrate();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("up to date") && stdout(&again).contains("no migration to apply"),
        "{}",
        stdout(&again)
    );
    if app.backend == crate::helpers::Backend::Postgres {
        let name = url.rsplit_once('/').unwrap().1;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(app.db.pool())
            .await
            .unwrap();
    }
}

on_both_backends!(migrate_says_what_it_applied);

/// A TCP proxy to PostgreSQL that can be cut: its connections closed, and new ones accepted
/// but never answered (a server gone behind a firewall, the hardest case: nothing refuses).
struct CuttableProxy {
    address: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(upstream: String) -> CuttableProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, l) = (cut.clone(), links.clone());
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let upstream = upstream.clone();
                l.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        CuttableProxy {
            address,
            cut,
            links,
            accept,
        }
    }

    fn cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            for link in self.links.lock().unwrap().drain(..) {
                link.abort();
            }
        }
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

/// The daemon on `app`'s database (or `database_url`), serving HTTP on `address` (port 0: one
/// it binds itself, see [`served_address`]), its text log in `log`.
fn daemon(
    app: &TestApp,
    database_url: &str,
    address: &str,
    env: &[(&str, &str)],
    log: &std::path::Path,
) -> Proc {
    let mut all = vec![
        ("AVVISI__DATABASE__URL", database_url),
        ("AVVISI__HTTP__ADDRESS", address),
        ("AVVISI__DAEMON__PLANNER_CRON", "* * * * * *"),
        ("AVVISI__DAEMON__POLL_SECONDS", "1"),
    ];
    all.extend_from_slice(env);
    app.spawn(&["daemon", "--now", "2026-11-23T10:00:00+01:00"], &all, log)
}

/// `GET /metrics` on a blocking thread: the time it took and the response.
async fn scrape(address: &str) -> (std::time::Duration, Option<Response>) {
    let address = address.to_string();
    tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        let got = http_get(&address, "/metrics");
        (start.elapsed(), got)
    })
    .await
    .unwrap()
}

/// The database goes away under a running daemon (PostgreSQL behind a cut connection, a SQLite
/// file locked by another process): `/metrics` still answers, within seconds, with the
/// in-memory metrics and `avvisi_database_up 0`, then 1 when the database is back; the log
/// says each change once.
async fn metrics_answer_with_the_database_down(app: TestApp) {
    app.import_examples().await;
    let (database_url, proxy) = match app.backend {
        crate::helpers::Backend::Sqlite => (app.database_url.clone(), None),
        crate::helpers::Backend::Postgres => {
            let mut url = url::Url::parse(&app.database_url).unwrap();
            let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
            let proxy = CuttableProxy::start(upstream).await;
            url.set_port(Some(proxy.address.port())).unwrap();
            url.set_host(Some("127.0.0.1")).unwrap();
            (url.to_string(), Some(proxy))
        }
    };
    let log = app.dir.path().join("daemon.log");
    let child = daemon(&app, &database_url, "127.0.0.1:0", &[], &log);
    let address = served_address(&child, &log).await;
    let start = std::time::Instant::now();
    loop {
        if let (_, Some((200, _, body))) = scrape(&address).await {
            if body.contains("avvisi_database_up 1") && body.contains("avvisi_messages{") {
                break;
            }
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no /metrics"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The database goes away.
    let mut holder = None;
    match &proxy {
        Some(proxy) => proxy.cut(true),
        None => {
            use sqlx::Connection;
            let mut conn = sqlx::AnyConnection::connect(&app.database_url)
                .await
                .unwrap();
            sqlx::raw_sql("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .unwrap();
            holder = Some(conn);
        }
    }
    // PostgreSQL is gone at once. SQLite in WAL mode still reads beside a writer: the file is
    // down for the daemon once its one connection waits on the lock to write (a planner tick,
    // a claim) for the busy timeout (10 s), which a scrape used to wait out in turn.
    let start = std::time::Instant::now();
    let mut down = 0;
    while down < 2 {
        let (took, got) = scrape(&address).await;
        let (code, _, body) = got.expect("/metrics answers with the database down");
        assert!(took < std::time::Duration::from_secs(8), "{took:?}");
        assert_eq!(code, 200, "{body}");
        // What the daemon holds in memory, and the outbox's gauges as last read.
        assert!(body.contains("avvisi_templates_live_info{"), "{body}");
        assert!(body.contains("avvisi_messages{"), "{body}");
        if body.contains("avvisi_database_up 0") {
            down += 1;
        } else {
            assert!(proxy.is_none(), "{body}");
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "/metrics never saw the database down"
        );
    }

    // Back.
    match &proxy {
        Some(proxy) => proxy.cut(false),
        None => {
            use sqlx::Connection;
            let mut conn = holder.take().unwrap();
            sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
    let start = std::time::Instant::now();
    loop {
        if let (_, Some((200, _, body))) = scrape(&address).await {
            if body.contains("avvisi_database_up 1") {
                break;
            }
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "/metrics never saw the database back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    child.terminate().await;
    let log = std::fs::read_to_string(&log).unwrap();
    let lines = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    // Once per change, not per scrape: PostgreSQL went once; SQLite's lone connection may be
    // free between two waits, so each outage is matched by one recovery.
    let (gone, back) = (
        lines("metrics: cannot read the outbox"),
        lines("metrics: the outbox can be read again"),
    );
    assert!(gone >= 1 && gone == back, "{log}");
    if proxy.is_some() {
        assert_eq!(gone, 1, "{log}");
    }
}

/// The relay refuses every session for several passes: the daemon logs the fault once, not a
/// line per message in flight per pass.
async fn a_relay_fault_is_logged_once(app: TestApp) {
    app.import_examples().await;
    let sink = SmtpSink::start_with(vec![Fault::Greet {
        code: 421,
        text: "4.3.2 service not available, try later".into(),
    }])
    .await;
    let url = sink.url();
    let log = app.dir.path().join("daemon.log");
    // The backoff held at two seconds, so that many passes fit in the wait below however few
    // sessions a loaded machine opens per pass before the first refusal stops it.
    let env = testkit::smtp::with(&url, &[("AVVISI__DAEMON__RELAY_BACKOFF_MAX_SECONDS", "2")]);
    let child = daemon(&app, &app.database_url, "", &env, &log);
    // Several passes: at least twelve sessions refused.
    let start = std::time::Instant::now();
    while sink.connections() < 12 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{} connections",
            sink.connections()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.terminate().await;
    let log = std::fs::read_to_string(&log).unwrap();
    let relay: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains("4.3.2"))
        .collect();
    assert_eq!(relay.len(), 1, "{log}");
    assert!(relay[0].contains("delivery stopped by the relay"), "{log}");
    assert_eq!(log.matches("send failed").count(), 0, "{log}");
}

on_both_backends!(
    metrics_answer_with_the_database_down,
    a_relay_fault_is_logged_once
);
