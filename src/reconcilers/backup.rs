//! Backups: a CronJob that dumps MongoDB (mongodump, gzip archive per collection) and
//! snapshots Redis over the network (`redis-cli --rdb`) into a timestamped folder on
//! the backup volume, then lets this operator's binary mark it complete and apply
//! the retention. The volume is kept when the system is deleted unless the spec says
//! otherwise.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::validate::ValidatedSystem;

use super::cron::{Schedule, cron_job};
use super::env::{from_secret, mongo_env, redis_endpoint};
use super::meta::{MAX_CRONJOB, MAX_DNS_LABEL, child_name, object_meta};
use super::security::{DEFAULT_USER, container_security, pod_security};
use super::{BuildContext, Children};

/// `app.kubernetes.io/component` of the backup objects.
pub const COMPONENT: &str = "backup";
/// Where the backup volume is mounted in backup and restore pods.
pub const BACKUP_MOUNT: &str = "/backups";
/// Scratch space shared by the backup containers (in memory: it briefly holds the
/// mongodump config with the connection string).
const WORK_MOUNT: &str = "/work";
/// File in [`WORK_MOUNT`] naming the folder this run writes.
const NAME_FILE: &str = "/work/backup-name";
/// Image for `redis-cli` when Redis is external.
const DEFAULT_REDIS_TOOLS_IMAGE: &str = "redis:7.2";

/// mongodump, one archive per collection (or one for the whole database when no
/// collection is listed). Collections arrive as positional arguments, never spliced
/// into the script, and the connection string goes through a config file in memory
/// rather than the command line, where any process could read it.
const MONGODUMP_SCRIPT: &str = r#"set -eu
name=$(date -u +%Y%m%dT%H%M%SZ)
dir="/backups/$name.partial"
mkdir -p "$dir"
printf '%s' "$name" > /work/backup-name
umask 077
printf 'uri: "%s"\n' "$MONGODB_URI" > /work/mongodump.yaml
trap 'rm -f /work/mongodump.yaml' EXIT
if [ "$#" -eq 0 ]; then
  mongodump --config=/work/mongodump.yaml --db="$MONGODB_DATABASE" --archive="$dir/mongodb.archive.gz" --gzip
else
  for collection in "$@"; do
    mongodump --config=/work/mongodump.yaml --db="$MONGODB_DATABASE" --collection="$collection" --archive="$dir/mongodb-$collection.archive.gz" --gzip
  done
fi
"#;

/// RDB snapshot over the network; the password comes from REDISCLI_AUTH.
const REDIS_SNAPSHOT_SCRIPT: &str = r#"set -eu
name=$(cat /work/backup-name)
redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" $REDIS_TLS_FLAG --rdb "/backups/$name.partial/redis.rdb"
"#;

/// Name of the backup volume's claim.
pub fn claim_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "backups", MAX_DNS_LABEL)
}

/// Name of the backup CronJob.
pub fn cron_job_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "backup", MAX_CRONJOB)
}

/// Adds the backup volume claim and CronJob.
pub fn build(system: &ValidatedSystem, ctx: &BuildContext, children: &mut Children) {
    children.persistent_volume_claims.push(claim(system));
    children.cron_jobs.push(backup_cron_job(system, ctx));
}

fn claim(system: &ValidatedSystem) -> PersistentVolumeClaim {
    let storage = &system.spec.backup.storage;
    let mut metadata = object_meta(system, claim_name(system), COMPONENT);
    if !storage.delete_with_system {
        // No owner: the garbage collector must not take the backups with the system.
        metadata.owner_references = None;
    }
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(storage.size.clone()))])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn mounts(with_work: bool) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount { name: "backups".into(), mount_path: BACKUP_MOUNT.into(), ..VolumeMount::default() },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
    ];
    if with_work {
        mounts.push(VolumeMount { name: "work".into(), mount_path: WORK_MOUNT.into(), ..VolumeMount::default() });
    }
    mounts
}

fn env_literal(name: &str, value: impl ToString) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.to_string()), value_from: None }
}

fn backup_cron_job(system: &ValidatedSystem, ctx: &BuildContext) -> CronJob {
    let spec = &system.spec;
    let backup = &spec.backup;
    let mut init_containers = vec![Container {
        name: "mongodump".into(),
        image: Some(backup.mongo_tools_image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), MONGODUMP_SCRIPT.into(), "mongodump".into()]),
        args: Some(backup.collections.clone()),
        env: Some(
            mongo_env(system).into_iter().filter(|e| e.name == "MONGODB_URI" || e.name == "MONGODB_DATABASE").collect(),
        ),
        resources: backup.resources.clone(),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts(true)),
        ..Container::default()
    }];
    if backup.include_redis {
        let (host, port) = redis_endpoint(system);
        let tls = spec.redis.external.as_ref().is_some_and(|e| e.tls);
        let mut env = vec![
            env_literal("REDIS_HOST", host),
            env_literal("REDIS_PORT", port),
            env_literal("REDIS_TLS_FLAG", if tls { "--tls" } else { "" }),
        ];
        if let Some(secret) = &spec.redis.password_secret_ref {
            env.push(from_secret("REDISCLI_AUTH", secret));
        }
        let image = spec.redis.managed.as_ref().map_or(DEFAULT_REDIS_TOOLS_IMAGE.to_string(), |m| m.image.clone());
        init_containers.push(Container {
            name: "redis-snapshot".into(),
            image: Some(image),
            command: Some(vec!["sh".into(), "-c".into(), REDIS_SNAPSHOT_SCRIPT.into()]),
            env: Some(env),
            resources: backup.resources.clone(),
            security_context: Some(container_security()),
            volume_mounts: Some(mounts(true)),
            ..Container::default()
        });
    }
    let retention = &backup.retention;
    let finalize = Container {
        name: "finalize".into(),
        image: Some(ctx.operator_image.clone()),
        args: Some(vec![
            "backup".into(),
            "finalize".into(),
            "--dir".into(),
            BACKUP_MOUNT.into(),
            "--name-file".into(),
            NAME_FILE.into(),
            "--daily".into(),
            retention.daily.to_string(),
            "--weekly".into(),
            retention.weekly.to_string(),
            "--monthly".into(),
            retention.monthly.to_string(),
        ]),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts(true)),
        ..Container::default()
    };
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        security_context: Some(pod_security(DEFAULT_USER)),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| spec.image_pull_secrets.clone()),
        init_containers: Some(init_containers),
        containers: vec![finalize],
        volumes: Some(vec![
            Volume {
                name: "backups".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(system),
                    read_only: None,
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
            Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        ]),
        ..PodSpec::default()
    };
    cron_job(
        system,
        ctx,
        Schedule {
            name: cron_job_name(system),
            component: COMPONENT,
            schedule: &backup.schedule,
            suspend: backup.suspend,
            backoff_limit: 2,
            active_deadline_seconds: 6 * 3600,
        },
        pod,
    )
}
