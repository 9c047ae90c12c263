//! Analysis and probes that talk to MongoDB and Redis, never to Kubernetes: nothing in
//! here imports kube or k8s-openapi. The controller and the CLI call in with plain
//! values (addresses, URIs, field names) and get plain results back.

pub mod chain_keys;
pub mod chains;
pub mod index_sync;
pub mod indexes;
pub mod mongo_error;
pub mod mongo_probe;
pub mod redis_probe;
