//! The admin port, tried as a client that holds what it can would (contract §4): silent
//! connections and heads sent a byte a second, up to and past the admin cap. The probes
//! (`/healthz`, `/readyz`) are answered within 2 s throughout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// What the contract promises a probe.
const PROBE_BOUND: Duration = Duration::from_secs(2);

/// GETs `url` on a new connection: its status, or why it got none, and how long it took.
async fn probe(url: &str) -> (Result<u16, String>, Duration) {
    let asked = Instant::now();
    let answer = match tokio::time::timeout(PROBE_BOUND, try_send("GET", url, &[], b"")).await {
        Ok(Ok((status, _, _))) => Ok(status),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_BOUND:?}")),
    };
    (answer, asked.elapsed())
}

/// 100 connections that send nothing, then 100 that send `GET /healthz HTTP/1.1\r\n` a
/// byte a second: for five seconds, a probe every 200 ms on a new connection (`/healthz`
/// and `/readyz` in turn) is answered 200 within 2 s. The silent and the slow give way to
/// the arriving, and none holds a place longer than the admin side's head timeout.
#[tokio::test]
async fn probes_are_answered_past_the_admin_cap_of_silent_and_slow_connections() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "")).await;
    let admin = proxy.admin;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(admin).await.unwrap());
    }
    let connected = Arc::new(AtomicUsize::new(0));
    let tricklers: Vec<_> = (0..100)
        .map(|_| {
            let connected = connected.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(admin).await else {
                    return;
                };
                connected.fetch_add(1, Ordering::Relaxed);
                for byte in b"GET /healthz HTTP/1.1\r\n" {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    // The pace is the attack.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        })
        .collect();
    until("the tricklers to connect", async || {
        connected.load(Ordering::Relaxed) == 100
    })
    .await;

    let mut pace = tokio::time::interval(Duration::from_millis(200));
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    let mut probes = 0;
    while started.elapsed() < Duration::from_secs(5) {
        pace.tick().await;
        let path = ["/healthz", "/readyz"][probes % 2];
        let (answer, took) = probe(&format!("http://{admin}{path}")).await;
        assert_eq!(answer, Ok(200), "{path} after {:?}", started.elapsed());
        slowest = slowest.max(took);
        probes += 1;
    }
    eprintln!("{probes} probes, the slowest answered in {slowest:?}");
    for trickler in tricklers {
        trickler.abort();
    }
    drop(silent);
    proxy.shutdown().await;
}

/// Full of connections that sent nothing, the admin side closes the oldest of them for a
/// new one rather than refuse the new one: the 65th connection is served, the first is
/// closed at once.
#[tokio::test]
async fn a_full_admin_side_closes_its_oldest_idle_connection_for_a_new_one() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "")).await;
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(TcpStream::connect(proxy.admin).await.unwrap());
    }
    let (answer, took) = probe(&format!("http://{}/readyz", proxy.admin)).await;
    assert_eq!(answer, Ok(200));
    assert!(took < PROBE_BOUND, "{took:?}");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(PROBE_BOUND, held[0].read_to_end(&mut got)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the oldest silent connection is closed: {closed:?}"
    );
    drop(held);
    proxy.shutdown().await;
}

/// A connection that sends nothing, and one that sends its head a byte a second, hold
/// their places 2 s at most: the admin side's head timeout, from the accept.
#[tokio::test]
async fn silent_and_slow_heads_are_closed_after_two_seconds() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "")).await;
    let admin = proxy.admin;
    let held_for = async |trickle: bool| {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        let connected = Instant::now();
        let (mut reader, mut writer) = stream.split();
        let trickling = async {
            for byte in b"GET /healthz HTTP/1.1\r\n".iter().filter(|_| trickle) {
                if writer.write_all(&[*byte]).await.is_err() {
                    break;
                }
                // The pace is the attack.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            std::future::pending::<()>().await;
        };
        let mut got = Vec::new();
        tokio::select! {
            read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut got)) => {
                assert!(read.is_ok(), "still open after 5 s");
            }
            () = trickling => {}
        }
        connected.elapsed()
    };
    let (silent, slow) = tokio::join!(held_for(false), held_for(true));
    eprintln!("closed after {silent:?} (silent) and {slow:?} (a byte a second)");
    for held in [silent, slow] {
        assert!(held < Duration::from_millis(2_500), "held for {held:?}");
    }
    proxy.shutdown().await;
}
