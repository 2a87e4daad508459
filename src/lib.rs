//! hookwall: a sidecar reverse proxy that lets through only webhooks that are authentic,
//! fresh, new and wanted.
//!
//! The request path, by file: `server` (accept, limits, TLS) → `pipeline` (the stages) →
//! `body` (reading it against the budget) → `verify` (a scheme per provider), `dedup`,
//! `route` (pure) → `forward` (a forward's whole life) or `stream` (the entry a stream rule
//! appends); `shadow` runs a route that does not enforce; `request` is what the stages of
//! one request share; `outcome` maps how a request ended to its answer. `store` and
//! `redis` hold the ids (memory, Redis); `tasks` tracks the work that outlives a request;
//! `telemetry` exports traces of it all (nothing, without an endpoint).
//! `config` reads the TOML once into typed values. `deliveries` is the ring of the last
//! requests answered, which `admin` shows (`/deliveries`, the page `/`). `labels` holds
//! the label values that several layers name (outcomes, `_unmatched`, Redis ops) and
//! imports none of them: no two files of `src/` import each other, even through others
//! (CI checks it).

pub mod admin;
pub mod body;
pub mod budget;
pub mod chain;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod deliveries;
pub mod forward;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod in_flight;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod redis;
mod request;
pub mod route;
pub mod secret;
pub mod server;
pub mod shadow;
pub mod sign;
pub mod state;
pub mod store;
pub mod stream;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod verify;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError};
use crate::state::{Live, Shared};
use crate::tls::TlsError;

/// What the process asks of a running proxy (SIGHUP, SIGTERM, SIGINT in `main`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the config file, its secrets and TLS files.
    Reload,
    /// SIGTERM: turn unready at once, keep serving for `shutdown_delay` (Kubernetes is
    /// still routing here for a moment), then stop accepting and drain within
    /// `shutdown_grace`, and return.
    Shutdown,
    /// SIGINT (a person at a terminal): the same without the delay.
    Interrupt,
}

/// Why the proxy stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start")]
    Start(#[from] state::StartError),
    #[error("the public listener stopped serving")]
    Serve(#[from] server::ServeError),
}

/// Why a reload was refused (the old config keeps serving).
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    /// Every problem of the file, one a line, as `check` lists them.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the config again failed (its thread ended early)")]
    Read(#[source] tokio::task::JoinError),
    #[error("listen.tls_cert and listen.tls_key cannot be read again")]
    ListenTls(#[source] TlsError),
    #[error("stream rules need the [redis] section this process started with; restart")]
    StreamsWithoutRedis,
    /// A route's CA bundle that went away since the config was checked.
    #[error("the upstream clients cannot be made")]
    Clients(#[source] TlsError),
}

/// Runs the proxy on already-bound listeners until `Control::Shutdown` (or the control
/// channel closes). Tests bind port 0 and drive this same function. If the public
/// listener stops serving on its own, the proxy turns unready and returns the error (the
/// binary exits 2, and Kubernetes restarts it).
pub async fn run(
    config: Config,
    public: TcpListener,
    admin: TcpListener,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), RunError> {
    let shared = Arc::new(Shared::new(config)?);
    // Both listeners are bound. Ready before the acceptor starts, so that a listener that
    // fails at once (the acceptor then turns it unready) cannot be made ready after.
    shared.ready.store(true, Ordering::Release);
    // The admin side's Redis link (forget) is driven by this runtime, which serves it.
    if let Some(redis) = &shared.store.redis {
        redis.start_admin();
    }
    let admin_task = tokio::spawn(admin::serve(admin, shared.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(server::serve(public, shared.clone(), async {
        let _ = stopped.await;
    }));
    {
        let live = shared.live();
        tracing::info!(
            listen = %live.config.listen.addr,
            admin = %live.config.admin_addr,
            routes = live.config.routes.len(),
            workers = shared.workers(),
            "hookwall ready"
        );
        warn_of_shadow_routes(&live.config);
    }

    let signal = loop {
        tokio::select! {
            signal = control.recv() => match signal {
                Some(Control::Reload) => reload(&shared).await,
                other => break other,
            },
            ended = &mut server => {
                shared.ready.store(false, Ordering::Release);
                let err = match ended {
                    Ok(Err(err)) => err,
                    // Ended without an error, or panicked: it stopped all the same.
                    Ok(Ok(())) | Err(_) => server::ServeError::NoWorkers,
                };
                tracing::error!(
                    error = logging::chain(&err),
                    "the public listener stopped serving: unready, and exiting"
                );
                admin_task.abort();
                return Err(RunError::Serve(err));
            }
        }
    };

    shared.ready.store(false, Ordering::Release);
    let delay = shared.live().limits().shutdown_delay;
    if signal == Some(Control::Shutdown) && !delay.is_zero() {
        tracing::info!(
            delay = ?delay,
            "shutting down: unready now, still serving new connections for shutdown_delay"
        );
        // A SIGINT meanwhile ends the delay early; reloads wait for the next process.
        let interrupted = async {
            while let Some(signal) = control.recv().await {
                if signal == Control::Interrupt {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = interrupted => {}
        }
    }
    tracing::info!("shutting down: no new connections; draining");
    let _ = stop.send(());
    let _ = server.await;
    admin_task.abort();
    tracing::info!("stopped");
    Ok(())
}

/// A shadow route protects nothing: said at start, for each.
fn warn_of_shadow_routes(config: &Config) {
    for route in config.routes.iter().filter(|route| !route.enforce) {
        tracing::warn!(
            route = &*route.name,
            "shadow mode (enforce = false): every request is forwarded with the verdict \
             enforcing would give; this route protects nothing"
        );
    }
}

/// Loads the config file again, secrets and TLS files included. A config that fails is
/// refused and nothing changes, the log level included; what needs a restart keeps its
/// old value. The files are read on a blocking thread: this runtime serves the admin
/// listener, whose probes must not wait for a slow volume.
async fn reload(shared: &Arc<Shared>) {
    let again = shared.clone();
    let loaded = tokio::task::spawn_blocking(move || load_again(&again))
        .await
        .map_err(ReloadError::Read)
        .and_then(|loaded| loaded);
    match loaded {
        Ok(lives) => {
            let routes = lives.first().map_or(0, |l| l.config.routes.len());
            if let Some(live) = lives.first() {
                logging::set_level(&live.config.log.level);
            }
            shared.swap(lives);
            shared.metrics.reload(true);
            tracing::info!(routes, "config reloaded");
        }
        Err(err) => {
            for problem in logging::chain(&err).lines() {
                tracing::error!(
                    problem,
                    "config reload refused; the old config keeps serving"
                );
            }
            shared.metrics.reload(false);
        }
    }
}

/// The config as the file says now, with what needs a restart kept as it was, or why it
/// cannot be used. Blocking: it reads files.
fn load_again(shared: &Shared) -> Result<Vec<Live>, ReloadError> {
    let old = shared.live();
    let mut new = Config::load(&old.config.file)?;

    let was = &old.config;
    let same_tls_files = match (&was.listen.tls, &new.listen.tls) {
        (None, None) => true,
        (Some(a), Some(b)) => a.cert == b.cert && a.key == b.key,
        _ => false,
    };
    if new.listen.addr != was.listen.addr
        || new.listen.trust_forwarded_headers != was.listen.trust_forwarded_headers
        || !same_tls_files
    {
        tracing::warn!(
            "listen.* changed: takes effect at the next restart; keeping the old values"
        );
        let mut listen = was.listen.clone();
        // Same files as before, read again: a rotated certificate still takes effect.
        if let Some(tls) = &mut listen.tls {
            tls.server =
                tls::load_server_config(&tls.cert, &tls.key).map_err(ReloadError::ListenTls)?;
        }
        new.listen = listen;
    }
    if new.admin_addr != was.admin_addr {
        tracing::warn!("admin.addr changed: takes effect at the next restart");
        new.admin_addr = was.admin_addr;
    }
    if new.log.format != was.log.format {
        tracing::warn!("log.format changed: takes effect at the next restart");
        new.log.format = was.log.format;
    }
    if new.telemetry != was.telemetry {
        tracing::warn!("[telemetry] changed: takes effect at the next restart");
        new.telemetry = was.telemetry.clone();
    }
    if new.redis != was.redis || new.dedup.store != was.dedup.store {
        tracing::warn!(
            "[redis] or dedup.store changed: takes effect at the next restart; keeping the old values"
        );
        new.redis = was.redis.clone();
        new.dedup.store = was.dedup.store;
        let streams = new.routes.iter().flat_map(|route| &route.rules.0);
        if new.redis.is_none()
            && streams
                .into_iter()
                .any(|rule| matches!(rule.action, route::Action::Stream(_)))
        {
            return Err(ReloadError::StreamsWithoutRedis);
        }
    }
    if new.limits.workers != was.limits.workers {
        tracing::warn!("limits.workers changed: takes effect at the next restart");
        new.limits.workers = was.limits.workers;
    }
    shared.lives_for(new).map_err(ReloadError::Clients)
}
