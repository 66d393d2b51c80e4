//! Why a user has no message of a campaign's current step, for `avvisi explain`: one
//! [`Verdict`] per campaign (every campaign in the table, and those the calendar will create).
//!
//! The checks follow the planner's (`plan::pass` and `plan_step`): the campaign's lifecycle and
//! expiry, the snapshot's freshness (reminders only), the audience's rule (its clauses, from
//! `rules.rs`, so the words cannot drift from the SQL), a suppressed address with no fallback,
//! the calendar's step, and one email a day. Read-only.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::Row;

use super::user::{SnapshotUser, UserMessage};
use crate::audience::Audience;
use crate::audience::{optout, suppression};
use crate::campaign::calendar::{latest_due_step_of, reminder_steps};
use crate::campaign::{self, calendar_campaigns, Campaign};
use crate::config::Settings;
use crate::config::Step;
use crate::store::{CampaignKind, CampaignState, Db, OptOutSource, OutboxState, Stream};

/// The verdict on one campaign for one user.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignVerdict {
    pub campaign: String,
    /// The campaign's message (its template folder).
    pub template: String,
    pub kind: CampaignKind,
    pub audience: String,
    pub verdict: Verdict,
}

/// Why a user has, or has not, a message of a campaign's current step. The first reason that
/// applies, in this order: a message exists; the campaign is not running or expired; the
/// snapshot is too old (reminders); the user is gone or not in the audience; the address is
/// suppressed with no fallback; no step is due yet; the user was reached today; otherwise the
/// next planner tick plans it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// A message of the current step is planned (the messages say how it went).
    Planned { step: Step, state: OutboxState },
    /// The message of the current step travels in the user's daily digest.
    MergedIntoDigest {
        step: Step,
        state: OutboxState,
        message_id: String,
    },
    /// Paused, cancelled, finished or not launched.
    CampaignNotRunning {
        state: CampaignState,
        /// Why avvisi paused it itself (the circuit breaker).
        paused_reason: Option<String>,
    },
    /// Nothing of the campaign goes out from this instant.
    Expired { at: DateTime<Utc> },
    /// Reminders are held: the newest full snapshot is older than `import.max_age_hours`.
    SnapshotStale {
        newest: Option<DateTime<Utc>>,
        age_hours: Option<i64>,
        max_age_hours: u32,
    },
    /// The latest full snapshot no longer lists the user.
    GoneFromSnapshot,
    /// The rule's clauses the user fails, in words.
    NotInAudience { failed: Vec<String> },
    /// The address on record is suppressed and there is no institutional address to fall back on.
    Suppressed { address: String },
    /// The user opted out of the campaign's stream (the one-click unsubscribe, an operator, a
    /// complaint): nothing more of it is planned, and what was planned is not sent.
    OptedOut {
        stream: Stream,
        at: Option<DateTime<Utc>>,
        source: Option<OptOutSource>,
    },
    /// The campaign's next step, and when it falls due.
    NotYetDue { step: Step, at: DateTime<Utc> },
    /// No step of the audience's cadence is left before the deadline.
    NoStepLeft,
    /// The user already got an email today: the step is planned from the next local day, merged
    /// with that day's messages.
    ReachedToday {
        step: Step,
        /// The campaign of today's email.
        by: String,
        from: DateTime<Utc>,
    },
    /// Due, and the user qualifies: the next planner tick plans it.
    DueNow { step: Step },
}

impl Verdict {
    /// Whether the user has a message of the campaign's current step (nothing to explain).
    pub fn has_message(&self) -> bool {
        matches!(
            self,
            Verdict::Planned { .. } | Verdict::MergedIntoDigest { .. }
        )
    }

    /// One line for people, times in `tz`.
    pub fn text(&self, audience: &str, tz: Tz) -> String {
        let when = |t: &DateTime<Utc>| t.with_timezone(&tz).format("%-d %b %Y %H:%M %Z");
        match self {
            Verdict::Planned { step, state } => format!("{step} planned ({state})"),
            Verdict::MergedIntoDigest {
                step, message_id, ..
            } => format!("{step} merged into digest {message_id}"),
            Verdict::CampaignNotRunning {
                state,
                paused_reason,
            } => {
                let mut s = format!("the campaign is {state}");
                if *state == CampaignState::Draft {
                    s.push_str(" (not launched)");
                }
                if let Some(reason) = paused_reason {
                    s.push_str(&format!(": {reason}"));
                }
                s
            }
            Verdict::Expired { at } => format!("the campaign expired on {}", when(at)),
            Verdict::SnapshotStale {
                age_hours,
                max_age_hours,
                ..
            } => match age_hours {
                Some(h) => format!(
                    "the snapshot is too old: the newest full snapshot is {h} hours old \
                     (import.max_age_hours = {max_age_hours}); reminders are held until a fresh export is imported"
                ),
                None => "no full snapshot imported yet: reminders are held".to_string(),
            },
            Verdict::GoneFromSnapshot => {
                "gone from the snapshot: the latest full export no longer lists the user, reminders stop"
                    .to_string()
            }
            Verdict::NotInAudience { failed } => {
                format!("not in the audience {audience}: {}", failed.join("; "))
            }
            Verdict::Suppressed { address } => format!(
                "the address {address} is suppressed and there is no institutional address to fall back on"
            ),
            Verdict::OptedOut { stream, at, source } => format!(
                "opted out of {} ({stream}){}{}: nothing more of it is planned or sent",
                stream.describe(),
                at.as_ref()
                    .map(|t| format!(" on {}", when(t)))
                    .unwrap_or_default(),
                source.map(|s| format!(", by {s}")).unwrap_or_default(),
            ),
            Verdict::NotYetDue {
                step: Step::Main,
                at,
            } => format!("not yet due: scheduled for {}", when(at)),
            Verdict::NotYetDue { step, at } => format!("not yet due: {step} on {}", when(at)),
            Verdict::NoStepLeft => {
                "no step of the audience's cadence is left before the deadline".to_string()
            }
            Verdict::ReachedToday { step, by, from } => format!(
                "already reached today (an email of {by}): {step} is planned from {}, merged with that day's messages",
                when(from)
            ),
            Verdict::DueNow { step } => format!("due now ({step}): the next planner tick plans it"),
        }
    }
}

/// What the user's row says against each audience's rule.
struct Facts {
    /// Per audience, the clauses failed: (is the presence clause, words).
    failed: Vec<(Audience, Vec<(bool, String)>)>,
    /// The address on record is suppressed and no institutional one is usable.
    unreachable: bool,
    /// How old the latest snapshot is: reminders wait for a fresh one.
    fresh: crate::import::Freshness,
    /// The streams the user opted out of.
    optouts: Vec<optout::OptOut>,
    /// The keys of the uploaded lists that name the user (campaigns narrowed to a list).
    lists: Vec<String>,
}

impl Facts {
    async fn read(
        db: &Db,
        settings: &Settings,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Facts, sqlx::Error> {
        let mut failed = Vec::with_capacity(Audience::ALL.len());
        for audience in Audience::ALL {
            failed.push((audience, failed_clauses(db, audience, user_id).await?));
        }
        let unreachable: i64 = sqlx::query_scalar(&format!(
            "SELECT CASE WHEN {} THEN 1 ELSE 0 END FROM users u WHERE u.user_id = $1",
            suppression::unreachable_sql()
        ))
        .bind(user_id)
        .fetch_one(db.pool())
        .await?;
        let fresh = crate::import::freshness(db.pool(), settings.import.max_age_hours, now).await?;
        Ok(Facts {
            failed,
            unreachable: unreachable == 1,
            fresh,
            optouts: optout::list(db, Some(user_id)).await?,
            lists: sqlx::query_scalar("SELECT list_key FROM campaign_lists WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(db.pool())
                .await?,
        })
    }

    /// The verdict of an opt-out of `stream`, with its time and source when recorded.
    fn opted_out(&self, stream: &Stream) -> Verdict {
        let o = self
            .optouts
            .iter()
            .find(|o| o.stream == *stream)
            .or_else(|| self.optouts.iter().find(|o| o.stream == Stream::AllNotices));
        Verdict::OptedOut {
            stream: o.map_or_else(|| stream.clone(), |o| o.stream.clone()),
            at: o.and_then(|o| o.at),
            source: o.map(|o| o.source),
        }
    }

    fn of(&self, audience: Audience) -> &[(bool, String)] {
        self.failed
            .iter()
            .find(|(a, _)| *a == audience)
            .map_or(&[], |(_, f)| f.as_slice())
    }
}

/// The clauses of `audience` that `user_id` fails, each evaluated by its own SQL: (is the
/// presence clause, what failed in words). Empty when the user is in the audience.
pub(crate) async fn failed_clauses(
    db: &Db,
    audience: Audience,
    user_id: &str,
) -> Result<Vec<(bool, String)>, sqlx::Error> {
    let clauses = audience.clauses();
    let columns: Vec<String> = clauses
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "CASE WHEN {} THEN 1 ELSE 0 END AS holds_{i}, {} AS actual_{i}",
                c.sql(),
                c.quoted_sql()
                    .map_or("NULL".to_string(), |q| format!("CAST({q} AS TEXT)"))
            )
        })
        .collect();
    let row = sqlx::query(&format!(
        "SELECT {} FROM users u WHERE u.user_id = $1",
        columns.join(", ")
    ))
    .bind(user_id)
    .fetch_one(db.pool())
    .await?;
    let mut failed = Vec::new();
    for (i, clause) in clauses.iter().enumerate() {
        let holds: i64 = row.try_get(format!("holds_{i}").as_str())?;
        if holds == 0 {
            let actual: Option<String> = row.try_get(format!("actual_{i}").as_str())?;
            failed.push((clause.is_presence(), clause.failure(actual.as_deref())));
        }
    }
    Ok(failed)
}

/// The verdict on every campaign for `user`, whose planned messages are `messages`, at `now`.
pub async fn why_not(
    db: &Db,
    settings: &Settings,
    user: &SnapshotUser,
    messages: &[UserMessage],
    now: DateTime<Utc>,
) -> Result<Vec<CampaignVerdict>, sqlx::Error> {
    let cal = &settings.calendar;
    let mut campaigns = campaign::list(db).await?;
    // The calendar's campaigns are created by the first planner tick: before it, still say why.
    for c in calendar_campaigns(cal) {
        if !campaigns.iter().any(|known| known.name == c.name) {
            campaigns.push(c);
        }
    }
    let facts = Facts::read(db, settings, &user.contact.user_id, now).await?;
    let mut out = Vec::with_capacity(campaigns.len());
    for c in &campaigns {
        let verdict = verdict(settings, &campaigns, c, user, messages, &facts, now);
        out.push(CampaignVerdict {
            campaign: c.name.clone(),
            template: c.template.clone(),
            kind: c.kind,
            audience: c.audience.name().to_string(),
            verdict,
        });
    }
    Ok(out)
}

/// The user against the campaign's audience (its rule and province): gone from the snapshot,
/// or the clauses failed; `None` when the user is in it.
fn audience_verdict(c: &Campaign, user: &SnapshotUser, facts: &Facts) -> Option<Verdict> {
    let failed = facts.of(c.audience);
    if failed.iter().any(|(presence, _)| *presence) {
        return Some(Verdict::GoneFromSnapshot);
    }
    let mut failed: Vec<String> = failed.iter().map(|(_, words)| words.clone()).collect();
    if let Some(filter) = c.filter_province.as_ref().filter(|f| Audience::is_list(f)) {
        if !facts.lists.contains(filter) {
            failed.push("not on the list of users uploaded for the campaign".to_string());
        }
    } else if let Some(filter) = &c.filter_province {
        if !Audience::in_provinces(user.contact.province.as_deref(), filter) {
            failed.push(Audience::province_failure(
                user.contact.province.as_deref(),
                filter,
            ));
        }
    }
    (!failed.is_empty()).then_some(Verdict::NotInAudience { failed })
}

fn verdict(
    settings: &Settings,
    campaigns: &[Campaign],
    c: &Campaign,
    user: &SnapshotUser,
    messages: &[UserMessage],
    facts: &Facts,
    now: DateTime<Utc>,
) -> Verdict {
    let cal = &settings.calendar;
    // The step the planner plans now: a reminder's latest due step of its cadence, a notice's
    // only one.
    let current = match c.kind {
        CampaignKind::Reminder => latest_due_step_of(cal, c.audience, now).map(|d| d.step),
        _ => Some(Step::Main),
    };
    if let Some(step) = current {
        let message = messages
            .iter()
            .find(|m| m.campaign == c.name && m.step == step);
        if let Some(m) = message {
            if m.state == OutboxState::Skipped && m.reason.as_deref() == Some(suppression::REASON) {
                return Verdict::Suppressed {
                    address: user.contact.email.clone(),
                };
            }
            if m.state == OutboxState::Skipped && m.reason.as_deref() == Some(optout::REASON) {
                return facts.opted_out(&c.stream);
            }
            return match &m.digest {
                Some(id) => Verdict::MergedIntoDigest {
                    step,
                    state: m.state,
                    message_id: id.clone(),
                },
                None => Verdict::Planned {
                    step,
                    state: m.state,
                },
            };
        }
    }

    // The campaign: a launched campaign whose time has come starts at the next tick.
    match c.state {
        CampaignState::Running | CampaignState::Scheduled => {}
        // A user it never included: why, as during the run (finished says nothing about them).
        CampaignState::Finished if audience_verdict(c, user, facts).is_some() => {
            return audience_verdict(c, user, facts).expect("checked");
        }
        state => {
            return Verdict::CampaignNotRunning {
                state,
                paused_reason: c.paused_reason.clone(),
            }
        }
    }
    if let Some(at) = c.expires_at.filter(|at| now >= *at) {
        return Verdict::Expired { at };
    }
    if c.unsubscribe()
        && facts
            .optouts
            .iter()
            .any(|o| o.stream == c.stream || o.stream == Stream::AllNotices)
    {
        return facts.opted_out(&c.stream);
    }
    if c.kind == CampaignKind::Reminder && facts.fresh.stale {
        return Verdict::SnapshotStale {
            newest: facts.fresh.newest,
            age_hours: facts.fresh.newest.map(|at| (now - at).num_hours()),
            max_age_hours: facts.fresh.max_age_hours,
        };
    }

    if let Some(v) = audience_verdict(c, user, facts) {
        return v;
    }
    if facts.unreachable {
        return Verdict::Suppressed {
            address: user.contact.email.clone(),
        };
    }

    // The calendar.
    let step = match (c.kind, current) {
        (CampaignKind::Reminder, None) => {
            return reminder_steps(cal)
                .into_iter()
                .find(|s| s.due_at > now && cal.cadence.allows(c.audience.name(), s.step))
                .map_or(Verdict::NoStepLeft, |s| Verdict::NotYetDue {
                    step: s.step,
                    at: s.due_at,
                });
        }
        (CampaignKind::Reminder, Some(step)) => step,
        _ => match c.send_at.filter(|at| *at > now) {
            Some(at) => {
                return Verdict::NotYetDue {
                    step: Step::Main,
                    at,
                }
            }
            None => Step::Main,
        },
    };

    // One email a day (plan_step's rule): a row of this campaign sent today, or, for a
    // campaign that merges into the digest, a row of another such campaign.
    let (midnight, next_day) = crate::campaign::calendar::local_day(cal.timezone, now);
    let merges = |name: &str| campaigns.iter().any(|k| k.name == name && k.digest);
    let today = messages.iter().find(|m| {
        matches!(m.state, OutboxState::Sent | OutboxState::Sending)
            && m.updated_at.is_some_and(|t| t >= midnight)
            && (m.campaign == c.name || (c.digest && merges(&m.campaign)))
    });
    if let Some(m) = today {
        return Verdict::ReachedToday {
            step,
            by: m.campaign.clone(),
            from: next_day,
        };
    }
    Verdict::DueNow { step }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::{import_users, ImportOptions};

    /// On the example snapshot, for every user and audience, the clauses evaluated one by one
    /// fail exactly when the audience's SQL condition leaves the user out, and say why in words.
    #[tokio::test]
    async fn the_explanation_and_the_sql_agree_on_the_example_users() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}/w.db", dir.path().display()), 1)
            .await
            .unwrap();
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/users.csv");
        import_users(&db, &examples, &ImportOptions::default(), Utc::now())
            .await
            .unwrap();
        // A lapse and a user gone, so that every kind of clause both holds and fails somewhere.
        sqlx::query(
            "INSERT INTO lapsed (user_id, procedure, recorded_at) VALUES ('U0001', 'registration', 0)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        sqlx::query("UPDATE users SET present = 0 WHERE user_id = 'U0030'")
            .execute(db.pool())
            .await
            .unwrap();
        let users: Vec<String> = sqlx::query_scalar("SELECT user_id FROM users ORDER BY user_id")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(users.len(), 40);
        let mut members = std::collections::BTreeMap::new();
        for user in &users {
            for audience in Audience::ALL {
                let sql = format!(
                    "SELECT COUNT(*) FROM users u WHERE {} AND u.user_id = $1",
                    audience.condition()
                );
                let member: i64 = sqlx::query_scalar(&sql)
                    .bind(user)
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
                let failed = failed_clauses(&db, audience, user).await.unwrap();
                assert_eq!(
                    member == 1,
                    failed.is_empty(),
                    "{user} in {audience}: the SQL says {member}, the clauses {failed:?}"
                );
                *members.entry(audience.name()).or_insert(0) += member;
            }
        }
        // The counts of examples/README.md (U0030, gone, leaves the advice's 20).
        assert_eq!(members["registration_incomplete"], 6);
        assert_eq!(members["email_unvalidated"], 13);
        assert_eq!(members["code_regeneration_pending"], 8);
        assert_eq!(members["credential_recovery_advice"], 19);
        assert_eq!(members["lapsed_registration"], 1);

        let words = |failed: Vec<(bool, String)>| -> Vec<String> {
            failed.into_iter().map(|(_, w)| w).collect()
        };
        let failed = |audience, user: &'static str| {
            let db = db.clone();
            async move { failed_clauses(&db, audience, user).await.unwrap() }
        };
        assert_eq!(
            words(failed(Audience::RegistrationIncomplete, "U0037").await),
            ["registration is `completed`, the audience needs `started`"]
        );
        assert_eq!(
            words(failed(Audience::CredentialRecoveryAdvice, "U0020").await),
            ["registered with @istruzione.it"]
        );
        assert_eq!(
            words(failed(Audience::EmailUnvalidated, "U0037").await),
            [
                "not enabled",
                "no changed email address awaiting validation"
            ]
        );
        assert_eq!(
            words(failed(Audience::LapsedRegistration, "U0002").await),
            ["no lapse of the registration recorded at the deadline"]
        );
        let gone = failed(Audience::CredentialRecoveryAdvice, "U0030").await;
        assert_eq!(gone.len(), 1);
        assert!(
            gone[0].0,
            "the presence clause is the one that fails: {gone:?}"
        );
    }
}
