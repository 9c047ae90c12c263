//! What the operator reports back. Nothing here changes on every reconcile: times are
//! only those of real events (a transition, a check run, a backup).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::PatchParams;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{GROUP, VERSION};

/// Observed state of a ReferralSystem.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferralSystemStatus {
    /// The `metadata.generation` this status describes. `Ready` means this generation
    /// is in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, WorkersAvailable, RedisReady, MongoReachable, IndexesReady,
    /// ChainIntegrity, BackupHealthy, ReconciliationPaused, SpecValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Ready pods over desired pods across all workers, e.g. `4/4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers_ready: Option<String>,
    /// Per worker: desired and ready pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerStatus>,
    /// Children that are not ready yet, as `Kind/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources_not_ready: Vec<String>,
    /// Short index summary, e.g. `6/6` present, or `5/6 (1 conflict)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_summary: Option<String>,
    /// Per index: Present, Created, Missing or Conflict, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexStatus>,
    /// Indexes on the managed collections that the spec does not declare. Listed so a
    /// person can decide about them; the operator never drops them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmanaged_indexes: Vec<UnmanagedIndexStatus>,
    /// Result of the last chain integrity check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_check: Option<ChainCheckStatus>,
    /// Backups on the backup volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The last change of worker images: backup first, migration, rollout, rollback.
    /// Progress lives here, not in the operator's memory, so a restart resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// The last run of each maintenance job, from its CronJob: when, and whether it
    /// succeeded (with the failed Job's reason when not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<MaintenanceRunStatus>,
    /// The run-now requests (`referral.dev/check-now`, `referral.dev/backup-now`)
    /// the operator acted on: a request is handled once, even after its Job is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_requests: Option<HandledRequests>,
}

/// The five writers of a ReferralSystem's status. Each owns a fixed set of its
/// fields and writes them by server-side apply under its own field manager, so
/// `managedFields` names the owner of every field and one writer can never erase
/// another's: an apply removes only fields its own manager applied before. A field
/// may sit inside another writer's object (`backup.lastVerifiedRestore` inside
/// `backup`): it is carved out of the outer writer's part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWriter {
    /// The system's reconcile: what it observed and judged.
    Controller,
    /// The upgrade gate, which records a step before it acts on it.
    Upgrade,
    /// The chain-check Job (`check chains --write-status`).
    ChainCheck,
    /// The backup Job's last step (`backup finalize --system`).
    Backup,
    /// The restore drill Job (`backup drill --system`).
    RestoreDrill,
}

impl StatusWriter {
    pub const ALL: [StatusWriter; 5] = [
        StatusWriter::Controller,
        StatusWriter::Upgrade,
        StatusWriter::ChainCheck,
        StatusWriter::Backup,
        StatusWriter::RestoreDrill,
    ];

    /// Its server-side apply field manager.
    pub fn field_manager(self) -> &'static str {
        match self {
            StatusWriter::Controller => "referral-operator-status",
            StatusWriter::Upgrade => "referral-operator-upgrade",
            StatusWriter::ChainCheck => "referral-operator-chain-check",
            StatusWriter::Backup => "referral-operator-backup",
            StatusWriter::RestoreDrill => "referral-operator-restore-drill",
        }
    }

    /// The fields of `status` it owns (as written, camelCase; a nested field as a
    /// dotted path).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            StatusWriter::Controller => &[
                "observedGeneration",
                "conditions",
                "workersReady",
                "workers",
                "resourcesNotReady",
                "indexSummary",
                "indexes",
                "unmanagedIndexes",
                "maintenance",
                "handledRequests",
            ],
            StatusWriter::Upgrade => &["upgrade"],
            StatusWriter::ChainCheck => &["chainCheck"],
            StatusWriter::Backup => &["backup"],
            StatusWriter::RestoreDrill => &["backup.lastVerifiedRestore"],
        }
    }

    /// Its part of `status`: the fields it owns, absent ones left out, without the
    /// fields inside them that another writer owns.
    pub fn owned(self, status: &ReferralSystemStatus) -> Map<String, Value> {
        let Ok(Value::Object(all)) = serde_json::to_value(status) else { return Map::new() };
        let mut out = Map::new();
        for path in self.fields() {
            if let Some(value) = value_at(&all, path) {
                insert_at(&mut out, path, value.clone());
            }
        }
        for other in StatusWriter::ALL.into_iter().filter(|w| *w != self) {
            for inner in other.fields() {
                if self.fields().iter().any(|mine| inner.strip_prefix(mine).is_some_and(|r| r.starts_with('.'))) {
                    remove_at(&mut out, inner);
                }
            }
        }
        out
    }

    /// How it applies: its field manager, forced, so that it takes over its fields
    /// from a writer that merge-patched them before (no other writer applies them).
    pub fn apply_params(self) -> PatchParams {
        PatchParams::apply(self.field_manager()).force()
    }

    /// How it sends [`StatusWriter::leftovers`]: a merge patch, under its name.
    pub fn leftover_params(self) -> PatchParams {
        PatchParams { field_manager: Some(self.field_manager().into()), ..PatchParams::default() }
    }

    /// The server-side apply body: the ReferralSystem's kind and its part of
    /// `status`. A field it owned and now leaves out is removed by the apply.
    pub fn apply_body(self, status: &ReferralSystemStatus) -> Value {
        json!({ "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "ReferralSystem", "status": self.owned(status) })
    }

    /// After an apply: a merge patch that removes what `live` (the status the apply
    /// returned) still holds of this writer's fields although the apply left it out,
    /// or `None`. That happens only for fields set by a write that was not an apply
    /// (an operator before this one merge-patched status), which an apply does not
    /// remove.
    pub fn leftovers(self, live: Option<&ReferralSystemStatus>, applied: &ReferralSystemStatus) -> Option<Value> {
        let live = Value::Object(self.owned(live?));
        let applied = Value::Object(self.owned(applied));
        let patch = nulls_for_missing(&live, &applied)?;
        Some(json!({ "status": patch }))
    }
}

/// The value at a dotted path of objects.
fn value_at<'a>(map: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    match path.split_once('.') {
        None => map.get(path),
        Some((head, rest)) => value_at(map.get(head)?.as_object()?, rest),
    }
}

/// Puts `value` at a dotted path, making the objects on the way.
fn insert_at(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let inner = map.entry(head.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = inner {
                insert_at(inner, rest, value);
            }
        }
    }
}

/// Removes the value at a dotted path, if there is one.
fn remove_at(map: &mut Map<String, Value>, path: &str) {
    match path.split_once('.') {
        None => {
            map.remove(path);
        }
        Some((head, rest)) => {
            if let Some(Value::Object(inner)) = map.get_mut(head) {
                remove_at(inner, rest);
            }
        }
    }
}

/// The keys of `live` (recursively through objects) that `applied` does not have, as
/// a merge patch of nulls. Lists are replaced whole by an apply, so not entered.
fn nulls_for_missing(live: &Value, applied: &Value) -> Option<Value> {
    let (Value::Object(live), Value::Object(applied)) = (live, applied) else { return None };
    let mut patch = Map::new();
    for (key, value) in live {
        match applied.get(key) {
            None => {
                patch.insert(key.clone(), Value::Null);
            }
            Some(kept) => {
                if let Some(inner) = nulls_for_missing(value, kept) {
                    patch.insert(key.clone(), inner);
                }
            }
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// How a scheduled job's last run went.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunResult {
    /// A Job of it runs now.
    Running,
    Succeeded,
    Failed,
}

/// The last run of one maintenance job.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceRunStatus {
    /// The job's name in `spec.maintenance`.
    pub name: String,
    /// Its CronJob.
    pub cron_job: String,
    /// When its last run was scheduled; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When its last successful run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// How the last run went; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<RunResult>,
    /// Why the last run failed (the Job's reason and message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The last run-now request of each kind that started a Job, and the last password
/// rotation carried out.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledRequests {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_now: Option<HandledRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_now: Option<HandledRequest>,
    /// `referral.dev/rotate-redis-password`: the token of the last rotation done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_redis_password: Option<HandledRotation>,
}

/// One handled rotation request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledRotation {
    /// The annotation's value.
    pub token: String,
}

/// One handled run-now request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledRequest {
    /// The annotation's value.
    pub token: String,
    /// The Job it started.
    pub job: String,
}

/// Where an image change is.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradePhase {
    /// The pre-upgrade backup Job runs; workers keep their old images.
    BackingUp,
    /// The migration Job runs; workers keep their old images.
    Migrating,
    /// Deployments have the new images; pods are rolling.
    RollingOut,
    /// Every Deployment runs the new images and the verification Job (`spec.verify`)
    /// runs against them.
    Verifying,
    /// Every Deployment runs the new images (and, with `spec.verify`, they passed it).
    Succeeded,
    /// The verification Job failed and `autoRollback` is off (or there is nothing to
    /// roll back to): the new images stay, the system is Degraded.
    VerificationFailed,
    /// Stopped: the backup or migration failed (old images kept), or the rollout
    /// exceeded its progress deadline without autoRollback.
    Failed,
    /// The rollout stalled and the previous images were put back; they stay until
    /// the spec's images change.
    RolledBack,
}

/// Progress of the last image change.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    pub phase: UpgradePhase,
    /// Identifies the change: a hash of the target images (and the migration).
    pub target: String,
    /// Image per worker being rolled out.
    #[serde(default)]
    pub target_images: BTreeMap<String, String>,
    /// Image per worker before the change: what a rollback puts back.
    #[serde(default)]
    pub previous_images: BTreeMap<String, String>,
    /// The pre-upgrade backup Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_job: Option<String>,
    /// The migration Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_job: Option<String>,
    /// The verification Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_job: Option<String>,
    /// What is happening or what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When this change started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

/// Desired and ready pods of one worker.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    pub name: String,
    pub desired: i32,
    pub ready: i32,
}

/// State of one managed index.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IndexState {
    /// The database has the index as specified.
    Present,
    /// The operator created it.
    Created,
    /// Absent and not created (policy Report, or creation failed).
    Missing,
    /// An index with the same name or keys exists with other options.
    Conflict,
}

/// One managed index and its state.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexStatus {
    pub collection: String,
    pub name: String,
    pub state: IndexState,
    /// Why, for Missing and Conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An index nobody declared, on a collection the operator manages indexes of.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedIndexStatus {
    pub collection: String,
    pub name: String,
    /// Key pattern, e.g. `{legacyCode: 1}`.
    pub keys: String,
}

/// Summary of the last chain integrity check.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainCheckStatus {
    /// When the last successful check finished; the counts below are from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Time>,
    /// `OK` or the number of violations, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// User documents checked.
    pub users: u64,
    /// Referral cycles of two or more users.
    pub cycles: u64,
    /// Referral records whose tier exceeds `referral.maxChainDepth`.
    pub too_deep: u64,
    /// Users whose referrer names no user.
    pub orphans: u64,
    /// Users who name themselves as referrer.
    pub self_referrals: u64,
    /// Documents with fields of the wrong type (or duplicate ids / referral codes).
    pub malformed: u64,
    /// Referral records whose referrer is not the referred user's tier-th ancestor,
    /// or that name a user who does not exist.
    pub bad_referral_records: u64,
    /// Referral records checked.
    #[serde(default)]
    pub referral_records: u64,
    /// Users per referral-chain depth (0 = no referrer), for the depth dashboard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depths: Vec<ChainDepthCount>,
    /// A few offenders, for a person to start from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// What the check could not look at (a missing collection, no users).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Set when the last attempt could not run; cleared by the next successful run.
    /// The counts above stay those of `lastRun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ChainCheckFailure>,
}

/// The kinds of chain violation, in one list: the counts of [`ChainCheckStatus`],
/// the `ChainIntegrity` condition's message, the `kind` label of the operator's
/// violations gauge and the alert that reads it all come from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChainViolation {
    Cycles,
    TooDeep,
    Orphans,
    SelfReferrals,
    Malformed,
    BadReferralRecords,
}

impl ChainViolation {
    /// Every kind, in the order messages list them.
    pub const ALL: [ChainViolation; 6] = [
        ChainViolation::Cycles,
        ChainViolation::SelfReferrals,
        ChainViolation::Orphans,
        ChainViolation::TooDeep,
        ChainViolation::Malformed,
        ChainViolation::BadReferralRecords,
    ];

    /// How many the last check found.
    pub fn count(self, check: &ChainCheckStatus) -> u64 {
        match self {
            ChainViolation::Cycles => check.cycles,
            ChainViolation::TooDeep => check.too_deep,
            ChainViolation::Orphans => check.orphans,
            ChainViolation::SelfReferrals => check.self_referrals,
            ChainViolation::Malformed => check.malformed,
            ChainViolation::BadReferralRecords => check.bad_referral_records,
        }
    }

    /// The value of the metric label `kind` (a fixed set: the series stay bounded).
    pub fn label(self) -> &'static str {
        match self {
            ChainViolation::Cycles => "cycles",
            ChainViolation::TooDeep => "too_deep",
            ChainViolation::Orphans => "orphans",
            ChainViolation::SelfReferrals => "self_referrals",
            ChainViolation::Malformed => "malformed",
            ChainViolation::BadReferralRecords => "bad_referral_records",
        }
    }

    /// What one of them is, named for what the count counts: singular and plural.
    fn noun(self) -> (&'static str, &'static str) {
        match self {
            ChainViolation::Cycles => ("cycle", "cycles"),
            ChainViolation::SelfReferrals => ("user referring themselves", "users referring themselves"),
            ChainViolation::Orphans => ("user whose referrer does not exist", "users whose referrer does not exist"),
            ChainViolation::TooDeep => {
                ("referral record with a tier above maxChainDepth", "referral records with a tier above maxChainDepth")
            }
            ChainViolation::Malformed => ("malformed document", "malformed documents"),
            ChainViolation::BadReferralRecords => {
                ("referral record disagreeing with the chain", "referral records disagreeing with the chain")
            }
        }
    }

    /// `count` of this kind in words, e.g. `2 cycles`.
    pub fn describe(self, count: u64) -> String {
        let (one, many) = self.noun();
        format!("{count} {}", if count == 1 { one } else { many })
    }

    /// The kinds as a list for prose, e.g. in an alert's description.
    pub fn all_named() -> String {
        ChainViolation::ALL.iter().map(|kind| kind.noun().1).collect::<Vec<_>>().join(", ")
    }

    /// Every kind the check found, with its count.
    pub fn found(check: &ChainCheckStatus) -> Vec<(ChainViolation, u64)> {
        ChainViolation::ALL.iter().map(|kind| (*kind, kind.count(check))).filter(|(_, n)| *n > 0).collect()
    }
}

/// Users at one referral-chain depth.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainDepthCount {
    pub depth: u32,
    pub users: u64,
}

/// Why the last chain check attempt did not run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainCheckFailure {
    /// When the attempt gave up.
    pub time: Time,
    /// `MongoUnreachable`, `AuthenticationFailed`, `NotAuthorized`, `ReadFailed`,
    /// `ConfigurationError`, ...
    pub reason: String,
    pub message: String,
}

/// Backups on the backup volume.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Completion time of the newest complete backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Time>,
    /// Complete backups kept after retention.
    #[serde(default)]
    pub kept: u32,
    /// Total size of the kept backups in bytes.
    #[serde(default)]
    pub size_bytes: u64,
    /// Name of the newest complete backup, e.g. `20261123T010000Z`: what a
    /// ReferralRestore names to go back to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    /// Complete backups on the volume after retention, newest first (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<String>,
    /// Incomplete backups on the volume (runs in progress, or stale ones left by
    /// failed runs, which are never deleted automatically).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incomplete: u32,
    /// What a person should look at: stale incomplete backups, folders that are not
    /// backups, backups dated in the future, deletions that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When the backup Job last wrote this summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<Time>,
    /// The last restore drill (`spec.backup.restoreDrill`): which backup it restored
    /// into the scratch database, and whether that worked. Written by the drill Job
    /// as its own field manager; the backup Job never touches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_restore: Option<VerifiedRestoreStatus>,
}

/// How a restore drill went.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DrillResult {
    /// The backup was verified, restored, counted and chain-checked.
    Succeeded,
    /// Something did not: `message` says what and what to do.
    Failed,
}

/// The last restore drill.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedRestoreStatus {
    /// When the drill finished.
    pub time: Time,
    /// The backup it restored (the newest complete one); absent when none was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    pub result: DrillResult,
    /// What was checked, or what failed and what to do about it.
    pub message: String,
    /// Where the backup was read from: the volume or the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The scratch database it restored into (dropped afterwards).
    pub scratch_database: String,
    /// Documents restored and counted against the manifest.
    #[serde(default)]
    pub documents: u64,
    /// The chain check of the restored data: `OK` or the violations found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains: Option<String>,
    /// The newest backup a drill restored successfully (this one when it succeeded,
    /// else carried over): what `BackupVerified` and its alert count from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_backup: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_status() -> ReferralSystemStatus {
        let at = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        serde_json::from_value(json!({
            "observedGeneration": 3,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "m", "lastTransitionTime": at}],
            "workersReady": "1/1",
            "workers": [{"name": "api", "desired": 1, "ready": 1}],
            "resourcesNotReady": ["Deployment/main-api"],
            "indexSummary": "1/1",
            "indexes": [{"collection": "users", "name": "a_1", "state": "Present"}],
            "unmanagedIndexes": [{"collection": "users", "name": "b_1", "keys": "{b: 1}"}],
            "chainCheck": {"users": 1, "cycles": 0, "tooDeep": 0, "orphans": 0, "selfReferrals": 0, "malformed": 0,
                           "badReferralRecords": 0, "failure": {"time": at, "reason": "R", "message": "m"}},
            "backup": {"kept": 1, "sizeBytes": 2},
            "upgrade": {"phase": "Succeeded", "target": "t"},
            "handledRequests": {"checkNow": {"token": "t", "job": "j"}},
            "maintenance": [{"name": "cleanup", "cronJob": "main-maint-cleanup", "lastResult": "Failed"}]
        }))
        .unwrap()
    }

    #[test]
    fn every_status_field_has_exactly_one_writer() {
        let all = serde_json::to_value(full_status()).unwrap();
        let keys: Vec<&String> = all.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 13, "a status field was added: give it to one writer ({keys:?})");
        for key in keys {
            let owners: Vec<StatusWriter> =
                StatusWriter::ALL.into_iter().filter(|w| w.fields().contains(&key.as_str())).collect();
            assert_eq!(owners.len(), 1, "{key} is owned by {owners:?}");
        }
        let managers: std::collections::BTreeSet<&str> = StatusWriter::ALL.iter().map(|w| w.field_manager()).collect();
        assert_eq!(managers.len(), 5, "each writer has a field manager of its own");
    }

    #[test]
    fn the_drill_owns_its_field_inside_backup_and_the_backup_job_does_not() {
        let mut status = full_status();
        let at = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        status.backup.as_mut().unwrap().last_verified_restore = Some(VerifiedRestoreStatus {
            time: at,
            backup: Some("20270115T010000Z".into()),
            result: DrillResult::Succeeded,
            message: "m".into(),
            source: None,
            scratch_database: "neurolov_drill".into(),
            documents: 3,
            chains: None,
            verified_backup: Some("20270115T010000Z".into()),
        });
        let drill = StatusWriter::RestoreDrill.apply_body(&status);
        assert_eq!(drill["status"].as_object().unwrap().keys().collect::<Vec<_>>(), ["backup"]);
        assert_eq!(
            drill["status"]["backup"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["lastVerifiedRestore"],
            "not kept or sizeBytes: those are the backup Job's"
        );
        let backup = StatusWriter::Backup.apply_body(&status);
        assert_eq!(backup["status"]["backup"], json!({"kept": 1, "sizeBytes": 2}));
        // The backup Job's apply leaves the drill's field alone: no leftover patch
        // nulls it, although its own body does not hold it.
        let mut applied = status.clone();
        applied.backup.as_mut().unwrap().last_verified_restore = None;
        assert_eq!(StatusWriter::Backup.leftovers(Some(&status), &applied), None);
        // The drill clears what it left out this time, and only that.
        let mut next = status.clone();
        next.backup.as_mut().unwrap().last_verified_restore.as_mut().unwrap().verified_backup = None;
        assert_eq!(
            StatusWriter::RestoreDrill.leftovers(Some(&status), &next),
            Some(json!({"status": {"backup": {"lastVerifiedRestore": {"verifiedBackup": null}}}}))
        );
    }

    #[test]
    fn an_apply_body_holds_the_writers_fields_only() {
        let status = full_status();
        let body = StatusWriter::ChainCheck.apply_body(&status);
        assert_eq!(body["apiVersion"], "referral.dev/v1alpha1");
        assert_eq!(body["kind"], "ReferralSystem");
        assert_eq!(body["status"].as_object().unwrap().keys().collect::<Vec<_>>(), ["chainCheck"]);
        let controller = StatusWriter::Controller.apply_body(&status);
        let fields = controller["status"].as_object().unwrap();
        assert_eq!(fields.len(), 10);
        assert!(!fields.contains_key("upgrade") && !fields.contains_key("backup"));
    }

    #[test]
    fn leftovers_of_a_legacy_write_are_cleared_and_nothing_else() {
        let live = full_status();
        // The chain check applied a successful run without `failure`, but `failure`
        // came from a merge patch of an older operator and survived the apply.
        let mut applied = live.clone();
        applied.chain_check.as_mut().unwrap().failure = None;
        let patch = StatusWriter::ChainCheck.leftovers(Some(&live), &applied).unwrap();
        assert_eq!(patch, json!({"status": {"chainCheck": {"failure": null}}}));
        // The controller's list went empty: it is cleared; others' fields are not its to clear.
        let mut applied = live.clone();
        applied.resources_not_ready.clear();
        applied.backup = None;
        let patch = StatusWriter::Controller.leftovers(Some(&live), &applied).unwrap();
        assert_eq!(patch, json!({"status": {"resourcesNotReady": null}}));
        assert_eq!(StatusWriter::Backup.leftovers(Some(&live), &live), None, "nothing left over");
        assert_eq!(StatusWriter::Backup.leftovers(None, &live), None);
    }
}
