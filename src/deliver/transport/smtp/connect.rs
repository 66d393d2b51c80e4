//! Opening a session with the relay: the socket, TLS (STARTTLS or from the first byte), EHLO
//! and AUTH.

use lettre::transport::smtp::authentication::DEFAULT_MECHANISMS;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::Ehlo;

use super::endpoint::{Endpoint, Security};
use super::envelope::classify;
use super::Session;
use crate::deliver::transport::corked::Corked;
use crate::deliver::transport::{FailureKind, SendFailure};

impl Endpoint {
    /// A new connection, greeted, encrypted and authenticated as configured. Any failure here
    /// is [`FailureKind::Refused`]: no message was under way.
    pub(super) async fn connect(&self) -> Result<Session, SendFailure> {
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
