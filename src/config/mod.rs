//! The configuration: figment reads defaults, then the TOML file, then `HOOKWALL_`
//! environment overrides; the result is turned once into typed values (durations, socket
//! addresses, URIs, decoded keys, compiled rules). Every problem is collected and reported
//! together, each as `FILE: KEY: message`, so one run of `hookwall check` lists them all.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;

use crate::route::Rules;
use crate::secret::SecretSource;
use crate::verify::Scheme;
use build::build;
use raw::{
    RawAdmin, RawConfig, RawDedup, RawLimits, RawListen, RawLog, RawRedis, RawRoute, RawTelemetry,
    RawVerify,
};
pub use redis_section::{NodeAddr, RedisConfig, RedisMode, Resolved};

/// The defaults, each with its reason.
pub mod defaults {
    /// Every interface: in a pod, the sender reaches the sidecar through the pod IP.
    pub const LISTEN_ADDR: &str = "0.0.0.0:8080";
    /// Every interface, so the kubelet's probes and Prometheus reach it.
    pub const ADMIN_ADDR: &str = "0.0.0.0:9090";
    /// The last 1,000 requests: an incident's minutes at a few req/s, ~0.5 MB.
    pub const RECENT_DELIVERIES: usize = 1000;
    /// The most `admin.recent_deliveries` may be: the slots are reserved at start (about
    /// 130 bytes each, and up to ~600 more for the strings a full entry holds: ~70 MB at
    /// worst), and `/deliveries` reads the ring under the lock each request takes.
    pub const MAX_RECENT_DELIVERIES: usize = 100_000;
    /// What traces name this service, unless `OTEL_SERVICE_NAME` says otherwise.
    pub const SERVICE_NAME: &str = "hookwall";
    /// 1 MiB: Svix payloads are capped well below this; larger is abuse.
    pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
    /// Senders send about 15 headers; 100 is hyper's own default.
    pub const MAX_HEADERS: usize = 100;
    /// 32 KiB of headers is far past any legitimate webhook.
    pub const MAX_HEADER_BYTES: usize = 32 * 1024;
    /// Slow senders (slowloris) are cut off after this.
    pub const HEADER_READ_TIMEOUT: &str = "10s";
    /// A 1 MiB body arrives in well under this on any real link.
    pub const BODY_READ_TIMEOUT: &str = "30s";
    /// Bounds memory and file descriptors; Svix opens few connections per endpoint.
    pub const MAX_CONNECTIONS: usize = 1024;
    /// HTTP/2 streams per connection, hyper's usual bound.
    pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
    /// How long the sender waits for the upstream: below hosted Svix's 15 s and the
    /// open-source server's 30 s, so the sender gets hookwall's 504 rather than its own
    /// timeout. The forward itself goes on (`UPSTREAM_DEADLINE`).
    pub const UPSTREAM_TIMEOUT: &str = "10s";
    /// How long a forward may run in all before it is abandoned and its id released: a
    /// slow backend is usually still working, and cancelling does not undo its work.
    pub const UPSTREAM_DEADLINE: &str = "5m";
    /// After SIGTERM, new connections are still served this long: Kubernetes removes the
    /// pod from its Service's endpoints a moment after it signals, and the distroless image
    /// has no `sleep` for a preStop hook.
    pub const SHUTDOWN_DELAY: &str = "5s";
    /// With the delay, under the example's 40 s termination grace, leaving time to exit.
    pub const SHUTDOWN_GRACE: &str = "25s";
    /// A connection with no request in progress is closed after this: a sender that
    /// proves nothing must not hold a connection slot for ever.
    pub const IDLE_TIMEOUT: &str = "60s";
    /// 64 MiB of request bodies being read, all connections together: with the rest of
    /// the process (~30 MB) under the example pod's 128 MiB limit, whatever anonymous
    /// senders do.
    pub const MAX_BUFFERED_BYTES: u64 = 64 * 1024 * 1024;
    /// 64 KiB a second after a first second: a 1 MiB body in 17 s on the slowest link a
    /// sender should have, while a stranger trickling bytes is cut off within seconds.
    pub const MIN_BODY_RATE: u64 = 64 * 1024;
    /// Connecting (TCP and TLS) to an upstream in the same pod or cluster takes
    /// milliseconds; past this it is down, and the sender is told at once (502) rather
    /// than at `upstream_timeout`.
    pub const CONNECT_TIMEOUT: &str = "3s";
    /// Request threads when the container has no CPU quota: a sidecar shares its node, and
    /// one thread per node core (64 on a big node) only costs memory and upstream pools.
    pub const WORKERS_WITHOUT_QUOTA: usize = 2;
    /// The window every official Svix library uses.
    pub const TOLERANCE: &str = "5m";
    /// ~100 bytes an id: 100,000 ids stay around 10-20 MB.
    pub const DEDUP_CAPACITY: usize = 100_000;
    /// Delivered ids are remembered at least this long (or 3 x tolerance if longer):
    /// a retry arrives with a fresh timestamp, so the window is not the bound.
    pub const DEDUP_TTL_FLOOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);
    /// Concurrent forwards per route: bounds what a burst can pile onto a backend. As many
    /// as the default connection cap, so only a route configured lower refuses a burst.
    pub const MAX_IN_FLIGHT: usize = 1024;
    /// A Redis on the pod's loopback (a sidecar) or named by the operator.
    pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
    /// Keys are `{prefix}:dedup:{route}:{id}`: one Redis may serve several deployments.
    pub const REDIS_KEY_PREFIX: &str = "hookwall";
    /// A Redis command in-cluster takes well under a millisecond; past this the store
    /// counts as unreachable and the failure policy answers (the sender is waiting).
    pub const REDIS_TIMEOUT: &str = "250ms";
    /// About 1,000,000 queued events of ~3 KB: ~3 GB, the bound of a stream's memory.
    pub const REDIS_STREAM_MAX_LEN: u64 = 1_000_000;
    pub const LOG_FORMAT: &str = "text";
    pub const LOG_LEVEL: &str = "info";
}

/// The environment variables read besides the overrides.
pub const CONFIG_ENV: &str = "HOOKWALL_CONFIG";
pub const LOG_ENV: &str = "HOOKWALL_LOG";
const ENV_PREFIX: &str = "HOOKWALL_";

mod build;
mod raw;
mod redis_section;
#[cfg(test)]
mod redis_tests;
mod route;
mod scheme;
#[cfg(test)]
mod tests;
mod value;

// ---------------------------------------------------------------------------------------
// What the proxy runs with.

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    pub listen: Listen,
    pub admin_addr: SocketAddr,
    /// `admin.token`, resolved: enables `POST /dedup/forget` (contract §12).
    pub admin_token: Option<AdminToken>,
    /// `admin.recent_deliveries`: the ring behind `/deliveries` and `/` (0: off).
    pub recent_deliveries: usize,
    /// `[telemetry]`: where traces go, if anywhere (the `OTEL_*` variables win).
    pub telemetry: Telemetry,
    pub limits: Limits,
    pub tolerance: Duration,
    pub dedup: DedupConfig,
    /// The `[redis]` section, if any (needed by `store = "redis"`).
    pub redis: Option<RedisConfig>,
    pub log: LogConfig,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: Option<Tls>,
    pub trust_forwarded_headers: bool,
}

/// The listener's TLS files and what was read from them at load.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    /// After SIGTERM, how long new connections are still served (zero: none).
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    pub idle_timeout: Duration,
    pub max_buffered_bytes: u64,
    /// Bytes a second a body must keep up after its first second (0: no minimum).
    pub min_body_rate: u64,
    /// Request threads: `limits.workers`, else the CPU quota rounded up, else 2.
    pub workers: usize,
}

impl Limits {
    /// The most an HTTP/1 connection's read buffer holds: a head just past
    /// `max_header_bytes` still reaches the pipeline (and is answered and counted there).
    pub fn read_buffer_bytes(&self) -> usize {
        (self.max_header_bytes + 8192).max(16 * 1024)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    pub capacity: usize,
    pub ttl: Duration,
    pub store: StoreKind,
    pub on_store_error: OnStoreError,
}

/// Where the ids live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// This process's memory (one pod).
    Memory,
    /// Redis or Valkey, shared by every replica (this process's memory caches delivered
    /// ids in front of it).
    Redis,
}

/// What decides while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// 503 `store_unavailable`: the sender retries later; nothing is forwarded.
    Refuse,
    /// This process's own memory decides (counted in `hookwall_dedup_fallbacks_total`).
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The admin side's bearer token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// `[telemetry]` as the file says it; `telemetry::init` lets the `OTEL_*` variables win.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// OTLP/HTTP base URL: spans go to `{endpoint}/v1/traces`. `None`: no exporter.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// Of the traces started here, in [0, 1]; a sender's sampled flag is followed.
    pub sample_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter; `HOOKWALL_LOG` wins over it.
    pub level: String,
}

/// One `[[routes]]` entry, ready to serve.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    pub path: String,
    /// Where each secret came from, for `check` and logs (never the value).
    pub secrets: Vec<SecretSource>,
    /// How its senders sign (`provider`).
    pub scheme: Scheme,
    /// `false`: shadow mode (contract §11): every request is forwarded to the upstream,
    /// with the verdict enforcing would have given.
    pub enforce: bool,
    pub rules: Rules,
    /// How long the sender waits for the upstream's answer.
    pub upstream_timeout: Duration,
    /// How long the forward may go on in all before it is abandoned.
    pub upstream_deadline: Duration,
    /// How long connecting (TCP, TLS, the HTTP handshake) may take; never longer than
    /// `upstream_timeout`.
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    /// PEM bundle for https upstreams; `None` = the system's roots.
    pub ca_file: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------
// Errors.

/// One problem: the key it is about (empty for the file as a whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Every problem found in one config, for one file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    /// One problem a line: `FILE: KEY: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: ", self.file.display())?;
            if !problem.key.is_empty() {
                write!(f, "{}: ", problem.key)?;
            }
            f.write_str(&problem.message)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    /// Whether a problem about `section` (or a key in it) was already found.
    pub(super) fn has(&self, section: &str) -> bool {
        self.0.iter().any(|p| {
            p.key == section
                || p.key.starts_with(&format!("{section}."))
                || p.key
                    .starts_with(&format!("HOOKWALL_{}__", section.to_ascii_uppercase()))
        })
    }

    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------
// Loading.

impl Config {
    /// Reads `file`, applies `HOOKWALL_` overrides from the process environment, resolves
    /// every secret and checks everything, reporting all problems at once.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        Self::load_with_env(file, &env)
    }

    /// `load`, with the `HOOKWALL_` variables given (so tests need not touch the process
    /// environment). Secrets named `env:` still come from the process environment.
    pub fn load_with_env(file: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        // figment's Toml::file gives an empty config for a missing file: read it ourselves.
        let text = std::fs::read_to_string(file).map_err(|err| ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                key: String::new(),
                message: format!("cannot read the config file: {err}"),
            }],
        })?;
        Self::parse(&text, file, env)
    }

    /// Checks config `text` as if read from `file` (which names it in errors and is where
    /// relative paths start). The demo's built-in config comes this way.
    pub fn parse(text: &str, file: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<Problem>| ConfigError {
            file: file.to_owned(),
            problems,
        };
        let mut problems = Problems::default();

        let mut overrides = Vec::new();
        for (name, value) in env {
            let Some(rest) = override_key(name) else {
                continue;
            };
            if rest.to_ascii_lowercase().starts_with("routes") {
                problems.add(name, "routes cannot be overridden from the environment");
                continue;
            }
            overrides.push((name.clone(), value.clone()));
        }
        if let Some((_, filter)) = env.iter().find(|(name, _)| name == LOG_ENV) {
            if let Err(err) = check_filter(filter) {
                problems.add(LOG_ENV, format!("invalid log filter {filter:?}: {err}"));
            }
        }

        let figment = Figment::new()
            .merge(Toml::string(text))
            .merge(EnvOverrides(overrides));

        // Each section is read on its own, and unknown keys are collected rather than
        // fatal, so a type error in one section hides nothing in another.
        let tree = match figment.extract::<figment::value::Dict>() {
            Ok(tree) => tree,
            Err(err) => {
                add_figment_error(&mut problems, err);
                return Err(fail(problems.0));
            }
        };
        let mut reader = SectionReader {
            figment: &figment,
            tree: &tree,
            env,
            problems: &mut problems,
        };
        for key in tree.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                reader.unknown(key.clone());
            }
        }
        // Every section is read once, whatever the others hold, so all their problems
        // are listed together.
        let sections = (
            reader.section::<RawListen>("listen"),
            reader.section::<RawAdmin>("admin"),
            reader.section::<RawLimits>("limits"),
            reader.section::<RawVerify>("verify"),
            reader.section::<RawDedup>("dedup"),
            reader.section::<Option<RawRedis>>("redis"),
            reader.section::<RawLog>("log"),
            reader.section::<RawTelemetry>("telemetry"),
            reader.section::<Vec<RawRoute>>("routes"),
        );
        let (
            Some(listen),
            Some(admin),
            Some(limits),
            Some(verify),
            Some(dedup),
            Some(redis),
            Some(log),
            Some(telemetry),
            Some(routes),
        ) = sections
        else {
            return Err(fail(problems.0));
        };
        let raw = RawConfig {
            listen,
            admin,
            limits,
            verify,
            dedup,
            redis,
            log,
            telemetry,
            routes,
        };
        let base_dir = file.parent().unwrap_or(Path::new("."));
        let config = build(raw, file, base_dir, &mut problems);
        match config {
            Some(config) if problems.0.is_empty() => Ok(config),
            _ => Err(fail(problems.0)),
        }
    }
}

const SECTIONS: [&str; 9] = [
    "listen",
    "admin",
    "limits",
    "verify",
    "dedup",
    "redis",
    "log",
    "telemetry",
    "routes",
];

/// The part after `HOOKWALL_` of an override (`LISTEN__ADDR`), or `None` for a variable
/// that is not one: another prefix, `HOOKWALL_CONFIG`, `HOOKWALL_LOG`, or a `HOOKWALL_`
/// name without the double underscore, such as the `HOOKWALL_SERVICE_HOST` and
/// `HOOKWALL_PORT` that Kubernetes sets for a Service named `hookwall`.
fn override_key(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    (rest.contains("__") && name != CONFIG_ENV && name != LOG_ENV).then_some(rest)
}

/// The `HOOKWALL_` variables in `env` that hookwall does not read (neither overrides nor
/// `HOOKWALL_CONFIG` / `HOOKWALL_LOG`), for `check` to list as a warning.
pub fn unread_env<'a>(env: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    env.into_iter()
        .filter(|name| {
            name.starts_with(ENV_PREFIX)
                && *name != CONFIG_ENV
                && *name != LOG_ENV
                && override_key(name).is_none()
        })
        .collect()
}

/// Reads one top-level section, recording its unknown keys and type errors.
struct SectionReader<'a> {
    figment: &'a Figment,
    tree: &'a figment::value::Dict,
    env: &'a [(String, String)],
    problems: &'a mut Problems,
}

impl SectionReader<'_> {
    fn section<T: serde::de::DeserializeOwned + Default>(&mut self, name: &str) -> Option<T> {
        let Some(value) = self.tree.get(name) else {
            return Some(T::default());
        };
        let mut unknown = Vec::new();
        let result: Result<T, _> =
            serde_ignored::deserialize(value, |path| unknown.push(key_of(&path)));
        for key in unknown {
            let key = if key.starts_with('[') {
                format!("{name}{key}")
            } else {
                format!("{name}.{key}")
            };
            self.unknown(key);
        }
        match result {
            Ok(section) => Some(section),
            Err(err) => {
                // Through figment again for an error that names its key and source.
                match self.figment.extract_inner::<T>(name) {
                    Err(err) => add_figment_error(self.problems, err),
                    Ok(_) => self.problems.add(name, err.to_string()),
                }
                None
            }
        }
    }

    fn unknown(&mut self, key: String) {
        let env_name = env_name_of(&key);
        if self.env.iter().any(|(name, _)| *name == env_name) {
            self.problems.add(env_name, "names no configuration key");
        } else {
            self.problems.add(key, "unknown key");
        }
    }
}

/// `HOOKWALL_LISTEN__ADDR=…` → `listen.addr`, values parsed the way figment parses env.
struct EnvOverrides(Vec<(String, String)>);

impl figment::Provider for EnvOverrides {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("HOOKWALL_ environment variables")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        // The same nested dict `Env::prefixed("HOOKWALL_").split("__")` builds, but from
        // the given list rather than the process environment.
        let mut dict = figment::value::Dict::new();
        for (name, value) in &self.0 {
            let key = name[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            let value: figment::value::Value = value.parse().expect("infallible");
            insert_nested(&mut dict, &key, value);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn insert_nested(dict: &mut figment::value::Dict, key: &str, value: figment::value::Value) {
    match key.split_once('.') {
        None => {
            dict.insert(key.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_owned())
                .or_insert_with(|| figment::value::Value::from(figment::value::Dict::new()));
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}

fn add_figment_error(problems: &mut Problems, err: figment::Error) {
    for err in err {
        // `extract_inner("routes")` puts the section last: ["0", "secrets", "routes"].
        let mut path = err.path.clone();
        if path.len() > 1 && SECTIONS.contains(&path[path.len() - 1].as_str()) {
            path.rotate_right(1);
        }
        let key = path.iter().fold(String::new(), |key, part| {
            if part.bytes().all(|b| b.is_ascii_digit()) {
                format!("{key}[{part}]")
            } else if key.is_empty() {
                part.clone()
            } else {
                format!("{key}.{part}")
            }
        });
        let from_env = err
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment"));
        let key = if from_env { env_name_of(&key) } else { key };
        problems.add(key, err.kind.to_string());
    }
}

/// serde_ignored's path as written in TOML terms: `routes[1].upsteam`.
fn key_of(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        Path::Map { parent, key } => {
            let parent = key_of(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_of(parent),
    }
}

fn env_name_of(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// Checks a tracing filter the way the log setup will parse it.
pub fn check_filter(filter: &str) -> Result<(), tracing_subscriber::filter::ParseError> {
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(|_| ())
}
