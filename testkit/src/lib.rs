//! What the integration tests (`tests/api/`) and the pipeline benchmark (`benches/pipeline/`)
//! share, so that neither includes the other's files: a dev-dependency of the root package only.
//!
//! - [`smtp_sink`]: the in-process SMTP server (faults for the tests, a counting mode for the
//!   benchmark);
//! - [`smtp`]: the settings that point avvisi at a relay;
//! - [`synthetic`]: the benchmark's synthetic population (its tests are `tests/api/synthetic.rs`);
//! - [`postgres`]: a throwaway PostgreSQL database, dropped with its guard;
//! - [`postfix`]: a private Postfix instance in a folder of its own (the tests' TLS relay, the
//!   benchmark's discarding one);
//! - [`process`]: a spawned `avvisi` with a timeout, SIGTERM, and waiting for a condition with a
//!   deadline.

pub mod postfix;
pub mod postgres;
pub mod process;
pub mod smtp;
pub mod smtp_sink;
pub mod synthetic;
