//! `avvisi bench`: import, plan and deliver a synthetic snapshot of N users over SMTP to a local
//! sink, on SQLite and PostgreSQL, and compare delivery with Postfix's `smtp-source` on the same
//! sink (the ceiling of the machine).
//!
//! Each backend runs in a child process (`avvisi bench --one BACKEND ...`, hidden), so its peak
//! memory and CPU time are its own: the parent only generates the file, runs the sink and
//! `smtp-source`, and prints. Within the child, the peak (VmHWM) is reset before each phase by
//! writing 5 to `/proc/self/clear_refs`, so each phase's peak is clean. Linux only.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Duration as ChronoDuration;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Db;
use crate::import::{self, ImportOptions};
use crate::render::email;
use crate::render::live::TemplateStore;
use crate::render::templates::TemplateSet;
use crate::deliver::transport::Transport;
use crate::deliver::{self, Worker};
use crate::{bench, planner};

/// The targets of the issue, for 1.2 million users on a 2-core machine.
const TARGET_USERS: f64 = 1_200_000.0;
const TARGET_IMPORT_SECS: f64 = 20.0;
const TARGET_PLAN_SQLITE_SECS: f64 = 3.0;
const TARGET_PLAN_POSTGRES_SECS: f64 = 15.0;
const TARGET_PEAK_MIB: f64 = 64.0;
const TARGET_CEILING_SHARE: f64 = 0.5;
/// Messages `smtp-source` sends: enough for a steady rate, without doubling a long run.
const SOURCE_MAX_MESSAGES: u64 = 200_000;
/// The line of the child's standard output that carries its figures.
const RESULT_PREFIX: &str = "AVVISI-BENCH-RESULT ";

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Synthetic users in the snapshot (every one gets one message).
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Which database to measure.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub backend: BackendChoice,
    /// PostgreSQL server to use: a fresh database `avvisi_bench_...` is created there and
    /// dropped at the end (unless --keep).
    #[arg(
        long,
        value_name = "URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    /// SMTP connections (delivery.concurrency; also smtp-source's sessions). Default: the setting.
    #[arg(long, value_name = "C")]
    pub concurrency: Option<u32>,
    /// Keep the temporary folder (snapshot, SQLite file) and the PostgreSQL database.
    #[arg(long)]
    pub keep: bool,
    /// The SMTP sink: Postfix's smtp-sink when installed (auto), or avvisi's built-in one.
    #[arg(long, value_enum, default_value_t = SinkChoice::Auto)]
    pub sink: SinkChoice,

    // What the parent passes to each child.
    #[arg(long, value_enum, hide = true)]
    pub one: Option<OneBackend>,
    #[arg(long, hide = true)]
    pub database_url: Option<String>,
    #[arg(long, hide = true)]
    pub snapshot: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub smtp_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkChoice {
    Auto,
    Postfix,
    Builtin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OneBackend {
    Sqlite,
    Postgres,
}

impl OneBackend {
    fn name(self) -> &'static str {
        match self {
            OneBackend::Sqlite => "sqlite",
            OneBackend::Postgres => "postgres",
        }
    }
}

/// What one backend's child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BackendFigures {
    backend: String,
    users: u64,
    import_secs: f64,
    rows_imported: u64,
    plan_secs: f64,
    planned: u64,
    deliver_secs: f64,
    sent: u64,
    /// Anything else than sent (should be 0).
    not_sent: u64,
    /// avvisi's own CPU time (user + system) during delivery.
    deliver_cpu_secs: f64,
    /// Every process of the machine (database, sink, avvisi) during delivery.
    machine_cpu_secs: f64,
    avg_message_bytes: u64,
    peak_import_kib: u64,
    peak_plan_kib: u64,
    peak_deliver_kib: u64,
    /// False when the peak could not be reset between phases (then each is cumulative).
    peak_per_phase: bool,
}

pub async fn run(args: BenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    match args.one {
        Some(backend) => one_backend(&args, backend).await,
        None => parent(&args, settings).await,
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: file, sink, children, smtp-source, table.

async fn parent(args: &BenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    let concurrency = args.concurrency.unwrap_or(settings.delivery.concurrency);
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let backends: Vec<OneBackend> = match args.backend {
        BackendChoice::Sqlite => vec![OneBackend::Sqlite],
        BackendChoice::Postgres => vec![OneBackend::Postgres],
        BackendChoice::Both => vec![OneBackend::Sqlite, OneBackend::Postgres],
    };
    let dir = std::env::temp_dir().join(format!("avvisi-bench-{}", random_hex()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure_all(args, &backends, concurrency, &dir).await;
    if args.keep {
        eprintln!("kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn measure_all(
    args: &BenchArgs,
    backends: &[OneBackend],
    concurrency: u32,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let snapshot = dir.join("snapshot.csv");
    let started = Instant::now();
    {
        let file = std::fs::File::create(&snapshot)
            .with_context(|| format!("creating {}", snapshot.display()))?;
        bench::write_snapshot(file, args.users).context("writing the synthetic snapshot")?;
    }
    let size = std::fs::metadata(&snapshot)?.len();
    eprintln!(
        "snapshot: {} users, {:.1} MiB, written in {:.1} s",
        args.users,
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let sink = Sink::start(args.sink).await?;
    eprintln!("sink: {}", sink.describe());
    let mut figures = Vec::new();
    let mut failure = None;
    for backend in backends {
        match run_child(args, *backend, concurrency, dir, &snapshot, sink.port).await {
            Ok(f) => figures.push(f),
            Err(e) => {
                failure = Some(e.context(format!("benchmark on {}", backend.name())));
                break;
            }
        }
    }
    let ceiling = match (&failure, figures.first()) {
        (None, Some(f)) => {
            let count = f.sent.clamp(1, SOURCE_MAX_MESSAGES);
            smtp_source(sink.port, concurrency, f.avg_message_bytes, count).await
        }
        _ => None,
    };
    let label = sink.describe();
    sink.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    print_table(args.users, concurrency, &label, &figures, ceiling);
    // Every user gets exactly one message: anything else is a bug, not a figure.
    for f in &figures {
        if f.planned != args.users || f.sent != args.users {
            bail!(
                "{}: {} users, {} planned, {} sent: every user should get one message",
                f.backend,
                args.users,
                f.planned,
                f.sent
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_child(
    args: &BenchArgs,
    backend: OneBackend,
    concurrency: u32,
    dir: &Path,
    snapshot: &Path,
    port: u16,
) -> anyhow::Result<BackendFigures> {
    let (url, pg) = match backend {
        OneBackend::Sqlite => (format!("sqlite://{}", dir.join("bench.db").display()), None),
        OneBackend::Postgres => {
            let (url, name) = create_postgres(&args.postgres_url).await?;
            (url, Some(name))
        }
    };
    eprintln!("{}: importing, planning, delivering...", backend.name());
    let exe = std::env::current_exe().context("locating the avvisi executable")?;
    let mut cmd = std::process::Command::new(exe);
    // -qq: errors only (sqlx warns about every statement over a second, as planning's are).
    cmd.args(["-qq", "bench", "--one", backend.name()])
        .arg("--database-url")
        .arg(&url)
        .arg("--snapshot")
        .arg(snapshot)
        .arg("--smtp-port")
        .arg(port.to_string())
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running the benchmark child process")?;
    if let Some(name) = &pg {
        if args.keep {
            eprintln!("kept PostgreSQL database {name}");
        } else {
            drop_postgres(&args.postgres_url, name).await;
        }
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("the child process failed ({}): {stdout}", output.status);
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .context("the child process printed no result")?;
    Ok(serde_json::from_str(line)?)
}

/// Creates `avvisi_bench_<random>` on the server of `admin_url`; returns its URL and name.
async fn create_postgres(admin_url: &str) -> anyhow::Result<(String, String)> {
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(admin_url).await.with_context(|| {
        format!(
            "PostgreSQL at {} is unreachable (use --postgres-url, or --backend sqlite)",
            crate::store::redact_url(admin_url)
        )
    })?;
    let name = format!("avvisi_bench_{}", random_hex());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .context("creating the benchmark database")?;
    admin.close().await;
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let base = base
        .rsplit_once('/')
        .filter(|(b, _)| b.contains("://") && !b.ends_with('/'))
        .map(|(b, _)| b)
        .unwrap_or(base);
    Ok((format!("{base}/{name}{query}"), name))
}

async fn drop_postgres(admin_url: &str, name: &str) {
    if let Ok(admin) = sqlx::AnyPool::connect(admin_url).await {
        if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await
        {
            eprintln!("could not drop the benchmark database {name}: {e}");
        }
        admin.close().await;
    }
}

fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `smtp-source` rate over the same sink, connections and message size (None: not installed).
async fn smtp_source(port: u16, connections: u32, size: u64, count: u64) -> Option<SourceFigures> {
    let exe = find_program("smtp-source")?;
    eprintln!("smtp-source: {count} messages of {size} bytes over {connections} connections...");
    // -d: every session keeps its connection for all its messages, as avvisi's pool does.
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-d")
        .args(["-s", &connections.to_string()])
        .args(["-m", &count.to_string()])
        .args(["-l", &size.to_string()])
        .args(["-f", "noreply@istruzione.it", "-t", "bench@example.org"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .ok()?
        .ok()?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        eprintln!("smtp-source failed ({status}): no ceiling");
        return None;
    }
    Some(SourceFigures {
        messages: count,
        size,
        secs,
    })
}

struct SourceFigures {
    messages: u64,
    size: u64,
    secs: f64,
}

impl SourceFigures {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.secs
    }
}

/// A program on PATH or in the sbin folders, where Debian's postfix puts its test tools.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// The sink: Postfix's smtp-sink when installed, else a minimal one in this process.

struct Sink {
    port: u16,
    kind: SinkKind,
}

enum SinkKind {
    Postfix(Child),
    InProcess {
        received: Arc<AtomicU64>,
        stop: CancellationToken,
    },
}

impl Sink {
    async fn start(choice: SinkChoice) -> anyhow::Result<Sink> {
        let postfix = match choice {
            SinkChoice::Builtin => None,
            _ => find_program("smtp-sink"),
        };
        if choice == SinkChoice::Postfix && postfix.is_none() {
            bail!("smtp-sink is not installed (Debian: apt-get install postfix)");
        }
        if let Some(exe) = postfix {
            let port = free_port()?;
            let mut cmd = std::process::Command::new(&exe);
            // Run as root, smtp-sink insists on dropping privileges.
            if is_root() {
                cmd.args(["-u", "nobody"]);
            }
            // No -d/-D: messages are thrown away, never stored. 256: the listen backlog.
            let child = cmd
                .arg(format!("127.0.0.1:{port}"))
                .arg("256")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            let sink = Sink {
                port,
                kind: SinkKind::Postfix(child),
            };
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Ok(sink);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sink.stop();
            bail!("smtp-sink did not start listening on 127.0.0.1:{port}");
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (count, token) = (received.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = listener.accept() => if let Ok((socket, _)) = accepted {
                        tokio::spawn(sink_session(socket, count.clone()));
                    }
                }
            }
        });
        Ok(Sink {
            port,
            kind: SinkKind::InProcess { received, stop },
        })
    }

    fn describe(&self) -> String {
        match &self.kind {
            SinkKind::Postfix(_) => format!("Postfix smtp-sink on 127.0.0.1:{}", self.port),
            SinkKind::InProcess { received, .. } => format!(
                "avvisi's built-in sink on 127.0.0.1:{} ({} messages received; Postfix's \
                 smtp-sink is used when installed: apt-get install postfix)",
                self.port,
                received.load(Ordering::Relaxed)
            ),
        }
    }

    fn stop(self) {
        match self.kind {
            SinkKind::Postfix(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            SinkKind::InProcess { stop, .. } => stop.cancel(),
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Accepts every command and throws the message away: just enough SMTP for lettre.
async fn sink_session(socket: tokio::net::TcpStream, received: Arc<AtomicU64>) {
    let (read, mut write) = socket.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let mut line = Vec::with_capacity(1024);
    if write
        .write_all(b"220 avvisi-bench ESMTP sink\r\n")
        .await
        .is_err()
    {
        return;
    }
    loop {
        line.clear();
        match read.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        let reply: &[u8] = match verb.as_slice() {
            b"EHLO" => b"250-avvisi-bench\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            b"DATA" => {
                if write.write_all(b"354 End data with .\r\n").await.is_err() {
                    return;
                }
                loop {
                    line.clear();
                    match read.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == b".\r\n" || line == b".\n" => break,
                        Ok(_) => {}
                    }
                }
                received.fetch_add(1, Ordering::Relaxed);
                b"250 2.0.0 Ok: discarded\r\n"
            }
            b"QUIT" => {
                let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            }
            _ => b"250 2.0.0 Ok\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The child: one backend, the library's real paths, figures on stdout.

async fn one_backend(args: &BenchArgs, backend: OneBackend) -> anyhow::Result<ExitCode> {
    let (Some(url), Some(snapshot), Some(port)) =
        (&args.database_url, &args.snapshot, args.smtp_port)
    else {
        bail!("--one needs --database-url, --snapshot and --smtp-port");
    };
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    let overrides = [
        ("AVVISI__DATABASE__URL", url.clone()),
        ("AVVISI__DELIVERY__TRANSPORT", "smtp".into()),
        ("AVVISI__SMTP__URL", format!("smtp://127.0.0.1:{port}")),
        ("AVVISI__SMTP__USERNAME", String::new()),
        ("AVVISI__SMTP__PASSWORD", String::new()),
        ("AVVISI__SMTP__PASSWORD_FILE", String::new()),
    ];
    env.extend(overrides.map(|(k, v)| (k.to_string(), v)));
    if let Some(c) = args.concurrency {
        env.push(("AVVISI__DELIVERY__CONCURRENCY".into(), c.to_string()));
    }
    let settings = Arc::new(Settings::load_with_env(None, env)?);
    let db = Db::open(url, settings.database.max_connections)
        .await
        .context("opening the benchmark database")?;
    let templates = TemplateSet::load(&settings.templates_dir).context("loading templates")?;
    let digest = templates.digest().to_string();

    // The first notice of the reminder campaigns: inside the campaign and the sending hours.
    let cal = &settings.calendar;
    let now = cal.campaign_start + ChronoDuration::hours(1);
    let clock = Clock::manual(now);
    let worker = Worker {
        db: db.clone(),
        settings: settings.clone(),
        transport: Transport::from_settings(&settings)?,
        templates: TemplateStore::new(templates),
        clock: clock.clone(),
        worker_id: worker::worker_id(),
    };
    if now >= cal.deadline || !worker.in_sending_hours(now) {
        bail!("the calendar's first notice (campaign_start + 1 h) is not inside the sending hours");
    }
    let peak_per_phase = reset_peak();

    // Import.
    let started = Instant::now();
    let options = ImportOptions {
        max_gone_percent: settings.import.max_gone_percent,
        ..ImportOptions::default()
    };
    let report = import::import_users(&db, snapshot, &options, now).await?;
    let import_secs = started.elapsed().as_secs_f64();
    let peak_import_kib = peak_kib();
    eprintln!(
        "{}: imported {} rows in {import_secs:.2} s",
        backend.name(),
        report.rows_valid
    );

    // Planning.
    reset_peak();
    let started = Instant::now();
    let domain = message::message_id_domain(&settings.mail);
    let planned = planner::plan_due(&db, &settings, &digest, &domain, now).await?;
    let plan_secs = started.elapsed().as_secs_f64();
    let peak_plan_kib = peak_kib();
    let planned: u64 = planned.iter().map(|p| p.rows).sum();
    eprintln!(
        "{}: planned {planned} messages in {plan_secs:.2} s",
        backend.name()
    );
    if planned != report.rows_valid {
        eprintln!(
            "warning: planned {planned} messages for {} users",
            report.rows_valid
        );
    }
    let avg_message_bytes =
        average_message_size(&db, &worker, &worker.templates.current(), planned).await?;

    // Delivery.
    reset_peak();
    let (cpu0, machine0) = (process_cpu_secs(), machine_cpu_secs());
    let started = Instant::now();
    let delivery = worker.deliver_due(&CancellationToken::new()).await?;
    let deliver_secs = started.elapsed().as_secs_f64();
    let (cpu1, machine1) = (process_cpu_secs(), machine_cpu_secs());
    let peak_deliver_kib = peak_kib();
    if delivery.relay_unreachable {
        bail!("the sink on 127.0.0.1:{port} could not be reached");
    }
    let mut sent = 0;
    let mut not_sent = 0;
    for t in delivery.per_campaign.values() {
        sent += t.sent;
        not_sent += t.skipped + t.failed + t.expired + t.retrying;
    }
    eprintln!(
        "{}: delivered {sent} messages in {deliver_secs:.2} s",
        backend.name()
    );
    db.close().await;

    let figures = BackendFigures {
        backend: backend.name().into(),
        users: args.users,
        import_secs,
        rows_imported: report.rows_valid,
        plan_secs,
        planned,
        deliver_secs,
        sent,
        not_sent,
        deliver_cpu_secs: cpu1 - cpu0,
        machine_cpu_secs: machine1 - machine0,
        avg_message_bytes,
        peak_import_kib,
        peak_plan_kib,
        peak_deliver_kib,
        peak_per_phase,
    };
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&figures)?);
    Ok(ExitCode::SUCCESS)
}

/// The mean size of the emails as the worker builds them, over up to 256 planned rows spread
/// across the outbox (smtp-source then sends messages of that size).
async fn average_message_size(
    db: &Db,
    worker: &Worker,
    templates: &TemplateSet,
    planned: u64,
) -> anyhow::Result<u64> {
    let every = (planned / 256).max(1) as i64;
    let rows = sqlx::query(
        "SELECT o.id, c.name, o.step, o.template, o.message_id, o.attempts, o.expires_at, \
            u.user_id, u.email, u.first_name, u.last_name, u.institutional_email, \
            u.pending_email, u.province \
         FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         JOIN users u ON u.user_id = o.user_id WHERE o.id % $1 = 0 ORDER BY o.id LIMIT 256",
    )
    .bind(every)
    .fetch_all(db.pool())
    .await?;
    let now = worker.clock.now();
    let mut total = 0u64;
    for r in &rows {
        let row = crate::deliver::outbox::claimed_from_row(r)?;
        let email = worker.email_for(&row, templates, "", now)?;
        total += email.formatted().len() as u64;
    }
    Ok(if rows.is_empty() {
        0
    } else {
        total / rows.len() as u64
    })
}

/// Resets this process's peak resident set (VmHWM); false where Linux does not allow it.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The peak resident set since the last reset, in KiB.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Clock ticks of /proc (USER_HZ, 100 on every Linux architecture avvisi runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of this process (all threads), from /proc/self/stat.
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: indices 11 and 12 after the name.
    (ticks(11) + ticks(12)) / TICKS_PER_SEC
}

/// Busy CPU seconds of the whole machine (every core), from /proc/stat.
fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle) / TICKS_PER_SEC
}

// ---------------------------------------------------------------------------------------------
// The table.

fn print_table(
    users: u64,
    concurrency: u32,
    sink: &str,
    figures: &[BackendFigures],
    ceiling: Option<SourceFigures>,
) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\navvisi bench: {users} users, {concurrency} SMTP connections, {}",
        sink
    );
    let _ = writeln!(out, "machine: {}", machine_description());
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut header = format!("{:<38}", "");
    for f in figures {
        header.push_str(&format!(" {:>12}", f.backend));
    }
    let _ = writeln!(out, "{header}");
    let row =
        |out: &mut std::io::StdoutLock, label: &str, value: &dyn Fn(&BackendFigures) -> String| {
            let mut line = format!("{label:<38}");
            for f in figures {
                line.push_str(&format!(" {:>12}", value(f)));
            }
            let _ = writeln!(out, "{line}");
        };
    row(&mut out, "import (rows/s)", &|f| {
        format!("{:.0}", f.rows_imported as f64 / f.import_secs)
    });
    row(&mut out, "import time (s)", &|f| {
        format!("{:.2}", f.import_secs)
    });
    row(&mut out, "planning time (s)", &|f| {
        format!("{:.2}", f.plan_secs)
    });
    row(&mut out, "messages planned", &|f| f.planned.to_string());
    row(&mut out, "delivered (messages/s)", &|f| {
        format!("{:.0}", f.sent as f64 / f.deliver_secs)
    });
    row(&mut out, "delivery time (s)", &|f| {
        format!("{:.1}", f.deliver_secs)
    });
    row(&mut out, "messages sent (not sent)", &|f| {
        format!("{} ({})", f.sent, f.not_sent)
    });
    row(&mut out, "CPU s per 1,000 messages (avvisi)", &|f| {
        format!("{:.3}", f.deliver_cpu_secs * 1000.0 / f.sent.max(1) as f64)
    });
    row(&mut out, "CPU s per 1,000 messages (all processes)", &|f| {
        format!("{:.3}", f.machine_cpu_secs * 1000.0 / f.sent.max(1) as f64)
    });
    row(&mut out, "peak memory, import (MiB)", &|f| {
        format!("{:.1}", mib(f.peak_import_kib))
    });
    row(&mut out, "peak memory, planning (MiB)", &|f| {
        format!("{:.1}", mib(f.peak_plan_kib))
    });
    row(&mut out, "peak memory, delivery (MiB)", &|f| {
        format!("{:.1}", mib(f.peak_deliver_kib))
    });
    row(&mut out, "peak memory (MiB)", &|f| {
        format!("{:.1}", mib(peak(f)))
    });
    row(&mut out, "average message size (bytes)", &|f| {
        f.avg_message_bytes.to_string()
    });
    if figures.iter().any(|f| !f.peak_per_phase) {
        let _ = writeln!(
            out,
            "(the peak could not be reset between phases: each figure includes the earlier ones)"
        );
    }
    match &ceiling {
        Some(c) => {
            let _ = writeln!(
                out,
                "smtp-source: {:.0} messages/s ({} messages of {} bytes, {concurrency} connections, {:.1} s)",
                c.rate(),
                c.messages,
                c.size,
                c.secs
            );
            row(&mut out, "delivery / smtp-source", &|f| {
                format!("{:.0}%", 100.0 * f.sent as f64 / f.deliver_secs / c.rate())
            });
        }
        None => {
            let _ = writeln!(
                out,
                "smtp-source: not installed (Debian: apt-get install postfix): no ceiling to compare with"
            );
        }
    }

    // The targets are for 1.2 million users; from 100,000 up, times are scaled linearly (below,
    // fixed costs dominate and scaling would mislead).
    if users < 100_000 {
        let _ = writeln!(
            out,
            "\ntargets: for 1.2 million users (run with --users 1200000; from 100000 times are scaled)"
        );
        return;
    }
    let scale = TARGET_USERS / users as f64;
    let scaled = if users as f64 == TARGET_USERS {
        ""
    } else {
        " (times scaled to 1.2 million at the measured rate)"
    };
    let _ = writeln!(out, "\ntargets{scaled}:");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for f in figures {
        let import = f.import_secs * scale;
        let plan = f.plan_secs * scale;
        let plan_target = if f.backend == "sqlite" {
            TARGET_PLAN_SQLITE_SECS
        } else {
            TARGET_PLAN_POSTGRES_SECS
        };
        let peak_mib = mib(peak(f));
        let _ = writeln!(
            out,
            "  {:<9} import {import:.1} s <= {TARGET_IMPORT_SECS} s: {}; planning {plan:.1} s <= {plan_target} s: {}; peak {peak_mib:.1} MiB <= {TARGET_PEAK_MIB} MiB: {}",
            f.backend,
            verdict(import <= TARGET_IMPORT_SECS),
            verdict(plan <= plan_target),
            verdict(peak_mib <= TARGET_PEAK_MIB),
        );
        if let Some(c) = &ceiling {
            let share = f.sent as f64 / f.deliver_secs / c.rate();
            let _ = writeln!(
                out,
                "  {:<9} delivery {:.0}% of smtp-source >= {:.0}%: {}",
                f.backend,
                share * 100.0,
                TARGET_CEILING_SHARE * 100.0,
                verdict(share >= TARGET_CEILING_SHARE)
            );
        }
    }
}

fn peak(f: &BackendFigures) -> u64 {
    f.peak_import_kib
        .max(f.peak_plan_kib)
        .max(f.peak_deliver_kib)
}

/// Cores, memory and CPU model, for the record.
fn machine_description() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::File::open("/proc/cpuinfo")
        .ok()
        .and_then(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| {
                    l.strip_prefix("model name")
                        .and_then(|r| r.split_once(':'))
                        .map(|(_, m)| m.trim().to_string())
                })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| format!("{:.1} GiB RAM", kib / 1048576.0))
        .unwrap_or_default();
    format!("{cores} cores, {model}, {memory}")
}
