//! Reading the portal's user snapshot (CSV) into validated [`UserRecord`]s, one row at a time.
//!
//! The reader streams: memory does not grow with the file. Every problem is reported with the
//! line number, the column and a plain reason; values themselves are not echoed (they are
//! personal data and end up in logs).

use std::io::{BufRead, BufReader, Read};

use chrono::{DateTime, Utc};

/// The columns of the snapshot, in the documented order.
pub const COLUMNS: [&str; 12] = [
    "user_id",
    "fiscal_code",
    "first_name",
    "last_name",
    "email",
    "institutional_email",
    "registration",
    "enabled",
    "pending_email",
    "code_regeneration",
    "province",
    "updated_at",
];
/// Columns that may be left out of the header.
const OPTIONAL_COLUMNS: [&str; 2] = ["province", "updated_at"];

/// One user as the portal sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    pub fiscal_code: String,
    pub first_name: String,
    pub last_name: String,
    /// The address the user registered with.
    pub email: String,
    pub institutional_email: Option<String>,
    pub registration_completed: bool,
    pub enabled: bool,
    /// A changed private address awaiting validation.
    pub pending_email: Option<String>,
    pub code_regeneration_started: bool,
    pub province: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl UserRecord {
    /// Registered with an `@istruzione.it` mailbox (or a subdomain such as `posta.istruzione.it`).
    pub fn registered_institutional(&self) -> bool {
        is_institutional(&self.email)
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

/// A problem that stops reading the file at all.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Header(String),
    #[error("cannot read the snapshot: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {reason}")]
    Csv { line: u64, reason: String },
}

/// A validated row, or the reasons it is not valid, with its line and raw fields.
pub struct Row {
    pub line: u64,
    pub result: Result<UserRecord, Vec<RowError>>,
    /// The raw fields, in header order, for reject files.
    pub raw: Vec<String>,
}

/// Streaming reader of a snapshot.
pub struct SnapshotReader<R: Read> {
    reader: csv::Reader<BufReader<R>>,
    header: Vec<String>,
    /// Position in the file's header of each of [`COLUMNS`].
    index: [Option<usize>; 12],
    record: csv::ByteRecord,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the header: accepts a UTF-8 BOM, comma or semicolon, columns in any order.
    pub fn new(input: R) -> Result<Self, SnapshotError> {
        let mut buffered = BufReader::with_capacity(1 << 16, input);
        let head = buffered.fill_buf()?;
        if head.starts_with(b"\xEF\xBB\xBF") {
            buffered.consume(3);
        }
        let head = buffered.fill_buf()?;
        if head.is_empty() {
            return Err(SnapshotError::Header(
                "the file is empty: expected a header row with the column names".into(),
            ));
        }
        let first_line = head.split(|b| *b == b'\n').next().unwrap_or(head);
        let semicolons = first_line.iter().filter(|b| **b == b';').count();
        let commas = first_line.iter().filter(|b| **b == b',').count();
        let delimiter = if semicolons > commas { b';' } else { b',' };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .flexible(true)
            .from_reader(buffered);
        let header: Vec<String> = reader
            .byte_headers()
            .map_err(|e| SnapshotError::Header(format!("cannot read the header row: {e}")))?
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_ascii_lowercase())
            .collect();
        let mut index = [None; 12];
        for (pos, name) in header.iter().enumerate() {
            match COLUMNS.iter().position(|c| c == name) {
                Some(i) if index[i].is_some() => {
                    return Err(SnapshotError::Header(format!(
                        "header row: column `{name}` appears twice"
                    )))
                }
                Some(i) => index[i] = Some(pos),
                None => {
                    return Err(SnapshotError::Header(format!(
                        "header row: unknown column `{name}` (expected: {})",
                        COLUMNS.join(", ")
                    )))
                }
            }
        }
        let missing: Vec<&str> = COLUMNS
            .iter()
            .zip(index.iter())
            .filter(|(c, i)| i.is_none() && !OPTIONAL_COLUMNS.contains(c))
            .map(|(c, _)| *c)
            .collect();
        if !missing.is_empty() {
            return Err(SnapshotError::Header(format!(
                "header row: missing column(s) {} (is this a snapshot of users?)",
                missing.join(", ")
            )));
        }
        Ok(SnapshotReader {
            reader,
            header,
            index,
            record: csv::ByteRecord::new(),
        })
    }

    /// The header's column names as found in the file.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The next row, validated; `None` at the end of the file.
    pub fn next_row(&mut self) -> Option<Result<Row, SnapshotError>> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map(|p| p.line()).unwrap_or(0);
                Some(Ok(self.validate(line)))
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                Some(Err(SnapshotError::Csv {
                    line,
                    reason: e.to_string(),
                }))
            }
        }
    }

    fn validate(&self, line: u64) -> Row {
        let mut errors = Vec::new();
        let raw: Vec<String> = self
            .record
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        if self.record.len() != self.header.len() {
            errors.push(RowError {
                line,
                column: "(row)".into(),
                reason: format!(
                    "has {} fields, the header has {}",
                    self.record.len(),
                    self.header.len()
                ),
            });
            return Row {
                line,
                result: Err(errors),
                raw,
            };
        }
        let mut field = |col: usize| -> Option<String> {
            let pos = self.index[col]?;
            match std::str::from_utf8(&self.record[pos]) {
                Ok(s) => Some(s.trim().to_string()),
                Err(_) => {
                    errors.push(RowError {
                        line,
                        column: COLUMNS[col].into(),
                        reason: "is not valid UTF-8 (save the file as UTF-8)".into(),
                    });
                    None
                }
            }
        };
        let values: Vec<Option<String>> = (0..COLUMNS.len()).map(&mut field).collect();
        let mut check = Checker {
            line,
            errors: &mut errors,
        };
        let text = |i: usize| values[i].clone().unwrap_or_default();
        let user_id = check.user_id(&text(0));
        let fiscal_code = check.fiscal_code(&text(1));
        let first_name = check.name("first_name", &text(2));
        let last_name = check.name("last_name", &text(3));
        let email = check.email("email", &text(4), true);
        let institutional_email = check.email("institutional_email", &text(5), false);
        let registration = check.choice("registration", &text(6), &["started", "completed"]);
        let enabled = check.boolean("enabled", &text(7));
        let pending_email = check.email("pending_email", &text(8), false);
        let code_regeneration = check.choice("code_regeneration", &text(9), &["none", "started"]);
        let province = check.province(&text(10));
        let updated_at = check.timestamp("updated_at", &text(11));

        let record = (|| {
            Some(UserRecord {
                user_id: user_id?,
                fiscal_code: fiscal_code?,
                first_name: first_name?,
                last_name: last_name?,
                email: email??,
                institutional_email: institutional_email?,
                registration_completed: registration? == "completed",
                enabled: enabled?,
                pending_email: pending_email?,
                code_regeneration_started: code_regeneration? == "started",
                province: province?,
                updated_at: updated_at?,
            })
        })();
        if let Some(r) = &record {
            check.consistency(r);
        }
        let result = match record {
            Some(r) if errors.is_empty() => Ok(r),
            _ => Err(errors),
        };
        Row { line, result, raw }
    }
}

/// Field checks for one row; each pushes its errors and returns `None` when the value is bad.
struct Checker<'a> {
    line: u64,
    errors: &'a mut Vec<RowError>,
}

impl Checker<'_> {
    fn fail<T>(&mut self, column: &str, reason: impl Into<String>) -> Option<T> {
        self.errors.push(RowError {
            line: self.line,
            column: column.into(),
            reason: reason.into(),
        });
        None
    }

    fn required(&mut self, column: &str, value: &str) -> Option<()> {
        if value.is_empty() {
            return self.fail(column, "is required but empty");
        }
        Some(())
    }

    fn user_id(&mut self, value: &str) -> Option<String> {
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

    fn fiscal_code(&mut self, value: &str) -> Option<String> {
        self.required("fiscal_code", value)?;
        let code = value.to_ascii_uppercase();
        match fiscal_code_problem(&code) {
            None => Some(code),
            Some(reason) => self.fail("fiscal_code", reason),
        }
    }

    fn name(&mut self, column: &str, value: &str) -> Option<String> {
        self.required(column, value)?;
        if value.chars().count() > 100 {
            return self.fail(column, "is longer than 100 characters");
        }
        if value.chars().any(|c| c == '\r' || c == '\n') {
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
    fn email(&mut self, column: &str, value: &str, required: bool) -> Option<Option<String>> {
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

    fn choice(
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

    fn boolean(&mut self, column: &str, value: &str) -> Option<bool> {
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => self.fail(column, "must be true or false"),
        }
    }

    fn province(&mut self, value: &str) -> Option<Option<String>> {
        if value.is_empty() {
            return Some(None);
        }
        if value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Some(Some(value.to_ascii_uppercase()));
        }
        self.fail("province", "must be a two-letter province code such as BO")
    }

    fn timestamp(&mut self, column: &str, value: &str) -> Option<Option<DateTime<Utc>>> {
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
    fn consistency(&mut self, r: &UserRecord) {
        if r.enabled && !r.registration_completed {
            self.fail::<()>(
                "enabled",
                "is true but registration is 'started': only a completed registration can be enabled",
            );
        }
        if r.pending_email.is_some() && !r.enabled {
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

/// Zero-width and text-direction characters that make a name display differently from its data.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Why `value` is not a deliverable address, if it is not.
pub(crate) fn email_problem(value: &str) -> Option<&'static str> {
    if value.len() > 254 {
        return Some("is longer than 254 characters");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains spaces or line breaks");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(csv: &str) -> Vec<Row> {
        let mut r = SnapshotReader::new(csv.as_bytes()).unwrap();
        std::iter::from_fn(|| r.next_row())
            .map(|r| r.unwrap())
            .collect()
    }

    const HEADER: &str = "user_id,fiscal_code,first_name,last_name,email,institutional_email,registration,enabled,pending_email,code_regeneration,province,updated_at";

    #[test]
    fn fiscal_codes() {
        assert_eq!(fiscal_code_problem("RSSMRA85T10A562S"), None);
        assert!(fiscal_code_problem("RSSMRA85T10A562T")
            .unwrap()
            .contains("check"));
        assert!(fiscal_code_problem("RSSMRA85T10A562").is_some());
        assert!(fiscal_code_problem("12345678901").is_some());
    }

    #[test]
    fn institutional_domains() {
        assert!(is_institutional("a.b@istruzione.it"));
        assert!(is_institutional("a.b@Posta.Istruzione.IT"));
        assert!(!is_institutional("a.b@istruzione.it.example.com"));
        assert!(!is_institutional("istruzione.it@libero.it"));
    }

    #[test]
    fn semicolons_bom_and_any_column_order() {
        let csv = "\u{feff}email;user_id;fiscal_code;first_name;last_name;institutional_email;registration;enabled;pending_email;code_regeneration\n\
                   g.dangelo@libero.it;U1;RSSMRA85T10A562S;Nicolò;D'Angelo;;completed;true;;started\n";
        let rows = read(csv);
        let user = rows[0].result.as_ref().unwrap();
        assert_eq!(user.last_name, "D'Angelo");
        assert_eq!(user.first_name, "Nicolò");
        assert!(user.code_regeneration_started);
        assert_eq!(rows[0].line, 2);
    }

    #[test]
    fn every_bad_field_is_reported_with_line_and_column() {
        let csv = format!(
            "{HEADER}\nU1,RSSMRA85T10A562T,Mario,\"Ros\nsi\",mario@,,maybe,yes,,none,BOLO,yesterday\n"
        );
        let rows = read(&csv);
        let errors = rows[0].result.as_ref().unwrap_err();
        let columns: Vec<&str> = errors.iter().map(|e| e.column.as_str()).collect();
        for c in [
            "fiscal_code",
            "last_name",
            "email",
            "registration",
            "enabled",
            "province",
            "updated_at",
        ] {
            assert!(columns.contains(&c), "{c} not in {columns:?}");
        }
        assert!(errors.iter().all(|e| e.line == 2));
    }

    #[test]
    fn header_problems_are_named() {
        let err = SnapshotReader::new("".as_bytes()).err().unwrap();
        assert!(err.to_string().contains("empty"));
        let err = SnapshotReader::new("user_id,emial\n".as_bytes())
            .err()
            .unwrap();
        assert!(err.to_string().contains("emial"), "{err}");
    }

    #[test]
    fn contradictory_states_are_refused() {
        let csv = format!(
            "{HEADER}\nU1,RSSMRA85T10A562S,Mario,Rossi,m.rossi@libero.it,,started,true,,none,,\n"
        );
        let errors = read(&csv)[0].result.clone().unwrap_err();
        assert_eq!(errors[0].column, "enabled");
    }
}
