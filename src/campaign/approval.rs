//! A second person's approval of a one-off campaign: the decisions, the audience each approval
//! froze, and the comparison a launch makes with the audience as it is then.
//!
//! An approval freezes the audience three ways: its size, the SHA-256 of its user ids sorted
//! (sorted here, in Rust, so that both backends agree whatever their collation), and the ids
//! themselves (`approval_members`), from which a launch counts how many were added and removed.
//! Every function works on the caller's connection: the application layer runs them in the
//! transaction that also writes the audit row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::Campaign;
use crate::store::timestamp;

/// The audience as a launch or an approval sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    pub size: u64,
    /// Hex SHA-256 of the sorted user ids, each followed by a newline.
    pub sha256: String,
}

/// The campaign's audience now, on `conn`.
pub async fn fingerprint(
    conn: &mut AnyConnection,
    c: &Campaign,
) -> Result<Fingerprint, sqlx::Error> {
    let sql = format!(
        "SELECT u.user_id FROM users u WHERE {}",
        c.audience.condition_in(1)
    );
    let mut ids: Vec<String> = sqlx::query_scalar(&sql)
        .bind(c.filter_province.clone())
        .fetch_all(conn)
        .await?;
    ids.sort_unstable();
    let mut hash = Sha256::new();
    for id in &ids {
        hash.update(id.as_bytes());
        hash.update(b"\n");
    }
    Ok(Fingerprint {
        size: ids.len() as u64,
        sha256: format!("{:x}", hash.finalize()),
    })
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approved,
    Rejected,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
        }
    }
}

/// One decision on a campaign.
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub id: i64,
    pub decision: Decision,
    pub decided_by: String,
    pub decided_at: Option<DateTime<Utc>>,
    /// A rejection's reason.
    pub reason: Option<String>,
    /// The audience frozen by an approval (none for a rejection).
    pub audience: Option<Fingerprint>,
    /// Set when a launch found the audience changed: a new approval is needed.
    pub stale_at: Option<DateTime<Utc>>,
}

fn from_row(r: &AnyRow) -> Result<Approval, sqlx::Error> {
    let decision: String = r.try_get("decision")?;
    let decision = match decision.as_str() {
        "approved" => Decision::Approved,
        "rejected" => Decision::Rejected,
        other => {
            return Err(sqlx::Error::Decode(
                format!("unknown approval decision `{other}` in the database").into(),
            ))
        }
    };
    let size: Option<i64> = r.try_get("audience_size")?;
    let sha256: Option<String> = r.try_get("audience_sha256")?;
    Ok(Approval {
        id: r.try_get("id")?,
        decision,
        decided_by: r.try_get("decided_by")?,
        decided_at: timestamp(r.try_get("decided_at")?),
        reason: r.try_get("reason")?,
        audience: size.zip(sha256).map(|(size, sha256)| Fingerprint {
            size: size as u64,
            sha256,
        }),
        stale_at: timestamp(r.try_get("stale_at")?),
    })
}

/// The latest decision on campaign `campaign_id`: the one that counts.
pub async fn latest(
    conn: &mut AnyConnection,
    campaign_id: i64,
) -> Result<Option<Approval>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, decision, decided_by, decided_at, reason, audience_size, audience_sha256, \
            stale_at FROM campaign_approvals WHERE campaign_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(campaign_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Records an approval of `c` by `by` freezing `audience` (which the caller computed on this
/// connection) and its rendered `samples` (JSON); the audience's ids are copied beside it, in
/// place of those of the campaign's earlier approvals.
pub(crate) async fn approve(
    conn: &mut AnyConnection,
    c: &Campaign,
    by: &str,
    audience: &Fingerprint,
    samples: &str,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO campaign_approvals (campaign_id, decision, decided_by, decided_at, \
            audience_size, audience_sha256, samples) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(c.id)
    .bind(Decision::Approved.as_str())
    .bind(by)
    .bind(now.timestamp())
    .bind(audience.size as i64)
    .bind(&audience.sha256)
    .bind(samples)
    .fetch_one(&mut *conn)
    .await?;
    // Only the latest approval is compared with at launch: the ids of earlier ones (up to the
    // whole user base each) are dropped; their size and hash stay.
    sqlx::query(
        "DELETE FROM approval_members WHERE approval_id IN \
           (SELECT id FROM campaign_approvals WHERE campaign_id = $1 AND id <> $2)",
    )
    .bind(c.id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO approval_members (approval_id, user_id) \
         SELECT $2, u.user_id FROM users u WHERE {}",
        c.audience.condition_in(1)
    ))
    .bind(c.filter_province.clone())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Records a rejection of `c` by `by` with its reason.
pub(crate) async fn reject(
    conn: &mut AnyConnection,
    c: &Campaign,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO campaign_approvals (campaign_id, decision, decided_by, decided_at, reason) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(c.id)
    .bind(Decision::Rejected.as_str())
    .bind(by)
    .bind(now.timestamp())
    .bind(reason)
    .fetch_one(conn)
    .await
}

/// Marks approval `id` stale: the audience it froze is no longer the campaign's.
pub(crate) async fn mark_stale(
    conn: &mut AnyConnection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE campaign_approvals SET stale_at = $2 WHERE id = $1 AND stale_at IS NULL")
        .bind(id)
        .bind(now.timestamp())
        .execute(conn)
        .await?;
    Ok(())
}

/// How the audience of `c` now differs from the one approval `id` froze: users added, removed.
pub async fn difference(
    conn: &mut AnyConnection,
    c: &Campaign,
    id: i64,
) -> Result<(u64, u64), sqlx::Error> {
    let cond = c.audience.condition_in(1);
    let added: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM users u WHERE {cond} AND NOT EXISTS \
            (SELECT 1 FROM approval_members m WHERE m.approval_id = $2 AND m.user_id = u.user_id)"
    ))
    .bind(c.filter_province.clone())
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let removed: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM approval_members m WHERE m.approval_id = $2 AND NOT EXISTS \
            (SELECT 1 FROM users u WHERE u.user_id = m.user_id AND {cond})"
    ))
    .bind(c.filter_province.clone())
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok((added as u64, removed as u64))
}

/// Why an approval, a rejection or a launch was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("campaign `{name}` was created by {creator}: someone else must approve or reject it")]
    OwnCampaign { name: String, creator: String },
    #[error("campaign `{name}` is {state}: only a draft campaign can be approved or rejected")]
    NotADraft { name: String, state: String },
    #[error(
        "campaign `{name}` is a reminder campaign, started by the calendar: it needs no approval"
    )]
    Reminder { name: String },
    #[error("campaign `{0}` has not been approved: another person must run `avvisi campaign approve {0}` first")]
    NotApproved(String),
    #[error("campaign `{name}` was rejected by {by}: {reason}; it needs a new approval (`avvisi campaign approve {name}`)")]
    Rejected {
        name: String,
        by: String,
        reason: String,
    },
    #[error("campaign `{0}`: its approval is stale (the audience changed after it); it needs a new approval (`avvisi campaign approve {0}`)")]
    Stale(String),
    #[error("campaign `{name}`: the audience changed since its approval by {by}: {before} users then, {after} now ({added} added, {removed} removed); nothing was launched, the approval is now stale: it needs a new approval (`avvisi campaign approve {name}`)")]
    AudienceChanged {
        name: String,
        by: String,
        before: u64,
        after: u64,
        added: u64,
        removed: u64,
    },
    #[error("campaign `{name}`: the audience changed while the approval was being read ({shown} shown, {now} users now); nothing was recorded, run the approval again")]
    ChangedWhileReading { name: String, shown: u64, now: u64 },
    #[error("a rejection needs a reason (--reason TEXT)")]
    NoReason,
}
