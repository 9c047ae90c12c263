//! Run-now requests: the annotations `referral.dev/check-now` and
//! `referral.dev/backup-now` each ask for one chain check or one backup. A request
//! is its token (the annotation's value); a token whose Job is not recorded in
//! `status.handledRequests` starts one Job. The Job's name comes from the token, so
//! an operator that crashes between creating the Job and recording it finds the
//! same Job next time instead of starting a second one, and a Job deleted by its
//! TTL is not started again because status remembers the token.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};

use crate::crd::ReferralSystem;
use crate::crd::status::{HandledRequest, HandledRequests};
use crate::crd::validate::ValidatedSystem;
use crate::reconcilers::backup::{BackupPurpose, backup_job, manual_backup_job_name};
use crate::reconcilers::chain_check::{cron_job_name, manual_check_job_name};
use crate::reconcilers::job::job_from_cron_job;
use crate::reconcilers::{BuildContext, Children};

use super::context::Context;
use super::error::Error;

/// Asks the controller for one chain check now.
pub const CHECK_NOW_ANNOTATION: &str = "referral.dev/check-now";
/// Asks the controller for one backup now.
pub const BACKUP_NOW_ANNOTATION: &str = "referral.dev/backup-now";

/// A run that can be asked for with an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNow {
    Backup,
    Check,
}

impl RunNow {
    /// The annotation whose new value asks for this run.
    pub fn annotation(self) -> &'static str {
        match self {
            RunNow::Backup => BACKUP_NOW_ANNOTATION,
            RunNow::Check => CHECK_NOW_ANNOTATION,
        }
    }
}

/// `referral.dev/purpose` of a chain check asked for now.
pub const MANUAL_CHECK_PURPOSE: &str = "manual-check";
/// Tokens are kept in status for a person to read, shortened to this many characters.
const TOKEN_SHOWN: usize = 64;

/// A request on the object that has not started its Job yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    pub run: RunNow,
    pub token: String,
    pub job: String,
}

impl PendingRequest {
    fn handled(&self) -> HandledRequest {
        HandledRequest { token: self.token.chars().take(TOKEN_SHOWN).collect(), job: self.job.clone() }
    }
}

fn job_name(system: &ValidatedSystem, run: RunNow, token: &str) -> String {
    match run {
        RunNow::Backup => manual_backup_job_name(system, token),
        RunNow::Check => manual_check_job_name(system, token),
    }
}

fn recorded(handled: &HandledRequests, run: RunNow) -> Option<&HandledRequest> {
    match run {
        RunNow::Backup => handled.backup_now.as_ref(),
        RunNow::Check => handled.check_now.as_ref(),
    }
}

/// The requests on `object` that status has not recorded. Pure. Tokens compare by
/// the Job name they give (a hash of the whole token), so a long token shortened in
/// status still matches.
pub fn pending(object: &ReferralSystem, system: &ValidatedSystem) -> Vec<PendingRequest> {
    let annotations = object.metadata.annotations.as_ref();
    let handled = object.status.as_ref().and_then(|s| s.handled_requests.clone()).unwrap_or_default();
    [RunNow::Check, RunNow::Backup]
        .into_iter()
        .filter_map(|run| {
            let token = annotations?.get(run.annotation())?.trim();
            if token.is_empty() {
                return None;
            }
            let job = job_name(system, run, token);
            let done = recorded(&handled, run).is_some_and(|r| r.job == job);
            (!done).then(|| PendingRequest { run, token: token.to_string(), job })
        })
        .collect()
}

/// The Job a request starts: the chain-check CronJob's pod, or a manual backup.
pub fn request_job(
    request: &PendingRequest,
    system: &ValidatedSystem,
    children: &Children,
    build: &BuildContext,
) -> Option<Job> {
    match request.run {
        RunNow::Backup => Some(backup_job(system, build, &request.job, BackupPurpose::Manual)),
        RunNow::Check => {
            let cron_name = cron_job_name(system);
            let cron = children.cron_jobs.iter().find(|c| c.metadata.name.as_deref() == Some(cron_name.as_str()))?;
            job_from_cron_job(cron, &request.job, MANUAL_CHECK_PURPOSE)
        }
    }
}

/// Starts the Job of every pending request and returns the handled requests to
/// record, and what was started (for events). An existing Job of the same name is
/// the one this request started before.
pub async fn start_requested_jobs(
    ctx: &Context,
    object: &ReferralSystem,
    system: &ValidatedSystem,
    children: &Children,
    build: &BuildContext,
) -> Result<(Option<HandledRequests>, Vec<PendingRequest>), Error> {
    let requests = pending(object, system);
    if requests.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut handled = object.status.as_ref().and_then(|s| s.handled_requests.clone()).unwrap_or_default();
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &system.namespace);
    let mut started = Vec::new();
    for request in requests {
        let Some(job) = request_job(&request, system, children, build) else {
            continue;
        };
        match jobs
            .create(
                &PostParams { field_manager: Some(crate::reconcilers::meta::MANAGER.into()), ..PostParams::default() },
                &job,
            )
            .await
        {
            Ok(_) => started.push(request.clone()),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(source) => return Err(Error::CreateJob { name: request.job.clone(), source }),
        }
        let entry = Some(request.handled());
        match request.run {
            RunNow::Backup => handled.backup_now = entry,
            RunNow::Check => handled.check_now = entry,
        }
    }
    Ok((Some(handled), started))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::status::ReferralSystemStatus;
    use crate::crd::validate::validate;
    use crate::reconcilers::build;

    fn object(annotations: &[(&str, &str)]) -> ReferralSystem {
        let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal.yaml")).unwrap();
        let mut parsed: ReferralSystem = crate::yaml::from_str(&yaml).unwrap();
        parsed.metadata.uid = Some("1234".into());
        parsed.metadata.namespace = Some("referrals".into());
        parsed.metadata.annotations = Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        parsed
    }

    #[test]
    fn a_new_token_is_pending_until_its_job_is_recorded() {
        let mut o = object(&[(CHECK_NOW_ANNOTATION, "2026-11-23T10:00:00Z"), (BACKUP_NOW_ANNOTATION, " ")]);
        let system = validate(&o, "referrals").unwrap();
        let requests = pending(&o, &system);
        assert_eq!(requests.len(), 1, "a blank token asks for nothing: {requests:?}");
        assert_eq!(requests[0].run, RunNow::Check);
        assert_eq!(requests[0].job, manual_check_job_name(&system, "2026-11-23T10:00:00Z"));

        o.status = Some(ReferralSystemStatus {
            handled_requests: Some(HandledRequests { check_now: Some(requests[0].handled()), backup_now: None }),
            ..ReferralSystemStatus::default()
        });
        assert!(pending(&o, &system).is_empty(), "a recorded token is not run again");

        o.metadata.annotations.as_mut().unwrap().insert(CHECK_NOW_ANNOTATION.into(), "2026-11-23T11:00:00Z".into());
        let again = pending(&o, &system);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].job, requests[0].job, "a new token names a new Job");
    }

    #[test]
    fn a_long_token_is_shortened_in_status_and_still_matches() {
        let long = "x".repeat(500);
        let mut o = object(&[(BACKUP_NOW_ANNOTATION, &long)]);
        let system = validate(&o, "referrals").unwrap();
        let requests = pending(&o, &system);
        let handled = requests[0].handled();
        assert_eq!(handled.token.len(), TOKEN_SHOWN);
        o.status = Some(ReferralSystemStatus {
            handled_requests: Some(HandledRequests { check_now: None, backup_now: Some(handled) }),
            ..ReferralSystemStatus::default()
        });
        assert!(pending(&o, &system).is_empty());
    }

    #[test]
    fn each_request_starts_the_job_of_its_kind() {
        let o = object(&[(CHECK_NOW_ANNOTATION, "a"), (BACKUP_NOW_ANNOTATION, "b")]);
        let system = validate(&o, "referrals").unwrap();
        let ctx = BuildContext { operator_image: "operator:test".into(), secrets_hash: None, operator_pods: None };
        let children = build(&system, &ctx);
        let jobs: Vec<Job> =
            pending(&o, &system).iter().map(|r| request_job(r, &system, &children, &ctx).unwrap()).collect();
        let purpose = |j: &Job| j.metadata.labels.as_ref().unwrap()[crate::reconcilers::job::LABEL_PURPOSE].clone();
        assert_eq!(purpose(&jobs[0]), MANUAL_CHECK_PURPOSE);
        assert_eq!(purpose(&jobs[1]), BackupPurpose::Manual.label());
        for job in &jobs {
            assert_eq!(job.metadata.owner_references.as_ref().unwrap()[0].uid, "1234");
        }
        let check = jobs[0].spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let args = check.containers[0].args.clone().unwrap_or_default().join(" ");
        assert!(args.contains("check") && args.contains("chains"), "the check Job runs the chain check: {args}");
    }
}
