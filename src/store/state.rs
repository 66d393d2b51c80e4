//! The states and kinds the database stores as text, as types.
//!
//! They cross the database boundary here and only here ([`FromStr`] on the way in, `as_str` on
//! the way out). SQL statements keep their state literals (`state = 'pending'`): PostgreSQL
//! matches a partial index only against a literal, never a bound parameter.

use std::fmt;
use std::str::FromStr;

/// A stored text that is not one of the known values: a database written by a newer avvisi, or
/// edited by hand.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what} `{value}` in the database")]
pub struct UnknownState {
    what: &'static str,
    value: String,
}

impl UnknownState {
    /// As a decode error, for code that reads rows (a step's too: [`crate::config::UnknownStep`]).
    pub(crate) fn into_sqlx(e: impl Into<UnknownState>) -> sqlx::Error {
        sqlx::Error::Decode(Box::new(e.into()))
    }
}

impl From<crate::config::UnknownStep> for UnknownState {
    fn from(e: crate::config::UnknownStep) -> Self {
        UnknownState {
            what: "step",
            value: e.0,
        }
    }
}

/// Declares a text-backed enum: its variants with their stored text, `as_str`, `ALL`,
/// `Display` and `FromStr`.
macro_rules! stored_text {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            #[cfg(test)]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState { what: $what, value: s.to_string() }),
                }
            }
        }
    };
}

stored_text!(
    /// Where one outbox row is. See the state machine in [`crate::deliver::outbox`].
    OutboxState, "message state", {
        /// Waiting for its `next_attempt_at`.
        Pending = "pending",
        /// Claimed by a sender until its lease runs out.
        Sending = "sending",
        /// Accepted by the relay (or written as a file).
        Sent = "sent",
        /// Not sent on purpose: the user no longer qualifies, a later step superseded it, or
        /// the campaign was cancelled.
        Skipped = "skipped",
        /// Refused for good, or too many attempts.
        Failed = "failed",
        /// Its deadline passed before it could be sent.
        Expired = "expired",
    }
);

stored_text!(
    /// Where a campaign is in its lifecycle. The legal moves are [`crate::campaign::lifecycle`].
    CampaignState, "campaign state", {
        /// Created by an operator, not launched: nothing is planned.
        Draft = "draft",
        /// Launched with a `send_at` still in the future.
        Scheduled = "scheduled",
        /// Planned and sent by the daemon.
        Running = "running",
        /// Stopped by an operator; resumable.
        Paused = "paused",
        /// Stopped for good by an operator; its pending messages were skipped.
        Cancelled = "cancelled",
        /// Everything planned has reached a final state and nothing more is due.
        Finished = "finished",
    }
);

impl CampaignState {
    /// Whether no operator action can change it any more.
    pub(crate) fn is_final(self) -> bool {
        matches!(self, CampaignState::Cancelled | CampaignState::Finished)
    }
}

stored_text!(
    /// Where a campaign comes from.
    CampaignKind, "campaign kind", {
        /// Derived from the calendar: one per reminder audience, with the steps first, dN...
        Reminder = "reminder",
        /// Created by an operator (`avvisi campaign create`).
        OneOff = "oneoff",
        /// Created when operators declare the reopening.
        Reopening = "reopening",
    }
);

stored_text!(
    /// Who put an address on the suppression list.
    SuppressionSource, "suppression source", {
        /// An operator (`avvisi suppress add`).
        Operator = "operator",
        /// The relay refused the recipient at RCPT with a 5.1.x status (no such user or domain).
        Relay = "relay",
        /// A returned mail read by `avvisi bounces import`.
        Bounce = "bounce",
    }
);

stored_text!(
    /// Who stopped a stream for a user.
    OptOutSource, "opt-out source", {
        /// The user, through the one-click unsubscribe (the emailed link, or the provider's
        /// button that posts to it).
        Link = "link",
        /// An operator.
        Operator = "operator",
        /// A complaint (a feedback-loop report) from the user's provider.
        Complaint = "complaint",
    }
);

stored_text!(
    /// What a returned mail said about its recipient.
    BounceKind, "bounce kind", {
        /// A permanent failure (5.x.x): the address is suppressed at once.
        Hard = "hard",
        /// A temporary failure (4.x.x): counted; enough of them suppress the address.
        Soft = "soft",
        /// Not recognised as a bounce: listed for a human.
        Unrecognised = "unrecognised",
    }
);

/// Messages by state, from the outbox itself (never from memory a restart would lose).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub pending: u64,
    pub sending: u64,
    pub sent: u64,
    pub skipped: u64,
    pub failed: u64,
    pub expired: u64,
    /// Of the skipped ones, those whose address is on the suppression list.
    pub suppressed: u64,
}

impl Counts {
    /// Adds `n` messages in `state`.
    pub(crate) fn add(&mut self, state: OutboxState, n: u64) {
        let slot = match state {
            OutboxState::Pending => &mut self.pending,
            OutboxState::Sending => &mut self.sending,
            OutboxState::Sent => &mut self.sent,
            OutboxState::Skipped => &mut self.skipped,
            OutboxState::Failed => &mut self.failed,
            OutboxState::Expired => &mut self.expired,
        };
        *slot += n;
    }
    /// Every planned message.
    pub fn total(&self) -> u64 {
        self.open() + self.done()
    }
    /// Messages in a final state.
    pub fn done(&self) -> u64 {
        self.sent + self.skipped + self.failed + self.expired
    }
    /// Messages still to go (waiting or on the wire).
    pub fn open(&self) -> u64 {
        self.pending + self.sending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_what_it_writes() {
        for s in OutboxState::ALL {
            assert_eq!(s.as_str().parse::<OutboxState>().unwrap(), *s);
        }
        for s in CampaignState::ALL {
            assert_eq!(s.as_str().parse::<CampaignState>().unwrap(), *s);
        }
        for k in CampaignKind::ALL {
            assert_eq!(k.as_str().parse::<CampaignKind>().unwrap(), *k);
        }
        for s in SuppressionSource::ALL {
            assert_eq!(s.as_str().parse::<SuppressionSource>().unwrap(), *s);
        }
        for s in OptOutSource::ALL {
            assert_eq!(s.as_str().parse::<OptOutSource>().unwrap(), *s);
        }
        for k in BounceKind::ALL {
            assert_eq!(k.as_str().parse::<BounceKind>().unwrap(), *k);
        }
        let e = "Running".parse::<CampaignState>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown campaign state `Running` in the database"
        );
    }

    #[test]
    fn counts_add_up() {
        let mut c = Counts::default();
        for (i, s) in OutboxState::ALL.iter().enumerate() {
            c.add(*s, i as u64 + 1);
        }
        assert_eq!((c.open(), c.done(), c.total()), (3, 18, 21));
    }
}
