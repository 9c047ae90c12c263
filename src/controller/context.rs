//! What every reconcile shares: the client, one event recorder, metrics, the
//! dependency clients, what the cluster can do, and per-object backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::Client;
use kube::discovery::ApiResource;
use kube::runtime::events::Recorder;

use crate::checks::mongo_probe::MongoClients;

use super::live::LiveState;
use super::metrics::Metrics;

/// Image the chain-check and backup jobs run unless told otherwise: the image of this
/// release.
pub const DEFAULT_OPERATOR_IMAGE: &str = concat!("ghcr.io/referral-dev/referral-operator:v", env!("CARGO_PKG_VERSION"));

/// Default of [`ControllerSettings::concurrency`].
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// Settings of the controller that do not come from a ReferralSystem.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Image the chain-check and backup jobs run.
    pub operator_image: String,
    /// The operator's own pods, when it runs in the cluster (NetworkPolicies let its
    /// probes in).
    pub operator_pods: Option<crate::reconcilers::OperatorPods>,
    /// Deadline of each dependency probe.
    pub probe_timeout: Duration,
    /// Re-check a Ready system this often even when nothing changes.
    pub resync_ready: Duration,
    /// Re-check a system that is not Ready this often.
    pub resync_not_ready: Duration,
    /// Reconciles running at once (per watched namespace). Unbounded, a thousand
    /// systems arriving together flood the API server until it answers 429 and 504.
    pub concurrency: u16,
    /// Quiet time after a change before a reconcile starts (kube-runtime's trailing
    /// debounce); zero reconciles at once.
    pub debounce: Duration,
    /// Key of the secrets hash in pod templates (`--secrets-hash-key-file`).
    pub secrets_hash_key: super::secrets::HashKey,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            operator_image: DEFAULT_OPERATOR_IMAGE.into(),
            operator_pods: None,
            probe_timeout: Duration::from_secs(5),
            resync_ready: Duration::from_secs(300),
            resync_not_ready: Duration::from_secs(30),
            concurrency: DEFAULT_CONCURRENCY,
            debounce: Duration::ZERO,
            // Tests and runs without a key file: stable for this process only.
            secrets_hash_key: super::secrets::HashKey::random()
                .unwrap_or_else(|_| super::secrets::HashKey::from_bytes(&std::process::id().to_be_bytes())),
        }
    }
}

/// Optional APIs found by discovery: the prometheus-operator kinds.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub prometheus_rule: Option<ApiResource>,
    pub service_monitor: Option<ApiResource>,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: ControllerSettings,
    pub capabilities: RwLock<Capabilities>,
    pub mongo: MongoClients,
    /// What the child watches have seen.
    pub live: LiveState,
    /// When each system's indexes were last checked.
    pub index_schedule: super::indexes::IndexSchedule,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, recorder: Recorder, metrics: Arc<Metrics>, settings: ControllerSettings) -> Self {
        Self {
            client,
            recorder,
            metrics,
            settings,
            capabilities: RwLock::new(Capabilities::default()),
            mongo: MongoClients::default(),
            live: LiveState::default(),
            index_schedule: Default::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        self.capabilities.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Records one more failure of `key` and returns how long to wait: 5s doubling
    /// per consecutive failure, at most 5 minutes.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let attempts = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        backoff_for(attempts)
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset_backoff(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }
}

/// 5s, 10s, 20s, ... capped at 300s.
pub fn backoff_for(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(6);
    Duration::from_secs((5u64 << exponent).min(300))
}

#[cfg(test)]
mod tests {
    use super::backoff_for;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_from_seconds_to_minutes_and_stops() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff_for(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff_for(u32::MAX), Duration::from_secs(300));
    }
}
