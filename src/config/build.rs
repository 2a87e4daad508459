//! Checking what the file says and building the typed config from it, collecting every
//! problem with its key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::raw::{RawAdmin, RawConfig, RawDedup, RawLimits, RawListen, RawLog, RawTelemetry};
use super::route::{routes, RouteDefaults, UpstreamTiming};
use super::value::{at_least_one, duration, duration_or_zero, socket_addr};
use super::*;
use crate::chain::chain;
use crate::secret::SecretSource;

/// The container's CPU quota rounded up (cgroup v2 `cpu.max`, else v1's
/// `cpu.cfs_quota_us` / `cpu.cfs_period_us`), else `WORKERS_WITHOUT_QUOTA`. Not the
/// node's core count: a sidecar without a CPU limit on a 64-core node would start 64
/// threads and 64 upstream pools.
pub(super) fn default_workers() -> usize {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let quota = read("/sys/fs/cgroup/cpu.max")
        .and_then(|text| cpu_quota_v2(&text))
        .or_else(|| {
            let quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?;
            let period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?;
            cpu_quota_v1(&quota, &period)
        });
    quota.unwrap_or(defaults::WORKERS_WITHOUT_QUOTA)
}

/// `cpu.max` is `"QUOTA PERIOD"` in microseconds, or `"max PERIOD"` without a limit.
pub(super) fn cpu_quota_v2(text: &str) -> Option<usize> {
    let (quota, period) = text.trim().split_once(' ')?;
    cpus(quota.parse().ok()?, period.parse().ok()?)
}

/// v1: a quota of -1 means no limit.
pub(super) fn cpu_quota_v1(quota: &str, period: &str) -> Option<usize> {
    let quota: i64 = quota.trim().parse().ok()?;
    cpus(u64::try_from(quota).ok()?, period.trim().parse().ok()?)
}

fn cpus(quota: u64, period: u64) -> Option<usize> {
    if quota == 0 || period == 0 {
        return None;
    }
    usize::try_from(quota.div_ceil(period)).ok()
}

/// The typed config from what the file says, every problem collected in `problems`.
pub(super) fn build(
    raw: RawConfig,
    file: &Path,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Config> {
    let recent_deliveries = raw.admin.recent_deliveries;
    if recent_deliveries > defaults::MAX_RECENT_DELIVERIES {
        problems.add(
            "admin.recent_deliveries",
            format!(
                "{recent_deliveries} is more than {}: the ring's slots are reserved at start",
                defaults::MAX_RECENT_DELIVERIES
            ),
        );
    }
    let admin_token = admin_token(raw.admin.token.as_deref(), base_dir, problems);
    let telemetry = telemetry(raw.telemetry, problems);
    let (listen, admin_addr) = listen(raw.listen, raw.admin, base_dir, problems);
    let (limits, upstream) = limits(raw.limits, problems);
    let tolerance = duration(problems, "verify.tolerance", &raw.verify.tolerance);
    let dedup = dedup(raw.dedup, tolerance, problems);
    let redis = raw
        .redis
        .and_then(|r| super::redis_section::redis_section(r, base_dir, problems));
    if dedup.is_some_and(|d| d.store == StoreKind::Redis)
        && redis.is_none()
        && !problems.has("redis")
    {
        problems.add(
            "dedup.store",
            "\"redis\" needs a [redis] section (at least `url`)",
        );
    }
    let log = log(raw.log, problems);
    let defaults = RouteDefaults {
        tolerance_secs: tolerance.map_or(0, |t| t.as_secs()),
        upstream,
        // A [redis] section with problems of its own is reported once, not per stream rule.
        redis_section_given: redis.is_some() || problems.has("redis"),
    };
    let routes = routes(raw.routes, base_dir, &defaults, problems);
    super::redis_section::cluster_streams(
        redis.as_ref(),
        dedup.map(|d| d.store),
        &routes,
        problems,
    );
    Some(Config {
        file: file.to_owned(),
        listen: listen?,
        admin_addr: admin_addr?,
        admin_token,
        recent_deliveries,
        telemetry: telemetry?,
        limits: limits?,
        tolerance: tolerance?,
        dedup: dedup?,
        redis,
        log: log?,
        routes,
    })
}

/// `admin.token`: a secret reference, resolved; empty is a mistake, not "no token".
fn admin_token(spec: Option<&str>, base_dir: &Path, problems: &mut Problems) -> Option<AdminToken> {
    let spec = spec?;
    match SecretSource::parse(spec, base_dir).resolve() {
        Ok(token) if token.len() >= 16 => Some(AdminToken(token)),
        Ok(_) => {
            problems.add(
                "admin.token",
                "shorter than 16 characters: too easy to guess",
            );
            None
        }
        Err(err) => {
            problems.add("admin.token", chain(&err));
            None
        }
    }
}

/// `[telemetry]`: an http(s) endpoint and a ratio in [0, 1].
fn telemetry(raw: RawTelemetry, problems: &mut Problems) -> Option<Telemetry> {
    let start = problems.0.len();
    if let Some(endpoint) = &raw.otlp_endpoint {
        let ok = endpoint.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        });
        if !ok {
            problems.add(
                "telemetry.otlp_endpoint",
                format!("{endpoint:?} is not an http(s) URL"),
            );
        }
    }
    if !(0.0..=1.0).contains(&raw.sample_ratio) {
        problems.add(
            "telemetry.sample_ratio",
            format!("{} is not between 0 and 1", raw.sample_ratio),
        );
    }
    if raw.service_name.trim().is_empty() {
        problems.add("telemetry.service_name", "empty");
    }
    (problems.0.len() == start).then_some(Telemetry {
        otlp_endpoint: raw.otlp_endpoint,
        service_name: raw.service_name,
        sample_ratio: raw.sample_ratio,
    })
}

/// `[listen]` and `[admin]`: addresses that do not clash, TLS files read.
fn listen(
    raw: RawListen,
    admin: RawAdmin,
    base_dir: &Path,
    problems: &mut Problems,
) -> (Option<Listen>, Option<SocketAddr>) {
    let listen_addr = socket_addr(problems, "listen.addr", &raw.addr);
    let admin_addr = socket_addr(problems, "admin.addr", &admin.addr);
    if let (Some(a), Some(b)) = (listen_addr, admin_addr) {
        // Port 0 asks the OS for a free port, so two of them do not clash.
        if a == b && a.port() != 0 {
            problems.add("admin.addr", format!("{b} is also listen.addr"));
        }
    }
    let tls = match (raw.tls_cert, raw.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let (cert, key) = (base_dir.join(cert), base_dir.join(key));
            match crate::tls::load_server_config(&cert, &key) {
                Ok(server) => Some(Tls { cert, key, server }),
                Err(err) => {
                    problems.add("listen.tls_cert", chain(&err));
                    None
                }
            }
        }
        (Some(_), None) => {
            problems.add("listen.tls_key", "missing: tls_cert needs tls_key");
            None
        }
        (None, Some(_)) => {
            problems.add("listen.tls_cert", "missing: tls_key needs tls_cert");
            None
        }
    };
    let listen = listen_addr.map(|addr| Listen {
        addr,
        tls,
        trust_forwarded_headers: raw.trust_forwarded_headers,
    });
    (listen, admin_addr)
}

/// `[limits]`, and the per-route defaults it sets (`upstream_timeout`, `upstream_deadline`,
/// `connect_timeout`).
fn limits(l: RawLimits, problems: &mut Problems) -> (Option<Limits>, UpstreamTiming) {
    let count = |problems: &mut Problems, key: &str, n: usize| {
        at_least_one(problems, &format!("limits.{key}"), n as u64) as usize
    };
    let max_body_bytes = at_least_one(problems, "limits.max_body_bytes", l.max_body_bytes);
    let max_headers = count(problems, "max_headers", l.max_headers);
    let max_header_bytes = count(problems, "max_header_bytes", l.max_header_bytes);
    let max_connections = count(problems, "max_connections", l.max_connections);
    let h2_max_concurrent_streams = at_least_one(
        problems,
        "limits.h2_max_concurrent_streams",
        l.h2_max_concurrent_streams,
    );
    let time = |problems: &mut Problems, key: &str, text: &str| {
        duration(problems, &format!("limits.{key}"), text)
    };
    let header_read_timeout = time(problems, "header_read_timeout", &l.header_read_timeout);
    let body_read_timeout = time(problems, "body_read_timeout", &l.body_read_timeout);
    let upstream = UpstreamTiming::new(
        "limits.",
        (Some(&*l.upstream_timeout), Some(&*l.upstream_deadline)),
        l.connect_timeout.as_deref(),
        &UpstreamTiming::default(),
        problems,
    );
    let shutdown_delay = duration_or_zero(problems, "limits.shutdown_delay", &l.shutdown_delay);
    let shutdown_grace = duration(problems, "limits.shutdown_grace", &l.shutdown_grace);
    let idle_timeout = duration(problems, "limits.idle_timeout", &l.idle_timeout);
    let max_buffered_bytes =
        at_least_one(problems, "limits.max_buffered_bytes", l.max_buffered_bytes);
    if max_buffered_bytes < max_body_bytes {
        problems.add(
            "limits.max_buffered_bytes",
            format!(
                "{max_buffered_bytes} is below limits.max_body_bytes ({max_body_bytes}): \
                 the largest allowed body could never be read"
            ),
        );
    }
    let workers = match l.workers {
        Some(n) => count(problems, "workers", n),
        None => default_workers(),
    };
    let limits = (|| {
        Some(Limits {
            max_body_bytes,
            max_headers,
            max_header_bytes,
            header_read_timeout: header_read_timeout?,
            body_read_timeout: body_read_timeout?,
            max_connections,
            h2_max_concurrent_streams,
            shutdown_delay: shutdown_delay?,
            shutdown_grace: shutdown_grace?,
            idle_timeout: idle_timeout?,
            max_buffered_bytes,
            min_body_rate: l.min_body_rate,
            workers,
        })
    })();
    (limits, upstream)
}

/// `[dedup]`: capacity, a ttl no shorter than the tolerance, the store and its policy.
fn dedup(
    raw: RawDedup,
    tolerance: Option<Duration>,
    problems: &mut Problems,
) -> Option<DedupConfig> {
    let capacity = at_least_one(problems, "dedup.capacity", raw.capacity as u64) as usize;
    let ttl = match &raw.ttl {
        Some(text) => {
            let ttl = duration(problems, "dedup.ttl", text);
            if let (Some(ttl), Some(tolerance)) = (ttl, tolerance) {
                if ttl < tolerance {
                    problems.add(
                        "dedup.ttl",
                        format!(
                            "{text:?} is shorter than verify.tolerance ({}): a replay inside \
                             the window would pass as new",
                            humantime::format_duration(tolerance)
                        ),
                    );
                }
            }
            ttl
        }
        None => tolerance.map(|t| (t * 3).max(defaults::DEDUP_TTL_FLOOR)),
    };
    let store = match raw.store.as_str() {
        "memory" => Some(StoreKind::Memory),
        "redis" => Some(StoreKind::Redis),
        other => {
            let message = format!("{other:?} is neither \"memory\" nor \"redis\"");
            problems.add("dedup.store", message);
            None
        }
    };
    let on_store_error = match raw.on_store_error.as_str() {
        "refuse" => Some(OnStoreError::Refuse),
        "local" => Some(OnStoreError::Local),
        other => {
            let message = format!("{other:?} is neither \"refuse\" nor \"local\"");
            problems.add("dedup.on_store_error", message);
            None
        }
    };
    Some(DedupConfig {
        capacity,
        ttl: ttl?,
        store: store?,
        on_store_error: on_store_error?,
    })
}

/// `[log]`: the format, and a level tracing can parse.
fn log(raw: RawLog, problems: &mut Problems) -> Option<LogConfig> {
    let format = match raw.format.as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => {
            let message = format!("{other:?} is neither \"text\" nor \"json\"");
            problems.add("log.format", message);
            None
        }
    };
    if let Err(err) = check_filter(&raw.level) {
        problems.add(
            "log.level",
            format!("invalid log filter {:?}: {err}", raw.level),
        );
    }
    Some(LogConfig {
        format: format?,
        level: raw.level,
    })
}
