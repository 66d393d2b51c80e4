//! The main job: import the portal's snapshot, plan what is due, deliver it; and the migrations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::access::Action;
use super::{Actor, App};
use crate::clock::Clock;
use crate::import::snapshot::{Encoding, RowError};
use crate::import::{self, ImportError, ImportOptions, ImportReport};
use crate::plan::report::{plan_with_report, PlanReport};
use crate::plan::{self, Target, Write};
use crate::render::email;
use crate::telemetry::progress::{Progress, Unit};

/// The migrations applied when the database was opened (none when it was up to date).
#[derive(Debug, Clone, Serialize)]
pub struct Migrations {
    /// `Sqlite` or `Postgres`.
    pub backend: String,
    pub applied: Vec<Migration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub version: i64,
    pub description: String,
}

/// What an import of the users' snapshot did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct UsersImported {
    pub file: PathBuf,
    pub import_id: i64,
    /// False for a dry run: nothing was written.
    pub committed: bool,
    pub rows_read: u64,
    pub rows_valid: u64,
    pub rows_rejected: u64,
    pub rows_stale: u64,
    pub users_new: u64,
    pub users_known: u64,
    pub users_gone: u64,
    /// The first problems found, one sentence each; `errors_total` counts them all.
    pub errors: Vec<String>,
    pub errors_total: u64,
    pub reject_file: Option<PathBuf>,
}

impl UsersImported {
    fn new(file: &Path, r: ImportReport) -> UsersImported {
        UsersImported {
            file: file.to_path_buf(),
            import_id: r.import_id,
            committed: r.committed,
            rows_read: r.rows_read,
            rows_valid: r.rows_valid,
            rows_rejected: r.rows_rejected,
            rows_stale: r.rows_stale,
            users_new: r.users_new,
            users_known: r.users_known,
            users_gone: r.users_gone,
            errors: sentences(&r.errors),
            errors_total: r.errors_total,
            reject_file: r.reject_file,
        }
    }
}

fn sentences(errors: &[RowError]) -> Vec<String> {
    errors.iter().map(|e| e.to_string()).collect()
}

/// An import refused because of invalid rows: nothing was written. `errors` are the first
/// problems, one sentence each.
#[derive(Debug, thiserror::Error)]
#[error("{}: {errors_total} problem(s) in {rows_rejected} of {rows_read} rows; nothing was imported (fix the file, or use --skip-invalid to import the valid rows)", file.display())]
pub struct ImportRefused {
    pub file: PathBuf,
    pub errors: Vec<String>,
    pub errors_total: u64,
    pub rows_rejected: u64,
    pub rows_read: u64,
}

/// One pass of `run --once`: what was planned and what delivery did, per campaign.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The snapshot imported first, when one was given.
    pub imported: Option<UsersImported>,
    pub at: DateTime<Utc>,
    /// Where emails went (`files in DIR` or `smtp`).
    pub delivery: String,
    /// Set for the file transport: the folder of the `.eml` files.
    pub files_dir: Option<PathBuf>,
    pub campaigns: Vec<RunRow>,
    /// The relay's hourly quota (all processes together) is used up.
    pub throttled: bool,
    /// Nothing was sent: the instant is outside the sending hours.
    pub outside_sending_hours: bool,
    /// Set when delivery stopped for the relay's fault: the rest stays queued.
    pub stopped: Option<DeliveryStop>,
    /// The recipient domains held: their provider asked us to slow down.
    pub held_domains: Vec<crate::deliver::hold::DomainHold>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub campaign: String,
    /// The step planned now, if any.
    pub step: Option<String>,
    pub planned: u64,
    pub sent: u64,
    pub skipped: u64,
    pub failed: u64,
    pub expired: u64,
    pub retrying: u64,
}

/// Why delivery stopped early.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryStop {
    /// The relay's fault in one line, with its reply when there was one.
    pub fault: Option<String>,
    /// Set when the circuit breaker tripped: the reply of the streak.
    pub breaker_reply: Option<String>,
    /// Messages of the streak put back in the queue.
    pub given_back: u64,
    /// Campaigns the breaker paused.
    pub paused: Vec<String>,
}

impl App {
    /// The migrations applied when this application opened the database.
    pub fn migrations(&self) -> Migrations {
        Migrations {
            backend: format!("{:?}", self.db.backend()),
            applied: self
                .applied
                .iter()
                .map(|m| Migration {
                    version: m.version,
                    description: m.description.clone(),
                })
                .collect(),
        }
    }

    /// Loads the users' snapshot at `file`, all or nothing (unless `skip_invalid`). Invalid
    /// rows without `skip_invalid` refuse the import with [`ImportRefused`].
    pub async fn import_users(
        &self,
        who: &Actor,
        file: &Path,
        options: UsersImport,
    ) -> anyhow::Result<UsersImported> {
        tracing::debug!(actor = %who, file = %file.display(), "import users");
        self.permit(who, Action::Host, &file.display().to_string())
            .await?;
        let settings = &self.settings;
        let options = ImportOptions {
            skip_invalid: options.skip_invalid,
            dry_run: options.dry_run,
            partial: options.partial,
            reject_file: options.reject_file,
            max_gone_percent: settings.import.max_gone_percent,
            encoding: options.encoding,
            // A file that cannot be read is reported by the import itself, by name.
            progress: std::fs::metadata(file).ok().map(|m| {
                Progress::start(
                    "import users",
                    Unit::Bytes,
                    m.len(),
                    Duration::from_secs(settings.log.progress_seconds),
                )
            }),
        };
        let imported = import::import_users(&self.db, file, &options, self.clock.now()).await;
        if let Some(p) = &options.progress {
            p.finish();
        }
        match imported {
            Ok(report) => Ok(UsersImported::new(file, report)),
            Err(ImportError::Invalid { path, report }) => Err(ImportRefused {
                file: path,
                errors: sentences(&report.errors),
                errors_total: report.errors_total,
                rows_rejected: report.rows_rejected,
                rows_read: report.rows_read,
            }
            .into()),
            Err(e) => Err(e).context("importing users"),
        }
    }

    /// Plans what is due at `at` (default: the clock's now) and delivers it; with `import`,
    /// imports that snapshot first. The clock of the whole pass, sending included, is `at`.
    pub async fn run_once(
        &self,
        who: &Actor,
        at: Option<DateTime<Utc>>,
        import: Option<(&Path, Encoding)>,
    ) -> anyhow::Result<RunReport> {
        let app = match at {
            Some(at) => App {
                clock: Clock::manual(at),
                ..self.clone()
            },
            None => self.clone(),
        };
        let imported = match import {
            Some((file, encoding)) => {
                let options = UsersImport {
                    encoding,
                    ..UsersImport::default()
                };
                Some(app.import_users(who, file, options).await?)
            }
            None => None,
        };
        tracing::debug!(actor = %who, "run once");
        self.permit(who, Action::Host, "run").await?;
        let templates = app.templates().await.context("loading templates")?;
        let transport = app.transport()?;
        let now = app.clock.now();
        let settings = &app.settings;
        let domain = email::message_id_domain(&settings.mail);
        let planned = plan::plan_due(
            &app.db,
            settings,
            templates.current().digest(),
            &domain,
            now,
        )
        .await
        .context("planning")?;
        let worker = app.worker(transport.clone(), templates, app.clock.clone());
        let due = crate::store::queue::due_now(&app.db, now)
            .await
            .context("counting the due messages")?;
        let progress = Progress::start(
            "run --once",
            Unit::Messages,
            due,
            Duration::from_secs(settings.log.progress_seconds),
        );
        let delivery = worker
            .deliver_due_with(&CancellationToken::new(), Some(progress.clone()))
            .await;
        progress.finish();
        let delivery = delivery.context("delivering")?;

        let mut names: Vec<&String> = planned.iter().map(|p| &p.campaign).collect();
        for name in delivery.per_campaign.keys() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let campaigns = names
            .into_iter()
            .map(|name| {
                let p = planned.iter().find(|p| &p.campaign == name);
                let t = delivery.per_campaign.get(name).cloned().unwrap_or_default();
                RunRow {
                    campaign: name.clone(),
                    step: p.map(|p| p.step.to_string()),
                    planned: p.map(|p| p.rows).unwrap_or(0),
                    sent: t.sent,
                    skipped: t.skipped,
                    failed: t.failed,
                    expired: t.expired,
                    retrying: t.retrying,
                }
            })
            .collect();
        let stopped = match &delivery.breaker {
            Some(b) => Some(DeliveryStop {
                fault: delivery.relay_fault.clone(),
                breaker_reply: Some(b.reply.clone()),
                given_back: b.given_back,
                paused: b.paused.clone(),
            }),
            None if delivery.relay_unreachable => Some(DeliveryStop {
                fault: delivery.relay_fault.clone(),
                breaker_reply: None,
                given_back: 0,
                paused: Vec::new(),
            }),
            None => None,
        };
        Ok(RunReport {
            imported,
            at: now,
            delivery: transport.describe(),
            files_dir: match &transport {
                crate::deliver::transport::Transport::Files(dir) => Some(dir.clone()),
                crate::deliver::transport::Transport::Smtp(_) => None,
            },
            campaigns,
            throttled: delivery.throttled,
            held_domains: delivery.held_domains.clone(),
            outside_sending_hours: delivery.outside_sending_hours,
            stopped,
        })
    }

    /// What a planner tick plans at `at` (default: the clock's now), per campaign and step;
    /// with `dry_run`, in a transaction rolled back: nothing written.
    pub async fn plan(
        &self,
        who: &Actor,
        at: Option<DateTime<Utc>>,
        dry_run: bool,
    ) -> anyhow::Result<PlanReport> {
        tracing::debug!(actor = %who, dry_run, "plan");
        self.permit(who, Action::Host, "plan").await?;
        let now = self.now_or(at);
        // The rows record the live template version, as a tick's do.
        let templates = self.templates().await.context("loading templates")?;
        let templates = templates.current();
        let domain = email::message_id_domain(&self.settings.mail);
        let target = Target::new(&self.db, &self.settings, templates.digest(), &domain, now);
        let write = match dry_run {
            true => Write::DryRun,
            false => Write::Commit,
        };
        plan_with_report(&self.db, &target, write)
            .await
            .context(if dry_run {
                "planning (dry run)"
            } else {
                "planning"
            })
    }
}

/// How to import a snapshot (the defaults: all or nothing, a full snapshot, UTF-8).
#[derive(Debug, Clone, Default)]
pub struct UsersImport {
    /// Import the valid rows, write the invalid ones to a reject file.
    pub skip_invalid: bool,
    /// Where the rejected rows go (default: next to the file).
    pub reject_file: Option<PathBuf>,
    /// Check and report, write nothing.
    pub dry_run: bool,
    /// A delta: users missing from it are not marked as gone.
    pub partial: bool,
    pub encoding: Encoding,
}
