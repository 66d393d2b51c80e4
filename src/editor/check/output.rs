//! What a message renders to: no empty part, a subject on one line and not too long, no
//! template syntax left in the output, the text version as written (no escaping, no HTML tags)
//! and user data escaped in the HTML version.

use std::collections::BTreeMap;

use crate::editor::Sample;
use crate::render::templates::Rendered;

use super::locate::{chain, line_of, locate_in_chain, locate_text};
use super::scan::{FileScan, Found};
use super::{Checker, MAX_SUBJECT_CHARS};

impl Checker<'_> {
    /// Looks at what a message renders to.
    pub(crate) fn output_checks(
        &mut self,
        sources: &BTreeMap<String, String>,
        message: &str,
        sample: &Sample,
        raw: &BTreeMap<&str, String>,
        rendered: &Rendered,
    ) {
        let subject_file = format!("{message}/subject.txt");
        let text_file = format!("{message}/body.txt");
        let html_file = format!("{message}/body.html");
        let with = format!(
            "con l'esempio `{}` ({})",
            sample.id, sample.situation.description
        );

        // Empty parts.
        for (file, out, what) in [
            (&subject_file, &raw["subject.txt"], "l'oggetto"),
            (&text_file, &raw["body.txt"], "la versione testo"),
            (&html_file, &raw["body.html"], "la versione HTML"),
        ] {
            if out.trim().is_empty() {
                self.push(
                    file,
                    None,
                    "empty-output",
                    format!("{what} risulta vuoto/a {with}"),
                );
            }
        }

        // The subject: one line, not too long.
        let subject_raw = raw["subject.txt"].trim();
        if subject_raw.contains(['\n', '\r']) {
            // The line of the source where the subject breaks (the first line break between
            // the first and the last character of the file).
            let src = sources.get(&subject_file).map(String::as_str).unwrap_or("");
            let start = src.find(|c: char| !c.is_whitespace()).unwrap_or(0);
            let end = src.trim_end().len();
            let line = src[start..end]
                .find(['\n', '\r'])
                .map(|i| line_of(src, start + i))
                .unwrap_or(1);
            self.push(
                &subject_file,
                Some(line),
                "subject-break",
                format!(
                    "l'oggetto va a capo {with}: l'oggetto di un'e-mail è una sola riga; unire \
                     le righe (o usare `{{%-` e `-%}}` per togliere l'a capo intorno a un comando)"
                ),
            );
        }
        let length = rendered.subject.chars().count();
        if length > MAX_SUBJECT_CHARS {
            self.push(
                &subject_file,
                Some(1),
                "subject-long",
                format!(
                    "l'oggetto è lungo {length} caratteri {with}, più di {MAX_SUBJECT_CHARS}: \
                     \"{}\"; accorciarlo (i programmi di posta tagliano gli oggetti lunghi)",
                    rendered.subject
                ),
            );
        }

        // Template syntax left in the output (a brace missing or too many, `{ name }`...).
        for (file, out) in [
            (&subject_file, &rendered.subject),
            (&text_file, &rendered.text),
            (&html_file, &rendered.html),
        ] {
            if let Some(leftover) = leftover_syntax(out) {
                let line = find_leftover_line(file, &leftover, sources);
                self.push(
                    &line.0,
                    line.1,
                    &format!("leftover:{leftover}"),
                    format!(
                        "sintassi dei modelli rimasta nel testo: `{leftover}` verrebbe inviato \
                         così com'è; le variabili si scrivono `{{{{ nome }}}}` e i comandi \
                         `{{% ... %}}`, con entrambe le parentesi"
                    ),
                );
            }
        }

        // Text: the user's data as written, no HTML escaping, no tags.
        let user = &sample.user;
        let user_values = [
            user.first_name.as_str(),
            user.last_name.as_str(),
            user.full_name.as_str(),
            user.email.as_str(),
            user.institutional_email.as_str(),
            user.pending_email.as_str(),
            user.province.as_str(),
        ];
        for (file, out) in [
            (&subject_file, &rendered.subject),
            (&text_file, &rendered.text),
        ] {
            if let Some(entity) = [
                "&amp;", "&lt;", "&gt;", "&quot;", "&#x27;", "&#x2F;", "&#39;",
            ]
            .into_iter()
            .find(|e| out.contains(e))
            {
                let at = locate_in_chain(file, sources, |f| {
                    matches!(f, Found::Filter { name, .. } if name == "escape" || name == "escape_xml")
                })
                .or_else(|| locate_text(file, sources, entity));
                self.push_at(
                    at,
                    file,
                    "text-escape",
                    format!(
                        "codice HTML `{entity}` in una parte di testo {with}: il testo è inviato \
                         così com'è, quindi nei file .txt non si usa `| escape` (né le entità \
                         HTML)"
                    ),
                );
            }
        }
        let mut text_without_data = rendered.text.clone();
        for value in user_values.iter().filter(|v| !v.is_empty()) {
            text_without_data = text_without_data.replace(value, "");
        }
        if let Some(tag) = html_tag(&text_without_data) {
            let at = locate_text(&text_file, sources, &tag);
            self.push_at(
                at,
                &text_file,
                &format!("text-html:{tag}"),
                format!(
                    "codice HTML `{tag}` nella versione testo: verrebbe mostrato così com'è; in \
                     body.txt va solo testo (l'HTML va in body.html)"
                ),
            );
        }

        // HTML: the user's data must come out escaped (`<b>` as `&lt;b&gt;`, `'` as `&#x27;`).
        for value in user_values {
            if value.contains(['<', '>', '&', '"', '\'']) && rendered.html.contains(value) {
                let at = locate_in_chain(
                    &html_file,
                    sources,
                    |f| matches!(f, Found::Filter { name, .. } if name == "safe"),
                );
                self.push_at(
                    at,
                    &html_file,
                    "html-unescaped",
                    format!(
                        "i dati dell'utente arrivano nella versione HTML senza protezione {with}: \
                         `{value}` deve essere protetto o diventa codice HTML; non usare mai \
                         `| safe` sui dati degli utenti"
                    ),
                );
            }
        }
    }
}

/// Template delimiters in rendered output, or a `{name}` with single braces.
fn leftover_syntax(out: &str) -> Option<String> {
    for delimiter in ["{{", "}}", "{%", "%}", "{#", "#}"] {
        if let Some(at) = out.find(delimiter) {
            return Some(snippet(out, at, delimiter.len()));
        }
    }
    // `{ user.first_name }` / `{user.first_name}`: a name between single braces.
    for (i, _) in out.match_indices('{') {
        let rest = &out[i + 1..];
        let Some(end) = rest.find('}') else { continue };
        let inner = rest[..end].trim();
        let is_name = !inner.is_empty()
            && inner.len() <= 60
            && inner
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '|' || c == ' ');
        if is_name {
            return Some(out[i..i + 1 + end + 1].to_string());
        }
    }
    None
}

/// `out[at..at+len]` widened to the surrounding word, to show (at most a few dozen characters).
fn snippet(out: &str, at: usize, len: usize) -> String {
    let stop = |c: char| c.is_whitespace() || c == '<' || c == '>';
    let start = out[..at]
        .char_indices()
        .rev()
        .find(|(_, c)| stop(*c))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0);
    let start = if at - start > 30 { at } else { start };
    let end = out[at + len..]
        .find(stop)
        .map(|i| at + len + i)
        .unwrap_or(out.len());
    let end = if end - (at + len) > 30 { at + len } else { end };
    out[start..end].to_string()
}

/// Where a leftover came from: the first line of the chain whose text, outside well-formed
/// tags, contains it (or its delimiter).
fn find_leftover_line(
    file: &str,
    leftover: &str,
    sources: &BTreeMap<String, String>,
) -> (String, Option<usize>) {
    let delimiters = ["{{", "}}", "{%", "%}", "{#", "#}"];
    let files = chain(file, sources);
    for f in &files {
        let Some(src) = sources.get(f) else { continue };
        let scan = FileScan::new(src);
        // Blank out every well-formed tag, keeping offsets.
        let mut plain: Vec<u8> = src.as_bytes().to_vec();
        for (start, end) in &scan.spans {
            for b in &mut plain[*start..*end] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        }
        let plain = String::from_utf8_lossy(&plain).into_owned();
        let needle = delimiters
            .iter()
            .find(|d| leftover.contains(**d))
            .copied()
            .unwrap_or(leftover);
        if let Some(at) = plain.find(leftover).or_else(|| plain.find(needle)) {
            return (f.clone(), Some(line_of(src, at)));
        }
    }
    for f in &files {
        if let Some(src) = sources.get(f) {
            if let Some(at) = src.find(leftover) {
                return (f.clone(), Some(line_of(src, at)));
            }
        }
    }
    (file.to_string(), None)
}

/// The first HTML tag in `s` (`<p>`, `</strong>`, `<br>`...).
fn html_tag(s: &str) -> Option<String> {
    for (i, _) in s.match_indices('<') {
        let rest = &s[i + 1..];
        let name_start = rest.strip_prefix('/').unwrap_or(rest);
        if !name_start
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        {
            continue;
        }
        if let Some(end) = rest.find('>') {
            let inner = &rest[..end];
            if end <= 200 && !inner.contains('\n') && !inner.contains('@') {
                return Some(format!("<{inner}>"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers() {
        assert_eq!(
            leftover_syntax("Gentile {user.first_name},").as_deref(),
            Some("{user.first_name}")
        );
        assert_eq!(leftover_syntax("Gentile Mario }},").as_deref(), Some("}},"));
        assert_eq!(leftover_syntax("a { margin: 0 } b"), None);
    }
}
