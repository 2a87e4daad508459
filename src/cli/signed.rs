//! What `send` (and the demo) sends for each provider: a body of the provider's shape for
//! an event type, a fresh id and the time, and the headers that sign it as the provider
//! does.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::chain::chain;
use crate::secret::Key;
use crate::sign::Signer;

/// A realistic Clerk `user.created` event (2.9 KB); `--event` changes its `type`.
pub const CLERK_EVENT: &str = include_str!("clerk_user_created.json");

/// Which header names to sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeaderFamily {
    /// `svix-id`, `svix-timestamp`, `svix-signature` (Svix, Clerk).
    Svix,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` (Standard Webhooks).
    Webhook,
}

impl HeaderFamily {
    pub fn names(self) -> [&'static str; 3] {
        match self {
            HeaderFamily::Svix => ["svix-id", "svix-timestamp", "svix-signature"],
            HeaderFamily::Webhook => ["webhook-id", "webhook-timestamp", "webhook-signature"],
        }
    }
}

/// Who `send` signs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// Svix / Standard Webhooks (Clerk, Resend, …): `svix-*` or `webhook-*` headers.
    Svix,
    /// Stripe: `Stripe-Signature`, the event id in the body.
    Stripe,
    /// GitHub: `X-Hub-Signature-256`, `X-GitHub-Delivery`, `X-GitHub-Event`.
    Github,
    /// Shopify: `X-Shopify-Hmac-Sha256`, `X-Shopify-Webhook-Id`, `X-Shopify-Topic`.
    Shopify,
}

impl Provider {
    /// The event `send` sends without `--event`.
    pub fn default_event(self) -> &'static str {
        match self {
            Provider::Svix => "user.created",
            Provider::Stripe => "invoice.paid",
            Provider::Github => "pull_request.opened",
            Provider::Shopify => "orders/create",
        }
    }

    /// A fresh id of the provider's form.
    pub fn new_id(self) -> String {
        let unique = new_id();
        let hex = unique.trim_start_matches("msg_");
        match self {
            Provider::Svix => unique,
            Provider::Stripe => format!("evt_{hex}"),
            // A GUID's layout, as GitHub and Shopify send them.
            Provider::Github | Provider::Shopify => {
                let digits: String = hex.chars().chain(std::iter::repeat('0')).take(32).collect();
                format!(
                    "{}-{}-{}-{}-{}",
                    &digits[..8],
                    &digits[8..12],
                    &digits[12..16],
                    &digits[16..20],
                    &digits[20..]
                )
            }
        }
    }

    /// A body of the provider's shape for `event`: Stripe's carries `id`.
    pub fn body(self, event: &str, id: &str, timestamp: u64) -> Vec<u8> {
        let value = match self {
            Provider::Svix => return clerk_event(event),
            Provider::Stripe => serde_json::json!({
                "id": id,
                "object": "event",
                "api_version": "2024-06-20",
                "created": timestamp,
                "type": event,
                "livemode": false,
                "data": {"object": {"id": "in_1", "object": "invoice", "amount_paid": 2000, "currency": "usd"}},
            }),
            Provider::Github => {
                let mut body = serde_json::json!({
                    "repository": {"id": 1, "full_name": "octo-org/hello-world"},
                    "sender": {"login": "octocat"},
                });
                if let Some((_, action)) = event.split_once('.') {
                    body["action"] = action.into();
                    body["number"] = 1.into();
                }
                body
            }
            Provider::Shopify => serde_json::json!({
                "id": 820982911946154508u64,
                "email": "jon@example.com",
                "total_price": "10.00",
                "currency": "USD",
            }),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The headers that sign `body` as the provider does, and carry the id, event type and
    /// timestamp where it puts them. `secret` is as resolved: a Svix key, else its bytes.
    pub fn headers(
        self,
        secret: &str,
        family: HeaderFamily,
        (id, event, timestamp): (&str, &str, u64),
        body: &[u8],
    ) -> Result<HeaderMap, String> {
        let bytes = secret.as_bytes();
        let pairs: Vec<(&'static str, String)> = match self {
            Provider::Svix => {
                let key = Key::decode(secret).map_err(|e| chain(&e))?;
                let signer = Signer::try_from(&key).map_err(|e| e.to_string())?;
                return Ok(svix_headers(&signer, family, id, timestamp, body));
            }
            Provider::Stripe => vec![(
                "stripe-signature",
                crate::sign::stripe(bytes, timestamp, body),
            )],
            Provider::Github => vec![
                (
                    "x-github-event",
                    event.split('.').next().unwrap_or(event).to_owned(),
                ),
                ("x-github-delivery", id.to_owned()),
                ("x-hub-signature-256", crate::sign::github(bytes, body)),
            ],
            Provider::Shopify => vec![
                ("x-shopify-topic", event.to_owned()),
                ("x-shopify-webhook-id", id.to_owned()),
                ("x-shopify-hmac-sha256", crate::sign::shopify(bytes, body)),
            ],
        };
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            let value = HeaderValue::try_from(value).map_err(|e| format!("{name}: {e}"))?;
            headers.insert(HeaderName::from_static(name), value);
        }
        Ok(headers)
    }
}

/// The three Svix headers for one message.
pub fn svix_headers(
    signer: &Signer,
    family: HeaderFamily,
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> HeaderMap {
    let [id_name, ts_name, sig_name] = family.names();
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    put(id_name, id.to_owned());
    put(ts_name, timestamp.to_string());
    put(sig_name, signer.sign(id, timestamp, body));
    headers
}

/// Builds the Clerk-shaped body with the given event type.
pub fn clerk_event(event_type: &str) -> Vec<u8> {
    let mut event: serde_json::Value =
        serde_json::from_str(CLERK_EVENT).expect("the built-in event is JSON");
    event["type"] = serde_json::Value::String(event_type.to_owned());
    serde_json::to_vec(&event).expect("a JSON value serializes")
}

/// A fresh message id: time and process make it unique enough for local testing.
pub fn new_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("msg_{nanos:x}{:x}{n:x}", std::process::id())
}

/// Now, in Unix seconds: the timestamp a sender signs.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
