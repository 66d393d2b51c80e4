//! `avvisi campaign ...` and `avvisi explain`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Db;

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// List campaigns.
    List,
}

pub async fn run(_cmd: CampaignCommand, _db: &Db, _settings: Arc<Settings>, _clock: &Clock) -> anyhow::Result<ExitCode> {
    anyhow::bail!("campaign commands are being built")
}

pub async fn explain(_db: &Db, _settings: &Settings, _user_id: &str) -> anyhow::Result<ExitCode> {
    anyhow::bail!("explain is being built")
}
