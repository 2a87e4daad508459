//! `hookwall send`: signs a body the way Svix does and POSTs it, so a route can be tried
//! locally without a tunnel. Prints the status line first, then what was sent and received.

use std::io::Read as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt as _;

use super::{code, exit};
use crate::route::Upstream;
use crate::secret::{Key, SecretSource};
use crate::sign::Signer;

/// A realistic Clerk `user.created` event (2.9 KB); `--event` changes its `type`.
pub const CLERK_EVENT: &str = include_str!("clerk_user_created.json");

/// How long `send` waits for the whole exchange.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Which header names to sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeaderFamily {
    /// `svix-id`, `svix-timestamp`, `svix-signature` (Svix, Clerk).
    Svix,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` (Standard Webhooks).
    Webhook,
}

impl HeaderFamily {
    pub fn names(self) -> [&'static str; 3] {
        match self {
            HeaderFamily::Svix => ["svix-id", "svix-timestamp", "svix-signature"],
            HeaderFamily::Webhook => ["webhook-id", "webhook-timestamp", "webhook-signature"],
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Where to POST, e.g. http://127.0.0.1:8080/webhooks/clerk
    pub url: String,
    /// The signing secret, as in the config: env:NAME, file:PATH or the value
    /// (whsec_… signs v1; whsk_… signs v1a)
    #[arg(long)]
    pub secret: String,
    /// Event type of the built-in Clerk-shaped body [default: user.created]
    #[arg(long, conflicts_with = "body")]
    pub event: Option<String>,
    /// Send this file's bytes instead ("-" reads standard input)
    #[arg(long)]
    pub body: Option<String>,
    /// Message id [default: a new msg_… id]
    #[arg(long)]
    pub id: Option<String>,
    /// Unix timestamp in seconds [default: now]
    #[arg(long)]
    pub timestamp: Option<u64>,
    /// Header names to use
    #[arg(long, value_enum, default_value = "svix")]
    pub headers: HeaderFamily,
}

/// Builds the Clerk-shaped body with the given event type.
pub fn clerk_event(event_type: &str) -> Vec<u8> {
    let mut event: serde_json::Value =
        serde_json::from_str(CLERK_EVENT).expect("the built-in event is JSON");
    event["type"] = serde_json::Value::String(event_type.to_owned());
    serde_json::to_vec(&event).expect("a JSON value serializes")
}

/// A fresh message id: time and process make it unique enough for local testing.
pub fn new_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("msg_{nanos:x}{:x}{n:x}", std::process::id())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The three signed headers for one message.
pub fn signed_headers(
    signer: &Signer,
    family: HeaderFamily,
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> HeaderMap {
    let [id_name, ts_name, sig_name] = family.names();
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    put(id_name, id.to_owned());
    put(ts_name, timestamp.to_string());
    put(sig_name, signer.sign(id, timestamp, body));
    headers
}

/// Reads a `--secret` value into a signer.
pub fn signer_from(spec: &str) -> Result<Signer, String> {
    let source = SecretSource::parse(spec, std::path::Path::new("."));
    let value = source
        .resolve()
        .map_err(|e| format!("--secret {source}: {e}"))?;
    let key = Key::decode(&value).map_err(|e| format!("--secret {source}: {e}"))?;
    Signer::try_from(&key).map_err(|e| format!("--secret {source}: {e}"))
}

pub async fn run(args: SendArgs) -> ExitCode {
    let signer = match signer_from(&args.secret) {
        Ok(signer) => signer,
        Err(message) => {
            eprintln!("hookwall send: {message}");
            return code(exit::CONFIG);
        }
    };
    let body = match &args.body {
        None => clerk_event(args.event.as_deref().unwrap_or("user.created")),
        Some(path) => match read_body(path) {
            Ok(body) => body,
            Err(err) => {
                eprintln!("hookwall send: --body {path}: {err}");
                return code(exit::CONFIG);
            }
        },
    };
    let upstream = match Upstream::parse(&args.url) {
        Ok(upstream) => upstream,
        Err(message) => {
            eprintln!("hookwall send: {message}");
            return code(exit::CONFIG);
        }
    };
    let id = args.id.clone().unwrap_or_else(new_id);
    let timestamp = args.timestamp.unwrap_or_else(unix_now);

    let mut request =
        crate::forward::client::request_to(&upstream, Method::POST, Bytes::from(body.clone()));
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("hookwall-send/", env!("CARGO_PKG_VERSION"))),
    );
    headers.extend(signed_headers(&signer, args.headers, &id, timestamp, &body));
    let sent = request.headers().clone();

    let client = match crate::forward::client::build(None) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("hookwall send: {err}");
            return code(exit::RUNTIME);
        }
    };
    let exchange = async {
        let (response, _connection) = client
            .send(&upstream.origin, request, SEND_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, bytes))
    };
    let (parts, response_body) = match tokio::time::timeout(SEND_TIMEOUT, exchange).await {
        Ok(Ok(done)) => done,
        Ok(Err(message)) => {
            eprintln!("hookwall send: {}: {message}", args.url);
            return code(exit::RUNTIME);
        }
        Err(_) => {
            eprintln!(
                "hookwall send: {}: no answer within {SEND_TIMEOUT:?}",
                args.url
            );
            return code(exit::RUNTIME);
        }
    };

    println!(
        "{} {}",
        parts.status.as_str(),
        parts.status.canonical_reason().unwrap_or("")
    );
    println!("> POST {}", args.url);
    for (name, value) in &sent {
        println!("> {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    println!("> ({} body bytes)", body.len());
    for (name, value) in &parts.headers {
        println!("< {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    println!();
    println!("{}", String::from_utf8_lossy(&response_body));
    if parts.status.is_success() {
        code(exit::OK)
    } else {
        code(exit::REJECTED)
    }
}

fn read_body(path: &str) -> std::io::Result<Vec<u8>> {
    if path == "-" {
        let mut body = Vec::new();
        std::io::stdin().read_to_end(&mut body)?;
        Ok(body)
    } else {
        std::fs::read(path)
    }
}
