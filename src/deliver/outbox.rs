//! The outbox: one row per email and its state machine.
//!
//! ```text
//! pending --claim--> sending --> sent
//!    ^                  |------> pending (transient failure: retry later, or handed back)
//!    |                  |------> failed  (permanent failure, or too many attempts)
//!    |                  |------> skipped (user no longer qualifies at send time)
//!    +---- lease expired (the daemon holding it died)
//! pending --deadline--> expired;  pending --later step--> skipped
//! ```
//! Every change is one statement guarded by the row's current claim, so repeating it is safe and
//! a daemon that lost its lease cannot overwrite what another daemon did.
//!
//! Leases are set and compared on the database's clock ([`Backend::lease_now`]), never on a
//! daemon's own: a daemon whose clock runs ahead would otherwise take claims that are still
//! live elsewhere. The calendar (what is due, deadlines) stays on the process's [`Clock`].
//!
//! [`Clock`]: crate::clock::Clock

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::audience::Audience;
use crate::audience::{optout, suppression};
use crate::campaign::Campaign;
use crate::config::Step;
use crate::store::{
    Backend, Db, OutboxState, Stream, SuppressionSource, UnknownState, UserContact, CONTACT_COLUMNS,
};

mod claim;
mod record;

pub(crate) use self::claim::{claim, ClaimRequest};
pub use self::record::record;

/// A claimed row with what is needed to render and send it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub campaign: String,
    pub step: Step,
    pub template: String,
    pub message_id: String,
    pub attempts: i64,
    pub expires_at: Option<i64>,
    pub user: UserContact,
    /// Where the message goes: the address on record, or the institutional one (`fallback`).
    pub recipient: String,
    /// The lead of the daily digest this row belongs to (itself for the lead), or `None` for a
    /// row sent alone.
    pub digest_of: Option<i64>,
    /// A lead whose own section no longer applies (the user left its audience) while other
    /// sections of its digest still do: the email goes without it, and the row is skipped with
    /// this reason.
    pub section_dropped: Option<&'static str>,
    /// The address on record is suppressed: `recipient` is the institutional address, and the
    /// email says why it arrives there.
    pub fallback: bool,
    /// Its campaign's stream (List-Id, Feedback-ID, opt-outs).
    pub stream: Stream,
    /// Whether its campaign's emails carry the one-click unsubscribe (see
    /// [`Campaign::unsubscribe`]).
    pub unsubscribe: bool,
}

/// How a claimed row ends this round.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        recipient: String,
        template_digest: String,
    },
    /// Back to pending, to be tried again at `at`.
    Retry {
        at: DateTime<Utc>,
        error: String,
        code: Option<u16>,
    },
    Failed {
        error: String,
        code: Option<u16>,
    },
    Expired {
        reason: String,
    },
    /// Not sent on purpose: its section no longer applies (a digest's lead whose email went
    /// with the other sections only, or a digest with no section left).
    Skipped {
        reason: String,
    },
    /// Failed: the relay says `recipient` does not exist (5.1.x at RCPT). The address goes on
    /// the suppression list, with the reply as the reason, in the same transaction.
    NoSuchRecipient {
        recipient: String,
        error: String,
        code: Option<u16>,
    },
    /// The recipient's provider asked us to slow down (`reply`): `domain` is held, if it is not
    /// already, with `backoff`, and the row waits for the hold's end, attempt not counted;
    /// expired if its deadline comes first (see `deliver::hold`).
    Deferred {
        domain: String,
        reply: String,
        backoff: crate::deliver::hold::Backoff,
    },
    /// Not attempted (shutdown, relay down): back to pending as it was, attempt not counted.
    HandedBack {
        at: DateTime<Utc>,
    },
}

/// The outbox row's columns that [`claimed_from_row`] reads by name, besides the user's
/// ([`CONTACT_COLUMNS`]), `recipient` and `fallback`.
pub(crate) const OUTBOX_COLUMNS: &str =
    "o.id, c.name AS campaign, o.step, o.template, o.message_id, \
                              o.attempts, o.expires_at, o.digest_of, c.stream, c.transactional";

/// The first user of the campaign's audience (by user id) as a row to render, as if planned:
/// step `main`, recipient the address on record, `message_id` as given. Nothing is written.
pub(crate) async fn first_recipient(
    db: &Db,
    c: &Campaign,
    message_id: &str,
) -> Result<Option<Claimed>, sqlx::Error> {
    Ok(recipients(db, c, message_id, 1).await?.into_iter().next())
}

/// The first `limit` users of the campaign's audience by user id, as rows to render (the
/// samples an approver reads).
pub(crate) async fn recipients(
    db: &Db,
    c: &Campaign,
    message_id: &str,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    select_recipients(db, c, message_id, limit, None).await
}

/// The user of the campaign's audience whose user id or fiscal code is `who`, as a row to
/// render (a preview for one real recipient); `None` when no user of the audience has it.
pub(crate) async fn recipient(
    db: &Db,
    c: &Campaign,
    message_id: &str,
    who: &str,
) -> Result<Option<Claimed>, sqlx::Error> {
    Ok(select_recipients(db, c, message_id, 1, Some(who))
        .await?
        .into_iter()
        .next())
}

async fn select_recipients(
    db: &Db,
    c: &Campaign,
    message_id: &str,
    limit: i64,
    who: Option<&str>,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let sql = format!(
        "SELECT CAST(0 AS BIGINT) AS id, $2 AS campaign, 'main' AS step, $3 AS template, \
            $4 AS message_id, CAST(0 AS BIGINT) AS attempts, CAST($5 AS BIGINT) AS expires_at, \
            CAST(NULL AS BIGINT) AS digest_of, $7 AS stream, $8 AS transactional, \
            {CONTACT_COLUMNS}, u.email AS recipient, \
            CAST(0 AS BIGINT) AS fallback FROM users u WHERE {} \
            AND ($9 IS NULL OR u.user_id = $9 OR u.fiscal_code = $9) ORDER BY u.user_id LIMIT $6",
        c.audience.condition_in(1)
    );
    let row = sqlx::query(&sql)
        .bind(c.filter_province.clone())
        .bind(&c.name)
        .bind(&c.template)
        .bind(message_id)
        .bind(c.expires_at.map(|t| t.timestamp()))
        .bind(limit)
        .bind(c.stream.key())
        .bind(c.transactional.clone())
        .bind(who.map(str::to_string))
        .fetch_all(db.pool())
        .await?;
    row.iter().map(claimed_from_row).collect()
}

/// Up to `limit` planned rows spread across the outbox (every `every`-th id), as rows to
/// render, recipient the address on record. Nothing is claimed or written.
pub(crate) async fn spread(db: &Db, every: i64, limit: i64) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {OUTBOX_COLUMNS}, {CONTACT_COLUMNS}, u.email AS recipient, \
            CAST(0 AS BIGINT) AS fallback \
         FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
         JOIN users u ON u.user_id = o.user_id WHERE o.id % $1 = 0 ORDER BY o.id LIMIT $2",
    ))
    .bind(every)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(claimed_from_row).collect()
}

/// Decodes a row selected as [`claim`]'s final query selects it: [`OUTBOX_COLUMNS`],
/// [`CONTACT_COLUMNS`], `recipient` and `fallback`, by name.
pub(crate) fn claimed_from_row(r: &AnyRow) -> Result<Claimed, sqlx::Error> {
    let stream: Stream = r
        .try_get::<String, _>("stream")?
        .parse()
        .map_err(|e: crate::store::UnknownStream| sqlx::Error::Decode(e.into()))?;
    let transactional: Option<String> = r.try_get("transactional")?;
    Ok(Claimed {
        unsubscribe: !stream.is_procedure() && transactional.is_none(),
        stream,
        id: r.try_get("id")?,
        campaign: r.try_get("campaign")?,
        step: r
            .try_get::<String, _>("step")?
            .parse()
            .map_err(UnknownState::into_sqlx)?,
        template: r.try_get("template")?,
        message_id: r.try_get("message_id")?,
        attempts: r.try_get("attempts")?,
        expires_at: r.try_get("expires_at")?,
        user: UserContact::from_row(r)?,
        recipient: r.try_get("recipient")?,
        digest_of: r.try_get("digest_of")?,
        section_dropped: None,
        fallback: r.try_get::<i64, _>("fallback")? == 1,
    })
}

/// Failed rows `ids`, with the rows of their digests, back to pending, due now, as they were
/// before their last attempt (not counted); the failure moves to the row's history with
/// `event`. Rows no longer failed are left alone. Returns how many went back, per campaign.
pub(crate) async fn give_back(
    db: &Db,
    ids: &[i64],
    event: &str,
    now: DateTime<Utc>,
) -> Result<std::collections::BTreeMap<String, u64>, sqlx::Error> {
    let mut back = std::collections::BTreeMap::new();
    for chunk in ids.chunks(500) {
        let list = (0..chunk.len())
            .map(|i| format!("${}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = db.pool().begin().await?;
        let per_campaign = format!(
            "SELECT c.name, COUNT(*) AS n FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
             WHERE o.state = 'failed' AND $1 IS NOT NULL AND $2 IS NOT NULL \
               AND (o.id IN ({list}) OR o.digest_of IN ({list})) GROUP BY c.name"
        );
        let mut q = sqlx::query(&per_campaign).bind(now.timestamp()).bind(event);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *tx).await? {
            *back.entry(row.get::<String, _>("name")).or_default() += row.get::<i64, _>("n") as u64;
        }
        let history = format!(
            "INSERT INTO outbox_history (outbox_id, at, state, event, reason, smtp_code, attempts) \
             SELECT id, $1, state, $2, reason, smtp_code, attempts FROM outbox \
             WHERE state = 'failed' AND (id IN ({list}) OR digest_of IN ({list}))"
        );
        let mut q = sqlx::query(&history).bind(now.timestamp()).bind(event);
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *tx).await?;
        let update = format!(
            "UPDATE outbox SET state = 'pending', next_attempt_at = $1, updated_at = $1, \
                attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
                reason = NULL, smtp_code = NULL, claim_token = NULL, lease_until = NULL \
             WHERE state = 'failed' AND $2 IS NOT NULL AND (id IN ({list}) OR digest_of IN ({list}))"
        );
        let mut q = sqlx::query(&update).bind(now.timestamp()).bind(event);
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(back)
}

/// The names of the campaigns paused now (few: the campaigns' table is small).
pub(crate) async fn paused_campaigns(
    conn: &mut AnyConnection,
) -> Result<std::collections::BTreeSet<String>, sqlx::Error> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM campaigns WHERE state = 'paused'")
            .fetch_all(&mut *conn)
            .await?;
    Ok(names.into_iter().collect())
}
