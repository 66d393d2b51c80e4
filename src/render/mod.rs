//! Rendering: the Tera template set ([`templates`]), the live set of a long-running process
//! ([`live`]), the one context builder ([`context`]), and the email built from a rendered message
//! ([`email`]), and the daily digest's sections ([`digest`]). `scan` and `syntax` read template
//! syntax without Tera's parser, to explain a broken file in one line (the check and a refused
//! reload say the same).

pub mod context;
pub mod digest;
pub mod email;
pub mod live;
pub(crate) mod scan;
pub(crate) mod syntax;
pub mod templates;
