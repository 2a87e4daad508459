//! Other senders (contract §10) and shadow mode (§11), end to end: each provider's requests
//! signed by its own library (Stripe's and Slack's on PyPI, octokit's on npm, Shopify's
//! documented HMAC), sent through hookwall to a backend that verifies them again with the
//! same library, so a scheme checked only against hookwall's own signer proves nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::helpers::*;

const STRIPE_SECRET: &str = "whsec_hookwall_test_stripe_endpoint";
pub(crate) const GITHUB_SECRET: &str = "It's a Secret to Everybody";
pub(crate) const SHOPIFY_SECRET: &str = "hookwall-test-shopify-client-secret";
pub(crate) const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn support(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

/// Runs `command` with `input` (JSON) on its stdin: what it prints, as JSON.
fn run_json(command: &mut Command, input: &Value) -> Value {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the providers' libraries (scripts/test.sh installs them)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{command:?} failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Headers made by Stripe's, Slack's or Shopify's signing (`providers.py sign`).
pub(crate) fn python_sign(requests: Value) -> Vec<Vec<(String, String)>> {
    let signed = run_json(
        Command::new("python3")
            .arg(support("providers.py"))
            .arg("sign"),
        &requests,
    );
    signed
        .as_array()
        .unwrap()
        .iter()
        .map(|headers| {
            let headers = headers.as_object().unwrap().iter();
            headers
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .collect()
}

/// `X-Hub-Signature-256` values made by octokit's `sign`.
pub(crate) fn github_sign(requests: Value) -> Vec<String> {
    let signed = run_json(
        Command::new("node").arg(support("github.mjs")).arg("sign"),
        &requests,
    );
    let signed = signed.as_array().unwrap().iter();
    signed.map(|s| s.as_str().unwrap().to_owned()).collect()
}

/// The Python backend that verifies Stripe, Slack and Shopify requests again.
fn python_backend() -> Helper {
    Helper::start(
        Command::new("python3")
            .arg(support("providers.py"))
            .arg("serve")
            .env("STRIPE_SECRET", STRIPE_SECRET)
            .env("SLACK_SECRET", SLACK_SECRET)
            .env("SHOPIFY_SECRET", SHOPIFY_SECRET),
        "the providers' backend (python3 with stripe and slack_sdk)",
    )
}

/// The Node backend that verifies GitHub requests again with octokit.
fn github_backend() -> Helper {
    Helper::start(
        Command::new("node")
            .arg(support("github.mjs"))
            .arg("serve")
            .env("GITHUB_SECRET", GITHUB_SECRET),
        "the GitHub backend (node with @octokit/webhooks-methods)",
    )
}

/// One route `r` at `/hook` with `settings` (provider, its table) and `secret`.
fn route(settings: &str, secret: &str, upstream: &str) -> String {
    format!(
        "[[routes]]\nname = \"r\"\npath = \"/hook\"\nsecrets = [{secret:?}]\nupstream = \"{upstream}\"\n{settings}\n"
    )
}

/// POSTs `body` with `headers`: the status and the reply as JSON (`Null` if it is not).
async fn deliver_to(proxy: &Proxy, headers: &[(String, String)], body: &str) -> (u16, Value) {
    let (status, _, reply) = post(&proxy.url("/hook"), headers, body.as_bytes()).await;
    (
        status,
        serde_json::from_slice(&reply).unwrap_or(Value::Null),
    )
}

fn refused(label: &str) -> Value {
    json!({ "error": label })
}

fn verified_as(event_type: &str) -> impl Fn(&Value) -> bool + '_ {
    move |reply| reply["verified"] == json!(true) && reply["event_type"] == json!(event_type)
}

fn stripe_event(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","object":"event","type":"invoice.paid","data":{{"object":{{"id":"in_1"}}}}}}"#
    )
}

/// Stripe's own library signs; hookwall verifies, dedups by the event id and forwards the
/// bytes unchanged (the backend verifies again with the same library); stale and future
/// timestamps, a header with only `v0`, one without `t=`, the wrong secret and a changed
/// body are each refused as §10 says; a header with two `v1` entries (a rotation) passes.
#[tokio::test]
async fn stripe_events_signed_by_stripes_own_library() {
    let backend = python_backend();
    let upstream = format!("http://127.0.0.1:{}/stripe", backend.port);
    let proxy = Proxy::start(&route("provider = \"stripe\"", STRIPE_SECRET, &upstream)).await;
    let now = now();
    let sign = |id: &str, secret: &str, timestamp: u64| json!({"provider": "stripe", "secret": secret, "body": stripe_event(id), "timestamp": timestamp});
    let signed = python_sign(json!([
        sign("evt_1", STRIPE_SECRET, now),
        sign("evt_1", STRIPE_SECRET, now + 1),
        sign("evt_2", STRIPE_SECRET, now - 600),
        sign("evt_3", STRIPE_SECRET, now + 600),
        sign("evt_4", "whsec_not_this_one", now),
        sign("evt_5", STRIPE_SECRET, now),
        sign("evt_6", STRIPE_SECRET, now),
        sign("evt_8", "whsec_not_this_one", now),
        sign("evt_8", STRIPE_SECRET, now),
    ]));
    let header = |i: usize| signed[i][0].1.clone();
    let with = |value: String| vec![("stripe-signature".to_owned(), value)];

    let (status, reply) = deliver_to(&proxy, &with(header(0)), &stripe_event("evt_1")).await;
    assert_eq!(status, 200, "{reply}");
    assert!(verified_as("invoice.paid")(&reply), "{reply}");
    let again = deliver_to(&proxy, &with(header(1)), &stripe_event("evt_1")).await;
    assert_eq!(again, (200, json!({"outcome": "duplicate"})));
    let refusals = [
        (
            with(header(2)),
            stripe_event("evt_2"),
            401,
            "timestamp_too_old",
        ),
        (
            with(header(3)),
            stripe_event("evt_3"),
            401,
            "timestamp_too_new",
        ),
        (
            with(header(4)),
            stripe_event("evt_4"),
            401,
            "invalid_signature",
        ),
        (
            with(header(5)),
            stripe_event("evt_5").replace("in_1", "in_2"),
            401,
            "invalid_signature",
        ),
        (
            with(header(6).replace("v1=", "v0=")),
            stripe_event("evt_6"),
            401,
            "invalid_signature",
        ),
        (
            with(header(6).split_once(',').unwrap().1.to_owned()),
            stripe_event("evt_6"),
            400,
            "missing_header",
        ),
        (Vec::new(), stripe_event("evt_6"), 400, "missing_header"),
    ];
    for (headers, body, status, label) in refusals {
        assert_eq!(
            deliver_to(&proxy, &headers, &body).await,
            (status, refused(label)),
            "{headers:?}"
        );
    }
    // A rotation: a signature by another secret, then the right one.
    let right = header(8);
    let (_, right_v1) = right.split_once(',').unwrap();
    let (status, reply) = deliver_to(
        &proxy,
        &with(format!("{},{right_v1}", header(7))),
        &stripe_event("evt_8"),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(verified_as("invoice.paid")(&reply), "{reply}");

    let (_, _, received) = get(&format!("http://127.0.0.1:{}/received", backend.port)).await;
    let received: Vec<Value> = serde_json::from_slice(&received).unwrap();
    assert_eq!(
        received.len(),
        2,
        "only the two verified events reached the backend"
    );
    let m = proxy.metrics().await;
    assert_eq!(m.requests("r", "forwarded"), 2.0);
    assert_eq!(m.events("r", "invoice.paid"), Some(3.0));
    proxy.shutdown().await;
}

/// octokit signs; hookwall verifies `X-Hub-Signature-256`, types the event as octokit
/// names it, dedups redeliveries (by the signed body: `signed.rs`); the SHA-1 header alone, or no
/// delivery id, is `missing_header`.
#[tokio::test]
async fn github_deliveries_signed_by_octokit() {
    let backend = github_backend();
    let upstream = format!("http://127.0.0.1:{}/github", backend.port);
    let proxy = Proxy::start(&route("provider = \"github\"", GITHUB_SECRET, &upstream)).await;
    let opened = r#"{"action":"opened","number":1,"pull_request":{"id":1}}"#;
    let push = r#"{"ref":"refs/heads/main","commits":[]}"#;
    let signatures = github_sign(json!([
        {"secret": GITHUB_SECRET, "body": opened},
        {"secret": GITHUB_SECRET, "body": push},
    ]));
    let headers = |event: &str, delivery: Option<&str>, signature: Option<&str>| {
        let mut headers = vec![("x-github-event".to_owned(), event.to_owned())];
        if let Some(delivery) = delivery {
            headers.push(("x-github-delivery".to_owned(), delivery.to_owned()));
        }
        if let Some(signature) = signature {
            headers.push(("x-hub-signature-256".to_owned(), signature.to_owned()));
        }
        headers
    };
    let pr = headers("pull_request", Some("d-1"), Some(&signatures[0]));
    let (status, reply) = deliver_to(&proxy, &pr, opened).await;
    assert_eq!(status, 200, "{reply}");
    assert!(verified_as("pull_request.opened")(&reply), "{reply}");
    let (status, reply) = deliver_to(
        &proxy,
        &headers("push", Some("d-2"), Some(&signatures[1])),
        push,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(verified_as("push")(&reply), "{reply}");
    assert_eq!(
        deliver_to(&proxy, &pr, opened).await,
        (200, json!({"outcome": "duplicate"})),
        "a redelivery"
    );
    let mut sha1_only = headers("pull_request", Some("d-3"), None);
    sha1_only.push(("x-hub-signature".to_owned(), "sha1=0123".to_owned()));
    let no_delivery = headers("pull_request", None, Some(&signatures[0]));
    for headers in [sha1_only, no_delivery] {
        assert_eq!(
            deliver_to(&proxy, &headers, opened).await,
            (400, refused("missing_header"))
        );
    }
    assert_eq!(proxy.metrics().await.requests("r", "forwarded"), 2.0);
    proxy.shutdown().await;
}

/// Shopify's documented HMAC: verified, typed by `X-Shopify-Topic`, a redelivery deduped
/// (by the signed body: `signed.rs`); a byte changed is refused.
#[tokio::test]
async fn shopify_webhooks_signed_as_documented() {
    let backend = python_backend();
    let upstream = format!("http://127.0.0.1:{}/shopify", backend.port);
    let proxy = Proxy::start(&route("provider = \"shopify\"", SHOPIFY_SECRET, &upstream)).await;
    let order = r#"{"id":820982911946154508,"email":"jon@example.com","total_price":"10.00"}"#;
    let signed =
        python_sign(json!([{"provider": "shopify", "secret": SHOPIFY_SECRET, "body": order}]));
    let mut headers = signed[0].clone();
    headers.push(("x-shopify-topic".to_owned(), "orders/create".to_owned()));
    headers.push((
        "x-shopify-webhook-id".to_owned(),
        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".to_owned(),
    ));
    let (status, reply) = deliver_to(&proxy, &headers, order).await;
    assert_eq!(status, 200, "{reply}");
    assert!(verified_as("orders/create")(&reply), "{reply}");
    assert_eq!(
        deliver_to(&proxy, &headers, order).await,
        (200, json!({"outcome": "duplicate"}))
    );
    let changed = order.replace("10.00", "11.00");
    assert_eq!(
        deliver_to(&proxy, &headers, &changed).await,
        (401, refused("invalid_signature"))
    );
    proxy.shutdown().await;
}

/// A declared `hmac` scheme shaped like Slack's, signed by `slack_sdk`: verified (the
/// backend verifies again), typed by `json:/event/type`, deduped by `json:/event_id`; a
/// request ten minutes old is refused.
#[tokio::test]
async fn a_declared_hmac_scheme_verifies_what_slack_sdk_signs() {
    let backend = python_backend();
    let upstream = format!("http://127.0.0.1:{}/slack", backend.port);
    let declared = r#"provider = "hmac"
  [routes.hmac]
  signature_header = "X-Slack-Signature"
  signature_prefix = "v0="
  encoding = "hex"
  algorithm = "sha256"
  signed_content = "v0:{timestamp}:{body}"
  timestamp_header = "X-Slack-Request-Timestamp"
  id = "json:/event_id"
  event_type = "json:/event/type""#;
    let proxy = Proxy::start(&route(declared, SLACK_SECRET, &upstream)).await;
    let body = r#"{"type":"event_callback","team_id":"T1","event":{"type":"app_mention","text":"hi"},"event_id":"Ev08MFMKH6"}"#;
    let now = now();
    let sign = |timestamp: u64| json!({"provider": "slack", "secret": SLACK_SECRET, "body": body, "timestamp": timestamp});
    let signed = python_sign(json!([sign(now), sign(now + 1), sign(now - 600)]));
    let (status, reply) = deliver_to(&proxy, &signed[0], body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(verified_as("app_mention")(&reply), "{reply}");
    assert_eq!(
        deliver_to(&proxy, &signed[1], body).await,
        (200, json!({"outcome": "duplicate"}))
    );
    assert_eq!(
        deliver_to(&proxy, &signed[2], body).await,
        (401, refused("timestamp_too_old"))
    );
    proxy.shutdown().await;
}

/// A shadow route forwards every request, each with the verdict enforcing would have
/// given (and counted by it), keeps dedup as if enforcing, and still refuses what its own
/// bounds refuse (413 is 413, not forwarded).
#[tokio::test]
async fn a_shadow_route_forwards_everything_with_its_verdict() {
    let upstream = Upstream::ok().await;
    let settings = "enforce = false";
    let mut toml = route(settings, SECRET, &upstream.url("/"));
    toml = format!("[limits]\nmax_body_bytes = 4096\n{toml}");
    let proxy = Proxy::start(&toml).await;
    let body = event("user.created");
    let valid = signed(SECRET, "msg_1", now(), &body);
    let forged = signed(OTHER_SECRET, "msg_2", now(), &body);
    for headers in [&valid, &valid, &forged, &Vec::new()] {
        let (status, _, _) = post(&proxy.url("/hook"), headers, &body).await;
        assert_eq!(status, 200, "the upstream's answer");
    }
    let verdicts: Vec<String> = upstream
        .received()
        .iter()
        .map(|r| r.headers["hookwall-verdict"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        verdicts,
        [
            "forwarded",
            "duplicate",
            "invalid_signature",
            "missing_header"
        ]
    );
    let (status, _, _) = post(&proxy.url("/hook"), &valid, &[b'x'; 5000]).await;
    assert_eq!(status, 413);
    assert_eq!(upstream.count(), 4);
    let m = proxy.metrics().await;
    for verdict in [
        "forwarded",
        "duplicate",
        "invalid_signature",
        "missing_header",
    ] {
        let counted = m.get(
            "hookwall_shadow_verdicts_total",
            &[("route", "r"), ("verdict", verdict)],
        );
        assert_eq!(counted, Some(1.0), "{verdict}");
    }
    assert_eq!(m.requests("r", "forwarded"), 4.0);
    assert_eq!(m.requests("r", "body_too_large"), 1.0);
    proxy.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_hookwall");

/// `hookwall send --provider P` signs as P does: what it sends passes P's own library.
#[tokio::test]
async fn send_signs_as_each_provider_does() {
    let python = python_backend();
    let github = github_backend();
    let cases = [
        (
            "stripe",
            STRIPE_SECRET,
            format!("http://127.0.0.1:{}/stripe", python.port),
        ),
        (
            "shopify",
            SHOPIFY_SECRET,
            format!("http://127.0.0.1:{}/shopify", python.port),
        ),
        (
            "github",
            GITHUB_SECRET,
            format!("http://127.0.0.1:{}/github", github.port),
        ),
    ];
    for (provider, secret, url) in cases {
        let out = Command::new(BIN)
            .args(["send", &url, "--provider", provider, "--secret", secret])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{provider}: {stdout}");
        assert!(stdout.starts_with("200 OK"), "{provider}: {stdout}");
        let wrong = Command::new(BIN)
            .args([
                "send",
                &url,
                "--provider",
                provider,
                "--secret",
                "not-the-secret",
            ])
            .output()
            .unwrap();
        assert_eq!(
            wrong.status.code(),
            Some(3),
            "{provider} with the wrong secret"
        );
    }
}
