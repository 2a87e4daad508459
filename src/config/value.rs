//! One key's text turned into a typed value, or its problem recorded under the key:
//! durations, counts, addresses, upstream URLs. A leaf of `config/`: `build` (the
//! sections) and `route` (each `[[routes]]` entry) both use it, and neither imports the
//! other for it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::Problems;
use crate::chain::chain;
use crate::route::Upstream;

/// A duration longer than zero, as humantime reads it (`250ms`, `10s`, `1m30s`).
pub(super) fn duration(problems: &mut Problems, key: &str, text: &str) -> Option<Duration> {
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
pub(super) fn duration_or_zero(problems: &mut Problems, key: &str, text: &str) -> Option<Duration> {
    if humantime::parse_duration(text).is_ok_and(|d| d.is_zero()) {
        return Some(Duration::ZERO);
    }
    duration(problems, key, text)
}

/// An `ip:port` address to listen on.
pub(super) fn socket_addr(problems: &mut Problems, key: &str, text: &str) -> Option<SocketAddr> {
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

/// A count of at least 1; the value is given back either way, so later checks still see it.
pub(super) fn at_least_one<T: PartialOrd + From<u8> + fmt::Display>(
    problems: &mut Problems,
    key: &str,
    value: T,
) -> T {
    if value < T::from(1) {
        problems.add(key, format!("{value} must be at least 1"));
    }
    value
}

/// An http(s) URL to forward to.
pub(super) fn upstream(problems: &mut Problems, key: &str, text: &str) -> Option<Upstream> {
    Upstream::parse(text)
        .map_err(|err| problems.add(key, chain(&err)))
        .ok()
}
