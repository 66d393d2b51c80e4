//! The suppression list, returned mail, and the calendar with its reopening.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Actor, App};
use crate::audience::calendar::{cadence_text, reminder_name, reminder_steps};
use crate::audience::suppression::{self, Suppression};
use crate::audience::{campaign, phases, Audience};
use crate::bounce::{self, BounceReport};
use crate::store::{Step, SuppressionSource};

/// An address added to the suppression list, or found there already.
#[derive(Debug, Clone, Serialize)]
pub struct SuppressAdded {
    /// As stored: lower-cased.
    pub address: String,
    /// The entry that was there before (left as it was), if any.
    pub already: Option<Suppression>,
}

/// An address taken off the suppression list.
#[derive(Debug, Clone, Serialize)]
pub struct Unsuppressed {
    /// As stored: lower-cased.
    pub address: String,
}

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
    /// Every suppressed address with its reason, source and time.
    pub async fn suppressions(&self) -> anyhow::Result<Vec<Suppression>> {
        suppression::list(&self.db)
            .await
            .context("reading the suppression list")
    }

    /// Stops writing to `address` (stored lower-cased); an address already there is left as
    /// it was.
    pub async fn suppress(
        &self,
        who: &Actor,
        address: &str,
        reason: &str,
    ) -> anyhow::Result<SuppressAdded> {
        tracing::debug!(actor = %who, "suppress an address");
        let before = suppression::add(
            &self.db,
            address,
            reason,
            SuppressionSource::Operator,
            self.clock.now(),
        )
        .await
        .context("adding to the suppression list")?;
        Ok(SuppressAdded {
            address: suppression::normalise(address)?,
            already: before,
        })
    }

    /// Writes to `address` again (from the next planned message on); an error when it was not
    /// on the list.
    pub async fn unsuppress(&self, who: &Actor, address: &str) -> anyhow::Result<Unsuppressed> {
        tracing::debug!(actor = %who, "remove an address from the suppression list");
        let removed = suppression::remove(&self.db, address)
            .await
            .context("removing from the suppression list")?;
        let address = suppression::normalise(address)?;
        if !removed {
            anyhow::bail!("{address} is not on the suppression list");
        }
        Ok(Unsuppressed { address })
    }

    /// Reads a Maildir folder or an mbox file of returned mail into the bounce records and the
    /// suppression list; `unrecognised` overrides `bounce.unrecognised_file`.
    pub async fn import_bounces(
        &self,
        who: &Actor,
        path: &Path,
        unrecognised: Option<&Path>,
    ) -> anyhow::Result<BounceReport> {
        tracing::debug!(actor = %who, path = %path.display(), "import bounces");
        bounce::import(
            &self.db,
            &self.settings,
            path,
            unrecognised,
            self.clock.now(),
        )
        .await
        .with_context(|| format!("importing the bounces of {}", path.display()))
    }

    /// Declares that the upgrade is over at `at` (default: now): the reopening notices then go
    /// out by themselves. Declaring twice changes nothing.
    pub async fn reopen(&self, who: &Actor, at: Option<DateTime<Utc>>) -> anyhow::Result<Reopened> {
        tracing::debug!(actor = %who, "declare the reopening");
        let now = self.clock.now();
        let r =
            phases::declare_reopening(&self.db, &self.settings.calendar, at.unwrap_or(now), now)
                .await
                .context("declaring the reopening")?;
        Ok(Reopened {
            at: r.at,
            newly_declared: r.newly_declared,
        })
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
