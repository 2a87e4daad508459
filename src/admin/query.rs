//! The query of `/deliveries` and `/`: `route`, `outcome`, `id` (exact) and `limit`,
//! percent-decoded (`application/x-www-form-urlencoded`, as a browser's link or form sends
//! it), and the encoding the page's links use. Pure.

use std::borrow::Cow;

use crate::deliveries::Filter;

/// How many entries a query gets without a `limit`.
pub(super) const DEFAULT_LIMIT: usize = 100;

/// Why a query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum QueryError {
    /// `limit` is not a number.
    Limit,
}

/// The filter a query asks for (`limit` at most `capacity`). Other parameters are
/// ignored; of one given twice, the last counts; an empty value is no filter.
pub(super) fn filter(query: Option<&str>, capacity: usize) -> Result<Filter, QueryError> {
    let mut filter = Filter {
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value).into_owned();
        let value = (!value.is_empty()).then_some(value);
        match &*decode(name) {
            "route" => filter.route = value,
            "outcome" => filter.outcome = value,
            "id" => filter.id = value,
            "limit" => {
                filter.limit = match value {
                    Some(limit) => limit.parse().map_err(|_| QueryError::Limit)?,
                    None => DEFAULT_LIMIT,
                }
            }
            _ => {}
        }
    }
    filter.limit = filter.limit.min(capacity);
    Ok(filter)
}

/// Percent-decodes `text`, `+` as a space. A `%` not followed by two hex digits stays as
/// it is; bytes that are not UTF-8 become U+FFFD.
pub(super) fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(err) => Cow::Owned(String::from_utf8_lossy(err.as_bytes()).into_owned()),
    }
}

fn hex(byte: Option<&u8>) -> Option<u8> {
    match byte? {
        digit @ b'0'..=b'9' => Some(digit - b'0'),
        letter @ b'a'..=b'f' => Some(letter - b'a' + 10),
        letter @ b'A'..=b'F' => Some(letter - b'A' + 10),
        _ => None,
    }
}

/// `text` as a query value: every byte but the unreserved (`A-Z a-z 0-9 - . _ ~`)
/// percent-encoded, so that a link carries it whatever it holds.
pub(super) fn encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(decode("msg_1"), "msg_1");
        assert!(matches!(decode("msg_1"), Cow::Borrowed(_)));
        assert_eq!(decode("a+b%20c"), "a b c");
        assert_eq!(decode("%3Cimg%3e"), "<img>");
        assert_eq!(decode("caf%C3%A9"), "café");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%2B"), "+");
        assert_eq!(decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn encodes_what_decode_reads_back() {
        for text in ["msg_1", "a b&c=d#e", "<img src=x>", "café", "100%+", ""] {
            assert_eq!(decode(&encode(text)), text);
        }
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn filters_from_a_query() {
        let all = filter(None, 1000).unwrap();
        assert_eq!(
            all,
            Filter {
                limit: 100,
                ..Filter::default()
            }
        );
        let f = filter(
            Some("route=clerk&outcome=duplicate&id=msg%5F1&limit=5&x=y"),
            1000,
        );
        assert_eq!(
            f.unwrap(),
            Filter {
                route: Some("clerk".into()),
                outcome: Some("duplicate".into()),
                id: Some("msg_1".into()),
                limit: 5,
            }
        );
        assert_eq!(filter(Some("limit=5000"), 1000).unwrap().limit, 1000);
        assert_eq!(filter(Some("limit="), 50).unwrap().limit, 50);
        assert_eq!(filter(Some("route=&id"), 10).unwrap().route, None);
        assert_eq!(
            filter(Some("id=a&id=b"), 10).unwrap().id.as_deref(),
            Some("b")
        );
        assert_eq!(filter(Some("limit=ten"), 10), Err(QueryError::Limit));
        assert_eq!(filter(Some("limit=-1"), 10), Err(QueryError::Limit));
    }
}
