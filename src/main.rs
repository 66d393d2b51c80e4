//! The `avvisi` binary: parse the command line, set up logging, load configuration, run.

use std::process::ExitCode;

use clap::Parser;

use avvisi::cli::Cli;
use avvisi::clock::Clock;
use avvisi::config::{ConfigError, Settings};
use avvisi::telemetry::printable_lines;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Configuration first: logging follows its `log` settings, and a bad configuration is
    // reported before anything else runs.
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            // Errors quote values and files from outside: escaped for the terminal.
            eprintln!("error: {}", printable_lines(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    avvisi::telemetry::init(cli.verbose as i8 - cli.quiet as i8, &settings.log);
    match avvisi::cli::run(cli.command, cli.json, settings, Clock::system()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", printable_lines(&avvisi::cli::error_report(&e)));
            // A configuration problem found late (the relay's password file, read only by the
            // commands that connect to the relay) is still one: restarting cannot fix it.
            if e.chain().any(|cause| cause.is::<ConfigError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
