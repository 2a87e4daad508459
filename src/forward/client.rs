//! The outbound HTTP/1.1 client: a keep-alive pool of upstream connections per origin,
//! each connection driven by hyper's `client::conn::http1` in a task of its own, with
//! rustls for https upstreams (system roots, or a configured CA bundle). Each worker has
//! its own `Client`, so a pooled connection is only ever used by the worker that drives it
//! and the pool's lock is never contended. Used to forward and by `send`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::route::{Origin, Upstream};
use crate::tls::{load_roots, TlsError};

/// How long an idle upstream connection is kept for reuse: under the 60-75 s idle timeouts
/// of common servers, so hookwall never reuses a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Most idle connections kept per origin (per worker); more are closed when they go idle.
const POOL_MAX_IDLE: usize = 1024;

type Sender = SendRequest<Full<Bytes>>;

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {origin}")]
    Connect {
        origin: Origin,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {origin} failed")]
    Tls {
        origin: Origin,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {origin} took longer than connect_timeout ({after:?})")]
    ConnectTimeout { origin: Origin, after: Duration },
    #[error("HTTP/1.1 exchange failed")]
    Http(#[source] hyper::Error),
}

/// One worker's upstream connections. Aligned to a cache line: another worker's client
/// (its pool's lock, its reference count) never shares one with this.
#[repr(align(64))]
pub struct Client {
    tls: TlsConnector,
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// A connection lent to one exchange. Dropped, it is closed; `reuse` after the response
/// body was read to its end puts it back in the pool.
pub struct Lease<'a> {
    client: &'a Client,
    origin: &'a Origin,
    sender: Sender,
    /// Taken from the pool (else made for this request).
    pooled: bool,
}

/// Why a lease's request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// A pooled connection closed before it took the request: the upstream never saw it,
    /// and it may go on another connection.
    Unsent(Box<Request<Full<Bytes>>>),
    /// A new connection closed before it took the request: the upstream never saw it,
    /// but it is not the pool's stale connection either (the upstream refuses).
    NotTaken(hyper::Error),
    /// The connection failed after the request was written to it (reset or closed before
    /// a status line): the upstream may have seen it.
    Failed(hyper::Error),
}

impl<'a> Lease<'a> {
    /// Sends `request` on this connection: the response head, and the lease to give back
    /// once its body was read (`reuse`).
    pub async fn send(
        mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease<'a>), SendError> {
        match self.sender.try_send_request(request).await {
            Ok(response) => Ok((response, self)),
            // hyper gives the request back only if it failed before writing it.
            Err(mut err) => match err.take_message() {
                Some(unsent) if self.pooled => Err(SendError::Unsent(Box::new(unsent))),
                Some(_) => Err(SendError::NotTaken(err.into_error())),
                None => Err(SendError::Failed(err.into_error())),
            },
        }
    }

    pub fn reuse(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut pool = self.client.idle.lock().unwrap_or_else(|e| e.into_inner());
        let idle = match pool.get_mut(self.origin) {
            Some(idle) => idle,
            None => pool.entry(self.origin.clone()).or_default(),
        };
        if idle.len() < POOL_MAX_IDLE {
            idle.push(Idle {
                sender: self.sender,
                since: Instant::now(),
            });
        }
    }
}

/// A request to `upstream` as `Client::send` wants it: the upstream's path as target and
/// its authority as `Host`.
pub fn request_to(upstream: &Upstream, method: Method, body: Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = upstream.target(None);
    request
        .headers_mut()
        .insert(http::header::HOST, upstream.host.clone());
    request
}

/// A client trusting `ca_file` if given, else the system's roots.
pub fn build(ca_file: Option<&Path>) -> Result<Client, TlsError> {
    Ok(build_many(ca_file, 1)?.remove(0))
}

/// `count` clients (one per worker: each its own pool) sharing one TLS config, so the
/// roots are read once for all of them.
pub fn build_many(ca_file: Option<&Path>, count: usize) -> Result<Vec<Client>, TlsError> {
    let roots = match ca_file {
        Some(path) => load_roots(path)?,
        None => system_roots(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|source| TlsError::Rustls {
        path: ca_file.unwrap_or(Path::new("system roots")).to_owned(),
        source,
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = TlsConnector::from(Arc::new(tls));
    Ok((0..count.max(1))
        .map(|_| Client {
            tls: tls.clone(),
            idle: Mutex::new(HashMap::new()),
        })
        .collect())
}

impl Client {
    /// A connection to `origin` ready for a request: the most recently used idle one that
    /// is still ready, else a new one, made within `connect_timeout` (TCP, TLS and the
    /// HTTP handshake).
    pub async fn ready<'a>(
        &'a self,
        origin: &'a Origin,
        connect_timeout: Duration,
    ) -> Result<Lease<'a>, ClientError> {
        let lease = |sender, pooled| Lease {
            client: self,
            origin,
            sender,
            pooled,
        };
        while let Some(mut sender) = self.pooled(origin) {
            // An idle connection is ready at once, unless the upstream closed it.
            if sender.is_ready() {
                return Ok(lease(sender, true));
            }
            if let Ok(Ok(())) = tokio::time::timeout(connect_timeout, sender.ready()).await {
                return Ok(lease(sender, true));
            }
        }
        // Boxed: connecting (a TLS handshake's state) is rare but large, and would
        // otherwise enlarge every forward's future (measured: 8 KB copied a request).
        match tokio::time::timeout(connect_timeout, Box::pin(self.connect(origin))).await {
            Ok(sender) => Ok(lease(sender?, false)),
            Err(_) => Err(ClientError::ConnectTimeout {
                origin: origin.clone(),
                after: connect_timeout,
            }),
        }
    }

    /// Sends `request` (origin-form target, `Host` set) to `origin` on a ready connection
    /// (`ready`); a request that a pooled connection closed before taking is sent again on
    /// another: the upstream never saw it.
    pub async fn send<'a>(
        &'a self,
        origin: &'a Origin,
        mut request: Request<Full<Bytes>>,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, Lease<'a>), ClientError> {
        loop {
            let lease = self.ready(origin, connect_timeout).await?;
            match lease.send(request).await {
                Ok(sent) => return Ok(sent),
                Err(SendError::Unsent(unsent)) => request = *unsent,
                Err(SendError::NotTaken(err) | SendError::Failed(err)) => {
                    return Err(ClientError::Http(err))
                }
            }
        }
    }

    /// The most recently used idle connection that is still open; older idle ones past
    /// `POOL_IDLE_TIMEOUT` are closed on the way.
    fn pooled(&self, origin: &Origin) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let idle = idle.get_mut(origin)?;
        let now = Instant::now();
        let expired = idle.partition_point(|i| now.duration_since(i.since) > POOL_IDLE_TIMEOUT);
        idle.drain(..expired);
        while let Some(Idle { sender, .. }) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self, origin: &Origin) -> Result<Sender, ClientError> {
        let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
            .await
            .map_err(|source| ClientError::Connect {
                origin: origin.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        if !origin.https {
            return handshake(tcp).await;
        }
        let name = ServerName::try_from(origin.host.clone()).map_err(|err| ClientError::Tls {
            origin: origin.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, err),
        })?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|source| ClientError::Tls {
                origin: origin.clone(),
                source,
            })?;
        handshake(tls).await
    }
}

/// HTTP/1.1 over `io`; the connection is driven by a task of the calling worker's runtime
/// and ends when its sender is dropped or the upstream closes it.
async fn handshake<T>(io: T) -> Result<Sender, ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ClientError::Http)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// The system's CA certificates; none if they cannot be read (plain-http upstreams still
/// work, and an https one fails its handshake with a logged error).
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "reading the system's CA certificates");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// An upstream on loopback that answers every request on a connection with 200 and
    /// counts the connections it accepted.
    async fn upstream() -> (Upstream, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream::parse(&format!("http://{}/x", listener.local_addr().unwrap()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (upstream.unwrap(), accepted)
    }

    async fn post<'a>(
        client: &'a Client,
        upstream: &'a Upstream,
    ) -> (Response<Incoming>, Lease<'a>) {
        let request = request_to(upstream, Method::POST, Bytes::from_static(b"{}"));
        client
            .send(&upstream.origin, request, SECOND)
            .await
            .unwrap()
    }

    /// A connection goes back to the pool only when its answer was read whole (`reuse`);
    /// a lease dropped without, closes it.
    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_connection_is_reused_only_when_given_back() {
        let (upstream, accepted) = upstream().await;
        let client = build(None).unwrap();
        for _ in 0..3 {
            let (response, lease) = post(&client, &upstream).await;
            assert_eq!(
                response.into_body().collect().await.unwrap().to_bytes(),
                "ok"
            );
            lease.reuse();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let (_, lease) = post(&client, &upstream).await;
        drop(lease);
        let (_, lease) = post(&client, &upstream).await;
        lease.reuse();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_names_its_origin() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let upstream = Upstream::parse(&format!("http://{addr}/x")).unwrap();
        let client = build(None).unwrap();
        let request = request_to(&upstream, Method::POST, Bytes::new());
        let Err(err) = client.send(&upstream.origin, request, SECOND).await else {
            panic!("nothing listens there")
        };
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
