//! Metrics scraping, alert rules and dashboards.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the system is watched: the workers' metrics endpoint, a ServiceMonitor,
/// a PrometheusRule with the guide's alerts and the operator's own, and Grafana
/// dashboards. ServiceMonitor and PrometheusRule are only created when the
/// prometheus-operator CRDs are installed; a condition says so otherwise.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Port the workers serve `/metrics` on (METRICS_PORT). Default 9090.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: i32,
    /// Create a ServiceMonitor for the workers. Default true.
    #[serde(default = "default_true")]
    pub service_monitor: bool,
    /// Create a PrometheusRule with the alerts below. Default true.
    #[serde(default = "default_true")]
    pub prometheus_rule: bool,
    /// Extra labels on the PrometheusRule and ServiceMonitor, so your Prometheus'
    /// `ruleSelector`/`serviceMonitorSelector` picks them up (e.g. `release: prometheus`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Base of every alert's `runbook_url`; the alert name is appended.
    #[serde(default = "default_runbook_base")]
    #[schemars(length(min = 1))]
    pub runbook_base_url: String,
    /// Thresholds of the built-in alerts.
    #[serde(default)]
    pub alerts: AlertsSpec,
    /// Your own alerting rules, added to the same PrometheusRule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub additional_rules: Vec<AlertRuleSpec>,
    /// Grafana dashboards as ConfigMaps for the Grafana sidecar.
    #[serde(default)]
    pub dashboards: DashboardsSpec,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self {
            metrics_port: default_metrics_port(),
            service_monitor: true,
            prometheus_rule: true,
            labels: BTreeMap::new(),
            runbook_base_url: default_runbook_base(),
            alerts: AlertsSpec::default(),
            additional_rules: Vec::new(),
            dashboards: DashboardsSpec::default(),
        }
    }
}

/// The built-in alerts. Each can be disabled on its own.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertsSpec {
    /// Failed rewards per second above `threshold` (guide: 0.1 for 5m).
    #[serde(default = "default_high_failure_rate")]
    pub high_failure_rate: ThresholdAlert,
    /// A queue longer than `threshold` items, each queue on its own, as the guide
    /// writes it (1000 for 10m).
    #[serde(default = "default_queue_backlog")]
    pub queue_backlog: ThresholdAlert,
    /// No successful backup for 1.5 schedule intervals (threshold ignored).
    #[serde(default = "default_enabled_alert")]
    pub backup_missing: ToggleAlert,
    /// The newest backup Job failed and no backup has completed since (threshold
    /// ignored).
    #[serde(default = "default_enabled_alert")]
    pub backup_failed: ToggleAlert,
    /// The newest backup a restore drill restored successfully is older than
    /// `backup.restoreDrill.maxUnverifiedAge` (only with a drill; threshold ignored).
    #[serde(default = "default_enabled_alert")]
    pub backup_unverified: ToggleAlert,
    /// The last chain check found violations (threshold ignored).
    #[serde(default = "default_enabled_alert")]
    pub chain_violations: ToggleAlert,
    /// An index is missing or conflicting (threshold ignored).
    #[serde(default = "default_enabled_alert")]
    pub index_missing: ToggleAlert,
    /// The operator's probe of Redis (AUTH and PING) has failed for 5 minutes.
    /// Default severity critical.
    #[serde(default = "default_critical_alert")]
    pub redis_unreachable: ToggleAlert,
    /// The operator's probe of MongoDB has failed for 5 minutes. Default severity
    /// critical.
    #[serde(default = "default_critical_alert")]
    pub mongo_unreachable: ToggleAlert,
    /// A worker has had fewer ready pods than desired for 15 minutes.
    #[serde(default = "default_enabled_alert")]
    pub workers_unavailable: ToggleAlert,
    /// A worker's container has been in CrashLoopBackOff for 5 minutes (read from
    /// kube-state-metrics).
    #[serde(default = "default_enabled_alert")]
    pub worker_crash_looping: ToggleAlert,
    /// The last chain check could not run (it reported a failure, or its Job died).
    #[serde(default = "default_enabled_alert")]
    pub chain_check_failed: ToggleAlert,
    /// The last run of a maintenance job failed.
    #[serde(default = "default_enabled_alert")]
    pub maintenance_job_failed: ToggleAlert,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        Self {
            high_failure_rate: default_high_failure_rate(),
            queue_backlog: default_queue_backlog(),
            backup_missing: default_enabled_alert(),
            backup_failed: default_enabled_alert(),
            backup_unverified: default_enabled_alert(),
            chain_violations: default_enabled_alert(),
            index_missing: default_enabled_alert(),
            redis_unreachable: default_critical_alert(),
            mongo_unreachable: default_critical_alert(),
            workers_unavailable: default_enabled_alert(),
            worker_crash_looping: default_enabled_alert(),
            chain_check_failed: default_enabled_alert(),
            maintenance_job_failed: default_enabled_alert(),
        }
    }
}

/// An alert that fires when a value stays above a threshold.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdAlert {
    /// Turn this alert off. Default false.
    #[serde(default)]
    pub disabled: bool,
    /// Value above which the alert fires.
    #[schemars(range(min = 0.0))]
    pub threshold: f64,
    /// How long the value must stay above the threshold, e.g. `5m`: a Prometheus
    /// duration, units largest first (`1h30m`, not `30m1h`).
    #[serde(rename = "for")]
    #[schemars(length(min = 1, max = 64), pattern(super::duration::PROMETHEUS_DURATION_PATTERN))]
    pub for_: String,
    /// `severity` label. Default warning.
    #[serde(default = "default_severity")]
    pub severity: Severity,
}

/// An alert without a threshold.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToggleAlert {
    /// Turn this alert off. Default false.
    #[serde(default)]
    pub disabled: bool,
    /// `severity` label. Default warning.
    #[serde(default = "default_severity")]
    pub severity: Severity,
}

/// Alert severities.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One extra Prometheus alerting rule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleSpec {
    /// Alert name, e.g. `RewardLatencyHigh`.
    #[schemars(pattern(r"^[a-zA-Z_][a-zA-Z0-9_]*$"))]
    pub alert: String,
    /// PromQL expression.
    #[schemars(length(min = 1))]
    pub expr: String,
    /// Pending period, e.g. `5m`: a Prometheus duration, units largest first.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(super::duration::PROMETHEUS_DURATION_PATTERN))]
    pub for_: Option<String>,
    /// Labels of the alert.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the alert (summary, description, runbook_url).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Grafana dashboards shipped as ConfigMaps.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardsSpec {
    /// Create the performance and error dashboards. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Labels the Grafana sidecar selects on. Default `grafana_dashboard: "1"`.
    #[serde(default = "default_dashboard_labels")]
    pub labels: BTreeMap<String, String>,
}

impl Default for DashboardsSpec {
    fn default() -> Self {
        Self { enabled: true, labels: default_dashboard_labels() }
    }
}

fn default_metrics_port() -> i32 {
    9090
}
fn default_true() -> bool {
    true
}
fn default_runbook_base() -> String {
    "https://github.com/referral-dev/referral-operator/blob/main/docs/runbooks.md#".into()
}
fn default_severity() -> Severity {
    Severity::Warning
}
fn default_high_failure_rate() -> ThresholdAlert {
    ThresholdAlert { disabled: false, threshold: 0.1, for_: "5m".into(), severity: Severity::Warning }
}
fn default_queue_backlog() -> ThresholdAlert {
    ThresholdAlert { disabled: false, threshold: 1000.0, for_: "10m".into(), severity: Severity::Warning }
}
fn default_enabled_alert() -> ToggleAlert {
    ToggleAlert { disabled: false, severity: Severity::Warning }
}
fn default_critical_alert() -> ToggleAlert {
    ToggleAlert { disabled: false, severity: Severity::Critical }
}
fn default_dashboard_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("grafana_dashboard".to_string(), "1".to_string())])
}
