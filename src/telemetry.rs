//! Logging setup: structured `tracing` events on stderr, level from `-v`/`-q` or `RUST_LOG`.
//! Events carry ids (outbox row, campaign), never names, addresses or secrets.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `verbosity` is -2 (errors) to 2 (trace); 0 is info.
pub fn init(verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},sqlx=warn,lettre=warn,tokio_cron_scheduler=warn"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
