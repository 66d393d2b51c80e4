//! The text and HTML versions of one message say the same things: both are sent in the same
//! email and the reader's client picks one, so a sentence added to `section.txt` and not to
//! `section.html` (or the reverse) reaches only some readers.
//!
//! Each pair of files `NAME.txt` / `NAME.html` of a folder is compared as written: the template
//! tags (`{{ }}`, `{% %}`, `{# #}`) and the HTML tags are left out, HTML entities read as
//! characters, and the words of each sentence of one file (a sentence ends with `.`, `!` or
//! `?`, a blank line of the text version, an HTML paragraph, heading or cell) of at least
//! [`MIN_WORDS`] words are looked for in the other. A sentence ending with a colon introduces
//! a link, a button or a list, shown differently in each version: it is not compared. A sentence is missing when fewer than half of its pairs of
//! consecutive words appear in the other file: the wrapping of the text version, a link's words
//! or a small difference in punctuation do not count, a new or rewritten sentence does.

use std::collections::{BTreeMap, HashSet};

use super::locate::line_of;
use super::scan::FileScan;

/// Shorter sentences are not compared: a title, a button's label or the words that introduce a
/// link ("Per accedere al servizio:") may differ between the versions on purpose.
const MIN_WORDS: usize = 5;

/// A sentence: its words (lower case) and the byte offset of the first one.
struct Sentence {
    words: Vec<String>,
    offset: usize,
    /// Ends with a colon: it introduces a link, a button or a list ("Se il pulsante non
    /// funziona, copi questo indirizzo nel browser:"), which each version shows its own way.
    intro: bool,
}

impl Sentence {
    fn new() -> Sentence {
        Sentence {
            words: Vec::new(),
            offset: 0,
            intro: false,
        }
    }
}

/// A sentence of one version missing from the other: (file, line, message).
pub(crate) fn drift(sources: &BTreeMap<String, String>) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    for (text_file, text_src) in sources {
        let Some(stem) = text_file.strip_suffix(".txt") else {
            continue;
        };
        let html_file = format!("{stem}.html");
        let Some(html_src) = sources.get(&html_file) else {
            continue;
        };
        let text = sentences(text_src, false);
        let html = sentences(html_src, true);
        for (file, src, mine, other_file, theirs) in [
            (text_file, text_src, &text, &html_file, &html),
            (&html_file, html_src, &html, text_file, &text),
        ] {
            let pairs: HashSet<(&str, &str)> = theirs
                .iter()
                .flat_map(|s| s.words.iter())
                .collect::<Vec<_>>()
                .windows(2)
                .map(|w| (w[0].as_str(), w[1].as_str()))
                .collect();
            for sentence in mine
                .iter()
                .filter(|s| s.words.len() >= MIN_WORDS && !s.intro)
            {
                let total = sentence.words.len() - 1;
                let found = sentence
                    .words
                    .windows(2)
                    .filter(|w| pairs.contains(&(w[0].as_str(), w[1].as_str())))
                    .count();
                if found * 2 < total {
                    let shown: Vec<&str> =
                        sentence.words.iter().take(8).map(String::as_str).collect();
                    let more = if sentence.words.len() > 8 { " …" } else { "" };
                    out.push((
                        file.clone(),
                        line_of(src, sentence.offset),
                        format!(
                            "avviso: la frase «{}{more}» di `{file}` non si ritrova in \
                             `{other_file}`: la versione testo e quella HTML vanno inviate \
                             insieme e devono dire le stesse cose; aggiungere la frase anche \
                             all'altro file (o toglierla da questo)",
                            shown.join(" ")
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// The sentences of a template file: text outside template tags (and, for HTML, outside HTML
/// tags, with entities read as characters).
fn sentences(src: &str, html: bool) -> Vec<Sentence> {
    // Template tags become blanks, keeping offsets.
    let mut hidden = vec![false; src.len()];
    for (start, end) in FileScan::new(src).spans {
        hidden[start..end.min(src.len())].fill(true);
    }
    let mut out = Vec::new();
    let mut current = Sentence::new();
    // The last character of text seen (a colon ending a sentence makes it an introduction).
    let mut last = ' ';
    // Whether the current line of the text version has words, and template tags.
    let (mut line_words, mut line_tags) = (false, false);
    let mut word = String::new();
    let mut word_at = 0;
    let end_word = |word: &mut String, word_at: usize, current: &mut Sentence| {
        if !word.is_empty() {
            if current.words.is_empty() {
                current.offset = word_at;
            }
            current.words.push(std::mem::take(word));
        }
    };
    let mut chars = src.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if hidden[i] {
            end_word(&mut word, word_at, &mut current);
            line_tags = true;
            continue;
        }
        let c = if html && c == '<' {
            // An HTML tag (or comment): skipped, a word boundary.
            let rest = &src[i + 1..];
            if rest.starts_with(|n: char| n.is_ascii_alphabetic() || n == '/' || n == '!') {
                let end = rest.find('>').map_or(src.len(), |e| i + 1 + e);
                while chars.peek().is_some_and(|(j, _)| *j <= end) {
                    chars.next();
                }
                end_word(&mut word, word_at, &mut current);
                // A paragraph, cell, heading or line break ends a sentence (a title, a button).
                let tag: String = rest
                    .trim_start_matches('/')
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_ascii_lowercase();
                let block = [
                    "p", "br", "td", "th", "tr", "li", "div", "table", "h1", "h2", "h3", "h4",
                    "h5", "h6", "ul", "ol",
                ];
                if block.contains(&tag.as_str()) && !current.words.is_empty() {
                    current.intro = last == ':';
                    out.push(std::mem::replace(&mut current, Sentence::new()));
                }
                continue;
            }
            c
        } else if html && c == '&' {
            match entity(&src[i..]) {
                Some((decoded, len)) => {
                    while chars.peek().is_some_and(|(j, _)| *j < i + len) {
                        chars.next();
                    }
                    decoded
                }
                None => c,
            }
        } else {
            c
        };
        if !c.is_whitespace() {
            last = c;
        }
        if c.is_alphanumeric() {
            line_words = true;
            if word.is_empty() {
                word_at = i;
            }
            word.extend(c.to_lowercase());
            continue;
        }
        end_word(&mut word, word_at, &mut current);
        // In the text version a blank line ends a sentence (a title), and so does a line of
        // template tags only or a line ending with a colon and a tag (the portal's address
        // after "Acceda al portale:", "Portale: {{ portal_url }}").
        let blank_line = !html
            && c == '\n'
            && (src[i + 1..]
                .trim_start_matches([' ', '\t'])
                .starts_with('\n')
                || (line_tags && (!line_words || last == ':')));
        if c == '\n' {
            (line_words, line_tags) = (false, false);
        }
        let ends = blank_line
            || matches!(c, '.' | '!' | '?')
                && chars
                    .peek()
                    .is_none_or(|(j, n)| n.is_whitespace() || hidden[*j] || *n == '<');
        if ends && !current.words.is_empty() {
            current.intro = last == ':';
            out.push(std::mem::replace(&mut current, Sentence::new()));
        }
    }
    end_word(&mut word, word_at, &mut current);
    if !current.words.is_empty() {
        current.intro = last == ':';
        out.push(current);
    }
    out
}

/// The character an HTML entity at the start of `s` stands for, and the entity's length.
fn entity(s: &str) -> Option<(char, usize)> {
    let end = s[..s.len().min(12)].find(';')?;
    let name = &s[1..end];
    let c = match name {
        "nbsp" => ' ',
        "amp" => '&',
        "quot" => '"',
        "lt" => '<',
        "gt" => '>',
        "apos" | "rsquo" | "lsquo" => '\'',
        "agrave" => 'à',
        "egrave" => 'è',
        "eacute" => 'é',
        "igrave" => 'ì',
        "ograve" => 'ò',
        "ugrave" => 'ù',
        "Egrave" => 'È',
        "laquo" => '«',
        "raquo" => '»',
        "ndash" | "mdash" => '-',
        _ => {
            let code = name.strip_prefix('#')?;
            let n = match code.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => code.parse().ok()?,
            };
            char::from_u32(n)?
        }
    };
    Some((c, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str, html: bool) -> Vec<Vec<String>> {
        sentences(src, html).into_iter().map(|s| s.words).collect()
    }

    #[test]
    fn html_and_template_tags_are_not_words() {
        assert_eq!(
            words(
                "<p>Gentile {{ user.full_name }}, la scadenza &egrave; <strong>vicina</strong>. \
                 Acceda al portale.</p>",
                true
            ),
            [
                vec!["gentile", "la", "scadenza", "è", "vicina"],
                vec!["acceda", "al", "portale"]
            ]
        );
        assert_eq!(
            words("Vada su www.istruzione.it oggi.\nGrazie", false),
            [
                vec!["vada", "su", "www", "istruzione", "it", "oggi"],
                vec!["grazie"]
            ]
        );
    }

    #[test]
    fn a_sentence_in_one_version_only_is_found() {
        let mut sources = BTreeMap::new();
        sources.insert(
            "m/section.txt".to_string(),
            "Validare il nuovo indirizzo\nentro il {{ deadline | data_it }}.\n\
             Il servizio sarà sospeso durante l'aggiornamento.\n"
                .to_string(),
        );
        sources.insert(
            "m/section.html".to_string(),
            "<p>Validare il nuovo <b>indirizzo</b> entro il {{ deadline | data_it }}.</p>\n"
                .to_string(),
        );
        let found = drift(&sources);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0.as_str(), found[0].1), ("m/section.txt", 3));
        assert!(
            found[0].2.contains("il servizio sarà sospeso"),
            "{}",
            found[0].2
        );
    }
}
