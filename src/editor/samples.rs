//! The sample data every message is rendered with, shared by `templates check`, `templates
//! preview` and the golden tests: recipients whose names exercise escaping and line folding, the
//! situations a message goes out in, and the context each sample gets, built the way the worker
//! builds it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, TimeZone};

use crate::config::Settings;
use crate::config::Step;
use crate::render::templates::{self, MessageContext, UserView};
use crate::render::{context, digest};
use crate::store::UserContact;

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
    fn view(&self) -> UserView {
        let user = UserContact {
            user_id: self.id.to_string(),
            email: self.email.to_string(),
            first_name: self.first_name.to_string(),
            last_name: self.last_name.to_string(),
            institutional_email: self.institutional_email.map(str::to_string),
            pending_email: self.pending_email.map(str::to_string),
            province: self.province.map(str::to_string),
        };
        UserView::new(&user, self.email)
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
        why: "apostrofo nel cognome; senza indirizzo istituzionale; un indirizzo in attesa di validazione",
    },
    SampleUser {
        id: "nicolo",
        first_name: "Nicolò",
        last_name: "Manco",
        email: "nicolo.manco@libero.it",
        institutional_email: Some("nicolo.manco@istruzione.it"),
        pending_email: None,
        province: Some("PA"),
        why: "nome accentato; con indirizzo istituzionale; nessun indirizzo in attesa",
    },
    SampleUser {
        id: "html",
        first_name: "<b>Anna</b>",
        last_name: "Rossi & Figli",
        email: "anna.rossi@example.it",
        institutional_email: Some("anna.rossi@posta.istruzione.it"),
        pending_email: Some("anna.rossi@example.org"),
        province: None,
        why: "codice HTML e una & nel nome: protetti nell'HTML, così come sono nel testo",
    },
    SampleUser {
        id: "a-capo",
        first_name: "Mario\r\nBcc: intruso@example.org",
        last_name: "Bianchi\r\n",
        email: "mario.bianchi@example.it",
        institutional_email: None,
        pending_email: None,
        province: None,
        why: "a capo nel nome: riportato su una riga, nessuna intestazione può essere aggiunta",
    },
];

/// When a message is sent: the step, the days left and the kind of send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    /// Short name used in file names, in Italian for the editors (`3-giorni`, `ultimo-giorno`).
    pub id: &'static str,
    pub step: Step,
    pub days_left: i64,
    pub is_test: bool,
    /// Whether operators have declared the reopening (`reopened_at` set).
    pub reopened: bool,
    /// Sent to the institutional address because the address on record is suppressed.
    pub institutional_fallback: bool,
    pub description: &'static str,
}

/// Every situation a message can be sent in.
pub const SITUATIONS: [Situation; 9] = [
    Situation {
        id: "primo-avviso",
        step: Step::First,
        days_left: 7,
        is_test: false,
        reopened: false,
        institutional_fallback: false,
        description: "primo avviso, 7 giorni alla scadenza",
    },
    Situation {
        id: "7-giorni",
        step: Step::DaysBefore(7),
        days_left: 7,
        is_test: false,
        reopened: false,
        institutional_fallback: false,
        description: "promemoria 7 giorni prima della scadenza",
    },
    Situation {
        id: "3-giorni",
        step: Step::DaysBefore(3),
        days_left: 3,
        is_test: false,
        reopened: false,
        institutional_fallback: false,
        description: "promemoria 3 giorni prima della scadenza",
    },
    Situation {
        id: "1-giorno",
        step: Step::DaysBefore(1),
        days_left: 1,
        is_test: false,
        reopened: false,
        institutional_fallback: false,
        description: "promemoria il giorno prima della scadenza",
    },
    Situation {
        id: "ultimo-giorno",
        step: Step::First,
        days_left: 0,
        is_test: false,
        reopened: false,
        institutional_fallback: false,
        description: "primo avviso il giorno della scadenza (chi entra all'ultimo momento)",
    },
    Situation {
        id: "prova",
        step: Step::DaysBefore(3),
        days_left: 3,
        is_test: true,
        reopened: false,
        institutional_fallback: false,
        description: "messaggio di prova a un operatore ([PROVA])",
    },
    Situation {
        id: "avviso-unico",
        step: Step::Main,
        days_left: 7,
        is_test: false,
        reopened: false,
        institutional_fallback: false,
        description: "avviso unico prima della scadenza",
    },
    Situation {
        id: "dopo-riapertura",
        step: Step::Main,
        days_left: 0,
        is_test: false,
        reopened: true,
        institutional_fallback: false,
        description: "avviso unico dopo la riapertura",
    },
    Situation {
        id: "istituzionale",
        step: Step::DaysBefore(3),
        days_left: 3,
        is_test: false,
        reopened: false,
        institutional_fallback: true,
        description: "promemoria all'indirizzo istituzionale: quello registrato è stato respinto",
    },
];

/// One variant a message is rendered with: a recipient in a situation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `SITUATION-USER`, used in file names and reports (`3-giorni-html`).
    pub id: String,
    pub user: UserView,
    /// The address the email goes to.
    pub to_address: String,
    pub situation: Situation,
    /// For people: who and when.
    pub description: String,
}

/// The view as the worker builds it in `situation`: in the institutional fallback, the email goes
/// to the institutional address (a user without one is not written to at all).
fn fallback(mut user: UserView, situation: &Situation) -> UserView {
    if situation.institutional_fallback && user.has_institutional_email {
        user.email = user.institutional_email.clone();
        user.sent_to_institutional = true;
    }
    user
}

/// The sample variants every message is rendered with: each situation once, the users taking
/// turns, so that every user and every situation appears (9 variants); the fallback to the
/// institutional address goes to a user who has one.
pub fn samples() -> Vec<Sample> {
    SITUATIONS
        .iter()
        .enumerate()
        .map(|(i, situation)| {
            let mut u = &SAMPLE_USERS[i % SAMPLE_USERS.len()];
            if situation.institutional_fallback {
                u = SAMPLE_USERS
                    .iter()
                    .find(|u| u.institutional_email.is_some())
                    .unwrap_or(u);
            }
            let user = fallback(u.view(), situation);
            Sample {
                id: format!("{}-{}", situation.id, u.id),
                to_address: user.email.clone(),
                user,
                situation: *situation,
                description: format!("{}; {}", situation.description, u.why),
            }
        })
        .collect()
}

/// The sample instant of the reopening: 09:00 local, 13 days after the maintenance start's day.
fn sample_reopened_at(settings: &Settings) -> String {
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
    let deadline_day = cal.deadline.with_timezone(&cal.timezone).format("%Y-%m-%d");
    let reopened_at = if sample.situation.reopened || reopening {
        sample_reopened_at(settings)
    } else {
        String::new()
    };
    let about = context::About {
        step: sample.situation.step,
        campaign: &format!("{message}-{deadline_day}"),
        days_left: sample.situation.days_left,
        reopened_at,
        is_test: sample.situation.is_test,
    };
    let mut ctx = context::build(settings, sample.user.clone(), about);
    if message == digest::DIGEST {
        ctx.sections = digest::ordered(
            digest_sections(&sample.situation)
                .iter()
                .map(|template| digest::Section {
                    template: template.to_string(),
                    campaign: format!("{template}-{deadline_day}"),
                    step: sample.situation.step.to_string(),
                })
                .collect(),
        );
        ctx.procedures = digest::procedures(&ctx.sections);
    }
    ctx
}

/// The sections of the digest's sample in `situation`: two and three procedures, with and
/// without the advice and the maintenance information, and the reopening notices merged.
fn digest_sections(situation: &Situation) -> &'static [&'static str] {
    match situation.id {
        "7-giorni" => &[
            "registration_incomplete",
            "email_unvalidated",
            "code_regeneration_pending",
        ],
        "3-giorni" => &[
            "email_unvalidated",
            "code_regeneration_pending",
            "maintenance_notice",
            "credential_recovery_advice",
        ],
        "ultimo-giorno" => &[
            "registration_incomplete",
            "email_unvalidated",
            "code_regeneration_pending",
            "credential_recovery_advice",
        ],
        "prova" => &["email_unvalidated", "credential_recovery_advice"],
        "avviso-unico" => &["maintenance_notice", "credential_recovery_advice"],
        "dopo-riapertura" => &[
            "reopening_general",
            "reopening_email_unvalidated",
            "reopening_code_regeneration",
        ],
        _ => &[
            "email_unvalidated",
            "code_regeneration_pending",
            "credential_recovery_advice",
        ],
    }
}

/// The reopening notices among the message folders: the templates of the reopening campaigns
/// ([`crate::campaign::phases::REOPENING`]), created when operators declare the reopening, so they always
/// have `reopened_at`. Every other message may go out before it (reminders, the maintenance
/// notice, test messages) and is also rendered with `reopened_at` empty, as templates/README.md
/// tells editors.
pub fn reopening_messages(sources: &BTreeMap<String, String>) -> BTreeSet<String> {
    message_folders(sources)
        .into_keys()
        .filter(|message| {
            crate::campaign::phases::REOPENING
                .iter()
                .any(|(template, _)| template == message)
        })
        .collect()
}

/// The message folders and their files: like [`templates::TemplateSet::messages`], every folder but
/// `layout/` holding at least one of the three parts (a folder of shared pieces is not one).
pub(crate) fn message_folders(
    sources: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
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
