//! What the operator reports back. Nothing here changes on every reconcile: times are
//! only those of real events (a transition, a check run, a backup).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// The run-now requests (`referral.dev/check-now`, `referral.dev/backup-now`)
    /// the operator acted on: a request is handled once, even after its Job is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_requests: Option<HandledRequests>,
}

/// The last run-now request of each kind that started a Job.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledRequests {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_now: Option<HandledRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_now: Option<HandledRequest>,
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
    /// Every Deployment runs the new images.
    Succeeded,
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
    pub kept: u32,
    /// Total size of the kept backups in bytes.
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
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
