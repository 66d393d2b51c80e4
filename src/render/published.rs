//! The published template sets as a process loads them: the newest publication's set, compiled,
//! after making sure the stored files still have the digest they are addressed by.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::render::templates::{digest_of, TemplateError, TemplateSet};
use crate::store::template_sets::{self, Publication};
use crate::store::Db;

#[derive(Debug, thiserror::Error)]
pub enum PublishedError {
    #[error("reading the published template sets: {0}")]
    Db(#[from] sqlx::Error),
    #[error("no template set with the digest `{0}` is stored (`avvisi templates history` lists the published ones)")]
    Unknown(String),
    #[error("the stored template set `{stored}` has the digest `{actual}`: its files were changed in the database; publish a set again")]
    Altered { stored: String, actual: String },
    #[error(transparent)]
    Compile(#[from] TemplateError),
}

/// How a published set is named where a folder would be (problems, errors): `published:DIGEST`.
pub fn label(digest: &str) -> PathBuf {
    PathBuf::from(format!("published:{digest}"))
}

/// The files of the stored set `digest`, checked against their digest.
pub async fn files(db: &Db, digest: &str) -> Result<BTreeMap<String, String>, PublishedError> {
    let mut conn = db.pool().acquire().await?;
    let files = template_sets::files(&mut conn, digest)
        .await?
        .ok_or_else(|| PublishedError::Unknown(digest.to_string()))?;
    let actual = digest_of(&files);
    if actual != digest {
        return Err(PublishedError::Altered {
            stored: digest.to_string(),
            actual,
        });
    }
    Ok(files)
}

/// The stored set `digest`, compiled.
pub async fn load(db: &Db, digest: &str) -> Result<TemplateSet, PublishedError> {
    let files = files(db, digest).await?;
    Ok(TemplateSet::from_sources(&label(digest), &files)?)
}

/// The id of the newest publication, 0 when nothing was published: the question of each beat.
pub async fn latest_id(db: &Db) -> Result<i64, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    template_sets::latest_id(&mut conn).await
}

/// The newest publication and its set, compiled; `None` when nothing was published yet.
pub async fn load_latest(db: &Db) -> Result<Option<(Publication, TemplateSet)>, PublishedError> {
    let latest = {
        let mut conn = db.pool().acquire().await?;
        template_sets::latest(&mut conn).await?
    };
    match latest {
        None => Ok(None),
        Some(p) => {
            let set = load(db, &p.digest).await?;
            Ok(Some((p, set)))
        }
    }
}
