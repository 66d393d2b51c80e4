//! Rendering: the Tera template set, the live set of a long-running process, and the email built
//! from a rendered message.

pub mod email;
pub mod live;
pub mod templates;
