//! The daily digest in the outbox: which rows travel together as one email.
//!
//! The outbox stays one row per (campaign, user, step). Rows merged into one email share the
//! Message-ID of their lead and point to it in `digest_of`; the lead points to itself, a row sent
//! alone has NULL. Only leads and rows sent alone are claimed; their followers are claimed with
//! them (see `deliver::outbox`). The lead is the row that expires last, so a group never
//! outlives its lead.
//!
//! A lead can leave the queue without its group: superseded by a later step of its campaign,
//! or cancelled with it. Its followers still pending would then wait for a lead that never
//! comes: [`repair_orphans`] gives them a new lead among themselves, keeping the Message-ID
//! (an earlier attempt of the group may have reached the recipient with it).

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

/// Regroups the pending followers whose lead left the queue unsent; `campaign`: only the
/// followers of that campaign's leads. Returns the rows regrouped.
pub(crate) async fn repair_orphans(
    conn: &mut AnyConnection,
    campaign: Option<i64>,
) -> Result<u64, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT f.id, f.digest_of FROM outbox f JOIN outbox l ON l.id = f.digest_of \
         WHERE f.digest_of IS NOT NULL AND f.digest_of <> f.id AND f.state = 'pending' \
           AND l.state NOT IN ('pending', 'sending') AND ($1 IS NULL OR l.campaign_id = $1) \
         ORDER BY f.digest_of, f.id",
    )
    .bind(campaign)
    .fetch_all(&mut *conn)
    .await?;
    let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in &rows {
        groups
            .entry(r.get("digest_of"))
            .or_default()
            .push(r.get("id"));
    }
    let mut regrouped = 0;
    for (old_lead, followers) in groups {
        // One row left is an email of its own; several keep travelling together.
        let new_lead = (followers.len() > 1).then_some(followers[0]);
        regrouped += sqlx::query(
            "UPDATE outbox SET digest_of = $1 \
             WHERE digest_of = $2 AND id <> $2 AND state = 'pending'",
        )
        .bind(new_lead)
        .bind(old_lead)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    if regrouped > 0 {
        tracing::info!(regrouped, "digest rows whose lead left the queue regrouped");
    }
    Ok(regrouped)
}

/// Takes the pending rows of paused campaign `campaign` out of their digests, so that a pause
/// holds only its own sections: the other rows of a digest it led get a new lead among
/// themselves (the one expiring last, as [`merge`] picks; one row left goes alone) and keep the
/// digest's Message-ID; its own rows go alone, under a Message-ID of their own when never
/// attempted (the digest may reach the person with the old one before the campaign resumes).
/// Rows being sent (`sending`) are left alone: the sender hands them back and this runs again.
/// Returns the rows moved.
pub(crate) async fn leave(conn: &mut AnyConnection, campaign: i64) -> Result<u64, sqlx::Error> {
    let order = "PARTITION BY f.digest_of \
                 ORDER BY COALESCE(f.expires_at, 9223372036854775807) DESC, f.id";
    let regrouped = sqlx::query(&format!(
        "WITH f AS (SELECT f.id, COUNT(*) OVER (PARTITION BY f.digest_of) AS n, \
                FIRST_VALUE(f.id) OVER ({order}) AS lead \
             FROM outbox f JOIN outbox l ON l.id = f.digest_of \
             WHERE l.campaign_id = $1 AND l.digest_of = l.id AND l.state = 'pending' \
               AND f.id <> l.id AND f.state = 'pending' AND f.campaign_id <> $1) \
         UPDATE outbox SET digest_of = CASE WHEN f.n > 1 THEN f.lead ELSE NULL END \
         FROM f WHERE outbox.id = f.id"
    ))
    .bind(campaign)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // `<` occurs once in a Message-ID: the row's id after it makes the ID its own.
    let alone = sqlx::query(
        "UPDATE outbox SET digest_of = NULL, \
            message_id = CASE WHEN attempts = 0 \
                THEN REPLACE(message_id, '<', '<held' || CAST(id AS TEXT) || '.') \
                ELSE message_id END \
         WHERE campaign_id = $1 AND state = 'pending' AND digest_of IS NOT NULL",
    )
    .bind(campaign)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if regrouped + alone > 0 {
        tracing::info!(
            campaign,
            regrouped,
            alone,
            "paused campaign's rows taken out of their digests"
        );
    }
    Ok(regrouped + alone)
}

/// Merges the rows of one person falling due before `day_end` (the end of the local day) into
/// one email each: pending, never attempted (an attempted row may have reached the recipient
/// with its own Message-ID), of running campaigns that merge (`campaigns.digest`: an operator's
/// one-off campaign is an email of its own). An existing lead stays the lead; otherwise the row expiring last, then the
/// oldest. Returns the rows that joined a digest now.
pub(crate) async fn merge(conn: &mut AnyConnection, day_end: i64) -> Result<u64, sqlx::Error> {
    // Set-based, no per-row lookups (there is no index by user): first the people with more
    // than one candidate, grouped on the user id alone, then the window over their rows only.
    // Most people have one row, and the window (which carries the Message-IDs through its
    // sort) is what costs. The rows planned by this pass are not visible to claimers yet; an
    // older candidate claimed meanwhile (PostgreSQL) is left as it is by the state check,
    // re-read under the row lock.
    let candidate = "o.state = 'pending' AND o.next_attempt_at < $1 AND o.attempts = 0 \
                     AND (o.digest_of IS NULL OR o.digest_of = o.id) \
                     AND c.state = 'running' AND c.digest = 1";
    let order = "PARTITION BY o.user_id ORDER BY CASE WHEN o.digest_of IS NULL THEN 1 ELSE 0 END, \
                 COALESCE(o.expires_at, 9223372036854775807) DESC, o.id";
    let sql = format!(
        "WITH several AS (SELECT o.user_id FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
                WHERE {candidate} GROUP BY o.user_id HAVING COUNT(*) > 1), \
            grp AS (SELECT o.id, \
                FIRST_VALUE(o.id) OVER ({order}) AS lead, \
                FIRST_VALUE(o.message_id) OVER ({order}) AS lead_message_id \
             FROM outbox o JOIN campaigns c ON c.id = o.campaign_id \
             WHERE {candidate} AND o.user_id IN (SELECT user_id FROM several)) \
         UPDATE outbox SET digest_of = grp.lead, message_id = grp.lead_message_id \
         FROM grp WHERE outbox.id = grp.id \
           AND (outbox.digest_of IS NULL OR outbox.digest_of <> grp.lead) \
           AND outbox.state = 'pending' AND outbox.attempts = 0"
    );
    Ok(sqlx::query(&sql)
        .bind(day_end)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Whether any row of a merging campaign is pending: then a planning pass merges with the
/// general [`merge`]; otherwise its rows are all there is to merge, and they are written
/// already grouped (see `plan::lead_order`, [`unmark_lone_leads`]). From the outbox's counts, not a scan.
pub(crate) async fn any_pending(conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT 1 FROM outbox_counts k JOIN campaigns c ON c.id = k.campaign_id \
         WHERE c.digest = 1 AND k.state = 'pending' \
         GROUP BY k.campaign_id HAVING SUM(k.n) > 0 LIMIT 1",
    )
    .fetch_optional(conn)
    .await?
    .is_some())
}

/// Sends alone every row of this pass (`created_at` = `now`, in `campaigns`) written as a lead
/// that no row follows: the pass writes a row as a lead when a campaign planned after it takes
/// the same person (see `plan`), and that campaign's row may not have come (the address
/// suppressed, the person opted out, the step planned before). Returns the rows sent alone.
pub(crate) async fn unmark_lone_leads(
    conn: &mut AnyConnection,
    campaigns: &[i64],
    now: i64,
) -> Result<u64, sqlx::Error> {
    if campaigns.is_empty() {
        return Ok(0);
    }
    let campaigns = campaigns
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // Through the index of the rows in a digest (`+` keeps SQLite off the campaigns' key,
    // which would read every row of theirs: twice the time at the mission's size).
    Ok(sqlx::query(&format!(
        "UPDATE outbox SET digest_of = NULL \
         WHERE digest_of IS NOT NULL AND digest_of = id AND +campaign_id IN ({campaigns}) \
           AND created_at = $1 AND NOT EXISTS (SELECT 1 FROM outbox f WHERE f.digest_of = outbox.id AND f.id <> outbox.id)"
    ))
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Skips the rows of `campaign`'s `step` still alone after the merge (not in a digest): that step
/// goes out only inside a digest (`calendar.cadence.only_in_digest`). Returns the rows skipped.
pub(crate) async fn skip_alone(
    conn: &mut AnyConnection,
    campaign: i64,
    step: crate::config::Step,
    now: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE outbox SET state = 'skipped', reason = $3, updated_at = $4 \
         WHERE campaign_id = $1 AND step = $2 AND state = 'pending' AND digest_of IS NULL \
           AND attempts = 0",
    )
    .bind(campaign)
    .bind(step.to_string())
    .bind(ONLY_IN_DIGEST)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Why a row of a step sent only inside a digest was not sent.
pub(crate) const ONLY_IN_DIGEST: &str =
    "sent only inside a daily digest (calendar.cadence.only_in_digest), and nothing else was due that day";
