//! The Job shell every one-off run shares (a backup asked for now, the pre-upgrade
//! backup, a migration, a restore): the same labels as the system's other children
//! plus what the run is for, restricted pods, no restarts in place, and a finite
//! history.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec, PodFailurePolicy};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::validate::ValidatedSystem;

use super::BuildContext;
use super::meta::{ANNOTATION_SECRETS_HASH, labels, object_meta};

/// Label saying why a one-off Job exists (`manual`, `pre-upgrade`, `migration`,
/// `restore`), so the controller and a person can tell them apart.
pub const LABEL_PURPOSE: &str = "referral.dev/purpose";

/// Finished one-off Jobs stay a week: long enough to read their logs and for the
/// controller to see the outcome after any outage, short enough not to pile up.
pub const FINISHED_JOB_TTL_SECONDS: i32 = 7 * 24 * 3600;

/// How a one-off Job runs.
pub struct OneOff<'a> {
    pub name: &'a str,
    pub component: &'a str,
    pub purpose: &'a str,
    pub backoff_limit: i32,
    pub active_deadline_seconds: i64,
    pub pod_failure_policy: Option<PodFailurePolicy>,
}

/// Wraps `pod` in a Job.
pub fn one_off_job(system: &ValidatedSystem, ctx: &BuildContext, run: OneOff<'_>, pod: PodSpec) -> Job {
    let mut pod_labels = labels(system, run.component);
    pod_labels.insert(LABEL_PURPOSE.to_string(), run.purpose.to_string());
    let mut metadata = object_meta(system, run.name.to_string(), run.component);
    metadata.labels = Some(pod_labels.clone());
    let annotations =
        ctx.secrets_hash.as_ref().map(|hash| BTreeMap::from([(ANNOTATION_SECRETS_HASH.to_string(), hash.clone())]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(run.backoff_limit),
            active_deadline_seconds: Some(run.active_deadline_seconds),
            ttl_seconds_after_finished: Some(FINISHED_JOB_TTL_SECONDS),
            pod_failure_policy: run.pod_failure_policy,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations, ..ObjectMeta::default() }),
                spec: Some(PodSpec { restart_policy: Some("Never".into()), ..pod }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}
