//! The envelope of a message (MAIL FROM, RCPT TO, DATA, pipelined where the relay allows it)
//! and the classification of the relay's replies into failure kinds.

use super::Session;
use crate::deliver::transport::{
    recipient_does_not_exist, refuses_our_authentication, FailureKind, Outgoing, SendFailure,
};

/// MAIL FROM, RCPT TO and DATA, with the parameters lettre's `send` would use.
///
/// With PIPELINING the three commands go out in one write and their replies are read in order
/// (RFC 2920: DATA ends the group, so the body still waits for its 354). The first negative reply
/// is the failure; the replies after it are left unread and the caller closes the connection.
/// Nothing of the message is sent yet: a refusal of the session here is the relay's fault.
pub(super) async fn envelope(session: &mut Session, message: &Outgoing) -> Result<(), SendFailure> {
    envelope_commands(session, message)
        .await
        .map_err(|(stage, e)| {
            let mut failure = session_fault(classify(e));
            // Only RCPT's reply is about the recipient (a 5.1.x to MAIL is about our sender).
            if stage == Stage::Rcpt
                && failure.kind == FailureKind::Permanent
                && failure
                    .status()
                    .is_some_and(|s| recipient_does_not_exist(&s))
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
    // Only to a relay that offers DSN: another would refuse the unknown parameter.
    if let (true, Some(envid)) = (session.dsn, &message.envid) {
        params.push(MailParameter::Other {
            keyword: "ENVID".into(),
            value: Some(envid.clone()),
        });
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

/// The reply to the body: a 5.1.x there (a relay that checks the mailbox only once it has the
/// message) says the recipient does not exist as it would at RCPT (one recipient per message:
/// it is that one's).
pub(super) fn after_body(mut failure: SendFailure) -> SendFailure {
    if failure.kind == FailureKind::Permanent
        && failure
            .status()
            .is_some_and(|s| recipient_does_not_exist(&s))
    {
        failure.kind = FailureKind::NoSuchRecipient;
    }
    failure
}

/// Refusals before the body that are about the session, not the recipient: `530` (authentication
/// or STARTTLS required) and `421` (the relay is closing the channel).
fn session_fault(mut failure: SendFailure) -> SendFailure {
    // A provider's "slow down" (a 421 too, at Gmail) is about its domain, not the session.
    if failure.kind != FailureKind::Deferred && matches!(failure.code, Some(530 | 421)) {
        failure.kind = FailureKind::Refused;
    }
    failure
}

pub(super) fn classify(e: lettre::transport::smtp::Error) -> SendFailure {
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
    // A provider asking us to slow down, at RCPT or at the end of DATA: its domain waits.
    if failure.kind == FailureKind::Transient
        && crate::deliver::hold::asks_to_slow_down(failure.code, &failure.detail)
    {
        failure.kind = FailureKind::Deferred;
    }
    // A provider refusing our authentication refuses every message alike: the relay's fault,
    // not the recipient's (stops delivery, every message kept pending; `/readyz` says it).
    if failure
        .status()
        .is_some_and(|s| refuses_our_authentication(&s))
    {
        failure.kind = FailureKind::Refused;
        failure.detail.push_str(
            " (the provider refuses our authentication: check SPF, DKIM and DMARC for the \
             sending domain; docs/deliverability.md)",
        );
    }
    failure
}
