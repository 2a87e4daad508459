//! Test helpers: a real HTTP upstream on loopback that records what reached it, the real
//! proxy (`hookwall::run`) on 127.0.0.1:0, a plain client, and Svix-style signing.

pub mod collector;
pub mod redis_ha;
pub mod redis_server;
pub mod running;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hookwall::config::Config;
use hookwall::secret::Key;
use hookwall::sign::Signer;
use hookwall::Control;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How the upstream answers a request.
#[derive(Clone)]
pub enum Reply {
    Status(u16),
    /// Wait for the notify, then answer 200. `arrived` is notified on arrival.
    Hold {
        arrived: Arc<Notify>,
        release: Arc<Notify>,
    },
}

type Behaviour = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

async fn answer(
    req: Request<hyper::body::Incoming>,
    log: Arc<Mutex<Vec<Received>>>,
    behaviour: Behaviour,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let got = Received {
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    };
    let attempt = {
        let mut log = log.lock().unwrap();
        log.push(got.clone());
        log.len() - 1
    };
    let status = match behaviour(&got, attempt) {
        Reply::Status(status) => status,
        Reply::Hold { arrived, release } => {
            arrived.notify_one();
            release.notified().await;
            200
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(format!("upstream says {status}"))));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    response
        .headers_mut()
        .insert("x-upstream-private", "not for senders".parse().unwrap());
    Ok(response)
}

/// A real HTTP/1.1 server on 127.0.0.1:0 that records every request.
pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Upstream {
    pub async fn start(
        behaviour: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::serve(None, Arc::new(behaviour)).await
    }

    /// An https upstream with the given certificate chain and key (PEM).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::serve(
            Some(acceptor),
            Arc::new(|_: &Received, _| Reply::Status(200)),
        )
        .await
    }

    /// An upstream that answers 200 on `listener`, bound (and maybe left unserved) by the
    /// test.
    pub fn on(listener: TcpListener) -> Self {
        Self::serve_on(
            listener,
            None,
            Arc::new(|_: &Received, _| Reply::Status(200)),
        )
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(listener, tls, behaviour)
    }

    fn serve_on(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        behaviour: Behaviour,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, behaviour, tls) = (log.clone(), behaviour.clone(), tls.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| answer(req, log.clone(), behaviour.clone()));
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                    };
                });
            }
        });
        Upstream { addr, received }
    }

    pub async fn ok() -> Self {
        Self::start(|_, _| Reply::Status(200)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// How many times each svix-id arrived.
    pub fn ids(&self) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for r in self.received.lock().unwrap().iter() {
            let id = r
                .headers
                .get("svix-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            *ids.entry(id).or_default() += 1;
        }
        ids
    }
}

/// An address where connections are refused: a socket bound there but not listening. It
/// holds the port while it lives, so no other test's listener can take the port over (as
/// one could take a port that was merely closed).
pub fn refusing_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

/// An upstream that holds every request until released: `arrived` is notified as each
/// one comes in, and each waits for a `release` notification before answering 200.
pub async fn holding_upstream() -> (Upstream, Arc<Notify>, Arc<Notify>) {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (a, r) = (arrived.clone(), release.clone());
    let upstream = Upstream::start(move |_, _| Reply::Hold {
        arrived: a.clone(),
        release: r.clone(),
    })
    .await;
    (upstream, arrived, release)
}

/// A helper process (a backend in another language, the svix receiver) that prints
/// `PORT <n>` once it listens on 127.0.0.1; killed when dropped.
pub struct Helper {
    child: std::process::Child,
    pub port: u16,
}

impl Helper {
    pub fn start(command: &mut std::process::Command, what: &str) -> Helper {
        use std::io::BufRead as _;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start (scripts/test.sh installs it): {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what} did not start: {line:?}"));
        Helper { child, port }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy, running in this process on 127.0.0.1:0.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    control: mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts with `toml` as the config file (listen/admin addresses are ignored: the test
    /// binds its own sockets).
    pub async fn start(toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookwall.toml");
        std::fs::write(&file, toml).unwrap();
        let config = Config::load_with_env(&file, &[]).unwrap_or_else(|e| panic!("{e}"));
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let (control, requests) = mpsc::channel(4);
        let task = tokio::spawn(async move {
            hookwall::run(config, public, admin, requests)
                .await
                .unwrap();
        });
        Proxy {
            addr,
            admin: admin_addr,
            control,
            task,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The config file it started with, which `reload` reads again.
    pub fn config_file(&self) -> std::path::PathBuf {
        self._dir.path().join("hookwall.toml")
    }

    pub async fn reload(&self) {
        self.control.send(Control::Reload).await.unwrap();
    }

    /// Stops the proxy the way SIGINT does: without `shutdown_delay` (the tests of the
    /// delay send `Control::Shutdown`, as SIGTERM does).
    pub async fn shutdown(self) {
        self.stop(Control::Interrupt).await;
    }

    pub async fn stop(self, how: Control) {
        self.control.send(how).await.unwrap();
        self.task.await.unwrap();
    }

    pub async fn metrics(&self) -> Metrics {
        let (status, _, body) = get(&format!("http://{}/metrics", self.admin)).await;
        assert_eq!(status, 200);
        Metrics::parse(&String::from_utf8_lossy(&body))
    }
}

/// A scraped `/metrics`, parsed: series (name with labels, as printed) → value.
#[derive(Debug)]
pub struct Metrics(pub HashMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut series = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (name, value) = line.rsplit_once(' ').expect("a sample line");
            series.insert(name.to_owned(), value.parse().expect("a number"));
        }
        Metrics(series)
    }

    /// The value of `name{labels}` where labels are given in any order, e.g.
    /// `get("hookwall_requests_total", &[("route","clerk"),("outcome","forwarded")])`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.iter().find_map(|(series, value)| {
            let rest = series.strip_prefix(name)?;
            let inner = if labels.is_empty() {
                if !rest.is_empty() {
                    return None;
                }
                ""
            } else {
                rest.strip_prefix('{')?.strip_suffix('}')?
            };
            let mut have: Vec<&str> = if inner.is_empty() {
                vec![]
            } else {
                inner.split(',').collect()
            };
            let mut want: Vec<String> =
                labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            have.sort();
            want.sort();
            (have == want).then_some(*value)
        })
    }

    /// `hookwall_events_total` of one route and event type.
    pub fn events(&self, route: &str, event_type: &str) -> Option<f64> {
        self.get(
            "hookwall_events_total",
            &[("route", route), ("event_type", event_type)],
        )
    }

    /// `hookwall_secret_matches_total` of one route and secret index.
    pub fn secret_matches(&self, route: &str, secret: &str) -> Option<f64> {
        self.get(
            "hookwall_secret_matches_total",
            &[("route", route), ("secret", secret)],
        )
    }

    /// `hookwall_redis_commands_total{op, result}`, 0 while the series is absent.
    pub fn redis_commands(&self, op: &str, result: &str) -> f64 {
        self.get(
            "hookwall_redis_commands_total",
            &[("op", op), ("result", result)],
        )
        .unwrap_or(0.0)
    }

    pub fn requests(&self, route: &str, outcome: &str) -> f64 {
        self.get(
            "hookwall_requests_total",
            &[("route", route), ("outcome", outcome)],
        )
        .unwrap_or_else(|| panic!("no series for {route}/{outcome}"))
    }
}

/// Polls `check` every 10 ms until it holds, for at most 10 s (a generous bound: it only
/// keeps a broken build from hanging the suite).
pub async fn until(what: &str, check: impl AsyncFnMut() -> bool) {
    until_within(what, std::time::Duration::from_secs(10), check).await
}

pub async fn until_within(
    what: &str,
    within: std::time::Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A signed `user.created` event as raw HTTP/1.1 bytes (head and body), for tests that
/// drive the socket themselves.
pub fn raw_signed_request(path: &str, id: &str) -> Vec<u8> {
    let body = event("user.created");
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: x\r\n");
    for (name, value) in signed(SECRET, id, now(), &body) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    [head.into_bytes(), body].concat()
}

/// Waits until `route`'s upstream answered `count` times with `class` (forwards that
/// outlived their request are counted when they end).
pub async fn until_upstream_answered(proxy: &Proxy, route: &str, class: &str, count: f64) {
    until("the upstream's answers", async || {
        proxy.metrics().await.get(
            "hookwall_upstream_responses_total",
            &[("route", route), ("class", class)],
        ) == Some(count)
    })
    .await;
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn signer(secret: &str) -> Signer {
    Signer::try_from(&Key::decode(secret).unwrap()).unwrap()
}

/// A Svix-style signed request: headers for `id` at `timestamp` over `body`.
pub fn signed(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("svix-id".into(), id.into()),
        ("svix-timestamp".into(), timestamp.to_string()),
        (
            "svix-signature".into(),
            signer(secret).sign(id, timestamp, body),
        ),
        ("content-type".into(), "application/json".into()),
    ]
}

pub fn event(kind: &str) -> Vec<u8> {
    format!(r#"{{"type":"{kind}","data":{{"id":"user_1"}},"object":"event"}}"#).into_bytes()
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// POSTs and returns status, headers and body.
pub async fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> (u16, HeaderMap, Bytes) {
    send("POST", url, headers, body).await
}

pub async fn get(url: &str) -> (u16, HeaderMap, Bytes) {
    send("GET", url, &[], b"").await
}

pub async fn send(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, HeaderMap, Bytes) {
    try_send(method, url, headers, body)
        .await
        .expect("the proxy answers")
}

/// POSTs; an error if no complete response came back.
pub async fn try_post(
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(u16, HeaderMap, Bytes), BoxError> {
    try_send("POST", url, headers, body).await
}

pub async fn try_send(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(u16, HeaderMap, Bytes), BoxError> {
    let mut request = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(body)))?;
    let response = client().request(request).await?;
    let (parts, body) = response.into_parts();
    Ok((
        parts.status.as_u16(),
        parts.headers,
        body.collect().await?.to_bytes(),
    ))
}

/// Sends a valid signed event to `path` and returns the status and body.
pub async fn deliver(
    proxy: &Proxy,
    path: &str,
    secret: &str,
    id: &str,
    kind: &str,
) -> (u16, Bytes) {
    let body = event(kind);
    let (status, _, reply) = post(&proxy.url(path), &signed(secret, id, now(), &body), &body).await;
    (status, reply)
}

/// `send_kind` in a task of its own, returned once a `holding_upstream` holds the event
/// (`arrived`), so that its forward is known to be running; the task ends when `release`
/// is notified.
pub async fn delivering(
    url: String,
    arrived: &Notify,
    id: &str,
    kind: &str,
) -> tokio::task::JoinHandle<(u16, Option<String>, String)> {
    let (id, kind) = (id.to_owned(), kind.to_owned());
    let task = tokio::spawn(async move { send_kind(&url, &id, &kind).await });
    arrived.notified().await;
    task
}

/// One route `r` at `/hook` to `upstream`, with `limits` as the `[limits]` table's body.
pub fn one_route(upstream: &Upstream, limits: &str) -> String {
    format!(
        "[limits]\n{limits}\n[[routes]]\nname = \"r\"\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"{}\"\n",
        upstream.url("/")
    )
}

/// A signed `user.created` event with id `id` to `url`: status and body.
pub async fn send_event(url: &str, id: &str) -> (u16, String) {
    let (status, _, body) = send_kind(url, id, "user.created").await;
    (status, body)
}

/// A signed `kind` event with id `id` to `url`: status, `retry-after` and body (status 0
/// and the error when no complete answer came back).
pub async fn send_kind(url: &str, id: &str, kind: &str) -> (u16, Option<String>, String) {
    let body = event(kind);
    match try_post(url, &signed(SECRET, id, now(), &body), &body).await {
        Ok((status, headers, reply)) => (
            status,
            headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            String::from_utf8_lossy(&reply).into_owned(),
        ),
        Err(err) => (0, None, err.to_string()),
    }
}

/// Waits until a hookwall's Redis links are all up (they connect in the background).
pub async fn redis_up(admin: std::net::SocketAddr) {
    until("hookwall_redis_up to be 1", async || {
        let (_, _, body) = get(&format!("http://{admin}/metrics")).await;
        Metrics::parse(&String::from_utf8_lossy(&body)).get("hookwall_redis_up", &[]) == Some(1.0)
    })
    .await;
}

/// A CA and a certificate it signed for localhost / 127.0.0.1, all PEM.
pub struct Pki {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

pub fn pki(name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Two routes: `name` at `/hook` (Svix; its secrets `OTHER_SECRET` then `SECRET`) forwarding
/// `user.*` to `upstream` and dropping `session.*`, and `gh` at `/gh` (GitHub, signed with
/// `github_secret`) forwarding everything to `upstream`.
pub fn svix_and_github_routes(name: &str, upstream: &str, github_secret: &str) -> String {
    format!(
        r#"[[routes]]
name = "{name}"
path = "/hook"
secrets = ["{OTHER_SECRET}", "{SECRET}"]
  [[routes.rules]]
  events = ["user.*"]
  upstream = "{upstream}"
  [[routes.rules]]
  events = ["session.*"]
  action = "drop"
[[routes]]
name = "gh"
path = "/gh"
provider = "github"
secrets = ["{github_secret}"]
upstream = "{upstream}"
"#
    )
}
