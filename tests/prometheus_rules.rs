//! The PrometheusRule checked by Prometheus itself: `promtool check rules` on the
//! rendered groups (default and fully customised), then `promtool test rules` with
//! input series that must make each built-in alert fire after its `for`, and must not
//! below its threshold, for another system, or for another Deployment's pods. Also the dashboards' structure as a
//! Grafana user would load them from the ConfigMaps.
//!
//! promtool comes from Debian's `prometheus` package. Without it these tests fail,
//! unless REFOP_ALLOW_MISSING_TOOLS=1 is set.

mod support;

use std::path::Path;
use std::process::Command;

use referral_operator::crd::ReferralSystem;
use referral_operator::crd::validate::{ValidatedSystem, builtin_alert_names, validate};
use referral_operator::reconcilers::dashboards::{ERRORS_KEY, PERFORMANCE_KEY, dashboard_config_map};
use referral_operator::reconcilers::monitoring::prometheus_rule;
use regex::Regex;
use serde_json::{Value, json};

const INSTALL_HINT: &str = "install Debian package prometheus";

const SYSTEM: &str = r#"
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
  backup:
    restoreDrill: {maxUnverifiedAge: 2h}
  maintenance:
    - {name: cleanup, schedule: "0 4 * * 1", args: [npm, run, cleanup]}
"#;

/// Every built-in alert changed from its default, plus an additional rule.
const CUSTOMISED: &str = r#"
labels: {release: prometheus}
runbookBaseUrl: "https://runbooks.example/referral#"
alerts:
  highFailureRate: {threshold: 0.5, for: 2m, severity: critical}
  queueBacklog: {threshold: 250, for: 15m, severity: info}
  backupMissing: {severity: critical}
  chainViolations: {severity: critical}
  indexMissing: {severity: info}
additionalRules:
  - alert: RewardLatencyHigh
    expr: histogram_quantile(0.99, sum by (le) (rate(referral_processing_duration_seconds_bucket{referral_system="main"}[5m]))) > 2
    for: 10m
    labels: {severity: warning}
    annotations:
      summary: Rewards are slow
      runbook_url: https://runbooks.example/referral#rewardlatencyhigh
"#;

fn system(monitoring: Option<&str>) -> ValidatedSystem {
    let mut doc: serde_norway::Value = serde_norway::from_str(SYSTEM).unwrap();
    if let Some(monitoring) = monitoring {
        doc["spec"]["monitoring"] = serde_norway::from_str(monitoring).unwrap();
    }
    let object: ReferralSystem = serde_norway::from_value(doc).unwrap();
    validate(&object, "referrals").unwrap()
}

/// The `spec` of the rendered PrometheusRule: exactly the document Prometheus loads.
fn rule_groups(system: &ValidatedSystem) -> Value {
    prometheus_rule(system).expect("PrometheusRule enabled").data["spec"].clone()
}

fn rule<'a>(groups: &'a Value, alert: &str) -> &'a Value {
    groups["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("{alert} not rendered"))
}

fn write_yaml(dir: &Path, name: &str, value: &Value) {
    std::fs::write(dir.join(name), serde_norway::to_string(value).unwrap()).unwrap();
}

fn promtool(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("promtool").args(args).current_dir(dir).output().expect("promtool runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    println!("promtool {}:\n{text}", args.join(" "));
    text
}

/// The annotations Prometheus will send: the rule's, with the `$value` template
/// rendered as `value` and `$labels.X` as the alert's label X. Comparing them whole
/// also proves the templates expand.
fn expected_annotations(rule: &Value, value: &str, labels: &Value) -> Value {
    let value_template = Regex::new(r"\{\{[^}]*\$value[^}]*\}\}").unwrap();
    let label_template = Regex::new(r"\{\{ \$labels\.([a-z_]+) \}\}").unwrap();
    let mut annotations = rule["annotations"].clone();
    for (_, text) in annotations.as_object_mut().unwrap() {
        let with_value = value_template.replace_all(text.as_str().unwrap(), value).into_owned();
        let rendered = label_template
            .replace_all(&with_value, |c: &regex::Captures| labels[&c[1]].as_str().unwrap_or_default().to_string())
            .into_owned();
        *text = json!(rendered);
    }
    annotations
}

/// One firing alert as promtool expects it. `labels` are the series labels the
/// expression keeps; the rule's static labels are added.
fn firing(rule: &Value, series_labels: Value, value: &str) -> Value {
    let mut labels = series_labels;
    for (key, value) in rule["labels"].as_object().unwrap() {
        labels[key] = value.clone();
    }
    let annotations = expected_annotations(rule, value, &labels);
    json!({ "exp_labels": labels, "exp_annotations": annotations })
}

fn with(mut labels: Value, key: &str, value: &str) -> Value {
    labels[key] = json!(value);
    labels
}

fn worker_labels() -> Value {
    json!({ "namespace": "referrals", "referral_system": "main" })
}

fn operator_labels() -> Value {
    json!({ "referral_namespace": "referrals", "referral_system": "main" })
}

fn check(alert: &str, eval_time: &str, exp_alerts: Vec<Value>) -> Value {
    json!({ "alertname": alert, "eval_time": eval_time, "exp_alerts": exp_alerts })
}

/// Operator series as two operator replicas export them: the alerts must not double
/// count. `extra` is the label set inside the braces after the system's labels.
/// `referral_operator_worker_pods` of one worker of `main`, desired and ready.
fn worker_pods(worker: &str, desired: &str, ready: &str) -> Vec<Value> {
    let mut series = Vec::new();
    for (state, values) in [("desired", desired), ("ready", ready)] {
        let labels = format!(",worker=\"{worker}\",state=\"{state}\"");
        series.extend(operator_series("referral_operator_worker_pods", &labels, values));
    }
    series
}

fn operator_series(metric: &str, extra: &str, values: &str) -> Vec<Value> {
    ["operator-0", "operator-1"]
        .iter()
        .map(|pod| {
            json!({
                "series": format!(
                    "{metric}{{namespace=\"referral-operator\",pod=\"{pod}\",referral_namespace=\"referrals\",referral_system=\"main\"{extra}}}"
                ),
                "values": values,
            })
        })
        .collect()
}

fn worker_series(metric: &str, extra: &str, values: &str) -> Value {
    json!({
        "series": format!("{metric}{{namespace=\"referrals\",referral_system=\"main\"{extra}}}"),
        "values": values,
    })
}

/// A noisy neighbour: another system in the same namespace, far above every threshold.
fn other_system_series() -> Vec<Value> {
    let mut series = vec![
        json!({"series": "referral_failures_total{namespace=\"referrals\",referral_system=\"other\",reason=\"timeout\"}", "values": "0+600x200"}),
        json!({"series": "referral_queue_size{namespace=\"referrals\",referral_system=\"other\",queue=\"rewards\"}", "values": "100000x200"}),
        json!({"series": "referral_operator_chain_violations{referral_namespace=\"referrals\",referral_system=\"other\",kind=\"cycles\"}", "values": "50x200"}),
        json!({"series": "referral_operator_indexes{referral_namespace=\"referrals\",referral_system=\"other\",state=\"missing\"}", "values": "3x200"}),
    ];
    series.push(json!({"series": "referral_operator_backup_last_success_timestamp_seconds{referral_namespace=\"referrals\",referral_system=\"other\"}", "values": "0x200"}));
    series.push(json!({"series": "referral_operator_backup_interval_seconds{referral_namespace=\"referrals\",referral_system=\"other\"}", "values": "60x200"}));
    for (metric, extra) in [
        ("referral_operator_dependency_up", ",dependency=\"redis\""),
        ("referral_operator_dependency_up", ",dependency=\"mongodb\""),
    ] {
        series.push(json!({"series": format!("{metric}{{referral_namespace=\"referrals\",referral_system=\"other\"{extra}}}"), "values": "0x200"}));
    }
    series.push(json!({"series": "referral_operator_worker_pods{referral_namespace=\"referrals\",referral_system=\"other\",worker=\"api\",state=\"desired\"}", "values": "5x200"}));
    series.push(json!({"series": "referral_operator_worker_pods{referral_namespace=\"referrals\",referral_system=\"other\",worker=\"api\",state=\"ready\"}", "values": "0x200"}));
    series.push(json!({"series": "referral_operator_chain_check_failed{referral_namespace=\"referrals\",referral_system=\"other\"}", "values": "1x200"}));
    series.push(json!({"series": "referral_operator_maintenance_job_failed{referral_namespace=\"referrals\",referral_system=\"other\",job=\"cleanup\"}", "values": "1x200"}));
    // Crash-looping pods that are not main's workers: another system's, and one whose
    // name only starts like main's worker's (another Deployment's pods).
    for pod in ["other-reward-processor-5d9f8b7c4-abcde", "main-reward-processor-extra-5d9f8b7c4-abcde"] {
        series.push(json!({"series": format!("kube_pod_container_status_waiting_reason{{namespace=\"referrals\",pod=\"{pod}\",container=\"c\",reason=\"CrashLoopBackOff\"}}"), "values": "1x200"}));
    }
    series
}

/// Series of `main` well above the default thresholds, with the alerts they must
/// raise, and when.
fn above_default_thresholds(groups: &Value) -> Value {
    let mut series = vec![
        // 9 failures a minute on one pod, none on another: 0.15/s > 0.1.
        worker_series("referral_failures_total", ",pod=\"a\",reason=\"timeout\"", "0+9x200"),
        worker_series("referral_failures_total", ",pod=\"b\",reason=\"timeout\"", "0+0x200"),
        // The rewards queue is long (two pods export it: counted once); cleanup is not,
        // and their sum does not count.
        worker_series("referral_queue_size", ",pod=\"a\",queue=\"rewards\"", "1100x200"),
        worker_series("referral_queue_size", ",pod=\"b\",queue=\"rewards\"", "1100x200"),
        worker_series("referral_queue_size", ",pod=\"a\",queue=\"cleanup\"", "500x200"),
        // main's worker crash-loops.
        json!({"series": "kube_pod_container_status_waiting_reason{namespace=\"referrals\",pod=\"main-reward-processor-5d9f8b7c4-x7k2p\",container=\"reward-processor\",reason=\"CrashLoopBackOff\"}", "values": "1x200"}),
    ];
    // Redis is down, MongoDB is up; one worker short of a pod, another whole.
    series.extend(operator_series("referral_operator_dependency_up", ",dependency=\"redis\"", "0x200"));
    series.extend(operator_series("referral_operator_dependency_up", ",dependency=\"mongodb\"", "1x200"));
    series.extend(worker_pods("reward-processor", "2x200", "1x200"));
    series.extend(worker_pods("api", "1x200", "1x200"));
    series.extend(operator_series("referral_operator_chain_check_failed", "", "1x200"));
    series.extend(operator_series("referral_operator_maintenance_job_failed", ",job=\"cleanup\"", "1x200"));
    series.extend(operator_series("referral_operator_maintenance_job_failed", ",job=\"stats\"", "0x200"));
    // Hourly backups, the last success at time 0: overdue after 90 minutes.
    series.extend(operator_series("referral_operator_backup_last_success_timestamp_seconds", "", "0x200"));
    series.extend(operator_series("referral_operator_backup_interval_seconds", "", "3600x200"));
    // A backup Job failed (at unix time 1000); a success clears the series at 30m.
    series.extend(operator_series("referral_operator_backup_last_failure_timestamp_seconds", "", "1000x30 _x170"));
    // The newest backup a drill restored is from time 0, the limit 2 hours: over it
    // after 120m, firing 10m later.
    series.extend(operator_series("referral_operator_backup_verified_timestamp_seconds", "", "0x200"));
    series.extend(operator_series("referral_operator_backup_max_unverified_age_seconds", "", "7200x200"));
    // 2 cycles + 1 orphan, reported by both operator replicas: 3, not 6.
    series.extend(operator_series("referral_operator_chain_violations", ",kind=\"cycles\"", "2x200"));
    series.extend(operator_series("referral_operator_chain_violations", ",kind=\"orphans\"", "1x200"));
    series.extend(operator_series("referral_operator_chain_violations", ",kind=\"too_deep\"", "0x200"));
    series.extend(operator_series("referral_operator_indexes", ",state=\"present\"", "5x200"));
    series.extend(operator_series("referral_operator_indexes", ",state=\"missing\"", "1x200"));
    series.extend(other_system_series());

    let failure = rule(groups, "ReferralHighFailureRate");
    let backlog = rule(groups, "ReferralQueueBacklog");
    let backup = rule(groups, "ReferralBackupMissing");
    let backup_failed = rule(groups, "ReferralBackupFailed");
    let unverified = rule(groups, "ReferralBackupUnverified");
    let chain = rule(groups, "ReferralChainViolations");
    let index = rule(groups, "ReferralIndexMissing");
    let redis = rule(groups, "ReferralRedisUnreachable");
    let workers = rule(groups, "ReferralWorkersUnavailable");
    let crash = rule(groups, "ReferralWorkerCrashLooping");
    let check_failed = rule(groups, "ReferralChainCheckFailed");
    let maintenance = rule(groups, "ReferralMaintenanceJobFailed");
    let crash_labels = json!({
        "namespace": "referrals", "pod": "main-reward-processor-5d9f8b7c4-x7k2p", "container": "reward-processor"
    });
    json!({
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            check("ReferralRedisUnreachable", "4m", vec![]),
            check("ReferralRedisUnreachable", "10m", vec![firing(redis, operator_labels(), "0")]),
            check("ReferralMongoUnreachable", "30m", vec![]),
            check("ReferralWorkersUnavailable", "10m", vec![]),
            check("ReferralWorkersUnavailable", "20m", vec![firing(workers, with(operator_labels(), "worker", "reward-processor"), "1")]),
            check("ReferralWorkerCrashLooping", "3m", vec![]),
            check("ReferralWorkerCrashLooping", "10m", vec![firing(crash, crash_labels, "1")]),
            check("ReferralChainCheckFailed", "5m", vec![firing(check_failed, operator_labels(), "1")]),
            check("ReferralMaintenanceJobFailed", "5m", vec![firing(maintenance, with(operator_labels(), "job", "cleanup"), "1")]),
            // Pending, not firing, before `for` has passed.
            check("ReferralHighFailureRate", "4m", vec![]),
            check("ReferralHighFailureRate", "10m", vec![firing(failure, worker_labels(), "0.15")]),
            check("ReferralQueueBacklog", "5m", vec![]),
            check("ReferralQueueBacklog", "15m", vec![firing(backlog, with(worker_labels(), "queue", "rewards"), "1100")]),
            check("ReferralBackupMissing", "60m", vec![]),
            check("ReferralBackupMissing", "120m", vec![firing(backup, operator_labels(), "2h 0m 0s")]),
            check("ReferralBackupFailed", "0m", vec![]),
            check("ReferralBackupFailed", "5m", vec![firing(backup_failed, operator_labels(), "1970-01-01 00:16:40 +0000 UTC")]),
            check("ReferralBackupFailed", "60m", vec![]),
            check("ReferralBackupUnverified", "119m", vec![]),
            check("ReferralBackupUnverified", "125m", vec![]),
            check("ReferralBackupUnverified", "140m", vec![firing(unverified, operator_labels(), "2h 20m 0s")]),
            check("ReferralChainViolations", "5m", vec![firing(chain, operator_labels(), "3")]),
            check("ReferralIndexMissing", "10m", vec![]),
            check("ReferralIndexMissing", "20m", vec![firing(index, operator_labels(), "1")]),
        ],
    })
}

/// Series of `main` below every default threshold: no alert, however long.
fn below_default_thresholds() -> Value {
    let mut series = vec![
        // 3 failures a minute: 0.05/s.
        worker_series("referral_failures_total", ",pod=\"a\",reason=\"timeout\"", "0+3x200"),
        // 900 and 800 queued: each below 1000, though their sum is not.
        worker_series("referral_queue_size", ",queue=\"rewards\"", "900x200"),
        worker_series("referral_queue_size", ",queue=\"cleanup\"", "800x200"),
        // A container that waits for another reason is not crash-looping.
        json!({"series": "kube_pod_container_status_waiting_reason{namespace=\"referrals\",pod=\"main-reward-processor-5d9f8b7c4-x7k2p\",container=\"reward-processor\",reason=\"ContainerCreating\"}", "values": "1x200"}),
    ];
    series.extend(operator_series("referral_operator_dependency_up", ",dependency=\"redis\"", "1x200"));
    series.extend(operator_series("referral_operator_dependency_up", ",dependency=\"mongodb\"", "1x200"));
    // A rollout: one pod short for 10 minutes, then whole again.
    series.extend(worker_pods("reward-processor", "2x200", "1x10 2x190"));
    series.extend(operator_series("referral_operator_chain_check_failed", "", "0x200"));
    series.extend(operator_series("referral_operator_maintenance_job_failed", ",job=\"cleanup\"", "0x200"));
    // A backup every minute.
    series.extend(operator_series("referral_operator_backup_last_success_timestamp_seconds", "", "0+60x200"));
    series.extend(operator_series("referral_operator_backup_interval_seconds", "", "3600x200"));
    // A drill verifies a fresh backup every minute: never older than the limit.
    series.extend(operator_series("referral_operator_backup_verified_timestamp_seconds", "", "0+60x200"));
    series.extend(operator_series("referral_operator_backup_max_unverified_age_seconds", "", "7200x200"));
    series.extend(operator_series("referral_operator_chain_violations", ",kind=\"cycles\"", "0x200"));
    series.extend(operator_series("referral_operator_indexes", ",state=\"present\"", "6x200"));
    series.extend(operator_series("referral_operator_indexes", ",state=\"missing\"", "0x200"));
    series.extend(operator_series("referral_operator_indexes", ",state=\"conflict\"", "0x200"));
    series.extend(other_system_series());
    let checks: Vec<Value> = builtin_alert_names().iter().map(|alert| check(alert, "180m", vec![])).collect();
    json!({ "interval": "1m", "input_series": series, "alert_rule_test": checks })
}

/// The customised thresholds are the ones evaluated: a rate that fires the default
/// alert does not fire a 0.5/s one, and the backlog waits its 15 minutes.
fn customised_thresholds(groups: &Value) -> Value {
    let failure = rule(groups, "ReferralHighFailureRate");
    let backlog = rule(groups, "ReferralQueueBacklog");
    let series = vec![
        worker_series("referral_failures_total", ",pod=\"a\",reason=\"timeout\"", "0+9x20 180+60x20"),
        worker_series("referral_queue_size", ",queue=\"rewards\"", "300x40"),
        worker_series("referral_queue_size", ",queue=\"cleanup\"", "200x40"),
    ];
    json!({
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            // 0.15/s is below 0.5.
            check("ReferralHighFailureRate", "15m", vec![]),
            // 1/s from minute 20; `for: 2m`.
            check("ReferralHighFailureRate", "30m", vec![firing(failure, worker_labels(), "1")]),
            check("ReferralQueueBacklog", "10m", vec![]),
            check("ReferralQueueBacklog", "20m", vec![firing(backlog, with(worker_labels(), "queue", "rewards"), "300")]),
        ],
    })
}

#[test]
fn default_rules_pass_promtool_check() {
    if !support::tool_or_skip("promtool", INSTALL_HINT) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_yaml(dir.path(), "rules.yaml", &rule_groups(&system(None)));
    let out = promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
}

#[test]
fn customised_rules_pass_promtool_check() {
    if !support::tool_or_skip("promtool", INSTALL_HINT) {
        return;
    }
    let groups = rule_groups(&system(Some(CUSTOMISED)));
    let failure = rule(&groups, "ReferralHighFailureRate");
    assert_eq!(failure["labels"]["severity"], "critical");
    assert!(failure["expr"].as_str().unwrap().ends_with("> 0.5"));
    assert_eq!(rule(&groups, "ReferralQueueBacklog")["for"], "15m");
    let dir = tempfile::tempdir().unwrap();
    write_yaml(dir.path(), "rules.yaml", &groups);
    let out = promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    assert!(out.contains("SUCCESS: 14 rules found"), "{out}");
}

#[test]
fn default_alerts_fire_after_for_and_not_below_threshold() {
    if !support::tool_or_skip("promtool", INSTALL_HINT) {
        return;
    }
    let groups = rule_groups(&system(None));
    let dir = tempfile::tempdir().unwrap();
    write_yaml(dir.path(), "rules.yaml", &groups);
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [above_default_thresholds(&groups), below_default_thresholds()],
    });
    write_yaml(dir.path(), "rules_test.yaml", &tests);
    let out = promtool(dir.path(), &["test", "rules", "rules_test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn customised_thresholds_are_the_ones_prometheus_evaluates() {
    if !support::tool_or_skip("promtool", INSTALL_HINT) {
        return;
    }
    let groups = rule_groups(&system(Some(CUSTOMISED)));
    let dir = tempfile::tempdir().unwrap();
    write_yaml(dir.path(), "rules.yaml", &groups);
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [customised_thresholds(&groups)],
    });
    write_yaml(dir.path(), "rules_test.yaml", &tests);
    let out = promtool(dir.path(), &["test", "rules", "rules_test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn dashboards_load_as_grafana_json_with_panels_targets_and_a_datasource_variable() {
    let map = dashboard_config_map(&system(None)).expect("dashboards are on by default");
    assert_eq!(map.data.as_ref().unwrap().len(), 2);
    for key in [PERFORMANCE_KEY, ERRORS_KEY] {
        let text = &map.data.as_ref().unwrap()[key];
        let dashboard: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"));
        let variables = dashboard["templating"]["list"].as_array().unwrap();
        assert!(
            variables
                .iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
            "{key} has no prometheus datasource variable"
        );
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 5, "{key}: {} panels", panels.len());
        for panel in panels {
            assert!(panel["id"].is_u64() && panel["title"].is_string() && panel["gridPos"]["w"].is_u64());
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{key}: {} has no targets", panel["title"]);
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                assert!(expr.contains("referral_system=\"main\""), "{key}: {expr} is not filtered to the system");
                assert_eq!(target["datasource"]["uid"], "${datasource}");
            }
        }
    }
}
