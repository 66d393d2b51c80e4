//! The relay's quota (`rate.per_hour`, `rate.per_second`), shared by every daemon on the
//! database and kept across restarts.
//!
//! A relay's quota is the relay's, not one process's: three daemons each keeping their own count
//! would send three times the quota, and a restart would forget how much of the hour was used.
//! So the count lives in the database (`rate_usage`), one row per slot of time:
//! - **per hour**: a sliding hour counted per minute; a message may go when the last 60 minutes
//!   (this one included) hold fewer than `per_hour` messages. A fixed clock hour would let
//!   twice the quota through across its boundary (all of it at 10:59, all of it again at 11:00).
//! - **per second**: this process keeps an even pace (governor, no burst), and each second's
//!   count is shared as well, for the processes sending at once (daemons on PostgreSQL, or a
//!   `run --once` beside the daemon).
//!
//! A daemon does not ask the database for every message: it takes slots in small leases (about
//! 1% of the hour, a quarter of the second), counted in the slot of time when they were taken
//! and usable only until that slot ends, so no message is ever counted in a slot other than
//! the one it was sent in. Slots left in a lease are given back at the end of a delivery pass; a
//! process killed with a lease in hand loses at most that lease (the quota errs on the side of
//! sending less). Slots are counted on the database's clock on PostgreSQL (daemons on several
//! machines agree on it), on this machine's on SQLite, never on the calendar's (`--now`).
//!
//! With no limit set nothing here touches the database.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota as Pace};
use tokio::sync::Mutex;

use crate::config::{Settings, TransportKind};
use crate::store::{Backend, Db};

/// The limits one delivery pass sends within. Shared by the pass's sender tasks.
pub(crate) struct Quota {
    hour: Option<Shared>,
    /// The even pace of this process.
    pace: Option<DefaultDirectRateLimiter>,
    /// The second's count shared with other processes.
    second: Option<Shared>,
}

/// Why a message may not go now.
#[derive(Debug)]
pub(crate) enum Throttle {
    /// The last hour holds `per_hour` messages already; a slot frees in `wait`.
    HourUsedUp { wait: Duration },
    /// The quota could not be read: nothing goes rather than risk going over it.
    Database(sqlx::Error),
}

impl std::fmt::Display for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Throttle::HourUsedUp { wait } => write!(
                f,
                "hourly quota used up (rate.per_hour, all daemons together); next slot in {}s",
                wait.as_secs() + 1
            ),
            Throttle::Database(e) => write!(f, "cannot read the shared quota: {e}"),
        }
    }
}

impl Throttle {
    /// How long to leave the message in the queue.
    pub(crate) fn wait(&self) -> Duration {
        match self {
            Throttle::HourUsedUp { wait } => *wait,
            Throttle::Database(_) => Duration::from_secs(60),
        }
    }
}

impl Quota {
    /// The limits of `settings` for a pass on `db`. They are the relay's: the file transport
    /// has none.
    pub(crate) fn new(db: &Db, settings: &Settings) -> Quota {
        let rate = &settings.rate;
        if settings.delivery.transport != TransportKind::Smtp {
            return Quota {
                hour: None,
                pace: None,
                second: None,
            };
        }
        Quota {
            hour: (rate.per_hour > 0).then(|| Shared::new(db, Scope::Hour, rate.per_hour)),
            // No burst above the per-second rate: the relay sees an even flow.
            pace: NonZeroU32::new(rate.per_second).map(|n| {
                DefaultDirectRateLimiter::direct(Pace::per_second(n).allow_burst(NonZeroU32::MIN))
            }),
            second: (rate.per_second > 0).then(|| Shared::new(db, Scope::Second, rate.per_second)),
        }
    }

    /// Waits for the per-second pace and takes one slot of the hour: `Ok` when the message may
    /// go now.
    pub(crate) async fn admit(&self) -> Result<(), Throttle> {
        if let Some(hour) = &self.hour {
            match hour.take().await.map_err(Throttle::Database)? {
                Taken::Yes => {}
                Taken::No { wait } => {
                    crate::telemetry::metrics::rate_limited("per_hour");
                    return Err(Throttle::HourUsedUp { wait });
                }
            }
        }
        if let Some(pace) = &self.pace {
            if pace.check().is_err() {
                crate::telemetry::metrics::rate_limited("per_second");
                pace.until_ready().await;
            }
        }
        if let Some(second) = &self.second {
            loop {
                match second.take().await.map_err(Throttle::Database)? {
                    Taken::Yes => break,
                    // Other daemons had this second: the next one is at most a second away.
                    Taken::No { wait } => {
                        crate::telemetry::metrics::rate_limited("per_second");
                        tokio::time::sleep(wait.min(Duration::from_secs(1))).await
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the hour has room for a message, without using it: a slot is leased and kept for
    /// the next [`Quota::admit`].
    pub(crate) async fn has_room(&self) -> Result<(), Throttle> {
        let Some(hour) = &self.hour else {
            return Ok(());
        };
        match hour.take().await.map_err(Throttle::Database)? {
            Taken::Yes => {
                hour.lease.lock().await.left += 1;
                Ok(())
            }
            Taken::No { wait } => Err(Throttle::HourUsedUp { wait }),
        }
    }

    /// Gives back the slots leased and not used, at the end of a pass.
    pub(crate) async fn give_back(&self) {
        if let Some(hour) = &self.hour {
            if let Err(e) = hour.give_back().await {
                // Lost slots only mean sending less in this hour.
                tracing::warn!(error = %e, "could not give back unused quota slots");
            }
        }
    }
}

/// A limit counted in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Minute slots, 60 of them summed.
    Hour,
    /// Second slots, one summed.
    Second,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Hour => "hour",
            Scope::Second => "second",
        }
    }

    /// A slot's length.
    fn slot_ms(self) -> i64 {
        match self {
            Scope::Hour => 60_000,
            Scope::Second => 1_000,
        }
    }

    /// How many slots make the window the limit applies to.
    fn window(self) -> i64 {
        match self {
            Scope::Hour => 60,
            Scope::Second => 1,
        }
    }

    /// Slots asked for at once: few enough that a lease lost with a killed process costs little,
    /// enough that the database is asked rarely.
    fn lease_size(self, limit: u32) -> u32 {
        match self {
            Scope::Hour => (limit / 100).clamp(1, 1000),
            Scope::Second => (limit / 4).max(1),
        }
    }
}

struct Shared {
    db: Db,
    scope: Scope,
    limit: u32,
    /// Held while the database is asked, so one process asks once at a time.
    lease: Mutex<Lease>,
}

#[derive(Default)]
struct Lease {
    /// The slot the lease was counted in.
    slot: i64,
    left: u32,
    /// When that slot ends, on this process's monotonic clock.
    until: Option<Instant>,
}

enum Taken {
    Yes,
    No { wait: Duration },
}

impl Shared {
    fn new(db: &Db, scope: Scope, limit: u32) -> Shared {
        Shared {
            db: db.clone(),
            scope,
            limit,
            lease: Mutex::new(Lease::default()),
        }
    }

    async fn take(&self) -> Result<Taken, sqlx::Error> {
        let mut lease = self.lease.lock().await;
        if lease.left > 0 && lease.until.is_some_and(|u| Instant::now() < u) {
            lease.left -= 1;
            return Ok(Taken::Yes);
        }
        // What is left of a lapsed lease was counted in its slot and is not sent: give it back
        // so that the sliding hour does not count it.
        if lease.left > 0 {
            release(&self.db, self.scope, lease.slot, lease.left).await?;
            lease.left = 0;
        }
        let want = self.scope.lease_size(self.limit);
        match grant(&self.db, self.scope, self.limit, want).await? {
            Grant::Given { slot, n, until } => {
                *lease = Lease {
                    slot,
                    left: n - 1,
                    until: Some(until),
                };
                Ok(Taken::Yes)
            }
            Grant::Full { wait } => Ok(Taken::No { wait }),
        }
    }

    async fn give_back(&self) -> Result<(), sqlx::Error> {
        let mut lease = self.lease.lock().await;
        if lease.left > 0 {
            release(&self.db, self.scope, lease.slot, lease.left).await?;
            lease.left = 0;
        }
        Ok(())
    }
}

enum Grant {
    /// `n` slots counted in `slot`, to be used before `until`.
    Given { slot: i64, n: u32, until: Instant },
    /// The window is full; its oldest slot leaves it in `wait`.
    Full { wait: Duration },
}

/// Counts up to `want` messages in the current slot of `scope`, within `limit` for its window.
async fn grant(db: &Db, scope: Scope, limit: u32, want: u32) -> Result<Grant, sqlx::Error> {
    let name = scope.name();
    let mut tx = db.pool().begin().await?;
    let now_ms: i64 = match db.backend() {
        Backend::Postgres => {
            // One grant at a time per scope across every daemon: the sum and the increment below
            // must see each other. Taken before the time is read, so the time is after the wait.
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("avvisi.rate_usage.{name}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query_scalar(
                "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)",
            )
            .fetch_one(&mut *tx)
            .await?
        }
        // SQLite's clock is this machine's; the insert below takes the file's write lock, which
        // serialises grants as the advisory lock does on PostgreSQL.
        Backend::Sqlite => chrono::Utc::now().timestamp_millis(),
    };
    let asked_at = Instant::now();
    let slot = now_ms.div_euclid(scope.slot_ms());
    sqlx::query("INSERT INTO rate_usage (scope, slot, used) VALUES ($1, $2, 0) ON CONFLICT (scope, slot) DO NOTHING")
        .bind(name)
        .bind(slot)
        .execute(&mut *tx)
        .await?;
    let first = slot - scope.window() + 1;
    let used: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(used), 0) AS BIGINT) FROM rate_usage WHERE scope = $1 AND slot >= $2",
    )
    .bind(name)
    .bind(first)
    .fetch_one(&mut *tx)
    .await?;
    let room = i64::from(limit) - used;
    if room <= 0 {
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(slot) FROM rate_usage WHERE scope = $1 AND slot >= $2 AND used > 0",
        )
        .bind(name)
        .bind(first)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let frees_at = (oldest.unwrap_or(slot) + scope.window()) * scope.slot_ms();
        let wait = Duration::from_millis((frees_at - now_ms).max(1) as u64);
        return Ok(Grant::Full { wait });
    }
    let n = room.min(i64::from(want));
    sqlx::query("UPDATE rate_usage SET used = used + $3 WHERE scope = $1 AND slot = $2")
        .bind(name)
        .bind(slot)
        .bind(n)
        .execute(&mut *tx)
        .await?;
    // Slots out of the window count for nothing any more.
    sqlx::query("DELETE FROM rate_usage WHERE scope = $1 AND slot < $2")
        .bind(name)
        .bind(first)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let slot_ends = (slot + 1) * scope.slot_ms();
    Ok(Grant::Given {
        slot,
        n: n as u32,
        until: asked_at + Duration::from_millis((slot_ends - now_ms).max(0) as u64),
    })
}

/// Uncounts `n` slots taken in `slot` and not used.
async fn release(db: &Db, scope: Scope, slot: i64, n: u32) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rate_usage SET used = used - $3 WHERE scope = $1 AND slot = $2 AND used >= $3",
    )
    .bind(scope.name())
    .bind(slot)
    .bind(i64::from(n))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Messages counted against `rate.per_hour` in the last hour, all daemons together (for
/// `avvisi status`).
pub async fn used_last_hour(db: &Db) -> Result<i64, sqlx::Error> {
    let now_ms = match db.backend() {
        Backend::Postgres => {
            sqlx::query_scalar(
                "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)",
            )
            .fetch_one(db.pool())
            .await?
        }
        Backend::Sqlite => chrono::Utc::now().timestamp_millis(),
    };
    let first = now_ms.div_euclid(Scope::Hour.slot_ms()) - Scope::Hour.window() + 1;
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(used), 0) AS BIGINT) FROM rate_usage WHERE scope = 'hour' AND slot >= $1",
    )
    .bind(first)
    .fetch_one(db.pool())
    .await
}
