//! What reading one row gives: a valid user as the portal sees them, or the problems of its
//! fields.

use chrono::{DateTime, Utc};

use crate::store::UserContact;

/// One user as the portal sees them: what an email shows of them (the one [`UserContact`], so
/// that a column a template can show is declared once), and what only the rules read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user id, the names and the addresses (`email` is the one the user registered with).
    pub contact: UserContact,
    pub fiscal_code: String,
    pub registration_completed: bool,
    pub enabled: bool,
    pub code_regeneration_started: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

impl UserRecord {
    /// Registered with an `@istruzione.it` mailbox (or a subdomain such as `posta.istruzione.it`).
    pub fn registered_institutional(&self) -> bool {
        is_institutional(&self.contact.email)
    }
}

/// Whether an address belongs to the ministry's mail domain `istruzione.it` or a subdomain.
pub fn is_institutional(address: &str) -> bool {
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let domain = domain.to_ascii_lowercase();
    domain == "istruzione.it" || domain.ends_with(".istruzione.it")
}

/// A problem with one field of one row (or with the file as a whole when `line` is 0 or 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Line in the file, counting the header as line 1.
    pub line: u64,
    pub column: String,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.reason
        )
    }
}
