//! `avvisi templates preview`: every message rendered with the sample data (or what one real
//! user receives on one day), written as files a template editor opens in a browser, in
//! Italian.
//!
//! `DIR/index.html` lists every message and variant with its subject, the HTML version (in an
//! `<iframe srcdoc>`, sandboxed) and the text version (in a `<pre>`) side by side, and links to
//! `DIR/MESSAGE/VARIANT.html`, `.txt` and `.eml` (the email as it would be sent, built by
//! [`crate::render::email::build`]). A variant that cannot be rendered is shown with its error.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tera::escape_html;

use crate::config::Settings;
use crate::editor::{self, Sample};
use crate::render::email::{self, Envelope};
use crate::render::templates::{self, MessageContext, Rendered, TemplateSet};

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the templates folder {}: {source}", dir.display())]
    Read {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// What [`write_preview`] wrote.
#[derive(Debug, Clone)]
pub struct PreviewReport {
    /// `DIR/index.html`.
    pub index: PathBuf,
    pub messages: Vec<String>,
    /// Variants per message.
    pub variants: usize,
    /// `.eml` files written.
    pub emails: usize,
    /// `MESSAGE/VARIANT: error` for every variant that could not be rendered or built.
    pub failures: Vec<String>,
}

/// What to render and how to label it.
pub struct PreviewInput<'a> {
    pub samples: &'a [Sample],
    /// The reopening instant to use in every message (a real user's preview once operators
    /// declared it); `None`: the sample rules of [`editor::context`].
    pub reopened_at: Option<String>,
    /// A line under the title (whose data this is).
    pub description: String,
    /// The Date of the `.eml` files.
    pub now: DateTime<Utc>,
    /// What one person receives on one day (`templates preview --user ID`): each message with
    /// its context, rendered for `samples[0]` only, instead of every message with every sample.
    pub day: Option<Vec<(String, MessageContext)>>,
}

/// One rendered variant.
struct Entry<'a> {
    message: String,
    sample: &'a Sample,
    step: String,
    days_left: i64,
    outcome: Result<Rendered, String>,
    eml: bool,
}

/// Renders every message of `set` with every sample and writes the files under `out`.
pub fn write_preview(
    set: &TemplateSet,
    settings: &Settings,
    input: &PreviewInput<'_>,
    out: &Path,
) -> Result<PreviewReport, PreviewError> {
    let sources = templates::read_sources(set.dir()).map_err(|source| PreviewError::Read {
        dir: set.dir().to_path_buf(),
        source,
    })?;
    let reopening = editor::reopening_messages(&sources);
    let domain = email::message_id_domain(&settings.mail);
    // (message, sample, context) to render: one person's day, or every message × every sample.
    let mut jobs: Vec<(String, &Sample, MessageContext)> = Vec::new();
    match (&input.day, input.samples.first()) {
        (Some(day), Some(sample)) => {
            for (name, ctx) in day {
                jobs.push((name.clone(), sample, ctx.clone()));
            }
        }
        (Some(_), None) => {}
        (None, _) => {
            for name in set.messages() {
                for sample in input.samples {
                    let mut ctx =
                        editor::context(settings, &name, sample, reopening.contains(&name));
                    if let Some(at) = &input.reopened_at {
                        ctx.reopened_at = at.clone();
                    }
                    jobs.push((name.clone(), sample, ctx));
                }
            }
        }
    }
    let mut messages: Vec<String> = Vec::new();
    for (name, _, _) in &jobs {
        if !messages.contains(name) {
            messages.push(name.clone());
        }
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut failures = Vec::new();
    let mut emails = 0;
    mkdir(out)?;
    for (name, sample, ctx) in jobs {
        let name = &name;
        let folder = out.join(name);
        mkdir(&folder)?;
        {
            let mut entry = Entry {
                message: name.clone(),
                sample,
                step: ctx.step.clone(),
                days_left: ctx.days_left,
                outcome: set.render(name, &ctx).map_err(|e| e.to_string()),
                eml: false,
            };
            if let Ok(r) = &entry.outcome {
                write(
                    &folder.join(format!("{}.html", sample.id)),
                    r.html.as_bytes(),
                )?;
                write(
                    &folder.join(format!("{}.txt", sample.id)),
                    r.text.as_bytes(),
                )?;
                let message_id = format!("<preview.{name}.{}@{domain}>", sample.id);
                let envelope = Envelope {
                    to_address: &sample.to_address,
                    to_name: &sample.user.full_name,
                    message_id: &message_id,
                    campaign: &ctx.campaign,
                    step: sample.situation.step,
                    date: input.now.into(),
                };
                match email::build(&settings.mail, &envelope, r) {
                    Ok(email) => {
                        write(
                            &folder.join(format!("{}.eml", sample.id)),
                            &email.formatted(),
                        )?;
                        entry.eml = true;
                        emails += 1;
                    }
                    Err(e) => failures.push(format!("{name}/{}: {e}", sample.id)),
                }
            }
            if let Err(e) = &entry.outcome {
                failures.push(format!("{name}/{}: {e}", sample.id));
            }
            entries.push(entry);
        }
    }
    let index = out.join("index.html");
    let html = index_page(set, input, &messages, &entries);
    write(&index, html.as_bytes())?;
    Ok(PreviewReport {
        index,
        messages,
        variants: if input.day.is_some() {
            1
        } else {
            input.samples.len()
        },
        emails,
        failures,
    })
}

fn mkdir(path: &Path) -> Result<(), PreviewError> {
    std::fs::create_dir_all(path).map_err(|source| PreviewError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PreviewError> {
    std::fs::write(path, bytes).map_err(|source| PreviewError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A relative link to `message/file`, percent-encoding what is not plainly safe.
fn href(message: &str, file: &str) -> String {
    let mut out = String::new();
    for (i, part) in [message, file].iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        for b in part.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

const STYLE: &str = "\
body{margin:0;padding:16px 24px;background:#eef1f5;color:#1f2933;font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.4}\
h1{font-size:24px;margin:0 0 4px}\
h2{font-size:20px;margin:32px 0 12px;padding-top:8px;border-top:2px solid #17324d}\
h3{font-size:16px;margin:0 0 6px}\
h4{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:#5b6670;margin:0 0 6px}\
nav ul{columns:2;margin:8px 0 0;padding-left:20px}\
.variant{background:#fff;border:1px solid #d5dbe3;border-radius:4px;margin:0 0 20px;padding:14px 16px}\
.meta{color:#5b6670;font-size:13px;margin:0 0 8px}\
.subject{font-size:17px;margin:0 0 12px;padding:8px 10px;background:#f7f8fa;border-left:4px solid #17324d}\
.subject .label{color:#5b6670;font-weight:normal}\
.subject-text{font-weight:bold}\
.parts{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px;align-items:start}\
iframe{width:100%;height:720px;border:1px solid #d5dbe3;background:#fff}\
pre{margin:0;height:720px;overflow:auto;white-space:pre-wrap;border:1px solid #d5dbe3;padding:12px;background:#fff;font-size:13px;line-height:1.45}\
.files{margin:10px 0 0;font-size:14px}\
.error{color:#b3261e;font-weight:bold;white-space:pre-wrap}\
@media (max-width:900px){.parts{grid-template-columns:1fr}}";

fn index_page(
    set: &TemplateSet,
    input: &PreviewInput<'_>,
    messages: &[String],
    entries: &[Entry<'_>],
) -> String {
    let mut h = String::new();
    let e = |s: &str| escape_html(s);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"it\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Anteprima dei messaggi</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Anteprima dei messaggi</h1>\n\
         <p class=\"meta\">{}<br>Modelli: <code>{}</code> (versione {}) · {}</p>\n",
        e(&input.description),
        e(&set.dir().display().to_string()),
        e(set.digest()),
        match &input.day {
            Some(day) if day.is_empty() => "nessun messaggio".to_string(),
            Some(day) => format!("{} e-mail", day.len()),
            None => format!(
                "{} messaggi × {} varianti",
                messages.len(),
                input.samples.len()
            ),
        }
    );
    if input.day.as_ref().is_some_and(Vec::is_empty) {
        h.push_str(
            "<p class=\"nothing\">In questa data questa persona non riceve alcun messaggio.</p>\n",
        );
    }
    h.push_str("<nav>\n<ul>\n");
    for m in messages {
        let _ = writeln!(h, "<li><a href=\"#{0}\">{0}</a></li>", e(m));
    }
    h.push_str("</ul>\n</nav>\n");
    for m in messages {
        let _ = writeln!(
            h,
            "<section class=\"message\" id=\"{0}\">\n<h2>{0}</h2>",
            e(m)
        );
        for entry in entries.iter().filter(|x| &x.message == m) {
            variant(&mut h, entry);
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn variant(h: &mut String, entry: &Entry<'_>) {
    let e = |s: &str| escape_html(s);
    let s = entry.sample;
    let situation = &s.situation;
    let _ = write!(
        h,
        "<article class=\"variant\" id=\"{m}--{id}\" data-message=\"{m}\" data-variant=\"{id}\">\n\
         <h3>{id}</h3>\n\
         <p class=\"meta\">{desc}<br>A: {name} &lt;{to}&gt; · passo <code>{step}</code> · \
         giorni alla scadenza: {days} · prova: {test}</p>\n",
        m = e(&entry.message),
        id = e(&s.id),
        desc = e(&s.description),
        name = e(&s.user.full_name),
        to = e(&s.to_address),
        step = e(&entry.step),
        days = entry.days_left,
        test = if situation.is_test { "sì" } else { "no" },
    );
    match &entry.outcome {
        Ok(r) => {
            let _ = write!(
                h,
                "<p class=\"subject\"><span class=\"label\">Oggetto:</span> \
                 <span class=\"subject-text\">{subject}</span></p>\n\
                 <div class=\"parts\">\n\
                 <div class=\"part html\"><h4>Versione HTML</h4>\
                 <iframe sandbox=\"\" title=\"HTML {m} {id}\" srcdoc=\"{html}\"></iframe></div>\n\
                 <div class=\"part text\"><h4>Versione testo</h4><pre>{text}</pre></div>\n\
                 </div>\n\
                 <p class=\"files\"><a href=\"{html_href}\">HTML</a> · <a href=\"{text_href}\">testo</a>",
                subject = e(&r.subject),
                m = e(&entry.message),
                id = e(&s.id),
                html = e(&r.html),
                text = e(&r.text),
                html_href = href(&entry.message, &format!("{}.html", s.id)),
                text_href = href(&entry.message, &format!("{}.txt", s.id)),
            );
            if entry.eml {
                let _ = write!(
                    h,
                    " · <a class=\"eml\" href=\"{}\">e-mail (.eml)</a>",
                    href(&entry.message, &format!("{}.eml", s.id))
                );
            }
            h.push_str("</p>\n");
        }
        Err(err) => {
            let _ = writeln!(
                h,
                "<p class=\"error\">Questa variante non si può generare: {}\n\
                 (i dettagli con <code>avvisi templates check</code>)</p>",
                e(err)
            );
        }
    }
    h.push_str("</article>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_encoded() {
        assert_eq!(
            href("reopening_general", "d3-U 1.eml"),
            "reopening_general/d3-U%201.eml"
        );
    }
}
