//! A scanner for Tera templates, written by hand so that a file with errors still yields
//! everything around them: the tags and comments of a file, the tokens of each tag, and the
//! names the expressions use (variables, filters, tests, functions, templates) with their
//! offsets, the names the file defines, the statements for the balance check and the delimiters
//! never closed. Tera's parser stops at the first error and gives a broken file no syntax tree.

use std::collections::HashSet;

/// Words of Tera's expression language that are not names.
const KEYWORDS: [&str; 10] = [
    "and", "or", "not", "in", "is", "true", "false", "True", "False", "as",
];

/// A name used in an expression, with its byte offset in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// `in_condition`: inside `{% if %}`/`{% elif %}`, where Tera makes an unknown name false.
    /// `printed_raw`: printed by a `{{ }}` as it is, with no filter after it.
    Var {
        path: String,
        offset: usize,
        in_condition: bool,
        printed_raw: bool,
    },
    Filter {
        name: String,
        offset: usize,
    },
    Test {
        name: String,
        offset: usize,
    },
    Function {
        name: String,
        offset: usize,
    },
    Template {
        name: String,
        offset: usize,
    },
}

impl Found {
    pub(crate) fn offset(&self) -> usize {
        match self {
            Found::Var { offset, .. }
            | Found::Filter { offset, .. }
            | Found::Test { offset, .. }
            | Found::Function { offset, .. }
            | Found::Template { offset, .. } => *offset,
        }
    }
}

/// What one file's tags contain.
#[derive(Debug, Default)]
pub(crate) struct FileScan {
    /// Names used, in file order.
    pub(crate) found: Vec<Found>,
    /// Names the file defines (`for x in`, `set x =`, macro parameters).
    pub(crate) locals: HashSet<String>,
    /// The first word of every `{% %}` tag, with its offset (for the balance check).
    pub(crate) statements: Vec<(String, usize)>,
    /// `{% extends "x" %}` targets with their offsets.
    pub(crate) extends: Vec<(String, usize)>,
    /// `{% include "x" %}` / `{% import "x" %}` targets with their offsets.
    pub(crate) includes: Vec<(String, usize)>,
    /// Byte ranges of well-formed tags and comments.
    pub(crate) spans: Vec<(usize, usize)>,
    /// Opening delimiters never closed, with their offsets.
    pub(crate) unclosed: Vec<(usize, &'static str)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num,
    Punct(&'static str),
}

impl FileScan {
    pub(crate) fn new(src: &str) -> FileScan {
        let mut scan = FileScan::default();
        let mut pos = 0;
        while pos < src.len() {
            let Some((at, open)) = ["{{", "{%", "{#"]
                .iter()
                .filter_map(|o| src[pos..].find(o).map(|i| (pos + i, *o)))
                .min_by_key(|(i, _)| *i)
            else {
                break;
            };
            let close = match open {
                "{{" => "}}",
                "{%" => "%}",
                _ => "#}",
            };
            let body_start = at + 2;
            let Some(end) = src[body_start..].find(close).map(|i| body_start + i) else {
                scan.unclosed.push((at, open));
                pos = body_start;
                continue;
            };
            if open != "{#" {
                let next_open = ["{{", "{%"]
                    .iter()
                    .filter_map(|o| src[body_start..end].find(o))
                    .min();
                if next_open.is_some() {
                    scan.unclosed.push((at, open));
                    pos = body_start;
                    continue;
                }
            }
            scan.spans.push((at, end + 2));
            pos = end + 2;
            if open == "{#" {
                continue;
            }
            // The body without whitespace control dashes, and its offset.
            let mut body = &src[body_start..end];
            let mut offset = body_start;
            if let Some(rest) = body.strip_prefix('-') {
                body = rest;
                offset += 1;
            }
            let body = body.strip_suffix('-').unwrap_or(body);
            let toks = tokenize(body, offset);
            if open == "{{" {
                scan.expression(&toks, false, true);
                continue;
            }
            let Some((Tok::Ident(word), word_at)) = toks.first().cloned() else {
                continue;
            };
            scan.statements.push((word.clone(), word_at));
            match word.as_str() {
                "raw" => {
                    // Everything up to `{% endraw %}` is text.
                    let mut search = pos;
                    let mut closed = false;
                    while let Some(i) = src[search..].find("{%").map(|i| search + i) {
                        let Some(e) = src[i + 2..].find("%}").map(|e| i + 2 + e) else {
                            break;
                        };
                        let inner =
                            src[i + 2..e].trim_matches(|c: char| c == '-' || c.is_whitespace());
                        if inner == "endraw" {
                            scan.spans.push((i, e + 2));
                            scan.statements.push(("endraw".into(), i));
                            pos = e + 2;
                            closed = true;
                            break;
                        }
                        search = e + 2;
                    }
                    if !closed {
                        scan.unclosed.push((at, "raw"));
                        break;
                    }
                }
                "if" | "elif" => scan.expression(&toks[1..], true, false),
                "for" => {
                    let split = toks
                        .iter()
                        .position(|(t, _)| *t == Tok::Ident("in".into()))
                        .unwrap_or(toks.len());
                    for (t, _) in &toks[1..split] {
                        if let Tok::Ident(name) = t {
                            scan.locals.insert(name.clone());
                        }
                    }
                    if split < toks.len() {
                        scan.expression(&toks[split + 1..], false, false);
                    }
                }
                "set" | "set_global" => {
                    if let Some((Tok::Ident(name), _)) = toks.get(1) {
                        scan.locals.insert(name.clone());
                    }
                    if let Some(eq) = toks.iter().position(|(t, _)| *t == Tok::Punct("=")) {
                        scan.expression(&toks[eq + 1..], false, false);
                    }
                }
                "filter" => {
                    if let Some((Tok::Ident(name), at)) = toks.get(1) {
                        scan.found.push(Found::Filter {
                            name: name.clone(),
                            offset: *at,
                        });
                    }
                    if toks.len() > 2 {
                        scan.expression(&toks[2..], false, false);
                    }
                }
                "macro" => {
                    // Parameters: names followed by `,`, `=` or `)` inside the parentheses.
                    for w in toks.windows(2).skip(2) {
                        if let (Tok::Ident(name), _) = &w[0] {
                            if matches!(w[1].0, Tok::Punct(",") | Tok::Punct("=") | Tok::Punct(")"))
                            {
                                scan.locals.insert(name.clone());
                            }
                        }
                    }
                }
                "extends" | "include" | "import" => {
                    let ignore_missing =
                        toks.iter().any(|(t, _)| *t == Tok::Ident("ignore".into()));
                    if let Some((Tok::Str(target), at)) = toks.get(1) {
                        if word == "extends" {
                            scan.extends.push((target.clone(), *at));
                        } else {
                            scan.includes.push((target.clone(), *at));
                        }
                        if !ignore_missing {
                            scan.found.push(Found::Template {
                                name: target.clone(),
                                offset: *at,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        scan
    }

    /// Records the names used in an expression (`printed`: the expression of a `{{ }}`).
    fn expression(&mut self, toks: &[(Tok, usize)], in_condition: bool, printed: bool) {
        let ident = |i: usize| match toks.get(i) {
            Some((Tok::Ident(s), _)) => Some(s.as_str()),
            _ => None,
        };
        let punct = |i: usize| match toks.get(i) {
            Some((Tok::Punct(p), _)) => Some(*p),
            _ => None,
        };
        for (i, (tok, offset)) in toks.iter().enumerate() {
            let Tok::Ident(name) = tok else { continue };
            let prev = i.checked_sub(1);
            let prev_punct = prev.and_then(punct);
            let prev_ident = prev.and_then(ident);
            let prev2_ident = i.checked_sub(2).and_then(ident);
            if prev_punct == Some(".") || prev_punct == Some("::") || punct(i + 1) == Some("::") {
                continue;
            }
            if prev_punct == Some("|") {
                self.found.push(Found::Filter {
                    name: name.clone(),
                    offset: *offset,
                });
                continue;
            }
            if prev_ident == Some("is") || (prev_ident == Some("not") && prev2_ident == Some("is"))
            {
                if name != "not" {
                    self.found.push(Found::Test {
                        name: name.clone(),
                        offset: *offset,
                    });
                }
                continue;
            }
            if KEYWORDS.contains(&name.as_str()) {
                continue;
            }
            match punct(i + 1) {
                Some("=") => continue, // a keyword argument
                Some("(") => {
                    self.found.push(Found::Function {
                        name: name.clone(),
                        offset: *offset,
                    });
                    continue;
                }
                _ => {}
            }
            let mut path = name.clone();
            let mut j = i + 1;
            while punct(j) == Some(".") {
                match ident(j + 1) {
                    Some(field) => {
                        path.push('.');
                        path.push_str(field);
                        j += 2;
                    }
                    None => break,
                }
            }
            self.found.push(Found::Var {
                path,
                offset: *offset,
                in_condition,
                printed_raw: printed && i == 0 && j == toks.len(),
            });
        }
    }
}

/// The tokens of a tag's body; offsets are in the file.
fn tokenize(body: &str, base: usize) -> Vec<(Tok, usize)> {
    const TWO: [&str; 5] = ["==", "!=", "<=", ">=", "::"];
    const ONE: [&str; 17] = [
        "|", "(", ")", "[", "]", ",", ".", "=", "+", "-", "*", "/", "%", "~", "<", ">", ":",
    ];
    let mut out = Vec::new();
    let mut i = 0;
    let bytes = body.as_bytes();
    while i < body.len() {
        let c = body[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            i += c.len_utf8();
        } else if c == '"' || c == '\'' || c == '`' {
            let end = body[i + 1..]
                .find(c)
                .map(|e| i + 1 + e)
                .unwrap_or(body.len());
            out.push((
                Tok::Str(body[i + 1..end.min(body.len())].to_string()),
                base + i,
            ));
            i = (end + 1).min(body.len());
        } else if c.is_ascii_digit() {
            let start = i;
            while i < body.len()
                && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_')
            {
                i += 1;
            }
            out.push((Tok::Num, base + start));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < body.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(body[start..i].to_string()), base + start));
        } else if let Some(p) = TWO.iter().find(|p| body[i..].starts_with(**p)) {
            out.push((Tok::Punct(p), base + i));
            i += 2;
        } else if let Some(p) = ONE.iter().find(|p| body[i..].starts_with(**p)) {
            out.push((Tok::Punct(p), base + i));
            i += 1;
        } else {
            i += c.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<Found> {
        FileScan::new(src).found
    }

    #[test]
    fn scanner_finds_variables_filters_and_tests() {
        let found = names(
            "Gentile {{ user.first_name }},\n{% if days_left == 0 and step is defined %}x{% endif %}\n\
             {{ deadline | data_it }} {% for s in steps %}{{ s.name | upper }}{% endfor %}",
        );
        let vars: Vec<&str> = found
            .iter()
            .filter_map(|f| match f {
                Found::Var { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            vars,
            [
                "user.first_name",
                "days_left",
                "step",
                "deadline",
                "steps",
                "s.name"
            ]
        );
        assert!(found
            .iter()
            .any(|f| matches!(f, Found::Filter { name, .. } if name == "data_it")));
        assert!(found
            .iter()
            .any(|f| matches!(f, Found::Test { name, .. } if name == "defined")));
        assert!(FileScan::new("{% for s in steps %}{% endfor %}")
            .locals
            .contains("s"));
    }

    #[test]
    fn raw_blocks_and_comments_are_text() {
        assert!(names("{# {{ nope }} #}{% raw %}{{ nope }}{% endraw %}").is_empty());
    }

    #[test]
    fn unclosed_delimiters_are_found() {
        let scan = FileScan::new("a\n{{ user.first_name }\nb {{ x }}");
        assert_eq!(scan.unclosed, vec![(2, "{{")]);
    }
}
