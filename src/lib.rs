//! avvisi: finds Istanze OnLine users with a pending procedure and sends each one a templated
//! Italian reminder before the maintenance deadline, then the reopening notices.
//!
//! How the pieces fit, in the order data flows:
//! - [`config`]: layered settings, checked up front; [`clock`]: the injectable time source.
//! - [`db`]: SQLite or PostgreSQL behind one handle, with embedded migrations.
//! - [`snapshot`] reads and validates the portal's CSV; [`import`] loads it, all or nothing.
//! - [`audience`]: who qualifies for what, as SQL conditions; [`campaign`]: audiences paired with
//!   templates, and the reminder steps of the calendar.
//! - [`planner`] inserts the due rows into the outbox; [`outbox`] is the rows' state machine.
//! - [`worker`] claims rows, renders them with [`templates`], builds the email with [`message`]
//!   and hands it to a [`transport`] (files or SMTP).
//! - [`daemon`] runs the planner on a schedule and the worker continuously; [`template_store`]
//!   keeps the live templates; [`phases`] records lapsed procedures and the reopening.
//! - [`template_check`]: `templates check` (every template rendered with sample data, problems
//!   with file and line); [`preview`]: `templates preview`, the pages template editors look at.
//! - [`cli`] and [`commands`]: the command line on top of all this; [`bench`]: the synthetic
//!   snapshots of `avvisi bench`.

pub mod audience;
pub mod bench;
pub mod campaign;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod db;
pub mod import;
pub mod message;
pub mod outbox;
pub mod phases;
pub mod planner;
pub mod preview;
pub mod snapshot;
pub mod telemetry;
pub mod template_check;
pub mod template_store;
pub mod templates;
pub mod transport;
pub mod worker;
