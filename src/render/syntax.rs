//! Syntax errors, file by file, in plain words: delimiters never closed and unbalanced
//! `if`/`for`/`block` tags from the scanner, which finds all of them, else Tera's own diagnosis
//! (it stops at the first error) with its expectation explained.

use super::scan::FileScan;

/// 1-based line of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

/// Every syntax problem of one file, with a plain explanation: the tag-level ones found by the
/// scanner (unclosed delimiters, unbalanced `if`/`for`/`block`), else Tera's own diagnosis.
pub(crate) fn syntax_problems(name: &str, src: &str) -> Vec<(Option<usize>, String)> {
    let mut tera = tera::Tera::default();
    let Err(err) = tera.add_raw_template(name, src) else {
        return Vec::new();
    };
    if !matches!(err.kind, tera::ErrorKind::Msg(_)) {
        // A missing layout or the like: reported with the names.
        return Vec::new();
    }
    let scan = FileScan::new(src);
    let mut out: Vec<(Option<usize>, String)> = Vec::new();
    for (offset, delimiter) in &scan.unclosed {
        let close = match *delimiter {
            "{{" => "}}",
            "{%" => "%}",
            "{#" => "#}",
            _ => "{% endraw %}",
        };
        out.push((
            Some(line_of(src, *offset)),
            format!(
                "errore di sintassi: `{delimiter}` non è chiuso da `{close}` (controllare le \
                 parentesi: le variabili si scrivono `{{{{ nome }}}}`, i comandi `{{% ... %}}`)"
            ),
        ));
    }
    if out.is_empty() {
        out.extend(
            balance_problems(src, &scan)
                .into_iter()
                .map(|(l, m)| (Some(l), m)),
        );
    }
    if out.is_empty() {
        out.push(super::templates::syntax_message(&err));
    }
    out
}

/// `if`/`for`/`block`/`macro`/`filter` tags that are not closed, or closed by the wrong end tag.
fn balance_problems(src: &str, scan: &FileScan) -> Vec<(usize, String)> {
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut out = Vec::new();
    for (word, offset) in &scan.statements {
        let line = line_of(src, *offset);
        match word.as_str() {
            "if" | "for" | "block" | "macro" | "filter" => stack.push((word.clone(), line)),
            "elif" | "else" => match stack.last() {
                Some((open, _)) if open == "if" || (word == "else" && open == "for") => {}
                Some((open, open_line)) => out.push((
                    line,
                    format!(
                        "`{{% {word} %}}` dentro `{{% {open} %}}` (aperto alla riga {open_line}): \
                         appartiene a un `{{% if %}}`; manca forse un `{{% end{open} %}}`?"
                    ),
                )),
                None => out.push((
                    line,
                    format!("`{{% {word} %}}` senza un `{{% if %}}` prima"),
                )),
            },
            w if w.starts_with("end") && w != "endraw" => {
                let opener = &w[3..];
                match stack.pop() {
                    Some((open, _)) if open == opener => {}
                    Some((open, open_line)) => {
                        out.push((
                            open_line,
                            format!(
                                "`{{% {open} %}}` non è chiuso: manca `{{% end{open} %}}` prima \
                                 di `{{% {w} %}}` alla riga {line}"
                            ),
                        ));
                        return out;
                    }
                    None => {
                        out.push((
                            line,
                            format!(
                                "`{{% {w} %}}` senza un `{{% {opener} %}}` corrispondente prima"
                            ),
                        ));
                        return out;
                    }
                }
            }
            _ => {}
        }
    }
    for (open, line) in stack {
        out.push((
            line,
            format!(
                "`{{% {open} %}}` non è mai chiuso: aggiungere `{{% end{open} %}}` dove deve finire"
            ),
        ));
    }
    out
}
