//! Analysis and probes that talk to MongoDB and Redis, never to Kubernetes: nothing in
//! here imports kube or k8s-openapi. The controller and the CLI call in with plain
//! values (addresses, URIs, field names) and get plain results back.
//!
//! - [`indexes`] (pure) and [`index_sync`] (MongoDB): the declared indexes.
//! - [`chains`] (pure engine: [`chain_ingest`] takes the users in, [`chains`] analyses,
//!   [`chain_report`] holds what it reports; keys in [`chain_keys`]) and [`chain_source`] (MongoDB):
//!   referral-chain integrity; [`chain_generator`] makes test and benchmark data.
//! - [`mongo_probe`], [`redis_probe`]: reachability.

pub mod chain_generator;
pub mod chain_ingest;
pub mod chain_keys;
pub mod chain_repair;
pub mod chain_report;
pub mod chain_source;
pub mod chains;
pub mod index_sync;
pub mod indexes;
pub mod mongo_error;
pub mod mongo_probe;
pub mod redis_probe;
