//! Strangers pay for what they hold (contract §6), tried as an attacker without a secret
//! would: heads whose bodies never come, bodies that trickle a byte a second, bodies that
//! stall once most of them is sent, a flood past the connection cap. Each is bounded by
//! what it has actually sent, and signed events are answered meanwhile.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::running::{config_dir, Running};
use crate::helpers::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Generous: only keeps a broken build from hanging the suite.
const BOUND: Duration = Duration::from_secs(10);

/// A connection's read buffer with the default `max_header_bytes`, which a body in more
/// than one piece is charged for.
const READ_BUFFER: f64 = 32_768.0 + 8_192.0;

/// An unsigned head for `/hook` (fresh timestamp, a signature that cannot match) declaring
/// a body of `length` bytes.
fn unsigned_head(length: u64) -> String {
    format!(
        "POST /hook HTTP/1.1\r\nhost: x\r\nsvix-id: msg_stranger\r\nsvix-timestamp: {}\r\n\
         svix-signature: v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\r\n",
        now()
    )
}

/// How a stranger's connection ended: after how long (from its head), and what came back.
type Ended = Option<(Duration, Vec<u8>)>;

/// `count` strangers, each sending an unsigned head declaring 128 B to 1 MiB, then a byte
/// a second if `trickle`, else nothing. Each task ends when the server answers or closes
/// (within `BOUND`, else `None`).
async fn strangers(
    addr: SocketAddr,
    count: usize,
    trickle: bool,
) -> Vec<tokio::task::JoinHandle<Ended>> {
    let sent = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.ok()?;
                let length = 128 + (i as u64 * 7919) % ((1 << 20) - 128);
                stream
                    .write_all(unsigned_head(length).as_bytes())
                    .await
                    .ok()?;
                sent.fetch_add(1, Ordering::SeqCst);
                let started = Instant::now();
                let (mut reader, mut writer) = stream.into_split();
                let dripping = tokio::spawn(async move {
                    if trickle {
                        loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            if writer.write_all(b"x").await.is_err() {
                                break;
                            }
                        }
                    }
                    // The write half stays open: a stall, not a close.
                    std::future::pending::<()>().await;
                });
                let mut answer = Vec::new();
                let read = tokio::time::timeout(BOUND, reader.read_to_end(&mut answer)).await;
                dripping.abort();
                read.ok().map(|_| (started.elapsed(), answer))
            })
        })
        .collect();
    until("every stranger to send its head", async || {
        sent.load(Ordering::SeqCst) == count
    })
    .await;
    tasks
}

/// Ten signed 3 KB events, one after another: their statuses.
async fn ten_signed(url: &str, prefix: &str) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..10 {
        let id = format!("{prefix}{i}");
        let answer = tokio::time::timeout(BOUND, send_event(url, &id));
        statuses.push(answer.await.expect("a signed event is answered").0);
    }
    statuses
}

/// How many strangers were answered 408 or closed within 8 s.
async fn cut_within_8_s(strangers: Vec<tokio::task::JoinHandle<Ended>>) -> (usize, usize) {
    let count = strangers.len();
    let mut cut = 0;
    for stranger in strangers {
        if let Ok(Some((after, answer))) = stranger.await {
            let timed_out = answer.is_empty() || answer.starts_with(b"HTTP/1.1 408");
            if timed_out && after <= Duration::from_secs(8) {
                cut += 1;
            }
        }
    }
    (cut, count)
}

/// 960 heads declaring bodies of 128 B to 1 MiB, and no body byte: they hold no room in
/// the budget (it is charged as bytes arrive), so signed events are served at once; and
/// each is answered 408 (`min_body_rate`) well within 8 s.
#[tokio::test]
async fn heads_without_bodies_hold_nothing() {
    let upstream = Upstream::ok().await;
    let (_dir, file) = config_dir(&upstream, "");
    let hw = Running::start(&file).await;
    let strangers = strangers(hw.public, 960, false).await;
    assert_eq!(
        ten_signed(&hw.url("/hook"), "msg_heads_").await,
        vec![200; 10]
    );
    let (cut, count) = cut_within_8_s(strangers).await;
    eprintln!("960 heads without bodies: {cut} of {count} answered 408 or closed within 8 s");
    assert!(cut * 10 >= count * 9, "{cut} of {count} cut within 8 s");
    assert_eq!(upstream.count(), 10);
}

/// 960 bodies trickling a byte a second: they fall behind `min_body_rate` after their
/// first second and are answered 408 and closed; signed events are served throughout.
#[tokio::test]
async fn trickling_bodies_are_cut_off() {
    let upstream = Upstream::ok().await;
    let (_dir, file) = config_dir(&upstream, "");
    let hw = Running::start(&file).await;
    let strangers = strangers(hw.public, 960, true).await;
    assert_eq!(
        ten_signed(&hw.url("/hook"), "msg_trickle_").await,
        vec![200; 10]
    );
    let (cut, count) = cut_within_8_s(strangers).await;
    eprintln!("960 trickling bodies: {cut} of {count} answered 408 or closed within 8 s");
    assert!(cut * 10 >= count * 9, "{cut} of {count} cut within 8 s");
    let m = hw.metrics().await;
    assert!(m.requests("hook", "body_timeout") >= 0.9 * 960.0);
}

/// Bodies hold what they sent (and, once in more than one piece, their connection's read
/// buffer: 40 KiB by default), never what they declare; with the budget full, a body that
/// arrives is refused (503) while the others are still arriving, and takes the room of one
/// that stalled for a second (which is answered 408); everything is given back in the end.
#[tokio::test]
async fn bodies_hold_what_they_sent_and_the_stalled_give_way() {
    let upstream = Upstream::ok().await;
    let limits = "max_body_bytes = 100000\nmax_buffered_bytes = 300000\nmin_body_rate = 0";
    let proxy = Proxy::start(&one_route(&upstream, limits)).await;
    let buffered = async || {
        let m = proxy.metrics().await;
        m.get("hookwall_buffered_body_bytes", &[]).unwrap()
    };
    let mut stalled = Vec::new();
    for i in 1..=2 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(unsigned_head(100_000).as_bytes())
            .await
            .unwrap();
        stream.write_all(&[b'x'; 90_000]).await.unwrap();
        until("the body's bytes to be held", async || {
            buffered().await == (90_000.0 + READ_BUFFER) * i as f64
        })
        .await;
        stalled.push(stream);
    }
    // A third arrives while the two still count as arriving: refused.
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third
        .write_all(unsigned_head(100_000).as_bytes())
        .await
        .unwrap();
    let _ = third.write_all(&[b'x'; 90_000]).await;
    let mut refused = Vec::new();
    let _ = tokio::time::timeout(BOUND, third.read_to_end(&mut refused)).await;
    let refused = String::from_utf8_lossy(&refused).to_ascii_lowercase();
    assert!(refused.starts_with("http/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    // A signed event fits beside them.
    assert_eq!(send_event(&proxy.url("/hook"), "msg_fits").await.0, 200);
    // Once they have stalled for a second, an arriving body takes one's room: it is read
    // whole (and refused for its signature), and the stalled one is answered 408.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut fourth = TcpStream::connect(proxy.addr).await.unwrap();
    fourth
        .write_all(unsigned_head(100_000).as_bytes())
        .await
        .unwrap();
    fourth.write_all(&[b'x'; 100_000]).await.unwrap();
    let mut answer = [0u8; 12];
    let read = tokio::time::timeout(BOUND, fourth.read_exact(&mut answer)).await;
    read.unwrap().unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401");
    let mut gave_way = 0;
    for stream in &mut stalled {
        let mut got = Vec::new();
        let ended = tokio::time::timeout(Duration::from_millis(500), stream.read_to_end(&mut got));
        if ended.await.is_ok() {
            assert!(
                got.starts_with(b"HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&got)
            );
            gave_way += 1;
        }
    }
    assert_eq!(gave_way, 1, "one stalled body gave its room up");
    let m = proxy.metrics().await;
    assert_eq!(m.requests("r", "overloaded"), 1.0);
    assert_eq!(m.requests("r", "body_timeout"), 1.0);
    // The other one's sender goes away: what it held is given back too.
    drop(stalled);
    until("the budget to empty", async || buffered().await == 0.0).await;
    proxy.shutdown().await;
}

/// 600 senders each announce 1 MB, really send ~960 KB, and stall: what they hold is
/// bounded by `max_buffered_bytes` (RSS under the example pod's 128 MiB), and ten signed
/// events meanwhile are each forwarded, taking the room of stalled bodies if they must.
#[tokio::test]
async fn six_hundred_stalled_bodies_stay_under_128_mib() {
    let upstream = Upstream::ok().await;
    let (_dir, file) = config_dir(&upstream, "");
    let hw = Running::start(&file).await;
    let addr = hw.public;
    let written = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..600 {
        let written = written.clone();
        senders.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            stream
                .write_all(unsigned_head(1_000_000).as_bytes())
                .await
                .ok()?;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..15 {
                if stream.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            written.fetch_add(1, Ordering::SeqCst);
            // Stall: hold the connection until the test ends.
            Some(stream)
        }));
    }
    until_within(
        "the senders to stall",
        Duration::from_secs(60),
        async || written.load(Ordering::SeqCst) == 600,
    )
    .await;
    assert_eq!(
        ten_signed(&hw.url("/hook"), "msg_real_").await,
        vec![200; 10]
    );
    let buffered = hw
        .metrics()
        .await
        .get("hookwall_buffered_body_bytes", &[])
        .unwrap();
    assert!(buffered <= 64.0 * 1024.0 * 1024.0, "{buffered}");
    let peak_kib = peak_rss_kib(hw.child.id());
    eprintln!(
        "600 stalled senders: peak RSS {} MiB, {buffered} body bytes held, 10 signed events 200",
        peak_kib / 1024
    );
    assert!(
        peak_kib < 128 * 1024,
        "peak RSS {} MiB under 600 stalled bodies",
        peak_kib / 1024
    );
    drop(senders);
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// With the public port flooded past `max_connections`, the admin listener still answers
/// at once (refusals run on the acceptor's thread). What the admin port's own clients hold
/// is tried in `admin`.
#[tokio::test]
async fn the_admin_side_stays_answerable() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "max_connections = 4")).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        held.push(stream);
    }
    let flood: Vec<_> = (0..300)
        .map(|_| {
            let addr = proxy.addr;
            tokio::spawn(async move { TcpStream::connect(addr).await.ok() })
        })
        .collect();
    let readyz = format!("http://{}/readyz", proxy.admin);
    for _ in 0..20 {
        let asked = Instant::now();
        let (status, _, _) = tokio::time::timeout(BOUND, get(&readyz)).await.unwrap();
        assert_eq!(status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }
    drop(flood);
    proxy.shutdown().await;
}

/// What a verified body holds is counted until its request ends: 200 signed ~900 KB
/// events, each sent in four pieces, arrive over three seconds at an upstream that holds
/// them. The bodies waiting for the upstream keep their room (a body that is whole has not
/// stalled), so the budget bounds what is held: those past it are answered 503 with
/// `Retry-After`, and nothing is answered 2xx that was not forwarded. Before, a whole body's
/// room went to the next one a second after its last byte while its bytes stayed: every
/// event was let in (RSS ~200 MiB, the gauge ~64 MB).
#[tokio::test]
async fn verified_bodies_waiting_for_their_upstream_stay_counted() {
    let (upstream, _arrived, release) = holding_upstream().await;
    let (_dir, file) = config_dir(&upstream, "");
    let hw = Running::start(&file).await;
    let addr = hw.public;
    const EVENTS: usize = 200;
    let refused = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..EVENTS)
        .map(|i| {
            let refused = refused.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15 * i as u64)).await;
                let answer = big_signed_event(addr, &format!("msg_big_{i}")).await;
                if !answer.starts_with("http/1.1 200") {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                answer
            })
        })
        .collect();
    until_within(
        "every event to be held upstream or refused",
        Duration::from_secs(60),
        async || upstream.count() + refused.load(Ordering::SeqCst) == EVENTS,
    )
    .await;
    let held = upstream.count();
    let buffered = hw
        .metrics()
        .await
        .get("hookwall_buffered_body_bytes", &[])
        .unwrap();
    let peak_kib = peak_rss_kib(hw.child.id());
    eprintln!(
        "200 signed 900 KB events held upstream: {held} forwarded, {} refused, {buffered} body \
         bytes held, peak RSS {} MiB",
        EVENTS - held,
        peak_kib / 1024
    );
    assert!(buffered <= 64.0 * 1024.0 * 1024.0, "{buffered}");
    assert!(
        buffered >= held as f64 * 900_000.0,
        "{held} bodies held, {buffered} counted"
    );
    // The debug build's peak varies with the allocator (107-142 MiB over ten runs here);
    // the release build's is measured by `MODE=verified benches/load/attack.sh` against the
    // 128 MiB target. Before, every event was let in: ~200 MiB.
    assert!(peak_kib < 160 * 1024, "peak RSS {} MiB", peak_kib / 1024);
    assert!(held < EVENTS, "the budget let every event in");
    release.notify_waiters();
    let mut answers = Vec::new();
    for sender in senders {
        answers.push(sender.await.unwrap());
    }
    let ok = answers
        .iter()
        .filter(|a| a.starts_with("http/1.1 200"))
        .count();
    assert_eq!(
        ok, held,
        "every 2xx was forwarded, every forward answered 2xx"
    );
    let overloaded = answers
        .iter()
        .filter(|a| a.starts_with("http/1.1 503") && a.contains("retry-after: 1"))
        .count();
    // A refusal closes the connection while the sender may still be writing: a reset can
    // then discard the 503 before it is read. Every other answer is one of the two.
    let reset = answers.iter().filter(|a| a.is_empty()).count();
    // On a loaded machine a worker busy verifying 900 KB bodies reads the others late: one
    // that looks stalled while the budget is full gives its room up (408). Also a refusal.
    let gave_way = answers
        .iter()
        .filter(|a| a.starts_with("http/1.1 408"))
        .count();
    assert_eq!(overloaded + reset + gave_way + ok, EVENTS, "{answers:?}");
    assert!(overloaded > 0);
    let m = hw.metrics().await;
    let refused = m.requests("hook", "overloaded") + m.requests("hook", "body_timeout");
    assert_eq!(refused as usize, EVENTS - held);
}

/// Sends a signed ~900 KB event in four pieces, 20 ms apart: the answer's head, lowercased
/// ("" if the connection closed or reset before one came).
async fn big_signed_event(addr: SocketAddr, id: &str) -> String {
    let mut body = br#"{"type":"user.created","data":""#.to_vec();
    body.resize(900_000 - 2, b'x');
    body.extend_from_slice(br#""}"#);
    let mut head = format!(
        "POST /hook HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in signed(SECRET, id, now(), &body) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return String::new();
    };
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(head.as_bytes()).await?;
        for piece in body.chunks(body.len().div_ceil(4)) {
            writer.write_all(piece).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, std::io::Error>(())
    };
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    // The answer may come before the body is all written (a refusal): read while writing.
    let (_, ()) = tokio::join!(write, read);
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

/// 100 bodies send 900 KB at once, then a byte every 0.9 s (never a one-second stall):
/// `min_body_rate` is kept over any one-second window, not on average since the body
/// began, so each is cut (408, or refused 503 at once when the budget was full) about two
/// seconds after its head (its grace, then one window), not after the ~15 s its average
/// would allow. Once they trickle they have stalled for the budget too: ten signed events
/// take their room and are forwarded.
#[tokio::test]
async fn bodies_that_start_fast_then_trickle_are_cut_within_two_seconds() {
    let upstream = Upstream::ok().await;
    let (_dir, file) = config_dir(&upstream, "");
    let hw = Running::start(&file).await;
    let addr = hw.public;
    let fast = Arc::new(AtomicUsize::new(0));
    let strangers: Vec<_> = (0..100)
        .map(|_| {
            let fast = fast.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.ok()?;
                let started = Instant::now();
                let (mut reader, mut writer) = stream.split();
                let write = async {
                    let sent = async {
                        writer.write_all(unsigned_head(1_000_000).as_bytes()).await?;
                        writer.write_all(&vec![b'x'; 900_000]).await
                    };
                    let sent = sent.await;
                    fast.fetch_add(1, Ordering::SeqCst);
                    if sent.is_ok() {
                        loop {
                            tokio::time::sleep(Duration::from_millis(900)).await;
                            if writer.write_all(b"x").await.is_err() {
                                break;
                            }
                        }
                    }
                    std::future::pending::<()>().await
                };
                let mut answer = [0u8; 12];
                let read = tokio::time::timeout(BOUND, reader.read_exact(&mut answer));
                let answer = tokio::select! {
                    read = read => read.ok().map(|r| if r.is_ok() { answer.to_vec() } else { Vec::new() }),
                    () = write => unreachable!(),
                };
                answer.map(|answer| (started.elapsed(), answer))
            })
        })
        .collect();
    until_within("the strangers' fast starts", BOUND, async || {
        fast.load(Ordering::SeqCst) == 100
    })
    .await;
    // Past their first second, the trickling bodies have stalled: signed events take
    // their room.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        ten_signed(&hw.url("/hook"), "msg_fast_trickle_").await,
        vec![200; 10]
    );
    let (mut cut, mut slowest) = (0, Duration::ZERO);
    for stranger in strangers {
        let (after, answer) = stranger
            .await
            .unwrap()
            .expect("answered or closed within 10 s");
        assert!(
            answer.is_empty() || answer == b"HTTP/1.1 408" || answer == b"HTTP/1.1 503",
            "{}",
            String::from_utf8_lossy(&answer)
        );
        slowest = slowest.max(after);
        cut += usize::from(after <= Duration::from_millis(3_500));
    }
    eprintln!("100 fast-then-trickle bodies: {cut} cut within 3.5 s of their head, the slowest after {slowest:?}");
    assert_eq!(cut, 100, "slowest after {slowest:?}");
    assert_eq!(upstream.count(), 10);
}
