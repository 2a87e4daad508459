//! Stream rules' entries (contract §9): what a worker reads from the Redis stream. Pure;
//! the append itself is `Store::enqueue` (the dedup claim around it) and `redis.rs`.

use bytes::Bytes;
use http::HeaderMap;

/// The fields of one stream entry, in the order they are written.
pub struct Entry {
    pub fields: [(&'static str, Bytes); 7],
}

impl Entry {
    /// `id`, `type`, `route`, `timestamp` (empty for a provider that signs none), `body`
    /// (the raw bytes, not copied), `headers` (the request's end-to-end headers as a
    /// forward would send them, so a worker may verify the signature again) and
    /// `traceparent`, that of `headers` (the append's span while traces are exported, else
    /// the sender's, or empty), for a worker to continue the trace.
    pub fn new(
        id: &str,
        event_type: &str,
        route: &str,
        timestamp: Option<u64>,
        body: Bytes,
        headers: &HeaderMap,
    ) -> Entry {
        Entry {
            fields: [
                ("id", Bytes::copy_from_slice(id.as_bytes())),
                ("type", Bytes::copy_from_slice(event_type.as_bytes())),
                ("route", Bytes::copy_from_slice(route.as_bytes())),
                (
                    "timestamp",
                    timestamp.map_or(Bytes::new(), |t| Bytes::from(t.to_string())),
                ),
                ("body", body),
                ("headers", Bytes::from(headers_json(headers))),
                (
                    "traceparent",
                    headers
                        .get("traceparent")
                        .map_or(Bytes::new(), |v| Bytes::copy_from_slice(v.as_bytes())),
                ),
            ],
        }
    }
}

/// A JSON object of header name (lower case) to value; a header sent several times has
/// its values joined with ", " (RFC 9110 §5.3). Bytes that are not UTF-8 (never in the
/// signed headers, which are checked ASCII) become U+FFFD.
pub fn headers_json(headers: &HeaderMap) -> String {
    let mut object = serde_json::Map::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        object.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn headers_become_one_json_object() {
        let mut headers = HeaderMap::new();
        headers.insert("svix-id", HeaderValue::from_static("msg_1"));
        headers.append("x-many", HeaderValue::from_static("a"));
        headers.append("x-many", HeaderValue::from_static("b"));
        headers.insert("x-odd", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let parsed: serde_json::Value = serde_json::from_str(&headers_json(&headers)).unwrap();
        assert_eq!(parsed["svix-id"], "msg_1");
        assert_eq!(parsed["x-many"], "a, b");
        assert_eq!(parsed["x-odd"], "caf\u{fffd}");
        assert_eq!(parsed.as_object().unwrap().len(), 3);
    }

    #[test]
    fn entry_fields_are_the_contracts() {
        let body = Bytes::from_static(b"{\"type\":\"user.created\"}");
        let entry = Entry::new(
            "msg_1",
            "user.created",
            "clerk",
            Some(1700000000),
            body.clone(),
            &HeaderMap::new(),
        );
        let names: Vec<&str> = entry.fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "id",
                "type",
                "route",
                "timestamp",
                "body",
                "headers",
                "traceparent"
            ]
        );
        assert_eq!(entry.fields[3].1, "1700000000");
        assert_eq!(entry.fields[4].1, body);
        assert_eq!(entry.fields[5].1, "{}");
        assert_eq!(entry.fields[6].1, "");
    }
}
