//! Subcommands whose work is more than wiring: the `check` family (index and chain
//! checks, standalone or as the in-cluster Job, and applying a repair plan) and
//! `bench`. Kubernetes access for the in-cluster mode lives here, never in
//! [`crate::checks`].

pub mod bench;
pub mod check;
pub mod mongo_client;
