//! The daemon's templates: the check a set passes before it goes live, and the reloads (SIGHUP,
//! or the folder's content changed); a broken set is never used.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::registry::record_templates;
use super::TemplateCheck;
use crate::config::Settings;
use crate::observe::health::Health;
use crate::render::live::{Reload, TemplateStore};
use crate::render::templates::TemplateSet;
use crate::store::Db;

/// The editors' check (`avvisi templates check`) as the daemon's gate for new template sets.
/// The set is accepted only if the folder did not change while it was being checked.
pub fn full_check(settings: Arc<Settings>) -> TemplateCheck {
    Arc::new(move |set: &TemplateSet| {
        let report = crate::editor::check::check(set.dir(), &settings);
        let mut problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        match TemplateSet::load(set.dir()) {
            Ok(now) if now.digest() == set.digest() => {}
            _ => problems.push(
                "the templates changed while being checked; checking again at the next poll".into(),
            ),
        }
        problems
    })
}

/// Reloads the templates on SIGHUP and when the folder's content changes.
pub(super) async fn watch_templates(
    store: TemplateStore,
    settings: Arc<Settings>,
    check: TemplateCheck,
    stop: CancellationToken,
    db: Db,
    me: String,
    health: Health,
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let every = Duration::from_secs(settings.daemon.template_poll_seconds);
    let mut reported: Vec<String> = Vec::new();
    // The digest live now, for the metric of the one it replaces.
    let mut live = Some(store.current().digest().to_string());
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
            _ = sighup => tracing::info!("SIGHUP: reloading templates"),
            _ = tokio::time::sleep(every) => {}
        }
        match store.reload(&settings.templates_dir, &*check) {
            Reload::Unchanged => {}
            Reload::Replaced(digest) => {
                reported.clear();
                health.templates_rejected(None);
                crate::telemetry::metrics::templates_live(&digest, live.as_deref());
                live = Some(digest.clone());
                tracing::info!(templates = %digest, "new templates live");
                record_templates(&db, &me, &digest).await;
            }
            // Logged once per distinct breakage, not at every poll.
            Reload::Rejected(problems) if problems != reported => {
                health.templates_rejected(Some(problems.join("; ")));
                for p in &problems {
                    tracing::error!(problem = %p, "template edit rejected; still sending with the last good set");
                }
                reported = problems;
            }
            Reload::Rejected(_) => {}
        }
    }
}
