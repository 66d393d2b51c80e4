//! Provider deferrals: a mailbox provider that asks us to slow down holds its domain only.
//!
//! Gmail (`421 4.7.28 ... unusual rate`), Microsoft (`4.7.650`, "server busy") and Yahoo
//! (`TSS04`, "temporarily deferred") answer a sender that goes too fast for them with a 4xx
//! that is about the pace towards that provider, not about the message nor the relay. Retrying
//! each message on its own backoff would keep knocking; stopping delivery would hold everyone
//! else. So the reply holds the recipient's domain: its messages wait (attempt not counted)
//! until the hold ends, the other domains keep flowing, and the circuit breaker and the relay's
//! fault never hear of it.
//!
//! The hold is a row of `domain_holds`, shared by every daemon on the database and kept across
//! restarts. Its length grows with the holds in a row (`delivery.domain_hold_base_seconds`
//! doubled at each strike, capped at `delivery.domain_hold_max_seconds`); a deferral while the
//! domain is held already (the messages that were on the wire) does not lengthen it. A message
//! is never held past its deadline: it expires instead, as a retry would.

use chrono::{DateTime, Duration, Utc};
use sqlx::{AnyConnection, Row};

use crate::config::Settings;
use crate::store::Db;

/// Whether a 4xx reply asks us to slow down: an RFC 3463 `4.7.28` (Gmail), or one of the
/// providers' known texts. Any other 4xx stays a transient failure of its message.
pub(crate) fn asks_to_slow_down(code: Option<u16>, detail: &str) -> bool {
    if !code.is_some_and(|c| (400..500).contains(&c)) {
        return false;
    }
    let text = detail.to_ascii_lowercase();
    SLOW_DOWN.iter().any(|marker| text.contains(marker))
}

/// What the providers say when they defer for our pace (lower case): Gmail's status and words,
/// Microsoft's status and words, Yahoo's code and words.
const SLOW_DOWN: &[&str] = &[
    "4.7.28",
    "rate limited",
    "unusual rate",
    "4.7.650",
    "server busy",
    "tss04",
    "temporarily deferred",
];

/// The domain of `recipient`, lower case (what a hold is keyed by).
pub(crate) fn domain_of(recipient: &str) -> String {
    recipient
        .rsplit_once('@')
        .map_or(recipient, |(_, d)| d)
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

/// The length of the holds: `base` doubled at each strike in a row, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: u64,
    pub max: u64,
}

impl Backoff {
    pub(crate) fn of(settings: &Settings) -> Backoff {
        Backoff {
            base: settings.delivery.domain_hold_base_seconds,
            max: settings.delivery.domain_hold_max_seconds,
        }
    }

    /// The length of the `strike`th hold in a row (1-based).
    fn length(&self, strike: i64) -> Duration {
        let exp = (strike.max(1) - 1).min(30) as u32;
        Duration::seconds(self.base.saturating_mul(1u64 << exp).min(self.max) as i64)
    }
}

/// A domain held now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DomainHold {
    pub domain: String,
    /// Its messages wait until then.
    pub until: DateTime<Utc>,
    /// The reply that asked for it.
    pub reply: String,
    /// Holds in a row (the backoff's step).
    pub strikes: i64,
}

/// Holds `domain` after `reply` asked to slow down at `now`, unless it is held already; returns
/// until when it is held. The next strike follows the last one when that ended less than
/// `backoff.max` ago; after a longer calm the backoff starts over. Two daemons deferred at once
/// both end up with the hold the first one wrote (the update applies only to an ended hold).
pub(crate) async fn hold(
    conn: &mut AnyConnection,
    domain: &str,
    reply: &str,
    now: DateTime<Utc>,
    backoff: Backoff,
) -> Result<DateTime<Utc>, sqlx::Error> {
    let now_s = now.timestamp();
    let last = sqlx::query("SELECT held_until, strikes FROM domain_holds WHERE domain = $1")
        .bind(domain)
        .fetch_optional(&mut *conn)
        .await?;
    let strike = match &last {
        Some(r) if r.try_get::<i64, _>("held_until")? > now_s => None,
        Some(r) if now_s - r.try_get::<i64, _>("held_until")? < backoff.max as i64 => {
            Some(r.try_get::<i64, _>("strikes")? + 1)
        }
        _ => Some(1),
    };
    if let Some(strike) = strike {
        let until = (now + backoff.length(strike)).timestamp();
        sqlx::query(
            "INSERT INTO domain_holds (domain, held_until, strikes, reply, since) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (domain) DO UPDATE SET held_until = excluded.held_until, \
                strikes = excluded.strikes, reply = excluded.reply, since = excluded.since \
             WHERE domain_holds.held_until <= $5",
        )
        .bind(domain)
        .bind(until)
        .bind(strike)
        .bind(reply)
        .bind(now_s)
        .execute(&mut *conn)
        .await?;
        tracing::warn!(domain, until = %crate::store::timestamp(Some(until)).unwrap_or(now), strike, reply = %crate::telemetry::scrub(reply), "the provider asks to slow down: its domain is held");
    }
    let until: i64 = sqlx::query_scalar("SELECT held_until FROM domain_holds WHERE domain = $1")
        .bind(domain)
        .fetch_one(&mut *conn)
        .await?;
    Ok(crate::store::timestamp(Some(until)).unwrap_or(now))
}

/// Whether a domain is held at `$1`: one probe of the `held_until` index.
const ANY_HELD: &str = "SELECT 1 FROM domain_holds WHERE held_until > $1 LIMIT 1";

/// Whether any domain is held at `now`: the claim's one look when none is (an index probe).
pub(crate) async fn any(conn: &mut AnyConnection, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(ANY_HELD)
        .bind(now.timestamp())
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// The domains held at `now`, by domain.
pub(crate) async fn held_on(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
) -> Result<Vec<DomainHold>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT domain, held_until, reply, strikes FROM domain_holds WHERE held_until > $1 \
         ORDER BY domain",
    )
    .bind(now.timestamp())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DomainHold {
                domain: r.try_get("domain")?,
                until: crate::store::timestamp(Some(r.try_get("held_until")?)).unwrap_or(now),
                reply: r.try_get("reply")?,
                strikes: r.try_get("strikes")?,
            })
        })
        .collect()
}

/// The domains held at `now` (`status`, `/readyz`, `explain`).
pub async fn held(db: &Db, now: DateTime<Utc>) -> Result<Vec<DomainHold>, sqlx::Error> {
    held_on(&mut *db.pool().acquire().await?, now).await
}

/// Rows `ids`, claimed by `token`, wait for the hold of `domain` to end at `until`: back to
/// pending, due then, their attempt not counted (the provider asked us to wait; the messages
/// are not at fault); or expired when their deadline comes first. Returns how many rows were
/// still held by `token`.
pub(crate) async fn wait(
    conn: &mut AnyConnection,
    token: &str,
    ids: &[i64],
    hold: &DomainHold,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let DomainHold {
        domain,
        until,
        reply,
        ..
    } = hold;
    let waiting = format!(
        "{domain} asked to slow down ({reply}): held until {}",
        until.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let expired = format!("deadline would pass while {domain} is held (last error: {reply})");
    let mut done = 0;
    for chunk in ids.chunks(500) {
        let list = (0..chunk.len())
            .map(|i| format!("${}", i + 7))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE outbox SET \
                state = CASE WHEN expires_at IS NOT NULL AND expires_at <= $3 THEN 'expired' ELSE 'pending' END, \
                reason = CASE WHEN expires_at IS NOT NULL AND expires_at <= $3 THEN $5 ELSE $4 END, \
                smtp_code = $6, next_attempt_at = $3, \
                attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
                updated_at = $2, claim_token = NULL, lease_until = NULL \
             WHERE claim_token = $1 AND id IN ({list})"
        );
        let mut q = sqlx::query(&sql)
            .bind(token)
            .bind(now.timestamp())
            .bind(until.timestamp())
            .bind(waiting.clone())
            .bind(expired.clone())
            .bind(reply_code(reply).map(i64::from));
        for id in chunk {
            q = q.bind(*id);
        }
        done += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(done)
}

/// The reply code of a reply as lettre words it ("transient error (421): 4.7.28 ...").
fn reply_code(reply: &str) -> Option<u16> {
    let (_, rest) = reply.split_once('(')?;
    rest.get(..3)?.parse().ok()
}

/// Hands back the claimed rows of `rows` whose recipient's domain is held at `now`: they wait
/// for its end (see [`wait`]). Returns the rows to send and how many were held. Costs one index
/// probe when no domain is held.
pub(crate) async fn hold_back<T>(
    conn: &mut AnyConnection,
    token: &str,
    rows: Vec<T>,
    recipient: impl Fn(&T) -> (i64, &str),
    now: DateTime<Utc>,
) -> Result<(Vec<T>, u64), sqlx::Error> {
    if rows.is_empty() || !any(&mut *conn, now).await? {
        return Ok((rows, 0));
    }
    let holds = held_on(&mut *conn, now).await?;
    let mut waiting: Vec<Vec<i64>> = vec![Vec::new(); holds.len()];
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, to) = recipient(&row);
        let domain = domain_of(to);
        match holds.iter().position(|h| h.domain == domain) {
            Some(i) => waiting[i].push(id),
            None => kept.push(row),
        }
    }
    let mut n = 0;
    for (h, ids) in holds.iter().zip(&waiting) {
        if !ids.is_empty() {
            n += wait(conn, token, ids, h, now).await?;
        }
    }
    Ok((kept, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_providers_requests_to_slow_down_are_recognised() {
        for (code, text) in [
            (
                421,
                "4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail",
            ),
            (450, "4.7.28 Gmail has detected an unusual rate of mail"),
            (
                451,
                "4.7.650 The mail server [192.0.2.1] has been temporarily rate limited",
            ),
            (451, "Server busy. Please try again later"),
            (
                421,
                "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred",
            ),
        ] {
            let detail = format!("transient error ({code}): {text}");
            assert!(asks_to_slow_down(Some(code), &detail), "{detail}");
        }
        for (code, text) in [
            (451, "4.3.0 try again later"),
            (452, "4.3.1 insufficient system storage"),
            (421, "4.4.2 closing connection"),
            // The words, in a permanent refusal: not a deferral.
            (550, "5.7.1 rate limited forever"),
        ] {
            let detail = format!("error ({code}): {text}");
            assert!(!asks_to_slow_down(Some(code), &detail), "{detail}");
        }
        assert!(!asks_to_slow_down(None, "4.7.28"));
    }

    #[test]
    fn the_hold_grows_with_each_strike_up_to_its_cap() {
        let b = Backoff { base: 60, max: 600 };
        let secs: Vec<i64> = (1..=6).map(|s| b.length(s).num_seconds()).collect();
        assert_eq!(secs, [60, 120, 240, 480, 600, 600]);
    }

    /// The claim's look at the holds, made on every batch, is an index probe, not a walk of
    /// the table (whose ended holds stay).
    #[tokio::test]
    async fn the_claims_look_at_the_holds_is_an_index_probe() {
        let plan = crate::store::sqlite_query_plan(ANY_HELD, &[Some(0)]).await;
        assert!(
            plan.iter()
                .any(|l| l.contains("USING COVERING INDEX domain_holds_until")),
            "{plan:#?}"
        );
    }

    #[test]
    fn the_reply_code_is_read_from_lettres_words() {
        assert_eq!(
            reply_code("transient error (421): 4.7.28 slow down"),
            Some(421)
        );
        assert_eq!(reply_code("not sent"), None);
    }

    #[test]
    fn the_domain_is_the_recipients_in_lower_case() {
        assert_eq!(domain_of("Ilaria.Dangelo@GMail.com"), "gmail.com");
        assert_eq!(domain_of("a@b@libero.it"), "libero.it");
    }
}
