//! The CronJob shell every scheduled job shares: no overlapping runs, a deadline so a
//! missed run is still started after an outage of the controller-manager, bounded
//! history, and restricted pods.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::validate::ValidatedSystem;

use super::BuildContext;
use super::meta::{ANNOTATION_SECRETS_HASH, labels, object_meta};
use super::pods::{PodRole, integrate};

/// How a scheduled job runs.
pub struct Schedule<'a> {
    pub name: String,
    pub component: &'a str,
    pub schedule: &'a str,
    pub suspend: bool,
    pub backoff_limit: i32,
    pub active_deadline_seconds: i64,
}

/// Seconds after its slot within which a missed run still starts.
pub const STARTING_DEADLINE_SECONDS: i64 = 3600;

/// Wraps `pod` in a Job template and a CronJob.
pub fn cron_job(system: &ValidatedSystem, ctx: &BuildContext, schedule: Schedule<'_>, mut pod: PodSpec) -> CronJob {
    let pod_labels = labels(system, schedule.component);
    let annotations =
        ctx.secrets_hash.as_ref().map(|hash| BTreeMap::from([(ANNOTATION_SECRETS_HASH.to_string(), hash.clone())]));
    let mut template_meta = ObjectMeta { labels: Some(pod_labels.clone()), annotations, ..ObjectMeta::default() };
    integrate(system, PodRole::Job, &mut template_meta, &mut pod);
    CronJob {
        metadata: object_meta(system, schedule.name, schedule.component),
        spec: Some(CronJobSpec {
            schedule: schedule.schedule.to_string(),
            time_zone: Some("Etc/UTC".into()),
            suspend: Some(schedule.suspend),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(STARTING_DEADLINE_SECONDS),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels.clone()), ..ObjectMeta::default() }),
                spec: Some(JobSpec {
                    backoff_limit: Some(schedule.backoff_limit),
                    active_deadline_seconds: Some(schedule.active_deadline_seconds),
                    template: PodTemplateSpec {
                        metadata: Some(template_meta),
                        spec: Some(PodSpec { restart_policy: Some("Never".into()), ..pod }),
                    },
                    ..JobSpec::default()
                }),
            },
        }),
        status: None,
    }
}
