//! Forwarding a verified event: the header rewrite (a pure function) and the upstream
//! exchange through the pooled client, time-boxed from connecting to the end of the
//! upstream's body, which is read up to 64 KiB.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};

use crate::client::HttpClient;

/// Most bytes of an upstream's body passed back to the sender: the status is what a sender
/// acts on, and the bound keeps a misbehaving upstream from costing memory.
pub const MAX_REPLY_BODY_BYTES: usize = 64 * 1024;

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), plus
/// `host` and `content-length`, which are set for the upstream request, and `expect`,
/// since the body is already complete.
const HOP_BY_HOP: [HeaderName; 11] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    header::EXPECT,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub const HOOKWALL_ROUTE: HeaderName = HeaderName::from_static("hookwall-route");
pub const HOOKWALL_EVENT_TYPE: HeaderName = HeaderName::from_static("hookwall-event-type");

/// What hookwall saw of the sender, for the `X-Forwarded-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// The upstream request's headers: every end-to-end header of the sender's request
/// (the svix-* ones too, so a backend may verify again), minus hop-by-hop ones and any
/// `hookwall-*` the sender made up, plus `X-Forwarded-*` and the trusted `hookwall-*`.
pub fn upstream_headers(
    incoming: &HeaderMap,
    peer: &Peer,
    authority: Option<&str>,
    trust_forwarded: bool,
    route: &HeaderValue,
    event_type: &str,
    body_len: usize,
) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len() + 6);
    // Headers the sender named in `Connection` are hop-by-hop too.
    let named: Vec<&str> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let spoofable = |name: &HeaderName| {
        !trust_forwarded
            && [
                &X_FORWARDED_FOR,
                &X_FORWARDED_PROTO,
                &X_FORWARDED_HOST,
                &X_REAL_IP,
                &FORWARDED,
            ]
            .contains(&name)
    };
    for (name, value) in incoming {
        if HOP_BY_HOP.contains(name)
            || *name == header::CONTENT_LENGTH
            || *name == X_FORWARDED_FOR
            || name.as_str().starts_with("hookwall-")
            || spoofable(name)
            || named.iter().any(|n| n.eq_ignore_ascii_case(name.as_str()))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }

    let peer_ip = peer.addr.ip().to_string();
    let forwarded_for = if trust_forwarded {
        let earlier: Vec<&str> = incoming
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if earlier.is_empty() {
            peer_ip
        } else {
            format!("{}, {peer_ip}", earlier.join(", "))
        }
    } else {
        peer_ip
    };
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        out.insert(X_FORWARDED_FOR, value);
    }
    if !out.contains_key(&X_FORWARDED_PROTO) {
        let proto = if peer.tls { "https" } else { "http" };
        out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !out.contains_key(&X_FORWARDED_HOST) {
        if let Some(value) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
            out.insert(X_FORWARDED_HOST, value);
        }
    }
    out.insert(HOOKWALL_ROUTE, route.clone());
    if !event_type.is_empty() {
        if let Ok(value) = HeaderValue::from_str(event_type) {
            out.insert(HOOKWALL_EVENT_TYPE, value);
        }
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    out
}

/// What an upstream answered, as passed back to the sender.
#[derive(Debug, Clone)]
pub struct UpstreamReply {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
    /// At most `MAX_REPLY_BODY_BYTES`.
    pub body: Bytes,
}

/// Why no complete answer came from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream unreachable or refused: {0}")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("upstream reset before its body ended: {0}")]
    Body(#[source] hyper::Error),
    #[error("upstream took longer than {0:?}")]
    Timeout(Duration),
}

/// Sends one request and reads the answer, all within `timeout`.
pub async fn send(
    client: &HttpClient,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<UpstreamReply, ForwardError> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(ForwardError::Connect)?;
        let (parts, mut body) = response.into_parts();
        let mut read = BytesMut::new();
        while read.len() < MAX_REPLY_BODY_BYTES {
            match body.frame().await {
                None => break,
                Some(Err(err)) => return Err(ForwardError::Body(err)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = MAX_REPLY_BODY_BYTES - read.len();
                        read.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
        }
        Ok(UpstreamReply {
            status: parts.status,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            retry_after: parts.headers.get(header::RETRY_AFTER).cloned(),
            body: read.freeze(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ForwardError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("svix-id", "msg_1"),
            ("svix-signature", "v1,abc"),
            ("content-type", "application/json"),
            ("content-length", "999"),
            ("host", "hooks.example.com"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("hookwall-route", "forged"),
            ("hookwall-verified", "yes"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.example"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        h
    }

    fn peer() -> Peer {
        Peer {
            addr: "10.1.2.3:5555".parse().unwrap(),
            tls: false,
        }
    }

    #[test]
    fn untrusted_senders_get_their_forwarding_headers_replaced() {
        let route = HeaderValue::from_static("clerk");
        let out = upstream_headers(
            &incoming(),
            &peer(),
            Some("hooks.example.com"),
            false,
            &route,
            "user.created",
            42,
        );
        assert_eq!(out["svix-id"], "msg_1");
        assert_eq!(out["svix-signature"], "v1,abc");
        assert_eq!(out["content-type"], "application/json");
        assert_eq!(out["content-length"], "42");
        assert_eq!(out["x-forwarded-for"], "10.1.2.3");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "hooks.example.com");
        assert_eq!(out["hookwall-route"], "clerk");
        assert_eq!(out["hookwall-event-type"], "user.created");
        for gone in [
            "host",
            "connection",
            "x-secret-hop",
            "transfer-encoding",
            "hookwall-verified",
            "x-real-ip",
            "forwarded",
        ] {
            assert!(!out.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(out.get_all("hookwall-route").iter().count(), 1);
    }

    #[test]
    fn a_trusted_ingress_keeps_its_forwarding_headers() {
        let route = HeaderValue::from_static("clerk");
        let out = upstream_headers(&incoming(), &peer(), Some("internal"), true, &route, "", 0);
        assert_eq!(out["x-forwarded-for"], "6.6.6.6, 10.1.2.3");
        assert_eq!(out["x-forwarded-proto"], "gopher");
        assert_eq!(out["x-forwarded-host"], "evil.example");
        assert_eq!(out["x-real-ip"], "6.6.6.6");
        // An empty event type sends no header.
        assert!(!out.contains_key("hookwall-event-type"));
    }
}
