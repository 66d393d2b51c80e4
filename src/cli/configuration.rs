//! `avvisi config show`: the configuration in effect, each value with its source, secrets
//! masked (the masking happens when the settings are loaded: nothing here sees a secret).

use std::io::Write;
use std::process::ExitCode;

use super::ConfigCommand;
use crate::config::Settings;

pub(crate) fn run(
    command: &ConfigCommand,
    settings: &Settings,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Show = command;
    let text = if json {
        serde_json::to_string_pretty(&settings.effective.to_json())? + "\n"
    } else {
        format!(
            "# The configuration in effect; after each value, where it comes from.\n\
             # Secrets are masked (***).\n\n{}",
            settings.effective.to_toml()
        )
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `avvisi config show | head`: the reader has seen what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(ExitCode::SUCCESS)
}
