//! An OpenTelemetry collector for the trace tests: OTLP/HTTP on 127.0.0.1:0, each batch
//! decoded with the `opentelemetry-proto` types (prost), its spans kept as `Got`. Or one
//! that takes connections and never answers (`silent`), for a collector that hangs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

use super::{until, BoxError};

/// One span as the collector got it.
#[derive(Debug, Clone)]
pub struct Got {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The parent's span id, or "" for a root.
    pub parent: String,
    pub name: String,
    pub kind: SpanKind,
    /// Values as text (strings as they are, integers in decimal).
    pub attributes: HashMap<String, String>,
    /// The names of the attributes whose values are integers.
    pub integers: Vec<String>,
    /// Status ERROR.
    pub error: bool,
    /// When it started and ended, Unix nanoseconds.
    pub start: u64,
    pub end: u64,
    /// The resource's `service.name`.
    pub service: String,
    /// The path the batch was posted to.
    pub path: String,
}

impl Got {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
}

impl Collector {
    /// Answers 200 to every batch.
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| receive(req, kept.clone()));
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Collector { addr, spans }
    }

    /// Takes connections and reads them, never answering.
    pub async fn silent() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        Collector {
            addr,
            spans: Arc::default(),
        }
    }

    /// The base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`'s kind).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until a span holds `check`, and returns it.
    pub async fn span(&self, what: &str, check: impl Fn(&Got) -> bool) -> Got {
        let mut found = None;
        until(what, async || {
            found = self.spans().into_iter().find(|span| check(span));
            found.is_some()
        })
        .await;
        found.unwrap()
    }

    /// Waits for the SERVER span whose `webhook.id` is `id`.
    pub async fn server_span(&self, id: &str) -> Got {
        self.span(&format!("the SERVER span of {id}"), |span| {
            span.kind == SpanKind::Server && span.attribute("webhook.id") == Some(id)
        })
        .await
    }

    /// Waits for the child of `parent` named `name`.
    pub async fn child(&self, parent: &Got, name: &str) -> Got {
        self.span(&format!("{name}, a child of {}", parent.name), |span| {
            span.parent == parent.span_id && span.name == name
        })
        .await
    }
}

async fn receive(
    request: Request<hyper::body::Incoming>,
    kept: Arc<Mutex<Vec<Got>>>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    let batch = ExportTraceServiceRequest::decode(body)?;
    let mut got = Vec::new();
    for resource in batch.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| text_of(&r.attributes, "service.name"))
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), text(kv)?)))
                .collect();
            let integers = span
                .attributes
                .iter()
                .filter(|kv| {
                    matches!(
                        kv.value.as_ref().and_then(|v| v.value.as_ref()),
                        Some(Value::IntValue(_))
                    )
                })
                .map(|kv| kv.key.clone())
                .collect();
            got.push(Got {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name.clone(),
                kind: span.kind(),
                attributes,
                integers,
                start: span.start_time_unix_nano,
                end: span.end_time_unix_nano,
                error: span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code() == StatusCode::Error),
                service: service.clone(),
                path: path.clone(),
            });
        }
    }
    kept.lock().unwrap().extend(got);
    Ok(Response::new(Full::new(Bytes::new())))
}

fn text(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(text)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
