//! The configuration layers one by one: which key each layer sets, whether every key is known,
//! and the effective configuration as `avvisi config show` prints it, with each value's source
//! and the secrets masked.
//!
//! The known keys are the keys of the built-in copy of `config/default.toml`: the settings
//! structs require every field and refuse unknown ones, so that file and the structs always
//! name the same keys (a test in `config` loads the defaults to hold them to it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Source as _, Value, ValueKind};

use super::{invalid, ConfigError, EMBEDDED_DEFAULTS};

/// The prefix of the configuration's environment variables; `__` separates section and key.
const ENV_PREFIX: &str = "AVVISI__";

/// Where a configuration value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `config/default.toml` in the working directory (`path`), or the copy built into the
    /// binary (`path` is `None`).
    Default { path: Option<PathBuf> },
    /// The file given with `--config`.
    File { path: PathBuf },
    /// An `AVVISI__SECTION__KEY` environment variable.
    Env { name: String },
}

impl Origin {
    /// Where the key was written, for the unknown-key message.
    fn place(&self) -> String {
        match self {
            Origin::Default { path: Some(path) } | Origin::File { path } => {
                format!("in {}", path.display())
            }
            Origin::Default { path: None } => "in the built-in defaults".to_string(),
            Origin::Env { name } => format!("from the environment variable {name}"),
        }
    }
}

impl fmt::Display for Origin {
    /// `default`, `file PATH` or `env NAME`: the source column of `avvisi config show`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default { .. } => f.write_str("default"),
            Origin::File { path } => write!(f, "file {}", path.display()),
            Origin::Env { name } => write!(f, "env {name}"),
        }
    }
}

impl serde::Serialize for Origin {
    /// As in the text: `default`, `file PATH` or `env NAME`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A key that no setting reads, with the known key it most likely meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// The key as written, `section.key` (from a variable: its name less the prefix, lower case).
    pub key: String,
    /// Where it was written.
    pub origin: Origin,
    /// The known key it most likely meant, when one is close enough to say.
    pub suggestion: Option<String>,
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "configuration key `{}` ({}) is not known",
            self.key,
            self.origin.place()
        )?;
        match (&self.suggestion, &self.origin) {
            (Some(known), Origin::Env { .. }) => {
                write!(f, ": did you mean `{known}` ({})?", env_name(known))
            }
            (Some(known), _) => write!(f, ": did you mean `{known}`?"),
            (None, _) => f.write_str(" (`avvisi config show` lists every key)"),
        }
    }
}

/// The environment variable that sets `key`.
pub(super) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"))
}

/// The three layers, read, with the key each one sets.
pub(super) struct Layers {
    /// The leaf keys of each layer, in layer order (a later one wins), with their origin.
    set: Vec<(String, Origin)>,
    builder: config::ConfigBuilder<config::builder::DefaultState>,
}

impl Layers {
    /// Reads `config/default.toml` (or the built-in copy), `extra_file` and the `AVVISI__`
    /// variables among `env`.
    pub(super) fn read(
        extra_file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layers, ConfigError> {
        let mut set = Vec::new();
        let defaults = Path::new("config/default.toml");
        let mut builder = config::Config::builder();
        if defaults.is_file() {
            let file = config::File::from(defaults);
            let origin = Origin::Default {
                path: Some(defaults.to_path_buf()),
            };
            set.extend(leaf_keys(&file.collect()?).map(|key| (key, origin.clone())));
            builder = builder.add_source(file);
        } else {
            builder = builder.add_source(config::File::from_str(
                EMBEDDED_DEFAULTS,
                config::FileFormat::Toml,
            ));
            // The built-in copy defines the known keys: nothing in it can be unknown.
        }
        if let Some(path) = extra_file {
            if !path.is_file() {
                return Err(invalid(
                    "--config",
                    path.display().to_string(),
                    "an existing TOML file",
                ));
            }
            let file = config::File::from(path);
            let origin = Origin::File {
                path: path.to_path_buf(),
            };
            set.extend(leaf_keys(&file.collect()?).map(|key| (key, origin.clone())));
            builder = builder.add_source(file);
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let mut names: Vec<&String> = env.keys().collect();
        names.sort();
        for name in names {
            // The key `config::Environment` derives from the name, the same way.
            let key = name[ENV_PREFIX.len()..].to_lowercase().replace("__", ".");
            set.push((key, Origin::Env { name: name.clone() }));
        }
        let mut environment = config::Environment::with_prefix("AVVISI")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("calendar.reminder_days_before");
        // Every cadence key is a list, one per audience of the defaults' `[calendar.cadence]`.
        for key in known_keys() {
            if key.starts_with("calendar.cadence.") {
                environment = environment.with_list_parse_key(&key);
            }
        }
        builder = builder.add_source(environment.source(Some(env)));
        Ok(Layers { set, builder })
    }

    /// Every key set by a layer that no setting reads, each with the nearest known key.
    pub(super) fn unknown(&self) -> Vec<UnknownKey> {
        let known = known_keys();
        self.set
            .iter()
            .filter(|(key, _)| !known.contains(key))
            .map(|(key, origin)| UnknownKey {
                key: key.clone(),
                origin: origin.clone(),
                suggestion: nearest(key, &known),
            })
            .collect()
    }

    /// The layers merged, and the effective configuration with each value's source.
    pub(super) fn build(self) -> Result<(config::Config, Effective), ConfigError> {
        let merged = self.builder.build()?;
        let mut values = BTreeMap::new();
        flatten(&merged.clone().try_deserialize()?, "", &mut |key, value| {
            values.insert(key, value.clone());
        });
        let entries = values
            .into_iter()
            .map(|(key, value)| {
                let source = self
                    .set
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == key)
                    .map(|(_, origin)| origin.clone())
                    .unwrap_or(Origin::Default { path: None });
                Entry {
                    value: shown(&key, &value),
                    key,
                    source,
                }
            })
            .collect();
        Ok((merged, Effective(entries)))
    }
}

/// The keys of the built-in defaults: every key a setting reads.
fn known_keys() -> BTreeSet<String> {
    let defaults = config::File::from_str(EMBEDDED_DEFAULTS, config::FileFormat::Toml)
        .collect()
        .expect("the built-in defaults are valid TOML");
    leaf_keys(&defaults).collect()
}

/// The dotted keys of the values in `map` that are not tables (a list is one value).
fn leaf_keys(map: &config::Map<String, Value>) -> impl Iterator<Item = String> {
    let mut keys = Vec::new();
    for (name, value) in map {
        flatten(value, name, &mut |key, _| keys.push(key));
    }
    keys.into_iter()
}

fn flatten(value: &Value, key: &str, out: &mut impl FnMut(String, &Value)) {
    match &value.kind {
        ValueKind::Table(table) => {
            for (name, inner) in table {
                let inner_key = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                flatten(inner, &inner_key, out);
            }
        }
        _ => out(key.to_string(), value),
    }
}

/// The known key `key` most likely meant: a small edit away (`smtp.pasword`, `smpt.url`), or
/// the same name in another section (`smtp.from` for `mail.from`).
fn nearest(key: &str, known: &BTreeSet<String>) -> Option<String> {
    fn by_distance<'k>(
        key: &str,
        candidates: impl Iterator<Item = &'k String>,
    ) -> Option<(usize, &'k String)> {
        candidates
            .map(|k| (strsim::damerau_levenshtein(key, k), k))
            .min()
    }
    let (distance, closest) = by_distance(key, known.iter())?;
    if distance <= 2 {
        return Some(closest.clone());
    }
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if let Some((_, moved)) = by_distance(
        key,
        known.iter().filter(|k| k.rsplit('.').next() == Some(leaf)),
    ) {
        return Some(moved.clone());
    }
    // A few more edits in a long key; beyond that a suggestion would be a guess.
    (distance <= 3 && distance * 3 <= key.len()).then(|| closest.clone())
}

/// Whether the value of `key` is a secret: a password, a token, key material. A `*_file` key
/// names the file that holds the secret, and its path is no secret.
fn is_secret(key: &str) -> bool {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if leaf.ends_with("_file") {
        return false;
    }
    ["password", "secret", "token", "private_key"]
        .iter()
        .any(|word| leaf.contains(word))
        || leaf == "key"
}

/// The value of `key` as `config show` prints it: secrets as `***` (an unset one stays empty,
/// which is worth seeing), URLs without their password.
fn shown(key: &str, value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    let empty = matches!(&value.kind, ValueKind::String(s) if s.is_empty())
        || matches!(value.kind, ValueKind::Nil);
    if is_secret(key) && !empty {
        return J::String("***".to_string());
    }
    match &value.kind {
        ValueKind::Nil => J::Null,
        ValueKind::Boolean(b) => J::Bool(*b),
        ValueKind::I64(n) => J::from(*n),
        ValueKind::U64(n) => J::from(*n),
        // Beyond what JSON numbers hold exactly; no setting is that large.
        ValueKind::I128(n) => J::String(n.to_string()),
        ValueKind::U128(n) => J::String(n.to_string()),
        ValueKind::Float(x) => J::from(*x),
        ValueKind::String(s) if s.contains("://") => J::String(mask_url(s)),
        ValueKind::String(s) => J::String(s.clone()),
        ValueKind::Array(items) => J::Array(items.iter().map(|v| shown(key, v)).collect()),
        ValueKind::Table(_) => J::String("(table)".to_string()),
    }
}

/// A URL with the password of its user part, and any password-like query parameter, masked.
fn mask_url(url: &str) -> String {
    super::redact_url(url)
}

/// One key of the effective configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    /// `section.key`.
    pub key: String,
    /// The value in effect, secrets masked.
    pub value: serde_json::Value,
    /// The layer the value comes from.
    pub source: Origin,
}

/// The effective configuration: every key, its value (secrets masked) and its source. Safe to
/// print or log: it holds no secret.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective(pub Vec<Entry>);

impl Effective {
    /// The entry of `key`, if there is such a key.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.0.iter().find(|e| e.key == key)
    }

    /// TOML-like text: a `[section]` per section, `key = value` lines, and the source of each
    /// value as a trailing comment.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let mut sections: BTreeMap<&str, Vec<(&str, String, &Origin)>> = BTreeMap::new();
        for e in &self.0 {
            let (section, name) = e.key.split_once('.').unwrap_or(("", &e.key));
            sections
                .entry(section)
                .or_default()
                .push((name, toml_value(&e.value), &e.source));
        }
        for (section, lines) in sections {
            if !out.is_empty() {
                out.push('\n');
            }
            if !section.is_empty() {
                out.push_str(&format!("[{section}]\n"));
            }
            let width = lines
                .iter()
                .map(|(name, value, _)| name.len() + value.len() + 3)
                .max()
                .unwrap_or(0);
            for (name, value, source) in lines {
                let line = format!("{name} = {value}");
                out.push_str(&format!("{line:<width$}  # {source}\n"));
            }
        }
        out
    }

    /// `[{"key": "smtp.password", "value": "***", "source": "env AVVISI__SMTP__PASSWORD"}, ...]`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("entries are plain data")
    }
}

/// A JSON value written the TOML way (`[7, 3, 1]`, `"text"`).
fn toml_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        serde_json::Value::Null => "\"\"".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_near_miss_gets_the_key_it_meant() {
        let known = known_keys();
        assert_eq!(
            nearest("smtp.pasword", &known).as_deref(),
            Some("smtp.password")
        );
        assert_eq!(nearest("smpt.url", &known).as_deref(), Some("smtp.url"));
        assert_eq!(
            nearest("delivery.concurency", &known).as_deref(),
            Some("delivery.concurrency")
        );
        // The right name in the wrong section.
        assert_eq!(nearest("smtp.from", &known).as_deref(), Some("mail.from"));
        assert_eq!(nearest("completely.different", &known), None);
    }

    #[test]
    fn secrets_are_masked_and_paths_to_them_are_not() {
        let s = |text: &str| Value::new(None, ValueKind::String(text.to_string()));
        assert_eq!(shown("smtp.password", &s("hunter2")), "***");
        assert_eq!(shown("smtp.password", &s("")), "");
        // A numeric password from the environment arrives as a number.
        assert_eq!(
            shown("smtp.password", &Value::new(None, ValueKind::I64(123456))),
            "***"
        );
        assert_eq!(
            shown("smtp.password_file", &s("/run/secrets/smtp")),
            "/run/secrets/smtp"
        );
        assert_eq!(
            shown("dkim.private_key", &s("-----BEGIN")),
            "***",
            "key material, should such a key appear"
        );
        assert_eq!(
            shown("database.url", &s("postgres://avvisi:hunter2@db/avvisi")),
            "postgres://avvisi:***@db/avvisi"
        );
        assert_eq!(
            shown(
                "database.url",
                &s("postgres://db/avvisi?user=avvisi&password=hunter2")
            ),
            "postgres://db/avvisi?user=avvisi&password=***"
        );
        assert_eq!(
            shown("smtp.url", &s("smtp://u:p%40ss@relay:587?tls=required")),
            "smtp://u:***@relay:587?tls=required"
        );
    }

    #[test]
    fn env_names_map_to_keys_and_back() {
        assert_eq!(env_name("smtp.password"), "AVVISI__SMTP__PASSWORD");
        let unknown = UnknownKey {
            key: "smpt.url".into(),
            origin: Origin::Env {
                name: "AVVISI__SMPT__URL".into(),
            },
            suggestion: Some("smtp.url".into()),
        };
        assert_eq!(
            unknown.to_string(),
            "configuration key `smpt.url` (from the environment variable AVVISI__SMPT__URL) \
             is not known: did you mean `smtp.url` (AVVISI__SMTP__URL)?"
        );
    }
}
