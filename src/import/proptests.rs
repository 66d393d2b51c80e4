//! Properties of the snapshot reader on hostile input, bounded so they run with the unit tests:
//! no input makes it panic, every rejection names its line (and a column), no reason echoes a
//! value, what it accepts is clean, and a file in Windows-1252 read with `--encoding` gives the
//! same rows as the same file in UTF-8.

use proptest::prelude::*;

use super::snapshot::{
    email_problem, fiscal_code_problem, Encoding, Row, SnapshotError, SnapshotReader, COLUMNS,
};

/// Cases per property: enough to cross every branch many times, few enough to take seconds.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // A failure is printed with its minimal input; no file is left in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const HEADER: &str = "user_id,fiscal_code,first_name,last_name,email,institutional_email,registration,enabled,pending_email,code_regeneration,province,updated_at";

/// Everything the reader yields: rows up to the end, then the problem that stopped it, if any.
fn read_all(bytes: &[u8], encoding: Encoding) -> (Vec<Row>, Option<SnapshotError>) {
    let mut reader = match SnapshotReader::with_encoding(bytes, encoding) {
        Ok(reader) => reader,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut rows = Vec::new();
    while let Some(next) = reader.next_row() {
        match next {
            Ok(row) => rows.push(row),
            Err(e) => {
                assert!(reader.next_row().is_none(), "rows after a fatal {e}");
                return (rows, Some(e));
            }
        }
    }
    (rows, None)
}

/// The line a fatal problem names, if it names one.
fn fatal_line(e: &SnapshotError) -> Option<u64> {
    match e {
        SnapshotError::Header(_) | SnapshotError::Io(_) => None,
        SnapshotError::Csv { line, .. }
        | SnapshotError::LooksLikeWindows1252 { line }
        | SnapshotError::NotUtf8 { line }
        | SnapshotError::RowTooLong { line, .. } => Some(*line),
    }
}

/// A stretch of a hostile file: bytes that matter to a CSV parser, to UTF-8 and to
/// Windows-1252, values the checks accept, or any bytes at all. Pieces rather than single bytes:
/// drawing each byte from a choice is slow, and what matters is how they meet.
fn csv_piece() -> impl Strategy<Value = Vec<u8>> {
    let tokens: Vec<&'static [u8]> = vec![
        b",",
        b";",
        b"\"",
        b"\n",
        b"\r\n",
        b"\r",
        b" ",
        b"\t",
        b"\xC3\xA0",
        b"\xE0",
        b"\x92",
        b"\xEF\xBB\xBF",
        b"\x00",
        b"\x81",
        b"\xC3",
        b"U1",
        b"RSSMRA85T10A562S",
        b"Mario",
        b"a.rossi@libero.it",
        b"completed",
        b"true",
        b"none",
        b"BO",
    ];
    prop_oneof![
        3 => prop::sample::select(tokens).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 1..24),
    ]
}

/// A field value a hostile or careless export could hold.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[A-Za-z' .-]{1,12}",
        1 => prop::sample::select(vec![
            "\r\n", "\n", "\r", "\"", "'", ",", ";", "<script>alert(1)</script>", "<b>",
            "&amp;", "\u{202E}", "\u{200B}", "\u{FEFF}", "\u{2028}", "\u{A0}", "\u{85}", "\t",
            "Nicolò", "Fabbrì", "D’Angelo", "@", "@libero.it", "xn--citt-5qa.it", "città.it",
            "=?utf-8?q?x?=", "Bcc: x@example.org", "\u{E0041}", "\u{0}",
        ])
        .prop_map(str::to_string),
        1 => any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// A valid value for each column (so rows are often accepted and the checks after the first
/// bad field run too), or a hostile one.
fn field(column: usize) -> BoxedStrategy<String> {
    let valid: BoxedStrategy<String> = match COLUMNS[column] {
        "user_id" => "U[0-9]{1,6}".boxed(),
        "fiscal_code" => Just("RSSMRA85T10A562S".to_string()).boxed(),
        "first_name" | "last_name" => "[A-Z][a-zàèìòù']{1,10}( [A-Z][a-z]{1,8})?".boxed(),
        "email" => "[a-z]{1,8}(\\.[a-z]{1,8})?@(libero|istruzione)\\.it".boxed(),
        "institutional_email" | "pending_email" => {
            prop_oneof![Just(String::new()), "[a-z]{1,8}@istruzione\\.it"].boxed()
        }
        "registration" => Just("completed".to_string()).boxed(),
        "enabled" => Just("true".to_string()).boxed(),
        "code_regeneration" => prop::sample::select(vec!["none", "started"])
            .prop_map(str::to_string)
            .boxed(),
        "province" => prop_oneof![Just(String::new()), "[A-Z]{2}"].boxed(),
        _ => prop_oneof![
            Just(String::new()),
            Just("2026-11-20T14:03:00+01:00".to_string())
        ]
        .boxed(),
    };
    prop_oneof![4 => valid, 1 => hostile_text()].boxed()
}

/// A row of twelve fields, or now and then one with a field too many or too few.
fn row() -> impl Strategy<Value = Vec<String>> {
    let fields: Vec<BoxedStrategy<String>> = (0..COLUMNS.len()).map(field).collect();
    (fields, 0..20u8).prop_map(|(mut fields, shape)| {
        match shape {
            0 => fields.push("extra".to_string()),
            1 => {
                fields.pop();
            }
            _ => {}
        }
        fields
    })
}

/// `rows` under the header, quoted as a CSV writer quotes them, and the line each row starts on.
fn csv_file(rows: &[Vec<String>]) -> (String, Vec<u64>) {
    let mut out = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    out.write_record(HEADER.split(',')).unwrap();
    let mut lines = Vec::new();
    for row in rows {
        out.flush().unwrap();
        lines.push(1 + line_ends(out.get_ref()));
        out.write_record(row).unwrap();
    }
    let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
    (text, lines)
}

/// Line ends in `bytes` as editors count them: CRLF, a lone CR, or LF.
fn line_ends(bytes: &[u8]) -> u64 {
    let crlf = bytes.windows(2).filter(|w| w == b"\r\n").count();
    let cr = bytes.iter().filter(|b| **b == b'\r').count();
    let lf = bytes.iter().filter(|b| **b == b'\n').count();
    (cr + lf - crlf) as u64
}

/// `text` with what Windows-1252 cannot hold replaced by `?`.
fn windows_1252_repertoire(text: &str) -> String {
    text.chars()
        .map(|c| {
            let mut buf = [0; 4];
            let (_, _, unmappable) = encoding_rs::WINDOWS_1252.encode(c.encode_utf8(&mut buf));
            if unmappable {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// What an accepted name may not hold: the reasons the checks give, seen from the outside.
fn clean_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 100
        && name == name.trim()
        && !name.contains("  ")
        && !name.contains(['<', '>'])
        && !name.chars().any(|c| {
            c.is_control()
                || (c.is_whitespace() && c != ' ')
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{AD}' | '\u{E0000}'..='\u{E0FFF}')
        })
}

fn clean_address(address: &str) -> bool {
    address.is_ascii()
        && email_problem(address).is_none()
        && address.parse::<lettre::Address>().is_ok()
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, after a good header or not, in either encoding: no panic, and every problem
    /// is tied to a line.
    #[test]
    fn any_bytes_are_read_or_refused_with_a_line(
        header in prop::sample::select(vec!["", "\u{feff}", "user_id;email\n"]),
        with_header in any::<bool>(),
        body in prop::collection::vec(csv_piece(), 0..400),
        windows_1252 in any::<bool>(),
    ) {
        let mut bytes = header.as_bytes().to_vec();
        if with_header {
            bytes.extend_from_slice(HEADER.as_bytes());
            bytes.push(b'\n');
        }
        bytes.extend(body.concat());
        let encoding = if windows_1252 { Encoding::windows_1252() } else { Encoding::default() };
        let (rows, fatal) = read_all(&bytes, encoding);
        let mut previous = 1;
        for row in &rows {
            prop_assert!(row.line > previous, "line {} after {previous}", row.line);
            previous = row.line;
            if let Err(errors) = &row.result {
                prop_assert!(!errors.is_empty());
                for e in errors {
                    prop_assert_eq!(e.line, row.line);
                    prop_assert!(e.column == "(row)" || COLUMNS.contains(&e.column.as_str()), "{}", e);
                    prop_assert!(!e.reason.is_empty());
                }
            }
        }
        if let Some(e) = fatal {
            if let Some(line) = fatal_line(&e) {
                prop_assert!(line >= 1 && line >= previous, "{e} after line {previous}");
            }
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Rows with hostile values, written as a CSV writer would: each row comes back at its
    /// line, accepted clean or refused with reasons that name its line and a column and do not
    /// repeat the values.
    #[test]
    fn hostile_rows_are_accepted_clean_or_refused_by_line_and_column(
        rows in prop::collection::vec(row(), 1..12),
    ) {
        let (text, lines) = csv_file(&rows);
        let (read, fatal) = read_all(text.as_bytes(), Encoding::default());
        prop_assert!(fatal.is_none(), "{:?}", fatal);
        prop_assert_eq!(read.len(), rows.len());
        for ((row, written), line) in read.iter().zip(&rows).zip(lines) {
            prop_assert_eq!(row.line, line);
            match &row.result {
                Ok(user) => {
                    prop_assert_eq!(written.len(), COLUMNS.len());
                    prop_assert!(clean_name(&user.contact.first_name), "{:?}", user.contact.first_name);
                    prop_assert!(clean_name(&user.contact.last_name), "{:?}", user.contact.last_name);
                    prop_assert!(clean_address(&user.contact.email), "{:?}", user.contact.email);
                    for address in [&user.contact.institutional_email, &user.contact.pending_email].into_iter().flatten() {
                        prop_assert!(clean_address(address), "{:?}", address);
                    }
                    prop_assert!(fiscal_code_problem(&user.fiscal_code).is_none());
                    prop_assert!(user.contact.user_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    for e in errors {
                        prop_assert_eq!(e.line, row.line);
                        prop_assert!(e.column == "(row)" || COLUMNS.contains(&e.column.as_str()), "{}", e);
                        let shown = e.to_string();
                        for value in written.iter().map(|v| v.trim()).filter(|v| v.chars().count() >= 8) {
                            prop_assert!(!shown.contains(value), "{} repeats {:?}", shown, value);
                        }
                    }
                }
            }
        }
    }

    /// The same rows saved in Windows-1252 and read with that encoding give what the UTF-8 file
    /// gives: the transcoding keeps every value and every line.
    #[test]
    fn windows_1252_reads_as_the_same_file_in_utf8(
        rows in prop::collection::vec(row(), 1..8),
    ) {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|row| row.iter().map(|v| windows_1252_repertoire(v)).collect())
            .collect();
        let (text, _) = csv_file(&rows);
        let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
        prop_assert!(!unmappable);
        let (utf8, fatal) = read_all(text.as_bytes(), Encoding::default());
        prop_assert!(fatal.is_none());
        let (transcoded, fatal) = read_all(&bytes, Encoding::windows_1252());
        prop_assert!(fatal.is_none(), "{:?}", fatal);
        prop_assert_eq!(utf8.len(), transcoded.len());
        for (a, b) in utf8.iter().zip(&transcoded) {
            prop_assert_eq!(a.line, b.line);
            prop_assert_eq!(&a.raw, &b.raw);
            prop_assert_eq!(&a.result, &b.result);
        }
    }
}
