//! referral-operator: runs referral systems on Kubernetes from one `ReferralSystem`.
//!
//! - [`crd`]: the resource, its defaults and admission rules (no cluster).
//! - [`reconcilers`]: pure builders, spec in, objects out, one module per concern.
//! - [`render`]: the GitOps preview, every child object for a file, offline.
//! - [`checks`]: MongoDB index diff, chain integrity engine, probes (no Kubernetes).
//! - [`commands`]: `check` and `bench`, including the in-cluster chain-check Job.
//! - [`cli`]: the command line.

pub mod checks;
pub mod cli;
pub mod commands;
pub mod controller;
pub mod crd;
pub mod reconcilers;
pub mod render;
