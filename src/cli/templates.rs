//! `avvisi templates check|preview`: the template editors' tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::print_json;
use crate::app::{App, TemplatesChecked, TemplatesPreviewed};
use crate::editor::check::MAX_SUBJECT_CHARS;

/// `templates check --help`: the subject limit is the one the check applies.
fn check_help() -> String {
    format!(
        "Example:\n  avvisi templates check\n  AVVISI__TEMPLATES__DIR=/home/redazione/templates avvisi templates check\n\n\
        Checks: syntax, unknown variables, filters and layouts, the three parts of every message\n\
        (subject.txt, body.txt, body.html), a subject on one line of at most {MAX_SUBJECT_CHARS} characters\n\
        (with the \"[PROVA] \" prefix of test messages), dates written with a date filter, no\n\
        template syntax left in the output, user data escaped in HTML and as written in text.\n\
        Warns (without failing) about a byte-order mark removed and about text and HTML\n\
        versions of a message that say different things.\n\n\
        Messages are in Italian, for the editors (templates/README.md is their guide).\n\n\
        Exit status: 0 when every template is fine, 1 when a problem was found (each one listed\n\
        as FILE:LINE: explanation)."
    )
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Load every template and render it with sample data covering every variant; list every
    /// problem with its file and line.
    #[command(after_help = check_help())]
    Check,
    /// Write DIR/index.html with every message rendered (subject, HTML and text side by side),
    /// and the .eml files.
    #[command(
        after_help = "Example:\n  avvisi templates preview --out preview\n  avvisi templates preview --out preview --user U0002 --now 2026-11-27T10:00:00+01:00\n\n\
        Then open preview/index.html in a browser; preview/MESSAGE/VARIANT.eml opens in a mail client.\n\
        Without --user every message is rendered in every situation for the sample users (accents,\n\
        apostrophes, markup and line breaks in names), each variant named in Italian\n\
        (3-giorni-html, ultimo-giorno-dangelo...). With --user, what that user of the database\n\
        receives on the day of --now (default: now): the message due that day, or the daily\n\
        digest with its sections, or nothing."
    )]
    Preview {
        /// Folder for index.html and the rendered files (created when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Render what this user of the database receives on the day of --now.
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
        /// The day previewed for --user (RFC 3339); default: now.
        #[arg(long, value_name = "TIMESTAMP", requires = "user")]
        now: Option<chrono::DateTime<chrono::Utc>>,
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
        TemplatesCommand::Preview { out, user, now } => {
            let r = app.preview_templates(&out, user.as_deref(), now).await?;
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
    for warning in &r.warnings {
        eprintln!("{warning}");
    }
    if r.problems.is_empty() {
        println!(
            "{dir}: tutti i modelli sono corretti ({} messaggi, ciascuno generato con {} esempi: {} \
             generazioni{})",
            r.messages.len(),
            r.samples,
            r.renders,
            match r.warnings.len() {
                0 => String::new(),
                1 => "; 1 avviso da leggere".to_string(),
                n => format!("; {n} avvisi da leggere"),
            }
        );
        return;
    }
    for problem in &r.problems {
        eprintln!("{problem}");
    }
    eprintln!(
        "{} problema/i in {dir}: correggerli prima di qualsiasi invio (poi di nuovo \
         `avvisi templates check` per verificare)",
        r.problems.len(),
    );
}

fn print_preview(r: &TemplatesPreviewed) {
    println!(
        "scritto {}: {} messaggi × {} varianti, {} file .eml (da aprire con il browser)",
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
        "{} variante/i non si possono generare (la pagina mostra l'errore): eseguire \
         `avvisi templates check`",
        r.failures.len()
    );
}
