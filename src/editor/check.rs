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
//!   output: a subject on one line and at most [`MAX_SUBJECT_CHARS`] characters, no empty part, no
//!   template syntax left in the output, no escaping artefacts or HTML tags in the text version,
//!   user data escaped in the HTML version.
//!
//! The same samples feed `templates preview` and the golden tests.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{Duration, TimeZone};
use serde_json::Value;

use crate::config::Settings;
use crate::render::templates::{
    self, MessageContext, Rendered, TemplateError, TemplateSet, UserView,
};

/// The longest subject accepted, in characters (with the "[PROVA] " prefix of test messages).
pub const MAX_SUBJECT_CHARS: usize = 120;

/// The filters registered by avvisi, for messages and suggestions.
const OWN_FILTERS: [&str; 3] = ["data_it", "data_estesa_it", "ora_it"];

/// Tera's own filters (for suggestions only: whether a filter exists is asked to Tera).
const TERA_FILTERS: [&str; 41] = [
    "upper",
    "lower",
    "trim",
    "trim_start",
    "trim_end",
    "trim_start_matches",
    "trim_end_matches",
    "truncate",
    "wordcount",
    "replace",
    "capitalize",
    "title",
    "linebreaksbr",
    "indent",
    "striptags",
    "spaceless",
    "escape",
    "escape_xml",
    "addslashes",
    "split",
    "int",
    "float",
    "first",
    "last",
    "nth",
    "join",
    "sort",
    "unique",
    "slice",
    "group_by",
    "filter",
    "map",
    "concat",
    "abs",
    "pluralize",
    "round",
    "length",
    "reverse",
    "json_encode",
    "as_str",
    "get",
];

/// Tera's tests (`{% if x is defined %}`).
const TERA_TESTS: [&str; 13] = [
    "defined",
    "undefined",
    "odd",
    "even",
    "string",
    "number",
    "divisibleby",
    "iterable",
    "object",
    "starting_with",
    "ending_with",
    "containing",
    "matching",
];

/// Functions templates may call (Tera's, without its optional features; `super()` in blocks).
const TERA_FUNCTIONS: [&str; 4] = ["range", "throw", "get_env", "super"];

/// Words of Tera's expression language that are not names.
const KEYWORDS: [&str; 10] = [
    "and", "or", "not", "in", "is", "true", "false", "True", "False", "as",
];

/// Variables that exist in every template without being in the context.
const BUILTIN_VARIABLES: [&str; 2] = ["loop", "__tera_context"];

// -------------------------------------------------------------------------------------------
// Problems and the report

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
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

// -------------------------------------------------------------------------------------------
// Sample data

/// A recipient of the sample data.
#[derive(Debug, Clone, Copy)]
pub struct SampleUser {
    /// Short name used in file names (`dangelo`).
    pub id: &'static str,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub email: &'static str,
    pub institutional_email: Option<&'static str>,
    pub pending_email: Option<&'static str>,
    pub province: Option<&'static str>,
    /// Why this user is in the samples.
    pub why: &'static str,
}

impl SampleUser {
    pub fn view(&self) -> UserView {
        UserView::new(
            self.first_name,
            self.last_name,
            self.email,
            self.institutional_email,
            self.pending_email,
            self.province,
        )
    }
}

/// The sample users: accents, apostrophes, markup and line breaks in names; with and without an
/// institutional address and a pending one.
pub const SAMPLE_USERS: [SampleUser; 4] = [
    SampleUser {
        id: "dangelo",
        first_name: "Ilaria",
        last_name: "D'Angelo",
        email: "ilaria.dangelo@gmail.com",
        institutional_email: None,
        pending_email: Some("ilaria.dangelo@libero.it"),
        province: Some("RM"),
        why: "apostrophe in the name; no institutional address; a pending address",
    },
    SampleUser {
        id: "nicolo",
        first_name: "Nicolò",
        last_name: "Manco",
        email: "nicolo.manco@libero.it",
        institutional_email: Some("nicolo.manco@istruzione.it"),
        pending_email: None,
        province: Some("PA"),
        why: "accented name; an institutional address; no pending address",
    },
    SampleUser {
        id: "markup",
        first_name: "<b>Anna</b>",
        last_name: "Rossi & Figli",
        email: "anna.rossi@example.it",
        institutional_email: Some("anna.rossi@posta.istruzione.it"),
        pending_email: Some("anna.rossi@example.org"),
        province: None,
        why: "markup and an ampersand in the name: escaped in HTML, as written in text",
    },
    SampleUser {
        id: "crlf",
        first_name: "Mario\r\nBcc: intruso@example.org",
        last_name: "Bianchi\r\n",
        email: "mario.bianchi@example.it",
        institutional_email: None,
        pending_email: None,
        province: None,
        why: "line breaks in the name: folded to one line, no header can be added",
    },
];

/// When a message is sent: the step, the days left and the kind of send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    /// Short name used in file names (`d3`, `last-day`).
    pub id: &'static str,
    pub step: &'static str,
    pub days_left: i64,
    pub is_test: bool,
    /// Whether operators have declared the reopening (`reopened_at` set).
    pub reopened: bool,
    pub description: &'static str,
}

/// Every situation a message can be sent in.
pub const SITUATIONS: [Situation; 8] = [
    Situation {
        id: "first",
        step: "first",
        days_left: 7,
        is_test: false,
        reopened: false,
        description: "first notice, 7 days left",
    },
    Situation {
        id: "d7",
        step: "d7",
        days_left: 7,
        is_test: false,
        reopened: false,
        description: "reminder 7 days before the deadline",
    },
    Situation {
        id: "d3",
        step: "d3",
        days_left: 3,
        is_test: false,
        reopened: false,
        description: "reminder 3 days before the deadline",
    },
    Situation {
        id: "d1",
        step: "d1",
        days_left: 1,
        is_test: false,
        reopened: false,
        description: "reminder the day before the deadline",
    },
    Situation {
        id: "last-day",
        step: "first",
        days_left: 0,
        is_test: false,
        reopened: false,
        description: "first notice on the deadline's day (a late entrant)",
    },
    Situation {
        id: "test",
        step: "d3",
        days_left: 3,
        is_test: true,
        reopened: false,
        description: "test message to an operator ([PROVA])",
    },
    Situation {
        id: "main",
        step: "main",
        days_left: 7,
        is_test: false,
        reopened: false,
        description: "one-off notice before the deadline",
    },
    Situation {
        id: "reopened",
        step: "main",
        days_left: 0,
        is_test: false,
        reopened: true,
        description: "one-off notice after the reopening",
    },
];

/// One variant a message is rendered with: a recipient in a situation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `SITUATION-USER`, used in file names and reports (`d3-markup`).
    pub id: String,
    pub user: UserView,
    /// The address the email goes to.
    pub to_address: String,
    pub situation: Situation,
    /// For people: who and when.
    pub description: String,
}

impl Sample {
    /// `situation` for a real user (`templates preview --user`).
    pub fn for_user(situation: Situation, user_id: &str, user: UserView) -> Sample {
        let safe_id: String = user_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Sample {
            id: format!("{}-{safe_id}", situation.id),
            to_address: user.email.clone(),
            description: format!("{}: {}", user.full_name, situation.description),
            user,
            situation,
        }
    }
}

/// The sample variants every message is rendered with: each situation once, the users taking
/// turns, so that every user and every situation appears (8 variants).
pub fn samples() -> Vec<Sample> {
    SITUATIONS
        .iter()
        .enumerate()
        .map(|(i, situation)| {
            let u = &SAMPLE_USERS[i % SAMPLE_USERS.len()];
            Sample {
                id: format!("{}-{}", situation.id, u.id),
                user: u.view(),
                to_address: u.email.to_string(),
                situation: *situation,
                description: format!("{}; {}", situation.description, u.why),
            }
        })
        .collect()
}

/// The sample instant of the reopening: 09:00 local, 13 days after the maintenance start's day.
pub fn sample_reopened_at(settings: &Settings) -> String {
    let cal = &settings.calendar;
    let tz = cal.timezone;
    let day = cal.maintenance_start.with_timezone(&tz).date_naive() + Duration::days(13);
    let at = day.and_time(chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default());
    tz.from_local_datetime(&at)
        .earliest()
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// The context of `message` for `sample`, with the calendar and the names of `settings`, built
/// the way the worker builds it. `reopening`: the message is a reopening notice (it uses
/// `reopened_at`), which only goes out once operators have declared the reopening, so every
/// sample has the date; other messages have it only in the situations after the reopening.
pub fn context(
    settings: &Settings,
    message: &str,
    sample: &Sample,
    reopening: bool,
) -> MessageContext {
    let cal = &settings.calendar;
    let tz = cal.timezone;
    let deadline = cal.deadline.with_timezone(&tz);
    let maintenance_start = cal.maintenance_start.with_timezone(&tz);
    let reopened_at = if sample.situation.reopened || reopening {
        sample_reopened_at(settings)
    } else {
        String::new()
    };
    MessageContext {
        user: sample.user.clone(),
        deadline: deadline.to_rfc3339(),
        maintenance_start: maintenance_start.to_rfc3339(),
        reopened_at,
        days_left: sample.situation.days_left,
        step: sample.situation.step.to_string(),
        campaign: format!("{message}-{}", deadline.format("%Y-%m-%d")),
        portal_url: settings.portal_url.clone(),
        organisation: settings.mail.organisation.clone(),
        service_name: settings.mail.service_name.clone(),
        is_test: sample.situation.is_test,
    }
}

/// The reopening notices among the message folders: the templates of the reopening campaigns
/// ([`crate::audience::phases::REOPENING`]), created when operators declare the reopening, so they always
/// have `reopened_at`. Every other message may go out before it (reminders, the maintenance
/// notice, test messages) and is also rendered with `reopened_at` empty, as templates/README.md
/// tells editors.
pub fn reopening_messages(sources: &BTreeMap<String, String>) -> BTreeSet<String> {
    message_folders(sources)
        .into_keys()
        .filter(|message| {
            crate::audience::phases::REOPENING
                .iter()
                .any(|(template, _)| template == message)
        })
        .collect()
}

/// The message folders and their files: like [`TemplateSet::messages`], every folder but
/// `layout/` holding at least one of the three parts (a folder of shared pieces is not one).
fn message_folders(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in sources.keys() {
        if let Some((folder, file)) = name.split_once('/') {
            if folder != "layout" && !file.contains('/') {
                out.entry(folder.to_string())
                    .or_default()
                    .insert(file.to_string());
            }
        }
    }
    out.retain(|_, files| templates::PARTS.iter().any(|p| files.contains(*p)));
    out
}

// -------------------------------------------------------------------------------------------
// The check

/// Checks every template under `dir`, rendering with the calendar and names of `settings`.
pub fn check(dir: &Path, settings: &Settings) -> CheckReport {
    let mut c = Checker {
        dir,
        problems: Vec::new(),
        seen: HashSet::new(),
    };
    let mut report = CheckReport::default();
    let sources = match templates::read_sources(dir) {
        Ok(s) => s,
        Err(e) => {
            c.push(
                "",
                None,
                "read",
                format!("cannot read the templates folder: {e}"),
            );
            report.problems = c.finish();
            return report;
        }
    };
    let folders = message_folders(&sources);
    report.messages = folders.keys().cloned().collect();
    if folders.is_empty() {
        c.push(
            "",
            None,
            "empty",
            "no message found: each message is a folder with subject.txt, body.txt and body.html"
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
    for (folder, files) in &folders {
        for (part, what) in [
            ("subject.txt", "subject"),
            ("body.txt", "text version"),
            ("body.html", "HTML version"),
        ] {
            if !files.contains(part) {
                c.push(
                    &format!("{folder}/{part}"),
                    None,
                    "missing",
                    format!(
                        "missing: the message `{folder}` has no {what}; every message folder needs \
                         subject.txt, body.txt and body.html"
                    ),
                );
            }
        }
        for file in files {
            let used = sources.values().any(|src| {
                let scan = FileScan::new(src);
                let path = format!("{folder}/{file}");
                scan.extends
                    .iter()
                    .chain(scan.includes.iter())
                    .any(|(t, _)| *t == path)
            });
            if !templates::PARTS.contains(&file.as_str()) && !used {
                c.push(
                    &format!("{folder}/{file}"),
                    None,
                    "stray",
                    format!(
                        "unexpected file in a message folder: only subject.txt, body.txt and \
                         body.html are used, so `{file}` is ignored (a misspelled name?)"
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
                        "`{name}` extends `{target}`: a .{ours} file must extend a .{ours} layout \
                         (HTML escaping depends on it)"
                    ),
                );
            }
        }
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
            c.push("", None, "load", format!("cannot load the templates: {e}"));
            report.problems = c.finish();
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
    report.problems = c.finish();
    report
}

struct Checker<'a> {
    dir: &'a Path,
    problems: Vec<Problem>,
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

    fn finish(mut self) -> Vec<Problem> {
        self.problems.sort();
        self.problems
    }

    /// A render error, pointed at the file and line of the name it is about.
    fn render_error(
        &mut self,
        sources: &BTreeMap<String, String>,
        part_file: &str,
        sample: &Sample,
        e: &TemplateError,
    ) {
        let text = match e {
            TemplateError::Render { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let files = chain(part_file, sources);
        let in_template = between(&text, "while rendering '", "'").map(str::to_string);
        let locate = |pred: &dyn Fn(&Found) -> bool, prefer: Option<&str>| {
            let mut order: Vec<&str> = Vec::new();
            if let Some(p) = prefer {
                order.push(p);
            }
            order.extend(files.iter().map(String::as_str));
            for file in order {
                if let Some(src) = sources.get(file) {
                    let scan = FileScan::new(src);
                    if let Some(f) = scan.found.iter().find(|f| pred(f)) {
                        return (file.to_string(), Some(line_of(src, f.offset())));
                    }
                }
            }
            (prefer.unwrap_or(part_file).to_string(), None::<usize>)
        };
        let known_context = "only the variables listed in templates/README.md exist";
        if let Some(name) = between(&text, "Variable `", "`") {
            let (file, line) = locate(
                &|f| matches!(f, Found::Var { path, .. } if path == name || path.starts_with(&format!("{name}."))),
                in_template.as_deref(),
            );
            self.push(
                &file,
                line,
                &format!("var:{name}"),
                format!("unknown variable `{name}`: {known_context}"),
            );
        } else if let Some(name) = between(&text, "Filter '", "' not found") {
            let (file, line) = locate(
                &|f| matches!(f, Found::Filter { name: n, .. } if n == name),
                None,
            );
            self.push(
                &file,
                line,
                &format!("filter:{name}"),
                format!("unknown filter `{name}`"),
            );
        } else if let Some(name) = between(&text, "Filter call '", "' failed") {
            let detail = text
                .split("' failed: ")
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string();
            let (file, line) = locate(
                &|f| matches!(f, Found::Filter { name: n, .. } if n == name),
                None,
            );
            self.push(
                &file,
                line,
                &format!("filter-call:{name}:{detail}"),
                format!(
                    "the filter `{name}` fails with sample `{}` ({}): {detail}{}",
                    sample.id,
                    sample.situation.description,
                    if detail.contains("got \"\"") {
                        "; the value is empty in this situation: `reopened_at` is empty until \
                         operators declare the reopening, and only the reopening_... notices are \
                         sure to go out after it (elsewhere guard it with `{% if reopened_at %}`)"
                    } else {
                        ""
                    }
                ),
            );
        } else if let Some(name) = between(&text, "Test '", "' not found") {
            let (file, line) = locate(
                &|f| matches!(f, Found::Test { name: n, .. } if n == name),
                None,
            );
            self.push(
                &file,
                line,
                &format!("test:{name}"),
                format!("unknown test `{name}` after `is`"),
            );
        } else if let Some(name) = between(&text, "Function '", "' not found") {
            let (file, line) = locate(
                &|f| matches!(f, Found::Function { name: n, .. } if n == name),
                None,
            );
            self.push(
                &file,
                line,
                &format!("function:{name}"),
                format!("unknown function `{name}()`"),
            );
        } else {
            let file = in_template.unwrap_or_else(|| part_file.to_string());
            let plain = text
                .strip_prefix(&format!("Failed to render '{part_file}': "))
                .unwrap_or(&text)
                .to_string();
            self.push(
                &file,
                None,
                &format!("render:{plain}"),
                format!(
                    "cannot be rendered with sample `{}` ({}): {plain}",
                    sample.id, sample.situation.description
                ),
            );
        }
    }

    /// Looks at what a message renders to.
    fn output_checks(
        &mut self,
        sources: &BTreeMap<String, String>,
        message: &str,
        sample: &Sample,
        raw: &BTreeMap<&str, String>,
        rendered: &Rendered,
    ) {
        let subject_file = format!("{message}/subject.txt");
        let text_file = format!("{message}/body.txt");
        let html_file = format!("{message}/body.html");
        let with = format!(
            "with sample `{}` ({})",
            sample.id, sample.situation.description
        );

        // Empty parts.
        for (file, out, what) in [
            (&subject_file, &raw["subject.txt"], "subject"),
            (&text_file, &raw["body.txt"], "text version"),
            (&html_file, &raw["body.html"], "HTML version"),
        ] {
            if out.trim().is_empty() {
                self.push(
                    file,
                    None,
                    "empty-output",
                    format!("the {what} comes out empty {with}"),
                );
            }
        }

        // The subject: one line, not too long.
        let subject_raw = raw["subject.txt"].trim();
        if subject_raw.contains(['\n', '\r']) {
            // The line of the source where the subject breaks (the first line break between
            // the first and the last character of the file).
            let src = sources.get(&subject_file).map(String::as_str).unwrap_or("");
            let start = src.find(|c: char| !c.is_whitespace()).unwrap_or(0);
            let end = src.trim_end().len();
            let line = src[start..end]
                .find(['\n', '\r'])
                .map(|i| line_of(src, start + i))
                .unwrap_or(1);
            self.push(
                &subject_file,
                Some(line),
                "subject-break",
                format!(
                    "the subject has a line break {with}: an email subject is a single line; \
                     join the lines (or use `{{%-` and `-%}}` to remove the line break around a tag)"
                ),
            );
        }
        let length = rendered.subject.chars().count();
        if length > MAX_SUBJECT_CHARS {
            self.push(
                &subject_file,
                Some(1),
                "subject-long",
                format!(
                    "the subject is {length} characters long {with}, more than {MAX_SUBJECT_CHARS}: \
                     \"{}\"; shorten it (mail clients cut long subjects)",
                    rendered.subject
                ),
            );
        }

        // Template syntax left in the output (a brace missing or too many, `{ name }`...).
        for (file, out) in [
            (&subject_file, &rendered.subject),
            (&text_file, &rendered.text),
            (&html_file, &rendered.html),
        ] {
            if let Some(leftover) = leftover_syntax(out) {
                let line = find_leftover_line(file, &leftover, sources);
                self.push(
                    &line.0,
                    line.1,
                    &format!("leftover:{leftover}"),
                    format!(
                        "template syntax left in the output: `{leftover}` would be sent as \
                         written; variables are written `{{{{ name }}}}` and tags `{{% ... %}}`, \
                         with both braces"
                    ),
                );
            }
        }

        // Text: the user's data as written, no HTML escaping, no tags.
        let user = &sample.user;
        let user_values = [
            user.first_name.as_str(),
            user.last_name.as_str(),
            user.full_name.as_str(),
            user.email.as_str(),
            user.institutional_email.as_str(),
            user.pending_email.as_str(),
            user.province.as_str(),
        ];
        for (file, out) in [
            (&subject_file, &rendered.subject),
            (&text_file, &rendered.text),
        ] {
            if let Some(entity) = [
                "&amp;", "&lt;", "&gt;", "&quot;", "&#x27;", "&#x2F;", "&#39;",
            ]
            .into_iter()
            .find(|e| out.contains(e))
            {
                let at = locate_in_chain(file, sources, |f| {
                    matches!(f, Found::Filter { name, .. } if name == "escape" || name == "escape_xml")
                })
                .or_else(|| locate_text(file, sources, entity));
                self.push_at(
                    at,
                    file,
                    "text-escape",
                    format!(
                        "escaping artefact `{entity}` in a text part {with}: text is sent as \
                         written, so do not use `| escape` (nor HTML entities) in .txt files"
                    ),
                );
            }
        }
        let mut text_without_data = rendered.text.clone();
        for value in user_values.iter().filter(|v| !v.is_empty()) {
            text_without_data = text_without_data.replace(value, "");
        }
        if let Some(tag) = html_tag(&text_without_data) {
            let at = locate_text(&text_file, sources, &tag);
            self.push_at(
                at,
                &text_file,
                &format!("text-html:{tag}"),
                format!(
                    "HTML markup `{tag}` in the text version: it is shown as written; write plain \
                     text in body.txt (the HTML goes in body.html)"
                ),
            );
        }

        // HTML: the user's data must come out escaped (`<b>` as `&lt;b&gt;`, `'` as `&#x27;`).
        for value in user_values {
            if value.contains(['<', '>', '&', '"', '\'']) && rendered.html.contains(value) {
                let at = locate_in_chain(
                    &html_file,
                    sources,
                    |f| matches!(f, Found::Filter { name, .. } if name == "safe"),
                );
                self.push_at(
                    at,
                    &html_file,
                    "html-unescaped",
                    format!(
                        "user data reaches the HTML version unescaped {with}: `{value}` must \
                         come out escaped or it becomes markup; never use `| safe` on user data"
                    ),
                );
            }
        }
    }
}

/// 1-based line of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

fn extension(name: &str) -> &str {
    name.rsplit_once('.').map(|(_, e)| e).unwrap_or("")
}

/// The text between `start` and the next `end` in `s`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// `file`, the layouts it extends and the files they include, in that order.
fn chain(file: &str, sources: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut todo = vec![file.to_string()];
    while let Some(f) = todo.pop() {
        if out.contains(&f) {
            continue;
        }
        if let Some(src) = sources.get(&f) {
            let scan = FileScan::new(src);
            for (target, _) in scan.extends.iter().chain(scan.includes.iter()).rev() {
                todo.push(target.clone());
            }
        }
        out.push(f);
    }
    out
}

/// The first file and line of `file`'s chain where an expression matches `pred`.
fn locate_in_chain(
    file: &str,
    sources: &BTreeMap<String, String>,
    pred: impl Fn(&Found) -> bool,
) -> Option<(String, usize)> {
    for f in chain(file, sources) {
        if let Some(src) = sources.get(&f) {
            if let Some(found) = FileScan::new(src).found.iter().find(|x| pred(x)) {
                return Some((f, line_of(src, found.offset())));
            }
        }
    }
    None
}

/// The first file and line of `file`'s chain whose text contains `needle`.
fn locate_text(
    file: &str,
    sources: &BTreeMap<String, String>,
    needle: &str,
) -> Option<(String, usize)> {
    for f in chain(file, sources) {
        if let Some(src) = sources.get(&f) {
            if let Some(at) = src.find(needle) {
                return Some((f, line_of(src, at)));
            }
        }
    }
    None
}

/// Template delimiters in rendered output, or a `{name}` with single braces.
fn leftover_syntax(out: &str) -> Option<String> {
    for delimiter in ["{{", "}}", "{%", "%}", "{#", "#}"] {
        if let Some(at) = out.find(delimiter) {
            return Some(snippet(out, at, delimiter.len()));
        }
    }
    // `{ user.first_name }` / `{user.first_name}`: a name between single braces.
    for (i, _) in out.match_indices('{') {
        let rest = &out[i + 1..];
        let Some(end) = rest.find('}') else { continue };
        let inner = rest[..end].trim();
        let is_name = !inner.is_empty()
            && inner.len() <= 60
            && inner
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '|' || c == ' ');
        if is_name {
            return Some(out[i..i + 1 + end + 1].to_string());
        }
    }
    None
}

/// `out[at..at+len]` widened to the surrounding word, to show (at most a few dozen characters).
fn snippet(out: &str, at: usize, len: usize) -> String {
    let stop = |c: char| c.is_whitespace() || c == '<' || c == '>';
    let start = out[..at]
        .char_indices()
        .rev()
        .find(|(_, c)| stop(*c))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0);
    let start = if at - start > 30 { at } else { start };
    let end = out[at + len..]
        .find(stop)
        .map(|i| at + len + i)
        .unwrap_or(out.len());
    let end = if end - (at + len) > 30 { at + len } else { end };
    out[start..end].to_string()
}

/// Where a leftover came from: the first line of the chain whose text, outside well-formed
/// tags, contains it (or its delimiter).
fn find_leftover_line(
    file: &str,
    leftover: &str,
    sources: &BTreeMap<String, String>,
) -> (String, Option<usize>) {
    let delimiters = ["{{", "}}", "{%", "%}", "{#", "#}"];
    let files = chain(file, sources);
    for f in &files {
        let Some(src) = sources.get(f) else { continue };
        let scan = FileScan::new(src);
        // Blank out every well-formed tag, keeping offsets.
        let mut plain: Vec<u8> = src.as_bytes().to_vec();
        for (start, end) in &scan.spans {
            for b in &mut plain[*start..*end] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        }
        let plain = String::from_utf8_lossy(&plain).into_owned();
        let needle = delimiters
            .iter()
            .find(|d| leftover.contains(**d))
            .copied()
            .unwrap_or(leftover);
        if let Some(at) = plain.find(leftover).or_else(|| plain.find(needle)) {
            return (f.clone(), Some(line_of(src, at)));
        }
    }
    for f in &files {
        if let Some(src) = sources.get(f) {
            if let Some(at) = src.find(leftover) {
                return (f.clone(), Some(line_of(src, at)));
            }
        }
    }
    (file.to_string(), None)
}

/// The first HTML tag in `s` (`<p>`, `</strong>`, `<br>`...).
fn html_tag(s: &str) -> Option<String> {
    for (i, _) in s.match_indices('<') {
        let rest = &s[i + 1..];
        let name_start = rest.strip_prefix('/').unwrap_or(rest);
        if !name_start
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        {
            continue;
        }
        if let Some(end) = rest.find('>') {
            let inner = &rest[..end];
            if end <= 200 && !inner.contains('\n') && !inner.contains('@') {
                return Some(format!("<{inner}>"));
            }
        }
    }
    None
}

// -------------------------------------------------------------------------------------------
// Syntax

/// Every syntax problem of one file, with a plain explanation: the tag-level ones found by the
/// scanner (unclosed delimiters, unbalanced `if`/`for`/`block`), else Tera's own diagnosis.
fn syntax_problems(name: &str, src: &str) -> Vec<(Option<usize>, String)> {
    let mut tera = tera::Tera::default();
    let Err(err) = tera.add_raw_template(name, src) else {
        return Vec::new();
    };
    if !matches!(err.kind, tera::ErrorKind::Msg(_)) {
        // A missing layout or the like: reported with the names.
        return Vec::new();
    }
    let scan = FileScan::new(src);
    let mut out: Vec<(Option<usize>, String)> = Vec::new();
    for (offset, delimiter) in &scan.unclosed {
        let close = match *delimiter {
            "{{" => "}}",
            "{%" => "%}",
            "{#" => "#}",
            _ => "{% endraw %}",
        };
        out.push((
            Some(line_of(src, *offset)),
            format!(
                "syntax error: `{delimiter}` is not closed with `{close}` (check the braces: \
                 variables are written `{{{{ name }}}}`, tags `{{% ... %}}`)"
            ),
        ));
    }
    if out.is_empty() {
        out.extend(
            balance_problems(src, &scan)
                .into_iter()
                .map(|(l, m)| (Some(l), m)),
        );
    }
    if out.is_empty() {
        let mut chain = Vec::new();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        let detail = chain.iter().find(|s| s.contains("-->"));
        match detail {
            Some(detail) => {
                let position = between(detail, "--> ", "\n").unwrap_or("").trim();
                let (line, column) = position.split_once(':').unwrap_or((position, ""));
                let expected = detail
                    .lines()
                    .find_map(|l| l.trim_start().strip_prefix("= "))
                    .unwrap_or("")
                    .trim();
                out.push((
                    line.parse().ok(),
                    format!(
                        "syntax error at column {column}: {} (Tera: {expected})",
                        explain_expected(expected)
                    ),
                ));
            }
            None => out.push((None, format!("syntax error: {}", chain.join(": ")))),
        }
    }
    out
}

/// Tera's parser expectations in plain words.
fn explain_expected(expected: &str) -> &'static str {
    if expected.contains("variable end (`}}`)") {
        "the `{{ ... }}` is not closed properly"
    } else if expected.contains("tag end (`%}`)") {
        "the `{% ... %}` tag is not closed properly"
    } else if expected.contains("unexpected tag") {
        "this tag is not allowed here: a misspelled tag, or an end tag without its opening tag"
    } else if expected.contains("an identifier") {
        "a name is missing or misspelled here (names start with a letter)"
    } else if expected.contains("expected tag or some content") {
        "the file ends before a tag is closed"
    } else {
        "the template language does not allow this here"
    }
}

/// `if`/`for`/`block`/`macro`/`filter` tags that are not closed, or closed by the wrong end tag.
fn balance_problems(src: &str, scan: &FileScan) -> Vec<(usize, String)> {
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut out = Vec::new();
    for (word, offset) in &scan.statements {
        let line = line_of(src, *offset);
        match word.as_str() {
            "if" | "for" | "block" | "macro" | "filter" => stack.push((word.clone(), line)),
            "elif" | "else" => match stack.last() {
                Some((open, _)) if open == "if" || (word == "else" && open == "for") => {}
                Some((open, open_line)) => out.push((
                    line,
                    format!(
                        "`{{% {word} %}}` inside `{{% {open} %}}` (opened on line {open_line}): \
                         it belongs to an `{{% if %}}`; is an `{{% end{open} %}}` missing?"
                    ),
                )),
                None => out.push((
                    line,
                    format!("`{{% {word} %}}` without an `{{% if %}}` before it"),
                )),
            },
            w if w.starts_with("end") && w != "endraw" => {
                let opener = &w[3..];
                match stack.pop() {
                    Some((open, _)) if open == opener => {}
                    Some((open, open_line)) => {
                        out.push((
                            open_line,
                            format!(
                                "`{{% {open} %}}` is not closed: `{{% end{open} %}}` is missing \
                                 before `{{% {w} %}}` on line {line}"
                            ),
                        ));
                        return out;
                    }
                    None => {
                        out.push((
                            line,
                            format!(
                                "`{{% {w} %}}` without a matching `{{% {opener} %}}` before it"
                            ),
                        ));
                        return out;
                    }
                }
            }
            _ => {}
        }
    }
    for (open, line) in stack {
        out.push((
            line,
            format!(
                "`{{% {open} %}}` is never closed: add `{{% end{open} %}}` where it should end"
            ),
        ));
    }
    out
}

// -------------------------------------------------------------------------------------------
// Names

/// A name used in an expression, with its byte offset in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// `in_condition`: inside `{% if %}`/`{% elif %}`, where Tera makes an unknown name false.
    Var {
        path: String,
        offset: usize,
        in_condition: bool,
    },
    Filter {
        name: String,
        offset: usize,
    },
    Test {
        name: String,
        offset: usize,
    },
    Function {
        name: String,
        offset: usize,
    },
    Template {
        name: String,
        offset: usize,
    },
}

impl Found {
    fn offset(&self) -> usize {
        match self {
            Found::Var { offset, .. }
            | Found::Filter { offset, .. }
            | Found::Test { offset, .. }
            | Found::Function { offset, .. }
            | Found::Template { offset, .. } => *offset,
        }
    }
}

/// What a context provides: top-level names and, for objects (`user`), their fields.
struct KnownNames {
    fields: BTreeMap<String, Option<BTreeSet<String>>>,
}

impl KnownNames {
    fn new(settings: &Settings) -> KnownNames {
        let sample = &samples()[0];
        let value =
            serde_json::to_value(context(settings, "sample", sample, false)).unwrap_or_default();
        let mut fields = BTreeMap::new();
        if let Value::Object(map) = value {
            for (k, v) in map {
                let sub = match v {
                    Value::Object(m) => Some(m.keys().cloned().collect()),
                    _ => None,
                };
                fields.insert(k, sub);
            }
        }
        KnownNames { fields }
    }

    fn all_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, sub) in &self.fields {
            match sub {
                Some(sub) => out.extend(sub.iter().map(|s| format!("{k}.{s}"))),
                None => out.push(k.clone()),
            }
        }
        out
    }

    /// Whether `found` is a problem: its dedup key and the explanation.
    fn judge(
        &self,
        found: &Found,
        locals: &HashSet<String>,
        sources: &BTreeMap<String, String>,
    ) -> Option<(String, String)> {
        match found {
            Found::Var {
                path, in_condition, ..
            } => {
                let mut parts = path.split('.');
                let root = parts.next().unwrap_or("");
                let second = parts.next();
                if locals.contains(root) || BUILTIN_VARIABLES.contains(&root) {
                    return None;
                }
                let unknown = match self.fields.get(root) {
                    None => path.clone(),
                    Some(Some(sub)) => match second {
                        Some(s) if !sub.contains(s) => format!("{root}.{s}"),
                        _ => return None,
                    },
                    Some(None) => match second {
                        Some(s) => format!("{root}.{s}"),
                        None => return None,
                    },
                };
                let hint = suggestion(&unknown, self.all_paths().iter().map(String::as_str));
                let condition = if *in_condition {
                    " (in a `{% if %}` an unknown name is silently false: the text it guards would never be sent)"
                } else {
                    ""
                };
                Some((
                    format!("var:{unknown}"),
                    format!(
                        "unknown variable `{unknown}`{hint}: only the variables listed in \
                         templates/README.md exist{condition}"
                    ),
                ))
            }
            Found::Filter { name, .. } => {
                if templates::filter_exists(name) {
                    return None;
                }
                let candidates = OWN_FILTERS.iter().chain(TERA_FILTERS.iter()).copied();
                let hint = suggestion(name, candidates);
                Some((
                    format!("filter:{name}"),
                    format!(
                        "unknown filter `{name}`{hint}: the date filters are data_it, \
                         data_estesa_it and ora_it"
                    ),
                ))
            }
            Found::Test { name, .. } => {
                if TERA_TESTS.contains(&name.as_str()) {
                    return None;
                }
                let hint = suggestion(name, TERA_TESTS.iter().copied());
                Some((
                    format!("test:{name}"),
                    format!(
                        "unknown test `{name}` after `is`{hint} (known: {})",
                        TERA_TESTS.join(", ")
                    ),
                ))
            }
            Found::Function { name, .. } => {
                if TERA_FUNCTIONS.contains(&name.as_str()) {
                    return None;
                }
                Some((
                    format!("function:{name}"),
                    format!(
                        "unknown function `{name}()`: templates can call only range(), throw() \
                         and super()"
                    ),
                ))
            }
            Found::Template { name, .. } => {
                if sources.contains_key(name) {
                    return None;
                }
                let hint = suggestion(name, sources.keys().map(String::as_str));
                Some((
                    format!("template:{name}"),
                    format!(
                        "there is no template `{name}`{hint} (names are relative to the \
                         templates folder, e.g. layout/base.txt)"
                    ),
                ))
            }
        }
    }
}

/// ", did you mean `x`?" for the closest candidate, when it is close.
fn suggestion<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| (edit_distance(name, c), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d > 0 && d <= 3 && d * 3 <= name.chars().count().max(3) => {
            format!(" (did you mean `{c}`?)")
        }
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

// -------------------------------------------------------------------------------------------
// The scanner: tags, tokens and the names in them

/// What one file's tags contain.
#[derive(Debug, Default)]
struct FileScan {
    /// Names used, in file order.
    found: Vec<Found>,
    /// Names the file defines (`for x in`, `set x =`, macro parameters).
    locals: HashSet<String>,
    /// The first word of every `{% %}` tag, with its offset (for the balance check).
    statements: Vec<(String, usize)>,
    /// `{% extends "x" %}` targets with their offsets.
    extends: Vec<(String, usize)>,
    /// `{% include "x" %}` / `{% import "x" %}` targets with their offsets.
    includes: Vec<(String, usize)>,
    /// Byte ranges of well-formed tags and comments.
    spans: Vec<(usize, usize)>,
    /// Opening delimiters never closed, with their offsets.
    unclosed: Vec<(usize, &'static str)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num,
    Punct(&'static str),
}

impl FileScan {
    fn new(src: &str) -> FileScan {
        let mut scan = FileScan::default();
        let mut pos = 0;
        while pos < src.len() {
            let Some((at, open)) = ["{{", "{%", "{#"]
                .iter()
                .filter_map(|o| src[pos..].find(o).map(|i| (pos + i, *o)))
                .min_by_key(|(i, _)| *i)
            else {
                break;
            };
            let close = match open {
                "{{" => "}}",
                "{%" => "%}",
                _ => "#}",
            };
            let body_start = at + 2;
            let Some(end) = src[body_start..].find(close).map(|i| body_start + i) else {
                scan.unclosed.push((at, open));
                pos = body_start;
                continue;
            };
            if open != "{#" {
                let next_open = ["{{", "{%"]
                    .iter()
                    .filter_map(|o| src[body_start..end].find(o))
                    .min();
                if next_open.is_some() {
                    scan.unclosed.push((at, open));
                    pos = body_start;
                    continue;
                }
            }
            scan.spans.push((at, end + 2));
            pos = end + 2;
            if open == "{#" {
                continue;
            }
            // The body without whitespace control dashes, and its offset.
            let mut body = &src[body_start..end];
            let mut offset = body_start;
            if let Some(rest) = body.strip_prefix('-') {
                body = rest;
                offset += 1;
            }
            let body = body.strip_suffix('-').unwrap_or(body);
            let toks = tokenize(body, offset);
            if open == "{{" {
                scan.expression(&toks, false);
                continue;
            }
            let Some((Tok::Ident(word), word_at)) = toks.first().cloned() else {
                continue;
            };
            scan.statements.push((word.clone(), word_at));
            match word.as_str() {
                "raw" => {
                    // Everything up to `{% endraw %}` is text.
                    let mut search = pos;
                    let mut closed = false;
                    while let Some(i) = src[search..].find("{%").map(|i| search + i) {
                        let Some(e) = src[i + 2..].find("%}").map(|e| i + 2 + e) else {
                            break;
                        };
                        let inner =
                            src[i + 2..e].trim_matches(|c: char| c == '-' || c.is_whitespace());
                        if inner == "endraw" {
                            scan.spans.push((i, e + 2));
                            scan.statements.push(("endraw".into(), i));
                            pos = e + 2;
                            closed = true;
                            break;
                        }
                        search = e + 2;
                    }
                    if !closed {
                        scan.unclosed.push((at, "raw"));
                        break;
                    }
                }
                "if" | "elif" => scan.expression(&toks[1..], true),
                "for" => {
                    let split = toks
                        .iter()
                        .position(|(t, _)| *t == Tok::Ident("in".into()))
                        .unwrap_or(toks.len());
                    for (t, _) in &toks[1..split] {
                        if let Tok::Ident(name) = t {
                            scan.locals.insert(name.clone());
                        }
                    }
                    if split < toks.len() {
                        scan.expression(&toks[split + 1..], false);
                    }
                }
                "set" | "set_global" => {
                    if let Some((Tok::Ident(name), _)) = toks.get(1) {
                        scan.locals.insert(name.clone());
                    }
                    if let Some(eq) = toks.iter().position(|(t, _)| *t == Tok::Punct("=")) {
                        scan.expression(&toks[eq + 1..], false);
                    }
                }
                "filter" => {
                    if let Some((Tok::Ident(name), at)) = toks.get(1) {
                        scan.found.push(Found::Filter {
                            name: name.clone(),
                            offset: *at,
                        });
                    }
                    if toks.len() > 2 {
                        scan.expression(&toks[2..], false);
                    }
                }
                "macro" => {
                    // Parameters: names followed by `,`, `=` or `)` inside the parentheses.
                    for w in toks.windows(2).skip(2) {
                        if let (Tok::Ident(name), _) = &w[0] {
                            if matches!(w[1].0, Tok::Punct(",") | Tok::Punct("=") | Tok::Punct(")"))
                            {
                                scan.locals.insert(name.clone());
                            }
                        }
                    }
                }
                "extends" | "include" | "import" => {
                    let ignore_missing =
                        toks.iter().any(|(t, _)| *t == Tok::Ident("ignore".into()));
                    if let Some((Tok::Str(target), at)) = toks.get(1) {
                        if word == "extends" {
                            scan.extends.push((target.clone(), *at));
                        } else {
                            scan.includes.push((target.clone(), *at));
                        }
                        if !ignore_missing {
                            scan.found.push(Found::Template {
                                name: target.clone(),
                                offset: *at,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        scan
    }

    /// Records the names used in an expression.
    fn expression(&mut self, toks: &[(Tok, usize)], in_condition: bool) {
        let ident = |i: usize| match toks.get(i) {
            Some((Tok::Ident(s), _)) => Some(s.as_str()),
            _ => None,
        };
        let punct = |i: usize| match toks.get(i) {
            Some((Tok::Punct(p), _)) => Some(*p),
            _ => None,
        };
        for (i, (tok, offset)) in toks.iter().enumerate() {
            let Tok::Ident(name) = tok else { continue };
            let prev = i.checked_sub(1);
            let prev_punct = prev.and_then(punct);
            let prev_ident = prev.and_then(ident);
            let prev2_ident = i.checked_sub(2).and_then(ident);
            if prev_punct == Some(".") || prev_punct == Some("::") || punct(i + 1) == Some("::") {
                continue;
            }
            if prev_punct == Some("|") {
                self.found.push(Found::Filter {
                    name: name.clone(),
                    offset: *offset,
                });
                continue;
            }
            if prev_ident == Some("is") || (prev_ident == Some("not") && prev2_ident == Some("is"))
            {
                if name != "not" {
                    self.found.push(Found::Test {
                        name: name.clone(),
                        offset: *offset,
                    });
                }
                continue;
            }
            if KEYWORDS.contains(&name.as_str()) {
                continue;
            }
            match punct(i + 1) {
                Some("=") => continue, // a keyword argument
                Some("(") => {
                    self.found.push(Found::Function {
                        name: name.clone(),
                        offset: *offset,
                    });
                    continue;
                }
                _ => {}
            }
            let mut path = name.clone();
            let mut j = i + 1;
            while punct(j) == Some(".") {
                match ident(j + 1) {
                    Some(field) => {
                        path.push('.');
                        path.push_str(field);
                        j += 2;
                    }
                    None => break,
                }
            }
            self.found.push(Found::Var {
                path,
                offset: *offset,
                in_condition,
            });
        }
    }
}

/// The tokens of a tag's body; offsets are in the file.
fn tokenize(body: &str, base: usize) -> Vec<(Tok, usize)> {
    const TWO: [&str; 5] = ["==", "!=", "<=", ">=", "::"];
    const ONE: [&str; 17] = [
        "|", "(", ")", "[", "]", ",", ".", "=", "+", "-", "*", "/", "%", "~", "<", ">", ":",
    ];
    let mut out = Vec::new();
    let mut i = 0;
    let bytes = body.as_bytes();
    while i < body.len() {
        let c = body[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            i += c.len_utf8();
        } else if c == '"' || c == '\'' || c == '`' {
            let end = body[i + 1..]
                .find(c)
                .map(|e| i + 1 + e)
                .unwrap_or(body.len());
            out.push((
                Tok::Str(body[i + 1..end.min(body.len())].to_string()),
                base + i,
            ));
            i = (end + 1).min(body.len());
        } else if c.is_ascii_digit() {
            let start = i;
            while i < body.len()
                && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_')
            {
                i += 1;
            }
            out.push((Tok::Num, base + start));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < body.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(body[start..i].to_string()), base + start));
        } else if let Some(p) = TWO.iter().find(|p| body[i..].starts_with(**p)) {
            out.push((Tok::Punct(p), base + i));
            i += 2;
        } else if let Some(p) = ONE.iter().find(|p| body[i..].starts_with(**p)) {
            out.push((Tok::Punct(p), base + i));
            i += 1;
        } else {
            i += c.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<Found> {
        FileScan::new(src).found
    }

    #[test]
    fn scanner_finds_variables_filters_and_tests() {
        let found = names(
            "Gentile {{ user.first_name }},\n{% if days_left == 0 and step is defined %}x{% endif %}\n\
             {{ deadline | data_it }} {% for s in steps %}{{ s.name | upper }}{% endfor %}",
        );
        let vars: Vec<&str> = found
            .iter()
            .filter_map(|f| match f {
                Found::Var { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            vars,
            [
                "user.first_name",
                "days_left",
                "step",
                "deadline",
                "steps",
                "s.name"
            ]
        );
        assert!(found
            .iter()
            .any(|f| matches!(f, Found::Filter { name, .. } if name == "data_it")));
        assert!(found
            .iter()
            .any(|f| matches!(f, Found::Test { name, .. } if name == "defined")));
        assert!(FileScan::new("{% for s in steps %}{% endfor %}")
            .locals
            .contains("s"));
    }

    #[test]
    fn raw_blocks_and_comments_are_text() {
        assert!(names("{# {{ nope }} #}{% raw %}{{ nope }}{% endraw %}").is_empty());
    }

    #[test]
    fn unclosed_delimiters_are_found() {
        let scan = FileScan::new("a\n{{ user.first_name }\nb {{ x }}");
        assert_eq!(scan.unclosed, vec![(2, "{{")]);
    }

    #[test]
    fn leftovers() {
        assert_eq!(
            leftover_syntax("Gentile {user.first_name},").as_deref(),
            Some("{user.first_name}")
        );
        assert_eq!(leftover_syntax("Gentile Mario }},").as_deref(), Some("}},"));
        assert_eq!(leftover_syntax("a { margin: 0 } b"), None);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggestion(
                "user.frist_name",
                ["user.first_name", "deadline"].into_iter()
            ),
            " (did you mean `user.first_name`?)"
        );
        assert_eq!(suggestion("zzz", ["deadline"].into_iter()), "");
    }
}
