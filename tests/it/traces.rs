//! OpenTelemetry traces (contract §12), from the real binary to a collector the test runs
//! (`helpers::collector`, OTLP/HTTP decoded with the `opentelemetry-proto` types): the
//! SERVER span of each outcome, the CLIENT span of a forward and of a stream append and
//! the `traceparent` that names it, a sender's trace continued, the `OTEL_*` variables
//! without `[telemetry]`, and a collector that is down or hangs costing no request.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hmac::Mac as _;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::helpers::collector::{Collector, Got};
use crate::helpers::redis_server::RedisServer;
use crate::helpers::running::Running;
use crate::helpers::*;

/// Batches every 20 ms instead of 5 s: the tests wait for spans by polling.
const FAST: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "20");

const GITHUB_SECRET: &str = "gh-secret";

/// A config in a folder of its own: route `hook` at `/hook` (its `user.*` events forwarded
/// to `upstream`, `session.*` dropped; its secrets `OTHER_SECRET` then `SECRET`), route
/// `gh` (GitHub) forwarding to `upstream`, and `extra` at the end.
fn config(upstream: &Upstream, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookwall.toml");
    let toml = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[log]
format = "json"
[limits]
shutdown_delay = "0s"
{extra}
{routes}"#,
        routes = svix_and_github_routes("hook", &upstream.url("/"), GITHUB_SECRET)
    );
    std::fs::write(&file, toml).unwrap();
    (dir, file)
}

fn telemetry(collector: &Collector) -> String {
    format!("[telemetry]\notlp_endpoint = \"{}\"", collector.url())
}

async fn send_event(hookwall: &Running, id: &str, kind: &str) -> u16 {
    let body = event(kind);
    let headers = signed(SECRET, id, now(), &body);
    post(&hookwall.url("/hook"), &headers, &body).await.0
}

/// `traceparent` of a sampled span: version 00, its trace and span ids, flags 01.
fn traceparent(span: &Got) -> String {
    format!("00-{}-{}-01", span.trace_id, span.span_id)
}

#[tokio::test]
async fn each_request_is_a_server_span_with_its_outcome() {
    let upstream = Upstream::ok().await;
    let collector = Collector::start().await;
    let (_dir, file) = config(&upstream, &telemetry(&collector));
    let hookwall = Running::start_env(&file, Some("info"), &[FAST]).await;

    // With a header value, a body and a signature that no span may carry.
    let body = br#"{"type":"user.created","data":{"name":"BODY-MARKER"}}"#;
    let mut headers = signed(SECRET, "msg_fwd", now(), body);
    let signature = headers[2].1.clone();
    headers.push(("x-private".into(), "HEADER-MARKER".into()));
    assert_eq!(post(&hookwall.url("/hook"), &headers, body).await.0, 200);
    assert_eq!(send_event(&hookwall, "msg_fwd", "user.created").await, 200);
    assert_eq!(
        send_event(&hookwall, "msg_filtered", "session.ended").await,
        200
    );
    let body = event("user.created");
    let mut forged = signed(SECRET, "msg_forged", now(), &body);
    forged[2].1 = signed(SECRET, "msg_forged", now(), b"other")[2].1.clone();
    let (status, _, _) = post(&hookwall.url("/hook"), &forged, &body).await;
    assert_eq!(status, 401);
    let (status, _, _) = post(&hookwall.url("/nowhere"), &[], b"").await;
    assert_eq!(status, 404);

    // Forwarded: the SERVER span's attributes, and its CLIENT child.
    let server = collector
        .span("the forwarded request", |s| {
            s.attribute("hookwall.outcome") == Some("forwarded")
        })
        .await;
    assert_eq!(server.name, "POST hook");
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.parent, "", "no traceparent was sent: a root");
    assert_eq!(server.service, "hookwall");
    for (name, value) in [
        ("http.request.method", "POST"),
        ("url.path", "/hook"),
        ("http.response.status_code", "200"),
        ("hookwall.route", "hook"),
        ("hookwall.provider", "svix"),
        ("webhook.id", "msg_fwd"),
        ("webhook.event_type", "user.created"),
        // `SECRET` is the route's second.
        ("hookwall.secret_index", "1"),
    ] {
        assert_eq!(server.attribute(name), Some(value), "{name}: {server:?}");
    }
    assert!(
        server.attribute("hookwall.dedup_key").is_none(),
        "the id is the key"
    );
    assert!(!server.error);

    let client = collector.child(&server, "POST").await;
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.attribute("server.address"), Some("127.0.0.1"));
    let port = upstream.addr.port().to_string();
    assert_eq!(client.attribute("server.port"), Some(port.as_str()));
    assert_eq!(client.attribute("http.response.status_code"), Some("200"));
    assert!(!client.error);
    // Numbers are integers, as the semantic conventions have them.
    for (span, name) in [
        (&server, "http.response.status_code"),
        (&server, "hookwall.secret_index"),
        (&client, "server.port"),
        (&client, "http.response.status_code"),
    ] {
        assert!(span.integers.iter().any(|n| n == name), "{name}: {span:?}");
    }
    // The upstream's traceparent names the CLIENT span.
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].headers["traceparent"], traceparent(&client));

    // The others: their outcome, and what each knew.
    for (outcome, status, id) in [
        ("duplicate", "200", Some("msg_fwd")),
        ("filtered", "200", Some("msg_filtered")),
        ("invalid_signature", "401", Some("msg_forged")),
        ("not_found", "404", None),
    ] {
        let span = collector
            .span(outcome, |s| {
                s.attribute("hookwall.outcome") == Some(outcome)
            })
            .await;
        assert_eq!(span.attribute("http.response.status_code"), Some(status));
        assert_eq!(span.attribute("webhook.id"), id, "{outcome}");
        assert!(!span.error, "{outcome}: a sender's refusal is no error");
        let verified = matches!(outcome, "duplicate" | "filtered");
        assert_eq!(span.attribute("hookwall.secret_index").is_some(), verified);
        assert_eq!(span.attribute("webhook.event_type").is_some(), verified);
        let route = if outcome == "not_found" {
            "_unmatched"
        } else {
            "hook"
        };
        assert_eq!(span.name, format!("POST {route}"));
        assert_eq!(span.attribute("hookwall.route"), Some(route));
    }
    // Nothing a sender sent but its id and event type, and no secret.
    for span in collector.spans() {
        for (name, value) in &span.attributes {
            for secret in [
                "BODY-MARKER",
                "HEADER-MARKER",
                &signature,
                SECRET,
                OTHER_SECRET,
            ] {
                assert!(!value.contains(secret), "{name} = {value:?} in {span:?}");
            }
        }
    }
    // Only the forward made a CLIENT span.
    let clients = collector
        .spans()
        .into_iter()
        .filter(|s| s.kind == SpanKind::Client);
    assert_eq!(clients.count(), 1);
}

#[tokio::test]
async fn a_senders_trace_is_continued_and_failures_are_errors() {
    let upstream = Upstream::ok().await;
    let (refusing, _held) = refusing_addr();
    let collector = Collector::start().await;
    let down = format!(
        "{}\n[[routes]]\nname = \"down\"\npath = \"/down\"\nsecrets = [\"{SECRET}\"]\nupstream = \"http://{refusing}/\"",
        telemetry(&collector)
    );
    let (_dir, file) = config(&upstream, &down);
    let hookwall = Running::start_env(&file, Some("info"), &[FAST]).await;

    let body = event("user.created");
    let mut headers = signed(SECRET, "msg_child", now(), &body);
    let sender = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    headers.push(("traceparent".into(), sender.into()));
    headers.push(("tracestate".into(), "vendor=opaque".into()));
    assert_eq!(post(&hookwall.url("/hook"), &headers, &body).await.0, 200);
    let server = collector.server_span("msg_child").await;
    assert_eq!(server.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(server.parent, "b7ad6b7169203331");
    let client = collector.child(&server, "POST").await;
    let got = &upstream.received()[0].headers;
    assert_eq!(
        got["traceparent"],
        traceparent(&client),
        "the sender's is replaced"
    );
    assert_eq!(got.get_all("traceparent").iter().count(), 1);
    assert_eq!(got["tracestate"], "vendor=opaque");

    // GitHub: keyed by a digest of the body, which the span names beside the id.
    let body = br#"{"action":"opened","number":1}"#;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let headers = [
        ("x-github-delivery", "gh-1"),
        ("x-github-event", "pull_request"),
        ("x-hub-signature-256", &format!("sha256={signature}")),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(post(&hookwall.url("/gh"), &headers, body).await.0, 200);
    let github = collector.server_span("gh-1").await;
    assert_eq!(github.name, "POST gh");
    assert_eq!(github.attribute("hookwall.provider"), Some("github"));
    assert_eq!(
        github.attribute("webhook.event_type"),
        Some("pull_request.opened")
    );
    let key = github
        .attribute("hookwall.dedup_key")
        .expect("a digest key");
    assert_ne!(key, "gh-1");

    // An upstream that refuses: 502, and both spans are errors.
    let body = event("user.created");
    let headers = signed(SECRET, "msg_down", now(), &body);
    let (status, _, _) = post(&hookwall.url("/down"), &headers, &body).await;
    assert_eq!(status, 502);
    let server = collector.server_span("msg_down").await;
    assert!(server.error);
    assert_eq!(
        server.attribute("hookwall.outcome"),
        Some("upstream_unavailable")
    );
    let client = collector.child(&server, "POST").await;
    assert!(client.error);
    assert!(client.attribute("http.response.status_code").is_none());
}

#[tokio::test]
async fn a_forward_that_outlives_its_request_ends_its_span_when_it_ends() {
    let (upstream, arrived, release) = holding_upstream().await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookwall.toml");
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
         {}\n[[routes]]\nname = \"slow\"\npath = \"/slow\"\nsecrets = [\"{SECRET}\"]\n\
         upstream = \"{}\"\nupstream_timeout = \"300ms\"\nconnect_timeout = \"300ms\"\n",
        telemetry(&collector),
        upstream.url("/")
    );
    std::fs::write(&file, toml).unwrap();
    let hookwall = Running::start_env(&file, Some("info"), &[FAST]).await;

    let body = event("user.created");
    let headers = signed(SECRET, "msg_slow", now(), &body);
    let (status, _, _) = post(&hookwall.url("/slow"), &headers, &body).await;
    assert_eq!(status, 504, "the sender stopped waiting");
    arrived.notified().await;
    let answered_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    release.notify_one();

    let server = collector.server_span("msg_slow").await;
    assert_eq!(server.attribute("http.response.status_code"), Some("504"));
    assert!(server.error);
    assert!(
        server.end < answered_at,
        "the request's span ends with its answer"
    );
    let client = collector.child(&server, "POST").await;
    assert_eq!(client.attribute("http.response.status_code"), Some("200"));
    assert!(!client.error);
    assert!(client.start >= server.start);
    assert!(
        client.end > answered_at,
        "the forward's span ends when the upstream answered, after its request's"
    );
}

#[tokio::test]
async fn a_stream_entry_carries_the_traceparent_of_its_append() {
    let redis = RedisServer::start();
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookwall.toml");
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
         {}\n[redis]\nurl = \"{}\"\n[[routes]]\nname = \"q\"\npath = \"/q\"\nsecrets = [\"{SECRET}\"]\n\
         [[routes.rules]]\nevents = [\"*\"]\nstream = \"events\"\n",
        telemetry(&collector),
        redis.url()
    );
    std::fs::write(&file, toml).unwrap();
    let hookwall = Running::start_env(&file, Some("info"), &[FAST]).await;
    redis_up(hookwall.admin).await;

    let body = event("user.created");
    let headers = signed(SECRET, "msg_queued", now(), &body);
    assert_eq!(post(&hookwall.url("/q"), &headers, &body).await.0, 200);
    let server = collector.server_span("msg_queued").await;
    assert_eq!(server.attribute("hookwall.outcome"), Some("queued"));
    assert_eq!(server.attribute("hookwall.stream"), Some("events"));
    assert!(server.attribute("hookwall.stream_entry").is_some());
    let append = collector.child(&server, "XADD").await;
    assert_eq!(append.kind, SpanKind::Client);
    assert_eq!(append.attribute("db.system.name"), Some("redis"));
    assert_eq!(append.attribute("hookwall.stream"), Some("events"));

    let redis::Value::Array(entries) = redis.cmd(&["XRANGE", "events", "-", "+"]) else {
        panic!("XRANGE answers an array")
    };
    let fields = format!("{entries:?}");
    let expected = traceparent(&append);
    // In the `traceparent` field and in the `headers` JSON alike.
    assert_eq!(fields.matches(&expected).count(), 2, "{fields}");
}

#[tokio::test]
async fn the_otel_variables_work_without_a_telemetry_section_and_win_over_it() {
    let upstream = Upstream::ok().await;
    let collector = Collector::start().await;
    let (_dir, file) = config(&upstream, "");
    let traces = format!("{}/custom/traces", collector.url());
    let env = [
        FAST,
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.as_str()),
        ("OTEL_SERVICE_NAME", "billing-hooks"),
    ];
    let hookwall = Running::start_env(&file, Some("info"), &env).await;
    assert_eq!(send_event(&hookwall, "msg_env", "user.created").await, 200);
    let span = collector.server_span("msg_env").await;
    assert_eq!(span.path, "/custom/traces");
    assert_eq!(span.service, "billing-hooks");
    drop(hookwall);

    // The file says: another collector (down), another name, nothing sampled.
    let (refusing, _held) = refusing_addr();
    let file_says = format!(
        "[telemetry]\notlp_endpoint = \"http://{refusing}\"\nservice_name = \"from-file\"\nsample_ratio = 0.0"
    );
    let (_dir, file) = config(&upstream, &file_says);
    let base = collector.url();
    let env = [
        FAST,
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
        ("OTEL_SERVICE_NAME", "from-env"),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.0"),
    ];
    let hookwall = Running::start_env(&file, Some("info"), &env).await;
    assert_eq!(
        send_event(&hookwall, "msg_env_wins", "user.created").await,
        200
    );
    let span = collector.server_span("msg_env_wins").await;
    assert_eq!(
        (span.path.as_str(), span.service.as_str()),
        ("/v1/traces", "from-env")
    );
}

/// 300 requests one after another; the median latency. Every one must be forwarded.
async fn median_of_300(hookwall: &Running, prefix: &str) -> Duration {
    let mut took = Vec::with_capacity(300);
    for i in 0..300 {
        let started = Instant::now();
        let status = send_event(hookwall, &format!("{prefix}_{i}"), "user.created").await;
        took.push(started.elapsed());
        assert_eq!(status, 200, "request {i}");
    }
    took.sort();
    took[took.len() / 2]
}

async fn dropped(hookwall: &Running) -> f64 {
    hookwall
        .metrics()
        .await
        .get("hookwall_trace_spans_dropped_total", &[])
        .unwrap()
}

#[tokio::test]
async fn a_collector_down_or_hanging_costs_no_request_and_drops_are_counted() {
    let upstream = Upstream::ok().await;
    let (_dir, file) = config(&upstream, "");
    let off = Running::start(&file).await;
    let baseline = median_of_300(&off, "off").await;
    assert_eq!(
        dropped(&off).await,
        0.0,
        "the metric is there without traces"
    );
    drop(off);

    // Down: every batch fails (within a 300 ms export timeout) and is counted.
    let (refusing, _held) = refusing_addr();
    let down_url = format!("http://{refusing}");
    let env = [
        FAST,
        ("OTEL_EXPORTER_OTLP_ENDPOINT", down_url.as_str()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "300"),
    ];
    let down = Running::start_env(&file, Some("info"), &env).await;
    let with_down = median_of_300(&down, "down").await;
    // 300 SERVER spans and 300 CLIENT spans, each lost and counted once.
    until("every span counted as dropped", async || {
        dropped(&down).await == 600.0
    })
    .await;
    drop(down);

    // Hanging: the first batch waits out its timeout; the queue (32) fills meanwhile and
    // the rest is dropped, not waited for.
    let silent = Collector::silent().await;
    let silent_url = silent.url();
    let env = [
        FAST,
        ("OTEL_EXPORTER_OTLP_ENDPOINT", silent_url.as_str()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "32"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
    ];
    let hanging = Running::start_env(&file, Some("info"), &env).await;
    let with_hanging = median_of_300(&hanging, "hanging").await;
    assert!(
        dropped(&hanging).await >= 500.0,
        "{}",
        dropped(&hanging).await
    );

    eprintln!("medians: off {baseline:?} down {with_down:?} hanging {with_hanging:?}");
    assert_eq!(upstream.count(), 900, "every request forwarded");
    // Loose: a request that waited on the exporter would take its timeout (300 ms, 30 s).
    for (what, median) in [("down", with_down), ("hanging", with_hanging)] {
        assert!(
            median < baseline * 3 + Duration::from_millis(20),
            "collector {what}: median {median:?} against {baseline:?} without traces"
        );
    }
}
