//! The `ReferralSystem` resource: spec, status, defaults and the generated CRD.
//!
//! Types here are data only. Defaults live on the types (serde and the schema agree);
//! admission rules are CEL `x-kubernetes-validations` on the types; checks CEL cannot
//! express live in [`validate`]. Nothing here talks to a cluster.

pub mod admission;
pub mod api_rules;
pub mod common;
pub mod conditions;
pub mod cron;
pub mod duration;
pub mod jobs;
pub mod mongodb;
pub mod monitoring;
pub mod pods;
pub mod quantity;
pub mod redis;
pub mod restore;
pub mod settings;
pub mod status;
pub mod upgrade;
pub mod validate;
pub mod workers;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

pub use common::{SecretKeyRef, StorageSpec, TlsSpec};
pub use jobs::{
    BackupMethod, BackupSpec, ChainCheckSpec, JobTemplate, MaintenanceJob, ObjectStorageSpec, RestoreDrillSpec,
    RetentionSpec,
};
pub use mongodb::{ChainModel, IndexPolicy, IndexSpec, MongoSpec};
pub use monitoring::MonitoringSpec;
pub use pods::PodOptions;
pub use redis::{ExternalRedis, ManagedRedis, RedisSpec};
pub use restore::{ReferralRestore, ReferralRestoreSpec, ReferralRestoreStatus};
pub use settings::ReferralSettings;
pub use status::ReferralSystemStatus;
pub use upgrade::{MigrationSpec, UpgradeSpec, VerifySpec};
pub use workers::WorkerSpec;

/// API group of every resource this operator defines.
pub const GROUP: &str = "referral.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// A referral system: its workers, Redis, MongoDB indexes, scheduled checks, backups,
/// maintenance jobs and monitoring. The operator makes the cluster match it and says
/// in `status` what it did and what is wrong.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "referral.dev",
    version = "v1alpha1",
    kind = "ReferralSystem",
    plural = "referralsystems",
    singular = "referralsystem",
    shortname = "refsys",
    category = "referral",
    namespaced,
    status = "ReferralSystemStatus",
    derive = "PartialEq",
    doc = "A referral system run by referral-operator: workers, Redis, MongoDB indexes, chain checks, backups and monitoring, declared in one object.",
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 45").message("the ReferralSystem name must start with a letter, hold only lower-case letters, digits and '-', and be at most 45 characters, because it prefixes Service and CronJob names"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = "1"),
    printcolumn(name = "Workers", type_ = "string", json_path = ".status.workersReady", description = "ready/desired pods"),
    printcolumn(name = "Indexes", type_ = "string", json_path = ".status.indexSummary"),
    printcolumn(name = "Chains", type_ = "string", json_path = ".status.chainCheck.summary"),
    printcolumn(name = "Last Backup", type_ = "date", json_path = ".status.backup.lastSuccess"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.workers.all(w, self.workers.exists_one(x, x.name == w.name))").message("worker names must be unique within a ReferralSystem"))]
#[x_kube(validation = Rule::new("!has(self.maintenance) || self.maintenance.all(m, self.maintenance.exists_one(x, x.name == m.name))").message("maintenance job names must be unique within a ReferralSystem"))]
#[x_kube(validation = Rule::new("!has(self.backup) || !has(self.backup.restoreDrill) || !has(self.backup.restoreDrill.scratchDatabase) || self.backup.restoreDrill.scratchDatabase.lowerAscii() != self.mongodb.database.lowerAscii()").message("backup.restoreDrill.scratchDatabase must differ from mongodb.database: the drill drops its scratch database, so it must never be the production one"))]
pub struct ReferralSystemSpec {
    /// Stop changing children: the operator keeps reporting status but writes nothing
    /// else. Workers keep running. Default false.
    #[serde(default)]
    pub paused: bool,
    /// Scale every worker to zero. Redis, backups and checks keep running. Default false.
    #[serde(default)]
    pub stopped: bool,
    /// Default image of the referral service for workers and maintenance jobs,
    /// e.g. `example/referral-service:1.4.2`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Pull policy of the service image. Default IfNotPresent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets used to pull images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Scheduling (node selector, affinity, tolerations, topology spread, priority)
    /// and extra labels and annotations of every pod the operator creates: workers,
    /// Redis and jobs. A worker's and Redis's own `pods` override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodOptions>,
    /// Referral engine settings (REFERRAL_* variables).
    #[serde(default)]
    pub referral: ReferralSettings,
    /// The service's processes; one Deployment each.
    #[schemars(length(min = 1, max = 20))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub workers: Vec<WorkerSpec>,
    /// MongoDB connection, indexes and chain-check field names.
    pub mongodb: MongoSpec,
    /// Redis: managed by the operator or external.
    pub redis: RedisSpec,
    /// Scheduled referral-chain integrity check.
    #[serde(default)]
    pub chain_check: ChainCheckSpec,
    /// Scheduled backups and their retention.
    #[serde(default)]
    pub backup: BackupSpec,
    /// Named scheduled jobs of the service (the guide's weekly and monthly tasks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub maintenance: Vec<MaintenanceJob>,
    /// Metrics, alerts and dashboards.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// What an image change does first: a backup (default), and whether a stalled
    /// rollout is rolled back.
    #[serde(default)]
    pub upgrade: UpgradeSpec,
    /// A database migration Job run between the pre-upgrade backup and the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationSpec>,
    /// A verification Job run after every rollout of new images (and after the first
    /// one), with the workers' image and environment: `Ready` waits for it; when it
    /// fails the system is Degraded with its message and, with
    /// `upgrade.autoRollback`, the previous images come back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
}

/// Image pull policies.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Schema of a free-form MongoDB document (filter, collation): any JSON object.
pub(crate) fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The CustomResourceDefinition, exactly as `crds/` holds it.
pub fn definition() -> CustomResourceDefinition {
    trim_embedded_descriptions(ReferralSystem::crd())
}

/// Fields whose schema is a Kubernetes type taken whole (a pod's affinity, a
/// container, a volume, a probe), as paths of property names from `spec`; `[]`
/// steps into a list's items.
const EMBEDDED_KUBERNETES_TYPES: [&[&str]; 15] = [
    &["pods", "affinity"],
    &["pods", "tolerations"],
    &["pods", "topologySpreadConstraints"],
    &["workers", "[]", "pods", "affinity"],
    &["workers", "[]", "pods", "tolerations"],
    &["workers", "[]", "pods", "topologySpreadConstraints"],
    &["workers", "[]", "volumes"],
    &["workers", "[]", "initContainers"],
    &["workers", "[]", "sidecars"],
    &["workers", "[]", "probes", "liveness"],
    &["workers", "[]", "probes", "readiness"],
    &["workers", "[]", "probes", "startup"],
    &["redis", "managed", "pods", "affinity"],
    &["redis", "managed", "pods", "tolerations"],
    &["redis", "managed", "pods", "topologySpreadConstraints"],
];

/// Drops the descriptions inside [`EMBEDDED_KUBERNETES_TYPES`] (each field keeps its
/// own): they repeat the Kubernetes API reference word for word, and with them the
/// CRD outgrows what a client-side `kubectl apply` can store in its annotation
/// (256 KiB). `kubectl explain` still shows every field and type.
fn trim_embedded_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let Ok(mut value) = serde_json::to_value(&crd) else { return crd };
    let Some(versions) = value.pointer_mut("/spec/versions").and_then(|v| v.as_array_mut()) else { return crd };
    for version in versions {
        let Some(spec) = version.pointer_mut("/schema/openAPIV3Schema/properties/spec") else { continue };
        for path in EMBEDDED_KUBERNETES_TYPES {
            let mut node = Some(&mut *spec);
            for step in path.iter() {
                node = node.and_then(|n| match *step {
                    "[]" => n.get_mut("items"),
                    name => n.get_mut("properties").and_then(|p| p.get_mut(name)),
                });
            }
            if let Some(field) = node {
                for child in ["properties", "items", "additionalProperties"] {
                    if let Some(inner) = field.get_mut(child) {
                        strip_descriptions(inner, child == "properties");
                    }
                }
            }
        }
    }
    serde_json::from_value(value).unwrap_or(crd)
}

/// Removes `description` from every schema under `node`; `is_properties` says `node`
/// is a map of property names (where a property may itself be called
/// `description`).
fn strip_descriptions(node: &mut serde_json::Value, is_properties: bool) {
    match node {
        serde_json::Value::Object(map) => {
            if !is_properties {
                map.remove("description");
            }
            for (key, child) in map.iter_mut() {
                let child_is_properties = !is_properties && key == "properties";
                strip_descriptions(child, child_is_properties);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| strip_descriptions(i, false)),
        _ => {}
    }
}

/// The ReferralRestore CustomResourceDefinition.
pub fn restore_definition() -> CustomResourceDefinition {
    ReferralRestore::crd()
}

/// Both CRDs as one YAML stream: what `referral-operator crd` prints, so
/// `referral-operator crd | kubectl apply -f -` installs everything.
pub fn all_definitions_yaml() -> String {
    format!(
        "{}{}",
        definition_yaml(),
        restore_definition_yaml().replace("# Generated by `referral-operator crd`. Do not edit by hand.\n", "")
    )
}

/// The ReferralRestore CRD as checked in under `crds/`.
pub fn restore_definition_yaml() -> String {
    let body = crate::yaml::to_string(&restore_definition()).unwrap_or_default();
    format!("# Generated by `referral-operator crd`. Do not edit by hand.\n---\n{body}")
}

/// The CRD as the YAML document checked in under `crds/`.
pub fn definition_yaml() -> String {
    // Serialising a CRD built from our own types only fails on a serde bug; the
    // stale-CRD test would then catch the empty document.
    let body = crate::yaml::to_string(&definition()).unwrap_or_default();
    format!("# Generated by `referral-operator crd`. Do not edit by hand.\n---\n{body}")
}
