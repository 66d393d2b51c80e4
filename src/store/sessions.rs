//! The console's sessions and its login throttle (migration 0016). A session is found by the
//! SHA-256 of its token: the token itself is never stored. Times are UTC Unix seconds.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::timestamp;

/// A session as stored: whose it is, its form token, when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub account: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// Records a new session, and forgets the sessions expired at `now` (the table stays small
/// without a cleaning job).
pub(crate) async fn insert(
    conn: &mut sqlx::AnyConnection,
    token_sha256: &str,
    account: &str,
    csrf: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (token_sha256, account, csrf, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_sha256)
    .bind(account)
    .bind(csrf)
    .bind(now.timestamp())
    .bind(expires_at.timestamp())
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now.timestamp())
        .execute(conn)
        .await?;
    Ok(())
}

/// The session of `token_sha256` when it has not expired at `now`.
pub(crate) async fn find(
    conn: &mut sqlx::AnyConnection,
    token_sha256: &str,
    now: DateTime<Utc>,
) -> Result<Option<StoredSession>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT account, csrf, expires_at FROM sessions \
         WHERE token_sha256 = $1 AND expires_at > $2",
    )
    .bind(token_sha256)
    .bind(now.timestamp())
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(StoredSession {
            account: r.try_get("account")?,
            csrf: r.try_get("csrf")?,
            expires_at: timestamp(Some(r.try_get("expires_at")?)).unwrap_or_default(),
        })
    })
    .transpose()
}

/// Ends the session of `token_sha256` and forgets every session expired at `now`; the account
/// whose session it was, if any.
pub(crate) async fn delete(
    conn: &mut sqlx::AnyConnection,
    token_sha256: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    let account = sqlx::query("SELECT account FROM sessions WHERE token_sha256 = $1")
        .bind(token_sha256)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get::<String, _>("account"))
        .transpose()?;
    sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1 OR expires_at <= $2")
        .bind(token_sha256)
        .bind(now.timestamp())
        .execute(conn)
        .await?;
    Ok(account)
}

/// Records a wrong password for `account` from `address`, and forgets those before
/// `forget_before` (older than the throttle's window, they count no more).
pub(crate) async fn record_failure(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    address: &str,
    now: DateTime<Utc>,
    forget_before: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO login_failures (at, account, address) VALUES ($1, $2, $3)")
        .bind(now.timestamp())
        .bind(account)
        .bind(address)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM login_failures WHERE at < $1")
        .bind(forget_before.timestamp())
        .execute(conn)
        .await?;
    Ok(())
}

/// The wrong passwords since `since` for `account` and for `address`: how many of each, and the
/// oldest of the larger group (when the window frees a try again).
pub(crate) async fn failures_since(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    address: &str,
    since: DateTime<Utc>,
) -> Result<Failures, sqlx::Error> {
    let mut counts = [(0i64, None), (0i64, None)];
    for (i, (column, value)) in [("account", account), ("address", address)]
        .into_iter()
        .enumerate()
    {
        let r = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM login_failures \
             WHERE {column} = $1 AND at >= $2"
        ))
        .bind(value)
        .bind(since.timestamp())
        .fetch_one(&mut *conn)
        .await?;
        counts[i] = (r.try_get("n")?, r.try_get::<Option<i64>, _>("oldest")?);
    }
    Ok(Failures {
        by_account: counts[0].0 as u64,
        oldest_by_account: timestamp(counts[0].1),
        by_address: counts[1].0 as u64,
        oldest_by_address: timestamp(counts[1].1),
    })
}

/// What [`failures_since`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failures {
    pub by_account: u64,
    pub oldest_by_account: Option<DateTime<Utc>>,
    pub by_address: u64,
    pub oldest_by_address: Option<DateTime<Utc>>,
}
