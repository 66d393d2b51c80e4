//! The checks of values that have a meaning beyond their type: the SMTP URL and credentials,
//! the DKIM key, the calendar's dates and times. Each error names the key, the value and what was
//! expected.

use std::path::PathBuf;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::*;

pub(super) fn check_smtp(raw: RawSmtp) -> Result<SmtpSettings, ConfigError> {
    let url = raw.url.trim().to_string();
    if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
        return Err(invalid(
            "smtp.url",
            super::redact_url(&url),
            "smtp://HOST:PORT or smtps://HOST:PORT",
        ));
    }
    // The file is not read here: only a command that connects to the relay needs it.
    let password = if !raw.password_file.trim().is_empty() {
        Some(SmtpPassword::File(PathBuf::from(raw.password_file.trim())))
    } else if !raw.password.expose_secret().is_empty() {
        Some(SmtpPassword::Inline(raw.password))
    } else {
        None
    };
    let username = Some(raw.username.trim().to_string()).filter(|u| !u.is_empty());
    if password.is_some() && username.is_none() {
        return Err(invalid(
            "smtp.username",
            "",
            "a user name, since a password is configured",
        ));
    }
    if raw.timeout_seconds == 0 {
        return Err(invalid("smtp.timeout_seconds", "0", "at least 1"));
    }
    let tls_ca = match raw.tls_ca_file.trim() {
        "" => None,
        path => Some(check_tls_ca(PathBuf::from(path))?),
    };
    Ok(SmtpSettings {
        url,
        username,
        password,
        timeout_seconds: raw.timeout_seconds,
        check_idle_seconds: raw.check_idle_seconds,
        pipelining: raw.pipelining,
        tls_ca,
    })
}

/// Reads `smtp.tls_ca_file` now, not at the first connection: a wrong file would otherwise show
/// only as every message refused by "unknown issuer" in the middle of a campaign.
fn check_tls_ca(path: PathBuf) -> Result<TlsCa, ConfigError> {
    use lettre::transport::smtp::client::{Certificate, TlsParameters};
    const KEY: &str = "smtp.tls_ca_file";
    let pem = std::fs::read(&path).map_err(|source| ConfigError::File {
        key: KEY,
        path: path.clone(),
        source,
    })?;
    let bad = |why: String| invalid(KEY, path.display().to_string(), why);
    // lettre reads a file without any certificate as an empty list, which would trust nothing
    // more and say nothing.
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(bad(
            "a PEM file of CA certificates (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let certificates = Certificate::from_pem(&pem)
        .map_err(|e| bad(format!("a PEM file of CA certificates ({e})")))?;
    // Adding them to a root store parses each one: a damaged certificate fails here.
    TlsParameters::builder("localhost".into())
        .add_root_certificate(certificates.clone())
        .build()
        .map_err(|e| bad(format!("CA certificates that parse ({e})")))?;
    Ok(TlsCa { path, certificates })
}

pub(super) fn check_dkim(raw: RawDkim) -> Result<Option<Dkim>, ConfigError> {
    use lettre::message::dkim::{
        DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
        DkimSigningKey,
    };
    use lettre::message::header::HeaderName;
    let selector = raw.selector.trim();
    if selector.is_empty() {
        return Ok(None);
    }
    let domain = raw.domain.trim();
    if domain.is_empty() || !domain.contains('.') {
        return Err(invalid(
            "dkim.domain",
            domain,
            "the signing domain, e.g. istruzione.it",
        ));
    }
    let algorithm = match raw.algorithm.trim() {
        "rsa" => DkimSigningAlgorithm::Rsa,
        "ed25519" => DkimSigningAlgorithm::Ed25519,
        other => return Err(invalid("dkim.algorithm", other, "rsa or ed25519")),
    };
    let path = PathBuf::from(raw.key_file.trim());
    let key = std::fs::read_to_string(&path).map_err(|source| ConfigError::File {
        key: "dkim.key_file",
        path: path.clone(),
        source,
    })?;
    let key = DkimSigningKey::new(key.trim(), algorithm).map_err(|e| {
        invalid(
            "dkim.key_file",
            path.display().to_string(),
            format!("a PKCS#1 PEM RSA key or a base64 ed25519 key ({e})"),
        )
    })?;
    // relaxed/relaxed: lettre folds long headers (a Subject with accents, say) after signing
    // them, which breaks the default simple header canonicalization at every verifier.
    let canonicalization = DkimCanonicalization {
        header: DkimCanonicalizationType::Relaxed,
        body: DkimCanonicalizationType::Relaxed,
    };
    // Every header that says who, what and when, so none can be changed on the way; not
    // Content-Type: lettre adds a multipart's Content-Type after signing, so a signature listing
    // it never verifies (the independent verifier in tests/api/dkim.rs found it).
    let headers = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Auto-Submitted",
        "Content-Language",
        "X-Avvisi-Campaign",
        // The stream labels and the one-click unsubscribe: a provider honours
        // List-Unsubscribe-Post only when the signature covers it (RFC 8058, section 4), and a
        // listed header that is absent is signed as absent, so none can be added on the way.
        "List-Id",
        "Feedback-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ]
    .map(HeaderName::new_from_ascii_str)
    .to_vec();
    let config = DkimConfig::new(
        selector.to_string(),
        domain.to_string(),
        key,
        headers,
        canonicalization,
    );
    Ok(Some(Dkim(std::sync::Arc::new(config))))
}

pub(super) fn parse_mailbox(
    key: &'static str,
    value: &str,
) -> Result<lettre::message::Mailbox, ConfigError> {
    value.trim().parse().map_err(|e| {
        invalid(
            key,
            value,
            format!("an address like \"Name <user@example.it>\" ({e})"),
        )
    })
}

pub(super) fn check_calendar(raw: RawCalendar) -> Result<CalendarSettings, ConfigError> {
    let timezone: Tz = raw.timezone.trim().parse().map_err(|_| {
        invalid(
            "calendar.timezone",
            &raw.timezone,
            "an IANA time zone name such as Europe/Rome",
        )
    })?;
    let campaign_start = local_instant("calendar.campaign_start", &raw.campaign_start, timezone)?;
    let deadline = local_instant("calendar.deadline", &raw.deadline, timezone)?;
    let maintenance_start = local_instant(
        "calendar.maintenance_start",
        &raw.maintenance_start,
        timezone,
    )?;
    if deadline <= campaign_start {
        return Err(invalid(
            "calendar.deadline",
            raw.deadline,
            "a time after calendar.campaign_start",
        ));
    }
    let maintenance_notice_at = local_instant(
        "calendar.maintenance_notice_at",
        &raw.maintenance_notice_at,
        timezone,
    )?;
    if maintenance_notice_at >= maintenance_start {
        return Err(invalid(
            "calendar.maintenance_notice_at",
            raw.maintenance_notice_at,
            "a time before calendar.maintenance_start (the notice expires when it starts)",
        ));
    }
    if maintenance_start < deadline {
        return Err(invalid(
            "calendar.maintenance_start",
            raw.maintenance_start,
            "a time at or after calendar.deadline",
        ));
    }
    let mut days = match raw.reminder_days_before {
        OneOrMany::One(d) => vec![d],
        OneOrMany::Many(d) => d,
        OneOrMany::ManyText(items) => items
            .iter()
            .map(|d| d.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                invalid(
                    "calendar.reminder_days_before",
                    items.join(","),
                    "whole numbers of days, e.g. 7,3,1",
                )
            })?,
    };
    if days.iter().any(|d| *d > 60) {
        return Err(invalid(
            "calendar.reminder_days_before",
            format!("{days:?}"),
            "days from 0 to 60",
        ));
    }
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    let start = local_time("calendar.sending_hours_start", &raw.sending_hours_start)?;
    let end = local_time("calendar.sending_hours_end", &raw.sending_hours_end)?;
    if end <= start {
        return Err(invalid(
            "calendar.sending_hours_end",
            raw.sending_hours_end,
            format!("a time after calendar.sending_hours_start ({start})"),
        ));
    }
    let cadence = check_cadence(raw.cadence)?;
    Ok(CalendarSettings {
        timezone,
        campaign_start,
        deadline,
        maintenance_start,
        maintenance_notice_at,
        reminder_days_before: days,
        reminder_time: local_time("calendar.reminder_time", &raw.reminder_time)?,
        sending_hours_start: start,
        sending_hours_end: end,
        reopening_notice_days: positive(
            "calendar.reopening_notice_days",
            raw.reopening_notice_days,
        )?,
        oneoff_expiry_days: positive("calendar.oneoff_expiry_days", raw.oneoff_expiry_days)?,
        cadence,
    })
}

/// `[calendar.cadence]`: each audience's steps, `first` or `dN`, and the `AUDIENCE:STEP` pairs
/// sent only inside a digest. A `dN` that `calendar.reminder_days_before` does not have is never
/// due (so the two can be changed one at a time).
fn check_cadence(raw: RawCadence) -> Result<Cadence, ConfigError> {
    let step = |key: &str, text: &str| -> Result<Step, ConfigError> {
        match text.trim().parse::<Step>() {
            Ok(s @ (Step::First | Step::DaysBefore(_))) => Ok(s),
            _ => Err(invalid(
                key,
                text,
                "steps such as first, d7, d3, d1 (the first notice, then days before the deadline)",
            )),
        }
    };
    let mut steps = Vec::new();
    for (audience, list) in raw.audiences {
        let key = format!("calendar.cadence.{audience}");
        let key = key.as_str();
        let mut list = list
            .items()
            .iter()
            .map(|s| step(key, s))
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(invalid(
                key,
                "[]",
                "at least one step: an audience with no step would never be told",
            ));
        }
        // Calendar order: the first notice, then the most days before the deadline.
        list.sort_by_key(|s| match s {
            Step::DaysBefore(d) => -i64::from(*d),
            _ => i64::MIN,
        });
        list.dedup();
        steps.push((audience, list));
    }
    let mut only_in_digest = Vec::new();
    for item in raw.only_in_digest.items() {
        let key = "calendar.cadence.only_in_digest";
        let (audience, text) = item.trim().split_once(':').ok_or_else(|| {
            invalid(
                key,
                &item,
                "AUDIENCE:STEP pairs such as credential_recovery_advice:d1",
            )
        })?;
        let s = step(key, text)?;
        // A step the audience's cadence lacks is never due: harmless, like an unused dN.
        match steps.iter().any(|(a, _)| a == audience.trim()) {
            true if s != Step::First => only_in_digest.push((audience.trim().to_string(), s)),
            _ => {
                return Err(invalid(
                    key,
                    &item,
                    "a reminder audience and a step other than first (the first notice always \
                     goes out)",
                ))
            }
        }
    }
    Ok(Cadence {
        steps,
        only_in_digest,
    })
}

/// A number of days that must be at least one: every campaign expires, and not at once.
fn positive(key: &'static str, days: u32) -> Result<u32, ConfigError> {
    match days {
        0 => Err(invalid(key, "0", "a number of days, at least 1")),
        n => Ok(n),
    }
}

fn local_time(key: &'static str, value: &str) -> Result<NaiveTime, ConfigError> {
    NaiveTime::parse_from_str(value.trim(), "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(value.trim(), "%H:%M:%S"))
        .map_err(|_| invalid(key, value, "a local time HH:MM such as 09:00"))
}

/// A local date-time in `tz` (or an RFC 3339 instant with its own offset) as UTC. Times that do
/// not exist or exist twice because of a daylight-saving change are refused, not guessed.
fn local_instant(key: &'static str, value: &str, tz: Tz) -> Result<DateTime<Utc>, ConfigError> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M"))
        .map_err(|_| {
            invalid(
                key,
                value,
                format!("a local time YYYY-MM-DDTHH:MM:SS in {tz}, e.g. 2026-11-30T23:59:59"),
            )
        })?;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        _ => Err(invalid(
            key,
            value,
            format!("a time that exists exactly once in {tz} (this one falls in a daylight-saving change)"),
        )),
    }
}

/// `mail.list_id_domain`: a domain name, lower case, with a dot.
pub(super) fn check_list_id_domain(value: &str) -> Result<String, ConfigError> {
    let d = value.trim();
    let ok = d.contains('.')
        && !d.starts_with('.')
        && !d.ends_with('.')
        && !d.contains("..")
        && d.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        return Err(invalid(
            "mail.list_id_domain",
            value,
            "a domain name in lower case, e.g. avvisi.istruzione.it (each stream's List-Id is \
             <STREAM.DOMAIN>)",
        ));
    }
    Ok(d.to_string())
}

/// `mail.feedback_id`: the sender's id in `Feedback-ID`, one field (no `:`).
pub(super) fn check_feedback_id(value: &str) -> Result<String, ConfigError> {
    let id = value.trim();
    if id.is_empty()
        || id.len() > 40
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(invalid(
            "mail.feedback_id",
            value,
            "1 to 40 characters among letters, digits, `-`, `_` and `.`, e.g. istanzeonline \
             (the last field of Feedback-ID)",
        ));
    }
    Ok(id.to_string())
}

/// The shortest `unsubscribe.secret`: 32 characters, about 190 bits from `openssl rand -base64 33`.
const UNSUBSCRIBE_SECRET_MIN: usize = 32;

pub(super) fn check_unsubscribe(raw: RawUnsubscribe) -> Result<UnsubscribeSettings, ConfigError> {
    let public_url = match raw.public_url.trim().trim_end_matches('/') {
        "" => None,
        u => {
            let parsed = url::Url::parse(u).ok();
            let loopback = parsed.as_ref().is_some_and(|p| {
                matches!(p.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                    || matches!(p.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
                    || p.host_str() == Some("localhost")
            });
            let ok = parsed.as_ref().is_some_and(|p| {
                (p.scheme() == "https" || (p.scheme() == "http" && loopback))
                    && p.query().is_none()
                    && p.fragment().is_none()
                    && p.username().is_empty()
                    && p.password().is_none()
            });
            if !ok {
                return Err(invalid(
                    "unsubscribe.public_url",
                    u,
                    "the endpoint's public https:// address as the reverse proxy serves it, e.g. \
                     https://avvisi.istruzione.it/disiscrizione (no query; http only on loopback)",
                ));
            }
            Some(u.to_string())
        }
    };
    let secret = Some(raw.secret).filter(|s| !s.expose_secret().is_empty());
    if let Some(s) = &secret {
        if s.expose_secret().chars().count() < UNSUBSCRIBE_SECRET_MIN {
            // Never the value: it is a secret.
            return Err(invalid(
                "unsubscribe.secret",
                "***",
                format!(
                    "at least {UNSUBSCRIBE_SECRET_MIN} random characters (openssl rand -base64 33)"
                ),
            ));
        }
    }
    let address = match raw.address.trim() {
        "" => None,
        a => Some(a.parse().map_err(|_| {
            invalid(
                "unsubscribe.address",
                a,
                "IP:PORT, e.g. 127.0.0.1:9026 (empty: the endpoint is not served)",
            )
        })?),
    };
    if secret.is_none() {
        let needed_by = match (&public_url, &address) {
            (Some(_), _) => Some("unsubscribe.public_url"),
            (None, Some(_)) => Some("unsubscribe.address"),
            (None, None) => None,
        };
        if let Some(key) = needed_by {
            return Err(invalid(
                "unsubscribe.secret",
                "",
                format!(
                    "the key of the unsubscribe tokens, at least {UNSUBSCRIBE_SECRET_MIN} random \
                     characters (openssl rand -base64 33), since {key} is set; prefer \
                     AVVISI__UNSUBSCRIBE__SECRET to writing it in a file"
                ),
            ));
        }
    }
    let mailto = match raw.mailto.trim() {
        "" => None,
        m => Some(m.parse().map_err(|_| {
            invalid(
                "unsubscribe.mailto",
                m,
                "a bare address like disiscrizione@istruzione.it (empty: no mailto link)",
            )
        })?),
    };
    Ok(UnsubscribeSettings {
        public_url,
        secret,
        address,
        mailto,
    })
}
