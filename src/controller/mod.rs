//! The controller: watches ReferralSystems and what they own, applies what the
//! builders produce, and reports the truth in status. Wiring lives here; the pure
//! parts (conditions, status) live in their own modules.

pub mod http;
pub mod leader;
pub mod live;
pub mod metrics;

pub mod allocator;
pub mod api_retry;
pub mod apiserver_probe;
pub mod apply;
pub mod conditions;
pub mod context;
pub mod error;
pub mod indexes;
pub mod job_pods;
pub mod panics;
pub mod presence;
pub mod probes;
pub mod recheck;
pub mod rechecker;
pub mod reconcile;
pub mod requests;
pub mod restore;
pub mod run;
pub mod scheduled;
pub mod secrets;
pub mod upgrade;
