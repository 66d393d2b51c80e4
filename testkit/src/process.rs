//! A spawned `avvisi` (or any program) that cannot outlive its test: killed when its timeout
//! passes and when it is dropped; SIGTERM and the exit code; and waiting for a condition with a
//! deadline, the one way the tests synchronise with a process (never a fixed sleep).

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a condition is looked at: a poll, not a synchronisation.
const POLL: Duration = Duration::from_millis(50);

/// A child process, killed (SIGKILL) when `timeout` has passed since it started, and when this
/// value is dropped (a failed assertion), so that no process outlives its test.
pub struct Proc {
    child: Arc<Mutex<Child>>,
    /// Dropping it ends the watchdog thread.
    _watchdog: mpsc::Sender<()>,
    timed_out: Arc<AtomicBool>,
    what: String,
}

impl Proc {
    /// Spawns `cmd`, to be killed after `timeout`.
    pub fn spawn(cmd: &mut Command, timeout: Duration) -> Proc {
        let what = format!("{:?}", cmd.get_program());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let child = Arc::new(Mutex::new(child));
        let (tx, rx) = mpsc::channel::<()>();
        let timed_out = Arc::new(AtomicBool::new(false));
        let (watched, flag, name) = (child.clone(), timed_out.clone(), what.clone());
        std::thread::spawn(move || {
            if rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
                let mut child = watched.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok(None) = child.try_wait() {
                    eprintln!("{name} still running after {timeout:?}: killed");
                    flag.store(true, Ordering::SeqCst);
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        });
        Proc {
            child,
            _watchdog: tx,
            timed_out,
            what,
        }
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn id(&self) -> u32 {
        self.child().id()
    }

    /// Whether the watchdog killed it.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// The exit status, if it has ended.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child().try_wait().expect("the child's status")
    }

    /// Sends `signal` while the process runs (an unreaped child keeps its pid: never another's).
    pub fn signal(&self, signal: libc::c_int) {
        let mut child = self.child();
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            assert_eq!(rc, 0, "kill({}, {signal})", child.id());
        }
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&self) {
        let mut child = self.child();
        let _ = child.kill();
        child.wait().expect("reap the killed process");
    }

    /// Waits (without blocking the runtime) until it ends, for at most `within`; panics after.
    pub async fn wait(&self, within: Duration) -> ExitStatus {
        let what = format!("{} to end", self.what);
        eventually(&what, within, || async { self.try_wait() }).await
    }

    /// Like [`Proc::wait`], on a thread with no runtime.
    pub fn wait_blocking(&self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {within:?}",
                self.what
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, and the exit code once it has stopped (within 30 s, else a panic).
    pub async fn terminate(&self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(30)).await.code()
    }

    /// Like [`Proc::terminate`], on a thread with no runtime.
    pub fn terminate_blocking(&self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait_blocking(Duration::from_secs(30)).code()
    }

    /// Its piped standard output and error once it ends (within `within`, else a panic).
    pub fn output(self, within: Duration) -> Output {
        let (stdout, stderr) = {
            let mut child = self.child();
            (child.stdout.take(), child.stderr.take())
        };
        // Read both pipes while it runs: a full pipe would stop it.
        let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut out);
                }
                out
            })
        };
        let out = read(stdout.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        let err = read(stderr.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        let status = self.wait_blocking(within);
        Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let mut child = self.child();
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `check` returns `Some`, looking every 50 ms, for at most `timeout`; panics
/// naming `what` after.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `check` holds, for at most `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, timeout, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Checks that `check` holds throughout `window`, looking every 50 ms: for a behaviour that
/// IS an absence ("nothing is sent while paused"), which no event can announce.
pub async fn holds_for<F, Fut>(what: &str, window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + window;
    loop {
        assert!(check().await, "{what} stopped holding within {window:?}");
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the file at `path` has a line containing `needle` (a log line); returns it.
pub async fn wait_for_line(path: &Path, needle: &str, timeout: Duration) -> String {
    let what = format!("a line with {needle:?} in {}", path.display());
    eventually(&what, timeout, || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    })
    .await
}

/// Waits until something accepts connections on 127.0.0.1:`port` (a server another process
/// started), for at most `timeout`; false if nothing did.
pub async fn port_answers(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
