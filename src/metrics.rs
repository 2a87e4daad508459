//! Prometheus metrics.

/// The route label for requests refused before a route is known.
pub const UNMATCHED: &str = "_unmatched";
