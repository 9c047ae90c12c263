//! The work of each subcommand, one module each; `cli.rs` only parses and dispatches.
//! Kubernetes access for the in-cluster check Job lives here, never in
//! [`crate::checks`].

pub mod backup;
pub mod bench;
pub mod bench_backup;
pub mod check;
pub mod mongo_client;
pub mod native_backup;
pub mod restore_drill;
pub mod status;
pub mod termination;
