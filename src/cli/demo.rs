//! `hookwall demo`: the whole job on loopback in one process. An echo backend, the proxy
//! with a built-in config (two routes, secret rotation, a drop rule, an upstream that fails
//! once) and a sender that signs like Svix; it prints what happened to each case (an
//! operator's forget and resend among them) and the metrics that moved, and where the
//! recent-deliveries page is, and exits 2 if any case did not behave as the contract says.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::demo_cases::{Case, DemoKey, BILLING, CASES, CLERK, STRIPE};
use super::signed::{new_id, svix_headers, unix_now, Provider};
use super::{code, exit};
use crate::chain::chain;
use crate::config::Config;
use crate::forward::client::{request_to, Client};
use crate::route::Upstream;
use crate::secret::{Key, BASE64};
use crate::sign::Signer;
use crate::Control;

/// The demo's proxy is on loopback: connecting takes no time.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

// Demo keys: made up for this demo, never used anywhere else.
const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const BILLING_SECRET: &str = "whsec_dGhpcyBpcyB0aGUgZGVtbydzIGJpbGxpbmc=";
const FORGED_SECRET: &str = "whsec_Zm9yZ2VkIGJ5IHNvbWVib2R5IGVsc2UhIQ==";
const ED25519_SEED: [u8; 32] = [42; 32];
/// Stripe's endpoint secrets are used as the string's bytes.
const STRIPE_SECRET: &str = "whsec_demo_stripe_endpoint_secret";
/// The demo's admin token, for its forget (contract §12).
const ADMIN_TOKEN: &str = "demo-admin-token-not-for-production";

/// What the echo backend saw: one (path, svix-id) per request.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A backend that answers 200 to everything, except that `/billing` fails each id's
/// first attempt with 503 (so the retry shows that a failed delivery is not lost).
async fn echo_backend() -> std::io::Result<(SocketAddr, Seen)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen: Seen = Arc::default();
    let failed_once: Arc<Mutex<HashSet<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (log, failed_once) = (log.clone(), failed_once.clone());
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let (log, failed_once) = (log.clone(), failed_once.clone());
                async move {
                    let path = request.uri().path().to_owned();
                    let id = header(request.headers(), "svix-id")
                        .or_else(|| header(request.headers(), "webhook-id"))
                        .unwrap_or_default();
                    let _ = request.into_body().collect().await;
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((path.clone(), id.clone()));
                    let first_try = failed_once
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id);
                    let status = if path == "/billing" && first_try {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    };
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(b"{\"received\":true}")));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, seen))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn demo_config(backend: SocketAddr, public_key: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"
[limits]
# The demo stops at once: no Kubernetes endpoints to wait for.
shutdown_delay = "0s"

[[routes]]
name = "clerk"
path = "/webhooks/clerk"
# Rotation: the new secret, the old one still accepted, and an ed25519 public key.
secrets = ["{NEW_SECRET}", "{OLD_SECRET}", "{public_key}"]
upstream = "http://{backend}/clerk"

[[routes]]
name = "billing"
path = "/webhooks/billing"
secrets = ["{BILLING_SECRET}"]
  [[routes.rules]]
  events = ["invoice.*"]
  upstream = "http://{backend}/billing"
  [[routes.rules]]
  events = ["session.*"]
  action = "drop"

# Stripe signs its own way; everything after verification is the same.
[[routes]]
name = "stripe"
path = "/webhooks/stripe"
provider = "stripe"
secrets = ["{STRIPE_SECRET}"]
upstream = "http://{backend}/stripe"
"#
    )
}

/// The outcome label a reply stands for: hookwall's own JSON, or the upstream's answer.
fn outcome_of(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let own = parsed
        .as_ref()
        .and_then(|v| v.get("outcome").or_else(|| v.get("error")));
    match own.and_then(|v| v.as_str()) {
        Some(label) => label.to_owned(),
        None if status.is_success() => "forwarded".into(),
        None => "upstream_rejected".into(),
    }
}

pub async fn run() -> ExitCode {
    match demo().await {
        Ok(true) => code(exit::OK),
        Ok(false) => code(exit::RUNTIME),
        Err(err) => {
            eprintln!("hookwall demo: {}", chain(&*err));
            code(exit::RUNTIME)
        }
    }
}

type DemoError = Box<dyn std::error::Error>;

async fn demo() -> Result<bool, DemoError> {
    let started = std::time::Instant::now();
    let (backend, seen) = echo_backend().await?;
    let keys = Keys::new();
    let config = Config::parse(
        &demo_config(backend, &keys.public),
        Path::new("(built-in demo config)"),
        &[],
    )?;
    let public = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let (proxy, admin_addr) = (public.local_addr()?, admin.local_addr()?);
    let (control, requests) = tokio::sync::mpsc::channel(1);
    let running = tokio::spawn(crate::run(config, public, admin, requests));

    println!("hookwall demo: backend {backend}, proxy {proxy}, admin {admin_addr}");
    println!(
        "recent deliveries, while the demo runs: http://{admin_addr}/ (page), \
         http://{admin_addr}/deliveries (JSON)\n"
    );
    let client = crate::forward::client::build(None)?;
    let all_ok = send_cases(&client, (proxy, admin_addr), &keys, &seen).await?;
    print_metrics(&client, admin_addr).await?;
    let _ = control.send(Control::Shutdown).await;
    running.await??;
    println!(
        "\n{} in {:.2?}",
        if all_ok {
            "every case behaved as the contract says"
        } else {
            "SOME CASES MISBEHAVED"
        },
        started.elapsed()
    );
    Ok(all_ok)
}

/// The demo's signers, and the `whpk_` public key the config verifies `v1a` with.
struct Keys {
    new: Signer,
    old: Signer,
    billing: Signer,
    forged: Signer,
    ed25519: Signer,
    public: String,
}

impl Keys {
    fn new() -> Keys {
        let ed25519 = ed25519_dalek::SigningKey::from_bytes(&ED25519_SEED);
        Keys {
            new: signer(NEW_SECRET),
            old: signer(OLD_SECRET),
            billing: signer(BILLING_SECRET),
            forged: signer(FORGED_SECRET),
            ed25519: signer(&format!(
                "whsk_{}",
                BASE64.encode(ed25519.to_keypair_bytes())
            )),
            public: format!("whpk_{}", BASE64.encode(ed25519.verifying_key().as_bytes())),
        }
    }

    /// The Svix signer of `key` (`DemoKey::Stripe` signs another way: `send_case`).
    fn signer(&self, key: DemoKey) -> &Signer {
        match key {
            DemoKey::Stripe => &self.new,
            DemoKey::New => &self.new,
            DemoKey::Old => &self.old,
            DemoKey::Billing => &self.billing,
            DemoKey::Forged => &self.forged,
            DemoKey::Ed25519 => &self.ed25519,
        }
    }
}

fn signer(secret: &str) -> Signer {
    let key = Key::decode(secret).expect("demo secrets decode");
    Signer::try_from(&key).expect("demo secrets sign")
}

/// Sends every case and prints a row for each: whether all behaved as expected.
async fn send_cases(
    client: &Client,
    (proxy, admin): (SocketAddr, SocketAddr),
    keys: &Keys,
    seen: &Seen,
) -> Result<bool, DemoError> {
    let mut ids: Vec<String> = Vec::new();
    let mut all_ok = true;
    println!(
        "{:<32} {:>6}  {:<20} {:<8} as expected",
        "case", "status", "outcome", "backend"
    );
    for case in &CASES {
        let id = match case.reuse_id_of {
            Some(i) => ids[i].clone(),
            None => new_id(),
        };
        ids.push(id.clone());
        if case.forget_first {
            let status = forget(client, admin, case, &id).await?;
            all_ok &= status == StatusCode::OK;
            println!(
                "{:<32} {:>6}  {:<20} {:<8} {}",
                "operator: POST /dedup/forget",
                status.as_u16(),
                if status == StatusCode::OK {
                    "forgotten"
                } else {
                    "not forgotten"
                },
                "-",
                if status == StatusCode::OK {
                    "yes"
                } else {
                    "NO: expected 200"
                }
            );
        }
        let before = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        let (status, outcome) = send_case(client, proxy, keys, case, &id).await?;
        let reached = seen.lock().unwrap_or_else(|e| e.into_inner()).len() > before;
        let ok = (status, outcome.as_str(), reached) == case.expect;
        all_ok &= ok;
        let (status_wanted, outcome_wanted, reached_wanted) = case.expect;
        println!(
            "{:<32} {:>6}  {:<20} {:<8} {}",
            case.name,
            status,
            outcome,
            if reached { "yes" } else { "no" },
            if ok {
                "yes".to_owned()
            } else {
                format!("NO: expected {status_wanted} {outcome_wanted} backend={reached_wanted}")
            }
        );
    }
    Ok(all_ok)
}

/// One case's request, signed as it says: the status and the outcome it stands for.
async fn send_case(
    client: &Client,
    proxy: SocketAddr,
    keys: &Keys,
    case: &Case,
    id: &str,
) -> Result<(u16, String), DemoError> {
    let timestamp = unix_now().saturating_add_signed(case.timestamp_offset);
    let (body, signed) = match case.key {
        DemoKey::Stripe => {
            let body = Provider::Stripe.body(case.event, id, timestamp);
            let signing = (id, case.event, timestamp);
            let headers = Provider::Stripe.headers(STRIPE_SECRET, case.family, signing, &body)?;
            (body, headers)
        }
        key => {
            let body = Provider::Svix.body(case.event, id, timestamp);
            let headers = svix_headers(keys.signer(key), case.family, id, timestamp, &body);
            (body, headers)
        }
    };
    let endpoint = Upstream::parse(&format!("http://{proxy}{}", case.path))?;
    let mut request = request_to(&endpoint, Method::POST, Bytes::from(body));
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.extend(signed);
    let (response, connection) = client
        .send(&endpoint.origin, request, CONNECT_TIMEOUT)
        .await?;
    let status = response.status();
    let reply = response.into_body().collect().await?.to_bytes();
    connection.reuse();
    Ok((status.as_u16(), outcome_of(status, &reply)))
}

/// Forgets case `case`'s delivered `id` through the admin side, as an operator would
/// (`hookwall forget --route clerk ID`): the status.
async fn forget(
    client: &Client,
    admin: SocketAddr,
    case: &Case,
    id: &str,
) -> Result<StatusCode, DemoError> {
    let route = CASE_ROUTES
        .iter()
        .find(|(path, _)| *path == case.path)
        .map_or("clerk", |(_, route)| route);
    let endpoint = Upstream::parse(&format!("http://{admin}/dedup/forget"))?;
    let body = serde_json::json!({ "route": route, "key": id }).to_string();
    let mut request = request_to(&endpoint, Method::POST, Bytes::from(body));
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}"))?,
    );
    let (response, _connection) = client
        .send(&endpoint.origin, request, CONNECT_TIMEOUT)
        .await?;
    Ok(response.status())
}

/// The demo's routes by path.
const CASE_ROUTES: [(&str, &str); 3] = [(CLERK, "clerk"), (BILLING, "billing"), (STRIPE, "stripe")];

/// Prints the metrics that moved.
async fn print_metrics(client: &Client, admin: SocketAddr) -> Result<(), DemoError> {
    let scrape = Upstream::parse(&format!("http://{admin}/metrics"))?;
    let request = request_to(&scrape, Method::GET, Bytes::new());
    let (response, _connection) = client
        .send(&scrape.origin, request, CONNECT_TIMEOUT)
        .await?;
    let metrics = response.into_body().collect().await?.to_bytes();
    println!("\nmetrics that moved (from http://{admin}/metrics):");
    for line in String::from_utf8_lossy(&metrics).lines() {
        let moved = !line.starts_with('#')
            && !line.contains("_bucket")
            && !line.contains("_sum")
            && !line.ends_with(" 0")
            && !line.starts_with("hookwall_build_info")
            && !line.starts_with("hookwall_last_verified");
        if moved {
            println!("  {line}");
        }
    }
    Ok(())
}
