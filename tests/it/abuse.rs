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

#[tokio::test]
async fn a_rapid_reset_flood_costs_nothing_lasting() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&one_route(&upstream, "")).await;
    let (client, connection) = h2(&proxy).await;
    let driver = tokio::spawn(connection);
    let flood = async {
        let mut client = client;
        for i in 0..2000 {
            client = match client.ready().await {
                Ok(client) => client,
                Err(_) => return i, // the server ended the connection: fine
            };
            let (request, _) = h2_request(&format!("msg_rr_{i}"));
            let Ok((_, mut stream)) = client.send_request(request, false) else {
                return i;
            };
            stream.send_reset(h2::Reason::CANCEL);
        }
        2000
    };
    let sent = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the flood finishes");
    driver.abort();
    assert!(sent > 0);
    // Nothing half-done is left behind, and normal traffic is served.
    assert_eq!(
        deliver(&proxy, "/hook", SECRET, "msg_after", "user.created")
            .await
            .0,
        200
    );
    let m = proxy.metrics().await;
    assert_eq!(m.get("hookwall_in_flight_requests", &[]), Some(0.0));
    assert_eq!(
        m.get("hookwall_dedup_entries", &[]),
        Some(1.0),
        "only the real delivery is remembered"
    );
    assert_eq!(
        upstream.ids().len(),
        1,
        "no reset stream reached the upstream"
    );
    proxy.shutdown().await;
}
