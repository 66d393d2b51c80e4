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
            TransportKind::Smtp => Ok(Transport::Smtp(Relay::from_settings(settings)?)),
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
