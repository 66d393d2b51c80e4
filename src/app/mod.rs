//! The application layer: one [`App`] opened once from the settings, and one function per use
//! case (import a snapshot, run a pass, plan, each campaign action, preview, test send, retry,
//! suppress, reopen, report, explain, status, bounces). Each returns a typed report that
//! serialises to JSON; the command line prints it, and a browser console can call the very same
//! functions. Nothing here prints: what a person reads is the caller's business.
//!
//! Who may do what is [`Actor::may`]; every use case that changes something asks it first and
//! writes its audit row in its own transaction (`audit.rs`), refusals included.
//!
//! Errors are `anyhow` with the context a person needs ("loading templates", "planning"): the
//! stages below return their own error types, and the reasons reach the caller intact.

use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::config::Settings;
use crate::deliver::transport::Transport;
use crate::deliver::Worker;
use crate::render::live::TemplateStore;
use crate::store::{Applied, Db};

mod access;
mod accounts;
mod approval;
mod audit;
mod calendar;
mod campaigns;
mod holds;
mod optouts;
mod queue;
mod report;
mod run;
mod samples;
mod sessions;
mod suppression;
mod templates;
mod workbench;

pub use access::{Action, Actor, Forbidden};
pub use accounts::{AccountChanged, AccountError, LoginRefused, MIN_PASSWORD_CHARS};
pub use approval::{ApprovalPreview, Approved, Rejected, SAMPLES};
pub use calendar::{Cadence, CalendarReport, CalendarStep, Reopened, StepReminder};
pub use campaigns::{
    user_list, CampaignProgress, CampaignSetup, CampaignView, Created, Launched,
    NewCampaignRequest, Transitioned,
};
pub use optouts::{unsubscribe, OptOutRemoved, UnsubscribeError, Unsubscribed};
pub use queue::{HourlyQuota, Retried, RetriedCampaign, Status, StreamOptOuts};
pub use report::{CsvWritten, HtmlWritten};
pub use run::{
    DeliveryStop, ImportRefused, Migration, Migrations, RunReport, RunRow, UsersImport,
    UsersImported,
};
pub use samples::{
    CampaignPreview, NoOwnAddress, NotARecipient, PreviewedMessage, TemplatesChecked,
    TemplatesPreviewed, TestSent,
};
pub use sessions::{
    random_token, same as same_token, NewSession, SessionRefused, SignedIn, MAX_FAILURES,
    THROTTLE_WINDOW,
};
pub use suppression::{SuppressAdded, Unsuppressed};
pub use templates::{Exported, Published, TemplatesRefused};
pub use workbench::{
    CampaignChanges, Draft, DraftPreview, DraftRefused, Finding, PreviewPart, RecipientChange,
    SampleChoice, CHANGE_SAMPLES,
};

/// Everything a use case works with: the database, the settings, the clock, the templates and
/// the transport. Cheap to clone (handles only). The templates are the newest published set,
/// read from the database when a use case needs them and again only after a newer publication
/// (`templates.rs`), and the transport is set up only by a use case that sends: a
/// command that sends nothing never reads the relay's password.
#[derive(Clone)]
pub struct App {
    db: Db,
    settings: Arc<Settings>,
    clock: Clock,
    /// Development mode's folder set, loaded the first time.
    templates: Arc<OnceLock<TemplateStore>>,
    /// The newest published set this application loaded, with its publication's id.
    published: Arc<Mutex<Option<(i64, TemplateStore)>>>,
    transport: Arc<OnceLock<Transport>>,
    /// The migrations applied when the database was opened.
    applied: Arc<Vec<Applied>>,
}

impl App {
    /// Opens the database as configured, applying the migrations it lacks.
    pub async fn open(settings: Settings, clock: Clock) -> anyhow::Result<App> {
        let (db, applied) = Db::open_settings(&settings.database)
            .await
            .context("opening the database")?;
        let mut app = App::new(db, Arc::new(settings), clock);
        app.applied = Arc::new(applied);
        Ok(app)
    }

    /// An application over a database already open (the daemon's, a test's).
    pub fn new(db: Db, settings: Arc<Settings>, clock: Clock) -> App {
        App {
            db,
            settings,
            clock,
            templates: Arc::default(),
            published: Arc::default(),
            transport: Arc::default(),
            applied: Arc::default(),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Says goodbye to the relay (when a use case connected to it) and closes the database.
    pub async fn close(&self) {
        if let Some(t) = self.transport.get() {
            t.close().await;
        }
        self.db.close().await;
    }

    /// `e`, with the way out said first when the SQLite file was locked by another process.
    pub fn explain_error(&self, e: anyhow::Error) -> anyhow::Error {
        self.db.explain(e)
    }

    /// `at`, or the clock's now.
    fn now_or(&self, at: Option<DateTime<Utc>>) -> DateTime<Utc> {
        at.unwrap_or_else(|| self.clock.now())
    }

    /// The transport of `delivery.transport`, set up the first time (the SMTP one reads the
    /// relay's password then).
    fn transport(&self) -> anyhow::Result<Transport> {
        if let Some(t) = self.transport.get() {
            return Ok(t.clone());
        }
        let t = Transport::from_settings(&self.settings).context("setting up delivery")?;
        Ok(self.transport.get_or_init(|| t).clone())
    }

    /// The one place a [`Worker`] is built.
    fn worker(&self, transport: Transport, templates: TemplateStore, clock: Clock) -> Worker {
        Worker::new(
            self.db.clone(),
            self.settings.clone(),
            transport,
            templates,
            clock,
        )
    }
}
