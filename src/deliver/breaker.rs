//! The circuit breaker: a relay that refuses everyone with the same reply is refusing us.
//!
//! A permanent refusal normally fails its message (a bad address). But when
//! `delivery.breaker_threshold` messages in a row, to different recipients, are refused with
//! the same reply (`554 5.7.1` from a relay that has blocked the sending host, say), the fault
//! is the relay's: delivery stops, every message of the streak goes back to the queue as it was
//! (the pass gives them back once their outcomes are committed), and their campaigns are paused
//! with the reply as the reason. A success, or a different reply, ends the streak.

use std::sync::Mutex;

use super::transport::SendFailure;

/// The streak of refusals seen by one delivery pass, across its connections.
pub(crate) struct Breaker {
    threshold: usize,
    streak: Mutex<Streak>,
}

#[derive(Default)]
struct Streak {
    /// The reply every message of the streak got (see [`SendFailure::reply_key`]).
    reply: Option<String>,
    /// A human line for the reason: the relay's whole reply of the latest refusal.
    detail: String,
    /// (outbox id, campaign) of each refused message of the streak.
    rows: Vec<(i64, String)>,
    tripped: bool,
}

/// A tripped breaker: what to give back and what to pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tripped {
    /// The reply, e.g. `554 5.7.1`, and the relay's words.
    pub reply: String,
    pub detail: String,
    /// The outbox rows of the streak, with their campaigns.
    pub rows: Vec<(i64, String)>,
    /// Their campaigns, each once, in order of first appearance.
    pub campaigns: Vec<String>,
}

impl Breaker {
    /// A breaker that trips after `threshold` refusals in a row; 0: never.
    pub(crate) fn new(threshold: u32) -> Breaker {
        Breaker {
            threshold: threshold as usize,
            streak: Mutex::default(),
        }
    }

    /// A message went through: the streak, if any, is over (unless it already tripped).
    pub(crate) fn passed(&self) {
        let mut s = self.streak.lock().expect("breaker lock");
        if !s.tripped {
            *s = Streak::default();
        }
    }

    /// Message `id` of `campaign` was refused for good. Returns true when this refusal trips
    /// the breaker. Once tripped, later refusals with the same reply join the streak (they were
    /// on the wire when it tripped).
    pub(crate) fn refused(&self, id: i64, campaign: &str, failure: &SendFailure) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let Some(key) = failure.reply_key() else {
            *self.streak.lock().expect("breaker lock") = Streak::default();
            return false;
        };
        // About one recipient: neither part of a streak nor the end of one (a few unknown
        // addresses among a relay's refusals of everyone must not keep the breaker from
        // tripping).
        if about_the_recipient(&key) {
            return false;
        }
        let key = Some(key);
        let mut s = self.streak.lock().expect("breaker lock");
        if s.tripped {
            if key.is_some() && key == s.reply {
                s.rows.push((id, campaign.to_string()));
            }
            return false;
        }
        match key {
            Some(key) if s.reply.as_deref() == Some(key.as_str()) => {}
            Some(key) => {
                *s = Streak {
                    reply: Some(key),
                    ..Streak::default()
                }
            }
            None => {
                *s = Streak::default();
                return false;
            }
        }
        s.rows.push((id, campaign.to_string()));
        s.detail = failure.detail.clone();
        if s.rows.len() >= self.threshold {
            s.tripped = true;
            return true;
        }
        false
    }

    /// The streak that tripped the breaker, if it did.
    pub(crate) fn tripped(&self) -> Option<Tripped> {
        let s = self.streak.lock().expect("breaker lock");
        if !s.tripped {
            return None;
        }
        let mut campaigns: Vec<String> = Vec::new();
        for (_, c) in &s.rows {
            if !campaigns.contains(c) {
                campaigns.push(c.clone());
            }
        }
        Some(Tripped {
            reply: s.reply.clone().unwrap_or_default(),
            detail: s.detail.clone(),
            rows: s.rows.clone(),
            campaigns,
        })
    }
}

/// `5.1.x` (no such user, no such domain) is about one recipient by definition: it never
/// counts toward a streak. 5.1.7 and 5.1.8 are about our sender's address: a relay refusing it
/// refuses everyone, which is what the breaker is for.
fn about_the_recipient(key: &str) -> bool {
    key.split_whitespace()
        .nth(1)
        .is_some_and(super::transport::recipient_does_not_exist)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::transport::FailureKind;

    fn refusal(code: u16, text: &str) -> SendFailure {
        SendFailure {
            kind: FailureKind::Permanent,
            code: Some(code),
            detail: format!("permanent error ({code}): {text}"),
        }
    }

    #[test]
    fn the_same_reply_in_a_row_trips_it_and_anything_else_resets() {
        let b = Breaker::new(3);
        let blocked = refusal(554, "5.7.1 service unavailable; client host blocked");
        assert!(!b.refused(1, "a", &blocked));
        assert!(!b.refused(2, "a", &blocked));
        b.passed();
        assert!(!b.refused(3, "a", &blocked));
        assert!(!b.refused(4, "b", &refusal(550, "5.7.1 other policy")));
        assert!(!b.refused(5, "a", &blocked));
        assert!(!b.refused(6, "b", &blocked));
        assert!(b.refused(7, "a", &blocked));
        // On the wire when it tripped: joins the streak.
        assert!(!b.refused(8, "c", &blocked));
        b.passed();
        let t = b.tripped().unwrap();
        assert_eq!(t.reply, "554 5.7.1");
        let ids: Vec<i64> = t.rows.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![5, 6, 7, 8]);
        assert_eq!(t.campaigns, vec!["a", "b", "c"]);
    }

    /// Once tripped, a message on the wire refused with another reply is refused for its own
    /// reason: it fails as itself, is not given back with the streak, and its campaign is not
    /// paused.
    #[test]
    fn after_it_trips_only_the_same_reply_joins_the_streak() {
        let b = Breaker::new(2);
        let blocked = refusal(554, "5.7.1 client host blocked");
        assert!(!b.refused(1, "a", &blocked));
        assert!(b.refused(2, "a", &blocked));
        assert!(!b.refused(3, "b", &refusal(550, "5.7.1 message refused by policy")));
        assert!(!b.refused(4, "c", &blocked));
        let t = b.tripped().unwrap();
        let ids: Vec<i64> = t.rows.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2, 4]);
        assert_eq!(t.campaigns, vec!["a", "c"]);
    }

    #[test]
    fn unknown_recipients_never_trip_it() {
        let b = Breaker::new(2);
        for id in 0..10 {
            assert!(!b.refused(id, "a", &refusal(550, "5.1.1 no such user")));
        }
        assert!(b.tripped().is_none());
        // Unknown recipients among a relay's refusals of everyone do not hold the breaker back.
        let b = Breaker::new(3);
        let blocked = refusal(554, "5.7.1 client host blocked");
        assert!(!b.refused(1, "a", &blocked));
        assert!(!b.refused(2, "a", &refusal(550, "5.1.1 no such user")));
        assert!(!b.refused(3, "a", &blocked));
        assert!(b.refused(4, "a", &blocked));
        // Our sender refused (5.1.8) for everyone is the relay refusing us.
        let b = Breaker::new(2);
        let sender = refusal(553, "5.1.8 sender domain does not resolve");
        assert!(!b.refused(1, "a", &sender));
        assert!(b.refused(2, "a", &sender));
        let off = Breaker::new(0);
        for id in 0..10 {
            assert!(!off.refused(id, "a", &refusal(554, "5.7.1 blocked")));
        }
    }
}
