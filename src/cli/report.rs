//! `avvisi report CAMPAIGN --out FILE.csv`: one row per planned message, for a manager or an
//! audit. `--html FILE.html`: one page with the counts and a chart of the messages sent per hour.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::print_json;
use crate::app::{App, CsvWritten, HtmlWritten};

/// What `report --json` prints: the files written.
#[derive(Serialize)]
struct Written {
    csv: Option<CsvWritten>,
    html: Option<HtmlWritten>,
}

pub(crate) async fn run(
    app: &App,
    name: &str,
    out: Option<&Path>,
    html: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut written = Written {
        csv: None,
        html: None,
    };
    // Each file is said as soon as it is written: the CSV stays said if the page then fails.
    if let Some(out) = out {
        let w = app.report_csv(name, out).await?;
        if !json {
            let n = &w.messages;
            println!(
                "{}: {} planned message(s) of campaign {name}: sent {}, skipped {}, failed {}, expired {}, pending {} (times in {})",
                w.path.display(),
                n.total(),
                n.sent,
                n.skipped,
                n.failed,
                n.expired,
                n.open(),
                w.timezone
            );
        }
        written.csv = Some(w);
    }
    if let Some(path) = html {
        let w = app.report_html(name, path).await?;
        if !json {
            println!(
                "{}: the summary of campaign {name}, with its chart",
                w.path.display()
            );
        }
        written.html = Some(w);
    }
    if json {
        print_json(&written)?;
    }
    Ok(ExitCode::SUCCESS)
}
