//! Reading the portal's user snapshot (CSV) into validated [`UserRecord`]s, one row at a time.
//!
//! The reader streams: memory does not grow with the file, and a single row may not grow past
//! [`MAX_ROW_BYTES`] either. The file is UTF-8 unless told otherwise ([`Encoding`]); other
//! encodings are transcoded on the fly. Every problem is reported with the line number, the
//! column and a plain reason; values themselves are not echoed (they are personal data and end
//! up in logs).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use encoding_rs_io::{DecodeReaderBytes, DecodeReaderBytesBuilder};

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

/// The longest row read, in bytes. No real row comes near it (twelve short fields), and a row
/// cannot be parsed without holding it whole: a quote left open would otherwise make the rest of
/// a large file one field, read into memory. A 10 MB field still fits, so it is refused with its
/// line and column rather than as a broken file.
pub const MAX_ROW_BYTES: u64 = 16 << 20;

/// The buffer in front of the CSV parser (it also holds the first line, for the delimiter).
const INPUT_BUFFER: usize = 1 << 16;
/// The CSV parser's own buffer.
const CSV_BUFFER: usize = 1 << 13;

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
    /// Bytes that are not UTF-8 in a file read as UTF-8, and that Windows-1252 would read.
    #[error("line {line} is not UTF-8 (it looks like Windows-1252, as Excel writes it): pass --encoding windows-1252")]
    LooksLikeWindows1252 { line: u64 },
    /// Bytes that are not UTF-8 in a file read as UTF-8, in no encoding recognised.
    #[error("line {line} is not UTF-8: save the file as UTF-8, or pass --encoding with the encoding it is written in")]
    NotUtf8 { line: u64 },
    /// A row longer than [`MAX_ROW_BYTES`]; `line` is where it starts.
    #[error("line {line}: the row goes on for more than {} MiB, which no snapshot row does: is a quote (\") left open?", max_bytes >> 20)]
    RowTooLong { line: u64, max_bytes: u64 },
}

/// The character encoding of a snapshot file: UTF-8 unless told otherwise (`--encoding`).
///
/// Any label of the WHATWG Encoding Standard is accepted (`windows-1252`, `latin1`,
/// `iso-8859-15`...). A file that starts with a byte order mark is read in the encoding the mark
/// names, whatever was given: Excel's "CSV UTF-8" writes one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Encoding(&'static encoding_rs::Encoding);

impl Encoding {
    /// Windows-1252: what Excel writes for "CSV" on an Italian Windows.
    pub fn windows_1252() -> Encoding {
        Encoding(encoding_rs::WINDOWS_1252)
    }

    /// The encoding's name as the standard spells it (`UTF-8`, `windows-1252`).
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl Default for Encoding {
    fn default() -> Encoding {
        Encoding(encoding_rs::UTF_8)
    }
}

impl fmt::Debug for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An `--encoding` that names no encoding.
#[derive(Debug, thiserror::Error)]
#[error("unknown encoding `{0}`: use utf-8 (the default), windows-1252 (Excel's \"CSV\"), or another WHATWG encoding label such as iso-8859-15")]
pub struct UnknownEncoding(String);

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    fn from_str(label: &str) -> Result<Encoding, UnknownEncoding> {
        match encoding_rs::Encoding::for_label(label.trim().as_bytes()) {
            // The standard maps some dangerous labels to "replacement", which decodes nothing.
            Some(e) if e != encoding_rs::REPLACEMENT => Ok(Encoding(e)),
            _ => Err(UnknownEncoding(label.to_string())),
        }
    }
}

/// A validated row, or the reasons it is not valid, with its line and raw fields.
pub struct Row {
    pub line: u64,
    pub result: Result<UserRecord, Vec<RowError>>,
    /// The raw fields, in header order, for reject files.
    pub raw: Vec<String>,
}

/// The file's bytes as the CSV parser reads them: as they are (a UTF-8 file, checked row by row),
/// or transcoded to UTF-8 on the fly with a fixed-size buffer.
enum Source<R: Read> {
    Raw(R),
    Decoded(DecodeReaderBytes<R, Vec<u8>>),
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Raw(r) => r.read(buf),
            Source::Decoded(r) => r.read(buf),
        }
    }
}

/// Line ends as the parser should count them: a lone CR (old Mac exports) and CRLF become LF.
/// The parser ends rows at any of the three but counts lines at LF only, so a file with CR line
/// ends would report every row on line 2.
struct LineEnds<R: Read> {
    inner: R,
    /// The last byte handed out was a CR turned into LF: an LF right after it is the same end.
    after_cr: bool,
}

impl<R: Read> Read for LineEnds<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            // The usual file has LF line ends: nothing to do, and no byte-by-byte pass.
            if !self.after_cr && !buf[..n].contains(&b'\r') {
                return Ok(n);
            }
            let mut kept = 0;
            for i in 0..n {
                let b = buf[i];
                if b == b'\n' && self.after_cr {
                    self.after_cr = false;
                    continue;
                }
                self.after_cr = b == b'\r';
                buf[kept] = if self.after_cr { b'\n' } else { b };
                kept += 1;
            }
            // A read of nothing but the LF of a CRLF must not look like the end of the file.
            if kept > 0 {
                return Ok(kept);
            }
        }
    }
}

/// Stops the input once the row being parsed is longer than `limit`: the parser would otherwise
/// hold all of it in memory before anyone could look at it.
struct RowGuard<R: Read> {
    inner: R,
    /// Bytes handed to the parser's buffers so far.
    read: u64,
    /// Offset of the first byte of the row being parsed.
    row_start: u64,
    limit: u64,
    tripped: bool,
}

impl<R: Read> Read for RowGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The buffers above may hold this many bytes that the parser has not reached yet, so
        // more than `limit` past them means the row itself is longer.
        let ahead = (INPUT_BUFFER + CSV_BUFFER) as u64;
        if self.read > self.row_start + self.limit + ahead {
            self.tripped = true;
            return Err(io::Error::other("row too long"));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Streaming reader of a snapshot.
pub struct SnapshotReader<R: Read> {
    reader: csv::Reader<BufReader<RowGuard<LineEnds<Source<R>>>>>,
    header: Vec<String>,
    /// Position in the file's header of each of [`COLUMNS`].
    index: [Option<usize>; 12],
    record: csv::ByteRecord,
    /// Bytes skipped before the parser's first byte (a byte order mark).
    skipped: u64,
    /// After a problem with the file itself nothing more is read.
    failed: bool,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the header of a UTF-8 file: accepts a BOM, comma or semicolon, columns in any order.
    #[allow(dead_code)] // the import states its encoding; tests and benchmarks read UTF-8
    pub fn new(input: R) -> Result<Self, SnapshotError> {
        Self::with_encoding(input, Encoding::default())
    }

    /// Like [`SnapshotReader::new`] for a file in `encoding`.
    pub fn with_encoding(input: R, encoding: Encoding) -> Result<Self, SnapshotError> {
        Self::open(input, encoding, MAX_ROW_BYTES)
    }

    /// Like [`SnapshotReader::with_encoding`] with rows limited to `max_row_bytes`.
    pub(crate) fn open(
        input: R,
        encoding: Encoding,
        max_row_bytes: u64,
    ) -> Result<Self, SnapshotError> {
        let source = if encoding == Encoding::default() {
            // Not transcoded: bytes that are not UTF-8 are found and reported (`next_row`),
            // where a decoder would replace them without a word.
            Source::Raw(input)
        } else {
            Source::Decoded(
                DecodeReaderBytesBuilder::new()
                    .encoding(Some(encoding.0))
                    .bom_override(true)
                    .build(input),
            )
        };
        let guard = RowGuard {
            inner: LineEnds {
                inner: source,
                after_cr: false,
            },
            read: 0,
            row_start: 0,
            limit: max_row_bytes,
            tripped: false,
        };
        let mut buffered = BufReader::with_capacity(INPUT_BUFFER, guard);
        let mut skipped = 0;
        let head = buffered.fill_buf()?;
        if head.starts_with(b"\xEF\xBB\xBF") {
            buffered.consume(3);
            skipped = 3;
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
            .buffer_capacity(CSV_BUFFER)
            .from_reader(buffered);
        let header = reader.byte_headers().cloned();
        let header = match header {
            Ok(header) => header,
            Err(_) if reader.get_ref().get_ref().tripped => {
                return Err(SnapshotError::RowTooLong {
                    line: 1,
                    max_bytes: max_row_bytes,
                })
            }
            Err(e) => {
                return Err(SnapshotError::Header(format!(
                    "cannot read the header row: {e}"
                )))
            }
        };
        let header: Vec<String> = utf8_record(header, 1)?
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
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
                        "header row: unknown column `{}` (expected: {})",
                        shortened(name),
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
        let mut snapshot = SnapshotReader {
            reader,
            header,
            index,
            record: csv::ByteRecord::new(),
            skipped,
            failed: false,
        };
        snapshot.row_done();
        Ok(snapshot)
    }

    /// The header's column names as found in the file.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The next row, validated; `None` at the end of the file, and after a problem with the file
    /// itself (returned once).
    pub fn next_row(&mut self) -> Option<Result<Row, SnapshotError>> {
        if self.failed {
            return None;
        }
        let start_line = self.reader.position().line();
        let result = match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => return None,
            Ok(true) => {
                self.row_done();
                let line = self
                    .record
                    .position()
                    .map(|p| p.line())
                    .unwrap_or(start_line);
                let record = std::mem::take(&mut self.record);
                utf8_record(record, line).map(|record| {
                    let row = self.validate(&record, line);
                    // The record's buffers serve the next row.
                    self.record = record.into_byte_record();
                    row
                })
            }
            Err(_) if self.reader.get_ref().get_ref().tripped => Err(SnapshotError::RowTooLong {
                line: start_line,
                max_bytes: self.reader.get_ref().get_ref().limit,
            }),
            Err(e) => Err(SnapshotError::Csv {
                line: e.position().map(|p| p.line()).unwrap_or(start_line),
                reason: e.to_string(),
            }),
        };
        self.failed = result.is_err();
        Some(result)
    }

    /// The next row starts where the parser stands.
    fn row_done(&mut self) {
        let at = self.reader.position().byte() + self.skipped;
        self.reader.get_mut().get_mut().row_start = at;
    }

    fn validate(&self, record: &csv::StringRecord, line: u64) -> Row {
        let raw: Vec<String> = record.iter().map(str::to_string).collect();
        if record.len() != self.header.len() {
            let error = RowError {
                line,
                column: "(row)".into(),
                reason: format!(
                    "has {} fields, the header has {}",
                    record.len(),
                    self.header.len()
                ),
            };
            return Row {
                line,
                result: Err(vec![error]),
                raw,
            };
        }
        let mut errors = Vec::new();
        let mut check = Checker {
            line,
            errors: &mut errors,
        };
        let text = |col: usize| -> &str {
            self.index[col]
                .and_then(|pos| record.get(pos))
                .unwrap_or("")
                .trim()
        };
        let user_id = check.user_id(text(0));
        let fiscal_code = check.fiscal_code(text(1));
        let first_name = check.name("first_name", text(2));
        let last_name = check.name("last_name", text(3));
        let email = check.email("email", text(4), true);
        let institutional_email = check.email("institutional_email", text(5), false);
        let registration = check.choice("registration", text(6), &["started", "completed"]);
        let enabled = check.boolean("enabled", text(7));
        let pending_email = check.email("pending_email", text(8), false);
        let code_regeneration = check.choice("code_regeneration", text(9), &["none", "started"]);
        let province = check.province(text(10));
        let updated_at = check.timestamp("updated_at", text(11));

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

/// `record` as text, or the line of its first byte that is not UTF-8 (a row may span lines
/// inside quotes) and the encoding the file is probably in.
fn utf8_record(record: csv::ByteRecord, line: u64) -> Result<csv::StringRecord, SnapshotError> {
    let error = match csv::StringRecord::from_byte_record(record) {
        Ok(record) => return Ok(record),
        Err(e) => e,
    };
    let (field, valid_up_to) = (error.utf8_error().field(), error.utf8_error().valid_up_to());
    let record = error.into_byte_record();
    let newlines = |bytes: &[u8]| bytes.iter().filter(|b| **b == b'\n').count() as u64;
    let line = line
        + record.iter().take(field).map(newlines).sum::<u64>()
        + newlines(&record[field][..valid_up_to]);
    if looks_like_windows_1252(record.as_slice()) {
        Err(SnapshotError::LooksLikeWindows1252 { line })
    } else {
        Err(SnapshotError::NotUtf8 { line })
    }
}

/// Whether `bytes` (not UTF-8) read as text in Windows-1252: no byte that it leaves undefined, no
/// control character but tab and line ends (a UTF-16 file, say, is full of NULs).
fn looks_like_windows_1252(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| match b {
        b'\t' | b'\n' | b'\r' | 0x20..=0x7E => true,
        0x81 | 0x8D | 0x8F | 0x90 | 0x9D => false,
        0x80..=0xFF => true,
        _ => false,
    })
}

/// A header name as an error shows it: the header row may be a data row, or a whole file.
fn shortened(name: &str) -> String {
    const SHOWN: usize = 40;
    if name.chars().count() <= SHOWN {
        return name.to_string();
    }
    let mut short: String = name.chars().take(SHOWN).collect();
    short.push('…');
    short
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(csv: &str) -> Vec<Row> {
        let mut r = SnapshotReader::new(csv.as_bytes()).unwrap();
        std::iter::from_fn(|| r.next_row())
            .map(|r| r.unwrap())
            .collect()
    }

    /// Every row up to the end, or the first problem with the file.
    fn read_all(bytes: &[u8], encoding: Encoding, max_row: u64) -> Result<Vec<Row>, SnapshotError> {
        let mut r = SnapshotReader::open(bytes, encoding, max_row)?;
        std::iter::from_fn(|| r.next_row()).collect()
    }

    /// `text` in Windows-1252, as Excel saves "CSV" on an Italian Windows.
    fn cp1252(text: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(text);
        assert!(!unmappable, "{text:?} has no Windows-1252 form");
        bytes.into_owned()
    }

    fn row(first: &str, last: &str, email: &str) -> String {
        format!("U1,RSSMRA85T10A562S,{first},{last},{email},,completed,true,,none,BO,\n")
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

    #[test]
    fn windows_1252_is_read_when_named() {
        let text = format!(
            "{HEADER}\n{}{}{}",
            row("Mario", "D'Angelo", "m.dangelo@libero.it"),
            row("Nicolò", "D’Amico", "n.damico@libero.it").replace("U1", "U2"),
            row("Niccolò", "Fabbrì", "n.fabbri@libero.it").replace("U1", "U3"),
        );
        let rows = read_all(&cp1252(&text), Encoding::windows_1252(), MAX_ROW_BYTES).unwrap();
        let names: Vec<(String, String)> = rows
            .iter()
            .map(|r| r.result.as_ref().unwrap())
            .map(|u| (u.first_name.clone(), u.last_name.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("Mario", "D'Angelo"),
                ("Nicolò", "D’Amico"),
                ("Niccolò", "Fabbrì")
            ]
            .map(|(f, l)| (f.to_string(), l.to_string()))
        );
    }

    #[test]
    fn a_byte_order_mark_wins_over_the_encoding_given() {
        let text = format!(
            "\u{feff}{HEADER}\n{}",
            row("Nicolò", "Fabbrì", "n.fabbri@libero.it")
        );
        for encoding in [Encoding::default(), Encoding::windows_1252()] {
            let rows = read_all(text.as_bytes(), encoding, MAX_ROW_BYTES).unwrap();
            let user = rows[0].result.as_ref().unwrap();
            assert_eq!(
                (user.first_name.as_str(), user.last_name.as_str()),
                ("Nicolò", "Fabbrì")
            );
        }
    }

    #[test]
    fn windows_1252_read_as_utf8_is_named_once_with_its_line() {
        // Rows 2 and 3 each hold a quoted line break: the accented row starts on line 5 and its
        // first accent is on line 6.
        let text = format!(
            "{HEADER}\n{}{}{}",
            row("Mario", "D'Angelo", "m.dangelo@libero.it"),
            row("Anna", "\"Rossi\nBianchi\"", "a.rossi@libero.it"),
            row("\"Luca\nNiccolò\"", "Fabbrì", "n.fabbri@libero.it"),
        );
        let err = read_all(&cp1252(&text), Encoding::default(), MAX_ROW_BYTES)
            .err()
            .unwrap();
        assert!(
            matches!(err, SnapshotError::LooksLikeWindows1252 { line: 6 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "line 6 is not UTF-8 (it looks like Windows-1252, as Excel writes it): pass --encoding windows-1252"
        );
        // The header too.
        let header = cp1252(&format!("{HEADER},città\n"));
        let err = read_all(&header, Encoding::default(), MAX_ROW_BYTES)
            .err()
            .unwrap();
        assert!(
            matches!(err, SnapshotError::LooksLikeWindows1252 { line: 1 }),
            "{err:?}"
        );
        // Bytes no text encoding explains (a UTF-16 file without its mark) get no guess.
        let mut utf16 = format!("{HEADER}\n").into_bytes();
        utf16.extend_from_slice(b"U\x001\x00,\xFF\xFE\n");
        let err = read_all(&utf16, Encoding::default(), MAX_ROW_BYTES)
            .err()
            .unwrap();
        assert!(matches!(err, SnapshotError::NotUtf8 { line: 2 }), "{err:?}");
    }

    #[test]
    fn rows_keep_their_lines_whatever_the_line_ends() {
        let rows = format!(
            "{HEADER}\n{}{}{}",
            row("Mario", "Rossi", "m.rossi@libero.it"),
            row("\"Anna\nMaria\"", "Verdi", "a.verdi@libero.it"),
            row("Luca", "Neri", "l.neri@"),
        );
        for ends in ["\n", "\r\n", "\r"] {
            let text = rows.replace('\n', ends);
            let found: Vec<(u64, Vec<String>)> = read(&text)
                .iter()
                .map(|r| {
                    let columns = match &r.result {
                        Ok(_) => Vec::new(),
                        Err(errors) => errors.iter().map(|e| e.column.clone()).collect(),
                    };
                    (r.line, columns)
                })
                .collect();
            let expected = vec![
                (2, vec![]),
                (3, vec!["first_name".to_string()]),
                (5, vec!["email".to_string()]),
            ];
            assert_eq!(found, expected, "line ends {ends:?}");
        }
    }

    #[test]
    fn encoding_names() {
        for label in [
            "windows-1252",
            "Windows-1252",
            "cp1252",
            "latin1",
            "iso-8859-1",
        ] {
            assert_eq!(
                label.parse::<Encoding>().unwrap(),
                Encoding::windows_1252(),
                "{label}"
            );
        }
        assert_eq!("utf-8".parse::<Encoding>().unwrap(), Encoding::default());
        assert_eq!(
            "iso-8859-15".parse::<Encoding>().unwrap().name(),
            "ISO-8859-15"
        );
        for label in ["klingon", "", "iso-2022-kr"] {
            let err = label.parse::<Encoding>().unwrap_err();
            assert!(err.to_string().contains("windows-1252"), "{err}");
        }
    }

    #[test]
    fn a_row_over_the_limit_stops_the_file_naming_where_it_starts() {
        // A quote left open on line 3 swallows the rest of the file.
        let mut text = format!("{HEADER}\n{}", row("Mario", "Rossi", "m.rossi@libero.it"));
        text.push_str("U2,RSSMRA85T10A562S,\"Anna,Verdi\n");
        for _ in 0..20_000 {
            text.push_str(&row("Luca", "Neri", "l.neri@libero.it"));
        }
        let limit = 100_000;
        assert!(text.len() as u64 > limit + (INPUT_BUFFER + CSV_BUFFER) as u64 * 2);
        let mut r = SnapshotReader::open(text.as_bytes(), Encoding::default(), limit).unwrap();
        assert!(r.next_row().unwrap().unwrap().result.is_ok());
        let err = r.next_row().unwrap().err().unwrap();
        assert!(
            matches!(
                err,
                SnapshotError::RowTooLong {
                    line: 3,
                    max_bytes: 100_000
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("quote"), "{err}");
        assert!(r.next_row().is_none(), "nothing is read after a broken row");
        // The same file with the quote closed is read whole, rows of any count.
        let fixed = text.replacen("\"Anna", "Anna", 1);
        let rows = read_all(fixed.as_bytes(), Encoding::default(), limit).unwrap();
        assert_eq!(rows.len(), 20_002);
        // And a header over the limit.
        let long_header = format!("{HEADER},{}\n", "x".repeat(300_000));
        let err = read_all(long_header.as_bytes(), Encoding::default(), limit)
            .err()
            .unwrap();
        assert!(
            matches!(err, SnapshotError::RowTooLong { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_ten_megabyte_field_is_refused_with_its_column() {
        let big = "A".repeat(10_000_000);
        for (column, csv) in [
            ("last_name", row("Mario", &big, "m.rossi@libero.it")),
            ("email", row("Mario", "Rossi", &format!("{big}@libero.it"))),
        ] {
            let rows = read(&format!("{HEADER}\n{csv}"));
            let errors = rows[0].result.as_ref().unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!((errors[0].line, errors[0].column.as_str()), (2, column));
            assert!(errors[0].reason.contains("longer than"), "{errors:?}");
        }
    }

    #[test]
    fn hostile_names_are_refused_or_kept_as_written() {
        let refused = [
            ("Anna\r\nBcc: x@example.org", "line break"),
            ("Anna\u{2028}Maria", "line break"),
            ("Anna\u{85}Maria", "line break"),
            ("<script>alert(1)</script>", "< or >"),
            ("Anna\u{202E}airaM", "invisible"),
            ("An\u{200B}na", "invisible"),
            ("Anna\u{E0041}", "invisible"),
            ("An\u{AD}na", "invisible"),
            ("Anna\u{7}", "invisible"),
        ];
        for (name, reason) in refused {
            let csv = format!(
                "{HEADER}\n{}",
                row(&format!("\"{name}\""), "Rossi", "a.rossi@libero.it")
            );
            let errors = read(&csv)[0].result.clone().unwrap_err();
            assert_eq!(errors.len(), 1, "{name:?}: {errors:?}");
            assert_eq!(errors[0].column, "first_name");
            assert!(errors[0].reason.contains(reason), "{name:?}: {errors:?}");
            assert!(
                !errors[0].to_string().contains(name),
                "the value is not echoed"
            );
        }
        let kept = [
            ("D'Angelo", "D'Angelo"),
            ("\"\"Mimmo\"\" Rossi", "\"Mimmo\" Rossi"),
            ("Anna & Maria", "Anna & Maria"),
            ("Anna\u{A0}Maria", "Anna Maria"),
            ("Nicolò", "Nicolò"),
        ];
        for (field, stored) in kept {
            let csv = format!(
                "{HEADER}\n{}",
                row(&format!("\"{field}\""), "Rossi", "a.rossi@libero.it")
            );
            let user = read(&csv)[0].result.clone().unwrap();
            assert_eq!(user.first_name, stored);
        }
    }

    #[test]
    fn addresses_the_relay_cannot_take_without_smtputf8_are_refused() {
        assert!(email_problem("nicolò@libero.it")
            .unwrap()
            .contains("non-ASCII address"));
        assert!(email_problem("mario@città.it").unwrap().contains("xn--"));
        assert!(email_problem("mario\u{202E}@libero.it")
            .unwrap()
            .contains("non-ASCII"));
        assert_eq!(email_problem("mario@xn--citt-5qa.it"), None);
        assert!(email_problem("<script>@libero.it").is_some());
        // Valid for RFC 5321, but lettre could not build the email.
        assert!(email_problem("\"<x>\"@libero.it")
            .unwrap()
            .contains("plain"));
        assert!(email_problem("\"a\"@libero.it").unwrap().contains("plain"));
        assert!(email_problem("a@[127.0.0.1]")
            .unwrap()
            .contains("host name"));
        assert_eq!(email_problem("g.d'angelo@libero.it"), None);
        assert_eq!(email_problem("a+b_c-d@x-y.libero.it"), None);
        assert!(email_problem("mario@libero.it\r\nBcc: x@y.it").is_some());
    }
}
