//! A real relay for the tests: a private Postfix instance in a temporary folder that requires
//! STARTTLS and SASL AUTH (Cyrus SASL with a sasldb of one user), with a certificate signed by a
//! CA the test makes, and forwards what it accepts to a next hop the test gives (an
//! [`testkit::smtp_sink::SmtpSink`]), so that a test can read the bytes that crossed it.
//!
//! It is the production path: avvisi's STARTTLS (rustls, checking the certificate against its
//! roots and the host name), its AUTH, then a relay that queues the message and sends it on.
//!
//! How the instance runs (the approach of `benches/pipeline/relay.rs`): `postfix -c DIR/etc
//! start` with its own main.cf and master.cf, no chroot, its queue, data and log in the folder;
//! nothing under `/etc/postfix` is read. It needs root (the master runs as root and drops to
//! `postfix`), Postfix, and Cyrus SASL's `saslpasswd2` (Debian: `postfix sasl2-bin
//! libsasl2-modules`); without them a case is skipped with a message, or fails under
//! `AVVISI_REQUIRE_RELAY=1` or `CI=true`. `Drop` stops the instance.
//!
//! Two things found on the way. Debian's Cyrus SASL reads `smtpd.conf` from `sasl/` under
//! Postfix's configuration folder (here `DIR/etc/sasl/`), whatever `cyrus_sasl_config_path`
//! says; with no file there it falls back to `/etc/sasldb2` and offers every mechanism. And
//! the folder must be traversable by `postfix` (a temporary folder is 0700): its processes
//! open the queue and the sasldb after dropping root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::skip_or_fail;

/// The SASL user avvisi logs in as.
pub const USERNAME: &str = "avvisi";
/// The realm of the sasldb entry; Postfix appends it to a user name without one.
const REALM: &str = "avvisi-relay.test";

/// The queue's folders that hold a message until it is delivered (`deferred` is hashed).
const QUEUES: [&str; 5] = ["maildrop", "incoming", "active", "deferred", "hold"];

/// A running Postfix relay; stopped when dropped.
pub struct PostfixRelay {
    dir: tempfile::TempDir,
    postfix: PathBuf,
    port: u16,
    password: String,
    running: bool,
}

impl PostfixRelay {
    /// Writes and starts an instance forwarding to `next_hop`, and waits until it accepts
    /// connections; `None` when the machine cannot run it and skipping is allowed.
    pub async fn start(next_hop: SocketAddr) -> Option<PostfixRelay> {
        let postfix = find(&["/usr/sbin/postfix", "/usr/bin/postfix"]);
        let saslpasswd2 = find(&["/usr/sbin/saslpasswd2", "/usr/bin/saslpasswd2"]);
        let openssl = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let missing = match (root, &postfix, &saslpasswd2, openssl) {
            (false, ..) => Some("not root (Postfix's master runs as root)"),
            (_, None, ..) => Some("Postfix is not installed (apt-get install postfix)"),
            (_, _, None, _) => Some(
                "Cyrus SASL's saslpasswd2 is missing (apt-get install sasl2-bin libsasl2-modules)",
            ),
            (_, _, _, false) => Some("openssl is not installed"),
            _ => None,
        };
        if let Some(why) = missing {
            skip_or_fail(
                "AVVISI_REQUIRE_RELAY",
                &format!("a case against a real Postfix relay: {why}"),
            );
            return None;
        }
        let (postfix, saslpasswd2) = (postfix.unwrap(), saslpasswd2.unwrap());
        let dir = tempfile::Builder::new()
            .prefix("avvisi-relay-")
            .tempdir()
            .expect("relay folder");
        let root = dir.path();
        set_mode(root, 0o755);
        let (etc, queue, data) = (root.join("etc"), root.join("queue"), root.join("data"));
        for d in [&etc, &etc.join("sasl"), &queue, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        // The master, already without privileges, creates its lock in the data folder.
        chown_postfix(&data);

        make_certificates(root);
        let password = format!("relay-{:016x}", rand::random::<u64>());
        let sasldb = root.join("sasldb2");
        let mut child = Command::new(&saslpasswd2)
            .args(["-c", "-p", "-f"])
            .arg(&sasldb)
            .args(["-u", REALM, USERNAME])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run saslpasswd2");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(password.as_bytes()).unwrap();
        }
        assert!(child.wait().unwrap().success(), "saslpasswd2 failed");
        // smtpd reads it after dropping root.
        chown_postfix(&sasldb);
        std::fs::write(
            etc.join("sasl/smtpd.conf"),
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {}\n\
                 mech_list: PLAIN LOGIN\n",
                sasldb.display()
            ),
        )
        .unwrap();

        std::fs::write(etc.join("main.cf"), main_cf(root, next_hop)).unwrap();
        let mut relay = PostfixRelay {
            dir,
            postfix,
            port: 0,
            password,
            running: false,
        };
        // Postfix binds the port itself: one free a moment ago, another if taken since.
        for _ in 0..3 {
            relay.port = free_port();
            std::fs::write(relay.etc().join("master.cf"), master_cf(relay.port)).unwrap();
            let out = relay
                .postfix_command("start")
                .output()
                .expect("postfix start");
            relay.running = out.status.success();
            if relay.running && relay.listening(Duration::from_secs(10)).await {
                return Some(relay);
            }
            relay.stop();
            if !relay.log().contains("Address already in use") {
                panic!(
                    "the Postfix relay did not start listening on 127.0.0.1:{} ({}): {}{}\n{}",
                    relay.port,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    relay.log_tail(20)
                );
            }
        }
        panic!(
            "the Postfix relay found its port taken three times in a row\n{}",
            relay.log_tail(20)
        );
    }

    /// `smtp://127.0.0.1:PORT?tls=required`: STARTTLS required, as to a production relay.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=required", self.port)
    }

    /// The SASL password of [`USERNAME`] (random for each instance).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The PEM certificate of the CA that signed the relay's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A folder for the test's own files (deleted with the relay).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The instance's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits until the relay's queue is empty: every message it accepted sent on. Fails on a
    /// deferred message (the next hop refused it) or after `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let queue = self.dir.path().join("queue");
            let deferred = count_files(&queue.join("deferred"));
            assert_eq!(
                deferred,
                0,
                "the relay deferred messages:\n{}",
                self.log_tail(20)
            );
            let queued: usize = QUEUES.iter().map(|q| count_files(&queue.join(q))).sum();
            if queued == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the relay still holds {queued} message(s) after {timeout:?}:\n{}",
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn listening(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    fn postfix_command(&self, what: &str) -> Command {
        let mut cmd = Command::new(&self.postfix);
        cmd.arg("-c").arg(self.etc()).arg(what).stdin(Stdio::null());
        cmd
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        format!(
            "the relay's log, last lines:\n{}",
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// Ends the instance: SIGKILL to its master's process group (the master and the services
    /// it started; nothing of it is worth keeping), then waits until the master is gone.
    /// `postfix stop` would take a second or two: its script and the master both wait.
    fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let pid = std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        // The pid is this instance's only while its process is a Postfix master.
        let master = pid.filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "master")
        });
        let Some(pid) = master else {
            let _ = self
                .postfix_command("stop")
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
}

impl Drop for PostfixRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_postfix(path: &Path) {
    let status = Command::new("chown")
        .arg("postfix")
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown postfix {}", path.display());
}

/// A port that was free when asked (Postfix binds it itself; see the retry in `start`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ca.pem` (a CA of this test alone), and `server.pem` and `server.key` for 127.0.0.1 and
/// localhost, signed by it. P-256 keys: an RSA key takes most of a second to make.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=avvisi test relay CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

/// The instance's main.cf: its own folders and log; STARTTLS required and AUTH only over it;
/// relaying for authenticated clients only (loopback gets nothing for free); everything sent on
/// to `next_hop` in clear text (the test's sink offers no TLS).
fn main_cf(dir: &Path, next_hop: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        "# avvisi's test relay (tests/api/relay.rs): deleted after the case.
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.avvisi-test.invalid
mydomain = avvisi-test.invalid
myorigin = $myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
smtpd_peername_lookup = no
biff = no
in_flow_delay = 0
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_tls_chain_files = {dir}/server.key, {dir}/server.pem
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_local_domain = {REALM}
smtpd_sasl_security_options = noanonymous
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
relayhost = [{ip}]:{port}
default_transport = smtp
relay_transport = smtp
smtp_tls_security_level = none
",
        ip = next_hop.ip(),
        port = next_hop.port(),
    )
}

/// The instance's master.cf: Postfix's services, none in a chroot, smtpd on 127.0.0.1:PORT.
fn master_cf(port: u16) -> String {
    format!(
        "# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
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
