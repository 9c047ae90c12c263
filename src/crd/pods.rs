//! Where the operator's pods run and what they carry for the cluster around them:
//! scheduling (node selector, affinity, tolerations, topology spread, priority) and
//! extra pod labels and annotations (service mesh, Vault injection, cost labels).
//!
//! The names follow what users of CloudNativePG and Percona's operators already
//! write: Kubernetes' own field names and types, set once for every pod
//! (`spec.pods`) and overridden per part (`workers[].pods`, `redis.managed.pods`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration, TopologySpreadConstraint};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scheduling and metadata of pods. Set under `spec.pods` it applies to every pod
/// the operator creates (workers, Redis, and the jobs: chain check, backups,
/// restores, maintenance, migration, verification); set on a worker or on the
/// managed Redis it overrides that part: maps (`nodeSelector`, `labels`,
/// `annotations`) are merged key by key, the other fields replace the system's.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOptions {
    /// Node labels the pods must be scheduled on (`nodeSelector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub node_selector: BTreeMap<String, String>,
    /// Node and pod (anti-)affinity, exactly as in a pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Taints the pods tolerate, e.g. a dedicated node pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub tolerations: Option<Vec<Toleration>>,
    /// How the pods spread over topology domains. Unset, a worker with more than
    /// one pod is spread over nodes and over zones (`maxSkew: 1`,
    /// `ScheduleAnyway`, counted per ReplicaSet); an empty list turns that off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub priority_class_name: Option<String>,
    /// Extra labels on the pods (not on the workloads that own them). The operator's
    /// own labels (`app.kubernetes.io/*` it sets, `referral.dev/*`) cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 64,
        "x-kubernetes-validations" = [
            {"rule": "self.all(k, !k.startsWith('referral.dev/') && !(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component', 'app.kubernetes.io/managed-by', 'app.kubernetes.io/part-of']))",
             "message": "pod labels may not set the operator's own labels (app.kubernetes.io/name, instance, component, managed-by, part-of, or referral.dev/*): the operator selects its pods by them"}
        ]
    ))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the pods, e.g. `sidecar.istio.io/inject` or
    /// `vault.hashicorp.com/agent-inject`. `referral.dev/*` is the operator's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 64,
        "x-kubernetes-validations" = [
            {"rule": "self.all(k, !k.startsWith('referral.dev/'))",
             "message": "pod annotations may not set referral.dev/* keys: the operator uses them to roll pods when configuration or Secrets change"}
        ]
    ))]
    pub annotations: BTreeMap<String, String>,
}

impl PodOptions {
    /// `self` (the system's) overridden by `part` (a worker's or Redis's): maps
    /// merged with `part` winning, every other field taken from `part` when it sets it.
    pub fn overridden_by(&self, part: Option<&PodOptions>) -> PodOptions {
        let Some(part) = part else { return self.clone() };
        let merged = |base: &BTreeMap<String, String>, over: &BTreeMap<String, String>| {
            let mut out = base.clone();
            out.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
            out
        };
        PodOptions {
            node_selector: merged(&self.node_selector, &part.node_selector),
            affinity: part.affinity.clone().or_else(|| self.affinity.clone()),
            tolerations: part.tolerations.clone().or_else(|| self.tolerations.clone()),
            topology_spread_constraints: part
                .topology_spread_constraints
                .clone()
                .or_else(|| self.topology_spread_constraints.clone()),
            priority_class_name: part.priority_class_name.clone().or_else(|| self.priority_class_name.clone()),
            labels: merged(&self.labels, &part.labels),
            annotations: merged(&self.annotations, &part.annotations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_merges_maps_and_replaces_the_rest() {
        let system: PodOptions = serde_json::from_value(serde_json::json!({
            "nodeSelector": {"pool": "general", "arch": "amd64"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "priorityClassName": "referral",
            "labels": {"team": "growth"},
            "annotations": {"a": "1"}
        }))
        .unwrap();
        let worker: PodOptions = serde_json::from_value(serde_json::json!({
            "nodeSelector": {"pool": "compute"},
            "topologySpreadConstraints": [],
            "labels": {"cost-center": "42"}
        }))
        .unwrap();
        let effective = system.overridden_by(Some(&worker));
        assert_eq!(effective.node_selector["pool"], "compute");
        assert_eq!(effective.node_selector["arch"], "amd64");
        assert_eq!(effective.tolerations, system.tolerations);
        assert_eq!(effective.topology_spread_constraints, Some(vec![]), "an empty list is kept: no spreading");
        assert_eq!(effective.priority_class_name.as_deref(), Some("referral"));
        assert_eq!(effective.labels.len(), 2);
        assert_eq!(system.overridden_by(None), system);
    }
}
