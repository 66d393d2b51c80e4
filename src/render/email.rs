//! Turning a rendered message into an RFC 5322 email (lettre builds and encodes it).
//!
//! `multipart/alternative` (text, then HTML), `Subject` encoded per RFC 2047 when it has accents,
//! a `Message-ID` fixed when the row was planned (a retry reuses it), `Auto-Submitted`,
//! `Content-Language: it`, and `X-Avvisi-Campaign: CAMPAIGN/STEP` to trace any email back.
//! A delivered email also carries its stream's [`Labels`]: `List-Id`, `Feedback-ID` and, on the
//! streams that offer it, the one-click unsubscribe (`List-Unsubscribe`,
//! `List-Unsubscribe-Post`), all of them covered by the DKIM signature.

use std::time::SystemTime;

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;

use crate::config::MailSettings;
use crate::config::Step;
use crate::render::templates::Rendered;

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("recipient address is not valid: {0}")]
    Recipient(String),
    #[error("cannot build the email: {0}")]
    Build(#[from] lettre::error::Error),
}

/// What identifies one email besides its content.
pub struct Envelope<'a> {
    pub to_address: &'a str,
    pub to_name: &'a str,
    pub message_id: &'a str,
    pub campaign: &'a str,
    pub step: Step,
    pub date: SystemTime,
}

/// What an email says about its stream (docs/deliverability.md). The values are made by
/// avvisi (ASCII, no user data but the opaque user id inside a signed token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// `List-Id` (RFC 2919): `<STREAM.DOMAIN>`.
    pub list_id: String,
    /// `Feedback-ID` (Gmail's feedback loop): `CAMPAIGN:STREAM:SENDER`.
    pub feedback_id: String,
    /// `List-Unsubscribe` (RFC 2369), `<https://...>` and maybe `<mailto:...>`; with it goes
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058). `None`: the stream
    /// offers no unsubscribe.
    pub unsubscribe: Option<String>,
}

/// Builds the email without stream labels (previews, test sends).
pub fn build(
    mail: &MailSettings,
    env: &Envelope<'_>,
    content: &Rendered,
) -> Result<Message, MessageError> {
    build_labelled(mail, env, content, None)
}

/// Builds the email. User data only reaches headers through lettre's encoders, after being
/// folded to one line, so it cannot add a header. The subject is folded here too: rendering
/// folds it already, but a header is only as safe as the last step before it.
pub fn build_labelled(
    mail: &MailSettings,
    env: &Envelope<'_>,
    content: &Rendered,
    labels: Option<&Labels>,
) -> Result<Message, MessageError> {
    let recipient = || MessageError::Recipient(env.to_address.to_string());
    let address = env.to_address.parse().map_err(|_| recipient())?;
    let name = one_line(env.to_name);
    let to = Mailbox::new(Some(name).filter(|n| !n.is_empty()), address);
    // lettre takes the envelope's recipient back from the To header it writes; an address it
    // cannot read back there (a quoted local part with specials, an address literal) is this
    // recipient's problem, not a failure to build.
    if to.to_string().parse::<Mailbox>().is_err() {
        return Err(recipient());
    }
    let mut builder = Message::builder()
        .from(mail.from.clone())
        .to(to)
        .subject(one_line(&content.subject))
        .date(env.date)
        .message_id(Some(env.message_id.to_string()))
        .header(AutoSubmitted)
        .header(ContentLanguage)
        .header(AvvisiCampaign(format!("{}/{}", env.campaign, env.step)));
    if let Some(reply_to) = &mail.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    if let Some(labels) = labels {
        builder = builder
            .header(ListId(labels.list_id.clone()))
            .header(FeedbackId(labels.feedback_id.clone()));
        if let Some(unsubscribe) = &labels.unsubscribe {
            builder = builder
                .header(ListUnsubscribe(unsubscribe.clone()))
                .header(ListUnsubscribePost);
        }
    }
    let mut email = builder.multipart(MultiPart::alternative_plain_html(
        content.text.clone(),
        content.html.clone(),
    ))?;
    if let Some(dkim) = &mail.dkim {
        email.sign(&dkim.0);
    }
    Ok(email)
}

/// `s` on one line: line breaks, tabs, other control characters and runs of spaces become one
/// space (lettre would encode a control character, and a reader would see the line break).
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The domain for Message-IDs: the sender's.
pub fn message_id_domain(mail: &MailSettings) -> String {
    mail.from.email.domain().to_string()
}

macro_rules! fixed_header {
    ($type:ident, $name:literal, $value:literal) => {
        #[derive(Clone)]
        struct $type;
        impl Header for $type {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }
            fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($type)
            }
            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), $value.to_string())
            }
        }
    };
}

fixed_header!(AutoSubmitted, "Auto-Submitted", "auto-generated");
fixed_header!(ContentLanguage, "Content-Language", "it");
fixed_header!(
    ListUnsubscribePost,
    "List-Unsubscribe-Post",
    "List-Unsubscribe=One-Click"
);

macro_rules! text_header {
    ($type:ident, $name:literal) => {
        #[derive(Clone)]
        struct $type(String);
        impl Header for $type {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }
            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($type(s.to_string()))
            }
            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}

text_header!(AvvisiCampaign, "X-Avvisi-Campaign");
text_header!(ListId, "List-Id");
text_header!(FeedbackId, "Feedback-ID");
text_header!(ListUnsubscribe, "List-Unsubscribe");
