//! The calendar's phases and next steps, and the reopening that operators declare.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::access::Action;
use super::audit::{summary, Audited};
use super::{Actor, App};
use crate::audience::Audience;
use crate::campaign::calendar::{cadence_text, reminder_name, reminder_steps};
use crate::campaign::{self, phases};
use crate::config::Step;

/// The reopening as declared.
#[derive(Debug, Clone, Serialize)]
pub struct Reopened {
    pub at: DateTime<Utc>,
    /// False when it had been declared before: nothing changed.
    pub newly_declared: bool,
}

/// The calendar's phases and the next reminder steps with their audience sizes.
#[derive(Debug, Clone, Serialize)]
pub struct CalendarReport {
    pub timezone: String,
    pub at: DateTime<Utc>,
    pub phase: String,
    pub campaign_start: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub maintenance_start: DateTime<Utc>,
    pub maintenance_notice_at: DateTime<Utc>,
    /// `None` until an operator declares it.
    pub reopening: Option<DateTime<Utc>>,
    /// `HH:MM`, local time.
    pub sending_hours_start: String,
    pub sending_hours_end: String,
    pub cadence: Vec<Cadence>,
    /// The reminder steps still to come, in order.
    pub upcoming: Vec<CalendarStep>,
}

/// The steps one audience gets.
#[derive(Debug, Clone, Serialize)]
pub struct Cadence {
    pub audience: String,
    pub steps: String,
}

/// A reminder step still to come, and the reminders that send it.
#[derive(Debug, Clone, Serialize)]
pub struct CalendarStep {
    pub due_at: DateTime<Utc>,
    pub step: Step,
    pub reminders: Vec<StepReminder>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReminder {
    pub campaign: String,
    /// Users in its audience now.
    pub users: u64,
}

impl App {
    /// Declares that the upgrade is over at `at` (default: now): the reopening notices then go
    /// out by themselves. Declaring twice changes nothing.
    pub async fn reopen(&self, who: &Actor, at: Option<DateTime<Utc>>) -> anyhow::Result<Reopened> {
        tracing::debug!(actor = %who, "declare the reopening");
        self.permit(who, Action::Reopen, "service").await?;
        let now = self.clock.now();
        let mut tx = self.begin().await?;
        let before = phases::reopened_at(&mut *tx).await?;
        let mut audited = Audited::new(who, Action::Reopen, "service");
        audited.before = summary(serde_json::json!({ "reopening": before }));
        let result = async {
            let r = phases::declare_reopening_on(
                &mut tx,
                &self.settings.calendar,
                at.unwrap_or(now),
                now,
            )
            .await
            .context("declaring the reopening")?;
            let after = summary(serde_json::json!({ "reopening": r.at }));
            Ok((
                Reopened {
                    at: r.at,
                    newly_declared: r.newly_declared,
                },
                after,
            ))
        }
        .await;
        self.settle(tx, audited, result, false).await
    }

    /// The calendar as of `at` (default: the clock's now).
    pub async fn calendar(&self, at: Option<DateTime<Utc>>) -> anyhow::Result<CalendarReport> {
        let cal = &self.settings.calendar;
        let now = self.now_or(at);
        let reopened = phases::reopened_at(self.db.pool()).await?;
        let mut upcoming = Vec::new();
        for step in reminder_steps(cal).into_iter().filter(|s| s.due_at > now) {
            let mut reminders = Vec::new();
            for audience in Audience::REMINDERS {
                if !cal.cadence.allows(audience.name(), step.step) {
                    continue;
                }
                reminders.push(StepReminder {
                    campaign: reminder_name(cal, audience),
                    users: campaign::size(&self.db, audience, None).await?,
                });
            }
            upcoming.push(CalendarStep {
                due_at: step.due_at,
                step: step.step,
                reminders,
            });
        }
        Ok(CalendarReport {
            timezone: cal.timezone.to_string(),
            at: now,
            phase: phases::phase_at(cal, reopened, now).to_string(),
            campaign_start: cal.campaign_start,
            deadline: cal.deadline,
            maintenance_start: cal.maintenance_start,
            maintenance_notice_at: cal.maintenance_notice_at,
            reopening: reopened,
            sending_hours_start: cal.sending_hours_start.format("%H:%M").to_string(),
            sending_hours_end: cal.sending_hours_end.format("%H:%M").to_string(),
            cadence: Audience::REMINDERS
                .into_iter()
                .map(|audience| Cadence {
                    audience: audience.name().to_string(),
                    steps: cadence_text(cal, audience),
                })
                .collect(),
            upcoming,
        })
    }
}
