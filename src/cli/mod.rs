//! The subcommands besides `run`: `check`, `send` and `demo`.

pub mod check;
pub mod demo;
pub mod send;
pub mod signed;

use std::process::ExitCode;

/// Exit codes of the contract.
pub mod exit {
    pub const OK: u8 = 0;
    /// Bad config or usage.
    pub const CONFIG: u8 = 1;
    /// Runtime failure: port in use, upstream unreachable for `send`, a demo case misbehaving.
    pub const RUNTIME: u8 = 2;
    /// `send` got a reply that is not 2xx.
    pub const REJECTED: u8 = 3;
}

pub(crate) fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}
