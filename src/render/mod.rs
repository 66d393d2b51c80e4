//! Rendering: the Tera template set ([`templates`]), the live set of a long-running process
//! ([`live`]), the sets published in the database ([`published`]), the one context builder ([`context`]), and the email built from a rendered message
//! ([`email`]), and the daily digest's sections ([`digest`]).

pub mod context;
pub mod digest;
pub mod email;
pub mod live;
pub mod published;
pub mod templates;
