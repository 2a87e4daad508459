//! hookwall: a sidecar reverse proxy that lets through only webhooks that are authentic,
//! fresh, new and wanted (Svix / Standard Webhooks signatures).
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod config;
pub mod metrics;
pub mod route;
pub mod secret;
pub mod sign;
pub mod tls;
pub mod verify;
