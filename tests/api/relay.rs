//! A real relay for the tests: a private Postfix instance in a temporary folder that requires
//! STARTTLS and SASL AUTH (Cyrus SASL with a sasldb of one user), with a certificate signed by a
//! CA the test makes, and forwards what it accepts to a next hop the test gives (an
//! [`testkit::smtp_sink::SmtpSink`]), so that a test can read the bytes that crossed it.
//!
//! It is the production path: avvisi's STARTTLS (rustls, checking the certificate against its
//! roots and the host name), its AUTH, then a relay that queues the message and sends it on.
//!
//! The instance itself (its folders, start, queue, log and stop) is [`testkit::postfix`]'s. It
//! needs root, Postfix, and Cyrus SASL's `saslpasswd2` (Debian: `postfix sasl2-bin
//! libsasl2-modules`); without them a case is skipped with a message, or fails under
//! `AVVISI_REQUIRE_RELAY=1` or `CI=true`. Dropping the relay stops the instance.
//!
//! Found on the way: Debian's Cyrus SASL reads `smtpd.conf` from `sasl/` under Postfix's
//! configuration folder (here `DIR/etc/sasl/`), whatever `cyrus_sasl_config_path` says; with no
//! file there it falls back to `/etc/sasldb2` and offers every mechanism.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::postfix::{self, Postfix};
use testkit::process::port_answers;

use crate::helpers::skip_or_fail;

/// The SASL user avvisi logs in as.
pub const USERNAME: &str = "avvisi";
/// The realm of the sasldb entry; Postfix appends it to a user name without one.
const REALM: &str = "avvisi-relay.test";

/// A running Postfix relay; stopped when dropped.
pub struct PostfixRelay {
    /// Declared before `dir`: the instance stops before its folder is deleted.
    instance: Postfix,
    dir: tempfile::TempDir,
    port: u16,
    password: String,
}

impl PostfixRelay {
    /// Writes and starts an instance forwarding to `next_hop`, and waits until it accepts
    /// connections; `None` when the machine cannot run it and skipping is allowed.
    pub async fn start(next_hop: SocketAddr) -> Option<PostfixRelay> {
        let saslpasswd2 = postfix::find(&["/usr/sbin/saslpasswd2", "/usr/bin/saslpasswd2"]);
        let openssl = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        let missing = match (Postfix::missing(), &saslpasswd2, openssl) {
            (Some(why), ..) => Some(why),
            (_, None, _) => Some(
                "Cyrus SASL's saslpasswd2 is missing (apt-get install sasl2-bin libsasl2-modules)",
            ),
            (_, _, false) => Some("openssl is not installed"),
            _ => None,
        };
        if let Some(why) = missing {
            skip_or_fail(
                "AVVISI_REQUIRE_RELAY",
                &format!("a case against a real Postfix relay: {why}"),
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("avvisi-relay-")
            .tempdir()
            .expect("relay folder");
        let root = dir.path();
        let instance = Postfix::prepare(root).expect("the relay's folders");
        let password = sasl_user(&instance, &saslpasswd2.unwrap());
        make_certificates(root);
        instance
            .write_main_cf(
                "avvisi's test relay (tests/api/relay.rs)",
                "avvisi-test",
                &main_cf(root, next_hop),
            )
            .unwrap();
        let mut relay = PostfixRelay {
            instance,
            dir,
            port: 0,
            password,
        };
        // Postfix binds the port itself: one free a moment ago, another if taken since.
        for _ in 0..3 {
            relay.port = free_port();
            relay
                .instance
                .write_master_cf(relay.port, TLS_SERVICES)
                .unwrap();
            let started = relay.instance.start();
            if started.is_ok() && port_answers(relay.port, Duration::from_secs(10)).await {
                return Some(relay);
            }
            relay.instance.stop();
            if !relay.log().contains("Address already in use") {
                panic!(
                    "the Postfix relay did not start listening on 127.0.0.1:{}: {}\n{}",
                    relay.port,
                    started.err().map_or(String::new(), |e| e.to_string()),
                    relay.instance.log_tail(20)
                );
            }
        }
        panic!(
            "the Postfix relay found its port taken three times in a row\n{}",
            relay.instance.log_tail(20)
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
        self.instance.log()
    }

    /// Waits until the relay's queue is empty: every message it accepted sent on. Fails on a
    /// deferred message (the next hop refused it) or after `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            assert_eq!(
                self.instance.deferred(),
                0,
                "the relay deferred messages:\n{}",
                self.instance.log_tail(20)
            );
            let queued = self.instance.queued();
            if queued == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the relay still holds {queued} message(s) after {timeout:?}:\n{}",
                self.instance.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The services the relay needs beyond Postfix's own: TLS's manager, and the SMTP client that
/// sends on to the next hop.
const TLS_SERVICES: &str = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
";

/// A sasldb of one user, [`USERNAME`] with a random password, which smtpd reads through
/// `etc/sasl/smtpd.conf`; returns the password.
fn sasl_user(instance: &Postfix, saslpasswd2: &Path) -> String {
    let password = format!("relay-{:016x}", rand::random::<u64>());
    let sasldb = instance.dir().join("sasldb2");
    let mut child = Command::new(saslpasswd2)
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
    postfix::chown_postfix(&sasldb).unwrap();
    let sasl = instance.etc().join("sasl");
    std::fs::create_dir_all(&sasl).unwrap();
    std::fs::write(
        sasl.join("smtpd.conf"),
        format!(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {}\n\
             mech_list: PLAIN LOGIN\n",
            sasldb.display()
        ),
    )
    .unwrap();
    password
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

/// The relay's own settings in main.cf: STARTTLS required and AUTH only over it; relaying for
/// authenticated clients only (loopback gets nothing for free); everything sent on to
/// `next_hop` in clear text (the test's sink offers no TLS).
fn main_cf(dir: &Path, next_hop: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        "mynetworks = 127.0.0.1/32
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
