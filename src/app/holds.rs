//! What keeps due messages from going out now, named where the operator looks (`status`,
//! `explain`): the relay down (with its last fault), outside the sending hours (until when), the
//! hourly quota used up, no daemon running, a stale snapshot (reminders), a pause or the
//! circuit breaker.

use anyhow::Context;
use chrono::{DateTime, Duration, TimeZone, Utc};

use super::App;
use crate::explain::Hold;
use crate::store::daemons;

impl App {
    /// Every hold at `now`.
    pub(crate) async fn holds(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Hold>> {
        let db = &self.db;
        let settings = &self.settings;
        let tz = settings.calendar.timezone;
        let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z");
        let every = |kind, text| Hold {
            kind,
            campaign: None,
            reminders_only: false,
            text,
        };
        let mut holds = Vec::new();
        let running = daemons::running_daemons(db)
            .await
            .context("reading the daemons")?;
        if running.is_empty() {
            holds.push(every(
                "no_daemon",
                "no daemon is running: nothing is sent until `avvisi daemon` runs (or `avvisi run --once`)"
                    .to_string(),
            ));
        }
        for d in &running {
            if let Some(fault) = &d.relay_fault {
                let since = d
                    .relay_fault_since
                    .map(|t| format!(" since {}", local(t)))
                    .unwrap_or_default();
                holds.push(every(
                    "relay",
                    format!(
                        "the relay is down{since} (daemon {}; last fault: {fault}): delivery retries with backoff, no message is failed for it",
                        d.id
                    ),
                ));
            }
        }
        if let Some(resumes) = sending_resumes(settings, now) {
            let cal = &settings.calendar;
            holds.push(every(
                "sending_hours",
                format!(
                    "outside the sending hours ({}-{} {tz}): sending waits for {} ({})",
                    cal.sending_hours_start.format("%H:%M"),
                    cal.sending_hours_end.format("%H:%M"),
                    cal.sending_hours_start.format("%H:%M"),
                    local(resumes)
                ),
            ));
        }
        if settings.rate.per_hour > 0 {
            let used = crate::deliver::quota::used_last_hour(db)
                .await
                .context("reading the shared quota")?;
            if used >= i64::from(settings.rate.per_hour) {
                holds.push(every(
                    "hourly_quota",
                    format!(
                        "the relay's hourly quota is used up ({used} of {} in the last hour, rate.per_hour): sending waits until the oldest of the hour ages out",
                        settings.rate.per_hour
                    ),
                ));
            }
        }
        let fresh = crate::import::freshness(db.pool(), settings.import.max_age_hours, now)
            .await
            .context("reading the imports")?;
        if let Some(warning) = fresh.warning(now) {
            holds.push(Hold {
                reminders_only: true,
                ..every("snapshot_stale", warning)
            });
        }
        for c in crate::campaign::list(db)
            .await
            .context("reading the campaigns")?
        {
            if c.state != crate::store::CampaignState::Paused {
                continue;
            }
            let (kind, text) = match &c.paused_reason {
                Some(r) if r.starts_with("circuit breaker") => (
                    "breaker",
                    format!(
                        "campaign {} was paused by the {}; resume it once the relay is fixed",
                        c.name,
                        crate::telemetry::scrub(r)
                    ),
                ),
                Some(r) => (
                    "paused",
                    format!("campaign {} is paused: {}", c.name, crate::telemetry::scrub(r)),
                ),
                None => (
                    "paused",
                    format!(
                        "campaign {} is paused by an operator: nothing of it is sent until `avvisi campaign resume {}`",
                        c.name, c.name
                    ),
                ),
            };
            holds.push(Hold {
                campaign: Some(c.name.clone()),
                ..every(kind, text)
            });
        }
        Ok(holds)
    }
}

/// When sending resumes, if `now` is outside the sending hours: the next start of the hours,
/// in the calendar's time zone.
fn sending_resumes(
    settings: &crate::config::Settings,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let cal = &settings.calendar;
    let local = now.with_timezone(&cal.timezone);
    let time = local.time();
    if time >= cal.sending_hours_start && time < cal.sending_hours_end {
        return None;
    }
    let day = match time < cal.sending_hours_start {
        true => local.date_naive(),
        false => local.date_naive() + Duration::days(1),
    };
    let start = day.and_time(cal.sending_hours_start);
    // A start skipped by a daylight-saving change: an hour later.
    cal.timezone
        .from_local_datetime(&start)
        .earliest()
        .or_else(|| {
            cal.timezone
                .from_local_datetime(&(start + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}
