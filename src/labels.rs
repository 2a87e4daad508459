//! The label values that several layers name: how a request ended (`Outcome`, the
//! contract's outcome labels, §3), the route label of a request refused before a route is
//! known (`UNMATCHED`), and what a Redis command was for (`RedisOp`).
//!
//! A leaf: it imports nothing of this crate. `metrics` counts by these values, `outcome`
//! and `server` decide outcomes, `config` keeps route names off `UNMATCHED`, `redis` names
//! its commands; with the values here none of them has to import another to agree on a
//! name.

/// The route label for requests refused before a route is known.
pub const UNMATCHED: &str = "_unmatched";

/// Declares `Outcome` from one table of variant and label: the enum, `ALL` (every
/// variant, in declaration order, so `outcome as usize` indexes it) and `label`. A new
/// outcome cannot be added without its label, and the counters' array has exactly
/// `Outcome::COUNT` entries, so indexing it cannot fail.
macro_rules! outcomes {
    ($($variant:ident => $label:literal,)+) => {
        /// Every outcome of a request: the `outcome` label of `hookwall_requests_total`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Outcome {
            $($variant,)+
        }

        impl Outcome {
            pub const ALL: &'static [Outcome] = &[$(Outcome::$variant,)+];
            pub const COUNT: usize = Outcome::ALL.len();

            pub fn label(self) -> &'static str {
                match self {
                    $(Outcome::$variant => $label,)+
                }
            }

            /// What hookwall answers when it refuses with this outcome:
            /// `{"error":"<label>"}`, made at compile time from the label.
            pub(crate) fn refusal_body(self) -> &'static str {
                match self {
                    $(Outcome::$variant => concat!(r#"{"error":""#, $label, r#""}"#),)+
                }
            }
        }
    };
}

outcomes! {
    Overloaded => "overloaded",
    HeadersTooLarge => "headers_too_large",
    NotFound => "not_found",
    MethodNotAllowed => "method_not_allowed",
    BodyTooLarge => "body_too_large",
    BodyTimeout => "body_timeout",
    MissingHeader => "missing_header",
    MalformedHeader => "malformed_header",
    TimestampTooOld => "timestamp_too_old",
    TimestampTooNew => "timestamp_too_new",
    InvalidSignature => "invalid_signature",
    Duplicate => "duplicate",
    InFlight => "in_flight",
    Filtered => "filtered",
    Forwarded => "forwarded",
    Queued => "queued",
    UpstreamRejected => "upstream_rejected",
    UpstreamUnavailable => "upstream_unavailable",
    UpstreamTimeout => "upstream_timeout",
    StoreUnavailable => "store_unavailable",
}

/// What a Redis command was for: the `op` label of `hookwall_redis_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisOp {
    Claim,
    Renew,
    Deliver,
    Release,
    Lookup,
    Append,
    /// An operator's forget (`POST /dedup/forget`).
    Forget,
}

impl RedisOp {
    /// Every op, in declaration order (`op as usize` indexes it).
    pub const ALL: [RedisOp; 7] = [
        RedisOp::Claim,
        RedisOp::Renew,
        RedisOp::Deliver,
        RedisOp::Release,
        RedisOp::Lookup,
        RedisOp::Append,
        RedisOp::Forget,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RedisOp::Claim => "claim",
            RedisOp::Renew => "renew",
            RedisOp::Deliver => "deliver",
            RedisOp::Release => "release",
            RedisOp::Lookup => "lookup",
            RedisOp::Append => "append",
            RedisOp::Forget => "forget",
        }
    }
}
