//! Between a span's end and the collector: the SDK's batch processor (a bounded queue
//! drained by a thread of its own, so that a request never waits on the collector), and
//! around it what the SDK does not give, the count of spans lost
//! (`hookwall_trace_spans_dropped_total`): those that found the queue full, and those of
//! a batch the collector did not take. The request span gets its trace shape here too
//! (`shaped`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, Key};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;

use super::REQUEST_SPAN;
use crate::labels::UNMATCHED;

/// A batch processor that counts what it loses. Spans are counted in (`queued`) before
/// they enter the SDK's queue and out as the exporter takes them, so `queued` is never
/// less than what the queue holds: a span refused here is one the queue had no room for,
/// and the SDK's queue itself never refuses (it would not say).
#[derive(Debug)]
pub struct Counted {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    dropped: IntCounter,
}

impl Counted {
    /// `exporter` behind a queue of `capacity` spans (`OTEL_BSP_*` give the rest: the
    /// delay between batches, their size).
    pub fn new<E>(exporter: E, capacity: usize, dropped: IntCounter) -> Counted
    where
        E: SpanExporter + 'static,
    {
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = CountedExporter {
            inner: exporter,
            queued: queued.clone(),
            dropped: dropped.clone(),
        };
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .build();
        Counted {
            inner: BatchSpanProcessor::builder(exporter)
                .with_batch_config(config)
                .build(),
            queued,
            capacity,
            dropped,
        }
    }
}

impl SpanProcessor for Counted {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        shaped(&mut span);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting the spans of every batch it could not send as dropped (the
/// OTLP exporter has retried by then, within its timeout).
#[derive(Debug)]
struct CountedExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    dropped: IntCounter,
}

impl<E: SpanExporter> SpanExporter for CountedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        // Out of the queue: room for as many.
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        if result.is_err() {
            self.dropped.inc_by(spans as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The request span's log fields and the names the traces give them (contract §12).
const RENAMED: [(&str, &str); 6] = [
    ("route", "hookwall.route"),
    ("id", "webhook.id"),
    ("key", "hookwall.dedup_key"),
    ("event_type", "webhook.event_type"),
    ("stream", "hookwall.stream"),
    ("entry", "hookwall.stream_entry"),
];

/// The request span (`request`, as the logs know it) in its trace shape: kind SERVER,
/// named `{method} {route}` (`POST _unmatched` when no route matched), its fields under
/// their trace names. The CLIENT spans declare theirs (`otel.*` fields) and pass as they
/// are.
fn shaped(span: &mut SpanData) {
    if span.name != REQUEST_SPAN {
        return;
    }
    span.span_kind = SpanKind::Server;
    let (mut method, mut route) = (None, None);
    for attribute in &mut span.attributes {
        let name = attribute.key.as_str();
        if let Some((_, to)) = RENAMED.iter().find(|(from, _)| *from == name) {
            // In place: a key is a static string.
            attribute.key = Key::from_static_str(to);
        }
        match attribute.key.as_str() {
            "http.request.method" => method = Some(attribute.value.as_str()),
            "hookwall.route" => route = Some(attribute.value.as_str()),
            _ => {}
        }
    }
    // Not `format!`: every request's span is named here.
    let (method, route) = (
        method.as_deref().unwrap_or("POST"),
        route.as_deref().unwrap_or(UNMATCHED),
    );
    let mut name = String::with_capacity(method.len() + 1 + route.len());
    name.push_str(method);
    name.push(' ');
    name.push_str(route);
    span.name = name.into();
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use std::sync::Mutex;

    /// Keeps what it is given; fails every export while `failing`.
    #[derive(Debug, Default, Clone)]
    struct Kept {
        spans: Arc<Mutex<Vec<SpanData>>>,
        failing: bool,
    }

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.failing {
                return Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "down".into(),
                ));
            }
            self.spans.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn span(attributes: Vec<KeyValue>) -> SpanData {
        use opentelemetry::trace::{SpanContext, SpanId, Status};
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: REQUEST_SPAN.into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn the_request_span_gets_its_trace_shape() {
        let mut data = span(vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("route", "clerk"),
            KeyValue::new("id", "msg_1"),
            KeyValue::new("key", "sha256:ab"),
            KeyValue::new("event_type", "user.created"),
            KeyValue::new("url.path", "/hook"),
        ]);
        shaped(&mut data);
        assert_eq!(
            (&*data.name, data.span_kind.clone()),
            ("POST clerk", SpanKind::Server)
        );
        let names: Vec<&str> = data.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            names,
            [
                "http.request.method",
                "hookwall.route",
                "webhook.id",
                "hookwall.dedup_key",
                "webhook.event_type",
                "url.path"
            ]
        );
        // No route matched: `answered` names it.
        let mut data = span(vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("hookwall.route", "_unmatched"),
        ]);
        shaped(&mut data);
        assert_eq!(&*data.name, "GET _unmatched");
        // A CLIENT span passes as it is.
        let mut data = span(vec![KeyValue::new("id", "x")]);
        data.name = "POST".into();
        data.span_kind = SpanKind::Client;
        shaped(&mut data);
        assert_eq!(
            (&*data.name, data.attributes[0].key.as_str()),
            ("POST", "id")
        );
    }

    #[test]
    fn spans_past_the_queue_and_failed_batches_are_counted() {
        let dropped = IntCounter::new("dropped", "test").unwrap();
        let kept = Kept::default();
        let counted = Counted::new(kept.clone(), 4, dropped.clone());
        for _ in 0..10 {
            counted.on_end(span(Vec::new()));
        }
        // The batch thread may have taken some already; at most 4 were queued at once.
        assert!(dropped.get() <= 6, "{}", dropped.get());
        counted.force_flush().unwrap();
        assert_eq!(kept.spans.lock().unwrap().len() as u64 + dropped.get(), 10);
        counted
            .shutdown_with_timeout(Duration::from_secs(5))
            .unwrap();

        let dropped = IntCounter::new("dropped", "test").unwrap();
        let failing = Kept {
            failing: true,
            ..Kept::default()
        };
        let counted = Counted::new(failing, 100, dropped.clone());
        for _ in 0..3 {
            counted.on_end(span(Vec::new()));
        }
        let _ = counted.force_flush();
        assert_eq!(dropped.get(), 3);
        let _ = counted.shutdown_with_timeout(Duration::from_secs(5));
    }
}
