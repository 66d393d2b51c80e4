//! The console's sign-in: a login checked against the throttle and the password, a session
//! kept in the database (only its token's SHA-256), found again on every request with the
//! account's role read afresh, and the sign-out. Logins, logouts and refused forms go to the
//! audit log; a token, a password or a cookie never does.

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::access::{Action, Actor};
use super::accounts::LoginRefused;
use super::audit::{summary, Audited};
use super::App;
use crate::store::accounts::{self, Account};
use crate::store::sessions;

/// Wrong passwords allowed per account, and per client address, within [`THROTTLE_WINDOW`].
pub const MAX_FAILURES: u64 = 5;
/// The window the throttle counts wrong passwords over.
pub const THROTTLE_WINDOW: Duration = Duration::minutes(15);

/// A session just opened: the token goes to the browser's cookie and nowhere else.
pub struct NewSession {
    pub token: SecretString,
    pub account: Account,
    pub expires_at: DateTime<Utc>,
}

/// A request's session: whose it is (the role read now) and its form token.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub account: Account,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

impl SignedIn {
    /// The actor the use cases are called with; `address` is where the request came from.
    pub fn actor(&self, address: Option<String>) -> Actor {
        Actor::Account {
            name: self.account.name.clone(),
            role: self.account.role,
            address,
        }
    }
}

/// Why a login or a form was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionRefused {
    #[error(transparent)]
    Login(#[from] LoginRefused),
    /// Too many wrong passwords lately, for the account or from the address.
    #[error("too many wrong passwords: try again after {retry_at}")]
    Throttled { retry_at: DateTime<Utc> },
    /// A form without the session's token, or with another one.
    #[error("the form's security token is missing or wrong")]
    Csrf,
}

/// The hex SHA-256 of `token`: what the database keeps.
fn digest(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 random bytes from the operating system, as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two tokens in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// When the throttle lets `name`, or anyone from `address`, try a password again, if it holds
/// at `now`: [`MAX_FAILURES`] wrong passwords within [`THROTTLE_WINDOW`]. The login and the
/// change of one's own password (its current password) count and obey the same throttle.
pub(crate) async fn throttled_until(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    address: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let failures = sessions::failures_since(conn, name, address, now - THROTTLE_WINDOW).await?;
    Ok([
        (failures.by_account, failures.oldest_by_account),
        (failures.by_address, failures.oldest_by_address),
    ]
    .into_iter()
    .filter(|(n, _)| *n >= MAX_FAILURES)
    .filter_map(|(_, oldest)| oldest.map(|t| t + THROTTLE_WINDOW))
    .max())
}

/// Counts a wrong password of `name` from `address` toward the throttle.
pub(crate) async fn record_wrong_password(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    address: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    // A day back, not the window: a clock moved back a little (tests, `--now`) must not forget
    // failures that still count.
    let forget_before = now - Duration::days(1);
    sessions::record_failure(conn, name, address, now, forget_before)
        .await
        .context("recording a wrong password")
}

impl App {
    /// Signs `name` in with `password` from `address`: refused while the throttle holds (no
    /// password checked then), a wrong password counted, a session opened on success. Every
    /// outcome is in the audit log.
    pub async fn login(
        &self,
        name: &str,
        password: &SecretString,
        address: &str,
    ) -> anyhow::Result<NewSession> {
        let now = self.clock.now();
        // The actor as far as it is known before the password is checked: the role is not.
        let who = Actor::Account {
            name: name.to_string(),
            role: crate::store::accounts::Role::Viewer,
            address: Some(address.to_string()),
        };
        let mut audited = Audited::new(&who, Action::Login, name);
        audited.role = Some("unknown");
        let mut tx = self.begin().await?;
        if let Some(retry_at) = throttled_until(&mut tx, name, address, now).await? {
            tracing::warn!(account = name, "login refused: throttled");
            let e = anyhow::Error::new(SessionRefused::Throttled { retry_at });
            return self.settle(tx, audited, Err(e), false).await;
        }
        tx.rollback().await?;
        let account = match self.verify_login(name, password).await {
            Ok(a) => a,
            Err(refused) => {
                let mut tx = self.begin().await?;
                if matches!(refused, LoginRefused::WrongCredentials) {
                    record_wrong_password(&mut tx, name, address, now).await?;
                }
                tracing::warn!(account = name, "login refused: {refused}");
                let e = anyhow::Error::new(SessionRefused::Login(refused));
                // The failure row is kept with the refusal's audit row.
                return self.settle(tx, audited, Err(e), true).await;
            }
        };
        let who = Actor::Account {
            name: account.name.clone(),
            role: account.role,
            address: Some(address.to_string()),
        };
        let audited = Audited::new(&who, Action::Login, name);
        let token = random_token();
        let expires_at = now + Duration::minutes(i64::from(self.settings.http.session_minutes));
        let mut tx = self.begin().await?;
        let result = async {
            sessions::insert(
                &mut tx,
                &digest(&token),
                name,
                &random_token(),
                now,
                expires_at,
            )
            .await?;
            let after = summary(serde_json::json!({ "expires_at": expires_at }));
            Ok(((), after))
        }
        .await;
        self.settle(tx, audited, result, false).await?;
        tracing::info!(account = name, "signed in to the console");
        Ok(NewSession {
            token: SecretString::from(token),
            account,
            expires_at,
        })
    }

    /// The session of the cookie's `token`: `None` when unknown, expired, or its account is
    /// gone or disabled meanwhile. The account's role is read now, not remembered.
    pub async fn session(&self, token: &SecretString) -> anyhow::Result<Option<SignedIn>> {
        let mut conn = self.db.pool().acquire().await?;
        let now = self.clock.now();
        let Some(s) = sessions::find(&mut conn, &digest(token.expose_secret()), now)
            .await
            .context("reading the session")?
        else {
            return Ok(None);
        };
        let account = accounts::find(&mut conn, &s.account)
            .await
            .context("reading the session's account")?;
        Ok(account.filter(|a| !a.disabled).map(|account| SignedIn {
            account,
            csrf: s.csrf,
            expires_at: s.expires_at,
        }))
    }

    /// Whether `given` is the session's form token. A wrong one is refused with
    /// [`SessionRefused::Csrf`] and the refusal of `action` on `object` is recorded.
    pub async fn check_form(
        &self,
        who: &Actor,
        session: &SignedIn,
        given: Option<&str>,
        action: Action,
        object: &str,
    ) -> anyhow::Result<()> {
        if given.is_some_and(|g| same(g, &session.csrf)) {
            return Ok(());
        }
        tracing::warn!(actor = %who, %action, "refused: a form without its security token");
        let tx = self.begin().await?;
        let e = anyhow::Error::new(SessionRefused::Csrf);
        self.settle::<()>(tx, Audited::new(who, action, object), Err(e), false)
            .await
    }

    /// Ends the session of `token` (and forgets the expired ones).
    pub async fn logout(&self, who: &Actor, token: &SecretString) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        let audited = Audited::new(who, Action::Logout, who.name());
        let result = async {
            sessions::delete(&mut tx, &digest(token.expose_secret()), self.clock.now()).await?;
            Ok(((), None))
        }
        .await;
        self.settle(tx, audited, result, false).await?;
        tracing::info!(account = who.name(), "signed out of the console");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_stored_as_their_digest() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token());
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), a);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &random_token()));
        assert!(!same(&a, ""));
    }
}
