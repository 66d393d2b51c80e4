//! The checks of one row's fields: each value is valid, or refused with its line, its column and
//! a plain reason that does not repeat it (values are personal data).

use chrono::{DateTime, Utc};

use super::record::{RowError, UserRecord};

/// Field checks for one row; each pushes its errors and returns `None` when the value is bad.
pub(super) struct Checker<'a> {
    pub(super) line: u64,
    pub(super) errors: &'a mut Vec<RowError>,
}

impl Checker<'_> {
    pub(super) fn fail<T>(&mut self, column: &str, reason: impl Into<String>) -> Option<T> {
        self.errors.push(RowError {
            line: self.line,
            column: column.into(),
            reason: reason.into(),
        });
        None
    }

    pub(super) fn required(&mut self, column: &str, value: &str) -> Option<()> {
        if value.is_empty() {
            return self.fail(column, "is required but empty");
        }
        Some(())
    }

    pub(super) fn user_id(&mut self, value: &str) -> Option<String> {
        self.required("user_id", value)?;
        if value.len() > 64
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return self.fail(
                "user_id",
                "must be 1 to 64 letters, digits, dots, dashes or underscores",
            );
        }
        Some(value.to_string())
    }

    pub(super) fn fiscal_code(&mut self, value: &str) -> Option<String> {
        self.required("fiscal_code", value)?;
        let code = value.to_ascii_uppercase();
        match fiscal_code_problem(&code) {
            None => Some(code),
            Some(reason) => self.fail("fiscal_code", reason),
        }
    }

    pub(super) fn name(&mut self, column: &str, value: &str) -> Option<String> {
        self.required(column, value)?;
        if value.chars().count() > 100 {
            return self.fail(column, "is longer than 100 characters");
        }
        if value.chars().any(is_line_break) {
            return self.fail(column, "contains a line break");
        }
        if value.chars().any(|c| c.is_control() || is_invisible(c)) {
            return self.fail(
                column,
                "contains a control or invisible character (tab, zero-width, text direction)",
            );
        }
        if value.contains(['<', '>']) {
            return self.fail(column, "contains < or >, which no name has (HTML?)");
        }
        Some(value.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// `Some(Some(addr))` for a good address, `Some(None)` for an empty optional one.
    pub(super) fn email(
        &mut self,
        column: &str,
        value: &str,
        required: bool,
    ) -> Option<Option<String>> {
        if value.is_empty() {
            if required {
                return self.fail(column, "is required but empty");
            }
            return Some(None);
        }
        match email_problem(value) {
            None => Some(Some(value.to_string())),
            Some(reason) => self.fail(column, reason),
        }
    }

    pub(super) fn choice(
        &mut self,
        column: &str,
        value: &str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let lower = value.to_ascii_lowercase();
        match allowed.iter().find(|a| **a == lower) {
            Some(a) => Some(a),
            None => self.fail(column, format!("must be one of {}", allowed.join(", "))),
        }
    }

    pub(super) fn boolean(&mut self, column: &str, value: &str) -> Option<bool> {
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => self.fail(column, "must be true or false"),
        }
    }

    pub(super) fn province(&mut self, value: &str) -> Option<Option<String>> {
        if value.is_empty() {
            return Some(None);
        }
        if value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Some(Some(value.to_ascii_uppercase()));
        }
        self.fail("province", "must be a two-letter province code such as BO")
    }

    pub(super) fn timestamp(&mut self, column: &str, value: &str) -> Option<Option<DateTime<Utc>>> {
        if value.is_empty() {
            return Some(None);
        }
        match DateTime::parse_from_rfc3339(value) {
            Ok(t) => Some(Some(t.with_timezone(&Utc))),
            Err(_) => self.fail(
                column,
                "must be an RFC 3339 time such as 2026-11-20T14:03:00+01:00",
            ),
        }
    }

    /// States the portal cannot produce: refused rather than guessed.
    pub(super) fn consistency(&mut self, r: &UserRecord) {
        if r.enabled && !r.registration_completed {
            self.fail::<()>(
                "enabled",
                "is true but registration is 'started': only a completed registration can be enabled",
            );
        }
        if r.contact.pending_email.is_some() && !r.enabled {
            self.fail::<()>(
                "pending_email",
                "is set but the user is not enabled: only enabled users change their address",
            );
        }
        if r.code_regeneration_started && !r.enabled {
            self.fail::<()>(
                "code_regeneration",
                "is 'started' but the user is not enabled: only enabled users regenerate the code",
            );
        }
    }
}

/// Characters that end a line somewhere: in a header, an editor or a terminal.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Characters that make a name display differently from its data: Unicode's format characters
/// (zero-width, text direction, soft hyphen, tags...), and the invisible ones that are not
/// (grapheme joiner, Hangul fillers, variation selectors).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{34F}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Why `value` is not a deliverable address, if it is not.
pub(crate) fn email_problem(value: &str) -> Option<&'static str> {
    if value.len() > 254 {
        return Some("is longer than 254 characters");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains spaces or line breaks");
    }
    if !value.is_ascii() {
        let domain_only = value
            .rsplit_once('@')
            .is_some_and(|(local, _)| local.is_ascii());
        return Some(if domain_only {
            "has a non-ASCII domain: the relay would need SMTPUTF8, which avvisi does not use (write the domain in its ASCII form, xn--...)"
        } else {
            "is a non-ASCII address: the relay would need SMTPUTF8, which avvisi does not use"
        });
    }
    let Some((local, domain)) = value.rsplit_once('@') else {
        return Some("is not an email address (no @)");
    };
    if local.is_empty() || domain.is_empty() {
        return Some("is not an email address (nothing before or after @)");
    }
    if !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Some("has a malformed domain (expected something like libero.it)");
    }
    if value.parse::<lettre::Address>().is_err() {
        return Some("is not a valid email address");
    }
    // lettre accepts what RFC 5321 allows, but reads the recipient back from the To header it
    // writes, and cannot for a quoted local part with specials or an address literal: such an
    // email could never be built. Nobody registers one; they are refused here, not at sending.
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if local
        .split('.')
        .any(|atom| atom.is_empty() || !atom.chars().all(atext))
    {
        return Some(
            "is not a plain name@domain address (quotes or special characters before the @)",
        );
    }
    if !domain
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Some("has a domain that is not a host name (an IP address in brackets?)");
    }
    None
}

/// Why `code` (upper case) is not a well-formed Italian fiscal code, if it is not.
pub(crate) fn fiscal_code_problem(code: &str) -> Option<&'static str> {
    let b = code.as_bytes();
    if b.len() != 16 || !b.iter().all(|c| c.is_ascii_alphanumeric()) {
        return Some("must be 16 letters and digits");
    }
    // Digits may be replaced by letters (omocodia): L=0, M=1, N=2, P=3, Q=4, R=5, S=6, T=7, U=8, V=9.
    let digitish = |c: u8| c.is_ascii_digit() || b"LMNPQRSTUV".contains(&c);
    let shape_ok = b[..6].iter().all(u8::is_ascii_alphabetic)
        && b[6..8].iter().all(|c| digitish(*c))
        && b"ABCDEHLMPRST".contains(&b[8])
        && b[9..11].iter().all(|c| digitish(*c))
        && b[11].is_ascii_alphabetic()
        && b[12..15].iter().all(|c| digitish(*c))
        && b[15].is_ascii_alphabetic();
    if !shape_ok {
        return Some("does not have the shape of a fiscal code (e.g. RSSMRA85T10A562S)");
    }
    if fiscal_code_check_char(&b[..15]) != b[15] {
        return Some("has a wrong check character (last letter): mistyped?");
    }
    None
}

/// The check character of the first 15 characters of a fiscal code.
pub fn fiscal_code_check_char(first15: &[u8]) -> u8 {
    const ODD: [u32; 26] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
        23,
    ];
    let sum: u32 = first15
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let v = if c.is_ascii_digit() {
                (c - b'0') as usize
            } else {
                (c - b'A') as usize
            };
            // Positions are counted from 1: odd positions are even indices.
            if i % 2 == 0 {
                ODD[v]
            } else {
                v as u32
            }
        })
        .sum();
    b'A' + (sum % 26) as u8
}
