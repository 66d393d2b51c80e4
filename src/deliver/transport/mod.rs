//! Delivery transports: `.eml` files in a folder (embedded default) or an SMTP relay.
//!
//! Failures are classified once, here, so the worker decides retries without knowing lettre:
//! - a fault of the relay, not of the message ([`FailureKind::Refused`]): it cannot be reached,
//!   or it refuses the session (a 4xx or 5xx greeting, EHLO refused, STARTTLS failing or a
//!   certificate that does not verify, AUTH refused, `530` or `421` before the body). Nothing of
//!   the message was sent: it goes back to the queue as it was, and delivery stops as a whole;
//! - a 4xx reply to the message is [`FailureKind::Transient`], a 5xx [`FailureKind::Permanent`];
//!   a 4xx that asks us to slow down (`421 4.7.28`, the providers' known texts), whatever the
//!   command it answers, is [`FailureKind::Deferred`]: it holds the recipient's domain;
//!   a 5xx to RCPT, or to the body, with a status saying the address does not exist
//!   (`550 5.1.1`) is [`FailureKind::NoSuchRecipient`]; any other 5xx (a full mailbox the relay
//!   calls permanent, `552 5.2.2`) fails its message without suppressing the address;
//! - no usable answer once the message was under way (dropped, timed out) is
//!   [`FailureKind::Unreachable`]: the relay may have it, so the attempt counts, and delivery
//!   stops as a whole too.

//!
//! The layout: [`smtp`] is the relay (its pool of connections, PIPELINING, the classification
//! of its replies), `files` the `.eml` writer, `corked` the socket that sends a body and its
//! final dot in one segment.

use std::path::PathBuf;
use std::time::Instant;

use lettre::Message;

use crate::config::{Settings, TransportKind};

mod corked;
mod files;
mod smtp;

use self::files::write_eml;
use self::smtp::Relay;

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
    /// Not attempted: the relay's hourly quota (`rate.per_hour`, shared by every daemon) is
    /// used up for now (see `deliver::quota`).
    Throttled,
    /// The relay refused the recipient at RCPT, or the message after its body, with a 5xx and
    /// an RFC 3463 status 5.1.x saying the mailbox or domain does not exist (see [`recipient_does_not_exist`]): this message
    /// fails, and the address is suppressed.
    NoSuchRecipient,
    /// The recipient's provider asks us to slow down (`421 4.7.28`, "rate limited", see
    /// `deliver::hold`): about the pace towards its domain, not the message nor the relay.
    /// The domain is held; its messages wait, attempt not counted.
    Deferred,
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
    /// The password file cannot be read: a configuration problem (exit status 2).
    #[error("{0}")]
    Password(#[source] crate::config::ConfigError),
    /// SMTP without `unsubscribe.public_url`: a configuration problem (exit status 2).
    #[error("{0}")]
    Unsubscribe(#[source] crate::config::ConfigError),
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
    /// The envelope id (`ENVID`, RFC 3461) given on MAIL FROM when the relay offers DSN: a
    /// delivery status notification quotes it as `Original-Envelope-Id`, which `bounces import`
    /// links back to the message without VERP.
    envid: Option<String>,
}

impl From<&Message> for Outgoing {
    fn from(message: &Message) -> Outgoing {
        Outgoing {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
            envid: None,
        }
    }
}

impl Outgoing {
    /// The same email with the envelope id of its outbox row: its Message-ID without `<>`
    /// (RFC 3461 allows 100 characters; a longer one goes without).
    pub(crate) fn with_envid(mut self, message_id: &str) -> Outgoing {
        let id = message_id.trim_start_matches('<').trim_end_matches('>');
        self.envid = (id.len() <= 100 && id.is_ascii()).then(|| id.to_string());
        self
    }

    /// The same email with `from` as its envelope sender (MAIL FROM) instead of the address
    /// of its `From` header.
    pub(crate) fn with_sender(mut self, from: lettre::Address) -> Outgoing {
        let to = self.envelope.to().to_vec();
        if let Ok(envelope) = lettre::address::Envelope::new(Some(from), to) {
            self.envelope = envelope;
        }
        self
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
                let relay = Relay::from_settings(settings)?;
                // The calendar's maintenance notice (and the general reopening notice, and
                // one-off campaigns) must carry a working one-click unsubscribe: a placeholder
                // link must not reach a real mailbox.
                if settings.unsubscribe.public_url.is_none() {
                    return Err(TransportError::Unsubscribe(
                        crate::config::ConfigError::Invalid {
                            key: "unsubscribe.public_url".to_string(),
                            value: String::new(),
                            expected: "the unsubscribe endpoint's public https:// address (with \
                                   unsubscribe.secret): SMTP delivery is refused without it, \
                                   since the maintenance notice, the general reopening notice \
                                   and one-off campaigns carry a one-click unsubscribe link \
                                   (RFC 8058) that must work; docs/deliverability.md"
                                .to_string(),
                        },
                    ));
                }
                Ok(Transport::Smtp(relay))
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
            Transport::Smtp(relay) => relay.send(message, gate).await,
        }
    }

    /// Says QUIT on the idle SMTP connections (at shutdown; the relay would time them out).
    pub async fn close(&self) {
        if let Transport::Smtp(relay) = self {
            relay.close().await;
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

impl SendFailure {
    /// The enhanced status code (RFC 3463) of the relay's reply, e.g. `5.1.1`, if it gave one.
    pub fn status(&self) -> Option<String> {
        self.reply_key()?
            .split_once(' ')
            .map(|(_, status)| status.to_string())
    }

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

/// Whether an RFC 3463 status (`5.1.1`) says that the recipient's address does not exist or
/// cannot be used: the 5.1.x "addressing" statuses, except 5.1.7 and 5.1.8, which are about
/// the sender's address (a relay refusing our envelope sender would otherwise suppress
/// everyone).
pub(crate) fn recipient_does_not_exist(status: &str) -> bool {
    status
        .strip_prefix("5.1.")
        .is_some_and(|detail| !matches!(detail, "7" | "8") && detail.parse::<u16>().is_ok())
}

/// Whether an RFC 3463 status says that a mailbox provider refuses our mail for its
/// authentication (Gmail's `5.7.26` unauthenticated, Microsoft's `5.7.515` below the required
/// authentication level): about us, never about the recipient.
pub(crate) fn refuses_our_authentication(status: &str) -> bool {
    matches!(status, "5.7.26" | "5.7.515")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_providers_authentication_statuses_are_about_us() {
        for yes in ["5.7.26", "5.7.515"] {
            assert!(refuses_our_authentication(yes), "{yes}");
        }
        for no in ["5.7.1", "5.7.2", "4.7.26", "5.7.5150", "5.1.1"] {
            assert!(!refuses_our_authentication(no), "{no}");
        }
    }

    #[test]
    fn only_the_recipients_addressing_statuses_mean_no_such_recipient() {
        for yes in ["5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.1.0"] {
            assert!(recipient_does_not_exist(yes), "{yes}");
        }
        for no in [
            "5.1.7", "5.1.8", "4.1.1", "5.7.1", "5.2.2", "5.1.", "5.1.x", "5.11.1",
        ] {
            assert!(!recipient_does_not_exist(no), "{no}");
        }
    }

    #[test]
    fn the_reply_key_has_the_enhanced_status() {
        let f = SendFailure {
            kind: FailureKind::Permanent,
            code: Some(550),
            detail: "permanent error (550): 5.1.1 <x@example.org>: no such user".into(),
        };
        assert_eq!(f.reply_key().as_deref(), Some("550 5.1.1"));
        assert_eq!(f.status().as_deref(), Some("5.1.1"));
    }
}
