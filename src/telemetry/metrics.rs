//! The metrics recorded in memory by the running process, by name, and the Prometheus recorder
//! that holds them. Counts of messages are not here: they are read from the outbox at each
//! scrape (`crate::observe::metrics`), so a restart loses none of them.
//!
//! Each recording goes through the `metrics` facade: without an installed recorder (every
//! command but the daemon) it costs nothing.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Time to hand one message to the relay (or write its file), up to the relay's reply.
pub const SEND_SECONDS: &str = "avvisi_send_duration_seconds";
/// Relay replies to messages, by class: `2xx`, `4xx`, `5xx`, or `none` (no reply: the
/// connection failed or timed out).
pub const RELAY_REPLIES: &str = "avvisi_relay_replies_total";
/// Planner ticks by outcome (`planned`, `skipped_busy`, `skipped_taken`, `failed`).
pub const PLANNER_TICKS: &str = "avvisi_planner_ticks_total";
/// Duration of the planner ticks that planned.
pub const PLANNER_TICK_SECONDS: &str = "avvisi_planner_tick_duration_seconds";
/// Sends that waited for a rate limit, by `limit` (`per_second`; `per_hour` when the hourly
/// quota sent the rest back to the queue).
pub const RATE_LIMIT_WAITS: &str = "avvisi_rate_limit_waits_total";
/// 1 for the template digest this process renders with; 0 for the ones it replaced.
pub const TEMPLATES_LIVE: &str = "avvisi_templates_live_info";

/// Upper bounds of the send latency buckets, in seconds: a local relay answers in milliseconds,
/// a slow one in seconds; `smtp.timeout_seconds` is 30.
const SEND_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
const TICK_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(SEND_SECONDS.into()), &SEND_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(PLANNER_TICK_SECONDS.into()),
                        &TICK_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder already installed (a test harness's): this handle then renders
            // nothing of the facade's recordings, which tests would notice at once.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_histogram!(
        SEND_SECONDS,
        metrics::Unit::Seconds,
        "Time to hand one message to the relay, up to its reply"
    );
    describe_counter!(RELAY_REPLIES, "Relay replies to messages, by class");
    describe_counter!(PLANNER_TICKS, "Planner ticks, by outcome");
    describe_histogram!(
        PLANNER_TICK_SECONDS,
        metrics::Unit::Seconds,
        "Duration of the planner ticks that planned"
    );
    describe_counter!(
        RATE_LIMIT_WAITS,
        "Sends held back by a rate limit, by limit"
    );
    describe_gauge!(
        TEMPLATES_LIVE,
        "1 for the live template set's digest, 0 for the sets it replaced"
    );
}

/// One message handed to the relay: how long it took and the reply's class.
pub fn sent(elapsed: Duration, code: Option<u16>) {
    histogram!(SEND_SECONDS).record(elapsed.as_secs_f64());
    let class = match code.map(|c| c / 100) {
        Some(2) => "2xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        Some(_) => "other",
        None => "none",
    };
    counter!(RELAY_REPLIES, "class" => class).increment(1);
}

/// A planner tick ended with `outcome`; `elapsed` only for ticks that ran.
pub fn planner_tick(outcome: &'static str, elapsed: Option<Duration>) {
    counter!(PLANNER_TICKS, "outcome" => outcome).increment(1);
    if let Some(e) = elapsed {
        histogram!(PLANNER_TICK_SECONDS).record(e.as_secs_f64());
    }
}

/// A send waited for (or was sent back by) the rate limit `limit`.
pub fn rate_limited(limit: &'static str) {
    counter!(RATE_LIMIT_WAITS, "limit" => limit).increment(1);
}

/// `digest` is live now; `replaced` was.
pub fn templates_live(digest: &str, replaced: Option<&str>) {
    if let Some(old) = replaced {
        gauge!(TEMPLATES_LIVE, "digest" => old.to_string()).set(0.0);
    }
    gauge!(TEMPLATES_LIVE, "digest" => digest.to_string()).set(1.0);
}
