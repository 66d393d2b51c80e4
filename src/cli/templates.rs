//! `avvisi templates check|preview`: the template editors' tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::print_json;
use crate::app::{App, TemplatesChecked, TemplatesPreviewed};

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Load every template and render it with sample data covering every variant; list every
    /// problem with its file and line.
    #[command(
        after_help = "Example:\n  avvisi templates check\n  AVVISI__TEMPLATES__DIR=/home/redazione/templates avvisi templates check\n\n\
        Checks: syntax, unknown variables, filters and layouts, the three parts of every message\n\
        (subject.txt, body.txt, body.html), a subject on one line of at most 120 characters, no\n\
        template syntax left in the output, user data escaped in HTML and as written in text.\n\n\
        Exit status: 0 when every template is fine, 1 when a problem was found (each one listed\n\
        as FILE:LINE: explanation)."
    )]
    Check,
    /// Write DIR/index.html with every message rendered (subject, HTML and text side by side),
    /// and the .eml files.
    #[command(
        after_help = "Example:\n  avvisi templates preview --out preview\n  avvisi templates preview --out preview --user U0002\n\n\
        Then open preview/index.html in a browser; preview/MESSAGE/VARIANT.eml opens in a mail client.\n\
        Without --user the sample users are used (accents, apostrophes, markup and line breaks in\n\
        names); with --user every message is rendered for that user of the database."
    )]
    Preview {
        /// Folder for index.html and the rendered files (created when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Render every message for this user of the database instead of the sample users.
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
    },
}

pub(crate) async fn run(cmd: TemplatesCommand, app: &App, json: bool) -> anyhow::Result<ExitCode> {
    // Exit status 1 when a problem was found: each one is listed.
    let ok = match cmd {
        TemplatesCommand::Check => {
            let r = app.check_templates();
            if json {
                print_json(&r)?;
            } else {
                print_check(&r);
            }
            r.problems.is_empty()
        }
        TemplatesCommand::Preview { out, user } => {
            let r = app.preview_templates(&out, user.as_deref()).await?;
            if json {
                print_json(&r)?;
            } else {
                print_preview(&r);
            }
            r.failures.is_empty()
        }
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_check(r: &TemplatesChecked) {
    let dir = r.dir.display();
    if r.problems.is_empty() {
        println!(
            "{dir}: all templates are fine ({} messages, each rendered with {} samples: {} renders)",
            r.messages.len(),
            r.samples,
            r.renders
        );
        return;
    }
    for problem in &r.problems {
        eprintln!("{problem}");
    }
    eprintln!(
        "{} problem(s) in {dir}: fix them before anything is sent (`avvisi templates check` again to verify)",
        r.problems.len(),
    );
}

fn print_preview(r: &TemplatesPreviewed) {
    println!(
        "wrote {}: {} messages × {} variants, {} .eml files (open it in a browser)",
        r.index.display(),
        r.messages.len(),
        r.variants,
        r.emails
    );
    if r.failures.is_empty() {
        return;
    }
    for failure in &r.failures {
        eprintln!("  {failure}");
    }
    eprintln!(
        "{} variant(s) could not be rendered (shown as errors in the page): run `avvisi templates check`",
        r.failures.len()
    );
}
