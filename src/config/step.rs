//! The calendar's steps: which message of a campaign a row is. The cadence settings speak in
//! steps, and the outbox stores them as text (`first`, `d3`, `main`, `test`).

use std::fmt;
use std::str::FromStr;

/// A text that is not a step (`d07`, `D3`...).
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown step `{0}`")]
pub struct UnknownStep(pub(crate) String);

/// Which message of a campaign a row is: the step of a reminder, the one message of a one-off or
/// reopening campaign, or an operator's test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// The first notice of a reminder campaign, at the campaign start.
    First,
    /// The reminder N days before the deadline's day (`d7`, `d3`, `d1`).
    DaysBefore(u32),
    /// The message of a one-off or reopening campaign.
    Main,
    /// An operator's test message (`campaign test`); never in the outbox.
    Test,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::First => f.pad("first"),
            Step::DaysBefore(n) => f.pad(&format!("d{n}")),
            Step::Main => f.pad("main"),
            Step::Test => f.pad("test"),
        }
    }
}

impl FromStr for Step {
    type Err = UnknownStep;
    fn from_str(s: &str) -> Result<Self, UnknownStep> {
        match s {
            "first" => Ok(Step::First),
            "main" => Ok(Step::Main),
            "test" => Ok(Step::Test),
            _ => s
                .strip_prefix('d')
                .and_then(|n| n.parse().ok())
                .filter(|n| s == format!("d{n}"))
                .map(Step::DaysBefore)
                .ok_or_else(|| UnknownStep(s.to_string())),
        }
    }
}

impl serde::Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_reads_back_what_it_writes() {
        for step in [Step::First, Step::DaysBefore(7), Step::Main, Step::Test] {
            assert_eq!(step.to_string().parse::<Step>().unwrap(), step);
        }
        for bad in ["d", "d07", "dx", "D3", "first "] {
            assert!(bad.parse::<Step>().is_err(), "{bad}");
        }
    }
}
