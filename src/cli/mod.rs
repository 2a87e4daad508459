//! The subcommands besides `run`: `check`, `send`, `forget` and `demo`.

pub mod check;
pub mod demo;
mod demo_cases;
pub mod forget;
pub mod send;
pub mod signed;

use std::process::ExitCode;

/// Exit codes of the contract.
pub mod exit {
    pub const OK: u8 = 0;
    /// Bad config or usage.
    pub const CONFIG: u8 = 1;
    /// Runtime failure: port in use, upstream unreachable for `send`, a demo case
    /// misbehaving, the admin side unreachable or refusing `forget`.
    pub const RUNTIME: u8 = 2;
    /// `send` got a reply that is not 2xx; `forget` found the id not remembered, or being
    /// delivered.
    pub const REJECTED: u8 = 3;
}

pub(crate) fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}
