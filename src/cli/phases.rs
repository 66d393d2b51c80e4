//! `avvisi service reopen` and `avvisi calendar`: the service's phases, printed.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::app::{CalendarReport, Reopened};

pub(crate) fn print_reopened(r: &Reopened, tz: Tz) {
    if r.newly_declared {
        println!(
            "reopening declared for {}: the reopening notices go out from then (within the sending hours)",
            local(r.at, tz)
        );
    } else {
        println!(
            "the reopening was already declared for {}: nothing changed",
            local(r.at, tz)
        );
    }
}

pub(crate) fn print_calendar(c: &CalendarReport, tz: Tz) {
    println!(
        "calendar in {tz}, as of {}: phase {}",
        local(c.at, tz),
        c.phase
    );
    println!("  {:<20} {}", "campaign start", local(c.campaign_start, tz));
    println!("  {:<20} {}", "deadline", local(c.deadline, tz));
    println!(
        "  {:<20} {}",
        "maintenance start",
        local(c.maintenance_start, tz)
    );
    println!(
        "  {:<20} {} (every enabled user, merged into that day's digest; expires at the maintenance start)",
        "maintenance notice",
        local(c.maintenance_notice_at, tz)
    );
    match c.reopening {
        Some(at) => println!("  {:<20} {}", "reopening", local(at, tz)),
        None => println!(
            "  {:<20} not declared yet (avvisi service reopen)",
            "reopening"
        ),
    }
    println!(
        "  {:<20} {}-{}",
        "sending hours", c.sending_hours_start, c.sending_hours_end
    );
    println!("cadence (calendar.cadence: the steps each audience gets):");
    for a in &c.cadence {
        println!("  {:<27} {}", a.audience, a.steps);
    }
    println!("next reminder steps (each goes to who still qualifies at that moment):");
    if c.upcoming.is_empty() {
        println!("  none");
    }
    for step in &c.upcoming {
        for r in &step.reminders {
            println!(
                "  {}  {:<6} {:<45} {} users now",
                local(step.due_at, tz),
                step.step,
                r.campaign,
                r.users
            );
        }
    }
}

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}
