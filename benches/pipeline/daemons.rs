//! The daemon itself, as production runs it: `avvisi daemon` processes sharing one PostgreSQL
//! database, delivering the first notice of a snapshot planned beforehand, to a counting sink.
//! One run per daemon count (1, 2, 3 by default), then a run of two where one is killed
//! (SIGKILL) a third of the way through: the survivor finishes, and the sink's count says how
//! many emails went twice (the guarantee: at most one per connection of the killed process).
//!
//! Each run has its own database, imported and planned with the binary (`import users`, `plan
//! --now`), so a run measures delivery only: from the daemons' start to the last message
//! recorded, read from the outbox's counts every 200 ms.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::Row;

use testkit::process::Proc;
use testkit::smtp_sink::SmtpSink;

/// The instant the daemons think it is: the first notice, inside the sending hours.
const NOW: &str = "2026-11-23T10:00:00+01:00";
/// Short leases, so that the survivor takes over a killed daemon's claims within the run.
const LEASE_SECONDS: &str = "10";
/// A run gives up after an hour; a daemon is killed a little after, whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(3600);

/// What one run measured.
#[derive(Debug, Clone)]
pub struct DaemonRun {
    pub daemons: usize,
    /// Killed one of them a third of the way through.
    pub killed: bool,
    pub emails: u64,
    pub secs: f64,
    /// Emails the sink accepted beyond one per email sent.
    pub duplicates: u64,
}

impl DaemonRun {
    pub fn rate(&self) -> f64 {
        self.emails as f64 / self.secs
    }
}

/// The runs: each count of `counts`, then two with one killed.
pub async fn measure(
    admin_url: &str,
    snapshot: &Path,
    emails: u64,
    concurrency: u32,
    counts: &[usize],
) -> anyhow::Result<Vec<DaemonRun>> {
    let mut runs = Vec::new();
    let mut plan: Vec<(usize, bool)> = counts.iter().map(|&n| (n, false)).collect();
    plan.push((2, true));
    for (daemons, kill) in plan {
        eprintln!(
            "daemons: {daemons} sharing PostgreSQL{}...",
            if kill { ", one killed" } else { "" }
        );
        let db = crate::throwaway_database(admin_url).await?;
        let result = one_run(db.url(), snapshot, emails, concurrency, daemons, kill).await;
        drop(db);
        runs.push(result?);
    }
    Ok(runs)
}

async fn one_run(
    url: &str,
    snapshot: &Path,
    emails: u64,
    concurrency: u32,
    daemons: usize,
    kill: bool,
) -> anyhow::Result<DaemonRun> {
    let avvisi = |args: &[&str]| -> anyhow::Result<()> {
        let out = command(url, args, "0")
            .stdout(Stdio::null())
            .output()
            .with_context(|| format!("running avvisi {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "avvisi {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let snapshot = snapshot.display().to_string();
    avvisi(&["-q", "import", "users", &snapshot])?;
    avvisi(&["-q", "plan", "--now", NOW])?;

    let sink = SmtpSink::start_counting().await;
    let db = sqlx::AnyPool::connect(url).await?;
    let started = Instant::now();
    let procs: Vec<Proc> = (0..daemons)
        .map(|_| {
            let mut cmd = command(
                url,
                &["-q", "daemon", "--now", NOW],
                &concurrency.to_string(),
            );
            cmd.envs(testkit::smtp::env(&sink.url()))
                .stdout(Stdio::null());
            Proc::spawn(&mut cmd, RUN_LIMIT + Duration::from_secs(60))
        })
        .collect();
    let mut killed = false;
    loop {
        let left = open_messages(&db).await?;
        if kill && !killed && sink.accepted() * 3 >= emails {
            procs[0].kill();
            killed = true;
        }
        if left == 0 {
            break;
        }
        if started.elapsed() > RUN_LIMIT {
            bail!("the daemons did not finish within an hour ({left} messages left)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(procs);
    let sent: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT message_id) FROM outbox WHERE state = 'sent'")
            .fetch_one(&db)
            .await?;
    db.close().await;
    let accepted = sink.accepted();
    if (sent as u64) != emails {
        bail!("{daemons} daemons sent {sent} emails, {emails} expected");
    }
    Ok(DaemonRun {
        daemons,
        killed: kill,
        emails,
        secs,
        duplicates: accepted.saturating_sub(sent as u64),
    })
}

/// Pending and on the wire, from the outbox's counts.
async fn open_messages(db: &sqlx::AnyPool) -> anyhow::Result<i64> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS n FROM outbox_counts \
         WHERE state IN ('pending', 'sending')",
    )
    .fetch_one(db)
    .await?;
    Ok(row.try_get("n")?)
}

/// `avvisi` on `url`, run from the repository (its templates and configuration).
fn command(url: &str, args: &[&str], concurrency: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avvisi"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env("AVVISI__DATABASE__URL", url)
        .env("AVVISI__SMTP__USERNAME", "")
        .env("AVVISI__SMTP__PASSWORD", "")
        .env("AVVISI__SMTP__PASSWORD_FILE", "")
        .env("AVVISI__HTTP__ADDRESS", "")
        .env("AVVISI__IMPORT__MAX_AGE_HOURS", "100000")
        .env("AVVISI__DELIVERY__LEASE_SECONDS", LEASE_SECONDS)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if concurrency != "0" {
        cmd.env("AVVISI__DELIVERY__CONCURRENCY", concurrency);
    }
    cmd
}
