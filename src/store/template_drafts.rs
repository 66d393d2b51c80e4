//! The editors' drafts (migration 0024): one template set per editor, started from the live set
//! and edited file by file, never live by itself; and the approvals of a set, by its digest,
//! that `approval.templates` asks for before a publication.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::timestamp;

/// A draft's facts, without its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftInfo {
    pub author: String,
    /// The live set's digest when the draft was started.
    pub base_digest: String,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One approval of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub digest: String,
    pub author: String,
    pub approved_by: String,
    pub approved_at: DateTime<Utc>,
}

/// Starts `author`'s draft as a copy of `files` (the live set `base`), replacing any draft they had.
pub(crate) async fn start(
    conn: &mut sqlx::AnyConnection,
    author: &str,
    base: &str,
    files: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    discard(&mut *conn, author).await?;
    sqlx::query(
        "INSERT INTO template_drafts (author, base_digest, started_at, updated_at) \
         VALUES ($1, $2, $3, $3)",
    )
    .bind(author)
    .bind(base)
    .bind(now.timestamp())
    .execute(&mut *conn)
    .await?;
    for (path, content) in files {
        sqlx::query("INSERT INTO template_draft_files (author, path, content) VALUES ($1, $2, $3)")
            .bind(author)
            .bind(path)
            .bind(content)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Forgets `author`'s draft, if any.
pub(crate) async fn discard(
    conn: &mut sqlx::AnyConnection,
    author: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM template_draft_files WHERE author = $1")
        .bind(author)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM template_drafts WHERE author = $1")
        .bind(author)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes `content` as the draft's file `path`; `false` when `author` has no draft or the draft
/// has no such file (a draft's files are the set's: none is added or removed in the page).
pub(crate) async fn save_file(
    conn: &mut sqlx::AnyConnection,
    author: &str,
    path: &str,
    content: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let changed =
        sqlx::query("UPDATE template_draft_files SET content = $3 WHERE author = $1 AND path = $2")
            .bind(author)
            .bind(path)
            .bind(content)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    sqlx::query("UPDATE template_drafts SET updated_at = $2 WHERE author = $1")
        .bind(author)
        .bind(now.timestamp())
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

fn info_from_row(r: &sqlx::any::AnyRow) -> Result<DraftInfo, sqlx::Error> {
    Ok(DraftInfo {
        author: r.try_get("author")?,
        base_digest: r.try_get("base_digest")?,
        started_at: timestamp(Some(r.try_get("started_at")?)).unwrap_or_default(),
        updated_at: timestamp(Some(r.try_get("updated_at")?)).unwrap_or_default(),
    })
}

/// `author`'s draft with its files, if they have one.
pub(crate) async fn get(
    conn: &mut sqlx::AnyConnection,
    author: &str,
) -> Result<Option<(DraftInfo, BTreeMap<String, String>)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT author, base_digest, started_at, updated_at FROM template_drafts WHERE author = $1",
    )
    .bind(author)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let info = info_from_row(&row)?;
    let rows = sqlx::query("SELECT path, content FROM template_draft_files WHERE author = $1")
        .bind(author)
        .fetch_all(conn)
        .await?;
    let mut files = BTreeMap::new();
    for r in &rows {
        files.insert(r.try_get("path")?, r.try_get("content")?);
    }
    Ok(Some((info, files)))
}

/// Every draft, by author.
pub(crate) async fn all(conn: &mut sqlx::AnyConnection) -> Result<Vec<DraftInfo>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT author, base_digest, started_at, updated_at FROM template_drafts ORDER BY author",
    )
    .fetch_all(conn)
    .await?;
    rows.iter().map(info_from_row).collect()
}

/// Records `by`'s approval of the set `digest` (`author`'s draft); approving twice is one row.
pub(crate) async fn approve(
    conn: &mut sqlx::AnyConnection,
    digest: &str,
    author: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO template_approvals (digest, author, approved_by, approved_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(digest)
    .bind(author)
    .bind(by)
    .bind(now.timestamp())
    .execute(conn)
    .await?;
    Ok(())
}

/// The approvals of the set `digest`, oldest first.
pub(crate) async fn approvals(
    conn: &mut sqlx::AnyConnection,
    digest: &str,
) -> Result<Vec<Approval>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT digest, author, approved_by, approved_at FROM template_approvals \
         WHERE digest = $1 ORDER BY approved_at, approved_by",
    )
    .bind(digest)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Approval {
                digest: r.try_get("digest")?,
                author: r.try_get("author")?,
                approved_by: r.try_get("approved_by")?,
                approved_at: timestamp(Some(r.try_get("approved_at")?)).unwrap_or_default(),
            })
        })
        .collect()
}
