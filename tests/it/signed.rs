//! What decides is signed (contract §10): a provider whose id or event type header is not
//! covered by its signature (GitHub, Shopify, a declared `hmac` with a `header:` id outside
//! `signed_content`) is deduplicated on a digest of what is signed. A captured request sent
//! again under a fresh delivery id, or relabelled so that another rule routes it, is a
//! `duplicate`, on every replica. Signatures come from each provider's own library.

use serde_json::json;

use crate::helpers::redis_server::RedisServer;
use crate::helpers::*;
use crate::providers::{github_sign, python_sign, GITHUB_SECRET, SHOPIFY_SECRET, SLACK_SECRET};

/// A route `r` at `/hook` of `provider` (and its table) whose rules send `first` events to
/// `a` and `second` events to `b`.
fn two_rules(
    provider: &str,
    secret: &str,
    first: &str,
    second: &str,
    a: &Upstream,
    b: &Upstream,
) -> String {
    format!(
        "[[routes]]\nname = \"r\"\npath = \"/hook\"\nsecrets = [{secret:?}]\n{provider}\n\
         [[routes.rules]]\nevents = [\"{first}\"]\nupstream = \"{}\"\n\
         [[routes.rules]]\nevents = [\"{second}\"]\nupstream = \"{}\"\n",
        a.url("/a"),
        b.url("/b"),
    )
}

fn header(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

/// Sends `body` with `headers` five times, each with a fresh id in `id_header`: the
/// outcomes in order.
async fn five_deliveries(
    proxy: &Proxy,
    id_header: &str,
    headers: &[(String, String)],
    body: &str,
) -> Vec<(u16, String)> {
    let mut outcomes = Vec::new();
    for n in 0..5 {
        let mut headers = headers.to_vec();
        headers.push(header(id_header, &format!("fresh-delivery-{n}")));
        let (status, _, reply) = post(&proxy.url("/hook"), &headers, body.as_bytes()).await;
        outcomes.push((status, String::from_utf8_lossy(&reply).into_owned()));
    }
    outcomes
}

/// Replays one captured request five times with fresh ids, then relabelled: one forward.
async fn replayed_and_relabelled(
    proxy: &Proxy,
    (a, b): (&Upstream, &Upstream),
    id_header: &str,
    (type_header, first, second): (&str, &str, &str),
    signed: &[(String, String)],
    body: &str,
) {
    let mut headers = signed.to_vec();
    headers.push(header(type_header, first));
    let outcomes = five_deliveries(proxy, id_header, &headers, body).await;
    let duplicate = (200, r#"{"outcome":"duplicate"}"#.to_owned());
    assert_eq!(outcomes[0].0, 200, "{outcomes:?}");
    assert_eq!(outcomes[1..], vec![duplicate.clone(); 4], "{outcomes:?}");
    // Relabelled: another event type header, which another rule would route to `b`.
    let mut relabelled = signed.to_vec();
    relabelled.push(header(type_header, second));
    relabelled.push(header(id_header, "fresh-delivery-relabelled"));
    let (status, _, reply) = post(&proxy.url("/hook"), &relabelled, body.as_bytes()).await;
    assert_eq!(
        (status, String::from_utf8_lossy(&reply).into_owned()),
        duplicate
    );
    assert_eq!((a.count(), b.count()), (1, 0));
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.requests("r", "forwarded"), 1.0);
    assert_eq!(metrics.requests("r", "duplicate"), 5.0);
    // The first delivery's own id is what reached the upstream.
    let received = a.received();
    assert_eq!(received[0].headers[id_header], "fresh-delivery-0");
}

/// octokit signs one body; it is sent five times with fresh `X-GitHub-Delivery` ids (one
/// forward, four duplicates), then with `X-GitHub-Event` changed so that another rule
/// would route it (a duplicate: it reaches neither upstream again).
#[tokio::test]
async fn a_github_body_replayed_or_relabelled_is_a_duplicate() {
    let (a, b) = (Upstream::ok().await, Upstream::ok().await);
    let config = two_rules(
        "provider = \"github\"",
        GITHUB_SECRET,
        "push",
        "release.*",
        &a,
        &b,
    );
    let proxy = Proxy::start(&config).await;
    let body = r#"{"ref":"refs/heads/main","commits":[{"id":"abc"}]}"#;
    let signature = github_sign(json!([{"secret": GITHUB_SECRET, "body": body}]));
    let signed = [header("x-hub-signature-256", &signature[0])];
    let labels = ("x-github-event", "push", "release");
    replayed_and_relabelled(&proxy, (&a, &b), "x-github-delivery", labels, &signed, body).await;
    proxy.shutdown().await;
}

/// Shopify's documented HMAC: the same with `X-Shopify-Webhook-Id` and `X-Shopify-Topic`.
#[tokio::test]
async fn a_shopify_body_replayed_or_relabelled_is_a_duplicate() {
    let (a, b) = (Upstream::ok().await, Upstream::ok().await);
    let provider = "provider = \"shopify\"";
    let config = two_rules(
        provider,
        SHOPIFY_SECRET,
        "orders/create",
        "refunds/*",
        &a,
        &b,
    );
    let proxy = Proxy::start(&config).await;
    let body = r#"{"id":820982911946154508,"total_price":"10.00"}"#;
    let signed =
        python_sign(json!([{"provider": "shopify", "secret": SHOPIFY_SECRET, "body": body}]));
    let labels = ("x-shopify-topic", "orders/create", "refunds/create");
    replayed_and_relabelled(
        &proxy,
        (&a, &b),
        "x-shopify-webhook-id",
        labels,
        &signed[0],
        body,
    )
    .await;
    proxy.shutdown().await;
}

/// A declared scheme whose id and event type come from headers outside `signed_content`
/// (signed by `slack_sdk`): deduplicated on the signed content, as GitHub's.
#[tokio::test]
async fn a_declared_scheme_with_an_unsigned_header_id_dedups_what_is_signed() {
    let (a, b) = (Upstream::ok().await, Upstream::ok().await);
    let declared = "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"X-Slack-Signature\"\n\
                    signature_prefix = \"v0=\"\nsigned_content = \"v0:{timestamp}:{body}\"\n\
                    timestamp_header = \"X-Slack-Request-Timestamp\"\nid = \"header:X-Delivery\"\n\
                    event_type = \"header:X-Event\"";
    let config = two_rules(declared, SLACK_SECRET, "message", "app_mention", &a, &b);
    let proxy = Proxy::start(&config).await;
    let body = r#"{"type":"event_callback","event":{"text":"hi"}}"#;
    let signed = python_sign(json!([{"provider": "slack", "secret": SLACK_SECRET, "body": body}]));
    let labels = ("x-event", "message", "app_mention");
    replayed_and_relabelled(&proxy, (&a, &b), "x-delivery", labels, &signed[0], body).await;
    proxy.shutdown().await;
}

/// With `store = "redis"`, the GitHub replay through another replica is a duplicate too:
/// both replicas key the same digest.
#[tokio::test]
async fn a_github_replay_through_another_replica_is_a_duplicate() {
    let redis = RedisServer::start();
    let upstream = Upstream::ok().await;
    let config = format!(
        "[limits]\nshutdown_delay = \"0s\"\n[dedup]\nstore = \"redis\"\n[redis]\nurl = \"{}\"\n\
         [[routes]]\nname = \"r\"\npath = \"/hook\"\nprovider = \"github\"\n\
         secrets = [{GITHUB_SECRET:?}]\nupstream = \"{}\"\n",
        redis.url(),
        upstream.url("/")
    );
    let (first, second) = (Proxy::start(&config).await, Proxy::start(&config).await);
    redis_up(first.admin).await;
    redis_up(second.admin).await;
    let body = r#"{"action":"created","issue":{"number":7}}"#;
    let signature = github_sign(json!([{"secret": GITHUB_SECRET, "body": body}]));
    let headers = |delivery: &str| {
        vec![
            header("x-hub-signature-256", &signature[0]),
            header("x-github-event", "issues"),
            header("x-github-delivery", delivery),
        ]
    };
    let (status, _, _) = post(&first.url("/hook"), &headers("d-1"), body.as_bytes()).await;
    assert_eq!(status, 200);
    let (status, _, reply) = post(&second.url("/hook"), &headers("d-2"), body.as_bytes()).await;
    assert_eq!(
        (status, &reply[..]),
        (200, &br#"{"outcome":"duplicate"}"#[..])
    );
    assert_eq!(upstream.count(), 1);
    first.shutdown().await;
    second.shutdown().await;
}

/// A GitHub body whose event the rules drop is remembered: sent again relabelled as an
/// event that a rule forwards, it is a duplicate, not a first delivery.
#[tokio::test]
async fn a_dropped_github_body_cannot_come_back_relabelled() {
    let upstream = Upstream::ok().await;
    let config = format!(
        "[[routes]]\nname = \"r\"\npath = \"/hook\"\nsecrets = [{GITHUB_SECRET:?}]\nprovider = \"github\"\n\
         [[routes.rules]]\nevents = [\"push\"]\nupstream = \"{}\"\n\
         [[routes.rules]]\nevents = [\"watch.*\"]\naction = \"drop\"\n",
        upstream.url("/")
    );
    let proxy = Proxy::start(&config).await;
    let body = r#"{"action":"started","repository":{"id":1}}"#;
    let signature = github_sign(json!([{"secret": GITHUB_SECRET, "body": body}]));
    let send = async |event: &str, delivery: &str| {
        let headers = [
            header("x-hub-signature-256", &signature[0]),
            header("x-github-event", event),
            header("x-github-delivery", delivery),
        ];
        let (status, _, reply) = post(&proxy.url("/hook"), &headers, body.as_bytes()).await;
        (status, String::from_utf8_lossy(&reply).into_owned())
    };
    assert_eq!(
        send("watch", "d-1").await,
        (200, r#"{"outcome":"filtered"}"#.to_owned())
    );
    assert_eq!(
        send("push", "d-2").await,
        (200, r#"{"outcome":"duplicate"}"#.to_owned())
    );
    assert_eq!(upstream.count(), 0);
    proxy.shutdown().await;
}
