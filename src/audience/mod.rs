//! Who qualifies: the audience rules over the snapshot, the suppression list, and the opt-outs
//! of the streams that offer an unsubscribe ([`optout`]). Campaigns,
//! which pair an audience with a template, are in [`crate::campaign`].

pub mod optout;
mod rules;
pub mod suppression;

pub use rules::{Audience, UnknownAudience};
