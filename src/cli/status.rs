//! `avvisi status`: the queue at a glance, as `mailq` shows Postfix's: counts per campaign and
//! message state, paused campaigns with their reason, the oldest pending message, the next
//! attempt times, the errors grouped by the relay's reply, and which template version is live
//! where. `--json` gives the same for scripts.

use super::local;
use crate::app::Status;
use crate::config::Settings;
use crate::telemetry::printable;

pub(crate) fn print(s: &Status, settings: &Settings) {
    let tz = settings.calendar.timezone;
    // What needs an operator comes first.
    if let Some(warning) = &s.warning {
        println!("WARNING: {}", printable(warning));
    }
    // Every other hold (the stale snapshot is the warning above, a paused reason is below).
    for h in &s.holds {
        let said = match h.kind {
            // Said below, with the other held domains' lines.
            "snapshot_stale" | "domain_held" => true,
            "paused" | "breaker" => s
                .campaigns
                .iter()
                .any(|c| Some(&c.campaign) == h.campaign.as_ref() && c.paused_reason.is_some()),
            _ => false,
        };
        if !said {
            println!("HELD: {}", printable(&h.text));
        }
    }
    for c in &s.campaigns {
        if let Some(why) = &c.paused_reason {
            println!("campaign {} is paused: {}", c.campaign, printable(why));
            println!(
                "  resume it when the relay is fixed: avvisi campaign resume {}",
                c.campaign
            );
        }
    }
    println!(
        "{:<45} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10}",
        "campaign",
        "state",
        "pending",
        "sending",
        "sent",
        "skipped",
        "failed",
        "expired",
        "suppressed"
    );
    for c in &s.campaigns {
        let n = &c.counts;
        println!(
            "{:<45} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10}",
            c.campaign,
            c.state.as_str(),
            n.pending,
            n.sending,
            n.sent,
            n.skipped,
            n.failed,
            n.expired,
            n.suppressed
        );
    }
    if s.campaigns.is_empty() {
        println!("(no campaigns yet: run `avvisi run --once` to plan the reminders)");
    }
    match &s.oldest_pending {
        Some(p) => println!(
            "oldest pending: {}/{}, planned {}, next attempt {}",
            p.campaign,
            p.step,
            local(p.planned_at, tz),
            local(p.next_attempt_at, tz)
        ),
        None => println!("oldest pending: none"),
    }
    if !s.next_attempts.is_empty() {
        println!("next attempts:");
        for n in &s.next_attempts {
            let at_least = if n.at_least { "at least " } else { "" };
            println!("  {}  {at_least}{} message(s)", local(n.at, tz), n.messages);
        }
    }
    if let Some(q) = &s.hourly_quota {
        println!(
            "hourly quota: {} of {} used in the last hour (all processes)",
            q.used_last_hour, q.per_hour
        );
    }
    if !s.optouts.is_empty() {
        let each: Vec<String> = s
            .optouts
            .iter()
            .map(|o| format!("{} {}", o.users, o.stream))
            .collect();
        println!("opted out: {} (avvisi optouts list)", each.join(", "));
    }
    for h in &s.held_domains {
        println!(
            "held: {} until {} (the provider asked us to slow down: {}); its messages wait, the \
             other domains go on",
            h.domain,
            local(Some(h.until), tz),
            printable(&h.reply)
        );
    }
    for c in &s.complaints {
        println!(
            "complaints: {} {} of {} sent ({:.2}%)",
            c.campaign,
            c.complaints,
            c.sent,
            c.percent()
        );
    }
    if !s.errors.is_empty() {
        println!("errors by reply (failed, waiting to retry, last seen, an example):");
        for e in &s.errors {
            let code = e.code.map_or("-".to_string(), |c| c.to_string());
            println!(
                "  {code:>4}  {:>7} failed {:>7} retrying  {}  {}",
                e.failed,
                e.retrying,
                local(e.last_at, tz),
                printable(&e.example)
            );
        }
    }
    // Which template version is live where: the newest publication, the folder on disk and
    // each running daemon.
    match &s.templates_published {
        Some(p) => println!(
            "templates published: {} ({}, {} by {}: {})",
            p.digest,
            p.kind.as_str(),
            local(Some(p.published_at), tz),
            printable(&p.published_by),
            printable(&p.note)
        ),
        None => println!("templates published: none yet (the first start publishes the folder)"),
    }
    match (&s.templates_on_disk, &s.templates_error) {
        (Some(digest), _) => println!(
            "templates on disk: {digest} ({})",
            settings.templates_dir.display()
        ),
        (None, e) => println!(
            "templates on disk: cannot be loaded: {}",
            printable(e.as_deref().unwrap_or("-"))
        ),
    }
    if s.daemons.is_empty() {
        println!("daemons: none running");
    }
    for d in &s.daemons {
        println!(
            "daemon {}: templates live {}",
            d.id,
            d.templates_digest.as_deref().unwrap_or("-")
        );
    }
}
