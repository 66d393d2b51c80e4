//! The real relay (`--sink relay`): a private Postfix instance in the run's folder, its queue on
//! disk, every message delivered to `discard`. It is what a production relay does with a message
//! (`smtpd`, `cleanup` writing and syncing the queue file, `qmgr`, a delivery agent, the log),
//! without a next hop. Nothing outside the folder is read or written but Postfix's programs and
//! its `postfix` user: `/etc/postfix` is not used (`postfix -c DIR`), and may hold no `main.cf`.
//!
//! Started with `postfix -c DIR start` and stopped with `postfix -c DIR stop`, also on an error or
//! Ctrl-C (the `Drop` of [`Relay`]): the master daemon detaches, so nothing else would stop it.
//! It needs root (the master runs as root and drops to `postfix`).
//!
//! Two things make such an instance fail to start, both silently on a machine without syslog
//! (`postfix start` only says "fatal: mail system startup failed"): the data directory must
//! belong to `postfix` (the master, already without privileges, creates `master.lock` there;
//! the queue directory belongs to root, Postfix makes its subfolders), and the master's errors
//! before its log service is up go to syslog only. With `maillog_file` in the folder (allowed by
//! `maillog_file_prefixes`) everything after that is logged there; `strace -f` on
//! `MAIL_CONFIG=DIR /usr/lib/postfix/sbin/master -d` shows the rest.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::proc_stats::is_root;

/// The queue's folders that hold a message until it is delivered (`deferred` is hashed).
const QUEUES: [&str; 5] = ["maildrop", "incoming", "active", "deferred", "hold"];

/// How long the queue may make no progress before the bench gives up on it.
const STALL: Duration = Duration::from_secs(60);

pub struct Relay {
    /// The instance's folder: `etc/` (main.cf, master.cf), `queue/`, `data/`, `maillog`.
    dir: PathBuf,
    postfix: PathBuf,
    port: u16,
    /// Messages the log says were delivered (discarded), counted as the log grows.
    delivered: Mutex<LogCount>,
    running: bool,
}

impl Relay {
    /// Writes the instance into `parent/relay`, starts it and waits until it accepts connections.
    pub async fn start(parent: &Path, port: u16) -> anyhow::Result<Relay> {
        if !is_root() {
            bail!("--sink relay needs root: Postfix's master daemon runs as root");
        }
        let postfix = crate::sink::find_program("postfix")
            .context("--sink relay needs Postfix (Debian: apt-get install postfix)")?;
        let dir = parent.join("relay");
        let (etc, queue, data) = (dir.join("etc"), dir.join("queue"), dir.join("data"));
        for d in [&etc, &queue, &data] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        // The queue belongs to root (Postfix creates its subfolders, owned by postfix), the data
        // directory to postfix.
        let status = Command::new("chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .context("running chown")?;
        if !status.success() {
            bail!(
                "chown postfix {} failed: is there a postfix user?",
                data.display()
            );
        }
        std::fs::write(etc.join("main.cf"), main_cf(&dir))?;
        std::fs::write(etc.join("master.cf"), master_cf(port))?;
        let mut relay = Relay {
            delivered: Mutex::new(LogCount::new(dir.join("maillog"))),
            dir,
            postfix,
            port,
            running: true,
        };
        let output = relay
            .postfix_command("start")
            .output()
            .context("running postfix start")?;
        if !output.status.success() {
            relay.running = false;
            bail!(
                "postfix -c {} start failed ({}): {}{}\n{}",
                relay.etc().display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                relay.log_tail(20)
            );
        }
        if testkit::process::port_answers(port, Duration::from_secs(10)).await {
            return Ok(relay);
        }
        bail!(
            "the Postfix relay did not start listening on 127.0.0.1:{port}\n{}",
            relay.log_tail(20)
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Messages delivered (discarded) so far according to the log; None if it cannot be read.
    pub fn delivered(&self) -> Option<u64> {
        self.delivered.lock().ok()?.update().ok()
    }

    /// Waits until the queue is empty (every accepted message delivered) and the log has caught
    /// up; returns the seconds waited. Fails on a deferred message or a queue that stops moving.
    pub async fn drain(&self) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut last = (usize::MAX, Instant::now());
        loop {
            let deferred = count_files(&self.dir.join("queue/deferred"));
            if deferred > 0 {
                bail!(
                    "the relay deferred {deferred} message(s):\n{}",
                    self.log_tail(10)
                );
            }
            let queued: usize = QUEUES
                .iter()
                .map(|q| count_files(&self.dir.join("queue").join(q)))
                .sum();
            if queued == 0 {
                break;
            }
            if queued != last.0 {
                last = (queued, Instant::now());
            } else if last.1.elapsed() > STALL {
                bail!(
                    "the relay's queue has held {queued} message(s) for {} s:\n{}",
                    STALL.as_secs(),
                    self.log_tail(10)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The log goes through postlogd, a little behind the queue: wait until it stops growing.
        let mut count = self.delivered();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.delivered();
            if now == count {
                break;
            }
            count = now;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Stops the instance (`postfix stop`, then its master's end); its folder stays.
    pub fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let master = std::fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let stopped = self
            .postfix_command("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let Some(pid) = master else { return };
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + Duration::from_secs(if stopped { 10 } else { 0 });
        while proc.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if proc.exists() {
            eprintln!("the relay's master ({pid}) did not stop: killing it");
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    fn postfix_command(&self, what: &str) -> Command {
        let mut cmd = Command::new(&self.postfix);
        cmd.arg("-c").arg(self.etc()).arg(what).stdin(Stdio::null());
        cmd
    }

    /// The last lines of the instance's log, for an error message.
    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "the relay's log ({}):\n{tail}",
            self.dir.join("maillog").display()
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The instance's main.cf: its own folders and log, a relay for 127.0.0.0/8 only, every
/// destination to `discard`, nothing local, limits well above the bench's connections.
fn main_cf(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "# The avvisi pipeline benchmark's relay (benches/pipeline/relay.rs): deleted after the run.
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.avvisi-bench.invalid
mydomain = avvisi-bench.invalid
myorigin = $myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard:
relay_transport = discard:
local_transport = discard:
smtpd_peername_lookup = no
biff = no
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
default_destination_concurrency_limit = 50
"
    )
}

/// The instance's master.cf: Postfix's own services, none in a chroot (there is none to run in),
/// and smtpd on 127.0.0.1:PORT.
fn master_cf(port: u16) -> String {
    format!(
        "# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
    )
}

/// Files under a folder, recursively (the hashed queues have subfolders); 0 if unreadable.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// Delivery lines of the log (`postfix/discard[...]: ID: to=<...>, ..., status=sent (...)`),
/// counted as it grows: the log holds about 1 kB per message, read once.
struct LogCount {
    path: PathBuf,
    offset: u64,
    count: u64,
}

impl LogCount {
    fn new(path: PathBuf) -> LogCount {
        LogCount {
            path,
            offset: 0,
            count: 0,
        }
    }

    fn update(&mut self) -> std::io::Result<u64> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self.count),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            // A line still being written is read again next time.
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            self.offset += n as u64;
            if is_delivery(&line) {
                self.count += 1;
            }
        }
        Ok(self.count)
    }
}

fn is_delivery(line: &[u8]) -> bool {
    let has = |needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
    has(b" postfix/discard[") && has(b", status=sent (")
}
