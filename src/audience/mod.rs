//! Who gets what: the audience rules over the snapshot, the campaigns that pair an audience with a
//! template, the steps of the calendar, and the service's phases (lapses and the reopening).

pub mod calendar;
pub mod campaign;
pub mod explain;
pub mod lifecycle;
pub mod phases;
mod rules;
pub mod suppression;
pub mod why_not;

pub use rules::{Audience, UnknownAudience};
