//! A public port, tried as an attacker without a secret would: connections that send
//! nothing or half a head, idle connections, a burst over the connection cap, heads that
//! can be refused before their body, and signature headers stuffed with `v1a` entries.
//! Each is bounded, and a signed event is still answered meanwhile. (Bodies: `strangers`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::*;
use base64::Engine as _;
use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Generous: only keeps a broken build from hanging the suite.
const BOUND: Duration = Duration::from_secs(10);

/// Reads until the server closes the connection; what it sent, or `None` if it did not
/// close within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut got)).await {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

#[tokio::test]
async fn silence_and_half_heads_are_closed_within_header_read_timeout() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "header_read_timeout = \"300ms\"")).await;
    let h2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let empty_settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    let cases: [(&str, Vec<u8>); 4] = [
        ("no byte at all", Vec::new()),
        // Before version detection: not yet 24 bytes of an HTTP/2 preface.
        ("half an HTTP/2 preface", h2_preface[..16].to_vec()),
        // After detection, HTTP/2: a preface and SETTINGS, but never a request.
        (
            "an HTTP/2 connection without a request",
            [h2_preface.as_slice(), &empty_settings].concat(),
        ),
        // After detection, HTTP/1.1: a head that never ends.
        (
            "half an HTTP/1.1 head",
            b"POST /hook HTTP/1.1\r\nhost: x\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        assert!(
            closed_within(&mut stream, BOUND).await.is_some(),
            "{what}: not closed"
        );
    }
    assert_eq!(
        deliver(&proxy, "/hook", SECRET, "msg_ok", "user.created")
            .await
            .0,
        200
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn connections_with_nothing_in_progress_are_closed_after_idle_timeout() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(
        &upstream,
        "header_read_timeout = \"30s\"\nidle_timeout = \"300ms\"",
    ))
    .await;

    // HTTP/1.1 keep-alive: one request answered, then nothing.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(&raw_signed_request("/hook", "msg_h1"))
        .await
        .unwrap();
    let got = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("an idle HTTP/1.1 connection is closed");
    assert!(got.starts_with(b"HTTP/1.1 200"), "answered first");

    // HTTP/2: one stream answered, then nothing: GOAWAY, and the connection ends.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let body = event("user.created");
    let mut request = http::Request::post("http://127.0.0.1/hook");
    for (k, v) in signed(SECRET, "msg_h2", now(), &body) {
        request = request.header(k, v);
    }
    let (response, mut stream) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    stream.send_data(Bytes::from(body), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap()
        .expect("closed gracefully, with GOAWAY");
    assert_eq!(upstream.count(), 2);
    proxy.shutdown().await;
}

/// The first row of the issue: `max_connections` silent sockets used to hold every slot
/// for ever, so signed events got 503 until a restart.
#[tokio::test]
async fn silent_connections_cannot_hold_the_cap() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(
        &upstream,
        "max_connections = 10\nheader_read_timeout = \"500ms\"",
    ))
    .await;
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // Every slot taken (polled: the acceptor counts them as they arrive): a new
    // connection is answered 503 before it sends anything.
    until("the cap to be reached", async || {
        let mut probe = TcpStream::connect(proxy.addr).await.unwrap();
        let got = closed_within(&mut probe, BOUND).await.unwrap_or_default();
        got.starts_with(b"HTTP/1.1 503")
    })
    .await;
    // The silent ones are closed within header_read_timeout, and signed events get in.
    // (While refused, the sender gets 503 and tries again.)
    until("a signed event to be served", async || {
        let body = event("user.created");
        let headers = signed(SECRET, "msg_in", now(), &body);
        matches!(
            try_post(&proxy.url("/hook"), &headers, &body).await,
            Ok((200, _, _))
        )
    })
    .await;
    for mut stream in silent {
        assert_eq!(closed_within(&mut stream, BOUND).await, Some(Vec::new()));
    }
    proxy.shutdown().await;
}

/// A burst of connections at once: exactly `max_connections` are taken, every other one
/// is answered 503 before anything is read.
#[tokio::test]
async fn the_connection_cap_is_exact_under_a_burst() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(
        &upstream,
        "max_connections = 20\nheader_read_timeout = \"30s\"",
    ))
    .await;
    let refused = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::new();
    for _ in 0..60 {
        let (addr, refused) = (proxy.addr, refused.clone());
        held.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got).await;
            if got.starts_with(b"HTTP/1.1 503") {
                refused.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    until("40 refusals", async || {
        refused.load(Ordering::SeqCst) == 40
            && proxy.metrics().await.requests("_unmatched", "overloaded") == 40.0
    })
    .await;
    let open = held.iter().filter(|task| !task.is_finished()).count();
    assert_eq!(open, 20, "exactly max_connections are served");
    for task in held {
        task.abort();
    }
    proxy.shutdown().await;
}

/// What can be refused from the head is refused without waiting for the body: these
/// heads announce 1 MB that never comes, and are answered at once.
#[tokio::test]
async fn the_head_is_refused_before_the_body_is_read() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "")).await;
    let fresh = now();
    let cases = [
        ("POST /nope", String::new(), "HTTP/1.1 404"),
        ("PUT /hook", String::new(), "HTTP/1.1 405"),
        ("POST /hook", String::new(), "HTTP/1.1 400"),
        (
            "POST /hook",
            format!("svix-id: m\r\nsvix-timestamp: {fresh}x\r\nsvix-signature: v1,AA\r\n"),
            "HTTP/1.1 400",
        ),
        (
            "POST /hook",
            format!(
                "svix-id: m\r\nsvix-timestamp: {}\r\nsvix-signature: v1,AA\r\n",
                fresh - 3600
            ),
            "HTTP/1.1 401",
        ),
        (
            "POST /hook",
            format!(
                "svix-id: {}\r\nsvix-timestamp: {fresh}\r\nsvix-signature: v1,AA\r\n",
                "i".repeat(300)
            ),
            "HTTP/1.1 400",
        ),
    ];
    for (line, signed, want) in cases {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let head = format!("{line} HTTP/1.1\r\nhost: x\r\n{signed}content-length: 1000000\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reply = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
            .await
            .unwrap_or_else(|_| panic!("{line} {signed:?}: waited for the body"))
            .unwrap();
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with(want), "{line} {signed:?}: {reply}");
    }
    assert_eq!(
        proxy
            .metrics()
            .await
            .get("hookwall_buffered_body_bytes", &[]),
        Some(0.0)
    );
    proxy.shutdown().await;
}

/// The third row: 32 well-formed `v1a` entries used to cost 32 ed25519 checks over the
/// body. At most 4 are checked: a valid signature placed fifth is not reached.
#[tokio::test]
async fn at_most_four_v1a_entries_are_checked() {
    let upstream = Upstream::ok().await;
    let key = |seed: u8| {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let b64 = base64::engine::general_purpose::STANDARD;
        (
            format!("whsk_{}", b64.encode(signing.to_keypair_bytes())),
            format!("whpk_{}", b64.encode(signing.verifying_key().to_bytes())),
        )
    };
    let ((secret, public), (other, _)) = (key(1), key(2));
    let proxy = Proxy::start(&format!(
        "[[routes]]\nname = \"std\"\npath = \"/std\"\nsecrets = [\"{public}\"]\nupstream = \"{}\"\n",
        upstream.url("/")
    ))
    .await;
    let body = event("user.created");
    for (decoys, want) in [(4, 401), (3, 200)] {
        let id = format!("msg_{decoys}");
        let ts = now();
        let good = signer(&secret).sign(&id, ts, &body);
        let bad = signer(&other).sign(&id, ts, &body);
        let header = format!("{} {good}", vec![bad.as_str(); decoys].join(" "));
        let headers = vec![
            ("webhook-id".to_owned(), id.clone()),
            ("webhook-timestamp".to_owned(), ts.to_string()),
            ("webhook-signature".to_owned(), header),
        ];
        let (status, _, _) = post(&proxy.url("/std"), &headers, &body).await;
        assert_eq!(status, want, "{decoys} decoys first");
    }
    proxy.shutdown().await;
}
