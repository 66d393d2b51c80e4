//! The daemon's templates: the check a set passes before it goes live, and where new sets come
//! from. Normally the database: on each beat (`daemon.template_poll_seconds`, or at once on
//! SIGHUP) the daemon asks for the newest publication's id, and a newer publication's set is
//! loaded, checked and made live for the next batch; a batch already claimed finishes with the
//! set it took. In development mode (`templates.development`) the folder instead, reloaded when
//! its content changes. A set that fails the check is never used.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::registry::record_templates;
use super::TemplateCheck;
use crate::config::Settings;
use crate::observe::health::Health;
use crate::render::live::{Reload, TemplateStore};
use crate::render::published;
use crate::render::templates::TemplateSet;
use crate::store::Db;

/// The editors' check (`avvisi templates check`) as the daemon's gate for new template sets: it
/// checks the very files the set was compiled from.
pub fn full_check(settings: Arc<Settings>) -> TemplateCheck {
    Arc::new(move |set: &TemplateSet| {
        let report = crate::editor::check::check_sources(set.dir(), set.sources(), &settings);
        report.problems.iter().map(|p| p.to_string()).collect()
    })
}

/// What the daemon follows for new template sets, and the last one it saw.
pub(super) enum Source {
    /// The published sets; the id of the publication live now (0: none seen).
    Published { seen: i64 },
    /// The folder (development mode).
    Folder,
}

/// What follows the templates needs.
pub(super) struct Follow {
    pub store: TemplateStore,
    pub settings: Arc<Settings>,
    pub check: TemplateCheck,
    pub db: Db,
    pub me: String,
    pub health: Health,
}

/// Replaces the live set with each newer one (see the module's comment) until `stop`.
pub(super) async fn follow_templates(f: Follow, mut source: Source, stop: CancellationToken) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let every = Duration::from_secs(f.settings.daemon.template_poll_seconds);
    let mut reported: Vec<String> = Vec::new();
    // The digest live now, for the metric of the one it replaces.
    let mut live = Some(f.store.current().digest().to_string());
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sighup => tracing::info!("SIGHUP: looking for new templates"),
            _ = tokio::time::sleep(every) => {}
        }
        let outcome = match &mut source {
            Source::Folder => f.store.reload(&f.settings.templates_dir, &*f.check),
            Source::Published { seen } => next_published(&f, seen).await,
        };
        match outcome {
            Reload::Unchanged => {}
            Reload::Replaced(digest) => {
                reported.clear();
                f.health.templates_rejected(None);
                crate::telemetry::metrics::templates_live(&digest, live.as_deref());
                live = Some(digest.clone());
                tracing::info!(templates = %digest, "new templates live");
                record_templates(&f.db, &f.me, &digest).await;
            }
            // Logged once per distinct breakage, not at every beat.
            Reload::Rejected(problems) if problems != reported => {
                f.health.templates_rejected(Some(problems.join("; ")));
                for p in &problems {
                    tracing::error!(problem = %p, "new templates refused; still sending with the last good set");
                }
                reported = problems;
            }
            Reload::Rejected(_) => {}
        }
    }
}

/// One beat on the published sets: the newest publication's set when it is newer than `seen`.
async fn next_published(f: &Follow, seen: &mut i64) -> Reload {
    let latest = match published::latest_id(&f.db).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %f.db.describe(&e), "cannot ask for new templates; asking again at the next beat");
            return Reload::Unchanged;
        }
    };
    if latest == *seen {
        return Reload::Unchanged;
    }
    let (publication, set) = match published::load_latest(&f.db).await {
        Ok(Some(found)) => found,
        Ok(None) => return Reload::Unchanged,
        Err(e) => return Reload::Rejected(vec![e.to_string()]),
    };
    *seen = publication.id;
    if set.digest() == f.store.current().digest() {
        // A publication of the set already live (a rollback to it, a second seed).
        return Reload::Unchanged;
    }
    let problems = (f.check)(&set);
    if !problems.is_empty() {
        return Reload::Rejected(problems);
    }
    let digest = set.digest().to_string();
    f.store.replace(set);
    Reload::Replaced(digest)
}
