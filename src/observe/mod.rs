//! What an operator watches: the daemon's HTTP endpoints and what they show.
//!
//! - [`health`]: what the running daemon knows of itself (the relay's last verdict, the live
//!   templates) and the readiness checks of `/readyz`.
//! - [`metrics`]: the gauges read from the database at each scrape of `/metrics` (messages by
//!   campaign and state, the queue, the snapshot's age), next to the in-memory ones of
//!   [`crate::telemetry::metrics`].
//! - [`chart`]: sends per hour as an SVG chart (status page, HTML report).
//! - [`holds`]: what keeps due messages from going out now, in English and in Italian.
//! - [`page`]: the status page at `/`, and the HTML report.
//! - [`http`]: the axum server that ties them together.

pub mod chart;
pub mod health;
pub mod holds;
pub mod http;
pub mod metrics;
pub mod page;
