//! The calendar's reminder steps: the first notice at the campaign start, then one `dN` step N
//! days before the deadline's day, at the reminder time. Every date comes from configuration,
//! so the next maintenance needs no rebuild.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::audience::Audience;
use crate::config::CalendarSettings;
use crate::config::Step;

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

/// The latest step of `audience`'s cadence (`calendar.cadence`) due at `now`, if the campaign is
/// open at `now`: a step the audience does not get is passed over, so a late entrant still gets
/// the latest one it does.
pub(crate) fn latest_due_step_of(
    cal: &CalendarSettings,
    audience: Audience,
    now: DateTime<Utc>,
) -> Option<DueStep> {
    if now >= cal.deadline {
        return None;
    }
    reminder_steps(cal)
        .into_iter()
        .rev()
        .find(|s| s.due_at <= now && cal.cadence.allows(audience.name(), s.step))
}

/// The steps `audience` gets, as `avvisi calendar` shows them: `first, d3, d1 (only in a digest)`.
pub(crate) fn cadence_text(cal: &CalendarSettings, audience: Audience) -> String {
    reminder_steps(cal)
        .into_iter()
        .filter(|s| cal.cadence.allows(audience.name(), s.step))
        .map(
            |s| match cal.cadence.only_in_digest(audience.name(), s.step) {
                true => format!("{} (only in a digest)", s.step),
                false => s.step.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name of the reminder campaign of `audience` for this calendar.
pub(crate) fn reminder_name(cal: &CalendarSettings, audience: Audience) -> String {
    let day = cal.deadline.with_timezone(&cal.timezone).date_naive();
    format!("{}-{}", audience.name(), day.format("%Y-%m-%d"))
}

/// The local day of `now` in `tz`, as UTC instants: its first instant and the next day's.
pub(crate) fn local_day(tz: chrono_tz::Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = now.with_timezone(&tz).date_naive();
    let start = |d: chrono::NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    let first = start(day).unwrap_or(now);
    let next = day
        .succ_opt()
        .and_then(start)
        .unwrap_or(first + chrono::Duration::days(1));
    (first, next)
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

    #[test]
    fn default_cadence_gives_the_advice_first_and_d1_in_a_digest() {
        let cal = Settings::load_with_env(None, Vec::new()).unwrap().calendar;
        assert_eq!(
            cadence_text(&cal, Audience::RegistrationIncomplete),
            "first, d3, d1"
        );
        assert_eq!(
            cadence_text(&cal, Audience::CredentialRecoveryAdvice),
            "first, d1 (only in a digest)"
        );
        // At the d3 step the advice's latest step is still the first notice (a late entrant
        // gets that one); the procedures' is d3.
        let d3 = reminder_steps(&cal)[1].due_at;
        let advice = latest_due_step_of(&cal, Audience::CredentialRecoveryAdvice, d3).unwrap();
        assert_eq!(advice.step, Step::First);
        let code = latest_due_step_of(&cal, Audience::CodeRegenerationPending, d3).unwrap();
        assert_eq!(code.step, Step::DaysBefore(3));
    }
}
