//! What an operator asks of a campaign, and the states each request applies to: the lifecycle's
//! guards and the campaign errors both speak of it.

use std::fmt;

use crate::store::CampaignState;

/// What an operator asks of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Launch,
    Pause,
    Resume,
    Cancel,
}

impl Action {
    /// The states this action applies to.
    pub(crate) fn applies_to(self) -> &'static [CampaignState] {
        use CampaignState::*;
        match self {
            Action::Launch => &[Draft],
            Action::Pause => &[Running, Scheduled],
            Action::Resume => &[Paused],
            Action::Cancel => &[Draft, Scheduled, Running, Paused],
        }
    }

    /// One sentence on what is allowed, for error messages.
    pub fn allowed(self) -> String {
        let states: Vec<&str> = self.applies_to().iter().map(|s| s.as_str()).collect();
        let list = match states.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        format!(
            "only a {list} campaign can be {} (cancelled and finished are final)",
            self.past()
        )
    }

    fn past(self) -> &'static str {
        match self {
            Action::Launch => "launched",
            Action::Pause => "paused",
            Action::Resume => "resumed",
            Action::Cancel => "cancelled",
        }
    }

    /// `state IN ('a', 'b')` for the guard of this action's UPDATE.
    pub(super) fn guard(self) -> String {
        let states: Vec<String> = self
            .applies_to()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("state IN ({})", states.join(", "))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Launch => "launch",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
        })
    }
}
