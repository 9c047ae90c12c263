//! The Job shell every one-off run shares (a backup asked for now, the pre-upgrade
//! backup, a migration, a restore): the same labels as the system's other children
//! plus what the run is for, restricted pods, no restarts in place, and a finite
//! history; and how the state machines read a Job they look up by name
//! ([`JobPhase`]).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec, PodFailurePolicy};
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::JobTemplate;
use crate::crd::validate::ValidatedSystem;

use super::BuildContext;
use super::env::service_env;
use super::meta::{ANNOTATION_SECRETS_HASH, labels, object_meta};
use super::pods::{PodRole, integrate};
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
pub fn one_off_job(system: &ValidatedSystem, ctx: &BuildContext, run: OneOff<'_>, mut pod: PodSpec) -> Job {
    let mut pod_labels = labels(system, run.component);
    pod_labels.insert(LABEL_PURPOSE.to_string(), run.purpose.to_string());
    let mut metadata = object_meta(system, run.name.to_string(), run.component);
    metadata.labels = Some(pod_labels.clone());
    let annotations =
        ctx.secrets_hash.as_ref().map(|hash| BTreeMap::from([(ANNOTATION_SECRETS_HASH.to_string(), hash.clone())]));
    let mut template_meta = ObjectMeta { labels: Some(pod_labels), annotations, ..ObjectMeta::default() };
    integrate(system, PodRole::Job, &mut template_meta, &mut pod);
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(run.backoff_limit),
            active_deadline_seconds: Some(run.active_deadline_seconds),
            ttl_seconds_after_finished: Some(FINISHED_JOB_TTL_SECONDS),
            pod_failure_policy: run.pod_failure_policy,
            template: PodTemplateSpec {
                metadata: Some(template_meta),
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

/// `text` on one line (line breaks become " / "), cut to at most `max` bytes at a
/// character boundary.
pub fn one_line(text: &str, max: usize) -> String {
    let joined = text.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ");
    let mut end = joined.len().min(max);
    while !joined.is_char_boundary(end) {
        end -= 1;
    }
    joined[..end].to_string()
}

/// Lets every container of `pod` say why it failed where the operator reads it: our
/// commands write their error to the termination message, and a container that wrote
/// none (a script, a crash) is described by its last log lines
/// (`FallbackToLogsOnError`, used only when it exits non-zero). See
/// [`failed_pod_message`].
pub fn report_failures(pod: &mut PodSpec) {
    let containers = pod.containers.iter_mut().chain(pod.init_containers.iter_mut().flatten());
    for container in containers {
        container.termination_message_policy = Some("FallbackToLogsOnError".into());
    }
}

/// Longest part of a failed pod's own words kept in status and events.
pub const MAX_POD_MESSAGE_CHARS: usize = 400;

/// What the newest failed pod of a Job said on the way out: the first container (init
/// containers first, in order) that exited non-zero, with its termination message (our
/// commands write their error there; a script container's policy
/// `FallbackToLogsOnError` gives its last log lines) or, without one, its reason
/// (`OOMKilled`, ...). One line, credentials in URLs replaced, at most
/// [`MAX_POD_MESSAGE_CHARS`] characters (the end kept: a log's last lines say why).
pub fn failed_pod_message(pods: &[Pod]) -> Option<String> {
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let containers =
            status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        containers.into_iter().find_map(container_failure)
    })
}

fn container_failure(container: &ContainerStatus) -> Option<String> {
    let terminated = container.state.as_ref()?.terminated.as_ref()?;
    if terminated.exit_code == 0 {
        return None;
    }
    let said = terminated.message.as_deref().map(str::trim).filter(|m| !m.is_empty());
    let text = match (said, terminated.reason.as_deref()) {
        (Some(message), _) => {
            let line = redact_url_credentials(&one_line(message, usize::MAX));
            let count = line.chars().count();
            if count > MAX_POD_MESSAGE_CHARS {
                let tail: String = line.chars().skip(count - MAX_POD_MESSAGE_CHARS).collect();
                format!("...{tail}")
            } else {
                line
            }
        }
        (None, Some(reason)) => format!("({reason})"),
        (None, None) => return None,
    };
    Some(format!("container {} exited {}: {text}", container.name, terminated.exit_code))
}

/// `text` with the user information of every URL (`scheme://user:password@host`)
/// replaced: what a failing tool may print of a connection string. Our commands
/// redact their own messages already; this is for the scripts' log lines.
pub fn redact_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end =
            tail.find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace()).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("<redacted>");
                rest = &tail[userinfo_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(created: &str, statuses: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p-{created}"), "creationTimestamp": created},
            "status": statuses,
        }))
        .unwrap()
    }

    fn terminated(name: &str, code: i32, reason: &str, message: Option<&str>) -> serde_json::Value {
        serde_json::json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}}})
    }

    #[test]
    fn one_line_joins_lines_and_cuts_at_a_character_boundary() {
        assert_eq!(one_line("a\n\n b \r\nc", 100), "a / b / c");
        assert_eq!(one_line("ééé", 5), "éé");
        assert_eq!(one_line("", 5), "");
        assert_eq!(one_line("abc", 0), "");
    }

    #[test]
    fn the_failed_init_container_of_the_newest_pod_says_why() {
        let older = pod(
            "2026-12-07T01:00:00Z",
            serde_json::json!({"initContainerStatuses": [terminated("dump", 1, "Error", Some("older pod"))]}),
        );
        let newer = pod(
            "2026-12-07T01:05:00Z",
            serde_json::json!({
                "initContainerStatuses": [
                    terminated("dump", 0, "Completed", Some("fine")),
                    terminated("redis-snapshot", 1, "Error",
                        Some("Transfer finished\nError: write /backups/x.partial/redis.rdb: No space left on device\n")),
                ],
                "containerStatuses": [{"name": "finalize", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}}],
            }),
        );
        assert_eq!(
            failed_pod_message(&[older.clone(), newer]).as_deref(),
            Some(
                "container redis-snapshot exited 1: Transfer finished / Error: write /backups/x.partial/redis.rdb: No space left on device"
            )
        );
        assert_eq!(failed_pod_message(&[older]).as_deref(), Some("container dump exited 1: older pod"));
    }

    #[test]
    fn a_container_without_a_message_gives_its_reason_and_success_gives_nothing() {
        let killed = pod(
            "2026-12-07T01:00:00Z",
            serde_json::json!({"containerStatuses": [terminated("restore", 137, "OOMKilled", None)]}),
        );
        assert_eq!(failed_pod_message(&[killed]).as_deref(), Some("container restore exited 137: (OOMKilled)"));
        let fine = pod(
            "2026-12-07T01:00:00Z",
            serde_json::json!({"containerStatuses": [terminated("restore", 0, "Completed", None)]}),
        );
        assert_eq!(failed_pod_message(&[fine]), None);
        assert_eq!(failed_pod_message(&[]), None);
        assert_eq!(failed_pod_message(&[pod("2026-12-07T01:00:00Z", serde_json::json!({}))]), None);
    }

    #[test]
    fn long_messages_keep_their_end_and_credentials_never_pass() {
        let long = format!("{} connecting to mongodb://admin:s3cr%40t@db:27017/x failed: the end", "x".repeat(5000));
        let said = failed_pod_message(&[pod(
            "2026-12-07T01:00:00Z",
            serde_json::json!({"containerStatuses": [terminated("mongorestore", 1, "Error", Some(&long))]}),
        )])
        .unwrap();
        assert!(said.ends_with("failed: the end"), "{said}");
        assert!(!said.contains("s3cr") && !said.contains("admin"), "{said}");
        assert!(said.chars().count() <= MAX_POD_MESSAGE_CHARS + 40, "{}", said.len());
        assert_eq!(
            redact_url_credentials("a redis://:pw@h:1 b https://u@x/y?z c mongodb://h/ d ://@"),
            "a redis://<redacted>@h:1 b https://<redacted>@x/y?z c mongodb://h/ d ://<redacted>@"
        );
        assert_eq!(redact_url_credentials("é://é@é"), "é://<redacted>@é");
    }
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
