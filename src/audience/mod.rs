//! Who qualifies: the audience rules over the snapshot, and the suppression list. Campaigns,
//! which pair an audience with a template, are in [`crate::campaign`].

mod rules;
pub mod suppression;

pub use rules::{Audience, UnknownAudience};
