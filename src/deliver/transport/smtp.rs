//! The SMTP relay: a pool of lettre connections on sockets of our own. Where the relay is and
//! how to reach it is in [`endpoint`], opening a session (TLS, EHLO, AUTH) in [`connect`], the
//! envelope and the classification of the relay's replies in [`envelope`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use secrecy::ExposeSecret;
use tokio::sync::Semaphore;

use self::endpoint::Endpoint;
use self::envelope::{classify, envelope};
use super::{pass, FailureKind, Gate, Outgoing, SendFailure, TransportError};
use crate::config::Settings;

mod connect;
mod endpoint;
mod envelope;

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
    /// The relay offered DSN (RFC 3461): MAIL FROM carries the message's `ENVID`.
    dsn: bool,
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
            self.timed(async {
                (session.conn.message(&message.bytes).await)
                    .map_err(|e| envelope::after_body(classify(e)))
            })
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

#[cfg(test)]
mod tests {
    use super::*;

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
