//! Maintenance jobs (the guide's weekly and monthly tasks): one CronJob each, running
//! the service image with the same environment as the workers.

use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, PodSpec, Volume, VolumeMount};

use crate::crd::MaintenanceJob;
use crate::crd::validate::ValidatedSystem;

use super::cron::{Schedule, cron_job};
use super::env::service_env;
use super::meta::{MAX_CRONJOB, child_name};
use super::security::{DEFAULT_USER, container_security, pod_security};
use super::{BuildContext, Children};

/// `app.kubernetes.io/component` of maintenance CronJobs.
pub const COMPONENT: &str = "maintenance";

/// Name of a maintenance job's CronJob.
pub fn cron_job_name(system: &ValidatedSystem, job: &str) -> String {
    child_name(&system.name, &format!("maint-{job}"), MAX_CRONJOB)
}

/// Adds one CronJob per maintenance job.
pub fn build(system: &ValidatedSystem, ctx: &BuildContext, children: &mut Children) {
    for job in &system.spec.maintenance {
        children.cron_jobs.push(maintenance_cron_job(system, ctx, job));
    }
}

fn maintenance_cron_job(
    system: &ValidatedSystem,
    ctx: &BuildContext,
    job: &MaintenanceJob,
) -> k8s_openapi::api::batch::v1::CronJob {
    let spec = &system.spec;
    let mut env = service_env(system);
    env.extend(job.env.iter().cloned());
    let container = Container {
        name: job.name.clone(),
        image: Some(job.image.clone().unwrap_or_else(|| spec.image.clone())),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: job.command.clone(),
        args: job.args.clone(),
        env: Some(env),
        resources: job.resources.clone(),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        security_context: Some(pod_security(DEFAULT_USER)),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| spec.image_pull_secrets.clone()),
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    cron_job(
        system,
        ctx,
        Schedule {
            name: cron_job_name(system, &job.name),
            component: COMPONENT,
            schedule: &job.schedule,
            suspend: job.suspend,
            backoff_limit: 1,
            active_deadline_seconds: job.active_deadline_seconds,
        },
        pod,
    )
}
