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

use encoding_rs_io::{DecodeReaderBytes, DecodeReaderBytesBuilder};

pub(crate) use super::fields::email_problem;
pub use super::fields::fiscal_code_check_char;
#[cfg(test)]
pub(crate) use super::fields::fiscal_code_problem;
use super::fields::Checker;
pub use super::record::{is_institutional, RowError, UserRecord};
use crate::store::UserContact;

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

/// The longest row read, in bytes. No real row comes near it (twelve short fields), and a row
/// cannot be parsed without holding it whole: a quote left open would otherwise make the rest of
/// a large file one field, read into memory. A 10 MB field still fits, so it is refused with its
/// line and column rather than as a broken file.
pub const MAX_ROW_BYTES: u64 = 16 << 20;

/// The buffer in front of the CSV parser (it also holds the first line, for the delimiter).
const INPUT_BUFFER: usize = 1 << 16;
/// The CSV parser's own buffer.
const CSV_BUFFER: usize = 1 << 13;

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
    index: [Option<usize>; COLUMNS.len()],
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
        let mut index = [None; COLUMNS.len()];
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
                contact: UserContact {
                    user_id: user_id?,
                    email: email??,
                    first_name: first_name?,
                    last_name: last_name?,
                    institutional_email: institutional_email?,
                    pending_email: pending_email?,
                    province: province?,
                },
                fiscal_code: fiscal_code?,
                registration_completed: registration? == "completed",
                enabled: enabled?,
                code_regeneration_started: code_regeneration? == "started",
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

#[cfg(test)]
mod tests;
