//! The Job shell every one-off run shares (a backup asked for now, the pre-upgrade
//! backup, a migration, a restore): the same labels as the system's other children
//! plus what the run is for, restricted pods, no restarts in place, and a finite
//! history; and how the state machines read a Job they look up by name
//! ([`JobPhase`]).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec, PodFailurePolicy};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::JobTemplate;
use crate::crd::validate::ValidatedSystem;

use super::BuildContext;
use super::env::service_env;
use super::meta::{ANNOTATION_SECRETS_HASH, labels, object_meta};
use super::security::{restricted_container, restricted_pod};

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

/// The pod of a job of the service ([`JobTemplate`]: a maintenance job, the
/// migration): its image or the system's, the workers' environment plus its own, in a
/// restricted pod.
pub fn template_pod(system: &ValidatedSystem, container_name: &str, template: &JobTemplate) -> PodSpec {
    let spec = &system.spec;
    let mut env = service_env(system);
    env.extend(template.env.iter().cloned());
    let image = template.image.clone().unwrap_or_else(|| spec.image.clone());
    let container = Container {
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: template.command.clone(),
        args: template.args.clone(),
        env: Some(env),
        resources: template.resources.clone(),
        ..restricted_container(container_name, image)
    };
    restricted_pod(system, vec![container])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::validate;

    #[test]
    fn a_job_from_the_chain_check_cronjob_keeps_its_pod_and_owner() {
        let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal.yaml")).unwrap();
        let mut parsed: ReferralSystem = crate::yaml::from_str(&yaml).unwrap();
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
}
