//! The PrometheusRule checked by Prometheus itself: `promtool check rules` on the
//! rendered groups (default and fully customised), then `promtool test rules` with
//! input series that must make each built-in alert fire after its `for`, and must not
//! below its threshold or for another system. Also the dashboards' structure as a
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
/// rendered as `value`. Comparing them whole also proves the templates expand.
fn expected_annotations(rule: &Value, value: &str) -> Value {
    let template = Regex::new(r"\{\{[^}]*\$value[^}]*\}\}").unwrap();
    let mut annotations = rule["annotations"].clone();
    for (_, text) in annotations.as_object_mut().unwrap() {
        *text = json!(template.replace_all(text.as_str().unwrap(), value).into_owned());
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
    json!({ "exp_labels": labels, "exp_annotations": expected_annotations(rule, value) })
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
    series
}

/// Series of `main` well above the default thresholds, with the alerts they must
/// raise, and when.
fn above_default_thresholds(groups: &Value) -> Value {
    let mut series = vec![
        // 9 failures a minute on one pod, none on another: 0.15/s > 0.1.
        worker_series("referral_failures_total", ",pod=\"a\",reason=\"timeout\"", "0+9x200"),
        worker_series("referral_failures_total", ",pod=\"b\",reason=\"timeout\"", "0+0x200"),
        // 600 + 500 = 1100 queued > 1000.
        worker_series("referral_queue_size", ",queue=\"rewards\"", "600x200"),
        worker_series("referral_queue_size", ",queue=\"cleanup\"", "500x200"),
    ];
    // Hourly backups, the last success at time 0: overdue after 90 minutes.
    series.extend(operator_series("referral_operator_backup_last_success_timestamp_seconds", "", "0x200"));
    series.extend(operator_series("referral_operator_backup_interval_seconds", "", "3600x200"));
    // A backup Job failed (at unix time 1000); a success clears the series at 30m.
    series.extend(operator_series("referral_operator_backup_last_failure_timestamp_seconds", "", "1000x30 _x170"));
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
    let chain = rule(groups, "ReferralChainViolations");
    let index = rule(groups, "ReferralIndexMissing");
    json!({
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            // Pending, not firing, before `for` has passed.
            check("ReferralHighFailureRate", "4m", vec![]),
            check("ReferralHighFailureRate", "10m", vec![firing(failure, worker_labels(), "0.15")]),
            check("ReferralQueueBacklog", "5m", vec![]),
            check("ReferralQueueBacklog", "15m", vec![firing(backlog, worker_labels(), "1100")]),
            check("ReferralBackupMissing", "60m", vec![]),
            check("ReferralBackupMissing", "120m", vec![firing(backup, operator_labels(), "2h 0m 0s")]),
            check("ReferralBackupFailed", "0m", vec![]),
            check("ReferralBackupFailed", "5m", vec![firing(backup_failed, operator_labels(), "1970-01-01 00:16:40 +0000 UTC")]),
            check("ReferralBackupFailed", "60m", vec![]),
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
        // 600 + 300 = 900 queued.
        worker_series("referral_queue_size", ",queue=\"rewards\"", "600x200"),
        worker_series("referral_queue_size", ",queue=\"cleanup\"", "300x200"),
    ];
    // A backup every minute.
    series.extend(operator_series("referral_operator_backup_last_success_timestamp_seconds", "", "0+60x200"));
    series.extend(operator_series("referral_operator_backup_interval_seconds", "", "3600x200"));
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
            check("ReferralQueueBacklog", "20m", vec![firing(backlog, worker_labels(), "300")]),
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
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
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
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
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
