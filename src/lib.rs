//! referral-operator: runs referral systems on Kubernetes from one `ReferralSystem`.
//!
//! - [`crd`]: the resource, its defaults and admission rules (no cluster).
//! - [`reconcilers`]: pure builders, spec in, objects out, one module per concern.
//! - [`render`]: the GitOps preview, every child object for a file, offline.
//! - [`plugin`]: `kubectl referral`, the kubectl plugin face of the binary.
//! - [`backup`]: backup names, the retention planner, the backup folder on disk.
//! - [`checks`]: MongoDB index diff, chain integrity engine, probes (no Kubernetes).
//! - [`yaml`]: every YAML read and write, and the rules for each.
//! - [`cli`]: the command line; [`commands`] holds each subcommand's work (`backup`,
//!   `check`, `bench`, including the in-cluster chain-check Job).

pub mod backup;
pub mod checks;
pub mod cli;
pub mod commands;
pub mod controller;
pub mod crd;
pub mod plugin;
pub mod reconcilers;
pub mod render;
pub mod yaml;
