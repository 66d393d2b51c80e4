//! A second person's approval of a one-off campaign: what the approver is shown (the audience's
//! size and fingerprint, ten messages rendered for real recipients), the approval that freezes
//! it, a rejection, and the check a launch makes ([`App::launch_campaign`] calls
//! [`App::cleared_for_launch`] in its transaction).

use serde::Serialize;

use super::access::{Action, Actor};
use super::audit::{summary, Audited, Tx};
use super::samples::{render_sample, PreviewedMessage};
use super::App;
use crate::campaign::approval::{self, ApprovalError, Decision, Fingerprint};
use crate::campaign::{self, Campaign};
use crate::render::email;
use crate::store::{CampaignKind, CampaignState};

/// How many rendered messages an approver reads.
pub const SAMPLES: i64 = 10;

/// What an approver reads before approving: nothing is recorded yet.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalPreview {
    pub campaign: String,
    pub created_by: Option<String>,
    pub audience: String,
    pub filter_province: Option<String>,
    pub template: String,
    pub audience_size: u64,
    pub audience_sha256: String,
    /// The first ten recipients by user id, their message rendered as if sent now.
    pub samples: Vec<PreviewedMessage>,
}

/// An approval recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Approved {
    pub campaign: String,
    pub approved_by: String,
    pub audience_size: u64,
    pub audience_sha256: String,
    pub samples: usize,
}

/// A rejection recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub campaign: String,
    pub rejected_by: String,
    pub reason: String,
}

/// Refuses `who` deciding on `c`: only a draft one-off campaign, and never its creator's own.
fn check_decider(who: &Actor, c: &Campaign) -> Result<(), ApprovalError> {
    if c.kind == CampaignKind::Reminder {
        return Err(ApprovalError::Reminder {
            name: c.name.clone(),
        });
    }
    if c.state != CampaignState::Draft {
        return Err(ApprovalError::NotADraft {
            name: c.name.clone(),
            state: c.state.to_string(),
        });
    }
    if let Some(creator) = c.created_by.as_deref().filter(|c| *c == who.name()) {
        return Err(ApprovalError::OwnCampaign {
            name: c.name.clone(),
            creator: creator.to_string(),
        });
    }
    Ok(())
}

impl App {
    /// What `who` would approve: the audience now and ten messages rendered for it. Refused
    /// (and recorded) as the approval itself would be: `who`'s role, their own campaign, a
    /// campaign that is not a draft.
    pub async fn approval_preview(
        &self,
        who: &Actor,
        name: &str,
    ) -> anyhow::Result<ApprovalPreview> {
        self.permit(who, Action::CampaignApprove, name).await?;
        let mut tx = self.begin().await?;
        let checked = async {
            let c = campaign::get_on(&mut tx, name).await?;
            check_decider(who, &c)?;
            let fp = approval::fingerprint(&mut tx, &c).await?;
            Ok((c, fp))
        }
        .await;
        let (c, fp) = match checked {
            Ok(v) => {
                tx.rollback().await?;
                v
            }
            Err(e) => {
                let a = Audited::new(who, Action::CampaignApprove, name);
                return self.settle(tx, a, Err(e), false).await;
            }
        };
        let samples = self.samples(&c).await?;
        Ok(ApprovalPreview {
            campaign: c.name,
            created_by: c.created_by,
            audience: c.audience.to_string(),
            filter_province: c.filter_province,
            template: c.template,
            audience_size: fp.size,
            audience_sha256: fp.sha256,
            samples,
        })
    }

    /// The first [`SAMPLES`] recipients' messages, rendered as if sent now.
    async fn samples(&self, c: &Campaign) -> anyhow::Result<Vec<PreviewedMessage>> {
        let domain = email::message_id_domain(&self.settings.mail);
        let message_id = format!("<{}.main.approval@{domain}>", c.uid);
        let rows = crate::deliver::outbox::recipients(&self.db, c, &message_id, SAMPLES).await?;
        let worker = self.sample_worker(false).await?;
        let now = self.clock.now();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let rendered = render_sample(&worker, c, &row, now, false).await?;
            out.push(PreviewedMessage::of(row, now, rendered, false));
        }
        Ok(out)
    }

    /// Records `who`'s approval of `preview` (what [`App::approval_preview`] showed them). The
    /// audience is computed again in the transaction: when it is no longer the one shown,
    /// nothing is recorded.
    pub async fn approve_campaign(
        &self,
        who: &Actor,
        preview: &ApprovalPreview,
    ) -> anyhow::Result<Approved> {
        let name = preview.campaign.as_str();
        self.permit(who, Action::CampaignApprove, name).await?;
        let mut tx = self.begin().await?;
        let mut audited = Audited::new(who, Action::CampaignApprove, name);
        let result = async {
            let c = campaign::get_on(&mut tx, name).await?;
            audited.before = self.decision_summary(&mut tx, &c).await?;
            check_decider(who, &c)?;
            let fp = approval::fingerprint(&mut tx, &c).await?;
            if fp.sha256 != preview.audience_sha256 {
                return Err(ApprovalError::ChangedWhileReading {
                    name: c.name.clone(),
                    shown: preview.audience_size,
                    now: fp.size,
                }
                .into());
            }
            let samples = serde_json::to_string(&preview.samples)?;
            approval::approve(&mut tx, &c, who.name(), &fp, &samples, self.clock.now()).await?;
            let after = summary(serde_json::json!({
                "decision": "approved",
                "audience_size": fp.size,
                "audience_sha256": fp.sha256,
            }));
            let approved = Approved {
                campaign: c.name,
                approved_by: who.name().to_string(),
                audience_size: fp.size,
                audience_sha256: fp.sha256,
                samples: preview.samples.len(),
            };
            Ok((approved, after))
        }
        .await;
        self.settle(tx, audited, result, false).await
    }

    /// Records `who`'s rejection of campaign `name`, with `reason`.
    pub async fn reject_campaign(
        &self,
        who: &Actor,
        name: &str,
        reason: &str,
    ) -> anyhow::Result<Rejected> {
        self.permit(who, Action::CampaignReject, name).await?;
        let mut tx = self.begin().await?;
        let mut audited = Audited::new(who, Action::CampaignReject, name);
        let result = async {
            let c = campaign::get_on(&mut tx, name).await?;
            audited.before = self.decision_summary(&mut tx, &c).await?;
            check_decider(who, &c)?;
            let reason = reason.trim();
            if reason.is_empty() {
                return Err(ApprovalError::NoReason.into());
            }
            approval::reject(&mut tx, &c, who.name(), reason, self.clock.now()).await?;
            let after = summary(serde_json::json!({ "decision": "rejected", "reason": reason }));
            let rejected = Rejected {
                campaign: c.name,
                rejected_by: who.name().to_string(),
                reason: reason.to_string(),
            };
            Ok((rejected, after))
        }
        .await;
        self.settle(tx, audited, result, false).await
    }

    /// The latest decision on `c`, as an audit summary.
    async fn decision_summary(&self, tx: &mut Tx, c: &Campaign) -> anyhow::Result<Option<String>> {
        let latest = approval::latest(tx, c.id).await?;
        Ok(summary(match latest {
            None => serde_json::json!({ "state": c.state, "decision": null }),
            Some(a) => serde_json::json!({
                "state": c.state,
                "decision": a.decision,
                "by": a.decided_by,
                "stale": a.stale_at.is_some(),
            }),
        }))
    }

    /// Whether `c` may be launched, in the launch's transaction: with `approval.required`, its
    /// latest decision must be an approval, not stale, and its audience unchanged. A changed
    /// audience marks the approval stale in `tx` (the caller commits it with the refusal) and
    /// says by how much it changed. Returns the audience approved (`None` when no approval is
    /// required).
    pub(crate) async fn cleared_for_launch(
        &self,
        tx: &mut Tx,
        c: &Campaign,
    ) -> anyhow::Result<Option<Fingerprint>> {
        if !self.settings.approval.required || c.kind == CampaignKind::Reminder {
            return Ok(None);
        }
        let Some(a) = approval::latest(tx, c.id).await? else {
            return Err(ApprovalError::NotApproved(c.name.clone()).into());
        };
        if a.decision == Decision::Rejected {
            return Err(ApprovalError::Rejected {
                name: c.name.clone(),
                by: a.decided_by,
                reason: a.reason.unwrap_or_default(),
            }
            .into());
        }
        if a.stale_at.is_some() {
            return Err(ApprovalError::Stale(c.name.clone()).into());
        }
        let approved = a
            .audience
            .ok_or_else(|| ApprovalError::NotApproved(c.name.clone()))?;
        let now = approval::fingerprint(tx, c).await?;
        if now == approved {
            return Ok(Some(approved));
        }
        let (added, removed) = approval::difference(tx, c, a.id).await?;
        approval::mark_stale(tx, a.id, self.clock.now()).await?;
        Err(ApprovalError::AudienceChanged {
            name: c.name.clone(),
            by: a.decided_by,
            before: approved.size,
            after: now.size,
            added,
            removed,
        }
        .into())
    }
}
