//! The live template set of a long-running process, replaced only by a set that passes the check.
//!
//! A daemon replaces it with each newer published set ([`TemplateStore::replace`]); in the
//! development mode, [`TemplateStore::reload`] loads the folder, checks the new set as a whole and
//! swaps it in only when it is clean. A broken edit leaves the last good set live (and is logged),
//! so it can never reach a recipient.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use crate::render::templates::TemplateSet;

/// A cheap, cloneable handle on the current template set.
#[derive(Clone)]
pub struct TemplateStore {
    live: Arc<RwLock<Arc<TemplateSet>>>,
    /// Why the folder's content is refused, while it differs from the live set (`/readyz` and
    /// the status page show it).
    refused: Arc<Mutex<Option<String>>>,
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
            refused: Arc::default(),
        }
    }

    /// The set to render with now. Take it once per batch so a batch uses one version.
    pub fn current(&self) -> Arc<TemplateSet> {
        self.live.read().expect("template lock").clone()
    }

    /// Makes `set` the one to render with from the next batch on (a batch in progress keeps the
    /// set it took).
    pub fn replace(&self, set: TemplateSet) {
        *self.live.write().expect("template lock") = Arc::new(set);
    }

    /// Loads `dir`, checks it with `check` (problems as plain sentences) and swaps it in if clean.
    /// The refusal is kept while the folder differs from the live set, and cleared as soon as
    /// it holds the live set again (an edit put back) or a new set goes live.
    pub fn reload(&self, dir: &Path, check: impl Fn(&TemplateSet) -> Vec<String>) -> Reload {
        let outcome = self.try_reload(dir, check);
        match &outcome {
            Reload::Unchanged | Reload::Replaced(_) => self.set_refused(None),
            Reload::Rejected(problems) => self.set_refused(Some(problems.join("; "))),
        }
        outcome
    }

    fn try_reload(&self, dir: &Path, check: impl Fn(&TemplateSet) -> Vec<String>) -> Reload {
        let set = match TemplateSet::load(dir) {
            Ok(set) => set,
            // The same one-line message as `templates check` (file, line, what to do).
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

    /// Why the folder's content is refused (`None`: the folder holds the live set).
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().expect("template lock").clone()
    }

    /// Records why the folder's content is refused, or that it is not.
    pub fn set_refused(&self, problems: Option<String>) {
        *self.refused.lock().expect("template lock") = problems;
    }
}
