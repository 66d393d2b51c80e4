//! The suppression list: addresses avvisi does not write to again.
//!
//! An address gets here when the relay refuses it at RCPT with a 5.1.x status (no such user or
//! domain), when a returned mail says it failed for good (or failed temporarily too often), or
//! when an operator adds it. Addresses are stored lower-cased and compared with `LOWER(...)`:
//! the snapshot keeps the spelling the user typed.
//!
//! Planning and the send-time check both go through [`recipient_sql`] and [`unreachable_sql`]:
//! a user whose address on record is suppressed gets the message at the institutional address
//! when there is one that is not suppressed too (the email says why); otherwise the message is
//! skipped with the reason [`REASON`].

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::store::{timestamp, Db, SuppressionSource, UnknownState};

/// The reason of a message skipped because its recipient is suppressed, as stored in the
/// outbox and counted by `status`.
pub const REASON: &str = "suppressed";

/// One address on the list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suppression {
    /// Lower-cased.
    pub address: String,
    pub reason: String,
    pub source: SuppressionSource,
    pub created_at: Option<DateTime<Utc>>,
}

/// What can go wrong with the list.
#[derive(Debug, thiserror::Error)]
pub enum SuppressionError {
    #[error("`{0}` is not an email address (expected name@domain, ASCII)")]
    Address(String),
    #[error("a suppression needs a reason")]
    NoReason,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// `address` as stored: trimmed and lower-cased, checked to be `name@domain`.
pub fn normalise(address: &str) -> Result<String, SuppressionError> {
    let trimmed = address.trim();
    let lower = trimmed.to_ascii_lowercase();
    if !lower.is_ascii() || lower.parse::<lettre::Address>().is_err() {
        return Err(SuppressionError::Address(trimmed.to_string()));
    }
    Ok(lower)
}

/// Adds `address`. Returns the entry already there instead when the address was suppressed
/// before: the first reason is kept (it says why the address first stopped working).
pub async fn add(
    db: &Db,
    address: &str,
    reason: &str,
    source: SuppressionSource,
    now: DateTime<Utc>,
) -> Result<Option<Suppression>, SuppressionError> {
    let mut conn = db.pool().acquire().await?;
    add_on(&mut conn, address, reason, source, now).await
}

/// [`add`] on a connection (or in a transaction) of the caller's.
pub(crate) async fn add_on(
    conn: &mut sqlx::AnyConnection,
    address: &str,
    reason: &str,
    source: SuppressionSource,
    now: DateTime<Utc>,
) -> Result<Option<Suppression>, SuppressionError> {
    let address = normalise(address)?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(SuppressionError::NoReason);
    }
    let inserted = sqlx::query(
        "INSERT INTO suppressions (address, reason, source, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (address) DO NOTHING",
    )
    .bind(&address)
    .bind(reason)
    .bind(source.as_str())
    .bind(now.timestamp())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    Ok(get_on(conn, &address).await?)
}

/// Removes `address`. Returns whether it was on the list.
pub async fn remove(db: &Db, address: &str) -> Result<bool, SuppressionError> {
    remove_on(&mut *db.pool().acquire().await?, address).await
}

/// [`remove`] on a connection (or in a transaction) of the caller's.
pub(crate) async fn remove_on(
    conn: &mut sqlx::AnyConnection,
    address: &str,
) -> Result<bool, SuppressionError> {
    let address = normalise(address)?;
    let n = sqlx::query("DELETE FROM suppressions WHERE address = $1")
        .bind(&address)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// The whole list, oldest first.
pub async fn list(db: &Db) -> Result<Vec<Suppression>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT address, reason, source, created_at FROM suppressions ORDER BY created_at, address",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// The entries for these addresses (any case), for `explain`.
pub async fn of_addresses(db: &Db, addresses: &[&str]) -> Result<Vec<Suppression>, sqlx::Error> {
    let mut out = Vec::new();
    let mut conn = db.pool().acquire().await?;
    for a in addresses {
        if let Some(s) = get_on(&mut conn, &a.trim().to_ascii_lowercase()).await? {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

async fn get_on(
    conn: &mut sqlx::AnyConnection,
    address: &str,
) -> Result<Option<Suppression>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT address, reason, source, created_at FROM suppressions WHERE address = $1",
    )
    .bind(address)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<Suppression, sqlx::Error> {
    Ok(Suppression {
        address: r.try_get("address")?,
        reason: r.try_get("reason")?,
        source: r
            .try_get::<String, _>("source")?
            .parse()
            .map_err(UnknownState::into_sqlx)?,
        created_at: timestamp(r.try_get("created_at")?),
    })
}

/// Whether the list is empty: planning then skips the per-user lookups altogether.
pub(crate) async fn is_empty<'c, E>(conn: E) -> Result<bool, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    Ok(sqlx::query("SELECT 1 FROM suppressions LIMIT 1")
        .fetch_optional(conn)
        .await?
        .is_none())
}

/// SQL: whether the address in `column` is suppressed.
fn suppressed(column: &str) -> String {
    format!("EXISTS (SELECT 1 FROM suppressions s WHERE s.address = LOWER({column}))")
}

/// SQL: the address a message to `users u` goes to: the address on record, or, when that one
/// is suppressed, the institutional address if the user has one that is not.
pub(crate) fn recipient_sql() -> String {
    format!(
        "CASE WHEN {} AND {} THEN u.institutional_email ELSE u.email END",
        suppressed("u.email"),
        institutional_usable()
    )
}

/// SQL: true when the message to `users u` goes to the institutional address instead of the
/// address on record (see [`recipient_sql`]).
pub(crate) fn fallback_sql() -> String {
    format!("({} AND {})", suppressed("u.email"), institutional_usable())
}

/// SQL: the user of `users u` cannot be written to: the address on record is suppressed and
/// there is no institutional address to fall back on.
pub(crate) fn unreachable_sql() -> String {
    format!(
        "({} AND NOT {})",
        suppressed("u.email"),
        institutional_usable()
    )
}

fn institutional_usable() -> String {
    format!(
        "(u.institutional_email IS NOT NULL AND u.institutional_email <> '' AND NOT {})",
        suppressed("u.institutional_email")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_stored_lower_cased_and_checked() {
        assert_eq!(
            normalise("  Mario.Rossi@Libero.IT ").unwrap(),
            "mario.rossi@libero.it"
        );
        for bad in [
            "",
            "mario",
            "mario@",
            "@libero.it",
            "mario rossi@libero.it",
            "màrio@libero.it",
        ] {
            assert!(normalise(bad).is_err(), "{bad}");
        }
    }
}
