//! What the request path tells the traces (contract §12), each a no-op that costs one
//! relaxed load while tracing is off (`on`): the request's span, a SERVER span that
//! continues a sender's `traceparent`, its attributes once it is answered, and the CLIENT
//! spans of an upstream exchange and of a stream append, whose context the upstream request
//! (or the stream entry) carries on.
//!
//! The request span is the one the logs have had all along: its name, kind and own fields
//! (`route`, `id`, `key`, `event_type`, `stream`, `entry`) keep their log shape, and the
//! exporter gives them their trace names (`export::shaped`), so the request path records
//! each once and a log line reads the same with traces on.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt as _};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::on;
use crate::labels::UNMATCHED;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Makes the request's span (`request`) the child of the sender's `traceparent`, if it
/// sent one, and gives it the request's method and path. (Its trace name `POST {route}`
/// and kind SERVER are given at its end, `export::shaped`: its log lines stay as they
/// were.) Called before the span is first entered: its parent cannot change after.
pub fn received<B>(span: &Span, request: &Request<B>) {
    if !on() {
        return;
    }
    let sender = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    // No span there (nothing sent, or not a valid traceparent): this is the trace's root.
    if sender.span().span_context().is_valid() {
        let _ = span.set_parent(sender);
    }
    span.set_attribute("http.request.method", method_name(request.method()));
    // A sender's path may be most of a 40 KiB head: cut to 256 bytes, as the recent
    // deliveries cut what a sender chose (a URI's path is ASCII: any byte is a boundary).
    let path = request.uri().path();
    span.set_attribute("url.path", path[..path.len().min(256)].to_owned());
}

/// The method as the span's name says it: a method HTTP defines, else `HTTP` (what the
/// semantic conventions write for others: the name stays one of a few).
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::POST => "POST",
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "HTTP",
    }
}

/// The request's answer on its SERVER span: its status, outcome and route's provider (`_unmatched`
/// as the route when none matched), and status ERROR when hookwall or the upstream
/// failed (5xx).
pub fn answered(span: &Span, provider: Option<&'static str>, outcome: &'static str, status: u16) {
    if !on() {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status));
    span.set_attribute("hookwall.outcome", outcome);
    match provider {
        Some(provider) => span.set_attribute("hookwall.provider", provider),
        None => span.set_attribute("hookwall.route", UNMATCHED),
    }
    if status >= 500 {
        span.set_status(Status::error(""));
    }
}

/// The first of the route's secrets that verified the request.
pub fn secret_index(span: &Span, index: Option<usize>) {
    if let (true, Some(index)) = (on(), index) {
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        span.set_attribute("hookwall.secret_index", index);
    }
}

/// A CLIENT span for one exchange with an upstream, the child of the current span (the
/// request's): `Span::none()` while tracing is off. It ends when dropped, so a forward
/// that outlives its request ends it when the forward ends.
pub fn upstream(method: &Method, host: &str, port: u16) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(
        "upstream",
        otel.kind = "client",
        otel.name = method_name(method),
        otel.status_code = Empty,
        http.request.method = method_name(method),
        server.address = host,
        // Integers as i64: tracing-opentelemetry writes other integers as text.
        server.port = i64::from(port),
        http.response.status_code = Empty,
    )
}

/// How an upstream exchange ended: the status it answered, or none (it failed or was
/// abandoned); status ERROR for none or a 5xx.
pub fn upstream_ended(span: &Span, status: Option<u16>) {
    if span.is_none() {
        return;
    }
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status));
    }
    if status.is_none_or(|status| status >= 500) {
        span.record("otel.status_code", "error");
    }
}

/// A CLIENT span for appending an event to a Redis stream, the child of the current span
/// (the request's): `Span::none()` while tracing is off.
pub fn append(stream: &str) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(
        "append",
        otel.kind = "client",
        otel.name = "XADD",
        otel.status_code = Empty,
        db.system.name = "redis",
        db.operation.name = "XADD",
        hookwall.stream = stream,
    )
}

/// How an append ended: status ERROR unless Redis (or memory) took it.
pub fn append_ended(span: &Span, ok: bool) {
    if !ok && !span.is_none() {
        span.record("otel.status_code", "error");
    }
}

/// Puts `span`'s context in `headers` as `traceparent` (and `tracestate`, if the sender's
/// trace has one), in place of the sender's: the upstream (or a stream's worker) continues
/// the trace from the CLIENT span. Nothing changes while tracing is off (`span` is none):
/// the sender's own pass through, as any end-to-end header.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_none() {
        return;
    }
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    let context = span.context();
    let span = context.span();
    let span = span.span_context();
    if !span.is_valid() {
        return;
    }
    if let Ok(value) = HeaderValue::from_bytes(&traceparent(span)) {
        headers.insert(TRACEPARENT, value);
    }
    let state = span.trace_state().header();
    if !state.is_empty() {
        if let Ok(value) = HeaderValue::try_from(state) {
            headers.insert(TRACESTATE, value);
        }
    }
}

/// `00-{trace id}-{span id}-{flags}` (W3C Trace Context), written out by hand: every
/// forward writes one, and `fmt` costs ten times as much (measured with callgrind).
fn traceparent(span: &SpanContext) -> [u8; 55] {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex(&span.trace_id().to_bytes(), &mut text[3..35]);
    hex(&span.span_id().to_bytes(), &mut text[36..52]);
    hex(&[span.trace_flags().to_u8()], &mut text[53..55]);
    text
}

/// `bytes` as lower-case hex digits in `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// The trace id of `span` (32 hex digits) when tracing is on and the span is recorded
/// (sampled); `None` otherwise. Starts the span if it was not yet: call it once the span's
/// parent is set (after `received`).
pub fn trace_id(span: &Span) -> Option<String> {
    if !on() || span.is_none() {
        return None;
    }
    let context = span.context();
    let span = context.span();
    let span = span.span_context();
    if !span.is_sampled() {
        return None;
    }
    let mut text = [0u8; 32];
    hex(&span.trace_id().to_bytes(), &mut text);
    String::from_utf8(text.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_http::HeaderInjector;
    use std::str::FromStr as _;

    #[test]
    fn traceparent_is_written_as_the_sdks_propagator_writes_it() {
        let state = TraceState::from_str("vendor=opaque").unwrap();
        for flags in [TraceFlags::SAMPLED, TraceFlags::default()] {
            let span = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                flags,
                false,
                state.clone(),
            );
            let mut theirs = HeaderMap::new();
            let context = opentelemetry::Context::new().with_remote_span_context(span.clone());
            TraceContextPropagator::new()
                .inject_context(&context, &mut HeaderInjector(&mut theirs));
            assert_eq!(theirs["traceparent"].as_bytes(), traceparent(&span));
            assert_eq!(theirs["tracestate"], "vendor=opaque");
        }
    }
}
