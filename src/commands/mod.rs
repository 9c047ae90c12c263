//! The work of each subcommand, one module each; `cli.rs` only parses and dispatches.

pub mod backup;
