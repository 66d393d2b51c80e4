//! Everything about one user, for `avvisi explain`: their row of the snapshot, the audiences they
//! are in now, every message planned for them with its state, and for each campaign why they
//! have, or have not, a message of its current step ([`mod@why_not`]).

use chrono::{DateTime, Utc};

mod user;
pub mod why_not;

pub use self::user::{Earlier, SnapshotUser, UserMessage};
use self::why_not::{why_not, CampaignVerdict};
use crate::audience::optout::{self, OptOut};
use crate::audience::suppression::{self, Suppression};
use crate::audience::Audience;
use crate::config::Settings;
use crate::store::Db;

/// What `explain` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    /// The instant explained (`--now`).
    pub at: DateTime<Utc>,
    pub user: SnapshotUser,
    /// Every audience, and whether the user is in it now.
    #[serde(serialize_with = "audience_names")]
    pub audiences: Vec<(Audience, bool)>,
    /// Oldest first.
    pub messages: Vec<UserMessage>,
    /// The user's addresses (on record, institutional) that are on the suppression list.
    pub suppressions: Vec<Suppression>,
    /// The streams the user opted out of (nothing more of them is planned or sent).
    pub optouts: Vec<OptOut>,
    /// The domains of the user's addresses whose provider asked us to slow down: their
    /// messages wait for the hold's end (see `deliver::hold`).
    pub held: Vec<crate::deliver::hold::DomainHold>,
    /// Per campaign (the calendar's included, before they exist), why the user has or has not a
    /// message of its current step at `at`.
    pub why_not: Vec<CampaignVerdict>,
    /// What keeps due messages from going out now (filled by the application layer, which
    /// reads the daemons, the quota and the clock): the relay, the sending hours, the hourly
    /// quota, a stale snapshot, a pause.
    pub holds: Vec<Hold>,
}

/// Something that keeps due messages from going out now, in a sentence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hold {
    /// `relay`, `sending_hours`, `hourly_quota`, `no_daemon`, `snapshot_stale`, `paused`,
    /// `breaker` or `domain_held`.
    pub kind: &'static str,
    /// The campaign it holds; `None`: every campaign's messages.
    pub campaign: Option<String>,
    /// The recipient domain it holds (its provider asked us to slow down); `None`: every
    /// domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Only the reminders' messages (a stale snapshot).
    pub reminders_only: bool,
    /// In English, for the command line.
    pub text: String,
    /// In Italian, for the pages.
    pub text_it: String,
}

impl Hold {
    /// Whether it holds `m`, a message of a campaign of `kind`.
    pub fn holds(&self, m: &UserMessage, kind: Option<crate::store::CampaignKind>) -> bool {
        let campaign = self.campaign.as_ref().is_none_or(|c| *c == m.campaign);
        let kind = !self.reminders_only || kind == Some(crate::store::CampaignKind::Reminder);
        let domain = self
            .domain
            .as_ref()
            .is_none_or(|d| crate::deliver::hold::domain_of(&m.recipient) == *d);
        campaign && kind && domain
    }
}

/// Everything about `user_id` at `now`, or `None` when the snapshot never had them.
pub async fn explain(
    db: &Db,
    settings: &Settings,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Explanation>, sqlx::Error> {
    let Some(user) = user::snapshot_user(db, user_id).await? else {
        return Ok(None);
    };
    let mut audiences = Vec::with_capacity(Audience::ALL.len());
    for audience in Audience::ALL {
        let sql = format!(
            "SELECT COUNT(*) FROM users u WHERE {} AND u.user_id = $1",
            audience.condition()
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(user_id)
            .fetch_one(db.pool())
            .await?;
        audiences.push((audience, n > 0));
    }

    let messages = user::messages(db, user_id).await?;
    let mut addresses = vec![user.contact.email.as_str()];
    addresses.extend(user.contact.institutional_email.as_deref());
    let suppressions = suppression::of_addresses(db, &addresses).await?;
    let why_not = why_not(db, settings, &user, &messages, now).await?;
    let optouts = optout::list(db, Some(user_id)).await?;
    let domains: Vec<String> = addresses
        .iter()
        .map(|a| crate::deliver::hold::domain_of(a))
        .collect();
    let held = crate::deliver::hold::held(db, now)
        .await?
        .into_iter()
        .filter(|h| domains.contains(&h.domain))
        .collect();
    Ok(Some(Explanation {
        at: now,
        user,
        audiences,
        messages,
        suppressions,
        optouts,
        held,
        why_not,
        holds: Vec::new(),
    }))
}

/// The audiences as (name, member) pairs.
fn audience_names<S: serde::Serializer>(
    audiences: &[(Audience, bool)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(audiences.iter().map(|(a, member)| (a.name(), member)))
}
