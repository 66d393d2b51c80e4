//! `spawn_app`: a fresh database (a SQLite file, or a new PostgreSQL database), settings pointing
//! at temporary folders, and a manual clock. Every test runs against both backends through
//! [`on_both_backends!`].
//!
//! PostgreSQL is `AVVISI_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When it cannot be reached the PostgreSQL cases are skipped with a message, unless
//! `AVVISI_REQUIRE_POSTGRES=1` (set by `.ci/run`) or `CI=true`, which make them fail instead
//! (see [`skip_or_fail`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use avvisi::clock::Clock;
use avvisi::config::Settings;
use avvisi::deliver::transport::Transport;
use avvisi::deliver::{DeliveryReport, Worker};
use avvisi::import::{self, ImportError, ImportOptions, ImportReport};
use avvisi::plan::{self, Planned};
use avvisi::render::email;
use avvisi::render::templates::TemplateSet;
use avvisi::store::Db;
use chrono::{DateTime, Utc};
use sqlx::Row;
use testkit::postgres::Throwaway;
use testkit::process::Proc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's world.
#[derive(Clone)]
pub struct TestApp {
    #[allow(dead_code)] // handy when a case must differ per backend
    pub backend: Backend,
    pub db: Db,
    pub settings: Arc<Settings>,
    pub clock: Clock,
    pub dir: Arc<tempfile::TempDir>,
    /// The database URL, for driving the binary against the same database.
    pub database_url: String,
    /// Drops the PostgreSQL database when the last clone of the app goes, even when the case
    /// panicked.
    _pg: Option<Arc<Throwaway>>,
}

/// A new PostgreSQL database with nothing in it (no migration applied), dropped with this value.
pub struct EmptyPostgres {
    pub url: String,
    _guard: Throwaway,
}

/// A fresh, empty PostgreSQL database, or `None` when PostgreSQL is not reachable and not
/// required.
pub async fn empty_postgres() -> Option<EmptyPostgres> {
    let db = fresh_postgres().await?;
    Some(EmptyPostgres {
        url: db.url().to_string(),
        _guard: db,
    })
}

/// The longest a process a test starts may run: whatever the test waits for, it is killed then.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(300);

/// A row of the outbox as tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub campaign: String,
    pub user_id: String,
    pub step: String,
    pub state: String,
    pub attempts: i64,
    pub reason: Option<String>,
    pub smtp_code: Option<i64>,
    pub message_id: String,
    pub next_attempt_at: i64,
}

/// The examples' 47 planned messages are all waiting as planned: pending, no attempt, no error
/// (a relay's fault changed none of them).
pub fn untouched(rows: &[OutboxRow]) {
    assert_eq!(rows.len(), 47);
    for r in rows {
        as_planned(r);
    }
}

/// `r` waits as planned: pending, no attempt, no error.
pub fn as_planned(r: &OutboxRow) {
    assert_eq!(
        (
            r.state.as_str(),
            r.attempts,
            r.reason.as_deref(),
            r.smtp_code
        ),
        ("pending", 0, None, None),
        "{r:?}"
    );
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

fn postgres_url() -> String {
    std::env::var("AVVISI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates a fresh PostgreSQL database, or `None` when PostgreSQL is not reachable and not
/// required.
async fn fresh_postgres() -> Option<Throwaway> {
    let admin_url = postgres_url();
    match Throwaway::create(&admin_url, "avvisi_test").await {
        Ok(db) => Some(db),
        Err(e) => {
            skip_or_fail(
                "AVVISI_REQUIRE_POSTGRES",
                &format!("a PostgreSQL case: {admin_url} is unreachable ({e})"),
            );
            None
        }
    }
}

/// A case that cannot run here (a tool or a server missing, `why`): skipped with a message, or a
/// failure when `switch` is `1` or under CI (`CI=true`), where a skip would pass unseen.
pub fn skip_or_fail(switch: &str, why: &str) {
    let required = std::env::var(switch).as_deref() == Ok("1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if required || ci {
        let because = if required {
            format!("{switch}=1")
        } else {
            "CI=true".to_string()
        };
        panic!("cannot run {why}, and skipping is not allowed ({because})");
    }
    eprintln!("skipping {why}");
}

fn uuid_like() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// Settings for a test: the given database, files under `dir`, the repository's templates.
pub fn test_settings(database_url: &str, dir: &Path, extra: &[(&str, &str)]) -> Settings {
    let mut env: Vec<(String, String)> = vec![
        ("AVVISI__DATABASE__URL".into(), database_url.into()),
        (
            "AVVISI__DELIVERY__DIR".into(),
            dir.join("outbox").display().to_string(),
        ),
        (
            "AVVISI__TEMPLATES__DIR".into(),
            repo_path("templates").display().to_string(),
        ),
        ("AVVISI__DELIVERY__RETRY_BASE_SECONDS".into(), "60".into()),
        // Most cases move the clock days past their one import: only the freshness test
        // (`audiences::reminders_wait_for_a_fresh_snapshot`) holds reminders for an old snapshot.
        ("AVVISI__IMPORT__MAX_AGE_HOURS".into(), "100000".into()),
        // Daemons started in this process serve no HTTP unless a case asks (one port each).
        ("AVVISI__HTTP__ADDRESS".into(), "".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load_with_env(None, env).expect("test settings")
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[]).await
}

/// Like [`spawn_app`] with extra `AVVISI__...` settings.
pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, pg) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("avvisi.db").display()),
            None,
        ),
        Backend::Postgres => {
            let db = fresh_postgres().await?;
            (db.url().to_string(), Some(Arc::new(db)))
        }
    };
    let settings = test_settings(&url, dir.path(), extra);
    let db = Db::open(&url, 4).await.expect("open test database");
    Some(TestApp {
        backend,
        db,
        settings: Arc::new(settings),
        clock: Clock::manual(at("2026-11-23T10:00:00+01:00")),
        dir: Arc::new(dir),
        database_url: url,
        _pg: pg,
    })
}

impl TestApp {
    /// Closes the pool; the PostgreSQL database goes with the last clone of the app.
    pub async fn teardown(self) {
        self.db.close().await;
    }

    /// The `avvisi` binary on this app's database and outbox folder, run from the repository
    /// (its templates and examples); standard input closed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_avvisi"));
        cmd.current_dir(repo_path("."))
            .args(args)
            .env("AVVISI__DATABASE__URL", &self.database_url)
            .env("AVVISI__HTTP__ADDRESS", "127.0.0.1:0")
            .env("AVVISI__DELIVERY__DIR", self.outbox_dir())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the `avvisi` binary on this app's database and outbox folder, with `env` on top.
    pub fn avvisi(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        cmd.output().expect("run avvisi")
    }

    /// Starts `avvisi args` (a daemon, say) with its standard output and error in `log`; killed
    /// after [`PROCESS_TIMEOUT`] or when the returned value is dropped.
    pub fn spawn<V: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[&str],
        env: &[(&str, V)],
        log: &Path,
    ) -> Proc {
        let log = std::fs::File::create(log).expect("process log");
        let mut cmd = self.command(args);
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        Proc::spawn(&mut cmd, PROCESS_TIMEOUT)
    }

    /// A copy of this app with other settings (same database and folder).
    pub fn with_settings(&self, extra: &[(&str, &str)]) -> TestApp {
        let mut app = self.clone();
        app.settings = Arc::new(test_settings(&self.database_url, self.dir.path(), extra));
        app
    }

    /// A copy of this app delivering over SMTP to `url`, with `extra` settings on top.
    pub fn smtp(&self, url: &str, extra: &[(&str, &str)]) -> TestApp {
        self.with_settings(&testkit::smtp::with(url, extra))
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.settings.delivery.dir.clone()
    }

    /// Writes `csv` to a file in the test folder and imports it.
    pub async fn import_csv(
        &self,
        csv: &str,
        options: ImportOptions,
    ) -> Result<ImportReport, ImportError> {
        let path = self
            .dir
            .path()
            .join(format!("snapshot-{}.csv", uuid_like()));
        std::fs::write(&path, csv).unwrap();
        self.import_file(&path, options).await
    }

    pub async fn import_file(
        &self,
        path: &Path,
        mut options: ImportOptions,
    ) -> Result<ImportReport, ImportError> {
        if options.max_gone_percent == 0 {
            options.max_gone_percent = 100;
        }
        import::import_users(&self.db, path, &options, self.clock.now()).await
    }

    pub async fn import_examples(&self) -> ImportReport {
        self.import_file(&repo_path("examples/users.csv"), ImportOptions::default())
            .await
            .expect("examples import")
    }

    pub fn worker(&self) -> Worker {
        Worker::new(
            self.db.clone(),
            self.settings.clone(),
            Transport::from_settings(&self.settings).expect("transport"),
            avvisi::render::live::TemplateStore::new(
                TemplateSet::load(&self.settings.templates_dir).expect("templates"),
            ),
            self.clock.clone(),
        )
        .with_id("test-worker")
    }

    /// Plans at the clock's instant.
    pub async fn plan(&self) -> Vec<Planned> {
        let templates = TemplateSet::load(&self.settings.templates_dir).expect("templates");
        let domain = email::message_id_domain(&self.settings.mail);
        plan::plan_due(
            &self.db,
            &self.settings,
            templates.digest(),
            &domain,
            self.clock.now(),
        )
        .await
        .expect("plan")
    }

    /// Delivers what is due at the clock's instant.
    pub async fn deliver(&self) -> DeliveryReport {
        self.worker()
            .deliver_due(&CancellationToken::new())
            .await
            .expect("deliver")
    }

    /// Plans and delivers, like `avvisi run --once`.
    pub async fn run_once(&self) -> (Vec<Planned>, DeliveryReport) {
        let planned = self.plan().await;
        (planned, self.deliver().await)
    }

    pub async fn outbox(&self) -> Vec<OutboxRow> {
        sqlx::query(
            "SELECT c.name, o.user_id, o.step, o.state, o.attempts, o.reason, o.smtp_code, o.message_id, \
             o.next_attempt_at FROM outbox o JOIN campaigns c ON c.id = o.campaign_id ORDER BY o.id",
        )
        .fetch_all(self.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| OutboxRow {
            campaign: r.get(0),
            user_id: r.get(1),
            step: r.get(2),
            state: r.get(3),
            attempts: r.get(4),
            reason: r.get(5),
            smtp_code: r.get(6),
            message_id: r.get(7),
            next_attempt_at: r.get(8),
        })
        .collect()
    }

    /// Sorted user ids with a row of `campaign_prefix` in `state`.
    pub async fn users_in(&self, campaign_prefix: &str, state: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .outbox()
            .await
            .into_iter()
            .filter(|r| r.campaign.starts_with(campaign_prefix) && r.state == state)
            .map(|r| r.user_id)
            .collect();
        ids.sort();
        ids
    }

    /// Each `.eml` file's identity: its inode and modification time, by file name. The file
    /// transport writes a temporary file renamed over the name, so an email written again under
    /// the same name (a re-send) changes its entry although the number of files stays the same.
    pub fn eml_writes(&self) -> std::collections::BTreeMap<String, (u64, std::time::SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(self.outbox_dir()) else {
            return Default::default();
        };
        entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .map(|p| {
                let meta = std::fs::metadata(&p).unwrap();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, (meta.ino(), meta.modified().unwrap()))
            })
            .collect()
    }

    /// The `.eml` files written by the file transport, by file name.
    pub fn eml_files(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = match std::fs::read_dir(self.outbox_dir()) {
            Ok(entries) => entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .map(|p| {
                    (
                        p.file_name().unwrap().to_string_lossy().into_owned(),
                        std::fs::read_to_string(&p).unwrap(),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort();
        out
    }
}

/// The address a daemon started with `http.address` port 0 serves HTTP on (the port bound by
/// the daemon itself, read back from the line of its `log` that says so), as a client reaches it.
pub async fn served_address(daemon: &Proc, log: &Path) -> String {
    let line = testkit::process::eventually(
        "the daemon's HTTP address in its log",
        Duration::from_secs(60),
        || async {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(status) = daemon.try_wait() {
                panic!("the daemon ended ({status}) before serving HTTP: {text}");
            }
            text.lines()
                .find(|l| l.contains("serving /healthz"))
                .map(str::to_string)
        },
    )
    .await;
    let address = line
        .split("on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line}"));
    address.replace("0.0.0.0", "127.0.0.1")
}

/// An HTTP response: the status code, the headers (names in lower case), the body.
pub type Response = (u16, Vec<(String, String)>, String);

/// `GET path`, or `None` when nothing answers.
pub fn http_get(address: &str, path: &str) -> Option<Response> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((code, headers, body.to_string()))
}

/// Runs `case` on a fresh app of `backend`, then drops its database.
pub async fn run_case<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    case(app.clone()).await;
    app.teardown().await;
}

/// `on_both_backends!(a, b)` makes `a::sqlite`, `a::postgres`, ... tests from `async fn a(app: TestApp)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::helpers::run_case($crate::helpers::Backend::Sqlite, super::$case).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::helpers::run_case($crate::helpers::Backend::Postgres, super::$case).await
            }
        }
    )*};
}

/// The header block of an email, unfolded, as (name, value) pairs.
pub fn headers(eml: &str) -> Vec<(String, String)> {
    let head = eml.split("\r\n\r\n").next().unwrap_or(eml);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.to_string(), value.trim().to_string()));
        }
    }
    out
}

pub fn header(eml: &str, name: &str) -> Option<String> {
    headers(eml)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The decoded body of the first part of `content_type` (quoted-printable or 7bit/8bit).
pub fn part(eml: &str, content_type: &str) -> String {
    let start = eml
        .find(&format!("Content-Type: {content_type}"))
        .unwrap_or_else(|| panic!("no {content_type} part"));
    let rest = &eml[start..];
    let headers_end = rest.find("\r\n\r\n").expect("part headers") + 4;
    let qp = rest[..headers_end].contains("quoted-printable");
    let body = &rest[headers_end..];
    let body = &body[..body.find("\r\n--").unwrap_or(body.len())];
    if qp {
        decode_qp(body)
    } else {
        body.to_string()
    }
}

fn decode_qp(s: &str) -> String {
    let bytes = s.replace("=\r\n", "").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .expect("utf-8 body")
        .replace("\r\n", "\n")
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=` and `=?utf-8?q?...?=`) in a header value.
pub fn decode_header(value: &str) -> String {
    let mut out = String::new();
    let mut previous_encoded = false;
    for word in value.split(' ') {
        let encoded = word.starts_with("=?") && word.ends_with("?=");
        if !(out.is_empty() || encoded && previous_encoded) {
            out.push(' ');
        }
        previous_encoded = encoded;
        if let Some(inner) = word.strip_prefix("=?").and_then(|w| w.strip_suffix("?=")) {
            let mut parts = inner.splitn(3, '?');
            let (_charset, enc, text) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let decoded = if enc.eq_ignore_ascii_case("b") {
                base64_decode(text)
            } else {
                decode_qp(&text.replace('_', " ")).into_bytes()
            };
            out.push_str(&String::from_utf8(decoded).unwrap());
        } else {
            out.push_str(word);
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}
