//! The template editors' tools: `templates check` (every problem before anything is sent) and
//! `templates preview` (every message rendered as files to open in a browser).
//!
//! - `samples.rs`: the sample recipients ([`SAMPLE_USERS`]) and situations ([`SITUATIONS`]) every
//!   message is rendered with ([`samples()`]), and the context each one gets ([`context()`]). The
//!   check, the preview, the command line and the golden tests share them, so they are
//!   re-exported here.
//! - [`check`]: the check; its submodules hold the scanner of template syntax, the syntax, name
//!   and output checks, and the search for the source line a problem comes from.
//! - [`preview`]: the preview files.

pub mod check;
pub mod diff;
pub mod preview;
mod samples;

pub use samples::{
    context, reopening_messages, samples, Sample, SampleUser, Situation, SAMPLE_USERS, SITUATIONS,
};
