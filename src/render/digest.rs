//! The daily digest as templates see it: one email for everything due to one person on one day.
//!
//! A person due for one thing gets that message's own template, unchanged. Two things or more
//! render [`DIGEST`], a message of its own whose body includes each message's `section.txt` and
//! `section.html` (the per-procedure parts), in [`ORDER`]: the procedures first, the maintenance
//! information, then the advice as a short closing section.

use serde::Serialize;

use crate::audience::Audience;

/// The digest's template folder.
pub const DIGEST: &str = "digest";

/// The order of the sections in a digest: the procedures to complete, then the maintenance
/// information, then the advice; the general reopening notice before the specific ones. A
/// message not listed comes last, in the order given.
pub const ORDER: [&str; 9] = [
    "registration_incomplete",
    "email_unvalidated",
    "code_regeneration_pending",
    "maintenance_notice",
    "credential_recovery_advice",
    "reopening_general",
    "reopening_registration_cancelled",
    "reopening_email_unvalidated",
    "reopening_code_regeneration",
];

/// Whether `template` asks the person to complete a procedure (the count in the digest's
/// subject): the reminder of an audience whose lapse is recorded, named as its audience.
fn is_procedure(template: &str) -> bool {
    (Audience::LAPSES.iter()).any(|(pending, _, _)| pending.name() == template)
}

/// One section of a digest: which message it is and, for a reminder, its step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    /// The message whose `section.txt`/`section.html` renders it (`registration_incomplete`).
    pub template: String,
    pub campaign: String,
    /// `first`, `d3`... for a reminder, `main` for a notice.
    pub step: String,
}

/// `sections` in digest order.
pub fn ordered(mut sections: Vec<Section>) -> Vec<Section> {
    let rank = |s: &Section| {
        ORDER
            .iter()
            .position(|t| *t == s.template)
            .unwrap_or(ORDER.len())
    };
    sections.sort_by_key(rank);
    sections
}

/// How many of `sections` are procedures to complete.
pub fn procedures(sections: &[Section]) -> usize {
    sections
        .iter()
        .filter(|s| is_procedure(&s.template))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(template: &str) -> Section {
        Section {
            template: template.into(),
            campaign: format!("{template}-2026-11-30"),
            step: "first".into(),
        }
    }

    #[test]
    fn procedures_first_advice_last() {
        let out = ordered(vec![
            section("credential_recovery_advice"),
            section("code_regeneration_pending"),
            section("email_unvalidated"),
        ]);
        let names: Vec<&str> = out.iter().map(|s| s.template.as_str()).collect();
        assert_eq!(
            names,
            [
                "email_unvalidated",
                "code_regeneration_pending",
                "credential_recovery_advice"
            ]
        );
        assert_eq!(procedures(&out), 2);
    }
}
