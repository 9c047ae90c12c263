//! End-to-end tests against a real kube-apiserver (with etcd and
//! kube-controller-manager), a MongoDB-wire server and Redis, and, on the test bed's
//! node, real pods (`node`). See `harness` for how they are found and
//! `tests/e2e/TESTBED.md` for how the bed is built.

mod backup;
mod chain_check;
mod chart;
mod controller_jobs;
mod crd;
mod harness;
mod node;
mod operator;
mod plugin;
mod restore;
mod servers;
