//! The SMTP relay: a pool of lettre connections on sockets of our own, the envelope with
//! PIPELINING, and the classification of the relay's replies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::Ehlo;
use lettre::transport::smtp::extension::ClientId;
use secrecy::ExposeSecret;
use tokio::sync::Semaphore;

use super::corked::Corked;
use super::{pass, FailureKind, Gate, Outgoing, SendFailure, TransportError};
use crate::config::Settings;

/// The relay and its connections, shared by every sender task of this process. (Its rate limits
/// are shared with other daemons: see `deliver::quota`.)
#[derive(Clone)]
pub struct Relay {
    pool: Arc<Pool>,
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

impl Relay {
    /// The relay of `smtp.url`, with the credentials and timeouts of `settings`.
    pub(super) fn from_settings(settings: &Settings) -> Result<Relay, TransportError> {
        let smtp = &settings.smtp;
        let roots = smtp.tls_ca.as_ref().map(|ca| &ca.certificates);
        let mut endpoint = Endpoint::from_url(&smtp.url, roots)?;
        if let Some(warning) = endpoint.clear_text_warning() {
            tracing::warn!("{warning}");
        }
        endpoint.timeout = Duration::from_secs(smtp.timeout_seconds);
        endpoint.pipelining = smtp.pipelining;
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            // Read here, not when the configuration is loaded: only a command that connects
            // to the relay needs the password.
            let password = password.read().map_err(TransportError::Password)?;
            endpoint.credentials = Some(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Relay {
            pool: Arc::new(Pool {
                endpoint,
                slots: Semaphore::new(settings.delivery.concurrency.max(1) as usize),
                idle: Mutex::new(Vec::new()),
                check_idle: Duration::from_secs(smtp.check_idle_seconds),
            }),
        })
    }

    /// Sends one message; see [`super::Transport::send`].
    pub(super) async fn send(
        &self,
        message: &Outgoing,
        gate: Option<Gate>,
    ) -> Result<(), SendFailure> {
        self.pool.send(message, gate).await
    }

    /// Says QUIT on the idle connections (at shutdown; the relay would time them out).
    pub(super) async fn close(&self) {
        let idle = std::mem::take(&mut *self.pool.idle.lock().expect("pool lock"));
        for (mut session, _) in idle {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.conn.quit()).await;
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

/// MAIL FROM, RCPT TO and DATA, with the parameters lettre's `send` would use.
///
/// With PIPELINING the three commands go out in one write and their replies are read in order
/// (RFC 2920: DATA ends the group, so the body still waits for its 354). The first negative reply
/// is the failure; the replies after it are left unread and the caller closes the connection.
/// Nothing of the message is sent yet: a refusal of the session here is the relay's fault.
async fn envelope(session: &mut Session, message: &Outgoing) -> Result<(), SendFailure> {
    envelope_commands(session, message)
        .await
        .map_err(|(stage, e)| {
            let mut failure = session_fault(classify(e));
            // Only RCPT's reply is about the recipient (a 5.1.x to MAIL is about our sender).
            if stage == Stage::Rcpt
                && failure.kind == FailureKind::Permanent
                && failure
                    .status()
                    .is_some_and(|s| super::recipient_does_not_exist(&s))
            {
                failure.kind = FailureKind::NoSuchRecipient;
            }
            failure
        })
}

/// Which command of the envelope a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Mail,
    Rcpt,
    Data,
}

async fn envelope_commands(
    session: &mut Session,
    message: &Outgoing,
) -> Result<(), (Stage, lettre::transport::smtp::Error)> {
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
        conn.command(group).await.map_err(|e| (Stage::Mail, e))?;
        for _ in env.to() {
            conn.read_response().await.map_err(|e| (Stage::Rcpt, e))?;
        }
        conn.read_response().await.map_err(|e| (Stage::Data, e))?;
        return Ok(());
    }
    conn.command(mail).await.map_err(|e| (Stage::Mail, e))?;
    for to in env.to() {
        conn.command(Rcpt::new(to.clone(), vec![]))
            .await
            .map_err(|e| (Stage::Rcpt, e))?;
    }
    conn.command(Data).await.map_err(|e| (Stage::Data, e))?;
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
    ///
    /// `roots` (`smtp.tls_ca_file`) are trusted for the relay's certificate besides the public
    /// roots.
    fn from_url(text: &str, roots: Option<&Certificate>) -> Result<Endpoint, TransportError> {
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
        let params = || {
            let mut builder = TlsParameters::builder(host.clone());
            if let Some(roots) = roots {
                builder = builder.add_root_certificate(roots.clone());
            }
            builder.build().map_err(|e| bad(&e.to_string()))
        };
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
            // rustls says what it disliked, not where the trust comes from.
            if failure.detail.contains("invalid peer certificate") {
                failure.detail.push_str(
                    " (the relay's certificate must name the host of smtp.url and chain to a \
                     public root or to a CA certificate of smtp.tls_ca_file)",
                );
            }
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
    let mut failure = SendFailure { kind, code, detail };
    // A provider refusing our authentication refuses every message alike: the relay's fault,
    // not the recipient's (stops delivery, every message kept pending; `/readyz` says it).
    if failure
        .status()
        .is_some_and(|s| super::refuses_our_authentication(&s))
    {
        failure.kind = FailureKind::Refused;
        failure.detail.push_str(
            " (the provider refuses our authentication: check SPF, DKIM and DMARC for the \
             sending domain; docs/deliverability.md)",
        );
    }
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(url: &str) -> (String, u16) {
        let endpoint = Endpoint::from_url(url, None).unwrap_or_else(|e| panic!("{url}: {e}"));
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
        let err = Endpoint::from_url("smtp://relay.example.org?tls=maybe", None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("tls=none"), "{err}");
    }

    #[test]
    fn clear_text_off_loopback_is_warned_about() {
        let warning = |url: &str| Endpoint::from_url(url, None).unwrap().clear_text_warning();
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
                    (
                        "AVVISI__UNSUBSCRIBE__PUBLIC_URL",
                        "https://avvisi.example.it/u",
                    ),
                    (
                        "AVVISI__UNSUBSCRIBE__SECRET",
                        "unit-test-unsubscribe-key-0123456789",
                    ),
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
                super::super::Transport::from_settings(&settings)
                    .map(|_| ())
                    .unwrap()
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
