//! The editors' workbench (issue 24): a draft template set per editor, started from the live
//! set and saved file by file (never live by itself), the full check of the draft on every save,
//! previews of the draft for a real recipient and for every sample, "what changes" for real
//! recipients of each campaign, another person's approval (`approval.templates`), and the
//! publication of the draft through the same path as `templates publish`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::access::Action;
use super::audit::{summary, Audited};
use super::templates::Published;
use super::{Actor, App};
use crate::campaign;
use crate::deliver::outbox::Claimed;
use crate::editor::diff::{self, DiffLine};
use crate::editor::{self, check};
use crate::render::email::{self, Envelope};
use crate::render::templates::{digest_of, MessageContext, TemplateSet};
use crate::render::{context, digest};
use crate::store::template_drafts::{self, Approval, DraftInfo};

/// Real recipients per campaign in "what changes".
pub const CHANGE_SAMPLES: i64 = 5;

/// A workbench request refused: nothing was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DraftRefused {
    #[error("non hai una bozza: iniziarne una dalla versione pubblicata")]
    NoDraft,
    #[error("`{0}` non ha una bozza")]
    NoDraftOf(String),
    #[error("la bozza non ha il file `{0}`: si modificano solo i file della versione pubblicata")]
    NoSuchFile(String),
    #[error("non si può approvare la propria bozza: serve un altro redattore o un approvatore")]
    OwnDraft,
    #[error("la bozza di {author} ha {problems} problemi: si approva solo una bozza che supera il controllo")]
    FailsCheck { author: String, problems: usize },
    #[error("nessun utente ha il codice utente o il codice fiscale `{0}`")]
    NoSuchUser(String),
    #[error("nessun esempio `{0}`")]
    NoSuchSample(String),
    #[error("nessun messaggio `{0}` nella bozza")]
    NoSuchMessage(String),
}

/// One problem (or warning) of the check, at its file and line.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Finding {
    /// `p`, its file named inside the set checked as `label`.
    fn of(label: &Path, p: &check::Problem) -> Finding {
        let file = p.file.strip_prefix(label).unwrap_or(&p.file);
        Finding {
            file: file.display().to_string(),
            line: p.line,
            message: p.message.clone(),
        }
    }
}

/// An editor's draft with its files, the check's findings and its approvals.
#[derive(Debug, Clone, Serialize)]
pub struct Draft {
    pub info: DraftInfo,
    pub files: BTreeMap<String, String>,
    /// The digest the draft would be published with.
    pub digest: String,
    /// The live set's digest now.
    pub live_digest: Option<String>,
    pub problems: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// The approvals of this very set (by its digest).
    pub approvals: Vec<Approval>,
}

impl Draft {
    /// Whether the draft's files are the live set's.
    pub fn is_live(&self) -> bool {
        self.live_digest.as_deref() == Some(self.digest.as_str())
    }

    /// Whether someone other than its author approved this very set.
    pub fn approved(&self) -> bool {
        self.approvals
            .iter()
            .any(|a| a.approved_by != self.info.author)
    }
}

/// One message of a preview: its subject, headers, text and HTML, or why it cannot be rendered.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewPart {
    pub message: String,
    pub subject: String,
    /// The email's headers as they would be sent.
    pub headers: String,
    pub text: String,
    pub html: String,
    pub error: Option<String>,
}

/// A preview of the draft: whose it is and the messages.
#[derive(Debug, Clone, Serialize)]
pub struct DraftPreview {
    pub description: String,
    pub at: DateTime<Utc>,
    pub parts: Vec<PreviewPart>,
}

/// One real recipient's message before (live set) and after (draft).
#[derive(Debug, Clone, Serialize)]
pub struct RecipientChange {
    pub user_id: String,
    pub subject_before: String,
    pub subject_after: String,
    /// The subject and the text, line by line.
    pub diff: Vec<DiffLine>,
    pub changed: bool,
    /// Why the draft cannot render it, if so.
    pub error: Option<String>,
}

/// A campaign's sample of real recipients in "what changes".
#[derive(Debug, Clone, Serialize)]
pub struct CampaignChanges {
    pub campaign: String,
    pub template: String,
    pub recipients: Vec<RecipientChange>,
}

/// Everything a sample preview offers: the messages and the sample variants.
#[derive(Debug, Clone, Serialize)]
pub struct SampleChoice {
    pub id: String,
    pub description: String,
}

impl App {
    /// `who`'s own draft, with the check's findings; `None` when they have none.
    pub async fn draft(&self, who: &Actor) -> anyhow::Result<Option<Draft>> {
        self.permit(who, Action::Templates, "bozza").await?;
        self.draft_of(who.name()).await
    }

    /// `author`'s draft, as above, without asking for a role (the callers did).
    async fn draft_of(&self, author: &str) -> anyhow::Result<Option<Draft>> {
        let mut conn = self.db.pool().acquire().await?;
        let Some((info, files)) = template_drafts::get(&mut conn, author)
            .await
            .context("reading the draft")?
        else {
            return Ok(None);
        };
        let digest = digest_of(&files);
        let approvals = template_drafts::approvals(&mut conn, &digest).await?;
        let live = crate::store::template_sets::latest(&mut conn).await?;
        drop(conn);
        let label = draft_label(author);
        let report = check::check_sources(&label, &files, &self.settings);
        let found = |list: &[check::Problem]| list.iter().map(|p| Finding::of(&label, p)).collect();
        Ok(Some(Draft {
            info,
            digest,
            live_digest: live.map(|p| p.digest),
            problems: found(&report.problems),
            warnings: found(&report.warnings),
            approvals,
            files,
        }))
    }

    /// Every other editor's draft, for `who` to approve (another editor or an approver).
    pub async fn drafts_to_approve(&self, who: &Actor) -> anyhow::Result<Vec<Draft>> {
        self.permit(who, Action::TemplatesApprove, "bozze").await?;
        let mut conn = self.db.pool().acquire().await?;
        let all = template_drafts::all(&mut conn).await?;
        drop(conn);
        let mut out = Vec::new();
        for info in all.iter().filter(|d| d.author != who.name()) {
            if let Some(d) = self.draft_of(&info.author).await? {
                if !d.is_live() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Starts `who`'s draft as a copy of the live set (replacing any draft they had). Audited.
    pub async fn start_draft(&self, who: &Actor) -> anyhow::Result<Draft> {
        self.permit(who, Action::TemplatesSave, "bozza").await?;
        let (publication, set) = self.live_templates().await?;
        let base = publication
            .map(|p| p.digest)
            .unwrap_or_else(|| set.digest().to_string());
        let mut tx = self.begin().await?;
        let started =
            template_drafts::start(&mut tx, who.name(), &base, set.sources(), self.clock.now())
                .await
                .map(|()| {
                    let after = summary(serde_json::json!({"started_from": base}));
                    ((), after)
                })
                .map_err(anyhow::Error::new);
        let audited = Audited::new(who, Action::TemplatesSave, "bozza");
        self.settle(tx, audited, started, false).await?;
        self.draft_of(who.name())
            .await?
            .context("the draft just started vanished")
    }

    /// Saves `content` as file `path` of `who`'s draft, then checks the whole draft. Nothing is
    /// live: only a publication is. Audited with the file's name and the draft's digest, never
    /// its text.
    pub async fn save_draft_file(
        &self,
        who: &Actor,
        path: &str,
        content: &str,
    ) -> anyhow::Result<Draft> {
        self.permit(who, Action::TemplatesSave, path).await?;
        let mut conn = self.db.pool().acquire().await?;
        let current = template_drafts::get(&mut conn, who.name()).await?;
        drop(conn);
        let content = match current.as_ref().and_then(|(_, files)| files.get(path)) {
            // A browser sends a text area's lines ended by CRLF: a file that had none keeps LF.
            Some(old) if !old.contains('\r') => content.replace("\r\n", "\n"),
            _ => content.to_string(),
        };
        let audited = Audited::new(who, Action::TemplatesSave, path);
        let mut tx = self.begin().await?;
        let result: anyhow::Result<((), Option<String>)> = match &current {
            None => Err(DraftRefused::NoDraft.into()),
            Some((_, files)) => {
                match template_drafts::save_file(
                    &mut tx,
                    who.name(),
                    path,
                    &content,
                    self.clock.now(),
                )
                .await
                {
                    Ok(false) => Err(DraftRefused::NoSuchFile(path.to_string()).into()),
                    Ok(true) => {
                        let mut files = files.clone();
                        files.insert(path.to_string(), content.clone());
                        let report =
                            check::check_sources(&draft_label(who.name()), &files, &self.settings);
                        let after = summary(serde_json::json!({
                            "file": path,
                            "digest": digest_of(&files),
                            "problems": report.problems.len(),
                        }));
                        Ok(((), after))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        };
        self.settle(tx, audited, result, false).await?;
        self.draft_of(who.name())
            .await?
            .context("the draft just saved vanished")
    }

    /// Records `who`'s approval of `author`'s draft as it is now (its digest): refused for
    /// one's own draft and for a draft failing the check. Audited.
    pub async fn approve_draft(&self, who: &Actor, author: &str) -> anyhow::Result<Approval> {
        self.permit(who, Action::TemplatesApprove, author).await?;
        let audited = Audited::new(who, Action::TemplatesApprove, author);
        let draft = if author == who.name() {
            Err(DraftRefused::OwnDraft.into())
        } else {
            match self.draft_of(author).await? {
                None => Err(DraftRefused::NoDraftOf(author.to_string()).into()),
                Some(d) if !d.problems.is_empty() => Err(DraftRefused::FailsCheck {
                    author: author.to_string(),
                    problems: d.problems.len(),
                }
                .into()),
                Some(d) => Ok(d),
            }
        };
        let mut tx = self.begin().await?;
        let draft = match draft {
            Ok(d) => d,
            Err(e) => return self.settle(tx, audited, Err(e), false).await,
        };
        let now = self.clock.now();
        let result = template_drafts::approve(&mut tx, &draft.digest, author, who.name(), now)
            .await
            .map(|()| {
                let approval = Approval {
                    digest: draft.digest.clone(),
                    author: author.to_string(),
                    approved_by: who.name().to_string(),
                    approved_at: now,
                };
                let after = summary(serde_json::json!({"digest": draft.digest, "author": author}));
                (approval, after)
            })
            .map_err(anyhow::Error::new);
        self.settle(tx, audited, result, false).await
    }

    /// Publishes `who`'s draft with `note`: the same path as `templates publish` (the full
    /// check, and the approval when `approval.templates` asks for one).
    pub async fn publish_draft(&self, who: &Actor, note: &str) -> anyhow::Result<Published> {
        self.permit(who, Action::TemplatesPublish, "bozza").await?;
        let mut conn = self.db.pool().acquire().await?;
        let current = template_drafts::get(&mut conn, who.name()).await?;
        drop(conn);
        let Some((_, files)) = current else {
            let tx = self.begin().await?;
            let audited = Audited::new(who, Action::TemplatesPublish, "bozza");
            return self
                .settle(tx, audited, Err(DraftRefused::NoDraft.into()), false)
                .await;
        };
        self.publish_template_files(who, &draft_label(who.name()), files, note)
            .await
    }

    /// The messages and sample variants a sample preview offers.
    pub fn preview_samples(&self) -> Vec<SampleChoice> {
        editor::samples()
            .into_iter()
            .map(|s| SampleChoice {
                id: s.id,
                description: s.description,
            })
            .collect()
    }

    /// What the user whose user id or fiscal code is `recipient` receives on `at`'s day
    /// (default: now), rendered with `who`'s draft: that user only, nobody else's data.
    pub async fn preview_draft_for(
        &self,
        who: &Actor,
        recipient: &str,
        at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<DraftPreview> {
        self.permit(who, Action::Templates, "anteprima").await?;
        let set = self.draft_set(who.name()).await?;
        let wanted = recipient.trim();
        let mut conn = self.db.pool().acquire().await?;
        let user_id = crate::store::id_by_id_or_fiscal_code(&mut conn, wanted)
            .await?
            .ok_or_else(|| DraftRefused::NoSuchUser(wanted.to_string()))?;
        drop(conn);
        let now = self.now_or(at);
        let (sample, messages, description) = self.day_of(&user_id, now).await?;
        let parts = messages
            .iter()
            .map(|(message, ctx)| self.part(&set, message, ctx, &sample, now))
            .collect();
        Ok(DraftPreview {
            description,
            at: now,
            parts,
        })
    }

    /// `message` of `who`'s draft rendered with the sample variant `sample` (one of
    /// [`App::preview_samples`]: each audience's message, digests of two and three sections,
    /// the institutional fallback...).
    pub async fn preview_draft_sample(
        &self,
        who: &Actor,
        message: &str,
        sample: &str,
    ) -> anyhow::Result<DraftPreview> {
        self.permit(who, Action::Templates, "anteprima").await?;
        let set = self.draft_set(who.name()).await?;
        if !set.messages().iter().any(|m| m == message) {
            return Err(DraftRefused::NoSuchMessage(message.to_string()).into());
        }
        let s = editor::samples()
            .into_iter()
            .find(|s| s.id == sample)
            .ok_or_else(|| DraftRefused::NoSuchSample(sample.to_string()))?;
        let reopening = editor::reopening_messages(set.sources()).contains(message);
        let ctx = editor::context(&self.settings, message, &s, reopening);
        let now = self.clock.now();
        let mut description = format!("{message}, esempio {}: {}", s.id, s.description);
        if message == digest::DIGEST {
            description.push_str(&format!(" (riepilogo di {} sezioni)", ctx.sections.len()));
        }
        let part = self.part(&set, message, &ctx, &s, now);
        Ok(DraftPreview {
            description,
            at: now,
            parts: vec![part],
        })
    }

    /// For up to [`CHANGE_SAMPLES`] real recipients of each campaign not yet over, the
    /// subject and text rendered now with the live set and with `author`'s draft, as a line
    /// diff. `who` sees their own draft's, or another's when they may approve it.
    pub async fn draft_changes(
        &self,
        who: &Actor,
        author: &str,
    ) -> anyhow::Result<Vec<CampaignChanges>> {
        let action = if author == who.name() {
            Action::Templates
        } else {
            Action::TemplatesApprove
        };
        self.permit(who, action, author).await?;
        let draft = self.draft_set(author).await?;
        let worker = self.sample_worker(false).await?;
        let live = worker.templates().current();
        let now = self.clock.now();
        let reopened = crate::campaign::phases::reopened_at(self.db.pool()).await?;
        let reopened = context::local_rfc3339(&self.settings.calendar, reopened);
        let domain = email::message_id_domain(&self.settings.mail);
        let mut out = Vec::new();
        for c in campaign::list(&self.db).await? {
            if c.state.is_final() {
                continue;
            }
            let message_id = format!("<{}.main.changes@{domain}>", c.uid);
            let rows =
                crate::deliver::outbox::recipients(&self.db, &c, &message_id, CHANGE_SAMPLES)
                    .await?;
            if rows.is_empty() {
                continue;
            }
            let mut recipients = Vec::new();
            for row in &rows {
                let ctx = worker.context_for(row, now, reopened.clone(), false);
                recipients.push(change(row, &c.template, &live, &draft, &ctx));
            }
            out.push(CampaignChanges {
                campaign: c.name,
                template: c.template,
                recipients,
            });
        }
        Ok(out)
    }

    /// `author`'s draft compiled; refused when they have none. A draft that does not compile
    /// still previews: the error is the preview's.
    async fn draft_set(&self, author: &str) -> anyhow::Result<TemplateSet> {
        let mut conn = self.db.pool().acquire().await?;
        let (_, files) = template_drafts::get(&mut conn, author)
            .await?
            .ok_or_else(|| DraftRefused::NoDraftOf(author.to_string()))?;
        Ok(TemplateSet::from_sources(&draft_label(author), &files)?)
    }

    /// `message` rendered with `set` for `ctx`, with the headers of the email it makes.
    fn part(
        &self,
        set: &TemplateSet,
        message: &str,
        ctx: &MessageContext,
        sample: &editor::Sample,
        now: DateTime<Utc>,
    ) -> PreviewPart {
        let (to, to_name, step) = (
            sample.to_address.as_str(),
            sample.user.full_name.as_str(),
            sample.situation.step,
        );
        let mut part = PreviewPart {
            message: message.to_string(),
            subject: String::new(),
            headers: String::new(),
            text: String::new(),
            html: String::new(),
            error: None,
        };
        let rendered = match set.render(message, ctx) {
            Ok(r) => r,
            Err(e) => {
                part.error = Some(e.to_string());
                return part;
            }
        };
        let domain = email::message_id_domain(&self.settings.mail);
        let message_id = format!("<anteprima.{message}@{domain}>");
        let envelope = Envelope {
            to_address: to,
            to_name,
            message_id: &message_id,
            campaign: &ctx.campaign,
            step,
            date: now.into(),
        };
        match email::build(&self.settings.mail, &envelope, &rendered) {
            Ok(email) => {
                let formatted = String::from_utf8_lossy(&email.formatted()).into_owned();
                part.headers = formatted
                    .split("\r\n\r\n")
                    .next()
                    .unwrap_or_default()
                    .replace("\r\n", "\n");
            }
            Err(e) => part.error = Some(e.to_string()),
        }
        part.subject = rendered.subject;
        part.text = rendered.text;
        part.html = rendered.html;
        part
    }
}

/// How a draft is named in the check's messages and the audit log.
fn draft_label(author: &str) -> PathBuf {
    Path::new("bozza").join(author)
}

/// `row`'s message of `template` before (`live`) and after (`draft`).
fn change(
    row: &Claimed,
    template: &str,
    live: &TemplateSet,
    draft: &TemplateSet,
    ctx: &MessageContext,
) -> RecipientChange {
    let whole = |r: &crate::render::templates::Rendered| format!("{}\n\n{}", r.subject, r.text);
    let before = live.render(template, ctx);
    let after = draft.render(template, ctx);
    let (subject_before, text_before) = match &before {
        Ok(r) => (r.subject.clone(), whole(r)),
        Err(e) => (String::new(), e.to_string()),
    };
    let (subject_after, text_after, error) = match &after {
        Ok(r) => (r.subject.clone(), whole(r), None),
        Err(e) => (String::new(), String::new(), Some(e.to_string())),
    };
    let diff = diff::lines(&text_before, &text_after);
    RecipientChange {
        user_id: row.user.user_id.clone(),
        subject_before,
        subject_after,
        changed: diff::changed(&diff),
        diff,
        error,
    }
}
