//! The one builder of a [`MessageContext`]: the worker, the operators' preview and test, and the
//! editors' samples all go through [`build`], so a template sees the same values everywhere.

use super::templates::{MessageContext, UserView};
use crate::config::Step;
use crate::config::{CalendarSettings, Settings};
use chrono::{DateTime, Utc};

/// What a message is about, besides its recipient.
#[derive(Debug, Clone)]
pub struct About<'a> {
    pub step: Step,
    pub campaign: &'a str,
    /// Calendar days from the sending day to the deadline's day ([`days_left`]).
    pub days_left: i64,
    /// When the service reopened (RFC 3339, local), or "" before operators declare it.
    pub reopened_at: String,
    pub is_test: bool,
}

/// The context a template renders with: `user`, what the message is about, and the calendar and
/// names of `settings`.
pub fn build(settings: &Settings, user: UserView, about: About<'_>) -> MessageContext {
    let cal = &settings.calendar;
    let tz = cal.timezone;
    MessageContext {
        user,
        deadline: cal.deadline.with_timezone(&tz).to_rfc3339(),
        maintenance_start: cal.maintenance_start.with_timezone(&tz).to_rfc3339(),
        reopened_at: about.reopened_at,
        days_left: about.days_left,
        step: about.step.to_string(),
        campaign: about.campaign.to_string(),
        portal_url: settings.portal_url.clone(),
        organisation: settings.mail.organisation.clone(),
        service_name: settings.mail.service_name.clone(),
        is_test: about.is_test,
        sections: Vec::new(),
        procedures: 0,
    }
}

/// Calendar days (in the calendar's time zone) from `now`'s day to the deadline's day, 0 on the
/// last day and after.
pub fn days_left(cal: &CalendarSettings, now: DateTime<Utc>) -> i64 {
    let tz = cal.timezone;
    (cal.deadline.with_timezone(&tz).date_naive() - now.with_timezone(&tz).date_naive())
        .num_days()
        .max(0)
}

/// An instant as templates get it: RFC 3339 in the calendar's time zone, or "" for none.
pub(crate) fn local_rfc3339(cal: &CalendarSettings, at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.with_timezone(&cal.timezone).to_rfc3339())
        .unwrap_or_default()
}
