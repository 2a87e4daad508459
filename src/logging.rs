//! Log setup: tracing with text or JSON lines; the filter is `HOOKWALL_LOG` if set, else
//! `log.level`, and a reload applies a changed `log.level` (the format needs a restart).

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

pub use crate::chain::chain;
use crate::config::{LogConfig, LogFormat, LOG_ENV};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn filter_for(level: &str) -> EnvFilter {
    let spec = std::env::var(LOG_ENV).unwrap_or_else(|_| level.to_owned());
    // Both were checked at config load; fall back to the default rather than go silent.
    EnvFilter::builder()
        .parse(&spec)
        .unwrap_or_else(|_| EnvFilter::new(crate::config::defaults::LOG_LEVEL))
}

/// Installs the global subscriber (once; later calls do nothing). Logs go to stderr
/// through a writer thread, so a request never waits on a write(2); if stderr cannot keep
/// up, lines are dropped rather than requests stalled. Keep the guard until exit: dropping
/// it flushes what is queued.
pub fn init(log: &LogConfig) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let (filter, handle) = reload::Layer::new(filter_for(&log.level));
    if FILTER.set(handle).is_err() {
        return None;
    }
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let result = match log.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    // A request's fields are its span's: once, under "span".
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
    };
    result.ok().map(|()| guard)
}

/// Applies a reloaded `log.level` (unless `HOOKWALL_LOG` decides).
pub fn set_level(level: &str) {
    if let Some(handle) = FILTER.get() {
        let _ = handle.reload(filter_for(level));
    }
}
