//! A declared HMAC scheme (`provider = "hmac"`, `[routes.hmac]`): which header carries
//! the signature (its prefix, hex or base64), the hash, the signed content as a template
//! over `{id}`, `{timestamp}` and `{body}`, an optional timestamp header, and where the id
//! and the event type come from (`header:NAME` or `json:/pointer`). Compiled once at load.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};

use super::mac::{self, Algorithm, Digest, Encoding, MacKey, Signatures};
use super::{
    fresh, header, id_header, optional_header, ContentDigest, HeaderKind, Verified, VerifiedId,
    VerifyError, MAX_ID_BYTES, MAX_SIGNATURE_HEADER_BYTES,
};
use crate::route::EventType;

/// One piece of the signed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(Box<[u8]>),
    Id,
    Timestamp,
    Body,
}

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Header(HeaderName),
    /// An RFC 6901 pointer into the verified body.
    Json(String),
}

impl Source {
    /// `header:NAME` or `json:/pointer`.
    pub fn parse(text: &str) -> Result<Source, String> {
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map(Source::Header)
                .map_err(|_| format!("{text:?}: {name:?} is not a header name"));
        }
        match text.strip_prefix("json:") {
            Some(pointer) if pointer.starts_with('/') => Ok(Source::Json(pointer.to_owned())),
            _ => Err(format!(
                "{text:?} is neither \"header:NAME\" nor \"json:/pointer\""
            )),
        }
    }
}

/// `signed_content` compiled: the literal text between the placeholders kept as bytes.
pub fn template(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|at| open + at)
            .ok_or_else(|| format!("{text:?}: a '{{' is not closed"))?;
        if open > 0 {
            parts.push(Part::Text(rest.as_bytes()[..open].into()));
        }
        parts.push(match &rest[open..=close] {
            "{id}" => Part::Id,
            "{timestamp}" => Part::Timestamp,
            "{body}" => Part::Body,
            other => {
                return Err(format!(
                    "{text:?}: {other} is not {{id}}, {{timestamp}} or {{body}}"
                ))
            }
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.as_bytes().into()));
    }
    if !parts.contains(&Part::Body) {
        return Err(format!(
            "{text:?} has no {{body}}: the body would not be signed"
        ));
    }
    Ok(parts)
}

/// A route's declared scheme.
#[derive(Debug, Clone)]
pub struct Declared {
    pub keys: Vec<MacKey>,
    pub algorithm: Algorithm,
    pub signature_header: HeaderName,
    pub prefix: String,
    pub encoding: Encoding,
    pub content: Vec<Part>,
    pub timestamp_header: Option<HeaderName>,
    pub id: Source,
    pub event_type: Source,
    pub tolerance_secs: u64,
}

/// What the head gave.
pub struct Head<'h> {
    id: Option<&'h str>,
    /// As sent (what was signed), and parsed.
    timestamp: Option<(&'h str, u64)>,
    signatures: Signatures,
    event: Option<&'h str>,
}

impl Declared {
    pub fn head<'h>(&self, headers: &'h HeaderMap, now: u64) -> Result<Head<'h>, VerifyError> {
        let id = match &self.id {
            Source::Header(name) => Some(id_header(headers, name)?),
            Source::Json(_) => None,
        };
        if id.is_some_and(|id| !self.id_keeps_its_place(id)) {
            return Err(VerifyError::MalformedHeader(HeaderKind::Id));
        }
        let timestamp = match &self.timestamp_header {
            Some(name) => {
                let text = header(headers, name, HeaderKind::Timestamp)?;
                Some((text, fresh(text, now, self.tolerance_secs)?))
            }
            None => None,
        };
        // The signature header, once or several times: each value is an entry.
        header(headers, &self.signature_header, HeaderKind::Signature)?;
        let malformed = VerifyError::MalformedHeader(HeaderKind::Signature);
        let mut signatures = Signatures::default();
        for value in headers.get_all(&self.signature_header) {
            let value = value.to_str().map_err(|_| malformed)?.trim();
            if value.len() > MAX_SIGNATURE_HEADER_BYTES {
                return Err(malformed);
            }
            let decoded = value
                .strip_prefix(self.prefix.as_str())
                .and_then(|text| Digest::decode(text, self.encoding, self.algorithm.mac_len()));
            if let Some(signature) = decoded {
                signatures.push(signature);
            }
        }
        if signatures.is_empty() {
            return Err(malformed);
        }
        let event = match &self.event_type {
            Source::Header(name) => optional_header(headers, name, HeaderKind::Id).unwrap_or(None),
            Source::Json(_) => None,
        };
        Ok(Head {
            id,
            timestamp,
            signatures,
            event,
        })
    }

    /// Whether a signed `{id}` cannot take bytes from, or give bytes to, its neighbour: it
    /// holds neither the literal's byte beside it. Else with `{id}.{body}` an id `a.{"v":1`
    /// and a body `5}` sign the same bytes as the id `a` and the body `{"v":1.5}`, and a
    /// shortened body would pass under a new id. (A timestamp is digits only: it cannot.)
    fn id_keeps_its_place(&self, id: &str) -> bool {
        let content = &self.content;
        content.iter().enumerate().all(|(i, part)| {
            if *part != Part::Id {
                return true;
            }
            let before = i.checked_sub(1).and_then(|j| match &content[j] {
                Part::Text(text) => text.last(),
                _ => None,
            });
            let after = content.get(i + 1).and_then(|part| match part {
                Part::Text(text) => text.first(),
                _ => None,
            });
            [before, after]
                .into_iter()
                .flatten()
                .all(|byte| !id.as_bytes().contains(byte))
        })
    }

    pub fn body<'h, 'b>(
        &self,
        head: &Head<'h>,
        body: &'b [u8],
    ) -> Result<Verified<'h, 'b>, VerifyError> {
        let content: Vec<&[u8]> = self
            .content
            .iter()
            .map(|part| match part {
                Part::Text(text) => text,
                // Config validation allows {id} only with a header id, {timestamp} only
                // with a timestamp header.
                Part::Id => head.id.unwrap_or("").as_bytes(),
                Part::Timestamp => head.timestamp.map_or("", |(text, _)| text).as_bytes(),
                Part::Body => body,
            })
            .collect();
        let matched = mac::check(&self.keys, &content, &head.signatures)?;
        // The body is read as JSON only for what the declaration takes from it.
        let wants_json =
            matches!(self.id, Source::Json(_)) || matches!(self.event_type, Source::Json(_));
        let json: Option<serde_json::Value> = wants_json
            .then(|| serde_json::from_slice(body).ok())
            .flatten();
        // A header id outside the signed content could be changed freely: dedup keys the
        // signed content instead.
        let digest = (matches!(self.id, Source::Header(_)) && !self.content.contains(&Part::Id))
            .then(|| ContentDigest::of(&content));
        let id = match (&self.id, head.id) {
            (Source::Header(_), Some(id)) => VerifiedId::Head(id),
            (source, _) => VerifiedId::Body(Cow::Owned(body_value(source, json.as_ref())?)),
        };
        let event_type = match (&self.event_type, head.event) {
            (Source::Header(_), Some(event)) => EventType::named(Cow::Owned(event.to_owned())),
            (Source::Header(_), None) => EventType::None,
            (Source::Json(pointer), _) => match scalar(json.as_ref(), pointer) {
                Some(name) => EventType::named(Cow::Owned(name)),
                None => EventType::None,
            },
        };
        Ok(Verified {
            id,
            digest,
            timestamp: head.timestamp.map(|(_, timestamp)| timestamp),
            event_type,
            matched,
        })
    }
}

/// The id at a JSON pointer: a string or a number, not empty, within `MAX_ID_BYTES`.
fn body_value(source: &Source, json: Option<&serde_json::Value>) -> Result<String, VerifyError> {
    let missing = VerifyError::MissingHeader(HeaderKind::Id);
    let Source::Json(pointer) = source else {
        return Err(missing);
    };
    let id = scalar(json, pointer).ok_or(missing)?;
    if id.is_empty() || id.len() > MAX_ID_BYTES || !id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(missing);
    }
    Ok(id)
}

/// The string or number at `pointer`, as text.
fn scalar(json: Option<&serde_json::Value>, pointer: &str) -> Option<String> {
    match json?.pointer(pointer)? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_and_must_sign_the_body() {
        assert_eq!(
            template("v0:{timestamp}:{body}").unwrap(),
            vec![
                Part::Text(b"v0:".as_slice().into()),
                Part::Timestamp,
                Part::Text(b":".as_slice().into()),
                Part::Body
            ]
        );
        assert_eq!(template("{body}").unwrap(), vec![Part::Body]);
        assert!(template("{id}.{timestamp}")
            .unwrap_err()
            .contains("no {body}"));
        assert!(template("{bdy}").unwrap_err().contains("{bdy}"));
        assert!(template("{body").is_err());
    }

    #[test]
    fn a_signed_id_cannot_hold_the_text_beside_it() {
        let declared = |content: &str| Declared {
            keys: Vec::new(),
            algorithm: Algorithm::Sha256,
            signature_header: HeaderName::from_static("x-sig"),
            prefix: String::new(),
            encoding: Encoding::Hex,
            content: template(content).unwrap(),
            timestamp_header: None,
            id: Source::Header(HeaderName::from_static("x-id")),
            event_type: Source::Json("/type".into()),
            tolerance_secs: 300,
        };
        let after = declared("{id}.{body}");
        assert!(after.id_keeps_its_place("msg_1"));
        assert!(!after.id_keeps_its_place(r#"a.{"v":1"#));
        let before = declared("{body}:{id}");
        assert!(before.id_keeps_its_place("a.b"));
        assert!(!before.id_keeps_its_place("x:a"));
        assert!(declared("v0:{timestamp}:{body}").id_keeps_its_place("a:b"));
    }

    #[test]
    fn sources_are_a_header_or_a_pointer() {
        assert_eq!(
            Source::parse("header:X-Slack-Request-Timestamp").unwrap(),
            Source::Header(HeaderName::from_static("x-slack-request-timestamp"))
        );
        assert_eq!(
            Source::parse("json:/event/type").unwrap(),
            Source::Json("/event/type".into())
        );
        for bad in ["json:event", "body:/id", "header:bad name", "json:"] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pointers_read_strings_and_numbers() {
        let json: serde_json::Value =
            serde_json::from_str(r#"{"event":{"type":"message","n":7},"list":[1]}"#).unwrap();
        assert_eq!(
            scalar(Some(&json), "/event/type").as_deref(),
            Some("message")
        );
        assert_eq!(scalar(Some(&json), "/event/n").as_deref(), Some("7"));
        assert_eq!(scalar(Some(&json), "/list"), None);
        assert_eq!(scalar(Some(&json), "/nope"), None);
        assert_eq!(scalar(None, "/event/type"), None);
    }
}
