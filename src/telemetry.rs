//! Logging setup: structured `tracing` events on stderr, level from `-v`/`-q` or `RUST_LOG`.
//! Events carry ids (outbox row, campaign, user_id), never names, addresses or secrets.
//!
//! Text from outside that may quote a person (a relay's reply, an error) goes through [`scrub`]
//! before it reaches a log line; `log.personal_data = true` turns that off for debugging.
//! Control characters from outside (a relay's reply, a CSV cell) reach neither a terminal nor a
//! text log: [`printable`] writes them as escapes, for every field of the text log and for the
//! commands' tables.
//! Colours only on a terminal: a log file or a journal gets plain text. `log.format = "json"`
//! gives one JSON object per line instead, with the spans (planner tick, delivery batch) the
//! event happened in. [`metrics`] holds what the daemon measures in memory for `/metrics`.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

pub mod metrics;
pub mod progress;

/// `log.personal_data`: set once at start by [`init`].
static PERSONAL_DATA: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber. `verbosity` is -2 (errors) to 2 (trace); 0 is info.
pub fn init(verbosity: i8, log: &LogSettings) {
    PERSONAL_DATA.store(log.personal_data, Ordering::Relaxed);
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // sqlx warns about a database URL's parameter it does not know with the parameter's value:
    // `PASSWORD=...` (any case but `password`) would print the password.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},sqlx=warn,sqlx_postgres::options=error,lettre=warn,tokio_cron_scheduler=warn"
        ))
    });
    let colour = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match log.format {
        LogFormat::Text => fmt
            .with_ansi(colour)
            .fmt_fields(PrintableFields::default())
            .try_init(),
        // The event's fields at the top level, next to `timestamp`, `level` and `message`, so a
        // collector indexes `outbox_id` or `campaign` without digging; the spans as a list.
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// The text log's fields (message included) as [`DefaultFields`] writes them, through
/// [`printable`]: a relay's reply with ESC or CR in it can neither drive the operator's terminal
/// nor start a forged log line. (JSON escapes control characters itself.)
#[derive(Default)]
struct PrintableFields(DefaultFields);

impl<'writer> FormatFields<'writer> for PrintableFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        // Without colours: the escapes of italic field names would be escaped in turn.
        let mut text = String::new();
        self.0.format_fields(Writer::new(&mut text), fields)?;
        writer.write_str(&printable(&text))
    }
}

/// `text` safe for a terminal or a line of a text log: C0 control characters (but tab), DEL,
/// C1, and the bidirectional overrides and isolates (which reorder what a reader sees) written
/// as Rust escapes: `\x1b`, `\r`, `\n`, `\u{202e}`. Everything else, backslashes too, as is.
pub fn printable(text: &str) -> Cow<'_, str> {
    fn hostile(c: char) -> bool {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
    }
    if !text.contains(hostile) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if hostile(c) && (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if hostile(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`printable`] line by line, for a message of several lines of its own (a list of problems):
/// its line breaks stay, a CR or another control character within a line does not.
pub fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Colours only for a person at a terminal, and not when `NO_COLOR` is set to anything
/// (<https://no-color.org>): escape codes make a log file or a journal hard to read and search.
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `text` as a log line may carry it: email addresses and fiscal codes masked, unless
/// `log.personal_data` is set. For text from outside (a relay's reply, an error's message) that
/// may quote a recipient.
pub fn scrub(text: &str) -> Cow<'_, str> {
    if PERSONAL_DATA.load(Ordering::Relaxed) {
        Cow::Borrowed(text)
    } else {
        mask_personal_data(text)
    }
}

/// Email addresses become `***@***`, fiscal codes `***`.
fn mask_personal_data(text: &str) -> Cow<'_, str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = String::new();
    // Byte offset of the text not yet copied to `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c == '@' {
            let local = chars[..i]
                .iter()
                .rev()
                .take_while(|(_, c)| is_local_char(*c))
                .count();
            let domain = chars[i + 1..]
                .iter()
                .take_while(|(_, c)| is_domain_char(*c))
                .count();
            let domain_text: String = chars[i + 1..i + 1 + domain].iter().map(|p| p.1).collect();
            let domain_text = domain_text.trim_end_matches(['.', '-']);
            if local > 0 && domain_text.contains('.') && chars[i - local].0 >= copied {
                let start = chars[i - local].0;
                let end = at + 1 + domain_text.len();
                out.push_str(&text[copied..start]);
                out.push_str("***@***");
                copied = end;
                i = chars.partition_point(|(offset, _)| *offset < end);
                continue;
            }
        }
        if c.is_ascii_alphanumeric() && (i == 0 || !chars[i - 1].1.is_alphanumeric()) {
            let run = chars[i..]
                .iter()
                .take_while(|(_, c)| c.is_ascii_alphanumeric())
                .count();
            let word = &text[at..at + run];
            let followed_by_word = chars.get(i + run).is_some_and(|(_, c)| c.is_alphanumeric());
            if run == 16 && !followed_by_word && looks_like_fiscal_code(word) {
                out.push_str(&text[copied..at]);
                out.push_str("***");
                copied = at + run;
            }
            i += run;
            continue;
        }
        i += 1;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || "._%+-'!#$&*/=?^`{|}~".contains(c)
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '.' || c == '-'
}

/// The shape of an Italian fiscal code (RSSMRA85T10A562S), letters for digits allowed
/// (omocodia), any case; the check character is not verified: a near miss is masked too.
fn looks_like_fiscal_code(word: &str) -> bool {
    let b = word.to_ascii_uppercase().into_bytes();
    let digitish = |c: &u8| c.is_ascii_digit() || b"LMNPQRSTUV".contains(c);
    b.len() == 16
        && b[..6].iter().all(u8::is_ascii_alphabetic)
        && b[6..8].iter().all(digitish)
        && b[8].is_ascii_alphabetic()
        && b[9..11].iter().all(digitish)
        && b[11].is_ascii_alphabetic()
        && b[12..15].iter().all(digitish)
        && b[15].is_ascii_alphabetic()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_fiscal_codes_are_masked() {
        assert_eq!(
            mask_personal_data(
                "permanent error (550): 5.1.1 <nicolo.manco@libero.it>: Recipient address rejected"
            ),
            "permanent error (550): 5.1.1 <***@***>: Recipient address rejected"
        );
        assert_eq!(
            mask_personal_data("user MNCNCL91C14F839U (mncncl91c14f839u) at d'angelo@pec.it."),
            "user *** (***) at ***@***."
        );
        // Nothing personal: the same text, not a copy.
        let plain = "no reply from the relay within 30s; digest 0123456789abcdef0123";
        assert!(matches!(mask_personal_data(plain), Cow::Borrowed(_)));
        // Ids and words that are not fiscal codes stay.
        assert_eq!(
            mask_personal_data("U0002 2026-11-30 @ 09:00 a@b"),
            "U0002 2026-11-30 @ 09:00 a@b"
        );
        assert_eq!(mask_personal_data("ëà@x.it è"), "***@*** è");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            printable(
                "550 \x1b]0;owned\x07\x1b[2J\r\nINFO forged\u{202e}txt.exe\u{2066}\u{85}\x7f"
            ),
            "550 \\x1b]0;owned\\x07\\x1b[2J\\r\\nINFO forged\\u{202e}txt.exe\\u{2066}\\u{85}\\x7f"
        );
        // Text, tabs, accents and backslashes as they are, not copied.
        let plain = "5.1.1\tNicolò C:\\temp ‘quoted’";
        assert!(matches!(printable(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
