//! Prometheus objects of one system: the PrometheusRule with the guide's alerts
//! (docs/metrics.md, docs/runbooks.md) plus the operator's own, and the ServiceMonitor
//! that scrapes the workers. It also holds the metrics contract (names, labels) that
//! the alerts, the dashboards and the operator's exporter share, so a renamed metric
//! breaks a test, not an alert.
//!
//! Pure: spec in, objects out. It must not talk to a cluster or to Prometheus, and it
//! does not decide whether the prometheus-operator CRDs are installed (the apply step
//! does). The rules are checked by `promtool` in `tests/prometheus_rules.rs`.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::crd::monitoring::{Severity, ThresholdAlert};
use crate::crd::status::ChainViolation;
use crate::crd::validate::ValidatedSystem;

use super::meta::{LABEL_WORKER, MAX_DNS_LABEL, child_name, object_meta, selector_labels};

/// apiVersion of PrometheusRule and ServiceMonitor.
pub const API_VERSION: &str = "monitoring.coreos.com/v1";
const GROUP: &str = "monitoring.coreos.com";
const VERSION: &str = "v1";

/// `app.kubernetes.io/component` of the PrometheusRule and the ServiceMonitor.
pub const COMPONENT: &str = "monitoring";
/// `app.kubernetes.io/component` of the worker Services the ServiceMonitor selects.
pub const WORKER_COMPONENT: &str = "worker";
/// Name of the worker Service port that serves metrics.
pub const METRICS_PORT_NAME: &str = "metrics";
/// Path the workers serve metrics on.
pub const METRICS_PATH: &str = "/metrics";
/// Scrape interval of the workers (docs/metrics.md).
pub const SCRAPE_INTERVAL: &str = "15s";

// Worker metrics: the referral service's contract (docs/metrics.md).
pub const REFERRAL_FAILURES_TOTAL: &str = "referral_failures_total";
pub const REFERRAL_QUEUE_SIZE: &str = "referral_queue_size";
pub const REFERRAL_REWARDS_DISTRIBUTED_TOTAL: &str = "referral_rewards_distributed_total";
/// A histogram: queried as `_bucket`, `_sum` and `_count`.
pub const REFERRAL_PROCESSING_DURATION_SECONDS: &str = "referral_processing_duration_seconds";
pub const REFERRAL_RETRIES_TOTAL: &str = "referral_retries_total";
pub const REFERRAL_TRANSACTIONS_FAILED_TOTAL: &str = "referral_transactions_failed_total";
pub const REFERRAL_ERRORS_TOTAL: &str = "referral_errors_total";
pub const REFERRAL_CACHE_HITS_TOTAL: &str = "referral_cache_hits_total";
pub const REFERRAL_CACHE_MISSES_TOTAL: &str = "referral_cache_misses_total";

/// Every metric the workers are expected to export.
pub const WORKER_METRICS: [&str; 9] = [
    REFERRAL_FAILURES_TOTAL,
    REFERRAL_QUEUE_SIZE,
    REFERRAL_REWARDS_DISTRIBUTED_TOTAL,
    REFERRAL_PROCESSING_DURATION_SECONDS,
    REFERRAL_RETRIES_TOTAL,
    REFERRAL_TRANSACTIONS_FAILED_TOTAL,
    REFERRAL_ERRORS_TOTAL,
    REFERRAL_CACHE_HITS_TOTAL,
    REFERRAL_CACHE_MISSES_TOTAL,
];

// Operator metrics, exported on the operator's own /metrics per system.
/// Unix time of the newest complete backup.
pub const OPERATOR_BACKUP_LAST_SUCCESS: &str = "referral_operator_backup_last_success_timestamp_seconds";
/// Nominal interval of the backup schedule, in seconds.
pub const OPERATOR_BACKUP_INTERVAL: &str = "referral_operator_backup_interval_seconds";
/// Unix time the newest backup Job failed, present only while no backup has
/// completed since (exactly while `BackupHealthy` says `BackupFailed`).
pub const OPERATOR_BACKUP_LAST_FAILURE: &str = "referral_operator_backup_last_failure_timestamp_seconds";
/// Unix time of the newest backup a restore drill restored successfully (the
/// system's creation before the first); present only with `backup.restoreDrill`.
pub const OPERATOR_BACKUP_VERIFIED: &str = "referral_operator_backup_verified_timestamp_seconds";
/// `backup.restoreDrill.maxUnverifiedAge` in seconds; present only with a drill.
pub const OPERATOR_BACKUP_MAX_UNVERIFIED_AGE: &str = "referral_operator_backup_max_unverified_age_seconds";
/// Violations found by the last chain check, by `kind` ([`ChainViolation::label`]).
pub const OPERATOR_CHAIN_VIOLATIONS: &str = "referral_operator_chain_violations";
/// Users per chain depth found by the last chain check, by `depth`.
pub const OPERATOR_CHAIN_USERS_BY_DEPTH: &str = "referral_operator_chain_users_by_depth";
/// Declared indexes by `state` ([`INDEX_STATES`]).
pub const OPERATOR_INDEXES: &str = "referral_operator_indexes";

/// 1 when a dependency answers the operator's probe, 0 when it does not, by
/// `dependency` ([`DEPENDENCIES`]); absent while not probed (a Secret missing).
pub const OPERATOR_DEPENDENCY_UP: &str = "referral_operator_dependency_up";
/// Pods of each worker by `worker` and `state` ([`WORKER_POD_STATES`]).
pub const OPERATOR_WORKER_PODS: &str = "referral_operator_worker_pods";
/// 1 when the last chain check could not run (it reported a failure, or its Job
/// failed before it could), 0 otherwise.
pub const OPERATOR_CHAIN_CHECK_FAILED: &str = "referral_operator_chain_check_failed";
/// 1 when the last finished run of a maintenance job failed, by `job`.
pub const OPERATOR_MAINTENANCE_JOB_FAILED: &str = "referral_operator_maintenance_job_failed";

/// Every per-system metric the operator exports.
pub const OPERATOR_METRICS: [&str; 11] = [
    OPERATOR_BACKUP_LAST_SUCCESS,
    OPERATOR_BACKUP_INTERVAL,
    OPERATOR_BACKUP_VERIFIED,
    OPERATOR_BACKUP_MAX_UNVERIFIED_AGE,
    OPERATOR_CHAIN_VIOLATIONS,
    OPERATOR_CHAIN_USERS_BY_DEPTH,
    OPERATOR_INDEXES,
    OPERATOR_DEPENDENCY_UP,
    OPERATOR_WORKER_PODS,
    OPERATOR_CHAIN_CHECK_FAILED,
    OPERATOR_MAINTENANCE_JOB_FAILED,
];

/// Values of the `dependency` label of [`OPERATOR_DEPENDENCY_UP`].
pub const DEPENDENCIES: [&str; 2] = ["redis", "mongodb"];
/// Values of the `state` label of [`OPERATOR_WORKER_PODS`].
pub const WORKER_POD_STATES: [&str; 2] = ["desired", "ready"];

/// kube-state-metrics' gauge of containers waiting, by `reason`: what tells a
/// crash-looping worker (kube-prometheus-stack ships kube-state-metrics).
pub const KUBE_CONTAINER_WAITING_REASON: &str = "kube_pod_container_status_waiting_reason";

/// Values of the `state` label of [`OPERATOR_INDEXES`].
pub const INDEX_STATES: [&str; 4] = ["present", "created", "missing", "conflict"];

/// Namespace label of operator metrics. Not `namespace`: Prometheus sets that target
/// label to the operator's own namespace, and the two must not clash.
pub const LABEL_REFERRAL_NAMESPACE: &str = "referral_namespace";
/// System label, on operator metrics and (by relabeling) on every worker series.
pub const LABEL_REFERRAL_SYSTEM: &str = "referral_system";
/// Worker label the ServiceMonitor adds to every worker series.
pub const LABEL_SCRAPED_WORKER: &str = "worker";

// The built-in alerts; `crd::validate::builtin_alert_names` lists the same names so a
// user's additional rule cannot shadow one (a unit test keeps the two in step).
pub const ALERT_HIGH_FAILURE_RATE: &str = "ReferralHighFailureRate";
pub const ALERT_QUEUE_BACKLOG: &str = "ReferralQueueBacklog";
pub const ALERT_BACKUP_MISSING: &str = "ReferralBackupMissing";
pub const ALERT_BACKUP_FAILED: &str = "ReferralBackupFailed";
pub const ALERT_BACKUP_UNVERIFIED: &str = "ReferralBackupUnverified";
pub const ALERT_CHAIN_VIOLATIONS: &str = "ReferralChainViolations";
pub const ALERT_INDEX_MISSING: &str = "ReferralIndexMissing";
pub const ALERT_REDIS_UNREACHABLE: &str = "ReferralRedisUnreachable";
pub const ALERT_MONGO_UNREACHABLE: &str = "ReferralMongoUnreachable";
pub const ALERT_WORKERS_UNAVAILABLE: &str = "ReferralWorkersUnavailable";
pub const ALERT_WORKER_CRASH_LOOPING: &str = "ReferralWorkerCrashLooping";
pub const ALERT_CHAIN_CHECK_FAILED: &str = "ReferralChainCheckFailed";
pub const ALERT_MAINTENANCE_JOB_FAILED: &str = "ReferralMaintenanceJobFailed";

/// How long the backup alert waits: one missed scrape or a restarting operator must
/// not page anyone.
const BACKUP_MISSING_FOR: &str = "10m";
/// A failed backup Job is known once it has failed; the wait only rides out an
/// operator restart.
const BACKUP_FAILED_FOR: &str = "1m";
/// Chain-check results change at most once per run, so a short wait only rides out
/// an operator restart.
const CHAIN_VIOLATIONS_FOR: &str = "1m";
/// Long enough for an `Ensure` policy to create a missing index before anyone is paged.
const INDEX_MISSING_FOR: &str = "15m";
/// A dependency down this long is an outage, not a restart or a failover.
const DEPENDENCY_DOWN_FOR: &str = "5m";
/// Longer than a rollout takes with its surge and readiness delays.
const WORKERS_UNAVAILABLE_FOR: &str = "15m";
/// A few back-off rounds: a container that crashes once and recovers is not paged.
const CRASH_LOOPING_FOR: &str = "5m";
/// A failed run stays failed until the next run; the wait only rides out a restart
/// of the operator.
const JOB_FAILED_FOR: &str = "1m";

/// Name of the PrometheusRule.
pub fn prometheus_rule_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "alerts", MAX_DNS_LABEL)
}

/// Name of the ServiceMonitor.
pub fn service_monitor_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "workers", MAX_DNS_LABEL)
}

/// Name of the one rule group in the PrometheusRule.
pub fn rule_group_name(system: &ValidatedSystem) -> String {
    format!("referral-{}", system.name)
}

/// `value` as a PromQL string literal. Namespace and system names are DNS labels
/// today, but a selector must stay correct whatever a label value holds.
pub fn promql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Label matchers selecting this system's worker series (no braces), e.g.
/// `namespace="referrals",referral_system="main"`.
pub fn worker_selector(system: &ValidatedSystem) -> String {
    format!("namespace={},{LABEL_REFERRAL_SYSTEM}={}", promql_string(&system.namespace), promql_string(&system.name))
}

/// Label matchers selecting this system's operator series (no braces).
pub fn operator_selector(system: &ValidatedSystem) -> String {
    format!(
        "{LABEL_REFERRAL_NAMESPACE}={},{LABEL_REFERRAL_SYSTEM}={}",
        promql_string(&system.namespace),
        promql_string(&system.name)
    )
}

/// A threshold as PromQL writes it: `0.1`, `1000`, never `1000.0` or `1e3`.
fn promql_number(value: f64) -> String {
    // Rust's shortest round-trip Display has no exponent and no trailing `.0`
    // for whole numbers, which PromQL parses as written.
    format!("{value}")
}

/// The labels the user asked for plus ours; ours win, because the controller finds its
/// children by them and a user label must not hide a child from it.
fn merged_labels(mut ours: BTreeMap<String, String>, theirs: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    for (key, value) in theirs {
        ours.entry(key.clone()).or_insert_with(|| value.clone());
    }
    ours
}

fn monitoring_object(system: &ValidatedSystem, name: String, kind: &str, plural: &str, spec: Value) -> DynamicObject {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural);
    let mut object = DynamicObject::new(&name, &resource).data(json!({ "spec": spec }));
    let mut metadata = object_meta(system, name, COMPONENT);
    metadata.labels = Some(merged_labels(metadata.labels.unwrap_or_default(), &system.spec.monitoring.labels));
    object.metadata = metadata;
    object
}

/// One built-in alert before it becomes a rule.
struct BuiltinAlert {
    name: &'static str,
    expr: String,
    for_: String,
    severity: Severity,
    summary: String,
    description: String,
}

impl BuiltinAlert {
    fn into_rule(self, system: &ValidatedSystem) -> Value {
        let monitoring = &system.spec.monitoring;
        json!({
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {
                "severity": self.severity.as_str(),
                // Both labels are set statically so every alert of the system routes
                // and silences the same way, whichever series its expression reads.
                "namespace": system.namespace,
                LABEL_REFERRAL_SYSTEM: system.name,
            },
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": format!("{}{}", monitoring.runbook_base_url, self.name.to_lowercase()),
            },
        })
    }
}

fn threshold_alert(
    alert: &ThresholdAlert,
    build: impl FnOnce(&str) -> (&'static str, String, String, String),
) -> Option<BuiltinAlert> {
    if alert.disabled {
        return None;
    }
    let (name, expr, summary, description) = build(&promql_number(alert.threshold));
    Some(BuiltinAlert { name, expr, for_: alert.for_.clone(), severity: alert.severity, summary, description })
}

/// The built-in alerts that are not disabled, in a fixed order.
fn builtin_alerts(system: &ValidatedSystem) -> Vec<BuiltinAlert> {
    let alerts = &system.spec.monitoring.alerts;
    let who = format!("{}/{}", system.namespace, system.name);
    let workers = worker_selector(system);
    let operator = operator_selector(system);
    // Worker alerts keep `namespace` and `referral_system` from the series; per-pod
    // labels are summed away so one alert stands for the whole system.
    let by_system = format!("namespace, {LABEL_REFERRAL_SYSTEM}");
    // Operator gauges are `max`ed per label set first: every operator replica may
    // export the same value, and a sum across replicas would count it twice.
    let by_operator = format!("{LABEL_REFERRAL_NAMESPACE}, {LABEL_REFERRAL_SYSTEM}");
    let mut out = Vec::new();

    out.extend(threshold_alert(&alerts.high_failure_rate, |threshold| {
        (
            ALERT_HIGH_FAILURE_RATE,
            format!("sum by ({by_system}) (rate({REFERRAL_FAILURES_TOTAL}{{{workers}}}[5m])) > {threshold}"),
            format!("Referral rewards are failing in {who}"),
            format!(
                "Reward processing in {who} fails {{{{ printf \"%.3g\" $value }}}} times per second, above {threshold} for {}. \
                 {REFERRAL_FAILURES_TOTAL} by reason says why.",
                alerts.high_failure_rate.for_
            ),
        )
    }));
    // Per queue, as the guide writes it (`referral_queue_size > 1000`): each pod may
    // export the same queue's length, so `max`, not `sum`, per queue.
    out.extend(threshold_alert(&alerts.queue_backlog, |threshold| {
        (
            ALERT_QUEUE_BACKLOG,
            format!("max by ({by_system}, queue) ({REFERRAL_QUEUE_SIZE}{{{workers}}}) > {threshold}"),
            format!("The {{{{ $labels.queue }}}} queue is backing up in {who}"),
            format!(
                "The {{{{ $labels.queue }}}} queue of {who} holds {{{{ $value }}}} items, above {threshold} for {}: \
                 the workers do not keep up.",
                alerts.queue_backlog.for_
            ),
        )
    }));
    if !alerts.backup_missing.disabled {
        out.push(BuiltinAlert {
            name: ALERT_BACKUP_MISSING,
            expr: format!(
                "time() - max by ({by_operator}) ({OPERATOR_BACKUP_LAST_SUCCESS}{{{operator}}}) \
                 > 1.5 * max by ({by_operator}) ({OPERATOR_BACKUP_INTERVAL}{{{operator}}})"
            ),
            for_: BACKUP_MISSING_FOR.into(),
            severity: alerts.backup_missing.severity,
            summary: format!("No recent backup of {who}"),
            description: format!(
                "The newest complete backup of {who} is {{{{ $value | humanizeDuration }}}} old, more than 1.5 times \
                 the backup schedule's interval. A suspended schedule (backup.suspend) raises this alert too; \
                 set monitoring.alerts.backupMissing.disabled if that is intended."
            ),
        });
    }
    if !alerts.backup_failed.disabled {
        out.push(BuiltinAlert {
            name: ALERT_BACKUP_FAILED,
            expr: format!("max by ({by_operator}) ({OPERATOR_BACKUP_LAST_FAILURE}{{{operator}}}) > 0"),
            for_: BACKUP_FAILED_FOR.into(),
            severity: alerts.backup_failed.severity,
            summary: format!("A backup of {who} failed"),
            description: format!(
                "A backup Job of {who} failed at {{{{ $value | humanizeTimestamp }}}} and no backup has completed \
                 since. The earlier backups are kept; the BackupHealthy condition and the BackupFailed event name \
                 the Job and its reason."
            ),
        });
    }
    if !alerts.backup_unverified.disabled && system.spec.backup.restore_drill.is_some() {
        out.push(BuiltinAlert {
            name: ALERT_BACKUP_UNVERIFIED,
            expr: format!(
                "time() - max by ({by_operator}) ({OPERATOR_BACKUP_VERIFIED}{{{operator}}}) \
                 > max by ({by_operator}) ({OPERATOR_BACKUP_MAX_UNVERIFIED_AGE}{{{operator}}})"
            ),
            for_: BACKUP_MISSING_FOR.into(),
            severity: alerts.backup_unverified.severity,
            summary: format!("No recent backup of {who} has been proven to restore"),
            description: format!(
                "The newest backup of {who} that a restore drill restored successfully is {{{{ $value | humanizeDuration }}}} \
                 old, more than backup.restoreDrill.maxUnverifiedAge (or no drill has passed since the system was \
                 created). status.backup.lastVerifiedRestore and the BackupVerified condition say what the last \
                 drill found."
            ),
        });
    }
    if !alerts.chain_violations.disabled {
        out.push(BuiltinAlert {
            name: ALERT_CHAIN_VIOLATIONS,
            expr: format!(
                "sum by ({by_operator}) (max by ({by_operator}, kind) ({OPERATOR_CHAIN_VIOLATIONS}{{{operator}}})) > 0"
            ),
            for_: CHAIN_VIOLATIONS_FOR.into(),
            severity: alerts.chain_violations.severity,
            summary: format!("Referral chains of {who} are broken"),
            description: format!(
                "The last chain check of {who} found {{{{ $value }}}} violations ({}); status.chainCheck lists \
                 examples.",
                ChainViolation::all_named()
            ),
        });
    }
    if !alerts.index_missing.disabled {
        out.push(BuiltinAlert {
            name: ALERT_INDEX_MISSING,
            expr: format!(
                "sum by ({by_operator}) (max by ({by_operator}, state) \
                 ({OPERATOR_INDEXES}{{{operator},state=~\"missing|conflict\"}})) > 0"
            ),
            for_: INDEX_MISSING_FOR.into(),
            severity: alerts.index_missing.severity,
            summary: format!("MongoDB indexes of {who} are missing"),
            description: format!(
                "{{{{ $value }}}} declared MongoDB indexes of {who} are missing or conflict with an existing \
                 index; status.indexes says which and why."
            ),
        });
    }
    for (alert, name, dependency, what, condition) in [
        (&alerts.redis_unreachable, ALERT_REDIS_UNREACHABLE, "redis", "Redis", "RedisReady"),
        (&alerts.mongo_unreachable, ALERT_MONGO_UNREACHABLE, "mongodb", "MongoDB", "MongoReachable"),
    ] {
        if alert.disabled {
            continue;
        }
        out.push(BuiltinAlert {
            name,
            expr: format!(
                "max by ({by_operator}) ({OPERATOR_DEPENDENCY_UP}{{{operator},dependency=\"{dependency}\"}}) == 0"
            ),
            for_: DEPENDENCY_DOWN_FOR.into(),
            severity: alert.severity,
            summary: format!("{what} of {who} is unreachable"),
            description: format!(
                "The operator has not reached {what} of {who} for {DEPENDENCY_DOWN_FOR} (value {{{{ $value }}}}); \
                 the {condition} condition of the ReferralSystem says why (connection, TLS, credentials)."
            ),
        });
    }
    if !alerts.workers_unavailable.disabled {
        out.push(BuiltinAlert {
            name: ALERT_WORKERS_UNAVAILABLE,
            expr: format!(
                "max by ({by_operator}, worker) ({OPERATOR_WORKER_PODS}{{{operator},state=\"desired\"}}) \
                 - max by ({by_operator}, worker) ({OPERATOR_WORKER_PODS}{{{operator},state=\"ready\"}}) > 0"
            ),
            for_: WORKERS_UNAVAILABLE_FOR.into(),
            severity: alerts.workers_unavailable.severity,
            summary: format!("Worker {{{{ $labels.worker }}}} of {who} is short of pods"),
            description: format!(
                "Worker {{{{ $labels.worker }}}} of {who} has had {{{{ $value }}}} fewer ready pods than desired for \
                 {WORKERS_UNAVAILABLE_FOR}; the WorkersAvailable condition names its Deployment."
            ),
        });
    }
    if !alerts.worker_crash_looping.disabled && !system.spec.workers.is_empty() {
        out.push(BuiltinAlert {
            name: ALERT_WORKER_CRASH_LOOPING,
            expr: format!(
                "max by (namespace, pod, container) ({KUBE_CONTAINER_WAITING_REASON}{{namespace={},reason=\"CrashLoopBackOff\",pod=~{}}}) > 0",
                promql_string(&system.namespace),
                promql_string(&worker_pods_regex(system)),
            ),
            for_: CRASH_LOOPING_FOR.into(),
            severity: alerts.worker_crash_looping.severity,
            summary: format!("A worker of {who} is crash-looping"),
            description: format!(
                "Container {{{{ $labels.container }}}} of pod {{{{ $labels.pod }}}} ({who}) has been in \
                 CrashLoopBackOff for {CRASH_LOOPING_FOR} (value {{{{ $value }}}}): it starts and dies. Its previous \
                 logs say why."
            ),
        });
    }
    if !alerts.chain_check_failed.disabled {
        out.push(BuiltinAlert {
            name: ALERT_CHAIN_CHECK_FAILED,
            expr: format!("max by ({by_operator}) ({OPERATOR_CHAIN_CHECK_FAILED}{{{operator}}}) > 0"),
            for_: JOB_FAILED_FOR.into(),
            severity: alerts.chain_check_failed.severity,
            summary: format!("The chain check of {who} could not run"),
            description: format!(
                "The last chain check of {who} did not run to the end (value {{{{ $value }}}}): the ChainIntegrity \
                 condition and status.chainCheck.failure say why. The counts in status are from an older check."
            ),
        });
    }
    if !alerts.maintenance_job_failed.disabled && !system.spec.maintenance.is_empty() {
        out.push(BuiltinAlert {
            name: ALERT_MAINTENANCE_JOB_FAILED,
            expr: format!("max by ({by_operator}, job) ({OPERATOR_MAINTENANCE_JOB_FAILED}{{{operator}}}) > 0"),
            for_: JOB_FAILED_FOR.into(),
            severity: alerts.maintenance_job_failed.severity,
            summary: format!("Maintenance job {{{{ $labels.job }}}} of {who} failed"),
            description: format!(
                "The last run of maintenance job {{{{ $labels.job }}}} of {who} failed (value {{{{ $value }}}}); \
                 status.maintenance has the failed Job and its reason."
            ),
        });
    }
    out
}

/// The names of every worker's pods, as one anchored regular expression:
/// `<deployment>-<replicaset hash>-<pod suffix>`, hyphen-free segments so a pod of
/// another worker whose name extends this one never matches.
fn worker_pods_regex(system: &ValidatedSystem) -> String {
    let deployments: Vec<String> =
        system.spec.workers.iter().map(|w| super::workers::worker_name(system, &w.name)).collect();
    format!("({})-[a-z0-9]+-[a-z0-9]+", deployments.join("|"))
}

/// The `spec` of the PrometheusRule: one group with the enabled built-in alerts, then
/// the user's additional rules exactly as written.
pub fn rule_spec(system: &ValidatedSystem) -> Value {
    let mut rules: Vec<Value> = builtin_alerts(system).into_iter().map(|alert| alert.into_rule(system)).collect();
    rules.extend(
        system
            .spec
            .monitoring
            .additional_rules
            .iter()
            // A plain struct of strings and maps: serialising it cannot fail.
            .map(|rule| serde_json::to_value(rule).unwrap_or(Value::Null)),
    );
    json!({ "groups": [{ "name": rule_group_name(system), "rules": rules }] })
}

/// The PrometheusRule, or `None` when `monitoring.prometheusRule` is false.
pub fn prometheus_rule(system: &ValidatedSystem) -> Option<DynamicObject> {
    if !system.spec.monitoring.prometheus_rule {
        return None;
    }
    Some(monitoring_object(
        system,
        prometheus_rule_name(system),
        "PrometheusRule",
        "prometheusrules",
        rule_spec(system),
    ))
}

/// The ServiceMonitor for the worker Services, or `None` when
/// `monitoring.serviceMonitor` is false.
pub fn service_monitor(system: &ValidatedSystem) -> Option<DynamicObject> {
    if !system.spec.monitoring.service_monitor {
        return None;
    }
    // Prometheus exposes a Service label `a.b/c-d` as `..._label_a_b_c_d`.
    let service_label = |label: &str| {
        let sanitized: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        format!("__meta_kubernetes_service_label_{sanitized}")
    };
    let spec = json!({
        "selector": { "matchLabels": selector_labels(system, WORKER_COMPONENT) },
        // Only this system's namespace: a Service elsewhere with the same labels
        // belongs to another system.
        "namespaceSelector": { "matchNames": [system.namespace] },
        "endpoints": [{
            "port": METRICS_PORT_NAME,
            "path": METRICS_PATH,
            "interval": SCRAPE_INTERVAL,
            "relabelings": [
                {
                    "action": "replace",
                    "sourceLabels": [service_label(super::meta::LABEL_INSTANCE)],
                    "targetLabel": LABEL_REFERRAL_SYSTEM,
                },
                {
                    "action": "replace",
                    "sourceLabels": [service_label(LABEL_WORKER)],
                    "targetLabel": LABEL_SCRAPED_WORKER,
                },
            ],
        }],
    });
    Some(monitoring_object(system, service_monitor_name(system), "ServiceMonitor", "servicemonitors", spec))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::{builtin_alert_names, validate};

    const BASE: &str = r#"
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata:
  name: main
  namespace: referrals
  uid: 12345678-1234-1234-1234-123456789abc
spec:
  image: example/referral-service:1.4.2
  workers:
    - name: reward-processor
      replicas: 2
  mongodb:
    uriSecretRef: {name: referral-mongo, key: uri}
    database: neurolov
  redis:
    managed: {}
"#;

    /// A validated system from [`BASE`] with `monitoring` replaced by `monitoring_yaml`
    /// (a YAML mapping, or empty for the defaults).
    pub(crate) fn system_with(monitoring_yaml: &str) -> ValidatedSystem {
        let mut doc: serde_json::Value = crate::yaml::from_str(BASE).expect("fixture parses");
        if !monitoring_yaml.trim().is_empty() {
            let monitoring: serde_json::Value = crate::yaml::from_str(monitoring_yaml).expect("monitoring parses");
            doc["spec"]["monitoring"] = monitoring;
        }
        let object: ReferralSystem = serde_json::from_value(doc).expect("fixture is a ReferralSystem");
        validate(&object, "referrals").expect("fixture is valid")
    }

    /// [`system_with`] plus one maintenance job.
    fn with_maintenance(monitoring_yaml: &str) -> ValidatedSystem {
        let mut system = system_with(monitoring_yaml);
        system.spec.maintenance = serde_json::from_value(serde_json::json!([
            {"name": "cleanup", "schedule": "0 4 * * 1", "args": ["npm", "run", "cleanup"]}
        ]))
        .unwrap();
        system
    }

    fn rules(system: &ValidatedSystem) -> Vec<Value> {
        let rule = prometheus_rule(system).expect("rule enabled");
        rule.data["spec"]["groups"][0]["rules"].as_array().expect("rules").clone()
    }

    fn rule<'a>(rules: &'a [Value], name: &str) -> &'a Value {
        rules.iter().find(|r| r["alert"] == name).unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn alert_names_match_the_validator() {
        let ours = [
            ALERT_HIGH_FAILURE_RATE,
            ALERT_QUEUE_BACKLOG,
            ALERT_BACKUP_MISSING,
            ALERT_BACKUP_FAILED,
            ALERT_BACKUP_UNVERIFIED,
            ALERT_CHAIN_VIOLATIONS,
            ALERT_INDEX_MISSING,
            ALERT_REDIS_UNREACHABLE,
            ALERT_MONGO_UNREACHABLE,
            ALERT_WORKERS_UNAVAILABLE,
            ALERT_WORKER_CRASH_LOOPING,
            ALERT_CHAIN_CHECK_FAILED,
            ALERT_MAINTENANCE_JOB_FAILED,
        ];
        assert_eq!(ours, builtin_alert_names());
        let mut everything = with_maintenance("");
        everything.spec.backup.restore_drill = Some(crate::crd::RestoreDrillSpec::default());
        let names: Vec<String> = rules(&everything).iter().map(|r| r["alert"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, ours);
        // Without maintenance jobs or a restore drill their alerts have nothing to
        // watch and are left out.
        let names: Vec<String> =
            rules(&system_with("")).iter().map(|r| r["alert"].as_str().unwrap().to_string()).collect();
        let expected: Vec<&str> = ours
            .iter()
            .copied()
            .filter(|a| *a != ALERT_BACKUP_UNVERIFIED && *a != ALERT_MAINTENANCE_JOB_FAILED)
            .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn prometheus_rule_has_exact_name_labels_and_owner() {
        let system = system_with("labels: {release: prometheus}");
        let rule = prometheus_rule(&system).expect("enabled by default");
        let types = rule.types.as_ref().expect("types");
        assert_eq!(types.api_version, API_VERSION);
        assert_eq!(types.kind, "PrometheusRule");
        assert_eq!(rule.metadata.name.as_deref(), Some("main-alerts"));
        assert_eq!(rule.metadata.namespace.as_deref(), Some("referrals"));
        let labels = rule.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["release"], "prometheus");
        assert_eq!(labels["app.kubernetes.io/component"], "monitoring");
        assert_eq!(labels["app.kubernetes.io/instance"], "main");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "referral-operator");
        let owners = rule.metadata.owner_references.as_ref().expect("owner");
        assert_eq!(owners[0].uid, "12345678-1234-1234-1234-123456789abc");
        assert_eq!(owners[0].kind, "ReferralSystem");
        assert_eq!(rule.data["spec"]["groups"][0]["name"], "referral-main");
        let json = serde_json::to_value(&rule).unwrap();
        assert_eq!(json["apiVersion"], API_VERSION);
        assert!(json["spec"]["groups"].is_array(), "spec is top-level: {json}");
    }

    #[test]
    fn user_labels_never_replace_the_operator_labels() {
        let system = system_with("labels: {app.kubernetes.io/instance: other, team: growth}");
        for object in [prometheus_rule(&system).unwrap(), service_monitor(&system).unwrap()] {
            let labels = object.metadata.labels.unwrap();
            assert_eq!(labels["app.kubernetes.io/instance"], "main");
            assert_eq!(labels["team"], "growth");
        }
    }

    #[test]
    fn no_owner_reference_without_a_uid() {
        let mut system = system_with("");
        system.uid = None;
        assert!(prometheus_rule(&system).unwrap().metadata.owner_references.is_none());
        assert!(service_monitor(&system).unwrap().metadata.owner_references.is_none());
    }

    #[test]
    fn disabled_objects_are_not_built() {
        let system = system_with("prometheusRule: false\nserviceMonitor: false");
        assert!(prometheus_rule(&system).is_none());
        assert!(service_monitor(&system).is_none());
    }

    #[test]
    fn default_alerts_use_the_guide_thresholds_and_select_this_system() {
        let rules = rules(&system_with(""));
        let failure = rule(&rules, ALERT_HIGH_FAILURE_RATE);
        assert_eq!(
            failure["expr"],
            "sum by (namespace, referral_system) (rate(referral_failures_total{namespace=\"referrals\",referral_system=\"main\"}[5m])) > 0.1"
        );
        assert_eq!(failure["for"], "5m");
        assert_eq!(failure["labels"]["severity"], "warning");
        assert_eq!(failure["labels"]["referral_system"], "main");
        assert_eq!(failure["labels"]["namespace"], "referrals");
        let backlog = rule(&rules, ALERT_QUEUE_BACKLOG);
        assert_eq!(
            backlog["expr"],
            "max by (namespace, referral_system, queue) (referral_queue_size{namespace=\"referrals\",referral_system=\"main\"}) > 1000",
            "per queue, as the guide writes it"
        );
        assert_eq!(backlog["for"], "10m");
        let redis = rule(&rules, ALERT_REDIS_UNREACHABLE);
        assert_eq!(
            redis["expr"],
            "max by (referral_namespace, referral_system) (referral_operator_dependency_up{referral_namespace=\"referrals\",referral_system=\"main\",dependency=\"redis\"}) == 0"
        );
        assert_eq!((redis["for"].as_str(), redis["labels"]["severity"].as_str()), (Some("5m"), Some("critical")));
        let crash = rule(&rules, ALERT_WORKER_CRASH_LOOPING);
        assert_eq!(
            crash["expr"],
            "max by (namespace, pod, container) (kube_pod_container_status_waiting_reason{namespace=\"referrals\",reason=\"CrashLoopBackOff\",pod=~\"(main-reward-processor)-[a-z0-9]+-[a-z0-9]+\"}) > 0"
        );
        let backup = rule(&rules, ALERT_BACKUP_MISSING);
        let expr = backup["expr"].as_str().unwrap();
        assert!(expr.contains("referral_operator_backup_last_success_timestamp_seconds{referral_namespace=\"referrals\",referral_system=\"main\"}"), "{expr}");
        assert!(expr.contains("> 1.5 * max by"), "{expr}");
        assert_eq!(backup["for"], "10m");
        let chain = rule(&rules, ALERT_CHAIN_VIOLATIONS);
        assert!(chain["expr"].as_str().unwrap().ends_with(") > 0"));
        let index = rule(&rules, ALERT_INDEX_MISSING);
        assert!(index["expr"].as_str().unwrap().contains("state=~\"missing|conflict\""));
        assert_eq!(index["for"], "15m");
    }

    #[test]
    fn every_alert_has_summary_description_and_runbook() {
        let rules = rules(&with_maintenance("runbookBaseUrl: https://runbooks.example/referral#"));
        assert_eq!(rules.len(), 12);
        for rule in &rules {
            let name = rule["alert"].as_str().unwrap();
            let annotations = &rule["annotations"];
            assert_eq!(
                annotations["runbook_url"],
                format!("https://runbooks.example/referral#{}", name.to_lowercase())
            );
            assert!(annotations["summary"].as_str().unwrap().contains("referrals/main"), "{name}");
            assert!(annotations["description"].as_str().unwrap().contains("$value"), "{name}");
        }
    }

    #[test]
    fn runbook_has_a_section_for_every_builtin_alert() {
        let runbook = include_str!("../../docs/runbooks.md");
        for name in builtin_alert_names() {
            assert!(runbook.contains(&format!("\n## {name}\n")), "docs/runbooks.md lacks a `## {name}` section");
        }
    }

    #[test]
    fn custom_thresholds_and_severities_are_used() {
        let system = system_with(
            r#"
alerts:
  highFailureRate: {threshold: 0.25, for: 2m, severity: critical}
  queueBacklog: {threshold: 5000, for: 30m}
  backupMissing: {severity: critical}
"#,
        );
        let rules = rules(&system);
        let failure = rule(&rules, ALERT_HIGH_FAILURE_RATE);
        assert!(failure["expr"].as_str().unwrap().ends_with("[5m])) > 0.25"));
        assert_eq!(failure["for"], "2m");
        assert_eq!(failure["labels"]["severity"], "critical");
        let backlog = rule(&rules, ALERT_QUEUE_BACKLOG);
        assert!(backlog["expr"].as_str().unwrap().ends_with(" > 5000"));
        assert_eq!(backlog["for"], "30m");
        assert_eq!(backlog["labels"]["severity"], "warning");
        assert_eq!(rule(&rules, ALERT_BACKUP_MISSING)["labels"]["severity"], "critical");
    }

    #[test]
    fn a_disabled_alert_is_left_out_and_the_others_stay() {
        let system = system_with(
            "alerts: {queueBacklog: {disabled: true, threshold: 1000, for: 10m}, chainViolations: {disabled: true}}",
        );
        let names: Vec<String> = rules(&system).iter().map(|r| r["alert"].as_str().unwrap().to_string()).collect();
        assert_eq!(
            names,
            [
                ALERT_HIGH_FAILURE_RATE,
                ALERT_BACKUP_MISSING,
                ALERT_BACKUP_FAILED,
                ALERT_INDEX_MISSING,
                ALERT_REDIS_UNREACHABLE,
                ALERT_MONGO_UNREACHABLE,
                ALERT_WORKERS_UNAVAILABLE,
                ALERT_WORKER_CRASH_LOOPING,
                ALERT_CHAIN_CHECK_FAILED
            ]
        );
    }

    #[test]
    fn additional_rules_are_appended_as_written() {
        let system = system_with(
            r#"
additionalRules:
  - alert: RewardLatencyHigh
    expr: histogram_quantile(0.99, sum by (le) (rate(referral_processing_duration_seconds_bucket[5m]))) > 2
    for: 10m
    labels: {severity: critical}
    annotations: {summary: slow rewards}
  - alert: NoCacheHits
    expr: sum(rate(referral_cache_hits_total[5m])) == 0
"#,
        );
        let rules = rules(&system);
        assert_eq!(rules.len(), 13);
        assert_eq!(
            rules[11],
            json!({
                "alert": "RewardLatencyHigh",
                "expr": "histogram_quantile(0.99, sum by (le) (rate(referral_processing_duration_seconds_bucket[5m]))) > 2",
                "for": "10m",
                "labels": {"severity": "critical"},
                "annotations": {"summary": "slow rewards"},
            })
        );
        assert_eq!(rules[12], json!({"alert": "NoCacheHits", "expr": "sum(rate(referral_cache_hits_total[5m])) == 0"}));
    }

    #[test]
    fn thresholds_are_written_without_noise() {
        assert_eq!(promql_number(0.1), "0.1");
        assert_eq!(promql_number(1000.0), "1000");
        assert_eq!(promql_number(0.0), "0");
        assert_eq!(promql_number(2.5e6), "2500000");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(promql_string("main"), "\"main\"");
        assert_eq!(promql_string(r#"a"b\c"#), r#""a\"b\\c""#);
        let mut system = system_with("");
        system.name = "we\"ird".into();
        assert_eq!(worker_selector(&system), r#"namespace="referrals",referral_system="we\"ird""#);
    }

    #[test]
    fn service_monitor_scrapes_this_systems_workers() {
        let system = system_with("labels: {release: prometheus}");
        let monitor = service_monitor(&system).expect("enabled by default");
        assert_eq!(monitor.types.as_ref().unwrap().kind, "ServiceMonitor");
        assert_eq!(monitor.metadata.name.as_deref(), Some("main-workers"));
        assert_eq!(monitor.metadata.labels.as_ref().unwrap()["release"], "prometheus");
        assert!(monitor.metadata.owner_references.is_some());
        assert_eq!(
            monitor.data["spec"],
            json!({
                "selector": {"matchLabels": {
                    "app.kubernetes.io/name": "referral-system",
                    "app.kubernetes.io/instance": "main",
                    "app.kubernetes.io/component": "worker",
                }},
                "namespaceSelector": {"matchNames": ["referrals"]},
                "endpoints": [{
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": [
                        {"action": "replace", "sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_instance"], "targetLabel": "referral_system"},
                        {"action": "replace", "sourceLabels": ["__meta_kubernetes_service_label_referral_dev_worker"], "targetLabel": "worker"},
                    ],
                }],
            })
        );
    }
}
