//! Hostile user data on its way out, as properties (proptest, bounded so they run with the rest
//! of the suite in seconds): whatever the names, addresses and texts, the email's header block
//! holds the expected headers and only them, each once, the Subject stays one line, and user data
//! in the HTML is inert (escaped by the templates, not markup).

use std::collections::BTreeMap;

use avvisi::config::Settings;
use avvisi::editor;
use avvisi::render::email::{self, Envelope};
use avvisi::render::templates::{self, Rendered, TemplateSet, UserView};
use avvisi::store::UserContact;
use proptest::prelude::*;

use crate::helpers::{at, decode_header, repo_path, test_settings};

/// Cases per property: a built email is cheap; a template case renders every message twice.
const BUILD_CASES: u32 = 256;
const TEMPLATE_CASES: u32 = 64;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failure is printed with its minimal input; no file is left in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The headers every email has (lower case), each exactly once: the fixed ones of
/// `render::email`, lettre's MIME pair, and the Reply-To these settings configure.
const EXPECTED_HEADERS: [&str; 11] = [
    "from",
    "reply-to",
    "to",
    "subject",
    "date",
    "message-id",
    "auto-submitted",
    "content-language",
    "x-avvisi-campaign",
    "mime-version",
    "content-type",
];

fn settings() -> Settings {
    test_settings(
        "sqlite://unused.db",
        &std::env::temp_dir(),
        &[(
            "AVVISI__MAIL__REPLY_TO",
            "Assistenza <assistenza@istruzione.it>",
        )],
    )
}

/// Text as hostile user data can make it: header syntax and line breaks, markup and quotes,
/// encoded-word look-alikes, text-direction and zero-width characters, accents, any character.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[A-Za-z' .-]{1,12}",
        2 => prop::sample::select(vec![
            "\r\n", "\n", "\r", "\r\n\r\n", "\r\nBcc: intruso@example.org", "\nX-Evil: 1", ": ",
            "\"", "'", "<", ">", "&", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
            "\"><b>", "' onmouseover='x", "</p>", "<!--", "]]>", "\u{202E}", "\u{200B}",
            "\u{FEFF}", "\u{2028}", "\u{85}", "\u{0}", "\t", "Nicolò", "D’Angelo", "=?utf-8?b?",
            "?=", "--", "boundary", "@", "a@b.it", ";", ",", "\\",
        ])
        .prop_map(str::to_string),
        1 => any::<char>().prop_map(|c| c.to_string()),
        1 => "[a-z]{60,120}",
    ];
    prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

/// Recipient addresses, and whether the import would take them: plain ones, and quoted local
/// parts with markup or header syntax in them, an address literal, hostile text.
fn address() -> impl Strategy<Value = (String, bool)> {
    let plain = prop_oneof![
        "[a-z]{1,10}(\\.[a-z]{1,10})?@(libero|istruzione)\\.it",
        Just("g.d'angelo@libero.it".to_string()),
        Just("a!#$%&'*+/=?^_`{|}~@xn--citt-5qa.it".to_string()),
    ];
    let odd = prop_oneof![
        Just("\"<script>\"@libero.it".to_string()),
        Just("\"a\\\"b\r\nBcc: x@y.it\"@libero.it".to_string()),
        Just("mario@[127.0.0.1]".to_string()),
        hostile_text().prop_map(|t| format!("{t}@libero.it")),
        hostile_text(),
    ];
    prop_oneof![
        2 => plain.prop_map(|a| (a, true)),
        3 => odd.prop_map(|a| (a, false)),
    ]
}

/// The header block of `eml` as (lower-case name, unfolded value), checked line by line: every
/// line ends in CRLF with no other CR or LF, fits RFC 5322's 998 characters, and either starts a
/// header with a well-formed name or continues the one before with white space.
fn header_block(eml: &str) -> Result<Vec<(String, String)>, String> {
    let head = eml
        .split_once("\r\n\r\n")
        .ok_or("no blank line after the headers")?
        .0;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.contains(['\r', '\n']) {
            return Err(format!("a bare CR or LF in {line:?}"));
        }
        if line.len() > 998 {
            return Err(format!("a header line of {} characters", line.len()));
        }
        if line.starts_with([' ', '\t']) {
            let last = headers
                .last_mut()
                .ok_or("the first line is a continuation")?;
            last.1.push_str(line);
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("neither a header nor a continuation: {line:?}"))?;
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b)) {
            return Err(format!("a malformed header name {name:?}"));
        }
        headers.push((name.to_ascii_lowercase(), value.to_string()));
    }
    Ok(headers)
}

/// Checks the headers of a built email: the expected ones, each once, and a one-line Subject
/// that says `subject` (folded as the builder folds it).
fn check_headers(eml: &str, subject: &str) -> Result<(), TestCaseError> {
    let headers = header_block(eml).map_err(TestCaseError::fail)?;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, _) in &headers {
        *count.entry(name.as_str()).or_default() += 1;
    }
    let expected: BTreeMap<&str, usize> = EXPECTED_HEADERS.iter().map(|n| (*n, 1)).collect();
    prop_assert_eq!(count, expected);
    let value = &headers.iter().find(|(n, _)| n == "subject").unwrap().1;
    // The test's decoder reads encoded words only; a subject that merely looks like one is left
    // to the header checks above.
    if !subject.contains("=?") && !subject.contains("?=") {
        let decoded = decode_header(value.trim());
        prop_assert!(!decoded.contains(['\r', '\n']), "{:?}", decoded);
        let folded: Vec<&str> = subject
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
            .collect();
        let shown: Vec<&str> = decoded.split_whitespace().collect();
        prop_assert_eq!(shown, folded);
    }
    Ok(())
}

/// The HTML is inert: no markup but the template's own (the same tags and quotes as with
/// harmless data of the same shape), and none of the hostile tags at all.
fn check_inert(html: &str, harmless: &str) -> Result<(), TestCaseError> {
    let lower = html.to_ascii_lowercase();
    for tag in ["<script", "<img", "<b>", "<!--"] {
        let expected = harmless.to_ascii_lowercase().matches(tag).count();
        prop_assert_eq!(lower.matches(tag).count(), expected, "{} in {}", tag, html);
    }
    for c in ['<', '>', '"', '\''] {
        prop_assert_eq!(
            html.matches(c).count(),
            harmless.matches(c).count(),
            "{:?} from user data in {}",
            c,
            html
        );
    }
    Ok(())
}

/// `view` with every character of its text replaced by `x`: the same shape (which fields are
/// empty, how long each is), so the templates take the same branches, with no markup in it.
fn harmless(view: &UserView) -> UserView {
    let x = |s: &str| s.chars().map(|_| 'x').collect::<String>();
    UserView {
        first_name: x(&view.first_name),
        last_name: x(&view.last_name),
        full_name: x(&view.full_name),
        email: x(&view.email),
        institutional_email: x(&view.institutional_email),
        has_institutional_email: view.has_institutional_email,
        pending_email: x(&view.pending_email),
        province: x(&view.province),
        sent_to_institutional: view.sent_to_institutional,
    }
}

proptest! {
    #![proptest_config(config(BUILD_CASES))]

    /// `email::build` with hostile names, addresses, subject, text and HTML: refused for the
    /// address, or an email whose header block is exactly the expected one.
    #[test]
    fn no_user_data_adds_a_header_or_breaks_the_subject(
        to_name in hostile_text(),
        (to_address, plain) in address(),
        subject in hostile_text(),
        text in hostile_text(),
        html in hostile_text(),
    ) {
        let settings = settings();
        let content = Rendered { subject: subject.clone(), text, html };
        let env = Envelope {
            to_address: &to_address,
            to_name: &to_name,
            message_id: "<a1.b2@istruzione.it>",
            campaign: "registration_incomplete-2026-11-30",
            step: avvisi::config::Step::DaysBefore(3),
            date: at("2026-11-23T10:00:00+01:00").into(),
        };
        match email::build(&settings.mail, &env, &content) {
            Err(email::MessageError::Recipient(_)) => prop_assert!(!plain, "{:?} refused", to_address),
            Err(e) => prop_assert!(false, "{}", e),
            Ok(message) => {
                let eml = String::from_utf8(message.formatted()).unwrap();
                check_headers(&eml, &subject)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(config(TEMPLATE_CASES))]

    /// Every message rendered for a hostile user ([`UserView`], the templates' only way to user
    /// data): user data in the HTML stays text, the subject one line, and the email built from
    /// it has the expected headers.
    #[test]
    fn user_data_stays_inert_through_the_templates(
        first_name in hostile_text(),
        last_name in hostile_text(),
        email_address in hostile_text(),
        institutional in proptest::option::of(hostile_text()),
        pending in proptest::option::of(hostile_text()),
        province in proptest::option::of(hostile_text()),
        situation in 0..editor::SITUATIONS.len(),
    ) {
        let (settings, set, reopening) = templates_fixture();
        let user = UserContact {
            user_id: "hostile".to_string(),
            email: email_address.clone(),
            first_name,
            last_name,
            institutional_email: institutional,
            pending_email: pending,
            province,
        };
        let view = UserView::new(&user, &email_address);
        let mut sample = editor::samples().swap_remove(situation);
        for message in set.messages() {
            let reopened = reopening.contains(&message);
            sample.user = view.clone();
            let ctx = editor::context(settings, &message, &sample, reopened);
            let r = set.render(&message, &ctx).unwrap();
            sample.user = harmless(&view);
            let plain = set
                .render(&message, &editor::context(settings, &message, &sample, reopened))
                .unwrap();
            prop_assert!(!r.subject.contains(['\r', '\n']), "{}: {:?}", message, r.subject);
            check_inert(&r.html, &plain.html)?;
            let env = Envelope {
                to_address: "mario.rossi@libero.it",
                to_name: &view.full_name,
                message_id: "<a1.b2@istruzione.it>",
                campaign: &ctx.campaign,
                step: sample.situation.step,
                date: at("2026-11-23T10:00:00+01:00").into(),
            };
            let eml = email::build(&settings.mail, &env, &r).unwrap();
            check_headers(&String::from_utf8(eml.formatted()).unwrap(), &r.subject)?;
        }
    }
}

/// The shipped templates, loaded once for all cases.
fn templates_fixture() -> &'static (Settings, TemplateSet, std::collections::BTreeSet<String>) {
    static FIXTURE: std::sync::OnceLock<(
        Settings,
        TemplateSet,
        std::collections::BTreeSet<String>,
    )> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = repo_path("templates");
        let set = TemplateSet::load(&dir).unwrap();
        let reopening = editor::reopening_messages(&templates::read_sources(&dir).unwrap());
        (settings(), set, reopening)
    })
}
