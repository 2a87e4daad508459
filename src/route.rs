//! Event routing: the event type read from a verified body, and the compiled rules of a
//! route that turn it into forward, stream, drop or no match. Pure; built once at config load.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{HeaderValue, Uri};

/// Longest event type used for routing; longer ones route as "" and count as `_invalid`.
pub const MAX_EVENT_TYPE_BYTES: usize = 128;

/// The event type of a verified body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventType<'a> {
    /// A top-level string `type` of visible ASCII, at most 128 bytes.
    Valid(Cow<'a, str>),
    /// No `type`, not a string, or the body is not JSON: routes as "".
    None,
    /// A `type` too long or with characters outside visible ASCII: routes as "".
    Invalid,
}

impl<'a> EventType<'a> {
    /// A type by name: `Valid` if it is visible ASCII of at most 128 bytes, else `Invalid`.
    pub fn named(name: Cow<'a, str>) -> EventType<'a> {
        if name.len() <= MAX_EVENT_TYPE_BYTES && name.bytes().all(|b| b.is_ascii_graphic()) {
            EventType::Valid(name)
        } else {
            EventType::Invalid
        }
    }

    /// What the rules match against and what `hookwall-event-type` carries ("" = none).
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Valid(name) => name,
            EventType::None | EventType::Invalid => "",
        }
    }
}

/// Reads the top-level `type` string without building a JSON tree: serde skips the rest.
pub fn event_type(body: &[u8]) -> EventType<'_> {
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<Text<'a>>,
    }
    match serde_json::from_slice::<Typed<'_>>(body) {
        Ok(Typed {
            kind: Some(Text(kind)),
        }) => EventType::named(kind),
        Ok(Typed { kind: None }) | Err(_) => EventType::None,
    }
}

/// A JSON string borrowed from the body unless it has escapes (serde's `borrow` on a plain
/// `Option<Cow>` would always copy).
#[derive(serde::Deserialize)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub(crate) Cow<'a, str>);

/// An event-type pattern where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Glob(pattern.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, text: &str) -> bool {
        let mut parts = self.0.split('*');
        // No `*`: the pattern is the text.
        let first = parts.next().unwrap_or("");
        let Some(mut rest) = text.strip_prefix(first) else {
            return false;
        };
        let mut parts = parts.peekable();
        if parts.peek().is_none() {
            return rest.is_empty();
        }
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                // The last part must end the text (and not overlap what came before).
                return rest.len() >= part.len() && rest.ends_with(part);
            }
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Where a verified event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Forward(Arc<Upstream>),
    /// Append to this Redis stream and answer at once (contract §9).
    Stream(Arc<str>),
    Drop,
}

/// One `[[routes.rules]]` entry (or the `upstream` shorthand, which is `*` → upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub events: Vec<Glob>,
    pub action: Action,
}

/// The outcome of routing one event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    Forward(&'a Arc<Upstream>),
    /// The stream to append to.
    Stream(&'a Arc<str>),
    Drop,
    NoMatch,
}

/// A route's ordered rules: the first rule whose events match decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    pub fn decide(&self, event_type: &str) -> Decision<'_> {
        for rule in &self.0 {
            if rule.events.iter().any(|glob| glob.matches(event_type)) {
                return match &rule.action {
                    Action::Forward(upstream) => Decision::Forward(upstream),
                    Action::Stream(stream) => Decision::Stream(stream),
                    Action::Drop => Decision::Drop,
                };
            }
        }
        Decision::NoMatch
    }

    /// The upstream of a route whose only rule forwards everything (the `upstream`
    /// shorthand, as shadow routes have).
    pub fn only_upstream(&self) -> Option<&Arc<Upstream>> {
        match self.0.as_slice() {
            [Rule {
                action: Action::Forward(upstream),
                ..
            }] => Some(upstream),
            _ => None,
        }
    }

    /// A copy whose upstreams are allocated anew: each worker holds its own, so that
    /// what a forward does to an upstream's reference count stays on its worker.
    pub fn for_worker(&self) -> Rules {
        let copy = |rule: &Rule| Rule {
            events: rule.events.clone(),
            action: match &rule.action {
                Action::Forward(upstream) => Action::Forward(Arc::new(Upstream::clone(upstream))),
                other => other.clone(),
            },
        };
        Rules(self.0.iter().map(copy).collect())
    }
}

/// An http(s) upstream URL, parsed at load into what each forward needs: the origin to
/// connect to, the `Host` header and the path. Aligned to a cache line: each worker's copy
/// (`Rules::for_worker`) has its reference count to itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(align(64))]
pub struct Upstream {
    pub uri: Uri,
    pub origin: Origin,
    /// The upstream's authority without user info, as `Host` carries it.
    pub host: HeaderValue,
    /// The upstream's path and query (origin form), the request target to send.
    path: Uri,
}

/// Why a text is not an upstream URL; each names the text.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{text:?} is not a URL")]
    NotUrl {
        text: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("{text:?} is not an http(s) URL")]
    NotHttp { text: String },
    #[error("{text:?} has a host that cannot be a Host header")]
    Host { text: String },
    #[error("{text:?} has an invalid path")]
    Path {
        text: String,
        #[source]
        source: http::uri::InvalidUri,
    },
}

/// Where connections go: an upstream pool is kept per origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub https: bool,
    /// A name, an IPv4 address, or an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Upstream {
    /// An absolute `http://` or `https://` URL.
    pub fn parse(text: &str) -> Result<Upstream, UpstreamError> {
        let owned = || text.to_owned();
        let uri: Uri = text.parse().map_err(|source| UpstreamError::NotUrl {
            text: owned(),
            source,
        })?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(UpstreamError::NotHttp { text: owned() }),
        };
        let Some(authority) = uri.authority() else {
            return Err(UpstreamError::NotHttp { text: owned() });
        };
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_header = match authority.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let host_header = HeaderValue::from_str(&host_header)
            .map_err(|_| UpstreamError::Host { text: owned() })?;
        let origin = Origin {
            https,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        };
        let path = uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .parse()
            .map_err(|source| UpstreamError::Path {
                text: owned(),
                source,
            })?;
        Ok(Upstream {
            uri,
            origin,
            host: host_header,
            path,
        })
    }

    /// The request target to send (origin form: path and query), with the listener's query
    /// appended (`&` when the upstream already has a query of its own).
    pub fn target(&self, query: Option<&str>) -> Uri {
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return self.path.clone();
        };
        let target = match self.path.query() {
            Some(own) if !own.is_empty() => format!("{}?{own}&{query}", self.path.path()),
            _ => format!("{}?{query}", self.path.path()),
        };
        // The query came from a request hyper already parsed; keep the upstream's own if not.
        target.parse().unwrap_or_else(|_| self.path.clone())
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uri.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let table = [
            ("*", "", true),
            ("*", "user.created", true),
            ("user.*", "user.created", true),
            ("user.*", "user.", true),
            ("user.*", "users.created", false),
            ("*.deleted", "user.deleted", true),
            ("*.deleted", "user.deleted.x", false),
            ("user.created", "user.created", true),
            ("user.created", "user.created2", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, expected) in table {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn event_type_reads_only_top_level_strings() {
        assert_eq!(
            event_type(br#"{"data":{"type":"inner"},"type":"user.created"}"#).as_str(),
            "user.created"
        );
        assert_eq!(
            event_type(br#"{"type":"a\u002eb"}"#),
            EventType::Valid("a.b".into())
        );
        assert!(matches!(
            event_type(br#"{"type":"user.created"}"#),
            EventType::Valid(Cow::Borrowed("user.created"))
        ));
        assert_eq!(event_type(br#"{"data":{"type":"inner"}}"#), EventType::None);
        assert_eq!(event_type(br#"{"type":5}"#), EventType::None);
        assert_eq!(event_type(b"not json"), EventType::None);
        assert_eq!(event_type(b""), EventType::None);
        assert_eq!(event_type(br#"{"type":"has space"}"#), EventType::Invalid);
        let long = format!(r#"{{"type":"{}"}}"#, "a".repeat(129));
        assert_eq!(event_type(long.as_bytes()), EventType::Invalid);
        let edge = format!(r#"{{"type":"{}"}}"#, "a".repeat(128));
        assert!(matches!(event_type(edge.as_bytes()), EventType::Valid(_)));
    }

    #[test]
    fn first_matching_rule_decides() {
        let up = Upstream::parse("http://127.0.0.1:3000/billing").unwrap();
        let rules = Rules(vec![
            Rule {
                events: vec![Glob::new("invoice.*"), Glob::new("subscription.updated")],
                action: Action::Forward(Arc::new(up.clone())),
            },
            Rule {
                events: vec![Glob::new("session.*"), Glob::new("invoice.paid")],
                action: Action::Drop,
            },
            Rule {
                events: vec![Glob::new("customer.*")],
                action: Action::Stream("billing-events".into()),
            },
        ]);
        for event in ["invoice.paid", "subscription.updated"] {
            assert!(matches!(rules.decide(event), Decision::Forward(u) if **u == up));
        }
        assert_eq!(rules.decide("session.ended"), Decision::Drop);
        let stream: Arc<str> = "billing-events".into();
        assert_eq!(rules.decide("customer.created"), Decision::Stream(&stream));
        // A worker's copy decides the same, on upstreams of its own.
        let copy = rules.for_worker();
        assert_eq!(copy, rules);
        let (Decision::Forward(a), Decision::Forward(b)) =
            (rules.decide("invoice.paid"), copy.decide("invoice.paid"))
        else {
            panic!("both forward")
        };
        assert!(!Arc::ptr_eq(a, b));
        assert_eq!(rules.decide("user.created"), Decision::NoMatch);
        assert_eq!(rules.decide(""), Decision::NoMatch);
    }

    #[test]
    fn query_is_appended() {
        let plain = Upstream::parse("http://h:1/p").unwrap();
        let with = Upstream::parse("http://h:1/p?a=1").unwrap();
        assert_eq!(plain.target(None), "/p");
        assert_eq!(plain.target(Some("b=2")), "/p?b=2");
        assert_eq!(with.target(Some("b=2")), "/p?a=1&b=2");
        assert_eq!(with.target(Some("")), "/p?a=1");
        assert_eq!(Upstream::parse("http://h").unwrap().target(None), "/");
    }

    #[test]
    fn upstreams_parse_into_origin_and_host() {
        let up = Upstream::parse("https://user:pw@api.example.com/hooks").unwrap();
        assert_eq!(up.host, "api.example.com");
        assert_eq!(up.origin.to_string(), "https://api.example.com:443");
        let up = Upstream::parse("http://[::1]:8080/").unwrap();
        assert_eq!(up.host, "[::1]:8080");
        assert_eq!(up.origin.host, "::1");
        assert_eq!(up.origin.to_string(), "http://[::1]:8080");
        assert_eq!(Upstream::parse("http://h/").unwrap().origin.port, 80);
        for bad in ["ftp://h/", "/relative", "h:1", "http://"] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
