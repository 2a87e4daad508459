//! The recent deliveries (contract §12): `GET /deliveries` (its fields, newest first, its
//! filters and limit, the ring's bound, 404 when off, a reload that resizes it), what it
//! never holds (a body, a signature, a secret, another header value), and the page `GET /`
//! as a real browser shows it (Debian's `chromium`, headless): its tables and rows, and a
//! sender's markup shown as text, never made elements.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::helpers::*;

const GITHUB_SECRET: &str = "hookwall-test-github-secret";
/// A secret no route has: what it signs is an invalid signature.
const STRANGER_SECRET: &str = "whsec_c3RyYW5nZXItc2VjcmV0LW5vdC1vbi1yb3V0ZQ==";

/// Route `r` (Svix, two secrets: `SECRET` is the second) forwards `user.*` and drops
/// `session.*`; route `gh` (GitHub) forwards everything. `admin` goes in `[admin]`.
fn config(upstream: &str, admin: &str) -> String {
    format!(
        "[admin]\n{admin}\n{}",
        svix_and_github_routes("r", upstream, GITHUB_SECRET)
    )
}

async fn start(admin: &str) -> (Upstream, Proxy) {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&config(&upstream.url("/"), admin)).await;
    (upstream, proxy)
}

/// `GET /deliveries{query}`: the status and the JSON (`Null` if it is not).
async fn recent(proxy: &Proxy, query: &str) -> (u16, Value) {
    let (status, _, body) = get(&format!("http://{}/deliveries{query}", proxy.admin)).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The entries of `/deliveries{query}`, which must answer 200.
async fn entries(proxy: &Proxy, query: &str) -> Vec<Value> {
    let (status, json) = recent(proxy, query).await;
    assert_eq!(status, 200, "{json}");
    json["deliveries"].as_array().expect("a list").clone()
}

fn ids(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["id"].as_str().unwrap_or("-"))
        .collect()
}

/// A signed `kind` event with id `id` to route `r`, signed with `secret`.
async fn svix(proxy: &Proxy, secret: &str, id: &str, kind: &str) -> u16 {
    deliver(proxy, "/hook", secret, id, kind).await.0
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A signed GitHub `pull_request` event with delivery id `delivery` to route `gh`.
async fn github(proxy: &Proxy, delivery: &str, body: &[u8], extra: &[(String, String)]) -> u16 {
    github_to(proxy, "/gh", delivery, body, extra).await
}

async fn github_to(
    proxy: &Proxy,
    path: &str,
    delivery: &str,
    body: &[u8],
    extra: &[(String, String)],
) -> u16 {
    let mut headers = vec![
        ("x-github-event".to_owned(), "pull_request".to_owned()),
        ("x-github-delivery".to_owned(), delivery.to_owned()),
        (
            "x-hub-signature-256".to_owned(),
            github_signature(GITHUB_SECRET, body),
        ),
    ];
    headers.extend_from_slice(extra);
    post(&proxy.url(path), &headers, body).await.0
}

/// A forwarded Svix event, an invalid signature, a path no route has and a GitHub event:
/// four entries, newest first, each with exactly the fields of §12.
#[tokio::test]
async fn each_entry_has_the_fields_of_the_contract_newest_first() {
    let (_upstream, proxy) = start("").await;
    assert_eq!(svix(&proxy, SECRET, "msg_fwd", "user.created").await, 200);
    assert_eq!(
        svix(&proxy, STRANGER_SECRET, "msg_bad", "user.created").await,
        401
    );
    assert_eq!(post(&proxy.url("/nowhere"), &[], b"{}").await.0, 404);
    let pr = br#"{"action":"opened","number":1}"#;
    assert_eq!(github(&proxy, "gh-delivery-1", pr, &[]).await, 200);

    let list = entries(&proxy, "").await;
    assert_eq!(list.len(), 4);
    let fields = [
        "time",
        "route",
        "provider",
        "id",
        "key",
        "event_type",
        "outcome",
        "status",
        "upstream_status",
        "duration_ms",
        "secret_index",
        "trace_id",
    ];
    for entry in &list {
        let object = entry.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut want = fields.to_vec();
        keys.sort();
        want.sort();
        assert_eq!(keys, want);
        let time = entry["time"].as_str().unwrap();
        assert_eq!(
            (time.len(), &time[19..20], &time[23..]),
            (24, ".", "Z"),
            "{time}"
        );
        let at = humantime::parse_rfc3339(time).unwrap();
        let age = SystemTime::now().duration_since(at).unwrap();
        assert!(age < Duration::from_secs(60), "{time}");
        assert!(entry["duration_ms"].as_f64().unwrap() >= 0.0);
        assert!(entry["trace_id"].is_null(), "no tracing here");
    }
    let without_timing = |entry: &Value| {
        let mut entry = entry.clone();
        let object = entry.as_object_mut().unwrap();
        object.remove("time");
        object.remove("duration_ms");
        object.remove("trace_id");
        entry
    };
    let key = list[0]["key"].as_str().unwrap();
    assert!(key.starts_with("sha256:") && key.len() == 71, "{key}");
    let want = [
        serde_json::json!({"route": "gh", "provider": "github", "id": "gh-delivery-1",
            "key": key, "event_type": "pull_request.opened", "outcome": "forwarded",
            "status": 200, "upstream_status": 200, "secret_index": 0}),
        serde_json::json!({"route": null, "provider": null, "id": null, "key": null,
            "event_type": null, "outcome": "not_found", "status": 404,
            "upstream_status": null, "secret_index": null}),
        serde_json::json!({"route": "r", "provider": "svix", "id": "msg_bad", "key": null,
            "event_type": null, "outcome": "invalid_signature", "status": 401,
            "upstream_status": null, "secret_index": null}),
        serde_json::json!({"route": "r", "provider": "svix", "id": "msg_fwd",
            "key": "msg_fwd", "event_type": "user.created", "outcome": "forwarded",
            "status": 200, "upstream_status": 200, "secret_index": 1}),
    ];
    for (entry, want) in list.iter().zip(want) {
        assert_eq!(without_timing(entry), want);
    }
}

/// `route`, `outcome`, `id` (exact, percent-decoded) and `limit`, alone and together.
#[tokio::test]
async fn filters_by_route_outcome_and_id_and_limits() {
    let (_upstream, proxy) = start("").await;
    assert_eq!(svix(&proxy, SECRET, "a1", "user.created").await, 200);
    assert_eq!(svix(&proxy, SECRET, "a1", "user.created").await, 200);
    assert_eq!(svix(&proxy, SECRET, "f1", "session.created").await, 200);
    assert_eq!(svix(&proxy, SECRET, "a b&c=d", "user.created").await, 200);
    assert_eq!(github(&proxy, "g1", br#"{"zen":"x"}"#, &[]).await, 200);
    assert_eq!(post(&proxy.url("/nowhere"), &[], b"").await.0, 404);

    let outcomes = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|e| e["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = entries(&proxy, "").await;
    assert_eq!(ids(&all), ["-", "g1", "a b&c=d", "f1", "a1", "a1"]);
    let r = entries(&proxy, "?route=r").await;
    assert_eq!(ids(&r), ["a b&c=d", "f1", "a1", "a1"]);
    assert_eq!(ids(&entries(&proxy, "?route=gh").await), ["g1"]);
    assert_eq!(
        outcomes(&entries(&proxy, "?route=_unmatched").await),
        ["not_found"]
    );
    let duplicates = entries(&proxy, "?outcome=duplicate").await;
    assert_eq!(ids(&duplicates), ["a1"]);
    // Percent-decoded: `%69` is `i`.
    assert_eq!(ids(&entries(&proxy, "?outcome=dupl%69cate").await), ["a1"]);
    assert_eq!(ids(&entries(&proxy, "?outcome=filtered").await), ["f1"]);
    let a1 = entries(&proxy, "?id=a1").await;
    assert_eq!(outcomes(&a1), ["duplicate", "forwarded"]);
    assert!(
        entries(&proxy, "?id=a").await.is_empty(),
        "exact, not a prefix"
    );
    for query in ["?id=a%20b%26c%3Dd", "?id=a+b%26c%3dd"] {
        assert_eq!(ids(&entries(&proxy, query).await), ["a b&c=d"], "{query}");
    }
    assert_eq!(
        ids(&entries(&proxy, "?route=r&outcome=forwarded").await),
        ["a b&c=d", "a1"]
    );
    assert_eq!(ids(&entries(&proxy, "?limit=2").await), ["-", "g1"]);
    assert_eq!(ids(&entries(&proxy, "?route=r&limit=1").await), ["a b&c=d"]);
    assert!(entries(&proxy, "?limit=0").await.is_empty());
    assert!(entries(&proxy, "?route=nope").await.is_empty());
    let (status, json) = recent(&proxy, "?limit=ten").await;
    assert_eq!(
        (status, &json["error"]),
        (400, &Value::from("invalid_limit"))
    );
}

/// 120 requests through a ring of 50 leave the newest 50; through the default ring, a
/// query gets 100 unless its `limit` asks for more.
#[tokio::test]
async fn a_ring_of_50_keeps_the_newest_50_and_limit_defaults_to_100() {
    let (_upstream, small) = start("recent_deliveries = 50").await;
    let (_upstream, default) = start("").await;
    for n in 0..120 {
        let id = format!("m-{n}");
        assert_eq!(svix(&small, SECRET, &id, "user.created").await, 200);
        assert_eq!(svix(&default, SECRET, &id, "user.created").await, 200);
    }
    let newest =
        |count: usize| -> Vec<String> { (0..count).map(|i| format!("m-{}", 119 - i)).collect() };
    let kept = entries(&small, "?limit=1000").await;
    assert_eq!(ids(&kept), newest(50));
    assert_eq!(ids(&entries(&small, "").await), newest(50));
    assert_eq!(ids(&entries(&default, "").await), newest(100));
    assert_eq!(ids(&entries(&default, "?limit=500").await), newest(120));
}

/// `recent_deliveries = 0`: `/deliveries` is 404 and the page says the ring is off.
#[tokio::test]
async fn off_is_404() {
    let (_upstream, proxy) = start("recent_deliveries = 0").await;
    assert_eq!(svix(&proxy, SECRET, "msg_1", "user.created").await, 200);
    let (status, json) = recent(&proxy, "").await;
    assert_eq!(
        (status, &json["error"]),
        (404, &Value::from("recent_deliveries_off"))
    );
    let (status, _, page) = get(&format!("http://{}/", proxy.admin)).await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200);
    assert!(page.contains("Recent deliveries are off") && !page.contains("msg_1"));
}

/// A reload that changes `recent_deliveries` resizes the ring, keeping the newest; 0 turns
/// it off.
#[tokio::test]
async fn a_reload_resizes_the_ring() {
    let upstream = Upstream::ok().await;
    let toml = |admin: &str| config(&upstream.url("/"), admin);
    let proxy = Proxy::start(&toml("recent_deliveries = 5")).await;
    for n in 0..5 {
        assert_eq!(
            svix(&proxy, SECRET, &format!("m-{n}"), "user.created").await,
            200
        );
    }
    std::fs::write(proxy.config_file(), toml("recent_deliveries = 2")).unwrap();
    proxy.reload().await;
    until("the ring resized to 2", async || {
        entries(&proxy, "").await.len() == 2
    })
    .await;
    assert_eq!(ids(&entries(&proxy, "").await), ["m-4", "m-3"]);
    std::fs::write(proxy.config_file(), toml("recent_deliveries = 0")).unwrap();
    proxy.reload().await;
    until("the ring turned off", async || {
        recent(&proxy, "").await.0 == 404
    })
    .await;
}

/// The ring's slots are reserved at start: more than 100,000 is refused, with its key.
#[test]
fn more_than_100000_is_refused() {
    let toml = config("http://127.0.0.1:9/", "recent_deliveries = 100001");
    let file = std::path::Path::new("hookwall.toml");
    let err = hookwall::config::Config::parse(&toml, file, &[]).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("admin.recent_deliveries: 100001 is more than 100000"),
        "{message}"
    );
    let toml = config("http://127.0.0.1:9/", "recent_deliveries = 100000");
    assert!(hookwall::config::Config::parse(&toml, file, &[]).is_ok());
}

/// Marker strings in the body, the signature, the secret, other headers and the
/// upstream's URL (user info, query) of forwarded, refused and unmatched requests: none
/// is in `/deliveries` or on the page.
#[tokio::test]
async fn never_a_body_a_signature_a_secret_or_another_header() {
    let upstream = Upstream::ok().await;
    let up = format!(
        "http://user:PASSWORDMARKER@{}/in?token=QUERYMARKER",
        upstream.addr
    );
    let proxy = Proxy::start(&config(&up, "")).await;
    let body = br#"{"type":"user.created","data":{"note":"BODYMARKER"}}"#;
    let others = vec![
        ("x-custom".to_owned(), "HEADERMARKER".to_owned()),
        ("authorization".to_owned(), "Bearer AUTHMARKER".to_owned()),
        ("cookie".to_owned(), "session=COOKIEMARKER".to_owned()),
        ("user-agent".to_owned(), "AGENTMARKER/1.0".to_owned()),
    ];
    let mut signatures = Vec::new();
    for (secret, id) in [(SECRET, "msg_good"), (STRANGER_SECRET, "msg_bad")] {
        let mut headers = signed(secret, id, now(), body);
        signatures.push(headers[2].1.clone());
        headers.extend_from_slice(&others);
        post(&proxy.url("/hook"), &headers, body).await;
    }
    assert_eq!(github(&proxy, "gh-1", body, &others).await, 200);
    signatures.push(github_signature(GITHUB_SECRET, body));
    let mut headers = others.clone();
    headers.push(("svix-signature".to_owned(), "v1,SIGNATUREMARKER".to_owned()));
    post(&proxy.url("/elsewhere"), &headers, body).await;
    assert_eq!(
        upstream.count(),
        2,
        "the good two were forwarded, markers and all"
    );

    let (_, _, json) = get(&format!("http://{}/deliveries", proxy.admin)).await;
    let (_, _, page) = get(&format!("http://{}/?limit=1000", proxy.admin)).await;
    let (json, page) = (
        String::from_utf8_lossy(&json),
        String::from_utf8_lossy(&page),
    );
    assert!(json.contains("msg_good") && page.contains("msg_good"));
    let secrets = [
        SECRET,
        &SECRET[6..],
        OTHER_SECRET,
        &OTHER_SECRET[6..],
        GITHUB_SECRET,
    ];
    let markers = ["MARKER"].into_iter().chain(secrets);
    for marker in markers.chain(signatures.iter().map(String::as_str)) {
        assert!(
            !json.contains(marker),
            "/deliveries holds {marker:?}: {json}"
        );
        assert!(!page.contains(marker), "the page holds {marker:?}");
    }
    for signature in &signatures {
        // The signature's value alone (after `v1,` or `sha256=`).
        let value = signature.rsplit([',', '=']).find(|s| s.len() > 20).unwrap();
        assert!(!json.contains(value) && !page.contains(value));
    }
}

/// With traces on (the binary, exporting to a collector the test runs), an entry names
/// its request's trace: the SERVER span's trace id.
#[tokio::test]
async fn with_traces_an_entry_names_its_trace() {
    use crate::helpers::collector::Collector;
    use crate::helpers::running::{config_dir, Running};
    let upstream = Upstream::ok().await;
    let collector = Collector::start().await;
    let telemetry = format!("[telemetry]\notlp_endpoint = \"{}\"", collector.url());
    let (_dir, file) = config_dir(&upstream, &telemetry);
    let fast = ("OTEL_BSP_SCHEDULE_DELAY", "20");
    let hookwall = Running::start_env(&file, Some("info"), &[fast]).await;
    assert_eq!(hookwall.post_event(SECRET, "msg_traced").await, 200);
    let span = collector.server_span("msg_traced").await;
    let (_, _, body) = get(&format!("http://{}/deliveries", hookwall.admin)).await;
    let json: Value = serde_json::from_slice(&body).unwrap();
    let entry = &json["deliveries"][0];
    assert_eq!(entry["id"], "msg_traced");
    assert_eq!(entry["trace_id"].as_str(), Some(span.trace_id.as_str()));
    let (_, _, page) = get(&format!("http://{}/", hookwall.admin)).await;
    assert!(String::from_utf8_lossy(&page).contains(&span.trace_id));
}

/// Runs Debian's `chromium` headless on `url` with `args` and returns what it printed.
/// Bounded: killed after 60 s. Polls (the proxy serves the page on this runtime).
async fn chromium(args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("chromium does not start (scripts/test.sh installs it): {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "chromium: {status}");
    reader.join().unwrap()
}

/// The `<tbody>` rows of the table with class `class` in `dom`.
fn rows<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    let start = dom
        .find(&format!("<table class=\"{class}\">"))
        .unwrap_or_else(|| panic!("no table {class}: {dom}"));
    let table = &dom[start..];
    let table = &table[..table.find("</table>").unwrap()];
    let body = &table[table.find("<tbody>").unwrap()..];
    body.split("<tr>").skip(1).collect()
}

/// The page as Chromium renders it: the routes, and the deliveries newest first, each a
/// row with its outcome; the page's own headers (CSP) as the contract says.
#[tokio::test]
async fn the_page_in_a_headless_browser_has_the_tables_and_rows() {
    let (_upstream, proxy) = start("").await;
    assert_eq!(svix(&proxy, SECRET, "msg_1", "user.created").await, 200);
    assert_eq!(svix(&proxy, SECRET, "msg_1", "user.created").await, 200);
    assert_eq!(svix(&proxy, SECRET, "msg_2", "session.ended").await, 200);
    assert_eq!(
        svix(&proxy, STRANGER_SECRET, "msg_3", "user.created").await,
        401
    );
    let page = format!("http://{}/", proxy.admin);
    let (status, headers, _) = get(&page).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'"
    );

    let dom = chromium(&["--dump-dom"], &page).await;
    assert!(
        dom.contains("<title>hookwall · recent deliveries</title>"),
        "{dom}"
    );
    let routes = rows(&dom, "routes");
    assert_eq!(routes.len(), 2);
    assert!(routes[0].contains(">r</a>") && routes[0].contains("<code>/hook</code>"));
    assert!(routes[1].contains("github") && routes[1].contains("forward to"));
    let deliveries = rows(&dom, "deliveries");
    let want = [
        ("msg_3", "invalid_signature"),
        ("msg_2", "filtered"),
        ("msg_1", "duplicate"),
        ("msg_1", "forwarded"),
    ];
    assert_eq!(deliveries.len(), want.len());
    for (row, (id, outcome)) in deliveries.iter().zip(want) {
        assert!(row.contains(&format!(">{id}</a>")), "{row}");
        assert!(row.contains(&format!(">{outcome}</a>")), "{row}");
    }
    // A filter link: the route's rows only.
    let dom = chromium(&["--dump-dom"], &format!("{page}?outcome=duplicate")).await;
    assert_eq!(rows(&dom, "deliveries").len(), 1);
}

/// A sender's id and event type made of markup are shown as text: the browser's DOM has
/// no `img` and no `script` element, only the escaped text.
#[tokio::test]
async fn a_senders_markup_is_text_in_the_browser() {
    let (_upstream, proxy) = start("").await;
    let markup = "<img src=x onerror=alert(1)><script>alert(1)</script>";
    assert_eq!(svix(&proxy, SECRET, markup, "user.created").await, 200);
    let kind = "<script>alert(2)</script>";
    assert_eq!(svix(&proxy, SECRET, "msg_2", kind).await, 200);
    let page = format!("http://{}/", proxy.admin);
    let (_, _, html) = get(&page).await;
    let html = String::from_utf8_lossy(&html);
    assert!(
        !html.contains("<img") && !html.contains("<script"),
        "{html}"
    );

    let dom = chromium(&["--dump-dom"], &page).await;
    assert!(!dom.contains("<img"), "an img element: {dom}");
    assert!(!dom.contains("<script"), "a script element: {dom}");
    let escaped = "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(1)&lt;/script&gt;";
    assert!(dom.contains(escaped), "the id as text: {dom}");
    assert!(dom.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
    assert_eq!(rows(&dom, "deliveries").len(), 2);
}

/// Not a test: makes `docs/deliveries.png`, the README's picture of the page. Run with
/// `cargo nextest run --run-ignored only -E 'test(screenshot)'`.
#[tokio::test]
#[ignore = "writes docs/deliveries.png"]
async fn screenshot_for_the_readme() {
    let upstream = Upstream::start(|received, _| {
        let failing = String::from_utf8_lossy(&received.body).contains("user.deleted");
        Reply::Status(if failing { 500 } else { 204 })
    })
    .await;
    let toml = config(&upstream.url("/api/webhooks"), "")
        .replace("name = \"r\"", "name = \"clerk\"")
        .replace("path = \"/hook\"", "path = \"/webhooks/clerk\"")
        .replace("name = \"gh\"", "name = \"github\"")
        .replace("path = \"/gh\"", "path = \"/webhooks/github\"");
    let proxy = Proxy::start(&toml).await;
    let clerk = async |secret: &str, id: &str, kind: &str| {
        deliver(&proxy, "/webhooks/clerk", secret, id, kind).await
    };
    clerk(SECRET, "msg_2mVq8Ew1", "user.created").await;
    clerk(SECRET, "msg_2mVq9Kx3", "user.updated").await;
    clerk(SECRET, "msg_2mVqAb7T", "session.created").await;
    clerk(SECRET, "msg_2mVq8Ew1", "user.created").await;
    let pr = br#"{"action":"opened","number":42}"#;
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    github_to(&proxy, "/webhooks/github", delivery, pr, &[]).await;
    clerk(STRANGER_SECRET, "msg_2mVqF00d", "user.created").await;
    clerk(SECRET, "msg_2mVqH9zQ", "user.deleted").await;
    post(&proxy.url("/webhooks/old"), &[], b"{}").await;
    clerk(SECRET, "msg_2mVqJ4pL", "user.created").await;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deliveries.png");
    let shot = format!("--screenshot={file}");
    let page = format!("http://{}/", proxy.admin);
    chromium(
        &[&shot, "--window-size=1280,800", "--hide-scrollbars"],
        &page,
    )
    .await;
    assert!(std::fs::metadata(file).unwrap().len() > 10_000);
}

/// A request the head's checks refuse is found by its id too: a stale event (a sender's
/// clock, or a replay) is the first thing an operator looks up.
#[tokio::test]
async fn a_request_refused_by_its_head_is_found_by_its_id() {
    let (_upstream, proxy) = start("").await;
    let body = event("user.created");
    let stale = signed(SECRET, "msg_stale_1", now() - 600, &body);
    let (status, _, _) = post(&proxy.url("/hook"), &stale, &body).await;
    assert_eq!(status, 401);
    let found = entries(&proxy, "?id=msg_stale_1").await;
    assert_eq!(ids(&found), ["msg_stale_1"]);
    assert_eq!(found[0]["outcome"], "timestamp_too_old");
    assert_eq!(found[0]["key"], Value::Null, "not verified: no dedup key");
    proxy.shutdown().await;
}
