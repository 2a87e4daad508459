//! The `hookwall` binary: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookwall::cli::{self, exit, send::SendArgs};
use hookwall::config::CONFIG_ENV;

/// A sidecar reverse proxy that lets through only authentic, fresh, new and wanted
/// webhooks (Svix / Standard Webhooks signatures).
#[derive(Debug, Parser)]
#[command(name = "hookwall", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default)
    Run(ConfigArg),
    /// Validate a config, resolve its secrets and print the routing table
    Check(ConfigArg),
    /// Sign a body the way Svix does and POST it
    Send(SendArgs),
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Config file [default: $HOOKWALL_CONFIG, else hookwall.toml]
    #[arg(short, long)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn file(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("hookwall.toml"))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // Help and version are not errors; every usage error exits 1.
            return if err.use_stderr() {
                ExitCode::from(exit::CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let command = cli
        .command
        .unwrap_or(Command::Run(ConfigArg { config: None }));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hookwall: cannot start the runtime: {err}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    match command {
        Command::Check(arg) => cli::check::run(&arg.file()),
        Command::Send(args) => runtime.block_on(cli::send::run(args)),
        Command::Run(arg) => {
            eprintln!("hookwall run: not built yet ({})", arg.file().display());
            ExitCode::from(exit::RUNTIME)
        }
    }
}
