//! Opening a session with the relay: the socket, TLS (STARTTLS or from the first byte), EHLO
//! and AUTH.

use lettre::transport::smtp::authentication::DEFAULT_MECHANISMS;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::Ehlo;
use tokio::net::TcpStream;

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

    /// A session on a new connection: greeted, then TLS as configured, then EHLO once more
    /// (for PIPELINING and DSN) and AUTH, in that order.
    async fn open(&self) -> Result<Session, SendFailure> {
        let mut conn = self.greeted().await?;
        self.secure(&mut conn).await?;
        let (pipelining, dsn) = self.extensions(&mut conn).await?;
        self.authenticate(&mut conn).await?;
        Ok(Session {
            conn,
            pipelining: self.pipelining && pipelining,
            dsn,
        })
    }

    /// A connection the relay has greeted: `smtps://` through lettre's own socket, otherwise
    /// through ours (see [`Endpoint::socket`]).
    async fn greeted(&self) -> Result<AsyncSmtpConnection, SendFailure> {
        match &self.security {
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
            .map_err(classify),
            Security::Plain | Security::StartTls { .. } => {
                let tcp = self.socket().await?;
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
                .map_err(classify)
            }
        }
    }

    /// A TCP connection to the relay with `TCP_NODELAY`, within `smtp.timeout_seconds`.
    async fn socket(&self) -> Result<TcpStream, SendFailure> {
        let tcp = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
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
        Ok(tcp)
    }

    /// STARTTLS where `smtp.url` asks for it; a relay that does not offer it is refused when
    /// TLS is required.
    async fn secure(&self, conn: &mut AsyncSmtpConnection) -> Result<(), SendFailure> {
        let Security::StartTls { params, required } = &self.security else {
            return Ok(());
        };
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
        Ok(())
    }

    /// Whether the relay offers PIPELINING, and DSN.
    ///
    /// lettre keeps only the extensions it uses from its EHLO, and neither is one of them: ask
    /// again (EHLO may be repeated outside a transaction; before AUTH, which a new EHLO could
    /// reset on some relays).
    async fn extensions(
        &self,
        conn: &mut AsyncSmtpConnection,
    ) -> Result<(bool, bool), SendFailure> {
        let ehlo = Ehlo::new(self.hello.clone());
        let reply = tokio::time::timeout(self.timeout, conn.command(ehlo))
            .await
            .map_err(|_| unreachable(format!("no EHLO reply within {}s", self.timeout.as_secs())))?
            .map_err(classify)?;
        Ok((offers(&reply, "PIPELINING"), offers(&reply, "DSN")))
    }

    /// AUTH with the credentials, if any.
    async fn authenticate(&self, conn: &mut AsyncSmtpConnection) -> Result<(), SendFailure> {
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }
}

/// The relay could not be reached, or did not answer in time.
fn unreachable(detail: String) -> SendFailure {
    SendFailure {
        kind: FailureKind::Unreachable,
        code: None,
        detail,
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
