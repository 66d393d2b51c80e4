//! The calendar's reminder steps: the first notice at the campaign start, then one `dN` step N
//! days before the deadline's day, at the reminder time. Every date comes from configuration,
//! so the next maintenance needs no rebuild.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::audience::Audience;
use crate::config::CalendarSettings;
use crate::store::Step;

/// One step of a reminder and when it falls due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DueStep {
    pub step: Step,
    pub due_at: DateTime<Utc>,
}

/// The reminder steps of the calendar, in time order, all before the deadline: the first notice
/// at the campaign start, then one `dN` step N days before the deadline's day at reminder time.
pub(crate) fn reminder_steps(cal: &CalendarSettings) -> Vec<DueStep> {
    let deadline_day = cal.deadline.with_timezone(&cal.timezone).date_naive();
    let mut steps = vec![DueStep {
        step: Step::First,
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
            steps.push(DueStep {
                step: Step::DaysBefore(*days),
                due_at: due,
            });
        }
    }
    steps.sort_by_key(|s| s.due_at);
    steps
}

/// The latest reminder step due at `now`, if the campaign is open at `now`.
pub(crate) fn latest_due_step(cal: &CalendarSettings, now: DateTime<Utc>) -> Option<DueStep> {
    if now >= cal.deadline {
        return None;
    }
    reminder_steps(cal)
        .into_iter()
        .rev()
        .find(|s| s.due_at <= now)
}

/// The name of the reminder campaign of `audience` for this calendar.
pub(crate) fn reminder_name(cal: &CalendarSettings, audience: Audience) -> String {
    let day = cal.deadline.with_timezone(&cal.timezone).date_naive();
    format!("{}-{}", audience.name(), day.format("%Y-%m-%d"))
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
            .map(|s| {
                (
                    s.step.to_string(),
                    s.due_at.with_timezone(&cal.timezone).to_rfc3339(),
                )
            })
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
