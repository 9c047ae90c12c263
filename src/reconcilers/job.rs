//! The Job shell every one-off run shares (a backup asked for now, the pre-upgrade
//! backup, a migration, a restore): the same labels as the system's other children
//! plus what the run is for, restricted pods, no restarts in place, and a finite
//! history.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec, PodFailurePolicy};
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

/// A Job from a CronJob's template, as `kubectl create job --from=cronjob/...` makes:
/// for a check asked for now (`referral.dev/check-now`) or the chain check after a
/// restore. Same labels and owner as the CronJob, plus [`LABEL_PURPOSE`]. `None`
/// when the CronJob has no template.
pub fn job_from_cron_job(cron: &CronJob, job_name: &str, purpose: &str) -> Option<Job> {
    let template = cron.spec.as_ref()?.job_template.clone();
    let mut labels = cron.metadata.labels.clone().unwrap_or_default();
    labels.extend(template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default());
    labels.insert(LABEL_PURPOSE.to_string(), purpose.to_string());
    let mut spec = template.spec?;
    if spec.ttl_seconds_after_finished.is_none() {
        spec.ttl_seconds_after_finished = Some(FINISHED_JOB_TTL_SECONDS);
    }
    Some(Job {
        metadata: ObjectMeta {
            name: Some(job_name.to_string()),
            namespace: cron.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: cron.metadata.owner_references.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::validate;

    #[test]
    fn a_job_from_the_chain_check_cronjob_keeps_its_pod_and_owner() {
        let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal.yaml")).unwrap();
        let mut parsed: ReferralSystem = serde_yaml::from_str(&yaml).unwrap();
        parsed.metadata.uid = Some("1234".into());
        let system = validate(&parsed, "referrals").unwrap();
        let ctx = BuildContext { operator_image: "operator:test".into(), secrets_hash: None, operator_pods: None };
        let children = super::super::build(&system, &ctx);
        let cron =
            children.cron_jobs.iter().find(|c| c.metadata.name.as_deref() == Some("minimal-chain-check")).unwrap();
        let job = job_from_cron_job(cron, "minimal-restore-check-1", "restore-check").unwrap();
        let template = &cron.spec.as_ref().unwrap().job_template;
        assert_eq!(job.spec.as_ref().unwrap().template, template.spec.as_ref().unwrap().template);
        assert_eq!(job.metadata.owner_references.as_ref().unwrap()[0].uid, "1234");
        assert_eq!(job.metadata.namespace.as_deref(), Some("referrals"));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_PURPOSE], "restore-check");
        assert_eq!(labels["app.kubernetes.io/component"], "chain-check");
    }
}
