//! The audit log: one row per action that changes something, or was refused, appended in the
//! transaction of the action itself. The database refuses to change or delete a row (triggers of
//! migration 0015). What goes in is the caller's choice; it must never be a password, a hash, a
//! token or a message body.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::timestamp;

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `command_line` or `account`.
    pub actor_kind: String,
    /// The operating-system user or the account's name.
    pub actor_name: String,
    /// The account's role, or `host` for the command line.
    pub role: String,
    /// `cli`, or the address a browser request came from.
    pub source: String,
    /// What was asked (`campaign.launch`, `users.add`, ...).
    pub action: String,
    /// What it was about: a campaign's name, an address, an account's name.
    pub object: String,
    /// A short summary of the object before and after, as JSON text.
    pub before: Option<String>,
    pub after: Option<String>,
    /// `ok`, or the refusal or error in a sentence.
    pub outcome: String,
}

/// What [`append`] writes: an [`Entry`] without its id.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_name: String,
    pub role: String,
    pub source: String,
    pub action: String,
    pub object: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub outcome: String,
}

/// Appends `e` on `conn` (the action's own transaction, so that both commit or neither).
pub(crate) async fn append(
    conn: &mut sqlx::AnyConnection,
    e: &NewEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor_kind, actor_name, role, source, action, object, \
            before_summary, after_summary, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(e.at.timestamp())
    .bind(&e.actor_kind)
    .bind(&e.actor_name)
    .bind(&e.role)
    .bind(&e.source)
    .bind(&e.action)
    .bind(&e.object)
    .bind(e.before.clone())
    .bind(e.after.clone())
    .bind(&e.outcome)
    .execute(conn)
    .await?;
    Ok(())
}

fn from_row(r: &AnyRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        id: r.try_get("id")?,
        at: timestamp(Some(r.try_get("at")?)).unwrap_or_default(),
        actor_kind: r.try_get("actor_kind")?,
        actor_name: r.try_get("actor_name")?,
        role: r.try_get("role")?,
        source: r.try_get("source")?,
        action: r.try_get("action")?,
        object: r.try_get("object")?,
        before: r.try_get("before_summary")?,
        after: r.try_get("after_summary")?,
        outcome: r.try_get("outcome")?,
    })
}

/// The rows at or after `since` (all when `None`), oldest first.
pub async fn since(
    conn: &mut sqlx::AnyConnection,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, actor_kind, actor_name, role, source, action, object, \
            before_summary, after_summary, outcome FROM audit_log WHERE at >= $1 ORDER BY at, id",
    )
    .bind(since.map_or(i64::MIN, |t| t.timestamp()))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The rows about `object` whose action is one of `actions` and which succeeded, oldest first
/// (a campaign's pauses and resumes, for its report).
pub async fn about(
    conn: &mut sqlx::AnyConnection,
    object: &str,
    actions: &[&str],
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, actor_kind, actor_name, role, source, action, object, \
            before_summary, after_summary, outcome FROM audit_log \
         WHERE object = $1 AND outcome = 'ok' ORDER BY at, id",
    )
    .bind(object)
    .fetch_all(conn)
    .await?;
    let entries: Vec<Entry> = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok(entries
        .into_iter()
        .filter(|e| actions.contains(&e.action.as_str()))
        .collect())
}
