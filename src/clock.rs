//! The process-wide clock. Everything that asks "what time is it" goes through [`Clock`], so that
//! tests and `--now` can run the calendar at any instant without depending on today's date.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// A cheap, cloneable handle on the time source.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    /// The machine's clock.
    System,
    /// Real time shifted so that it started at a chosen instant (`--now` for the daemon).
    Shifted(Duration),
    /// Time that moves only when told to (tests, `run --once --now`).
    Manual(Mutex<DateTime<Utc>>),
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System))
    }

    /// A clock that reads `start` now and then flows with real time.
    pub(crate) fn starting_at(start: DateTime<Utc>) -> Clock {
        Clock(Arc::new(Source::Shifted(start - Utc::now())))
    }

    /// A clock stopped at `at`, moved only by [`Clock::set`] and [`Clock::advance`].
    pub fn manual(at: DateTime<Utc>) -> Clock {
        Clock(Arc::new(Source::Manual(Mutex::new(at))))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &*self.0 {
            Source::System => Utc::now(),
            Source::Shifted(offset) => Utc::now() + *offset,
            Source::Manual(at) => *at.lock().expect("clock lock"),
        }
    }

    /// Moves a manual clock to `at`. Panics on other clocks: only tests move time.
    pub fn set(&self, at: DateTime<Utc>) {
        match &*self.0 {
            Source::Manual(t) => *t.lock().expect("clock lock") = at,
            _ => panic!("only a manual clock can be set"),
        }
    }

    /// Moves a manual clock forward.
    pub fn advance(&self, by: Duration) {
        let now = self.now();
        self.set(now + by);
    }
}
