//! Campaigns: an audience paired with a template, with a lifecycle.
//!
//! The reminder campaigns are not created by hand: [`sync_reminders`] derives one per reminder
//! audience from the calendar in configuration (named `AUDIENCE-DEADLINE_DATE`, so the next
//! maintenance campaign, with another deadline, gets new campaigns without a rebuild). Their
//! steps (first notice, then N days before the deadline) come from [`reminder_steps`].

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sqlx::Row;

use crate::audience::Audience;
use crate::config::CalendarSettings;
use crate::db::Db;

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
