//! What the config file says (serde), before it is checked: every field optional or
//! defaulted, so `build` can report every problem rather than serde the first one.

use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;

#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub(super) listen: RawListen,
    pub(super) admin: RawAdmin,
    pub(super) limits: RawLimits,
    pub(super) verify: RawVerify,
    pub(super) dedup: RawDedup,
    pub(super) redis: Option<RawRedis>,
    pub(super) log: RawLog,
    pub(super) telemetry: RawTelemetry,
    pub(super) routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawListen {
    pub(super) addr: String,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) trust_forwarded_headers: bool,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            addr: defaults::LISTEN_ADDR.into(),
            tls_cert: None,
            tls_key: None,
            trust_forwarded_headers: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawAdmin {
    pub(super) addr: String,
    /// A secret reference: enables `POST /dedup/forget`.
    pub(super) token: Option<String>,
    pub(super) recent_deliveries: usize,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            addr: defaults::ADMIN_ADDR.into(),
            token: None,
            recent_deliveries: defaults::RECENT_DELIVERIES,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawTelemetry {
    pub(super) otlp_endpoint: Option<String>,
    pub(super) service_name: String,
    pub(super) sample_ratio: f64,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        RawTelemetry {
            otlp_endpoint: None,
            service_name: defaults::SERVICE_NAME.into(),
            sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawLimits {
    pub(super) max_body_bytes: u64,
    pub(super) max_headers: usize,
    pub(super) max_header_bytes: usize,
    pub(super) header_read_timeout: String,
    pub(super) body_read_timeout: String,
    pub(super) max_connections: usize,
    pub(super) h2_max_concurrent_streams: u32,
    pub(super) upstream_timeout: String,
    pub(super) upstream_deadline: String,
    pub(super) shutdown_delay: String,
    pub(super) shutdown_grace: String,
    pub(super) idle_timeout: String,
    pub(super) max_buffered_bytes: u64,
    pub(super) min_body_rate: u64,
    pub(super) connect_timeout: Option<String>,
    pub(super) workers: Option<usize>,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_headers: defaults::MAX_HEADERS,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            header_read_timeout: defaults::HEADER_READ_TIMEOUT.into(),
            body_read_timeout: defaults::BODY_READ_TIMEOUT.into(),
            max_connections: defaults::MAX_CONNECTIONS,
            h2_max_concurrent_streams: defaults::H2_MAX_CONCURRENT_STREAMS,
            upstream_timeout: defaults::UPSTREAM_TIMEOUT.into(),
            upstream_deadline: defaults::UPSTREAM_DEADLINE.into(),
            shutdown_delay: defaults::SHUTDOWN_DELAY.into(),
            shutdown_grace: defaults::SHUTDOWN_GRACE.into(),
            idle_timeout: defaults::IDLE_TIMEOUT.into(),
            max_buffered_bytes: defaults::MAX_BUFFERED_BYTES,
            min_body_rate: defaults::MIN_BODY_RATE,
            connect_timeout: None,
            workers: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawVerify {
    pub(super) tolerance: String,
}

impl Default for RawVerify {
    fn default() -> Self {
        RawVerify {
            tolerance: defaults::TOLERANCE.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawDedup {
    pub(super) capacity: usize,
    pub(super) ttl: Option<String>,
    pub(super) store: String,
    pub(super) on_store_error: String,
}

impl Default for RawDedup {
    fn default() -> Self {
        RawDedup {
            capacity: defaults::DEDUP_CAPACITY,
            ttl: None,
            store: "memory".into(),
            on_store_error: "refuse".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawRedis {
    /// Exactly one of `url`, `sentinels`, `cluster`; none of them: the default URL.
    pub(super) url: Option<String>,
    pub(super) sentinels: Option<Vec<String>>,
    pub(super) master: Option<String>,
    pub(super) cluster: Option<Vec<String>>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) sentinel_password: Option<String>,
    pub(super) tls: Option<bool>,
    pub(super) key_prefix: String,
    pub(super) timeout: String,
    pub(super) stream_max_len: u64,
    pub(super) ca_file: Option<PathBuf>,
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: None,
            sentinels: None,
            master: None,
            cluster: None,
            username: None,
            password: None,
            sentinel_password: None,
            tls: None,
            key_prefix: defaults::REDIS_KEY_PREFIX.into(),
            timeout: defaults::REDIS_TIMEOUT.into(),
            stream_max_len: defaults::REDIS_STREAM_MAX_LEN,
            ca_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawLog {
    pub(super) format: String,
    pub(super) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: defaults::LOG_FORMAT.into(),
            level: defaults::LOG_LEVEL.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRoute {
    pub(super) name: Option<String>,
    pub(super) path: Option<String>,
    pub(super) provider: Option<String>,
    pub(super) hmac: Option<RawHmac>,
    pub(super) enforce: Option<bool>,
    #[serde(default)]
    pub(super) secrets: Vec<String>,
    pub(super) upstream: Option<String>,
    pub(super) upstream_timeout: Option<String>,
    pub(super) upstream_deadline: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) rules: Option<Vec<RawRule>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRule {
    #[serde(default)]
    pub(super) events: Vec<String>,
    pub(super) upstream: Option<String>,
    pub(super) action: Option<String>,
    pub(super) stream: Option<String>,
}

/// `[routes.hmac]`: a declared scheme; `build` checks that it can work.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawHmac {
    pub(super) signature_header: Option<String>,
    pub(super) signature_prefix: String,
    pub(super) encoding: String,
    pub(super) algorithm: String,
    pub(super) signed_content: String,
    pub(super) timestamp_header: Option<String>,
    pub(super) id: Option<String>,
    pub(super) event_type: String,
    pub(super) secret_encoding: String,
}

impl Default for RawHmac {
    fn default() -> Self {
        RawHmac {
            signature_header: None,
            signature_prefix: String::new(),
            encoding: "hex".into(),
            algorithm: "sha256".into(),
            signed_content: "{body}".into(),
            timestamp_header: None,
            id: None,
            event_type: "json:/type".into(),
            secret_encoding: "raw".into(),
        }
    }
}
