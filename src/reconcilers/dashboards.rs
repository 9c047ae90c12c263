//! Grafana dashboards of one system (docs/metrics.md), as ConfigMaps the Grafana sidecar
//! loads: "Referral performance" (chain depth, reward rates, queues, processing time,
//! cache hit rate) and "Referral errors" (failed transactions, retries, error types,
//! chain integrity, index state).
//!
//! Pure: the dashboards are built as JSON values from the metrics contract in
//! [`super::monitoring`], so every query names a metric the workers or the operator
//! export and is filtered to this one system. This module must not query Grafana or
//! Prometheus, and must not invent metric names: add them to the contract first.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use crate::crd::validate::ValidatedSystem;

use super::meta::{MAX_DNS_LABEL, child_name, object_meta, short_hash};
use super::monitoring::{
    LABEL_SCRAPED_WORKER, OPERATOR_CHAIN_USERS_BY_DEPTH, OPERATOR_CHAIN_VIOLATIONS, OPERATOR_INDEXES,
    REFERRAL_CACHE_HITS_TOTAL, REFERRAL_CACHE_MISSES_TOTAL, REFERRAL_ERRORS_TOTAL, REFERRAL_FAILURES_TOTAL,
    REFERRAL_PROCESSING_DURATION_SECONDS, REFERRAL_QUEUE_SIZE, REFERRAL_RETRIES_TOTAL,
    REFERRAL_REWARDS_DISTRIBUTED_TOTAL, REFERRAL_TRANSACTIONS_FAILED_TOTAL, operator_selector, worker_selector,
};

/// `app.kubernetes.io/component` of the dashboards ConfigMap.
pub const COMPONENT: &str = "dashboard";
/// ConfigMap data key of the performance dashboard.
pub const PERFORMANCE_KEY: &str = "referral-performance.json";
/// ConfigMap data key of the errors dashboard.
pub const ERRORS_KEY: &str = "referral-errors.json";
/// Grafana dashboard schema the JSON is written for (Grafana 10.4/11).
pub const SCHEMA_VERSION: u32 = 39;
/// Grafana's limit on a dashboard uid.
pub const MAX_UID: usize = 40;
/// Name of the data source template variable every panel reads from.
pub const DATASOURCE_VARIABLE: &str = "datasource";

/// Name of the ConfigMap that holds both dashboards.
pub fn config_map_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "dashboards", MAX_DNS_LABEL)
}

/// A dashboard uid that is the same on every render and differs between systems:
/// Grafana keys dashboards by uid, so two systems must never overwrite each other.
fn dashboard_uid(system: &ValidatedSystem, kind: &str) -> String {
    let hash = short_hash(format!("{}/{}", system.namespace, system.name).as_bytes());
    let uid = format!("referral-{kind}-{hash}");
    debug_assert!(uid.len() <= MAX_UID, "{uid}");
    uid
}

fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": format!("${{{DATASOURCE_VARIABLE}}}") })
}

/// One query of a panel.
struct Query {
    expr: String,
    legend: String,
    /// Instant queries feed panels that show the current value only.
    instant: bool,
}

fn range(expr: String, legend: &str) -> Query {
    Query { expr, legend: legend.into(), instant: false }
}

fn instant(expr: String, legend: &str) -> Query {
    Query { expr, legend: legend.into(), instant: true }
}

/// Where a panel sits on Grafana's 24-column grid.
#[derive(Clone, Copy)]
struct Grid {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

const fn grid(x: u32, y: u32, w: u32, h: u32) -> Grid {
    Grid { x, y, w, h }
}

struct Panel {
    title: &'static str,
    description: &'static str,
    kind: &'static str,
    grid: Grid,
    unit: &'static str,
    queries: Vec<Query>,
}

impl Panel {
    fn into_json(self, id: usize) -> Value {
        let targets: Vec<Value> = self
            .queries
            .into_iter()
            .zip('A'..='Z')
            .map(|(query, ref_id)| {
                json!({
                    "datasource": datasource(),
                    "expr": query.expr,
                    "legendFormat": query.legend,
                    "instant": query.instant,
                    "range": !query.instant,
                    "refId": ref_id.to_string(),
                })
            })
            .collect();
        let mut defaults = json!({ "unit": self.unit });
        if self.unit == "percentunit" {
            defaults["min"] = json!(0);
            defaults["max"] = json!(1);
        }
        let options = match self.kind {
            "bargauge" => json!({
                "orientation": "horizontal",
                "displayMode": "gradient",
                "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
            }),
            "stat" | "piechart" => json!({
                "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
                "legend": { "displayMode": "list", "placement": "right", "showLegend": true },
            }),
            _ => json!({
                "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
                "tooltip": { "mode": "multi", "sort": "desc" },
            }),
        };
        json!({
            "id": id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": datasource(),
            "gridPos": { "x": self.grid.x, "y": self.grid.y, "w": self.grid.w, "h": self.grid.h },
            "fieldConfig": { "defaults": defaults, "overrides": [] },
            "options": options,
            "targets": targets,
        })
    }
}

fn dashboard(system: &ValidatedSystem, kind: &str, title: &str, description: &str, panels: Vec<Panel>) -> Value {
    let panels: Vec<Value> = panels.into_iter().enumerate().map(|(i, panel)| panel.into_json(i + 1)).collect();
    json!({
        "uid": dashboard_uid(system, kind),
        "title": format!("{title} — {}/{}", system.namespace, system.name),
        "description": description,
        "tags": ["referral", "referral-operator"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        // The operator rewrites the ConfigMap on every reconcile; edits made in
        // Grafana would be lost, so the dashboard says it is not for editing.
        "editable": false,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": { "from": "now-6h", "to": "now" },
        "timezone": "",
        "annotations": { "list": [] },
        "links": [],
        "templating": { "list": [{
            "name": DATASOURCE_VARIABLE,
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        }]},
        "panels": panels,
    })
}

/// The performance dashboard as Grafana JSON.
pub fn performance_dashboard(system: &ValidatedSystem) -> Value {
    let w = worker_selector(system);
    let o = operator_selector(system);
    let rate = |metric: &str| format!("rate({metric}{{{w}}}[$__rate_interval])");
    let quantile = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (le) ({}))",
            rate(&format!("{REFERRAL_PROCESSING_DURATION_SECONDS}_bucket"))
        )
    };
    let hits = format!("sum({})", rate(REFERRAL_CACHE_HITS_TOTAL));
    let misses = format!("sum({})", rate(REFERRAL_CACHE_MISSES_TOTAL));
    let panels = vec![
        Panel {
            title: "Chain depth distribution",
            description: "Users per referral-chain depth, from the operator's last chain check.",
            kind: "bargauge",
            grid: grid(0, 0, 12, 8),
            unit: "short",
            queries: vec![instant(
                format!("max by (depth) ({OPERATOR_CHAIN_USERS_BY_DEPTH}{{{o}}})"),
                "depth {{depth}}",
            )],
        },
        Panel {
            title: "Reward distribution rate (per second)",
            description: "Rewards distributed per second, by tier.",
            kind: "timeseries",
            grid: grid(12, 0, 12, 8),
            unit: "short",
            queries: vec![range(format!("sum by (tier) ({})", rate(REFERRAL_REWARDS_DISTRIBUTED_TOTAL)), "{{tier}}")],
        },
        Panel {
            title: "Queue sizes",
            description: "Items waiting in each referral queue. The QueueBacklog alert watches their sum.",
            kind: "timeseries",
            grid: grid(0, 8, 12, 8),
            unit: "short",
            queries: vec![range(format!("sum by (queue) ({REFERRAL_QUEUE_SIZE}{{{w}}})"), "{{queue}}")],
        },
        Panel {
            title: "Processing time",
            description: "Reward processing duration quantiles over all workers.",
            kind: "timeseries",
            grid: grid(12, 8, 12, 8),
            unit: "s",
            queries: vec![
                range(quantile("0.5"), "p50"),
                range(quantile("0.95"), "p95"),
                range(quantile("0.99"), "p99"),
            ],
        },
        Panel {
            title: "Cache hit rate",
            description: "Share of cache lookups served from Redis. A falling rate means more MongoDB reads.",
            kind: "timeseries",
            grid: grid(0, 16, 24, 8),
            unit: "percentunit",
            queries: vec![range(format!("{hits} / ({hits} + {misses})"), "hit rate")],
        },
    ];
    dashboard(
        system,
        "perf",
        "Referral performance",
        "Referral chain depth, reward rates, queues, processing time and cache. Generated by referral-operator; changes made here are overwritten.",
        panels,
    )
}

/// The errors dashboard as Grafana JSON.
pub fn errors_dashboard(system: &ValidatedSystem) -> Value {
    let w = worker_selector(system);
    let o = operator_selector(system);
    let rate = |metric: &str| format!("rate({metric}{{{w}}}[$__rate_interval])");
    let by_worker = format!("{{{{{LABEL_SCRAPED_WORKER}}}}}");
    let panels = vec![
        Panel {
            title: "Failed transactions (per second)",
            description: "Reward transactions that failed, by worker.",
            kind: "timeseries",
            grid: grid(0, 0, 12, 8),
            unit: "short",
            queries: vec![range(
                format!("sum by ({LABEL_SCRAPED_WORKER}) ({})", rate(REFERRAL_TRANSACTIONS_FAILED_TOTAL)),
                &by_worker,
            )],
        },
        Panel {
            title: "Reward failures by reason (per second)",
            description: "The failure rate the HighFailureRate alert watches, by reason.",
            kind: "timeseries",
            grid: grid(12, 0, 12, 8),
            unit: "short",
            queries: vec![range(format!("sum by (reason) ({})", rate(REFERRAL_FAILURES_TOTAL)), "{{reason}}")],
        },
        Panel {
            title: "Retry rate (per second)",
            description: "Retried operations, by worker. Retries that rise before failures do are an early warning.",
            kind: "timeseries",
            grid: grid(0, 8, 12, 8),
            unit: "short",
            queries: vec![range(
                format!("sum by ({LABEL_SCRAPED_WORKER}) ({})", rate(REFERRAL_RETRIES_TOTAL)),
                &by_worker,
            )],
        },
        Panel {
            title: "Error types",
            description: "Errors over the selected time range, by type.",
            kind: "piechart",
            grid: grid(12, 8, 12, 8),
            unit: "short",
            queries: vec![instant(
                format!("sum by (type) (increase({REFERRAL_ERRORS_TOTAL}{{{w}}}[$__range]))"),
                "{{type}}",
            )],
        },
        Panel {
            title: "Chain integrity issues",
            description: "Violations found by the last chain check, by kind; status.chainCheck has examples.",
            kind: "bargauge",
            grid: grid(0, 16, 12, 8),
            unit: "short",
            queries: vec![instant(format!("max by (kind) ({OPERATOR_CHAIN_VIOLATIONS}{{{o}}})"), "{{kind}}")],
        },
        Panel {
            title: "MongoDB index state",
            description: "Declared indexes by state; missing or conflict ones are listed in status.indexes.",
            kind: "stat",
            grid: grid(12, 16, 12, 8),
            unit: "short",
            queries: vec![instant(format!("max by (state) ({OPERATOR_INDEXES}{{{o}}})"), "{{state}}")],
        },
    ];
    dashboard(
        system,
        "errors",
        "Referral errors",
        "Failed transactions, retries, error types, chain integrity and index state. Generated by referral-operator; changes made here are overwritten.",
        panels,
    )
}

/// Both dashboards in one ConfigMap, a key each: the sidecar loads every key of a
/// labelled ConfigMap as a dashboard file, and one object instead of two is one
/// write less per system for the API server (a tenth of a new system's writes).
/// Compact JSON: nobody reads it in the ConfigMap, and pretty-printed it was twice
/// the bytes the API server parses on every apply.
pub fn dashboard_config_map(system: &ValidatedSystem) -> Option<ConfigMap> {
    if !system.spec.monitoring.dashboards.enabled {
        return None;
    }
    let mut metadata = object_meta(system, config_map_name(system), COMPONENT);
    let mut labels = metadata.labels.take().unwrap_or_default();
    // Ours win over the sidecar labels: the controller finds its children by them.
    for (key, value) in &system.spec.monitoring.dashboards.labels {
        labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    metadata.labels = Some(labels);
    // A `Value` of maps, strings and numbers always serialises.
    let text = |dashboard: Value| serde_json::to_string(&dashboard).unwrap_or_default();
    let data = BTreeMap::from([
        (PERFORMANCE_KEY.to_string(), text(performance_dashboard(system))),
        (ERRORS_KEY.to_string(), text(errors_dashboard(system))),
    ]);
    Some(ConfigMap { metadata, data: Some(data), ..ConfigMap::default() })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use regex::Regex;

    use super::*;
    use crate::reconcilers::monitoring::tests::system_with;
    use crate::reconcilers::monitoring::{
        LABEL_REFERRAL_NAMESPACE, LABEL_REFERRAL_SYSTEM, OPERATOR_METRICS, WORKER_METRICS,
    };

    fn parsed(config_map: &ConfigMap, key: &str) -> Value {
        let text = &config_map.data.as_ref().expect("data")[key];
        serde_json::from_str(text).expect("dashboard is JSON")
    }

    fn exprs(dashboard: &Value) -> Vec<String> {
        dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap().iter())
            .map(|t| t["expr"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn one_config_map_has_the_exact_name_keys_and_labels() {
        let system = system_with("dashboards: {labels: {grafana_dashboard: \"1\", team: growth}}");
        let map = dashboard_config_map(&system).expect("dashboards are on");
        assert_eq!(map.metadata.name.as_deref(), Some("main-dashboards"));
        assert_eq!(map.metadata.namespace.as_deref(), Some("referrals"));
        let labels = map.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["grafana_dashboard"], "1");
        assert_eq!(labels["team"], "growth");
        assert_eq!(labels["app.kubernetes.io/component"], "dashboard");
        assert_eq!(labels["app.kubernetes.io/instance"], "main");
        assert_eq!(map.metadata.owner_references.as_ref().unwrap()[0].name, "main");
        // Errors sorts before performance: BTreeMap order, as the API server returns it.
        assert_eq!(map.data.as_ref().unwrap().keys().collect::<Vec<_>>(), [ERRORS_KEY, PERFORMANCE_KEY]);
    }

    #[test]
    fn dashboard_json_is_compact() {
        let map = dashboard_config_map(&system_with("")).unwrap();
        for text in map.data.as_ref().unwrap().values() {
            assert!(!text.contains('\n'), "one line: {}", &text[..80]);
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(text, &serde_json::to_string(&value).unwrap());
        }
    }

    #[test]
    fn default_labels_are_the_sidecars() {
        let map = dashboard_config_map(&system_with("")).unwrap();
        assert_eq!(map.metadata.labels.as_ref().unwrap()["grafana_dashboard"], "1");
    }

    #[test]
    fn disabled_dashboards_build_nothing() {
        assert!(dashboard_config_map(&system_with("dashboards: {enabled: false}")).is_none());
    }

    #[test]
    fn dashboards_are_grafana_json_with_a_datasource_variable() {
        let system = system_with("");
        let map = dashboard_config_map(&system).unwrap();
        let performance = parsed(&map, PERFORMANCE_KEY);
        let errors = parsed(&map, ERRORS_KEY);
        assert_eq!(performance["title"], "Referral performance — referrals/main");
        assert_eq!(errors["title"], "Referral errors — referrals/main");
        assert_ne!(performance["uid"], errors["uid"]);
        for dashboard in [&performance, &errors] {
            assert_eq!(dashboard["schemaVersion"], SCHEMA_VERSION);
            let uid = dashboard["uid"].as_str().unwrap();
            assert!(uid.len() <= MAX_UID, "{uid}");
            let variables = dashboard["templating"]["list"].as_array().unwrap();
            assert!(
                variables
                    .iter()
                    .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus")
            );
            let panels = dashboard["panels"].as_array().unwrap();
            assert!(panels.len() >= 5);
            let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
            assert_eq!(ids.len(), panels.len(), "panel ids are unique");
            for panel in panels {
                assert_eq!(panel["datasource"]["uid"], "${datasource}");
                let targets = panel["targets"].as_array().unwrap();
                assert!(!targets.is_empty(), "{} has no query", panel["title"]);
                let refs: BTreeSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
                assert_eq!(refs.len(), targets.len());
            }
        }
    }

    #[test]
    fn uids_are_stable_and_differ_between_systems() {
        let main = system_with("");
        let mut other = system_with("");
        other.namespace = "staging".into();
        assert_eq!(performance_dashboard(&main)["uid"], performance_dashboard(&main)["uid"]);
        assert_ne!(performance_dashboard(&main)["uid"], performance_dashboard(&other)["uid"]);
        assert_eq!(dashboard_config_map(&main), dashboard_config_map(&main), "rendering is deterministic");
    }

    #[test]
    fn every_query_reads_known_metrics_of_this_system_only() {
        let system = system_with("");
        let worker_filter = format!("{{{}", worker_selector(&system));
        let operator_filter = format!("{{{}", operator_selector(&system));
        let histogram_series: Vec<String> = ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{REFERRAL_PROCESSING_DURATION_SECONDS}{suffix}"))
            .collect();
        let identifier = Regex::new(r"[a-zA-Z_:][a-zA-Z0-9_:]*").unwrap();
        for dashboard in [performance_dashboard(&system), errors_dashboard(&system)] {
            for expr in exprs(&dashboard) {
                let mut metrics = 0;
                for found in identifier.find_iter(&expr) {
                    let token = found.as_str();
                    if !token.starts_with("referral_")
                        || [LABEL_REFERRAL_SYSTEM, LABEL_REFERRAL_NAMESPACE].contains(&token)
                    {
                        continue;
                    }
                    let rest = &expr[found.end()..];
                    if WORKER_METRICS.contains(&token) || histogram_series.iter().any(|s| s == token) {
                        assert!(rest.starts_with(&worker_filter), "{token} not filtered to the system in {expr}");
                    } else if OPERATOR_METRICS.contains(&token) {
                        assert!(rest.starts_with(&operator_filter), "{token} not filtered to the system in {expr}");
                    } else {
                        panic!("{token} is not in the metrics contract: {expr}");
                    }
                    metrics += 1;
                }
                assert!(metrics > 0, "no metric in {expr}");
            }
        }
    }

    #[test]
    fn dashboards_cover_the_guides_panels() {
        let system = system_with("");
        let all: String = [performance_dashboard(&system), errors_dashboard(&system)]
            .iter()
            .flat_map(exprs)
            .collect::<Vec<_>>()
            .join("\n");
        for metric in
            WORKER_METRICS.iter().chain(&[OPERATOR_CHAIN_USERS_BY_DEPTH, OPERATOR_CHAIN_VIOLATIONS, OPERATOR_INDEXES])
        {
            assert!(all.contains(metric), "no panel shows {metric}");
        }
    }
}
