//! The last runs of the system's CronJobs (maintenance jobs and the chain check),
//! read from their status as the watch keeps it ([`CronRuns`]): when each last ran
//! and whether it succeeded, and for a failed run the reason its Job gives, read once
//! per failed run. [`last_run`] and [`maintenance_statuses`] are pure; [`observe`]
//! is the thin part that reads the cluster.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;

use crate::crd::status::{MaintenanceRunStatus, ReferralSystemStatus, RunResult};
use crate::crd::validate::ValidatedSystem;
use crate::reconcilers::job::JobPhase;
use crate::reconcilers::{chain_check, maintenance};

use super::context::Context;
use super::error::Error;
use super::live::CronRuns;

/// The outcome of a CronJob's last run; `None` before its first.
pub fn last_run(runs: &CronRuns) -> Option<RunResult> {
    let scheduled = runs.last_schedule.as_ref()?;
    if runs.active > 0 {
        return Some(RunResult::Running);
    }
    // With `concurrencyPolicy: Forbid` runs never overlap, so the last success is
    // the last run's exactly when it finished after that run was scheduled.
    match &runs.last_success {
        Some(success) if success.0 >= scheduled.0 => Some(RunResult::Succeeded),
        _ => Some(RunResult::Failed),
    }
}

/// The Job the CronJob controller made for the run scheduled at `scheduled`: its name
/// ends in the schedule time in minutes since the epoch.
pub fn job_of_run(cron_job: &str, scheduled: &Time) -> String {
    format!("{cron_job}-{}", scheduled.0.as_second().div_euclid(60))
}

/// What the controller saw of one CronJob: its runs, and, for a failed last run whose
/// failure is not yet known from status, its Job's phase.
#[derive(Debug, Clone, PartialEq)]
pub struct CronObservation {
    pub cron_job: String,
    pub runs: Option<CronRuns>,
    /// Read only for a failed run status does not describe yet.
    pub failed_job: Option<JobPhase>,
}

/// `status.maintenance` from what was seen, one entry per maintenance job in spec
/// order. A failure already in `old` for the same run keeps its message, so the
/// failed Job is read once.
pub fn maintenance_statuses(
    system: &ValidatedSystem,
    seen: &[CronObservation],
    old: Option<&ReferralSystemStatus>,
) -> Vec<MaintenanceRunStatus> {
    system
        .spec
        .maintenance
        .iter()
        .map(|job| {
            let cron_job = maintenance::cron_job_name(system, &job.name);
            let observation = seen.iter().find(|o| o.cron_job == cron_job);
            let runs = observation.and_then(|o| o.runs.clone()).unwrap_or_default();
            let result = last_run(&runs);
            let known = old
                .into_iter()
                .flat_map(|s| &s.maintenance)
                .find(|m| m.cron_job == cron_job && m.last_schedule_time == runs.last_schedule);
            let message = match result {
                Some(RunResult::Failed) => known.and_then(|k| k.message.clone()).or_else(|| {
                    let run = runs.last_schedule.as_ref().map(|t| job_of_run(&cron_job, t)).unwrap_or_default();
                    Some(match observation.and_then(|o| o.failed_job.clone()) {
                        Some(JobPhase::Failed(why)) => format!("Job {run} failed: {why}"),
                        Some(JobPhase::Absent) | None => {
                            format!("Job {run} failed (it is gone; its reason is not known)")
                        }
                        Some(other) => format!("Job {run} reads as {other:?}"),
                    })
                }),
                _ => None,
            };
            MaintenanceRunStatus {
                name: job.name.clone(),
                cron_job,
                last_schedule_time: runs.last_schedule.clone(),
                last_success_time: runs.last_success.clone(),
                last_result: result,
                message,
            }
        })
        .collect()
}

/// The runs in `new` that failed and were not failed for the same schedule in `old`:
/// each failure is told once.
pub fn newly_failed<'a>(
    old: &[MaintenanceRunStatus],
    new: &'a [MaintenanceRunStatus],
) -> Vec<&'a MaintenanceRunStatus> {
    new.iter()
        .filter(|run| run.last_result == Some(RunResult::Failed))
        .filter(|run| {
            !old.iter().any(|o| {
                o.cron_job == run.cron_job
                    && o.last_result == Some(RunResult::Failed)
                    && o.last_schedule_time == run.last_schedule_time
            })
        })
        .collect()
}

/// Whether the chain-check CronJob's last run failed after the check last reported
/// (success or failure): its pod died before it could write status. The message
/// names the Job and says why.
pub fn chain_check_job_failure(observation: &CronObservation, old: Option<&ReferralSystemStatus>) -> Option<String> {
    let runs = observation.runs.as_ref()?;
    if last_run(runs) != Some(RunResult::Failed) {
        return None;
    }
    let scheduled = runs.last_schedule.as_ref()?;
    let check = old.and_then(|s| s.chain_check.as_ref());
    let reported = [check.and_then(|c| c.last_run.as_ref()), check.and_then(|c| c.failure.as_ref().map(|f| &f.time))];
    if reported.into_iter().flatten().any(|t| t.0 >= scheduled.0) {
        return None;
    }
    let run = job_of_run(&observation.cron_job, scheduled);
    Some(match &observation.failed_job {
        Some(JobPhase::Failed(why)) => format!("Job {run} failed before the check could report: {why}"),
        _ => format!("Job {run} failed before the check could report"),
    })
}

/// Reads the runs of the system's maintenance and chain-check CronJobs (from the
/// watch, or the API while it has not listed yet) and, for a failed run not yet
/// described in `old`, its Job.
pub async fn observe(
    ctx: &Context,
    system: &ValidatedSystem,
    old: Option<&ReferralSystemStatus>,
) -> Result<(Vec<CronObservation>, CronObservation), Error> {
    let ns = &system.namespace;
    let crons = Api::<CronJob>::namespaced(ctx.client.clone(), ns);
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns);
    let runs_of = async |name: &str| -> Result<Option<CronRuns>, Error> {
        if ctx.live.synced("CronJob", ns) {
            return Ok(ctx.live.cron_runs(ns, name));
        }
        let cron =
            crons.get_opt(name).await.map_err(|source| Error::Read { kind: "CronJob", name: name.into(), source })?;
        Ok(cron.as_ref().map(CronRuns::of))
    };
    let failed_job = async |cron_job: &str, runs: &Option<CronRuns>, known: bool| -> Result<Option<JobPhase>, Error> {
        let Some(runs) = runs else { return Ok(None) };
        let (Some(RunResult::Failed), Some(scheduled)) = (last_run(runs), &runs.last_schedule) else {
            return Ok(None);
        };
        if known {
            return Ok(None);
        }
        let name = job_of_run(cron_job, scheduled);
        let job = jobs.get_opt(&name).await.map_err(|source| Error::Read { kind: "Job", name, source })?;
        Ok(Some(JobPhase::of(job.as_ref())))
    };
    let mut maintenance = Vec::new();
    for job in &system.spec.maintenance {
        let cron_job = maintenance::cron_job_name(system, &job.name);
        let runs = runs_of(&cron_job).await?;
        let known = old.into_iter().flat_map(|s| &s.maintenance).any(|m| {
            m.cron_job == cron_job
                && m.last_result == Some(RunResult::Failed)
                && m.last_schedule_time == runs.as_ref().and_then(|r| r.last_schedule.clone())
        });
        let failed = failed_job(&cron_job, &runs, known).await?;
        maintenance.push(CronObservation { cron_job, runs, failed_job: failed });
    }
    let cron_job = chain_check::cron_job_name(system);
    let runs = runs_of(&cron_job).await?;
    let check = CronObservation { cron_job: cron_job.clone(), runs: runs.clone(), failed_job: None };
    let failed =
        if chain_check_job_failure(&check, old).is_some() { failed_job(&cron_job, &runs, false).await? } else { None };
    Ok((maintenance, CronObservation { failed_job: failed, ..check }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::status::{ChainCheckFailure, ChainCheckStatus};

    fn at(minute: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + minute * 60).unwrap())
    }

    fn runs(schedule: Option<i64>, success: Option<i64>, active: usize) -> CronRuns {
        CronRuns { last_schedule: schedule.map(at), last_success: success.map(at), active }
    }

    #[test]
    fn the_last_run_is_read_from_the_cronjob_status() {
        assert_eq!(last_run(&runs(None, None, 0)), None, "never ran");
        assert_eq!(last_run(&runs(Some(10), None, 1)), Some(RunResult::Running));
        assert_eq!(last_run(&runs(Some(10), Some(12), 0)), Some(RunResult::Succeeded));
        assert_eq!(last_run(&runs(Some(10), Some(3), 0)), Some(RunResult::Failed), "an older success");
        assert_eq!(last_run(&runs(Some(10), None, 0)), Some(RunResult::Failed), "never succeeded");
        assert_eq!(job_of_run("main-maint-cleanup", &at(10)), format!("main-maint-cleanup-{}", 30_000_000 + 10));
    }

    fn system() -> ValidatedSystem {
        let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/full.yaml")).unwrap();
        let parsed: crate::crd::ReferralSystem = crate::yaml::from_str(&yaml).unwrap();
        crate::crd::validate::validate(&parsed, "referrals").unwrap()
    }

    #[test]
    fn a_failed_maintenance_run_says_why_once_and_keeps_saying_it() {
        let system = system();
        let cron = |name: &str| maintenance::cron_job_name(&system, name);
        let seen = vec![
            CronObservation {
                cron_job: cron("cleanup-transactions"),
                runs: Some(runs(Some(10), Some(3), 0)),
                failed_job: Some(JobPhase::Failed(
                    "BackoffLimitExceeded: Job has reached the specified backoff limit".into(),
                )),
            },
            CronObservation {
                cron_job: cron("update-statistics"),
                runs: Some(runs(Some(20), Some(21), 0)),
                failed_job: None,
            },
        ];
        let statuses = maintenance_statuses(&system, &seen, None);
        assert_eq!(statuses.len(), 3, "one entry per maintenance job, in spec order");
        let failed = &statuses[0];
        assert_eq!(failed.last_result, Some(RunResult::Failed));
        let message = failed.message.clone().unwrap();
        assert!(message.contains(&job_of_run(&cron("cleanup-transactions"), &at(10))), "{message}");
        assert!(message.contains("BackoffLimitExceeded"), "{message}");
        assert_eq!(statuses[1].last_result, Some(RunResult::Succeeded));
        assert_eq!(statuses[1].message, None);
        assert_eq!((statuses[2].last_result, statuses[2].last_schedule_time.clone()), (None, None), "not run yet");
        // Next reconcile: the Job is not read again, the message stays.
        let old = ReferralSystemStatus { maintenance: statuses.clone(), ..ReferralSystemStatus::default() };
        let again = vec![CronObservation { failed_job: None, ..seen[0].clone() }];
        assert_eq!(maintenance_statuses(&system, &again, Some(&old))[0].message, Some(message));
    }

    #[test]
    fn each_failed_run_is_told_once() {
        let run = |schedule: i64, result: RunResult| MaintenanceRunStatus {
            name: "cleanup".into(),
            cron_job: "main-maint-cleanup".into(),
            last_schedule_time: Some(at(schedule)),
            last_success_time: None,
            last_result: Some(result),
            message: None,
        };
        assert_eq!(newly_failed(&[], &[run(1, RunResult::Failed)]).len(), 1);
        assert!(newly_failed(&[run(1, RunResult::Failed)], &[run(1, RunResult::Failed)]).is_empty());
        assert_eq!(newly_failed(&[run(1, RunResult::Failed)], &[run(2, RunResult::Failed)]).len(), 1, "the next run");
        assert!(newly_failed(&[], &[run(1, RunResult::Succeeded)]).is_empty());
    }

    #[test]
    fn a_chain_check_job_that_died_before_reporting_is_a_failure_to_run() {
        let observation = |schedule: i64| CronObservation {
            cron_job: "main-chain-check".into(),
            runs: Some(runs(Some(schedule), Some(1), 0)),
            failed_job: Some(JobPhase::Failed(
                "DeadlineExceeded: Job was active longer than specified deadline".into(),
            )),
        };
        let message = chain_check_job_failure(&observation(10), None).unwrap();
        assert!(message.contains("DeadlineExceeded") && message.contains("main-chain-check-"), "{message}");
        // The check reported after that run was scheduled (a success, or its own failure): nothing more to say.
        let reported = |check: ChainCheckStatus| ReferralSystemStatus {
            chain_check: Some(check),
            ..ReferralSystemStatus::default()
        };
        let succeeded = reported(ChainCheckStatus { last_run: Some(at(11)), ..ChainCheckStatus::default() });
        assert_eq!(chain_check_job_failure(&observation(10), Some(&succeeded)), None);
        let failure = ChainCheckFailure { time: at(12), reason: "MongoUnreachable".into(), message: "m".into() };
        let failed = reported(ChainCheckStatus { failure: Some(failure), ..ChainCheckStatus::default() });
        assert_eq!(chain_check_job_failure(&observation(10), Some(&failed)), None);
        assert!(chain_check_job_failure(&observation(20), Some(&succeeded)).is_some(), "a later run died");
    }
}
