//! What keeps due messages from going out now, named where the operator looks (`status`,
//! `explain`, the status page, the console's pages): the relay down (with its last fault),
//! outside the sending hours (until when), the hourly quota used up, no daemon running, a stale
//! snapshot (reminders), a pause or the circuit breaker, a domain whose provider asked us to
//! slow down. The one list: each hold is said in English (the command line) and in Italian
//! (the pages) from the same facts.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::config::Settings;
use crate::explain::Hold;
use crate::store::{daemons, Db};

/// Every hold at `now`.
pub async fn holds(db: &Db, settings: &Settings, now: DateTime<Utc>) -> anyhow::Result<Vec<Hold>> {
    use anyhow::Context;
    let tz = settings.calendar.timezone;
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z");
    let local_it = |t: DateTime<Utc>| t.with_timezone(&tz).format("%H:%M del %d/%m/%Y");
    let every = |kind, text, text_it| Hold {
        kind,
        campaign: None,
        domain: None,
        reminders_only: false,
        text,
        text_it,
    };
    let mut holds = Vec::new();
    let running = daemons::running_daemons(db)
        .await
        .context("reading the daemons")?;
    if running.is_empty() {
        holds.push(every(
            "no_daemon",
            "no daemon is running: nothing is sent until `avvisi daemon` runs (or `avvisi run --once`)"
                .to_string(),
            "Nessun demone in esecuzione: nulla viene pianificato né inviato finché non parte \
             `avvisi daemon` (o `avvisi run --once`)."
                .to_string(),
        ));
    }
    for d in &running {
        if let Some(fault) = &d.relay_fault {
            let fault = crate::telemetry::scrub(fault);
            let since = d
                .relay_fault_since
                .map(|t| format!(" since {}", local(t)))
                .unwrap_or_default();
            let since_it = d
                .relay_fault_since
                .map(|t| format!(" dalle {}", local_it(t)))
                .unwrap_or_default();
            holds.push(every(
                "relay",
                format!(
                    "the relay is down{since} (daemon {}; last fault: {fault}): delivery retries with backoff, no message is failed for it",
                    d.id
                ),
                format!(
                    "Il server di posta non risponde{since_it} (demone {}; ultimo errore: {fault}): \
                     l'invio riprova a intervalli crescenti, nessun messaggio fallisce per questo.",
                    d.id
                ),
            ));
        }
    }
    if let Some(resumes) = sending_resumes(settings, now) {
        let cal = &settings.calendar;
        let (start, end) = (
            cal.sending_hours_start.format("%H:%M"),
            cal.sending_hours_end.format("%H:%M"),
        );
        holds.push(every(
            "sending_hours",
            format!(
                "outside the sending hours ({start}-{end} {tz}): sending waits for {start} ({})",
                local(resumes)
            ),
            format!(
                "Fuori dall'orario di invio ({start}-{end}, ora di Roma): l'invio riprende alle {}.",
                local_it(resumes)
            ),
        ));
    }
    if settings.rate.per_hour > 0 {
        let used = crate::deliver::quota::used_last_hour(db)
            .await
            .context("reading the shared quota")?;
        let per_hour = settings.rate.per_hour;
        if used >= i64::from(per_hour) {
            holds.push(every(
                "hourly_quota",
                format!(
                    "the relay's hourly quota is used up ({used} of {per_hour} in the last hour, rate.per_hour): sending waits until the oldest of the hour ages out"
                ),
                format!(
                    "Quota oraria raggiunta ({used} messaggi nell'ultima ora su {per_hour}): \
                     l'invio riprende quando i più vecchi escono dall'ora."
                ),
            ));
        }
    }
    let fresh = crate::import::freshness(db.pool(), settings.import.max_age_hours, now)
        .await
        .context("reading the imports")?;
    if let Some(warning) = fresh.warning(now) {
        let it = match fresh.newest {
            Some(at) => format!(
                "Promemoria fermi: l'ultima fotografia completa degli utenti ha {} ore \
                 (import.max_age_hours = {}); ripartono quando se ne importa una nuova.",
                (now - at).num_hours(),
                fresh.max_age_hours
            ),
            None => {
                "Promemoria fermi: nessuna fotografia completa degli utenti importata.".to_string()
            }
        };
        holds.push(Hold {
            reminders_only: true,
            ..every("snapshot_stale", warning, it)
        });
    }
    for c in crate::campaign::list(db)
        .await
        .context("reading the campaigns")?
    {
        if c.state != crate::store::CampaignState::Paused {
            continue;
        }
        let name = &c.name;
        let (kind, text, it) = match c.paused_reason.as_deref().map(crate::telemetry::scrub) {
            Some(r) if r.starts_with("circuit breaker") => (
                "breaker",
                format!("campaign {name} was paused by the {r}; resume it once the relay is fixed"),
                format!(
                    "Campagna {name} messa in pausa dall'interruttore automatico ({r}): \
                     riprenderla quando il server di posta è a posto."
                ),
            ),
            Some(r) => (
                "paused",
                format!("campaign {name} is paused: {r}"),
                format!("Campagna {name} in pausa: {r}."),
            ),
            None => (
                "paused",
                format!(
                    "campaign {name} is paused by an operator: nothing of it is sent until `avvisi campaign resume {name}`"
                ),
                format!(
                    "Campagna {name} messa in pausa da un operatore: nulla ne parte finché non \
                     viene ripresa."
                ),
            ),
        };
        holds.push(Hold {
            campaign: Some(c.name.clone()),
            ..every(kind, text, it)
        });
    }
    for h in crate::deliver::hold::held(db, now)
        .await
        .context("reading the held domains")?
    {
        let reply = crate::telemetry::scrub(&h.reply);
        holds.push(Hold {
            domain: Some(h.domain.clone()),
            ..every(
                "domain_held",
                format!(
                    "{} held until {} (the provider asked us to slow down: {reply}); its messages wait, the other domains go on",
                    h.domain,
                    local(h.until)
                ),
                format!(
                    "Dominio {} fermo fino alle {} (il suo gestore ha chiesto di rallentare: \
                     {reply}); i suoi messaggi aspettano, gli altri domini proseguono.",
                    h.domain,
                    local_it(h.until)
                ),
            )
        });
    }
    Ok(holds)
}

/// When sending resumes, if `now` is outside the sending hours: the next start of the hours,
/// in the calendar's time zone.
fn sending_resumes(settings: &Settings, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cal = &settings.calendar;
    let local = now.with_timezone(&cal.timezone);
    let time = local.time();
    if time >= cal.sending_hours_start && time < cal.sending_hours_end {
        return None;
    }
    let day = match time < cal.sending_hours_start {
        true => local.date_naive(),
        false => local.date_naive() + Duration::days(1),
    };
    let start = day.and_time(cal.sending_hours_start);
    // A start skipped by a daylight-saving change: an hour later.
    cal.timezone
        .from_local_datetime(&start)
        .earliest()
        .or_else(|| {
            cal.timezone
                .from_local_datetime(&(start + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}
