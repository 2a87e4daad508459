//! A broken upstream, scripted byte by byte over raw TCP: reset mid-response, hanging,
//! answering slowly, answering with a huge body, closing keep-alive connections behind the
//! pool's back, going away and coming back. hookwall never answers 2xx unless the upstream
//! did; only the upstream's answer decides the id (a 2xx status line delivers it, anything
//! else releases it, and so does `upstream_deadline` before a 2xx status line); its pool
//! recovers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::running::Running;
use crate::helpers::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Reads one HTTP/1.1 request (head and Content-Length body); returns its svix-id.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .map(|v| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")?.parse().ok()?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    header("svix-id")
}

/// A raw upstream: `script` gets each connection after its first request was read.
async fn raw_upstream<F, Fut>(script: F) -> SocketAddr
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                if let Some(id) = read_request(&mut stream).await {
                    script(stream, id).await;
                }
            });
        }
    });
    addr
}

fn route(addr: SocketAddr, timeout: &str) -> String {
    route_to(&format!("http://{addr}/"), timeout)
}

fn route_to(upstream: &str, timeout: &str) -> String {
    format!(
        "[[routes]]\nname = \"r\"\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"{upstream}\"\nupstream_timeout = \"{timeout}\"\n"
    )
}

/// `hookwall run` (JSON log lines, read back with `log`) with `route(addr, timeout)` and
/// `route_extra` in it; the folder holding its config, kept until the test ends.
async fn running(
    addr: SocketAddr,
    timeout: &str,
    route_extra: &str,
) -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookwall.toml");
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n{}{route_extra}",
        route(addr, timeout)
    );
    std::fs::write(&file, config).unwrap();
    let hookwall = Running::start(&file).await;
    (dir, hookwall)
}

/// The first of `hookwall`'s log lines that contains `text`, once there is one.
async fn logged(hookwall: &Running, text: &str) -> String {
    let find = || hookwall.log().into_iter().find(|l| l.contains(text));
    until(text, async || find().is_some()).await;
    find().unwrap()
}

#[tokio::test]
async fn a_reset_after_a_2xx_status_line_is_a_502_and_the_id_is_delivered() {
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seen = attempts.clone();
    let addr = raw_upstream(move |mut stream, id| {
        let seen = seen.clone();
        async move {
            let first = first_attempt(&seen, id);
            if first {
                // 200 and half a body, then the connection dies.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                    .await;
                drop(stream);
            } else {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await;
    let proxy = Proxy::start(&route(addr, "2s")).await;
    let (status, reply) = deliver(&proxy, "/hook", SECRET, "msg_reset", "user.created").await;
    assert_eq!(
        (status, reply.as_ref()),
        (502, br#"{"error":"upstream_unavailable"}"#.as_ref())
    );
    // The upstream said 200 before its body broke: it took the event. The sender's retry
    // is a duplicate, not a second delivery.
    let (status, reply) = deliver(&proxy, "/hook", SECRET, "msg_reset", "user.created").await;
    assert_eq!(
        (status, reply.as_ref()),
        (200, br#"{"outcome":"duplicate"}"#.as_ref()),
        "the retry is a duplicate"
    );
    assert_eq!(attempts.lock().unwrap()["msg_reset"], 1);
    proxy.shutdown().await;
}

/// An upstream that takes the request, then resets the connection before any status
/// line: 502 `upstream_unavailable` as for one that refused it, but the log says the
/// request was sent (the upstream may have seen it), not that the upstream was
/// unreachable; the id is released, and the sender's retry is forwarded.
#[tokio::test]
async fn a_reset_after_the_request_was_sent_is_a_502_logged_as_such_and_releases_the_id() {
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seen = attempts.clone();
    let addr = raw_upstream(move |mut stream, id| {
        let first = first_attempt(&seen, id);
        async move {
            if first {
                // RST, not FIN: the request was read, and nothing is answered.
                stream.set_zero_linger().unwrap();
                drop(stream);
            } else {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await;
    let (_dir, hookwall) = running(addr, "2s", "").await;
    assert_eq!(hookwall.post_event(SECRET, "msg_rst").await, 502);
    let line = logged(&hookwall, "upstream_unavailable").await;
    assert!(
        line.contains("after the request was sent") && !line.contains("unreachable"),
        "{line}"
    );
    assert_eq!(
        hookwall.post_event(SECRET, "msg_rst").await,
        200,
        "released"
    );
    assert_eq!(attempts.lock().unwrap()["msg_rst"], 2);
}

#[tokio::test]
async fn a_byte_by_byte_answer_slower_than_the_timeout_is_a_504_and_the_forward_goes_on() {
    let attempts = Arc::new(Mutex::new(0usize));
    let seen = attempts.clone();
    let addr = raw_upstream(move |mut stream, _| {
        *seen.lock().unwrap() += 1;
        async move {
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await;
    let proxy = Proxy::start(&route(addr, "300ms")).await;
    let (status, _) = deliver(&proxy, "/hook", SECRET, "msg_slow", "user.created").await;
    assert_eq!(status, 504);
    // The backend is still answering: the retry is in flight, not a second delivery.
    let (status, _) = deliver(&proxy, "/hook", SECRET, "msg_slow", "user.created").await;
    assert_eq!(status, 409);
    until_upstream_answered(&proxy, "r", "2xx", 1.0).await;
    let (status, reply) = deliver(&proxy, "/hook", SECRET, "msg_slow", "user.created").await;
    assert_eq!(
        (status, reply.as_ref()),
        (200, br#"{"outcome":"duplicate"}"#.as_ref())
    );
    assert_eq!(*attempts.lock().unwrap(), 1);
    proxy.shutdown().await;
}

/// Only `upstream_deadline` abandons a forward: the connection is closed, the id released,
/// and the sender's next retry is forwarded again.
#[tokio::test]
async fn a_hanging_upstream_is_abandoned_at_the_deadline_and_the_id_released() {
    let attempts = Arc::new(Mutex::new(0usize));
    let seen = attempts.clone();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let addr = raw_upstream(move |mut stream, _| {
        *seen.lock().unwrap() += 1;
        let closed = closed_tx.clone();
        async move {
            // Never answers; notices when hookwall closes the connection.
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte).await;
            let _ = closed.send(());
        }
    })
    .await;
    let toml = format!("{}upstream_deadline = \"600ms\"\n", route(addr, "100ms"));
    let proxy = Proxy::start(&toml).await;
    let (status, _) = deliver(&proxy, "/hook", SECRET, "msg_hang", "user.created").await;
    assert_eq!(status, 504);
    let (status, _) = deliver(&proxy, "/hook", SECRET, "msg_hang", "user.created").await;
    assert_eq!(status, 409, "still in flight until the deadline");
    // The deadline closes the upstream connection.
    tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
        .await
        .expect("the abandoned forward's connection is closed");
    until_upstream_answered(&proxy, "r", "timeout", 1.0).await;
    assert_eq!(
        proxy.metrics().await.get("hookwall_dedup_entries", &[]),
        Some(0.0),
        "the id was released"
    );
    let (status, _) = deliver(&proxy, "/hook", SECRET, "msg_hang", "user.created").await;
    assert_eq!(status, 504, "the retry is forwarded again");
    assert_eq!(*attempts.lock().unwrap(), 2);
    proxy.shutdown().await;
}

/// A 2xx status line, then a body that stalls past `upstream_deadline`: the forward is
/// abandoned, but the upstream took the event, so its id stays delivered (the retry is a
/// duplicate), and the deadline's log line says so rather than that it was released.
#[tokio::test]
async fn a_body_stalled_past_the_deadline_after_a_2xx_leaves_the_id_delivered_and_says_so() {
    let attempts = Arc::new(Mutex::new(0usize));
    let seen = attempts.clone();
    let addr = raw_upstream(move |mut stream, _| {
        *seen.lock().unwrap() += 1;
        async move {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                .await;
            // The rest never comes; waits until hookwall closes the connection.
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte).await;
        }
    })
    .await;
    let (_dir, hookwall) = running(addr, "100ms", "upstream_deadline = \"600ms\"\n").await;
    assert_eq!(hookwall.post_event(SECRET, "msg_stalled").await, 504);
    let line = logged(&hookwall, "abandoned at upstream_deadline").await;
    assert!(
        line.contains("delivered") && !line.contains("released"),
        "{line}"
    );
    assert_eq!(
        send_event(&hookwall.url("/hook"), "msg_stalled").await,
        (200, r#"{"outcome":"duplicate"}"#.to_owned())
    );
    assert_eq!(*attempts.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_huge_upstream_body_is_cut_at_64_kib_with_a_correct_length() {
    let addr = raw_upstream(|mut stream, _| async move {
        let size = 8 * 1024 * 1024;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {size}\r\n\r\n"
        );
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if stream.write_all(&chunk).await.is_err() {
                return; // hookwall stopped reading: expected
            }
        }
    })
    .await;
    let proxy = Proxy::start(&route(addr, "5s")).await;
    let body = event("user.created");
    let (status, headers, reply) = post(
        &proxy.url("/hook"),
        &signed(SECRET, "msg_big", now(), &body),
        &body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(reply.len(), 64 * 1024);
    assert_eq!(headers["content-length"], (64 * 1024).to_string());
    assert_eq!(headers["content-type"], "text/plain");
    proxy.shutdown().await;
}

#[tokio::test]
async fn keep_alive_connections_closed_behind_the_pools_back_lose_nothing() {
    // Answers one request per connection, claiming keep-alive, then closes it.
    let delivered: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = delivered.clone();
    let addr = raw_upstream(move |mut stream, id| {
        let log = log.clone();
        async move {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
                )
                .await;
            log.lock().unwrap().push(id);
            let _ = stream.shutdown().await;
        }
    })
    .await;
    let proxy = Proxy::start(&route(addr, "2s")).await;
    // Like Svix: retry each event until it is acknowledged.
    for i in 0..30 {
        let id = format!("msg_{i}");
        let mut tries = 0;
        loop {
            tries += 1;
            let (status, _) = deliver(&proxy, "/hook", SECRET, &id, "user.created").await;
            if status == 200 {
                break;
            }
            assert_eq!(status, 502, "only a connection failure may interrupt");
            assert!(tries < 5, "{id} never got through");
        }
    }
    let delivered = delivered.lock().unwrap().clone();
    for i in 0..30 {
        assert_eq!(
            delivered
                .iter()
                .filter(|id| **id == format!("msg_{i}"))
                .count(),
            1
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn connections_are_spread_over_every_worker_and_each_reuses_its_pool() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                while read_request(&mut stream).await.is_some() {
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(ok).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start(&route(addr, "2s")).await;
    for i in 0..20 {
        let (status, _) =
            deliver(&proxy, "/hook", SECRET, &format!("msg_{i}"), "user.created").await;
        assert_eq!(status, 200);
    }
    // Each delivery comes on a new connection, and connections go to the workers in turn:
    // every worker forwards some, each through its own pool, so exactly one upstream
    // connection per worker, however many requests.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let connections = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        connections,
        workers.min(20),
        "upstream connections for 20 sequential forwards"
    );
    proxy.shutdown().await;
}

/// An upstream answering 200 to every request on `listener`; returns the `Host` headers seen.
fn host_recorder(listener: TcpListener) -> Arc<Mutex<Vec<String>>> {
    let hosts: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = hosts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let host = head.lines().find_map(|l| l.strip_prefix("host: "));
                seen.lock().unwrap().push(host.unwrap_or("").to_owned());
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    hosts
}

#[tokio::test]
async fn upstreams_by_name_and_by_ipv6_address() {
    // A name is resolved and each address tried in turn ("localhost" may resolve to ::1
    // first); an IPv6 literal is connected to without its brackets and sent with them in
    // `Host`.
    for (bind, host) in [("127.0.0.1:0", "localhost"), ("[::1]:0", "[::1]")] {
        let listener = TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| panic!("binding {bind}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let hosts = host_recorder(listener);
        let proxy = Proxy::start(&route_to(&format!("http://{host}:{port}/"), "2s")).await;
        let (status, _) = deliver(&proxy, "/hook", SECRET, "msg_host", "user.created").await;
        assert_eq!(status, 200, "{host}");
        assert_eq!(*hosts.lock().unwrap(), [format!("{host}:{port}")]);
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn the_pool_recovers_when_the_upstream_comes_back() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let proxy = Proxy::start(&route(addr, "2s")).await;
    let (status, _) = deliver(&proxy, "/hook", SECRET, "msg_back", "user.created").await;
    assert_eq!(status, 502);

    // The upstream comes back on the same port.
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                while read_request(&mut stream).await.is_some() {
                    if stream
                        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let (status, _) = deliver(&proxy, "/hook", SECRET, "msg_back", "user.created").await;
    assert_eq!(status, 204, "the retry is delivered");
    let (status, reply) = deliver(&proxy, "/hook", SECRET, "msg_back", "user.created").await;
    assert_eq!(
        (status, reply.as_ref()),
        (200, br#"{"outcome":"duplicate"}"#.as_ref())
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_when_the_upstream_fails_a_random_fraction() {
    // The upstream answers 503 to about a third of attempts (a fixed pseudo-random
    // sequence), and records what it answered to whom, in order.
    let answers: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let log = answers.clone();
    let upstream = Upstream::start(move |got, attempt| {
        let id = got.headers["svix-id"].to_str().unwrap().to_owned();
        let roll = (attempt as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61; // 0..8
        let status = if roll < 3 { 503 } else { 200 };
        log.lock().unwrap().push((id, status));
        Reply::Status(status)
    })
    .await;
    let proxy = Arc::new(
        Proxy::start(&format!(
        "[[routes]]\nname = \"r\"\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"{}\"\n",
        upstream.url("/")
    ))
        .await,
    );

    let events = 2000;
    let senders = 32;
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in (s..events).step_by(senders) {
                    let id = format!("msg_{i}");
                    // Svix retries anything that is not 2xx.
                    loop {
                        let (status, _) =
                            deliver(&proxy, "/hook", SECRET, &id, "user.created").await;
                        statuses.push(status);
                        if (200..300).contains(&status) {
                            break;
                        }
                    }
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "only 200 or the upstream's 503"
    );

    let answers = answers.lock().unwrap().clone();
    let mut delivered: HashMap<&str, usize> = HashMap::new();
    for (at, (id, status)) in answers.iter().enumerate() {
        assert!(
            !delivered.contains_key(id.as_str()),
            "{id} forwarded again after its 2xx (at {at})"
        );
        if *status == 200 {
            delivered.insert(id, at);
        }
    }
    assert_eq!(
        delivered.len(),
        events,
        "every event reached the upstream with a 2xx"
    );
    let failed = answers.iter().filter(|(_, s)| *s == 503).count();
    assert!(
        failed > events / 10,
        "the upstream failed often enough to matter: {failed}"
    );
    Arc::try_unwrap(proxy).ok().unwrap().shutdown().await;
}

/// A sender that hangs up while its event is being forwarded: the forward goes on, the
/// upstream's later 200 marks the id delivered, and the sender's retry is a duplicate.
#[tokio::test]
async fn a_sender_hanging_up_mid_forward_does_not_cause_a_second_delivery() {
    let (upstream, arrived, release) = holding_upstream().await;
    let proxy = Proxy::start(&route_to(&upstream.url("/"), "10s")).await;
    let mut sender = TcpStream::connect(proxy.addr).await.unwrap();
    sender
        .write_all(&raw_signed_request("/hook", "msg_gone"))
        .await
        .unwrap();
    arrived.notified().await;
    drop(sender); // hangs up while the upstream works
    until("the request to be dropped", async || {
        proxy
            .metrics()
            .await
            .get("hookwall_in_flight_requests", &[])
            == Some(0.0)
    })
    .await;
    // The retry meanwhile is in flight: the first forward still runs.
    let (status, _) = deliver(&proxy, "/hook", SECRET, "msg_gone", "user.created").await;
    assert_eq!(status, 409);
    release.notify_one();
    until_upstream_answered(&proxy, "r", "2xx", 1.0).await;
    let (status, reply) = deliver(&proxy, "/hook", SECRET, "msg_gone", "user.created").await;
    assert_eq!(
        (status, reply.as_ref()),
        (200, br#"{"outcome":"duplicate"}"#.as_ref())
    );
    assert_eq!(upstream.ids()["msg_gone"], 1);
    proxy.shutdown().await;
}

/// An upstream whose SYNs are never answered (its listen queue is full, so the kernel
/// drops them): nothing is ever sent, so the sender gets 502 `upstream_unavailable` at
/// `connect_timeout` (3 s by default, under the route's 5 s `upstream_timeout`) and the id
/// is released at once. Once the upstream is fixed, the sender's retry is forwarded, once.
#[tokio::test]
async fn a_blackholed_upstream_is_a_502_at_connect_timeout_and_the_retry_goes_through() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let blackhole = socket.listen(0).unwrap();
    let addr = blackhole.local_addr().unwrap();
    // The queue holds one connection; a second one's SYNs go unanswered.
    let _queued = TcpStream::connect(addr).await.unwrap();
    let probe = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr));
    assert!(probe.await.is_err(), "the listener does not blackhole");
    let proxy = Proxy::start(&route(addr, "5s")).await;

    let started = std::time::Instant::now();
    let (status, reply) = send_event(&proxy.url("/hook"), "msg_blackholed").await;
    let took = started.elapsed();
    assert_eq!(
        (status, reply.as_str()),
        (502, r#"{"error":"upstream_unavailable"}"#)
    );
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4500),
        "answered after {took:?}"
    );
    let m = proxy.metrics().await;
    assert_eq!(m.requests("r", "upstream_unavailable"), 1.0);
    assert_eq!(
        m.get(
            "hookwall_upstream_responses_total",
            &[("route", "r"), ("class", "error")]
        ),
        Some(1.0)
    );
    // Fixed: the same listener is served now. The retry is forwarded (not 409).
    let fixed = Upstream::on(blackhole);
    assert_eq!(
        send_event(&proxy.url("/hook"), "msg_blackholed").await.0,
        200
    );
    assert_eq!(fixed.ids().get("msg_blackholed"), Some(&1));
    assert_eq!(
        send_event(&proxy.url("/hook"), "msg_blackholed").await.0,
        200
    );
    assert_eq!(
        fixed.ids().get("msg_blackholed"),
        Some(&1),
        "then a duplicate"
    );
    proxy.shutdown().await;
}

/// Counts an attempt at `id`: whether it is the first.
fn first_attempt(seen: &Mutex<HashMap<String, usize>>, id: String) -> bool {
    let mut seen = seen.lock().unwrap();
    let n = seen.entry(id).or_default();
    *n += 1;
    *n == 1
}
