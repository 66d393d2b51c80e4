//! Rendering: the Tera template set ([`templates`]), the live set of a long-running process
//! ([`live`]), the sets published in the database ([`published`]), the one context builder
//! ([`context`]), the email built from a rendered message ([`email`]), and the daily digest's
//! sections ([`digest`]). `scan` and `syntax` read template syntax without Tera's parser, to
//! explain a broken file in one line (the check and a refused reload say the same).

pub mod context;
pub mod digest;
pub mod email;
pub mod live;
pub mod published;
pub(crate) mod scan;
pub(crate) mod syntax;
pub mod templates;
