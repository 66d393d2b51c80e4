//! `avvisi explain USER_ID [--now TS]`: the user's snapshot state, their audiences, every message
//! and why, and for each campaign without a message of its current step, why not.

use super::local;
use crate::explain::{Explanation, UserMessage};
use crate::store::OutboxState;
use crate::telemetry::printable;

pub(crate) fn print(e: &Explanation, tz: chrono_tz::Tz) {
    let u = &e.user;
    let opt = |v: &Option<String>| {
        v.clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into())
    };
    let yes_no = |v: bool| if v { "yes" } else { "no" }.to_string();
    let fields: Vec<(&str, String)> = vec![
        ("user", u.contact.user_id.clone()),
        (
            "name",
            format!("{} {}", u.contact.first_name, u.contact.last_name),
        ),
        ("fiscal code", u.fiscal_code.clone()),
        ("email", u.contact.email.clone()),
        ("institutional", opt(&u.contact.institutional_email)),
        (
            "registered with @istruzione.it",
            yes_no(u.registered_institutional),
        ),
        ("registration", u.registration.clone()),
        ("enabled", yes_no(u.enabled)),
        ("pending email", opt(&u.contact.pending_email)),
        ("code regeneration", u.code_regeneration.clone()),
        ("province", opt(&u.contact.province)),
        ("portal updated", local(u.portal_updated_at, tz)),
        (
            "snapshot",
            format!(
                "{} (import {} of {}, {})",
                if u.present {
                    "present"
                } else {
                    "gone: missing from the latest full snapshot, gets nothing more"
                },
                u.import_id,
                local(u.import_at, tz),
                opt(&u.import_source)
            ),
        ),
    ];
    // Every value came from the snapshot or a relay: escaped for the terminal.
    for (k, v) in &fields {
        println!("{k:<31} {}", printable(v));
    }

    println!();
    println!("audiences:");
    for (audience, member) in &e.audiences {
        println!(
            "  {} {:<27} {}",
            if *member { "[x]" } else { "[ ]" },
            audience.name(),
            audience.description()
        );
    }

    if !e.suppressions.is_empty() {
        println!();
        println!("suppressed addresses (no message goes to them):");
        for s in &e.suppressions {
            println!(
                "  {}  since {}, by {}: {}",
                printable(&s.address),
                local(s.created_at, tz),
                s.source,
                printable(&s.reason)
            );
        }
    }

    if !e.optouts.is_empty() {
        println!();
        println!("opted out (nothing more of these is planned or sent):");
        for o in &e.optouts {
            println!(
                "  {:<27} since {}, by {}: {}",
                o.stream.key(),
                local(o.at, tz),
                o.source,
                o.stream.describe()
            );
        }
    }

    if !e.held.is_empty() {
        println!();
        println!("held domains (the provider asked us to slow down; its messages wait):");
        for h in &e.held {
            println!(
                "  {}  until {}: {}",
                h.domain,
                local(Some(h.until), tz),
                printable(&h.reply)
            );
        }
    }

    println!();
    if e.messages.is_empty() {
        println!("messages: none planned for this user");
    } else {
        print_messages(e, tz);
    }
    print_why_not(e, tz);
}

/// One line per campaign without a message of its current step, with the reason.
fn print_why_not(e: &Explanation, tz: chrono_tz::Tz) {
    println!();
    let missing: Vec<_> = e
        .why_not
        .iter()
        .filter(|v| !v.verdict.has_message())
        .collect();
    println!("why not (as of {}):", local(Some(e.at), tz));
    if missing.is_empty() {
        println!("  every campaign has a message of its current step for this user");
        return;
    }
    let w = missing.iter().map(|v| v.campaign.len()).max().unwrap_or(0);
    for v in missing {
        println!(
            "  {:<w$}  {}",
            v.campaign,
            printable(&v.verdict.text(&v.audience, tz))
        );
    }
}

fn print_messages(e: &Explanation, tz: chrono_tz::Tz) {
    if !e.holds.is_empty() {
        println!("held now:");
        for h in &e.holds {
            println!("  {}", printable(&h.text));
        }
    }
    println!("messages ({}, times in {tz}):", e.messages.len());
    let w = e
        .messages
        .iter()
        .map(|m| m.campaign.len())
        .max()
        .unwrap_or(0)
        .max("campaign".len());
    println!(
        "  {:<w$} {:<6} {:<8} {:>8}  {:<20} {:<20} {:<20} why",
        "campaign", "step", "state", "attempts", "planned", "sent", "updated"
    );
    for m in &e.messages {
        println!(
            "  {:<w$} {:<6} {:<8} {:>8}  {:<20} {:<20} {:<20} {}",
            m.campaign,
            m.step,
            m.state,
            m.attempts,
            local(m.planned_at, tz),
            local(m.sent_at, tz),
            local(m.updated_at, tz),
            printable(&why(e, m, tz))
        );
        if let Some(id) = &m.digest {
            println!("      merged into digest {id} (one email with the user's other messages of that day)");
        }
        for h in &m.history {
            let mut line = format!(
                "      earlier: {} at {} after {} attempt(s)",
                h.state,
                local(h.at, tz),
                h.attempts
            );
            if let Some(reason) = &h.reason {
                line.push_str(&format!(": {}", printable(reason)));
            }
            if let Some(code) = h.smtp_code {
                line.push_str(&format!(" (reply {code})"));
            }
            line.push_str(&format!("; put back by {}", h.event));
            println!("{line}");
        }
    }
}

/// The last column: where the message went, when it is due, or why it stopped.
fn why(e: &Explanation, m: &UserMessage, tz: chrono_tz::Tz) -> String {
    match m.state {
        OutboxState::Sent => format!("sent to {}", m.recipient),
        OutboxState::Pending => {
            let mut s = format!("due {}", local(m.next_attempt_at, tz));
            if let Some(e) = &m.reason {
                s.push_str(&format!(" (last error: {e})"));
            }
            // Due already: what it waits for, never a bare time long past.
            if m.next_attempt_at.is_some_and(|t| t <= e.at) {
                let kind = e
                    .why_not
                    .iter()
                    .find(|v| v.campaign == m.campaign)
                    .map(|v| v.kind);
                let waits: Vec<&str> = e
                    .holds
                    .iter()
                    .filter(|h| h.holds(m, kind))
                    .map(|h| h.text.as_str())
                    .collect();
                match waits.is_empty() {
                    true => s.push_str("; nothing holds it: the next delivery pass sends it"),
                    false => s.push_str(&format!("; waits: {}", waits.join("; "))),
                }
            }
            s
        }
        OutboxState::Sending => {
            format!("on the wire, claimed until {}", local(m.lease_until, tz))
        }
        _ => {
            let mut s = m
                .reason
                .clone()
                .unwrap_or_else(|| "no reason recorded".into());
            if let Some(code) = m.smtp_code {
                s.push_str(&format!(" (reply {code})"));
            }
            s
        }
    }
}
