//! `hookwall forget --route R KEY`: asks the running proxy's admin side to forget a
//! delivered id (`POST /dedup/forget`, contract §12), so that the sender's next resend is
//! forwarded. The admin side's address and token come from the config unless given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;

use super::{code, exit};
use crate::chain::chain;
use crate::config::{Config, CONFIG_ENV};
use crate::route::Upstream;
use crate::secret::SecretSource;

/// How long `forget` waits for the whole exchange: the admin side answers within
/// `redis.timeout`.
const FORGET_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of an answer read: the admin side's are a few bytes of JSON.
const MAX_ANSWER: usize = 4096;

#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    /// The route's name (`name` in [[routes]])
    #[arg(long)]
    pub route: String,
    /// The dedup key: the message id, or for GitHub and Shopify routes the sha256:…
    /// digest (the `key` of /deliveries and of the log lines)
    pub key: String,
    /// Config file, for admin.addr and admin.token [default: $HOOKWALL_CONFIG, else
    /// hookwall.toml]
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// The admin side's URL, e.g. http://127.0.0.1:9090 [default: admin.addr, 0.0.0.0 as
    /// 127.0.0.1]
    #[arg(long)]
    pub admin: Option<String>,
    /// The admin token, as in the config: env:NAME, file:PATH or the value (prefer env:
    /// or file:: a value on the command line shows in the process list and the shell's
    /// history) [default: admin.token]
    #[arg(long)]
    pub token: Option<String>,
}

impl ForgetArgs {
    fn config_file(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("hookwall.toml"))
    }
}

pub async fn run(args: ForgetArgs) -> ExitCode {
    let (url, token) = match target(&args) {
        Ok(target) => target,
        Err(message) => {
            eprintln!("hookwall forget: {message}");
            return code(exit::CONFIG);
        }
    };
    let answer = tokio::time::timeout(FORGET_TIMEOUT, ask(&url, &token, &args));
    let (status, body) = match answer.await {
        Ok(Ok(answer)) => answer,
        Ok(Err(message)) => {
            eprintln!("hookwall forget: cannot reach the admin side at {url}: {message}");
            return code(exit::RUNTIME);
        }
        Err(_) => {
            eprintln!("hookwall forget: {url}: no answer within {FORGET_TIMEOUT:?}");
            return code(exit::RUNTIME);
        }
    };
    let (route, key) = (&args.route, &args.key);
    let (exit, line) = match (status, body.as_str()) {
        (StatusCode::OK, _) => (
            exit::OK,
            format!("forgotten: {key} on route {route}; the next request with it is forwarded"),
        ),
        (StatusCode::NOT_FOUND, r#"{"error":"unknown_route"}"#) => (
            exit::CONFIG,
            format!("no route named {route:?} in the running proxy's config"),
        ),
        (StatusCode::NOT_FOUND, _) => (
            exit::REJECTED,
            format!("not remembered: {key} on route {route} (not delivered within the ttl)"),
        ),
        (StatusCode::CONFLICT, _) => (
            exit::REJECTED,
            format!("being delivered now: {key} on route {route}; nothing changed, try again"),
        ),
        (StatusCode::UNAUTHORIZED, _) => (
            exit::RUNTIME,
            "refused: the admin token is not the running proxy's admin.token".to_owned(),
        ),
        (StatusCode::FORBIDDEN, _) => (
            exit::RUNTIME,
            "refused: forget is disabled (the running proxy has no admin.token)".to_owned(),
        ),
        (StatusCode::SERVICE_UNAVAILABLE, _) => (
            exit::RUNTIME,
            "the proxy cannot reach Redis: nothing changed; try again".to_owned(),
        ),
        (status, body) => (exit::RUNTIME, format!("unexpected answer: {status} {body}")),
    };
    if exit == exit::OK || exit == exit::REJECTED {
        println!("{line}");
    } else {
        eprintln!("hookwall forget: {line}");
    }
    code(exit)
}

/// The URL to POST to and the token: from the arguments, else from the config (loaded
/// only when one of them is missing).
fn target(args: &ForgetArgs) -> Result<(String, String), String> {
    let url = |base: &str| {
        let base = base.trim_end_matches('/');
        if base.contains("://") {
            format!("{base}/dedup/forget")
        } else {
            format!("http://{base}/dedup/forget")
        }
    };
    if let (Some(admin), Some(token)) = (&args.admin, &args.token) {
        return Ok((url(admin), resolve(token)?));
    }
    let config = Config::load(&args.config_file()).map_err(|err| err.to_string())?;
    let base = match &args.admin {
        Some(admin) => admin.clone(),
        None => reachable(config.admin_addr).to_string(),
    };
    let token = match (&args.token, config.admin_token) {
        (Some(spec), _) => resolve(spec)?,
        (None, Some(token)) => token.0,
        (None, None) => {
            return Err(format!(
                "{}: admin.token is not set (forget is disabled), and --token is not given",
                config.file.display()
            ))
        }
    };
    Ok((url(&base), token))
}

/// Resolves a `--token` (`env:`, `file:` or the value).
fn resolve(spec: &str) -> Result<String, String> {
    let source = SecretSource::parse(spec, std::path::Path::new("."));
    source
        .resolve()
        .map_err(|err| format!("--token {source}: {}", chain(&err)))
}

/// Where a client reaches a listener bound to `addr`: the loopback of its family for
/// an unspecified address (0.0.0.0, ::).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// POSTs the forget: the status and (the start of) the body.
async fn ask(url: &str, token: &str, args: &ForgetArgs) -> Result<(StatusCode, String), String> {
    let upstream = Upstream::parse(url).map_err(|err| chain(&err))?;
    let body = serde_json::json!({ "route": args.route, "key": args.key }).to_string();
    let mut request =
        crate::forward::client::request_to(&upstream, Method::POST, Bytes::from(body));
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token cannot be sent in a header".to_owned())?;
    let headers = request.headers_mut();
    headers.insert(header::AUTHORIZATION, bearer);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("hookwall-forget/", env!("CARGO_PKG_VERSION"))),
    );
    let client = crate::forward::client::build(None).map_err(|err| chain(&err))?;
    let (response, _connection) = client
        .send(&upstream.origin, request, FORGET_TIMEOUT)
        .await
        .map_err(|err| chain(&err))?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|err| format!("reading the answer: {err}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_admin_address_is_reached_on_loopback() {
        let at = |text: &str| reachable(text.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:9090"), "127.0.0.1:9090");
        assert_eq!(at("[::]:9090"), "[::1]:9090");
        assert_eq!(at("10.0.0.7:9090"), "10.0.0.7:9090");
    }
}
