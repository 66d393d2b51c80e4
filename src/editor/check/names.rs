//! Names that do not exist: variables outside the context, unknown filters, tests, functions
//! and templates, each with the closest known name when one is close (edit distance).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use crate::config::Settings;
use crate::editor::{context, samples};
use crate::render::templates;

use super::scan::Found;

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
/// Not `get_env`: it reads the process's environment, and templates see only the message.
const TERA_FUNCTIONS: [&str; 3] = ["range", "throw", "super"];

/// The dates of the context: RFC 3339 strings, to be printed only through a date filter.
const DATE_VARIABLES: [&str; 3] = ["deadline", "maintenance_start", "reopened_at"];

/// Variables that exist in every template without being in the context.
const BUILTIN_VARIABLES: [&str; 2] = ["loop", "__tera_context"];

/// What a context provides: top-level names and, for objects (`user`), their fields.
pub(crate) struct KnownNames {
    fields: BTreeMap<String, Option<BTreeSet<String>>>,
}

impl KnownNames {
    pub(crate) fn new(settings: &Settings) -> KnownNames {
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
    pub(crate) fn judge(
        &self,
        found: &Found,
        locals: &HashSet<String>,
        sources: &BTreeMap<String, String>,
    ) -> Option<(String, String)> {
        match found {
            Found::Var {
                path,
                in_condition,
                printed_raw,
                ..
            } => {
                if *printed_raw && DATE_VARIABLES.contains(&path.as_str()) {
                    return Some((
                        format!("raw-date:{path}"),
                        format!(
                            "`{{{{ {path} }}}}` senza filtro scriverebbe la data in formato \
                             tecnico (per esempio 2026-11-30T23:59:59+01:00): usare \
                             `{{{{ {path} | data_it }}}}` (\"30 novembre 2026\"), \
                             `{{{{ {path} | data_estesa_it }}}}` (\"lunedì 30 novembre 2026\") o \
                             `{{{{ {path} | ora_it }}}}` (\"23:59\")"
                        ),
                    ));
                }
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
                    " (dentro un `{% if %}` un nome sconosciuto vale falso senza errori: il testo \
                     che controlla non verrebbe mai inviato)"
                } else {
                    ""
                };
                Some((
                    format!("var:{unknown}"),
                    format!(
                        "variabile sconosciuta `{unknown}`{hint}: esistono solo le variabili \
                         elencate in templates/README.md{condition}"
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
                        "filtro sconosciuto `{name}`{hint}: i filtri per le date sono data_it, \
                         data_estesa_it e ora_it"
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
                        "verifica sconosciuta `{name}` dopo `is`{hint} (quelle esistenti: {})",
                        TERA_TESTS.join(", ")
                    ),
                ))
            }
            Found::Function { name, .. } => {
                if TERA_FUNCTIONS.contains(&name.as_str()) {
                    return None;
                }
                if name == "get_env" {
                    return Some((
                        format!("function:{name}"),
                        templates::GET_ENV_REFUSED.to_string(),
                    ));
                }
                Some((
                    format!("function:{name}"),
                    format!(
                        "funzione sconosciuta `{name}()`: i modelli possono usare solo range(), \
                         throw() e super()"
                    ),
                ))
            }
            Found::Template { name, .. } => {
                if outside_the_set(name) {
                    return Some((
                        format!("template:{name}"),
                        format!(
                            "`{name}` è fuori dalla cartella dei modelli: include, import ed \
                             extends possono nominare solo i file della cartella, con il \
                             percorso a partire da essa (per esempio layout/base.txt)"
                        ),
                    ));
                }
                if sources.contains_key(name) {
                    return None;
                }
                let hint = suggestion(name, sources.keys().map(String::as_str));
                Some((
                    format!("template:{name}"),
                    format!(
                        "non esiste il modello `{name}`{hint} (i nomi partono dalla cartella dei \
                         modelli, per esempio layout/base.txt)"
                    ),
                ))
            }
        }
    }
}

/// Whether a template name points out of the folder: absolute, with a parent step, a drive or
/// a backslash. Tera would not find such a name in the set anyway; the check says why.
fn outside_the_set(name: &str) -> bool {
    name.starts_with('/')
        || name.contains('\\')
        || name.contains(':')
        || name.split('/').any(|step| step == "..")
}

/// ", did you mean `x`?" for the closest candidate, when it is close.
fn suggestion<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| (edit_distance(name, c), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d > 0 && d <= 3 && d * 3 <= name.chars().count().max(3) => {
            format!(" (forse `{c}`?)")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggestion(
                "user.frist_name",
                ["user.first_name", "deadline"].into_iter()
            ),
            " (forse `user.first_name`?)"
        );
        assert_eq!(suggestion("zzz", ["deadline"].into_iter()), "");
    }
}
