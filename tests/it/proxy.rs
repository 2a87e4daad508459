//! The contract's HTTP table, row by row, against the real proxy and a real upstream on
//! loopback: what the sender gets, what the upstream received (or that it received
//! nothing), and what `/metrics` counted.

use std::sync::Arc;

use crate::helpers::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn config(upstream: &Upstream, extra_limits: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[limits]
max_body_bytes = 4096
body_read_timeout = "300ms"
{extra_limits}

[[routes]]
name = "clerk"
path = "/webhooks/clerk"
secrets = ["{OTHER_SECRET}", "{SECRET}"]
upstream = "{clerk}"

[[routes]]
name = "billing"
path = "/webhooks/billing"
secrets = ["{SECRET}"]
  [[routes.rules]]
  events = ["invoice.*"]
  upstream = "{billing}"
  [[routes.rules]]
  events = ["session.*"]
  action = "drop"
"#,
        clerk = upstream.url("/api/clerk?from=hookwall"),
        billing = upstream.url("/billing"),
    )
}

#[tokio::test]
async fn a_valid_event_is_forwarded_byte_for_byte_with_the_contracts_headers() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&config(&upstream, "")).await;
    let body = event("user.created");
    let mut headers = signed(SECRET, "msg_1", now(), &body);
    headers.extend([
        ("hookwall-route".to_string(), "forged".to_string()),
        ("x-forwarded-for".to_string(), "6.6.6.6".to_string()),
        ("x-custom".to_string(), "kept".to_string()),
    ]);
    let (status, reply_headers, reply) =
        post(&proxy.url("/webhooks/clerk?attempt=1"), &headers, &body).await;
    assert_eq!(status, 200);
    assert_eq!(reply, "upstream says 200");
    assert_eq!(reply_headers["content-type"], "text/plain");
    assert!(
        !reply_headers.contains_key("x-upstream-private"),
        "only content-type and retry-after go back"
    );

    let got = upstream.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.body, body, "byte for byte");
    assert_eq!(r.path_and_query, "/api/clerk?from=hookwall&attempt=1");
    assert_eq!(r.headers["svix-id"], "msg_1");
    assert!(
        r.headers.contains_key("svix-signature"),
        "a backend may verify again"
    );
    assert_eq!(r.headers["x-custom"], "kept");
    assert_eq!(r.headers["hookwall-route"], "clerk");
    assert_eq!(r.headers.get_all("hookwall-route").iter().count(), 1);
    assert_eq!(r.headers["hookwall-event-type"], "user.created");
    assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(r.headers["x-forwarded-proto"], "http");
    assert_eq!(r.headers["host"], upstream.addr.to_string());
    assert_eq!(r.headers["content-length"], body.len().to_string());

    let m = proxy.metrics().await;
    assert_eq!(m.requests("clerk", "forwarded"), 1.0);
    assert_eq!(m.secret_matches("clerk", "1"), Some(1.0));
    assert_eq!(m.secret_matches("clerk", "0"), Some(0.0));
    assert_eq!(m.events("clerk", "user.created"), Some(1.0));
    assert_eq!(
        m.get(
            "hookwall_upstream_responses_total",
            &[("route", "clerk"), ("class", "2xx")]
        ),
        Some(1.0)
    );
    assert!(
        m.get(
            "hookwall_last_verified_timestamp_seconds",
            &[("route", "clerk")]
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        m.get(
            "hookwall_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn refusals_reach_nothing_and_are_counted() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&config(&upstream, "")).await;
    let url = proxy.url("/webhooks/clerk");
    let body = event("user.created");
    let t = now();
    let good = signed(SECRET, "msg_r", t, &body);
    let without = |name: &str| -> Vec<(String, String)> {
        good.iter().filter(|(k, _)| k != name).cloned().collect()
    };
    let with = |name: &str, value: &str| -> Vec<(String, String)> {
        good.iter()
            .map(|(k, v)| {
                if k == name {
                    (k.clone(), value.to_string())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    };

    type Case<'a> = (&'a str, Vec<(String, String)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "missing id",
            without("svix-id"),
            body.clone(),
            400,
            "missing_header",
        ),
        (
            "empty signature",
            with("svix-signature", " "),
            body.clone(),
            400,
            "missing_header",
        ),
        (
            "fractional timestamp",
            with("svix-timestamp", &format!("{t}.5")),
            body.clone(),
            400,
            "malformed_header",
        ),
        // Missing header wins over a stale timestamp: first failing check answers.
        (
            "missing id and stale",
            {
                let mut h = signed(SECRET, "msg_r", t - 3600, &body);
                h.retain(|(k, _)| k != "svix-id");
                h
            },
            body.clone(),
            400,
            "missing_header",
        ),
        (
            "too old",
            signed(SECRET, "msg_r", t - 301 - 5, &body),
            body.clone(),
            401,
            "timestamp_too_old",
        ),
        (
            "too new",
            signed(SECRET, "msg_r", t + 301 + 5, &body),
            body.clone(),
            401,
            "timestamp_too_new",
        ),
        (
            "wrong secret",
            signed("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "msg_r", t, &body),
            body.clone(),
            401,
            "invalid_signature",
        ),
        (
            "body changed",
            good.clone(),
            event("user.createe"),
            401,
            "invalid_signature",
        ),
    ];
    for (name, headers, body, status, outcome) in &cases {
        let (got, _, reply) = post(&url, headers, body).await;
        assert_eq!(got, *status, "{name}");
        assert_eq!(reply, format!(r#"{{"error":"{outcome}"}}"#), "{name}");
    }
    let (status, _, _) = post(&proxy.url("/nowhere"), &good, &body).await;
    assert_eq!(status, 404);
    let (status, headers, reply) = send("GET", &url, &good, b"").await;
    assert_eq!((status, &headers["allow"]), (405, &"POST".parse().unwrap()));
    assert_eq!(reply, r#"{"error":"method_not_allowed"}"#);
    let big = vec![b'x'; 5000];
    let (status, _, _) = post(&url, &signed(SECRET, "msg_big", t, &big), &big).await;
    assert_eq!(status, 413);

    assert_eq!(upstream.count(), 0, "nothing refused reaches the upstream");

    // A forged request never touched dedup: the same id, signed, goes through.
    let (status, _) = deliver(&proxy, "/webhooks/clerk", SECRET, "msg_r", "user.created").await;
    assert_eq!(status, 200);
    assert_eq!(upstream.count(), 1);

    let m = proxy.metrics().await;
    assert_eq!(m.requests("clerk", "missing_header"), 3.0);
    assert_eq!(m.requests("clerk", "malformed_header"), 1.0);
    assert_eq!(m.requests("clerk", "timestamp_too_old"), 1.0);
    assert_eq!(m.requests("clerk", "timestamp_too_new"), 1.0);
    assert_eq!(m.requests("clerk", "invalid_signature"), 2.0);
    assert_eq!(m.requests("clerk", "method_not_allowed"), 1.0);
    assert_eq!(m.requests("clerk", "body_too_large"), 1.0);
    assert_eq!(m.requests("_unmatched", "not_found"), 1.0);
    assert_eq!(m.requests("clerk", "forwarded"), 1.0);
    // Every route x outcome series exists from the start.
    assert_eq!(m.requests("billing", "upstream_timeout"), 0.0);
    proxy.shutdown().await;
}

/// Writes raw bytes and reads the reply's status line (for what a normal client won't send).
async fn raw(proxy: &Proxy, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn limits_on_headers_and_bodies() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&config(&upstream, "max_headers = 20")).await;

    let mut many = b"POST /webhooks/clerk HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_vec();
    for i in 0..25 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 0\r\n\r\n");
    assert_eq!(
        raw(&proxy, &many).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );

    // The body's checks come after the signed headers' (contract §7): these heads carry
    // well-formed, fresh ones (the signature is only checked once the body is read).
    let signed_head = format!(
        "svix-id: msg_big\r\nsvix-timestamp: {}\r\nsvix-signature: v1,AAAA\r\n",
        now()
    );
    // Declared too large: refused before the body is read.
    let declared = format!(
        "POST /webhooks/clerk HTTP/1.1\r\nhost: x\r\n{signed_head}content-length: 999999\r\n\r\n"
    );
    assert_eq!(
        raw(&proxy, declared.as_bytes()).await,
        "HTTP/1.1 413 Payload Too Large"
    );
    // Without the signed headers the same request is refused for them, body unread.
    let unsigned = b"POST /webhooks/clerk HTTP/1.1\r\nhost: x\r\ncontent-length: 999999\r\n\r\n";
    assert_eq!(raw(&proxy, unsigned).await, "HTTP/1.1 400 Bad Request");

    // Chunked past the limit: refused while reading.
    let mut chunked = format!(
        "POST /webhooks/clerk HTTP/1.1\r\nhost: x\r\n{signed_head}transfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..5 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'a'; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    assert_eq!(
        raw(&proxy, &chunked).await,
        "HTTP/1.1 413 Payload Too Large"
    );

    // A body that stops arriving: 408 after body_read_timeout (300ms in this config).
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /webhooks/clerk HTTP/1.1\r\nhost: x\r\n{signed_head}content-length: 100\r\n\r\nonly a little"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut reply = vec![0u8; 64];
    let n = stream.read(&mut reply).await.unwrap();
    assert!(
        String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&reply[..n])
    );

    assert_eq!(upstream.count(), 0);
    let m = proxy.metrics().await;
    assert_eq!(m.requests("_unmatched", "headers_too_large"), 1.0);
    assert_eq!(m.requests("clerk", "body_too_large"), 2.0);
    assert_eq!(m.requests("clerk", "missing_header"), 1.0);
    assert_eq!(m.requests("clerk", "body_timeout"), 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn duplicates_filtering_and_routing() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&config(&upstream, "")).await;

    let (status, _) = deliver(
        &proxy,
        "/webhooks/billing",
        SECRET,
        "msg_inv",
        "invoice.paid",
    )
    .await;
    assert_eq!(status, 200);
    let (status, reply) = deliver(
        &proxy,
        "/webhooks/billing",
        SECRET,
        "msg_inv",
        "invoice.paid",
    )
    .await;
    assert_eq!(
        (status, reply.as_ref()),
        (200, br#"{"outcome":"duplicate"}"#.as_ref())
    );

    // Dropped by rule and matched by no rule: 200, filtered, never forwarded or remembered.
    for (id, kind) in [("msg_s", "session.ended"), ("msg_u", "user.created")] {
        let (status, reply) = deliver(&proxy, "/webhooks/billing", SECRET, id, kind).await;
        assert_eq!(
            (status, reply.as_ref()),
            (200, br#"{"outcome":"filtered"}"#.as_ref()),
            "{kind}"
        );
    }
    // A body that is not JSON has event type "", which only `*` matches.
    let body = b"not json";
    let (status, _, reply) = post(
        &proxy.url("/webhooks/billing"),
        &signed(SECRET, "msg_nj", now(), body),
        body,
    )
    .await;
    assert_eq!(
        (status, reply.as_ref()),
        (200, br#"{"outcome":"filtered"}"#.as_ref())
    );
    let (status, _, _) = post(
        &proxy.url("/webhooks/clerk"),
        &signed(SECRET, "msg_nj", now(), body),
        body,
    )
    .await;
    assert_eq!(status, 200);

    // The same id on two routes is two deliveries.
    let (status, _) = deliver(&proxy, "/webhooks/clerk", SECRET, "msg_inv", "invoice.paid").await;
    assert_eq!(status, 200);

    let ids = upstream.ids();
    assert_eq!(ids.get("msg_inv"), Some(&2), "{ids:?}");
    assert_eq!(ids.get("msg_s"), None);
    assert_eq!(ids.get("msg_u"), None);
    let received = upstream.received();
    let not_json = received
        .iter()
        .find(|r| r.headers["svix-id"] == "msg_nj")
        .unwrap();
    assert!(
        !not_json.headers.contains_key("hookwall-event-type"),
        "no header for an empty type"
    );

    let m = proxy.metrics().await;
    assert_eq!(m.requests("billing", "duplicate"), 1.0);
    assert_eq!(m.requests("billing", "filtered"), 3.0);
    assert_eq!(m.requests("billing", "forwarded"), 1.0);
    assert_eq!(m.events("billing", "_none"), Some(1.0));
    // Duplicates are counted as events too.
    assert_eq!(m.events("billing", "invoice.paid"), Some(2.0));
    assert_eq!(m.get("hookwall_dedup_entries", &[]), Some(3.0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_failed_delivery_is_released_so_the_retry_goes_through() {
    // The first attempt fails with 500, every later one succeeds.
    let upstream =
        Upstream::start(|_, attempt| Reply::Status(if attempt == 0 { 500 } else { 200 })).await;
    let proxy = Proxy::start(&config(&upstream, "")).await;
    let (status, reply) = deliver(
        &proxy,
        "/webhooks/clerk",
        SECRET,
        "msg_retry",
        "user.created",
    )
    .await;
    assert_eq!(
        (status, reply.as_ref()),
        (500, b"upstream says 500".as_ref())
    );
    let (status, _) = deliver(
        &proxy,
        "/webhooks/clerk",
        SECRET,
        "msg_retry",
        "user.created",
    )
    .await;
    assert_eq!(status, 200, "the retry is delivered");
    let (status, reply) = deliver(
        &proxy,
        "/webhooks/clerk",
        SECRET,
        "msg_retry",
        "user.created",
    )
    .await;
    assert_eq!(
        (status, reply.as_ref()),
        (200, br#"{"outcome":"duplicate"}"#.as_ref())
    );
    assert_eq!(upstream.ids()["msg_retry"], 2);
    let m = proxy.metrics().await;
    assert_eq!(m.requests("clerk", "upstream_rejected"), 1.0);
    assert_eq!(
        m.get(
            "hookwall_upstream_responses_total",
            &[("route", "clerk"), ("class", "5xx")]
        ),
        Some(1.0)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn in_flight_duplicates_get_409_and_route_overload_503() {
    let (upstream, arrived, release) = holding_upstream().await;
    let toml = config(&upstream, "").replacen(
        "upstream = \"http://",
        "max_in_flight = 1\nupstream = \"http://",
        1,
    );
    let proxy = Arc::new(Proxy::start(&toml).await);

    let first = delivering(
        proxy.url("/webhooks/clerk"),
        &arrived,
        "msg_slow",
        "user.created",
    )
    .await;
    // The same id while it is being delivered: 409 (max_in_flight = 1 is taken, though,
    // so the route answers 503 first: overload is checked before dedup).
    let (status, reply) = deliver(
        &proxy,
        "/webhooks/clerk",
        SECRET,
        "msg_slow",
        "user.created",
    )
    .await;
    assert_eq!(
        (status, reply.as_ref()),
        (503, br#"{"error":"overloaded"}"#.as_ref())
    );
    release.notify_one();
    assert_eq!(first.await.unwrap().0, 200);

    // On the billing route (no max_in_flight), the in-flight duplicate is a 409.
    let billing_first = delivering(
        proxy.url("/webhooks/billing"),
        &arrived,
        "msg_b",
        "invoice.paid",
    )
    .await;
    let (status, reply) =
        deliver(&proxy, "/webhooks/billing", SECRET, "msg_b", "invoice.paid").await;
    assert_eq!(
        (status, reply.as_ref()),
        (409, br#"{"error":"in_flight"}"#.as_ref())
    );
    release.notify_one();
    assert_eq!(billing_first.await.unwrap().0, 200);

    assert_eq!(upstream.ids()["msg_slow"], 1);
    assert_eq!(upstream.ids()["msg_b"], 1);
    let m = proxy.metrics().await;
    assert_eq!(m.requests("clerk", "overloaded"), 1.0);
    assert_eq!(m.requests("billing", "in_flight"), 1.0);
    Arc::try_unwrap(proxy).ok().unwrap().shutdown().await;
}

#[tokio::test]
async fn unreachable_and_slow_upstreams() {
    let (closed, _held) = refusing_addr();
    let (slow, _arrived, release) = holding_upstream().await;
    let toml = format!(
        r#"
[[routes]]
name = "down"
path = "/down"
secrets = ["{SECRET}"]
upstream = "http://{closed}/"

[[routes]]
name = "slow"
path = "/slow"
secrets = ["{SECRET}"]
upstream = "{slow}"
upstream_timeout = "200ms"
"#,
        slow = slow.url("/"),
    );
    let proxy = Proxy::start(&toml).await;
    let (status, reply) = deliver(&proxy, "/down", SECRET, "msg_d", "user.created").await;
    assert_eq!(
        (status, reply.as_ref()),
        (502, br#"{"error":"upstream_unavailable"}"#.as_ref())
    );
    let (status, reply) = deliver(&proxy, "/slow", SECRET, "msg_t", "user.created").await;
    assert_eq!(
        (status, reply.as_ref()),
        (504, br#"{"error":"upstream_timeout"}"#.as_ref())
    );
    // The sender stopped waiting, but the forward goes on (contract §7): a retry meanwhile
    // is in flight, not forwarded a second time.
    let (status, _) = deliver(&proxy, "/slow", SECRET, "msg_t", "user.created").await;
    assert_eq!(status, 409);
    release.notify_waiters();
    // The upstream's 2xx, when it comes, marks the id delivered: the next retry is a
    // duplicate. Counted in hookwall_upstream_* when the forward ends.
    until_upstream_answered(&proxy, "slow", "2xx", 1.0).await;
    let (status, reply) = deliver(&proxy, "/slow", SECRET, "msg_t", "user.created").await;
    assert_eq!(
        (status, reply.as_ref()),
        (200, br#"{"outcome":"duplicate"}"#.as_ref())
    );
    assert_eq!(slow.ids()["msg_t"], 1);

    // The unreachable upstream's id was released: a retry is tried again.
    let (status, _) = deliver(&proxy, "/down", SECRET, "msg_d", "user.created").await;
    assert_eq!(status, 502);
    let m = proxy.metrics().await;
    assert_eq!(m.requests("down", "upstream_unavailable"), 2.0);
    assert_eq!(m.requests("slow", "upstream_timeout"), 1.0);
    assert_eq!(m.requests("slow", "in_flight"), 1.0);
    assert_eq!(
        m.get(
            "hookwall_upstream_responses_total",
            &[("route", "down"), ("class", "error")]
        ),
        Some(2.0)
    );
    assert_eq!(
        m.get(
            "hookwall_upstream_responses_total",
            &[("route", "slow"), ("class", "timeout")]
        ),
        Some(0.0)
    );
    assert_eq!(m.get("hookwall_dedup_entries", &[]), Some(1.0));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_events_are_each_delivered_once() {
    let upstream = Upstream::ok().await;
    let proxy = Arc::new(Proxy::start(&config(&upstream, "")).await);
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                deliver(
                    &proxy,
                    "/webhooks/clerk",
                    SECRET,
                    &format!("msg_{i}"),
                    "user.created",
                )
                .await
                .0
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let ids = upstream.ids();
    assert_eq!(ids.len(), 500);
    assert!(ids.values().all(|&n| n == 1));
    let m = proxy.metrics().await;
    assert_eq!(m.requests("clerk", "forwarded"), 500.0);
    assert_eq!(m.get("hookwall_in_flight_requests", &[]), Some(0.0));
    Arc::try_unwrap(proxy).ok().unwrap().shutdown().await;
}

#[tokio::test]
async fn standard_webhooks_headers_and_ed25519_signatures() {
    use base64::Engine as _;
    let upstream = Upstream::ok().await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let b64 = hookwall::secret::BASE64;
    let whsk = format!("whsk_{}", b64.encode(key.to_keypair_bytes()));
    let whpk = format!("whpk_{}", b64.encode(key.verifying_key().as_bytes()));
    let toml = format!(
        "[[routes]]\nname = \"std\"\npath = \"/std\"\nsecrets = [\"{SECRET}\", \"{whpk}\"]\nupstream = \"{}\"\n",
        upstream.url("/")
    );
    let proxy = Proxy::start(&toml).await;
    let body = event("user.created");
    let t = now();
    let headers = vec![
        ("webhook-id".to_string(), "msg_std".to_string()),
        ("webhook-timestamp".to_string(), t.to_string()),
        (
            "webhook-signature".to_string(),
            signer(SECRET).sign("msg_std", t, &body),
        ),
    ];
    let (status, _, _) = post(&proxy.url("/std"), &headers, &body).await;
    assert_eq!(status, 200);
    let (status, _) = deliver(&proxy, "/std", &whsk, "msg_v1a", "user.created").await;
    assert_eq!(status, 200);
    let m = proxy.metrics().await;
    assert_eq!(m.secret_matches("std", "1"), Some(1.0));
    assert_eq!(upstream.count(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_cap_get_503_on_accept() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&config(&upstream, "max_connections = 2")).await;
    // Two keep-alive connections, each proven accepted by a full exchange.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
        held.push(stream);
    }
    let reply = raw(&proxy, b"").await;
    assert_eq!(reply, "HTTP/1.1 503 Service Unavailable");
    // A sender writes its whole request before it reads, as every HTTP client does: it
    // still reads the 503 (the refusal lingers until the sender closes; closing on the
    // unread request would reset the connection and lose the answer).
    for n in 0..20 {
        let body = event("user.created");
        let headers = signed(SECRET, &format!("msg_over_{n}"), now(), &body);
        let (status, headers, _) = try_post(&proxy.url("/webhooks/clerk"), &headers, &body)
            .await
            .expect("a 503, not a reset");
        assert_eq!(
            (status, headers["retry-after"].to_str().unwrap()),
            (503, "1")
        );
    }
    drop(held);
    let m = proxy.metrics().await;
    assert_eq!(m.requests("_unmatched", "overloaded"), 21.0);
    assert_eq!(upstream.count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_metric_of_the_contract_is_exported() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&config(&upstream, "")).await;
    let (status, _) = deliver(&proxy, "/webhooks/clerk", SECRET, "msg_m", "user.created").await;
    assert_eq!(status, 200);
    let (_, _, text) = get(&format!("http://{}/metrics", proxy.admin)).await;
    let text = String::from_utf8_lossy(&text);
    for (name, kind) in [
        ("hookwall_requests_total", "counter"),
        ("hookwall_request_duration_seconds", "histogram"),
        ("hookwall_upstream_duration_seconds", "histogram"),
        ("hookwall_upstream_responses_total", "counter"),
        ("hookwall_events_total", "counter"),
        ("hookwall_dedup_entries", "gauge"),
        ("hookwall_dedup_evictions_total", "counter"),
        ("hookwall_in_flight_requests", "gauge"),
        ("hookwall_config_reloads_total", "counter"),
        ("hookwall_secret_matches_total", "counter"),
        ("hookwall_clock_skew_seconds", "histogram"),
        ("hookwall_last_verified_timestamp_seconds", "gauge"),
        ("hookwall_build_info", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing"
        );
    }
    let m = Metrics::parse(&text);
    assert_eq!(
        m.get(
            "hookwall_request_duration_seconds_bucket",
            &[("route", "clerk"), ("le", "10")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "hookwall_clock_skew_seconds_bucket",
            &[("route", "clerk"), ("le", "-300")]
        ),
        Some(0.0)
    );
    for outcome in [
        "overloaded",
        "headers_too_large",
        "not_found",
        "body_timeout",
        "in_flight",
    ] {
        for route in ["clerk", "billing", "_unmatched"] {
            assert!(m
                .get(
                    "hookwall_requests_total",
                    &[("route", route), ("outcome", outcome)]
                )
                .is_some());
        }
    }
    let (status, _, _) = get(&format!("http://{}/healthz", proxy.admin)).await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&format!("http://{}/readyz", proxy.admin)).await;
    assert_eq!(status, 200);
    // The admin routes are not on the public listener.
    let (status, _, _) = get(&proxy.url("/metrics")).await;
    assert_eq!(status, 404);
    proxy.shutdown().await;
}

/// During a rotation Svix signs with the old and the new secret: each verified request
/// counts every secret it carries a valid signature for, whatever the list's order, so the
/// old secret's counter goes flat when the sender stops using it.
#[tokio::test]
async fn a_rotation_counts_every_secret_that_signed() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&format!(
        r#"
[[routes]]
name = "new_first"
path = "/a"
secrets = ["{OTHER_SECRET}", "{SECRET}"]
upstream = "{up}"

[[routes]]
name = "old_first"
path = "/b"
secrets = ["{SECRET}", "{OTHER_SECRET}"]
upstream = "{up}"
"#,
        up = upstream.url("/")
    ))
    .await;
    let body = event("user.created");
    for (path, id) in [("/a", "msg_a"), ("/b", "msg_b")] {
        let ts = now();
        let both = format!(
            "{} {}",
            signer(OTHER_SECRET).sign(id, ts, &body),
            signer(SECRET).sign(id, ts, &body)
        );
        let headers = vec![
            ("svix-id".to_owned(), id.to_owned()),
            ("svix-timestamp".to_owned(), ts.to_string()),
            ("svix-signature".to_owned(), both),
        ];
        assert_eq!(post(&proxy.url(path), &headers, &body).await.0, 200);
    }
    // The sender stops signing with the old secret (SECRET): only the new one counts.
    assert_eq!(
        deliver(&proxy, "/a", OTHER_SECRET, "msg_a2", "user.created")
            .await
            .0,
        200
    );
    let m = proxy.metrics().await;
    assert_eq!(m.secret_matches("new_first", "0"), Some(2.0));
    assert_eq!(m.secret_matches("new_first", "1"), Some(1.0));
    assert_eq!(m.secret_matches("old_first", "0"), Some(1.0));
    assert_eq!(m.secret_matches("old_first", "1"), Some(1.0));
    proxy.shutdown().await;
}

/// `max_in_flight` holds forwards only: with a route's one place taken by a forward that
/// is still running, a dropped or unmatched event is acknowledged as usual, and another
/// forward is refused 503 before its id is claimed.
#[tokio::test]
async fn max_in_flight_holds_only_forwards() {
    let (upstream, arrived, release) = holding_upstream().await;
    let toml = config(&upstream, "").replacen(
        "path = \"/webhooks/billing\"",
        "path = \"/webhooks/billing\"\nmax_in_flight = 1",
        1,
    );
    let proxy = Arc::new(Proxy::start(&toml).await);
    let first = delivering(
        proxy.url("/webhooks/billing"),
        &arrived,
        "msg_f1",
        "invoice.paid",
    )
    .await;
    let filtered = (200, br#"{"outcome":"filtered"}"#.as_ref());
    for (id, kind) in [("msg_d", "session.ended"), ("msg_u", "user.created")] {
        let (status, reply) = deliver(&proxy, "/webhooks/billing", SECRET, id, kind).await;
        assert_eq!((status, reply.as_ref()), filtered, "{kind}");
    }
    let (status, reply) = deliver(
        &proxy,
        "/webhooks/billing",
        SECRET,
        "msg_f2",
        "invoice.created",
    )
    .await;
    assert_eq!(
        (status, reply.as_ref()),
        (503, br#"{"error":"overloaded"}"#.as_ref())
    );
    release.notify_one();
    assert_eq!(first.await.unwrap().0, 200);
    // The refused forward's id was never claimed: its retry goes through.
    let second = delivering(
        proxy.url("/webhooks/billing"),
        &arrived,
        "msg_f2",
        "invoice.created",
    )
    .await;
    release.notify_one();
    assert_eq!(second.await.unwrap().0, 200);
    let m = proxy.metrics().await;
    assert_eq!(m.requests("billing", "filtered"), 2.0);
    assert_eq!(m.requests("billing", "overloaded"), 1.0);
    Arc::try_unwrap(proxy).ok().unwrap().shutdown().await;
}
