//! `avvisi templates check|preview`: the template editors' tools.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::clock::Clock;
use crate::config::Settings;
use crate::editor::preview::{self, PreviewInput};
use crate::editor::{self, check, Sample, SITUATIONS};
use crate::render::templates::TemplateSet;
use crate::store::Db;

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

pub async fn run(
    cmd: TemplatesCommand,
    db: &Db,
    settings: &Settings,
    clock: &Clock,
) -> anyhow::Result<ExitCode> {
    match cmd {
        TemplatesCommand::Check => Ok(check(settings)),
        TemplatesCommand::Preview { out, user } => {
            preview(db, settings, clock, &out, user.as_deref()).await
        }
    }
}

fn check(settings: &Settings) -> ExitCode {
    let dir = &settings.templates_dir;
    let report = check::check(dir, settings);
    if report.is_ok() {
        println!(
            "{}: all templates are fine ({} messages, each rendered with {} samples: {} renders)",
            dir.display(),
            report.messages.len(),
            report.samples,
            report.renders
        );
        return ExitCode::SUCCESS;
    }
    for problem in &report.problems {
        eprintln!("{problem}");
    }
    eprintln!(
        "{} problem(s) in {}: fix them before anything is sent (`avvisi templates check` again to verify)",
        report.problems.len(),
        dir.display()
    );
    ExitCode::FAILURE
}

async fn preview(
    db: &Db,
    settings: &Settings,
    clock: &Clock,
    out: &std::path::Path,
    user: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let set = TemplateSet::load(&settings.templates_dir)
        .context("loading templates (`avvisi templates check` lists every problem)")?;
    let tz = settings.calendar.timezone;
    let (samples, reopened_at, description) = match user {
        None => (
            editor::samples(),
            None,
            "Sample data: every message at every step (first notice, reminders, the last day, a test \
             message, one-off notices before and after the reopening), for names with apostrophes, \
             accents, markup and line breaks."
                .to_string(),
        ),
        Some(user_id) => {
            let view = crate::render::context::user_view(db, user_id)
                .await
                .context("reading the user")?
                .with_context(|| {
                    format!("no user `{user_id}` in the database (import the snapshot first: avvisi import users FILE)")
                })?;
            let reopened_at = crate::campaign::phases::reopened_at(db.pool())
                .await
                .context("reading the reopening date")?
                .map(|t| t.with_timezone(&tz).to_rfc3339());
            let samples: Vec<Sample> = SITUATIONS
                .iter()
                .map(|s| Sample::for_user(*s, user_id, view.clone()))
                .collect();
            let description = format!(
                "User {user_id} ({}) from the database: every message in every situation it can be sent in.",
                view.full_name
            );
            (samples, reopened_at, description)
        }
    };
    let input = PreviewInput {
        samples: &samples,
        reopened_at,
        description,
        now: clock.now(),
    };
    let report =
        preview::write_preview(&set, settings, &input, out).context("writing the preview")?;
    println!(
        "wrote {}: {} messages × {} variants, {} .eml files (open it in a browser)",
        report.index.display(),
        report.messages.len(),
        report.variants,
        report.emails
    );
    if report.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &report.failures {
        eprintln!("  {failure}");
    }
    eprintln!(
        "{} variant(s) could not be rendered (shown as errors in the page): run `avvisi templates check`",
        report.failures.len()
    );
    Ok(ExitCode::FAILURE)
}
