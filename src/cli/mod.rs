//! Owns the command line: every subcommand (serve, check-config, print-config,
//! healthcheck, user, sla, mesh, client, backup), the HTTP client they share
//! ([`remote`]), and the only code that prints results and picks exit codes.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;

pub mod args;
pub mod mesh;
pub mod ops;
pub mod remote;
pub mod serve;
pub mod sla;
pub mod users;

pub use args::{Cli, Command};

/// Exit code for a configuration problem (sysexits' EX_USAGE is 64; 2 is what clap and
/// most daemons use for "bad invocation", so scripts see one code for both).
const EXIT_CONFIG: u8 = 2;
/// Exit code for a database that cannot be used as it is (damaged, or written by a newer
/// release): sysexits' EX_DATAERR. The service units do not restart on it, because a
/// restart loop cannot fix the file and would only fill the log.
pub(crate) const EXIT_DATA: u8 = 65;

/// Runs the command line: loads the config, runs the subcommand, picks the exit code.
pub fn run(cli: Cli) -> ExitCode {
    let loaded = match Config::load(cli.config.as_deref(), std::env::vars(), &cli.overrides()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meteomesh: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = loaded.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::serve(config, loaded.file),
        Command::CheckConfig => {
            match &loaded.file {
                Some(f) => println!("config ok ({})", f.display()),
                None => println!("config ok (defaults and environment; no file)"),
            }
            ExitCode::SUCCESS
        }
        Command::PrintConfig => {
            print!("{}", config.to_redacted_toml());
            ExitCode::SUCCESS
        }
        Command::Healthcheck { timeout } => {
            match ops::healthcheck(&config, Duration::from_secs(timeout.max(1))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("meteomesh: unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Sla { remote, action } => report(sla::run(&remote, action)),
        Command::Mesh { remote, action } => report(mesh::mesh(&remote, action)),
        Command::Client(args) => match mesh::client(args) {
            Ok(out) if out.is_empty() => ExitCode::SUCCESS,
            other => report(other),
        },
        Command::User { action } => report(users::run(&config, action)),
        Command::Backup { file } => match ops::backup(&config, &file) {
            Ok(()) => {
                println!("backup written to {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meteomesh: backup failed: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Prints a subcommand's output, or its error, and picks the exit code.
fn report<E: std::fmt::Display>(result: Result<String, E>) -> ExitCode {
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meteomesh: {e}");
            ExitCode::FAILURE
        }
    }
}
