//! `hookwall check`: load and validate a config, resolve every secret, print the routing
//! table. Secrets show as their source (`env:NAME`, `file:PATH`, `literal`), never a value.

use std::process::ExitCode;

use super::{code, exit};
use crate::config::{unread_env, Config, OnStoreError, StoreKind};
use crate::route::Action;

/// The routing table, one line per rule, in columns.
pub fn routing_table(config: &Config) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "ROUTE".into(),
        "PATH".into(),
        "PROVIDER".into(),
        "SECRETS".into(),
        "EVENTS".into(),
        "ACTION".into(),
    ]];
    for route in &config.routes {
        let secrets: Vec<String> = route.secrets.iter().map(ToString::to_string).collect();
        let provider = match route.enforce {
            true => route.scheme.provider().to_owned(),
            false => format!("{} (SHADOW: enforce = false)", route.scheme.provider()),
        };
        let mut first = [
            route.name.to_string(),
            route.path.clone(),
            provider,
            secrets.join(", "),
        ];
        let mut lead = |row: &mut Vec<[String; 6]>, events: String, action: String| {
            let [name, path, provider, secrets] = std::mem::take(&mut first);
            row.push([name, path, provider, secrets, events, action]);
        };
        for rule in &route.rules.0 {
            let events: Vec<&str> = rule.events.iter().map(|g| g.as_str()).collect();
            let action = match &rule.action {
                Action::Forward(upstream) if !route.enforce => format!(
                    "forward everything to {upstream}, with hookwall-verdict (protects nothing)"
                ),
                Action::Forward(upstream) => format!(
                    "forward {upstream} (connect {}, timeout {}, deadline {})",
                    humantime::format_duration(route.connect_timeout),
                    humantime::format_duration(route.upstream_timeout),
                    humantime::format_duration(route.upstream_deadline)
                ),
                Action::Stream(stream) => format!("stream {stream} (200 once queued)"),
                Action::Drop => "drop (200)".into(),
            };
            lead(&mut rows, events.join(", "), action);
        }
        let catches_all = route
            .rules
            .0
            .iter()
            .any(|rule| rule.events.iter().any(|g| g.as_str() == "*"));
        if !catches_all {
            lead(&mut rows, "(any other)".into(), "filtered (200)".into());
        }
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn run(file: &std::path::Path) -> ExitCode {
    warn_unread_env();
    match Config::load(file) {
        Ok(config) => {
            println!(
                "{}: valid, {} route(s); listen {}{}, admin {}",
                file.display(),
                config.routes.len(),
                config.listen.addr,
                if config.listen.tls.is_some() {
                    " (TLS)"
                } else {
                    ""
                },
                config.admin_addr
            );
            println!(
                "{} worker(s); on SIGTERM: shutdown_delay {} + shutdown_grace {}",
                config.limits.workers,
                humantime::format_duration(config.limits.shutdown_delay),
                humantime::format_duration(config.limits.shutdown_grace),
            );
            if let Some(redis) = &config.redis {
                // As the config writes them.
                let store = match config.dedup.store {
                    StoreKind::Memory => "memory",
                    StoreKind::Redis => "redis",
                };
                let on_error = match config.dedup.on_store_error {
                    OnStoreError::Refuse => "refuse",
                    OnStoreError::Local => "local",
                };
                println!(
                    "dedup store = \"{store}\"; on_store_error = \"{on_error}\"; redis {}",
                    redis.describe(),
                );
                warn_if_redis_unreachable(redis);
            }
            println!();
            print!("{}", routing_table(&config));
            code(exit::OK)
        }
        Err(err) => {
            eprintln!("{err}");
            eprintln!("{}: {} problem(s)", file.display(), err.problems.len());
            code(exit::CONFIG)
        }
    }
}

/// `HOOKWALL_` variables that are not overrides (no `__`), such as the ones Kubernetes
/// sets for a Service named `hookwall`: not read, listed so a typo is seen.
fn warn_unread_env() {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    for name in unread_env(names.iter().map(String::as_str)) {
        eprintln!(
            "warning: {name} is not read: overrides are HOOKWALL_<SECTION>__<KEY> \
             (Kubernetes sets HOOKWALL_SERVICE_HOST, HOOKWALL_PORT, ... for a Service named hookwall)"
        );
    }
}

/// A Redis that does not answer (or does not take writes) now is a warning, not an
/// error: the config is valid, and `run` connects in the background. With sentinels or a
/// cluster, each node that does not answer is a warning of its own.
fn warn_if_redis_unreachable(config: &crate::config::RedisConfig) {
    let probe = async {
        let metrics = crate::metrics::Metrics::new();
        let redis = crate::redis::Redis::new(config, 1, metrics.redis())
            .map_err(crate::store::StoreError::Connect)?;
        for (node, answer) in redis.ping_each().await {
            if let Err(err) = answer {
                eprintln!(
                    "warning: redis node {node} does not answer now: {}",
                    crate::logging::chain(&err)
                );
            }
        }
        redis.probe().await
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(probe)
                .map_err(|err| crate::logging::chain(&err))
        });
    if let Err(err) = result {
        eprintln!(
            "warning: redis {} is not reachable or not writable now: {err} \
             (hookwall run starts anyway and connects in the background)",
            config.describe()
        );
    }
}
