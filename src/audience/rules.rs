//! Audiences: named, documented rules over the current snapshot, each with its recipient rule.
//!
//! The rule is a SQL condition on the `users` row aliased `u`; the same condition plans a message
//! and, just before sending, checks that the user still qualifies. There is one place to change.

use std::fmt;
use std::str::FromStr;

/// Who a campaign is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Registration started and not completed.
    RegistrationIncomplete,
    /// Enabled, with a changed private email address awaiting validation.
    EmailUnvalidated,
    /// Enabled, with a personal-code regeneration started and not completed.
    CodeRegenerationPending,
    /// Enabled and not registered with an `@istruzione.it` mailbox: cannot recover credentials
    /// during the maintenance.
    CredentialRecoveryAdvice,
    /// Every enabled user (the maintenance notice, the general reopening notice).
    EnabledUsers,
    /// Registration still incomplete at the deadline (recorded at maintenance start).
    LapsedRegistration,
    /// Changed private email still unvalidated at the deadline.
    LapsedEmailValidation,
    /// Personal-code regeneration still pending at the deadline.
    LapsedCodeRegeneration,
}

impl Audience {
    pub(crate) const ALL: [Audience; 8] = [
        Audience::RegistrationIncomplete,
        Audience::EmailUnvalidated,
        Audience::CodeRegenerationPending,
        Audience::CredentialRecoveryAdvice,
        Audience::EnabledUsers,
        Audience::LapsedRegistration,
        Audience::LapsedEmailValidation,
        Audience::LapsedCodeRegeneration,
    ];

    /// The procedures whose lapse is recorded at maintenance start: (audience pending before
    /// the deadline, name in the `lapsed` table, audience of the specific reopening notice).
    pub(crate) const LAPSES: [(Audience, &'static str, Audience); 3] = [
        (
            Audience::RegistrationIncomplete,
            "registration",
            Audience::LapsedRegistration,
        ),
        (
            Audience::EmailUnvalidated,
            "email_validation",
            Audience::LapsedEmailValidation,
        ),
        (
            Audience::CodeRegenerationPending,
            "code_regeneration",
            Audience::LapsedCodeRegeneration,
        ),
    ];

    /// The four audiences that get a reminder before the deadline.
    pub const REMINDERS: [Audience; 4] = [
        Audience::RegistrationIncomplete,
        Audience::EmailUnvalidated,
        Audience::CodeRegenerationPending,
        Audience::CredentialRecoveryAdvice,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Audience::RegistrationIncomplete => "registration_incomplete",
            Audience::EmailUnvalidated => "email_unvalidated",
            Audience::CodeRegenerationPending => "code_regeneration_pending",
            Audience::CredentialRecoveryAdvice => "credential_recovery_advice",
            Audience::EnabledUsers => "enabled_users",
            Audience::LapsedRegistration => "lapsed_registration",
            Audience::LapsedEmailValidation => "lapsed_email_validation",
            Audience::LapsedCodeRegeneration => "lapsed_code_regeneration",
        }
    }

    /// One line for `--help`, `explain` and the README.
    pub fn description(self) -> &'static str {
        match self {
            Audience::RegistrationIncomplete => "registration started and not completed",
            Audience::EmailUnvalidated => {
                "enabled, a changed private email address not yet validated"
            }
            Audience::CodeRegenerationPending => {
                "enabled, personal-code regeneration started and not completed"
            }
            Audience::CredentialRecoveryAdvice => {
                "enabled, not registered with an @istruzione.it mailbox"
            }
            Audience::EnabledUsers => "every enabled user",
            Audience::LapsedRegistration => "registration still incomplete at the deadline",
            Audience::LapsedEmailValidation => "private email still unvalidated at the deadline",
            Audience::LapsedCodeRegeneration => "code regeneration still pending at the deadline",
        }
    }

    /// The condition on `users u`. Users gone from the snapshot qualify for nothing, except the
    /// notice about what lapsed for them: being gone stops reminders, not that notice (the portal
    /// drops cancelled registrations from its exports, and those people most need to know).
    pub(crate) fn condition(self) -> &'static str {
        match self {
            Audience::RegistrationIncomplete => "u.present = 1 AND u.registration = 'started'",
            Audience::EmailUnvalidated => {
                "u.present = 1 AND u.enabled = 1 AND u.pending_email IS NOT NULL"
            }
            Audience::CodeRegenerationPending => {
                "u.present = 1 AND u.enabled = 1 AND u.code_regeneration = 'started'"
            }
            Audience::CredentialRecoveryAdvice => {
                "u.present = 1 AND u.enabled = 1 AND u.registered_institutional = 0"
            }
            Audience::EnabledUsers => "u.present = 1 AND u.enabled = 1",
            Audience::LapsedRegistration => {
                "EXISTS (SELECT 1 FROM lapsed l WHERE l.user_id = u.user_id AND l.procedure = 'registration')"
            }
            Audience::LapsedEmailValidation => {
                "EXISTS (SELECT 1 FROM lapsed l WHERE l.user_id = u.user_id AND l.procedure = 'email_validation')"
            }
            Audience::LapsedCodeRegeneration => {
                "EXISTS (SELECT 1 FROM lapsed l WHERE l.user_id = u.user_id AND l.procedure = 'code_regeneration')"
            }
        }
    }

    /// The condition with the campaign's province filter as parameter `$param`, to be bound to
    /// the province code or to NULL (no filter). The one place a province filter is written.
    pub(crate) fn condition_in(self, param: usize) -> String {
        format!(
            "{} AND (${param} IS NULL OR u.province = ${param})",
            self.condition()
        )
    }

    /// The column of `users u` holding the recipient. Always the address on record: for
    /// `email_unvalidated` the new address is not proven to be the user's yet, so the reminder
    /// goes to the address the user already validated (and mentions the new one).
    pub(crate) fn recipient_column(self) -> &'static str {
        "u.email"
    }

    /// Why a planned message is not sent when the user left the audience.
    pub(crate) fn left_reason(self) -> &'static str {
        match self {
            Audience::RegistrationIncomplete => {
                "registration completed (or user gone) before sending"
            }
            Audience::EmailUnvalidated => "private email validated (or user gone) before sending",
            Audience::CodeRegenerationPending => {
                "code regeneration completed (or user gone) before sending"
            }
            Audience::CredentialRecoveryAdvice => "user no longer in the audience before sending",
            Audience::EnabledUsers => "user no longer enabled (or gone) before sending",
            Audience::LapsedRegistration
            | Audience::LapsedEmailValidation
            | Audience::LapsedCodeRegeneration => "lapse record removed before sending",
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An audience name that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("unknown audience `{0}` (known: registration_incomplete, email_unvalidated, code_regeneration_pending, credential_recovery_advice, enabled_users, lapsed_registration, lapsed_email_validation, lapsed_code_regeneration)")]
pub struct UnknownAudience(pub String);

impl FromStr for Audience {
    type Err = UnknownAudience;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Audience::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAudience(s.to_string()))
    }
}
