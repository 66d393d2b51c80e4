//! The console's accounts: a name, a role, an Argon2id hash (hashing is the application's
//! business: this module stores the PHC string it is given and never sees a password).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::timestamp;

/// What an account may do (the table is [`crate::app::Actor::may`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: the status, the campaigns, the audit log.
    Viewer,
    /// Runs campaigns: create, preview, test send, launch, pause, resume, cancel, retry,
    /// suppress, declare the reopening.
    Operator,
    /// Approves or rejects a one-off campaign before its launch.
    Approver,
    /// Edits the templates.
    Editor,
    /// Manages the accounts.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Operator,
        Role::Approver,
        Role::Editor,
        Role::Admin,
    ];

    /// The text stored in the database and typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A role name that is none of [`Role::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown role `{0}`: the roles are viewer, operator, approver, editor and admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// An account as listed: never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    /// Where the console sends this account's test messages; `None` until set.
    pub address: Option<String>,
    /// Its password was set by someone else: its owner must set their own before anything
    /// else in the console.
    pub must_change_password: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "name, role, disabled, address, must_change_password, created_at, updated_at";

fn from_row(r: &AnyRow) -> Result<Account, sqlx::Error> {
    let role: String = r.try_get("role")?;
    Ok(Account {
        name: r.try_get("name")?,
        role: role
            .parse()
            .map_err(|e: UnknownRole| sqlx::Error::Decode(e.into()))?,
        disabled: r.try_get::<i64, _>("disabled")? == 1,
        address: r.try_get("address")?,
        must_change_password: r.try_get::<i64, _>("must_change_password")? == 1,
        created_at: timestamp(r.try_get("created_at")?),
        updated_at: timestamp(r.try_get("updated_at")?),
    })
}

/// Every account, by name.
pub async fn list(conn: &mut sqlx::AnyConnection) -> Result<Vec<Account>, sqlx::Error> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts ORDER BY name"))
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The account named `name`, if any.
pub async fn find(
    conn: &mut sqlx::AnyConnection,
    name: &str,
) -> Result<Option<Account>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts WHERE name = $1"))
        .bind(name)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The account named `name` and its stored hash, for a login.
pub(crate) async fn with_hash(
    conn: &mut sqlx::AnyConnection,
    name: &str,
) -> Result<Option<(Account, String)>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, password_hash FROM accounts WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.as_ref()
        .map(|r| Ok((from_row(r)?, r.try_get("password_hash")?)))
        .transpose()
}

/// Adds an account, whose password its owner must change at the first login (someone else
/// chose it); false when the name is taken (nothing written).
pub(crate) async fn insert(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    role: Role,
    hash: &str,
    address: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "INSERT INTO accounts (name, role, password_hash, disabled, address, must_change_password, \
            created_at, updated_at) \
         VALUES ($1, $2, $3, 0, $5, 1, $4, $4) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(hash)
    .bind(now.timestamp())
    .bind(address)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// One change to an existing account.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    Disable,
    /// A new password hash; `must_change`: someone other than the owner set it.
    Password {
        hash: &'a str,
        must_change: bool,
    },
    Role(Role),
    Address(&'a str),
}

/// Applies `change` to the account named `name`; false when there is no such account.
pub(crate) async fn update(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    change: Change<'_>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let (set, value) = match change {
        Change::Disable => ("disabled = 1", None),
        Change::Password {
            hash,
            must_change: true,
        } => (
            "password_hash = $3, must_change_password = 1",
            Some(hash.to_string()),
        ),
        Change::Password {
            hash,
            must_change: false,
        } => (
            "password_hash = $3, must_change_password = 0",
            Some(hash.to_string()),
        ),
        Change::Role(r) => ("role = $3", Some(r.as_str().to_string())),
        Change::Address(a) => ("address = $3", Some(a.to_string())),
    };
    let sql = format!("UPDATE accounts SET {set}, updated_at = $2 WHERE name = $1");
    let mut q = sqlx::query(&sql).bind(name).bind(now.timestamp());
    if let Some(v) = value {
        q = q.bind(v);
    }
    Ok(q.execute(conn).await?.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_an_unknown_one_lists_them() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert_eq!(
            "root".parse::<Role>().unwrap_err().to_string(),
            "unknown role `root`: the roles are viewer, operator, approver, editor and admin"
        );
    }
}
