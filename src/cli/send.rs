//! `hookwall send`: signs a body the way Svix (or Stripe, GitHub, Shopify) does and POSTs
//! it, so a route can be tried locally without a tunnel. Prints the status line first, then
//! what was sent and received.

use std::io::Read as _;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt as _;

use super::signed::{unix_now, HeaderFamily, Provider};
use super::{code, exit};
use crate::chain::chain;
use crate::route::Upstream;
use crate::secret::SecretSource;

/// How long `send` waits for the whole exchange.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Where to POST, e.g. http://127.0.0.1:8080/webhooks/clerk
    pub url: String,
    /// The signing secret, as in the config: env:NAME, file:PATH or the value (svix:
    /// whsec_… signs v1, whsk_… signs v1a; other providers: the string's bytes)
    #[arg(long)]
    pub secret: String,
    /// Sign as this provider does, with its headers and a body of its shape
    #[arg(long, value_enum, default_value = "svix")]
    pub provider: Provider,
    /// Event type of the built-in body [default: the provider's: user.created,
    /// invoice.paid, pull_request.opened, orders/create]
    #[arg(long, conflicts_with = "body")]
    pub event: Option<String>,
    /// Send this file's bytes instead ("-" reads standard input)
    #[arg(long)]
    pub body: Option<String>,
    /// Message id (Stripe: the body's `id`) [default: a new one]
    #[arg(long)]
    pub id: Option<String>,
    /// Unix timestamp in seconds [default: now]
    #[arg(long)]
    pub timestamp: Option<u64>,
    /// Header names to use (svix only)
    #[arg(long, value_enum, default_value = "svix")]
    pub headers: HeaderFamily,
}

/// Resolves a `--secret` (`env:`, `file:` or the value).
fn secret_from(spec: &str) -> Result<String, String> {
    let source = SecretSource::parse(spec, std::path::Path::new("."));
    source
        .resolve()
        .map_err(|e| format!("--secret {source}: {}", chain(&e)))
}

/// What `send` sends: the body and the headers, signed as `args.provider` does.
fn signed_request(args: &SendArgs) -> Result<(Vec<u8>, HeaderMap), String> {
    let secret = secret_from(&args.secret)?;
    let provider = args.provider;
    let event = args.event.as_deref().unwrap_or(provider.default_event());
    let id = args.id.clone().unwrap_or_else(|| provider.new_id());
    let timestamp = args.timestamp.unwrap_or_else(unix_now);
    let body = match &args.body {
        None => provider.body(event, &id, timestamp),
        Some(path) => read_body(path).map_err(|err| format!("--body {path}: {err}"))?,
    };
    let headers = provider
        .headers(&secret, args.headers, (&id, event, timestamp), &body)
        .map_err(|e| format!("--secret: {e}"))?;
    Ok((body, headers))
}

pub async fn run(args: SendArgs) -> ExitCode {
    let (body, signed) = match signed_request(&args) {
        Ok(signed) => signed,
        Err(message) => {
            eprintln!("hookwall send: {message}");
            return code(exit::CONFIG);
        }
    };
    let upstream = match Upstream::parse(&args.url) {
        Ok(upstream) => upstream,
        Err(err) => {
            eprintln!("hookwall send: {}", chain(&err));
            return code(exit::CONFIG);
        }
    };
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
    headers.extend(signed);
    let sent = request.headers().clone();

    let client = match crate::forward::client::build(None) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("hookwall send: {}", chain(&err));
            return code(exit::RUNTIME);
        }
    };
    let exchange = async {
        let (response, _connection) = client
            .send(&upstream.origin, request, SEND_TIMEOUT)
            .await
            .map_err(|e| chain(&e))?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| format!("reading the response: {}", chain(&e)))?
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
    print_exchange(&args.url, &sent, body.len(), &parts, &response_body);
    if parts.status.is_success() {
        code(exit::OK)
    } else {
        code(exit::REJECTED)
    }
}

/// The status line first, then what was sent and what came back.
fn print_exchange(
    url: &str,
    sent: &HeaderMap,
    body_len: usize,
    parts: &http::response::Parts,
    response_body: &[u8],
) {
    println!(
        "{} {}",
        parts.status.as_str(),
        parts.status.canonical_reason().unwrap_or("")
    );
    println!("> POST {url}");
    for (name, value) in sent {
        println!("> {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    println!("> ({body_len} body bytes)");
    for (name, value) in &parts.headers {
        println!("< {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    println!();
    println!("{}", String::from_utf8_lossy(response_body));
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
