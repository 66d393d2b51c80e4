//! A claimed row's email: its template rendered with the row's context (a digest's sections
//! together), then built as a message; or why it cannot be sent.

use chrono::{DateTime, Duration, Utc};
use lettre::Message;

use super::outbox::{Claimed, Outcome};
use super::transport::Outgoing;
use super::{Job, Worker};
use crate::audience::optout;
use crate::render::email::{self, Envelope, Labels};
use crate::render::templates::{MessageContext, TemplateError, TemplateSet, UserView};
use crate::render::{context, digest};

/// Why a row's email could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Message(#[from] email::MessageError),
    /// Every section of a digest was dropped (never claimed so: such a lead is skipped).
    #[error("no section left to send")]
    NoSection,
    /// The one section left is of a step sent only inside a digest: its digest lost the rest
    /// (cancelled, superseded, paused) after it was planned.
    #[error("a step sent only inside a digest, left alone")]
    OnlyInDigest,
}

impl Worker {
    /// Renders and builds one row's email, or settles the row without sending it (deadline
    /// passed, template broken, address unusable).
    pub(super) fn prepare(&self, job: &Job) -> Result<Outgoing, Outcome> {
        let (row, templates) = (&job.row, &*job.batch.templates);
        let now = self.clock.now();
        if row.expires_at.is_some_and(|e| now.timestamp() >= e) {
            let reason = "deadline passed before it could be sent".to_string();
            return Err(Outcome::Expired { reason });
        }
        match self.email_for_digest(row, &job.merged, templates, &job.batch.reopened_at, now) {
            Ok(email) => Ok(job
                .batch
                .sender
                .apply(Outgoing::from(&email).with_envid(&row.message_id), row.id)),
            Err(EmailError::Template(e)) => {
                // A template problem is not the recipient's: keep the row for a fixed template.
                tracing::error!(outbox_id = row.id, user_id = %row.user.user_id, campaign = %row.campaign, template = %row.template, error = %crate::telemetry::scrub(&e.to_string()), "cannot render");
                let at = now + Duration::seconds(self.settings.delivery.retry_max_seconds as i64);
                Err(Outcome::Retry {
                    at,
                    error: format!("template: {e}"),
                    code: None,
                })
            }
            Err(EmailError::Message(e)) => Err(Outcome::Failed {
                error: e.to_string(),
                code: None,
            }),
            Err(EmailError::NoSection) => Err(Outcome::Skipped {
                reason: "no section of the digest applies any more".to_string(),
            }),
            // The same reason as when the planner skips it (`store::digest::skip_alone`).
            Err(EmailError::OnlyInDigest) => Err(Outcome::Skipped {
                reason: crate::store::digest::ONLY_IN_DIGEST.to_string(),
            }),
        }
    }

    /// The email a claimed row gets at `now`, rendered with `templates`.
    pub(crate) fn email_for(
        &self,
        row: &Claimed,
        templates: &TemplateSet,
        reopened_at: &str,
        now: DateTime<Utc>,
    ) -> Result<Message, EmailError> {
        self.email_for_digest(row, &[], templates, reopened_at, now)
    }

    /// The one email of the lead `row` and the rows `merged` with it (its daily digest), at
    /// `now`. One section left (the others dropped, or none merged): that message's own
    /// template, unchanged. More: the digest template, with every section. Always the lead's
    /// Message-ID, shared by every row of the digest.
    pub(crate) fn email_for_digest(
        &self,
        row: &Claimed,
        merged: &[Claimed],
        templates: &TemplateSet,
        reopened_at: &str,
        now: DateTime<Utc>,
    ) -> Result<Message, EmailError> {
        let sections: Vec<&Claimed> = std::iter::once(row)
            .filter(|r| r.section_dropped.is_none())
            .chain(merged)
            .collect();
        let cadence = &self.settings.calendar.cadence;
        let (rendered, about) = match sections.as_slice() {
            [] => return Err(EmailError::NoSection),
            // A reminder sent only inside a digest, left alone by the others' drop or by a
            // digest that lost the rest, does not go.
            [only] if cadence.only_in_digest(&only.template, only.step) => {
                return Err(EmailError::OnlyInDigest)
            }
            [only] => {
                let context = self.context_for(only, now, reopened_at.to_string(), false);
                (templates.render(&only.template, &context)?, *only)
            }
            several => {
                let mut context = self.context_for(row, now, reopened_at.to_string(), false);
                context.sections = digest::ordered(
                    several
                        .iter()
                        .map(|r| digest::Section {
                            template: r.template.clone(),
                            campaign: r.campaign.clone(),
                            step: r.step.to_string(),
                        })
                        .collect(),
                );
                context.procedures = digest::procedures(&context.sections);
                (templates.render(digest::DIGEST, &context)?, row)
            }
        };
        // A digest with a section about the user's own procedure is that procedure's email:
        // labelled with its stream, and no unsubscribe (the other sections ride along).
        let labelled = sections
            .iter()
            .copied()
            .find(|r| !r.unsubscribe)
            .unwrap_or(about);
        let envelope = Envelope {
            to_address: &row.recipient,
            to_name: &format!("{} {}", row.user.first_name, row.user.last_name),
            message_id: &row.message_id,
            campaign: &about.campaign,
            step: about.step,
            date: now.into(),
        };
        let labels = self.labels(labelled);
        Ok(email::build_labelled(
            &self.settings.mail,
            &envelope,
            &rendered,
            Some(&labels),
        )?)
    }

    /// The stream labels of an email whose stream is `row`'s.
    fn labels(&self, row: &Claimed) -> Labels {
        let mail = &self.settings.mail;
        let stream = row.stream.label();
        Labels {
            list_id: format!("<{stream}.{}>", mail.list_id_domain),
            feedback_id: format!("{}:{stream}:{}", row.campaign, mail.feedback_id),
            unsubscribe: row.unsubscribe.then(|| {
                optout::list_unsubscribe(&self.settings.unsubscribe, &row.user.user_id, &row.stream)
            }),
        }
    }

    /// The template context for a row at `now`.
    pub(crate) fn context_for(
        &self,
        row: &Claimed,
        now: DateTime<Utc>,
        reopened_at: String,
        is_test: bool,
    ) -> MessageContext {
        let mut user = UserView::new(&row.user, &row.recipient);
        user.sent_to_institutional = row.fallback;
        let about = context::About {
            step: row.step,
            campaign: &row.campaign,
            days_left: context::days_left(&self.settings.calendar, now),
            reopened_at,
            is_test,
        };
        context::build(&self.settings, user, about)
    }
}
