//! The configuration: figment reads defaults, then the TOML file, then `HOOKWALL_`
//! environment overrides; the result is turned once into typed values (durations, socket
//! addresses, URIs, decoded keys, compiled rules). Every problem is collected and reported
//! together, each as `FILE: KEY: message`, so one run of `hookwall check` lists them all.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::route::{Action, Glob, Rule, Rules, Upstream};
use crate::secret::{Key, SecretSource};
use crate::verify::{Verifier, VerifyKey};

/// The defaults, each with its reason.
pub mod defaults {
    /// Every interface: in a pod, the sender reaches the sidecar through the pod IP.
    pub const LISTEN_ADDR: &str = "0.0.0.0:8080";
    /// Every interface, so the kubelet's probes and Prometheus reach it.
    pub const ADMIN_ADDR: &str = "0.0.0.0:9090";
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
    /// Svix waits about 15 s for an answer; answering 504 before that lets it retry cleanly.
    pub const UPSTREAM_TIMEOUT: &str = "10s";
    /// Under Kubernetes' default 30 s termination grace, leaving time to exit.
    pub const SHUTDOWN_GRACE: &str = "25s";
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
    pub const LOG_FORMAT: &str = "text";
    pub const LOG_LEVEL: &str = "info";
}

/// The environment variables read besides the overrides.
pub const CONFIG_ENV: &str = "HOOKWALL_CONFIG";
pub const LOG_ENV: &str = "HOOKWALL_LOG";
const ENV_PREFIX: &str = "HOOKWALL_";

// ---------------------------------------------------------------------------------------
// What the file says (serde), before it is checked.

#[derive(Debug, Default)]
struct RawConfig {
    listen: RawListen,
    admin: RawAdmin,
    limits: RawLimits,
    verify: RawVerify,
    dedup: RawDedup,
    log: RawLog,
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawListen {
    addr: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    trust_forwarded_headers: bool,
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
struct RawAdmin {
    addr: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            addr: defaults::ADMIN_ADDR.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawLimits {
    max_body_bytes: u64,
    max_headers: usize,
    max_header_bytes: usize,
    header_read_timeout: String,
    body_read_timeout: String,
    max_connections: usize,
    h2_max_concurrent_streams: u32,
    upstream_timeout: String,
    shutdown_grace: String,
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
            shutdown_grace: defaults::SHUTDOWN_GRACE.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawVerify {
    tolerance: String,
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
struct RawDedup {
    capacity: usize,
    ttl: Option<String>,
}

impl Default for RawDedup {
    fn default() -> Self {
        RawDedup {
            capacity: defaults::DEDUP_CAPACITY,
            ttl: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawLog {
    format: String,
    level: String,
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
struct RawRoute {
    name: Option<String>,
    path: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
    upstream: Option<String>,
    upstream_timeout: Option<String>,
    max_in_flight: Option<usize>,
    ca_file: Option<PathBuf>,
    rules: Option<Vec<RawRule>>,
}

#[derive(Debug, Deserialize)]
struct RawRule {
    #[serde(default)]
    events: Vec<String>,
    upstream: Option<String>,
    action: Option<String>,
}

// ---------------------------------------------------------------------------------------
// What the proxy runs with.

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    pub listen: Listen,
    pub admin_addr: SocketAddr,
    pub limits: Limits,
    pub tolerance: Duration,
    pub dedup: DedupConfig,
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
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    pub capacity: usize,
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
    pub verifier: Verifier,
    pub rules: Rules,
    pub upstream_timeout: Duration,
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
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
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
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == CONFIG_ENV || name == LOG_ENV {
                continue;
            }
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
        let raw = (|| {
            Some(RawConfig {
                listen: reader.section("listen")?,
                admin: reader.section("admin")?,
                limits: reader.section("limits")?,
                verify: reader.section("verify")?,
                dedup: reader.section("dedup")?,
                log: reader.section("log")?,
                routes: reader.section("routes")?,
            })
        })();
        // Read every section even after a failure, so all their problems are listed.
        let raw = match raw {
            Some(raw) => raw,
            None => {
                let _: Option<RawListen> = reader.section("listen");
                let _: Option<RawAdmin> = reader.section("admin");
                let _: Option<RawLimits> = reader.section("limits");
                let _: Option<RawVerify> = reader.section("verify");
                let _: Option<RawDedup> = reader.section("dedup");
                let _: Option<RawLog> = reader.section("log");
                let _: Option<Vec<RawRoute>> = reader.section("routes");
                return Err(fail(dedup_problems(problems.0)));
            }
        };
        let base_dir = file.parent().unwrap_or(Path::new("."));
        let config = build(raw, file, base_dir, &mut problems);
        match config {
            Some(config) if problems.0.is_empty() => Ok(config),
            _ => Err(fail(problems.0)),
        }
    }
}

const SECTIONS: [&str; 7] = [
    "listen", "admin", "limits", "verify", "dedup", "log", "routes",
];

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

/// The second pass over sections after a failure repeats the first one's findings.
fn dedup_problems(problems: Vec<Problem>) -> Vec<Problem> {
    let mut seen = HashSet::new();
    problems
        .into_iter()
        .filter(|p| seen.insert((p.key.clone(), p.message.clone())))
        .collect()
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
    let uri: http::Uri = match text.parse() {
        Ok(uri) => uri,
        Err(err) => {
            problems.add(key, format!("{text:?} is not a URL: {err}"));
            return None;
        }
    };
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    if !scheme_ok || uri.authority().is_none() {
        problems.add(key, format!("{text:?} is not an http(s) URL"));
        return None;
    }
    Some(Upstream { uri })
}

fn build(raw: RawConfig, file: &Path, base_dir: &Path, problems: &mut Problems) -> Option<Config> {
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
    let shutdown_grace = duration(problems, "limits.shutdown_grace", &l.shutdown_grace);

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
            upstream_timeout,
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
            shutdown_grace: shutdown_grace?,
        },
        tolerance: tolerance?,
        dedup: DedupConfig {
            capacity,
            ttl: ttl?,
        },
        log: LogConfig {
            format: format?,
            level: raw.log.level,
        },
        routes,
    })
}

fn build_route(
    raw: RawRoute,
    i: usize,
    base_dir: &Path,
    tolerance_secs: u64,
    default_timeout: Option<Duration>,
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
                action: Action::Forward(up),
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
                let action = match (rule.upstream, rule.action.as_deref()) {
                    (Some(url), None) => {
                        upstream(problems, &key("upstream"), &url).map(Action::Forward)
                    }
                    (None, Some("drop")) => Some(Action::Drop),
                    (None, Some(other)) => {
                        problems.add(
                            key("action"),
                            format!("{other:?} is not an action; the only one is \"drop\""),
                        );
                        None
                    }
                    (Some(_), Some(_)) => {
                        problems.add(
                            key("action"),
                            "a rule has either `upstream` or `action = \"drop\"`, not both",
                        );
                        None
                    }
                    (None, None) => {
                        problems.add(
                            key("upstream"),
                            "missing: a rule needs `upstream` or `action = \"drop\"`",
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
        max_in_flight,
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookwall.toml");
        std::fs::write(&file, text).unwrap();
        std::fs::write(dir.path().join("current"), format!("{SECRET}\n")).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with_env(&file, &env)
    }

    fn problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
        let err = load(text, env).expect_err("config should be invalid");
        err.problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect()
    }

    fn minimal() -> String {
        format!(
            "[[routes]]\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"http://127.0.0.1:3000/x\"\n"
        )
    }

    #[test]
    fn defaults_fill_everything_but_routes() {
        let config = load(&minimal(), &[]).unwrap();
        assert_eq!(config.listen.addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.admin_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(config.limits.max_body_bytes, 1024 * 1024);
        assert_eq!(config.tolerance, Duration::from_secs(300));
        assert_eq!(config.dedup.ttl, Duration::from_secs(900));
        assert_eq!(config.routes[0].name.as_ref(), "/hook");
        assert_eq!(config.routes[0].upstream_timeout, Duration::from_secs(10));
        assert_eq!(config.routes[0].max_in_flight, defaults::MAX_IN_FLIGHT);
    }

    #[test]
    fn default_ttl_is_three_tolerances_when_longer() {
        let text = format!("[verify]\ntolerance = \"10m\"\n{}", minimal());
        assert_eq!(
            load(&text, &[]).unwrap().dedup.ttl,
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn four_problems_at_once_each_with_its_key() {
        let text = r#"
[listen]
adress = "0.0.0.0:8080"

[[routes]]
path = "/a"
secrets = ["env:HOOKWALL_TEST_UNSET_SECRET"]
upstream = "ftp://x"

[[routes]]
path = "/a"
secrets = ["file:current"]
upstream = "http://127.0.0.1:3000/"
"#;
        let found = problems(text, &[]);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found.contains(&"listen.adress: unknown key".to_string()),
            "{found:#?}"
        );
        assert!(found.contains(
            &"routes[0].secrets[0]: env:HOOKWALL_TEST_UNSET_SECRET: environment variable HOOKWALL_TEST_UNSET_SECRET is not set".to_string()
        ), "{found:#?}");
        assert!(
            found.contains(&"routes[0].upstream: \"ftp://x\" is not an http(s) URL".to_string())
        );
        assert!(found.contains(&"routes[1].path: \"/a\" is used by an earlier route".to_string()));
    }

    #[test]
    fn display_is_file_key_message() {
        let err = load("[[routes]]\npath = \"/a\"\n", &[]).unwrap_err();
        let text = err.to_string();
        for line in text.lines() {
            assert!(line.contains("hookwall.toml: routes[0]."), "{line}");
        }
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn every_rule_of_validation() {
        let cases: &[(&str, &str)] = &[
            ("", "routes: no routes"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"whsec_\"]\nupstream=\"http://h/\"", "routes[0].secrets[0]: literal: secret is empty"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"no base64!\"]\nupstream=\"http://h/\"", "routes[0].secrets[0]: literal: secret is not base64"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[]\nupstream=\"http://h/\"", "routes[0].secrets: missing"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]", "routes[0].upstream: missing"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"\n[[routes.rules]]\nevents=[\"*\"]\naction=\"drop\"", "routes[0].upstream: a route has either"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\n[[routes.rules]]\nevents=[]\naction=\"drop\"", "routes[0].rules[0].events: is empty"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\n[[routes.rules]]\nevents=[\"*\"]", "routes[0].rules[0].upstream: missing"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\n[[routes.rules]]\nevents=[\"*\"]\naction=\"drop\"\nupstream=\"http://h/\"", "routes[0].rules[0].action: a rule has either"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\n[[routes.rules]]\nevents=[\"*\"]\naction=\"keep\"", "routes[0].rules[0].action: \"keep\" is not an action"),
            ("[[routes]]\nname=\"_unmatched\"\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "routes[0].name: \"_unmatched\" is reserved"),
            ("[[routes]]\nname=\"x\"\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"\n[[routes]]\nname=\"x\"\npath=\"/b\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "routes[1].name: \"x\" is used by an earlier route"),
            ("[[routes]]\npath=\"a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "routes[0].path: \"a\" must start with"),
            ("[dedup]\nttl=\"1m\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "dedup.ttl: \"1m\" is shorter than verify.tolerance"),
            ("[dedup]\ncapacity=0\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "dedup.capacity: 0 must be at least 1"),
            ("[limits]\nmax_body_bytes=0\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "limits.max_body_bytes: 0 must be at least 1"),
            ("[limits]\nbody_read_timeout=\"0s\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "limits.body_read_timeout: \"0s\" must be longer than zero"),
            ("[limits]\nshutdown_grace=\"soon\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "limits.shutdown_grace: \"soon\" is not a duration"),
            ("[log]\nformat=\"xml\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "log.format: \"xml\" is neither"),
            ("[log]\nlevel=\"=[\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "log.level: invalid log filter"),
            ("[listen]\naddr=\"nowhere\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "listen.addr: \"nowhere\" is not an address"),
            ("[listen]\ntls_cert=\"c.pem\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "listen.tls_key: missing"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"\nca_file=\"nope.pem\"", "routes[0].ca_file: cannot read"),
            ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"\nmax_in_flight=0", "routes[0].max_in_flight: 0 must be at least 1"),
            ("[limits]\nmax_headers=\"many\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "limits.max_headers: invalid type"),
            ("this is not toml", ""),
        ];
        for (text, expected) in cases {
            let text = text.replace("\"S\"", &format!("\"{SECRET}\""));
            let found = problems(&text, &[]);
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{text}\nexpected {expected:?} in {found:#?}"
            );
        }
    }

    #[test]
    fn file_secrets_are_read_relative_to_the_config_and_trimmed() {
        let text = minimal().replace(SECRET, "file:current");
        let config = load(&text, &[]).unwrap();
        assert!(config.routes[0].secrets[0]
            .to_string()
            .ends_with("/current"));
    }

    #[test]
    fn environment_overrides_and_their_errors() {
        let config = load(
            &minimal(),
            &[
                ("HOOKWALL_LISTEN__ADDR", "127.0.0.1:18080"),
                ("HOOKWALL_LIMITS__MAX_BODY_BYTES", "2048"),
                ("HOOKWALL_DEDUP__TTL", "1h"),
                ("HOOKWALL_CONFIG", "ignored.toml"),
                ("HOOKWALL_LOG", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.addr.to_string(), "127.0.0.1:18080");
        assert_eq!(config.limits.max_body_bytes, 2048);
        assert_eq!(config.dedup.ttl, Duration::from_secs(3600));

        let found = problems(
            &minimal(),
            &[
                ("HOOKWALL_LISTEN__ADRESS", "x"),
                ("HOOKWALL_ROUTES", "[]"),
                ("HOOKWALL_LOG", "=["),
                ("HOOKWALL_LIMITS__MAX_HEADERS", "lots"),
            ],
        );
        assert!(
            found.contains(&"HOOKWALL_LISTEN__ADRESS: names no configuration key".into()),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("HOOKWALL_ROUTES: routes cannot")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("HOOKWALL_LOG: invalid log filter")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("HOOKWALL_LIMITS__MAX_HEADERS: invalid type")),
            "{found:#?}"
        );
    }

    #[test]
    fn missing_file_is_an_error_not_an_empty_config() {
        let err = Config::load_with_env(Path::new("/nonexistent/hookwall.toml"), &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/hookwall.toml: cannot read"),
            "{err}"
        );
    }
}
