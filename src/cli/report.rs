//! `avvisi report CAMPAIGN --out FILE.csv`: one row per planned message, for a manager or an
//! audit. Streamed from the outbox to the file: a million rows in flat memory.
//! `--html FILE.html`: one page with the counts and a chart of the messages sent per hour.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use futures::TryStreamExt;

use crate::campaign;
use crate::clock::Clock;
use crate::config::Settings;
use crate::import::write_safe_record;
use crate::store::{queue, Counts, Db};

pub(crate) async fn run(
    db: &Db,
    settings: &Settings,
    clock: &Clock,
    name: &str,
    out: Option<&Path>,
    html: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let c = campaign::get(db, name).await?;
    if let Some(out) = out {
        csv(db, settings, &c, out).await?;
    }
    if let Some(path) = html {
        let page = crate::observe::page::report(
            db,
            settings,
            c.id,
            &c.name,
            c.state.as_str(),
            clock.now(),
        )
        .await
        .context("building the HTML report")?;
        let mut file = crate::import::create_private(path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut file, page.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "{}: the summary of campaign {name}, with its chart",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn csv(
    db: &Db,
    settings: &Settings,
    c: &campaign::Campaign,
    out: &Path,
) -> anyhow::Result<()> {
    let name = &c.name;
    let tz = settings.calendar.timezone;
    let file = crate::import::create_private(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let mut csv = csv::Writer::from_writer(std::io::BufWriter::new(file));
    write_safe_record(
        &mut csv,
        [
            "user_id",
            "recipient",
            "step",
            "state",
            "reason",
            "reply_code",
            "attempts",
            "planned_at",
            "sent_at",
            "updated_at",
            "message_id",
        ],
    )?;
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.with_timezone(&tz).to_rfc3339())
            .unwrap_or_default()
    };
    let mut counts = Counts::default();
    let mut rows = queue::report_rows(db, c.id);
    while let Some(r) = rows.try_next().await.context("reading the outbox")? {
        counts.add(r.state, 1);
        let record = [
            r.user_id.as_str(),
            &r.recipient,
            &r.step.to_string(),
            r.state.as_str(),
            r.reason.as_deref().unwrap_or(""),
            &r.smtp_code.map(|c| c.to_string()).unwrap_or_default(),
            &r.attempts.to_string(),
            &time(r.planned_at),
            &time(r.sent_at),
            &time(r.updated_at),
            &r.message_id,
        ];
        // Addresses, ids and relay replies come from outside: no cell runs as a formula.
        write_safe_record(&mut csv, record)?;
    }
    csv.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: {} planned message(s) of campaign {name}: sent {}, skipped {}, failed {}, expired {}, pending {} (times in {tz})",
        out.display(),
        counts.total(),
        counts.sent,
        counts.skipped,
        counts.failed,
        counts.expired,
        counts.open()
    );
    Ok(())
}
