//! Rendering errors pointed at the file and line of the name they are about: Tera names the
//! unknown variable, filter, test or function but not where it is used, so the first use along
//! the message's files is looked up.

use std::collections::BTreeMap;

use crate::editor::Sample;
use crate::render::templates::TemplateError;

use super::locate::{chain, line_of};
use super::scan::{FileScan, Found};
use super::{between, Checker};

impl Checker<'_> {
    /// A render error, pointed at the file and line of the name it is about.
    pub(crate) fn render_error(
        &mut self,
        sources: &BTreeMap<String, String>,
        part_file: &str,
        sample: &Sample,
        e: &TemplateError,
    ) {
        let text = match e {
            TemplateError::Render { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let files = chain(part_file, sources);
        let in_template = between(&text, "while rendering '", "'").map(str::to_string);
        let locate = |pred: &dyn Fn(&Found) -> bool, prefer: Option<&str>| {
            let mut order: Vec<&str> = Vec::new();
            if let Some(p) = prefer {
                order.push(p);
            }
            order.extend(files.iter().map(String::as_str));
            for file in order {
                if let Some(src) = sources.get(file) {
                    let scan = FileScan::new(src);
                    if let Some(f) = scan.found.iter().find(|f| pred(f)) {
                        return (file.to_string(), Some(line_of(src, f.offset())));
                    }
                }
            }
            (prefer.unwrap_or(part_file).to_string(), None::<usize>)
        };
        let known_context = "esistono solo le variabili elencate in templates/README.md";
        if let Some(name) = between(&text, "Variable `", "`") {
            let (file, line) = locate(
                &|f| matches!(f, Found::Var { path, .. } if path == name || path.starts_with(&format!("{name}."))),
                in_template.as_deref(),
            );
            self.push(
                &file,
                line,
                &format!("var:{name}"),
                format!("variabile sconosciuta `{name}`: {known_context}"),
            );
        } else if let Some(name) = between(&text, "Filter '", "' not found") {
            let (file, line) = locate(
                &|f| matches!(f, Found::Filter { name: n, .. } if n == name),
                None,
            );
            self.push(
                &file,
                line,
                &format!("filter:{name}"),
                format!("filtro sconosciuto `{name}`"),
            );
        } else if let Some(name) = between(&text, "Filter call '", "' failed") {
            let detail = text
                .split("' failed: ")
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string();
            let (file, line) = locate(
                &|f| matches!(f, Found::Filter { name: n, .. } if n == name),
                None,
            );
            self.push(
                &file,
                line,
                &format!("filter-call:{name}:{detail}"),
                format!(
                    "il filtro `{name}` non funziona con l'esempio `{}` ({}): {detail}{}",
                    sample.id,
                    sample.situation.description,
                    if detail.contains("ricevuto \"\"") {
                        "; in questa situazione il valore è vuoto: `reopened_at` resta vuoto \
                         finché gli operatori non dichiarano la riapertura, e solo gli avvisi \
                         reopening_... partono di sicuro dopo (altrove va protetto con \
                         `{% if reopened_at %}`)"
                    } else {
                        ""
                    }
                ),
            );
        } else if let Some(name) = between(&text, "Test '", "' not found") {
            let (file, line) = locate(
                &|f| matches!(f, Found::Test { name: n, .. } if n == name),
                None,
            );
            self.push(
                &file,
                line,
                &format!("test:{name}"),
                format!("verifica sconosciuta `{name}` dopo `is`"),
            );
        } else if let Some(name) = between(&text, "Function '", "' not found") {
            let (file, line) = locate(
                &|f| matches!(f, Found::Function { name: n, .. } if n == name),
                None,
            );
            self.push(
                &file,
                line,
                &format!("function:{name}"),
                format!("funzione sconosciuta `{name}()`"),
            );
        } else {
            let file = in_template.unwrap_or_else(|| part_file.to_string());
            let plain = text
                .strip_prefix(&format!("Failed to render '{part_file}': "))
                .unwrap_or(&text)
                .to_string();
            self.push(
                &file,
                None,
                &format!("render:{plain}"),
                format!(
                    "non si può generare con l'esempio `{}` ({}): {plain}",
                    sample.id, sample.situation.description
                ),
            );
        }
    }
}
