//! Complaints: `avvisi complaints import PATH` reads the feedback-loop reports of the mailbox
//! providers (ARF, RFC 5965; Microsoft's and Yahoo's are ARF) from a Maildir folder or an mbox
//! file, as `bounces import` reads returned mail.
//!
//! - A report counts only when linked to a message avvisi sent: the VERP token of its
//!   envelope sender (`Original-Mail-From`, or the copy's `Return-Path`), its Message-ID, or its
//!   `Feedback-ID` with the address it was sent to. Anyone can write to the feedback mailbox.
//! - Each report is recorded once (its Message-ID, or a hash of its content): a second import
//!   changes nothing.
//! - The user of a linked report is opted out of every stream that offers an unsubscribe
//!   ([`Stream::AllNotices`]): a person who calls a notice spam gets no more notices; their
//!   own procedure's reminders go on.
//! - A campaign whose complaints pass `complaints.pause_percent` of its sent emails, once it has
//!   sent `complaints.min_sent`, is paused with the reason.
//!
//! A feedback mailbox is small (a complaint per thousand emails at worst), but anyone can write
//! to it: the messages are read one at a time through the bounce importer's [`Guard`] (at most
//! [`MAX_MESSAGE_BYTES`] each, nesting counted before parsing, parsed on a thread under a time
//! limit); one that fails a bound is set aside (a Maildir's file moved to
//! [`SET_ASIDE_FOLDER`], an mbox's message listed in the report) and the import goes on.
//!
//! [`MAX_MESSAGE_BYTES`]: super::mailbox::MAX_MESSAGE_BYTES
//! [`SET_ASIDE_FOLDER`]: super::mailbox::SET_ASIDE_FOLDER

use std::path::Path;

use chrono::{DateTime, Utc};
use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::dsn::{self, Verp};
use super::guard::{self, Guard, SetAside};
use super::{BounceError, Mailbox};
use crate::audience::optout;
use crate::campaign::lifecycle;
use crate::config::Settings;
use crate::deliver::verp::VerpKey;
use crate::store::{Db, OptOutSource, Stream};

/// What one import did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ComplaintReport {
    /// Messages read from the mailbox.
    pub read: u64,
    /// New complaints linked to a message avvisi sent.
    pub linked: u64,
    /// New reports that name no message avvisi sent: recorded, nothing changed.
    pub unlinked: u64,
    /// Messages that are not feedback reports: nothing recorded.
    pub not_reports: u64,
    /// Already imported before: nothing changed for them.
    pub already_imported: u64,
    /// Users newly opted out of every notice.
    pub opted_out: u64,
    /// Campaigns paused now for their complaint rate, with the reason.
    pub paused: Vec<(String, String)>,
    /// Messages set aside unread (too big, too deeply nested, too slow to parse): where each
    /// was, why, and the folder a Maildir's file was moved to.
    pub set_aside: Vec<SetAsideMessage>,
}

/// A message the import set aside.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SetAsideMessage {
    /// The Maildir file, or `FILE#N` for the N-th message of an mbox.
    pub origin: String,
    pub why: String,
    pub moved_to: Option<std::path::PathBuf>,
}

/// One feedback report, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub dedupe_key: String,
    pub feedback_type: String,
    pub date: Option<i64>,
    /// The outbox row named by a VERP token.
    pub verp_row: Option<i64>,
    pub original_message_id: Option<String>,
    pub feedback_id: Option<String>,
    pub original_recipient: Option<String>,
}

/// The report in `raw`, or `None` when it is not a feedback report.
pub(crate) fn read(raw: &[u8], verp: Option<&Verp<'_>>) -> Option<Report> {
    let message = MessageParser::default().parse(raw)?;
    let fields = feedback_fields(&message)?;
    let field = |name: &str| dsn::field(&fields, name);
    let feedback_type = field("feedback-type")?.to_ascii_lowercase();
    let dedupe_key = message
        .message_id()
        .map(|id| format!("<{}>", id.trim_matches(['<', '>'])))
        .unwrap_or_else(|| {
            let hex: String = Sha256::digest(raw)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("sha256:{hex}")
        });
    let original_header = |name: &str| original_header(&message, name);
    let verp_row = verp.and_then(|v| {
        [field("original-mail-from"), original_header("Return-Path")]
            .into_iter()
            .flatten()
            .flat_map(|text| dsn::addresses_in(&text))
            .find_map(|a| v.key.row_of_address(v.bounce_address, &a))
    });
    Some(Report {
        dedupe_key,
        feedback_type,
        date: message.date().map(|d| d.to_timestamp()),
        verp_row,
        original_message_id: dsn::original_message_id(&message),
        feedback_id: original_header("Feedback-ID"),
        original_recipient: field("original-rcpt-to")
            .and_then(|r| dsn::addresses_in(&r).into_iter().next()),
    })
}

/// The fields of the `message/feedback-report` part, lower-cased names.
fn feedback_fields(message: &Message<'_>) -> Option<Vec<(String, String)>> {
    let part = message
        .parts
        .iter()
        .find(|p| dsn::is(p.content_type(), "message", "feedback-report"))?;
    // Parsed as a nested message or kept as text, its raw bytes are the fields.
    let text = String::from_utf8_lossy(part.contents()).into_owned();
    let text = match (&part.body, text.trim().is_empty()) {
        (PartType::Message(inner), true) => {
            String::from_utf8_lossy(inner.raw_message()).into_owned()
        }
        _ => text,
    };
    dsn::field_groups(&text).into_iter().next()
}

/// A header of the original message, from the report's copy (`message/rfc822`) or its headers
/// (`text/rfc822-headers`), unfolded.
fn original_header(message: &Message<'_>, name: &str) -> Option<String> {
    for part in &message.parts {
        let headers = match &part.body {
            PartType::Message(inner) => Some(inner.raw_message().to_vec()),
            _ if dsn::is(part.content_type(), "text", "rfc822-headers") => {
                Some(part.contents().to_vec())
            }
            _ => None,
        };
        if let Some(raw) = headers {
            let text = String::from_utf8_lossy(&raw);
            let head = text.split("\r\n\r\n").next().unwrap_or_default();
            let head = head.split("\n\n").next().unwrap_or_default();
            let wanted = name.to_ascii_lowercase();
            if let Some(v) = dsn::field_groups(head)
                .into_iter()
                .next()
                .and_then(|g| dsn::field(&g, &wanted))
            {
                return Some(v);
            }
        }
    }
    None
}

/// The outbox row (id, campaign id, user) a report is about.
async fn link(
    conn: &mut sqlx::AnyConnection,
    report: &Report,
) -> Result<Option<(i64, i64, String)>, sqlx::Error> {
    let select = "SELECT o.id, o.campaign_id, o.user_id FROM outbox o";
    if let Some(id) = report.verp_row {
        let row = sqlx::query(&format!("{select} WHERE o.id = $1 AND o.state = 'sent'"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(r) = row {
            return Ok(Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)));
        }
    }
    // Our Message-IDs are `CAMPAIGN_UID.STEP.USER_ID@DOMAIN`: found by the unique (campaign,
    // user, step) key, then checked whole (a digest's rows share the lead's Message-ID: the
    // lead is the email's).
    let parts = report.original_message_id.as_deref().and_then(|id| {
        let (local, _) = id.rsplit_once('@')?;
        let mut parts = local.splitn(3, '.');
        Some((id, parts.next()?, parts.next()?, parts.next()?))
    });
    if let Some((message_id, uid, step, user_id)) = parts {
        let row = sqlx::query(&format!(
            "{select} WHERE o.campaign_id = (SELECT c.id FROM campaigns c WHERE c.uid = $1) \
               AND o.user_id = $2 AND o.step = $3 AND o.message_id = $4 AND o.state = 'sent'"
        ))
        .bind(uid)
        .bind(user_id)
        .bind(step)
        .bind(format!("<{message_id}>"))
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(r) = row {
            return Ok(Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)));
        }
    }
    // `Feedback-ID: CAMPAIGN:STREAM:SENDER`, with the address the report says it went to.
    if let (Some(feedback), Some(to)) = (&report.feedback_id, &report.original_recipient) {
        let campaign = feedback.split(':').next().unwrap_or_default();
        let row = sqlx::query(&format!(
            "{select} JOIN campaigns c ON c.id = o.campaign_id \
             WHERE c.name = $1 AND LOWER(o.recipient) = $2 AND o.state = 'sent' \
               AND (o.digest_of IS NULL OR o.digest_of = o.id) ORDER BY o.id DESC LIMIT 1"
        ))
        .bind(campaign)
        .bind(to.to_ascii_lowercase())
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(r) = row {
            return Ok(Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)));
        }
    }
    Ok(None)
}

/// Imports the feedback reports at `path` as of `now`.
pub async fn import(
    db: &Db,
    settings: &Settings,
    path: &Path,
    now: DateTime<Utc>,
) -> Result<ComplaintReport, BounceError> {
    let mailbox = Mailbox::open(path)?;
    let key = match &settings.mail.bounce_address {
        Some(address) => Some((address.clone(), VerpKey::load(db.pool()).await?)),
        None => None,
    };
    let read: guard::ReadFn<Option<Report>> = std::sync::Arc::new(move |raw: &[u8]| {
        let verp = key.as_ref().map(|(bounce_address, key)| Verp {
            bounce_address,
            key,
        });
        read(raw, verp.as_ref())
    });
    let reports = tokio::task::spawn_blocking(move || {
        let mut guard = Guard::new(read, guard::MAX_PARSE_TIME);
        let mut out = Vec::new();
        mailbox
            .for_each(|origin, message| {
                let report = guard.screen_in(&mailbox, &origin, message);
                out.push((origin.label, report));
                true
            })
            .map(|()| out)
    })
    .await
    .expect("the mailbox reader")?;

    let mut report = ComplaintReport::default();
    let mut campaigns: Vec<i64> = Vec::new();
    for (origin, read) in reports {
        report.read += 1;
        let read = match read {
            Ok(read) => read,
            Err(SetAside { why, moved_to }) => {
                report.set_aside.push(SetAsideMessage {
                    origin,
                    why,
                    moved_to,
                });
                continue;
            }
        };
        let Some(r) = read else {
            report.not_reports += 1;
            continue;
        };
        let mut tx = db.pool().begin().await?;
        let linked = link(&mut tx, &r).await?;
        let inserted = sqlx::query(
            "INSERT INTO complaints (dedupe_key, outbox_id, campaign_id, user_id, feedback_type, \
                at, imported_at, origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&r.dedupe_key)
        .bind(linked.as_ref().map(|l| l.0))
        .bind(linked.as_ref().map(|l| l.1))
        .bind(linked.as_ref().map(|l| l.2.clone()))
        .bind(&r.feedback_type)
        .bind(r.date.unwrap_or(now.timestamp()))
        .bind(now.timestamp())
        .bind(&origin)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if inserted == 0 {
            report.already_imported += 1;
            continue;
        }
        let Some((_, campaign, user)) = linked else {
            tracing::warn!(origin = %origin, "a feedback report names no message avvisi sent: recorded, nothing changed");
            report.unlinked += 1;
            continue;
        };
        report.linked += 1;
        if optout::record(db, &user, &Stream::AllNotices, OptOutSource::Complaint, now).await? {
            report.opted_out += 1;
        }
        if !campaigns.contains(&campaign) {
            campaigns.push(campaign);
        }
    }
    for rate in rates(db).await? {
        if !campaigns.contains(&rate.campaign_id) {
            continue;
        }
        let c = &settings.complaints;
        if rate.sent >= c.min_sent && rate.percent() > c.pause_percent {
            let reason = format!(
                "complaints: {} of {} sent ({:.2}%), over complaints.pause_percent ({}%)",
                rate.complaints,
                rate.sent,
                rate.percent(),
                c.pause_percent
            );
            if lifecycle::pause_for(db, &rate.campaign, &reason).await? {
                tracing::error!(campaign = %rate.campaign, %reason, "campaign paused");
                report.paused.push((rate.campaign.clone(), reason));
            }
        }
    }
    tracing::info!(
        read = report.read,
        linked = report.linked,
        unlinked = report.unlinked,
        already_imported = report.already_imported,
        opted_out = report.opted_out,
        "complaints imported"
    );
    Ok(report)
}

/// A campaign's complaints against its sent emails.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ComplaintRate {
    #[serde(skip)]
    pub campaign_id: i64,
    pub campaign: String,
    pub complaints: u64,
    /// The campaign's messages sent (a section of a digest counts for its own campaign).
    pub sent: u64,
    /// `complaints` in percent of `sent` (0 before anything is sent).
    pub percent: f64,
}

impl ComplaintRate {
    pub fn percent(&self) -> f64 {
        self.percent
    }
}

/// The complaint rate of every campaign with a complaint.
pub async fn rates(db: &Db) -> Result<Vec<ComplaintRate>, sqlx::Error> {
    // The sent messages from the outbox's counts (a few rows), as `status` counts them.
    let rows = sqlx::query(
        "SELECT c.id, c.name, k.n, CAST(COALESCE((SELECT SUM(s.n) FROM outbox_counts s \
            WHERE s.campaign_id = c.id AND s.state = 'sent'), 0) AS BIGINT) AS sent \
         FROM campaigns c JOIN (SELECT campaign_id, COUNT(*) AS n FROM complaints \
            WHERE campaign_id IS NOT NULL GROUP BY campaign_id) k ON k.campaign_id = c.id \
         ORDER BY c.id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let complaints = r.try_get::<i64, _>("n")? as u64;
            let sent = r.try_get::<i64, _>("sent")? as u64;
            Ok(ComplaintRate {
                campaign_id: r.try_get("id")?,
                campaign: r.try_get("name")?,
                complaints,
                sent,
                percent: match sent {
                    0 => 0.0,
                    sent => complaints as f64 * 100.0 / sent as f64,
                },
            })
        })
        .collect()
}
