//! Backups: a CronJob that dumps MongoDB (by default this operator's own `backup
//! dump`, in mongodump's directory layout with counts and checksums; with `method:
//! Mongodump`, a mongodump gzip archive per collection) and snapshots Redis over the network (`redis-cli --rdb`) into a timestamped folder on
//! the backup volume, then lets this operator's binary mark it complete, apply the
//! retention and report to `status.backup`. The same pod runs as a one-off Job for a
//! backup asked for now (`referral.dev/backup-now`) and before an upgrade
//! ([`backup_job`]). The volume is kept when the system is deleted unless the spec
//! says otherwise.
//!
//! Credentials reach the pod only through `secretKeyRef`; the MongoDB URI stays in
//! the environment (native) or goes into a config file in memory (mongodump), never
//! onto a command line.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    CronJob, Job, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::backup::health::BackupFailure;
use crate::backup::retention::BACKUP_JOB_DEADLINE_SECONDS;
use crate::crd::BackupMethod;
use crate::crd::validate::ValidatedSystem;

use super::cron::{Schedule, cron_job};
use super::env::{from_secret, mongo_tls_env};
use super::job::{JobPhase, OneOff, one_off_job};
use super::job_identity;
use super::meta::{MAX_CRONJOB, MAX_DNS_LABEL, child_name, object_meta};
use super::security::{restricted_container, restricted_pod, tmp_mount, tmp_volume};
use super::{BuildContext, Children};

/// `app.kubernetes.io/component` of the backup objects.
pub const COMPONENT: &str = "backup";

/// The system a Job belongs to when it is one of its backup Jobs: the labels the
/// reconcile's list of backup Jobs selects on (`system_selector` and this component).
pub fn system_of_backup_job<K: kube::Resource>(job: &K) -> Option<String> {
    use super::meta::{APP_NAME, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, MANAGER};
    let labels = job.meta().labels.as_ref()?;
    let is = |key: &str, value: &str| labels.get(key).is_some_and(|v| v == value);
    (is(LABEL_NAME, APP_NAME) && is(LABEL_MANAGED_BY, MANAGER) && is(LABEL_COMPONENT, COMPONENT))
        .then(|| labels.get(LABEL_INSTANCE).cloned())
        .flatten()
}
/// Where the backup volume is mounted in backup and restore pods.
pub const BACKUP_MOUNT: &str = "/backups";
/// Scratch space shared by the backup containers (in memory: it briefly holds the
/// mongodump config with the connection string).
pub const WORK_MOUNT: &str = "/work";
/// File in [`WORK_MOUNT`] naming the folder this run writes.
const NAME_FILE: &str = "/work/backup-name";
/// Exit code of `backup finalize` when the backup is complete but status could not
/// be written: the Job's pod failure policy fails the Job without a retry, since a
/// retry would take the whole backup again.
pub const EXIT_STATUS_NOT_WRITTEN: u8 = 3;
/// Image for `redis-cli` when Redis is external and no tools image is set.
pub const DEFAULT_REDIS_TOOLS_IMAGE: &str = "redis:7.2";

/// The shell lines the mongodump and mongorestore scripts share, after each set
/// `work` and `config` (its config file) and `umask 077`: the URI goes into the
/// config file, and `mongo_tool TOOL ARGS...` runs a MongoDB Database Tool with it
/// and with the TLS settings the native method reads (`MONGODB_TLS`, the files
/// named by `MONGODB_TLS_*_FILE`). The tools spell them `--ssl`, `--sslCAFile` and
/// `--sslPEMKeyFile` (mongo-tools 100.x has no `--tls*` flags besides
/// `--tlsInsecure`), and take the client certificate and its key in one file, so
/// the two mounted files are joined into a private file in memory, removed with
/// the config file. `MONGODB_TLS=true` alone (`tls: {}`) is `--ssl` with the
/// image's roots. A function, so the flags are appended as separate words
/// whatever the paths hold.
macro_rules! mongo_tools_connection {
    () => {
        r#"client_pem="$work/mongodb-client.pem"
trap 'rm -f "$config" "$client_pem"' EXIT
printf 'uri: "%s"\n' "$MONGODB_URI" > "$config"
if [ -n "${MONGODB_TLS_CERT_FILE:-}" ]; then
  cat "$MONGODB_TLS_CERT_FILE" "${MONGODB_TLS_KEY_FILE:?MONGODB_TLS_CERT_FILE is set but MONGODB_TLS_KEY_FILE is not}" > "$client_pem"
fi
mongo_tool() {
  tool=$1
  shift
  set -- "--config=$config" "$@"
  if [ "${MONGODB_TLS:-}" = true ] || [ -n "${MONGODB_TLS_CA_FILE:-}${MONGODB_TLS_CERT_FILE:-}" ]; then
    set -- "$@" --ssl
    if [ -n "${MONGODB_TLS_CA_FILE:-}" ]; then set -- "$@" "--sslCAFile=$MONGODB_TLS_CA_FILE"; fi
    if [ -n "${MONGODB_TLS_CERT_FILE:-}" ]; then set -- "$@" "--sslPEMKeyFile=$client_pem"; fi
  fi
  "$tool" "$@"
}
"#
    };
}
pub(crate) use mongo_tools_connection;

/// mongodump, one archive per collection (or one for the whole database when no
/// collection is listed). Collections arrive as positional arguments, never spliced
/// into the script, and the connection string goes through a config file in memory
/// rather than the command line, where any process could read it
/// ([`mongo_tools_connection!`], which also connects over TLS as the native dump
/// does). `mkdir` without `-p`: two runs starting in the same second must not share
/// a folder; the second fails and its Job retries under a new name.
pub const MONGODUMP_SCRIPT: &str = concat!(
    r#"set -eu
backups="${BACKUP_DIR:-/backups}"
work="${WORK_DIR:-/work}"
name=$(date -u +%Y%m%dT%H%M%SZ)
if [ -n "${BACKUP_LABEL:-}" ]; then name="$name-$BACKUP_LABEL"; fi
dir="$backups/$name.partial"
mkdir "$dir"
printf '%s' "$name" > "$work/backup-name"
printf '%s\n' "$MONGODB_DATABASE" > "$dir/mongodb-database.txt"
umask 077
config="$work/mongodump.yaml"
"#,
    mongo_tools_connection!(),
    r#"if [ "$#" -eq 0 ]; then
  mongo_tool mongodump --db="$MONGODB_DATABASE" --archive="$dir/mongodb.archive.gz" --gzip
else
  for collection in "$@"; do
    mongo_tool mongodump --db="$MONGODB_DATABASE" --collection="$collection" --archive="$dir/mongodb-$collection.archive.gz" --gzip
  done
fi
"#
);

/// RDB snapshot over the network; the password comes from REDISCLI_AUTH.
pub const REDIS_SNAPSHOT_SCRIPT: &str = r#"set -eu
backups="${BACKUP_DIR:-/backups}"
work="${WORK_DIR:-/work}"
name=$(cat "$work/backup-name")
redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" $REDIS_TLS_FLAG --rdb "$backups/$name.partial/redis.rdb"
"#;

/// Why a one-off backup runs; becomes the backup's name label and the Job's
/// `referral.dev/purpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupPurpose {
    /// Asked for with the `referral.dev/backup-now` annotation.
    Manual,
    /// Taken before workers get a new image.
    PreUpgrade,
}

impl BackupPurpose {
    pub fn label(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::PreUpgrade => "pre-upgrade",
        }
    }
}

/// Name of the backup volume's claim.
pub fn claim_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "backups", MAX_DNS_LABEL)
}

/// Name of the backup CronJob.
pub fn cron_job_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "backup", MAX_CRONJOB)
}

/// Adds the backup volume claim and the CronJob (its pods run as
/// [`job_identity`](super::job_identity)).
pub fn build(system: &ValidatedSystem, ctx: &BuildContext, children: &mut Children) {
    children.persistent_volume_claims.push(claim(system));
    children.cron_jobs.push(backup_cron_job(system, ctx));
    if let Some(drill) = super::restore_drill::restore_drill_cron_job(system, ctx) {
        children.cron_jobs.push(drill);
    }
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
        tmp_mount(),
    ];
    if with_work {
        mounts.push(VolumeMount { name: "work".into(), mount_path: WORK_MOUNT.into(), ..VolumeMount::default() });
    }
    mounts
}

pub(crate) fn env_literal(name: &str, value: impl ToString) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.to_string()), value_from: None }
}

pub(crate) fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), api_version: None }),
            ..EnvVarSource::default()
        }),
    }
}

/// The image with `redis-cli` and `redis-server`.
pub fn redis_tools_image(system: &ValidatedSystem) -> String {
    let spec = &system.spec;
    spec.backup
        .redis_tools_image
        .clone()
        .or_else(|| spec.redis.managed.as_ref().map(|m| m.image.clone()))
        .unwrap_or_else(|| DEFAULT_REDIS_TOOLS_IMAGE.to_string())
}

/// How containers reach Redis: host, port, connection flags, password from the Secret
/// ([`super::env::redis_cli_env`]).
pub(crate) fn redis_client_env(system: &ValidatedSystem) -> Vec<EnvVar> {
    super::env::redis_cli_env(system)
}

/// Where the native dump and finalize find the object store: settings as literals,
/// the keys from their Secrets (the names `backup dump|finalize` read).
pub(crate) fn object_storage_env(system: &ValidatedSystem) -> Vec<EnvVar> {
    let Some(store) = &system.spec.backup.object_storage else { return Vec::new() };
    let mut env = vec![
        env_literal("BACKUP_S3_BUCKET", &store.bucket),
        env_literal("BACKUP_S3_PREFIX", &store.prefix),
        env_literal("BACKUP_S3_REGION", &store.region),
        from_secret("AWS_ACCESS_KEY_ID", &store.access_key_id_secret_ref),
        from_secret("AWS_SECRET_ACCESS_KEY", &store.secret_access_key_secret_ref),
    ];
    if let Some(endpoint) = &store.endpoint {
        env.push(env_literal("BACKUP_S3_ENDPOINT", endpoint));
    }
    if let Some(sse) = &store.server_side_encryption {
        env.push(env_literal("BACKUP_S3_SSE", sse));
    }
    if let Some(key) = &store.kms_key_id {
        env.push(env_literal("BACKUP_S3_KMS_KEY_ID", key));
    }
    env
}

/// The backup pod: dump, snapshot, finalize. `label` names why a one-off runs.
fn backup_pod(system: &ValidatedSystem, ctx: &BuildContext, label: Option<&str>) -> PodSpec {
    let spec = &system.spec;
    let backup = &spec.backup;
    let mut dump_env = vec![
        from_secret("MONGODB_URI", &spec.mongodb.uri_secret_ref),
        env_literal("MONGODB_DATABASE", &spec.mongodb.database),
    ];
    if let Some(label) = label {
        dump_env.push(env_literal("BACKUP_LABEL", label));
    }
    // Either tool connects over TLS with `mongodb.tls`; the files' paths come with
    // their mount (`pods::integrate`).
    dump_env.extend(mongo_tls_env(system));
    let dump = match backup.method {
        BackupMethod::Native => {
            // Left open: the Redis snapshot joins the folder before finalize writes
            // the manifest, last.
            let mut args: Vec<String> =
                ["backup", "dump", "--dir", BACKUP_MOUNT, "--name-file", NAME_FILE, "--leave-open"]
                    .map(String::from)
                    .to_vec();
            for collection in &backup.collections {
                args.extend(["--collection".into(), collection.clone()]);
            }
            let mut env = dump_env;
            env.extend(object_storage_env(system));
            Container {
                args: Some(args),
                env: Some(env),
                resources: backup.resources.clone(),
                volume_mounts: Some(mounts(true)),
                ..restricted_container("dump", ctx.operator_image.clone())
            }
        }
        BackupMethod::Mongodump => Container {
            command: Some(vec!["sh".into(), "-c".into(), MONGODUMP_SCRIPT.into(), "mongodump".into()]),
            args: Some(backup.collections.clone()),
            env: Some(dump_env),
            resources: backup.resources.clone(),
            volume_mounts: Some(mounts(true)),
            ..restricted_container("mongodump", backup.mongo_tools_image.clone())
        },
    };
    let mut init_containers = vec![dump];
    if backup.include_redis {
        init_containers.push(Container {
            command: Some(vec!["sh".into(), "-c".into(), REDIS_SNAPSHOT_SCRIPT.into()]),
            env: Some(redis_client_env(system)),
            resources: backup.resources.clone(),
            volume_mounts: Some(mounts(true)),
            ..restricted_container("redis-snapshot", redis_tools_image(system))
        });
    }
    let retention = &backup.retention;
    let mut args = vec![
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
        "--system".into(),
        system.name.clone(),
    ];
    if backup.include_redis {
        args.push("--expect-redis".into());
    }
    let mut finalize_mounts = mounts(true);
    finalize_mounts.push(VolumeMount {
        name: "api-access".into(),
        mount_path: SERVICE_ACCOUNT_MOUNT.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    let mut finalize_env = vec![env_field("POD_NAMESPACE", "metadata.namespace")];
    finalize_env.extend(object_storage_env(system));
    let finalize = Container {
        args: Some(args),
        env: Some(finalize_env),
        volume_mounts: Some(finalize_mounts),
        ..restricted_container("finalize", ctx.operator_image.clone())
    };
    let mut pod = PodSpec {
        // The token is not automounted (restricted_pod): only finalize gets it
        // (api_access_volume), so the third-party dump tools never see it.
        service_account_name: Some(job_identity::identity_name(system)),
        init_containers: Some(init_containers),
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
            tmp_volume(),
            api_access_volume(),
        ]),
        ..restricted_pod(system, vec![finalize])
    };
    super::job::report_failures(&mut pod);
    pod
}

/// Where a client library looks for the in-cluster token, CA and namespace.
pub(crate) const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What automounting would give every container, as a volume one container mounts:
/// a short-lived token, the cluster CA and the namespace.
pub(crate) fn api_access_volume() -> Volume {
    Volume {
        name: "api-access".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3600),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath { key: "ca.crt".into(), path: "ca.crt".into(), mode: None }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                api_version: None,
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        }),
        ..Volume::default()
    }
}

/// A backup that finished but could not write its status must not be retried: a
/// retry would dump everything again. Any other failure is retried.
fn pod_failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![PodFailurePolicyRule {
            action: "FailJob".into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: Some("finalize".into()),
                operator: "In".into(),
                values: vec![i32::from(EXIT_STATUS_NOT_WRITTEN)],
            }),
            on_pod_conditions: None,
        }],
    }
}

fn backup_cron_job(system: &ValidatedSystem, ctx: &BuildContext) -> CronJob {
    let backup = &system.spec.backup;
    let mut cron = cron_job(
        system,
        ctx,
        Schedule {
            name: cron_job_name(system),
            component: COMPONENT,
            schedule: &backup.schedule,
            suspend: backup.suspend,
            backoff_limit: 2,
            active_deadline_seconds: BACKUP_JOB_DEADLINE_SECONDS,
        },
        backup_pod(system, ctx, None),
    );
    if let Some(job) = cron.spec.as_mut().and_then(|s| s.job_template.spec.as_mut()) {
        job.pod_failure_policy = Some(pod_failure_policy());
    }
    cron
}

/// A one-off backup Job with the CronJob's pod: the backup asked for now, or the one
/// taken before an upgrade. The controller picks `job_name` (deterministic, so a
/// restarted operator finds the Job it created instead of starting another).
pub fn backup_job(system: &ValidatedSystem, ctx: &BuildContext, job_name: &str, purpose: BackupPurpose) -> Job {
    one_off_job(
        system,
        ctx,
        OneOff {
            name: job_name,
            component: COMPONENT,
            purpose: purpose.label(),
            backoff_limit: 2,
            active_deadline_seconds: BACKUP_JOB_DEADLINE_SECONDS,
            pod_failure_policy: Some(pod_failure_policy()),
        },
        backup_pod(system, ctx, Some(purpose.label())),
    )
}

/// Name of the Job for a backup asked for with `referral.dev/backup-now: <token>`:
/// the same token always gives the same name, so the Job is created once.
pub fn manual_backup_job_name(system: &ValidatedSystem, token: &str) -> String {
    let hash = super::meta::short_hash(token.as_bytes());
    child_name(&system.name, &format!("backup-now-{}", &hash[..8]), MAX_DNS_LABEL)
}

/// The newest failed backup Job among `jobs` (scheduled runs, asked-for and
/// pre-upgrade ones: the Jobs with this module's component label), for the
/// `BackupFailed` reason of `BackupHealthy`.
pub fn newest_failure(jobs: &[Job]) -> Option<BackupFailure> {
    jobs.iter()
        .filter_map(|job| {
            let JobPhase::Failed(why) = JobPhase::of(Some(job)) else { return None };
            let failed_at = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| {
                    c.iter().find(|c| c.status == "True" && matches!(c.type_.as_str(), "Failed" | "FailureTarget"))
                })
                .and_then(|c| c.last_transition_time.as_ref())
                .or(job.metadata.creation_timestamp.as_ref())?;
            Some(BackupFailure { job: job.metadata.name.clone()?, at: failed_at.0, why })
        })
        .max_by_key(|failure| failure.at)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::validate;

    fn system(extra: &str) -> ValidatedSystem {
        let yaml = format!(
            r#"
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata: {{name: main, namespace: referrals, uid: 1234}}
spec:
  image: example/referral-service:1.4.2
  workers: [{{name: reward-processor}}]
  mongodb: {{uriSecretRef: {{name: referral-mongo, key: uri}}, database: neurolov}}
  redis: {{managed: {{}}, passwordSecretRef: {{name: referral-redis, key: password}}}}
{extra}
"#
        );
        let parsed: ReferralSystem = crate::yaml::from_str(&yaml).unwrap();
        validate(&parsed, "referrals").unwrap()
    }

    fn ctx() -> BuildContext {
        BuildContext { operator_image: "operator:test".into(), secrets_hash: Some("abc".into()), operator_pods: None }
    }

    fn pod_of_cron(cron: &CronJob) -> &PodSpec {
        cron.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn the_cronjob_dumps_snapshots_and_finalizes_with_the_retention() {
        let system = system("");
        let mut children = Children::default();
        build(&system, &ctx(), &mut children);
        let cron = &children.cron_jobs[0];
        let spec = cron.spec.as_ref().unwrap();
        assert_eq!(spec.schedule, "0 1 * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let pod = pod_of_cron(cron);
        let init: Vec<&str> = pod.init_containers.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(init, ["dump", "redis-snapshot"]);
        let dump = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(dump.image.as_deref(), Some("operator:test"), "no tools image for the native dump");
        assert_eq!(
            dump.args.as_ref().unwrap().join(" "),
            "backup dump --dir /backups --name-file /work/backup-name --leave-open \
             --collection users --collection referrals --collection referralTransactions"
        );
        let finalize = &pod.containers[0];
        assert_eq!(finalize.image.as_deref(), Some("operator:test"));
        assert_eq!(
            finalize.args.as_ref().unwrap().join(" "),
            "backup finalize --dir /backups --name-file /work/backup-name --daily 7 --weekly 4 --monthly 6 --system main --expect-redis"
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("main-jobs"));
        let policy = spec.job_template.spec.as_ref().unwrap().pod_failure_policy.as_ref().unwrap();
        assert_eq!(policy.rules[0].on_exit_codes.as_ref().unwrap().values, [3]);
    }

    #[test]
    fn backup_jobs_are_known_by_their_labels_and_others_are_not() {
        let system = system("");
        let mut children = Children::default();
        build(&system, &ctx(), &mut children);
        let manual = backup_job(&system, &ctx(), "main-backup-x", BackupPurpose::Manual);
        assert_eq!(system_of_backup_job(&manual).as_deref(), Some("main"));
        // What the CronJob's Jobs are labelled with.
        let template = Job {
            metadata: children.cron_jobs[0].spec.as_ref().unwrap().job_template.metadata.clone().unwrap_or_default(),
            ..Job::default()
        };
        assert_eq!(system_of_backup_job(&template).as_deref(), Some("main"));
        let chain_check = children.cron_jobs.iter().find(|c| c.metadata.name.as_deref() != Some("main-backup"));
        if let Some(chain_check) = chain_check {
            let other = Job {
                metadata: chain_check.spec.as_ref().unwrap().job_template.metadata.clone().unwrap_or_default(),
                ..Job::default()
            };
            assert_eq!(system_of_backup_job(&other), None, "{:?}", chain_check.metadata.name);
        }
        assert_eq!(system_of_backup_job(&Job::default()), None);
    }

    #[test]
    fn method_mongodump_keeps_the_tools_image_and_its_script() {
        let system = system("  backup: {method: Mongodump, mongoToolsImage: mongo:8.0}");
        let pod = backup_pod(&system, &ctx(), None);
        let dump = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(dump.name, "mongodump");
        assert_eq!(dump.image.as_deref(), Some("mongo:8.0"));
        assert_eq!(dump.command.as_ref().unwrap()[2], MONGODUMP_SCRIPT);
        assert_eq!(dump.args.as_ref().unwrap(), &["users", "referrals", "referralTransactions"]);
    }

    /// `mongodb.tls` with a CA and a client certificate, or `tls: {}` (`files` false).
    pub(crate) fn with_mongo_tls(mut system: ValidatedSystem, files: bool) -> ValidatedSystem {
        let tls = if files {
            serde_json::json!({"caSecretRef": {"name": "mongo-ca", "key": "ca.crt"}, "clientCertificateSecretName": "mongo-client"})
        } else {
            serde_json::json!({})
        };
        system.spec.mongodb.tls = Some(serde_json::from_value(tls).unwrap());
        system
    }

    /// `container` of `pod` reaches MongoDB as the native Jobs do: `MONGODB_TLS=true`,
    /// with `files` the read-only TLS mount and the variables naming its files (paths,
    /// never PEM), without them neither; the URI only by `secretKeyRef`.
    pub(crate) fn assert_connects_like_the_native_jobs(pod: &PodSpec, container: &str, files: bool) {
        let container = pod.init_containers.iter().flatten().chain(&pod.containers).find(|c| c.name == container);
        let container = container.unwrap_or_else(|| panic!("no container {container:?}"));
        let env = container.env.as_deref().unwrap_or_default();
        let literal = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.as_deref());
        assert_eq!(literal("MONGODB_TLS"), Some("true"), "{}", container.name);
        let dir = "/etc/referral/tls/mongodb";
        let file_vars = [
            ("MONGODB_TLS_CA_FILE", format!("{dir}/ca.crt")),
            ("MONGODB_TLS_CERT_FILE", format!("{dir}/tls.crt")),
            ("MONGODB_TLS_KEY_FILE", format!("{dir}/tls.key")),
        ];
        for (name, path) in &file_vars {
            assert_eq!(literal(name), files.then_some(path.as_str()), "{}: {name}", container.name);
        }
        let mounted = container.volume_mounts.iter().flatten().find(|m| m.name == "mongodb-tls");
        assert_eq!(mounted.map(|m| (m.mount_path.as_str(), m.read_only)), files.then_some((dir, Some(true))));
        assert_eq!(pod.volumes.iter().flatten().any(|v| v.name == "mongodb-tls"), files);
        let uri = env.iter().find(|e| e.name == "MONGODB_URI").expect("MONGODB_URI");
        assert!(uri.value.is_none() && uri.value_from.as_ref().unwrap().secret_key_ref.is_some());
        // Everything else MONGODB_TLS* is a flag or a mounted path: no PEM in the spec.
        for var in env.iter().filter(|e| e.name.starts_with("MONGODB_TLS")) {
            assert!(var.value_from.is_none(), "{}", var.name);
            let value = var.value.as_deref().unwrap_or_default();
            assert!(value == "true" || value.starts_with(dir), "{}={value}", var.name);
        }
        let words: Vec<&String> = container.command.iter().flatten().chain(container.args.iter().flatten()).collect();
        assert!(words.iter().all(|w| !w.contains("BEGIN") && !w.contains("--uri")), "{words:?}");
    }

    #[test]
    fn method_mongodump_connects_over_tls_like_the_native_dump() {
        let mongodump = system("  backup: {method: Mongodump}");
        for files in [true, false] {
            let system = with_mongo_tls(mongodump.clone(), files);
            let cron = backup_cron_job(&system, &ctx());
            assert_connects_like_the_native_jobs(pod_of_cron(&cron), "mongodump", files);
            let job = backup_job(&system, &ctx(), "main-backup-now-1", BackupPurpose::Manual);
            assert_connects_like_the_native_jobs(
                job.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
                "mongodump",
                files,
            );
            let native = with_mongo_tls(system_without_storage(), files);
            assert_connects_like_the_native_jobs(pod_of_cron(&backup_cron_job(&native, &ctx())), "dump", files);
        }
        let plain = pod_of_cron(&backup_cron_job(&mongodump, &ctx())).clone();
        let dump = &plain.init_containers.as_ref().unwrap()[0];
        assert!(!dump.env.iter().flatten().any(|e| e.name.starts_with("MONGODB_TLS")), "no TLS without mongodb.tls");
        assert!(!plain.volumes.iter().flatten().any(|v| v.name == "mongodb-tls"));
    }

    #[test]
    fn credentials_only_come_from_secrets_and_never_reach_a_command_line() {
        for method in ["Native", "Mongodump"] {
            let system = system(&format!("  backup: {{method: {method}}}"));
            let pod = backup_pod(&system, &ctx(), None);
            for container in pod.init_containers.iter().flatten().chain(pod.containers.iter()) {
                for var in container.env.iter().flatten() {
                    if var.name == "MONGODB_URI" || var.name == "REDISCLI_AUTH" {
                        assert!(var.value.is_none(), "{} is a literal", var.name);
                        assert!(var.value_from.as_ref().unwrap().secret_key_ref.is_some());
                    }
                }
                let words: Vec<&String> =
                    container.command.iter().flatten().chain(container.args.iter().flatten()).collect();
                assert!(words.iter().all(|w| !w.contains("--uri") && !w.contains(" -a ")), "{words:?}");
            }
        }
        assert!(MONGODUMP_SCRIPT.contains("--config="));
    }

    #[test]
    fn whole_database_without_redis_and_a_tools_image() {
        let system = system("  backup: {collections: [], includeRedis: false, redisToolsImage: my/redis:7}");
        let pod = backup_pod(&system, &ctx(), None);
        let init = pod.init_containers.as_ref().unwrap();
        assert_eq!(init.len(), 1);
        assert!(!init[0].args.as_ref().unwrap().contains(&"--collection".to_string()));
        assert!(!pod.containers[0].args.as_ref().unwrap().contains(&"--expect-redis".to_string()));
        let with_redis = system.clone();
        let mut with_redis = with_redis;
        with_redis.spec.backup.include_redis = true;
        assert_eq!(
            backup_pod(&with_redis, &ctx(), None).init_containers.unwrap()[1].image.as_deref(),
            Some("my/redis:7")
        );
    }

    #[test]
    fn a_one_off_backup_job_has_the_cronjobs_pod_and_a_label() {
        let system = system("");
        let job = backup_job(&system, &ctx(), "main-backup-now-12345678", BackupPurpose::Manual);
        assert_eq!(job.metadata.name.as_deref(), Some("main-backup-now-12345678"));
        assert_eq!(job.metadata.labels.as_ref().unwrap()["referral.dev/purpose"], "manual");
        assert_eq!(job.metadata.owner_references.as_ref().unwrap()[0].uid, "1234");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(BACKUP_JOB_DEADLINE_SECONDS));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let dump_env = pod.init_containers.as_ref().unwrap()[0].env.as_ref().unwrap();
        assert!(dump_env.iter().any(|e| e.name == "BACKUP_LABEL" && e.value.as_deref() == Some("manual")));
        let mut cron_pod = pod_of_cron(&backup_cron_job(&system, &ctx())).clone();
        cron_pod.restart_policy = None;
        let mut job_pod = pod.clone();
        job_pod.restart_policy = None;
        job_pod.init_containers.as_mut().unwrap()[0].env.as_mut().unwrap().retain(|e| e.name != "BACKUP_LABEL");
        assert_eq!(job_pod, cron_pod, "the one-off pod is the scheduled pod plus its label");
    }

    #[test]
    fn the_manual_job_name_follows_the_annotation_token() {
        let system = system("");
        let a = manual_backup_job_name(&system, "2026-11-23T10:00:00Z");
        assert_eq!(a, manual_backup_job_name(&system, "2026-11-23T10:00:00Z"));
        assert_ne!(a, manual_backup_job_name(&system, "2026-11-23T10:00:01Z"));
        assert!(a.starts_with("main-backup-now-") && a.len() <= 63, "{a}");
    }

    #[test]
    fn the_newest_failed_job_is_the_failure_and_running_or_succeeded_ones_are_not() {
        let job = |name: &str, condition: Option<(&str, &str)>| -> Job {
            let conditions = condition.map(|(type_, at)| {
                serde_json::json!([{"type": type_, "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit", "lastTransitionTime": at}])
            });
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "creationTimestamp": "2026-11-20T01:00:00Z"},
                "status": {"conditions": conditions.unwrap_or(serde_json::json!([]))}
            }))
            .unwrap()
        };
        let jobs = [
            job("main-backup-1", Some(("Failed", "2026-11-21T01:10:00Z"))),
            job("main-backup-2", Some(("Complete", "2026-11-22T01:10:00Z"))),
            job("main-backup-3", Some(("Failed", "2026-11-23T01:10:00Z"))),
            job("main-backup-4", None),
        ];
        let failure = newest_failure(&jobs).unwrap();
        assert_eq!(failure.job, "main-backup-3");
        assert_eq!(failure.at.to_string(), "2026-11-23T01:10:00Z");
        assert_eq!(failure.why, "BackoffLimitExceeded: Job has reached the specified backoff limit");
        assert!(newest_failure(&jobs[1..2]).is_none());
        assert!(newest_failure(&[]).is_none());
    }

    #[test]
    fn object_storage_reaches_dump_and_finalize_with_its_keys_from_secrets() {
        let system = system(
            "  backup: {objectStorage: {endpoint: 'https://s3.example:9000', bucket: backups, prefix: prod, \
             accessKeyIdSecretRef: {name: s3, key: id}, secretAccessKeySecretRef: {name: s3, key: secret}, \
             serverSideEncryption: AES256}}",
        );
        let pod = backup_pod(&system, &ctx(), None);
        let dump = &pod.init_containers.as_ref().unwrap()[0];
        for container in [dump, &pod.containers[0]] {
            let env = container.env.as_ref().unwrap();
            let literal = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
            assert_eq!(literal("BACKUP_S3_BUCKET").as_deref(), Some("backups"), "{}", container.name);
            assert_eq!(literal("BACKUP_S3_ENDPOINT").as_deref(), Some("https://s3.example:9000"));
            assert_eq!(literal("BACKUP_S3_PREFIX").as_deref(), Some("prod"));
            assert_eq!(literal("BACKUP_S3_SSE").as_deref(), Some("AES256"));
            for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                let var = env.iter().find(|e| e.name == key).unwrap();
                assert!(var.value.is_none() && var.value_from.as_ref().unwrap().secret_key_ref.is_some(), "{key}");
            }
        }
        let redis = &pod.init_containers.as_ref().unwrap()[1];
        assert!(!redis.env.as_ref().unwrap().iter().any(|e| e.name.starts_with("AWS_")), "keys only where used");
        let plain = backup_pod(&system_without_storage(), &ctx(), None);
        assert!(!plain.containers[0].env.as_ref().unwrap().iter().any(|e| e.name.starts_with("BACKUP_S3")));
    }

    fn system_without_storage() -> ValidatedSystem {
        system("")
    }

    #[test]
    fn object_storage_with_mongodump_is_refused_naming_the_field() {
        let yaml = r#"
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata: {name: main, namespace: referrals}
spec:
  image: example/referral-service:1.4.2
  workers: [{name: reward-processor}]
  mongodb: {uriSecretRef: {name: referral-mongo, key: uri}, database: neurolov}
  redis: {managed: {}}
  backup:
    method: Mongodump
    objectStorage: {bucket: backups, accessKeyIdSecretRef: {name: s3, key: id}, secretAccessKeySecretRef: {name: s3, key: secret}}
"#;
        let parsed: ReferralSystem = crate::yaml::from_str(yaml).unwrap();
        let problems = validate(&parsed, "referrals").unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.to_string().contains("spec.backup.objectStorage") && p.to_string().contains("Native")),
            "{problems:?}"
        );
    }
}
