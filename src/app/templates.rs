//! The template sets kept in the database: publish a set (from a folder, or from any set of files,
//! such as a browser draft), roll back to an earlier one, list the publications, export a set to a
//! folder, and the live set every process renders with (the `templates/` folder imported as the
//! first publication when the database has none). No path publishes a set that fails the editors'
//! full check; each publication and rollback is an audited action of the editor role.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::access::Action;
use super::audit::{summary, Audited};
use super::{Actor, App};
use crate::editor::check;
use crate::render::live::TemplateStore;
use crate::render::published;
use crate::render::templates::{self, digest_of, TemplateSet};
use crate::store::template_drafts;
use crate::store::template_sets::{self, Publication, PublicationKind};

/// A set refused: nothing was published or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TemplatesRefused {
    /// The set fails the editors' check; each problem as `FILE:LINE: explanation`.
    #[error("the templates have {} problem(s), so nothing was published:\n  {}", problems.len(), problems.join("\n  "))]
    Check { problems: Vec<String> },
    #[error("no template set has the digest `{0}` (`avvisi templates history` lists the published ones)")]
    Unknown(String),
    #[error("{}: not an empty folder; `templates export` writes into a new or empty folder, so that no file of another set is mixed in", .0.display())]
    NotEmpty(PathBuf),
    #[error("a note is required: say in a few words what this publication changes")]
    NoNote,
    /// `approval.templates` asks for another person's approval of this very set.
    #[error("la versione {digest} dei modelli non è approvata: con approval.templates = true un altro redattore o un approvatore deve approvarla prima della pubblicazione (chi la pubblica non può approvarla da sé)")]
    NotApproved { digest: String },
}

/// A publication done (or a rollback: a publication of an earlier set).
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub publication: Publication,
    /// The files of the set.
    pub files: usize,
    pub messages: Vec<String>,
    /// The digest live before, if any.
    pub previous: Option<String>,
}

/// A set written to a folder.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub digest: String,
    pub dir: PathBuf,
    pub files: usize,
}

impl App {
    /// Publishes the templates of folder `dir` with `note`, when they pass the full check (the
    /// refusal lists every problem with its file and line).
    pub async fn publish_templates(
        &self,
        who: &Actor,
        dir: &Path,
        note: &str,
    ) -> anyhow::Result<Published> {
        self.permit(who, Action::TemplatesPublish, &dir.display().to_string())
            .await?;
        // A folder that cannot be read is refused as the check refuses it: with the file named.
        let files = match templates::read_sources(dir) {
            Ok(files) => Ok(files),
            Err(_) => Err(refused_by_check(check::check(dir, &self.settings))),
        };
        match files {
            Ok(files) => {
                self.publish_files(who, dir, files, note, PublicationKind::Publish)
                    .await
            }
            Err(e) => {
                let tx = self.begin().await?;
                let audited =
                    Audited::new(who, Action::TemplatesPublish, dir.display().to_string());
                self.settle(tx, audited, Err(e), false).await
            }
        }
    }

    /// Publishes the set made of `files` (path inside the set → text): what a browser draft
    /// publishes. `name` says where the files come from, in problems and in the audit log.
    pub async fn publish_template_files(
        &self,
        who: &Actor,
        name: &Path,
        files: BTreeMap<String, String>,
        note: &str,
    ) -> anyhow::Result<Published> {
        self.permit(who, Action::TemplatesPublish, &name.display().to_string())
            .await?;
        self.publish_files(who, name, files, note, PublicationKind::Publish)
            .await
    }

    /// Publishes the earlier set `digest` again, as a new publication: it becomes the live one.
    /// It is checked again first (the check may have grown since).
    pub async fn rollback_templates(
        &self,
        who: &Actor,
        digest: &str,
        note: &str,
    ) -> anyhow::Result<Published> {
        self.permit(who, Action::TemplatesRollback, digest).await?;
        let default_note = format!("rollback to {digest}");
        let note = if note.trim().is_empty() {
            default_note.as_str()
        } else {
            note
        };
        let files = match published::files(&self.db, digest).await {
            Ok(files) => Ok(files),
            Err(published::PublishedError::Unknown(d)) => {
                Err(anyhow::Error::new(TemplatesRefused::Unknown(d)))
            }
            Err(e) => Err(anyhow::Error::new(e)),
        };
        match files {
            Ok(files) => {
                self.publish_files(
                    who,
                    &published::label(digest),
                    files,
                    note,
                    PublicationKind::Rollback,
                )
                .await
            }
            Err(e) => {
                let tx = self.begin().await?;
                let audited = Audited::new(who, Action::TemplatesRollback, digest);
                self.settle(tx, audited, Err(e), false).await
            }
        }
    }

    /// Every publication, newest first.
    pub async fn template_history(&self) -> anyhow::Result<Vec<Publication>> {
        let mut conn = self.db.pool().acquire().await?;
        template_sets::history(&mut conn)
            .await
            .context("reading the published template sets")
    }

    /// The files of the stored set `digest` (path inside the set → text).
    pub async fn template_files(&self, digest: &str) -> anyhow::Result<BTreeMap<String, String>> {
        match published::files(&self.db, digest).await {
            Ok(files) => Ok(files),
            Err(published::PublishedError::Unknown(d)) => Err(TemplatesRefused::Unknown(d).into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes every file of the stored set `digest` into `dir` (created when missing, refused
    /// when not empty), byte for byte as published.
    pub async fn export_templates(&self, digest: &str, dir: &Path) -> anyhow::Result<Exported> {
        let files = self.template_files(digest).await?;
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(TemplatesRefused::NotEmpty(dir.to_path_buf()).into());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        }
        for (path, content) in &files {
            // Paths were read from a folder by `read_sources`: relative, `/`-separated, no `..`.
            if path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                anyhow::bail!("the stored set `{digest}` has a file named `{path}`: refused");
            }
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&target, content)
                .with_context(|| format!("writing {}", target.display()))?;
        }
        Ok(Exported {
            digest: digest.to_string(),
            dir: dir.to_path_buf(),
            files: files.len(),
        })
    }

    /// The live template set: the newest published one (the `templates/` folder is published
    /// first when nothing is), or, in development mode, the folder as it is now.
    pub async fn live_templates(&self) -> anyhow::Result<(Option<Publication>, TemplateSet)> {
        if self.settings.templates_development {
            let set = TemplateSet::load(&self.settings.templates_dir)?;
            return Ok((None, set));
        }
        if let Some((p, set)) = published::load_latest(&self.db).await? {
            return Ok((Some(p), set));
        }
        let p = self.seed_templates().await?;
        let set = published::load(&self.db, &p.digest).await?;
        Ok((Some(p), set))
    }

    /// The templates to render with, cached for as long as no newer set is published.
    pub(super) async fn templates(&self) -> anyhow::Result<TemplateStore> {
        if self.settings.templates_development {
            if let Some(t) = self.templates.get() {
                return Ok(t.clone());
            }
            let set = TemplateSet::load(&self.settings.templates_dir)?;
            return Ok(self
                .templates
                .get_or_init(|| TemplateStore::new(set))
                .clone());
        }
        let latest = published::latest_id(&self.db)
            .await
            .context("reading the published template sets")?;
        if let Some((id, store)) = &*self.published.lock().expect("templates cache") {
            if *id == latest && latest != 0 {
                return Ok(store.clone());
            }
        }
        let (p, set) = self.live_templates().await?;
        let store = TemplateStore::new(set);
        let id = p.map_or(0, |p| p.id);
        *self.published.lock().expect("templates cache") = Some((id, store.clone()));
        Ok(store)
    }

    /// Publishes the `templates/` folder as the first set, once (another process seeding at the
    /// same moment is not an error: its publication is the live one).
    async fn seed_templates(&self) -> anyhow::Result<Publication> {
        let dir = &self.settings.templates_dir;
        let files = templates::read_sources(dir)
            .map_err(|_| refused_by_check(check::check(dir, &self.settings)))
            .with_context(|| {
                format!(
                    "no template set is published yet, and the templates folder {} cannot be the first",
                    dir.display()
                )
            })?;
        let report = check::check_sources(dir, &files, &self.settings);
        if !report.is_ok() {
            return Err(refused_by_check(report)).with_context(|| {
                format!(
                    "no template set is published yet, and the templates folder {} cannot be the first",
                    dir.display()
                )
            });
        }
        let who = Actor::command_line();
        let note = format!("the templates folder {}, on the first start", dir.display());
        let tx = self.begin().await?;
        let (mut tx, result) = store_and_publish(
            tx,
            &files,
            PublicationKind::Seed,
            &who,
            self.clock.now(),
            &note,
        )
        .await;
        let result = result.map_err(anyhow::Error::new);
        match result {
            Ok(Some(p)) => {
                tracing::info!(templates = %p.digest, "the templates folder is the first published set");
                let after = summary(serde_json::json!({"digest": p.digest, "kind": "seed"}));
                let audited =
                    Audited::new(&who, Action::TemplatesPublish, dir.display().to_string());
                self.settle(tx, audited, Ok((p, after)), false).await
            }
            Ok(None) => {
                // Another process seeded first.
                let _ = tx.rollback().await;
                let mut conn = self.db.pool().acquire().await?;
                template_sets::latest(&mut conn)
                    .await?
                    .context("the first template set vanished")
            }
            Err(e) => {
                let _ = tx.rollback().await;
                tx = self.begin().await?;
                let audited =
                    Audited::new(&who, Action::TemplatesPublish, dir.display().to_string());
                self.settle(tx, audited, Err(e), false).await
            }
        }
    }

    /// Checks `files` and, when clean, stores and publishes them, audited.
    async fn publish_files(
        &self,
        who: &Actor,
        name: &Path,
        files: BTreeMap<String, String>,
        note: &str,
        kind: PublicationKind,
    ) -> anyhow::Result<Published> {
        let action = match kind {
            PublicationKind::Rollback => Action::TemplatesRollback,
            _ => Action::TemplatesPublish,
        };
        let audited = Audited::new(who, action, name.display().to_string());
        let note = note.trim();
        let result: anyhow::Result<(BTreeMap<String, String>, Vec<String>)> = if note.is_empty() {
            Err(TemplatesRefused::NoNote.into())
        } else {
            let report = check::check_sources(name, &files, &self.settings);
            if report.is_ok() {
                Ok((files, report.messages))
            } else {
                Err(refused_by_check(report))
            }
        };
        let mut tx = self.begin().await?;
        let (files, messages) = match result {
            Ok(ok) => ok,
            Err(e) => return self.settle(tx, audited, Err(e), false).await,
        };
        // A publication (not a rollback) under `approval.templates` needs someone else's
        // approval of this very set: whoever publishes, from the browser or the command line.
        if kind == PublicationKind::Publish && self.settings.approval.templates {
            let digest = digest_of(&files);
            let approved = match template_drafts::approvals(&mut tx, &digest).await {
                Ok(list) => list.iter().any(|a| a.approved_by != who.name()),
                Err(e) => return self.settle(tx, audited, Err(e.into()), false).await,
            };
            if !approved {
                let refused = Err(TemplatesRefused::NotApproved { digest }.into());
                return self.settle(tx, audited, refused, false).await;
            }
        }
        // In the transaction: SQLite's pool may hold one connection only.
        let previous = match template_sets::latest(&mut tx).await {
            Ok(p) => p.map(|p| p.digest),
            Err(e) => return self.settle(tx, audited, Err(e.into()), false).await,
        };
        let (tx, stored) = store_and_publish(tx, &files, kind, who, self.clock.now(), note).await;
        let result = match stored {
            Ok(Some(publication)) => {
                let after = summary(serde_json::json!({
                    "digest": publication.digest,
                    "previous": previous,
                    "kind": kind.as_str(),
                    "note": note,
                }));
                tracing::info!(actor = %who, templates = %publication.digest, kind = kind.as_str(), "template set published");
                Ok((
                    Published {
                        publication,
                        files: files.len(),
                        messages,
                        previous,
                    },
                    after,
                ))
            }
            Ok(None) => Err(anyhow::anyhow!("the publication was not recorded")),
            Err(e) => Err(anyhow::Error::new(e).context("storing the template set")),
        };
        self.settle(tx, audited, result, false).await
    }
}

/// Stores the set `files` and records its publication in `tx` (not committed).
async fn store_and_publish(
    mut tx: super::audit::Tx,
    files: &BTreeMap<String, String>,
    kind: PublicationKind,
    who: &Actor,
    now: chrono::DateTime<chrono::Utc>,
    note: &str,
) -> (super::audit::Tx, Result<Option<Publication>, sqlx::Error>) {
    let digest = digest_of(files);
    let result = async {
        template_sets::store_set(&mut tx, &digest, files, now).await?;
        template_sets::publish(&mut tx, &digest, kind, who.name(), now, note).await
    }
    .await;
    (tx, result)
}

/// The check's problems as a refusal.
fn refused_by_check(report: check::CheckReport) -> anyhow::Error {
    TemplatesRefused::Check {
        problems: report.problems.iter().map(|p| p.to_string()).collect(),
    }
    .into()
}
