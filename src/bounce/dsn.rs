//! What one returned mail says: which address failed, how (hard, soft), and which message it was.
//!
//! The MIME structure is `mail-parser`'s. Recognised, in this order:
//! - a delivery status notification (RFC 3464: a `message/delivery-status` part): `Action`,
//!   `Status`, `Final-Recipient`, `Diagnostic-Code` per recipient, `Original-Envelope-Id`;
//! - the non-standard bounces of providers that write prose instead (qmail's "no mailbox here
//!   by that name", Italian providers' "utente inesistente", Exchange's "could not be
//!   delivered"): a delivery-failure subject or a mailer-daemon sender, then a status code
//!   (`5.1.1`, or an SMTP reply code) and the failed address in the text.
//!
//! The message is named by the VERP token of the address the bounce was delivered to (checked
//! with the installation's key), or else by the Message-ID of the original, when the bounce
//! quotes it.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

use crate::deliver::verp::VerpKey;
use crate::store::BounceKind;

/// What a returned mail says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bounce {
    /// The bounce's own Message-ID, or `sha256:` and a hash of its content.
    pub dedupe_key: String,
    pub kind: BounceKind,
    /// The failed address, lower-cased.
    pub recipient: Option<String>,
    /// The address the report says was first given (`Original-Recipient`), lower-cased: a
    /// forwarded address fails under another name, and this one is what avvisi wrote to.
    pub original_recipient: Option<String>,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: Option<String>,
    /// The remote server's words (`Diagnostic-Code`, or the line of prose that said it).
    pub diagnostic: Option<String>,
    /// The outbox row the VERP token names.
    pub verp_row: Option<i64>,
    /// The Message-ID of the message that bounced, without `<>`.
    pub original_message_id: Option<String>,
    /// When the bounce was written (its `Date`), Unix seconds.
    pub date: Option<i64>,
    /// For the list of unrecognised messages: the sender and subject of the bounce.
    pub from: String,
    pub subject: String,
}

/// The VERP settings a bounce is read with.
pub(crate) struct Verp<'a> {
    pub bounce_address: &'a lettre::Address,
    pub key: &'a VerpKey,
}

/// The most nested messages a returned mail may hold (an upper bound, see [`hazard`]). A bounce
/// of ours holds one (the original), a report about many recipients a few per recipient.
pub(crate) const MAX_NESTED: usize = 100;

/// Why a message is not handed to the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hazard {
    /// More than [`MAX_NESTED`] possibly nested messages (how many).
    TooDeep(usize),
    /// An attached message in base64 or quoted-printable.
    EncodedMessage,
}

impl std::fmt::Display for Hazard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hazard::TooDeep(n) => write!(
                f,
                "nested too deep: up to {n} messages inside one another (at most {MAX_NESTED} are read)"
            ),
            Hazard::EncodedMessage => f.write_str(
                "an attached message in base64 or quoted-printable (RFC 2046 forbids it; not decoded)",
            ),
        }
    }
}

/// What would make `mail-parser` recurse without bound, found in the raw bytes before it sees
/// them. Its parser keeps nested messages in a tree that it drops, and copies when decoded,
/// recursively: 50,000 `message/rfc822` inside one another (1.5 MB) overflow the stack, and
/// the same in base64 takes memory quadratic in the depth.
///
/// - Each nesting level needs its own `message/rfc822` or `message/global` content type (the
///   subtype is a token: neither folded nor encoded), or a child of a `multipart/digest`. So
///   the count of `rfc822`, `global` and `digest` anywhere, in any case, bounds the depth.
/// - An encoded attached message hides its nesting: a header block (up to a blank line) with a
///   `Content-Transfer-Encoding` that may say base64 or quoted-printable (or an encoded word)
///   and an `rfc822` or `global` content type (or none, when a digest may make it a message) is
///   refused.
pub(crate) fn hazard(raw: &[u8]) -> Option<Hazard> {
    let lower = raw.to_ascii_lowercase();
    let nested: usize = ["rfc822", "global", "digest"]
        .iter()
        .map(|token| count(&lower, token.as_bytes()))
        .sum();
    if nested > MAX_NESTED {
        return Some(Hazard::TooDeep(nested));
    }
    let digest = count(&lower, b"digest") > 0;
    // Blank lines, exactly `\n` or `\r\n`, end a header block for the parser: a block here
    // is never shorter than one of its.
    let mut block: Vec<&[u8]> = Vec::new();
    for line in lower.split(|&b| b == b'\n') {
        if line.is_empty() || line == b"\r" {
            if encoded_message(&block, digest) {
                return Some(Hazard::EncodedMessage);
            }
            block.clear();
        } else {
            block.push(line);
        }
    }
    encoded_message(&block, digest).then_some(Hazard::EncodedMessage)
}

/// Whether a header block (lower-cased lines) declares an encoded message; see [`hazard`].
fn encoded_message(block: &[&[u8]], digest: bool) -> bool {
    let encoding = header_value(block, b"content-transfer-encoding");
    let encoded = encoding.is_some_and(|v| {
        count(&v, b"base64") > 0 || count(&v, b"quoted-printable") > 0 || count(&v, b"=?") > 0
    });
    if !encoded {
        return false;
    }
    // The parser nests only `message/rfc822` and `message/global` (subtypes are literal
    // tokens), so an encoded `message/delivery-status` is no hazard.
    match header_value(block, b"content-type") {
        Some(v) => count(&v, b"rfc822") > 0 || count(&v, b"global") > 0,
        None => digest,
    }
}

/// The values (unfolded, joined) of every header `name` in a block of lower-cased lines.
fn header_value(block: &[&[u8]], name: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut inside = false;
    for line in block {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if inside {
                out.get_or_insert_with(Vec::new).extend_from_slice(line);
            }
            continue;
        }
        inside = line.starts_with(name);
        if inside {
            let value = out.get_or_insert_with(Vec::new);
            value.push(b' ');
            value.extend_from_slice(&line[name.len()..]);
        }
    }
    out
}

/// Occurrences of `needle` in `hay`.
fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Reads one returned mail.
pub(crate) fn read(raw: &[u8], verp: Option<&Verp<'_>>) -> Bounce {
    let parsed = MessageParser::default().parse(raw);
    let dedupe_key = parsed
        .as_ref()
        .and_then(|m| m.message_id())
        .map(|id| format!("<{}>", id.trim_matches(['<', '>'])))
        .unwrap_or_else(|| {
            let digest = Sha256::digest(raw);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        });
    let mut bounce = Bounce {
        dedupe_key,
        kind: BounceKind::Unrecognised,
        recipient: None,
        original_recipient: None,
        status: None,
        diagnostic: None,
        verp_row: None,
        original_message_id: None,
        date: None,
        from: String::new(),
        subject: String::new(),
    };
    let Some(message) = parsed else {
        return bounce;
    };
    bounce.date = message.date().map(|d| d.to_timestamp());
    bounce.subject = message.subject().unwrap_or_default().to_string();
    bounce.from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .to_string();
    if let Some(verp) = verp {
        bounce.verp_row = verp_row(&message, verp);
    }
    bounce.original_message_id = original_message_id(&message);

    let found = delivery_status(&message).or_else(|| prose(&message));
    if let Some(found) = found {
        if let (None, Some(v), Some(id)) = (bounce.verp_row, verp, found.envelope_id.as_deref()) {
            bounce.verp_row = v.key.row_of(id);
        }
        // The envelope id avvisi gives a relay that offers DSN is the message's Message-ID
        // (see `deliver::transport`): it names the message when the bounce quotes no copy.
        if bounce.original_message_id.is_none() {
            bounce.original_message_id = found
                .envelope_id
                .as_deref()
                .map(xtext_decoded)
                .filter(|id| id.contains('@'));
        }
        bounce.kind = found.kind;
        bounce.recipient = found.recipient;
        bounce.original_recipient = found.original_recipient;
        bounce.status = found.status;
        bounce.diagnostic = found.diagnostic;
    }
    bounce
}

/// An xtext value (RFC 3461: `+HH` for a byte outside `!`..`~`, `+` and `=`) decoded; a
/// malformed escape is kept as it is.
fn xtext_decoded(value: &str) -> String {
    let bytes = value.trim().as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'+', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the body of a bounce says about its recipient.
#[derive(Debug)]
struct Found {
    kind: BounceKind,
    recipient: Option<String>,
    original_recipient: Option<String>,
    status: Option<String>,
    diagnostic: Option<String>,
    envelope_id: Option<String>,
}

/// The outbox row named by the VERP address the bounce was delivered to: the headers the
/// local delivery adds (`Delivered-To`, `X-Original-To`, `Envelope-To`), then `To`.
fn verp_row(message: &Message<'_>, verp: &Verp<'_>) -> Option<i64> {
    let headers = ["Delivered-To", "X-Original-To", "Envelope-To", "To"];
    for name in headers {
        for value in message.header_values(name) {
            let text = match value.as_text() {
                Some(t) => t.to_string(),
                None => match value.as_address() {
                    Some(a) => a
                        .iter()
                        .filter_map(|a| a.address())
                        .collect::<Vec<_>>()
                        .join(" "),
                    None => continue,
                },
            };
            for candidate in addresses_in(&text) {
                if let Some(row) = verp.key.row_of_address(verp.bounce_address, &candidate) {
                    return Some(row);
                }
            }
        }
    }
    None
}

/// The Message-ID of the original message, from an attached copy (`message/rfc822`) or its
/// headers (`text/rfc822-headers`).
pub(crate) fn original_message_id(message: &Message<'_>) -> Option<String> {
    for part in &message.parts {
        match &part.body {
            PartType::Message(inner) => {
                if let Some(id) = inner.message_id() {
                    return Some(id.trim_matches(['<', '>']).to_string());
                }
            }
            _ if is(part.content_type(), "text", "rfc822-headers") => {
                let headers = MessageParser::default().parse_headers(part.contents());
                if let Some(id) = headers.as_ref().and_then(|h| h.message_id()) {
                    return Some(id.trim_matches(['<', '>']).to_string());
                }
            }
            _ => {}
        }
    }
    None
}

pub(crate) fn is(ct: Option<&mail_parser::ContentType<'_>>, ctype: &str, subtype: &str) -> bool {
    ct.is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
    })
}

/// An RFC 3464 report: the first recipient that failed or was delayed.
fn delivery_status(message: &Message<'_>) -> Option<Found> {
    let part = message.parts.iter().find(|p| {
        is(p.content_type(), "message", "delivery-status")
            || is(p.content_type(), "message", "global-delivery-status")
    })?;
    let text = String::from_utf8_lossy(part.contents());
    let mut groups = field_groups(&text).into_iter();
    let per_message = groups.next().unwrap_or_default();
    let envelope_id = field(&per_message, "original-envelope-id");
    for group in groups {
        let action = field(&group, "action").map(|a| a.to_ascii_lowercase());
        let status = field(&group, "status").and_then(|s| status_in(&s));
        let kind = match (action.as_deref(), status.as_deref()) {
            (Some("failed"), Some(s)) if s.starts_with('4') => BounceKind::Soft,
            (Some("failed"), _) => BounceKind::Hard,
            (Some("delayed"), _) => BounceKind::Soft,
            (None, Some(s)) if s.starts_with('5') => BounceKind::Hard,
            (None, Some(s)) if s.starts_with('4') => BounceKind::Soft,
            // delivered, relayed, expanded: not a failure.
            _ => continue,
        };
        let original_recipient =
            field(&group, "original-recipient").and_then(|r| typed_address(&r));
        let recipient = field(&group, "final-recipient")
            .and_then(|r| typed_address(&r))
            .or_else(|| original_recipient.clone());
        let diagnostic = field(&group, "diagnostic-code").map(|d| {
            // "smtp; 550 5.1.1 ..." -> "550 5.1.1 ..."
            d.split_once(';')
                .map_or(d.as_str(), |(_, t)| t)
                .trim()
                .to_string()
        });
        let status = status.or_else(|| diagnostic.as_deref().and_then(status_in));
        return Some(Found {
            kind: mailbox_full_is_soft(kind, status.as_deref()),
            recipient,
            original_recipient,
            status,
            diagnostic,
            envelope_id,
        });
    }
    // A report of success is not a bounce; one without any recipient group is not either.
    None
}

/// A full mailbox (x.2.2) is its owner's to empty, not a dead address: counted as soft even
/// when the server called it permanent.
fn mailbox_full_is_soft(kind: BounceKind, status: Option<&str>) -> BounceKind {
    match status {
        Some(s) if kind == BounceKind::Hard && s.ends_with(".2.2") => BounceKind::Soft,
        _ => kind,
    }
}

/// The groups of `Name: value` fields of a delivery-status body, separated by blank lines;
/// folded lines are joined. Names lower-cased.
pub(crate) fn field_groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut groups: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if groups.last().is_some_and(|g| !g.is_empty()) {
                groups.push(Vec::new());
            }
            continue;
        }
        let group = groups.last_mut().expect("one group at least");
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = group.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            group.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

pub(crate) fn field(group: &[(String, String)], name: &str) -> Option<String> {
    group
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// `rfc822; Mario.Rossi@libero.it` -> `mario.rossi@libero.it`.
pub(crate) fn typed_address(value: &str) -> Option<String> {
    let address = value.split_once(';').map_or(value, |(_, a)| a);
    addresses_in(address).into_iter().next()
}

/// The first RFC 3463 status in `text` (`5.1.1`, `4.2.2`), class 4 or 5.
fn status_in(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|t| t.trim_matches('.'))
        .find(|t| {
            let parts: Vec<&str> = t.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "4" | "5")
                && (1..=3).contains(&parts[1].len())
                && (1..=3).contains(&parts[2].len())
                && parts[1..]
                    .iter()
                    .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// The email addresses in `text`, lower-cased, in order.
pub(crate) fn addresses_in(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "<>()[]\"',;:".contains(c))
        .map(|t| t.trim_matches('.'))
        .filter(|t| {
            t.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
            })
        })
        .filter_map(|t| crate::audience::suppression::normalise(t).ok())
        .collect()
}

/// Subjects of the bounces that carry no delivery-status part (lower-cased, in part).
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "delivery status notification",
    "delivery failure",
    "delivery has failed",
    "failure notice",
    "returned mail",
    "mail delivery failed",
    "mail delivery system",
    "could not be delivered",
    "non recapitabil",
    "non recapitato",
    "mancato recapito",
    "impossibile recapitare",
    "errore di consegna",
    "messaggio non consegnato",
];

/// Phrases of prose bounces and what they mean, when no status code is given.
const PHRASES: &[(&str, &str)] = &[
    ("no mailbox here by that name", "5.1.1"),
    ("user unknown", "5.1.1"),
    ("unknown user", "5.1.1"),
    ("no such user", "5.1.1"),
    ("does not exist", "5.1.1"),
    ("recipient not found", "5.1.1"),
    ("address rejected", "5.1.1"),
    ("utente inesistente", "5.1.1"),
    ("utente sconosciuto", "5.1.1"),
    ("indirizzo inesistente", "5.1.1"),
    ("casella inesistente", "5.1.1"),
    ("host or domain name not found", "5.1.2"),
    ("dominio inesistente", "5.1.2"),
    ("mailbox is full", "4.2.2"),
    ("mailbox full", "4.2.2"),
    ("over quota", "4.2.2"),
    ("quota exceeded", "4.2.2"),
    ("casella piena", "4.2.2"),
    ("spazio esaurito", "4.2.2"),
];

/// A bounce in prose: a delivery-failure subject or a mailer-daemon sender, then a status and
/// the failed address in its text.
fn prose(message: &Message<'_>) -> Option<Found> {
    let subject = message.subject().unwrap_or_default().to_lowercase();
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let from_daemon = ["mailer-daemon", "postmaster", "mail-daemon"]
        .iter()
        .any(|d| from.starts_with(d));
    if !from_daemon && !BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s)) {
        return None;
    }
    // The bounce's own words: its text parts, not the copy of the original.
    let text: String = message
        .text_bodies()
        .filter_map(|p| match &p.body {
            PartType::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let lower = text.to_lowercase();
    // The line that says why: the first with a status, else the first with a known phrase.
    let mut status = None;
    let mut diagnostic = None;
    for line in text.lines() {
        if let Some(s) = status_in(line) {
            status = Some(s);
            diagnostic = Some(line.trim().to_string());
            break;
        }
    }
    if status.is_none() {
        for (phrase, meaning) in PHRASES {
            if let Some(at) = lower.find(phrase) {
                status = Some(meaning.to_string());
                let line = lower[..at].rfind('\n').map_or(0, |n| n + 1);
                let end = lower[at..].find('\n').map_or(lower.len(), |n| at + n);
                diagnostic = text.get(line..end).map(|l| l.trim().to_string());
                break;
            }
        }
    }
    if status.is_none() {
        // An SMTP reply code alone, "550 ...": the class says hard or soft.
        for line in text.lines() {
            let code = line
                .split_whitespace()
                .find(|w| w.len() == 3 && (w.starts_with('5') || w.starts_with('4')))
                .filter(|w| w.bytes().all(|b| b.is_ascii_digit()));
            if let Some(code) = code {
                status = Some(format!("{}.0.0", &code[..1]));
                diagnostic = Some(line.trim().to_string());
                break;
            }
        }
    }
    let status = status?;
    // The failed address: qmail's "<addr>:" line, else the diagnostic line, else the first
    // address in the text that is not the reporting system's.
    let recipient = text
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix('<')
                .and_then(|rest| rest.split_once(">:"))
                .and_then(|(a, _)| addresses_in(a).into_iter().next())
        })
        .or_else(|| {
            diagnostic
                .as_deref()
                .and_then(|d| addresses_in(d).into_iter().next())
        })
        .or_else(|| {
            addresses_in(&text).into_iter().find(|a| {
                !["mailer-daemon@", "postmaster@", "mail-daemon@"]
                    .iter()
                    .any(|d| a.starts_with(d))
                    && *a != from
            })
        });
    let kind = if status.starts_with('5') {
        BounceKind::Hard
    } else {
        BounceKind::Soft
    };
    Some(Found {
        kind: mailbox_full_is_soft(kind, Some(&status)),
        recipient,
        original_recipient: None,
        status: Some(status),
        diagnostic,
        envelope_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture of tests/fixtures/bounces/ with its placeholders filled.
    fn fixture(text: &str) -> Vec<u8> {
        text.replace(
            "@@VERP@@",
            "bounces+12-0123456789abcdef@avvisi.istruzione.it",
        )
        .replace("@@RECIPIENT@@", "Mario.Rossi@libero.it")
        .replace("@@LOCAL@@", "Mario.Rossi")
        .replace("@@MESSAGE_ID@@", "<uid.first.U0001@istruzione.it>")
        .replace("@@DATE@@", "Mon, 23 Nov 2026 14:05:10 +0100")
        .replace("@@BOUNCE_ID@@", "D1")
        .into_bytes()
    }

    #[test]
    fn each_provider_s_bounce_says_who_failed_and_how() {
        let cases = [
            (
                include_str!("../../tests/fixtures/bounces/postfix-user-unknown.eml"),
                BounceKind::Hard,
                Some("5.1.1"),
            ),
            (
                include_str!("../../tests/fixtures/bounces/gmail-address-not-found.eml"),
                BounceKind::Hard,
                Some("5.1.1"),
            ),
            (
                include_str!("../../tests/fixtures/bounces/outlook-recipient-not-found.eml"),
                BounceKind::Hard,
                Some("5.1.10"),
            ),
            (
                include_str!("../../tests/fixtures/bounces/libero-utente-inesistente.eml"),
                BounceKind::Hard,
                Some("5.1.1"),
            ),
            (
                include_str!("../../tests/fixtures/bounces/postfix-delayed-mailbox-full.eml"),
                BounceKind::Soft,
                Some("4.2.2"),
            ),
        ];
        for (text, kind, status) in cases {
            let b = read(&fixture(text), None);
            assert_eq!(b.kind, kind, "{text}");
            assert_eq!(b.status.as_deref(), status, "{text}");
            assert_eq!(
                b.recipient.as_deref(),
                Some("mario.rossi@libero.it"),
                "{text}"
            );
        }
        let ooo = read(
            include_bytes!("../../tests/fixtures/bounces/out-of-office.eml"),
            None,
        );
        assert_eq!((ooo.kind, ooo.recipient), (BounceKind::Unrecognised, None));
        assert_eq!(ooo.dedupe_key, "<ooo.20261123100930.42@example.it>");
        // The original's Message-ID, quoted as headers or as an attached message.
        let gmail = read(
            &fixture(include_str!(
                "../../tests/fixtures/bounces/gmail-address-not-found.eml"
            )),
            None,
        );
        assert_eq!(
            gmail.original_message_id.as_deref(),
            Some("uid.first.U0001@istruzione.it")
        );
    }

    #[test]
    fn the_verp_token_names_the_row_only_with_the_right_key() {
        let bounce: lettre::Address = "bounces@avvisi.istruzione.it".parse().unwrap();
        let key = VerpKey::for_tests(b"k");
        let sender = key.sender(&bounce, 12).to_string();
        let raw = String::from_utf8(fixture(include_str!(
            "../../tests/fixtures/bounces/postfix-user-unknown.eml"
        )))
        .unwrap()
        .replace("bounces+12-0123456789abcdef@avvisi.istruzione.it", &sender);
        let verp = Verp {
            bounce_address: &bounce,
            key: &key,
        };
        assert_eq!(read(raw.as_bytes(), Some(&verp)).verp_row, Some(12));
        let other = VerpKey::for_tests(b"other");
        let verp = Verp {
            bounce_address: &bounce,
            key: &other,
        };
        assert_eq!(read(raw.as_bytes(), Some(&verp)).verp_row, None);
    }

    /// `n` messages inside one another, as the attack was written.
    fn nested(n: usize) -> String {
        let mut raw = String::from("From: x@example.org\r\nSubject: nested\r\n");
        for _ in 0..n {
            raw.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        raw + "Subject: inside\r\n\r\nhello\r\n"
    }

    #[test]
    fn nesting_and_encoded_messages_are_found_before_parsing() {
        for text in [
            include_str!("../../tests/fixtures/bounces/postfix-user-unknown.eml"),
            include_str!("../../tests/fixtures/bounces/gmail-address-not-found.eml"),
            include_str!("../../tests/fixtures/bounces/outlook-recipient-not-found.eml"),
            include_str!("../../tests/fixtures/bounces/libero-utente-inesistente.eml"),
            include_str!("../../tests/fixtures/bounces/postfix-delayed-mailbox-full.eml"),
            include_str!("../../tests/fixtures/bounces/out-of-office.eml"),
        ] {
            assert_eq!(hazard(&fixture(text)), None, "{text}");
        }
        assert_eq!(hazard(nested(MAX_NESTED - 5).as_bytes()), None);
        assert!(matches!(
            hazard(nested(50_000).as_bytes()),
            Some(Hazard::TooDeep(n)) if n >= 50_000
        ));
        // The case of the type does not hide it.
        let shouting = nested(MAX_NESTED + 1).replace("message/rfc822", "MESSAGE/RFC822");
        assert!(matches!(
            hazard(shouting.as_bytes()),
            Some(Hazard::TooDeep(_))
        ));
        for (ct, cte) in [
            (
                "Content-Type: message/rfc822",
                "Content-Transfer-Encoding: base64",
            ),
            (
                "Content-Type: Message/Global",
                "Content-Transfer-Encoding: Quoted-Printable",
            ),
            (
                "Content-Type: message/rfc822",
                "Content-Transfer-Encoding:\r\n =?us-ascii?q?base64?=",
            ),
        ] {
            let raw = format!(
                "From: x@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
                 --b\r\n{ct}\r\n{cte}\r\n\r\nU3ViamVjdDogeA0KDQp4DQo=\r\n--b--\r\n"
            );
            assert_eq!(
                hazard(raw.as_bytes()),
                Some(Hazard::EncodedMessage),
                "{raw}"
            );
        }
        // Encoded text, or an encoded report, is not an encoded message.
        for ct in [
            "text/plain; name=\"message.txt\"",
            "message/delivery-status",
        ] {
            let raw =
                format!("Content-Type: {ct}\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n");
            assert_eq!(hazard(raw.as_bytes()), None, "{raw}");
        }
    }

    #[test]
    fn statuses_and_addresses_are_found_in_text() {
        assert_eq!(
            status_in("smtp; 550 5.1.1 <a@b.it>: user unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(status_in("#4.2.2 mailbox full.").as_deref(), Some("4.2.2"));
        assert_eq!(status_in("version 1.2.3 of 2.0.0"), None);
        assert_eq!(
            addresses_in("rfc822; Mario.Rossi@Libero.it."),
            vec!["mario.rossi@libero.it"]
        );
        assert_eq!(
            typed_address("rfc822;<anna@gmail.com>").as_deref(),
            Some("anna@gmail.com")
        );
    }
}
