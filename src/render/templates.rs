//! Templates: the Tera files under `templates.dir`, loaded as one versioned set.
//!
//! A message NAME is the folder `NAME/` with `subject.txt`, `body.txt` and `body.html`; shared
//! layouts live in `layout/`. The set's digest (SHA-256 of every file's path and bytes) is the
//! version recorded on each outbox row. HTML files are autoescaped; text files are not, and the
//! subject is always folded to one line, so user data can neither inject markup nor a header.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, FixedOffset, Timelike};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tera::{Tera, Value};

use crate::store::UserContact;

/// The three parts of every message.
pub(crate) const PARTS: [&str; 3] = ["subject.txt", "body.txt", "body.html"];

/// The optional parts of a message that the daily digest includes as its section.
pub(crate) const SECTION_PARTS: [&str; 2] = ["section.txt", "section.html"];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("impossibile leggere la cartella dei modelli {}: {source}", dir.display())]
    Read {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Syntax {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("il messaggio `{name}` non ha il file {part} in {}", dir.display())]
    MissingPart {
        name: String,
        part: &'static str,
        dir: PathBuf,
    },
    #[error("{file}: {message}")]
    Render { file: String, message: String },
}

/// A loaded, compiled set of templates and its version.
pub struct TemplateSet {
    tera: Tera,
    dir: PathBuf,
    digest: String,
    /// Every file's text, as compiled: what a publication stores and the check reads.
    sources: BTreeMap<String, String>,
}

/// A rendered message, ready to become an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, whitespace folded.
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The recipient as templates see it (strings, never null; empty when absent).
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub first_name: String,
    pub last_name: String,
    pub full_name: String,
    pub email: String,
    pub institutional_email: String,
    pub has_institutional_email: bool,
    pub pending_email: String,
    pub province: String,
    /// The message goes to the institutional address because the address on record is
    /// suppressed (it bounced); the layout says so.
    pub sent_to_institutional: bool,
}

impl UserView {
    /// Builds the view of `user` for a message sent to `email` (the address on record, or the
    /// fallback the claim chose); line breaks and other control characters become spaces.
    pub fn new(user: &UserContact, email: &str) -> UserView {
        let first_name = one_line(&user.first_name);
        let last_name = one_line(&user.last_name);
        UserView {
            full_name: format!("{first_name} {last_name}").trim().to_string(),
            first_name,
            last_name,
            email: one_line(email),
            institutional_email: text(&user.institutional_email),
            has_institutional_email: user
                .institutional_email
                .as_deref()
                .is_some_and(|s| !s.trim().is_empty()),
            pending_email: text(&user.pending_email),
            province: text(&user.province),
            sent_to_institutional: false,
        }
    }
}

fn text(field: &Option<String>) -> String {
    field.as_deref().map(one_line).unwrap_or_default()
}

/// Everything a template may refer to. Documented for editors in `templates/README.md`.
#[derive(Debug, Clone, Serialize)]
pub struct MessageContext {
    pub user: UserView,
    /// RFC 3339 in the calendar's time zone; format with `data_it`, `data_estesa_it`, `ora_it`.
    pub deadline: String,
    pub maintenance_start: String,
    /// When the service reopened (RFC 3339, local), or "" before operators declare it.
    pub reopened_at: String,
    /// Calendar days from the sending day to the deadline's day (0 on the last day).
    pub days_left: i64,
    pub step: String,
    pub campaign: String,
    pub portal_url: String,
    pub organisation: String,
    pub service_name: String,
    pub is_test: bool,
    /// The daily digest's sections, in order (empty for a message sent alone).
    pub sections: Vec<super::digest::Section>,
    /// How many sections are procedures to complete (the digest's subject gives the count).
    pub procedures: usize,
}

impl TemplateSet {
    /// Reads and compiles every file under `dir`. Syntax errors name the file.
    pub fn load(dir: &Path) -> Result<TemplateSet, TemplateError> {
        let (files, _) = read_tree(dir).map_err(|source| TemplateError::Read {
            dir: dir.to_path_buf(),
            source,
        })?;
        TemplateSet::from_sources(dir, &files)
    }

    /// Compiles `files` (relative name → text, as [`read_sources`] returns them) as the set of
    /// `dir` (a folder, or how a published set is named in messages); `templates check` uses it
    /// to render what is not broken when some files are, a daemon to load a published set.
    pub fn from_sources(
        dir: &Path,
        files: &BTreeMap<String, String>,
    ) -> Result<TemplateSet, TemplateError> {
        let digest = digest_of(files);
        let mut tera = Tera::default();
        tera.autoescape_on(vec![".html"]);
        register_filters(&mut tera);
        sandbox(&mut tera);
        let templates: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect();
        tera.add_raw_templates(templates).map_err(|e| {
            // The first broken file, said as `templates check` says it.
            let first = files.iter().find_map(|(name, src)| {
                let (line, message) = super::syntax::syntax_problems(name, src)
                    .into_iter()
                    .next()?;
                Some((dir.join(name).display().to_string(), line, message))
            });
            let (file, line, message) = first.unwrap_or_else(|| {
                let (line, message) = syntax_message(&e);
                (error_file(&e, dir), line, message)
            });
            TemplateError::Syntax {
                file,
                line,
                message,
            }
        })?;
        Ok(TemplateSet {
            tera,
            dir: dir.to_path_buf(),
            digest,
            sources: files.clone(),
        })
    }

    /// Every file of the set with its text, keyed by its path inside the set.
    pub fn sources(&self) -> &BTreeMap<String, String> {
        &self.sources
    }

    /// The version of this set: a short hex digest of every file.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The message names: folders holding at least one of the three parts.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tera
            .get_template_names()
            .filter_map(|n| n.split_once('/'))
            .filter(|(folder, part)| *folder != "layout" && PARTS.contains(part))
            .map(|(folder, _)| folder.to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Renders message `name` with `context`.
    pub fn render(&self, name: &str, context: &MessageContext) -> Result<Rendered, TemplateError> {
        let ctx = tera::Context::from_serialize(context).map_err(|e| TemplateError::Render {
            file: name.to_string(),
            message: error_chain(&e),
        })?;
        let part = |part: &'static str| -> Result<String, TemplateError> {
            let file = format!("{name}/{part}");
            if !self.tera.get_template_names().any(|n| n == file) {
                return Err(TemplateError::MissingPart {
                    name: name.to_string(),
                    part,
                    dir: self.dir.clone(),
                });
            }
            self.tera
                .render(&file, &ctx)
                .map_err(|e| TemplateError::Render {
                    file: self.dir.join(&file).display().to_string(),
                    message: error_chain(&e),
                })
        };
        Ok(Rendered {
            subject: one_line(&part("subject.txt")?),
            text: tidy_text(&part("body.txt")?),
            html: part("body.html")?.trim().to_string() + "\n",
        })
    }

    /// Renders one file of the set (`NAME/subject.txt`...) as it comes out of Tera, without the
    /// folding and tidying of [`TemplateSet::render`]: `templates check` looks at it raw.
    pub(crate) fn render_file(
        &self,
        file: &str,
        context: &MessageContext,
    ) -> Result<String, TemplateError> {
        let ctx = tera::Context::from_serialize(context).map_err(|e| TemplateError::Render {
            file: file.to_string(),
            message: error_chain(&e),
        })?;
        self.tera
            .render(file, &ctx)
            .map_err(|e| TemplateError::Render {
                file: self.dir.join(file).display().to_string(),
                message: error_chain(&e),
            })
    }

    /// The names of every file of the set (`layout/base.html`, `NAME/body.txt`...), sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tera.get_template_names().map(str::to_string).collect();
        names.sort();
        names
    }
}

/// The version of the set made of `files`: a short hex digest (SHA-256) of every path and text.
pub fn digest_of(files: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (name, content) in files {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(content.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every template file under `dir` with its text, exactly as [`TemplateSet::load`] reads them
/// (for `templates check`, which needs the sources to point at lines).
pub fn read_sources(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    read_tree(dir).map(|(files, _)| files)
}

/// [`read_sources`], and the files that started with a byte-order mark (removed from their
/// text): `templates check` warns about them.
pub(crate) fn read_sources_noting_bom(
    dir: &Path,
) -> std::io::Result<(BTreeMap<String, String>, Vec<String>)> {
    read_tree(dir)
}

/// Whether templates may use the filter `name`: Tera's own, `safe` and `default` (handled by
/// Tera's renderer itself), and the date filters registered here.
pub(crate) fn filter_exists(name: &str) -> bool {
    if name == "safe" || name == "default" {
        return true;
    }
    let mut tera = Tera::default();
    register_filters(&mut tera);
    tera.get_filter(name).is_ok()
}

/// A file of the templates folder refused without being read: templates reach nothing but the
/// set's own files. Carried inside the `io::Error` of [`read_sources`], so `templates check`
/// can point at the file.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "`{file}` è un collegamento simbolico: i modelli si leggono solo come file veri e propri \
         della cartella dei modelli, e un collegamento potrebbe portare dentro qualsiasi file \
         della macchina; mettere al suo posto una copia del file"
    )]
    Link { file: String },
    #[error(
        "`{file}` non è un file normale (una pipe, un socket o un dispositivo): i modelli sono \
         file di testo"
    )]
    NotAFile { file: String },
    #[error(
        "`{file}` non è salvato in UTF-8: alla riga {line}, colonna {column}, c'è il byte \
         0x{byte:02X}{}; il file è probabilmente in Windows-1252 (\"ANSI\"): riaprirlo e \
         salvarlo con la codifica UTF-8 (in Blocco note: File > Salva con nome > Codifica: UTF-8)",
        windows.map(|c| format!(", che in Windows-1252 è «{c}»")).unwrap_or_default()
    )]
    NotUtf8 {
        file: String,
        line: usize,
        column: usize,
        byte: u8,
        windows: Option<char>,
    },
}

impl Refused {
    /// The file, relative to the templates folder.
    pub fn file(&self) -> &str {
        match self {
            Refused::Link { file } | Refused::NotAFile { file } | Refused::NotUtf8 { file, .. } => {
                file
            }
        }
    }

    /// The line of the file the refusal is about, when it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Refused::NotUtf8 { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Every template file (`.txt`, `.html`) under `dir`, keyed by its path relative to `dir` with
/// `/` separators, sorted. A symbolic link (to a file or a folder) anywhere under `dir` is
/// refused, not followed: a link named `layout/x.txt` could point at `/etc/passwd`.
fn read_tree(dir: &Path) -> std::io::Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut out = BTreeMap::new();
    let mut bom = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let relative = |path: &Path| {
        path.strip_prefix(dir)
            .expect("under dir")
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    };
    let refuse = |refused: Refused| std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || name.ends_with('~') {
                continue; // editor swap and backup files
            }
            // The entry itself, not what a link points at.
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                return Err(refuse(Refused::Link {
                    file: relative(&path),
                }));
            }
            if kind.is_dir() {
                stack.push(path);
            } else if name.ends_with(".txt") || name.ends_with(".html") {
                let relative = relative(&path);
                if !kind.is_file() {
                    return Err(refuse(Refused::NotAFile { file: relative }));
                }
                let bytes = std::fs::read(&path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                })?;
                let (content, had_bom) = decode(&relative, bytes).map_err(refuse)?;
                if had_bom {
                    bom.push(relative.clone());
                }
                out.insert(relative, content);
            }
        }
    }
    bom.sort();
    Ok((out, bom))
}

/// A file's text: UTF-8, without the byte-order mark Windows Notepad puts at the start (it
/// would reach the subject as an invisible U+FEFF, and confuse Tera's parser in a layout line);
/// `true` when there was one. A file in another encoding is refused at its first bad byte.
pub(crate) fn decode(file: &str, mut bytes: Vec<u8>) -> Result<(String, bool), Refused> {
    let had_bom = bytes.starts_with(b"\xEF\xBB\xBF");
    if had_bom {
        bytes.drain(..3);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok((text, had_bom)),
        Err(e) => {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let before = std::str::from_utf8(&bytes[..at]).unwrap_or("");
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let byte = bytes[at];
            Err(Refused::NotUtf8 {
                file: file.to_string(),
                line: before.matches('\n').count() + 1,
                column: before[line_start..].chars().count() + 1,
                byte,
                // In Windows-1252 (the "ANSI" of Notepad) bytes from 0xA0 are Latin-1.
                windows: (byte >= 0xA0).then(|| char::from(byte)),
            })
        }
    }
}

/// Tera's error for a file it cannot parse, as one line in plain words with its line: what
/// `templates check`, the daemon's log and `/readyz` all say (Tera's own message is a
/// multi-line dump of its parser's expectations).
pub(crate) fn syntax_message(err: &tera::Error) -> (Option<usize>, String) {
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    let Some(detail) = chain.iter().find(|s| s.contains("-->")) else {
        let all = std::iter::once(err.to_string())
            .chain(chain)
            .collect::<Vec<_>>()
            .join(": ");
        return (None, format!("errore di sintassi: {}", one_line(&all)));
    };
    let position = detail
        .split_once("--> ")
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or("")
        .trim();
    let (line, column) = position.split_once(':').unwrap_or((position, ""));
    let expected = detail
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("= "))
        .unwrap_or("")
        .trim();
    (
        line.parse().ok(),
        format!(
            "errore di sintassi alla colonna {column}: {} (Tera: {expected})",
            explain_expected(expected)
        ),
    )
}

/// Tera's parser expectations in plain words.
fn explain_expected(expected: &str) -> &'static str {
    if expected.contains("variable end (`}}`)") {
        "la `{{ ... }}` non è chiusa correttamente"
    } else if expected.contains("tag end (`%}`)") {
        "il comando `{% ... %}` non è chiuso correttamente"
    } else if expected.contains("unexpected tag") {
        "questo comando non è ammesso qui: un comando scritto male, o un comando di chiusura \
         senza il suo comando di apertura"
    } else if expected.contains("an identifier") {
        "qui manca un nome o è scritto male (i nomi iniziano con una lettera)"
    } else if expected.contains("expected tag or some content") {
        "il file finisce prima che un comando sia chiuso"
    } else {
        "la sintassi dei modelli non ammette questo qui"
    }
}

/// The whole chain of a Tera error: the outer one only says "failed to render".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

fn error_file(e: &tera::Error, dir: &Path) -> String {
    // Tera names the template in its message ("Failed to parse 'x/body.html'").
    let text = e.to_string();
    match text.split('\'').nth(1) {
        Some(name) => dir.join(name).display().to_string(),
        None => dir.display().to_string(),
    }
}

/// Folds line breaks, tabs and runs of spaces into single spaces.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Trailing spaces removed, at most one blank line in a row, one final newline.
fn tidy_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

const MONTHS: [&str; 12] = [
    "gennaio",
    "febbraio",
    "marzo",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "agosto",
    "settembre",
    "ottobre",
    "novembre",
    "dicembre",
];
const WEEKDAYS: [&str; 7] = [
    "lunedì",
    "martedì",
    "mercoledì",
    "giovedì",
    "venerdì",
    "sabato",
    "domenica",
];

/// "30 novembre 2026".
pub(crate) fn italian_date(t: &DateTime<FixedOffset>) -> String {
    format!("{} {} {}", t.day(), MONTHS[t.month0() as usize], t.year())
}

/// "lunedì 30 novembre 2026".
pub(crate) fn italian_long_date(t: &DateTime<FixedOffset>) -> String {
    format!(
        "{} {}",
        WEEKDAYS[t.weekday().num_days_from_monday() as usize],
        italian_date(t)
    )
}

/// What `templates check` says of `get_env()`, and the error it raises if a set that was not
/// checked calls it.
pub(crate) const GET_ENV_REFUSED: &str = "`get_env()` è rifiutata: un modello non deve leggere \
    l'ambiente del programma (contiene l'indirizzo del database e la password SMTP); esistono \
    solo le variabili elencate in templates/README.md";

/// Tera registers `get_env` among its builtins: a template could print the database URL or the
/// SMTP password. Replaced by a function that fails, so even a set that skipped the check
/// renders nothing of the environment (Tera has no way to unregister a function).
fn sandbox(tera: &mut Tera) {
    tera.register_function("get_env", |_: &HashMap<String, Value>| {
        Err(tera::Error::msg(GET_ENV_REFUSED))
    });
}

fn register_filters(tera: &mut Tera) {
    fn date_filter(
        name: &'static str,
        f: fn(&DateTime<FixedOffset>) -> String,
    ) -> impl Fn(&Value, &HashMap<String, Value>) -> tera::Result<Value> + Send + Sync {
        move |value, _args| {
            let text = value.as_str().ok_or_else(|| {
                tera::Error::msg(format!(
                    "il filtro `{name}` vuole una data, ricevuto {value}"
                ))
            })?;
            let t = DateTime::parse_from_rfc3339(text).map_err(|_| {
                tera::Error::msg(format!(
                    "il filtro `{name}` vuole una data come 2026-11-30T23:59:59+01:00, \
                     ricevuto {text:?}"
                ))
            })?;
            Ok(Value::String(f(&t)))
        }
    }
    tera.register_filter("data_it", date_filter("data_it", italian_date));
    tera.register_filter(
        "data_estesa_it",
        date_filter("data_estesa_it", italian_long_date),
    );
    tera.register_filter(
        "ora_it",
        date_filter("ora_it", |t| format!("{:02}:{:02}", t.hour(), t.minute())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn italian_dates() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T00:00:00+01:00").unwrap();
        assert_eq!(italian_date(&t), "1 dicembre 2026");
        assert_eq!(italian_long_date(&t), "martedì 1 dicembre 2026");
        let t = DateTime::parse_from_rfc3339("2026-11-30T23:59:59+01:00").unwrap();
        assert_eq!(italian_long_date(&t), "lunedì 30 novembre 2026");
    }

    #[test]
    fn one_line_folds_breaks() {
        assert_eq!(
            one_line("  Mario\r\nBcc: x@y  Rossi\t"),
            "Mario Bcc: x@y Rossi"
        );
    }
}
