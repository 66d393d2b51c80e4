//! avvisi: finds Istanze OnLine users with a pending procedure and sends each one a templated
//! Italian reminder before the maintenance deadline, then the reopening notices.
//!
//! The stages, in the order data flows; each imports only from the ones above it:
//! - [`config`]: layered settings, checked up front; [`clock`]: the injectable time source;
//!   [`telemetry`]: logging.
//! - [`store`]: SQLite or PostgreSQL behind one handle, the state types that cross into it, and
//!   the queue counts.
//! - [`import`]: the portal's CSV snapshot read and validated, then loaded all or nothing.
//! - [`audience`]: who qualifies (the SQL rules, the one list of audiences), and the suppression
//!   list.
//! - [`campaign`]: campaigns and their lifecycle, the calendar's steps, and the service's phases
//!   (lapses, reopening).
//! - [`explain`]: why a user gets, or does not get, an email: their row, their messages, and a
//!   verdict per campaign.
//! - [`plan`]: what is due now becomes outbox rows.
//! - [`render`]: the template set, the live set of a running process, the one context builder,
//!   and the email itself.
//! - [`deliver`]: claim rows, render, send through a transport (files or SMTP), record outcomes;
//!   the worker ([`deliver::Worker`]) runs one pass at a time.
//! - [`observe`]: what operators watch: readiness, the outbox's gauges, the status page and the
//!   HTML report, served over HTTP by the daemon.
//! - [`bounce`]: returned mail read back: bounces recorded, linked to their messages, and the
//!   suppression list kept (the list itself is the audience's: [`audience::suppression`]).
//! - [`editor`]: the template editors' tools: sample data, the check, the preview.
//! - [`app`]: the application layer: one [`app::App`] opened from the settings, one function
//!   per use case, each returning a report that serialises to JSON; who may do what
//!   ([`app::Actor::may`]) and the audit row each change writes in its own transaction.
//! - [`console`]: the browser console: login, sessions, the campaigns' buttons for the
//!   signed-in role, the approval and the audit log, each calling the [`app`] functions.
//! - [`daemon`]: the daemon: planning on a schedule, delivering continuously, serving HTTP, and
//!   the shutdown.
//! - [`cli`]: the command line: one file per command, which parses, calls the above and prints.

pub mod clock;
pub mod config;
pub mod telemetry;

pub mod store;

pub mod import;

pub mod audience;
pub mod campaign;
pub mod explain;

pub mod plan;

pub mod render;

pub mod deliver;

pub mod bounce;
pub mod observe;

pub mod editor;

pub mod app;
pub mod console;

pub mod daemon;

pub mod cli;
