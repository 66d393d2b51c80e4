//! The audit log as the use cases write it: a permission check that records its refusal
//! ([`App::permit`]), and the end of every action that changes something ([`App::settle`]): the
//! audit row written in the action's own transaction and committed with it, or, when the action
//! failed, the transaction rolled back and the refusal recorded on its own. And the log as
//! `avvisi audit` lists it.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};

use super::access::{Action, Actor, Forbidden};
use super::App;
use crate::campaign::approval::ApprovalError;
use crate::campaign::CampaignError;
use crate::store::audit::{self, Entry, NewEntry};

/// An action's transaction.
pub(crate) type Tx = Transaction<'static, Any>;

/// What an audit row says besides its outcome.
pub(crate) struct Audited<'a> {
    pub who: &'a Actor,
    pub action: Action,
    /// A campaign's name, an address, an account's name.
    pub object: String,
    /// A short summary of the object before the action (JSON text); never a secret or a body.
    pub before: Option<String>,
    /// The role to record instead of the actor's: a login refused before the account (and its
    /// role) is known says `unknown`.
    pub role: Option<&'static str>,
}

impl<'a> Audited<'a> {
    pub(crate) fn new(who: &'a Actor, action: Action, object: impl Into<String>) -> Self {
        Audited {
            who,
            action,
            object: object.into(),
            before: None,
            role: None,
        }
    }
}

/// `ok`, or the error in one line: `forbidden: ...` for a role's refusal, `refused: ...` for a
/// rule's (an illegal transition, an approval missing), `error: ...` for a fault.
fn outcome(e: &anyhow::Error) -> String {
    let refused = e.chain().any(|c| {
        c.is::<ApprovalError>()
            || c.downcast_ref::<CampaignError>()
                .is_some_and(|e| !matches!(e, CampaignError::Db(_)))
            || c.is::<super::accounts::AccountError>()
            || c.is::<super::sessions::SessionRefused>()
            || c.is::<super::templates::TemplatesRefused>()
            || c.is::<super::workbench::DraftRefused>()
            || c.is::<super::samples::NoOwnAddress>()
    });
    let kind = if e.chain().any(|c| c.is::<Forbidden>()) {
        "forbidden"
    } else if refused {
        "refused"
    } else {
        "error"
    };
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        // A message that quotes its source already says it.
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    format!("{kind}: {line}")
}

impl App {
    fn entry(&self, a: &Audited<'_>, after: Option<String>, outcome: String) -> NewEntry {
        NewEntry {
            at: self.clock.now(),
            actor_kind: a.who.kind().to_string(),
            actor_name: a.who.name().to_string(),
            role: a.role.unwrap_or(a.who.role_name()).to_string(),
            source: a.who.source(),
            action: a.action.as_str().to_string(),
            object: a.object.clone(),
            before: a.before.clone(),
            after,
            outcome,
        }
    }

    /// A transaction for an action.
    pub(crate) async fn begin(&self) -> anyhow::Result<Tx> {
        self.db
            .pool()
            .begin()
            .await
            .context("opening a transaction")
    }

    /// Refuses `action` on `object` with [`Forbidden`] when `who` may not do it, and records
    /// the refusal.
    pub(crate) async fn permit(
        &self,
        who: &Actor,
        action: Action,
        object: &str,
    ) -> anyhow::Result<()> {
        if who.may(action) {
            return Ok(());
        }
        let e = anyhow::Error::new(Forbidden {
            actor: who.name().to_string(),
            role: who.role_name().to_string(),
            action,
        });
        tracing::warn!(actor = %who, %action, "refused: not for this role");
        let tx = self.begin().await?;
        self.settle::<()>(tx, Audited::new(who, action, object), Err(e), false)
            .await
    }

    /// Ends an action: on success its audit row (with `after`) is written in `tx` and `tx`
    /// commits; on failure `tx` rolls back (or, with `keep_on_error`, commits what it wrote to
    /// record the refusal: a stale approval) and the refusal is recorded. The error is returned
    /// as it came.
    pub(crate) async fn settle<T>(
        &self,
        mut tx: Tx,
        a: Audited<'_>,
        result: anyhow::Result<(T, Option<String>)>,
        keep_on_error: bool,
    ) -> anyhow::Result<T> {
        match result {
            Ok((value, after)) => {
                audit::append(&mut tx, &self.entry(&a, after, "ok".to_string()))
                    .await
                    .context("writing the audit log")?;
                tx.commit().await.context("committing")?;
                Ok(value)
            }
            Err(e) => {
                let entry = self.entry(&a, None, outcome(&e));
                let recorded = async {
                    if !keep_on_error {
                        tx.rollback().await?;
                        tx = self.db.pool().begin().await?;
                    }
                    audit::append(&mut tx, &entry).await?;
                    tx.commit().await
                }
                .await;
                if let Err(ae) = recorded {
                    tracing::error!(action = %a.action, "the refusal could not be written to the audit log: {ae}");
                }
                Err(e)
            }
        }
    }

    /// The audit log for `who` in the console: refused (and recorded) unless their role may
    /// read it ([`Action::AuditRead`]).
    pub async fn audit_log_for(
        &self,
        who: &Actor,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Vec<Entry>> {
        self.permit(who, Action::AuditRead, "audit_log").await?;
        self.audit_log(since).await
    }

    /// The audit log from `since` (all of it when `None`), oldest first.
    pub async fn audit_log(&self, since: Option<DateTime<Utc>>) -> anyhow::Result<Vec<Entry>> {
        let mut conn = self.db.pool().acquire().await?;
        audit::since(&mut conn, since)
            .await
            .context("reading the audit log")
    }
}

/// `value` as a compact JSON summary for the audit log.
pub(crate) fn summary(value: serde_json::Value) -> Option<String> {
    Some(value.to_string())
}
