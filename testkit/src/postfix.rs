//! A private Postfix instance in a folder of its own: what the tests' relay (STARTTLS, AUTH, a
//! next hop: `tests/api/relay.rs`) and the benchmark's (every message discarded:
//! `benches/pipeline/relay.rs`) share. Each writes its own settings into the instance's
//! `main.cf` and `master.cf`; the folders, the start, the queue, the log and the stop are here.
//!
//! How it runs: `postfix -c DIR/etc start` with its own main.cf and master.cf, no chroot, its
//! queue, data and log in the folder; nothing under `/etc/postfix` is read (and it may hold no
//! `main.cf`). It needs root (the master runs as root and drops to `postfix`). [`Postfix`]'s
//! `Drop` stops the instance: the master detaches, so nothing else would.
//!
//! Three things make such an instance fail, silently on a machine without syslog (`postfix
//! start` only says "fatal: mail system startup failed"): the data folder must belong to
//! `postfix` (the master, already without privileges, creates `master.lock` there; the queue
//! folder belongs to root, Postfix makes its subfolders); the folder must be traversable by
//! `postfix` (a temporary folder is 0700); and the master's errors before its log service is up
//! go to syslog only. With `maillog_file` in the folder (allowed by `maillog_file_prefixes`)
//! everything after that is logged there; `strace -f` on
//! `MAIL_CONFIG=DIR /usr/lib/postfix/sbin/master -d` shows the rest.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The queue's folders that hold a message until it is delivered (`deferred` is hashed).
const QUEUES: [&str; 5] = ["maildrop", "incoming", "active", "deferred", "hold"];

/// One instance, stopped when dropped.
pub struct Postfix {
    /// `etc/` (main.cf, master.cf), `queue/`, `data/`, `maillog`.
    dir: PathBuf,
    postfix: PathBuf,
    running: bool,
}

impl Postfix {
    /// Why this machine cannot run an instance (not root, no Postfix), if it cannot.
    pub fn missing() -> Option<&'static str> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root (Postfix's master runs as root)");
        }
        if find(&["/usr/sbin/postfix", "/usr/bin/postfix"]).is_none() {
            return Some("Postfix is not installed (Debian: apt-get install postfix)");
        }
        None
    }

    /// Lays an instance out in `dir` (made if missing, traversable by `postfix`): `etc/`,
    /// `queue/`, and `data/` owned by `postfix`. Nothing runs yet.
    pub fn prepare(dir: &Path) -> io::Result<Postfix> {
        let postfix = find(&["/usr/sbin/postfix", "/usr/bin/postfix"])
            .ok_or_else(|| io::Error::other("Postfix is not installed"))?;
        let instance = Postfix {
            dir: dir.to_path_buf(),
            postfix,
            running: false,
        };
        for d in [instance.etc(), dir.join("queue"), dir.join("data")] {
            std::fs::create_dir_all(&d)?;
        }
        set_mode(dir, 0o755)?;
        chown_postfix(&dir.join("data"))?;
        Ok(instance)
    }

    /// The instance's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its configuration folder (`postfix -c`).
    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// Writes `main.cf`: a first line saying whose it is (`owner`), the instance's own folders
    /// and log, `NAME.invalid` as its domain, nothing delivered locally, listening on 127.0.0.1
    /// only; then the caller's `settings` (relaying, TLS, where messages go).
    pub fn write_main_cf(&self, owner: &str, name: &str, settings: &str) -> io::Result<()> {
        let dir = self.dir.display();
        let main_cf = format!(
            "# {owner}: deleted after the run.
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.{name}.invalid
mydomain = {name}.invalid
myorigin = $myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtpd_peername_lookup = no
biff = no
{settings}"
        );
        std::fs::write(self.etc().join("main.cf"), main_cf)
    }

    /// Writes `master.cf`: Postfix's own services, none in a chroot (there is none to run in),
    /// smtpd on 127.0.0.1:`port`, and the caller's `services` lines.
    pub fn write_master_cf(&self, port: u16, services: &str) -> io::Result<()> {
        let master_cf = format!(
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
{services}"
        );
        std::fs::write(self.etc().join("master.cf"), master_cf)
    }

    /// `postfix start`; on failure, what it printed and the log's last lines.
    pub fn start(&mut self) -> io::Result<()> {
        let out = self.command("start").output()?;
        self.running = out.status.success();
        if self.running {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "postfix -c {} start failed ({}): {}{}\n{}",
            self.etc().display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(20)
        )))
    }

    /// The instance's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where the instance logs.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("maillog")
    }

    /// The log's last `lines` lines, for an error message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        format!(
            "the relay's log ({}), last lines:\n{}",
            self.log_path().display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// Messages in the queue, not yet delivered (deferred ones included).
    pub fn queued(&self) -> usize {
        let queue = self.dir.join("queue");
        QUEUES.iter().map(|q| count_files(&queue.join(q))).sum()
    }

    /// Messages the next hop refused for now.
    pub fn deferred(&self) -> usize {
        count_files(&self.dir.join("queue/deferred"))
    }

    /// Ends the instance: SIGKILL to its master's process group (the master and the services
    /// it started; nothing of it is worth keeping), then waits until the master is gone.
    /// `postfix stop` would take a second or two: its script and the master both wait.
    pub fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let pid = std::fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        // The pid is this instance's only while its process is a Postfix master.
        let master = pid.filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "master")
        });
        let Some(pid) = master else {
            let _ = self
                .command("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            return;
        };
        // SAFETY: kill has no memory preconditions. The master leads its own process group
        // (it calls setsid), which holds this instance's processes and no others.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        // Gone, or a zombie waiting for a parent to reap it.
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn command(&self, what: &str) -> Command {
        let mut cmd = Command::new(&self.postfix);
        cmd.arg("-c").arg(self.etc()).arg(what).stdin(Stdio::null());
        cmd
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first of `candidates` that is a file.
pub fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Gives `path` to the `postfix` user: its processes open it after dropping root.
pub fn chown_postfix(path: &Path) -> io::Result<()> {
    let status = Command::new("chown").arg("postfix").arg(path).status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "chown postfix {} failed: is there a postfix user?",
            path.display()
        )));
    }
    Ok(())
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
