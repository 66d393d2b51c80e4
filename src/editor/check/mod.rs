//! `avvisi templates check`: everything a template editor can break, found before anything is
//! sent, each problem with its file, its line and a plain explanation.
//!
//! The check reads every file under the templates folder and:
//! - parses each file on its own, so that every syntax error is listed, not only the first one
//!   (unclosed `{{`, `{% if %}` without `{% endif %}`, a misspelled tag...);
//! - scans the `{{ }}` and `{% %}` expressions of every file for names that do not exist:
//!   variables outside [`MessageContext`] (and the loop/set variables of the templates), unknown
//!   filters, tests and functions, layouts that are not there. Tera silently treats an unknown
//!   name inside `{% if %}` as false, so rendering alone cannot find those;
//! - checks that every message folder has its three parts;
//! - renders every message with every [`Sample`] (every reminder step, the last day, a test
//!   message, the one-off notices before and after the reopening, hostile names) and looks at the
//!   output: a subject on one line and at most `MAX_SUBJECT_CHARS` characters, no empty part, no
//!   template syntax left in the output, no escaping artefacts or HTML tags in the text version,
//!   user data escaped in the HTML version.
//!
//! This file runs those steps in order and collects the problems; one file per concern does the
//! work:
//! - [`crate::render::scan`]: the hand-written scanner of tags, tokens and the names in them;
//! - [`crate::render::syntax`]: syntax errors in plain words (shared with the loading of a set);
//! - `drift.rs`: the text and HTML versions of a message that say different things;
//! - `names.rs`: unknown names, with the closest known one;
//! - `render_errors.rs`: Tera's rendering errors, pointed at the name they are about;
//! - `output.rs`: the checks of the rendered output;
//! - `locate.rs`: the source line a problem comes from, along layouts and includes.
//!
//! [`MessageContext`]: crate::render::templates::MessageContext
//! [`Sample`]: crate::editor::Sample

mod drift;
mod locate;
mod names;
mod output;
mod render_errors;

// The scanner and the syntax diagnosis live with the templates: loading a set explains a file it
// cannot parse with the same one-line message as the check.
use crate::render::{scan, syntax};

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Settings;
use crate::editor::samples::message_folders;
use crate::editor::{context, reopening_messages, samples};
use crate::render::templates::{self, TemplateSet};

use locate::{chain, line_of};
use names::KnownNames;
use scan::FileScan;
use syntax::syntax_problems;

/// The longest subject accepted, in characters, with the "[PROVA] " prefix of test messages
/// and the longest month name. The guide (templates/README.md) and `templates check --help`
/// give the same number (a test reads both): phones show about 40 characters of a subject and
/// desktop clients cut around 100, so what matters must come first, and the shipped subjects
/// (96 characters at most, with the prefix) fit.
pub const MAX_SUBJECT_CHARS: usize = 100;

/// The warning for a file saved with a byte-order mark.
const BOM_REMOVED: &str = "avviso: il file inizia con un BOM (il segno invisibile che Blocco \
    note aggiunge salvando in \"UTF-8 con BOM\"): viene tolto alla lettura, ma è meglio salvare il \
    file in UTF-8 senza BOM";

/// One thing wrong with the templates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The file, as a path under the templates folder.
    pub file: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong and what to do, in plain words.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// What [`check`] looked at and what it found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// The message folders found.
    pub messages: Vec<String>,
    /// Samples each message was rendered with (0 when rendering was not possible).
    pub samples: usize,
    /// Renders done (messages × samples).
    pub renders: usize,
    /// Every problem, in file and line order.
    pub problems: Vec<Problem>,
    /// What the check fixed or suspects without refusing the set (a byte-order mark removed,
    /// the text and HTML versions of a message that differ), in file and line order.
    pub warnings: Vec<Problem>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every template under `dir`, rendering with the calendar and names of `settings`.
pub fn check(dir: &Path, settings: &Settings) -> CheckReport {
    let mut c = Checker {
        dir,
        problems: Vec::new(),
        warnings: Vec::new(),
        seen: HashSet::new(),
    };
    let mut report = CheckReport::default();
    let sources = match templates::read_sources_noting_bom(dir) {
        Ok((s, bom)) => {
            for file in bom {
                c.warn(&file, Some(1), BOM_REMOVED.to_string());
            }
            s
        }
        Err(e) => {
            // A refused file (a symbolic link...) is pointed at; nothing is rendered from a
            // folder that holds one.
            match e
                .get_ref()
                .and_then(|i| i.downcast_ref::<templates::Refused>())
            {
                Some(refused) => c.push(
                    refused.file(),
                    refused.line(),
                    "refused",
                    refused.to_string(),
                ),
                None => c.push(
                    "",
                    None,
                    "read",
                    format!("impossibile leggere la cartella dei modelli: {e}"),
                ),
            }
            (report.problems, report.warnings) = c.finish();
            return report;
        }
    };
    // The byte-order marks removed while reading, with what the check of the text finds.
    let (_, bom) = c.finish();
    let mut report = check_sources(dir, &sources, settings);
    report.warnings.extend(bom);
    report.warnings.sort();
    report
}

/// Checks the set made of `sources` (path inside the set → text), as [`check`] checks a folder:
/// a publication checks the very files it stores. Problems are named under `dir` (the folder,
/// or how a published set is named).
pub fn check_sources(
    dir: &Path,
    sources: &BTreeMap<String, String>,
    settings: &Settings,
) -> CheckReport {
    let mut c = Checker {
        dir,
        problems: Vec::new(),
        warnings: Vec::new(),
        seen: HashSet::new(),
    };
    let mut report = CheckReport::default();
    let sources = sources.clone();
    let folders = message_folders(&sources);
    report.messages = folders.keys().cloned().collect();
    if folders.is_empty() {
        c.push(
            "",
            None,
            "empty",
            "nessun messaggio trovato: ogni messaggio è una cartella con subject.txt, body.txt e \
             body.html"
                .into(),
        );
    }

    // 1. Syntax, file by file, so that every broken file is listed.
    let mut broken = BTreeSet::new();
    for (name, src) in &sources {
        let found = syntax_problems(name, src);
        if !found.is_empty() {
            broken.insert(name.clone());
        }
        for (line, message) in found {
            c.push(name, line, &message.clone(), message);
        }
    }

    // 2. Every message has its three parts.
    // What the files extend or include, scanned once (not once per file of every folder).
    let used: HashSet<String> = sources
        .values()
        .flat_map(|src| {
            let scan = FileScan::new(src);
            scan.extends
                .into_iter()
                .chain(scan.includes)
                .map(|(t, _)| t)
                .collect::<Vec<_>>()
        })
        .collect();
    for (folder, files) in &folders {
        for (part, what) in [
            ("subject.txt", "l'oggetto"),
            ("body.txt", "la versione testo"),
            ("body.html", "la versione HTML"),
        ] {
            if !files.contains(part) {
                c.push(
                    &format!("{folder}/{part}"),
                    None,
                    "missing",
                    format!(
                        "file mancante: al messaggio `{folder}` manca {what}; ogni cartella di \
                         messaggio deve contenere subject.txt, body.txt e body.html"
                    ),
                );
            }
        }
        for file in files {
            let used = used.contains(&format!("{folder}/{file}"));
            let part = templates::PARTS.contains(&file.as_str())
                || templates::SECTION_PARTS.contains(&file.as_str());
            if !part && !used {
                c.push(
                    &format!("{folder}/{file}"),
                    None,
                    "stray",
                    format!(
                        "file inatteso in una cartella di messaggio: si usano solo subject.txt, \
                         body.txt, body.html e le sezioni del riepilogo section.txt e \
                         section.html, quindi `{file}` è ignorato (un nome scritto male?)"
                    ),
                );
            }
        }
    }

    // 3. Names: variables, filters, tests, functions, layouts.
    let known = KnownNames::new(settings);
    let scans: BTreeMap<&str, FileScan> = sources
        .iter()
        .filter(|(name, _)| !broken.contains(*name))
        .map(|(name, src)| (name.as_str(), FileScan::new(src)))
        .collect();
    let mut locals: HashSet<String> = HashSet::new();
    for scan in scans.values() {
        locals.extend(scan.locals.iter().cloned());
    }
    for (name, scan) in &scans {
        let src = &sources[*name];
        for found in &scan.found {
            if let Some((key, message)) = known.judge(found, &locals, &sources) {
                c.push(name, Some(line_of(src, found.offset())), &key, message);
            }
        }
        // A text body must extend a text layout, an HTML body an HTML one (escaping follows
        // the extension of the file rendered).
        for (target, offset) in &scan.extends {
            let (ours, theirs) = (extension(name), extension(target));
            if ours != theirs && !theirs.is_empty() {
                c.push(
                    name,
                    Some(line_of(src, *offset)),
                    "mixed-layout",
                    format!(
                        "`{name}` estende `{target}`: un file .{ours} deve estendere un layout \
                         .{ours} (la protezione dell'HTML dipende da questo)"
                    ),
                );
            }
        }
    }

    // The text and HTML versions of each message say the same things (a warning: wording
    // may differ on purpose, e.g. a link's words).
    for (file, line, message) in drift::drift(&sources) {
        c.warn(&file, Some(line), message);
    }

    // 4. Render every message with every sample. Files that cannot compile (syntax errors,
    // missing layouts) and the files built on them are left out, so the rest is still checked.
    let mut excluded: BTreeSet<String> = broken.clone();
    for (name, scan) in &scans {
        if scan
            .extends
            .iter()
            .chain(scan.includes.iter())
            .any(|(t, _)| !sources.contains_key(t))
        {
            excluded.insert(name.to_string());
        }
    }
    let dependents: Vec<String> = sources
        .keys()
        .filter(|name| chain(name, &sources).iter().any(|f| excluded.contains(f)))
        .cloned()
        .collect();
    excluded.extend(dependents);
    let usable: BTreeMap<String, String> = sources
        .iter()
        .filter(|(name, _)| !excluded.contains(*name))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    let set = match TemplateSet::from_sources(dir, &usable) {
        Ok(set) => set,
        Err(e) => {
            c.push(
                "",
                None,
                "load",
                format!("impossibile caricare i modelli: {e}"),
            );
            (report.problems, report.warnings) = c.finish();
            return report;
        }
    };
    let samples = samples();
    report.samples = samples.len();
    let reopening = reopening_messages(&sources);
    for (message, files) in &folders {
        let complete = templates::PARTS
            .iter()
            .all(|p| files.contains(*p) && usable.contains_key(&format!("{message}/{p}")));
        if !complete {
            continue;
        }
        for sample in &samples {
            report.renders += 1;
            let ctx = context(settings, message, sample, reopening.contains(message));
            let mut raw = BTreeMap::new();
            for part in templates::PARTS {
                let file = format!("{message}/{part}");
                match set.render_file(&file, &ctx) {
                    Ok(out) => {
                        raw.insert(part, out);
                    }
                    Err(e) => c.render_error(&sources, &file, sample, &e),
                }
            }
            if raw.len() < templates::PARTS.len() {
                continue;
            }
            match set.render(message, &ctx) {
                Ok(rendered) => c.output_checks(&sources, message, sample, &raw, &rendered),
                Err(e) => c.render_error(&sources, &format!("{message}/subject.txt"), sample, &e),
            }
        }
    }
    (report.problems, report.warnings) = c.finish();
    report
}

/// The problems found so far, as paths under the templates folder.
struct Checker<'a> {
    dir: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// (file, line, key): one report per problem, however many samples show it.
    seen: HashSet<(String, Option<usize>, String)>,
}

impl Checker<'_> {
    fn push(&mut self, file: &str, line: Option<usize>, key: &str, message: String) {
        if self.seen.insert((file.to_string(), line, key.to_string())) {
            let path = if file.is_empty() {
                self.dir.to_path_buf()
            } else {
                self.dir.join(file)
            };
            self.problems.push(Problem {
                file: path,
                line,
                message,
            });
        }
    }

    /// [`Checker::push`] at a located (file, line), or at `fallback` without a line.
    fn push_at(&mut self, at: Option<(String, usize)>, fallback: &str, key: &str, message: String) {
        match at {
            Some((file, line)) => self.push(&file, Some(line), key, message),
            None => self.push(fallback, None, key, message),
        }
    }

    /// A warning: reported, but the set is not refused for it.
    fn warn(&mut self, file: &str, line: Option<usize>, message: String) {
        let warning = Problem {
            file: self.dir.join(file),
            line,
            message,
        };
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    fn finish(mut self) -> (Vec<Problem>, Vec<Problem>) {
        self.problems.sort();
        self.warnings.sort();
        (self.problems, self.warnings)
    }
}

/// The extension of a template's file name (`txt`, `html`), or "" without one.
fn extension(name: &str) -> &str {
    name.rsplit_once('.').map(|(_, e)| e).unwrap_or("")
}

/// The text between `start` and the next `end` in `s` (to read Tera's error messages).
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}
