//! `avvisi users add|list|disable|passwd|role|address`: the console's accounts, kept from the host. A
//! password is read from the terminal without echo, or, when standard input is not a terminal,
//! as one line of it (for scripts: `printf '%s\n' "$PASSWORD" | avvisi users add ...`); never
//! from the command line, where `ps` and the shell's history would show it.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use secrecy::SecretString;

use super::{local, print_json, show};
use crate::app::{AccountChanged, Actor, App, MIN_PASSWORD_CHARS};
use crate::store::accounts::Role;

/// The accounts that may sign in to the console.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add an account; its password is asked for (or read from standard input).
    #[command(
        after_help = "Roles: viewer, operator, approver, editor, admin (what each may do: docs/console.md).\n\
        The password has at least 12 characters; it is stored as an Argon2id hash only.\n\n\
        Examples:\n  avvisi users add mario.rossi --role operator\n  \
        printf '%s\\n' \"$PASSWORD\" | avvisi users add anna.bianchi --role approver"
    )]
    Add {
        /// The account's name: 1 to 64 characters among a-z, 0-9, `.`, `_`, `-` and `@`.
        name: String,
        #[arg(long)]
        role: Role,
        /// The account's own email address: where the console sends its test messages.
        #[arg(long)]
        address: Option<String>,
    },
    /// Every account: name, role, disabled or not, times (never a password or a hash).
    #[command(after_help = "Example:\n  avvisi users list\n  avvisi users list --json")]
    List,
    /// Disable an account: it can no longer sign in (its history stays).
    #[command(after_help = "Example:\n  avvisi users disable mario.rossi")]
    Disable { name: String },
    /// Set a new password for an account (asked for, or read from standard input).
    #[command(after_help = "Example:\n  avvisi users passwd mario.rossi")]
    Passwd { name: String },
    /// Give an account another role.
    #[command(after_help = "Example:\n  avvisi users role mario.rossi approver")]
    Role { name: String, role: Role },
    /// Set an account's own email address (where the console sends its test messages).
    #[command(
        after_help = "Example:\n  avvisi users address mario.rossi mario.rossi@istruzione.it"
    )]
    Address { name: String, address: String },
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &Role::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// The password: from the terminal without echo, asked twice; otherwise one line of standard
/// input. Its length is checked by the library, which refuses it before anything is written.
fn read_password(name: &str) -> anyhow::Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!(
            "password for {name} (at least {MIN_PASSWORD_CHARS} characters): "
        ))
        .context("reading the password from the terminal")?;
        let again = rpassword::prompt_password("the same password again: ")
            .context("reading the password from the terminal")?;
        if first != again {
            anyhow::bail!("the two passwords differ: nothing was changed");
        }
        return Ok(SecretString::from(first));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!(
            "no password on standard input: give it as one line (or run the command at a terminal to be asked for it)"
        );
    }
    Ok(SecretString::from(password))
}

fn print_changed(c: &AccountChanged) {
    println!(
        "account {}: {} (role {}{})",
        c.name,
        c.change,
        c.role,
        if c.disabled { ", disabled" } else { "" }
    );
}

pub(crate) async fn run(
    cmd: UsersCommand,
    app: &App,
    who: &Actor,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match cmd {
        UsersCommand::Add {
            name,
            role,
            address,
        } => {
            let password = read_password(&name)?;
            let c = app
                .add_account(who, &name, role, &password, address.as_deref())
                .await?;
            show(json, &c, print_changed)
        }
        UsersCommand::List => {
            let all = app.accounts().await?;
            if json {
                print_json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let tz = app.settings().calendar.timezone;
            if all.is_empty() {
                println!("no accounts yet: `avvisi users add NAME --role ROLE` adds one");
            }
            for a in &all {
                println!(
                    "{:<24} {:<9} {:<9} {:<32} created {}, changed {}",
                    a.name,
                    a.role,
                    if a.disabled { "disabled" } else { "active" },
                    a.address.as_deref().unwrap_or("-"),
                    local(a.created_at, tz),
                    local(a.updated_at, tz)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::Disable { name } => {
            let c = app.disable_account(who, &name).await?;
            show(json, &c, print_changed)
        }
        UsersCommand::Passwd { name } => {
            let password = read_password(&name)?;
            let c = app.set_password(who, &name, &password).await?;
            show(json, &c, print_changed)
        }
        UsersCommand::Role { name, role } => {
            let c = app.set_role(who, &name, role).await?;
            show(json, &c, print_changed)
        }
        UsersCommand::Address { name, address } => {
            let c = app.set_address(who, &name, &address).await?;
            show(json, &c, print_changed)
        }
    }
}
