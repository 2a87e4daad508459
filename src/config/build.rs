//! Checking what the file says and building the typed config from it, collecting every
//! problem with its key.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{RawConfig, RawRedis, RawRoute};
use super::*;
use crate::route::{Action, Glob, Rule, Rules, Upstream};
use crate::secret::{Key, SecretSource};
use crate::verify::{Verifier, VerifyKey};

fn duration(problems: &mut Problems, key: &str, text: &str) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            problems.add(key, format!("{text:?} must be longer than zero"));
            None
        }
        Ok(d) => Some(d),
        Err(err) => {
            problems.add(
                key,
                format!("{text:?} is not a duration like \"250ms\", \"10s\", \"1m30s\": {err}"),
            );
            None
        }
    }
}

/// A duration where zero means "none" (`shutdown_delay`).
fn duration_or_zero(problems: &mut Problems, key: &str, text: &str) -> Option<Duration> {
    if humantime::parse_duration(text).is_ok_and(|d| d.is_zero()) {
        return Some(Duration::ZERO);
    }
    duration(problems, key, text)
}

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

fn socket_addr(problems: &mut Problems, key: &str, text: &str) -> Option<SocketAddr> {
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.add(
                key,
                format!("{text:?} is not an address like \"0.0.0.0:8080\""),
            );
            None
        }
    }
}

fn at_least_one<T: PartialOrd + From<u8> + fmt::Display>(
    problems: &mut Problems,
    key: &str,
    value: T,
) -> T {
    if value < T::from(1) {
        problems.add(key, format!("{value} must be at least 1"));
    }
    value
}

fn upstream(problems: &mut Problems, key: &str, text: &str) -> Option<Upstream> {
    Upstream::parse(text)
        .map_err(|message| problems.add(key, message))
        .ok()
}

pub(super) fn build(
    raw: RawConfig,
    file: &Path,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Config> {
    let listen_addr = socket_addr(problems, "listen.addr", &raw.listen.addr);
    let admin_addr = socket_addr(problems, "admin.addr", &raw.admin.addr);
    if let (Some(a), Some(b)) = (listen_addr, admin_addr) {
        // Port 0 asks the OS for a free port, so two of them do not clash.
        if a == b && a.port() != 0 {
            problems.add("admin.addr", format!("{b} is also listen.addr"));
        }
    }
    let tls = match (raw.listen.tls_cert, raw.listen.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let (cert, key) = (base_dir.join(cert), base_dir.join(key));
            match crate::tls::load_server_config(&cert, &key) {
                Ok(server) => Some(Tls { cert, key, server }),
                Err(err) => {
                    problems.add("listen.tls_cert", err.to_string());
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

    let l = raw.limits;
    let max_body_bytes = at_least_one(problems, "limits.max_body_bytes", l.max_body_bytes);
    let max_headers = at_least_one(problems, "limits.max_headers", l.max_headers as u64) as usize;
    let max_header_bytes = at_least_one(
        problems,
        "limits.max_header_bytes",
        l.max_header_bytes as u64,
    ) as usize;
    let max_connections =
        at_least_one(problems, "limits.max_connections", l.max_connections as u64) as usize;
    let h2_streams = at_least_one(
        problems,
        "limits.h2_max_concurrent_streams",
        l.h2_max_concurrent_streams,
    );
    let header_read_timeout = duration(
        problems,
        "limits.header_read_timeout",
        &l.header_read_timeout,
    );
    let body_read_timeout = duration(problems, "limits.body_read_timeout", &l.body_read_timeout);
    let upstream_timeout = duration(problems, "limits.upstream_timeout", &l.upstream_timeout);
    let upstream_deadline = duration(problems, "limits.upstream_deadline", &l.upstream_deadline);
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
        Some(n) => at_least_one(problems, "limits.workers", n as u64) as usize,
        None => default_workers(),
    };

    let tolerance = duration(problems, "verify.tolerance", &raw.verify.tolerance);
    let capacity = at_least_one(problems, "dedup.capacity", raw.dedup.capacity as u64) as usize;
    let ttl = match &raw.dedup.ttl {
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

    let store = match raw.dedup.store.as_str() {
        "memory" => Some(StoreKind::Memory),
        "redis" => Some(StoreKind::Redis),
        other => {
            problems.add(
                "dedup.store",
                format!("{other:?} is neither \"memory\" nor \"redis\""),
            );
            None
        }
    };
    let on_store_error = match raw.dedup.on_store_error.as_str() {
        "refuse" => Some(OnStoreError::Refuse),
        "local" => Some(OnStoreError::Local),
        other => {
            problems.add(
                "dedup.on_store_error",
                format!("{other:?} is neither \"refuse\" nor \"local\""),
            );
            None
        }
    };
    let redis = raw.redis.and_then(|r| redis_section(r, base_dir, problems));
    if store == Some(StoreKind::Redis) && redis.is_none() && !problems.has("redis") {
        problems.add(
            "dedup.store",
            "\"redis\" needs a [redis] section (at least `url`)",
        );
    }

    let format = match raw.log.format.as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => {
            problems.add(
                "log.format",
                format!("{other:?} is neither \"text\" nor \"json\""),
            );
            None
        }
    };
    if let Err(err) = check_filter(&raw.log.level) {
        problems.add(
            "log.level",
            format!("invalid log filter {:?}: {err}", raw.log.level),
        );
    }

    if raw.routes.is_empty() {
        problems.add("routes", "no routes: add at least one [[routes]] table");
    }
    let tolerance_secs = tolerance.map_or(0, |t| t.as_secs());
    // A [redis] section with problems of its own is reported once, not per stream rule.
    let redis_section_given = redis.is_some() || problems.has("redis");
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    let mut routes = Vec::new();
    for (i, raw_route) in raw.routes.into_iter().enumerate() {
        // Duplicates are checked on what was written, so a route with other problems
        // still shows its clash.
        let mut path_clash = false;
        if let Some(path) = &raw_route.path {
            if !paths.insert(path.clone()) {
                path_clash = true;
                problems.add(
                    format!("routes[{i}].path"),
                    format!("{path:?} is used by an earlier route"),
                );
            }
        }
        // A name taken from a clashing path would only repeat the clash.
        let name = raw_route
            .name
            .as_ref()
            .or(raw_route.path.as_ref().filter(|_| !path_clash));
        if let Some(name) = name {
            if name == crate::metrics::UNMATCHED {
                problems.add(format!("routes[{i}].name"), format!("{name:?} is reserved"));
            } else if !names.insert(name.clone()) {
                problems.add(
                    format!("routes[{i}].name"),
                    format!("{name:?} is used by an earlier route"),
                );
            }
        }
        routes.extend(build_route(
            raw_route,
            i,
            base_dir,
            tolerance_secs,
            (upstream_timeout, upstream_deadline),
            redis_section_given,
            problems,
        ));
    }

    Some(Config {
        file: file.to_owned(),
        listen: Listen {
            addr: listen_addr?,
            tls,
            trust_forwarded_headers: raw.listen.trust_forwarded_headers,
        },
        admin_addr: admin_addr?,
        limits: Limits {
            max_body_bytes,
            max_headers,
            max_header_bytes,
            header_read_timeout: header_read_timeout?,
            body_read_timeout: body_read_timeout?,
            max_connections,
            h2_max_concurrent_streams: h2_streams,
            shutdown_delay: shutdown_delay?,
            shutdown_grace: shutdown_grace?,
            idle_timeout: idle_timeout?,
            max_buffered_bytes,
            workers,
        },
        tolerance: tolerance?,
        dedup: DedupConfig {
            capacity,
            ttl: ttl?,
            store: store?,
            on_store_error: on_store_error?,
        },
        redis,
        log: LogConfig {
            format: format?,
            level: raw.log.level,
        },
        routes,
    })
}

/// The `[redis]` section: the URL resolved (`env:`/`file:` as for secrets) and checked.
fn redis_section(raw: RawRedis, base_dir: &Path, problems: &mut Problems) -> Option<RedisConfig> {
    let start = problems.0.len();
    let source = SecretSource::parse(&raw.url, base_dir);
    let url = match source.resolve() {
        Ok(url) => {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                problems.add(
                    "redis.url",
                    format!("{source}: not a redis:// or rediss:// URL"),
                );
            } else if let Err(err) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                // The error names what is wrong, never the URL (it may hold a password).
                problems.add(
                    "redis.url",
                    format!("{source}: not a usable Redis URL ({})", err.category()),
                );
            }
            url
        }
        Err(err) => {
            problems.add("redis.url", format!("{source}: {err}"));
            String::new()
        }
    };
    let prefix = raw.key_prefix;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        problems.add(
            "redis.key_prefix",
            format!("{prefix:?} must be non-empty visible ASCII without spaces"),
        );
    }
    let timeout = duration(problems, "redis.timeout", &raw.timeout);
    let stream_max_len = at_least_one(problems, "redis.stream_max_len", raw.stream_max_len);
    let ca_file = raw.ca_file.and_then(|path| {
        let path = base_dir.join(path);
        if !url.starts_with("rediss://") {
            problems.add("redis.ca_file", "needs a rediss:// URL (TLS)");
            return None;
        }
        // Parsed as the upstreams' bundles are, so a bad file is named here, not at connect.
        let checked = crate::tls::load_roots(&path)
            .map_err(|err| err.to_string())
            .and_then(|_| std::fs::read(&path).map_err(|err| format!("{}: {err}", path.display())));
        match checked {
            Ok(pem) => Some((path, pem)),
            Err(err) => {
                problems.add("redis.ca_file", err);
                None
            }
        }
    });
    if problems.0.len() > start {
        return None;
    }
    Some(RedisConfig {
        source,
        url,
        key_prefix: prefix,
        timeout: timeout?,
        stream_max_len,
        ca_file,
    })
}

/// A stream rule's Redis key: non-empty visible ASCII (it is also written in log lines).
fn stream_name(problems: &mut Problems, key: &str, name: String) -> Option<Action> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        problems.add(
            key,
            format!("{name:?} must be non-empty visible ASCII without spaces"),
        );
        return None;
    }
    Some(Action::Stream(name.into()))
}

fn build_route(
    raw: RawRoute,
    i: usize,
    base_dir: &Path,
    tolerance_secs: u64,
    (default_timeout, default_deadline): (Option<Duration>, Option<Duration>),
    redis_section_given: bool,
    problems: &mut Problems,
) -> Option<Route> {
    let at = |key: &str| format!("routes[{i}].{key}");
    let start = problems.0.len();

    let path = match raw.path {
        Some(path) if path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) => path,
        Some(path) => {
            problems.add(
                at("path"),
                format!("{path:?} must start with \"/\" and be visible ASCII"),
            );
            path
        }
        None => {
            problems.add(at("path"), "missing: every route needs a path");
            String::new()
        }
    };
    let name: Arc<str> = match raw.name {
        // The name travels in the `hookwall-route` header and in metric labels.
        Some(name) if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) => {
            problems.add(
                at("name"),
                format!("{name:?} must be non-empty visible ASCII without spaces"),
            );
            name.into()
        }
        Some(name) => name.into(),
        None => path.as_str().into(),
    };

    if raw.secrets.is_empty() {
        problems.add(at("secrets"), "missing: at least one secret is needed");
    }
    let mut sources = Vec::new();
    let mut keys = Vec::new();
    for (j, spec) in raw.secrets.iter().enumerate() {
        let source = SecretSource::parse(spec, base_dir);
        match source.resolve().and_then(|value| Key::decode(&value)) {
            Ok(key) => keys.push(VerifyKey::from(&key)),
            Err(err) => problems.add(
                format!("routes[{i}].secrets[{j}]"),
                format!("{source}: {err}"),
            ),
        }
        sources.push(source);
    }

    let rules = match (raw.upstream, raw.rules) {
        (Some(url), None) => upstream(problems, &at("upstream"), &url).map(|up| {
            Rules(vec![Rule {
                events: vec![Glob::new("*")],
                action: Action::Forward(Box::new(up)),
            }])
        }),
        (None, Some(raw_rules)) => {
            if raw_rules.is_empty() {
                problems.add(at("rules"), "is empty: add a rule or use `upstream`");
            }
            let mut rules = Vec::new();
            for (j, rule) in raw_rules.into_iter().enumerate() {
                let key = |k: &str| format!("routes[{i}].rules[{j}].{k}");
                if rule.events.is_empty() {
                    problems.add(key("events"), "is empty: list at least one event pattern");
                }
                let action = match (rule.upstream, rule.action.as_deref(), rule.stream) {
                    (Some(url), None, None) => upstream(problems, &key("upstream"), &url)
                        .map(|up| Action::Forward(Box::new(up))),
                    (None, Some("drop"), None) => Some(Action::Drop),
                    (None, None, Some(_)) if !redis_section_given => {
                        problems.add(
                            key("stream"),
                            "a stream rule needs a [redis] section (at least `url`)",
                        );
                        None
                    }
                    (None, None, Some(name)) => stream_name(problems, &key("stream"), name),
                    (None, Some(other), None) => {
                        problems.add(
                            key("action"),
                            format!("{other:?} is not an action; the only one is \"drop\""),
                        );
                        None
                    }
                    (None, None, None) => {
                        problems.add(
                            key("upstream"),
                            "missing: a rule needs `upstream`, `stream` or `action = \"drop\"`",
                        );
                        None
                    }
                    _ => {
                        problems.add(
                            key("action"),
                            "a rule has one of `upstream`, `stream` or `action = \"drop\"`, \
                             not several",
                        );
                        None
                    }
                };
                if let Some(action) = action {
                    rules.push(Rule {
                        events: rule.events.iter().map(|e| Glob::new(e)).collect(),
                        action,
                    });
                }
            }
            Some(Rules(rules))
        }
        (Some(_), Some(_)) => {
            problems.add(
                at("upstream"),
                "a route has either `upstream` or `rules`, not both",
            );
            None
        }
        (None, None) => {
            problems.add(
                at("upstream"),
                "missing: a route needs `upstream` or `rules`",
            );
            None
        }
    };

    let upstream_timeout = match raw.upstream_timeout {
        Some(text) => duration(problems, &at("upstream_timeout"), &text),
        None => default_timeout,
    };
    let upstream_deadline = match raw.upstream_deadline {
        Some(text) => duration(problems, &at("upstream_deadline"), &text),
        None => default_deadline,
    };
    if let (Some(timeout), Some(deadline)) = (upstream_timeout, upstream_deadline) {
        if deadline < timeout {
            problems.add(
                at("upstream_deadline"),
                format!(
                    "{} is shorter than upstream_timeout ({}): a forward would be \
                     abandoned while its sender still waits",
                    humantime::format_duration(deadline),
                    humantime::format_duration(timeout)
                ),
            );
        }
    }
    let max_in_flight = match raw.max_in_flight {
        Some(n) => at_least_one(problems, &at("max_in_flight"), n as u64) as usize,
        None => defaults::MAX_IN_FLIGHT,
    };
    let ca_file = raw.ca_file.map(|p| base_dir.join(p));
    if let Some(ca) = &ca_file {
        if let Err(err) = crate::tls::load_roots(ca) {
            problems.add(at("ca_file"), err.to_string());
        }
    }

    if problems.0.len() > start {
        return None;
    }
    Some(Route {
        name,
        path,
        secrets: sources,
        verifier: Verifier::new(keys, tolerance_secs),
        rules: rules?,
        upstream_timeout: upstream_timeout?,
        upstream_deadline: upstream_deadline?,
        max_in_flight,
        ca_file,
    })
}
