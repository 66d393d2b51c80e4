//! The live template set of a long-running process, replaced only by a set that passes the check.
//!
//! Editors change files while the daemon runs; [`TemplateStore::reload`] loads the folder, checks
//! the new set as a whole and swaps it in only when it is clean. A broken edit leaves the last good
//! set live (and is logged), so it can never reach a recipient.

use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::render::templates::TemplateSet;

/// A cheap, cloneable handle on the current template set.
#[derive(Clone)]
pub struct TemplateStore {
    live: Arc<RwLock<Arc<TemplateSet>>>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files did not change.
    Unchanged,
    /// A new set (this digest) is live.
    Replaced(String),
    /// The new files are broken; the previous set stays live.
    Rejected(Vec<String>),
}

impl TemplateStore {
    pub fn new(set: TemplateSet) -> TemplateStore {
        TemplateStore {
            live: Arc::new(RwLock::new(Arc::new(set))),
        }
    }

    /// The set to render with now. Take it once per batch so a batch uses one version.
    pub fn current(&self) -> Arc<TemplateSet> {
        self.live.read().expect("template lock").clone()
    }

    /// Loads `dir`, checks it with `check` (problems as plain sentences) and swaps it in if clean.
    pub fn reload(&self, dir: &Path, check: impl Fn(&TemplateSet) -> Vec<String>) -> Reload {
        let set = match TemplateSet::load(dir) {
            Ok(set) => set,
            Err(e) => return Reload::Rejected(vec![e.to_string()]),
        };
        if set.digest() == self.current().digest() {
            return Reload::Unchanged;
        }
        let problems = check(&set);
        if !problems.is_empty() {
            return Reload::Rejected(problems);
        }
        let digest = set.digest().to_string();
        *self.live.write().expect("template lock") = Arc::new(set);
        Reload::Replaced(digest)
    }
}

/// The minimal check: every message renders with sample data. `avvisi templates check` is stricter.
pub fn render_check(set: &TemplateSet) -> Vec<String> {
    use crate::render::templates::{MessageContext, UserView};
    let context = MessageContext {
        user: UserView::new(
            "Nicolò",
            "D'Angelo",
            "n.dangelo@libero.it",
            None,
            Some("nuovo@libero.it"),
            Some("BO"),
        ),
        deadline: "2026-11-30T23:59:59+01:00".into(),
        maintenance_start: "2026-12-01T00:00:00+01:00".into(),
        reopened_at: "2026-12-14T09:00:00+01:00".into(),
        days_left: 3,
        step: "d3".into(),
        campaign: "check".into(),
        portal_url: "https://www.istruzione.it/polis/Istanzeonline.htm".into(),
        organisation: "Ministero dell'Istruzione e del Merito".into(),
        service_name: "Istanze OnLine".into(),
        is_test: false,
    };
    set.messages()
        .iter()
        .filter_map(|name| set.render(name, &context).err().map(|e| e.to_string()))
        .collect()
}
