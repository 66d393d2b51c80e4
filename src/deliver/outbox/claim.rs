//! Claiming a batch: the due rows (a dead daemon's first), the rows of their digests with
//! them, the rows whose user no longer qualifies skipped, and the rest read back to render.

use super::*;

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

/// What a claim got: the rows to send, the rows skipped per campaign, and how many rows went
/// back to wait for their domain's hold (see `deliver::hold`).
pub(crate) type ClaimedBatch = (Vec<Claimed>, Vec<(String, u64)>, u64);

/// Claims up to `limit` due rows of running campaigns for `token`, for `lease_seconds` on the
/// database's clock, skips the ones whose user no longer qualifies, holds back those whose
/// recipient's domain is held, and returns the rest with the skips per campaign.
pub(crate) async fn claim(
    conn: &mut AnyConnection,
    request: &ClaimRequest<'_>,
) -> Result<ClaimedBatch, sqlx::Error> {
    let (token, now) = (request.token, request.now);
    if claim_leads(conn, request).await? == 0 {
        return Ok((Vec::new(), Vec::new(), 0));
    }
    // The other rows of the claimed digests travel with their lead.
    let followers = sqlx::query(&followers_sql(request.backend, request.hold_reminders))
        .bind(token)
        .bind(request.lease_seconds as i64)
        .bind(now.timestamp())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    // The user must still qualify now, by the same rule that planned the row.
    let campaigns = claimed_campaigns(conn, token).await?;
    let mut skipped: Vec<(String, u64)> = Vec::new();
    // A suppressed address with no institutional one to fall back to: every row of the user is
    // skipped (all the sections of a digest alike), before the sections are looked at.
    for campaign_id in skip_suppressed(conn, token, now).await? {
        if let Some(c) = campaigns.iter().find(|c| c.id == campaign_id) {
            add_skipped(&mut skipped, &c.name, 1);
        }
    }
    // Who opted out of a row's stream since it was planned: skipped by the same passes.
    let mut dropped = Vec::new();
    if optout::any(&mut *conn).await? {
        for which in passes(followers > 0) {
            for campaign_id in optout::skip_opted_out(conn, token, which, now).await? {
                if let Some(c) = campaigns.iter().find(|c| c.id == campaign_id) {
                    add_skipped(&mut skipped, &c.name, 1);
                }
            }
        }
        if followers > 0 {
            let leads = optout::opted_out_leads(conn, token).await?;
            dropped.extend(leads.into_iter().map(|id| (id, optout::REASON)));
        }
    }
    skip_unqualified(conn, request, &campaigns, followers > 0, &mut skipped).await?;
    if followers > 0 {
        dropped.extend(dropped_sections(conn, token, &campaigns).await?);
    }
    let claimed = claimed_rows(conn, token, &dropped).await?;
    // A held domain's rows (a digest's alike: one recipient) wait for its hold, untried. Their
    // next attempt is the hold's end: each is claimed once per hold, not at every batch.
    let (claimed, held) =
        crate::deliver::hold::hold_back(conn, token, claimed, |r| (r.id, &r.recipient), now)
            .await?;
    Ok((claimed, skipped, held))
}

/// Claims the leads of digests and the rows sent alone; returns how many.
///
/// Two statements, not one with an OR: each walks an index in queue order and stops at the
/// limit, where the OR made SQLite collect and sort the whole queue on every claim. First the
/// rows of a daemon that died (their lease is over: few), then the due ones.
async fn claim_leads(
    conn: &mut AnyConnection,
    request: &ClaimRequest<'_>,
) -> Result<u64, sqlx::Error> {
    let claim = Claim {
        backend: request.backend,
        token: request.token,
        now: request.now,
        lease_seconds: request.lease_seconds,
        hold_reminders: request.hold_reminders,
    };
    let limit = u64::from(request.limit);
    let stale = match request.stale {
        true => claim_where(conn, &stale_rows(request.backend), &claim, limit).await?,
        false => 0,
    };
    let due = match limit - stale.min(limit) {
        0 => 0,
        left => claim_where(conn, DUE, &claim, left).await?,
    };
    Ok(stale + due)
}

/// A campaign with rows in the claim, and the rule its users must still meet.
struct ClaimedCampaign {
    id: i64,
    audience: Audience,
    province: Option<String>,
    name: String,
}

/// The campaigns of the rows claimed by `token`.
async fn claimed_campaigns(
    conn: &mut AnyConnection,
    token: &str,
) -> Result<Vec<ClaimedCampaign>, sqlx::Error> {
    let campaigns = sqlx::query(
        "SELECT DISTINCT c.id, c.audience, c.filter_province, c.name FROM outbox o \
         JOIN campaigns c ON c.id = o.campaign_id WHERE o.claim_token = $1",
    )
    .bind(token)
    .fetch_all(&mut *conn)
    .await?;
    campaigns
        .iter()
        .map(|row| {
            let audience: Audience = row
                .get::<String, _>("audience")
                .parse()
                .map_err(|e: crate::audience::UnknownAudience| sqlx::Error::Decode(e.into()))?;
            Ok(ClaimedCampaign {
                id: row.get("id"),
                audience,
                province: row.get("filter_province"),
                name: row.get("name"),
            })
        })
        .collect()
}

/// Counts `n` more rows of campaign `name` skipped.
fn add_skipped(skipped: &mut Vec<(String, u64)>, name: &str, n: u64) {
    match skipped.iter_mut().find(|(c, _)| c == name) {
        Some((_, total)) => *total += n,
        None => skipped.push((name.to_string(), n)),
    }
}

/// The claimed rows a skip looks at, in turn: all at once without digests in the batch; with
/// them, the followers first, then the leads that carry no other section still claimed.
fn passes(digests: bool) -> &'static [&'static str] {
    match digests {
        false => &[""],
        true => &[
            " AND digest_of IS NOT NULL AND digest_of <> id",
            " AND (digest_of IS NULL OR digest_of = id) AND NOT EXISTS (SELECT 1 FROM outbox f \
               WHERE f.digest_of = outbox.id AND f.id <> outbox.id AND f.claim_token = $1)",
        ],
    }
}

/// Skips the claimed rows whose user no longer meets their campaign's rule.
///
/// Without digests in the batch, one statement per campaign. With them, a section is dropped
/// on its own: the followers first, then the leads that carry no section any more (a lead whose
/// own section is dropped still carries the others' email).
async fn skip_unqualified(
    conn: &mut AnyConnection,
    request: &ClaimRequest<'_>,
    campaigns: &[ClaimedCampaign],
    digests: bool,
    skipped: &mut Vec<(String, u64)>,
) -> Result<(), sqlx::Error> {
    for which in passes(digests) {
        for c in campaigns {
            let sql = format!(
                "UPDATE outbox SET state = 'skipped', reason = $3, claim_token = NULL, lease_until = NULL, \
                    updated_at = $4 \
                 WHERE claim_token = $1 AND campaign_id = $2{which} AND NOT EXISTS \
                    (SELECT 1 FROM users u WHERE u.user_id = outbox.user_id AND {})",
                c.audience.condition_in(5),
            );
            let n = sqlx::query(&sql)
                .bind(request.token)
                .bind(c.id)
                .bind(c.audience.left_reason())
                .bind(request.now.timestamp())
                .bind(c.province.clone())
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if n > 0 {
                add_skipped(skipped, &c.name, n);
            }
        }
    }
    Ok(())
}

/// The leads still carrying others' sections whose own section is dropped, with the reason.
async fn dropped_sections(
    conn: &mut AnyConnection,
    token: &str,
    campaigns: &[ClaimedCampaign],
) -> Result<Vec<(i64, &'static str)>, sqlx::Error> {
    let mut dropped = Vec::new();
    for c in campaigns {
        let sql = format!(
            "SELECT o.id FROM outbox o WHERE o.claim_token = $1 AND o.campaign_id = $2 \
               AND o.digest_of = o.id AND NOT EXISTS \
               (SELECT 1 FROM users u WHERE u.user_id = o.user_id AND {})",
            c.audience.condition_in(3),
        );
        let ids: Vec<i64> = sqlx::query_scalar(&sql)
            .bind(token)
            .bind(c.id)
            .bind(c.province.clone())
            .fetch_all(&mut *conn)
            .await?;
        dropped.extend(ids.into_iter().map(|i| (i, c.audience.left_reason())));
    }
    Ok(dropped)
}

/// The rows still claimed by `token`, in id order, with their recipient decided now from the
/// snapshot and the suppression list as they are.
async fn claimed_rows(
    conn: &mut AnyConnection,
    token: &str,
    dropped: &[(i64, &'static str)],
) -> Result<Vec<Claimed>, sqlx::Error> {
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
    Ok(claimed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite_query_plan;

    /// The statements a claim runs on every batch find their rows through an index chosen for
    /// them, never by walking the queue: SQLite plans without statistics, and a statement that
    /// walks every pending row on every claim slows delivery in proportion to the queue.
    #[tokio::test]
    async fn the_claim_statements_do_not_walk_the_queue_on_sqlite() {
        for hold in [false, true] {
            let plan = sqlite_query_plan(&followers_sql(Backend::Sqlite, hold), &[None; 3]).await;
            assert!(
                plan.iter()
                    .any(|l| l.contains("SEARCH outbox USING INDEX outbox_digest")),
                "the digest's followers are not found by their lead: {plan:#?}"
            );
            assert!(
                !plan.iter().any(|l| l.contains("outbox_due")),
                "the digest's followers walk the queue: {plan:#?}"
            );
            let plan =
                sqlite_query_plan(&claim_where_sql(Backend::Sqlite, DUE, hold), &[None; 4]).await;
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
