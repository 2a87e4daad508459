//! The upstream request's headers, rewritten from the sender's in place (pure): what a
//! forward sends, and what a stream entry records.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), plus
/// `expect`, since the body is already complete. (`host` is replaced by the upstream's.)
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub const HOOKWALL_ROUTE: HeaderName = HeaderName::from_static("hookwall-route");
pub const HOOKWALL_EVENT_TYPE: HeaderName = HeaderName::from_static("hookwall-event-type");

/// What hookwall saw of the sender, for the `X-Forwarded-*` headers; made once per
/// connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub tls: bool,
    /// The peer's IP address as a header value.
    pub ip: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, tls: bool) -> Peer {
        let ip = HeaderValue::try_from(addr.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Peer { tls, ip }
    }
}

/// What the upstream request carries besides the sender's headers.
pub struct Additions<'a> {
    pub peer: &'a Peer,
    pub trust_forwarded: bool,
    /// `Host` for the upstream (none for a stream entry: there is no upstream).
    pub host: Option<&'a HeaderValue>,
    /// The sender's authority when its request had no `Host` (HTTP/2).
    pub authority: Option<&'a str>,
    pub route: &'a HeaderValue,
    pub event_type: &'a str,
    pub body_len: usize,
}

/// Turns the sender's headers into the upstream request's, in place (nothing is copied):
/// every end-to-end header stays (the svix-* ones too, so a backend may verify again);
/// hop-by-hop ones and any `hookwall-*` the sender made up go; `Host` becomes the
/// upstream's (or goes, with none); `X-Forwarded-*` and the trusted `hookwall-*` are
/// added.
pub fn upstream_headers(headers: &mut HeaderMap, add: &Additions<'_>) {
    // Room for what is added, grown once.
    headers.reserve(6);
    // Headers the sender named in `Connection` are hop-by-hop too.
    if let header::Entry::Occupied(entry) = headers.entry(header::CONNECTION) {
        let values: Vec<HeaderValue> = entry.remove_entry_mult().1.collect();
        for name in values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            headers.remove(name.trim());
        }
    }
    let sender_host = headers.remove(header::HOST);
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if headers
        .keys()
        .any(|name| name.as_str().starts_with("hookwall-"))
    {
        let made_up: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("hookwall-"))
            .cloned()
            .collect();
        for name in made_up {
            headers.remove(name);
        }
    }

    let earlier: Vec<HeaderValue> = match headers.entry(X_FORWARDED_FOR) {
        header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
        header::Entry::Vacant(_) => Vec::new(),
    };
    if !add.trust_forwarded {
        for name in [
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_REAL_IP,
            &FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    let mut chain: Vec<&str> = earlier
        .iter()
        .filter(|_| add.trust_forwarded)
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if chain.is_empty() {
        add.peer.ip.clone()
    } else {
        chain.extend(add.peer.ip.to_str().ok());
        HeaderValue::try_from(chain.join(", ")).unwrap_or_else(|_| add.peer.ip.clone())
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if add.peer.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        let host =
            sender_host.or_else(|| add.authority.and_then(|a| HeaderValue::from_str(a).ok()));
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
    if let Some(host) = add.host {
        headers.insert(header::HOST, host.clone());
    }
    headers.insert(HOOKWALL_ROUTE, add.route.clone());
    if !add.event_type.is_empty() {
        if let Ok(value) = HeaderValue::from_str(add.event_type) {
            headers.insert(HOOKWALL_EVENT_TYPE, value);
        }
    }
    // Kept as sent when it is the length read (it always is, unless the body came chunked).
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared != Some(add.body_len) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(add.body_len));
    }
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
        Peer::new("10.1.2.3:5555".parse().unwrap(), false)
    }

    fn rewrite(trust_forwarded: bool, event_type: &str, body_len: usize) -> HeaderMap {
        let mut headers = incoming();
        upstream_headers(
            &mut headers,
            &Additions {
                peer: &peer(),
                trust_forwarded,
                host: Some(&HeaderValue::from_static("127.0.0.1:3000")),
                authority: None,
                route: &HeaderValue::from_static("clerk"),
                event_type,
                body_len,
            },
        );
        headers
    }

    #[test]
    fn untrusted_senders_get_their_forwarding_headers_replaced() {
        let out = rewrite(false, "user.created", 42);
        assert_eq!(out["svix-id"], "msg_1");
        assert_eq!(out["svix-signature"], "v1,abc");
        assert_eq!(out["content-type"], "application/json");
        assert_eq!(out["content-length"], "42");
        assert_eq!(out["x-forwarded-for"], "10.1.2.3");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "hooks.example.com");
        assert_eq!(out["hookwall-route"], "clerk");
        assert_eq!(out["hookwall-event-type"], "user.created");
        assert_eq!(out["host"], "127.0.0.1:3000");
        assert_eq!(out.get_all("host").iter().count(), 1);
        for gone in [
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
        let out = rewrite(true, "", 0);
        assert_eq!(out["x-forwarded-for"], "6.6.6.6, 10.1.2.3");
        assert_eq!(out["x-forwarded-proto"], "gopher");
        assert_eq!(out["x-forwarded-host"], "evil.example");
        assert_eq!(out["x-real-ip"], "6.6.6.6");
        // An empty event type sends no header.
        assert!(!out.contains_key("hookwall-event-type"));
    }

    #[test]
    fn the_sent_length_is_kept_only_when_it_is_the_length_read() {
        let out = rewrite(false, "", 999);
        assert_eq!(out["content-length"], "999");
        assert_eq!(out.get_all("content-length").iter().count(), 1);
        let mut headers = incoming();
        headers.remove("content-length");
        headers.remove("host");
        upstream_headers(
            &mut headers,
            &Additions {
                peer: &peer(),
                trust_forwarded: false,
                host: Some(&HeaderValue::from_static("up")),
                authority: Some("h2.example.com"),
                route: &HeaderValue::from_static("clerk"),
                event_type: "",
                body_len: 7,
            },
        );
        assert_eq!(headers["content-length"], "7");
        // Without a Host (HTTP/2), the request's authority is the forwarded host.
        assert_eq!(headers["x-forwarded-host"], "h2.example.com");
    }
}
