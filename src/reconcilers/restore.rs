//! The restore Job of a `ReferralRestore`, and what the system looks like while a
//! restore holds it ([`hold_for_restore`]). The steps that run it are in
//! [`super::restore_step`].
//!
//! The Job restores MongoDB with this operator's binary (`backup restore`: the whole
//! backup checked against its manifest before anything is dropped, each collection's
//! documents counted after), or, with `backup.method: Mongodump`, verifies the
//! backup (`backup verify`) and runs `mongorestore` over each archive; then it
//! restores Redis when the backup holds a snapshot. The Job succeeds only when every
//! step did, and the workers stay at zero until then ([`super::restore_step`]). Redis is restored over the network, as it was backed up:
//! the Job starts a throwaway `redis-server` on the snapshot and makes the live Redis
//! its replica for one full resynchronisation (`REPLICAOF`), then promotes it back
//! (`REPLICAOF NO ONE`). That needs no access to Redis's volume (a ReadWriteOnce
//! claim another pod cannot mount while Redis runs), works for the managed Redis and
//! for an external one that allows REPLICAOF, and leaves Redis's append-only file
//! rewritten from the restored data, which copying an RDB file into the data
//! directory would not (with `appendonly yes` Redis ignores dump.rdb at start).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, PodSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::crd::BackupMethod;
use crate::crd::restore::{ReferralRestore, RestoreSource};
use crate::crd::validate::ValidatedSystem;
use crate::crd::{GROUP, VERSION};

use super::backup::{
    BACKUP_MOUNT, WORK_MOUNT, claim_name, env_field, env_literal, mongo_tools_connection, object_storage_env,
    redis_client_env, redis_tools_image,
};
use super::env::{from_secret, mongo_tls_env};
use super::job::{OneOff, one_off_job};
use super::meta::{MAX_DNS_LABEL, child_name, short_hash};
use super::security::{restricted_container, restricted_pod, tmp_mount, tmp_volume};
use super::{BuildContext, Children};

/// `app.kubernetes.io/component` of restore Jobs.
pub const COMPONENT: &str = "restore";
/// `referral.dev/purpose` of the restore Job (set by the builder) and of the chain
/// check run after it.
pub const PURPOSE_RESTORE: &str = "restore";
pub const PURPOSE_RESTORE_CHECK: &str = "restore-check";
/// Scratch space for the throwaway Redis (holds a copy of the snapshot).
const SCRATCH_MOUNT: &str = "/scratch";
/// Port of the throwaway Redis the live one replicates from.
pub const RESTORE_REDIS_PORT: i32 = 6380;
/// How long the whole restore Job may run.
pub const RESTORE_JOB_DEADLINE_SECONDS: i64 = 6 * 3600;

/// mongorestore over every archive of the backup, connected as mongodump is
/// ([`mongo_tools_connection!`]: the URI in a config file, TLS from `mongodb.tls`).
/// `--drop` drops each collection the archive holds before restoring it, so that
/// collection is exactly as it was at backup time (without it, documents written
/// since would stay and restored ones would collide with them on `_id`);
/// collections the backup does not hold are not touched. A backup taken from
/// another database name is restored into the current one with `--nsFrom/--nsTo`.
pub const MONGORESTORE_SCRIPT: &str = concat!(
    r#"set -eu
backups="${BACKUP_DIR:-/backups}"
work="${WORK_DIR:-/work}"
dir="$backups/$BACKUP_NAME"
umask 077
config="$work/mongorestore.yaml"
"#,
    mongo_tools_connection!(),
    r#"source_db="$MONGODB_DATABASE"
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
  mongo_tool mongorestore --archive="$archive" --gzip --drop --stopOnError --nsInclude="$source_db.*" "$@"
done
if [ "$found" = 0 ]; then
  echo "backup $BACKUP_NAME holds no MongoDB archive" >&2
  exit 1
fi
"#
);

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

/// The restore Job: MongoDB (native restore, or verify and mongorestore), then Redis when asked for and
/// the backup has a snapshot. The backup volume is mounted read-only: a restore
/// never changes a backup.
pub fn restore_job(
    system: &ValidatedSystem,
    ctx: &BuildContext,
    backup_name: &str,
    job_name: &str,
    redis_requested: bool,
) -> Job {
    restore_job_from(system, ctx, backup_name, job_name, redis_requested, RestoreSource::Volume)
}

/// The restore Job reading the backup from `source`. From object storage the native
/// restore reads the system's bucket (keys by `secretKeyRef`), no volume is
/// mounted, and it copies the Redis snapshot into the pod's scratch space for the
/// Redis restore that follows. Without `spec.backup.objectStorage` it fails saying
/// so.
pub fn restore_job_from(
    system: &ValidatedSystem,
    ctx: &BuildContext,
    backup_name: &str,
    job_name: &str,
    redis_requested: bool,
    source: RestoreSource,
) -> Job {
    let spec = &system.spec;
    let backup = &spec.backup;
    let from_bucket = source == RestoreSource::ObjectStorage;
    let with_redis = restores_redis(system, redis_requested);
    let mounts = |extra: Option<(&str, &str)>| {
        let mut mounts = vec![tmp_mount()];
        if !from_bucket {
            mounts.insert(
                0,
                VolumeMount {
                    name: "backups".into(),
                    mount_path: BACKUP_MOUNT.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            );
        }
        if let Some((name, path)) = extra {
            mounts.push(VolumeMount { name: name.into(), mount_path: path.into(), ..VolumeMount::default() });
        }
        mounts
    };
    let mut mongo_env = vec![
        from_secret("MONGODB_URI", &spec.mongodb.uri_secret_ref),
        env_literal("MONGODB_DATABASE", &spec.mongodb.database),
        env_literal("BACKUP_NAME", backup_name),
    ];
    mongo_env.extend(mongo_tls_env(system));
    // (checks before, the restore itself)
    let (mut init, mongo_restore) = match backup.method {
        _ if from_bucket => {
            let mut args: Vec<String> =
                ["backup", "restore", "--from-bucket", "--name", backup_name].map(String::from).to_vec();
            if with_redis {
                args.extend(["--redis-to".to_string(), SCRATCH_MOUNT.to_string()]);
            }
            let mut env = mongo_env;
            env.extend(object_storage_env(system));
            (
                Vec::new(),
                Container {
                    args: Some(args),
                    env: Some(env),
                    resources: backup.resources.clone(),
                    volume_mounts: Some(mounts(with_redis.then_some(("scratch", SCRATCH_MOUNT)))),
                    ..restricted_container("restore", ctx.operator_image.clone())
                },
            )
        }
        BackupMethod::Native => (
            Vec::new(),
            Container {
                args: Some(
                    ["backup", "restore", "--dir", BACKUP_MOUNT, "--name", backup_name].map(String::from).to_vec(),
                ),
                env: Some(mongo_env),
                resources: backup.resources.clone(),
                volume_mounts: Some(mounts(None)),
                ..restricted_container("restore", ctx.operator_image.clone())
            },
        ),
        BackupMethod::Mongodump => (
            vec![Container {
                args: Some(
                    ["backup", "verify", "--dir", BACKUP_MOUNT, "--name", backup_name].map(String::from).to_vec(),
                ),
                volume_mounts: Some(mounts(None)),
                ..restricted_container("verify", ctx.operator_image.clone())
            }],
            Container {
                command: Some(vec!["sh".into(), "-c".into(), MONGORESTORE_SCRIPT.into()]),
                env: Some(mongo_env),
                resources: backup.resources.clone(),
                volume_mounts: Some(mounts(Some(("work", WORK_MOUNT)))),
                ..restricted_container("mongorestore", backup.mongo_tools_image.clone())
            },
        ),
    };
    let main = if with_redis {
        let mut env = redis_client_env(system);
        env.extend([
            env_literal("BACKUP_NAME", backup_name),
            env_literal("RESTORE_PORT", RESTORE_REDIS_PORT),
            env_field("POD_IP", "status.podIP"),
        ]);
        if from_bucket {
            // The restore container copied the snapshot to SCRATCH/NAME/redis.rdb.
            env.push(env_literal("BACKUP_DIR", SCRATCH_MOUNT));
        }
        let redis = Container {
            command: Some(vec!["sh".into(), "-c".into(), REDIS_RESTORE_SCRIPT.into()]),
            env: Some(env),
            resources: backup.resources.clone(),
            volume_mounts: Some(mounts(Some(("scratch", SCRATCH_MOUNT)))),
            ..restricted_container("redis-restore", redis_tools_image(system))
        };
        init.push(mongo_restore);
        redis
    } else {
        mongo_restore
    };
    let mut pod = PodSpec {
        init_containers: (!init.is_empty()).then_some(init),
        volumes: Some(
            [Volume {
                name: "backups".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(system),
                    read_only: Some(true),
                }),
                ..Volume::default()
            }]
            .into_iter()
            .filter(|_| !from_bucket)
            .chain([
                Volume {
                    name: "work".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(Quantity("16Mi".into())),
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "scratch".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                tmp_volume(),
            ])
            .collect(),
        ),
        ..restricted_pod(system, vec![main])
    };
    super::job::report_failures(&mut pod);
    one_off_job(
        system,
        ctx,
        OneOff {
            name: job_name,
            component: COMPONENT,
            purpose: PURPOSE_RESTORE,
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

/// Owner reference to the ReferralRestore for the Jobs it runs: deleting the
/// ReferralRestore removes them (and stops a restore Job still running), and one
/// restore's Jobs are told apart from another's. `blockOwnerDeletion` stays unset:
/// setting it would need update rights on `referralrestores/finalizers`, and
/// foreground deletion of a restore has nothing to wait for.
pub fn restore_owner(restore: &ReferralRestore) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "ReferralRestore".into(),
        name: restore.metadata.name.clone()?,
        uid: restore.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// `job` owned by the restore instead of the system.
pub fn owned_by_restore(mut job: Job, owner: OwnerReference) -> Job {
    job.metadata.owner_references = Some(vec![owner]);
    job
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::validate;
    use serde_json::json;

    /// A system with one worker and `redis` as its Redis section.
    pub(crate) fn system(redis: &str) -> ValidatedSystem {
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
        let parsed: ReferralSystem = crate::yaml::from_str(&yaml).unwrap();
        validate(&parsed, "referrals").unwrap()
    }

    fn ctx() -> BuildContext {
        BuildContext { operator_image: "operator:test".into(), secrets_hash: None, operator_pods: None }
    }

    #[test]
    fn from_object_storage_the_restore_reads_the_bucket_and_hands_the_redis_snapshot_on() {
        let mut system = system("{managed: {}, passwordSecretRef: {name: referral-redis, key: password}}");
        system.spec.backup.object_storage = serde_json::from_value(json!({
            "bucket": "backups", "prefix": "prod", "endpoint": "https://s3.example:9000",
            "accessKeyIdSecretRef": {"name": "s3", "key": "id"},
            "secretAccessKeySecretRef": {"name": "s3", "key": "secret"}
        }))
        .unwrap();
        let job = restore_job_from(
            &system,
            &ctx(),
            "20261123T010000Z",
            "main-restore-abc",
            true,
            RestoreSource::ObjectStorage,
        );
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(pod.volumes.as_ref().unwrap().iter().all(|v| v.name != "backups"), "no volume: the bucket");
        let restore = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            restore.args.as_ref().unwrap().join(" "),
            "backup restore --from-bucket --name 20261123T010000Z --redis-to /scratch"
        );
        let env = restore.env.as_ref().unwrap();
        let literal = |env: &[k8s_openapi::api::core::v1::EnvVar], name: &str| {
            env.iter().find(|e| e.name == name).and_then(|e| e.value.clone())
        };
        assert_eq!(literal(env, "BACKUP_S3_BUCKET").as_deref(), Some("backups"));
        assert_eq!(literal(env, "BACKUP_S3_PREFIX").as_deref(), Some("prod"));
        let key = env.iter().find(|e| e.name == "AWS_SECRET_ACCESS_KEY").unwrap();
        assert!(key.value.is_none() && key.value_from.as_ref().unwrap().secret_key_ref.is_some());
        assert!(restore.volume_mounts.as_ref().unwrap().iter().any(|m| m.name == "scratch"));
        let redis = &pod.containers[0];
        assert_eq!(redis.name, "redis-restore");
        assert_eq!(literal(redis.env.as_ref().unwrap(), "BACKUP_DIR").as_deref(), Some(SCRATCH_MOUNT));
        assert!(!redis.env.as_ref().unwrap().iter().any(|e| e.name.starts_with("AWS_")), "keys only where used");
        // The default stays the volume, exactly as before.
        assert_eq!(
            restore_job_from(&system, &ctx(), "20261123T010000Z", "main-restore-abc", true, RestoreSource::Volume),
            restore_job(&system, &ctx(), "20261123T010000Z", "main-restore-abc", true)
        );
    }

    #[test]
    fn the_restore_job_verifies_then_restores_mongodb_then_redis_from_a_read_only_volume() {
        let system = system("{managed: {}, passwordSecretRef: {name: referral-redis, key: password}}");
        let job = restore_job(&system, &ctx(), "20261123T010000Z", "main-restore-abc", true);
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let init: Vec<&str> = pod.init_containers.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(init, ["restore"]);
        assert_eq!(pod.containers[0].name, "redis-restore");
        let restore = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(restore.image.as_deref(), Some("operator:test"), "no tools image for the native restore");
        assert_eq!(restore.args.as_ref().unwrap().join(" "), "backup restore --dir /backups --name 20261123T010000Z");
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
    fn method_mongodump_verifies_then_runs_mongorestore_from_the_tools_image() {
        let mut system = system("{managed: {}}");
        system.spec.backup.method = BackupMethod::Mongodump;
        let job = restore_job(&system, &ctx(), "20261123T010000Z", "main-restore-abc", true);
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let init = pod.init_containers.as_ref().unwrap();
        assert_eq!(init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["verify", "mongorestore"]);
        assert_eq!(init[0].args.as_ref().unwrap().join(" "), "backup verify --dir /backups --name 20261123T010000Z");
        assert_eq!(init[1].image.as_deref(), Some("mongo:7.0"));
        assert_eq!(pod.containers[0].name, "redis-restore");
        let without_redis = restore_job(&system, &ctx(), "20261123T010000Z", "main-restore-abc", false);
        let pod = without_redis.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].name, "mongorestore");
    }

    #[test]
    fn mongorestore_connects_over_tls_like_the_native_restore() {
        use super::super::backup::tests::{assert_connects_like_the_native_jobs, with_mongo_tls};
        for files in [true, false] {
            for method in [BackupMethod::Mongodump, BackupMethod::Native] {
                let mut system = with_mongo_tls(system("{managed: {}}"), files);
                system.spec.backup.method = method;
                let job = restore_job(&system, &ctx(), "20261123T010000Z", "main-restore-abc", true);
                let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
                let container = if method == BackupMethod::Mongodump { "mongorestore" } else { "restore" };
                assert_connects_like_the_native_jobs(pod, container, files);
            }
        }
    }

    #[test]
    fn without_redis_the_job_ends_with_the_mongodb_restore() {
        let managed = system("{managed: {}}");
        let job = restore_job(&managed, &ctx(), "20261123T010000Z", "main-restore-abc", false);
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].name, "restore");
        assert!(pod.init_containers.is_none());
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
    fn holding_means_zero_workers_and_suspended_jobs() {
        let system = system("{managed: {}}");
        let mut children = super::super::build(&system, &ctx());
        assert!(!children.deployments.is_empty() && !children.cron_jobs.is_empty());
        hold_for_restore(&mut children);
        assert!(children.deployments.iter().all(|d| d.spec.as_ref().unwrap().replicas == Some(0)));
        assert!(children.cron_jobs.iter().all(|c| c.spec.as_ref().unwrap().suspend == Some(true)));
    }

    #[test]
    fn jobs_are_owned_by_the_restore_without_blocking_its_deletion() {
        let restore: ReferralRestore = serde_json::from_value(json!({
            "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralRestore",
            "metadata": {"name": "r1", "namespace": "referrals", "uid": "u-1"},
            "spec": {"systemName": "main", "backupName": "20261123T010000Z"}
        }))
        .unwrap();
        let owner = restore_owner(&restore).unwrap();
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("ReferralRestore", "r1", "u-1"));
        assert_eq!(owner.api_version, "referral.dev/v1alpha1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, None);
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "ownerReferences": [{"apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem", "name": "main", "uid": "s-1", "controller": true}]}
        }))
        .unwrap();
        let owned = owned_by_restore(job, owner.clone());
        assert_eq!(owned.metadata.owner_references, Some(vec![owner]));
        let mut nameless = restore.clone();
        nameless.metadata.uid = None;
        assert!(restore_owner(&nameless).is_none());
    }
}
