//! The `hookwall` binary: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookwall::cli::{self, exit, forget::ForgetArgs, send::SendArgs};
use hookwall::config::{Config, CONFIG_ENV};
use hookwall::Control;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

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
    /// Ask the running proxy to forget a delivered id: the sender's next resend is forwarded
    Forget(ForgetArgs),
    /// Show the whole job on loopback: valid, forged, stale, duplicate and filtered events
    Demo,
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
    // The public listener runs on its own worker threads (server.rs); this runtime only
    // serves the admin listener, signals, `send` and `demo`.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hookwall: cannot start the runtime: {err}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    match command {
        Command::Check(arg) => cli::check::run(&arg.file()),
        Command::Send(args) => runtime.block_on(cli::send::run(args)),
        Command::Forget(args) => runtime.block_on(cli::forget::run(args)),
        Command::Demo => runtime.block_on(cli::demo::run()),
        Command::Run(arg) => runtime.block_on(run(&arg.file())),
    }
}

/// `hookwall run`: load, bind both listeners, turn signals into `Control`, run.
async fn run(file: &std::path::Path) -> ExitCode {
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    // Before logging, which layers traces over the request span when they are exported.
    let dropped = hookwall::metrics::trace_spans_dropped().clone();
    let traces = match hookwall::telemetry::init(&config.telemetry, dropped) {
        Ok(traces) => traces,
        Err(err) => {
            eprintln!("{}", hookwall::logging::chain(&err));
            return ExitCode::from(exit::CONFIG);
        }
    };
    // Held until the end of `run`: dropping it flushes the last log lines (after the
    // traces' last spans, which `traces` sends as it is dropped before it).
    let _log_guard = hookwall::logging::init(&config.log, traces.as_ref().map(|t| t.tracer()));
    let _traces = traces;
    let public = match TcpListener::bind(config.listen.addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(addr = %config.listen.addr, error = %err, "cannot bind listen.addr");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    let admin = match TcpListener::bind(config.admin_addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(addr = %config.admin_addr, error = %err, "cannot bind admin.addr");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    // The bound addresses (port 0 picks one), for people and for tests.
    if let (Ok(public), Ok(admin)) = (public.local_addr(), admin.local_addr()) {
        tracing::info!(%public, %admin, "listening");
    }

    let (control, requests) = mpsc::channel(4);
    let signals = match forward_signals(control) {
        Ok(task) => task,
        Err(err) => {
            tracing::error!(error = %err, "cannot install signal handlers");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    let result = hookwall::run(config, public, admin, requests).await;
    signals.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = hookwall::logging::chain(&err), "stopped");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

/// SIGHUP → reload; SIGTERM → shutdown after `shutdown_delay`; SIGINT → shutdown without
/// it, or ends the delay early (the same signal twice exits at once).
fn forward_signals(control: mpsc::Sender<Control>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let (mut terminated, mut interrupted) = (false, false);
        loop {
            let request = tokio::select! {
                _ = hangup.recv() => Control::Reload,
                _ = terminate.recv() => Control::Shutdown,
                _ = interrupt.recv() => Control::Interrupt,
            };
            let again = match request {
                Control::Shutdown => std::mem::replace(&mut terminated, true),
                Control::Interrupt => std::mem::replace(&mut interrupted, true),
                Control::Reload => false,
            };
            if again {
                tracing::warn!("second shutdown signal: exiting now");
                std::process::exit(i32::from(exit::RUNTIME));
            }
            if control.send(request).await.is_err() {
                return;
            }
        }
    }))
}
