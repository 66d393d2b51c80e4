//! `avvisi templates check|preview|publish|history|export|rollback`: the template editors' tools
//! and the sets published in the database.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{local, print_json};
use crate::app::{Actor, App, Published, TemplatesChecked, TemplatesPreviewed, TemplatesRefused};
use crate::editor::check::MAX_SUBJECT_CHARS;
use crate::telemetry::printable;

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
    /// Publish the templates of DIR: from the next batch on, every process (each daemon within
    /// `daemon.template_poll_seconds`) renders with them. Refused when the check finds a problem.
    #[command(
        after_help = "Example:\n  avvisi templates publish templates --note \"Promemoria: nuova frase sulla scadenza\"\n\n\
        The whole folder is checked as `avvisi templates check` checks it; with any problem nothing is\n\
        published and each problem is listed as FILE:LINE: explanation (exit status 1). The set is stored\n\
        in the database with its digest (the one each outbox row records), who published it, when and\n\
        the note. Every publication is in the audit log."
    )]
    Publish {
        /// The folder to publish (same layout as templates/).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// What this publication changes, in a few words (kept in the history).
        #[arg(long, value_name = "TEXT")]
        note: String,
    },
    /// The publications, newest first: digest, when, by whom, how, and the note.
    #[command(
        after_help = "Example:\n  avvisi templates history\n  avvisi templates history --json"
    )]
    History,
    /// Write every file of a published set into DIR (new or empty), byte for byte.
    #[command(
        after_help = "Example:\n  avvisi templates export 3f2a9c0d1e4b5a67 /tmp/live-templates\n\n\
        Use it to start editing from what is live, or to see what was live when a message was sent\n\
        (each outbox row records its digest)."
    )]
    Export {
        /// The set's digest (`avvisi templates history`).
        #[arg(value_name = "DIGEST")]
        digest: String,
        /// Folder to write the files into (created when missing; refused when not empty).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Publish an earlier set again: a new publication of that set, live from the next batch on.
    #[command(
        after_help = "Example:\n  avvisi templates rollback 3f2a9c0d1e4b5a67 --note \"torna al testo di ieri\"\n\n\
        The set is checked again first. The rollback is a publication of its own in the history and\n\
        the audit log; nothing is deleted."
    )]
    Rollback {
        /// The set's digest (`avvisi templates history`).
        #[arg(value_name = "DIGEST")]
        digest: String,
        /// Why (default: "rollback to DIGEST").
        #[arg(long, value_name = "TEXT", default_value = "")]
        note: String,
    },
}

pub(crate) async fn run(
    cmd: TemplatesCommand,
    app: &App,
    who: &Actor,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Exit status 1 when a problem was found: each one is listed.
    let ok = match cmd {
        TemplatesCommand::Publish { dir, note } => {
            let r = app.publish_templates(who, &dir, &note).await;
            published(r, json, "published")?
        }
        TemplatesCommand::Rollback { digest, note } => {
            let r = app.rollback_templates(who, &digest, &note).await;
            published(r, json, "rolled back to")?
        }
        TemplatesCommand::History => {
            let h = app.template_history().await?;
            if json {
                print_json(&h)?;
            } else if h.is_empty() {
                println!("no template set published yet (the first start publishes the templates folder)");
            } else {
                let tz = app.settings().calendar.timezone;
                for (i, p) in h.iter().enumerate() {
                    println!(
                        "{}  {}  {:<8}  {}  {}{}",
                        p.digest,
                        local(Some(p.published_at), tz),
                        p.kind.as_str(),
                        printable(&p.published_by),
                        printable(&p.note),
                        if i == 0 { "  (live)" } else { "" }
                    );
                }
            }
            true
        }
        TemplatesCommand::Export { digest, dir } => {
            let r = app.export_templates(&digest, &dir).await?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "wrote the {} files of template set {} into {}",
                    r.files,
                    r.digest,
                    r.dir.display()
                );
            }
            true
        }
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

/// Prints a publication, or the check's problems one per line (exit status 1); other errors
/// go up as they came.
fn published(r: anyhow::Result<Published>, json: bool, done: &str) -> anyhow::Result<bool> {
    match r {
        Ok(p) => {
            if json {
                print_json(&p)?;
            } else {
                println!(
                    "{done} template set {} ({} files, {} messages){}: live in every process from its next batch",
                    p.publication.digest,
                    p.files,
                    p.messages.len(),
                    match &p.previous {
                        Some(d) if *d != p.publication.digest => format!(", replacing {d}"),
                        Some(_) => ", the set already live".to_string(),
                        None => String::new(),
                    }
                );
            }
            Ok(true)
        }
        Err(e) => match e.downcast_ref::<TemplatesRefused>() {
            Some(TemplatesRefused::Check { problems }) => {
                for problem in problems {
                    eprintln!("{}", printable(problem));
                }
                eprintln!(
                    "{} problema/i: non è stato pubblicato nulla; correggili (`avvisi templates check` li elenca) e pubblica di nuovo",
                    problems.len()
                );
                Ok(false)
            }
            _ => Err(e),
        },
    }
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
