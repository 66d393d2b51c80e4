//! Settings: `config/default.toml`, then `--config FILE`, then `AVVISI__SECTION__KEY` variables.
//!
//! The raw layers are deserialized into plain structs, then [`Settings::load`] checks every value
//! that has a meaning beyond its type (time zone, local times, URLs, addresses) so that a bad value
//! stops the program before it touches the database, with the key, the value and what was expected.
//! Before that, a key that no setting reads (a typo in a file or a variable name) is refused with
//! the known key it most likely meant: a misspelt override would otherwise be ignored in silence
//! and the default would run in production ([`layers`]).

use std::path::{Path, PathBuf};

use chrono::{DateTime, LocalResult, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The built-in copy of `config/default.toml`, used when the file is not in the working directory.
const EMBEDDED_DEFAULTS: &str = include_str!("../config/default.toml");

mod checks;
mod layers;
mod redact;
mod step;

use checks::{check_calendar, check_dkim, check_smtp, check_unsubscribe, parse_mailbox};

pub use layers::{Effective, Entry, Origin, UnknownKey};
pub use redact::redact_url;
pub use step::{Step, UnknownStep};

/// How long a statement waits for a SQLite file locked by another process, unless configured
/// (`database.busy_timeout_seconds`).
pub(crate) const DEFAULT_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A configuration problem, reported before anything else happens.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// Keys that no setting reads, one per line, each with the key it most likely meant.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    UnknownKeys(Vec<UnknownKey>),
    #[error("configuration key `{key}` has value {value:?}: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("configuration key `{key}`: cannot read {}: {source}{}", path.display(), credential_hint(key, path))]
    File {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a file under `/run/credentials/` is missing outside the unit, and what to do instead.
fn credential_hint(key: &str, path: &Path) -> String {
    if path.starts_with("/run/credentials") {
        format!(
            " (a systemd credential, present only inside the running unit: outside it, point {} \
             at a file this user can read; docs/operations.md, \"Configure\")",
            layers::env_name(key)
        )
    } else {
        String::new()
    }
}

fn invalid(
    key: impl Into<String>,
    value: impl Into<String>,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

/// Everything the program reads from configuration, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub delivery: DeliverySettings,
    pub smtp: SmtpSettings,
    pub mail: MailSettings,
    pub portal_url: String,
    pub calendar: CalendarSettings,
    pub templates_dir: PathBuf,
    /// `templates.development`: the folder is the live set, reloaded when it changes; the
    /// published sets are ignored. For a template author's own machine, never production.
    pub templates_development: bool,
    pub import: ImportSettings,
    pub bounce: BounceSettings,
    pub approval: ApprovalSettings,
    pub complaints: ComplaintSettings,
    pub daemon: DaemonSettings,
    pub rate: RateSettings,
    pub log: LogSettings,
    /// Where `avvisi daemon` serves health, metrics and the status page; `None`: nowhere.
    pub http: HttpSettings,
    /// The one-click unsubscribe (RFC 8058): its public address, its key, its own listener.
    pub unsubscribe: UnsubscribeSettings,
    /// Every key with its value and its source, secrets masked (`avvisi config show`).
    pub effective: Effective,
}

/// What the logs may say about people.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Logs name people by `user_id` only; `true` leaves the email addresses and fiscal codes
    /// that relay replies and errors quote in the log lines, for a debugging session.
    pub personal_data: bool,
    /// Plain lines for people, or one JSON object per line for a log collector.
    pub format: LogFormat,
    /// Off a terminal, long work (an import, `run --once`) prints a progress line this often.
    pub progress_seconds: u64,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[http]`: the daemon's endpoints.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// `None` when `http.address` is empty: no endpoints.
    pub address: Option<std::net::SocketAddr>,
    /// How long a console session lasts after its login.
    pub session_minutes: u32,
    /// The console's address as people reach it (through the proxy); empty when unknown. Its
    /// scheme decides the session cookie's `Secure` flag.
    pub public_url: String,
    /// The reverse proxies whose `X-Forwarded-For` is believed (`http.trusted_proxies`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl HttpSettings {
    /// Whether the console is reached over TLS: its cookie is then marked `Secure`.
    pub fn https(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// `[unsubscribe]`: the one-click unsubscribe links of the streams that are not the user's own
/// procedure (see `audience::optout`).
#[derive(Clone, Default)]
pub struct UnsubscribeSettings {
    /// The public address of the endpoint, without a final `/`; the links are `URL/u/TOKEN`.
    /// `None`: the files transport writes a placeholder, and SMTP delivery is refused.
    pub public_url: Option<String>,
    /// The key of the tokens (HMAC-SHA256); required with `public_url` or `address`.
    pub secret: Option<SecretString>,
    /// Where `avvisi daemon` serves the endpoint (its own listener, not the console's).
    pub address: Option<std::net::SocketAddr>,
    /// A mailbox offered beside the https link (`<mailto:...>`), when set.
    pub mailto: Option<lettre::Address>,
}

impl std::fmt::Debug for UnsubscribeSettings {
    // The secret must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsubscribeSettings")
            .field("public_url", &self.public_url)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("address", &self.address)
            .field("mailto", &self.mailto)
            .finish()
    }
}

/// The relay's limits (0 = none), for every process on the database together (see
/// `deliver::quota`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    pub per_second: u32,
    pub per_hour: u32,
}

/// A DKIM signing configuration, loaded and checked at start.
#[derive(Clone)]
pub struct Dkim(pub std::sync::Arc<lettre::message::dkim::DkimConfig>);

impl std::fmt::Debug for Dkim {
    // The key must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dkim(***)")
    }
}

/// How `avvisi daemon` paces itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    pub planner_cron: String,
    pub poll_seconds: u64,
    pub template_poll_seconds: u64,
    pub shutdown_grace_seconds: u64,
    pub relay_backoff_max_seconds: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
    /// Pool size for PostgreSQL; SQLite always uses a single connection.
    pub max_connections: u32,
    /// How long a statement waits for a SQLite file locked by another process before failing.
    #[serde(default = "default_busy_timeout_seconds")]
    pub busy_timeout_seconds: u64,
}

fn default_busy_timeout_seconds() -> u64 {
    DEFAULT_BUSY_TIMEOUT.as_secs()
}

impl std::fmt::Debug for DatabaseSettings {
    // The URL may carry the database password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Where rendered emails go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    File,
    Smtp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    pub transport: TransportKind,
    /// Folder of the `.eml` files for the file transport.
    pub dir: PathBuf,
    pub batch_size: u32,
    pub concurrency: u32,
    pub max_attempts: u32,
    pub retry_base_seconds: u64,
    pub retry_max_seconds: u64,
    pub lease_seconds: u64,
    /// The circuit breaker: after this many messages in a row refused with the same reply
    /// (different recipients), delivery stops and their campaigns are paused; 0 turns it off.
    pub breaker_threshold: u32,
    /// A provider that asks us to slow down (`421 4.7.28`...) holds its domain this long, doubled
    /// at each hold in a row (see `deliver::hold`)...
    pub domain_hold_base_seconds: u64,
    /// ...up to this long.
    pub domain_hold_max_seconds: u64,
}

#[derive(Clone)]
pub struct SmtpSettings {
    pub url: String,
    pub username: Option<String>,
    /// `smtp.password`, or the file named by `smtp.password_file`, read only when a command
    /// connects to the relay ([`SmtpPassword::read`]); never printed.
    pub password: Option<SmtpPassword>,
    pub timeout_seconds: u64,
    /// A pooled connection idle at least this long is checked with NOOP before it is reused;
    /// fresher ones are reused at once (a NOOP before every message costs a round trip each).
    pub check_idle_seconds: u64,
    /// Send MAIL, RCPT and DATA in one write when the relay offers PIPELINING (RFC 2920): two
    /// round trips per message instead of four. Off for a relay that offers it and mishandles it.
    pub pipelining: bool,
    /// `smtp.tls_ca_file`: certificates trusted for the relay on top of the public roots (an
    /// internal CA), read and checked when the configuration is loaded.
    pub tls_ca: Option<TlsCa>,
}

/// The certificates of `smtp.tls_ca_file`, parsed: at least one, each a valid trust anchor.
#[derive(Clone)]
pub struct TlsCa {
    pub path: PathBuf,
    pub certificates: lettre::transport::smtp::client::Certificate,
}

impl std::fmt::Debug for TlsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsCa").field(&self.path).finish()
    }
}

/// Where the relay's password comes from. A file is read only by the commands that connect to
/// the relay: `migrate`, `templates check` or `config show` need no SMTP password, and the
/// production file names a systemd credential that exists only inside the running unit.
#[derive(Clone)]
pub enum SmtpPassword {
    /// `smtp.password` (or `AVVISI__SMTP__PASSWORD`).
    Inline(SecretString),
    /// `smtp.password_file`: the file holds the password alone (a final newline is dropped).
    File(PathBuf),
}

impl SmtpPassword {
    /// The password, reading the file now when it comes from one; the error names the key, the
    /// file and why it could not be read.
    pub fn read(&self) -> Result<SecretString, ConfigError> {
        match self {
            SmtpPassword::Inline(secret) => Ok(secret.clone()),
            SmtpPassword::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                    key: "smtp.password_file",
                    path: path.clone(),
                    source,
                })?;
                Ok(SecretString::from(
                    text.trim_end_matches(['\r', '\n']).to_string(),
                ))
            }
        }
    }
}

impl std::fmt::Debug for SmtpPassword {
    // The path is no secret; the password is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmtpPassword::Inline(_) => f.write_str("Inline(***)"),
            SmtpPassword::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl std::fmt::Debug for SmtpSettings {
    // The URL may carry the relay's password (`smtp://user:password@relay`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("check_idle_seconds", &self.check_idle_seconds)
            .field("pipelining", &self.pipelining)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    pub from: lettre::message::Mailbox,
    pub reply_to: Option<lettre::message::Mailbox>,
    pub organisation: String,
    pub service_name: String,
    /// Sign every email when configured.
    pub dkim: Option<Dkim>,
    /// The envelope sender (MAIL FROM, which becomes the Return-Path), where returned mail
    /// goes; `None`: the address of `from`.
    pub bounce_address: Option<lettre::Address>,
    /// VERP: the envelope sender is `LOCAL+TOKEN@DOMAIN` of `bounce_address`, the token naming
    /// the outbox row, so that a bounce names its message without guessing.
    pub verp: bool,
    /// The domain under which each stream's `List-Id` is named (`<STREAM.DOMAIN>`).
    pub list_id_domain: String,
    /// The sender's id, the last field of every `Feedback-ID` (`CAMPAIGN:STREAM:SENDER`).
    pub feedback_id: String,
}

/// A second person's approval before a one-off campaign's launch (docs/console.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSettings {
    /// A one-off campaign is launched only once someone other than its creator approved it;
    /// `false` only for a test installation.
    pub required: bool,
    /// A template set is published only once another editor or an approver approved it (not
    /// its author); the command line's `templates publish` obeys the same rule.
    #[serde(default)]
    pub templates: bool,
}

/// How returned mail is read (`avvisi bounces import`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceSettings {
    /// Soft bounces (4.x.x) of one address within `soft_window_days` that suppress it.
    pub soft_limit: u32,
    pub soft_window_days: u32,
    /// Where the unrecognised messages of an import are listed, for a human (a relative path
    /// is taken from the working directory).
    pub unrecognised_file: PathBuf,
}

/// How complaints are read and acted on (`avvisi complaints import`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplaintSettings {
    /// A campaign whose complaints pass this percentage of its sent emails is paused...
    pub pause_percent: f64,
    /// ...once it has sent at least this many (a few early complaints are no rate).
    pub min_sent: u64,
}

/// The campaign calendar, already converted to UTC instants.
#[derive(Debug, Clone)]
pub struct CalendarSettings {
    pub timezone: Tz,
    pub campaign_start: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub maintenance_start: DateTime<Utc>,
    /// The maintenance notice goes to every enabled user here; it expires at `maintenance_start`.
    pub maintenance_notice_at: DateTime<Utc>,
    pub reminder_days_before: Vec<u32>,
    pub reminder_time: NaiveTime,
    pub sending_hours_start: NaiveTime,
    pub sending_hours_end: NaiveTime,
    /// The reopening notices expire this many days after the reopening.
    pub reopening_notice_days: u32,
    /// A one-off campaign without `--expires-at` expires this many days after it starts.
    pub oneoff_expiry_days: u32,
    /// Which reminder steps each audience gets (`calendar.cadence`).
    pub cadence: Cadence,
}

/// Which reminder steps each audience gets, and which of them go out only inside a daily
/// digest (`calendar.cadence`). Keyed by audience name; an audience not listed gets every step.
#[derive(Debug, Clone, Default)]
pub struct Cadence {
    /// Audience name and its steps, in calendar order.
    pub steps: Vec<(String, Vec<Step>)>,
    /// (audience name, step): sent only merged with something else due that day, never alone.
    pub only_in_digest: Vec<(String, Step)>,
}

impl Cadence {
    /// Whether `audience` gets `step`.
    pub fn allows(&self, audience: &str, step: Step) -> bool {
        self.steps
            .iter()
            .find(|(a, _)| a == audience)
            .is_none_or(|(_, steps)| steps.contains(&step))
    }

    /// Whether `audience`'s `step` goes out only inside a daily digest.
    pub fn only_in_digest(&self, audience: &str, step: Step) -> bool {
        self.only_in_digest
            .iter()
            .any(|(a, s)| a == audience && *s == step)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSettings {
    pub max_gone_percent: u32,
    /// Reminders wait while the newest full snapshot is older than this.
    pub max_age_hours: u32,
}

/// The layers as written, before checking. Every field is required and unknown ones are refused,
/// here and in each section: the built-in defaults must then name exactly the keys read here,
/// which makes them the list of known keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    database: DatabaseSettings,
    delivery: DeliverySettings,
    smtp: RawSmtp,
    mail: RawMail,
    portal: RawPortal,
    calendar: RawCalendar,
    templates: RawTemplates,
    import: ImportSettings,
    bounce: BounceSettings,
    approval: ApprovalSettings,
    complaints: ComplaintSettings,
    daemon: DaemonSettings,
    rate: RateSettings,
    dkim: RawDkim,
    log: LogSettings,
    http: RawHttp,
    unsubscribe: RawUnsubscribe,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnsubscribe {
    public_url: String,
    secret: SecretString,
    address: String,
    mailto: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    address: String,
    session_minutes: u32,
    #[serde(default)]
    public_url: String,
    #[serde(default)]
    trusted_proxies: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDkim {
    selector: String,
    domain: String,
    key_file: String,
    algorithm: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    url: String,
    username: String,
    password: SecretString,
    password_file: String,
    timeout_seconds: u64,
    check_idle_seconds: u64,
    pipelining: bool,
    tls_ca_file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMail {
    from: String,
    reply_to: String,
    organisation: String,
    service_name: String,
    bounce_address: String,
    verp: bool,
    list_id_domain: String,
    feedback_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortal {
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    timezone: String,
    campaign_start: String,
    deadline: String,
    maintenance_start: String,
    maintenance_notice_at: String,
    reminder_days_before: OneOrMany,
    reminder_time: String,
    sending_hours_start: String,
    sending_hours_end: String,
    reopening_notice_days: u32,
    oneoff_expiry_days: u32,
    cadence: RawCadence,
}

/// `[calendar.cadence]` as written: the steps of each reminder audience, keyed by its name. The
/// names are those of the built-in defaults (any other key is refused as unknown), and the
/// audience rules check that these are their reminder audiences; config knows no audience.
#[derive(Deserialize)]
struct RawCadence {
    only_in_digest: TextList,
    #[serde(flatten)]
    audiences: std::collections::BTreeMap<String, TextList>,
}

/// A list of words; from the environment `first,d1` arrives as a list, `first` as one word.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextList {
    One(String),
    Many(Vec<String>),
}

impl TextList {
    fn items(self) -> Vec<String> {
        match self {
            TextList::One(s) if s.trim().is_empty() => Vec::new(),
            TextList::One(s) => vec![s],
            TextList::Many(v) => v,
        }
    }
}

/// `AVVISI__CALENDAR__REMINDER_DAYS_BEFORE=3` arrives as a number, `7,3,1` as a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
    /// From the environment, a list arrives as text items.
    ManyText(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    dir: PathBuf,
    #[serde(default)]
    development: bool,
}

impl Settings {
    /// Loads the layers (defaults, optional file, environment) and checks them.
    pub fn load(extra_file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(extra_file, std::env::vars())
    }

    /// Same as [`Settings::load`] with the environment given explicitly (tests use this).
    pub fn load_with_env(
        extra_file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let layers = layers::Layers::read(extra_file, env)?;
        let unknown = layers.unknown();
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownKeys(unknown));
        }
        let (merged, effective) = layers.build()?;
        let raw: Raw = merged.try_deserialize()?;
        Self::check(raw, effective)
    }

    fn check(raw: Raw, effective: Effective) -> Result<Settings, ConfigError> {
        let url = raw.database.url.trim();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                redact_url(url),
                "sqlite://PATH or postgres://USER@HOST:PORT/DB",
            ));
        }
        if raw.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "0", "at least 1"));
        }
        let d = &raw.delivery;
        for (key, value) in [
            ("delivery.batch_size", d.batch_size),
            ("delivery.concurrency", d.concurrency),
            ("delivery.max_attempts", d.max_attempts),
        ] {
            if value == 0 {
                return Err(invalid(key, "0", "at least 1"));
            }
        }
        if d.retry_base_seconds == 0 || d.retry_max_seconds < d.retry_base_seconds {
            return Err(invalid(
                "delivery.retry_max_seconds",
                d.retry_max_seconds.to_string(),
                format!(
                    "at least delivery.retry_base_seconds ({}), which must be positive",
                    d.retry_base_seconds
                ),
            ));
        }
        if d.domain_hold_base_seconds == 0 || d.domain_hold_max_seconds < d.domain_hold_base_seconds
        {
            return Err(invalid(
                "delivery.domain_hold_max_seconds",
                d.domain_hold_max_seconds.to_string(),
                format!(
                    "at least delivery.domain_hold_base_seconds ({}), which must be positive",
                    d.domain_hold_base_seconds
                ),
            ));
        }
        if d.lease_seconds < 10 {
            return Err(invalid(
                "delivery.lease_seconds",
                d.lease_seconds.to_string(),
                "at least 10 seconds",
            ));
        }

        let smtp = check_smtp(raw.smtp)?;
        let mail = MailSettings {
            from: parse_mailbox("mail.from", &raw.mail.from)?,
            reply_to: match raw.mail.reply_to.trim() {
                "" => None,
                s => Some(parse_mailbox("mail.reply_to", s)?),
            },
            organisation: raw.mail.organisation,
            service_name: raw.mail.service_name,
            dkim: check_dkim(raw.dkim)?,
            bounce_address: match raw.mail.bounce_address.trim() {
                "" => None,
                s => Some(s.parse().map_err(|_| {
                    invalid(
                        "mail.bounce_address",
                        s,
                        "a bare address like bounces@example.it (no display name)",
                    )
                })?),
            },
            verp: raw.mail.verp,
            list_id_domain: checks::check_list_id_domain(&raw.mail.list_id_domain)?,
            feedback_id: checks::check_feedback_id(&raw.mail.feedback_id)?,
        };
        if mail.verp && mail.bounce_address.is_none() {
            return Err(invalid(
                "mail.verp",
                "true",
                "false, or a mail.bounce_address to add the tokens to",
            ));
        }
        if raw.bounce.soft_limit == 0 || raw.bounce.soft_window_days == 0 {
            return Err(invalid(
                "bounce.soft_limit",
                format!(
                    "{} (within {} days)",
                    raw.bounce.soft_limit, raw.bounce.soft_window_days
                ),
                "at least 1 soft bounce within at least 1 day",
            ));
        }
        if !(raw.complaints.pause_percent > 0.0 && raw.complaints.pause_percent <= 100.0) {
            return Err(invalid(
                "complaints.pause_percent",
                raw.complaints.pause_percent.to_string(),
                "a percentage above 0 and at most 100, e.g. 0.3",
            ));
        }
        let portal_url = raw.portal.url.trim().to_string();
        if !(portal_url.starts_with("https://") || portal_url.starts_with("http://"))
            || portal_url.contains(char::is_whitespace)
        {
            return Err(invalid("portal.url", portal_url, "an http(s):// URL"));
        }
        let calendar = check_calendar(raw.calendar)?;
        if raw.import.max_gone_percent > 100 {
            return Err(invalid(
                "import.max_gone_percent",
                raw.import.max_gone_percent.to_string(),
                "a percentage from 0 to 100",
            ));
        }
        let fields = raw.daemon.planner_cron.split_whitespace().count();
        if fields != 6 {
            return Err(invalid(
                "daemon.planner_cron",
                raw.daemon.planner_cron,
                "a cron expression with seconds: 6 fields, e.g. \"0 * * * * *\"",
            ));
        }
        if raw.daemon.poll_seconds == 0 || raw.daemon.template_poll_seconds == 0 {
            return Err(invalid("daemon.poll_seconds", "0", "at least 1 second"));
        }
        if raw.log.progress_seconds == 0 {
            return Err(invalid("log.progress_seconds", "0", "at least 1 second"));
        }
        if raw.http.session_minutes == 0 {
            return Err(invalid("http.session_minutes", "0", "at least 1 minute"));
        }
        let public_url = raw.http.public_url.trim().to_string();
        if !(public_url.is_empty()
            || public_url.starts_with("https://")
            || public_url.starts_with("http://"))
        {
            return Err(invalid(
                "http.public_url",
                public_url,
                "an http:// or https:// address, e.g. https://avvisi.example.it/ (empty: unknown)",
            ));
        }
        let trusted_proxies = raw
            .http
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse().map_err(|_| {
                    invalid(
                        "http.trusted_proxies",
                        a,
                        "IP addresses separated by commas, e.g. \"127.0.0.1, ::1\" (empty: none)",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let address = match raw.http.address.trim() {
            "" => None,
            a => Some(a.parse().map_err(|_| {
                invalid(
                    "http.address",
                    a,
                    "IP:PORT, e.g. 127.0.0.1:9025 (empty: no HTTP endpoints)",
                )
            })?),
        };
        Ok(Settings {
            rate: raw.rate,
            daemon: raw.daemon,
            database: raw.database,
            delivery: raw.delivery,
            smtp,
            mail,
            portal_url,
            calendar,
            templates_dir: raw.templates.dir,
            templates_development: raw.templates.development,
            import: raw.import,
            bounce: raw.bounce,
            approval: raw.approval,
            complaints: raw.complaints,
            log: raw.log,
            http: HttpSettings {
                address,
                session_minutes: raw.http.session_minutes,
                public_url,
                trusted_proxies,
            },
            unsubscribe: check_unsubscribe(raw.unsubscribe)?,
            effective,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_with_env(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn the_cadence_and_the_maintenance_notice_come_from_the_calendar() {
        let s = load(&[]).unwrap();
        let c = &s.calendar.cadence;
        assert!(c.allows("registration_incomplete", Step::DaysBefore(3)));
        assert!(c.allows("credential_recovery_advice", Step::First));
        assert!(!c.allows("credential_recovery_advice", Step::DaysBefore(3)));
        assert!(c.only_in_digest("credential_recovery_advice", Step::DaysBefore(1)));
        assert!(!c.only_in_digest("email_unvalidated", Step::DaysBefore(1)));
        assert_eq!(
            s.calendar.maintenance_notice_at.to_rfc3339(),
            "2026-11-27T08:00:00+00:00"
        );
        // From the environment, a list; a bad step or pair is named with its key.
        let s = load(&[(
            "AVVISI__CALENDAR__CADENCE__CREDENTIAL_RECOVERY_ADVICE",
            "first,d3",
        )])
        .unwrap();
        assert!(s
            .calendar
            .cadence
            .allows("credential_recovery_advice", Step::DaysBefore(3)));
        let err = load(&[("AVVISI__CALENDAR__CADENCE__EMAIL_UNVALIDATED", "first,dd")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("calendar.cadence.email_unvalidated"), "{err}");
        let err = load(&[(
            "AVVISI__CALENDAR__CADENCE__ONLY_IN_DIGEST",
            "credential_recovery_advice:first",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("calendar.cadence.only_in_digest"), "{err}");
        let err = load(&[(
            "AVVISI__CALENDAR__MAINTENANCE_NOTICE_AT",
            "2026-12-02T09:00:00",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("calendar.maintenance_notice_at"), "{err}");
    }

    #[test]
    fn the_unsubscribe_settings_go_together_and_the_key_is_never_shown() {
        let key = "a-key-of-forty-characters-0123456789abcd";
        let s = load(&[
            (
                "AVVISI__UNSUBSCRIBE__PUBLIC_URL",
                "https://avvisi.example.it/u/",
            ),
            ("AVVISI__UNSUBSCRIBE__SECRET", key),
            ("AVVISI__UNSUBSCRIBE__ADDRESS", "127.0.0.1:9026"),
        ])
        .unwrap();
        // The final `/` dropped: the links are URL/u/TOKEN.
        assert_eq!(
            s.unsubscribe.public_url.as_deref(),
            Some("https://avvisi.example.it/u")
        );
        let shown = format!("{s:?}{}", s.effective.to_toml());
        assert!(!shown.contains(key), "{shown}");
        for (env, named) in [
            (
                vec![(
                    "AVVISI__UNSUBSCRIBE__PUBLIC_URL",
                    "https://avvisi.example.it",
                )],
                "unsubscribe.secret",
            ),
            (
                vec![("AVVISI__UNSUBSCRIBE__ADDRESS", "127.0.0.1:9026")],
                "unsubscribe.secret",
            ),
            (
                vec![
                    (
                        "AVVISI__UNSUBSCRIBE__PUBLIC_URL",
                        "http://avvisi.example.it",
                    ),
                    ("AVVISI__UNSUBSCRIBE__SECRET", key),
                ],
                "unsubscribe.public_url",
            ),
            (
                vec![("AVVISI__UNSUBSCRIBE__SECRET", "short-key")],
                "unsubscribe.secret",
            ),
            (
                vec![("AVVISI__MAIL__FEEDBACK_ID", "a:b")],
                "mail.feedback_id",
            ),
            (
                vec![("AVVISI__MAIL__LIST_ID_DOMAIN", "Avvisi")],
                "mail.list_id_domain",
            ),
        ] {
            let err = load(&env).unwrap_err().to_string();
            assert!(err.contains(named), "{env:?}: {err}");
            assert!(!err.contains("short-key") && !err.contains(key), "{err}");
        }
        // http on loopback, for a proxy on the same host or a test.
        assert!(load(&[
            ("AVVISI__UNSUBSCRIBE__PUBLIC_URL", "http://127.0.0.1:9026"),
            ("AVVISI__UNSUBSCRIBE__SECRET", key),
        ])
        .is_ok());
    }

    #[test]
    fn defaults_are_the_2026_calendar() {
        let s = load(&[]).unwrap();
        assert_eq!(
            s.calendar.deadline.to_rfc3339(),
            "2026-11-30T22:59:59+00:00"
        );
        assert_eq!(
            s.calendar.maintenance_start.to_rfc3339(),
            "2026-11-30T23:00:00+00:00"
        );
        assert_eq!(s.delivery.transport, TransportKind::File);
        assert_eq!(s.calendar.reminder_days_before, vec![7, 3, 1]);
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = load(&[
            ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
            ("AVVISI__SMTP__URL", "smtp://127.0.0.1:2526"),
            ("AVVISI__CALENDAR__REMINDER_DAYS_BEFORE", "5,2"),
        ])
        .unwrap();
        assert_eq!(s.delivery.transport, TransportKind::Smtp);
        assert_eq!(s.smtp.url, "smtp://127.0.0.1:2526");
        assert_eq!(s.calendar.reminder_days_before, vec![5, 2]);
    }

    #[test]
    fn bad_values_name_key_and_expectation() {
        let err = load(&[("AVVISI__CALENDAR__TIMEZONE", "Europe/Roma")]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("calendar.timezone") && msg.contains("Europe/Roma"),
            "{msg}"
        );
        let err = load(&[("AVVISI__CALENDAR__DEADLINE", "30/11/2026")]).unwrap_err();
        assert!(err.to_string().contains("calendar.deadline"), "{err}");
        let err = load(&[("AVVISI__MAIL__FROM", "not an address")]).unwrap_err();
        assert!(err.to_string().contains("mail.from"), "{err}");
        let err = load(&[("AVVISI__DELIVERY__TRANSPORT", "pigeon")]).unwrap_err();
        assert!(err.to_string().contains("transport"), "{err}");
    }

    #[test]
    fn nonexistent_local_time_is_refused() {
        // 2027-03-28 02:30 does not exist in Rome (clocks jump from 02:00 to 03:00).
        let err = load(&[("AVVISI__CALENDAR__CAMPAIGN_START", "2027-03-28T02:30:00")]).unwrap_err();
        assert!(err.to_string().contains("daylight-saving"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_the_key_they_meant() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("avvisi.toml");
        std::fs::write(
            &file,
            "[smtp]\npasword = \"x\"\n[delivery]\nconcurrency = 8\n",
        )
        .unwrap();
        let err = Settings::load_with_env(Some(&file), []).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "configuration key `smtp.pasword` (in {}) is not known: did you mean `smtp.password`?",
                file.display()
            )
        );
        // Every unknown key at once, file first, then the environment.
        let err = Settings::load_with_env(
            Some(&file),
            [
                (
                    "AVVISI__SMPT__URL".to_string(),
                    "smtp://127.0.0.1:25".to_string(),
                ),
                ("AVVISI_UNRELATED".to_string(), "not ours".to_string()),
            ],
        )
        .unwrap_err();
        let ConfigError::UnknownKeys(unknown) = &err else {
            panic!("{err}")
        };
        assert_eq!(unknown.len(), 2, "{err}");
        assert_eq!(unknown[1].key, "smpt.url");
        assert_eq!(unknown[1].suggestion.as_deref(), Some("smtp.url"));
        assert!(
            err.to_string().lines().nth(1).unwrap().contains(
                "(from the environment variable AVVISI__SMPT__URL) is not known: did you mean \
                 `smtp.url` (AVVISI__SMTP__URL)?"
            ),
            "{err}"
        );
    }

    #[test]
    fn the_built_in_defaults_name_every_key_and_nothing_else() {
        // Settings refuse unknown fields and require every field: the defaults load only if
        // they are exactly the keys read, so the known-key list cannot drift from the code.
        let s = load(&[]).unwrap();
        assert!(s.effective.0.len() > 40);
        assert!(s
            .effective
            .0
            .iter()
            .all(|e| matches!(e.source, Origin::Default { .. })));
    }

    #[test]
    fn effective_configuration_names_each_source_and_masks_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("site.toml");
        std::fs::write(&file, "[delivery]\nconcurrency = 16\n").unwrap();
        let s = Settings::load_with_env(
            Some(&file),
            [
                ("AVVISI__SMTP__USERNAME", "avvisi"),
                ("AVVISI__SMTP__PASSWORD", "s3cret-pw"),
                (
                    "AVVISI__DATABASE__URL",
                    "postgres://avvisi:hunter2@db:5432/avvisi",
                ),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        let e = &s.effective;
        let password = e.get("smtp.password").unwrap();
        assert_eq!(password.value, "***");
        assert_eq!(password.source.to_string(), "env AVVISI__SMTP__PASSWORD");
        assert_eq!(
            e.get("database.url").unwrap().value,
            "postgres://avvisi:***@db:5432/avvisi"
        );
        let concurrency = e.get("delivery.concurrency").unwrap();
        assert_eq!(concurrency.value, 16);
        assert_eq!(
            concurrency.source.to_string(),
            format!("file {}", file.display())
        );
        assert_eq!(
            e.get("delivery.batch_size").unwrap().source.to_string(),
            "default"
        );
        let text = format!("{}{}{s:?}", e.to_toml(), e.to_json());
        assert!(
            !text.contains("s3cret-pw") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(e.to_toml().contains("[smtp]\n"), "{}", e.to_toml());
    }

    #[test]
    fn password_is_never_printed() {
        let s = load(&[
            ("AVVISI__SMTP__USERNAME", "avvisi"),
            ("AVVISI__SMTP__PASSWORD", "s3cret-pw"),
        ])
        .unwrap();
        assert!(!format!("{s:?}").contains("s3cret-pw"));
        assert_eq!(
            s.smtp.password.unwrap().read().unwrap().expose_secret(),
            "s3cret-pw"
        );
    }

    #[test]
    fn the_password_file_is_read_only_when_the_relay_needs_it() {
        // The production file names a systemd credential, absent outside the unit: the
        // configuration loads all the same (for `migrate`, `templates check`, `config show`).
        let credential = "/run/credentials/avvisi.service/smtp-password";
        let s = load(&[
            ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
            ("AVVISI__SMTP__USERNAME", "avvisi"),
            ("AVVISI__SMTP__PASSWORD_FILE", credential),
        ])
        .unwrap();
        let password = s.smtp.password.expect("a password is configured");
        let err = password.read().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "configuration key `smtp.password_file`: cannot read {credential}: "
            )) && err.contains("No such file")
                && err.contains("only inside the running unit")
                && err.contains("AVVISI__SMTP__PASSWORD_FILE"),
            "{err}"
        );
        // A file that exists is read when asked, its final newline dropped; it is read again
        // each time (a rotated password is picked up by the next connection set-up).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("smtp-password");
        std::fs::write(&file, "relay-s3cret\n").unwrap();
        let s = load(&[
            ("AVVISI__SMTP__USERNAME", "avvisi"),
            ("AVVISI__SMTP__PASSWORD_FILE", file.to_str().unwrap()),
        ])
        .unwrap();
        let password = s.smtp.password.unwrap();
        assert!(format!("{password:?}").contains("smtp-password"));
        assert_eq!(password.read().unwrap().expose_secret(), "relay-s3cret");
        std::fs::remove_file(&file).unwrap();
        let err = password.read().unwrap_err().to_string();
        assert!(
            err.contains(file.to_str().unwrap()) && !err.contains("only inside"),
            "{err}"
        );
    }

    #[test]
    fn a_tls_ca_file_that_trusts_nothing_stops_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("relay-ca.pem");
        let not_pem = dir.path().join("key.txt");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let damaged = dir.path().join("damaged.pem");
        std::fs::write(
            &damaged,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (file, expected) in [
            (&missing, "cannot read"),
            (&not_pem, "a PEM file of CA certificates"),
            (&damaged, "CA certificates"),
        ] {
            let path = file.to_str().unwrap();
            let err = load(&[("AVVISI__SMTP__TLS_CA_FILE", path)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`smtp.tls_ca_file`") && err.contains(path) && err.contains(expected),
                "{err}"
            );
        }
        // Empty: the public roots only.
        assert!(load(&[("AVVISI__SMTP__TLS_CA_FILE", "")])
            .unwrap()
            .smtp
            .tls_ca
            .is_none());
    }
}
