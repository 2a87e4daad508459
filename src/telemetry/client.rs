//! The OTLP exporter's HTTP client: hookwall's own upstream client (`forward::client`:
//! hyper's HTTP/1.1 and rustls with ring), so that the binary carries no second HTTP or TLS
//! stack for its traces. The SDK's batch thread runs each export to its end
//! (`futures_executor::block_on`, outside any tokio runtime); the exchange runs on a
//! small runtime of the client's own, on that thread, within the export timeout.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Limited};
use opentelemetry_http::{HttpClient, HttpError};

use crate::forward::client::{self, Client, ClientError};
use crate::route::Upstream;

/// Most bytes of a collector's answer read (OTLP answers with a small status message).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Posts batches to one collector URL (`{endpoint}/v1/traces`).
pub struct Collector {
    url: Upstream,
    client: Client,
    runtime: tokio::runtime::Runtime,
    /// The bound on one attempt: connecting, sending and reading the answer.
    timeout: Duration,
}

/// Why a batch got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("the collector did not answer within {0:?}")]
    Timeout(Duration),
    #[error("sending to the collector failed")]
    Send(#[source] ClientError),
    #[error("reading the collector's answer failed")]
    Answer(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("url", &self.url.uri)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A client for `url`, trusting the system's roots for https.
    pub fn new(url: Upstream, timeout: Duration) -> std::io::Result<Collector> {
        let client = client::build(None).map_err(std::io::Error::other)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Collector {
            url,
            client,
            runtime,
            timeout,
        })
    }

    /// One attempt: `request`'s method, headers and body to the collector's URL (the
    /// exporter always names that one).
    fn post(&self, request: Request<Bytes>) -> Result<Response<Bytes>, CollectorError> {
        let (parts, body) = request.into_parts();
        let mut outgoing = client::request_to(&self.url, parts.method, body);
        for (name, value) in &parts.headers {
            outgoing.headers_mut().insert(name, value.clone());
        }
        let exchange = async {
            let (response, lease) = self
                .client
                .send(&self.url.origin, outgoing, self.timeout)
                .await
                .map_err(CollectorError::Send)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(CollectorError::Answer)?
                .to_bytes();
            lease.reuse();
            Ok(Response::from_parts(parts, body))
        };
        // On the batch thread, which has nothing else to do meanwhile.
        self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, exchange)
                .await
                .unwrap_or(Err(CollectorError::Timeout(self.timeout)))
        })
    }
}

/// `HttpClient`'s one method as `async_trait` declares it, written out.
impl HttpClient for Collector {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let result = self.post(request).map_err(HttpError::from);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A collector on loopback answering `answer` to one request, and what it read.
    fn collector(answer: &'static [u8]) -> (Upstream, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let read = std::thread::spawn(move || {
            use std::io::{Read as _, Write as _};
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.ends_with(b"batch") {
                let n = stream.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer).unwrap();
            seen
        });
        (Upstream::parse(&url).unwrap(), read)
    }

    fn batch() -> Request<Bytes> {
        Request::post("http://ignored/v1/traces")
            .header("content-type", "application/x-protobuf")
            .body(Bytes::from_static(b"batch"))
            .unwrap()
    }

    #[test]
    fn a_batch_is_posted_to_the_collector_path() {
        let (url, read) = collector(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        let client = Collector::new(url, Duration::from_secs(5)).unwrap();
        let answer = client.post(batch()).unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.body(), "{}");
        let seen = String::from_utf8(read.join().unwrap()).unwrap();
        assert!(seen.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{seen}");
        assert!(
            seen.contains("content-type: application/x-protobuf"),
            "{seen}"
        );
    }

    #[test]
    fn a_silent_collector_costs_the_timeout_and_no_more() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        // Accepts and reads, never answers.
        let _silent = std::thread::spawn(move || {
            rt.block_on(async {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
                let _ = stream.shutdown().await;
            })
        });
        let client =
            Collector::new(Upstream::parse(&url).unwrap(), Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let err = client.post(batch()).unwrap_err();
        assert!(matches!(err, CollectorError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
