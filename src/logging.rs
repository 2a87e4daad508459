//! Log setup: tracing with text or JSON lines; the filter is `HOOKWALL_LOG` if set, else
//! `log.level`, and a reload applies a changed `log.level` (the format needs a restart).

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use opentelemetry_sdk::trace::SdkTracer;
use tracing::Subscriber;
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

pub use crate::chain::chain;
use crate::config::{LogConfig, LogFormat, LOG_ENV};
use crate::telemetry;

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
///
/// With `tracer` (traces are exported: `telemetry`), the log filter becomes the log
/// layer's own and the `tracing-opentelemetry` layer sees the request spans whatever the
/// log level; without, the subscriber is the one it always was: no layer, no cost.
pub fn init(
    log: &LogConfig,
    tracer: Option<SdkTracer>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let (filter, handle) = reload::Layer::new(filter_for(&log.level));
    if FILTER.set(handle).is_err() {
        return None;
    }
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let registry = tracing_subscriber::registry();
    let result = match (log.format, tracer) {
        (LogFormat::Text, None) => registry.with(filter).with(text(ansi, writer)).try_init(),
        (LogFormat::Json, None) => registry.with(filter).with(json(writer)).try_init(),
        (LogFormat::Text, Some(tracer)) => registry
            .with(text(ansi, writer).with_filter(filter))
            .with(telemetry::layer(tracer))
            .try_init(),
        (LogFormat::Json, Some(tracer)) => registry
            .with(json(writer).with_filter(filter))
            .with(telemetry::layer(tracer))
            .try_init(),
    };
    result.ok().map(|()| guard)
}

/// Log lines as text.
fn text<S>(ansi: bool, writer: NonBlocking) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer)
}

/// Log lines as JSON objects.
fn json<S>(writer: NonBlocking) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        // A request's fields are its span's: once, under "span".
        .with_span_list(false)
        .with_writer(writer)
}

/// Applies a reloaded `log.level` (unless `HOOKWALL_LOG` decides).
pub fn set_level(level: &str) {
    if let Some(handle) = FILTER.get() {
        let _ = handle.reload(filter_for(level));
    }
}
