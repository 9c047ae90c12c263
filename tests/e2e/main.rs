//! End-to-end tests against a real kube-apiserver (with etcd and
//! kube-controller-manager), a MongoDB-wire server and Redis, and, on the test bed's
//! node, real pods (`node`). See `harness` for how they are found and
//! `tests/e2e/TESTBED.md` for how the bed is built.

mod backup;
mod backup_pods;
#[allow(dead_code)]
#[path = "../support/certs.rs"]
mod certs;
mod chain_check;
mod chart;
mod controller_jobs;
mod crd;
mod differential;
mod faults;
mod harness;
mod node;
mod operator;
mod plugin;
mod production;
#[path = "../support/resp.rs"]
mod resp;
mod restore;
mod servers;
