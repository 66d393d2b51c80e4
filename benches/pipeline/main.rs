//! The pipeline benchmark: import, plan and deliver a synthetic snapshot of N users over SMTP to
//! a local sink, on SQLite and PostgreSQL, and compare delivery with Postfix's `smtp-source` on
//! the same sink (the ceiling of the machine). It drives the library through its public API, the
//! same calls as `avvisi run --once`.
//!
//! ```sh
//! cargo bench --bench pipeline -- --users 1200000 --backend both --concurrency 16
//! cargo test --bench pipeline -- --users 1000 --backend both   # smoke run, debug profile (CI)
//! cargo bench --bench pipeline -- --users 20000 --sink relay --daemons ''  # a real relay (root)
//! ```
//!
//! The sink (`--sink`): Postfix's `smtp-sink` when installed, else the built-in counting sink
//! (`auto`, the default; `postfix`, `builtin` to choose), or `relay`: a real Postfix relay, a
//! private instance in the run's folder with its queue on disk and every message delivered to
//! `discard` (`relay.rs`; root, and Debian's `postfix` installed, not configured: `/etc/postfix`
//! is not used). Rates are then what a client sees, messages accepted by the relay, for avvisi
//! and `smtp-source` alike; the relay's queue is let empty after each backend and before
//! `smtp-source`, so no measurement overlaps another's deliveries, and its log's count of
//! delivered messages must equal the emails sent. The instance is stopped and its folder removed
//! at the end, also on an error or Ctrl-C.
//!
//! `harness = false`: this file's `main` runs as is. `cargo bench` appends `--bench` to the
//! arguments; it is accepted, and only changes the default `--users` (1,200,000 under `cargo bench`,
//! 1,000 otherwise, so that `cargo test --benches` stays a smoke run). Every run fails unless every
//! user gets exactly one message.
//!
//! Each backend runs in a child process (this executable again, with the hidden `--one BACKEND`),
//! so its peak memory and CPU time are its own: the parent only writes the snapshot, runs the sink
//! and `smtp-source`, and prints. Linux only (figures from `/proc`).
//!
//! Layout, one concern a file:
//! - `main.rs`: the arguments, and the parent: snapshot, sink, one child per backend, ceiling,
//!   table, final check;
//! - `child.rs`: one backend in its child process, through the library, and its figures;
//! - `sink.rs`: the SMTP sink (Postfix's `smtp-sink`, or the tests' sink in counting mode, or the
//!   relay) and `smtp-source`;
//! - `relay.rs`: the real relay, a private Postfix instance delivering to `discard`;
//! - `proc_stats.rs`: peak memory, CPU time and the machine, from `/proc`;
//! - `table.rs`: the printed table and the targets.
//!
//! What it shares with the integration tests is the dev-only crate `testkit/`: the synthetic
//! snapshot (deterministic users, four audiences; its tests are `tests/api/synthetic.rs`), the
//! built-in sink, the throwaway PostgreSQL database of a run, and the process helper.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

use avvisi::config::Settings;

mod child;
mod daemons;
mod proc_stats;
mod relay;
mod sink;
mod table;

use child::{BackendFigures, OneBackend, RESULT_PREFIX};
use sink::{Sink, SinkChoice};
use testkit::postgres::Throwaway;
use testkit::synthetic::{self, Population};

/// Users when `--users` is not given: under `cargo bench`, and otherwise (a smoke run).
const DEFAULT_USERS_BENCH: u64 = 1_200_000;
const DEFAULT_USERS_SMOKE: u64 = 1_000;

/// Import, plan and deliver N synthetic users over SMTP to a local sink, on SQLite and
/// PostgreSQL; compare with Postfix's smtp-source on the same sink.
#[derive(Debug, Parser)]
#[command(name = "pipeline")]
pub struct Args {
    /// Synthetic users in the snapshot (every one gets one message). Default: 1200000 under
    /// `cargo bench`, 1000 otherwise.
    #[arg(long)]
    pub users: Option<u64>,
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
    /// Who has what pending (see `testkit/src/synthetic.rs`): the portal's shape (N + 15% outbox
    /// rows, one user in ten with a digest), one audience per user, or one user in twenty in
    /// three.
    #[arg(long, value_enum, default_value_t = Population::Mission)]
    pub population: Population,
    /// Daemon counts to measure on PostgreSQL (`avvisi daemon` processes sharing the database),
    /// then two with one killed; empty: none. Default: 1,2,3 under `cargo bench`, 1 otherwise.
    #[arg(long, value_name = "N,...", value_parser = parse_daemon_counts)]
    pub daemons: Option<DaemonCounts>,
    /// Users of the daemon runs' snapshot (the same population). Default: 100000 under `cargo
    /// bench` (each run imports, plans and delivers its own), --users otherwise.
    #[arg(long, value_name = "N")]
    pub daemon_users: Option<u64>,
    /// Keep the temporary folder (snapshot, SQLite file) and the PostgreSQL database.
    #[arg(long)]
    pub keep: bool,
    /// The SMTP sink: Postfix's smtp-sink when installed (auto), or the built-in one, or a real
    /// Postfix relay in the run's folder, its queue on disk, delivering to discard (root only).
    #[arg(long, value_enum, default_value_t = SinkChoice::Auto)]
    pub sink: SinkChoice,
    /// Added by `cargo bench` (harness = false); only the default of --users depends on it.
    #[arg(long, hide = true)]
    pub bench: bool,

    // What the parent passes to each child.
    #[arg(long, value_enum, hide = true)]
    pub one: Option<OneBackend>,
    #[arg(long, hide = true)]
    pub database_url: Option<String>,
    #[arg(long, hide = true)]
    pub snapshot: Option<std::path::PathBuf>,
    #[arg(long, hide = true)]
    pub smtp_port: Option<u16>,
}

impl Args {
    pub fn users(&self) -> u64 {
        self.users.unwrap_or(if self.bench {
            DEFAULT_USERS_BENCH
        } else {
            DEFAULT_USERS_SMOKE
        })
    }
}

/// The daemon counts of `--daemons 1,2,3`; `--daemons ''` is none.
#[derive(Debug, Clone)]
pub struct DaemonCounts(pub Vec<usize>);

fn parse_daemon_counts(s: &str) -> Result<DaemonCounts, String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| n.parse().map_err(|e| format!("{n}: {e}")))
        .collect::<Result<_, _>>()
        .map(DaemonCounts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Errors only: sqlx warns about every statement over a second, as planning's are.
    avvisi::telemetry::init(-2, &avvisi::config::LogSettings::default());
    let result = match args.one {
        Some(backend) => child::run(&args, backend).await,
        None => parent(&args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: file, sink, children, smtp-source, table.

async fn parent(args: &Args) -> anyhow::Result<()> {
    let users = args.users();
    if users == 0 {
        bail!("--users must be at least 1");
    }
    let settings = Settings::load(None)?;
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
    // On Ctrl-C the measurement is dropped, which stops the relay (its master daemon detaches from
    // the terminal) before the folder goes.
    let result = tokio::select! {
        result = measure_all(args, users, &backends, concurrency, &dir) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if args.keep {
        eprintln!("kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn measure_all(
    args: &Args,
    users: u64,
    backends: &[OneBackend],
    concurrency: u32,
    dir: &Path,
) -> anyhow::Result<()> {
    let snapshot = dir.join("snapshot.csv");
    let started = Instant::now();
    {
        let file = std::fs::File::create(&snapshot)
            .with_context(|| format!("creating {}", snapshot.display()))?;
        synthetic::write_snapshot(file, users, args.population)
            .context("writing the synthetic snapshot")?;
    }
    let size = std::fs::metadata(&snapshot)?.len();
    eprintln!(
        "snapshot: {users} users, {:.1} MiB, written in {:.1} s",
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let sink = Sink::start(args.sink, dir).await?;
    eprintln!("sink: {}", sink.describe());
    let mut figures = Vec::new();
    let mut failure = None;
    for backend in backends {
        // The relay delivers the backend's messages after accepting them: the next measurement
        // starts on an empty queue.
        let run = match run_child(args, *backend, concurrency, dir, &snapshot, sink.port()).await {
            Ok(f) => sink.settle().await.map(|()| f),
            Err(e) => Err(e),
        };
        match run {
            Ok(f) => figures.push(f),
            Err(e) => {
                failure = Some(e.context(format!("benchmark on {}", backend.name())));
                break;
            }
        }
    }
    // What the built-in sink or the relay counted, before smtp-source adds its own messages.
    let received = sink.accepted();
    let ceiling = match (&failure, figures.first()) {
        (None, Some(f)) => {
            let count = f.emails.clamp(1, sink::SOURCE_MAX_MESSAGES);
            sink::smtp_source(sink.port(), concurrency, f.avg_message_bytes, count).await
        }
        _ => None,
    };
    let label = sink.describe();
    let relay = sink.is_relay();
    sink.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    table::print(
        users,
        concurrency,
        &label,
        relay,
        &figures,
        ceiling.as_ref(),
    );
    if backends.contains(&OneBackend::Postgres) {
        let counts = args.daemons.clone().map(|d| d.0).unwrap_or_else(|| {
            if args.bench {
                vec![1, 2, 3]
            } else {
                vec![1]
            }
        });
        if !counts.is_empty() {
            let n = args.daemon_users.unwrap_or(if args.bench {
                100_000.min(users)
            } else {
                users
            });
            let snapshot = dir.join("daemons.csv");
            let file = std::fs::File::create(&snapshot)
                .with_context(|| format!("creating {}", snapshot.display()))?;
            synthetic::write_snapshot(file, n, args.population)?;
            let runs =
                daemons::measure(&args.postgres_url, &snapshot, n, concurrency, &counts).await?;
            table::print_daemons(n, concurrency, &runs);
        }
    }
    check(
        users,
        synthetic::reminder_rows(users, args.population),
        &figures,
        received,
    )
}

/// Every user gets exactly one email, and every planned row is sent with it: anything else is a
/// bug, not a figure.
fn check(
    users: u64,
    rows: u64,
    figures: &[BackendFigures],
    received: Option<u64>,
) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for f in figures {
        if f.planned != rows || f.sent != rows || f.emails != users || f.recipients != users {
            problems.push(format!(
                "{}: {users} users, {rows} rows expected; {} planned, {} sent in {} emails to {} \
                 different users: every user should get one email",
                f.backend, f.planned, f.sent, f.emails, f.recipients
            ));
        }
        for m in &f.audience_mismatches {
            problems.push(format!("{}: {m}", f.backend));
        }
    }
    let sent: u64 = figures.iter().map(|f| f.emails).sum();
    if let Some(received) = received.filter(|r| *r != sent) {
        problems.push(format!(
            "the sink accepted {received} messages, the outboxes say {sent} emails were sent"
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!("{}", problems.join("\n"))
}

async fn run_child(
    args: &Args,
    backend: OneBackend,
    concurrency: u32,
    dir: &Path,
    snapshot: &Path,
    port: u16,
) -> anyhow::Result<BackendFigures> {
    let (url, mut pg) = match backend {
        OneBackend::Sqlite => (format!("sqlite://{}", dir.join("bench.db").display()), None),
        OneBackend::Postgres => {
            let db = throwaway_database(&args.postgres_url).await?;
            (db.url().to_string(), Some(db))
        }
    };
    eprintln!("{}: importing, planning, delivering...", backend.name());
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--one", backend.name()])
        .arg("--users")
        .arg(args.users().to_string())
        .arg("--database-url")
        .arg(&url)
        .arg("--snapshot")
        .arg(snapshot)
        .arg("--smtp-port")
        .arg(port.to_string())
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--population")
        .arg(
            args.population
                .to_possible_value()
                .expect("no skipped variant")
                .get_name(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running the benchmark child process")?;
    if let Some(db) = pg.as_mut().filter(|_| args.keep) {
        eprintln!("kept PostgreSQL database {}", db.name());
        db.keep();
    }
    drop(pg);
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

/// A throwaway database `avvisi_bench_<random>` on the server of `admin_url`, dropped with the
/// value it returns.
pub async fn throwaway_database(admin_url: &str) -> anyhow::Result<Throwaway> {
    Throwaway::create(admin_url, "avvisi_bench")
        .await
        .with_context(|| {
            format!(
                "creating a database on PostgreSQL at {} (use --postgres-url, or --backend sqlite)",
                avvisi::config::redact_url(admin_url)
            )
        })
}

/// 16 random hex digits, for the name of a run's folder.
fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}
