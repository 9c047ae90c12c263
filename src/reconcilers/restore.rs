//! Restores (a `ReferralRestore`): the restore Job builder and the pure state machine
//! the controller drives.
//!
//! The Job verifies the backup (this operator's binary, `backup verify`), runs
//! `mongorestore` over each archive of the backup, then restores Redis when the
//! backup holds a snapshot. Redis is restored over the network, as it was backed up:
//! the Job starts a throwaway `redis-server` on the snapshot and makes the live Redis
//! its replica for one full resynchronisation (`REPLICAOF`), then promotes it back
//! (`REPLICAOF NO ONE`). That needs no access to Redis's volume (a ReadWriteOnce
//! claim another pod cannot mount while Redis runs), works for the managed Redis and
//! for an external one that allows REPLICAOF, and leaves Redis's append-only file
//! rewritten from the restored data, which copying an RDB file into the data
//! directory would not (with `appendonly yes` Redis ignores dump.rdb at start).
//!
//! The state machine ([`next_restore_step`]) takes what the controller observed and
//! returns one step; it keeps nothing in memory, and the Job name is derived from the
//! ReferralRestore's uid, so after an operator restart the same inputs give the same
//! step and the same Job is found rather than a second one started.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, PodSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::restore::{ReferralRestoreStatus, RestorePhase};
use crate::crd::validate::ValidatedSystem;

use super::backup::{
    BACKUP_MOUNT, WORK_MOUNT, claim_name, env_field, env_literal, redis_client_env, redis_tools_image,
};
use super::env::from_secret;
use super::job::{OneOff, one_off_job};
use super::meta::{MAX_DNS_LABEL, child_name, short_hash};
use super::security::{DEFAULT_USER, container_security, pod_security};
use super::{BuildContext, Children};

/// `app.kubernetes.io/component` of restore Jobs.
pub const COMPONENT: &str = "restore";
/// Scratch space for the throwaway Redis (holds a copy of the snapshot).
const SCRATCH_MOUNT: &str = "/scratch";
/// Port of the throwaway Redis the live one replicates from.
pub const RESTORE_REDIS_PORT: i32 = 6380;
/// How long the whole restore Job may run.
pub const RESTORE_JOB_DEADLINE_SECONDS: i64 = 6 * 3600;

/// mongorestore over every archive of the backup. `--drop` drops each collection the
/// archive holds before restoring it, so that collection is exactly as it was at
/// backup time (without it, documents written since would stay and restored ones
/// would collide with them on `_id`); collections the backup does not hold are not
/// touched. A backup taken from another database name is restored into the current
/// one with `--nsFrom/--nsTo`.
pub const MONGORESTORE_SCRIPT: &str = r#"set -eu
backups="${BACKUP_DIR:-/backups}"
work="${WORK_DIR:-/work}"
dir="$backups/$BACKUP_NAME"
umask 077
trap 'rm -f "$work/mongorestore.yaml"' EXIT
printf 'uri: "%s"\n' "$MONGODB_URI" > "$work/mongorestore.yaml"
source_db="$MONGODB_DATABASE"
if [ -f "$dir/mongodb-database.txt" ]; then source_db=$(cat "$dir/mongodb-database.txt"); fi
if [ "$source_db" != "$MONGODB_DATABASE" ]; then
  set -- "--nsFrom=$source_db.*" "--nsTo=$MONGODB_DATABASE.*"
  echo "the backup is of database $source_db; restoring into $MONGODB_DATABASE"
else
  set --
fi
found=0
for archive in "$dir/mongodb.archive.gz" "$dir"/mongodb-*.archive.gz; do
  [ -f "$archive" ] || continue
  found=1
  echo "restoring $(basename "$archive")"
  mongorestore --config="$work/mongorestore.yaml" --archive="$archive" --gzip --drop --stopOnError --nsInclude="$source_db.*" "$@"
done
if [ "$found" = 0 ]; then
  echo "backup $BACKUP_NAME holds no MongoDB archive" >&2
  exit 1
fi
"#;

/// Redis from the snapshot, by replication from a throwaway server (see the module
/// docs). The throwaway server gets a random password, passed to the live Redis on
/// standard input (never as an argument), so nothing else can sync from it. Whatever
/// happens, the live Redis is promoted back before the script ends.
pub const REDIS_RESTORE_SCRIPT: &str = r#"set -eu
backups="${BACKUP_DIR:-/backups}"
scratch="${SCRATCH_DIR:-/scratch}"
port="${RESTORE_PORT:-6380}"
rdb="$backups/$BACKUP_NAME/redis.rdb"
if [ ! -f "$rdb" ]; then
  echo "backup $BACKUP_NAME holds no Redis snapshot; Redis is left as it is"
  exit 0
fi
cp "$rdb" "$scratch/dump.rdb"
pw=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
umask 077
printf 'port %s\nbind * -::*\nprotected-mode no\ndir %s\ndbfilename dump.rdb\nappendonly no\nsave ""\nrequirepass %s\n' "$port" "$scratch" "$pw" > "$scratch/restore.conf"
redis-server "$scratch/restore.conf" &
server=$!
live() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" $REDIS_TLS_FLAG "$@"; }
source_cli() { REDISCLI_AUTH="$pw" redis-cli -p "$port" "$@"; }
replicating=0
finish() {
  status=$?
  if [ "$replicating" = 1 ]; then
    live REPLICAOF NO ONE >/dev/null || echo "could not promote $REDIS_HOST back: run REPLICAOF NO ONE on it" >&2
    printf 'CONFIG SET masterauth ""\n' | live >/dev/null || true
  fi
  kill "$server" 2>/dev/null || true
  rm -f "$scratch/restore.conf" "$scratch/dump.rdb"
  exit "$status"
}
trap finish EXIT
i=0
until [ "$(source_cli PING 2>/dev/null)" = "PONG" ]; do
  kill -0 "$server" 2>/dev/null || { echo "redis-server could not load the snapshot $rdb" >&2; exit 1; }
  i=$((i + 1)); [ "$i" -le 600 ] || { echo "the snapshot did not load within 10 minutes" >&2; exit 1; }
  sleep 1
done
expected=$(source_cli DBSIZE)
echo "the snapshot holds $expected keys"
printf 'CONFIG SET masterauth %s\n' "$pw" | live >/dev/null
replicating=1
live REPLICAOF "$POD_IP" "$port" >/dev/null
i=0
while :; do
  info=$(live INFO replication | tr -d '\r')
  case "$info" in
    *master_link_status:up*master_sync_in_progress:0*|*master_sync_in_progress:0*master_link_status:up*) break ;;
  esac
  i=$((i + 1)); [ "$i" -le 1800 ] || { echo "Redis did not finish syncing from the snapshot within 30 minutes" >&2; exit 1; }
  sleep 1
done
i=0
until [ "$(live DBSIZE)" = "$(source_cli DBSIZE)" ]; do
  i=$((i + 1)); [ "$i" -le 30 ] || { echo "Redis holds $(live DBSIZE) keys after the sync, the snapshot $(source_cli DBSIZE)" >&2; exit 1; }
  sleep 1
done
live REPLICAOF NO ONE >/dev/null
printf 'CONFIG SET masterauth ""\n' | live >/dev/null
replicating=0
echo "Redis restored: $(live DBSIZE) keys"
"#;

/// Name of the restore Job of the ReferralRestore with this uid: deterministic, so a
/// restarted operator finds it.
pub fn restore_job_name(system: &ValidatedSystem, restore_uid: &str) -> String {
    child_name(&system.name, &format!("restore-{}", &short_hash(restore_uid.as_bytes())[..8]), MAX_DNS_LABEL)
}

/// Name of the chain-check Job run after the restore with this uid.
pub fn verify_job_name(system: &ValidatedSystem, restore_uid: &str) -> String {
    child_name(&system.name, &format!("restore-check-{}", &short_hash(restore_uid.as_bytes())[..8]), MAX_DNS_LABEL)
}

/// Whether a restore Job restores Redis: asked for, and a single Redis to replicate
/// into (a Redis Cluster is refused by the validate step for backups already).
pub fn restores_redis(system: &ValidatedSystem, redis_requested: bool) -> bool {
    redis_requested && system.spec.redis.external.as_ref().is_none_or(|e| e.cluster_nodes.is_empty())
}

/// The restore Job: verify the backup, mongorestore, then Redis when asked for and
/// the backup has a snapshot. The backup volume is mounted read-only: a restore
/// never changes a backup.
pub fn restore_job(
    system: &ValidatedSystem,
    ctx: &BuildContext,
    backup_name: &str,
    job_name: &str,
    redis_requested: bool,
) -> Job {
    let spec = &system.spec;
    let backup = &spec.backup;
    let mounts = |extra: Option<(&str, &str)>| {
        let mut mounts = vec![
            VolumeMount {
                name: "backups".into(),
                mount_path: BACKUP_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
        ];
        if let Some((name, path)) = extra {
            mounts.push(VolumeMount { name: name.into(), mount_path: path.into(), ..VolumeMount::default() });
        }
        mounts
    };
    let verify = Container {
        name: "verify".into(),
        image: Some(ctx.operator_image.clone()),
        args: Some(vec![
            "backup".into(),
            "verify".into(),
            "--dir".into(),
            BACKUP_MOUNT.into(),
            "--name".into(),
            backup_name.into(),
        ]),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts(None)),
        ..Container::default()
    };
    let mongorestore = Container {
        name: "mongorestore".into(),
        image: Some(backup.mongo_tools_image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), MONGORESTORE_SCRIPT.into()]),
        env: Some(vec![
            from_secret("MONGODB_URI", &spec.mongodb.uri_secret_ref),
            env_literal("MONGODB_DATABASE", &spec.mongodb.database),
            env_literal("BACKUP_NAME", backup_name),
        ]),
        resources: backup.resources.clone(),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts(Some(("work", WORK_MOUNT)))),
        ..Container::default()
    };
    let (init, main) = if restores_redis(system, redis_requested) {
        let mut env = redis_client_env(system);
        env.extend([
            env_literal("BACKUP_NAME", backup_name),
            env_literal("RESTORE_PORT", RESTORE_REDIS_PORT),
            env_field("POD_IP", "status.podIP"),
        ]);
        let redis = Container {
            name: "redis-restore".into(),
            image: Some(redis_tools_image(system)),
            command: Some(vec!["sh".into(), "-c".into(), REDIS_RESTORE_SCRIPT.into()]),
            env: Some(env),
            resources: backup.resources.clone(),
            security_context: Some(container_security()),
            volume_mounts: Some(mounts(Some(("scratch", SCRATCH_MOUNT)))),
            ..Container::default()
        };
        (vec![verify, mongorestore], redis)
    } else {
        (vec![verify], mongorestore)
    };
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        security_context: Some(pod_security(DEFAULT_USER)),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| spec.image_pull_secrets.clone()),
        init_containers: Some(init),
        containers: vec![main],
        volumes: Some(vec![
            Volume {
                name: "backups".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(system),
                    read_only: Some(true),
                }),
                ..Volume::default()
            },
            Volume {
                name: "work".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(Quantity("16Mi".into())),
                }),
                ..Volume::default()
            },
            Volume { name: "scratch".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
            Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        ]),
        ..PodSpec::default()
    };
    one_off_job(
        system,
        ctx,
        OneOff {
            name: job_name,
            component: COMPONENT,
            purpose: "restore",
            // Both steps can run again safely (drop and restore; a full resync), so one
            // retry covers a passing network error; more would hide a real failure.
            backoff_limit: 1,
            active_deadline_seconds: RESTORE_JOB_DEADLINE_SECONDS,
            pod_failure_policy: None,
        },
        pod,
    )
}

/// While a restore holds the system: every worker at zero replicas and every
/// CronJob (backups, chain check, maintenance) suspended, so nothing writes to the
/// databases or dumps them half-restored. Applied to the built children by the
/// controller; the spec is not touched.
pub fn hold_for_restore(children: &mut Children) {
    for deployment in &mut children.deployments {
        if let Some(spec) = deployment.spec.as_mut() {
            spec.replicas = Some(0);
        }
    }
    for cron in &mut children.cron_jobs {
        if let Some(spec) = cron.spec.as_mut() {
            spec.suspend = Some(true);
        }
    }
}

/// What the controller observed of a Job it looks up by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobPhase {
    Absent,
    Running,
    Succeeded,
    /// With the Job's own reason and message (`BackoffLimitExceeded`, ...).
    Failed(String),
}

impl JobPhase {
    /// Reads a Job's conditions (`Complete`/`Failed` True) the way `kubectl wait` does.
    pub fn of(job: Option<&Job>) -> Self {
        let Some(job) = job else { return Self::Absent };
        let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
        for condition in conditions.into_iter().flatten() {
            if condition.status != "True" {
                continue;
            }
            match condition.type_.as_str() {
                "Complete" | "SuccessCriteriaMet" => return Self::Succeeded,
                "Failed" | "FailureTarget" => {
                    let reason = condition.reason.clone().unwrap_or_default();
                    let message = condition.message.clone().unwrap_or_default();
                    return Self::Failed(format!("{reason}: {message}").trim_matches([':', ' ']).to_string());
                }
                _ => {}
            }
        }
        Self::Running
    }
}

/// What the controller observed for one ReferralRestore.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreObservation<'a> {
    /// The ReferralRestore's uid (names its Jobs).
    pub restore_uid: &'a str,
    /// Its status as stored: the progress so far.
    pub status: Option<&'a ReferralRestoreStatus>,
    /// The ReferralSystem named by `spec.systemName`, validated; `None` when it does
    /// not exist or is invalid.
    pub system: Option<&'a ValidatedSystem>,
    /// Another ReferralRestore of the same system that is not finished and was
    /// created first (creation time, then name): this one waits.
    pub earlier_restore: Option<&'a str>,
    /// A backup Job of the system (scheduled, manual or pre-upgrade) is active.
    pub backup_running: Option<&'a str>,
    /// An image change of the system is between backup and rollout.
    pub upgrade_in_progress: bool,
    /// Every worker Deployment has a spec of zero replicas and no worker pod is
    /// left, terminating ones included (list the pods, or require
    /// `status.observedGeneration >= metadata.generation` and `status.replicas` and
    /// `status.terminatingReplicas` at 0: a status not yet updated reads as 0).
    pub workers_stopped: bool,
    /// The restore Job ([`restore_job_name`]).
    pub restore_job: JobPhase,
    /// The operator ensured the declared indexes after the restore (it records this
    /// in the condition `IndexesEnsured`; pass its outcome here).
    pub indexes: IndexOutcome,
    /// The chain-check Job ([`verify_job_name`]).
    pub chain_check_job: JobPhase,
    /// Every worker Deployment is back at its desired, available replicas.
    pub workers_restored: bool,
}

/// Outcome of ensuring indexes after the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOutcome {
    NotYet,
    Ensured,
    Failed(String),
}

/// The one thing to do next for a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreStep {
    /// Nothing may start yet; the reason names what is in the way.
    Wait {
        reason: &'static str,
        message: String,
    },
    /// Start holding the system ([`hold_for_restore`]): workers to zero, CronJobs
    /// suspended. Keep holding in every later step until `Done`/`Failed` says not.
    ScaleWorkersToZero,
    /// Workers are stopping; keep holding.
    WaitForWorkersToStop,
    /// Create [`restore_job`] with this name.
    CreateRestoreJob {
        job_name: String,
    },
    WaitForRestoreJob {
        job_name: String,
    },
    /// Ensure the system's declared MongoDB indexes now, then record the outcome.
    EnsureIndexes,
    /// Create a chain-check Job with this name: `job::job_from_cron_job` on the
    /// chain-check CronJob, purpose `restore-check`.
    RunChainCheck {
        job_name: String,
    },
    WaitForChainCheck {
        job_name: String,
    },
    /// Stop holding: build workers and CronJobs from the spec again.
    ScaleWorkersBack,
    /// Over. `hold` says whether workers stay at zero (after a failure that may have
    /// left the data half-restored, until the ReferralRestore is deleted).
    Done {
        phase: RestorePhase,
        message: String,
        hold: bool,
    },
}

impl RestoreStep {
    /// Whether the system must be held ([`hold_for_restore`]) while this step runs.
    pub fn holds_system(&self) -> bool {
        match self {
            Self::Wait { .. } => false,
            Self::ScaleWorkersBack => false,
            Self::Done { hold, .. } => *hold,
            _ => true,
        }
    }

    /// The phase to record in the ReferralRestore's status for this step.
    pub fn phase(&self) -> RestorePhase {
        match self {
            Self::Wait { .. } => RestorePhase::Pending,
            Self::ScaleWorkersToZero | Self::WaitForWorkersToStop => RestorePhase::ScalingDown,
            Self::CreateRestoreJob { .. } | Self::WaitForRestoreJob { .. } => RestorePhase::Restoring,
            Self::EnsureIndexes => RestorePhase::EnsuringIndexes,
            Self::RunChainCheck { .. } | Self::WaitForChainCheck { .. } => RestorePhase::CheckingChains,
            Self::ScaleWorkersBack => RestorePhase::ScalingUp,
            Self::Done { phase, .. } => *phase,
        }
    }
}

/// Wait reasons.
pub const WAIT_SYSTEM_MISSING: &str = "SystemNotFound";
pub const WAIT_OTHER_RESTORE: &str = "AnotherRestoreRunning";
pub const WAIT_BACKUP_RUNNING: &str = "BackupRunning";
pub const WAIT_UPGRADE_RUNNING: &str = "UpgradeInProgress";

/// The next step of a restore. Pure: the same observation gives the same step, so an
/// operator that restarts midway carries on where status and the cluster say it was.
pub fn next_restore_step(observed: &RestoreObservation<'_>) -> RestoreStep {
    let recorded = observed.status.and_then(|s| s.phase);
    if let Some(phase) = recorded
        && phase.is_terminal()
    {
        let message = observed.status.and_then(|s| s.message.clone()).unwrap_or_default();
        return RestoreStep::Done { phase, message, hold: phase == RestorePhase::Failed };
    }
    let Some(system) = observed.system else {
        if recorded.is_some_and(|p| p != RestorePhase::Pending) {
            return RestoreStep::Done {
                phase: RestorePhase::Failed,
                message: "the ReferralSystem was deleted or became invalid during the restore".into(),
                hold: false,
            };
        }
        return RestoreStep::Wait {
            reason: WAIT_SYSTEM_MISSING,
            message: "the ReferralSystem named by spec.systemName does not exist or is invalid".into(),
        };
    };
    let started = recorded.is_some_and(|p| p != RestorePhase::Pending);
    // Before anything changes, nothing else may be running on the same system. Once
    // started, the restore holds the system, so nothing new can begin.
    if !started {
        if let Some(other) = observed.earlier_restore {
            return RestoreStep::Wait {
                reason: WAIT_OTHER_RESTORE,
                message: format!("waiting for ReferralRestore {other} of the same system to finish"),
            };
        }
        if observed.upgrade_in_progress {
            return RestoreStep::Wait {
                reason: WAIT_UPGRADE_RUNNING,
                message: "waiting for the image change in progress to finish".into(),
            };
        }
        if let Some(job) = observed.backup_running {
            return RestoreStep::Wait {
                reason: WAIT_BACKUP_RUNNING,
                message: format!("waiting for backup Job {job} to finish"),
            };
        }
        return RestoreStep::ScaleWorkersToZero;
    }
    let restore_job = restore_job_name(system, observed.restore_uid);
    let check_job = verify_job_name(system, observed.restore_uid);
    match &observed.restore_job {
        JobPhase::Absent => {
            if !observed.workers_stopped {
                return RestoreStep::WaitForWorkersToStop;
            }
            // The hold suspended the CronJobs, but a backup that began before it may
            // still run: never restore underneath a dump.
            if observed.backup_running.is_some() {
                return RestoreStep::WaitForWorkersToStop;
            }
            return RestoreStep::CreateRestoreJob { job_name: restore_job };
        }
        JobPhase::Running => return RestoreStep::WaitForRestoreJob { job_name: restore_job },
        JobPhase::Failed(why) => {
            return RestoreStep::Done {
                phase: RestorePhase::Failed,
                message: format!(
                    "restore Job {restore_job} failed ({why}); workers stay at zero because the data may be partly restored: fix the cause and create a new ReferralRestore, or delete this one to start the workers on the data as it is"
                ),
                hold: true,
            };
        }
        JobPhase::Succeeded => {}
    }
    match &observed.indexes {
        IndexOutcome::NotYet => return RestoreStep::EnsureIndexes,
        IndexOutcome::Failed(why) => {
            return RestoreStep::Done {
                phase: RestorePhase::Failed,
                message: format!(
                    "the data is restored but the indexes could not be ensured ({why}); workers stay at zero: fix it and delete this ReferralRestore to start them"
                ),
                hold: true,
            };
        }
        IndexOutcome::Ensured => {}
    }
    let chain_note = match &observed.chain_check_job {
        JobPhase::Absent => return RestoreStep::RunChainCheck { job_name: check_job },
        JobPhase::Running => return RestoreStep::WaitForChainCheck { job_name: check_job },
        // The check reports on the data; the data is what the backup held either way,
        // so a failed check is reported, and workers come back.
        JobPhase::Failed(why) => format!("the chain check after the restore failed ({why}); see {check_job}"),
        JobPhase::Succeeded => "the chain check after the restore passed".to_string(),
    };
    if !observed.workers_restored {
        return RestoreStep::ScaleWorkersBack;
    }
    RestoreStep::Done { phase: RestorePhase::Succeeded, message: format!("restored; {chain_note}"), hold: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::validate;

    fn system(redis: &str) -> ValidatedSystem {
        let yaml = format!(
            r#"
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata: {{name: main, namespace: referrals, uid: 1234}}
spec:
  image: example/referral-service:1.4.2
  workers: [{{name: reward-processor, replicas: 2}}]
  mongodb: {{uriSecretRef: {{name: referral-mongo, key: uri}}, database: neurolov}}
  redis: {redis}
"#
        );
        let parsed: ReferralSystem = serde_yaml::from_str(&yaml).unwrap();
        validate(&parsed, "referrals").unwrap()
    }

    fn ctx() -> BuildContext {
        BuildContext { operator_image: "operator:test".into(), secrets_hash: None, operator_pods: None }
    }

    #[test]
    fn the_restore_job_verifies_then_restores_mongodb_then_redis_from_a_read_only_volume() {
        let system = system("{managed: {}, passwordSecretRef: {name: referral-redis, key: password}}");
        let job = restore_job(&system, &ctx(), "20261123T010000Z", "main-restore-abc", true);
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let init: Vec<&str> = pod.init_containers.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(init, ["verify", "mongorestore"]);
        assert_eq!(pod.containers[0].name, "redis-restore");
        assert_eq!(
            pod.init_containers.as_ref().unwrap()[0].args.as_ref().unwrap().join(" "),
            "backup verify --dir /backups --name 20261123T010000Z"
        );
        let backups = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "backups").unwrap();
        assert_eq!(backups.persistent_volume_claim.as_ref().unwrap().read_only, Some(true));
        for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
            for mount in container.volume_mounts.iter().flatten().filter(|m| m.name == "backups") {
                assert_eq!(mount.read_only, Some(true), "{}", container.name);
            }
            for var in container.env.iter().flatten() {
                if ["MONGODB_URI", "REDISCLI_AUTH"].contains(&var.name.as_str()) {
                    assert!(var.value.is_none() && var.value_from.as_ref().unwrap().secret_key_ref.is_some());
                }
            }
        }
        let redis_env = pod.containers[0].env.as_ref().unwrap();
        assert!(redis_env.iter().any(|e| e.name == "REDIS_HOST" && e.value.as_deref() == Some("main-redis")));
        assert!(redis_env.iter().any(|e| e.name == "POD_IP"));
        assert_eq!(job.metadata.labels.as_ref().unwrap()["referral.dev/purpose"], "restore");
        assert!(MONGORESTORE_SCRIPT.contains("--drop"));
    }

    #[test]
    fn without_redis_the_job_ends_with_mongorestore() {
        let managed = system("{managed: {}}");
        let job = restore_job(&managed, &ctx(), "20261123T010000Z", "main-restore-abc", false);
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].name, "mongorestore");
        let mut clustered = managed.clone();
        clustered.spec.redis.managed = None;
        clustered.spec.redis.external =
            Some(serde_json::from_value(serde_json::json!({"clusterNodes": ["a:6379"]})).unwrap());
        assert!(!restores_redis(&clustered, true));
    }

    #[test]
    fn job_names_are_deterministic_per_restore() {
        let system = system("{managed: {}}");
        assert_eq!(restore_job_name(&system, "uid-1"), restore_job_name(&system, "uid-1"));
        assert_ne!(restore_job_name(&system, "uid-1"), restore_job_name(&system, "uid-2"));
        assert_ne!(restore_job_name(&system, "uid-1"), verify_job_name(&system, "uid-1"));
    }

    #[test]
    fn job_phase_reads_the_conditions() {
        let job = |conditions: serde_json::Value| -> Job {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "j"}, "status": {"conditions": conditions}}))
                .unwrap()
        };
        assert_eq!(JobPhase::of(None), JobPhase::Absent);
        assert_eq!(JobPhase::of(Some(&job(serde_json::json!([])))), JobPhase::Running);
        assert_eq!(
            JobPhase::of(Some(&job(serde_json::json!([{"type": "Complete", "status": "True"}])))),
            JobPhase::Succeeded
        );
        assert_eq!(
            JobPhase::of(Some(&job(
                serde_json::json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}])
            ))),
            JobPhase::Failed("BackoffLimitExceeded: Job has reached the specified backoff limit".into())
        );
        assert_eq!(
            JobPhase::of(Some(&job(serde_json::json!([{"type": "Failed", "status": "False"}])))),
            JobPhase::Running
        );
    }

    fn status(phase: RestorePhase) -> ReferralRestoreStatus {
        ReferralRestoreStatus { phase: Some(phase), ..ReferralRestoreStatus::default() }
    }

    fn observed<'a>(system: &'a ValidatedSystem, status: Option<&'a ReferralRestoreStatus>) -> RestoreObservation<'a> {
        RestoreObservation {
            restore_uid: "uid-1",
            status,
            system: Some(system),
            earlier_restore: None,
            backup_running: None,
            upgrade_in_progress: false,
            workers_stopped: false,
            restore_job: JobPhase::Absent,
            indexes: IndexOutcome::NotYet,
            chain_check_job: JobPhase::Absent,
            workers_restored: false,
        }
    }

    #[test]
    fn a_restore_walks_every_step_in_order() {
        let system = system("{managed: {}}");
        let job = restore_job_name(&system, "uid-1");
        let check = verify_job_name(&system, "uid-1");
        let mut recorded: Option<ReferralRestoreStatus> = None;
        let mut steps = Vec::new();
        // The world as the controller would see it after acting on each step.
        let mut world = observed(&system, None);
        for _ in 0..12 {
            let step = next_restore_step(&RestoreObservation { status: recorded.as_ref(), ..world.clone() });
            steps.push(step.clone());
            match &step {
                RestoreStep::ScaleWorkersToZero => {}
                RestoreStep::WaitForWorkersToStop => world.workers_stopped = true,
                RestoreStep::CreateRestoreJob { .. } => world.restore_job = JobPhase::Running,
                RestoreStep::WaitForRestoreJob { .. } => world.restore_job = JobPhase::Succeeded,
                RestoreStep::EnsureIndexes => world.indexes = IndexOutcome::Ensured,
                RestoreStep::RunChainCheck { .. } => world.chain_check_job = JobPhase::Running,
                RestoreStep::WaitForChainCheck { .. } => world.chain_check_job = JobPhase::Succeeded,
                RestoreStep::ScaleWorkersBack => world.workers_restored = true,
                RestoreStep::Done { .. } | RestoreStep::Wait { .. } => {}
            }
            recorded = Some(status(step.phase()));
            if matches!(step, RestoreStep::Done { .. }) {
                break;
            }
        }
        assert_eq!(
            steps,
            [
                RestoreStep::ScaleWorkersToZero,
                RestoreStep::WaitForWorkersToStop,
                RestoreStep::CreateRestoreJob { job_name: job.clone() },
                RestoreStep::WaitForRestoreJob { job_name: job },
                RestoreStep::EnsureIndexes,
                RestoreStep::RunChainCheck { job_name: check.clone() },
                RestoreStep::WaitForChainCheck { job_name: check },
                RestoreStep::ScaleWorkersBack,
                RestoreStep::Done {
                    phase: RestorePhase::Succeeded,
                    message: "restored; the chain check after the restore passed".into(),
                    hold: false
                },
            ]
        );
        let holds: Vec<bool> = steps.iter().map(RestoreStep::holds_system).collect();
        assert_eq!(holds, [true, true, true, true, true, true, true, false, false]);
    }

    #[test]
    fn a_restore_never_starts_while_a_backup_another_restore_or_an_upgrade_runs() {
        let system = system("{managed: {}}");
        let mut world = observed(&system, None);
        world.backup_running = Some("main-backup-29000000");
        assert!(matches!(next_restore_step(&world), RestoreStep::Wait { reason: WAIT_BACKUP_RUNNING, .. }));
        world.upgrade_in_progress = true;
        assert!(matches!(next_restore_step(&world), RestoreStep::Wait { reason: WAIT_UPGRADE_RUNNING, .. }));
        world.earlier_restore = Some("restore-a");
        let step = next_restore_step(&world);
        assert!(
            matches!(&step, RestoreStep::Wait { reason: WAIT_OTHER_RESTORE, message } if message.contains("restore-a"))
        );
        assert!(!step.holds_system());
        assert_eq!(step.phase(), RestorePhase::Pending);
        world.system = None;
        assert!(matches!(next_restore_step(&world), RestoreStep::Wait { reason: WAIT_SYSTEM_MISSING, .. }));
    }

    #[test]
    fn a_backup_that_began_before_the_hold_delays_the_restore_job() {
        let system = system("{managed: {}}");
        let scaling = status(RestorePhase::ScalingDown);
        let mut world = observed(&system, Some(&scaling));
        world.workers_stopped = true;
        world.backup_running = Some("main-backup-29000000");
        assert_eq!(next_restore_step(&world), RestoreStep::WaitForWorkersToStop);
        world.backup_running = None;
        assert!(matches!(next_restore_step(&world), RestoreStep::CreateRestoreJob { .. }));
    }

    #[test]
    fn an_operator_restart_midway_gives_the_same_step_and_job_name() {
        let system = system("{managed: {}}");
        let restoring = status(RestorePhase::Restoring);
        let mut world = observed(&system, Some(&restoring));
        world.workers_stopped = true;
        world.restore_job = JobPhase::Running;
        let before = next_restore_step(&world);
        // A new operator process: nothing in memory, the same status and cluster.
        let again = observed(&system, Some(&restoring));
        let again = RestoreObservation { workers_stopped: true, restore_job: JobPhase::Running, ..again };
        assert_eq!(next_restore_step(&again), before);
        assert_eq!(before, RestoreStep::WaitForRestoreJob { job_name: restore_job_name(&system, "uid-1") });
        // After a restart while the Job was being created, it is found, not duplicated.
        let created_but_not_recorded = status(RestorePhase::ScalingDown);
        let world = RestoreObservation {
            workers_stopped: true,
            restore_job: JobPhase::Running,
            ..observed(&system, Some(&created_but_not_recorded))
        };
        assert!(matches!(next_restore_step(&world), RestoreStep::WaitForRestoreJob { .. }));
    }

    #[test]
    fn a_failed_restore_job_keeps_workers_at_zero_and_says_how_to_go_on() {
        let system = system("{managed: {}}");
        let restoring = status(RestorePhase::Restoring);
        let mut world = observed(&system, Some(&restoring));
        world.workers_stopped = true;
        world.restore_job = JobPhase::Failed("BackoffLimitExceeded".into());
        let step = next_restore_step(&world);
        let RestoreStep::Done { phase, message, hold } = &step else { panic!("{step:?}") };
        assert_eq!(*phase, RestorePhase::Failed);
        assert!(*hold && step.holds_system());
        assert!(message.contains("delete this one"), "{message}");
        // Once recorded as Failed, it stays failed and held, whatever is observed.
        let failed = ReferralRestoreStatus {
            phase: Some(RestorePhase::Failed),
            message: Some(message.clone()),
            ..ReferralRestoreStatus::default()
        };
        let later = observed(&system, Some(&failed));
        assert!(matches!(next_restore_step(&later), RestoreStep::Done { phase: RestorePhase::Failed, hold: true, .. }));
    }

    #[test]
    fn failed_indexes_hold_and_a_failed_chain_check_is_reported_but_releases() {
        let system = system("{managed: {}}");
        let ensuring = status(RestorePhase::EnsuringIndexes);
        let mut world = observed(&system, Some(&ensuring));
        world.workers_stopped = true;
        world.restore_job = JobPhase::Succeeded;
        world.indexes = IndexOutcome::Failed("conflict on users.referralCode_1".into());
        assert!(matches!(next_restore_step(&world), RestoreStep::Done { phase: RestorePhase::Failed, hold: true, .. }));
        world.indexes = IndexOutcome::Ensured;
        world.chain_check_job = JobPhase::Failed("BackoffLimitExceeded".into());
        assert_eq!(next_restore_step(&world), RestoreStep::ScaleWorkersBack);
        world.workers_restored = true;
        let RestoreStep::Done { phase, message, hold } = next_restore_step(&world) else { panic!() };
        assert_eq!(phase, RestorePhase::Succeeded);
        assert!(!hold);
        assert!(message.contains("chain check after the restore failed"), "{message}");
    }

    #[test]
    fn a_succeeded_restore_is_left_alone_and_holding_means_zero_workers_and_suspended_jobs() {
        let system = system("{managed: {}}");
        let done = status(RestorePhase::Succeeded);
        let world = observed(&system, Some(&done));
        assert!(matches!(
            next_restore_step(&world),
            RestoreStep::Done { phase: RestorePhase::Succeeded, hold: false, .. }
        ));

        let mut children = super::super::build(&system, &ctx());
        assert!(!children.deployments.is_empty() && !children.cron_jobs.is_empty());
        hold_for_restore(&mut children);
        assert!(children.deployments.iter().all(|d| d.spec.as_ref().unwrap().replicas == Some(0)));
        assert!(children.cron_jobs.iter().all(|c| c.spec.as_ref().unwrap().suspend == Some(true)));
    }
}
