//! Streams: the kinds of email a person receives, each labelled on its own (`List-Id`,
//! `Feedback-ID`) and, unless it is about the user's own procedure, stopped on its own by a
//! one-click opt-out.
//!
//! A campaign's stream is decided when the campaign is created and stored with it
//! (`campaigns.stream`); an opt-out is stored against the stream (`optouts.stream`).

use std::fmt;
use std::str::FromStr;

/// One stream. Stored as [`Stream::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// The reminder campaigns: the user's own pending procedure, which the user is told about
    /// by law. No unsubscribe.
    Reminders,
    /// The maintenance notice to every enabled user.
    MaintenanceNotice,
    /// The general reopening notice to every enabled user.
    ReopeningGeneral,
    /// The specific reopening notices, about the user's own lapsed procedure. No unsubscribe.
    ReopeningProcedures,
    /// An operator's one-off campaign, by name.
    Campaign(String),
    /// Every stream that offers an unsubscribe, those of later campaigns too: what a complaint
    /// opts its user out of. No campaign is of this stream.
    AllNotices,
}

/// The key of [`Stream::AllNotices`], as the opt-out statements write it.
pub const ALL_NOTICES: &str = "all_notices";

/// The prefix of a one-off campaign's key.
const CAMPAIGN_PREFIX: &str = "campaign:";

impl Stream {
    /// The streams that are not a campaign's own.
    pub const FIXED: [Stream; 5] = [
        Stream::Reminders,
        Stream::MaintenanceNotice,
        Stream::ReopeningGeneral,
        Stream::ReopeningProcedures,
        Stream::AllNotices,
    ];

    /// The stored text: `reminders`, `maintenance_notice`, `reopening_general`,
    /// `reopening_procedures`, or `campaign:NAME`.
    pub fn key(&self) -> String {
        match self {
            Stream::Reminders => "reminders".to_string(),
            Stream::MaintenanceNotice => "maintenance_notice".to_string(),
            Stream::ReopeningGeneral => "reopening_general".to_string(),
            Stream::ReopeningProcedures => "reopening_procedures".to_string(),
            Stream::Campaign(name) => format!("{CAMPAIGN_PREFIX}{name}"),
            Stream::AllNotices => ALL_NOTICES.to_string(),
        }
    }

    /// Whether the stream is about the user's own procedure: a service notice, never offered an
    /// unsubscribe (a one-off campaign created `--transactional` is not one of these, but is
    /// not offered one either: see the campaign).
    pub fn is_procedure(&self) -> bool {
        matches!(self, Stream::Reminders | Stream::ReopeningProcedures)
    }

    /// The stream's part of a `List-Id` and a `Feedback-ID`: lower case, `-` for `_`, with
    /// a one-off campaign under `campaign.` so that no name can take a fixed stream's id.
    pub fn label(&self) -> String {
        match self {
            Stream::Campaign(name) => format!("{}.campaign", name.replace('_', "-")),
            other => other.key().replace('_', "-"),
        }
    }

    /// In words, for people (`explain`, the pages).
    pub fn describe(&self) -> String {
        match self {
            Stream::Reminders => "the reminders of a pending procedure".to_string(),
            Stream::MaintenanceNotice => "the maintenance notice".to_string(),
            Stream::ReopeningGeneral => "the general reopening notice".to_string(),
            Stream::ReopeningProcedures => {
                "the reopening notices of a lapsed procedure".to_string()
            }
            Stream::Campaign(name) => format!("the campaign {name}"),
            Stream::AllNotices => "every notice that offers an unsubscribe".to_string(),
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl serde::Serialize for Stream {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A text that names no stream.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown stream `{0}`: the streams are reminders, maintenance_notice, reopening_general, reopening_procedures, all_notices and campaign:NAME")]
pub struct UnknownStream(pub String);

impl FromStr for Stream {
    type Err = UnknownStream;
    fn from_str(s: &str) -> Result<Stream, UnknownStream> {
        if let Some(name) = s.strip_prefix(CAMPAIGN_PREFIX) {
            let ok = (1..=60).contains(&name.len())
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            return match ok {
                true => Ok(Stream::Campaign(name.to_string())),
                false => Err(UnknownStream(s.to_string())),
            };
        }
        Stream::FIXED
            .into_iter()
            .find(|f| f.key() == s)
            .ok_or_else(|| UnknownStream(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_and_labels_do_not_collide() {
        for s in Stream::FIXED
            .into_iter()
            .chain([Stream::Campaign("avviso_scuole-2027".into())])
        {
            assert_eq!(s.key().parse::<Stream>().unwrap(), s);
        }
        assert_eq!(Stream::MaintenanceNotice.label(), "maintenance-notice");
        // A one-off campaign named like a fixed stream keeps a label of its own.
        assert_eq!(
            Stream::Campaign("maintenance_notice".into()).label(),
            "maintenance-notice.campaign"
        );
        assert!("campaign:".parse::<Stream>().is_err());
        assert!("campaign:Bad Name".parse::<Stream>().is_err());
        assert!("reminder".parse::<Stream>().is_err());
    }
}
