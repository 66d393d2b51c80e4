//! Progress of long work (an import, `run --once`) for the person waiting: on a terminal a bar
//! with rate and ETA (indicatif, on stderr: stdout keeps the command's results); elsewhere (a
//! journal, a pipe, cron's mail) a plain log line every `log.progress_seconds`, so a
//! 100,000-recipient run says how far it is without drawing a bar into a file.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of a file read.
    Bytes,
    /// Messages settled (sent, failed, skipped...).
    Messages,
}

/// A cheap, cloneable handle on one piece of work's progress. Counting is an atomic add.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    /// Set when the work is over: the plain-line ticker stops.
    done: Arc<AtomicBool>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("position", &self.bar.position())
            .finish()
    }
}

impl Progress {
    /// Starts showing the progress of `what` towards `total`: a bar when stderr is a
    /// terminal, else a log line every `every`.
    pub fn start(what: &'static str, unit: Unit, total: u64, every: Duration) -> Progress {
        Self::start_on(std::io::stderr().is_terminal(), what, unit, total, every)
    }

    fn start_on(
        terminal: bool,
        what: &'static str,
        unit: Unit,
        total: u64,
        every: Duration,
    ) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let bar = if terminal {
            let counts = match unit {
                Unit::Bytes => "{bytes}/{total_bytes} {bytes_per_sec}",
                Unit::Messages => "{human_pos}/{human_len} messages {per_sec}",
            };
            let style = ProgressStyle::with_template(&format!(
                "{{msg}} [{{bar:30}}] {{percent}}% {counts} ETA {{eta}}"
            ))
            .expect("a valid template")
            .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_message(what);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        } else {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
            let (bar2, done2) = (bar.clone(), done.clone());
            // A thread of its own: the work may keep the runtime's threads busy.
            std::thread::spawn(move || {
                let mut waited = Duration::ZERO;
                let step = Duration::from_millis(100).min(every);
                while !done2.load(Ordering::Relaxed) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited >= every && !done2.load(Ordering::Relaxed) {
                        waited = Duration::ZERO;
                        log_line(&bar2, what, unit);
                    }
                }
            });
            bar
        };
        Progress { bar, done }
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// The work is over (or abandoned): the bar is cleared, the lines stop.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // The last handle gone (an error returned early): no ticker left behind.
        if Arc::strong_count(&self.done) == 1 {
            self.done.store(true, Ordering::Relaxed);
        }
    }
}

/// The plain line: `import users: 3.2 MiB of 9.6 MiB (33%), 1.1 MiB/s, ETA 6 seconds`.
fn log_line(bar: &ProgressBar, what: &str, unit: Unit) {
    let (done, total) = (bar.position(), bar.length().unwrap_or(0));
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let rate = bar.per_sec();
    let eta = HumanDuration(bar.eta());
    let line = match unit {
        Unit::Bytes => format!(
            "{what}: {} of {} ({percent}%), {}/s, ETA {eta}",
            HumanBytes(done),
            HumanBytes(total),
            HumanBytes(rate as u64)
        ),
        Unit::Messages => {
            format!("{what}: {done} of {total} messages ({percent}%), {rate:.0}/s, ETA {eta}")
        }
    };
    tracing::info!(done, total, "{line}");
}

/// A reader that counts the bytes read into a [`Progress`].
pub struct Counted<R> {
    inner: R,
    progress: Option<Progress>,
}

impl<R> Counted<R> {
    pub fn new(inner: R, progress: Option<Progress>) -> Counted<R> {
        Counted { inner, progress }
    }
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            p.inc(n as u64);
        }
        Ok(n)
    }
}
