//! The campaigns' reports as text for people.

use chrono_tz::Tz;

use crate::app::{ApprovalPreview, CampaignPreview, CampaignView, Created};
use crate::cli::local;
use crate::telemetry::printable;

pub(super) fn created(c: &Created, tz: Tz) {
    println!(
        "created draft campaign {}: audience {}{} ({} users now), template {}{}",
        c.name,
        c.setup.audience,
        c.setup
            .filter_province
            .as_deref()
            .map(|p| match p.starts_with('#') {
                true => ", the uploaded list of users".to_string(),
                false => format!(", province {p}"),
            })
            .unwrap_or_default(),
        c.setup.audience_size,
        c.setup.template,
        c.setup
            .send_at
            .map(|t| format!(", not before {}", local(Some(t), tz)))
            .unwrap_or_default()
    );
    if !c.not_found.is_empty() {
        println!(
            "{} entries of the list match no user (left out, nothing guessed): {}",
            c.not_found.len(),
            c.not_found
                .iter()
                .map(|e| printable(e))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "it expires at {}: nothing of it goes out after that",
        local(c.setup.expires_at, tz)
    );
    match &c.setup.transactional {
        Some(why) => println!(
            "transactional ({}): its emails carry no unsubscribe",
            printable(why)
        ),
        None => println!("its emails carry a one-click unsubscribe (not --transactional)"),
    }
    if c.send_at_past {
        println!("note: --send-at is already past; once launched it starts at once");
    }
    warn(&c.warnings);
    println!(
        "next: `avvisi campaign preview {0}`, `avvisi campaign test {0} --to ADDRESS`, someone else's `avvisi campaign approve {0}`, then `avvisi campaign launch {0}`",
        c.name
    );
}

/// The audience with its province filter, if any.
fn audience_text(audience: &str, province: Option<&str>) -> String {
    match province {
        Some(p) if p.starts_with('#') => format!("{audience} (the uploaded list of users)"),
        Some(p) => format!("{audience} (province {p})"),
        None => audience.to_string(),
    }
}

pub(super) fn list(all: &[CampaignView], tz: Tz) {
    if all.is_empty() {
        println!("(no campaigns yet: `avvisi campaign create` makes one; reminders appear after `avvisi run --once`)");
        return;
    }
    let w = all
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max("campaign".len());
    println!(
        "{:<w$} {:<9} {:<9} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}  {:<20} finished",
        "campaign",
        "kind",
        "state",
        "audience",
        "sent",
        "skipped",
        "failed",
        "expired",
        "pending",
        "started",
    );
    for c in all {
        let p = &c.messages;
        println!(
            "{:<w$} {:<9} {:<9} {:>8} {:>6} {:>8} {:>7} {:>8} {:>8}  {:<20} {}",
            c.name,
            c.kind,
            c.state,
            c.setup.audience_size,
            p.sent,
            p.skipped,
            p.failed,
            p.expired,
            p.open(),
            local(c.started_at, tz),
            local(c.finished_at, tz)
        );
    }
}

pub(super) fn show(c: &CampaignView, tz: Tz) {
    let p = &c.messages;
    let lines = [
        ("campaign", c.name.clone()),
        ("kind", c.kind.clone()),
        (
            "state",
            match &c.paused_reason_unmasked {
                Some(why) => format!("{} ({why})", c.state),
                None => c.state.clone(),
            },
        ),
        (
            "audience",
            format!(
                "{}: {} ({} users now)",
                audience_text(&c.setup.audience, c.setup.filter_province.as_deref()),
                c.audience_description,
                c.setup.audience_size
            ),
        ),
        ("template", c.setup.template.clone()),
        (
            "stream",
            match (&c.setup.transactional, c.setup.unsubscribe) {
                (Some(why), _) => {
                    format!("{} (transactional: {why}; no unsubscribe)", c.setup.stream)
                }
                (None, true) => format!("{} (one-click unsubscribe)", c.setup.stream),
                (None, false) => format!(
                    "{} (the user's own procedure; no unsubscribe)",
                    c.setup.stream
                ),
            },
        ),
        ("send at", local(c.setup.send_at, tz)),
        ("expires at", local(c.setup.expires_at, tz)),
        (
            "created",
            match &c.created_by {
                Some(by) => format!("{} by {}", local(c.created_at, tz), printable(by)),
                None => local(c.created_at, tz),
            },
        ),
        ("approval", approval_text(c, tz)),
        ("started", local(c.started_at, tz)),
        ("finished", local(c.finished_at, tz)),
        ("planned", p.total().to_string()),
        ("sent", p.sent.to_string()),
        (
            "skipped",
            format!("{} ({} suppressed address)", p.skipped, p.suppressed),
        ),
        ("failed", p.failed.to_string()),
        ("expired", p.expired.to_string()),
        (
            "pending",
            format!("{} ({} being sent)", p.open(), p.sending),
        ),
    ];
    // The paused reason quotes the relay's reply: escaped for the terminal.
    for (k, v) in lines {
        println!("{k:<11} {}", printable(&v));
    }
    if !c.funnel.is_empty() {
        println!("audience funnel (users kept by each clause, now):");
        for f in &c.funnel {
            println!("  {:>9}  {}", f.users, f.step);
        }
    }
}

pub(super) fn preview(p: &CampaignPreview, tz: Tz) {
    println!(
        "campaign {}: audience {}, {} users now; template {}",
        p.campaign,
        audience_text(&p.audience, p.filter_province.as_deref()),
        p.audience_size,
        p.template
    );
    let Some(m) = &p.message else {
        println!("the audience is empty: there is no recipient to render the message for");
        return;
    };
    println!(
        "rendered for {} ({} {} <{}>), as if sent at {}:",
        m.user_id,
        m.first_name,
        m.last_name,
        m.recipient,
        local(Some(m.at), tz)
    );
    println!();
    println!("Subject: {}", m.subject);
    println!();
    println!("{}", m.text.trim_end());
}

/// What an approver reads before approving.
pub(super) fn approval_preview(p: &ApprovalPreview, tz: Tz) {
    println!(
        "campaign {}: audience {}, template {}, created by {}",
        p.campaign,
        audience_text(&p.audience, p.filter_province.as_deref()),
        p.template,
        p.created_by
            .as_deref()
            .map(printable)
            .unwrap_or("an unknown operator".into())
    );
    println!(
        "{} users now (SHA-256 of their ids {})",
        p.audience_size, p.audience_sha256
    );
    println!("the first {} messages, as rendered now:", p.samples.len());
    for (i, m) in p.samples.iter().enumerate() {
        println!();
        println!(
            "--- {} of {}: {} {} ({}) <{}>, at {}",
            i + 1,
            p.samples.len(),
            printable(&m.first_name),
            printable(&m.last_name),
            m.user_id,
            printable(&m.recipient),
            local(Some(m.at), tz)
        );
        println!("Subject: {}", printable(&m.subject));
        for line in m.text.lines() {
            println!("    {}", printable(line));
        }
    }
    println!();
}

/// The latest decision on a campaign, in a line.
fn approval_text(c: &CampaignView, tz: Tz) -> String {
    use crate::campaign::approval::Decision;
    let Some(a) = &c.approval else {
        return match (c.kind.as_str(), c.state.as_str()) {
            ("oneoff", "draft") => {
                "none yet (`avvisi campaign approve NAME`, by someone else)".into()
            }
            _ => "-".into(),
        };
    };
    let when = local(a.decided_at, tz);
    match a.decision {
        Decision::Rejected => format!(
            "rejected by {} at {when}: {}",
            printable(&a.decided_by),
            printable(a.reason.as_deref().unwrap_or(""))
        ),
        Decision::Approved => format!(
            "approved by {} at {when} for {} users{}",
            printable(&a.decided_by),
            a.audience.as_ref().map_or(0, |f| f.size),
            if a.stale_at.is_some() {
                " (stale: the audience changed since; approve again)"
            } else {
                ""
            }
        ),
    }
}

/// The report's warnings, on standard error.
pub(super) fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}
