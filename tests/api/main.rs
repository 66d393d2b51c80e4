//! The integration tests: one binary, a module per feature. Each test drives the library's
//! top-level functions or the `avvisi` binary against a real SQLite file and a real PostgreSQL
//! database (see `helpers`), and SMTP delivery against a real TCP server (`testkit::smtp_sink`).

mod helpers;
mod relay;

mod app;
mod audiences;
mod bounces;
mod campaigns;
mod cli;
mod clocks;
mod complaints;
mod console;
mod console_http;
mod console_web;
mod counts;
mod crash;
mod daemon;
mod db_faults;
mod deferrals;
mod delivery;
mod deploy;
mod digest;
mod dkim;
mod editors_met;
mod guarantees;
mod hostile;
mod hostile_cli;
mod import;
mod mutants;
mod observe;
mod plan;
mod provider_refusals;
mod quota;
mod relay_faults;
mod relay_tls;
mod relay_verdicts;
mod scale;
mod synthetic;
mod template_sets;
mod templates;
mod unsubscribe;
mod why_not;
mod workbench;
