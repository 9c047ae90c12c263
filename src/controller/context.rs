//! What every reconcile shares: the client, one event recorder, metrics, the
//! dependency clients, what the cluster can do, and per-object backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::Client;
use kube::discovery::ApiResource;
use kube::runtime::events::Recorder;

use crate::checks::mongo_probe::MongoClients;

use super::live::LiveState;
use super::metrics::Metrics;
use super::probes::ProbeCache;
use super::recheck::RecheckPolicy;
use super::rechecker::Rechecks;

/// Image the chain-check and backup jobs run unless told otherwise: the image of this
/// release.
pub const DEFAULT_OPERATOR_IMAGE: &str = concat!("ghcr.io/referral-dev/referral-operator:v", env!("CARGO_PKG_VERSION"));

/// Default of [`ControllerSettings::concurrency`].
pub const DEFAULT_CONCURRENCY: u16 = 16;
/// Default of [`ControllerSettings::recheck_budget`]: at 10,000 systems, every one
/// re-checked about every 10 minutes (docs/benchmarks.md, "Round 5").
pub const DEFAULT_RECHECK_BUDGET: f64 = 20.0;
/// Cheap re-checks in flight at once.
const MAX_CHECKING: usize = 8;
/// How soon a failing MongoDB or Redis is probed again, and a system using it
/// re-checked (backing off to its base interval): a server that answers again is
/// seen within seconds rather than a probe interval later (issue 20, fault 3).
const DEPENDENCY_DOWN_INTERVAL: Duration = Duration::from_secs(5);

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
    /// Probe each MongoDB and Redis at most this often, however many systems use it.
    pub probe_interval: Duration,
    /// Base interval of a Ready system's re-check (docs/controller.md, "News first").
    pub resync_ready: Duration,
    /// Base interval of the re-check of a system that is not Ready.
    pub resync_not_ready: Duration,
    /// Ceiling of the re-check back-off.
    pub recheck_max_interval: Duration,
    /// Re-checks started per second at most, however many systems there are.
    pub recheck_budget: f64,
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
            probe_interval: Duration::from_secs(30),
            resync_ready: Duration::from_secs(300),
            resync_not_ready: Duration::from_secs(30),
            recheck_max_interval: Duration::from_secs(600),
            recheck_budget: DEFAULT_RECHECK_BUDGET,
            concurrency: DEFAULT_CONCURRENCY,
            debounce: Duration::ZERO,
            // Tests and runs without a key file: stable for this process only.
            secrets_hash_key: super::secrets::HashKey::random()
                .unwrap_or_else(|_| super::secrets::HashKey::from_bytes(&std::process::id().to_be_bytes())),
        }
    }
}

/// Optional APIs found by discovery: the prometheus-operator kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// When each system is re-checked, and what its last reconcile saw.
    pub rechecks: Rechecks,
    /// The last answer of each MongoDB and Redis.
    pub probes: ProbeCache,
    /// Which systems a ReferralRestore names, from the restores' watch.
    pub restores: super::presence::Presence,
    /// Which systems have backup Jobs, from the Jobs' watch.
    pub backup_jobs: super::presence::Presence,
    /// Bumped whenever discovery finds other capabilities, so re-checks apply them.
    capabilities_generation: AtomicU64,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// `controllers`: how many Controllers share it (one per watched namespace), each
    /// running up to `settings.concurrency` reconciles.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        settings: ControllerSettings,
        controllers: usize,
    ) -> Self {
        let policy = RecheckPolicy {
            budget: settings.recheck_budget,
            ready: settings.resync_ready,
            not_ready: settings.resync_not_ready,
            dependency_down: DEPENDENCY_DOWN_INTERVAL,
            max_interval: settings.recheck_max_interval,
            slots: usize::from(settings.concurrency) * controllers.max(1),
            max_checking: MAX_CHECKING,
        };
        let heartbeats = metrics.mongodb_heartbeats();
        let mongo = MongoClients::new(settings.probe_interval, move || {
            heartbeats.inc();
        });
        Self {
            rechecks: Rechecks::new(policy),
            probes: ProbeCache::new(settings.probe_interval, DEPENDENCY_DOWN_INTERVAL),
            capabilities_generation: AtomicU64::new(0),
            client,
            recorder,
            metrics,
            settings,
            capabilities: RwLock::new(Capabilities::default()),
            mongo,
            live: LiveState::default(),
            restores: Default::default(),
            backup_jobs: Default::default(),
            index_schedule: Default::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        self.capabilities.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Records what discovery found; a change bumps [`Self::capabilities_generation`].
    pub fn set_capabilities(&self, found: Capabilities) {
        if let Ok(mut caps) = self.capabilities.write()
            && *caps != found
        {
            *caps = found;
            self.capabilities_generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How many times the capabilities changed since start.
    pub fn capabilities_generation(&self) -> u64 {
        self.capabilities_generation.load(Ordering::SeqCst)
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
