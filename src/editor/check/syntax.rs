//! Syntax errors, file by file, in plain words: delimiters never closed and unbalanced
//! `if`/`for`/`block` tags from the scanner, which finds all of them, else Tera's own diagnosis
//! (it stops at the first error) with its expectation explained.

use super::between;
use super::locate::line_of;
use super::scan::FileScan;

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
                "syntax error: `{delimiter}` is not closed with `{close}` (check the braces: \
                 variables are written `{{{{ name }}}}`, tags `{{% ... %}}`)"
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
        let mut chain = Vec::new();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        let detail = chain.iter().find(|s| s.contains("-->"));
        match detail {
            Some(detail) => {
                let position = between(detail, "--> ", "\n").unwrap_or("").trim();
                let (line, column) = position.split_once(':').unwrap_or((position, ""));
                let expected = detail
                    .lines()
                    .find_map(|l| l.trim_start().strip_prefix("= "))
                    .unwrap_or("")
                    .trim();
                out.push((
                    line.parse().ok(),
                    format!(
                        "syntax error at column {column}: {} (Tera: {expected})",
                        explain_expected(expected)
                    ),
                ));
            }
            None => out.push((None, format!("syntax error: {}", chain.join(": ")))),
        }
    }
    out
}

/// Tera's parser expectations in plain words.
fn explain_expected(expected: &str) -> &'static str {
    if expected.contains("variable end (`}}`)") {
        "the `{{ ... }}` is not closed properly"
    } else if expected.contains("tag end (`%}`)") {
        "the `{% ... %}` tag is not closed properly"
    } else if expected.contains("unexpected tag") {
        "this tag is not allowed here: a misspelled tag, or an end tag without its opening tag"
    } else if expected.contains("an identifier") {
        "a name is missing or misspelled here (names start with a letter)"
    } else if expected.contains("expected tag or some content") {
        "the file ends before a tag is closed"
    } else {
        "the template language does not allow this here"
    }
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
                        "`{{% {word} %}}` inside `{{% {open} %}}` (opened on line {open_line}): \
                         it belongs to an `{{% if %}}`; is an `{{% end{open} %}}` missing?"
                    ),
                )),
                None => out.push((
                    line,
                    format!("`{{% {word} %}}` without an `{{% if %}}` before it"),
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
                                "`{{% {open} %}}` is not closed: `{{% end{open} %}}` is missing \
                                 before `{{% {w} %}}` on line {line}"
                            ),
                        ));
                        return out;
                    }
                    None => {
                        out.push((
                            line,
                            format!(
                                "`{{% {w} %}}` without a matching `{{% {opener} %}}` before it"
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
                "`{{% {open} %}}` is never closed: add `{{% end{open} %}}` where it should end"
            ),
        ));
    }
    out
}
