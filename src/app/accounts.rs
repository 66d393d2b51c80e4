//! The console's accounts: add, disable, change a password or a role (each audited), list them,
//! and check a login. Passwords are hashed with Argon2id (the `argon2` crate's defaults, OWASP's
//! recommendation: 19 MiB, 2 passes) into a PHC string; a password is never stored, logged or
//! put in an error.
//!
//! Throttling repeated wrong passwords is the browser's job (per account and per address, where
//! the requests arrive); [`App::verify_login`] only answers right or wrong, in constant work.

use std::sync::OnceLock;

use anyhow::Context;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::access::{Action, Actor};
use super::audit::{summary, Audited};
use super::App;
use crate::store::accounts::{self, Account, Change, Role};

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Why an account command was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the password is too short: at least {MIN_PASSWORD_CHARS} characters, please (a sentence is easier to remember than symbols)")]
    ShortPassword,
    #[error("the password is too long: at most 1024 characters")]
    LongPassword,
    #[error("account name `{0}` is not valid: use 1 to 64 characters among a-z, 0-9, `.`, `_`, `-` and `@`")]
    InvalidName(String),
    #[error("an account named `{0}` already exists (see `avvisi users list`)")]
    AlreadyExists(String),
    #[error("no account named `{0}` (see `avvisi users list`)")]
    NotFound(String),
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error("address `{address}` for account `{name}` {problem}")]
    InvalidAddress {
        name: String,
        address: String,
        problem: String,
    },
    #[error("`{0}` cannot disable their own account: another administrator (or the host's command line) must")]
    OwnAccount(String),
    #[error("the current password is wrong: nothing was changed")]
    WrongCurrentPassword,
    #[error("the new password is the current one: choose another")]
    SamePassword,
}

/// A login refused. An unknown name and a wrong password are the same answer, and cost the same
/// work, so that the answer does not tell which names exist.
#[derive(Debug, thiserror::Error)]
pub enum LoginRefused {
    #[error("wrong name or password")]
    WrongCredentials,
    #[error("the account `{0}` is disabled: ask an administrator")]
    Disabled(String),
    #[error("the login could not be checked: {0}")]
    Unavailable(String),
}

/// An account's change, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct AccountChanged {
    pub name: String,
    /// `added`, `disabled`, `password changed`, `role changed`, `address changed`.
    pub change: String,
    pub role: Role,
    pub disabled: bool,
    pub address: Option<String>,
}

/// The address checked as the snapshot's addresses are (one mailbox, nothing else).
fn check_address(name: &str, address: &str) -> Result<(), AccountError> {
    match crate::import::snapshot::email_problem(address) {
        None => Ok(()),
        Some(problem) => Err(AccountError::InvalidAddress {
            name: name.to_string(),
            address: address.to_string(),
            problem: problem.to_string(),
        }),
    }
}

/// What the audit log keeps of an account: never its hash; its address once it has one, and
/// whether its owner must change the password someone else set.
fn account_summary(a: &Account) -> Option<String> {
    described(
        a.role,
        a.disabled,
        a.address.as_deref(),
        a.must_change_password,
    )
}

fn described(
    role: Role,
    disabled: bool,
    address: Option<&str>,
    must_change_password: bool,
) -> Option<String> {
    let mut v = serde_json::json!({ "role": role, "disabled": disabled });
    if let Some(address) = address {
        v["address"] = address.into();
    }
    if must_change_password {
        v["must_change_password"] = true.into();
    }
    summary(v)
}

fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'@')
        });
    ok.then_some(())
        .ok_or_else(|| AccountError::InvalidName(name.to_string()))
}

/// The Argon2id PHC string of `password`, after checking its length.
fn hash(password: &SecretString) -> Result<String, AccountError> {
    let p = password.expose_secret();
    let chars = p.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(AccountError::ShortPassword);
    }
    if chars > 1024 {
        return Err(AccountError::LongPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(p.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// A hash of a random password with the same parameters, verified against when the name is
/// unknown: the same work as for a known name.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        let random = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(random.as_str().as_bytes(), &salt)
            .expect("hashing a random password")
            .to_string()
    })
}

fn verifies(password: &SecretString, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), &h)
            .is_ok()
    })
}

impl App {
    /// Every account, by name (never a hash).
    pub async fn accounts(&self) -> anyhow::Result<Vec<Account>> {
        let mut conn = self.db.pool().acquire().await?;
        accounts::list(&mut conn)
            .await
            .context("reading the accounts")
    }

    /// Adds an account with `role` and `password` (hashed; at least 12 characters), and its own
    /// `address` when given (where its test messages go).
    pub async fn add_account(
        &self,
        who: &Actor,
        name: &str,
        role: Role,
        password: &SecretString,
        address: Option<&str>,
    ) -> anyhow::Result<AccountChanged> {
        self.permit(who, Action::UsersAdd, name).await?;
        let audited = Audited::new(who, Action::UsersAdd, name);
        // Hashed before the transaction opens: the hash takes a while, the database waits for
        // nobody meanwhile.
        let hashed = hash(password);
        let mut tx = self.begin().await?;
        let result = async {
            check_name(name)?;
            if let Some(a) = address {
                check_address(name, a)?;
            }
            let hashed = hashed?;
            if !accounts::insert(&mut tx, name, role, &hashed, address, self.clock.now()).await? {
                return Err(AccountError::AlreadyExists(name.to_string()).into());
            }
            let changed = AccountChanged {
                name: name.to_string(),
                change: "added".to_string(),
                role,
                disabled: false,
                address: address.map(str::to_string),
            };
            let after = described(role, false, address, true);
            Ok((changed, after))
        }
        .await;
        self.settle(tx, audited, result, false).await
    }

    /// Disables an account: it can no longer sign in.
    pub async fn disable_account(&self, who: &Actor, name: &str) -> anyhow::Result<AccountChanged> {
        self.change_account(who, Action::UsersDisable, name, Change::Disable)
            .await
    }

    /// Replaces an account's password (at least 12 characters). Set by someone other than its
    /// owner (an administrator's reset), the owner must change it at the next login; set by
    /// the owner (`users passwd` as the operating-system user of that name), that mark goes.
    pub async fn set_password(
        &self,
        who: &Actor,
        name: &str,
        password: &SecretString,
    ) -> anyhow::Result<AccountChanged> {
        self.permit(who, Action::UsersPasswd, name).await?;
        match hash(password) {
            Ok(h) => {
                let change = Change::Password {
                    hash: &h,
                    must_change: who.name() != name,
                };
                self.change_account(who, Action::UsersPasswd, name, change)
                    .await
            }
            Err(e) => {
                let tx = self.begin().await?;
                let a = Audited::new(who, Action::UsersPasswd, name);
                self.settle(tx, a, Err(e.into()), false).await
            }
        }
    }

    /// Gives an account another role.
    pub async fn set_role(
        &self,
        who: &Actor,
        name: &str,
        role: Role,
    ) -> anyhow::Result<AccountChanged> {
        self.change_account(who, Action::UsersRole, name, Change::Role(role))
            .await
    }

    /// Sets an account's own address: where the console sends its test messages.
    pub async fn set_address(
        &self,
        who: &Actor,
        name: &str,
        address: &str,
    ) -> anyhow::Result<AccountChanged> {
        let address = address.trim();
        if let Err(e) = check_address(name, address) {
            self.permit(who, Action::UsersAddress, name).await?;
            let tx = self.begin().await?;
            let a = Audited::new(who, Action::UsersAddress, name);
            return self.settle(tx, a, Err(e.into()), false).await;
        }
        self.change_account(who, Action::UsersAddress, name, Change::Address(address))
            .await
    }

    async fn change_account(
        &self,
        who: &Actor,
        action: Action,
        name: &str,
        change: Change<'_>,
    ) -> anyhow::Result<AccountChanged> {
        self.permit(who, action, name).await?;
        let mut tx = self.begin().await?;
        let mut audited = Audited::new(who, action, name);
        // An administrator who disabled themselves would lock the console's accounts page.
        if matches!(change, Change::Disable)
            && matches!(who, Actor::Account { name: own, .. } if own == name)
        {
            let refused = Err(AccountError::OwnAccount(name.to_string()).into());
            return self.settle(tx, audited, refused, false).await;
        }
        let before = accounts::find(&mut tx, name).await?;
        audited.before = before.as_ref().and_then(account_summary);
        let result = async {
            if before.is_none()
                || !accounts::update(&mut tx, name, change, self.clock.now()).await?
            {
                return Err(AccountError::NotFound(name.to_string()).into());
            }
            let a = accounts::find(&mut tx, name)
                .await?
                .ok_or_else(|| AccountError::NotFound(name.to_string()))?;
            let after = account_summary(&a);
            let change = match change {
                Change::Disable => "disabled",
                Change::Password { .. } => "password changed",
                Change::Role(_) => "role changed",
                Change::Address(_) => "address changed",
            };
            Ok((
                AccountChanged {
                    name: a.name,
                    change: change.to_string(),
                    role: a.role,
                    disabled: a.disabled,
                    address: a.address,
                },
                after,
            ))
        }
        .await;
        self.settle(tx, audited, result, false).await
    }

    /// The signed-in account `who` replaces its own password: `current` must be right, `new`
    /// another one of at least [`MIN_PASSWORD_CHARS`] characters. Clears the mark of a password
    /// set by someone else. Audited as `account.password`, a refusal too (never a password).
    pub async fn change_own_password(
        &self,
        who: &Actor,
        current: &SecretString,
        new: &SecretString,
    ) -> anyhow::Result<AccountChanged> {
        let name = who.name().to_string();
        self.permit(who, Action::OwnPassword, &name).await?;
        // The current password is a password guessed like a login's: the same throttle, or a
        // stolen session could try passwords here without end.
        let address = who.source();
        let now = self.clock.now();
        let mut tx = self.begin().await?;
        if let Some(retry_at) =
            super::sessions::throttled_until(&mut tx, &name, &address, now).await?
        {
            tracing::warn!(account = %name, "change of password refused: throttled");
            let a = Audited::new(who, Action::OwnPassword, &name);
            let e = anyhow::Error::new(super::SessionRefused::Throttled { retry_at });
            return self.settle(tx, a, Err(e), false).await;
        }
        tx.rollback().await?;
        let checked = match self.verify_login(&name, current).await {
            Err(LoginRefused::Unavailable(e)) => return Err(anyhow::anyhow!(e)),
            Err(_) => Err(AccountError::WrongCurrentPassword),
            Ok(_) if current.expose_secret() == new.expose_secret() => {
                Err(AccountError::SamePassword)
            }
            Ok(_) => hash(new),
        };
        match checked {
            Ok(h) => {
                let change = Change::Password {
                    hash: &h,
                    must_change: false,
                };
                self.change_account(who, Action::OwnPassword, &name, change)
                    .await
            }
            Err(e) => {
                let mut tx = self.begin().await?;
                let wrong = matches!(e, AccountError::WrongCurrentPassword);
                if wrong {
                    super::sessions::record_wrong_password(&mut tx, &name, &address, now).await?;
                }
                let a = Audited::new(who, Action::OwnPassword, &name);
                // The failure row is kept with the refusal's audit row.
                self.settle(tx, a, Err(e.into()), wrong).await
            }
        }
    }

    /// The account named `name` when `password` is its password and it is not disabled. An
    /// unknown name costs the same work as a wrong password (a dummy hash is verified).
    pub async fn verify_login(
        &self,
        name: &str,
        password: &SecretString,
    ) -> Result<Account, LoginRefused> {
        let unavailable = |e: sqlx::Error| LoginRefused::Unavailable(e.to_string());
        let mut conn = self.db.pool().acquire().await.map_err(unavailable)?;
        let found = accounts::with_hash(&mut conn, name)
            .await
            .map_err(unavailable)?;
        drop(conn);
        let Some((account, phc)) = found else {
            verifies(password, dummy_hash());
            return Err(LoginRefused::WrongCredentials);
        };
        if !verifies(password, &phc) {
            return Err(LoginRefused::WrongCredentials);
        }
        if account.disabled {
            return Err(LoginRefused::Disabled(account.name));
        }
        Ok(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_and_verifies_only_its_password() {
        let right = SecretString::from("correct horse battery".to_string());
        let h = hash(&right).unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verifies(&right, &h));
        assert!(!verifies(
            &SecretString::from("wrong horse battery".to_string()),
            &h
        ));
        assert!(matches!(
            hash(&SecretString::from("short".to_string())),
            Err(AccountError::ShortPassword)
        ));
        assert!(check_name("mario.rossi").is_ok());
        assert!(check_name("Mario Rossi").is_err());
    }
}
