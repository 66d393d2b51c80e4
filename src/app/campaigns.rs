//! The campaigns' use cases: create a one-off campaign, list and show them, and each action of
//! the lifecycle (launch, pause, resume, cancel). The rules are in [`crate::audience::campaign`]
//! and [`crate::campaign::lifecycle`]; here they are called and their outcome reported.

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::access::Action;
use super::audit::{summary, Audited};
use super::{Actor, App};
use crate::audience::Audience;
use crate::campaign::lifecycle::{self, Transition};
use crate::campaign::{self, Campaign, NewCampaign, Overview};
use crate::store::{queue, CampaignState, Counts};

/// A one-off campaign to create, as an operator gives it: times as RFC 3339 or a local time in
/// the calendar's time zone.
#[derive(Debug, Clone)]
pub struct NewCampaignRequest {
    pub name: String,
    pub audience: Audience,
    pub template: String,
    /// `province=XX`.
    pub filter: Option<String>,
    pub send_at: Option<String>,
    pub expires_at: Option<String>,
    /// `--transactional REASON`: the emails are about the user's own business and carry no
    /// unsubscribe; the reason is stored and shown.
    pub transactional: Option<String>,
    /// Only these users (user ids or fiscal codes, from [`user_list`]): the audience narrowed
    /// to an uploaded list. Not with `filter`.
    pub users: Option<Vec<String>>,
}

/// The entries of an uploaded list of users: one user id or fiscal code per line, or the
/// first field of a CSV line; empty lines and a header line (`user_id` or `fiscal_code`)
/// skipped. `source` names the file in an error, with the line.
pub fn user_list(source: &str, text: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line
            .split([',', ';'])
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches('"')
            .trim();
        if entry.is_empty() || (i == 0 && ["user_id", "fiscal_code"].contains(&entry)) {
            continue;
        }
        if entry.chars().count() > 64
            || !entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            anyhow::bail!(
                "{source}, line {}: `{}` is not a user id or a fiscal code (letters, digits, \
                 `-`, `_`, `.`; one per line)",
                i + 1,
                entry.chars().take(64).collect::<String>()
            );
        }
        out.push(entry.to_string());
    }
    if out.is_empty() {
        anyhow::bail!("{source}: no user id or fiscal code in it");
    }
    Ok(out)
}

/// A campaign as `list` and `show` give it: times in UTC (RFC 3339), the messages by state as
/// the outbox holds them.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignView {
    pub name: String,
    pub kind: String,
    pub state: String,
    /// Why avvisi paused it itself (the circuit breaker), addresses masked.
    pub paused_reason: Option<String>,
    #[serde(flatten)]
    pub setup: CampaignSetup,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every planned message.
    pub planned: u64,
    pub messages: Counts,
    /// Who created it (an operator's one-off campaign).
    pub created_by: Option<String>,
    /// The latest decision on it: approved or rejected, by whom, when, the audience frozen,
    /// stale once a launch found the audience changed.
    pub approval: Option<crate::campaign::approval::Approval>,
    /// The paused reason as recorded, for the operator at the terminal (not in JSON).
    #[serde(skip)]
    pub paused_reason_unmasked: Option<String>,
    /// Who the audience is, in a sentence (not in JSON).
    #[serde(skip)]
    pub audience_description: &'static str,
    /// How many users each clause of its rule keeps now ([`App::campaign`] only; the list
    /// leaves it empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub funnel: Vec<crate::campaign::funnel::FunnelStep>,
}

/// What a campaign was set up with (who, which message, when), and its audience's size now:
/// the part of a campaign that creating it reports and `list` and `show` report again. Its
/// fields stand among the report's own in JSON.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignSetup {
    pub audience: String,
    pub filter_province: Option<String>,
    pub template: String,
    /// Its stream (`List-Id`, opt-outs), e.g. `maintenance_notice` or `campaign:NAME`.
    pub stream: String,
    /// Whether its emails carry the one-click unsubscribe.
    pub unsubscribe: bool,
    /// Why it carries none, when created `--transactional`.
    pub transactional: Option<String>,
    /// Users in the audience now.
    pub audience_size: u64,
    pub send_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl CampaignSetup {
    fn of(c: &Campaign, audience_size: u64) -> CampaignSetup {
        CampaignSetup {
            audience: c.audience.to_string(),
            filter_province: c.filter_province.clone(),
            template: c.template.clone(),
            stream: c.stream.key(),
            unsubscribe: c.unsubscribe(),
            transactional: c.transactional.clone(),
            audience_size,
            send_at: c.send_at,
            expires_at: c.expires_at,
        }
    }
}

impl From<&Overview> for CampaignView {
    fn from(o: &Overview) -> CampaignView {
        let c = &o.campaign;
        CampaignView {
            name: c.name.clone(),
            kind: c.kind.to_string(),
            state: c.state.to_string(),
            paused_reason: c
                .paused_reason
                .as_deref()
                .map(|r| crate::telemetry::scrub(r).into_owned()),
            setup: CampaignSetup::of(c, o.audience_size),
            created_at: o.created_at,
            started_at: o.started_at,
            finished_at: o.finished_at,
            planned: o.counts.total(),
            messages: o.counts,
            created_by: c.created_by.clone(),
            approval: o.approval.clone(),
            paused_reason_unmasked: c.paused_reason.clone(),
            audience_description: c.audience.description(),
            funnel: Vec::new(),
        }
    }
}

/// A draft campaign just created.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub name: String,
    #[serde(flatten)]
    pub setup: CampaignSetup,
    /// `send_at` is already past: once launched, it starts at once.
    pub send_at_past: bool,
    /// What the operator should know before going on (an empty audience).
    pub warnings: Vec<String>,
    /// The entries of the uploaded list that matched no user (nothing is guessed for them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
}

/// A campaign launched: running now, or scheduled for `send_at`.
#[derive(Debug, Clone, Serialize)]
pub struct Launched {
    pub name: String,
    pub state: CampaignState,
    pub send_at: Option<DateTime<Utc>>,
    pub audience_size: u64,
    /// What the operator should know (an empty audience, no daemon running to send it).
    pub warnings: Vec<String>,
}

/// The warning on a campaign whose audience is empty now, if it is.
fn empty_audience(c: &Campaign, size: u64) -> Option<String> {
    (size == 0).then(|| {
        format!(
            "the audience is empty now: no user is in {}{} ({}); it would send nothing",
            c.audience,
            c.filter_province
                .as_deref()
                .map(|p| format!(" in province {p}"))
                .unwrap_or_default(),
            c.audience.description()
        )
    })
}

/// A lifecycle action's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Transitioned {
    pub name: String,
    /// The state the campaign is in now.
    pub state: CampaignState,
    /// Pending messages skipped (by a cancel).
    pub skipped: u64,
    /// A pause: messages already claimed by a sender then (the few on the wire finish, the
    /// others go back to the queue unsent).
    pub on_the_way: u64,
}

impl From<lifecycle::Transition> for Transitioned {
    fn from(t: lifecycle::Transition) -> Transitioned {
        Transitioned {
            name: t.name,
            state: t.state,
            skipped: t.skipped,
            on_the_way: t.on_the_way,
        }
    }
}

/// Where a campaign stands: its state and its messages.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignProgress {
    pub name: String,
    pub state: CampaignState,
    pub send_at: Option<DateTime<Utc>>,
    pub messages: Counts,
}

impl App {
    /// Creates a one-off campaign as a draft: nothing is sent until it is launched.
    pub async fn create_campaign(
        &self,
        who: &Actor,
        req: &NewCampaignRequest,
    ) -> anyhow::Result<Created> {
        tracing::debug!(actor = %who, campaign = %req.name, "create campaign");
        self.permit(who, Action::CampaignCreate, &req.name).await?;
        // Checked and recorded like the rest: a request refused is in the audit log too.
        let new = self.new_campaign(req).await;
        let mut tx = self.begin().await?;
        let audited = Audited::new(who, Action::CampaignCreate, req.name.clone());
        let result = async {
            let (new, templates) = new?;
            let now = self.clock.now();
            let mut c =
                campaign::create_on(&mut tx, &new, &templates, now, Some(who.name())).await?;
            let mut not_found = Vec::new();
            if let Some(users) = &req.users {
                let (key, missing) = campaign::attach_list(&mut tx, &c, users).await?;
                c.filter_province = Some(key);
                not_found = missing;
            }
            let size = campaign::audience_size_on(&mut tx, &c).await?;
            let after = summary(serde_json::json!({
                "state": c.state,
                "audience": c.audience.name(),
                "filter_province": c.filter_province,
                "template": c.template,
                "audience_size": size,
                "list_not_found": not_found.len(),
            }));
            let created = Created {
                setup: CampaignSetup::of(&c, size),
                warnings: empty_audience(&c, size).into_iter().collect(),
                name: c.name,
                send_at_past: new.send_at.is_some_and(|t| t <= now),
                not_found,
            };
            Ok((created, after))
        }
        .await;
        self.settle(tx, audited, result, false).await
    }

    /// The campaign `req` asks for, checked, and the template set's message names.
    async fn new_campaign(
        &self,
        req: &NewCampaignRequest,
    ) -> anyhow::Result<(NewCampaign, Vec<String>)> {
        let now = self.clock.now();
        campaign::check_name(&req.name)?;
        let filter_province = req
            .filter
            .as_deref()
            .map(campaign::parse_filter)
            .transpose()?;
        if filter_province.is_some() && req.users.is_some() {
            anyhow::bail!(
                "a campaign is narrowed by provinces or by a list of users, not both: the list \
                 already names who receives it"
            );
        }
        let cal = &self.settings.calendar;
        let tz = cal.timezone;
        let send_at = req
            .send_at
            .as_deref()
            .map(|s| parse_instant("--send-at", s, tz))
            .transpose()?;
        let days = chrono::Duration::days(i64::from(cal.oneoff_expiry_days));
        let expires_at = match req.expires_at.as_deref() {
            Some(s) => parse_instant("--expires-at", s, tz)?,
            None => send_at.unwrap_or(now).max(now) + days,
        };
        let transactional = req
            .transactional
            .as_deref()
            .map(check_transactional)
            .transpose()?;
        let templates = self.templates().await.context("loading templates")?;
        let new = NewCampaign {
            name: req.name.clone(),
            audience: req.audience,
            template: req.template.clone(),
            filter_province,
            send_at,
            expires_at,
            transactional,
        };
        Ok((new, templates.current().messages()))
    }

    /// The messages of the templates folder a campaign may use, for the console's form.
    pub async fn template_names(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .templates()
            .await
            .context("loading templates")?
            .current()
            .messages())
    }

    /// Every campaign, reminders included, oldest first.
    pub async fn campaigns(&self) -> anyhow::Result<Vec<CampaignView>> {
        let all = campaign::overviews(&self.db)
            .await
            .context("reading campaigns")?;
        Ok(all.iter().map(CampaignView::from).collect())
    }

    /// One campaign in detail, with its audience's funnel.
    pub async fn campaign(&self, name: &str) -> anyhow::Result<CampaignView> {
        let overview = campaign::overview(&self.db, name).await?;
        let mut view = CampaignView::from(&overview);
        view.funnel = campaign::funnel::funnel(&self.db, &overview.campaign)
            .await
            .context("counting the audience's funnel")?;
        Ok(view)
    }

    /// Starts a draft campaign: the daemon plans and sends it (at its `send_at`, if set). With
    /// `approval.required`, only once someone other than its creator approved it, and only
    /// while its audience is the one approved (see [`App::cleared_for_launch`]).
    pub async fn launch_campaign(&self, who: &Actor, name: &str) -> anyhow::Result<Launched> {
        tracing::debug!(actor = %who, campaign = name, "launch campaign");
        let t = self.transition(who, Action::CampaignLaunch, name).await?;
        let c = campaign::get(&self.db, name).await?;
        let size = campaign::audience_size(&self.db, &c).await?;
        let mut warnings: Vec<String> = empty_audience(&c, size).into_iter().collect();
        let daemons = crate::store::daemons::running_daemons(&self.db)
            .await
            .context("reading the daemons' heartbeats")?;
        if daemons.is_empty() {
            warnings.push(format!(
                "no daemon is running (none has a heartbeat in the last {} seconds): nothing is \
                 planned or sent until `avvisi daemon` runs (or `avvisi run --once`)",
                crate::store::daemons::HEARTBEAT_STALE_SECONDS
            ));
        }
        Ok(Launched {
            name: t.name,
            state: t.state,
            send_at: c.send_at,
            audience_size: size,
            warnings,
        })
    }

    /// Pauses a running or scheduled campaign: the daemon stops sending it within one batch.
    pub async fn pause_campaign(&self, who: &Actor, name: &str) -> anyhow::Result<Transitioned> {
        tracing::debug!(actor = %who, campaign = name, "pause campaign");
        Ok(self
            .transition(who, Action::CampaignPause, name)
            .await?
            .into())
    }

    /// Resumes a paused campaign.
    pub async fn resume_campaign(&self, who: &Actor, name: &str) -> anyhow::Result<Transitioned> {
        tracing::debug!(actor = %who, campaign = name, "resume campaign");
        Ok(self
            .transition(who, Action::CampaignResume, name)
            .await?
            .into())
    }

    /// Cancels a campaign for good: its pending messages are skipped.
    pub async fn cancel_campaign(&self, who: &Actor, name: &str) -> anyhow::Result<Transitioned> {
        tracing::debug!(actor = %who, campaign = name, "cancel campaign");
        Ok(self
            .transition(who, Action::CampaignCancel, name)
            .await?
            .into())
    }

    /// One lifecycle action, in one transaction with its audit row: the campaign's state
    /// before, the move, its state after. A launch first asks [`App::cleared_for_launch`].
    async fn transition(
        &self,
        who: &Actor,
        action: Action,
        name: &str,
    ) -> anyhow::Result<Transition> {
        self.permit(who, action, name).await?;
        let now = self.clock.now();
        let mut tx = self.begin().await?;
        let mut audited = Audited::new(who, action, name);
        let result: anyhow::Result<(Transition, Option<String>)> = async {
            let c = campaign::get_on(&mut tx, name).await?;
            audited.before = summary(serde_json::json!({ "state": c.state }));
            let t = match action {
                Action::CampaignLaunch => {
                    // A reminder is refused by the transition itself, with its own reason.
                    if c.kind != crate::store::CampaignKind::Reminder
                        && c.state == CampaignState::Draft
                    {
                        self.cleared_for_launch(&mut tx, &c).await?;
                    }
                    lifecycle::launch_on(&mut tx, name, now).await?
                }
                Action::CampaignPause => lifecycle::pause_on(&mut tx, name).await?,
                Action::CampaignResume => lifecycle::resume_on(&mut tx, name, now).await?,
                _ => lifecycle::cancel_on(&mut tx, name, now).await?,
            };
            let after = summary(serde_json::json!({ "state": t.state, "skipped": t.skipped }));
            Ok((t, after))
        }
        .await;
        // A launch refused for a changed audience keeps what it wrote: the approval is stale.
        let keep = result.as_ref().err().is_some_and(|e| {
            matches!(
                e.downcast_ref::<campaign::approval::ApprovalError>(),
                Some(campaign::approval::ApprovalError::AudienceChanged { .. })
            )
        });
        self.settle(tx, audited, result, keep).await
    }

    /// The campaign's state and messages now (to follow it while it is sent).
    pub async fn campaign_progress(&self, name: &str) -> anyhow::Result<CampaignProgress> {
        let c = campaign::get(&self.db, name).await?;
        let messages = queue::of_campaign(&self.db, c.id).await?;
        Ok(CampaignProgress {
            name: c.name,
            state: c.state,
            send_at: c.send_at,
            messages,
        })
    }
}

/// An RFC 3339 instant, or a local date and time in `tz` (refused when a DST change skips or
/// repeats it). `flag` names the value in the error.
fn parse_instant(flag: &str, s: &str, tz: Tz) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .with_context(|| {
            format!("{flag} `{s}`: expected RFC 3339 such as 2026-11-26T09:00:00+01:00, or a local time such as 2026-11-26T09:00")
        })?;
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        _ => anyhow::bail!(
            "{flag} `{s}`: that local time is skipped or repeated by a daylight-saving change in {tz}; give it with its offset"
        ),
    }
}

/// The reason of `--transactional`: one line of words, for the operators who read it later.
fn check_transactional(reason: &str) -> anyhow::Result<String> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        anyhow::bail!(
            "--transactional needs the reason, one line of at most 200 characters (why these \
             emails are about the user's own business and so carry no unsubscribe), e.g. \
             --transactional \"esito della domanda presentata\""
        );
    }
    Ok(reason.to_string())
}
