//! The SMTP sink the children deliver to, and the ceiling: Postfix's `smtp-sink` when installed
//! (Debian's `postfix`), else the integration tests' sink (`testkit::smtp_sink`) in counting
//! mode, in the parent process; or, with `--sink relay`, a real Postfix relay delivering to
//! `discard` (`relay.rs`). `smtp-source` (Postfix too) then sends messages of the same size over
//! as many connections to the same sink: the machine's ceiling, or through the relay the yardstick.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::ValueEnum;

use crate::proc_stats::is_root;
use crate::relay::Relay;
use testkit::smtp_sink::SmtpSink;

/// Messages `smtp-source` sends: enough for a steady rate, without doubling a long run.
pub const SOURCE_MAX_MESSAGES: u64 = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkChoice {
    Auto,
    Postfix,
    Builtin,
    /// A private Postfix instance, its queue on disk, delivering to `discard` (root only).
    Relay,
}

pub enum Sink {
    Postfix { port: u16, child: Child },
    Builtin(SmtpSink),
    Relay(Relay),
}

impl Sink {
    /// Starts the sink; the relay's instance goes into `dir`, the run's folder.
    pub async fn start(choice: SinkChoice, dir: &Path) -> anyhow::Result<Sink> {
        if choice == SinkChoice::Relay {
            return Ok(Sink::Relay(Relay::start(dir, free_port()?).await?));
        }
        let postfix = match choice {
            SinkChoice::Builtin => None,
            _ => find_program("smtp-sink"),
        };
        if choice == SinkChoice::Postfix && postfix.is_none() {
            bail!("smtp-sink is not installed (Debian: apt-get install postfix)");
        }
        let Some(exe) = postfix else {
            return Ok(Sink::Builtin(SmtpSink::start_counting().await));
        };
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
        let sink = Sink::Postfix { port, child };
        if testkit::process::port_answers(port, Duration::from_secs(5)).await {
            return Ok(sink);
        }
        sink.stop();
        bail!("smtp-sink did not start listening on 127.0.0.1:{port}");
    }

    pub fn port(&self) -> u16 {
        match self {
            Sink::Postfix { port, .. } => *port,
            Sink::Builtin(sink) => sink.addr().port(),
            Sink::Relay(relay) => relay.port(),
        }
    }

    pub fn is_relay(&self) -> bool {
        matches!(self, Sink::Relay(_))
    }

    /// Messages accepted so far, when the sink counts them: the built-in one, and the relay
    /// (delivered, from its log: call [`Sink::settle`] first).
    pub fn accepted(&self) -> Option<u64> {
        match self {
            Sink::Postfix { .. } => None,
            Sink::Builtin(sink) => Some(sink.accepted()),
            Sink::Relay(relay) => relay.delivered(),
        }
    }

    /// Waits until the sink has finished with what it accepted: the relay's queue empty, so that
    /// the next measurement does not overlap this one's deliveries. Nothing to wait for otherwise.
    pub async fn settle(&self) -> anyhow::Result<()> {
        if let Sink::Relay(relay) = self {
            let secs = relay.drain().await?;
            let delivered = relay.delivered().map_or("?".into(), |n| n.to_string());
            eprintln!(
                "relay: its queue emptied {secs:.1} s after the backend's run ended; \
                 {delivered} messages delivered so far"
            );
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        match self {
            Sink::Postfix { port, .. } => format!("Postfix smtp-sink on 127.0.0.1:{port}"),
            Sink::Builtin(sink) => format!(
                "the built-in sink (testkit::smtp_sink) on 127.0.0.1:{} ({} messages, {:.1} MiB \
                 received; Postfix's smtp-sink is used when installed: apt-get install postfix)",
                self.port(),
                sink.accepted(),
                sink.accepted_bytes() as f64 / 1048576.0
            ),
            Sink::Relay(relay) => format!(
                "a Postfix relay on 127.0.0.1:{} (its queue on disk, delivery to discard; \
                 rates are messages accepted by the relay)",
                relay.port()
            ),
        }
    }

    pub fn stop(self) {
        match self {
            Sink::Postfix { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Dropping the sink aborts its tasks.
            Sink::Builtin(sink) => drop(sink),
            Sink::Relay(mut relay) => relay.stop(),
        }
    }
}

/// What `smtp-source` measured.
pub struct SourceFigures {
    pub messages: u64,
    pub size: u64,
    pub secs: f64,
}

impl SourceFigures {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.secs
    }
}

/// `smtp-source` rate over the same sink, connections and message size (None: not installed).
pub async fn smtp_source(
    port: u16,
    connections: u32,
    size: u64,
    count: u64,
) -> Option<SourceFigures> {
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

/// A program on PATH or in the sbin folders, where Debian's postfix puts its test tools.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}
