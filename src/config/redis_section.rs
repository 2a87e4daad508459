//! The `[redis]` section: exactly one of `url` (one primary), `sentinels` + `master` (the
//! primary asked of Sentinel) and `cluster` (a Redis Cluster's seed nodes), the data
//! nodes' ACL user, the sentinels' password, TLS, and what every mode shares (key prefix,
//! timeout, stream length). Checked once at load, every mistake under its key; and, in
//! cluster mode, the stream rules whose append and dedup key must share a hash slot.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawRedis;
use super::value::{at_least_one, duration};
use super::{defaults, Problems, Route, StoreKind};
use crate::chain::chain;
use crate::redis::keys;
use crate::route::Action;
use crate::secret::SecretSource;

/// The `[redis]` section. Passwords (and a URL that may hold one) show in `Debug` only as
/// their source.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// How the node that takes writes is found.
    pub mode: RedisMode,
    /// With `sentinels` or `cluster`: the data nodes' ACL user (a `url` carries its own).
    pub username: Option<String>,
    /// With `sentinels` or `cluster`: the data nodes' password.
    pub password: Option<Resolved>,
    /// With `sentinels`: the sentinels' own password (`requirepass` on the sentinels).
    pub sentinel_password: Option<Resolved>,
    /// With `sentinels` or `cluster`: TLS to every node (`rediss://` says it for `url`).
    pub tls: bool,
    pub key_prefix: String,
    pub timeout: Duration,
    pub stream_max_len: u64,
    /// With TLS: a PEM bundle of the CAs that vouch for the servers, instead of the
    /// system's roots (a private CA, as managed Redis services often use), and its bytes
    /// as read at load.
    pub ca_file: Option<(PathBuf, Vec<u8>)>,
}

/// Where the primary is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisMode {
    /// One primary, named by a URL (`redis://` or `rediss://`, credentials in it).
    Url {
        /// Where the URL came from (`env:`, `file:`, or literal), for `check` and logs.
        source: SecretSource,
        /// The URL, resolved.
        url: String,
    },
    /// The primary that the sentinels watching `master` name, asked again whenever a
    /// link is made, after a READONLY answer and after an error.
    Sentinel {
        sentinels: Vec<NodeAddr>,
        master: String,
    },
    /// A Redis Cluster, found from these seed nodes; its slots followed.
    Cluster { nodes: Vec<NodeAddr> },
}

/// A secret's value with where it came from; shown only as its source.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    pub source: SecretSource,
    pub value: String,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)
    }
}

/// `host:port` (`[v6]:port` for an IPv6 address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    /// `host:port`, a port above 0 and a host without spaces; `None` otherwise.
    pub fn parse(text: &str) -> Option<NodeAddr> {
        let (host, port) = text.rsplit_once(':')?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']')?,
            None if host.contains(':') => return None,
            None => host,
        };
        let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
        let visible = !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic());
        visible.then(|| NodeAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("mode", &format_args!("{}", self.describe()))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("sentinel_password", &self.sentinel_password)
            .field("tls", &self.tls)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("stream_max_len", &self.stream_max_len)
            .field("ca_file", &self.ca_file.as_ref().map(|(path, _)| path))
            .finish()
    }
}

impl RedisConfig {
    /// The mode and its nodes for people, never a password: `redis://host:6379/0
    /// (env:REDIS_URL)`, `sentinels a:26379, b:26379 (master mymaster)`, `cluster a:6379, …`.
    pub fn describe(&self) -> String {
        let list = |nodes: &[NodeAddr]| {
            let nodes: Vec<String> = nodes.iter().map(ToString::to_string).collect();
            nodes.join(", ")
        };
        let tls = if self.tls { ", TLS" } else { "" };
        match &self.mode {
            // As before sentinels and cluster: the URL says the mode.
            RedisMode::Url { source, url } => format!("{} ({source})", display_url(url)),
            RedisMode::Sentinel { sentinels, master } => {
                format!("sentinels {} (master {master}{tls})", list(sentinels))
            }
            RedisMode::Cluster { nodes } => format!("cluster {}{}", list(nodes), tls),
        }
    }

    /// Whether keys go to a Redis Cluster (where one step's keys must share a hash slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.mode, RedisMode::Cluster { .. })
    }
}

/// A URL without credentials, for people: `redis://host:6379/0`.
fn display_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => "(invalid)".into(),
    }
}

/// `[redis]`, every problem under its key.
pub(super) fn redis_section(
    raw: RawRedis,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<RedisConfig> {
    let start = problems.0.len();
    let mode = mode(&raw, base_dir, problems);
    let url_tls = matches!(&mode, Some(RedisMode::Url { url, .. }) if url.starts_with("rediss://"));
    let is_url = matches!(mode, Some(RedisMode::Url { .. }));
    let only_with_nodes = "only with sentinels or cluster (a url carries its own)";
    if is_url {
        for (key, given) in [
            ("redis.username", raw.username.is_some()),
            ("redis.password", raw.password.is_some()),
            ("redis.tls", raw.tls.is_some()),
        ] {
            if given {
                problems.add(key, only_with_nodes);
            }
        }
    }
    if raw.sentinel_password.is_some() && raw.sentinels.is_none() {
        problems.add("redis.sentinel_password", "only with sentinels");
    }
    let secret = |key: &str, spec: &Option<String>, problems: &mut Problems| {
        let source = SecretSource::parse(spec.as_deref()?, base_dir);
        match source.resolve() {
            Ok(value) => Some(Resolved { source, value }),
            Err(err) => {
                problems.add(key, format!("{source}: {}", chain(&err)));
                None
            }
        }
    };
    let password = secret("redis.password", &raw.password, problems);
    let sentinel_password = secret("redis.sentinel_password", &raw.sentinel_password, problems);
    if raw.username.as_deref() == Some("") {
        problems.add("redis.username", "empty: leave it out for the default user");
    }
    let tls = raw.tls.unwrap_or(false);
    let prefix = raw.key_prefix;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        problems.add(
            "redis.key_prefix",
            format!("{prefix:?} must be non-empty visible ASCII without spaces"),
        );
    } else if raw.cluster.is_some() && prefix.contains(['{', '}']) {
        problems.add(
            "redis.key_prefix",
            format!(
                "{prefix:?}: with cluster, no {{ or }} (they would choose the keys' hash slot)"
            ),
        );
    }
    let timeout = duration(problems, "redis.timeout", &raw.timeout);
    let stream_max_len = at_least_one(problems, "redis.stream_max_len", raw.stream_max_len);
    let ca_file = raw
        .ca_file
        .and_then(|path| ca_file(&base_dir.join(path), url_tls || tls, is_url, problems));
    if problems.0.len() > start {
        return None;
    }
    Some(RedisConfig {
        mode: mode?,
        username: raw.username,
        password,
        sentinel_password,
        tls,
        key_prefix: prefix,
        timeout: timeout?,
        stream_max_len,
        ca_file,
    })
}

/// Exactly one of `url`, `sentinels` (with `master`), `cluster`; none is the default URL.
fn mode(raw: &RawRedis, base_dir: &Path, problems: &mut Problems) -> Option<RedisMode> {
    let given: Vec<&str> = [
        ("url", raw.url.is_some()),
        ("sentinels", raw.sentinels.is_some()),
        ("cluster", raw.cluster.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    if given.len() > 1 {
        problems.add(
            "redis",
            format!(
                "{} given: exactly one of url, sentinels, cluster",
                given.join(" and ")
            ),
        );
        return None;
    }
    if raw.master.is_some() && raw.sentinels.is_none() {
        problems.add("redis.master", "only with sentinels");
    }
    if let Some(sentinels) = &raw.sentinels {
        let sentinels = nodes(problems, "redis.sentinels", sentinels);
        let master = match raw.master.as_deref() {
            None => {
                problems.add(
                    "redis.master",
                    "needed with sentinels: the name they watch (e.g. \"mymaster\")",
                );
                None
            }
            Some(name) if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) => {
                problems.add(
                    "redis.master",
                    format!("{name:?} must be non-empty visible ASCII"),
                );
                None
            }
            Some(name) => Some(name.to_owned()),
        };
        return Some(RedisMode::Sentinel {
            sentinels: sentinels?,
            master: master?,
        });
    }
    if let Some(cluster) = &raw.cluster {
        let nodes = nodes(problems, "redis.cluster", cluster)?;
        return Some(RedisMode::Cluster { nodes });
    }
    let spec = raw.url.as_deref().unwrap_or(defaults::REDIS_URL);
    let source = SecretSource::parse(spec, base_dir);
    match source.resolve() {
        Ok(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
            problems.add(
                "redis.url",
                format!("{source}: not a redis:// or rediss:// URL"),
            );
            None
        }
        Ok(url) => match redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            Ok(_) => Some(RedisMode::Url { source, url }),
            Err(err) => {
                // The error names what is wrong, never the URL (it may hold a password).
                problems.add(
                    "redis.url",
                    format!("{source}: not a usable Redis URL ({})", err.category()),
                );
                None
            }
        },
        Err(err) => {
            problems.add("redis.url", format!("{source}: {}", chain(&err)));
            None
        }
    }
}

/// A non-empty list of `host:port`, each mistake under `key[i]`.
fn nodes(problems: &mut Problems, key: &str, list: &[String]) -> Option<Vec<NodeAddr>> {
    if list.is_empty() {
        problems.add(key, "empty: name at least one host:port");
        return None;
    }
    let mut nodes = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        match NodeAddr::parse(text) {
            Some(node) => nodes.push(node),
            None => problems.add(format!("{key}[{i}]"), format!("{text:?} is not host:port")),
        }
    }
    (nodes.len() == list.len()).then_some(nodes)
}

/// `ca_file`: only with TLS; parsed as the upstreams' bundles are, so a bad file is named
/// here, not at connect.
fn ca_file(
    path: &Path,
    tls: bool,
    is_url: bool,
    problems: &mut Problems,
) -> Option<(PathBuf, Vec<u8>)> {
    if !tls {
        let needs = match is_url {
            true => "needs a rediss:// URL (TLS)",
            false => "needs tls = true",
        };
        problems.add("redis.ca_file", needs);
        return None;
    }
    let checked = crate::tls::load_roots(path)
        .map_err(|err| chain(&err))
        .and_then(|_| std::fs::read(path).map_err(|err| format!("{}: {err}", path.display())));
    match checked {
        Ok(pem) => Some((path.to_owned(), pem)),
        Err(err) => {
            problems.add("redis.ca_file", err);
            None
        }
    }
}

/// In cluster mode with `store = "redis"`, a stream rule's append and its route's dedup
/// key are one script, so the stream must be in the hash slot of the route's keys (which
/// carry the route as their hash tag): else Redis would answer CROSSSLOT to every append.
pub(super) fn cluster_streams(
    redis: Option<&RedisConfig>,
    store: Option<StoreKind>,
    routes: &[Route],
    problems: &mut Problems,
) {
    let Some(redis) = redis.filter(|r| r.is_cluster() && store == Some(StoreKind::Redis)) else {
        return;
    };
    for (i, route) in routes.iter().enumerate() {
        let key = keys::dedup_key(&redis.key_prefix, true, &route.name, "");
        let slot = keys::slot(&key);
        for (j, rule) in route.rules.0.iter().enumerate() {
            let Action::Stream(stream) = &rule.action else {
                continue;
            };
            if keys::slot(stream) != slot {
                problems.add(
                    format!("routes[{i}].rules[{j}].stream"),
                    format!(
                        "{stream:?} is in another hash slot than the route's dedup keys \
                         ({key}…): with [redis] cluster and store = \"redis\", name the stream \
                         with the route's hash tag, e.g. \"{{{}}}:{stream}\"",
                        route.name
                    ),
                );
            }
        }
    }
}
