//! Delivery transports: `.eml` files in a folder (embedded default) or an SMTP relay.
//!
//! Failures are classified once, here, so the worker decides retries without knowing lettre:
//! - a fault of the relay, not of the message ([`FailureKind::Refused`]): it cannot be reached,
//!   or it refuses the session (a 4xx or 5xx greeting, EHLO refused, STARTTLS failing or a
//!   certificate that does not verify, AUTH refused, `530` or `421` before the body). Nothing of
//!   the message was sent: it goes back to the queue as it was, and delivery stops as a whole;
//! - a 4xx reply to the message is [`FailureKind::Transient`], a 5xx [`FailureKind::Permanent`];
//! - no usable answer once the message was under way (dropped, timed out) is
//!   [`FailureKind::Unreachable`]: the relay may have it, so the attempt counts, and delivery
//!   stops as a whole too.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use governor::Quota;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::Ehlo;
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::config::{Settings, TransportKind};

/// How a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The relay answered 4xx: try again later.
    Transient,
    /// The relay answered 5xx: this message will never go through.
    Permanent,
    /// No usable answer once the message was under way (dropped, timed out): the relay is in
    /// trouble and may or may not have the message.
    Unreachable,
    /// The relay cannot be reached or refuses the session, before this message was sent: a
    /// fault of the relay (or of our credentials), never of the recipient.
    Refused,
    /// Not attempted: the relay's hourly quota (`rate.per_hour`) is used up for now.
    Throttled,
    /// Not sent: the claim's lease was about to run out before the body could start (see
    /// [`Gate`]). Nothing of the message reached the relay; another process may own the row.
    Late,
}

/// A failed send, with the relay's reply code and text when there was one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct SendFailure {
    pub kind: FailureKind,
    pub code: Option<u16>,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("smtp.url: {0}")]
    SmtpUrl(String),
    #[error("cannot create the outbox folder {}: {source}", dir.display())]
    Folder {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// An email ready for the wire: its envelope and its bytes, built once, off the connection.
pub struct Outgoing {
    envelope: lettre::address::Envelope,
    bytes: Vec<u8>,
}

impl From<&Message> for Outgoing {
    fn from(message: &Message) -> Outgoing {
        Outgoing {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
        }
    }
}

/// Where emails go.
#[derive(Clone)]
pub enum Transport {
    /// One `NAME.eml` per email; written atomically, so a retry overwrites, never duplicates.
    Files(PathBuf),
    /// The relay, through a pool of reused SMTP connections.
    Smtp(Relay),
}

type Limiter = governor::DefaultDirectRateLimiter;

/// The relay, its connections and its limits, shared by every sender task of this process.
#[derive(Clone)]
pub struct Relay {
    pool: Arc<Pool>,
    per_second: Option<Arc<Limiter>>,
    per_hour: Option<Arc<Limiter>>,
}

/// SMTP connections kept open between messages.
///
/// Why not lettre's own pool (`AsyncSmtpTransport`): it opens sockets without `TCP_NODELAY`,
/// and lettre writes the end of DATA (`.`) as a small segment of its own, so Nagle holds it
/// until the relay's delayed ACK, once per message per connection. It also sends NOOP before every reuse (one more
/// round trip per message) and does not cap how many connections are open at once. Here the
/// connections are still lettre's ([`AsyncSmtpConnection`]: EHLO, STARTTLS, AUTH, the send
/// itself), on sockets opened with `TCP_NODELAY`; at most `delivery.concurrency` are in use,
/// and only one idle for `smtp.check_idle_seconds` or more is checked with NOOP. Where the relay
/// offers PIPELINING, the envelope goes out in one write (lettre sends one command at a time).
struct Pool {
    endpoint: Endpoint,
    /// One permit per connection in use: the cap lettre's pool lacks.
    slots: Semaphore,
    /// Connections between two messages, with the moment they were last used.
    idle: Mutex<Vec<(Session, Instant)>>,
    check_idle: Duration,
}

/// One open connection to the relay.
struct Session {
    conn: AsyncSmtpConnection,
    /// The relay offered PIPELINING (and `smtp.pipelining` allows it): see [`envelope`].
    pipelining: bool,
}

/// Where the relay is and how to talk to it, from `smtp.url` and the credentials.
struct Endpoint {
    host: String,
    port: u16,
    security: Security,
    /// The relay is on this machine (127.0.0.0/8, ::1, localhost): clear text crosses no network.
    loopback: bool,
    hello: ClientId,
    credentials: Option<Credentials>,
    /// For connecting, and for each step of a message exchange (`smtp.timeout_seconds`).
    timeout: Duration,
    /// `smtp.pipelining`: use PIPELINING when the relay offers it.
    pipelining: bool,
}

enum Security {
    /// `smtp://` to a relay on loopback, or `smtp://...?tls=none`: clear text.
    Plain,
    /// `smtp://...?tls=required|opportunistic`, and `smtp://` to a relay not on loopback
    /// (required): STARTTLS after the greeting.
    StartTls {
        params: TlsParameters,
        required: bool,
    },
    /// `smtps://`: TLS from the first byte.
    Wrapper(TlsParameters),
}

/// Connections idle longer than this are closed rather than checked.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Transport {
    /// The transport chosen by `delivery.transport`.
    pub fn from_settings(settings: &Settings) -> Result<Transport, TransportError> {
        match settings.delivery.transport {
            TransportKind::File => {
                let dir = settings.delivery.dir.clone();
                // Owner only (unix): every file in it is a recipient's email.
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder
                    .create(&dir)
                    .map_err(|source| TransportError::Folder {
                        dir: dir.clone(),
                        source,
                    })?;
                Ok(Transport::Files(dir))
            }
            TransportKind::Smtp => {
                let smtp = &settings.smtp;
                let mut endpoint = Endpoint::from_url(&smtp.url)?;
                if let Some(warning) = endpoint.clear_text_warning() {
                    tracing::warn!("{warning}");
                }
                endpoint.timeout = Duration::from_secs(smtp.timeout_seconds);
                endpoint.pipelining = smtp.pipelining;
                if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                    endpoint.credentials = Some(Credentials::new(
                        user.clone(),
                        password.expose_secret().to_string(),
                    ));
                }
                let rate = &settings.rate;
                Ok(Transport::Smtp(Relay {
                    pool: Arc::new(Pool {
                        endpoint,
                        slots: Semaphore::new(settings.delivery.concurrency.max(1) as usize),
                        idle: Mutex::new(Vec::new()),
                        check_idle: Duration::from_secs(smtp.check_idle_seconds),
                    }),
                    // No burst above the per-second rate: the relay sees an even flow.
                    per_second: NonZeroU32::new(rate.per_second).map(|n| {
                        Arc::new(Limiter::direct(
                            Quota::per_second(n).allow_burst(NonZeroU32::MIN),
                        ))
                    }),
                    // The hourly quota may be used at any pace within the hour.
                    per_hour: NonZeroU32::new(rate.per_hour)
                        .map(|n| Arc::new(Limiter::direct(Quota::per_hour(n)))),
                }))
            }
        }
    }

    /// A short description for logs (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Transport::Files(dir) => format!("files in {}", dir.display()),
            Transport::Smtp(_) => "smtp".to_string(),
        }
    }

    /// Delivers one email. `file_stem` names the `.eml` file for the file transport.
    ///
    /// `gate`, when given, must open before the point of no return (the body, or the file):
    /// the caller uses it to wait until its previous message's outcome is committed, so the
    /// relay never has more than one message per sender that the outbox does not know of, and
    /// to never start a message whose claim is about to lapse. The envelope (MAIL, RCPT, DATA)
    /// goes out meanwhile. A gate that does not open abandons the message (see [`Gate`]).
    pub async fn send(
        &self,
        message: &Outgoing,
        file_stem: &str,
        gate: Option<Gate>,
    ) -> Result<(), SendFailure> {
        // Late already: not even the envelope.
        if let Some(late) = gate.as_ref().and_then(|g| late(g.deadline)) {
            return Err(late);
        }
        match self {
            Transport::Files(dir) => {
                pass(gate).await?;
                write_eml(dir, file_stem, &message.bytes)
                    .await
                    .map_err(|e| SendFailure {
                        kind: FailureKind::Unreachable,
                        code: None,
                        detail: format!("cannot write {}: {e}", dir.display()),
                    })
            }
            Transport::Smtp(relay) => {
                if let Some(hourly) = &relay.per_hour {
                    if let Err(not_until) = hourly.check() {
                        let clock = governor::clock::DefaultClock::default();
                        let wait = not_until.wait_time_from(governor::clock::Clock::now(&clock));
                        return Err(SendFailure {
                            kind: FailureKind::Throttled,
                            code: None,
                            detail: format!(
                                "hourly quota used up; next slot in {}s",
                                wait.as_secs() + 1
                            ),
                        });
                    }
                }
                if let Some(per_second) = &relay.per_second {
                    per_second.until_ready().await;
                }
                relay.pool.send(message, gate).await
            }
        }
    }

    /// Says QUIT on the idle SMTP connections (at shutdown; the relay would time them out).
    pub async fn close(&self) {
        if let Transport::Smtp(relay) = self {
            let idle = std::mem::take(&mut *relay.pool.idle.lock().expect("pool lock"));
            for (mut session, _) in idle {
                let _ = tokio::time::timeout(Duration::from_secs(2), session.conn.quit()).await;
            }
        }
    }
}

impl Pool {
    async fn send(&self, message: &Outgoing, gate: Option<Gate>) -> Result<(), SendFailure> {
        let _slot = self.slots.acquire().await.expect("the pool never closes");
        let mut session = match self.reusable().await {
            Some(session) => session,
            None => self.endpoint.connect().await?,
        };
        // lettre's own `send`, in two halves so that the gate can be waited for in between.
        let result = async {
            self.timed(envelope(&mut session, message)).await?;
            pass(gate).await?;
            self.timed(async { session.conn.message(&message.bytes).await.map_err(classify) })
                .await
        }
        .await;
        match result {
            Ok(_) => {
                self.idle
                    .lock()
                    .expect("pool lock")
                    .push((session, Instant::now()));
                Ok(())
            }
            Err(failure) => {
                // Mid-transaction, broken, or with pipelined replies still unread: never reused.
                // (lettre has already closed it after a reply it did not like; abort is then a
                // no-op.)
                let _ = tokio::time::timeout(Duration::from_secs(2), session.conn.abort()).await;
                Err(failure)
            }
        }
    }

    /// Runs one step of the exchange within `smtp.timeout_seconds`.
    async fn timed<T>(
        &self,
        step: impl std::future::Future<Output = Result<T, SendFailure>>,
    ) -> Result<T, SendFailure> {
        match tokio::time::timeout(self.endpoint.timeout, step).await {
            Ok(result) => result,
            // The relay may or may not have the message; a retry carries the same Message-ID.
            Err(_) => Err(SendFailure {
                kind: FailureKind::Unreachable,
                code: None,
                detail: format!(
                    "no reply from the relay within {}s",
                    self.endpoint.timeout.as_secs()
                ),
            }),
        }
    }

    /// The most recently used idle connection that is still good, if any.
    async fn reusable(&self) -> Option<Session> {
        loop {
            let (mut session, since) = self.idle.lock().expect("pool lock").pop()?;
            let idle_for = since.elapsed();
            if idle_for >= IDLE_TIMEOUT {
                session.conn.abort().await;
                continue;
            }
            if idle_for < self.check_idle {
                return Some(session);
            }
            let checked =
                tokio::time::timeout(self.endpoint.timeout, session.conn.test_connected()).await;
            if checked == Ok(true) {
                return Some(session);
            }
            session.conn.abort().await;
        }
    }
}

/// What a message's body waits for; see [`Transport::send`].
///
/// It opens when the sender's previous outcome is committed, if the message's claim still has a
/// good part of its lease left. After its deadline another process could soon take the row
/// (the lease runs out on the database's clock) and send it too: the body is not started, and
/// the message goes back to the queue, nothing of it sent.
#[derive(Debug)]
pub struct Gate {
    committed: Option<tokio::sync::oneshot::Receiver<()>>,
    deadline: Option<Instant>,
}

impl Gate {
    /// Opens when `committed` has (if any), and only before `deadline` (if any).
    pub(crate) fn new(
        committed: Option<tokio::sync::oneshot::Receiver<()>>,
        deadline: Option<Instant>,
    ) -> Gate {
        Gate {
            committed,
            deadline,
        }
    }
}

/// The failure to report once `deadline` has passed.
fn late(deadline: Option<Instant>) -> Option<SendFailure> {
    (Instant::now() >= deadline?).then(|| SendFailure {
        kind: FailureKind::Late,
        code: None,
        detail: "not sent: its claim was about to lapse; back to the queue".into(),
    })
}

async fn pass(gate: Option<Gate>) -> Result<(), SendFailure> {
    let Some(gate) = gate else { return Ok(()) };
    if let Some(committed) = gate.committed {
        committed.await.map_err(|_| SendFailure {
            kind: FailureKind::Unreachable,
            code: None,
            detail: "not sent: the outcome of the previous message could not be recorded".into(),
        })?;
    }
    // Checked after the wait: a slow commit may have taken the rest of the lease.
    late(gate.deadline).map_or(Ok(()), Err)
}

/// MAIL FROM, RCPT TO and DATA, with the parameters lettre's `send` would use.
///
/// With PIPELINING the three commands go out in one write and their replies are read in order
/// (RFC 2920: DATA ends the group, so the body still waits for its 354). The first negative reply
/// is the failure; the replies after it are left unread and the caller closes the connection.
/// Nothing of the message is sent yet: a refusal of the session here is the relay's fault.
async fn envelope(session: &mut Session, message: &Outgoing) -> Result<(), SendFailure> {
    envelope_commands(session, message)
        .await
        .map_err(|e| session_fault(classify(e)))
}

async fn envelope_commands(
    session: &mut Session,
    message: &Outgoing,
) -> Result<(), lettre::transport::smtp::Error> {
    use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
    use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
    let conn = &mut session.conn;
    let env = &message.envelope;
    let mut params = Vec::new();
    // Without the relay's support, lettre refuses these when it sends the message itself.
    let non_ascii = env
        .from()
        .into_iter()
        .chain(env.to())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii && conn.server_info().supports_feature(Extension::SmtpUtfEight) {
        params.push(MailParameter::SmtpUtfEight);
    }
    if !message.bytes.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mail = Mail::new(env.from().cloned(), params);
    if session.pipelining {
        use std::fmt::Write;
        // Each command's Display ends in CRLF; `command` writes the group and reads MAIL's reply.
        let mut group = mail.to_string();
        for to in env.to() {
            let _ = write!(group, "{}", Rcpt::new(to.clone(), vec![]));
        }
        let _ = write!(group, "{Data}");
        conn.command(group).await?;
        for _ in env.to() {
            conn.read_response().await?;
        }
        conn.read_response().await?;
        return Ok(());
    }
    conn.command(mail).await?;
    for to in env.to() {
        conn.command(Rcpt::new(to.clone(), vec![])).await?;
    }
    conn.command(Data).await?;
    Ok(())
}

impl Endpoint {
    /// Reads `smtp://HOST[:PORT][?tls=required|opportunistic|none]` or `smtps://HOST[:PORT]`; a
    /// path (`smtp://relay/client.example`) is the EHLO name, a user and password the
    /// credentials.
    ///
    /// Without `tls=`, `smtp://` is clear text only to a relay on loopback; to any other relay it
    /// means STARTTLS required: the password and every recipient's address and message would
    /// otherwise cross the network readable, and a missing `?tls=` must not decide that.
    /// Clear text to such a relay is `?tls=none`, said on purpose.
    fn from_url(text: &str) -> Result<Endpoint, TransportError> {
        let bad = |why: &str| TransportError::SmtpUrl(why.to_string());
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        let loopback = match url.host() {
            // `smtp:` is not a scheme the URL standard knows, so an IPv4 address arrives as text.
            Some(url::Host::Domain(name)) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .parse::<std::net::Ipv4Addr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            None => false,
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let params = || TlsParameters::new(host.clone()).map_err(|e| bad(&e.to_string()));
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) if loopback => (Security::Plain, 25),
            ("smtp", None) => (
                Security::StartTls {
                    params: params()?,
                    required: true,
                },
                25,
            ),
            ("smtp", Some("none")) => (Security::Plain, 25),
            ("smtp", Some(mode @ ("required" | "opportunistic"))) => (
                Security::StartTls {
                    params: params()?,
                    required: mode == "required",
                },
                587,
            ),
            ("smtps", None) => (Security::Wrapper(params()?), 465),
            (scheme, tls) => {
                return Err(bad(&format!(
                    "scheme {scheme:?} with tls={tls:?}: expected smtp://, \
                     smtp://...?tls=required, smtp://...?tls=opportunistic, \
                     smtp://...?tls=none or smtps://"
                )))
            }
        };
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_string()),
        };
        let credentials = url.password().map(|password| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Credentials::new(decode(url.username()), decode(password))
        });
        Ok(Endpoint {
            port: url.port().unwrap_or(default_port),
            host,
            security,
            loopback,
            hello,
            credentials,
            timeout: Duration::from_secs(30),
            pipelining: true,
        })
    }

    /// What to tell operators at start when messages to this relay may cross a network in
    /// clear text: `?tls=none`, or `?tls=opportunistic` (which falls back to clear text when
    /// STARTTLS is not offered, or is stripped on the way), to a relay not on loopback.
    fn clear_text_warning(&self) -> Option<String> {
        if self.loopback {
            return None;
        }
        let relay = format!("{}:{}", self.host, self.port);
        match &self.security {
            Security::Plain => Some(format!(
                "SMTP to {relay} is in clear text (smtp.url has tls=none): the relay password \
                 and every message cross the network readable; remove tls=none to require \
                 STARTTLS"
            )),
            Security::StartTls {
                required: false, ..
            } => Some(format!(
                "SMTP to {relay} falls back to clear text when STARTTLS is not offered \
                 (smtp.url has tls=opportunistic); tls=required refuses to send without it"
            )),
            _ => None,
        }
    }

    /// A new connection, greeted, encrypted and authenticated as configured. Any failure here
    /// is [`FailureKind::Refused`]: no message was under way.
    async fn connect(&self) -> Result<Session, SendFailure> {
        self.open().await.map_err(|mut failure| {
            failure.kind = FailureKind::Refused;
            failure
        })
    }

    async fn open(&self) -> Result<Session, SendFailure> {
        let unreachable = |detail: String| SendFailure {
            kind: FailureKind::Unreachable,
            code: None,
            detail,
        };
        let mut conn = match &self.security {
            // lettre wraps its own socket in TLS before the greeting; Nagle stays on for
            // smtps:// (prefer STARTTLS, `?tls=required`, for speed).
            Security::Wrapper(params) => AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(params.clone()),
                None,
            )
            .await
            .map_err(classify)?,
            Security::Plain | Security::StartTls { .. } => {
                let tcp = tokio::time::timeout(
                    self.timeout,
                    tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
                )
                .await
                .map_err(|_| {
                    unreachable(format!(
                        "connection timed out after {}s",
                        self.timeout.as_secs()
                    ))
                })?
                .map_err(|e| unreachable(format!("cannot connect to the relay: {e}")))?;
                tcp.set_nodelay(true)
                    .map_err(|e| unreachable(format!("cannot set TCP_NODELAY: {e}")))?;
                tokio::time::timeout(
                    self.timeout,
                    AsyncSmtpConnection::connect_with_transport(
                        Box::new(Corked::new(tcp)),
                        &self.hello,
                    ),
                )
                .await
                .map_err(|_| {
                    unreachable(format!("no greeting within {}s", self.timeout.as_secs()))
                })?
                .map_err(classify)?
            }
        };
        if let Security::StartTls { params, required } = &self.security {
            if conn.can_starttls() {
                conn.starttls(params.clone(), &self.hello)
                    .await
                    .map_err(classify)?;
            } else if *required {
                conn.abort().await;
                return Err(unreachable(format!(
                    "the relay at {}:{} does not offer STARTTLS, which smtp.url requires \
                     (tls=required, the default for a relay not on loopback); \
                     ?tls=none sends in clear text",
                    self.host, self.port
                )));
            }
        }
        // lettre keeps only the extensions it uses from its EHLO, and PIPELINING is not one of
        // them: ask again (EHLO may be repeated outside a transaction; before AUTH, which a new
        // EHLO could reset on some relays).
        let pipelining = self.pipelining && {
            let ehlo = Ehlo::new(self.hello.clone());
            let reply = tokio::time::timeout(self.timeout, conn.command(ehlo))
                .await
                .map_err(|_| {
                    unreachable(format!("no EHLO reply within {}s", self.timeout.as_secs()))
                })?
                .map_err(classify)?;
            offers(&reply, "PIPELINING")
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(classify)?;
        }
        Ok(Session { conn, pipelining })
    }
}

/// Whether an EHLO reply lists `keyword` among the extensions (the lines after the first).
fn offers(reply: &lettre::transport::smtp::response::Response, keyword: &str) -> bool {
    reply
        .message()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .any(|k| k.eq_ignore_ascii_case(keyword))
}

/// Writes `stem.eml` through a temporary file renamed into place, readable by its owner only
/// (unix): it holds the recipient's address and name.
async fn write_eml(dir: &std::path::Path, stem: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{stem}.eml.tmp"));
    let path = dir.join(format!("{stem}.eml"));
    let bytes = bytes.to_vec();
    // One blocking task for open, write and rename, as `tokio::fs::write` does for its part.
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&tmp)?.write_all(&bytes)?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Refusals before the body that are about the session, not the recipient: `530` (authentication
/// or STARTTLS required) and `421` (the relay is closing the channel).
fn session_fault(mut failure: SendFailure) -> SendFailure {
    if matches!(failure.code, Some(530 | 421)) {
        failure.kind = FailureKind::Refused;
    }
    failure
}

fn classify(e: lettre::transport::smtp::Error) -> SendFailure {
    let code = e.status().map(u16::from);
    let kind = if e.is_permanent() {
        FailureKind::Permanent
    } else if e.is_transient() {
        FailureKind::Transient
    } else {
        FailureKind::Unreachable
    };
    // lettre's Display says what happened and quotes its source (the relay's text, or e.g.
    // "Connection refused"); deeper causes are added once each.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e).and_then(|s| s.source());
    while let Some(s) = source {
        let text = s.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = s.source();
    }
    SendFailure { kind, code, detail }
}

impl SendFailure {
    /// The relay's reply as it would be grouped: the code and the enhanced status code (RFC
    /// 3463), e.g. `554 5.7.1`, or the code alone. `None` when the relay did not answer.
    pub fn reply_key(&self) -> Option<String> {
        let code = self.code?;
        // lettre writes "permanent error (554): 5.7.1 text".
        let text = self.detail.split_once("): ").map_or("", |(_, t)| t);
        let enhanced = text.split_whitespace().next().filter(|t| {
            let parts: Vec<&str> = t.split('.').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        });
        Some(match enhanced {
            Some(status) => format!("{code} {status}"),
            None => code.to_string(),
        })
    }
}

/// A TCP stream that holds what is written until the other side must answer.
///
/// lettre writes the message body and the final `.` as two writes; each would be its own
/// segment (and the relay's own read). SMTP always reads the reply to what it wrote, so the
/// buffered bytes go out, in one `send`, when lettre next reads, or when it closes.
#[derive(Debug)]
struct Corked {
    tcp: TcpStream,
    out: Vec<u8>,
    /// How much of `out` is already on the socket.
    sent: usize,
}

/// Buffered bytes beyond this are written at once, without waiting for a read.
const CORK_LIMIT: usize = 256 * 1024;

impl Corked {
    fn new(tcp: TcpStream) -> Corked {
        Corked {
            tcp,
            out: Vec::new(),
            sent: 0,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Corked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Corked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= CORK_LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Deliberately lazy: the bytes leave with the next read (see the type's note).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for Corked {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(url: &str) -> (String, u16) {
        let endpoint = Endpoint::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let kind = match endpoint.security {
            Security::Plain => "plain",
            Security::StartTls { required: true, .. } => "starttls required",
            Security::StartTls {
                required: false, ..
            } => "starttls opportunistic",
            Security::Wrapper(_) => "tls",
        };
        (kind.to_string(), endpoint.port)
    }

    #[test]
    fn a_relay_off_loopback_gets_tls_unless_clear_text_is_asked_for() {
        let cases = [
            // No `tls=`: clear text only on this machine.
            ("smtp://127.0.0.1:2525", "plain", 2525),
            ("smtp://127.8.9.10:2525", "plain", 2525),
            ("smtp://localhost", "plain", 25),
            ("smtp://LOCALHOST:25", "plain", 25),
            ("smtp://[::1]:2525", "plain", 2525),
            ("smtp://relay.example.org:587", "starttls required", 587),
            ("smtp://relay.example.org", "starttls required", 25),
            ("smtp://192.0.2.10:25", "starttls required", 25),
            ("smtp://[2001:db8::1]:25", "starttls required", 25),
            ("smtp://localhost.example.org:25", "starttls required", 25),
            // Said on purpose.
            ("smtp://relay.example.org:25?tls=none", "plain", 25),
            (
                "smtp://relay.example.org?tls=required",
                "starttls required",
                587,
            ),
            (
                "smtp://relay.example.org?tls=opportunistic",
                "starttls opportunistic",
                587,
            ),
            (
                "smtp://127.0.0.1:2525?tls=required",
                "starttls required",
                2525,
            ),
            ("smtps://relay.example.org", "tls", 465),
        ];
        for (url, kind, port) in cases {
            assert_eq!(security(url), (kind.to_string(), port), "{url}");
        }
        let err = Endpoint::from_url("smtp://relay.example.org?tls=maybe")
            .err()
            .unwrap();
        assert!(err.to_string().contains("tls=none"), "{err}");
    }

    #[test]
    fn clear_text_off_loopback_is_warned_about() {
        let warning = |url: &str| Endpoint::from_url(url).unwrap().clear_text_warning();
        let plain = warning("smtp://relay.example.org:25?tls=none").unwrap();
        assert!(
            plain.contains("relay.example.org:25") && plain.contains("clear text"),
            "{plain}"
        );
        let fallback = warning("smtp://relay.example.org?tls=opportunistic").unwrap();
        assert!(fallback.contains("tls=required"), "{fallback}");
        for quiet in [
            "smtp://127.0.0.1:2525",
            "smtp://localhost:25?tls=none",
            "smtp://relay.example.org:587",
            "smtps://relay.example.org",
        ] {
            assert_eq!(warning(quiet), None, "{quiet}");
        }
    }

    /// What a subscriber wrote, for looking at the log lines.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn the_warning_is_logged_when_the_transport_starts() {
        let logged = |url: &str| {
            let settings = Settings::load_with_env(
                None,
                [
                    ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
                    ("AVVISI__SMTP__URL", url),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .unwrap();
            let captured = Captured::default();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(captured.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                Transport::from_settings(&settings).map(|_| ()).unwrap()
            });
            let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            text
        };
        let text = logged("smtp://relay.example.org:25?tls=none");
        assert!(
            text.contains("WARN") && text.contains("SMTP to relay.example.org:25 is in clear text"),
            "{text}"
        );
        assert_eq!(logged("smtp://127.0.0.1:2525"), "");
    }
}
