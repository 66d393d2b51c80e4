//! Messages rendered for a person to look at: a campaign's preview and test message, and the
//! template editors' check and preview. Nothing here writes to the outbox.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::access::Action;
use super::{Actor, App};
use crate::campaign::{self, Campaign};
use crate::config::Step;
use crate::deliver::outbox::Claimed;
use crate::deliver::transport::{Outgoing, Transport};
use crate::deliver::Worker;
use crate::editor::preview::{self, PreviewInput};
use crate::editor::{self, check, Sample, Situation};
use crate::explain::why_not::Verdict;
use crate::render::email::{self, Envelope};
use crate::render::templates::{MessageContext, Rendered, UserView};
use crate::render::{context, digest};
use crate::store::{CampaignState, OutboxState};

/// A test message asked for an account that has no address of its own.
#[derive(Debug, thiserror::Error)]
#[error("l'account `{0}` non ha un indirizzo email: un amministratore può impostarlo nella pagina degli account (o con `avvisi users address {0} EMAIL`)")]
pub struct NoOwnAddress(pub String);

/// A campaign's audience and its message rendered for the first real recipient.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignPreview {
    pub campaign: String,
    pub audience: String,
    pub filter_province: Option<String>,
    pub audience_size: u64,
    pub template: String,
    /// `None` when the audience is empty.
    pub message: Option<PreviewedMessage>,
}

/// A message rendered for one real user, as if sent at `at`: a campaign's first recipient, an
/// approval's samples, or the recipient an operator chose.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewedMessage {
    pub user_id: String,
    pub first_name: String,
    pub last_name: String,
    pub recipient: String,
    pub at: DateTime<Utc>,
    pub subject: String,
    pub text: String,
    /// The HTML part, when the caller shows it (an approval stores its samples without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

impl PreviewedMessage {
    /// `rendered` for `row`'s user at `at`, with its HTML part when `with_html`.
    pub(super) fn of(row: Claimed, at: DateTime<Utc>, rendered: Rendered, with_html: bool) -> Self {
        PreviewedMessage {
            user_id: row.user.user_id,
            first_name: row.user.first_name,
            last_name: row.user.last_name,
            recipient: row.recipient,
            at,
            subject: rendered.subject,
            text: rendered.text,
            html: with_html.then_some(rendered.html),
        }
    }
}

/// The user asked for is not in the campaign's audience (or not known at all).
#[derive(Debug, thiserror::Error)]
#[error(
    "no user with user id or fiscal code `{recipient}` is in the audience of campaign {campaign}"
)]
pub struct NotARecipient {
    pub campaign: String,
    pub recipient: String,
}

/// A test message sent to an operator.
#[derive(Debug, Clone, Serialize)]
pub struct TestSent {
    pub campaign: String,
    pub to: String,
    /// Where it went (`files in DIR` or `smtp`).
    pub delivery: String,
    /// The real recipient it was rendered for.
    pub rendered_for: String,
    pub subject: String,
    /// The campaign's state, unchanged.
    pub campaign_state: CampaignState,
}

/// What `templates check` found.
#[derive(Debug, Clone, Serialize)]
pub struct TemplatesChecked {
    pub dir: PathBuf,
    pub messages: Vec<String>,
    /// Samples each message was rendered with.
    pub samples: usize,
    pub renders: usize,
    /// Every problem as `FILE:LINE: explanation`, in file and line order.
    pub problems: Vec<String>,
    /// Every warning (the set is not refused for them), as `FILE:LINE: avviso: ...`.
    pub warnings: Vec<String>,
}

/// What `templates preview` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct TemplatesPreviewed {
    pub index: PathBuf,
    pub messages: Vec<String>,
    pub variants: usize,
    pub emails: usize,
    /// `MESSAGE/VARIANT: error` for every variant that could not be rendered.
    pub failures: Vec<String>,
}

impl App {
    /// A worker that renders (and, with `transport`, sends) one sample message. One that only
    /// renders has no connection to the relay, so it needs no SMTP password.
    pub(super) async fn sample_worker(&self, sends: bool) -> anyhow::Result<Worker> {
        let templates = self.templates().await.context("loading templates")?;
        let transport = if sends {
            self.transport()?
        } else {
            // Never written to: rendering sends nothing.
            Transport::Files(self.settings.delivery.dir.clone())
        };
        Ok(self.worker(transport, templates, self.clock.clone()))
    }

    /// The campaign's audience size and its message rendered for the first real recipient,
    /// as if sent now. Nothing is sent.
    pub async fn preview_campaign(
        &self,
        who: &Actor,
        name: &str,
    ) -> anyhow::Result<CampaignPreview> {
        self.permit(who, Action::CampaignPreview, name).await?;
        let c = campaign::get(&self.db, name).await?;
        let size = campaign::audience_size(&self.db, &c).await?;
        let domain = email::message_id_domain(&self.settings.mail);
        let message_id = format!("<{}.main.preview@{domain}>", c.uid);
        let row = crate::deliver::outbox::first_recipient(&self.db, &c, &message_id).await?;
        let message = match row {
            None => None,
            Some(row) => {
                let worker = self.sample_worker(false).await?;
                let now = self.clock.now();
                let rendered = render_sample(&worker, &c, &row, now, false).await?;
                Some(PreviewedMessage::of(row, now, rendered, false))
            }
        };
        Ok(CampaignPreview {
            campaign: c.name,
            audience: c.audience.to_string(),
            filter_province: c.filter_province,
            audience_size: size,
            template: c.template,
            message,
        })
    }

    /// The campaign's message rendered for the user of its audience whose user id or fiscal
    /// code is `recipient`, as if sent now: subject, text and HTML. Nothing is sent; a user
    /// not in the audience (or unknown) is an error, nothing is guessed.
    pub async fn preview_for(
        &self,
        who: &Actor,
        name: &str,
        recipient: &str,
    ) -> anyhow::Result<PreviewedMessage> {
        self.permit(who, Action::CampaignPreview, name).await?;
        let c = campaign::get(&self.db, name).await?;
        let domain = email::message_id_domain(&self.settings.mail);
        let message_id = format!("<{}.main.preview@{domain}>", c.uid);
        let wanted = recipient.trim();
        let found =
            match crate::deliver::outbox::recipient(&self.db, &c, &message_id, wanted).await? {
                Some(row) => Some(row),
                // Fiscal codes are upper-case; a user id is taken as typed.
                None => {
                    crate::deliver::outbox::recipient(
                        &self.db,
                        &c,
                        &message_id,
                        &wanted.to_ascii_uppercase(),
                    )
                    .await?
                }
            };
        let Some(row) = found else {
            return Err(NotARecipient {
                campaign: c.name,
                recipient: wanted.to_string(),
            }
            .into());
        };
        let worker = self.sample_worker(false).await?;
        let now = self.clock.now();
        let rendered = render_sample(&worker, &c, &row, now, false).await?;
        Ok(PreviewedMessage::of(row, now, rendered, true))
    }

    /// Sends the campaign's message, rendered for a real recipient and marked [PROVA], to `to`
    /// only. Nothing is written to the outbox; the campaign's state does not change.
    pub async fn send_test(&self, who: &Actor, name: &str, to: &str) -> anyhow::Result<TestSent> {
        self.send_test_at(who, name, to, None).await
    }

    /// [`App::send_test`] rendered as on instant `at` (default: the clock's now): a rehearsal
    /// of the day the campaign goes out.
    pub async fn send_test_at(
        &self,
        who: &Actor,
        name: &str,
        to: &str,
        at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<TestSent> {
        tracing::debug!(actor = %who, campaign = name, "send a test message");
        self.permit(who, Action::CampaignTest, name).await?;
        let sent = self
            .send_test_message(name, to, at.unwrap_or_else(|| self.clock.now()))
            .await;
        // Nothing in the database changes: the audit row is the only write, after the send.
        let result = sent.map(|t| {
            let after = super::audit::summary(serde_json::json!({
                "to": t.to,
                "rendered_for": t.rendered_for,
                "delivery": t.delivery,
            }));
            (t, after)
        });
        let tx = self.begin().await?;
        let audited = super::audit::Audited::new(who, Action::CampaignTest, name);
        self.settle(tx, audited, result, false).await
    }

    /// [`App::send_test`] to the signed-in account's own address, never to one typed in a form:
    /// a console page cannot be turned into a way of mailing anyone.
    pub async fn send_own_test(&self, who: &Actor, name: &str) -> anyhow::Result<TestSent> {
        self.permit(who, Action::CampaignTest, name).await?;
        let address = match who {
            Actor::Account { name: account, .. } => {
                let mut conn = self.db.pool().acquire().await?;
                crate::store::accounts::find(&mut conn, account)
                    .await
                    .context("reading the account")?
                    .and_then(|a| a.address)
            }
            Actor::CommandLine { .. } => None,
        };
        match address {
            Some(to) => self.send_test_at(who, name, &to, None).await,
            None => {
                let tx = self.begin().await?;
                let audited = super::audit::Audited::new(who, Action::CampaignTest, name);
                let refused = Err(NoOwnAddress(who.name().to_string()).into());
                self.settle(tx, audited, refused, false).await
            }
        }
    }

    async fn send_test_message(
        &self,
        name: &str,
        to: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<TestSent> {
        if let Some(problem) = crate::import::snapshot::email_problem(to) {
            anyhow::bail!("--to `{to}` {problem}");
        }
        let c = campaign::get(&self.db, name).await?;
        let domain = email::message_id_domain(&self.settings.mail);
        let message_id = format!("<test.{}.{}@{domain}>", c.uid, now.timestamp());
        let Some(row) = crate::deliver::outbox::first_recipient(&self.db, &c, &message_id).await?
        else {
            anyhow::bail!(
                "the audience of campaign {name} is empty: there is no real recipient to render a test message for"
            );
        };
        let worker = self.sample_worker(true).await?;
        let mut rendered = render_sample(&worker, &c, &row, now, true).await?;
        if !rendered.subject.starts_with("[PROVA]") {
            rendered.subject = format!("[PROVA] {}", rendered.subject);
        }
        let envelope = Envelope {
            to_address: to,
            to_name: "",
            message_id: &message_id,
            campaign: &c.name,
            step: Step::Test,
            date: now.into(),
        };
        let email = email::build(&self.settings.mail, &envelope, &rendered)
            .context("building the test message")?;
        let stem = format!("{}.test.{}", c.name, now.timestamp());
        let mut outgoing = Outgoing::from(&email);
        if let Some(bounce) = &self.settings.mail.bounce_address {
            outgoing = outgoing.with_sender(bounce.clone());
        }
        worker
            .transport()
            .send(&outgoing, &stem, None)
            .await
            .with_context(|| format!("sending the test message to {to}"))?;
        Ok(TestSent {
            campaign: c.name,
            to: to.to_string(),
            delivery: worker.transport().describe(),
            rendered_for: row.user.user_id,
            subject: rendered.subject,
            campaign_state: c.state,
        })
    }

    /// The mean size in bytes of the emails of up to `sample` planned rows spread evenly across
    /// the `planned` rows of the outbox, built as a pass builds them (with no reopening date).
    /// Nothing is sent or written; 0 when the outbox is empty.
    pub async fn mean_message_size(&self, planned: u64, sample: u64) -> anyhow::Result<u64> {
        let every = (planned / sample.max(1)).max(1) as i64;
        let rows = crate::deliver::outbox::spread(&self.db, every, sample as i64).await?;
        let worker = self.sample_worker(false).await?;
        let templates = worker.templates().current();
        let now = self.clock.now();
        let mut total = 0u64;
        for row in &rows {
            let email = worker
                .email_for(row, &templates, "", now)
                .with_context(|| format!("rendering outbox row {}", row.id))?;
            total += email.formatted().len() as u64;
        }
        Ok(total.checked_div(rows.len() as u64).unwrap_or(0))
    }

    /// Loads every template and renders it with sample data covering every variant.
    pub fn check_templates(&self) -> TemplatesChecked {
        check_templates(&self.settings)
    }

    /// Writes `out/index.html` with every message rendered, and the `.eml` files: every
    /// message for the sample users in every situation, or what `user` of the database
    /// receives on the day of `at` (default: now).
    pub async fn preview_templates(
        &self,
        out: &Path,
        user: Option<&str>,
        at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<TemplatesPreviewed> {
        // The folder an editor works in, not the published set: what `publish` would publish.
        let set = crate::render::templates::TemplateSet::load(&self.settings.templates_dir)
            .context("loading templates (`avvisi templates check` lists every problem)")?;
        let mut day = None;
        let (samples, reopened_at, description) = match user {
            None => (
                editor::samples(),
                None,
                "Dati di esempio: ogni messaggio in ogni situazione (primo avviso, promemoria, ultimo \
                 giorno, messaggio di prova, avvisi unici prima e dopo la riapertura), per nomi con \
                 apostrofi, accenti, codice HTML e a capo."
                    .to_string(),
            ),
            Some(user_id) => {
                let now = self.now_or(at);
                let (sample, messages, description) = self.day_of(user_id, now).await?;
                day = Some(messages);
                (vec![sample], None, description)
            }
        };
        let input = PreviewInput {
            samples: &samples,
            reopened_at,
            description,
            now: self.now_or(at),
            day,
        };
        let r = preview::write_preview(&set, &self.settings, &input, out)
            .context("writing the preview")?;
        Ok(TemplatesPreviewed {
            index: r.index,
            messages: r.messages,
            variants: r.variants,
            emails: r.emails,
            failures: r.failures,
        })
    }
}

impl App {
    /// What `user_id` receives on `now`'s day, as the worker would send it: the messages of the
    /// campaigns' current steps due or planned that day (a digest when there are several, with
    /// its sections in order; nothing when the only one travels only inside a digest), to the
    /// institutional address when the address on record is suppressed. The sample to label it
    /// with, the (message, context) pairs, and a line saying whose day it is.
    pub(super) async fn day_of(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(Sample, Vec<(String, MessageContext)>, String)> {
        let cal = &self.settings.calendar;
        let tz = cal.timezone;
        let e = crate::explain::explain(&self.db, &self.settings, user_id, now)
            .await
            .context("reading the user")?
            .with_context(|| {
                format!("no user `{user_id}` in the database (import the snapshot first: avvisi import users FILE)")
            })?;
        let contact = &e.user.contact;
        let institutional = contact
            .institutional_email
            .as_deref()
            .filter(|a| !a.trim().is_empty());
        let suppressed = e
            .suppressions
            .iter()
            .any(|s| s.address.eq_ignore_ascii_case(&contact.email));
        let (recipient, fallback) = match (suppressed, institutional) {
            (true, Some(address)) => (address.to_string(), true),
            _ => (contact.email.clone(), false),
        };
        let mut view = UserView::new(contact, &recipient);
        view.sent_to_institutional = fallback;

        let local_day = |t: DateTime<Utc>| t.with_timezone(&tz).date_naive();
        let mut due: Vec<(String, String, Step)> = Vec::new();
        for v in &e.why_not {
            let step = match &v.verdict {
                Verdict::DueNow { step } => *step,
                Verdict::Planned { step, state }
                | Verdict::MergedIntoDigest { step, state, .. } => {
                    if !matches!(
                        state,
                        OutboxState::Pending | OutboxState::Sending | OutboxState::Sent
                    ) {
                        continue;
                    }
                    // Sent (or due) on another day: not what the person gets on this one.
                    let m = e
                        .messages
                        .iter()
                        .find(|m| m.campaign == v.campaign && m.step == *step);
                    let when = m.and_then(|m| m.sent_at.or(m.next_attempt_at));
                    if when.is_some_and(|t| local_day(t) != local_day(now)) {
                        continue;
                    }
                    *step
                }
                _ => continue,
            };
            due.push((v.template.clone(), v.campaign.clone(), step));
        }
        let reopened = crate::campaign::phases::reopened_at(self.db.pool())
            .await
            .context("reading the reopening date")?;
        fn about<'a>(
            cal: &crate::config::CalendarSettings,
            now: DateTime<Utc>,
            reopened: Option<DateTime<Utc>>,
            campaign: &'a str,
            step: Step,
        ) -> context::About<'a> {
            context::About {
                step,
                campaign,
                days_left: context::days_left(cal, now),
                reopened_at: context::local_rfc3339(cal, reopened),
                is_test: false,
            }
        }
        let messages: Vec<(String, MessageContext)> = match due.as_slice() {
            [] => Vec::new(),
            [(template, _, step)] if cal.cadence.only_in_digest(template, *step) => Vec::new(),
            [(template, campaign, step)] => vec![(
                template.clone(),
                context::build(
                    &self.settings,
                    view.clone(),
                    about(cal, now, reopened, campaign, *step),
                ),
            )],
            several => {
                let sections = digest::ordered(
                    several
                        .iter()
                        .map(|(template, campaign, step)| digest::Section {
                            template: template.clone(),
                            campaign: campaign.clone(),
                            step: step.to_string(),
                        })
                        .collect(),
                );
                let lead = several
                    .iter()
                    .find(|(t, _, _)| *t == sections[0].template)
                    .unwrap_or(&several[0]);
                let mut ctx = context::build(
                    &self.settings,
                    view.clone(),
                    about(cal, now, reopened, &lead.1, lead.2),
                );
                ctx.procedures = digest::procedures(&sections);
                ctx.sections = sections;
                vec![(digest::DIGEST.to_string(), ctx)]
            }
        };
        let date = crate::render::templates::italian_date(&now.with_timezone(&tz).fixed_offset());
        let what = match messages.first() {
            None => "nessun messaggio".to_string(),
            Some((_, ctx)) if !ctx.sections.is_empty() => format!(
                "il riepilogo giornaliero con {} sezioni ({})",
                ctx.sections.len(),
                ctx.sections
                    .iter()
                    .map(|s| s.template.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some((message, _)) => format!("il messaggio {message}"),
        };
        let description = format!(
            "Utente {user_id} ({}) del database, il {date}: riceve {what}{}.",
            view.full_name,
            if fallback {
                " all'indirizzo istituzionale (quello registrato è soppresso)"
            } else {
                ""
            }
        );
        let safe_id: String = user_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let step = due.first().map_or(Step::Main, |d| d.2);
        let sample = Sample {
            id: format!("{}-{safe_id}", now.with_timezone(&tz).format("%Y-%m-%d")),
            to_address: recipient,
            situation: Situation {
                id: "giorno",
                step,
                days_left: context::days_left(cal, now),
                is_test: false,
                reopened: reopened.is_some(),
                institutional_fallback: fallback,
                description: "quello che la persona riceve in questa data",
            },
            description: description.clone(),
            user: view,
        };
        Ok((sample, messages, description))
    }
}

/// The editors' check of `templates.dir`; needs no database (see [`App::check_templates`]).
pub fn check_templates(settings: &crate::config::Settings) -> TemplatesChecked {
    let dir = &settings.templates_dir;
    let report = check::check(dir, settings);
    TemplatesChecked {
        dir: dir.clone(),
        messages: report.messages,
        samples: report.samples,
        renders: report.renders,
        problems: report.problems.iter().map(|p| p.to_string()).collect(),
        warnings: report.warnings.iter().map(|p| p.to_string()).collect(),
    }
}

/// Renders the campaign's message for `row` as the worker would at `now`.
pub(super) async fn render_sample(
    worker: &Worker,
    c: &Campaign,
    row: &Claimed,
    now: DateTime<Utc>,
    is_test: bool,
) -> anyhow::Result<Rendered> {
    let reopened_at = crate::campaign::phases::reopened_at(worker.db().pool()).await?;
    let reopened_at = context::local_rfc3339(&worker.settings().calendar, reopened_at);
    let context = worker.context_for(row, now, reopened_at, is_test);
    worker
        .templates()
        .current()
        .render(&c.template, &context)
        .with_context(|| format!("rendering template {}", c.template))
}
