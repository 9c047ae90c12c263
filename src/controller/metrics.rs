//! The operator's own metrics: one `prometheus-client` registry, the reconcile
//! counters and timing, and the per-system gauges the built-in alerts of
//! [`crate::reconcilers::monitoring`] read.
//!
//! Every label value comes from a fixed set or from the name of a ReferralSystem, so
//! the number of series is bounded by the number of systems: failure categories are
//! `&'static str` chosen by the caller's error type (never `Debug` text), index states
//! are checked against their constant list, violation kinds are an enum, and
//! [`Metrics::forget_system`] drops every series of a deleted system.
//!
//! This module does no I/O and knows nothing of Kubernetes or HTTP; `http` serves
//! [`Metrics::encode`], and whoever observes a fact (reconcile, chain check, index
//! check, backup status, leader election) reports it here.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::status::ChainViolation;
use crate::reconcilers::monitoring::{
    DEPENDENCIES, INDEX_STATES, OPERATOR_BACKUP_INTERVAL, OPERATOR_BACKUP_LAST_FAILURE, OPERATOR_BACKUP_LAST_SUCCESS,
    OPERATOR_BACKUP_MAX_UNVERIFIED_AGE, OPERATOR_BACKUP_VERIFIED, OPERATOR_CHAIN_CHECK_FAILED,
    OPERATOR_CHAIN_USERS_BY_DEPTH, OPERATOR_CHAIN_VIOLATIONS, OPERATOR_DEPENDENCY_UP, OPERATOR_INDEXES,
    OPERATOR_MAINTENANCE_JOB_FAILED, OPERATOR_WORKER_PODS, WORKER_POD_STATES,
};

/// Reconciles run, whatever their outcome.
pub const RECONCILE_RUNS_TOTAL: &str = "referral_operator_reconcile_runs_total";
/// Failed reconciles, by `category`.
pub const RECONCILE_FAILURES_TOTAL: &str = "referral_operator_reconcile_failures_total";
/// How long one reconcile took.
pub const RECONCILE_DURATION_SECONDS: &str = "referral_operator_reconcile_duration_seconds";
/// Child objects the operator manages for one system.
pub const MANAGED_OBJECTS: &str = "referral_operator_managed_objects";
/// 1 on the replica that holds the leader Lease, 0 on the others.
pub const LEADER: &str = "referral_operator_leader";
/// Cheap re-checks done, by `result` (docs/controller.md, "News first").
pub const RECHECKS_TOTAL: &str = "referral_operator_rechecks_total";
/// Dependency probes sent (not answered from the cache), by `dependency`.
pub const PROBES_TOTAL: &str = "referral_operator_dependency_probes_total";
/// Checks of their server by the MongoDB driver's monitors (`hello`), besides pings.
pub const MONGODB_HEARTBEATS_TOTAL: &str = "referral_operator_mongodb_heartbeats_total";
/// The values of `result` on [`RECHECKS_TOTAL`].
pub const RECHECK_RESULTS: [&str; 4] = ["nothing_new", "news", "failed", "gone"];
/// The values of `dependency` on [`PROBES_TOTAL`].
pub const PROBED_DEPENDENCIES: [&str; 2] = ["mongodb", "redis"];

/// Content type of [`Metrics::encode`]: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the reconcile duration buckets, in seconds: a reconcile that only
/// compares objects takes tens of milliseconds, one that waits on MongoDB can take
/// seconds, and the API client gives up well before 30.
const RECONCILE_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecheckLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    dependency: &'static str,
}

// Field names are the label names; they must equal LABEL_REFERRAL_NAMESPACE and
// LABEL_REFERRAL_SYSTEM, which a unit test checks against the encoded output.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SystemLabels {
    referral_namespace: String,
    referral_system: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IndexLabels {
    referral_namespace: String,
    referral_system: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    referral_namespace: String,
    referral_system: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    referral_namespace: String,
    referral_system: String,
    depth: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    referral_namespace: String,
    referral_system: String,
    dependency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerPodLabels {
    referral_namespace: String,
    referral_system: String,
    worker: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    referral_namespace: String,
    referral_system: String,
    job: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Names (workers, maintenance jobs) exported per system: from the spec, so a fixed
/// set per system, but one that changes; the stale ones' series must go.
type NamesBySystem = Mutex<HashMap<SystemLabels, BTreeSet<String>>>;

/// The operator's metrics and the registry that exports them. Share it behind an
/// `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_runs: Counter,
    reconcile_failures: Family<FailureLabels, Counter>,
    reconcile_duration: Histogram,
    managed_objects: Family<SystemLabels, Gauge>,
    indexes: Family<IndexLabels, Gauge>,
    chain_violations: Family<ViolationLabels, Gauge>,
    chain_users_by_depth: Family<DepthLabels, Gauge>,
    backup_last_success: Family<SystemLabels, FloatGauge>,
    backup_interval: Family<SystemLabels, FloatGauge>,
    dependency_up: Family<DependencyLabels, Gauge>,
    worker_pods: Family<WorkerPodLabels, Gauge>,
    chain_check_failed: Family<SystemLabels, Gauge>,
    maintenance_failed: Family<JobLabels, Gauge>,
    workers: NamesBySystem,
    maintenance_jobs: NamesBySystem,
    backup_last_failure: Family<SystemLabels, FloatGauge>,
    backup_verified: Family<SystemLabels, FloatGauge>,
    backup_max_unverified_age: Family<SystemLabels, FloatGauge>,
    leader: Gauge,
    rechecks: Family<RecheckLabels, Counter>,
    probes: Family<ProbeLabels, Counter>,
    mongodb_heartbeats: Counter,
    /// Depths exported per system: unlike states and kinds they are not a fixed set,
    /// so removing a system's series, or a depth that no longer occurs, needs them.
    depths: Mutex<HashMap<SystemLabels, BTreeSet<u32>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let reconcile_runs = Counter::default();
        let reconcile_failures = Family::<FailureLabels, Counter>::default();
        let reconcile_duration = Histogram::new(RECONCILE_BUCKETS);
        let managed_objects = Family::<SystemLabels, Gauge>::default();
        let indexes = Family::<IndexLabels, Gauge>::default();
        let chain_violations = Family::<ViolationLabels, Gauge>::default();
        let chain_users_by_depth = Family::<DepthLabels, Gauge>::default();
        let backup_last_success = Family::<SystemLabels, FloatGauge>::default();
        let backup_interval = Family::<SystemLabels, FloatGauge>::default();
        let dependency_up = Family::<DependencyLabels, Gauge>::default();
        let worker_pods = Family::<WorkerPodLabels, Gauge>::default();
        let chain_check_failed = Family::<SystemLabels, Gauge>::default();
        let maintenance_failed = Family::<JobLabels, Gauge>::default();
        let backup_last_failure = Family::<SystemLabels, FloatGauge>::default();
        let backup_verified = Family::<SystemLabels, FloatGauge>::default();
        let backup_max_unverified_age = Family::<SystemLabels, FloatGauge>::default();
        let leader = Gauge::default();
        let rechecks = Family::<RecheckLabels, Counter>::default();
        let probes = Family::<ProbeLabels, Counter>::default();
        let mongodb_heartbeats = Counter::default();

        // prometheus-client appends `_total` to counters itself.
        registry.register(counter_base(RECONCILE_RUNS_TOTAL), "Reconciles run", reconcile_runs.clone());
        registry.register(
            counter_base(RECONCILE_FAILURES_TOTAL),
            "Reconciles that failed, by error category",
            reconcile_failures.clone(),
        );
        registry.register(RECONCILE_DURATION_SECONDS, "Time one reconcile took", reconcile_duration.clone());
        registry.register(MANAGED_OBJECTS, "Child objects managed for a ReferralSystem", managed_objects.clone());
        registry.register(OPERATOR_INDEXES, "Declared MongoDB indexes by state", indexes.clone());
        registry.register(
            OPERATOR_CHAIN_VIOLATIONS,
            "Referral chain violations found by the last chain check, by kind",
            chain_violations.clone(),
        );
        registry.register(
            OPERATOR_CHAIN_USERS_BY_DEPTH,
            "Users per referral chain depth found by the last chain check",
            chain_users_by_depth.clone(),
        );
        registry.register(
            OPERATOR_BACKUP_LAST_SUCCESS,
            "Unix time of the newest complete backup",
            backup_last_success.clone(),
        );
        registry.register(
            OPERATOR_BACKUP_INTERVAL,
            "Nominal interval of the backup schedule in seconds",
            backup_interval.clone(),
        );
        registry.register(
            OPERATOR_DEPENDENCY_UP,
            "1 when a dependency (redis, mongodb) answers the operator's probe, 0 when it does not",
            dependency_up.clone(),
        );
        registry.register(OPERATOR_WORKER_PODS, "Pods of each worker, desired and ready", worker_pods.clone());
        registry.register(
            OPERATOR_CHAIN_CHECK_FAILED,
            "1 when the last chain check could not run",
            chain_check_failed.clone(),
        );
        registry.register(
            OPERATOR_MAINTENANCE_JOB_FAILED,
            "1 when the last finished run of a maintenance job failed",
            maintenance_failed.clone(),
        );
        registry.register(
            OPERATOR_BACKUP_LAST_FAILURE,
            "Unix time the newest backup Job failed, while no backup has completed since",
            backup_last_failure.clone(),
        );
        registry.register(
            OPERATOR_BACKUP_VERIFIED,
            "Unix time of the newest backup a restore drill restored successfully (the system's creation before the first)",
            backup_verified.clone(),
        );
        registry.register(
            OPERATOR_BACKUP_MAX_UNVERIFIED_AGE,
            "spec.backup.restoreDrill.maxUnverifiedAge in seconds",
            backup_max_unverified_age.clone(),
        );
        registry.register(LEADER, "1 when this replica holds the leader Lease", leader.clone());
        registry.register(counter_base(RECHECKS_TOTAL), "Cheap re-checks of systems, by result", rechecks.clone());
        registry.register(
            counter_base(PROBES_TOTAL),
            "MongoDB and Redis probes sent (answers reused within the probe interval not counted)",
            probes.clone(),
        );
        registry.register(
            counter_base(MONGODB_HEARTBEATS_TOTAL),
            "Checks of their server by the MongoDB driver's monitors",
            mongodb_heartbeats.clone(),
        );
        // Every value from the start, so a rate over the first minutes has a series.
        for result in RECHECK_RESULTS {
            let _ = rechecks.get_or_create(&RecheckLabels { result });
        }
        for dependency in PROBED_DEPENDENCIES {
            let _ = probes.get_or_create(&ProbeLabels { dependency });
        }

        Metrics {
            registry,
            reconcile_runs,
            reconcile_failures,
            reconcile_duration,
            managed_objects,
            indexes,
            chain_violations,
            chain_users_by_depth,
            backup_last_success,
            backup_interval,
            dependency_up,
            worker_pods,
            chain_check_failed,
            maintenance_failed,
            workers: Mutex::new(HashMap::new()),
            maintenance_jobs: Mutex::new(HashMap::new()),
            backup_last_failure,
            backup_verified,
            backup_max_unverified_age,
            leader,
            rechecks,
            probes,
            mongodb_heartbeats,
            depths: Mutex::new(HashMap::new()),
        }
    }

    /// Starts timing one reconcile; dropping the guard counts the run and records how
    /// long it took, on every exit path including `?` and panics.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        ReconcileTimer {
            started: Instant::now(),
            runs: self.reconcile_runs.clone(),
            duration: self.reconcile_duration.clone(),
        }
    }

    /// Counts a failed reconcile. `category` must come from the error type's bounded
    /// `category()` (snake_case, a handful of values), never from error text.
    pub fn record_failure(&self, category: &'static str) {
        debug_assert!(is_label_word(category), "failure category {category:?} is not a snake_case word");
        self.reconcile_failures.get_or_create(&FailureLabels { category }).inc();
    }

    /// Counts a cheap re-check; `result` is one of [`RECHECK_RESULTS`].
    pub fn record_recheck(&self, result: &'static str) {
        debug_assert!(
            RECHECK_RESULTS.contains(&result),
            "re-check result {result:?} is not one of {RECHECK_RESULTS:?}"
        );
        self.rechecks.get_or_create(&RecheckLabels { result }).inc();
    }

    /// Counts a probe sent; `dependency` is one of [`PROBED_DEPENDENCIES`].
    pub fn record_probe(&self, dependency: &'static str) {
        debug_assert!(
            PROBED_DEPENDENCIES.contains(&dependency),
            "{dependency:?} is not one of {PROBED_DEPENDENCIES:?}"
        );
        self.probes.get_or_create(&ProbeLabels { dependency }).inc();
    }

    /// The counter of the MongoDB driver's server checks, for its event handler.
    pub fn mongodb_heartbeats(&self) -> Counter {
        self.mongodb_heartbeats.clone()
    }

    pub fn set_managed_objects(&self, ns: &str, name: &str, count: i64) {
        self.managed_objects.get_or_create(&system(ns, name)).set(count);
    }

    /// Sets the index counts of one system. Every state of [`INDEX_STATES`] is
    /// exported, 0 when absent from `counts`, so an alert sees a drop to zero rather
    /// than a series that vanished.
    pub fn set_index_states(&self, ns: &str, name: &str, counts: &[(&'static str, i64)]) {
        for (state, count) in counted(&INDEX_STATES, counts, "index state") {
            let labels = IndexLabels { referral_namespace: ns.into(), referral_system: name.into(), state };
            self.indexes.get_or_create(&labels).set(count);
        }
    }

    /// Sets the chain violation counts of one system, every kind of
    /// [`ChainViolation::ALL`], 0 when absent from `counts`.
    pub fn set_chain_violations(&self, ns: &str, name: &str, counts: &[(ChainViolation, i64)]) {
        for kind in ChainViolation::ALL {
            let count = counts.iter().filter(|(k, _)| *k == kind).map(|(_, n)| n).sum();
            let labels =
                ViolationLabels { referral_namespace: ns.into(), referral_system: name.into(), kind: kind.label() };
            self.chain_violations.get_or_create(&labels).set(count);
        }
    }

    /// Replaces the users-per-depth histogram of one system: depths not in `depths`
    /// lose their series, so a chain that got shorter does not leave stale ones.
    pub fn set_chain_depths(&self, ns: &str, name: &str, depths: &[(u32, i64)]) {
        let key = system(ns, name);
        let mut exported = self.depths.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = exported.remove(&key).unwrap_or_default();
        let current: BTreeSet<u32> = depths.iter().map(|(depth, _)| *depth).collect();
        for depth in previous.difference(&current) {
            self.chain_users_by_depth.remove(&depth_labels(ns, name, *depth));
        }
        for (depth, users) in depths {
            self.chain_users_by_depth.get_or_create(&depth_labels(ns, name, *depth)).set(*users);
        }
        if !current.is_empty() {
            exported.insert(key, current);
        }
    }

    /// Sets the backup gauges of one system. Without a completed backup the timestamp
    /// series is absent rather than 0: a 0 would read as a backup 50 years old and
    /// fire the backup alert for every system that is new.
    pub fn set_backup(&self, ns: &str, name: &str, last_success_unix: Option<f64>, interval_seconds: f64) {
        let labels = system(ns, name);
        match last_success_unix {
            Some(at) => {
                self.backup_last_success.get_or_create(&labels).set(at);
            }
            None => {
                self.backup_last_success.remove(&labels);
            }
        }
        self.backup_interval.get_or_create(&labels).set(interval_seconds);
    }

    /// Sets whether each dependency answered: `Some(up)` exports 1 or 0, `None` (not
    /// probed) removes the series, so an alert on 0 does not fire for a Secret that
    /// is missing (Ready says that).
    pub fn set_dependencies(&self, ns: &str, name: &str, redis: Option<bool>, mongodb: Option<bool>) {
        for (dependency, up) in DEPENDENCIES.into_iter().zip([redis, mongodb]) {
            let labels = DependencyLabels { referral_namespace: ns.into(), referral_system: name.into(), dependency };
            match up {
                Some(up) => {
                    self.dependency_up.get_or_create(&labels).set(i64::from(up));
                }
                None => {
                    self.dependency_up.remove(&labels);
                }
            }
        }
    }

    /// Sets or removes the failed-backup gauge of one system: present only while the
    /// newest backup Job failed and none has completed since.
    pub fn set_backup_failure(&self, ns: &str, name: &str, failed_at_unix: Option<f64>) {
        let labels = system(ns, name);
        match failed_at_unix {
            Some(at) => {
                self.backup_last_failure.get_or_create(&labels).set(at);
            }
            None => {
                self.backup_last_failure.remove(&labels);
            }
        }
    }

    /// Sets the restore drill's two gauges of one system, `(verified since, limit)`
    /// in seconds, or removes both when no drill is asked for: without the limit
    /// series the alert cannot fire.
    pub fn set_restore_drill(&self, ns: &str, name: &str, drill: Option<(f64, f64)>) {
        let labels = system(ns, name);
        match drill {
            Some((since, max_age)) => {
                self.backup_verified.get_or_create(&labels).set(since);
                self.backup_max_unverified_age.get_or_create(&labels).set(max_age);
            }
            None => {
                self.backup_verified.remove(&labels);
                self.backup_max_unverified_age.remove(&labels);
            }
        }
    }

    /// Replaces the pod counts of a system's workers: `(worker, desired, ready)`.
    pub fn set_worker_pods(&self, ns: &str, name: &str, workers: &[(String, i64, i64)]) {
        let labels = |worker: &str, state: &'static str| WorkerPodLabels {
            referral_namespace: ns.into(),
            referral_system: name.into(),
            worker: worker.into(),
            state,
        };
        let current: BTreeSet<String> = workers.iter().map(|(w, _, _)| w.clone()).collect();
        for stale in replace_names(&self.workers, system(ns, name), current) {
            for state in WORKER_POD_STATES {
                self.worker_pods.remove(&labels(&stale, state));
            }
        }
        for (worker, desired, ready) in workers {
            self.worker_pods.get_or_create(&labels(worker, WORKER_POD_STATES[0])).set(*desired);
            self.worker_pods.get_or_create(&labels(worker, WORKER_POD_STATES[1])).set(*ready);
        }
    }

    pub fn set_chain_check_failed(&self, ns: &str, name: &str, failed: bool) {
        self.chain_check_failed.get_or_create(&system(ns, name)).set(i64::from(failed));
    }

    /// Replaces whether each maintenance job's last finished run failed: `(job, failed)`.
    pub fn set_maintenance_failed(&self, ns: &str, name: &str, jobs: &[(String, bool)]) {
        let labels =
            |job: &str| JobLabels { referral_namespace: ns.into(), referral_system: name.into(), job: job.into() };
        let current: BTreeSet<String> = jobs.iter().map(|(j, _)| j.clone()).collect();
        for stale in replace_names(&self.maintenance_jobs, system(ns, name), current) {
            self.maintenance_failed.remove(&labels(&stale));
        }
        for (job, failed) in jobs {
            self.maintenance_failed.get_or_create(&labels(job)).set(i64::from(*failed));
        }
    }

    pub fn set_leader(&self, is_leader: bool) {
        self.leader.set(i64::from(is_leader));
    }

    /// Removes every series of a system, for when its ReferralSystem is deleted.
    pub fn forget_system(&self, ns: &str, name: &str) {
        let key = system(ns, name);
        self.managed_objects.remove(&key);
        self.backup_last_success.remove(&key);
        self.backup_interval.remove(&key);
        self.backup_last_failure.remove(&key);
        self.backup_verified.remove(&key);
        self.backup_max_unverified_age.remove(&key);
        for state in INDEX_STATES {
            self.indexes.remove(&IndexLabels { referral_namespace: ns.into(), referral_system: name.into(), state });
        }
        for kind in ChainViolation::ALL {
            self.chain_violations.remove(&ViolationLabels {
                referral_namespace: ns.into(),
                referral_system: name.into(),
                kind: kind.label(),
            });
        }
        let depths = self.depths.lock().unwrap_or_else(PoisonError::into_inner).remove(&key).unwrap_or_default();
        for depth in depths {
            self.chain_users_by_depth.remove(&depth_labels(ns, name, depth));
        }
        self.set_dependencies(ns, name, None, None);
        self.set_worker_pods(ns, name, &[]);
        self.set_maintenance_failed(ns, name, &[]);
        self.chain_check_failed.remove(&key);
    }

    /// Every metric in the Prometheus text format, version 0.0.4 (see
    /// [`CONTENT_TYPE`]), as prometheus-client writes it: the format Prometheus
    /// scrapes by default and `promtool check metrics` reads.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Times one reconcile; see [`Metrics::reconcile_timer`].
#[must_use = "the reconcile is timed until the guard is dropped"]
#[derive(Debug)]
pub struct ReconcileTimer {
    started: Instant,
    runs: Counter,
    duration: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.runs.inc();
        self.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

fn counter_base(name: &'static str) -> &'static str {
    name.strip_suffix("_total").expect("counter names end in _total")
}

fn system(ns: &str, name: &str) -> SystemLabels {
    SystemLabels { referral_namespace: ns.into(), referral_system: name.into() }
}

fn depth_labels(ns: &str, name: &str, depth: u32) -> DepthLabels {
    DepthLabels { referral_namespace: ns.into(), referral_system: name.into(), depth }
}

/// Records `current` as the names exported for `key` and returns the ones that were
/// exported before and are not any more.
fn replace_names(exported: &NamesBySystem, key: SystemLabels, current: BTreeSet<String>) -> Vec<String> {
    let mut exported = exported.lock().unwrap_or_else(PoisonError::into_inner);
    let previous = exported.remove(&key).unwrap_or_default();
    let stale = previous.difference(&current).cloned().collect();
    if !current.is_empty() {
        exported.insert(key, current);
    }
    stale
}

fn is_label_word(value: &str) -> bool {
    !value.is_empty() && value.len() <= 40 && value.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Pairs every allowed label value with its count from `counts` (0 when absent). A
/// value outside `allowed` is a bug in the caller: it fails debug builds and is
/// dropped in release builds, so it can never grow the label set.
fn counted<'a>(
    allowed: &'a [&'static str],
    counts: &'a [(&'static str, i64)],
    what: &'static str,
) -> impl Iterator<Item = (&'static str, i64)> + 'a {
    for (value, _) in counts {
        debug_assert!(allowed.contains(value), "{what} {value:?} is not one of {allowed:?}");
    }
    allowed.iter().map(move |value| {
        let count = counts.iter().filter(|(v, _)| v == value).map(|(_, n)| n).sum();
        (*value, count)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::reconcilers::monitoring::{LABEL_REFERRAL_NAMESPACE, LABEL_REFERRAL_SYSTEM, OPERATOR_METRICS};

    fn series(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .map(str::to_owned)
            .collect()
    }

    fn populated() -> Metrics {
        let metrics = Metrics::new();
        drop(metrics.reconcile_timer());
        metrics.record_failure("kubernetes_api");
        metrics.set_managed_objects("referrals", "main", 17);
        metrics.set_index_states("referrals", "main", &[("present", 4), ("missing", 1)]);
        metrics.set_chain_violations("referrals", "main", &[(ChainViolation::Cycles, 2)]);
        metrics.set_chain_depths("referrals", "main", &[(0, 100), (1, 40), (2, 3)]);
        metrics.set_backup("referrals", "main", Some(1_700_000_000.0), 86_400.0);
        metrics.set_dependencies("referrals", "main", Some(true), Some(false));
        metrics.set_worker_pods("referrals", "main", &[("api".into(), 2, 1)]);
        metrics.set_chain_check_failed("referrals", "main", false);
        metrics.set_maintenance_failed("referrals", "main", &[("cleanup".into(), true)]);
        metrics.set_restore_drill("referrals", "main", Some((1_700_000_000.0, 691_200.0)));
        metrics.set_leader(true);
        metrics.record_recheck("nothing_new");
        metrics.record_probe("mongodb");
        metrics
    }

    #[test]
    fn encode_names_every_metric() {
        let text = populated().encode();
        for name in [
            RECONCILE_RUNS_TOTAL,
            RECONCILE_FAILURES_TOTAL,
            MANAGED_OBJECTS,
            LEADER,
            RECHECKS_TOTAL,
            PROBES_TOTAL,
            MONGODB_HEARTBEATS_TOTAL,
        ]
        .into_iter()
        .chain(OPERATOR_METRICS)
        {
            assert!(!series(&text, name).is_empty(), "no {name} series in\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "no TYPE line for {name} in\n{text}");
        }
        assert!(text.contains(&format!("{RECONCILE_DURATION_SECONDS}_bucket{{le=\"30\"}} 1")), "{text}");
        assert!(text.contains(&format!("{RECONCILE_RUNS_TOTAL} 1\n")), "{text}");
        assert!(text.contains(&format!("{LEADER} 1\n")), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }

    #[test]
    fn per_system_series_carry_the_labels_the_alerts_select_on() {
        let text = populated().encode();
        let selector = format!("{LABEL_REFERRAL_NAMESPACE}=\"referrals\",{LABEL_REFERRAL_SYSTEM}=\"main\"");
        assert!(text.contains(&format!("{OPERATOR_BACKUP_LAST_SUCCESS}{{{selector}}} 1700000000.0")), "{text}");
        assert!(text.contains(&format!("{OPERATOR_INDEXES}{{{selector},state=\"missing\"}} 1")), "{text}");
        assert!(text.contains(&format!("{OPERATOR_CHAIN_VIOLATIONS}{{{selector},kind=\"cycles\"}} 2")), "{text}");
        assert!(text.contains(&format!("{OPERATOR_CHAIN_USERS_BY_DEPTH}{{{selector},depth=\"2\"}} 3")), "{text}");
        // Absent states and kinds read 0, so the whole fixed set is always there.
        assert_eq!(series(&text, OPERATOR_INDEXES).len(), INDEX_STATES.len());
        assert!(text.contains(&format!("{OPERATOR_INDEXES}{{{selector},state=\"conflict\"}} 0")), "{text}");
        assert_eq!(series(&text, OPERATOR_CHAIN_VIOLATIONS).len(), ChainViolation::ALL.len());
    }

    #[test]
    fn failure_labels_stay_a_small_fixed_set() {
        let metrics = Metrics::new();
        for round in 0..500 {
            let category = ["kubernetes_api", "invalid_spec", "dependency"][round % 3];
            metrics.record_failure(category);
        }
        let text = metrics.encode();
        let failures = series(&text, RECONCILE_FAILURES_TOTAL);
        assert_eq!(failures.len(), 3, "{text}");
        assert!(failures.contains(&format!("{RECONCILE_FAILURES_TOTAL}{{category=\"dependency\"}} 166")), "{text}");
        // The only label is `category`: no error text, no object names.
        for line in failures {
            let labels = line.split_once('{').unwrap().1.split_once('}').unwrap().0;
            assert!(labels.starts_with("category=\"") && !labels.contains(','), "{line}");
        }
    }

    #[test]
    #[should_panic(expected = "not a snake_case word")]
    #[cfg(debug_assertions)]
    fn a_failure_category_built_from_text_is_rejected() {
        let text: &'static str = Box::leak(format!("{:?}", "ApiError { code: 409 }").into_boxed_str());
        Metrics::new().record_failure(text);
    }

    #[test]
    #[should_panic(expected = "is not one of")]
    #[cfg(debug_assertions)]
    fn an_unknown_index_state_is_rejected() {
        Metrics::new().set_index_states("referrals", "main", &[("dropped", 1)]);
    }

    #[test]
    fn forget_system_removes_all_of_its_series_and_only_those() {
        let metrics = populated();
        metrics.set_managed_objects("referrals", "other", 3);
        metrics.set_chain_depths("referrals", "other", &[(0, 5)]);
        metrics.forget_system("referrals", "main");
        let text = metrics.encode();
        assert!(!text.contains("referral_system=\"main\""), "{text}");
        assert_eq!(series(&text, MANAGED_OBJECTS).len(), 1, "{text}");
        assert_eq!(series(&text, OPERATOR_CHAIN_USERS_BY_DEPTH).len(), 1, "{text}");
        // Process-wide series are not per system and survive.
        assert_eq!(series(&text, RECONCILE_RUNS_TOTAL).len(), 1, "{text}");
    }

    #[test]
    fn a_drill_removed_from_the_spec_takes_both_its_series_along() {
        let metrics = populated();
        metrics.set_restore_drill("referrals", "main", None);
        let text = metrics.encode();
        assert!(series(&text, OPERATOR_BACKUP_VERIFIED).is_empty(), "{text}");
        assert!(series(&text, OPERATOR_BACKUP_MAX_UNVERIFIED_AGE).is_empty(), "{text}");
    }

    #[test]
    fn workers_and_jobs_that_leave_the_spec_lose_their_series_and_unprobed_dependencies_have_none() {
        let metrics = populated();
        metrics.set_worker_pods("referrals", "main", &[("queue-cleanup".into(), 1, 1)]);
        metrics.set_maintenance_failed("referrals", "main", &[]);
        metrics.set_dependencies("referrals", "main", None, Some(true));
        let text = metrics.encode();
        let pods = series(&text, OPERATOR_WORKER_PODS);
        assert_eq!(pods.len(), 2, "desired and ready of the one worker left: {pods:?}");
        assert!(pods.iter().all(|l| l.contains("worker=\"queue-cleanup\"")), "{pods:?}");
        assert!(series(&text, OPERATOR_MAINTENANCE_JOB_FAILED).is_empty(), "{text}");
        let up = series(&text, OPERATOR_DEPENDENCY_UP);
        assert_eq!(up.len(), 1, "{up:?}");
        assert!(up[0].contains("dependency=\"mongodb\"") && up[0].ends_with(" 1"), "{up:?}");
    }

    #[test]
    fn depths_that_no_longer_occur_lose_their_series() {
        let metrics = Metrics::new();
        metrics.set_chain_depths("referrals", "main", &[(0, 10), (1, 4), (5, 1)]);
        metrics.set_chain_depths("referrals", "main", &[(0, 12), (1, 4)]);
        let depth_series = series(&metrics.encode(), OPERATOR_CHAIN_USERS_BY_DEPTH);
        assert_eq!(depth_series.len(), 2, "{depth_series:?}");
        assert!(depth_series.iter().all(|line| !line.contains("depth=\"5\"")), "{depth_series:?}");
    }

    #[test]
    fn no_backup_yet_means_no_timestamp_series() {
        let metrics = Metrics::new();
        metrics.set_backup("referrals", "main", Some(1_700_000_000.0), 3600.0);
        metrics.set_backup("referrals", "main", None, 3600.0);
        let text = metrics.encode();
        assert!(series(&text, OPERATOR_BACKUP_LAST_SUCCESS).is_empty(), "{text}");
        assert_eq!(series(&text, OPERATOR_BACKUP_INTERVAL).len(), 1, "{text}");
    }

    #[test]
    fn the_timer_counts_runs_on_every_exit_path() {
        let metrics = Metrics::new();
        let failing = || -> Result<(), ()> {
            let _timer = metrics.reconcile_timer();
            Err(())
        };
        assert!(failing().is_err());
        drop(metrics.reconcile_timer());
        let text = metrics.encode();
        assert!(text.contains(&format!("{RECONCILE_RUNS_TOTAL} 2\n")), "{text}");
        assert!(text.contains(&format!("{RECONCILE_DURATION_SECONDS}_count 2\n")), "{text}");
    }

    /// Debian's `promtool check metrics` parses and lints the exposition the way
    /// Prometheus tooling reads it.
    #[test]
    fn promtool_accepts_the_exposition() {
        let Some(promtool) = find_tool("promtool") else {
            if std::env::var("REFOP_ALLOW_MISSING_TOOLS").as_deref() == Ok("1") {
                eprintln!("SKIPPED: promtool not found (REFOP_ALLOW_MISSING_TOOLS=1)");
                return;
            }
            panic!(
                "promtool not found: install Debian package `prometheus` (apt-get install prometheus), \
                 or set REFOP_ALLOW_MISSING_TOOLS=1 to skip this test"
            );
        };
        let text = populated().encode();
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start promtool");
        child.stdin.take().unwrap().write_all(text.as_bytes()).expect("feed promtool");
        let output = child.wait_with_output().expect("run promtool");
        assert!(
            output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
            "promtool check metrics rejected the exposition ({}):\n{}{}\n--- input ---\n{text}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }

    fn find_tool(name: &str) -> Option<std::path::PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
    }
}
