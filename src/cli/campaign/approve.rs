//! `avvisi campaign approve NAME [--yes]`: what the approver reads (the audience and ten
//! rendered messages), a confirmation at the terminal unless `--yes`, then the approval.

use std::process::ExitCode;

use super::print;
use crate::app::{Actor, App};
use crate::cli::print_json;

/// `campaign approve`: the preview, a confirmation (unless `--yes`), the approval.
pub(super) async fn run(
    app: &App,
    who: &Actor,
    name: &str,
    yes: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::{BufRead, IsTerminal, Write};
    let terminal = std::io::stdin().is_terminal();
    if !yes && (json || !terminal) {
        anyhow::bail!(
            "approving campaign {name} needs a confirmation: run it at a terminal, or pass --yes after reading `avvisi campaign preview {name}`"
        );
    }
    let preview = app.approval_preview(who, name).await?;
    if !json {
        print::approval_preview(&preview, app.settings().calendar.timezone);
    }
    if !yes {
        print!(
            "approve campaign {name} for these {} users? [y/N] ",
            preview.audience_size
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "si" | "sì") {
            println!("not approved: nothing was recorded");
            return Ok(ExitCode::FAILURE);
        }
    }
    let approved = app.approve_campaign(who, &preview).await?;
    if json {
        print_json(&serde_json::json!({ "preview": preview, "approved": approved }))?;
    } else {
        println!(
            "campaign {name} approved by {} for {} users (audience {}); `avvisi campaign launch {name}` starts it",
            approved.approved_by,
            approved.audience_size,
            &approved.audience_sha256[..12]
        );
    }
    Ok(ExitCode::SUCCESS)
}
