//! Template sets kept in the database (migration 0021): each set whole, addressed by its digest,
//! and the publications that made one of them live. The newest publication is the live set of
//! every process; [`latest_id`] is the cheap question a daemon asks on its beat.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::timestamp;

/// How a set became live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicationKind {
    /// Published from a folder (or, later, a draft).
    Publish,
    /// An earlier set published again.
    Rollback,
    /// The `templates/` folder imported when the database had no set yet.
    Seed,
}

impl PublicationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PublicationKind::Publish => "publish",
            PublicationKind::Rollback => "rollback",
            PublicationKind::Seed => "seed",
        }
    }

    fn parse(s: &str) -> Result<PublicationKind, sqlx::Error> {
        match s {
            "publish" => Ok(PublicationKind::Publish),
            "rollback" => Ok(PublicationKind::Rollback),
            "seed" => Ok(PublicationKind::Seed),
            other => Err(sqlx::Error::Decode(
                format!("unknown publication kind `{other}`").into(),
            )),
        }
    }
}

/// One publication: which set went live, how, by whom, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Publication {
    pub id: i64,
    pub digest: String,
    pub kind: PublicationKind,
    pub published_by: String,
    pub published_at: DateTime<Utc>,
    pub note: String,
}

fn from_row(r: &AnyRow) -> Result<Publication, sqlx::Error> {
    let kind: String = r.try_get("kind")?;
    Ok(Publication {
        id: r.try_get("id")?,
        digest: r.try_get("digest")?,
        kind: PublicationKind::parse(&kind)?,
        published_by: r.try_get("published_by")?,
        published_at: timestamp(Some(r.try_get("published_at")?)).unwrap_or_default(),
        note: r.try_get("note")?,
    })
}

const COLUMNS: &str = "id, digest, kind, published_by, published_at, note";

/// Stores the set `digest` with its `files`, unless it is stored already (a set's digest is
/// the digest of its files: the same digest is the same files).
pub(crate) async fn store_set(
    conn: &mut sqlx::AnyConnection,
    digest: &str,
    files: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO template_sets (digest, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(digest)
    .bind(now.timestamp())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(());
    }
    for (path, content) in files {
        sqlx::query("INSERT INTO template_files (digest, path, content) VALUES ($1, $2, $3)")
            .bind(digest)
            .bind(path)
            .bind(content)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Records a publication of the stored set `digest`; `None` for a second seed (another process
/// seeded first).
pub(crate) async fn publish(
    conn: &mut sqlx::AnyConnection,
    digest: &str,
    kind: PublicationKind,
    by: &str,
    now: DateTime<Utc>,
    note: &str,
) -> Result<Option<Publication>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "INSERT INTO template_publications (digest, kind, published_by, published_at, note) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(digest)
    .bind(kind.as_str())
    .bind(by)
    .bind(now.timestamp())
    .bind(note)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The id of the newest publication (0 when none): one index lookup, asked on every beat.
pub async fn latest_id(conn: &mut sqlx::AnyConnection) -> Result<i64, sqlx::Error> {
    let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM template_publications")
        .fetch_one(conn)
        .await?;
    Ok(id.unwrap_or(0))
}

/// The newest publication: the live set.
pub async fn latest(conn: &mut sqlx::AnyConnection) -> Result<Option<Publication>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM template_publications ORDER BY id DESC LIMIT 1"
    ))
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every publication, newest first.
pub async fn history(conn: &mut sqlx::AnyConnection) -> Result<Vec<Publication>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM template_publications ORDER BY id DESC"
    ))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The files of the stored set `digest`, by path; `None` when no such set is stored.
pub async fn files(
    conn: &mut sqlx::AnyConnection,
    digest: &str,
) -> Result<Option<BTreeMap<String, String>>, sqlx::Error> {
    let known: Option<String> =
        sqlx::query_scalar("SELECT digest FROM template_sets WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&mut *conn)
            .await?;
    if known.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query("SELECT path, content FROM template_files WHERE digest = $1")
        .bind(digest)
        .fetch_all(conn)
        .await?;
    let mut out = BTreeMap::new();
    for r in &rows {
        out.insert(r.try_get("path")?, r.try_get("content")?);
    }
    Ok(Some(out))
}
