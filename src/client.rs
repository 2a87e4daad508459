//! The outbound HTTP client: hyper-util's pooled keep-alive client, with rustls for https
//! upstreams (system roots, or a configured CA bundle). Used to forward and by `send`.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::tls::{load_roots, TlsError};

/// The client type every forward goes through.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long an idle upstream connection is kept for reuse: under the 60-75 s idle timeouts
/// of common servers, so hookwall closes first and never reuses a connection being closed.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(50);

/// A client trusting `ca_file` if given, else the system's roots.
pub fn build(ca_file: Option<&Path>) -> Result<HttpClient, TlsError> {
    Ok(build_many(ca_file, 1)?.remove(0))
}

/// `count` clients (one per worker: each its own pool) sharing one TLS config, so the
/// roots are read once for all of them.
pub fn build_many(ca_file: Option<&Path>, count: usize) -> Result<Vec<HttpClient>, TlsError> {
    let roots = match ca_file {
        Some(path) => load_roots(path)?,
        None => system_roots(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|source| TlsError::Rustls {
        path: ca_file.unwrap_or(Path::new("system roots")).to_owned(),
        source,
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok((0..count.max(1)).map(|_| client(tls.clone())).collect())
}

fn client(tls: rustls::ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
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
