//! Prometheus metrics: one `Metrics` owning its registry, every metric of the contract
//! registered at startup. Per-route handles are resolved once per config load
//! (`RouteMetrics`), so the request path does no label hashing except for event types.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::labels::{Outcome, RedisOp};
use crate::route::EventType;

/// Most distinct event types counted per route; the rest count as `_other`.
pub const MAX_EVENT_TYPES_PER_ROUTE: usize = 256;

/// How an upstream answered: the `class` label of `hookwall_upstream_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamClass {
    Status(u16),
    Error,
    Timeout,
}

impl UpstreamClass {
    /// The `class` labels, in the order of `index`.
    const LABELS: [&'static str; 6] = ["2xx", "3xx", "4xx", "5xx", "error", "timeout"];

    fn index(self) -> usize {
        match self {
            UpstreamClass::Status(s) if s < 300 => 0,
            UpstreamClass::Status(s) if s < 400 => 1,
            UpstreamClass::Status(s) if s < 500 => 2,
            UpstreamClass::Status(_) => 3,
            UpstreamClass::Error => 4,
            UpstreamClass::Timeout => 5,
        }
    }
}

/// The `result` labels of `hookwall_redis_commands_total`.
const REDIS_RESULTS: [&str; 3] = ["ok", "error", "timeout"];

/// 100 µs to 1 s: Redis answers in-cluster in well under a millisecond.
const REDIS_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// `hookwall_redis_*`, registered only with a `[redis]` section; series resolved once.
#[derive(Clone)]
pub struct RedisMetrics {
    pub up: IntGauge,
    /// A new primary found after a failover (the sentinels named another node, or a
    /// cluster replica took over slots).
    pub primary_changes: IntCounter,
    commands: [[IntCounter; 3]; RedisOp::ALL.len()],
    duration: [Histogram; RedisOp::ALL.len()],
}

impl RedisMetrics {
    pub fn command(&self, op: RedisOp, result: &str) {
        if let Some(i) = REDIS_RESULTS.iter().position(|r| *r == result) {
            self.commands[op as usize][i].inc();
        }
    }

    pub fn observe(&self, op: RedisOp, took: std::time::Duration) {
        self.duration[op as usize].observe(took.as_secs_f64());
    }
}

/// 1 ms to 10 s.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Signed, −300 s to +300 s: webhook-timestamp − now.
const SKEW_BUCKETS: [f64; 15] = [
    -300.0, -120.0, -60.0, -30.0, -10.0, -5.0, -1.0, 0.0, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_responses: IntCounterVec,
    events: IntCounterVec,
    pub dedup_entries: IntGauge,
    evicted_for_capacity: IntCounter,
    evicted_expired: IntCounter,
    pub in_flight_requests: IntGauge,
    pub buffered_body_bytes: IntGauge,
    config_reloads: IntCounterVec,
    secret_matches: IntCounterVec,
    clock_skew: HistogramVec,
    last_verified: GaugeVec,
    dedup_fallbacks: IntCounterVec,
    dedup_forgotten: IntCounterVec,
    shadow_verdicts: IntCounterVec,
    /// Per route, the event-type counters made so far (bounded), kept across reloads.
    event_types: Mutex<HashMap<String, Arc<EventCounters>>>,
}

/// One route's `hookwall_events_total` series, by event type, at most
/// `MAX_EVENT_TYPES_PER_ROUTE` of them (then `_other`). Read-locked on the common path.
pub struct EventCounters {
    known: RwLock<HashMap<String, IntCounter>>,
    none: IntCounter,
    invalid: IntCounter,
    other: IntCounter,
}

/// The series of one route, resolved once. Each worker holds its own copy, aligned to a
/// cache line so that its reference count never shares one with another worker's.
#[derive(Clone)]
#[repr(align(64))]
pub struct RouteMetrics {
    route: String,
    requests: [IntCounter; Outcome::COUNT],
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    upstream_responses: [IntCounter; 6],
    pub clock_skew: Histogram,
    pub last_verified: Gauge,
    secret_matches: Vec<IntCounter>,
    events: Arc<EventCounters>,
    /// Decisions taken by local memory because Redis was unreachable.
    pub dedup_fallbacks: IntCounter,
    /// A shadow route's verdicts, by outcome (empty for a route that enforces).
    shadow_verdicts: Vec<IntCounter>,
}

impl RouteMetrics {
    pub fn request(&self, outcome: Outcome) {
        // `ALL` lists every variant in declaration order, and the array has one counter
        // for each.
        self.requests[outcome as usize].inc();
    }

    pub fn upstream_response(&self, class: UpstreamClass) {
        self.upstream_responses[class.index()].inc();
    }

    /// A shadow route's request: what enforcing would have answered.
    pub fn shadow_verdict(&self, verdict: Outcome) {
        if let Some(counter) = self.shadow_verdicts.get(verdict as usize) {
            counter.inc();
        }
    }

    /// Counts every secret the request carried a valid signature for (bit i = secret i).
    pub fn secrets_matched(&self, matched: crate::verify::Matched) {
        for (i, counter) in self.secret_matches.iter().enumerate() {
            if matched.has(i) {
                counter.inc();
            }
        }
    }
}

/// Registers `collector` in `registry`: every name here is a unique, valid constant.
fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counters = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    register(registry, counters)
}

fn histograms(
    registry: &Registry,
    (name, help): (&str, &str),
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(
        registry,
        HistogramVec::new(opts, labels).expect("a valid metric"),
    )
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let gauges = GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    register(registry, gauges)
}

/// `hookwall_dedup_fallbacks_total` and `hookwall_dedup_forgotten_total`, by route.
fn dedup_counters(registry: &Registry) -> (IntCounterVec, IntCounterVec) {
    let fallbacks = counters(
        registry,
        "hookwall_dedup_fallbacks_total",
        "Dedup decisions taken by this process's memory because Redis was \
         unreachable (on_store_error = \"local\").",
        &["route"],
    );
    let forgotten = counters(
        registry,
        "hookwall_dedup_forgotten_total",
        "Ids forgotten by an operator (POST /dedup/forget).",
        &["route"],
    );
    (fallbacks, forgotten)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("a valid metric"))
}

/// `hookwall_build_info{version}` = 1.
fn build_info(registry: &Registry) {
    let info = IntGaugeVec::new(
        Opts::new("hookwall_build_info", "Always 1; the version as a label."),
        &["version"],
    )
    .expect("a valid metric");
    register(registry, info)
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
}

/// `hookwall_trace_spans_dropped_total`: spans the exporter could not queue or send. One
/// counter for the process, as the exporter is (`telemetry::init`, made before any
/// `Metrics`); each `Metrics` registers it.
pub fn trace_spans_dropped() -> &'static IntCounter {
    static DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
        IntCounter::new(
            "hookwall_trace_spans_dropped_total",
            "Spans the trace exporter could not queue or send (section 12).",
        )
        .expect("a valid metric")
    });
    &DROPPED
}

/// `hookwall_config_reloads_total`, both results at 0 from the start.
fn config_reloads(registry: &Registry) -> IntCounterVec {
    let reloads = counters(
        registry,
        "hookwall_config_reloads_total",
        "Config reloads, by result.",
        &["result"],
    );
    for result in ["ok", "error"] {
        reloads.with_label_values(&[result]);
    }
    reloads
}

impl Metrics {
    /// Every metric of the contract, registered (those of `[redis]` by `redis`).
    pub(crate) fn new() -> Self {
        let r = Registry::new();
        let evictions = counters(
            &r,
            "hookwall_dedup_evictions_total",
            "Ids forgotten, by reason.",
            &["reason"],
        );
        build_info(&r);
        register(&r, trace_spans_dropped().clone());
        let (dedup_fallbacks, dedup_forgotten) = dedup_counters(&r);
        Metrics {
            requests: counters(
                &r,
                "hookwall_requests_total",
                "Requests by route and outcome.",
                &["route", "outcome"],
            ),
            request_duration: histograms(
                &r,
                (
                    "hookwall_request_duration_seconds",
                    "Time from request to response.",
                ),
                &DURATION_BUCKETS,
                &["route"],
            ),
            upstream_duration: histograms(
                &r,
                (
                    "hookwall_upstream_duration_seconds",
                    "Time from connecting upstream to the end of its (bounded) body.",
                ),
                &DURATION_BUCKETS,
                &["route"],
            ),
            upstream_responses: counters(
                &r,
                "hookwall_upstream_responses_total",
                "Upstream answers by status class, error or timeout.",
                &["route", "class"],
            ),
            events: counters(
                &r,
                "hookwall_events_total",
                "Requests that passed verification, by event type.",
                &["route", "event_type"],
            ),
            dedup_entries: gauge(&r, "hookwall_dedup_entries", "Message ids remembered."),
            evicted_for_capacity: evictions.with_label_values(&["capacity"]),
            evicted_expired: evictions.with_label_values(&["expired"]),
            in_flight_requests: gauge(&r, "hookwall_in_flight_requests", "Requests being handled."),
            buffered_body_bytes: gauge(
                &r,
                "hookwall_buffered_body_bytes",
                "Request body bytes held right now (bounded by limits.max_buffered_bytes).",
            ),
            config_reloads: config_reloads(&r),
            secret_matches: counters(
                &r,
                "hookwall_secret_matches_total",
                "Verified requests by the index of the secret that matched.",
                &["route", "secret"],
            ),
            clock_skew: histograms(
                &r,
                (
                    "hookwall_clock_skew_seconds",
                    "webhook-timestamp minus now, for verified requests.",
                ),
                &SKEW_BUCKETS,
                &["route"],
            ),
            last_verified: gauges(
                &r,
                "hookwall_last_verified_timestamp_seconds",
                "Unix time of the last verified request.",
                &["route"],
            ),
            shadow_verdicts: counters(
                &r,
                "hookwall_shadow_verdicts_total",
                "Shadow routes (enforce = false): what enforcing would have answered.",
                &["route", "verdict"],
            ),
            dedup_fallbacks,
            dedup_forgotten,
            event_types: Mutex::new(HashMap::new()),
            registry: r,
        }
    }

    fn event_counters(&self, route: &str) -> Arc<EventCounters> {
        let mut all = self.event_types.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(route.to_owned())
            .or_insert_with(|| {
                Arc::new(EventCounters {
                    known: RwLock::new(HashMap::new()),
                    none: self.events.with_label_values(&[route, "_none"]),
                    invalid: self.events.with_label_values(&[route, "_invalid"]),
                    other: self.events.with_label_values(&[route, "_other"]),
                })
            })
            .clone()
    }

    /// Resolves (and so creates at 0) every series of one route.
    /// `shadow`: the route does not enforce (its verdict series exist at 0 too).
    pub fn route(&self, name: &str, secrets: usize, shadow: bool) -> RouteMetrics {
        // At 0 from the start; counted off the request path (`forgotten`).
        self.dedup_forgotten.with_label_values(&[name]);
        RouteMetrics {
            route: name.to_owned(),
            requests: std::array::from_fn(|i| {
                self.requests
                    .with_label_values(&[name, Outcome::ALL[i].label()])
            }),
            request_duration: self.request_duration.with_label_values(&[name]),
            upstream_duration: self.upstream_duration.with_label_values(&[name]),
            upstream_responses: UpstreamClass::LABELS
                .map(|class| self.upstream_responses.with_label_values(&[name, class])),
            clock_skew: self.clock_skew.with_label_values(&[name]),
            last_verified: self.last_verified.with_label_values(&[name]),
            events: self.event_counters(name),
            dedup_fallbacks: self.dedup_fallbacks.with_label_values(&[name]),
            shadow_verdicts: Outcome::ALL
                .iter()
                .filter(|_| shadow)
                .map(|verdict| {
                    self.shadow_verdicts
                        .with_label_values(&[name, verdict.label()])
                })
                .collect(),
            secret_matches: (0..secrets)
                .map(|i| {
                    self.secret_matches
                        .with_label_values(&[name, &i.to_string()])
                })
                .collect(),
        }
    }

    /// Registers `hookwall_redis_*` (at startup, when there is a `[redis]` section) and
    /// resolves every series, so they exist at 0 from the start.
    pub fn redis(&self) -> RedisMetrics {
        let r = &self.registry;
        let up = gauge(
            r,
            "hookwall_redis_up",
            "1 while the last Redis command succeeded.",
        );
        let commands = counters(
            r,
            "hookwall_redis_commands_total",
            "Redis commands by operation and result.",
            &["op", "result"],
        );
        let duration = histograms(
            r,
            (
                "hookwall_redis_duration_seconds",
                "Time for one Redis command.",
            ),
            &REDIS_BUCKETS,
            &["op"],
        );
        let primary_changes = register(
            r,
            IntCounter::new(
                "hookwall_redis_primary_changes_total",
                "A new Redis primary found after a failover (sentinels; a cluster replica that took over slots).",
            )
            .expect("a valid metric"),
        );
        RedisMetrics {
            up,
            primary_changes,
            commands: RedisOp::ALL.map(|op| {
                REDIS_RESULTS.map(|result| commands.with_label_values(&[op.label(), result]))
            }),
            duration: RedisOp::ALL.map(|op| duration.with_label_values(&[op.label()])),
        }
    }

    /// Counts a verified request's event type, bounding the label set per route.
    pub fn event(&self, route: &RouteMetrics, event_type: &EventType<'_>) {
        let counters = &route.events;
        let name = match event_type {
            EventType::None => return counters.none.inc(),
            EventType::Invalid => return counters.invalid.inc(),
            EventType::Valid(name) => name.as_ref(),
        };
        if let Some(counter) = counters
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return counter.inc();
        }
        let mut known = counters.known.write().unwrap_or_else(|e| e.into_inner());
        if !known.contains_key(name) && known.len() >= MAX_EVENT_TYPES_PER_ROUTE {
            return counters.other.inc();
        }
        known
            .entry(name.to_owned())
            .or_insert_with(|| self.events.with_label_values(&[&route.route, name]))
            .inc();
    }

    pub fn evictions(&self, evictions: crate::dedup::Evictions) {
        self.evicted_for_capacity.inc_by(evictions.capacity);
        self.evicted_expired.inc_by(evictions.expired);
    }

    /// An id of route `route` forgotten by an operator.
    pub fn forgotten(&self, route: &str) {
        self.dedup_forgotten.with_label_values(&[route]).inc();
    }

    pub fn reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a metric family is always well formed.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
