//! The status page at `/` and the one-page HTML report of a campaign: server-side HTML (Tera,
//! autoescaped), no script and nothing fetched from elsewhere, readable on a phone. The status
//! page reloads itself (a `<meta>` refresh) only when its reader asks for it (`/?ricarica=1`,
//! a link on the page), so it can stay open during the deadline's week without refreshing
//! under anyone who did not choose it (WCAG 2.2.1).

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::chart;
use super::health::Health;
use crate::campaign::phases;
use crate::campaign::Campaign;
use crate::config::Settings;
use crate::store::{queue, CampaignState, Counts, Db};

/// Why a page could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("reading the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("building the page: {0}")]
    Template(#[from] tera::Error),
    #[error("reading what holds sending: {0:#}")]
    Holds(anyhow::Error),
}

const STATUS: &str = include_str!("status.html");
const REPORT: &str = include_str!("report.html");
/// How often the open status page reloads itself.
const REFRESH_SECONDS: u32 = 15;
/// The status page's chart covers the last two days.
const CHART_HOURS: i64 = 48;

/// One campaign's line: counts and the widths of its progress bar's parts.
#[derive(Serialize)]
struct CampaignRow {
    name: String,
    /// The state's name (`running`), for scripts reading the page.
    state: String,
    /// The state in Italian, for people.
    stato: &'static str,
    paused_reason: Option<String>,
    total: u64,
    /// Waiting or on the wire.
    open: u64,
    sent: u64,
    skipped: u64,
    failed: u64,
    expired: u64,
    /// Done, in percent of the total, one decimal.
    done_percent: f64,
    /// (css class, width in percent, count) of each non-empty part, in a fixed order.
    bar: Vec<(&'static str, f64, u64)>,
}

impl CampaignRow {
    fn new(
        name: String,
        state: CampaignState,
        paused_reason: Option<String>,
        counts: &Counts,
    ) -> CampaignRow {
        let total = counts.total();
        let percent = |n: u64| {
            if total == 0 {
                0.0
            } else {
                (n as f64 * 1000.0 / total as f64).round() / 10.0
            }
        };
        let parts = [
            ("sent", counts.sent),
            ("skipped", counts.skipped),
            ("failed", counts.failed),
            ("expired", counts.expired),
            ("open", counts.open()),
        ];
        CampaignRow {
            name,
            state: state.as_str().to_string(),
            stato: stato(state),
            paused_reason: paused_reason.map(|r| crate::telemetry::scrub(&r).into_owned()),
            total,
            open: counts.open(),
            sent: counts.sent,
            skipped: counts.skipped,
            failed: counts.failed,
            expired: counts.expired,
            done_percent: percent(counts.done()),
            bar: parts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(class, n)| (class, percent(n), n))
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct ErrorRow {
    code: String,
    failed: u64,
    retrying: u64,
    last_at: String,
    example: String,
}

#[derive(Serialize)]
struct NextRow {
    at: String,
    messages: String,
}

#[derive(Serialize)]
struct StatusPage {
    generated_at: String,
    tz: String,
    refresh_seconds: u32,
    /// Whether the page reloads itself every `refresh_seconds` (its reader asked for it).
    reload: bool,
    /// The calendar's phase by name (`reminders`), for scripts reading the page.
    phase: &'static str,
    /// The same in Italian.
    fase: &'static str,
    /// What holds sending now, in Italian: (kind, sentence).
    holds: Vec<(&'static str, String)>,
    campaigns: Vec<CampaignRow>,
    queue_depth: u64,
    oldest_pending: Option<String>,
    next_attempts: Vec<NextRow>,
    errors: Vec<ErrorRow>,
    chart: Option<String>,
    chart_hours: i64,
    sent_in_chart: u64,
    templates_live: Option<String>,
    templates_rejected: Option<String>,
}

fn local(t: Option<DateTime<Utc>>, tz: Tz) -> String {
    t.map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The status page at `now`. `health` is the daemon's own state (live templates), when a
/// daemon serves the page; `reload`: the page reloads itself (its reader asked for it).
pub async fn status(
    db: &Db,
    settings: &Settings,
    health: Option<&Health>,
    now: DateTime<Utc>,
    reload: bool,
) -> Result<String, PageError> {
    let tz = settings.calendar.timezone;
    let campaigns: Vec<CampaignRow> = queue::by_campaign(db)
        .await?
        .into_iter()
        .map(|c| CampaignRow::new(c.campaign, c.state, c.paused_reason, &c.counts))
        .collect();
    let queue_depth = campaigns.iter().map(|c| c.open).sum();
    let oldest = queue::oldest_pending(db).await?;
    let next_attempts = queue::next_attempts(db, 5)
        .await?
        .into_iter()
        .map(|n| NextRow {
            at: local(n.at, tz),
            messages: format!("{}{}", if n.at_least { "≥ " } else { "" }, n.messages),
        })
        .collect();
    let errors = queue::errors_by_reply(db)
        .await?
        .into_iter()
        .take(10)
        .map(|e| ErrorRow {
            code: e.code.map_or("-".into(), |c| c.to_string()),
            failed: e.failed,
            retrying: e.retrying,
            last_at: local(e.last_at, tz),
            example: crate::telemetry::scrub(&e.example).into_owned(),
        })
        .collect();
    let since = now - Duration::hours(CHART_HOURS - 1);
    let sends = queue::sends_per_hour(db, None, since, now + Duration::hours(1)).await?;
    let reopened = phases::reopened_at(db.pool()).await?;
    let phase = phases::phase_at(&settings.calendar, reopened, now);
    let page = StatusPage {
        generated_at: local(Some(now), tz),
        tz: tz.to_string(),
        refresh_seconds: REFRESH_SECONDS,
        reload,
        phase,
        fase: fase(phase),
        holds: super::holds::holds(db, settings, now)
            .await
            .map_err(PageError::Holds)?
            .into_iter()
            .map(|h| (h.kind, h.text_it))
            .collect(),
        campaigns,
        queue_depth,
        oldest_pending: oldest.map(|p| {
            format!(
                "{}/{}, pianificato il {}, prossimo tentativo il {}",
                p.campaign,
                p.step,
                local(p.planned_at, tz),
                local(p.next_attempt_at, tz)
            )
        }),
        next_attempts,
        errors,
        sent_in_chart: sends.iter().map(|s| s.sent).sum(),
        chart: chart::sends_per_hour(&sends, since, now, tz),
        chart_hours: CHART_HOURS,
        templates_live: health.map(|h| h.templates.current().digest().to_string()),
        templates_rejected: health.and_then(|h| h.rejected_templates()),
    };
    let context = tera::Context::from_serialize(&page)?;
    Ok(tera::Tera::one_off(STATUS, &context, true)?)
}

#[derive(Serialize)]
struct ReportPage {
    campaign: CampaignRow,
    audience: String,
    audience_it: &'static str,
    province: Option<String>,
    template: String,
    subject: Option<String>,
    created_by: Option<String>,
    pauses: Vec<PauseLine>,
    generated_at: String,
    tz: String,
    first_sent: String,
    last_sent: String,
    chart: Option<String>,
}

/// A pause or a resume, from the audit log (or avvisi's own pause, with its reason).
#[derive(Serialize)]
struct PauseLine {
    at: String,
    what: &'static str,
    by: String,
}

/// The calendar's phase (`phases::phase_at`) in Italian, for the status page.
fn fase(phase: &str) -> &'static str {
    match phase {
        "before the campaign" => "prima della campagna",
        "reminders" => "promemoria",
        "reopened" => "riapertura",
        _ => "manutenzione",
    }
}

/// A campaign's state in Italian, for the status page and the manager's report.
fn stato(state: CampaignState) -> &'static str {
    match state {
        CampaignState::Draft => "bozza (non avviata)",
        CampaignState::Scheduled => "programmata",
        CampaignState::Running => "in corso",
        CampaignState::Paused => "in pausa",
        CampaignState::Cancelled => "annullata",
        CampaignState::Finished => "conclusa",
    }
}

/// The one-page HTML report of campaign `c` for a manager, in Italian: who it was for (the
/// audience and its province), the template and `subject` (rendered by the caller for a real
/// recipient), its counts, its sends per hour and its pauses.
pub async fn report(
    db: &Db,
    settings: &Settings,
    c: &Campaign,
    subject: Option<String>,
    now: DateTime<Utc>,
) -> Result<String, PageError> {
    let tz = settings.calendar.timezone;
    let campaign_id = c.id;
    let counts = queue::of_campaign(db, campaign_id).await?;
    let span = queue::send_span(db, campaign_id).await?;
    let mut pauses: Vec<PauseLine> = crate::store::audit::about(
        &mut *db.pool().acquire().await?,
        &c.name,
        &["campaign.pause", "campaign.resume"],
    )
    .await?
    .into_iter()
    .map(|e| PauseLine {
        at: local(Some(e.at), tz),
        what: match e.action.as_str() {
            "campaign.pause" => "messa in pausa",
            _ => "ripresa",
        },
        by: format!("{} ({})", e.actor_name, e.role),
    })
    .collect();
    // A pause of avvisi's own (the circuit breaker, the complaints) is not an operator's action.
    if let (CampaignState::Paused, Some(reason)) = (c.state, &c.paused_reason) {
        pauses.push(PauseLine {
            at: "ora".into(),
            what: "in pausa",
            by: format!("avvisi: {}", crate::telemetry::scrub(reason)),
        });
    }
    let chart = match span {
        Some((first, last)) => {
            let sends =
                queue::sends_per_hour(db, Some(campaign_id), first, last + Duration::hours(1))
                    .await?;
            chart::sends_per_hour(&sends, first, last, tz)
        }
        None => None,
    };
    let page = ReportPage {
        campaign: CampaignRow::new(c.name.clone(), c.state, None, &counts),
        audience: c.audience.to_string(),
        audience_it: c.audience.description_it(),
        province: c.filter_province.clone(),
        template: c.template.clone(),
        subject,
        created_by: c.created_by.clone(),
        pauses,
        generated_at: local(Some(now), tz),
        tz: tz.to_string(),
        first_sent: local(span.map(|s| s.0), tz),
        last_sent: local(span.map(|s| s.1), tz),
        chart,
    };
    let context = tera::Context::from_serialize(&page)?;
    Ok(tera::Tera::one_off(REPORT, &context, true)?)
}
