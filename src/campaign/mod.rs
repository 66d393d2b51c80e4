//! Campaigns: an audience paired with a template, with a lifecycle ([`lifecycle`]), the
//! calendar's steps ([`calendar`]) and the service's phases ([`phases`]).
//!
//! The reminder campaigns are not created by hand: [`sync_reminders`] derives one per reminder
//! audience from the calendar in configuration (named `AUDIENCE-DEADLINE_DATE`, so the next
//! maintenance campaign, with another deadline, gets new campaigns without a rebuild). Their
//! steps (first notice, then N days before the deadline) come from [`calendar`].

use chrono::{DateTime, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sqlx::Row;

pub mod action;
pub mod approval;
pub mod calendar;
pub mod funnel;
pub mod lifecycle;
pub mod phases;

use self::action::Action;
use self::calendar::reminder_name;
use crate::audience::Audience;
use crate::config::CalendarSettings;
use crate::store::{self, queue, CampaignKind, CampaignState, Counts, Db, Stream, UnknownState};

/// A campaign row.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub kind: CampaignKind,
    pub audience: Audience,
    pub template: String,
    /// Upper-cased two-letter province code: only users of that province.
    pub filter_province: Option<String>,
    pub state: CampaignState,
    /// Random token that makes Message-IDs unique across installations and re-runs.
    pub uid: String,
    pub send_at: Option<DateTime<Utc>>,
    /// Nothing of this campaign is sent at or after this instant.
    pub expires_at: Option<DateTime<Utc>>,
    /// Why avvisi paused it itself (the circuit breaker), for the operators.
    pub paused_reason: Option<String>,
    /// Whether its messages merge into the daily digest (the calendar's campaigns; not an
    /// operator's one-off campaign, which is an email of its own).
    pub digest: bool,
    /// Who created it (an operator's one-off campaign): its approver must be someone else.
    pub created_by: Option<String>,
    /// What its emails' List-Id names and what an opt-out stops.
    pub stream: Stream,
    /// A one-off campaign created `--transactional REASON`: about the user's own business, so
    /// its emails carry no unsubscribe.
    pub transactional: Option<String>,
}

impl Campaign {
    /// Whether its emails carry the one-click unsubscribe: not a procedure's stream, not a
    /// transactional campaign.
    pub fn unsubscribe(&self) -> bool {
        !self.stream.is_procedure() && self.transactional.is_none()
    }
}

/// The campaigns the calendar makes ([`sync_reminders`] creates them at the first planner tick):
/// one reminder per reminder audience, running from the campaign start to the deadline, and the
/// maintenance notice to every enabled user, launched for `maintenance_notice_at` and expiring
/// when the maintenance starts. `id` is 0 and `uid` empty: these are the definitions, not rows.
pub(crate) fn calendar_campaigns(cal: &CalendarSettings) -> Vec<Campaign> {
    let mut out: Vec<Campaign> = Audience::REMINDERS
        .into_iter()
        .map(|audience| Campaign {
            id: 0,
            name: reminder_name(cal, audience),
            kind: CampaignKind::Reminder,
            audience,
            template: audience.name().to_string(),
            filter_province: None,
            state: CampaignState::Running,
            uid: String::new(),
            send_at: Some(cal.campaign_start),
            expires_at: Some(cal.deadline),
            paused_reason: None,
            digest: true,
            created_by: None,
            stream: Stream::Reminders,
            transactional: None,
        })
        .collect();
    // The maintenance notice: from the calendar, not by hand.
    out.push(Campaign {
        id: 0,
        name: maintenance_name(cal),
        kind: CampaignKind::OneOff,
        audience: Audience::EnabledUsers,
        template: MAINTENANCE_NOTICE.to_string(),
        filter_province: None,
        state: CampaignState::Scheduled,
        uid: String::new(),
        send_at: Some(cal.maintenance_notice_at),
        expires_at: Some(cal.maintenance_start),
        paused_reason: None,
        digest: true,
        created_by: None,
        stream: Stream::MaintenanceNotice,
        transactional: None,
    });
    out
}

/// Makes sure the campaigns of the current calendar ([`calendar_campaigns`]) exist. Idempotent.
pub(crate) async fn sync_reminders(
    conn: &mut sqlx::AnyConnection,
    cal: &CalendarSettings,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for c in calendar_campaigns(cal) {
        let (send_at, expires_at) = (
            c.send_at.map(|t| t.timestamp()),
            c.expires_at.map(|t| t.timestamp()),
        );
        let query = match c.kind {
            CampaignKind::Reminder => sqlx::query(
                "INSERT INTO campaigns (name, kind, audience, template, state, uid, send_at, expires_at, created_at, started_at, stream) \
                 VALUES ($1, 'reminder', $2, $2, 'running', $3, $4, $5, $6, $4, $7) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(c.name)
            .bind(c.audience.name())
            .bind(new_uid())
            .bind(send_at)
            .bind(expires_at)
            .bind(now.timestamp())
            .bind(c.stream.key()),
            _ => sqlx::query(
                "INSERT INTO campaigns (name, kind, audience, template, state, uid, send_at, expires_at, created_at, stream) \
                 VALUES ($1, 'oneoff', $2, $3, 'scheduled', $4, $5, $6, $7, $8) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(c.name)
            .bind(c.audience.name())
            .bind(c.template)
            .bind(new_uid())
            .bind(send_at)
            .bind(expires_at)
            .bind(now.timestamp())
            .bind(c.stream.key()),
        };
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The template, and the name's prefix, of the maintenance notice.
pub(crate) const MAINTENANCE_NOTICE: &str = "maintenance_notice";

/// The name of the maintenance notice's campaign for this calendar.
pub(crate) fn maintenance_name(cal: &CalendarSettings) -> String {
    let day = cal.deadline.with_timezone(&cal.timezone).date_naive();
    format!("{MAINTENANCE_NOTICE}-{}", day.format("%Y-%m-%d"))
}

/// Every campaign, oldest first.
pub async fn list(db: &Db) -> Result<Vec<Campaign>, sqlx::Error> {
    list_on(db.pool()).await
}

/// [`list`] on a connection (or in a transaction) of the caller's.
pub(crate) async fn list_on<'e>(
    conn: impl sqlx::Executor<'e, Database = sqlx::Any>,
) -> Result<Vec<Campaign>, sqlx::Error> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM campaigns ORDER BY id"))
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Campaign, sqlx::Error> {
    let audience: String = row.try_get("audience")?;
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    Ok(Campaign {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: kind.parse().map_err(UnknownState::into_sqlx)?,
        audience: audience
            .parse()
            .map_err(|e: crate::audience::UnknownAudience| sqlx::Error::Decode(e.into()))?,
        template: row.try_get("template")?,
        filter_province: row.try_get("filter_province")?,
        state: state.parse().map_err(UnknownState::into_sqlx)?,
        uid: row.try_get("uid")?,
        send_at: store::timestamp(row.try_get("send_at")?),
        expires_at: store::timestamp(row.try_get("expires_at")?),
        paused_reason: row.try_get("paused_reason")?,
        digest: row.try_get::<i64, _>("digest")? == 1,
        created_by: row.try_get("created_by")?,
        stream: row
            .try_get::<String, _>("stream")?
            .parse()
            .map_err(|e: store::UnknownStream| sqlx::Error::Decode(e.into()))?,
        transactional: row.try_get("transactional")?,
    })
}

pub(crate) fn new_uid() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(10)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect()
}

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
    #[error("filter `{0}` is not supported: the only filter is province=XX, or several provinces as province=XX,YY, with two-letter province codes such as province=BO or province=BO,RM")]
    InvalidFilter(String),
    #[error("filter `province={0}`: {0} is not an Italian province code (the two letters of the snapshot's province column, such as BO, RM or MI)")]
    UnknownProvince(String),
    #[error("template `{template}` is written for the audience {wants} ({}), not for {audience}: pair it with --audience {wants}, or choose a template written for everyone, such as maintenance_notice", wants.description())]
    TemplateForAnotherAudience {
        template: String,
        audience: Audience,
        wants: Audience,
    },
    #[error("template `{0}` is the daily digest's frame around other messages' sections, not a message of its own: choose a message template")]
    NotAMessage(String),
    #[error("cannot {action} campaign `{name}`: it is a reminder campaign, started by the calendar; reminders can be paused, resumed and cancelled, not launched or created by hand")]
    Reminder { name: String, action: Action },
    #[error("cannot {action} campaign `{name}`: it is {state}; {}", action.allowed())]
    IllegalTransition {
        name: String,
        action: Action,
        state: CampaignState,
    },
    #[error("campaign `{0}` would expire before it starts: --expires-at must be after --send-at and after now")]
    ExpiresBeforeStart(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Checks a campaign name: 1 to 60 characters among `a-z`, `0-9`, `_`, `-`.
pub(crate) fn check_name(name: &str) -> Result<(), CampaignError> {
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

/// Parses `province=XX` or `province=XX,YY,...` (the only filter) into the upper-cased codes,
/// sorted, joined by commas.
pub(crate) fn parse_filter(filter: &str) -> Result<String, CampaignError> {
    let invalid = || CampaignError::InvalidFilter(filter.to_string());
    let (key, value) = filter.split_once('=').ok_or_else(invalid)?;
    if key.trim() != "province" {
        return Err(invalid());
    }
    // Several provinces: `province=BO,RM`, kept sorted and once each.
    let mut codes = std::collections::BTreeSet::new();
    for code in value.split(',').map(str::trim) {
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(invalid());
        }
        let code = code.to_ascii_uppercase();
        if !Audience::is_province(&code) {
            return Err(CampaignError::UnknownProvince(code));
        }
        codes.insert(code);
    }
    Ok(codes.into_iter().collect::<Vec<_>>().join(","))
}

/// A one-off campaign to create.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub audience: Audience,
    pub template: String,
    /// Upper-cased two-letter province codes, several joined by commas in alphabetical order
    /// (see [`parse_filter`]).
    pub filter_province: Option<String>,
    pub send_at: Option<DateTime<Utc>>,
    /// Nothing of it goes out at or after this instant: every campaign expires.
    pub expires_at: DateTime<Utc>,
    /// `--transactional REASON`: why its emails are about the user's own business and carry no
    /// unsubscribe. `None`: they carry one.
    pub transactional: Option<String>,
}

/// The template of the daily digest: the frame of other messages' sections.
const DIGEST_TEMPLATE: &str = "digest";

/// Creates a one-off campaign as a draft. `templates` are the message names of the template set.
pub async fn create(
    db: &Db,
    new: &NewCampaign,
    templates: &[String],
    now: DateTime<Utc>,
) -> Result<Campaign, CampaignError> {
    let mut conn = db.pool().acquire().await?;
    create_on(&mut conn, new, templates, now, None).await
}

/// [`create`] on the caller's connection (or transaction), recording who created it.
pub(crate) async fn create_on(
    conn: &mut sqlx::AnyConnection,
    new: &NewCampaign,
    templates: &[String],
    now: DateTime<Utc>,
    created_by: Option<&str>,
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
    if new.template == DIGEST_TEMPLATE {
        return Err(CampaignError::NotAMessage(new.template.clone()));
    }
    if let Some(wants) = Audience::of_template(&new.template).filter(|a| *a != new.audience) {
        return Err(CampaignError::TemplateForAnotherAudience {
            template: new.template.clone(),
            audience: new.audience,
            wants,
        });
    }
    if let Some(p) = &new.filter_province {
        parse_filter(&format!("province={p}"))?;
    }
    if new.expires_at <= new.send_at.unwrap_or(now).max(now) {
        return Err(CampaignError::ExpiresBeforeStart(new.name.clone()));
    }
    let inserted = sqlx::query(
        "INSERT INTO campaigns (name, kind, audience, template, filter_province, state, uid, send_at, \
            expires_at, created_at, digest, created_by, stream, transactional) \
         VALUES ($1, 'oneoff', $2, $3, $4, 'draft', $5, $6, $8, $7, 0, $9, $10, $11) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&new.name)
    .bind(new.audience.name())
    .bind(&new.template)
    .bind(new.filter_province.clone())
    .bind(new_uid())
    .bind(new.send_at.map(|t| t.timestamp()))
    .bind(now.timestamp())
    .bind(new.expires_at.timestamp())
    .bind(created_by.map(str::to_string))
    .bind(Stream::Campaign(new.name.clone()).key())
    .bind(new.transactional.clone())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(CampaignError::AlreadyExists(new.name.clone()));
    }
    get_on(conn, &new.name).await
}

/// Narrows the new campaign `c` to the users `entries` name (user ids, or fiscal codes in
/// any case), on the caller's transaction: they are kept in `campaign_lists` under the key
/// `#UID`, which becomes the campaign's filter (see [`crate::audience::Audience::condition_in`]).
/// Returns the key and the entries that matched no user, in their order; nothing is guessed.
pub(crate) async fn attach_list(
    conn: &mut sqlx::AnyConnection,
    c: &Campaign,
    entries: &[String],
) -> Result<(String, Vec<String>), CampaignError> {
    let key = format!("#{}", c.uid);
    let mut not_found = Vec::new();
    for entry in entries {
        let added = sqlx::query(
            "INSERT INTO campaign_lists (list_key, user_id) \
             SELECT $1, user_id FROM users WHERE user_id = $2 OR fiscal_code = $3 \
             ON CONFLICT (list_key, user_id) DO NOTHING",
        )
        .bind(&key)
        .bind(entry)
        .bind(entry.to_ascii_uppercase())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if added == 0 {
            // Either no such user, or one named twice in the list: only the first is news.
            let known: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM users WHERE user_id = $1 OR fiscal_code = $2 LIMIT 1",
            )
            .bind(entry)
            .bind(entry.to_ascii_uppercase())
            .fetch_optional(&mut *conn)
            .await?;
            if known.is_none() {
                not_found.push(entry.clone());
            }
        }
    }
    sqlx::query("UPDATE campaigns SET filter_province = $1 WHERE id = $2")
        .bind(&key)
        .bind(c.id)
        .execute(&mut *conn)
        .await?;
    Ok((key, not_found))
}

const COLUMNS: &str = "id, name, kind, audience, template, filter_province, state, uid, send_at, \
                       expires_at, created_at, started_at, finished_at, paused_reason, digest, \
                       created_by, stream, transactional";

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

/// [`get`] on the caller's connection (or transaction).
pub(crate) async fn get_on(
    conn: &mut sqlx::AnyConnection,
    name: &str,
) -> Result<Campaign, CampaignError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM campaigns WHERE name = $1"))
        .bind(name)
        .fetch_optional(conn)
        .await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| CampaignError::NotFound(name.to_string()))
}

/// How many users are in the campaign's audience now (province filter included).
pub(crate) async fn audience_size(db: &Db, c: &Campaign) -> Result<u64, sqlx::Error> {
    size(db, c.audience, c.filter_province.as_deref()).await
}

/// How many users are in the campaign's audience now, on the caller's connection (or
/// transaction).
pub(crate) async fn audience_size_on(
    conn: &mut sqlx::AnyConnection,
    c: &Campaign,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "SELECT COUNT(*) FROM users u WHERE {}",
        c.audience.condition_in(1)
    );
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(c.filter_province.clone())
        .fetch_one(conn)
        .await?;
    Ok(n as u64)
}

/// How many users are in `audience` now, in `province` if given.
pub async fn size(db: &Db, audience: Audience, province: Option<&str>) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "SELECT COUNT(*) FROM users u WHERE {}",
        audience.condition_in(1)
    );
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(province.map(str::to_string))
        .fetch_one(db.pool())
        .await?;
    Ok(n as u64)
}

/// Everything `campaign list` and `campaign show` print about one campaign.
#[derive(Debug, Clone)]
pub(crate) struct Overview {
    pub campaign: Campaign,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Users in the audience now.
    pub audience_size: u64,
    pub counts: Counts,
    /// The latest decision on it (a one-off campaign's approval or rejection).
    pub approval: Option<approval::Approval>,
}

/// The overview of every campaign (reminders included), oldest first.
pub(crate) async fn overviews(db: &Db) -> Result<Vec<Overview>, sqlx::Error> {
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
pub(crate) async fn overview(db: &Db, name: &str) -> Result<Overview, CampaignError> {
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
    let counts = queue::of_campaign(db, campaign.id).await?;
    let approval = approval::latest(&mut *db.pool().acquire().await?, campaign.id).await?;
    Ok(Overview {
        approval,
        created_at: store::timestamp(row.try_get("created_at")?),
        started_at: store::timestamp(row.try_get("started_at")?),
        finished_at: store::timestamp(row.try_get("finished_at")?),
        audience_size,
        counts,
        campaign,
    })
}
