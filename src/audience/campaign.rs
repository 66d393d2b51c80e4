//! Campaigns: an audience paired with a template, with a lifecycle.
//!
//! The reminder campaigns are not created by hand: [`sync_reminders`] derives one per reminder
//! audience from the calendar in configuration (named `AUDIENCE-DEADLINE_DATE`, so the next
//! maintenance campaign, with another deadline, gets new campaigns without a rebuild). Their
//! steps (first notice, then N days before the deadline) come from [`reminder_steps`].

use std::fmt;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sqlx::Row;

use crate::audience::Audience;
use crate::config::CalendarSettings;
use crate::store::Db;

/// A campaign row.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    /// `reminder`, `oneoff` or `reopening`.
    pub kind: String,
    pub audience: Audience,
    pub template: String,
    pub filter_province: Option<String>,
    /// `draft`, `scheduled`, `running`, `paused`, `cancelled` or `finished`.
    pub state: String,
    /// Random token that makes Message-IDs unique across installations and re-runs.
    pub uid: String,
    pub send_at: Option<DateTime<Utc>>,
    /// Nothing of this campaign is sent at or after this instant.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One step of a reminder: its name (`first`, `d7`...) and when it falls due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub due_at: DateTime<Utc>,
}

/// The reminder steps of the calendar, in time order, all before the deadline: the first notice
/// at the campaign start, then one `dN` step N days before the deadline's day at reminder time.
pub fn reminder_steps(cal: &CalendarSettings) -> Vec<Step> {
    let deadline_day = cal.deadline.with_timezone(&cal.timezone).date_naive();
    let mut steps = vec![Step {
        name: "first".into(),
        due_at: cal.campaign_start,
    }];
    for days in &cal.reminder_days_before {
        let day = deadline_day - Duration::days(i64::from(*days));
        // A step at a local time that a DST change skips moves to the first instant after it.
        let due = match cal
            .timezone
            .from_local_datetime(&day.and_time(cal.reminder_time))
        {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t,
            chrono::LocalResult::None => cal
                .timezone
                .from_local_datetime(&(day.and_time(cal.reminder_time) + Duration::hours(1)))
                .earliest()
                .expect("an hour after a DST gap exists"),
        }
        .with_timezone(&Utc);
        if due > cal.campaign_start && due < cal.deadline {
            steps.push(Step {
                name: format!("d{days}"),
                due_at: due,
            });
        }
    }
    steps.sort_by_key(|s| s.due_at);
    steps
}

/// The latest reminder step due at `now`, if the campaign is open at `now`.
pub fn latest_due_step(cal: &CalendarSettings, now: DateTime<Utc>) -> Option<Step> {
    if now >= cal.deadline {
        return None;
    }
    reminder_steps(cal)
        .into_iter()
        .rev()
        .find(|s| s.due_at <= now)
}

/// The name of the reminder campaign of `audience` for this calendar.
pub fn reminder_name(cal: &CalendarSettings, audience: Audience) -> String {
    let day = cal.deadline.with_timezone(&cal.timezone).date_naive();
    format!("{}-{}", audience.name(), day.format("%Y-%m-%d"))
}

/// Makes sure the reminder campaigns of the current calendar exist. Idempotent.
pub async fn sync_reminders(
    db: &Db,
    cal: &CalendarSettings,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for audience in Audience::REMINDERS {
        sqlx::query(
            "INSERT INTO campaigns (name, kind, audience, template, state, uid, send_at, expires_at, created_at, started_at) \
             VALUES ($1, 'reminder', $2, $2, 'running', $3, $4, $5, $6, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(reminder_name(cal, audience))
        .bind(audience.name())
        .bind(new_uid())
        .bind(cal.campaign_start.timestamp())
        .bind(cal.deadline.timestamp())
        .bind(now.timestamp())
        .execute(db.pool())
        .await?;
    }
    Ok(())
}

/// Every campaign, oldest first.
pub async fn list(db: &Db) -> Result<Vec<Campaign>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, name, kind, audience, template, filter_province, state, uid, send_at, expires_at \
         FROM campaigns ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Campaign, sqlx::Error> {
    let audience: String = row.try_get("audience")?;
    Ok(Campaign {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        audience: audience
            .parse()
            .map_err(|e: crate::audience::UnknownAudience| sqlx::Error::Decode(e.into()))?,
        template: row.try_get("template")?,
        filter_province: row.try_get("filter_province")?,
        state: row.try_get("state")?,
        uid: row.try_get("uid")?,
        send_at: timestamp(row.try_get("send_at")?),
        expires_at: timestamp(row.try_get("expires_at")?),
    })
}

/// A stored Unix time as UTC.
pub fn timestamp(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| Utc.timestamp_opt(s, 0).single())
}

pub(crate) fn new_uid() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(10)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One-off campaigns and the lifecycle operators drive (`avvisi campaign ...`).
//
// ```text
// draft --launch--> scheduled (send_at in the future) --planner, at send_at--> running
// draft --launch--> running --planner, all planned and sent--> finished
// running | scheduled --pause--> paused --resume--> running | scheduled
// draft | scheduled | running | paused --cancel--> cancelled (its pending messages are skipped)
// ```
// Every transition is one guarded `UPDATE ... WHERE name = $1 AND state IN (...)`: of two
// operators racing, one wins and the other gets a clear error. The worker only claims messages
// of running campaigns, so a pause takes effect within one batch.
// ---------------------------------------------------------------------------------------------

/// Why a campaign command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("campaign name `{0}` is not valid: use 1 to 60 characters among a-z, 0-9, `_` and `-` (it goes into file names and the X-Avvisi-Campaign header)")]
    InvalidName(String),
    #[error("a campaign named `{0}` already exists (see `avvisi campaign list`)")]
    AlreadyExists(String),
    #[error("no campaign named `{0}` (see `avvisi campaign list`)")]
    NotFound(String),
    #[error(transparent)]
    UnknownAudience(#[from] crate::audience::UnknownAudience),
    #[error("unknown template `{name}`: the messages in the templates folder are {known}")]
    UnknownTemplate { name: String, known: String },
    #[error("filter `{0}` is not supported: the only filter is province=XX, with a two-letter province code such as province=BO")]
    InvalidFilter(String),
    #[error("cannot {action} campaign `{name}`: it is a reminder campaign, started by the calendar; reminders can be paused, resumed and cancelled, not launched or created by hand")]
    Reminder { name: String, action: Action },
    #[error("cannot {action} campaign `{name}`: it is {state}; {}", action.allowed())]
    IllegalTransition {
        name: String,
        action: Action,
        state: String,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What an operator asks of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Launch,
    Pause,
    Resume,
    Cancel,
}

impl Action {
    /// The states this action applies to.
    pub fn from_states(self) -> &'static [&'static str] {
        match self {
            Action::Launch => &["draft"],
            Action::Pause => &["running", "scheduled"],
            Action::Resume => &["paused"],
            Action::Cancel => &["draft", "scheduled", "running", "paused"],
        }
    }

    /// One sentence on what is allowed, for error messages.
    pub fn allowed(self) -> &'static str {
        match self {
            Action::Launch => "only a draft campaign can be launched (cancelled and finished are final)",
            Action::Pause => {
                "only a running or scheduled campaign can be paused (cancelled and finished are final)"
            }
            Action::Resume => {
                "only a paused campaign can be resumed (cancelled and finished are final)"
            }
            Action::Cancel => {
                "only a draft, scheduled, running or paused campaign can be cancelled (cancelled and finished are final)"
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Launch => "launch",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
        })
    }
}

/// Checks a campaign name: 1 to 60 characters among `a-z`, `0-9`, `_`, `-`.
pub fn check_name(name: &str) -> Result<(), CampaignError> {
    let ok = (1..=60).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CampaignError::InvalidName(name.to_string()))
    }
}

/// Parses `province=XX` (the only filter) into the upper-cased province code.
pub fn parse_filter(filter: &str) -> Result<String, CampaignError> {
    let invalid = || CampaignError::InvalidFilter(filter.to_string());
    let (key, value) = filter.split_once('=').ok_or_else(invalid)?;
    let value = value.trim();
    if key.trim() != "province"
        || value.len() != 2
        || !value.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return Err(invalid());
    }
    Ok(value.to_ascii_uppercase())
}

/// A one-off campaign to create.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub audience: Audience,
    pub template: String,
    /// Upper-cased two-letter province code (see [`parse_filter`]).
    pub filter_province: Option<String>,
    pub send_at: Option<DateTime<Utc>>,
}

/// Creates a one-off campaign as a draft. `templates` are the message names of the template set.
pub async fn create(
    db: &Db,
    new: &NewCampaign,
    templates: &[String],
    now: DateTime<Utc>,
) -> Result<Campaign, CampaignError> {
    check_name(&new.name)?;
    if !templates.contains(&new.template) {
        return Err(CampaignError::UnknownTemplate {
            name: new.template.clone(),
            known: if templates.is_empty() {
                "none".to_string()
            } else {
                templates.join(", ")
            },
        });
    }
    if let Some(p) = &new.filter_province {
        parse_filter(&format!("province={p}"))?;
    }
    let inserted = sqlx::query(
        "INSERT INTO campaigns (name, kind, audience, template, filter_province, state, uid, send_at, created_at) \
         VALUES ($1, 'oneoff', $2, $3, $4, 'draft', $5, $6, $7) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&new.name)
    .bind(new.audience.name())
    .bind(&new.template)
    .bind(new.filter_province.clone())
    .bind(new_uid())
    .bind(new.send_at.map(|t| t.timestamp()))
    .bind(now.timestamp())
    .execute(db.pool())
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(CampaignError::AlreadyExists(new.name.clone()));
    }
    get(db, &new.name).await
}

const COLUMNS: &str = "id, name, kind, audience, template, filter_province, state, uid, send_at, \
                       expires_at, created_at, started_at, finished_at";

/// The campaign named `name`, if any.
pub async fn find(db: &Db, name: &str) -> Result<Option<Campaign>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM campaigns WHERE name = $1"))
        .bind(name)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The campaign named `name`, or [`CampaignError::NotFound`].
pub async fn get(db: &Db, name: &str) -> Result<Campaign, CampaignError> {
    find(db, name)
        .await?
        .ok_or_else(|| CampaignError::NotFound(name.to_string()))
}

/// The outcome of a lifecycle command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub name: String,
    /// The state the campaign is in now.
    pub state: String,
    /// Pending messages skipped by a cancel.
    pub skipped: u64,
}

/// draft -> scheduled (send_at in the future) or running. Not for reminder campaigns.
pub async fn launch(db: &Db, name: &str, now: DateTime<Utc>) -> Result<Transition, CampaignError> {
    let row = sqlx::query(
        "UPDATE campaigns SET \
            state = CASE WHEN send_at IS NOT NULL AND send_at > $2 THEN 'scheduled' ELSE 'running' END, \
            started_at = CASE WHEN send_at IS NOT NULL AND send_at > $2 THEN NULL ELSE $2 END \
         WHERE name = $1 AND kind <> 'reminder' AND state = 'draft' RETURNING state",
    )
    .bind(name)
    .bind(now.timestamp())
    .fetch_optional(db.pool())
    .await?;
    transition_result(db, name, Action::Launch, row, 0).await
}

/// running | scheduled -> paused. The worker stops claiming its messages at the next batch.
pub async fn pause(db: &Db, name: &str) -> Result<Transition, CampaignError> {
    let row = sqlx::query(
        "UPDATE campaigns SET state = 'paused' \
         WHERE name = $1 AND state IN ('running', 'scheduled') RETURNING state",
    )
    .bind(name)
    .fetch_optional(db.pool())
    .await?;
    transition_result(db, name, Action::Pause, row, 0).await
}

/// paused -> running, or scheduled when its send_at is still in the future.
pub async fn resume(db: &Db, name: &str, now: DateTime<Utc>) -> Result<Transition, CampaignError> {
    let row = sqlx::query(
        "UPDATE campaigns SET \
            state = CASE WHEN send_at IS NOT NULL AND send_at > $2 THEN 'scheduled' ELSE 'running' END, \
            started_at = CASE WHEN started_at IS NULL AND (send_at IS NULL OR send_at <= $2) \
                              THEN $2 ELSE started_at END \
         WHERE name = $1 AND state = 'paused' RETURNING state",
    )
    .bind(name)
    .bind(now.timestamp())
    .fetch_optional(db.pool())
    .await?;
    transition_result(db, name, Action::Resume, row, 0).await
}

/// The reason recorded on the messages a cancel skips.
pub const CANCELLED_REASON: &str = "campaign cancelled by an operator";

/// draft | scheduled | running | paused -> cancelled; in the same transaction every pending
/// message of the campaign becomes skipped. Messages already on the wire finish.
pub async fn cancel(db: &Db, name: &str, now: DateTime<Utc>) -> Result<Transition, CampaignError> {
    let mut tx = db.pool().begin().await?;
    let row = sqlx::query(
        "UPDATE campaigns SET state = 'cancelled', finished_at = $2 \
         WHERE name = $1 AND state IN ('draft', 'scheduled', 'running', 'paused') RETURNING id, state",
    )
    .bind(name)
    .bind(now.timestamp())
    .fetch_optional(&mut *tx)
    .await?;
    let mut skipped = 0;
    if let Some(row) = &row {
        let id: i64 = row.try_get("id")?;
        skipped = sqlx::query(
            "UPDATE outbox SET state = 'skipped', reason = $2, updated_at = $3 \
             WHERE campaign_id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(CANCELLED_REASON)
        .bind(now.timestamp())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    transition_result(db, name, Action::Cancel, row, skipped).await
}

/// Turns the row returned by a guarded UPDATE into the transition, or explains the refusal.
async fn transition_result(
    db: &Db,
    name: &str,
    action: Action,
    row: Option<sqlx::any::AnyRow>,
    skipped: u64,
) -> Result<Transition, CampaignError> {
    if let Some(row) = row {
        let state: String = row.try_get("state")?;
        tracing::info!(campaign = name, %action, state = %state, skipped, "campaign transition");
        return Ok(Transition {
            name: name.to_string(),
            state,
            skipped,
        });
    }
    let c = get(db, name).await?;
    if c.kind == "reminder" && action == Action::Launch {
        return Err(CampaignError::Reminder {
            name: c.name,
            action,
        });
    }
    Err(CampaignError::IllegalTransition {
        name: c.name,
        action,
        state: c.state,
    })
}

/// The audience condition of `c` on `users u`, with its province filter as parameter `$param`.
fn audience_sql(c: &Campaign, param: usize) -> String {
    match c.filter_province {
        Some(_) => format!("{} AND u.province = ${param}", c.audience.condition()),
        None => c.audience.condition().to_string(),
    }
}

/// How many users are in the campaign's audience now (province filter included).
pub async fn audience_size(db: &Db, c: &Campaign) -> Result<u64, sqlx::Error> {
    let sql = format!("SELECT COUNT(*) FROM users u WHERE {}", audience_sql(c, 1));
    let mut q = sqlx::query_scalar::<_, i64>(&sql);
    if let Some(p) = &c.filter_province {
        q = q.bind(p.clone());
    }
    Ok(q.fetch_one(db.pool()).await? as u64)
}

/// The first user of the campaign's audience (by user id) as a message to render: step `main`,
/// recipient the address on record. `message_id` is used as given.
pub async fn first_recipient(
    db: &Db,
    c: &Campaign,
    message_id: &str,
) -> Result<Option<crate::deliver::outbox::Claimed>, sqlx::Error> {
    let sql = format!(
        "SELECT u.user_id, u.email, u.first_name, u.last_name, u.institutional_email, \
            u.pending_email, u.province FROM users u WHERE {} ORDER BY u.user_id LIMIT 1",
        audience_sql(c, 1)
    );
    let mut q = sqlx::query(&sql);
    if let Some(p) = &c.filter_province {
        q = q.bind(p.clone());
    }
    let Some(r) = q.fetch_optional(db.pool()).await? else {
        return Ok(None);
    };
    Ok(Some(crate::deliver::outbox::Claimed {
        id: 0,
        campaign: c.name.clone(),
        step: "main".to_string(),
        template: c.template.clone(),
        message_id: message_id.to_string(),
        attempts: 0,
        expires_at: c.expires_at.map(|t| t.timestamp()),
        user_id: r.try_get("user_id")?,
        recipient: r.try_get("email")?,
        first_name: r.try_get("first_name")?,
        last_name: r.try_get("last_name")?,
        institutional_email: r.try_get("institutional_email")?,
        pending_email: r.try_get("pending_email")?,
        province: r.try_get("province")?,
    }))
}

/// A campaign's messages by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub pending: u64,
    pub sending: u64,
    pub sent: u64,
    pub skipped: u64,
    pub failed: u64,
    pub expired: u64,
}

impl Progress {
    /// Every planned message.
    pub fn total(&self) -> u64 {
        self.pending + self.sending + self.sent + self.skipped + self.failed + self.expired
    }
    /// Messages in a final state.
    pub fn done(&self) -> u64 {
        self.sent + self.skipped + self.failed + self.expired
    }
    /// Messages still to go (waiting or on the wire).
    pub fn open(&self) -> u64 {
        self.pending + self.sending
    }
}

/// The outbox counts of campaign `id`.
pub async fn progress(db: &Db, id: i64) -> Result<Progress, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT state, COUNT(*) AS n FROM outbox WHERE campaign_id = $1 GROUP BY state",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await?;
    let mut p = Progress::default();
    for r in rows {
        let n = r.try_get::<i64, _>("n")? as u64;
        match r.try_get::<String, _>("state")?.as_str() {
            "pending" => p.pending = n,
            "sending" => p.sending = n,
            "sent" => p.sent = n,
            "skipped" => p.skipped = n,
            "failed" => p.failed = n,
            "expired" => p.expired = n,
            _ => {}
        }
    }
    Ok(p)
}

/// Everything `campaign list` and `campaign show` print about one campaign.
#[derive(Debug, Clone)]
pub struct Overview {
    pub campaign: Campaign,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Users in the audience now.
    pub audience_size: u64,
    pub progress: Progress,
}

/// The overview of every campaign (reminders included), oldest first.
pub async fn overviews(db: &Db) -> Result<Vec<Overview>, sqlx::Error> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM campaigns ORDER BY id"))
        .fetch_all(db.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(overview_from_row(db, row).await?);
    }
    Ok(out)
}

/// The overview of the campaign named `name`.
pub async fn overview(db: &Db, name: &str) -> Result<Overview, CampaignError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM campaigns WHERE name = $1"))
        .bind(name)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| CampaignError::NotFound(name.to_string()))?;
    Ok(overview_from_row(db, &row).await?)
}

async fn overview_from_row(db: &Db, row: &sqlx::any::AnyRow) -> Result<Overview, sqlx::Error> {
    let campaign = from_row(row)?;
    let audience_size = audience_size(db, &campaign).await?;
    let progress = progress(db, campaign.id).await?;
    Ok(Overview {
        created_at: timestamp(row.try_get("created_at")?),
        started_at: timestamp(row.try_get("started_at")?),
        finished_at: timestamp(row.try_get("finished_at")?),
        audience_size,
        progress,
        campaign,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn default_steps_are_first_then_7_3_1_days_at_nine_rome() {
        let cal = Settings::load_with_env(None, Vec::new()).unwrap().calendar;
        let steps: Vec<(String, String)> = reminder_steps(&cal)
            .into_iter()
            .map(|s| (s.name, s.due_at.with_timezone(&cal.timezone).to_rfc3339()))
            .collect();
        // d7 falls on the campaign start itself, so the first notice covers it.
        assert_eq!(
            steps,
            vec![
                ("first".to_string(), "2026-11-23T09:00:00+01:00".to_string()),
                ("d3".to_string(), "2026-11-27T09:00:00+01:00".to_string()),
                ("d1".to_string(), "2026-11-29T09:00:00+01:00".to_string()),
            ]
        );
    }
}
