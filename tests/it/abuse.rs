//! Abusive senders: slow headers (slowloris), HTTP/2 with many streams and a rapid-reset
//! flood. Each is cut off or bounded, and hookwall keeps serving everyone else.

use std::time::Duration;

use crate::helpers::*;
use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "header_read_timeout = \"300ms\"")).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"POST /hook HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    // The server ends the connection; reading to the end returns. (The outer timeout
    // only keeps a broken build from hanging the suite.)
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "a sender that never finishes its headers is not cut off"
    );
    // Everyone else is served meanwhile.
    assert_eq!(
        deliver(&proxy, "/hook", SECRET, "msg_ok", "user.created")
            .await
            .0,
        200
    );
    assert_eq!(upstream.count(), 1);
    proxy.shutdown().await;
}

/// An h2c (prior knowledge) connection to the proxy.
async fn h2(
    proxy: &Proxy,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::client::Connection<TcpStream, Bytes>,
) {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    h2::client::handshake(tcp).await.unwrap()
}

fn h2_request(id: &str) -> (http::Request<()>, Bytes) {
    let body = event("user.created");
    let mut request = http::Request::post("http://127.0.0.1/hook");
    for (k, v) in signed(SECRET, id, now(), &body) {
        request = request.header(k, v);
    }
    (request.body(()).unwrap(), Bytes::from(body))
}

#[tokio::test]
async fn http2_streams_are_served_and_bounded() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "h2_max_concurrent_streams = 4")).await;
    let (client, mut connection) = h2(&proxy).await;
    // A burst right after the handshake: streams opened past the bound before the
    // server's SETTINGS arrive are refused with REFUSED_STREAM (safe to retry: nothing was
    // processed). The refused ones are sent again; each id is delivered exactly once.
    let exchange = async {
        let mut client = client;
        let mut pending: Vec<usize> = (0..8).collect();
        let mut statuses = Vec::new();
        for _round in 0..5 {
            let mut responses = Vec::new();
            for &i in &pending {
                client = client.ready().await.unwrap();
                let (request, body) = h2_request(&format!("msg_h2_{i}"));
                let (response, mut stream) = client.send_request(request, false).unwrap();
                let _ = stream.send_data(body, true);
                responses.push((i, response));
            }
            pending.clear();
            for (i, response) in responses {
                match response.await {
                    Ok(response) => statuses.push(response.status().as_u16()),
                    Err(err) if err.reason() == Some(h2::Reason::REFUSED_STREAM) => pending.push(i),
                    Err(err) => panic!("stream {i}: {err}"),
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        statuses
    };
    let statuses = tokio::select! {
        statuses = exchange => statuses,
        result = &mut connection => panic!("connection ended early: {result:?}"),
    };
    assert_eq!(statuses, vec![200; 8]);
    assert_eq!(
        connection.max_concurrent_send_streams(),
        4,
        "the bound is advertised"
    );
    assert_eq!(upstream.count(), 8);
    // Closing the connection lets the shutdown drain at once.
    drop(connection);
    proxy.shutdown().await;
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A rapid-reset flood (CVE-2023-44487): 200 streams, each opened (HEADERS) and at once
/// cancelled (RST_STREAM), written in one go so that the server reads them before it
/// accepts any. Past 20 streams reset before they were accepted, the server answers GOAWAY
/// with ENHANCE_YOUR_CALM and closes the connection; nothing reached the upstream, nothing
/// is left in flight, and everyone else is served.
#[tokio::test]
async fn a_rapid_reset_flood_is_told_to_calm_down_and_closed() {
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const END_HEADERS: u8 = 0x4;
    const CANCEL: u32 = 0x8;
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "")).await;
    // HPACK: :method POST and :scheme http from the static table; :path and :authority
    // as literals with an indexed name.
    let mut block = vec![0x83, 0x86, 0x04, 5];
    block.extend_from_slice(b"/hook");
    block.extend([0x01, 9]);
    block.extend_from_slice(b"127.0.0.1");
    let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    flood.extend(h2_frame(SETTINGS, 0, 0, &[]));
    for i in 0..200 {
        let stream = 1 + 2 * i;
        flood.extend(h2_frame(HEADERS, END_HEADERS, stream, &block));
        flood.extend(h2_frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&flood).await.unwrap();
    let goaway = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut head = [0u8; 9];
            if tcp.read_exact(&mut head).await.is_err() {
                return None;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.ok()?;
            if head[3] == GOAWAY {
                return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
        }
    })
    .await
    .expect("the server answers the flood");
    assert_eq!(goaway, Some(ENHANCE_YOUR_CALM), "GOAWAY's error code");
    // Then it closes the connection.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
        .await
        .expect("the connection is closed")
        .ok();
    // Nothing half-done is left behind, and normal traffic is served.
    assert_eq!(
        deliver(&proxy, "/hook", SECRET, "msg_after", "user.created")
            .await
            .0,
        200
    );
    let m = proxy.metrics().await;
    assert_eq!(m.get("hookwall_in_flight_requests", &[]), Some(0.0));
    assert_eq!(m.get("hookwall_dedup_entries", &[]), Some(1.0));
    assert_eq!(
        upstream.ids().len(),
        1,
        "no reset stream reached the upstream"
    );
    proxy.shutdown().await;
}
