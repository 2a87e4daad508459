//! OpenTelemetry traces (contract §12): with an endpoint (`[telemetry] otlp_endpoint`, or
//! the SDK's own `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, which
//! win), `init` makes the exporter: OTLP/HTTP protobuf (`opentelemetry-otlp`) over
//! hookwall's own HTTP client (`client`), behind the SDK's batch processor with its drops
//! counted (`export`); `main` hands its tracer to `logging`, which layers
//! `tracing-opentelemetry` over the request span. Without an endpoint none of this exists:
//! no exporter, no layer, and the request path's calls (`spans`) return at once (`on`).

mod client;
mod export;
mod spans;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::Layer;
use tracing_subscriber::registry::LookupSpan;

pub use spans::{
    answered, append, append_ended, inject, received, secret_index, trace_id, upstream,
    upstream_ended,
};

use crate::config::Telemetry;
use crate::route::{Upstream, UpstreamError};

/// The name of the request's span (`pipeline::handle`), which the logs know it by.
const REQUEST_SPAN: &str = "request";

/// Set once, when `init` made an exporter: every request asks (`on`).
static ON: AtomicBool = AtomicBool::new(false);

/// Spans waiting to be sent, most: past it a span is dropped (and counted), never waited
/// for. The SDK's default; `OTEL_BSP_MAX_QUEUE_SIZE` sets it.
const QUEUE: usize = 2048;

/// One attempt to send a batch, the SDK's default; `OTEL_EXPORTER_OTLP_TIMEOUT` (or
/// `_TRACES_TIMEOUT`), in milliseconds, sets it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// At exit, how long the spans still queued have to be sent: a collector that is down
/// must not hold the exit up past Kubernetes' grace period.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// Whether traces are exported: false unless `init` made an exporter.
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{name} is not an OTLP/HTTP endpoint")]
    Endpoint {
        /// The key or variable that gave it.
        name: &'static str,
        #[source]
        source: UpstreamError,
    },
    #[error("the OTLP client cannot be made")]
    Client(#[source] std::io::Error),
    #[error("the OTLP exporter cannot be made")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// The exporter while the process runs; dropped, it sends what is queued (for at most
/// `FLUSH_AT_EXIT`).
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// What the `tracing-opentelemetry` layer records spans with.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("hookwall")
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        ON.store(false, Ordering::Relaxed);
        let _ = self.provider.shutdown_with_timeout(FLUSH_AT_EXIT);
    }
}

/// The exporter `config` and the `OTEL_*` variables ask for, or `None` without an
/// endpoint. Spans lost on the way count in `dropped`.
pub fn init(
    config: &Telemetry,
    dropped: prometheus::IntCounter,
) -> Result<Option<Traces>, TelemetryError> {
    init_with(config, dropped, |name| {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    })
}

/// `init`, with the environment read through `env` (set variables only).
fn init_with(
    config: &Telemetry,
    dropped: prometheus::IntCounter,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Traces>, TelemetryError> {
    let Some((name, url)) = endpoint(config, &env) else {
        return Ok(None);
    };
    let collector =
        Upstream::parse(&url).map_err(|source| TelemetryError::Endpoint { name, source })?;
    let timeout = [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .into_iter()
    .find_map(|name| env(name)?.trim().parse().ok())
    .map_or(EXPORT_TIMEOUT, Duration::from_millis);
    let client = client::Collector::new(collector, timeout).map_err(TelemetryError::Client)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(TelemetryError::Exporter)?;
    let queue = env("OTEL_BSP_MAX_QUEUE_SIZE")
        .and_then(|size| size.trim().parse().ok())
        .unwrap_or(QUEUE);
    let mut provider = SdkTracerProvider::builder()
        .with_span_processor(export::Counted::new(exporter, queue, dropped))
        .with_resource(resource(config, &env));
    // Else the SDK has read OTEL_TRACES_SAMPLER (and its _ARG) itself.
    if env("OTEL_TRACES_SAMPLER").is_none() {
        let ratio = Sampler::TraceIdRatioBased(config.sample_ratio);
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(ratio)));
    }
    ON.store(true, Ordering::Relaxed);
    Ok(Some(Traces {
        provider: provider.build(),
    }))
}

/// Where spans go, and the key or variable that said so: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
/// as it is, else `OTEL_EXPORTER_OTLP_ENDPOINT` or `telemetry.otlp_endpoint` with
/// `/v1/traces` after it (the OTLP/HTTP rule for a base URL).
fn endpoint(
    config: &Telemetry,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    const TRACES: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    const BASE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    if let Some(url) = env(TRACES) {
        return Some((TRACES, url.trim().to_owned()));
    }
    let (name, base) = match env(BASE) {
        Some(base) => (BASE, base),
        None => ("telemetry.otlp_endpoint", config.otlp_endpoint.clone()?),
    };
    Some((
        name,
        format!("{}/v1/traces", base.trim().trim_end_matches('/')),
    ))
}

/// `service.name` from `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` (the SDK reads
/// both), else `telemetry.service_name`; `service.version`, this build's.
fn resource(config: &Telemetry, env: &impl Fn(&str) -> Option<String>) -> Resource {
    let named_by_env = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim_start().starts_with("service.name="))
        });
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named_by_env {
        resource = resource.with_service_name(config.service_name.clone());
    }
    resource.build()
}

/// The `tracing-opentelemetry` layer: it sees only the spans meant for traces (the
/// request span, and the CLIENT spans, which declare `otel.kind`), never events, and
/// records nothing it is not asked for (no code location, thread or busy/idle time). A
/// span's context is made when asked for (`trace_id`, a child span) or at its end, not on
/// every poll of the request's future.
pub fn layer<S>(tracer: SdkTracer) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let traced = filter_fn(|meta| {
        meta.is_span()
            && meta.target().starts_with("hookwall")
            && (meta.name() == REQUEST_SPAN || meta.fields().field("otel.kind").is_some())
    })
    .with_max_level_hint(LevelFilter::INFO);
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(traced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn telemetry(endpoint: Option<&str>) -> Telemetry {
        Telemetry {
            otlp_endpoint: endpoint.map(str::to_owned),
            service_name: "hookwall".into(),
            sample_ratio: 1.0,
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn the_variables_win_over_the_file() {
        let file = telemetry(Some("http://file:4318/"));
        assert_eq!(
            endpoint(&file, &env(&[])),
            Some((
                "telemetry.otlp_endpoint",
                "http://file:4318/v1/traces".into()
            ))
        );
        let base = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")]);
        assert_eq!(
            endpoint(&file, &base),
            Some((
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://env:4318/v1/traces".into()
            ))
        );
        let traces = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom",
            ),
        ]);
        assert_eq!(
            endpoint(&telemetry(None), &traces),
            Some((
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom".into()
            ))
        );
        assert_eq!(endpoint(&telemetry(None), &env(&[])), None);
    }

    #[test]
    fn without_an_endpoint_nothing_is_made() {
        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        let traces = init_with(&telemetry(None), dropped, env(&[])).unwrap();
        assert!(traces.is_none());
        assert!(!on());
    }

    #[test]
    fn a_bad_endpoint_names_where_it_came_from() {
        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        let bad = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
        let Err(err) = init_with(&telemetry(None), dropped, bad) else {
            panic!("not a URL");
        };
        assert!(
            err.to_string().starts_with("OTEL_EXPORTER_OTLP_ENDPOINT "),
            "{err}"
        );
    }

    #[test]
    fn the_service_is_named_by_the_environment_first() {
        let name = |env: &dyn Fn(&str) -> Option<String>| {
            let resource = resource(&telemetry(None), &env);
            resource
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|v| v.to_string())
        };
        assert_eq!(name(&env(&[])).as_deref(), Some("hookwall"));
        let attributes = env(&[("OTEL_RESOURCE_ATTRIBUTES", "team=a, service.name=x")]);
        assert_ne!(name(&attributes).as_deref(), Some("hookwall"));
    }
}
