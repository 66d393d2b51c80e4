//! `avvisi daemon` (`service reopen` and `calendar` are in `phases.rs`).

use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::config::Settings;
use crate::daemon;
use crate::store::Db;

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn daemon(
    db: &Db,
    settings: Arc<Settings>,
    clock: Clock,
    now: Option<DateTime<Utc>>,
) -> anyhow::Result<ExitCode> {
    let clock = match now {
        Some(at) => Clock::starting_at(at),
        None => clock,
    };
    daemon::run_until_signal(db.clone(), settings, clock).await?;
    Ok(ExitCode::SUCCESS)
}
