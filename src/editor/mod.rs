//! The template editors' tools: `templates check` (every problem before anything is sent) and
//! `templates preview` (every message rendered as files to open in a browser).

pub mod check;
pub mod preview;
