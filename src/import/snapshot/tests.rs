//! The snapshot reader's unit tests: encodings, line ends, limits, hostile values.

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
    assert_eq!(user.contact.last_name, "D'Angelo");
    assert_eq!(user.contact.first_name, "Nicolò");
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
        .map(|u| (u.contact.first_name.clone(), u.contact.last_name.clone()))
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
            (
                user.contact.first_name.as_str(),
                user.contact.last_name.as_str()
            ),
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
        assert_eq!(user.contact.first_name, stored);
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
