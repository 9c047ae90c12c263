//! The metrics contract, end to end: every metric a dashboard panel or a built-in
//! alert of a ReferralSystem queries is documented in docs/metrics.md as exported
//! by the workers or by the operator, and every operator metric the docs promise
//! is really registered and exported by `Metrics::encode()` once values are recorded.

use std::collections::BTreeSet;

use referral_operator::controller::metrics::Metrics;
use referral_operator::crd::ReferralSystem;
use referral_operator::crd::status::ChainViolation;
use referral_operator::crd::validate::{ValidatedSystem, validate};
use referral_operator::reconcilers::dashboards::{ERRORS_KEY, PERFORMANCE_KEY, dashboard_config_map};
use referral_operator::reconcilers::monitoring::{
    INDEX_STATES, LABEL_REFERRAL_NAMESPACE, LABEL_REFERRAL_SYSTEM, WORKER_METRICS, rule_spec,
};
use regex::Regex;
use serde_json::Value;

const SYSTEM: &str = r#"
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata: {name: main, namespace: referrals, uid: 12345678-1234-1234-1234-123456789abc}
spec:
  image: example/referral-service:1.4.2
  workers: [{name: reward-processor, replicas: 2}]
  mongodb: {uriSecretRef: {name: referral-mongo, key: uri}, database: neurolov}
  redis: {managed: {}}
  maintenance: [{name: cleanup, schedule: "0 4 * * 1", args: [npm, run, cleanup]}]
"#;

fn system() -> ValidatedSystem {
    let object: ReferralSystem = serde_norway::from_str(SYSTEM).unwrap();
    validate(&object, "referrals").unwrap()
}

/// Every PromQL expression of both dashboards, read back from the ConfigMaps as
/// the Grafana sidecar would, and of the built-in alerts.
fn queries() -> Vec<String> {
    let system = system();
    let mut out = Vec::new();
    let map = dashboard_config_map(&system).expect("dashboards are on by default");
    let labels = map.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("grafana_dashboard").map(String::as_str), Some("1"), "sidecar label missing");
    for (key, text) in map.data.unwrap_or_default() {
        assert!([PERFORMANCE_KEY, ERRORS_KEY].contains(&key.as_str()), "{key}");
        let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                out.push(target["expr"].as_str().expect("expr").to_string());
            }
        }
    }
    assert!(out.len() >= 10, "expected both dashboards' queries, got {}", out.len());
    for rule in rule_spec(&system)["groups"][0]["rules"].as_array().expect("rules") {
        out.push(rule["expr"].as_str().expect("expr").to_string());
    }
    out
}

/// Metric names in a query: `referral_*` identifiers that are not label names, with
/// a histogram's `_bucket`/`_sum`/`_count` series folded into the histogram.
fn metrics_in(expr: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    let identifier = Regex::new(r"\breferral_[a-z0-9_]+").unwrap();
    identifier
        .find_iter(expr)
        .map(|m| m.as_str().to_string())
        .filter(|name| name != LABEL_REFERRAL_SYSTEM && name != LABEL_REFERRAL_NAMESPACE)
        .map(|name| {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix)
                    && histograms.contains(base)
                {
                    return base.to_string();
                }
            }
            name
        })
        .collect()
}

/// Metric names in the first column of the table under `## {heading}`.
fn documented(heading: &str) -> BTreeSet<String> {
    documented_with(heading, "referral_")
}

/// Names starting with `prefix` in the first column of the table under `## {heading}`.
fn documented_with(heading: &str, prefix: &str) -> BTreeSet<String> {
    let doc = std::fs::read_to_string(format!("{}/docs/metrics.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = doc.find(&format!("\n## {heading}")).unwrap_or_else(|| panic!("no '## {heading}' in docs/metrics.md"));
    let section = &doc[start + 1..];
    let section = &section[section.find('\n').unwrap_or(section.len())..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let row = Regex::new(&format!(r"(?m)^\| `({prefix}[a-z0-9_]+)` \|")).unwrap();
    let names: BTreeSet<String> = row.captures_iter(section).map(|c| c[1].to_string()).collect();
    assert!(!names.is_empty(), "no metric rows under '## {heading}'");
    names
}

/// `# TYPE` names and their types in the operator's exposition, after recording a
/// value for every per-system series.
fn exported() -> BTreeSet<(String, String)> {
    let metrics = Metrics::new();
    drop(metrics.reconcile_timer());
    metrics.record_failure("kubernetes_api");
    metrics.set_managed_objects("referrals", "main", 17);
    metrics.set_index_states("referrals", "main", &[(INDEX_STATES[0], 6)]);
    metrics.set_chain_violations("referrals", "main", &[(ChainViolation::Cycles, 1)]);
    metrics.set_chain_depths("referrals", "main", &[(0, 10), (1, 4)]);
    metrics.set_backup("referrals", "main", Some(1_700_000_000.0), 86_400.0);
    metrics.set_dependencies("referrals", "main", Some(true), Some(true));
    metrics.set_worker_pods("referrals", "main", &[("reward-processor".into(), 2, 2)]);
    metrics.set_chain_check_failed("referrals", "main", false);
    metrics.set_maintenance_failed("referrals", "main", &[("cleanup".into(), false)]);
    metrics.set_backup_failure("referrals", "main", Some(1_700_000_100.0));
    metrics.set_restore_drill("referrals", "main", Some((1_700_000_000.0, 691_200.0)));
    metrics.set_leader(true);
    let text = metrics.encode();
    let type_line = Regex::new(r"(?m)^# TYPE (\S+) (\S+)$").unwrap();
    type_line.captures_iter(&text).map(|c| (c[1].to_string(), c[2].to_string())).collect()
}

#[test]
fn every_queried_metric_is_documented_as_exported_by_the_workers_or_the_operator() {
    let workers = documented("Worker metrics");
    let operator = documented("Operator metrics");
    let histograms: BTreeSet<String> = ["referral_processing_duration_seconds".to_string()].into();
    assert!(workers.is_superset(&histograms));
    let mut seen = BTreeSet::new();
    for expr in queries() {
        let names = metrics_in(&expr, &histograms);
        // kube-state-metrics' series are checked by every_kubernetes_metric_an_alert_reads_is_documented.
        assert!(!names.is_empty() || expr.contains("kube_"), "a query without a metric: {expr}");
        for name in names {
            assert!(
                workers.contains(&name) || operator.contains(&name),
                "{name} (in `{expr}`) is not documented in docs/metrics.md as a worker or operator metric"
            );
            seen.insert(name);
        }
    }
    let code_workers: BTreeSet<String> = WORKER_METRICS.iter().map(|m| m.to_string()).collect();
    assert_eq!(workers, code_workers, "docs/metrics.md and WORKER_METRICS list different worker metrics");
    // The guide's panels are all there: every documented metric is shown somewhere.
    let unused: Vec<&String> = workers.union(&operator).filter(|m| !seen.contains(*m)).collect();
    assert!(
        unused.iter().all(|m| m.starts_with("referral_operator_backup_")),
        "documented but never queried: {unused:?}"
    );
}

/// What the alerts read from outside the system (kube-state-metrics) is listed too,
/// so a user knows what their Prometheus must scrape.
#[test]
fn every_kubernetes_metric_an_alert_reads_is_documented() {
    let documented = documented_with("Kubernetes metrics", "kube_");
    let identifier = Regex::new(r"\bkube_[a-z0-9_]+").unwrap();
    let read: BTreeSet<String> = queries()
        .iter()
        .flat_map(|q| identifier.find_iter(q).map(|m| m.as_str().to_string()).collect::<Vec<_>>())
        .collect();
    assert!(!read.is_empty(), "the crash-loop alert reads kube-state-metrics");
    assert_eq!(read, documented, "docs/metrics.md, \"Kubernetes metrics\", and the alerts disagree");
}

#[test]
fn every_documented_operator_metric_is_registered_and_exported() {
    let exported = exported();
    let names: BTreeSet<&str> = exported.iter().map(|(name, _)| name.as_str()).collect();
    for name in documented("Operator metrics").iter().chain(documented("Operator health").iter()) {
        assert!(names.contains(name.as_str()), "{name} is documented but Metrics::encode() does not export it");
    }
    // And nothing exported is undocumented.
    let documented: BTreeSet<String> =
        documented("Operator metrics").union(&documented("Operator health")).cloned().collect();
    for (name, _) in &exported {
        assert!(documented.contains(name), "{name} is exported but not documented in docs/metrics.md");
    }
}

/// The violation kinds docs/metrics.md promises are the ones the operator exports.
#[test]
fn the_documented_violation_kinds_are_the_one_list() {
    let doc = std::fs::read_to_string(format!("{}/docs/metrics.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let row =
        doc.lines().find(|l| l.starts_with("| `referral_operator_chain_violations` |")).expect("the violations row");
    let listed = row.split("is one of").nth(1).and_then(|rest| rest.split(" (").next()).expect("the list of kinds");
    let documented: BTreeSet<String> =
        Regex::new(r"`([a-z_]+)`").unwrap().captures_iter(listed).map(|c| c[1].to_string()).collect();
    let exported: BTreeSet<String> = ChainViolation::ALL.iter().map(|k| k.label().to_string()).collect();
    assert_eq!(documented, exported, "docs/metrics.md and ChainViolation list different kinds");
}
