//! Building `[[routes]]`: each route's path and name, secrets, rules and timeouts, with
//! every problem collected under its key (`routes[1].rules[0].upstream`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{RawRoute, RawRule};
use super::scheme::{scheme, Signing};
use super::value::{at_least_one, duration, upstream};
use super::{defaults, Problems, Route};
use crate::chain::chain;
use crate::route::{Action, Glob, Rule, Rules};

/// What the rest of the config decides for every route.
pub(super) struct RouteDefaults {
    pub(super) tolerance_secs: u64,
    /// `[limits]`'s upstream timing.
    pub(super) upstream: UpstreamTiming,
    /// Whether there is a `[redis]` section, which stream rules need.
    pub(super) redis_section_given: bool,
}

/// How long a forward may take (`None` where the value is invalid): the sender's wait,
/// the forward's whole life, and connecting. Set in `[limits]` for every route, or by a
/// route for itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct UpstreamTiming {
    pub(super) timeout: Option<Duration>,
    pub(super) deadline: Option<Duration>,
    pub(super) connect: Option<Duration>,
}

impl Default for UpstreamTiming {
    /// What holds before `[limits]`: only the built-in connect timeout.
    fn default() -> Self {
        let connect = humantime::parse_duration(super::defaults::CONNECT_TIMEOUT).ok();
        UpstreamTiming {
            timeout: None,
            deadline: None,
            connect,
        }
    }
}

impl UpstreamTiming {
    /// The timing at `scope` (`limits.` or `routes[i].`): what it writes, else `inherited`.
    /// A deadline shorter than the timeout is an error, and so is a connect timeout
    /// written longer than the timeout; an inherited one is capped at it.
    pub(super) fn new(
        scope: &str,
        (timeout, deadline): (Option<&str>, Option<&str>),
        connect: Option<&str>,
        inherited: &UpstreamTiming,
        problems: &mut Problems,
    ) -> UpstreamTiming {
        let key = |name: &str| format!("{scope}{name}");
        // Problems are said where the values are written, not again by every route.
        let times_written = timeout.is_some() || deadline.is_some();
        let connect_written = connect.is_some();
        let mut read = |name: &str, own: Option<&str>, inherited: Option<Duration>| match own {
            Some(text) => duration(problems, &key(name), text),
            None => inherited,
        };
        let timeout = read("upstream_timeout", timeout, inherited.timeout);
        let deadline = read("upstream_deadline", deadline, inherited.deadline);
        let mut connect = read("connect_timeout", connect, inherited.connect);
        if let (Some(timeout), Some(deadline)) = (timeout, deadline) {
            if deadline < timeout && times_written {
                problems.add(
                    key("upstream_deadline"),
                    format!(
                        "{} is shorter than upstream_timeout ({}): a forward would be \
                         abandoned while its sender still waits",
                        humantime::format_duration(deadline),
                        humantime::format_duration(timeout)
                    ),
                );
            }
        }
        if let (Some(timeout), Some(c)) = (timeout, connect) {
            if c > timeout && connect_written {
                problems.add(
                    key("connect_timeout"),
                    format!(
                        "{} is longer than upstream_timeout ({}): the sender would be \
                         answered before the connection is even made",
                        humantime::format_duration(c),
                        humantime::format_duration(timeout)
                    ),
                );
            }
            connect = Some(c.min(timeout));
        }
        UpstreamTiming {
            timeout,
            deadline,
            connect,
        }
    }
}

/// Every route, and the clashes between them: a path or a name used twice, the reserved
/// name. A route with problems is left out (the config as a whole is then refused).
pub(super) fn routes(
    raw: Vec<RawRoute>,
    base_dir: &Path,
    defaults: &RouteDefaults,
    problems: &mut Problems,
) -> Vec<Route> {
    if raw.is_empty() {
        problems.add("routes", "no routes: add at least one [[routes]] table");
    }
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    let mut routes = Vec::new();
    for (i, raw_route) in raw.into_iter().enumerate() {
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
            if name == crate::labels::UNMATCHED {
                problems.add(format!("routes[{i}].name"), format!("{name:?} is reserved"));
            } else if !names.insert(name.clone()) {
                problems.add(
                    format!("routes[{i}].name"),
                    format!("{name:?} is used by an earlier route"),
                );
            }
        }
        routes.extend(route(raw_route, i, base_dir, defaults, problems));
    }
    routes
}

/// One route, or `None` if it has problems (each added to `problems`).
fn route(
    raw: RawRoute,
    i: usize,
    base_dir: &Path,
    defaults: &RouteDefaults,
    problems: &mut Problems,
) -> Option<Route> {
    let at = |key: &str| format!("routes[{i}].{key}");
    let start = problems.0.len();
    let (path, name) = path_and_name(raw.path, raw.name, i, problems);
    let signing = Signing {
        provider: raw.provider.as_deref(),
        hmac: raw.hmac,
        secrets: &raw.secrets,
    };
    let (sources, scheme) = scheme(signing, i, base_dir, defaults.tolerance_secs, problems);
    let enforce = raw.enforce.unwrap_or(true);
    if !enforce && (raw.rules.is_some() || raw.upstream.is_none()) {
        let message = "false (shadow mode) needs the route's `upstream`, and no `rules`: every \
                       request is forwarded to it";
        problems.add(at("enforce"), message);
    }
    let rules = match (raw.upstream, raw.rules) {
        (Some(url), None) => upstream(problems, &at("upstream"), &url).map(|up| {
            Rules(vec![Rule {
                events: vec![Glob::new("*")],
                action: Action::Forward(Arc::new(up)),
            }])
        }),
        (None, Some(raw_rules)) => Some(rules(raw_rules, i, defaults, problems)),
        (Some(_), Some(_)) => {
            let message = "a route has either `upstream` or `rules`, not both";
            problems.add(at("upstream"), message);
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
    let timing = UpstreamTiming::new(
        &format!("routes[{i}]."),
        (
            raw.upstream_timeout.as_deref(),
            raw.upstream_deadline.as_deref(),
        ),
        raw.connect_timeout.as_deref(),
        &defaults.upstream,
        problems,
    );
    let max_in_flight = match raw.max_in_flight {
        Some(n) => at_least_one(problems, &at("max_in_flight"), n as u64) as usize,
        None => defaults::MAX_IN_FLIGHT,
    };
    let ca_file = raw.ca_file.map(|p| base_dir.join(p));
    if let Some(ca) = &ca_file {
        if let Err(err) = crate::tls::load_roots(ca) {
            problems.add(at("ca_file"), chain(&err));
        }
    }
    if problems.0.len() > start {
        return None;
    }
    Some(Route {
        name,
        path,
        secrets: sources,
        scheme: scheme?,
        enforce,
        rules: rules?,
        upstream_timeout: timing.timeout?,
        upstream_deadline: timing.deadline?,
        connect_timeout: timing.connect?,
        max_in_flight,
        ca_file,
    })
}

/// The path (an absolute, visible-ASCII path) and the name (the path by default).
fn path_and_name(
    path: Option<String>,
    name: Option<String>,
    i: usize,
    problems: &mut Problems,
) -> (String, Arc<str>) {
    let at = |key: &str| format!("routes[{i}].{key}");
    let path = match path {
        Some(path) if path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) => path,
        Some(path) => {
            let message = format!("{path:?} must start with \"/\" and be visible ASCII");
            problems.add(at("path"), message);
            path
        }
        None => {
            problems.add(at("path"), "missing: every route needs a path");
            String::new()
        }
    };
    let name: Arc<str> = match name {
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
    (path, name)
}

/// `[[routes.rules]]`, in order; a rule with problems is left out.
fn rules(raw: Vec<RawRule>, i: usize, defaults: &RouteDefaults, problems: &mut Problems) -> Rules {
    if raw.is_empty() {
        problems.add(
            format!("routes[{i}].rules"),
            "is empty: add a rule or use `upstream`",
        );
    }
    let mut rules = Vec::new();
    for (j, rule) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].rules[{j}].{k}");
        if rule.events.is_empty() {
            problems.add(key("events"), "is empty: list at least one event pattern");
        }
        let action = match (rule.upstream, rule.action.as_deref(), rule.stream) {
            (Some(url), None, None) => {
                upstream(problems, &key("upstream"), &url).map(|up| Action::Forward(Arc::new(up)))
            }
            (None, Some("drop"), None) => Some(Action::Drop),
            (None, None, Some(_)) if !defaults.redis_section_given => {
                let message = "a stream rule needs a [redis] section (at least `url`)";
                problems.add(key("stream"), message);
                None
            }
            (None, None, Some(name)) => stream_name(problems, &key("stream"), name),
            (None, Some(other), None) => {
                let message = format!("{other:?} is not an action; the only one is \"drop\"");
                problems.add(key("action"), message);
                None
            }
            (None, None, None) => {
                let message = "missing: a rule needs `upstream`, `stream` or `action = \"drop\"`";
                problems.add(key("upstream"), message);
                None
            }
            _ => {
                let message =
                    "a rule has one of `upstream`, `stream` or `action = \"drop\"`, not several";
                problems.add(key("action"), message);
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
    Rules(rules)
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
