//! The `ReferralRestore` resource: one restore of one ReferralSystem from one named
//! backup. A restore is an event, not a desired state, so it is its own object:
//! creating it asks for the restore, its status tells each step, and deleting it
//! afterwards changes nothing in the data. (A field on the ReferralSystem would run
//! again whenever Git re-applied it, or would need clearing by hand after each use;
//! see docs/backup-restore.md.)

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A restore of a ReferralSystem from a backup on its backup volume: workers are
/// scaled to zero, MongoDB (mongorestore) and Redis are restored, indexes are
/// ensured, the chain check runs, and workers come back.
// clippy reads each `printcolumn(type_ = ...)` as a repeated attribute; they are
// separate columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "referral.dev",
    version = "v1alpha1",
    kind = "ReferralRestore",
    plural = "referralrestores",
    singular = "referralrestore",
    shortname = "refrestore",
    category = "referral",
    namespaced,
    status = "ReferralRestoreStatus",
    derive = "PartialEq",
    doc = "A restore of a ReferralSystem from one of its backups, run once by referral-operator.",
    printcolumn(name = "System", type_ = "string", json_path = ".spec.systemName"),
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ReferralRestoreSpec {
    /// The ReferralSystem in this namespace to restore. Cannot be changed.
    #[schemars(length(min = 1, max = 45), pattern(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf",
         "message": "systemName cannot be changed: a restore is one event; create a new ReferralRestore instead"}
    ]))]
    pub system_name: String,
    /// The backup to restore, as listed in the system's `status.backup.backups`,
    /// e.g. `20261123T010000Z`. Cannot be changed.
    #[schemars(length(min = 16, max = 57), pattern(r"^[0-9]{8}T[0-9]{6}Z(-[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf",
         "message": "backupName cannot be changed: a restore is one event; create a new ReferralRestore instead"}
    ]))]
    pub backup_name: String,
    /// Also restore Redis when the backup holds a snapshot. Default true. Turn it off
    /// for a Redis that does not accept REPLICAOF (most hosted Redis services) and
    /// restore it with the provider's tools. Cannot be changed.
    #[serde(default = "default_true")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf",
         "message": "redis cannot be changed once the restore exists; create a new ReferralRestore instead"}
    ]))]
    pub redis: bool,
    /// Where the backup is read from: `Volume` (default), the backup volume; or
    /// `ObjectStorage`, the system's `spec.backup.objectStorage` bucket (the
    /// off-cluster copy, e.g. when the volume is lost). Redis's snapshot comes from
    /// the same place.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf",
         "message": "source cannot be changed once the restore exists; create a new ReferralRestore instead"}
    ]))]
    pub source: RestoreSource,
}

/// Where a restore reads its backup.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestoreSource {
    /// The backup volume, mounted read-only.
    #[default]
    Volume,
    /// The bucket of the system's `spec.backup.objectStorage`.
    ObjectStorage,
}

fn default_true() -> bool {
    true
}

/// Where a restore is.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    /// Waiting for another restore, a backup or an upgrade of the same system.
    Pending,
    /// Workers are being scaled to zero and scheduled jobs suspended.
    ScalingDown,
    /// The restore Job runs (mongorestore, then Redis).
    Restoring,
    /// The operator ensures the declared MongoDB indexes.
    EnsuringIndexes,
    /// The chain check Job runs against the restored data.
    CheckingChains,
    /// Workers are scaled back.
    ScalingUp,
    /// Done.
    Succeeded,
    /// Stopped; `message` says why. Workers stay at zero, since the data may be
    /// partly restored, until this ReferralRestore is deleted.
    Failed,
}

impl RestorePhase {
    /// Whether the restore is over (either way).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// What the operator reports about a restore.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferralRestoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// What is happening or what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// One condition per step: WorkersStopped, DataRestored, IndexesEnsured,
    /// ChainsChecked, WorkersRestored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Whether this restore holds its system: workers at zero replicas and CronJobs
    /// suspended. Recorded with the phase, before the operator acts on it, so a
    /// restarted operator keeps holding; the system's reconcile reads it from here.
    #[serde(default)]
    pub holds_system: bool,
    /// Name of the restore Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_job: Option<String>,
    /// Name of the chain-check Job run after the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_check_job: Option<String>,
    /// Result of the chain check after the restore (`OK` or the violations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_check: Option<String>,
    /// The last phase whose event was published. A phase recorded here but not yet
    /// announced (the operator stopped between the status write and the event) is
    /// announced by the next reconcile, under the event name the first attempt used,
    /// so every step's event is published exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_phase: Option<RestorePhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

#[cfg(test)]
mod tests {
    //! The CRD's own schema and CEL rules, run by a CEL engine (kube-cel).

    use kube::CustomResourceExt;
    use serde_json::{Value, json};

    use super::ReferralRestore;

    fn schema() -> Value {
        let crd = ReferralRestore::crd();
        let version = crd.spec.versions.first().cloned().unwrap();
        serde_json::to_value(version.schema.unwrap().open_api_v3_schema.unwrap()).unwrap()
    }

    fn restore(system: &str, backup: &str) -> Value {
        json!({
            "apiVersion": "referral.dev/v1alpha1",
            "kind": "ReferralRestore",
            "metadata": {"name": "r1", "namespace": "referrals"},
            "spec": {"systemName": system, "backupName": backup, "redis": true}
        })
    }

    fn problems(object: &Value, old: Option<&Value>) -> Vec<String> {
        match kube_cel::Validator::new().validate(&schema(), object, old) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| format!("{}: {}", e.field_path, e.message)).collect(),
        }
    }

    #[test]
    fn every_rule_compiles() {
        let compiled = kube_cel::compile_schema(&schema());
        assert!(!compiled.has_errors(), "{:?}", compiled.compilation_errors());
    }

    #[test]
    fn system_and_backup_cannot_change_once_created() {
        let old = restore("main", "20261123T010000Z");
        assert!(problems(&old, Some(&old)).is_empty());
        let moved = restore("other", "20261123T010000Z");
        let refused = problems(&moved, Some(&old));
        assert!(refused.iter().any(|m| m.contains("systemName cannot be changed")), "{refused:?}");
        let other_backup = restore("main", "20261124T010000Z");
        let refused = problems(&other_backup, Some(&old));
        assert!(refused.iter().any(|m| m.contains("backupName cannot be changed")), "{refused:?}");
        let mut no_redis = old.clone();
        no_redis["spec"]["redis"] = json!(false);
        assert!(problems(&no_redis, Some(&old)).iter().any(|m| m.contains("redis cannot be changed")));
        let mut from_bucket = old.clone();
        from_bucket["spec"]["source"] = json!("ObjectStorage");
        assert!(problems(&from_bucket, None).is_empty(), "ObjectStorage is a source");
        let mut with_source = old.clone();
        with_source["spec"]["source"] = json!("Volume");
        assert!(problems(&from_bucket, Some(&with_source)).iter().any(|m| m.contains("source cannot be changed")));
        // On create there is nothing to compare with.
        assert!(problems(&moved, None).is_empty());
    }

    #[test]
    fn the_backup_name_pattern_matches_what_backups_are_called() {
        let crd = ReferralRestore::crd();
        let yaml = crate::yaml::to_string(&crd).unwrap();
        assert!(yaml.contains(r"^[0-9]{8}T[0-9]{6}Z(-[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"), "{yaml}");
        let pattern = regex::Regex::new(r"^[0-9]{8}T[0-9]{6}Z(-[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$").unwrap();
        for name in ["20261123T010000Z", "20261123T010000Z-pre-upgrade"] {
            assert!(pattern.is_match(name));
            assert!(crate::backup::name::BackupName::parse(name).is_ok());
        }
        for name in ["20261123T010000Z.partial", "latest", "20261123T010000Z-"] {
            assert!(!pattern.is_match(name), "{name}");
        }
    }
}
