//! What the operator reports back. Nothing here changes on every reconcile: times are
//! only those of real events (a transition, a check run, a backup).

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
}
