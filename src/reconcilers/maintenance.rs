//! Maintenance jobs (the guide's weekly and monthly tasks): one CronJob each, running
//! the service image with the same environment as the workers.

use crate::crd::MaintenanceJob;
use crate::crd::validate::ValidatedSystem;

use super::cron::{Schedule, cron_job};
use super::job::template_pod;
use super::meta::{MAX_CRONJOB, child_name};
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
    cron_job(
        system,
        ctx,
        Schedule {
            name: cron_job_name(system, &job.name),
            component: COMPONENT,
            schedule: &job.schedule,
            suspend: job.suspend,
            backoff_limit: 1,
            active_deadline_seconds: job.template.active_deadline_seconds,
        },
        template_pod(system, &job.name, &job.template),
    )
}
