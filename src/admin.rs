//! The admin listener: `/metrics`, `/healthz`, `/readyz`, the recent deliveries (`GET
//! /deliveries` in `recent`, the page `GET /` in `page`) and `POST /dedup/forget`
//! (`forget`), never on the public port, with its own bound on connections (`places`):
//! whatever a client of the admin port holds open, a probe on a new connection is answered.

mod forget;
mod page;
mod places;
mod query;
mod recent;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::state::Shared;
pub use places::MAX_CONNECTIONS;
use places::{Busy, Places};

/// How long a connection may take to send a request head, from its accept or from its
/// last answer: probes and scrapers send theirs at once. A connection that sends nothing,
/// or its head slowly, holds its place this long at most (and less once the admin side is
/// full: the oldest idle connection gives way to a new one).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an admin connection may stay open; a scraper that keeps its connection alive
/// opens another.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves until the task is dropped (at process exit, after the public listener drained).
/// It runs on the main thread, which serves nothing else of the public port's.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let places = Places::new(MAX_CONNECTIONS);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(place) = places.take() else {
            tracing::warn!(
                "admin connection closed: {MAX_CONNECTIONS} already open, each with a request in progress"
            );
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let requests = place.requests();
            let service = service_fn(move |request: Request<Incoming>| {
                let busy = requests.start();
                let shared = shared.clone();
                async move {
                    let response = match request.uri().path() {
                        // The one answer that waits: on the body, and on Redis.
                        forget::PATH => forget::answer(&shared, request).await,
                        _ => respond(&shared, &request),
                    };
                    Ok::<_, Infallible>(response.map(|body| Answer { body, _busy: busy }))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
                () = place.evicted() => {}
            }
        });
        // Let the connections just accepted read what they were sent before the next
        // accept: a probe's head, there at once, is read before a flood of bare connects
        // can make its connection the oldest idle one (tokio would otherwise accept up to
        // its budget first).
        tokio::task::yield_now().await;
    }
}

/// An answer, holding its connection's mark of a request in progress until it is written
/// (hyper drops the body then): a scrape being answered is not closed for a new connection.
struct Answer {
    body: Full<Bytes>,
    _busy: Busy,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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
        "/deliveries" => recent::deliveries(&shared.deliveries, request.uri().query()),
        "/" => page::page(shared, request.uri().query()),
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
