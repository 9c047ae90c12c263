//! The restore drill's CronJob (`spec.backup.restoreDrill`): this operator's image
//! runs `backup drill`, which restores the newest complete backup into a scratch
//! database, checks it, drops it and writes `status.backup.lastVerifiedRestore`.
//!
//! It reads the backup where the backups live: from the bucket when
//! `backup.objectStorage` is set (the off-cluster copy, the one a disaster restore
//! would use), else from the backup volume, mounted read-only. Workers are not
//! scaled down: the drill never writes to the production database. Its pods run as
//! the system's job identity, which may read its ReferralSystem and patch its status.

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaimVolumeSource, PodSpec, Volume, VolumeMount};

use crate::backup::drill::default_scratch_database;
use crate::crd::validate::ValidatedSystem;

use super::BuildContext;
use super::backup::{
    BACKUP_MOUNT, SERVICE_ACCOUNT_MOUNT, api_access_volume, claim_name, env_field, env_literal, object_storage_env,
};
use super::cron::{Schedule, cron_job};
use super::env::{from_secret, mongo_tls_env};
use super::job_identity;
use super::meta::{MAX_CRONJOB, child_name};
use super::security::{restricted_container, restricted_pod, tmp_mount, tmp_volume};

/// `app.kubernetes.io/component` of the drill's objects: apart from `backup`, so a
/// failed drill is never taken for a failed backup.
pub const COMPONENT: &str = "restore-drill";

/// Name of the drill's CronJob.
pub fn cron_job_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "restore-drill", MAX_CRONJOB)
}

/// The scratch database the drill restores into.
pub fn scratch_database(system: &ValidatedSystem) -> Option<String> {
    let drill = system.spec.backup.restore_drill.as_ref()?;
    Some(drill.scratch_database.clone().unwrap_or_else(|| default_scratch_database(&system.spec.mongodb.database)))
}

/// The drill's CronJob, when the spec asks for drills.
pub fn restore_drill_cron_job(system: &ValidatedSystem, ctx: &BuildContext) -> Option<CronJob> {
    let drill = system.spec.backup.restore_drill.as_ref()?;
    let scratch = scratch_database(system)?;
    let spec = &system.spec;
    let from_bucket = spec.backup.object_storage.is_some();
    let mut args: Vec<String> =
        ["backup", "drill", "--scratch-database", &scratch, "--system", &system.name].map(String::from).to_vec();
    let mut env = vec![
        from_secret("MONGODB_URI", &spec.mongodb.uri_secret_ref),
        env_literal("MONGODB_DATABASE", &spec.mongodb.database),
        env_field("POD_NAMESPACE", "metadata.namespace"),
    ];
    env.extend(mongo_tls_env(system));
    let mut mounts = vec![
        tmp_mount(),
        VolumeMount {
            name: "api-access".into(),
            mount_path: SERVICE_ACCOUNT_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![tmp_volume(), api_access_volume()];
    if from_bucket {
        env.extend(object_storage_env(system));
    } else {
        args.extend(["--dir".to_string(), BACKUP_MOUNT.to_string()]);
        mounts.push(VolumeMount {
            name: "backups".into(),
            mount_path: BACKUP_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "backups".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(system),
                read_only: Some(true),
            }),
            ..Volume::default()
        });
    }
    let container = Container {
        args: Some(args),
        env: Some(env),
        resources: drill.resources.clone(),
        volume_mounts: Some(mounts),
        ..restricted_container("drill", ctx.operator_image.clone())
    };
    let mut pod = PodSpec {
        service_account_name: Some(job_identity::identity_name(system)),
        volumes: Some(volumes),
        ..restricted_pod(system, vec![container])
    };
    super::job::report_failures(&mut pod);
    Some(cron_job(
        system,
        ctx,
        Schedule {
            name: cron_job_name(system),
            component: COMPONENT,
            schedule: &drill.schedule,
            suspend: drill.suspend,
            // A failed drill is a finding, reported in status: running it again
            // would only restore the same backup again.
            backoff_limit: 0,
            active_deadline_seconds: drill.active_deadline_seconds,
        },
        pod,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::validate;

    fn system(backup: &str) -> ValidatedSystem {
        let yaml = format!(
            r#"
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata: {{name: main, namespace: referrals, uid: 1234}}
spec:
  image: example/referral-service:1.4.2
  workers: [{{name: reward-processor}}]
  mongodb: {{uriSecretRef: {{name: referral-mongo, key: uri}}, database: neurolov}}
  redis: {{managed: {{}}}}
  backup: {backup}
"#
        );
        let parsed: ReferralSystem = crate::yaml::from_str(&yaml).unwrap();
        validate(&parsed, "referrals").unwrap()
    }

    fn ctx() -> BuildContext {
        BuildContext { operator_image: "operator:test".into(), secrets_hash: None, operator_pods: None }
    }

    fn pod(cron: &CronJob) -> &PodSpec {
        cron.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn no_drill_unless_asked() {
        assert!(restore_drill_cron_job(&system("{}"), &ctx()).is_none());
    }

    #[test]
    fn the_drill_reads_the_volume_read_only_and_restores_into_the_scratch_database() {
        let cron = restore_drill_cron_job(&system("{restoreDrill: {}}"), &ctx()).unwrap();
        assert_eq!(cron.metadata.name.as_deref(), Some("main-restore-drill"));
        let spec = cron.spec.as_ref().unwrap();
        assert_eq!(spec.schedule, "0 4 * * 0");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        assert_eq!(spec.job_template.spec.as_ref().unwrap().backoff_limit, Some(0));
        let pod = pod(&cron);
        assert_eq!(pod.service_account_name.as_deref(), Some("main-jobs"));
        let drill = &pod.containers[0];
        assert_eq!(drill.image.as_deref(), Some("operator:test"));
        assert_eq!(
            drill.args.as_ref().unwrap().join(" "),
            "backup drill --scratch-database neurolov_drill --system main --dir /backups"
        );
        let backups = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "backups").unwrap();
        assert_eq!(backups.persistent_volume_claim.as_ref().unwrap().read_only, Some(true));
        let mount = drill.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "backups").unwrap();
        assert_eq!(mount.read_only, Some(true));
        let uri = drill.env.as_ref().unwrap().iter().find(|e| e.name == "MONGODB_URI").unwrap();
        assert!(uri.value.is_none() && uri.value_from.as_ref().unwrap().secret_key_ref.is_some());
        let labels = cron.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], COMPONENT);
    }

    #[test]
    fn with_object_storage_the_drill_reads_the_bucket_and_mounts_no_volume() {
        let cron = restore_drill_cron_job(
            &system(
                "{restoreDrill: {scratchDatabase: drills, schedule: '30 5 * * *', suspend: true}, objectStorage: {bucket: backups, \
                 accessKeyIdSecretRef: {name: s3, key: id}, secretAccessKeySecretRef: {name: s3, key: secret}}}",
            ),
            &ctx(),
        )
        .unwrap();
        let spec = cron.spec.as_ref().unwrap();
        assert_eq!((spec.schedule.as_str(), spec.suspend), ("30 5 * * *", Some(true)));
        let pod = pod(&cron);
        assert!(pod.volumes.as_ref().unwrap().iter().all(|v| v.name != "backups"));
        let drill = &pod.containers[0];
        assert_eq!(drill.args.as_ref().unwrap().join(" "), "backup drill --scratch-database drills --system main");
        let env = drill.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "BACKUP_S3_BUCKET" && e.value.as_deref() == Some("backups")));
        let key = env.iter().find(|e| e.name == "AWS_SECRET_ACCESS_KEY").unwrap();
        assert!(key.value.is_none() && key.value_from.as_ref().unwrap().secret_key_ref.is_some());
    }

    #[test]
    fn a_scratch_database_that_is_the_production_one_is_refused_by_validation() {
        let yaml = r#"
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata: {name: main, namespace: referrals}
spec:
  image: example/referral-service:1.4.2
  workers: [{name: reward-processor}]
  mongodb: {uriSecretRef: {name: referral-mongo, key: uri}, database: neurolov}
  redis: {managed: {}}
  backup: {restoreDrill: {scratchDatabase: NeuroLov, maxUnverifiedAge: '0'}}
"#;
        let parsed: ReferralSystem = crate::yaml::from_str(yaml).unwrap();
        let problems: Vec<String> = validate(&parsed, "referrals").unwrap_err().iter().map(|p| p.to_string()).collect();
        assert!(problems.iter().any(|p| p.contains("spec.backup.restoreDrill.scratchDatabase")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("spec.backup.restoreDrill.maxUnverifiedAge")), "{problems:?}");
    }
}
