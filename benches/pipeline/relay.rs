//! The real relay (`--sink relay`): a private Postfix instance in the run's folder, its queue on
//! disk, every message delivered to `discard`. It is what a production relay does with a message
//! (`smtpd`, `cleanup` writing and syncing the queue file, `qmgr`, a delivery agent, the log),
//! without a next hop. Nothing outside the folder is read or written but Postfix's programs and
//! its `postfix` user: `/etc/postfix` is not used (`postfix -c DIR`), and may hold no `main.cf`.
//!
//! The instance itself (its folders, start, queue, log and stop, and what makes one fail to
//! start) is [`testkit::postfix`]'s, shared with the tests' relay. It needs root.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use testkit::postfix::Postfix;

/// How long the queue may make no progress before the bench gives up on it.
const STALL: Duration = Duration::from_secs(60);

pub struct Relay {
    /// In the run's folder, `relay/`; stopped when dropped.
    instance: Postfix,
    port: u16,
    /// Messages the log says were delivered (discarded), counted as the log grows.
    delivered: Mutex<LogCount>,
}

impl Relay {
    /// Writes the instance into `parent/relay`, starts it and waits until it accepts connections.
    pub async fn start(parent: &Path, port: u16) -> anyhow::Result<Relay> {
        if let Some(why) = Postfix::missing() {
            bail!("--sink relay needs Postfix run as root: {why}");
        }
        let mut instance = Postfix::prepare(&parent.join("relay"))
            .with_context(|| format!("preparing the relay in {}", parent.display()))?;
        instance.write_main_cf(
            "The avvisi pipeline benchmark's relay (benches/pipeline/relay.rs)",
            "avvisi-bench",
            MAIN_CF,
        )?;
        instance.write_master_cf(port, "")?;
        instance.start()?;
        if testkit::process::port_answers(port, Duration::from_secs(10)).await {
            return Ok(Relay {
                delivered: Mutex::new(LogCount::new(instance.log_path())),
                instance,
                port,
            });
        }
        bail!(
            "the Postfix relay did not start listening on 127.0.0.1:{port}\n{}",
            instance.log_tail(20)
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
            let deferred = self.instance.deferred();
            if deferred > 0 {
                bail!(
                    "the relay deferred {deferred} message(s):\n{}",
                    self.instance.log_tail(10)
                );
            }
            let queued = self.instance.queued();
            if queued == 0 {
                break;
            }
            if queued != last.0 {
                last = (queued, Instant::now());
            } else if last.1.elapsed() > STALL {
                bail!(
                    "the relay's queue has held {queued} message(s) for {} s:\n{}",
                    STALL.as_secs(),
                    self.instance.log_tail(10)
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

    /// Stops the instance; its folder stays.
    pub fn stop(&mut self) {
        self.instance.stop();
    }
}

/// The relay's own settings in main.cf: a relay for 127.0.0.0/8 only, every destination to
/// `discard`, limits well above the bench's connections.
const MAIN_CF: &str = "mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard:
relay_transport = discard:
local_transport = discard:
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
default_destination_concurrency_limit = 50
";

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
