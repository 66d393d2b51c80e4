//! A campaign's report for a manager or an audit: one CSV row per planned message, streamed
//! from the outbox to the file (a million rows in flat memory), and a one-page HTML summary with
//! a chart of the messages sent per hour.

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::TryStreamExt;
use serde::Serialize;

use super::App;
use crate::campaign;
use crate::import::{create_private, write_safe_record};
use crate::store::{queue, Counts};

/// The CSV written.
#[derive(Debug, Clone, Serialize)]
pub struct CsvWritten {
    pub campaign: String,
    pub path: PathBuf,
    /// The rows written, by state.
    pub messages: Counts,
    /// The time zone of the times in the file.
    pub timezone: String,
}

/// The HTML summary written.
#[derive(Debug, Clone, Serialize)]
pub struct HtmlWritten {
    pub campaign: String,
    pub path: PathBuf,
}

impl App {
    /// Writes one row per planned message of campaign `name` to `out` (readable by its owner
    /// only: it holds addresses).
    pub async fn report_csv(&self, name: &str, out: &Path) -> anyhow::Result<CsvWritten> {
        let c = campaign::get(&self.db, name).await?;
        let tz = self.settings.calendar.timezone;
        let file = create_private(out).with_context(|| format!("creating {}", out.display()))?;
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
        let mut rows = queue::report_rows(&self.db, c.id);
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
        Ok(CsvWritten {
            campaign: c.name,
            path: out.to_path_buf(),
            messages: counts,
            timezone: tz.to_string(),
        })
    }

    /// The campaign's subject as rendered now for the first user of its audience (`None` when
    /// the audience is empty now).
    async fn subject_now(&self, c: &crate::campaign::Campaign) -> anyhow::Result<Option<String>> {
        let domain = crate::render::email::message_id_domain(&self.settings.mail);
        let message_id = format!("<{}.main.report@{domain}>", c.uid);
        let Some(row) = crate::deliver::outbox::first_recipient(&self.db, c, &message_id).await?
        else {
            return Ok(None);
        };
        let worker = self.sample_worker(false).await?;
        let rendered =
            super::samples::render_sample(&worker, c, &row, self.clock.now(), false).await?;
        Ok(Some(rendered.subject))
    }

    /// Writes the one-page HTML summary of campaign `name` (counts and a chart of the sends
    /// per hour, no address) to `path`.
    pub async fn report_html(&self, name: &str, path: &Path) -> anyhow::Result<HtmlWritten> {
        let c = campaign::get(&self.db, name).await?;
        let subject = self.subject_now(&c).await?;
        let page =
            crate::observe::page::report(&self.db, &self.settings, &c, subject, self.clock.now())
                .await
                .context("building the HTML report")?;
        let mut file =
            create_private(path).with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut file, page.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(HtmlWritten {
            campaign: c.name,
            path: path.to_path_buf(),
        })
    }
}
