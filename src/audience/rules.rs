//! Audiences: named, documented rules over the current snapshot, each with its recipient rule.
//!
//! The rule is a list of clauses on the `users` row aliased `u` ([`Audience::clauses`]); the SQL
//! condition made of them plans a message and, just before sending, checks that the user still
//! qualifies, and `explain` says in words which clause a user fails. There is one place to change.

use std::fmt;
use std::str::FromStr;

/// The Italian provinces' codes (*sigle*), those of the four Sardinian provinces restored in
/// 2025 and `SU` among them.
const PROVINCES: [&str; 111] = [
    "AG", "AL", "AN", "AO", "AP", "AQ", "AR", "AT", "AV", "BA", "BG", "BI", "BL", "BN", "BO", "BR",
    "BS", "BT", "BZ", "CA", "CB", "CE", "CH", "CI", "CL", "CN", "CO", "CR", "CS", "CT", "CZ", "EN",
    "FC", "FE", "FG", "FI", "FM", "FR", "GE", "GO", "GR", "IM", "IS", "KR", "LC", "LE", "LI", "LO",
    "LT", "LU", "MB", "MC", "ME", "MI", "MN", "MO", "MS", "MT", "NA", "NO", "NU", "OG", "OR", "OT",
    "PA", "PC", "PD", "PE", "PG", "PI", "PN", "PO", "PR", "PT", "PU", "PV", "PZ", "RA", "RC", "RE",
    "RG", "RI", "RM", "RN", "RO", "SA", "SI", "SO", "SP", "SR", "SS", "SU", "SV", "TA", "TE", "TN",
    "TO", "TP", "TR", "TS", "TV", "UD", "VA", "VB", "VC", "VE", "VI", "VR", "VS", "VT", "VV",
];

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
    pub const ALL: [Audience; 8] = [
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

    /// The names of [`Audience::ALL`], in its order (the command line lists them).
    pub fn names() -> [&'static str; 8] {
        Audience::ALL.map(Audience::name)
    }

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

    /// One line for `--help`, `explain` and the docs (README.md, docs/campaigns.md).
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

    /// [`Audience::description`] in Italian, for the manager's report.
    pub fn description_it(self) -> &'static str {
        match self {
            Audience::RegistrationIncomplete => "registrazione iniziata e non completata",
            Audience::EmailUnvalidated => {
                "utenze abilitate con un nuovo indirizzo e-mail privato da validare"
            }
            Audience::CodeRegenerationPending => {
                "utenze abilitate con la rigenerazione del Codice Personale iniziata e non completata"
            }
            Audience::CredentialRecoveryAdvice => {
                "utenze abilitate non registrate con una casella @istruzione.it"
            }
            Audience::EnabledUsers => "tutte le utenze abilitate",
            Audience::LapsedRegistration => "registrazione ancora incompleta alla scadenza",
            Audience::LapsedEmailValidation => "e-mail privato ancora da validare alla scadenza",
            Audience::LapsedCodeRegeneration => {
                "rigenerazione del Codice Personale ancora in corso alla scadenza"
            }
        }
    }

    /// The rule as clauses that must all hold: the one definition from which both the SQL
    /// condition ([`Audience::condition`]) and `explain`'s words for a failed clause are made.
    /// Users gone from the snapshot qualify for nothing, except the notice about what lapsed for
    /// them: being gone stops reminders, not that notice (the portal drops cancelled
    /// registrations from its exports, and those people most need to know).
    pub(crate) fn clauses(self) -> &'static [Clause] {
        const PRESENT: Clause = Clause {
            column: "present",
            test: Test::Flag(true),
            words: "gone from the snapshot (the latest full export no longer lists the user)",
            kept: (
                "still in the latest export",
                "ancora presenti nell'ultima esportazione",
            ),
        };
        const ENABLED: Clause = Clause {
            column: "enabled",
            test: Test::Flag(true),
            words: "not enabled",
            kept: ("enabled", "abilitati"),
        };
        match self {
            Audience::RegistrationIncomplete => &[
                PRESENT,
                Clause {
                    column: "registration",
                    test: Test::Is("started"),
                    words: "registration",
                    kept: (
                        "registration started, not completed",
                        "registrazione iniziata e non completata",
                    ),
                },
            ],
            Audience::EmailUnvalidated => &[
                PRESENT,
                ENABLED,
                Clause {
                    column: "pending_email",
                    test: Test::Filled,
                    words: "no changed email address awaiting validation",
                    kept: (
                        "a changed email address awaiting validation",
                        "un nuovo indirizzo e-mail da validare",
                    ),
                },
            ],
            Audience::CodeRegenerationPending => &[
                PRESENT,
                ENABLED,
                Clause {
                    column: "code_regeneration",
                    test: Test::Is("started"),
                    words: "code regeneration",
                    kept: (
                        "code regeneration started, not completed",
                        "rigenerazione del Codice Personale iniziata e non completata",
                    ),
                },
            ],
            Audience::CredentialRecoveryAdvice => &[
                PRESENT,
                ENABLED,
                Clause {
                    column: "registered_institutional",
                    test: Test::Flag(false),
                    words: "registered with @istruzione.it",
                    kept: (
                        "not registered with @istruzione.it",
                        "non registrati con una casella @istruzione.it",
                    ),
                },
            ],
            Audience::EnabledUsers => &[PRESENT, ENABLED],
            Audience::LapsedRegistration => &[Clause {
                column: "registration",
                test: Test::Lapsed,
                words: "no lapse of the registration recorded at the deadline",
                kept: (
                    "registration lapsed at the deadline",
                    "registrazione decaduta alla scadenza",
                ),
            }],
            Audience::LapsedEmailValidation => &[Clause {
                column: "email_validation",
                test: Test::Lapsed,
                words: "no lapse of the email validation recorded at the deadline",
                kept: (
                    "email validation lapsed at the deadline",
                    "validazione dell'e-mail decaduta alla scadenza",
                ),
            }],
            Audience::LapsedCodeRegeneration => &[Clause {
                column: "code_regeneration",
                test: Test::Lapsed,
                words: "no lapse of the code regeneration recorded at the deadline",
                kept: (
                    "code regeneration lapsed at the deadline",
                    "rigenerazione del codice decaduta alla scadenza",
                ),
            }],
        }
    }

    /// The condition on `users u`: the clauses, all of them.
    pub(crate) fn condition(self) -> String {
        self.clauses()
            .iter()
            .map(Clause::sql)
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The condition with the campaign's filter as parameter `$param`, to be bound to the
    /// province codes (one, or several joined by commas: `BO,RM`), to an uploaded list's key
    /// (`#` and the campaign's uid: the users of `campaign_lists` under it), or to NULL (no
    /// filter). The one place a filter is written. Several codes are matched as `,CODE,`
    /// inside `,BO,RM,` with `replace` (no pattern characters, the same on both databases);
    /// one code, the common case, stays a plain comparison.
    pub(crate) fn condition_in(self, param: usize) -> String {
        format!("{} AND {}", self.condition(), Audience::filter_in(param))
    }

    /// The campaign's filter alone (see [`Audience::condition_in`]).
    pub(crate) fn filter_in(param: usize) -> String {
        format!(
            "(${param} IS NULL OR u.province = ${param} OR (${param} LIKE '%,%' AND \
             replace(',' || ${param} || ',', ',' || u.province || ',', '') <> ',' || ${param} || ',') \
             OR (${param} LIKE '#%' AND EXISTS (SELECT 1 FROM campaign_lists l \
                 WHERE l.list_key = ${param} AND l.user_id = u.user_id)))"
        )
    }

    /// Whether `code` (upper case) is an Italian province's code (its *sigla*), which the
    /// snapshot's `province` column holds: a campaign's province filter must be one.
    pub fn is_province(code: &str) -> bool {
        PROVINCES.contains(&code)
    }

    /// The template written for this audience's own situation, if any: a reminder's (named
    /// after it) or a reopening notice's. Such a template says things true only of its audience
    /// ("today is the last day to complete your registration").
    pub fn own_template(self) -> Option<&'static str> {
        match self {
            Audience::RegistrationIncomplete
            | Audience::EmailUnvalidated
            | Audience::CodeRegenerationPending
            | Audience::CredentialRecoveryAdvice => Some(self.name()),
            Audience::LapsedRegistration => Some("reopening_registration_cancelled"),
            Audience::LapsedEmailValidation => Some("reopening_email_unvalidated"),
            Audience::LapsedCodeRegeneration => Some("reopening_code_regeneration"),
            Audience::EnabledUsers => None,
        }
    }

    /// The audience a template is written for, when it is one audience's own (see
    /// [`Audience::own_template`]).
    pub fn of_template(template: &str) -> Option<Audience> {
        Audience::ALL
            .into_iter()
            .find(|a| a.own_template() == Some(template))
    }

    /// Whether a user of `province` passes the province filter `filter` (see
    /// [`Audience::condition_in`]); not for a list's key (see [`Audience::is_list`]).
    pub(crate) fn in_provinces(province: Option<&str>, filter: &str) -> bool {
        province.is_some_and(|p| filter.split(',').any(|f| f == p))
    }

    /// Whether the filter `filter` is an uploaded list's key rather than provinces.
    pub fn is_list(filter: &str) -> bool {
        filter.starts_with('#')
    }

    /// Why a user fails a campaign's province filter (see [`Audience::condition_in`]), in words.
    pub(crate) fn province_failure(actual: Option<&str>, filter: &str) -> String {
        match actual.filter(|p| !p.is_empty()) {
            Some(p) => format!("province {p}, the campaign is for {filter}"),
            None => format!("no province on record, the campaign is for {filter}"),
        }
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

/// One condition of an audience's rule on a column of `users u`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Clause {
    /// The column of `users u`; for [`Test::Lapsed`], the procedure in the `lapsed` table.
    pub column: &'static str,
    pub test: Test,
    /// For [`Test::Is`], what the column is called; otherwise what it means when the clause
    /// fails, as `explain` says it.
    pub words: &'static str,
    /// Who the clause keeps, in English and in Italian: a step of the audience's funnel.
    pub kept: (&'static str, &'static str),
}

/// What a [`Clause`] asks of its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Test {
    /// The text column holds this value.
    Is(&'static str),
    /// The 0/1 column is set (true) or not (false).
    Flag(bool),
    /// The column has a value.
    Filled,
    /// A lapse of the procedure was recorded at the deadline.
    Lapsed,
}

impl Clause {
    /// The clause as SQL on `users u`.
    pub(crate) fn sql(&self) -> String {
        let c = self.column;
        match self.test {
            Test::Is(value) => format!("u.{c} = '{value}'"),
            Test::Flag(set) => format!("u.{c} = {}", i32::from(set)),
            Test::Filled => format!("u.{c} IS NOT NULL"),
            Test::Lapsed => format!(
                "EXISTS (SELECT 1 FROM lapsed l WHERE l.user_id = u.user_id AND l.procedure = '{c}')"
            ),
        }
    }

    /// The column's value to quote when the clause fails, as SQL (only [`Test::Is`] quotes it).
    pub(crate) fn quoted_sql(&self) -> Option<String> {
        matches!(self.test, Test::Is(_)).then(|| format!("u.{}", self.column))
    }

    /// What failed, in words: `actual` is the column's value (see [`Clause::quoted_sql`]).
    pub(crate) fn failure(&self, actual: Option<&str>) -> String {
        match self.test {
            Test::Is(expected) => format!(
                "{} is `{}`, the audience needs `{expected}`",
                self.words,
                actual.unwrap_or("empty")
            ),
            _ => self.words.to_string(),
        }
    }

    /// Whether the failure of this clause means the user is gone from the snapshot.
    pub(crate) fn is_presence(&self) -> bool {
        self.column == "present" && self.test == Test::Flag(true)
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An audience name that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("unknown audience `{0}` (known: {known})", known = Audience::names().join(", "))]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `config` knows no audience: the cadence's keys are those of the built-in defaults, and
    /// they must be exactly the reminder audiences.
    #[test]
    fn the_default_cadence_names_each_reminder_audience() {
        let settings = crate::config::Settings::load_with_env(None, std::iter::empty()).unwrap();
        let mut keys: Vec<&str> = (settings.calendar.cadence.steps.iter())
            .map(|(audience, _)| audience.as_str())
            .collect();
        keys.sort();
        let mut reminders = Audience::REMINDERS.map(Audience::name).to_vec();
        reminders.sort();
        assert_eq!(keys, reminders);
    }

    /// The conditions made of the clauses are, word for word, the SQL the planner and the
    /// send-time check ran when each was written by hand (the statements stay the same).
    #[test]
    fn the_clauses_make_the_same_sql_as_before() {
        let expected = [
            "u.present = 1 AND u.registration = 'started'",
            "u.present = 1 AND u.enabled = 1 AND u.pending_email IS NOT NULL",
            "u.present = 1 AND u.enabled = 1 AND u.code_regeneration = 'started'",
            "u.present = 1 AND u.enabled = 1 AND u.registered_institutional = 0",
            "u.present = 1 AND u.enabled = 1",
            "EXISTS (SELECT 1 FROM lapsed l WHERE l.user_id = u.user_id AND l.procedure = 'registration')",
            "EXISTS (SELECT 1 FROM lapsed l WHERE l.user_id = u.user_id AND l.procedure = 'email_validation')",
            "EXISTS (SELECT 1 FROM lapsed l WHERE l.user_id = u.user_id AND l.procedure = 'code_regeneration')",
        ];
        for (audience, sql) in Audience::ALL.into_iter().zip(expected) {
            assert_eq!(audience.condition(), sql, "{audience}");
        }
        // The lapse clauses name the procedures the lapse record is written with.
        for (_, procedure, notice) in Audience::LAPSES {
            assert_eq!(notice.clauses()[0].column, procedure);
        }
    }

    /// Each audience has a line of its own, in English (`--help`, `explain`, the console) and in
    /// Italian (the manager's report): none empty, no two alike.
    #[test]
    fn each_audience_is_described_in_its_own_words() {
        for describe in [Audience::description, Audience::description_it] {
            let mut lines: Vec<&str> = Audience::ALL.map(describe).to_vec();
            assert!(lines.iter().all(|l| l.split(' ').count() >= 3), "{lines:?}");
            lines.sort();
            lines.dedup();
            assert_eq!(lines.len(), Audience::ALL.len(), "{lines:?}");
        }
        assert_eq!(
            Audience::EnabledUsers.description(),
            "every enabled user",
            "README.md's audience table"
        );
    }

    #[test]
    fn a_failed_clause_reads_as_a_sentence() {
        let registration = Audience::RegistrationIncomplete.clauses()[1];
        assert_eq!(
            registration.failure(Some("completed")),
            "registration is `completed`, the audience needs `started`"
        );
        assert_eq!(
            Audience::CredentialRecoveryAdvice.clauses()[2].failure(None),
            "registered with @istruzione.it"
        );
        assert!(Audience::EnabledUsers.clauses()[0].is_presence());
        assert_eq!(
            Audience::province_failure(Some("MI"), "RM"),
            "province MI, the campaign is for RM"
        );
    }
}
