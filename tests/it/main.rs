//! hookwall's black-box tests, one binary (one link): each module starts the real
//! server (`hookwall::run` on 127.0.0.1:0, or the binary) in front of real upstreams, and
//! Redis, Python, Node and promtool where an area needs them. `helpers` has what they
//! share.

mod helpers;

mod abuse;
mod admin;
mod cli;
mod deliveries;
mod examples;
mod exposure;
mod forget;
mod fuzz;
mod lifecycle;
mod providers;
mod proxy;
mod redis_ha;
mod redis_store;
mod signed;
mod strangers;
mod streams;
mod tls;
mod traces;
mod upstream_faults;
