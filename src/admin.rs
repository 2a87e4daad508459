//! The admin listener: `/metrics`, `/healthz`, `/readyz`, never on the public port, with
//! its own bound on connections.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::state::Shared;

/// A scraper or probe that sends headers this slowly is gone.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most admin connections at once: probes and a scraper or two need a handful. Past it a
/// connection is closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long an admin connection may stay open; a scraper that keeps its connection alive
/// opens another.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves until the task is dropped (at process exit, after the public listener drained).
/// It runs on the main thread, which serves nothing else of the public port's.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = open.clone().try_acquire_owned() else {
            tracing::warn!("admin connection closed: {MAX_CONNECTIONS} already open");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _place = place;
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

fn respond(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            // Read here rather than kept up to date per request: no shared counter on
            // the request path.
            shared
                .metrics
                .buffered_body_bytes
                .set(shared.budget.held() as i64);
            let mut response = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if shared.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
