//! Scheduled work: the chain check, backups with retention, and maintenance jobs.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{SecretKeyRef, StorageSpec};

/// The weekly referral-chain integrity check (cycles, too-deep chains, orphans).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainCheckSpec {
    /// Cron schedule in UTC. Default `0 3 * * 0` (Sundays 03:00).
    #[serde(default = "default_chain_schedule")]
    #[schemars(length(min = 1, max = 256), pattern(super::common::CRON_PATTERN))]
    pub schedule: String,
    /// Stop scheduling new runs; a run can still be asked for with the
    /// `referral.dev/check-now` annotation. Default false.
    #[serde(default)]
    pub suspend: bool,
}

impl Default for ChainCheckSpec {
    fn default() -> Self {
        Self { schedule: default_chain_schedule(), suspend: false }
    }
}

/// Scheduled backups of MongoDB (native dump or mongodump) and Redis (RDB snapshot)
/// into a volume, and optionally into object storage.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.objectStorage) || !has(self.method) || self.method == 'Native'",
     "message": "objectStorage needs method Native: mongodump archives are written to the volume only"}
]))]
pub struct BackupSpec {
    /// Cron schedule in UTC. Default `0 1 * * *` (daily 01:00).
    #[serde(default = "default_backup_schedule")]
    #[schemars(length(min = 1, max = 256), pattern(super::common::CRON_PATTERN))]
    pub schedule: String,
    /// Stop scheduling backups. Existing backups are kept. Default false.
    #[serde(default)]
    pub suspend: bool,
    /// How many backups to keep (grandfather-father-son).
    #[serde(default)]
    pub retention: RetentionSpec,
    /// How MongoDB is dumped and restored. `Native` (default): this operator's image
    /// dumps with the driver into mongodump's directory layout, with a manifest of
    /// counts and checksums that a restore checks before and after; no tools image.
    /// `Mongodump`: `mongodump`/`mongorestore` archives from `mongoToolsImage`.
    #[serde(default)]
    pub method: BackupMethod,
    /// Collections to dump; empty means the whole database.
    /// Default `users` (every referral chain is built from it), `referrals` and
    /// `referralTransactions`. Each name becomes part of a file name, so `/` is refused.
    #[serde(default = "default_collections")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 120), pattern(r"^[^$/\x00]+$")))]
    pub collections: Vec<String>,
    /// Also snapshot Redis (RDB over the network). Default true.
    #[serde(default = "default_true")]
    pub include_redis: bool,
    /// Volume the backups are written to. Default 20Gi.
    #[serde(default = "default_backup_storage")]
    pub storage: StorageSpec,
    /// Image with `mongodump`/`mongorestore`, for `method: Mongodump`. Default `mongo:7.0`.
    #[serde(default = "default_mongo_tools_image")]
    #[schemars(length(min = 1))]
    pub mongo_tools_image: String,
    /// Image with `redis-cli` (and `redis-server`, for restores). Default: the managed
    /// Redis image, or `redis:7.2` for an external Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub redis_tools_image: Option<String>,
    /// Resources of each backup container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Also write every backup to S3-compatible object storage, off the cluster
    /// (native method only): uploaded as the dump streams, the Redis snapshot and
    /// the manifest (last) by finalize, pruned there with the same retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_storage: Option<ObjectStorageSpec>,
    /// A scheduled restore drill: the newest backup restored into a scratch database,
    /// its counts checked against the manifest, the chain check run on it, the scratch
    /// database dropped, the result in `status.backup.lastVerifiedRestore`. Off when
    /// absent. Workers keep running; the production database is never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_drill: Option<RestoreDrillSpec>,
}

/// The scheduled restore drill: proof that the newest backup restores.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.maxUnverifiedAge != '0'",
     "message": "maxUnverifiedAge 0 would alert at once after every backup: give a duration such as 8d"}
]))]
pub struct RestoreDrillSpec {
    /// Cron schedule in UTC. Default `0 4 * * 0` (Sundays 04:00, after the 01:00 backup
    /// and the 03:00 chain check).
    #[serde(default = "default_drill_schedule")]
    #[schemars(length(min = 1, max = 256), pattern(super::common::CRON_PATTERN))]
    pub schedule: String,
    /// Stop scheduling drills. The alert still fires when the newest backup stays
    /// unverified too long. Default false.
    #[serde(default)]
    pub suspend: bool,
    /// How old the newest successfully restored backup may be (counted from the
    /// backup's own time) before `BackupVerified` turns False and the
    /// `ReferralBackupUnverified` alert fires. Prometheus duration (`8d`, `36h`).
    /// Default `8d`: a weekly drill plus a day.
    #[serde(default = "default_max_unverified_age")]
    #[schemars(length(min = 1, max = 32), pattern(super::duration::PROMETHEUS_DURATION_PATTERN))]
    pub max_unverified_age: String,
    /// The database the drill restores into and drops afterwards; it must not be
    /// `mongodb.database` (the drill refuses to start if it is). Default
    /// `<mongodb.database>_drill`. Its collections are dropped before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r#"^[^/\\. "$*<>:|?]+$"#))]
    pub scratch_database: Option<String>,
    /// Give up after this many seconds. Default 21600 (6 hours).
    #[serde(default = "default_drill_deadline")]
    #[schemars(range(min = 60, max = 604800))]
    pub active_deadline_seconds: i64,
    /// Resources of the drill's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for RestoreDrillSpec {
    fn default() -> Self {
        Self {
            schedule: default_drill_schedule(),
            suspend: false,
            max_unverified_age: default_max_unverified_age(),
            scratch_database: None,
            active_deadline_seconds: default_drill_deadline(),
            resources: None,
        }
    }
}

fn default_drill_schedule() -> String {
    "0 4 * * 0".into()
}
fn default_max_unverified_age() -> String {
    "8d".into()
}
fn default_drill_deadline() -> i64 {
    21600
}

/// A bucket of an S3-compatible object store.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.kmsKeyId) || (has(self.serverSideEncryption) && self.serverSideEncryption == 'aws:kms')",
     "message": "kmsKeyId goes with serverSideEncryption: aws:kms"},
    {"rule": "!has(self.serverSideEncryption) || self.serverSideEncryption != 'aws:kms' || has(self.kmsKeyId)",
     "message": "serverSideEncryption aws:kms needs kmsKeyId"}
]))]
pub struct ObjectStorageSpec {
    /// Endpoint of an S3-compatible service (`https://host:port`); AWS S3 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub endpoint: Option<String>,
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix the backups go under.
    #[serde(default)]
    #[schemars(length(max = 512))]
    pub prefix: String,
    /// Default `us-east-1`.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[a-z0-9-]+$"))]
    pub region: String,
    /// The access key id, from a Secret.
    pub access_key_id_secret_ref: SecretKeyRef,
    /// The secret access key, from a Secret.
    pub secret_access_key_secret_ref: SecretKeyRef,
    /// `AES256` (SSE-S3) or `aws:kms` (SSE-KMS, with `kmsKeyId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(AES256|aws:kms)$"))]
    pub server_side_encryption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl Default for BackupSpec {
    fn default() -> Self {
        Self {
            schedule: default_backup_schedule(),
            suspend: false,
            retention: RetentionSpec::default(),
            method: BackupMethod::default(),
            collections: default_collections(),
            include_redis: true,
            storage: default_backup_storage(),
            mongo_tools_image: default_mongo_tools_image(),
            redis_tools_image: None,
            resources: None,
            object_storage: None,
            restore_drill: None,
        }
    }
}

/// How a backup dumps MongoDB and a restore brings it back.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupMethod {
    /// `referral-operator backup dump|restore` from the operator's image.
    #[default]
    Native,
    /// `mongodump`/`mongorestore` from `mongoToolsImage`.
    Mongodump,
}

/// Keep the newest complete backup of each of the last `daily` days, `weekly` ISO weeks
/// and `monthly` months. The newest complete backup is always kept.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.daily + self.weekly + self.monthly >= 1",
     "message": "retention must keep at least one backup: raise daily, weekly or monthly above 0"}
]))]
pub struct RetentionSpec {
    /// Days with a kept backup. Default 7.
    #[serde(default = "default_daily")]
    #[schemars(range(max = 366))]
    pub daily: u32,
    /// ISO weeks with a kept backup. Default 4.
    #[serde(default = "default_weekly")]
    #[schemars(range(max = 520))]
    pub weekly: u32,
    /// Months with a kept backup. Default 6.
    #[serde(default = "default_monthly")]
    #[schemars(range(max = 240))]
    pub monthly: u32,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self { daily: default_daily(), weekly: default_weekly(), monthly: default_monthly() }
    }
}

/// A named scheduled task of the service, such as the guide's weekly "clean up old
/// transactions". It runs with the same image and environment as the workers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.command) || has(self.args)",
     "message": "a maintenance job needs command or args: say what it runs, e.g. args: [npm, run, cleanup:transactions]"}
]))]
pub struct MaintenanceJob {
    /// Name, unique within the system; part of the CronJob name. Lower-case letters,
    /// digits and '-', starting with a letter, at most 24 characters.
    #[schemars(length(min = 1, max = 24), pattern(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Cron schedule in UTC.
    #[schemars(length(min = 1, max = 256), pattern(super::common::CRON_PATTERN))]
    pub schedule: String,
    /// Stop scheduling this job. Default false.
    #[serde(default)]
    pub suspend: bool,
    /// What the job runs.
    #[serde(flatten)]
    pub template: JobTemplate,
}

/// What a job of the service runs (a maintenance job, the migration): the service
/// image unless another is named, the workers' environment plus its own, in a pod of
/// its own. Its fields sit in the job's object itself, beside its name or schedule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplate {
    /// Image; defaults to `spec.image` (for the migration, the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments (the container's `args`), e.g. `[npm, run, migrate:referral]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Extra environment, same rules as a worker's `env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Give up after this many seconds. Default 3600.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 1, max = 604800))]
    pub active_deadline_seconds: i64,
    /// Resources of the job's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_chain_schedule() -> String {
    "0 3 * * 0".into()
}
fn default_backup_schedule() -> String {
    "0 1 * * *".into()
}
fn default_collections() -> Vec<String> {
    vec!["users".into(), "referrals".into(), "referralTransactions".into()]
}
fn default_true() -> bool {
    true
}
fn default_backup_storage() -> StorageSpec {
    StorageSpec { size: "20Gi".into(), storage_class_name: None, delete_with_system: false }
}
fn default_mongo_tools_image() -> String {
    "mongo:7.0".into()
}
fn default_daily() -> u32 {
    7
}
fn default_weekly() -> u32 {
    4
}
fn default_monthly() -> u32 {
    6
}
fn default_deadline() -> i64 {
    3600
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The job template is flattened: maintenance jobs and the migration keep the
    /// wire format they had before it existed, so stored objects stay valid.
    #[test]
    fn job_template_fields_stay_in_the_jobs_object() {
        let wire = serde_json::json!({
            "name": "cleanup", "schedule": "0 4 * * 0", "suspend": false,
            "image": "x:1", "args": ["npm", "run", "cleanup"], "activeDeadlineSeconds": 600
        });
        let job: MaintenanceJob = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(job.template.args.as_deref(), Some(&["npm".to_string(), "run".into(), "cleanup".into()][..]));
        assert_eq!(job.template.active_deadline_seconds, 600);
        assert_eq!(serde_json::to_value(&job).unwrap(), wire, "no nested `template` key");
        let migration: crate::crd::MigrationSpec = serde_json::from_value(serde_json::json!({"args": ["m"]})).unwrap();
        assert_eq!(migration.template.active_deadline_seconds, 3600, "the default applies through the flatten");
        assert_eq!(
            serde_json::to_value(&migration).unwrap(),
            serde_json::json!({"args": ["m"], "activeDeadlineSeconds": 3600})
        );
    }
}
