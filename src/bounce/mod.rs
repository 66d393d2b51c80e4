//! Returned mail: `avvisi bounces import PATH` reads a Maildir folder or an mbox file of
//! bounces, records each one, links it to the message that bounced, and keeps the suppression
//! list up to date.
//!
//! - Only a bounce linked to a message avvisi sent (its VERP token or envelope id, or the
//!   Message-ID of an outbox row), about the address that message went to, counts: anyone can
//!   write to the bounce mailbox, so an unlinked report is recorded as unrecognised and changes
//!   nothing.
//! - A hard bounce (5.x.x) suppresses the address at once; a soft one (4.x.x) is counted, and
//!   `bounce.soft_limit` of them within `bounce.soft_window_days` (before the latest) suppress it.
//! - Every message read is recorded under its Message-ID (or a hash of its content): importing
//!   the same mailbox twice changes nothing.
//! - Streamed: a reader thread parses one message at a time and hands it over a bounded
//!   channel; the database side commits in chunks. Memory does not grow with the mailbox.
//! - What is not a recognisable bounce is listed in `bounce.unrecognised_file` for a human.
//! - Bounded: a message too big, nested too deep or too slow to parse is set aside (listed, and
//!   moved out of a Maildir's `cur/` and `new/`) and the rest of the mailbox is read
//!   (`guard.rs`).
//!
//! The stage sits after [`crate::deliver`]: it reads the outbox rows and the VERP key that
//! delivery writes.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use sqlx::Row;

use crate::audience::suppression;
use crate::config::Settings;
use crate::deliver::verp::VerpKey;
use crate::store::{BounceKind, Db, SuppressionSource};

pub mod complaint;
pub(crate) mod dsn;
mod guard;
mod mailbox;

use self::dsn::{Bounce, Verp};
use self::guard::Guard;
pub use self::mailbox::{Mailbox, MAX_MESSAGE_BYTES, SET_ASIDE_FOLDER};

/// Bounces recorded per transaction.
const CHUNK: usize = 500;

/// What one import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BounceReport {
    /// Messages read from the mailbox.
    pub read: u64,
    /// Of the new ones, those linked to the outbox row of the message that bounced.
    pub matched: u64,
    pub hard: u64,
    pub soft: u64,
    /// Not bounces, and reports not linked to a message avvisi sent (below): nothing changed
    /// for them; listed for a human.
    pub unrecognised: u64,
    /// Of the unrecognised, the reports of a failure that name no message avvisi sent to the
    /// address they give (no VERP token, Message-ID or envelope id of a sent row to that
    /// recipient): possibly forged, so they suppress nothing.
    pub unlinked: u64,
    /// Already imported before: nothing changed for them.
    pub already_imported: u64,
    /// Addresses newly put on the suppression list.
    pub suppressed: u64,
    /// Messages not read (not counted in `read`): too big, nested too deep, too slow to parse.
    /// Listed in the unrecognised file with the reason; a Maildir's are moved to its
    /// `.avvisi-rejected/` folder, so the next import does not meet them again.
    pub set_aside: u64,
    /// Where the messages set aside were moved (a Maildir's, when there were any).
    pub set_aside_folder: Option<PathBuf>,
    /// Where the unrecognised messages are listed (when there were any).
    pub unrecognised_file: Option<PathBuf>,
}

/// Why an import stopped. What was committed before stays (each bounce is recorded once, so
/// running the import again picks up where it stopped).
#[derive(Debug, thiserror::Error)]
pub enum BounceError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is neither a Maildir folder (with cur/ or new/) nor an mbox file (starting with a \"From \" line)", path.display())]
    NotAMailbox { path: PathBuf },
    #[error("cannot write the list of unrecognised messages {}: {source}", path.display())]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One message as read from the mailbox: where it was, and what it says.
pub(crate) struct Read {
    /// The Maildir file, or `FILE#N` for the N-th message of an mbox.
    pub origin: String,
    pub bounce: Bounce,
}

/// What the reading thread hands over.
enum Item {
    Read(Read),
    /// A message not read: where it was, why, and the folder it was moved to.
    SetAside {
        origin: String,
        why: String,
        moved_to: Option<PathBuf>,
    },
}

/// Imports the returned mail at `path` as of `now`; unrecognised messages are listed in
/// `unrecognised` (default `bounce.unrecognised_file`).
pub async fn import(
    db: &Db,
    settings: &Settings,
    path: &Path,
    unrecognised: Option<&Path>,
    now: DateTime<Utc>,
) -> Result<BounceReport, BounceError> {
    let mailbox = Mailbox::open(path)?;
    // Tokens may come back from any earlier run: the key is read whenever there is a bounce
    // address, whether VERP is on now or not.
    let verp = match &settings.mail.bounce_address {
        Some(address) => Some((address.clone(), VerpKey::load(db.pool()).await?)),
        None => None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Item, BounceError>>(256);
    let read: guard::ReadFn<dsn::Bounce> = std::sync::Arc::new(move |raw: &[u8]| {
        let verp = verp.as_ref().map(|(bounce_address, key)| Verp {
            bounce_address,
            key,
        });
        dsn::read(raw, verp.as_ref())
    });
    let reader = tokio::task::spawn_blocking(move || {
        let mut guard = Guard::new(read, guard::MAX_PARSE_TIME);
        mailbox
            .for_each(|origin, message| {
                let item = match guard.screen_in(&mailbox, &origin, message) {
                    Ok(bounce) => Item::Read(Read {
                        origin: origin.label,
                        bounce,
                    }),
                    // Listed all the same, moved or not.
                    Err(guard::SetAside { why, moved_to }) => Item::SetAside {
                        origin: origin.label,
                        why,
                        moved_to,
                    },
                };
                tx.blocking_send(Ok(item)).is_ok()
            })
            .map_err(|e| {
                let _ = tx.blocking_send(Err(e));
            })
    });

    let list_path = unrecognised
        .map(Path::to_path_buf)
        .unwrap_or_else(|| settings.bounce.unrecognised_file.clone());
    let mut list = UnrecognisedList::new(list_path);
    let mut report = BounceReport::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let n = rx.recv_many(&mut chunk, CHUNK).await;
        if n == 0 {
            break;
        }
        let mut reads = Vec::with_capacity(n);
        for item in chunk.drain(..) {
            match item? {
                Item::Read(read) => reads.push(read),
                Item::SetAside {
                    origin,
                    why,
                    moved_to,
                } => {
                    report.set_aside += 1;
                    let moved = match &moved_to {
                        Some(folder) => format!(", moved to {}", folder.display()),
                        None => String::new(),
                    };
                    list.push(&format!("{origin}\tset aside: {why}{moved}\n"))?;
                    report.set_aside_folder = moved_to.or(report.set_aside_folder.take());
                }
            }
        }
        record_chunk(db, settings, &reads, now, &mut report, &mut list).await?;
    }
    let _ = reader.await;
    report.unrecognised_file = list.finish()?;
    tracing::info!(
        read = report.read,
        matched = report.matched,
        hard = report.hard,
        soft = report.soft,
        unrecognised = report.unrecognised,
        unlinked = report.unlinked,
        already_imported = report.already_imported,
        suppressed = report.suppressed,
        set_aside = report.set_aside,
        "bounces imported"
    );
    Ok(report)
}

/// Records one chunk of bounces in one transaction.
async fn record_chunk(
    db: &Db,
    settings: &Settings,
    reads: &[Read],
    now: DateTime<Utc>,
    report: &mut BounceReport,
    list: &mut UnrecognisedList,
) -> Result<(), BounceError> {
    let mut tx = db.pool().begin().await?;
    let mut unrecognised = Vec::new();
    for Read { origin, bounce } in reads {
        report.read += 1;
        // Anyone can write to the bounce mailbox: only a report linked to a message avvisi sent,
        // about the address it was sent to, may change anything. The address suppressed is the
        // one written to (a forwarded address fails under another name).
        let linked = link(&mut tx, bounce).await?.and_then(|(id, to)| {
            let to = to.to_ascii_lowercase();
            let named = [&bounce.recipient, &bounce.original_recipient];
            let names_it = bounce.recipient.is_none()
                || named.iter().any(|n| n.as_deref() == Some(to.as_str()));
            names_it.then_some((id, to))
        });
        let recipient = match &linked {
            Some((_, to)) => Some(to.clone()),
            None => bounce.recipient.clone(),
        };
        let kind = if linked.is_some() {
            bounce.kind
        } else {
            BounceKind::Unrecognised
        };
        let at = bounce.date.unwrap_or(now.timestamp());
        let inserted = sqlx::query(
            "INSERT INTO bounces (dedupe_key, kind, recipient, status, diagnostic, outbox_id, at, \
                imported_at, origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&bounce.dedupe_key)
        .bind(kind.as_str())
        .bind(recipient.clone())
        .bind(bounce.status.clone())
        .bind(bounce.diagnostic.clone())
        .bind(linked.as_ref().map(|(id, _)| *id))
        .bind(at)
        .bind(now.timestamp())
        .bind(origin)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            report.already_imported += 1;
            continue;
        }
        if linked.is_some() {
            report.matched += 1;
        }
        let status = bounce.status.as_deref().unwrap_or("-");
        let said = bounce
            .diagnostic
            .as_deref()
            .map(|d| format!(": {}", one_line(d)))
            .unwrap_or_default();
        let suppress = match (kind, &recipient) {
            (BounceKind::Hard, Some(address)) => {
                report.hard += 1;
                Some((address, format!("bounce {status}{said}")))
            }
            (BounceKind::Soft, Some(address)) => {
                report.soft += 1;
                let b = &settings.bounce;
                // A mailbox is not in date order: every soft bounce of the address within a
                // window of this one, on either side, and the busiest window among them.
                let window = Duration::days(i64::from(b.soft_window_days)).num_seconds();
                let times: Vec<i64> = sqlx::query_scalar(
                    "SELECT at FROM bounces WHERE recipient = $1 AND kind = 'soft' \
                     AND at > $2 AND at < $3 ORDER BY at",
                )
                .bind(address)
                .bind(at - window)
                .bind(at + window)
                .fetch_all(&mut *tx)
                .await?;
                let n = busiest_window(&times, window);
                (n >= b.soft_limit as usize).then(|| {
                    let reason = format!(
                        "{n} soft bounces within {} days (latest {status}{said})",
                        b.soft_window_days
                    );
                    (address, reason)
                })
            }
            _ => {
                report.unrecognised += 1;
                let why = if bounce.kind == BounceKind::Unrecognised {
                    String::new()
                } else {
                    report.unlinked += 1;
                    format!(
                        "\tnot linked: a failure of {} that names no message avvisi sent to it \
                         (VERP token, Message-ID or envelope id), so nothing was suppressed",
                        bounce.recipient.as_deref().unwrap_or("no address")
                    )
                };
                unrecognised.push(format!(
                    "{origin}\tfrom {}\tsubject {}{why}\n",
                    or_dash(&bounce.from),
                    or_dash(&one_line(&bounce.subject))
                ));
                None
            }
        };
        if let Some((address, reason)) = suppress {
            let before =
                suppression::add_on(&mut tx, address, &reason, SuppressionSource::Bounce, now)
                    .await;
            match before {
                Ok(None) => report.suppressed += 1,
                Ok(Some(_)) => {}
                Err(suppression::SuppressionError::Database(e)) => return Err(e.into()),
                // An address a bounce quoted that is not one we could have written to.
                Err(e) => tracing::warn!(origin = %origin, error = %e, "address not suppressed"),
            }
        }
    }
    tx.commit().await?;
    // Listed once committed: a second import does not list them again.
    for line in unrecognised {
        list.push(&line)?;
    }
    Ok(())
}

/// The outbox row of the message that bounced, with its recipient: the VERP token's row, else
/// the row whose Message-ID the bounce quotes.
async fn link(
    conn: &mut sqlx::AnyConnection,
    bounce: &Bounce,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    if let Some(id) = bounce.verp_row {
        let row = sqlx::query("SELECT id, recipient FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(r) = row {
            return Ok(Some((r.try_get("id")?, r.try_get("recipient")?)));
        }
    }
    // Our Message-IDs are `CAMPAIGN_UID.STEP.USER_ID@DOMAIN`: found by the unique (campaign,
    // user, step) key, then checked whole.
    let Some(message_id) = &bounce.original_message_id else {
        return Ok(None);
    };
    let Some((local, _)) = message_id.rsplit_once('@') else {
        return Ok(None);
    };
    let mut parts = local.splitn(3, '.');
    let (Some(uid), Some(step), Some(user_id)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT o.id, o.recipient FROM outbox o \
         WHERE o.campaign_id = (SELECT c.id FROM campaigns c WHERE c.uid = $1) \
           AND o.user_id = $2 AND o.step = $3 AND o.message_id = $4",
    )
    .bind(uid)
    .bind(user_id)
    .bind(step)
    .bind(format!("<{message_id}>"))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| Ok((r.try_get("id")?, r.try_get("recipient")?)))
        .transpose()
}

/// The most of the sorted `times` that fall within one window of `window` seconds.
fn busiest_window(times: &[i64], window: i64) -> usize {
    let mut best = 0;
    let mut start = 0;
    for (end, t) in times.iter().enumerate() {
        while t - times[start] >= window {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// The file listing the unrecognised messages, created (owner only) at the first one.
struct UnrecognisedList {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl UnrecognisedList {
    fn new(path: PathBuf) -> UnrecognisedList {
        UnrecognisedList { path, file: None }
    }

    fn push(&mut self, line: &str) -> Result<(), BounceError> {
        let fail = |source| BounceError::List {
            path: self.path.clone(),
            source,
        };
        if self.file.is_none() {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = std::io::BufWriter::new(options.open(&self.path).map_err(fail)?);
            file.write_all(
                b"# messages that avvisi did not recognise as bounces: where, sender, subject\n",
            )
            .map_err(fail)?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(line.as_bytes()).map_err(fail)
    }

    fn finish(self) -> Result<Option<PathBuf>, BounceError> {
        match self.file {
            Some(mut file) => {
                file.flush().map_err(|source| BounceError::List {
                    path: self.path.clone(),
                    source,
                })?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_window_counts_bounces_in_any_order_of_import() {
        let day = 86_400;
        assert_eq!(busiest_window(&[], 7 * day), 0);
        assert_eq!(busiest_window(&[0, day, 2 * day], 7 * day), 3);
        assert_eq!(busiest_window(&[0, 7 * day, 14 * day], 7 * day), 1);
        assert_eq!(busiest_window(&[0, 6 * day, 8 * day, 9 * day], 7 * day), 3);
    }
}
