//! The queue as operators query it: the status at a glance, one user explained, failed messages
//! put back.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::access::Action;
use super::audit::{summary, Audited};
use super::{Actor, App};
use crate::deliver::quota;
use crate::deliver::retry::{retry_failed_on, RetryFilter};
use crate::explain::{explain, Explanation};
use crate::import::{freshness, Freshness};
use crate::render::templates::TemplateSet;
use crate::store::daemons::{self, RunningDaemon};
use crate::store::queue::{self, CampaignCounts, ErrorGroup, NextAttempts, OldestPending};
use crate::telemetry::scrub;

/// Everything `status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Whether reminders are held for an old snapshot.
    pub snapshot: Freshness,
    /// Said first when reminders are held.
    pub warning: Option<String>,
    pub(crate) campaigns: Vec<CampaignCounts>,
    pub(crate) oldest_pending: Option<OldestPending>,
    pub next_attempts: Vec<NextAttempts>,
    pub errors: Vec<ErrorGroup>,
    /// The newest publication: the set every process renders with (none before the first).
    pub templates_published: Option<crate::store::template_sets::Publication>,
    /// The digest of the template set on disk, or why it cannot be loaded.
    pub templates_on_disk: Option<String>,
    pub templates_error: Option<String>,
    pub daemons: Vec<RunningDaemon>,
    /// Messages counted against `rate.per_hour` in the last hour, all processes together, and
    /// the quota; absent when no hourly quota is set.
    pub hourly_quota: Option<HourlyQuota>,
    /// Users who opted out, per stream (the one-click unsubscribe, operators, complaints).
    pub optouts: Vec<StreamOptOuts>,
    /// The complaint rate of each campaign with a complaint.
    pub complaints: Vec<crate::bounce::complaint::ComplaintRate>,
    /// The recipient domains held now: their provider asked us to slow down.
    pub held_domains: Vec<crate::deliver::hold::DomainHold>,
    /// What keeps due messages from going out now (said first).
    pub holds: Vec<crate::explain::Hold>,
}

/// The opt-outs of one stream.
#[derive(Debug, Serialize)]
pub struct StreamOptOuts {
    pub stream: crate::store::Stream,
    pub users: u64,
}

#[derive(Debug, Serialize)]
pub struct HourlyQuota {
    pub used_last_hour: i64,
    pub per_hour: u32,
}

/// What a retry did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Retried {
    pub dry_run: bool,
    /// Messages put back in all.
    pub retried: u64,
    pub per_campaign: Vec<RetriedCampaign>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetriedCampaign {
    pub campaign: String,
    pub retried: u64,
    /// Left failed: their deadline has passed.
    pub past_deadline: u64,
}

impl App {
    /// The queue at a glance, as `mailq` shows Postfix's.
    pub async fn status(&self) -> anyhow::Result<Status> {
        let db = &self.db;
        let settings = &self.settings;
        let read = "reading the outbox";
        let mut errors = queue::errors_by_reply(db).await.context(read)?;
        for e in &mut errors {
            e.example = scrub(&e.example).into_owned();
        }
        // The folder as it is now, not the set this application loaded: that is the question.
        let loaded = TemplateSet::load(&settings.templates_dir);
        let now = self.clock.now();
        let snapshot = freshness(db.pool(), settings.import.max_age_hours, now)
            .await
            .context("reading the imports")?;
        Ok(Status {
            snapshot,
            warning: snapshot.warning(now),
            campaigns: queue::by_campaign(db).await.context(read)?,
            oldest_pending: queue::oldest_pending(db).await.context(read)?,
            next_attempts: queue::next_attempts(db, 5).await.context(read)?,
            errors,
            templates_published: {
                let mut conn = db.pool().acquire().await.context(read)?;
                crate::store::template_sets::latest(&mut conn)
                    .await
                    .context("reading the published template sets")?
            },
            templates_on_disk: loaded.as_ref().ok().map(|set| set.digest().to_string()),
            templates_error: loaded.as_ref().err().map(|e| e.to_string()),
            daemons: daemons::running_daemons(db)
                .await
                .context("reading the daemons")?,
            hourly_quota: match settings.rate.per_hour {
                0 => None,
                per_hour => Some(HourlyQuota {
                    used_last_hour: quota::used_last_hour(db)
                        .await
                        .context("reading the shared quota")?,
                    per_hour,
                }),
            },
            optouts: crate::audience::optout::counts(db)
                .await
                .context("reading the opt-outs")?
                .into_iter()
                .map(|(stream, users)| StreamOptOuts { stream, users })
                .collect(),
            complaints: crate::bounce::complaint::rates(db)
                .await
                .context("reading the complaints")?,
            held_domains: crate::deliver::hold::held(db, now)
                .await
                .context("reading the held domains")?,
            holds: self.holds(now).await?,
        })
    }

    /// Everything about one user as of `at` (default: the clock's now): snapshot state,
    /// audiences, every message and why, and why not for each campaign without one.
    pub async fn explain(
        &self,
        user_id: &str,
        at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Explanation> {
        let now = self.now_or(at);
        let Some(mut e) = explain(&self.db, &self.settings, user_id, now)
            .await
            .context("reading the user")?
        else {
            anyhow::bail!(
                "no user `{user_id}` in the snapshot (user ids are the portal's, e.g. U0002; they are case-sensitive)"
            );
        };
        // A held domain is said only for the user's own addresses (`held`, above).
        e.holds = self.holds(now).await?;
        e.holds.retain(|h| h.domain.is_none());
        Ok(e)
    }

    /// Puts the failed messages matching `filter` back in the queue; deadlines are decided as
    /// of `at` (default: the clock's now). With `dry_run`, counts and changes nothing.
    pub async fn retry_failed(
        &self,
        who: &Actor,
        filter: &RetryFilter,
        at: Option<DateTime<Utc>>,
        dry_run: bool,
    ) -> anyhow::Result<Retried> {
        tracing::debug!(actor = %who, dry_run, "retry failed messages");
        let object = filter
            .campaign
            .clone()
            .unwrap_or_else(|| "all campaigns".to_string());
        self.permit(who, Action::Retry, &object).await?;
        let now = self.now_or(at);
        let mut tx = self.begin().await?;
        let report = retry_failed_on(&mut tx, filter, now, dry_run)
            .await
            .context("putting failed messages back in the queue");
        if dry_run {
            // A dry run changes nothing: nothing to record.
            tx.rollback().await?;
            return Ok(Retried::new(true, report?));
        }
        let result = report.map(|r| {
            let after = summary(serde_json::json!({
                "retried": r.retried(),
                "reply": filter.reply,
            }));
            (Retried::new(false, r), after)
        });
        self.settle(tx, Audited::new(who, Action::Retry, object), result, false)
            .await
    }
}

impl Retried {
    fn new(dry_run: bool, report: crate::deliver::retry::RetryReport) -> Retried {
        Retried {
            dry_run,
            retried: report.retried(),
            per_campaign: report
                .per_campaign
                .into_iter()
                .map(|(campaign, retried, past_deadline)| RetriedCampaign {
                    campaign,
                    retried,
                    past_deadline,
                })
                .collect(),
        }
    }
}
