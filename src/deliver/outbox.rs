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

mod record;

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
    /// Not attempted (shutdown, relay down): back to pending as it was, attempt not counted.
    HandedBack {
        at: DateTime<Utc>,
    },
}

/// What one claim asks for.
pub(crate) struct ClaimRequest<'a> {
    pub backend: Backend,
    /// Marks the claimed rows; the outcomes are recorded against it.
    pub token: &'a str,
    /// The calendar's time: what is due.
    pub now: DateTime<Utc>,
    /// How long the claim holds, on the database's clock.
    pub lease_seconds: u64,
    pub limit: u32,
    /// Look first for the rows of a daemon that died (their lease is over).
    pub stale: bool,
    /// Leave the reminders in the queue: the snapshot is too old to remind anyone.
    pub hold_reminders: bool,
}

/// Claims up to `limit` due rows of running campaigns for `token`, for `lease_seconds` on the
/// database's clock, skips the ones whose user no longer qualifies, and returns the rest with
/// the skips per campaign.
pub(crate) async fn claim(
    conn: &mut AnyConnection,
    request: &ClaimRequest<'_>,
) -> Result<(Vec<Claimed>, Vec<(String, u64)>), sqlx::Error> {
    let ClaimRequest {
        backend,
        token,
        now,
        lease_seconds,
        limit,
        stale,
        hold_reminders,
    } = *request;
    let claim = Claim {
        backend,
        token,
        now,
        lease_seconds,
        hold_reminders,
    };
    // Two statements, not one with an OR: each walks an index in queue order and stops at the
    // limit, where the OR made SQLite collect and sort the whole queue on every claim. First
    // the rows of a
    // daemon that died (their lease is over: few), then the due ones.
    let limit = u64::from(limit);
    let stale = match stale {
        true => claim_where(conn, &stale_rows(backend), &claim, limit).await?,
        false => 0,
    };
    let due = match limit - stale.min(limit) {
        0 => 0,
        left => claim_where(conn, DUE, &claim, left).await?,
    };
    let claimed = stale + due;
    if claimed == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    // The other rows of the claimed digests travel with their lead.
    let followers = sqlx::query(&followers_sql(backend, hold_reminders))
        .bind(token)
        .bind(lease_seconds as i64)
        .bind(now.timestamp())
        .execute(&mut *conn)
        .await?
        .rows_affected();

    // The user must still qualify now, by the same rule that planned the row.
    let campaigns = sqlx::query(
        "SELECT DISTINCT c.id, c.audience, c.filter_province, c.name FROM outbox o \
         JOIN campaigns c ON c.id = o.campaign_id WHERE o.claim_token = $1",
    )
    .bind(token)
    .fetch_all(&mut *conn)
    .await?;
    let campaigns: Vec<(i64, Audience, Option<String>, String)> = campaigns
        .iter()
        .map(|row| {
            let audience: Audience = row
                .get::<String, _>(1)
                .parse()
                .map_err(|e: crate::audience::UnknownAudience| sqlx::Error::Decode(e.into()))?;
            Ok((row.get(0), audience, row.get(2), row.get(3)))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let mut skipped: Vec<(String, u64)> = Vec::new();
    // A suppressed address with no institutional one to fall back to: every row of the user is
    // skipped (all the sections of a digest alike), before the sections are looked at.
    for campaign_id in skip_suppressed(conn, token, now).await? {
        if let Some((_, _, _, name)) = campaigns.iter().find(|c| c.0 == campaign_id) {
            match skipped.iter_mut().find(|(c, _)| c == name) {
                Some((_, total)) => *total += 1,
                None => skipped.push((name.clone(), 1)),
            }
        }
    }
    // Without digests in the batch, one statement per campaign as before. With them, a section
    // is dropped on its own: the followers first, then the leads that carry no section any more
    // (a lead whose own section is dropped still carries the others' email).
    let passes: &[&str] = match followers {
        0 => &[""],
        _ => &[
            " AND digest_of IS NOT NULL AND digest_of <> id",
            " AND (digest_of IS NULL OR digest_of = id) AND NOT EXISTS (SELECT 1 FROM outbox f \
               WHERE f.digest_of = outbox.id AND f.id <> outbox.id AND f.claim_token = $1)",
        ],
    };
    // Who opted out of a row's stream since it was planned: the same, by the same passes.
    let mut dropped: Vec<(i64, &'static str)> = Vec::new();
    if optout::any(&mut *conn).await? {
        for which in passes {
            for campaign_id in optout::skip_opted_out(conn, token, which, now).await? {
                if let Some((_, _, _, name)) = campaigns.iter().find(|c| c.0 == campaign_id) {
                    match skipped.iter_mut().find(|(c, _)| c == name) {
                        Some((_, total)) => *total += 1,
                        None => skipped.push((name.clone(), 1)),
                    }
                }
            }
        }
        if followers > 0 {
            let leads = optout::opted_out_leads(conn, token).await?;
            dropped.extend(leads.into_iter().map(|id| (id, optout::REASON)));
        }
    }
    let passes: &[&str] = match followers {
        0 => &[""],
        _ => &[
            " AND digest_of IS NOT NULL AND digest_of <> id",
            " AND (digest_of IS NULL OR digest_of = id) AND NOT EXISTS (SELECT 1 FROM outbox f \
               WHERE f.digest_of = outbox.id AND f.id <> outbox.id AND f.claim_token = $1)",
        ],
    };
    for which in passes {
        for (id, audience, province, name) in &campaigns {
            let sql = format!(
                "UPDATE outbox SET state = 'skipped', reason = $3, claim_token = NULL, lease_until = NULL, \
                    updated_at = $4 \
                 WHERE claim_token = $1 AND campaign_id = $2{which} AND NOT EXISTS \
                    (SELECT 1 FROM users u WHERE u.user_id = outbox.user_id AND {})",
                audience.condition_in(5),
            );
            let n = sqlx::query(&sql)
                .bind(token)
                .bind(*id)
                .bind(audience.left_reason())
                .bind(now.timestamp())
                .bind(province.clone())
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if n > 0 {
                match skipped.iter_mut().find(|(c, _)| c == name) {
                    Some((_, total)) => *total += n,
                    None => skipped.push((name.clone(), n)),
                }
            }
        }
    }
    // The leads still carrying others' sections whose own section is dropped.
    if followers > 0 {
        for (id, audience, province, _) in &campaigns {
            let sql = format!(
                "SELECT o.id FROM outbox o WHERE o.claim_token = $1 AND o.campaign_id = $2 \
                   AND o.digest_of = o.id AND NOT EXISTS \
                   (SELECT 1 FROM users u WHERE u.user_id = o.user_id AND {})",
                audience.condition_in(3),
            );
            let ids: Vec<i64> = sqlx::query_scalar(&sql)
                .bind(token)
                .bind(*id)
                .bind(province.clone())
                .fetch_all(&mut *conn)
                .await?;
            dropped.extend(ids.into_iter().map(|i| (i, audience.left_reason())));
        }
    }

    // The recipient is decided now, from the snapshot and the suppression list as they are.
    let rows = sqlx::query(&format!(
        "SELECT {OUTBOX_COLUMNS}, {CONTACT_COLUMNS}, {recipient} AS recipient, \
            CAST(CASE WHEN {fallback} THEN 1 ELSE 0 END AS BIGINT) AS fallback \
         FROM outbox o JOIN campaigns c ON c.id = o.campaign_id JOIN users u ON u.user_id = o.user_id \
         WHERE o.claim_token = $1 ORDER BY o.id",
        recipient = suppression::recipient_sql(),
        fallback = suppression::fallback_sql(),
    ))
    .bind(token)
    .fetch_all(&mut *conn)
    .await?;
    let mut claimed: Vec<Claimed> = rows
        .iter()
        .map(claimed_from_row)
        .collect::<Result<_, _>>()?;
    for row in &mut claimed {
        row.section_dropped = dropped
            .iter()
            .find(|(id, _)| *id == row.id)
            .map(|(_, reason)| *reason);
    }
    Ok((claimed, skipped))
}

/// The send-time check of the suppression list: the rows claimed by `token` whose user cannot
/// be written to (address on record suppressed, no usable institutional address) are skipped
/// with the reason `suppressed`. Returns the campaign of each row skipped. One statement for
/// the whole batch, all the sections of a digest alike.
pub(crate) async fn skip_suppressed(
    conn: &mut AnyConnection,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Vec<i64>, sqlx::Error> {
    let sql = format!(
        "UPDATE outbox SET state = 'skipped', reason = $2, claim_token = NULL, lease_until = NULL, \
            updated_at = $3 \
         WHERE claim_token = $1 AND EXISTS \
            (SELECT 1 FROM users u WHERE u.user_id = outbox.user_id AND {}) \
         RETURNING campaign_id",
        suppression::unreachable_sql(),
    );
    sqlx::query_scalar(&sql)
        .bind(token)
        .bind(suppression::REASON)
        .bind(now.timestamp())
        .fetch_all(&mut *conn)
        .await
}

/// The statement that claims, for the token `$1`, the other rows of the digests whose leads it
/// claimed: those of running campaigns (a paused campaign's section waits for a later email;
/// an expired one is left to expire). A follower still `sending` was claimed with its lead by a
/// process that died: the lead is ours now.
///
/// The rows are found through the digest index, by their leads. On SQLite, which plans without
/// statistics, `+state` keeps the (state, ...) index out of it: through that index the statement
/// walked every pending row of the queue on every claim.
fn followers_sql(backend: Backend, hold_reminders: bool) -> String {
    let plus = match backend {
        Backend::Sqlite => "+",
        Backend::Postgres => "",
    };
    format!(
        "UPDATE outbox SET state = 'sending', claim_token = $1, lease_until = {lease_now} + $2, \
            attempts = attempts + 1, updated_at = $3 \
         WHERE digest_of IS NOT NULL \
           AND digest_of IN (SELECT l.id FROM outbox l WHERE l.claim_token = $1 AND l.digest_of = l.id) \
           AND digest_of <> id AND {plus}state IN ('pending', 'sending') \
           AND (expires_at IS NULL OR expires_at > $3) \
           AND campaign_id IN (SELECT c.id FROM campaigns c WHERE c.state = 'running'{held})",
        lease_now = backend.lease_now(),
        // On a stale snapshot a reminder's section waits, whatever email it was merged into.
        held = held_back(hold_reminders),
    )
}

/// SQL on `campaigns c`: leaves the reminders out while the snapshot is too old to remind anyone.
fn held_back(hold_reminders: bool) -> &'static str {
    match hold_reminders {
        true => " AND c.kind <> 'reminder'",
        false => "",
    }
}

/// Rows claimed by a daemon whose lease is over (it died): few, and first.
fn stale_rows(backend: Backend) -> String {
    format!(
        "o.state = 'sending' AND o.lease_until < {}",
        backend.lease_now()
    )
}
/// Rows due now.
const DUE: &str = "o.state = 'pending' AND o.next_attempt_at <= $3";

/// One claim's parameters, shared by its statements.
struct Claim<'a> {
    backend: Backend,
    token: &'a str,
    now: DateTime<Utc>,
    lease_seconds: u64,
    hold_reminders: bool,
}

/// Claims up to `limit` rows of running campaigns matching `what`, in queue order.
async fn claim_where(
    conn: &mut AnyConnection,
    what: &str,
    claim: &Claim<'_>,
    limit: u64,
) -> Result<u64, sqlx::Error> {
    let sql = claim_where_sql(claim.backend, what, claim.hold_reminders);
    Ok(sqlx::query(&sql)
        .bind(claim.token)
        .bind(claim.lease_seconds as i64)
        .bind(claim.now.timestamp())
        .bind(limit as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// The statement of [`claim_where`]: `$1` token, `$2` lease seconds, `$3` now, `$4` limit.
fn claim_where_sql(backend: Backend, what: &str, hold_reminders: bool) -> String {
    let lease_now = backend.lease_now();
    let lock = match backend {
        Backend::Postgres => "FOR UPDATE OF o SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let held = held_back(hold_reminders);
    format!(
        "UPDATE outbox SET state = 'sending', claim_token = $1, lease_until = {lease_now} + $2, \
            attempts = attempts + 1, updated_at = $3 \
         WHERE id IN (SELECT o.id FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
            WHERE c.state = 'running' AND {what}{held} \
              AND (o.expires_at IS NULL OR o.expires_at > $3) \
              AND (o.digest_of IS NULL OR o.digest_of = o.id) \
            ORDER BY o.next_attempt_at, o.id LIMIT $4 {lock})"
    )
}

/// The outbox row's columns that [`claimed_from_row`] reads by name, besides the user's
/// ([`CONTACT_COLUMNS`]), `recipient` and `fallback`.
pub const OUTBOX_COLUMNS: &str = "o.id, c.name AS campaign, o.step, o.template, o.message_id, \
                              o.attempts, o.expires_at, o.digest_of, c.stream, c.transactional";

/// The first user of the campaign's audience (by user id) as a row to render, as if planned:
/// step `main`, recipient the address on record, `message_id` as given. Nothing is written.
pub(crate) async fn first_recipient(
    db: &Db,
    c: &Campaign,
    message_id: &str,
) -> Result<Option<Claimed>, sqlx::Error> {
    let sql = format!(
        "SELECT CAST(0 AS BIGINT) AS id, $2 AS campaign, 'main' AS step, $3 AS template, \
            $4 AS message_id, CAST(0 AS BIGINT) AS attempts, CAST($5 AS BIGINT) AS expires_at, \
            CAST(NULL AS BIGINT) AS digest_of, $6 AS stream, $7 AS transactional, \
            {CONTACT_COLUMNS}, u.email AS recipient, \
            CAST(0 AS BIGINT) AS fallback FROM users u WHERE {} ORDER BY u.user_id LIMIT 1",
        c.audience.condition_in(1)
    );
    let row = sqlx::query(&sql)
        .bind(c.filter_province.clone())
        .bind(&c.name)
        .bind(&c.template)
        .bind(message_id)
        .bind(c.expires_at.map(|t| t.timestamp()))
        .bind(c.stream.key())
        .bind(c.transactional.clone())
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(claimed_from_row).transpose()
}

/// Decodes a row selected as [`claim`]'s final query selects it: [`OUTBOX_COLUMNS`],
/// [`CONTACT_COLUMNS`], `recipient` and `fallback`, by name.
pub fn claimed_from_row(r: &AnyRow) -> Result<Claimed, sqlx::Error> {
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
            "SELECT c.name, COUNT(*) FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
             WHERE o.state = 'failed' AND $1 IS NOT NULL AND $2 IS NOT NULL \
               AND (o.id IN ({list}) OR o.digest_of IN ({list})) GROUP BY c.name"
        );
        let mut q = sqlx::query(&per_campaign).bind(now.timestamp()).bind(event);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *tx).await? {
            *back.entry(row.get::<String, _>(0)).or_default() += row.get::<i64, _>(1) as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan of `sql` (the `detail` lines), parameters bound to NULL.
    async fn plan_of(db: &Db, sql: &str, params: usize) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(&explain);
        for _ in 0..params {
            q = q.bind(None::<i64>);
        }
        q.fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect()
    }

    /// The statements a claim runs on every batch find their rows through an index chosen for
    /// them, never by walking the queue: SQLite plans without statistics, and a statement that
    /// walks every pending row on every claim slows delivery in proportion to the queue.
    #[tokio::test]
    async fn the_claim_statements_do_not_walk_the_queue_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}/plan.db", dir.path().display()), 1)
            .await
            .unwrap();
        for hold in [false, true] {
            let plan = plan_of(&db, &followers_sql(Backend::Sqlite, hold), 3).await;
            assert!(
                plan.iter()
                    .any(|l| l.contains("SEARCH outbox USING INDEX outbox_digest")),
                "the digest's followers are not found by their lead: {plan:#?}"
            );
            assert!(
                !plan.iter().any(|l| l.contains("outbox_due")),
                "the digest's followers walk the queue: {plan:#?}"
            );
            let plan = plan_of(&db, &claim_where_sql(Backend::Sqlite, DUE, hold), 4).await;
            assert!(
                plan.iter().any(|l| l
                    .contains("SEARCH o USING INDEX outbox_due (state=? AND next_attempt_at<?)")),
                "the due rows are not claimed in queue order: {plan:#?}"
            );
            assert!(
                !plan.iter().any(|l| l.contains("TEMP B-TREE")),
                "the claim sorts the queue: {plan:#?}"
            );
        }
    }
}
