//! A restore as a pure state machine: what the controller observed of a
//! ReferralRestore, its system and their Jobs in, one [`RestoreStep`] out
//! ([`next_restore_step`]), and the status that records it ([`next_status`]). It
//! keeps nothing in memory, and the Jobs are named from the ReferralRestore's uid, so
//! after an operator restart the same inputs give the same step and the same Job is
//! found rather than a second one started.
//!
//! Also here, pure as well: which restore waits for which and which one holds its
//! system ([`blocking_restore`], [`holding_restore`]), and what the workers, CronJobs
//! and Jobs look like to the restore ([`still_running`], [`restored_as_built`]). The
//! driver, `controller::restore`, observes, records the step, then acts.

use std::cmp::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::checks::index_sync::IndexReport;
use crate::crd::conditions;
use crate::crd::restore::{ReferralRestore, ReferralRestoreStatus, RestorePhase};
use crate::crd::status::{IndexState, ReferralSystemStatus, UpgradePhase};
use crate::crd::validate::ValidatedSystem;

use super::Children;
use super::job::JobPhase;
use super::restore::{restore_job_name, verify_job_name};

/// Condition types of a restore, one per step, in the order the steps run.
pub const WORKERS_STOPPED: &str = "WorkersStopped";
pub const DATA_RESTORED: &str = "DataRestored";
pub const INDEXES_ENSURED: &str = "IndexesEnsured";
pub const CHAINS_CHECKED: &str = "ChainsChecked";
pub const WORKERS_RESTORED: &str = "WorkersRestored";
const CONDITION_ORDER: [&str; 5] = [WORKERS_STOPPED, DATA_RESTORED, INDEXES_ENSURED, CHAINS_CHECKED, WORKERS_RESTORED];
/// Reason of `IndexesEnsured=False`: the sync ran and some declared index is not in
/// place. Only this reason fails a restore; a MongoDB that cannot be reached is
/// retried, with the restore still holding the system.
pub const REASON_INDEXES_NOT_ENSURED: &str = "IndexesNotEnsured";

/// How long the workers must read as stopped before the restore Job is created: two
/// observations at least this far apart, none in between saying otherwise. One
/// observation is not enough: when the Deployment was scaled to zero while its
/// ReplicaSet controller still had a pod create on its way, the pod appears after
/// a check that passed (seen on the test bed: 160 ms after the scale-down). Two
/// seconds is more than ten times that, and little next to a restore.
pub const WORKERS_STOPPED_FOR: Duration = Duration::from_secs(2);
/// A recorded time (`metav1.Time`) keeps whole seconds: the observation it records
/// may have been up to this much later than the time stored.
const RECORDED_PRECISION: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------
// The next step.

/// What the controller observed for one ReferralRestore.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreObservation<'a> {
    /// The ReferralRestore's uid (names its Jobs).
    pub restore_uid: &'a str,
    /// Its status as stored: the progress so far.
    pub status: Option<&'a ReferralRestoreStatus>,
    /// The ReferralSystem named by `spec.systemName`, validated; `None` when it does
    /// not exist or is invalid.
    pub system: Option<&'a ValidatedSystem>,
    /// Another ReferralRestore of the same system that is not finished and was
    /// created first (creation time, then name): this one waits.
    pub earlier_restore: Option<&'a str>,
    /// A backup Job of the system (scheduled, manual or pre-upgrade) is active.
    pub backup_running: Option<&'a str>,
    /// An image change of the system is between backup and rollout.
    pub upgrade_in_progress: bool,
    /// Every worker Deployment has a spec of zero replicas and no worker pod is
    /// left, terminating ones included (list the pods, or require
    /// `status.observedGeneration >= metadata.generation` and `status.replicas` and
    /// `status.terminatingReplicas` at 0: a status not yet updated reads as 0).
    pub workers_stopped: bool,
    /// When this observation was made: the workers are confirmed stopped once the
    /// recorded `WorkersStopped=True` is [`WORKERS_STOPPED_FOR`] old.
    pub now: Timestamp,
    /// The restore Job ([`restore_job_name`]).
    pub restore_job: JobPhase,
    /// The operator ensured the declared indexes after the restore (it records this
    /// in the condition `IndexesEnsured`; pass its outcome here).
    pub indexes: IndexOutcome,
    /// The chain-check Job ([`verify_job_name`]).
    pub chain_check_job: JobPhase,
    /// Every worker Deployment is back at its desired, available replicas.
    pub workers_restored: bool,
}

/// Outcome of ensuring indexes after the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOutcome {
    NotYet,
    Ensured,
    Failed(String),
}

/// The one thing to do next for a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreStep {
    /// Nothing may start yet; the reason names what is in the way.
    Wait {
        reason: &'static str,
        message: String,
    },
    /// Start holding the system ([`hold_for_restore`]): workers to zero, CronJobs
    /// suspended. Keep holding in every later step until `Done`/`Failed` says not.
    ScaleWorkersToZero,
    /// Workers are stopping; keep holding.
    WaitForWorkersToStop,
    /// The workers read as stopped: record `WorkersStopped=True` and look again once
    /// [`WORKERS_STOPPED_FOR`] has passed; keep holding.
    ConfirmWorkersStopped,
    /// Create [`restore_job`] with this name.
    CreateRestoreJob {
        job_name: String,
    },
    WaitForRestoreJob {
        job_name: String,
    },
    /// Ensure the system's declared MongoDB indexes now, then record the outcome.
    EnsureIndexes,
    /// Create a chain-check Job with this name: `job::job_from_cron_job` on the
    /// chain-check CronJob, purpose `restore-check`.
    RunChainCheck {
        job_name: String,
    },
    WaitForChainCheck {
        job_name: String,
    },
    /// Stop holding: build workers and CronJobs from the spec again.
    ScaleWorkersBack,
    /// Over. `hold` says whether workers stay at zero (after a failure that may have
    /// left the data half-restored, until the ReferralRestore is deleted).
    Done {
        phase: RestorePhase,
        message: String,
        hold: bool,
    },
}

impl RestoreStep {
    /// Whether the system must be held ([`hold_for_restore`]) while this step runs.
    pub fn holds_system(&self) -> bool {
        match self {
            Self::Wait { .. } => false,
            Self::ScaleWorkersBack => false,
            Self::Done { hold, .. } => *hold,
            _ => true,
        }
    }

    /// The phase to record in the ReferralRestore's status for this step.
    pub fn phase(&self) -> RestorePhase {
        match self {
            Self::Wait { .. } => RestorePhase::Pending,
            Self::ScaleWorkersToZero | Self::WaitForWorkersToStop | Self::ConfirmWorkersStopped => {
                RestorePhase::ScalingDown
            }
            Self::CreateRestoreJob { .. } | Self::WaitForRestoreJob { .. } => RestorePhase::Restoring,
            Self::EnsureIndexes => RestorePhase::EnsuringIndexes,
            Self::RunChainCheck { .. } | Self::WaitForChainCheck { .. } => RestorePhase::CheckingChains,
            Self::ScaleWorkersBack => RestorePhase::ScalingUp,
            Self::Done { phase, .. } => *phase,
        }
    }
}

/// Wait reasons.
pub const WAIT_SYSTEM_MISSING: &str = "SystemNotFound";
pub const WAIT_OTHER_RESTORE: &str = "AnotherRestoreRunning";
pub const WAIT_BACKUP_RUNNING: &str = "BackupRunning";
pub const WAIT_UPGRADE_RUNNING: &str = "UpgradeInProgress";

/// The next step of a restore. Pure: the same observation gives the same step, so an
/// operator that restarts midway carries on where status and the cluster say it was.
pub fn next_restore_step(observed: &RestoreObservation<'_>) -> RestoreStep {
    let recorded = observed.status.and_then(|s| s.phase);
    if let Some(phase) = recorded
        && phase.is_terminal()
    {
        let message = observed.status.and_then(|s| s.message.clone()).unwrap_or_default();
        return RestoreStep::Done { phase, message, hold: phase == RestorePhase::Failed };
    }
    let Some(system) = observed.system else {
        if recorded.is_some_and(|p| p != RestorePhase::Pending) {
            return RestoreStep::Done {
                phase: RestorePhase::Failed,
                message: "the ReferralSystem was deleted or became invalid during the restore".into(),
                hold: false,
            };
        }
        return RestoreStep::Wait {
            reason: WAIT_SYSTEM_MISSING,
            message: "the ReferralSystem named by spec.systemName does not exist or is invalid".into(),
        };
    };
    let started = recorded.is_some_and(|p| p != RestorePhase::Pending);
    // Before anything changes, nothing else may be running on the same system. Once
    // started, the restore holds the system, so nothing new can begin.
    if !started {
        if let Some(other) = observed.earlier_restore {
            return RestoreStep::Wait {
                reason: WAIT_OTHER_RESTORE,
                message: format!("waiting for ReferralRestore {other} of the same system to finish"),
            };
        }
        if observed.upgrade_in_progress {
            return RestoreStep::Wait {
                reason: WAIT_UPGRADE_RUNNING,
                message: "waiting for the image change in progress to finish".into(),
            };
        }
        if let Some(job) = observed.backup_running {
            return RestoreStep::Wait {
                reason: WAIT_BACKUP_RUNNING,
                message: format!("waiting for backup Job {job} to finish"),
            };
        }
        return RestoreStep::ScaleWorkersToZero;
    }
    let restore_job = restore_job_name(system, observed.restore_uid);
    let check_job = verify_job_name(system, observed.restore_uid);
    match &observed.restore_job {
        JobPhase::Absent => {
            if !observed.workers_stopped {
                return RestoreStep::WaitForWorkersToStop;
            }
            // The hold suspended the CronJobs, but a backup that began before it may
            // still run: never restore underneath a dump.
            if observed.backup_running.is_some() {
                return RestoreStep::WaitForWorkersToStop;
            }
            // Stopped now and, as recorded, long enough ago with nothing in between
            // saying otherwise (an observation of a worker records False, and the
            // next True a new transition time).
            if workers_stopped_long_enough(observed.status, observed.now) {
                return RestoreStep::CreateRestoreJob { job_name: restore_job };
            }
            return RestoreStep::ConfirmWorkersStopped;
        }
        JobPhase::Running => return RestoreStep::WaitForRestoreJob { job_name: restore_job },
        JobPhase::Failed(why) => {
            return RestoreStep::Done {
                phase: RestorePhase::Failed,
                message: format!(
                    "restore Job {restore_job} failed ({why}); workers stay at zero because the data may be partly restored: fix the cause and create a new ReferralRestore, or delete this one to start the workers on the data as it is"
                ),
                hold: true,
            };
        }
        JobPhase::Succeeded => {}
    }
    match &observed.indexes {
        IndexOutcome::NotYet => return RestoreStep::EnsureIndexes,
        IndexOutcome::Failed(why) => {
            return RestoreStep::Done {
                phase: RestorePhase::Failed,
                message: format!(
                    "the data is restored but the indexes could not be ensured ({why}); workers stay at zero: fix it and delete this ReferralRestore to start them"
                ),
                hold: true,
            };
        }
        IndexOutcome::Ensured => {}
    }
    let chain_note = match &observed.chain_check_job {
        JobPhase::Absent => return RestoreStep::RunChainCheck { job_name: check_job },
        JobPhase::Running => return RestoreStep::WaitForChainCheck { job_name: check_job },
        // The check reports on the data; the data is what the backup held either way,
        // so a failed check is reported, and workers come back.
        JobPhase::Failed(why) => format!("the chain check after the restore failed ({why}); see {check_job}"),
        JobPhase::Succeeded => "the chain check after the restore passed".to_string(),
    };
    if !observed.workers_restored {
        return RestoreStep::ScaleWorkersBack;
    }
    RestoreStep::Done { phase: RestorePhase::Succeeded, message: format!("restored; {chain_note}"), hold: false }
}

/// Whether the stored `WorkersStopped` condition is True and became so at least
/// [`WORKERS_STOPPED_FOR`] before `now`, counting the rounding of the stored time
/// against it. A time recorded after `now` (another clock) is not long enough.
fn workers_stopped_long_enough(status: Option<&ReferralRestoreStatus>, now: Timestamp) -> bool {
    let Some(since) = status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == WORKERS_STOPPED && c.status == "True"))
        .map(|c| c.last_transition_time.0)
    else {
        return false;
    };
    let needed = SignedDuration::try_from(WORKERS_STOPPED_FOR + RECORDED_PRECISION).unwrap_or(SignedDuration::MAX);
    now.duration_since(since) >= needed
}

// ---------------------------------------------------------------------------------
// Which restore waits for which, and which one holds the system.

/// One ReferralRestore of a system, as the ordering decisions need it.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreEntry {
    pub name: String,
    pub created: Option<Timestamp>,
    pub phase: Option<RestorePhase>,
    pub holds_system: bool,
}

impl RestoreEntry {
    pub fn of(restore: &ReferralRestore) -> Self {
        let status = restore.status.as_ref();
        RestoreEntry {
            name: restore.name_any(),
            created: restore.metadata.creation_timestamp.as_ref().map(|t| t.0),
            phase: status.and_then(|s| s.phase),
            holds_system: status.is_some_and(|s| s.holds_system),
        }
    }

    /// Past Pending: it has changed something (or is about to).
    fn started(&self) -> bool {
        self.phase.is_some_and(|p| p != RestorePhase::Pending)
    }

    fn finished(&self) -> bool {
        self.phase.is_some_and(RestorePhase::is_terminal)
    }

    /// Creation order; the name breaks ties within one second.
    fn order(&self, other: &Self) -> Ordering {
        (self.created, self.name.as_str()).cmp(&(other.created, other.name.as_str()))
    }
}

/// The restore `me` must wait for: an unfinished one of the same system that has
/// started (whenever it was created), else the first unfinished one created before
/// `me`. Finished ones never block: after a failed restore, a new one is the way on.
pub fn blocking_restore<'a>(me: &RestoreEntry, others: &'a [RestoreEntry]) -> Option<&'a str> {
    let unfinished = || others.iter().filter(|o| o.name != me.name && !o.finished());
    if let Some(started) = unfinished().find(|o| o.started()) {
        return Some(&started.name);
    }
    unfinished().filter(|o| o.order(me) == Ordering::Less).min_by(|a, b| a.order(b)).map(|o| o.name.as_str())
}

/// The restore that holds its system, if any. The latest-created restore that has
/// started decides: while it runs that is the one in progress; after it, what it
/// recorded (a failed restore holds until it is deleted, or until a newer restore
/// starts and, finishing well, releases the system).
pub fn holding_restore(entries: &[RestoreEntry]) -> Option<&str> {
    entries.iter().filter(|e| e.started()).max_by(|a, b| a.order(b)).filter(|e| e.holds_system).map(|e| e.name.as_str())
}

// ---------------------------------------------------------------------------------
// What the workers and Jobs look like.

/// A Deployment at the replicas the spec builds: the number when the builder sets
/// one, anything but zero when it leaves replicas to an autoscaler; and seen by the
/// Deployment controller (`observedGeneration`), so the change is being carried out.
pub fn scaled_as_built(built: &Deployment, live: Option<&Deployment>) -> bool {
    let Some(live) = live else { return false };
    let have = live.spec.as_ref().and_then(|s| s.replicas);
    let replicas_match = match built.spec.as_ref().and_then(|s| s.replicas) {
        Some(want) => have == Some(want),
        None => have != Some(0),
    };
    let seen =
        live.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0) >= live.metadata.generation.unwrap_or(0);
    replicas_match && seen
}

/// A Deployment that can no longer start a pod: zero replicas in its spec, that
/// spec seen by the Deployment controller (`observedGeneration`), and no replica
/// left in its status. A spec of zero alone is not enough: until the controller
/// has scaled the ReplicaSet down, the ReplicaSet may still create a pod.
pub fn scaled_to_zero(live: &Deployment) -> bool {
    let spec_zero = live.spec.as_ref().and_then(|s| s.replicas) == Some(0);
    let status = live.status.as_ref();
    let seen = status.and_then(|s| s.observed_generation).unwrap_or(0) >= live.metadata.generation.unwrap_or(0);
    let no_replicas = status.and_then(|s| s.replicas).unwrap_or(0) == 0;
    spec_zero && seen && no_replicas
}

fn suspended(cron: &CronJob) -> bool {
    cron.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
}

/// What is still running while the restore waits for the workers to stop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StillRunning {
    /// Deployments not yet at zero replicas.
    pub deployments: Vec<String>,
    /// CronJobs not yet suspended.
    pub cron_jobs: Vec<String>,
    /// Worker pods not yet gone (terminating ones included).
    pub pods: usize,
    /// Active Jobs of the system other than backups (chain checks, maintenance,
    /// migrations): they read or write the data the restore replaces.
    pub jobs: Vec<String>,
}

impl StillRunning {
    pub fn is_empty(&self) -> bool {
        self.deployments.is_empty() && self.cron_jobs.is_empty() && self.pods == 0 && self.jobs.is_empty()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.deployments.is_empty() {
            parts.push(format!("Deployments {} to scale to zero", self.deployments.join(", ")));
        }
        if self.pods > 0 {
            parts.push(format!("{} worker pod(s) to go", self.pods));
        }
        if !self.cron_jobs.is_empty() {
            parts.push(format!("CronJobs {} to be suspended", self.cron_jobs.join(", ")));
        }
        if !self.jobs.is_empty() {
            parts.push(format!("Jobs {} to finish", self.jobs.join(", ")));
        }
        parts.join("; ")
    }
}

/// What still runs of the built children, compared with what is live.
pub fn still_running(
    built: &Children,
    deployments: &[Option<Deployment>],
    cron_jobs: &[Option<CronJob>],
    running_pods: usize,
    active_jobs: Vec<String>,
) -> StillRunning {
    let deployments = built
        .deployments
        .iter()
        .zip(deployments)
        .filter(|(_, live)| live.as_ref().is_some_and(|d| !scaled_to_zero(d)))
        .map(|(d, _)| d.name_any())
        .collect();
    let cron_jobs = built
        .cron_jobs
        .iter()
        .zip(cron_jobs)
        .filter(|(_, live)| live.as_ref().is_some_and(|c| !suspended(c)))
        .map(|(c, _)| c.name_any())
        .collect();
    StillRunning { deployments, cron_jobs, pods: running_pods, jobs: active_jobs }
}

/// Every worker Deployment and CronJob follows the spec again.
pub fn restored_as_built(built: &Children, deployments: &[Option<Deployment>], cron_jobs: &[Option<CronJob>]) -> bool {
    let workers = built.deployments.iter().zip(deployments).all(|(b, live)| scaled_as_built(b, live.as_ref()));
    let crons = built
        .cron_jobs
        .iter()
        .zip(cron_jobs)
        .all(|(b, live)| live.as_ref().is_some_and(|live| suspended(live) == suspended(b)));
    workers && crons
}

/// The outcome of ensuring indexes recorded in a restore's conditions.
pub fn recorded_indexes(status: Option<&ReferralRestoreStatus>) -> IndexOutcome {
    let condition = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == INDEXES_ENSURED));
    match condition {
        Some(c) if c.status == "True" => IndexOutcome::Ensured,
        Some(c) if c.status == "False" && c.reason == REASON_INDEXES_NOT_ENSURED => {
            IndexOutcome::Failed(c.message.clone())
        }
        _ => IndexOutcome::NotYet,
    }
}

/// An image change between its pre-upgrade backup and the end of its rollout (and
/// of its verification).
pub fn upgrade_in_progress(status: Option<&ReferralSystemStatus>) -> bool {
    status.and_then(|s| s.upgrade.as_ref()).is_some_and(|u| {
        matches!(
            u.phase,
            UpgradePhase::BackingUp | UpgradePhase::Migrating | UpgradePhase::RollingOut | UpgradePhase::Verifying
        )
    })
}

// ---------------------------------------------------------------------------------
// The status to record for a step.

/// What the status needs besides the step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFacts<'a> {
    pub system: &'a str,
    pub backup: &'a str,
    pub restore_job: &'a JobPhase,
    pub chain_check_job: &'a JobPhase,
    /// What still runs while the workers stop.
    pub still_running: &'a StillRunning,
    /// A backup Job that began before the hold.
    pub backup_running: Option<&'a str>,
    /// The system is paused: its children are not changed, so the hold cannot be
    /// applied or lifted.
    pub system_paused: bool,
    /// What the chain check found, once it is over.
    pub chain_check: Option<String>,
}

/// A restore's conditions carry no generation: a ReferralRestore's spec never changes.
fn condition(type_: &str, ok: bool, reason: &str, message: String, now: &Time) -> Condition {
    conditions::condition(type_, ok, reason, message, None, now)
}

/// Sets one condition ([`conditions::set`]) and keeps the conditions in step order.
pub fn set_condition(list: &mut Vec<Condition>, new: Condition) {
    conditions::set(list, new);
    list.sort_by_key(|c| CONDITION_ORDER.iter().position(|t| *t == c.type_).unwrap_or(CONDITION_ORDER.len()));
}

fn step_message(step: &RestoreStep, facts: &StepFacts<'_>) -> String {
    let paused = if facts.system_paused {
        format!(
            "ReferralSystem {} is paused, so the operator does not change its workers: set spec.paused to false; ",
            facts.system
        )
    } else {
        String::new()
    };
    match step {
        RestoreStep::Wait { message, .. } => message.clone(),
        RestoreStep::ScaleWorkersToZero => {
            format!("{paused}scaling the workers of {} to zero and suspending its CronJobs", facts.system)
        }
        RestoreStep::WaitForWorkersToStop => {
            let mut waiting = facts.still_running.describe();
            if let Some(job) = facts.backup_running {
                if !waiting.is_empty() {
                    waiting.push_str("; ");
                }
                waiting.push_str(&format!("backup Job {job} to finish"));
            }
            if waiting.is_empty() {
                format!("{paused}waiting for the workers of {} to stop", facts.system)
            } else {
                format!("{paused}waiting for {waiting}")
            }
        }
        RestoreStep::ConfirmWorkersStopped => format!(
            "the workers of {} read as stopped; confirming that they stay stopped for {}s before the restore starts",
            facts.system,
            WORKERS_STOPPED_FOR.as_secs()
        ),
        RestoreStep::CreateRestoreJob { job_name } | RestoreStep::WaitForRestoreJob { job_name } => {
            format!("Job {job_name} restores backup {}", facts.backup)
        }
        RestoreStep::EnsureIndexes => format!("ensuring the declared indexes of {}", facts.system),
        RestoreStep::RunChainCheck { job_name } | RestoreStep::WaitForChainCheck { job_name } => {
            format!("Job {job_name} checks the referral chains of the restored data")
        }
        RestoreStep::ScaleWorkersBack => {
            format!("{paused}scaling the workers of {} back as the spec says", facts.system)
        }
        RestoreStep::Done { message, .. } => message.clone(),
    }
}

/// The status to record for `step`, from the stored one. A step's condition is set
/// when the step starts and when it ends; the fields owned by earlier steps carry
/// over. Job names are recorded before the Jobs are created.
pub fn next_status(
    old: &ReferralRestoreStatus,
    step: &RestoreStep,
    facts: &StepFacts<'_>,
    now: &Time,
) -> ReferralRestoreStatus {
    let mut status = old.clone();
    let phase = step.phase();
    status.phase = Some(phase);
    status.message = Some(step_message(step, facts));
    status.holds_system = step.holds_system();
    if phase != RestorePhase::Pending && status.started_at.is_none() {
        status.started_at = Some(now.clone());
    }
    if phase.is_terminal() && status.completed_at.is_none() {
        status.completed_at = Some(now.clone());
    }
    let conditions = &mut status.conditions;
    let stopped = || {
        condition(WORKERS_STOPPED, true, "Stopped", "no worker pod is left and the CronJobs are suspended".into(), now)
    };
    match step {
        RestoreStep::Wait { .. } => {}
        RestoreStep::ScaleWorkersToZero | RestoreStep::WaitForWorkersToStop => {
            set_condition(conditions, condition(WORKERS_STOPPED, false, "Stopping", step_message(step, facts), now));
        }
        // True from the first observation of stopped: its transition time is when the
        // workers were first seen stopped, which the restore Job waits on.
        RestoreStep::ConfirmWorkersStopped => set_condition(conditions, stopped()),
        RestoreStep::CreateRestoreJob { job_name } | RestoreStep::WaitForRestoreJob { job_name } => {
            status.restore_job = Some(job_name.clone());
            set_condition(conditions, stopped());
            let message = format!("Job {job_name} restores backup {}", facts.backup);
            set_condition(conditions, condition(DATA_RESTORED, false, "Restoring", message, now));
        }
        RestoreStep::EnsureIndexes => {
            let job = status.restore_job.clone().unwrap_or_default();
            let message = format!("Job {job} restored backup {}", facts.backup);
            set_condition(conditions, condition(DATA_RESTORED, true, "Restored", message, now));
        }
        RestoreStep::RunChainCheck { job_name } | RestoreStep::WaitForChainCheck { job_name } => {
            status.chain_check_job = Some(job_name.clone());
            let message = format!("Job {job_name} checks the referral chains");
            set_condition(conditions, condition(CHAINS_CHECKED, false, "Checking", message, now));
        }
        RestoreStep::ScaleWorkersBack | RestoreStep::Done { phase: RestorePhase::Succeeded, .. } => {
            status.chain_check = facts.chain_check.clone().or(status.chain_check.take());
            let summary = status.chain_check.clone().unwrap_or_default();
            let checked = match facts.chain_check_job {
                JobPhase::Failed(_) => condition(CHAINS_CHECKED, false, "CheckFailed", summary, now),
                _ => condition(CHAINS_CHECKED, true, "Checked", summary, now),
            };
            set_condition(conditions, checked);
            set_condition(
                conditions,
                if matches!(step, RestoreStep::ScaleWorkersBack) {
                    condition(WORKERS_RESTORED, false, "ScalingUp", step_message(step, facts), now)
                } else {
                    condition(
                        WORKERS_RESTORED,
                        true,
                        "Restored",
                        "the workers and CronJobs follow the spec again".into(),
                        now,
                    )
                },
            );
        }
        RestoreStep::Done { hold, message, .. } => {
            if let JobPhase::Failed(why) = facts.restore_job {
                let job = status.restore_job.clone().unwrap_or_default();
                set_condition(
                    conditions,
                    condition(DATA_RESTORED, false, "RestoreJobFailed", format!("Job {job} failed: {why}"), now),
                );
            }
            let (reason, text) = if *hold {
                ("HeldAfterFailure", "workers stay at zero until this ReferralRestore is deleted".to_string())
            } else {
                ("SystemGone", message.clone())
            };
            set_condition(conditions, condition(WORKERS_RESTORED, false, reason, text, now));
        }
    }
    status
}

/// The status fields with explicit nulls, so a merge patch removes what is gone.
pub fn status_patch(status: &ReferralRestoreStatus) -> Value {
    json!({
        "status": {
            "phase": status.phase,
            "message": status.message,
            "conditions": status.conditions,
            "holdsSystem": status.holds_system,
            "restoreJob": status.restore_job,
            "chainCheckJob": status.chain_check_job,
            "chainCheck": status.chain_check,
            "announcedPhase": status.announced_phase,
            "startedAt": status.started_at,
            "completedAt": status.completed_at,
        }
    })
}

/// What the chain check found, for the restore's status: the system's own
/// `status.chainCheck` summary when the check Job wrote it after it started.
pub fn chain_check_result(
    phase: &JobPhase,
    job: Option<&Job>,
    system_status: Option<&ReferralSystemStatus>,
) -> Option<String> {
    let started = job.and_then(|j| j.metadata.creation_timestamp.as_ref()).map(|t| t.0);
    let written = system_status
        .and_then(|s| s.chain_check.as_ref())
        .filter(|c| matches!((c.last_run.as_ref(), started), (Some(run), Some(start)) if run.0 >= start))
        .and_then(|c| c.summary.clone());
    match phase {
        JobPhase::Succeeded => Some(written.unwrap_or_else(|| "the chain-check Job succeeded".into())),
        JobPhase::Failed(why) => Some(match written {
            Some(summary) => format!("{summary} (the chain-check Job failed: {why})"),
            None => format!("the chain-check Job failed: {why}"),
        }),
        JobPhase::Absent | JobPhase::Running => None,
    }
}

/// The result of ensuring the indexes, as the restore records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexesResult {
    pub in_place: bool,
    pub message: String,
}

impl IndexesResult {
    pub fn condition(&self, now: &Time) -> Condition {
        if self.in_place {
            condition(INDEXES_ENSURED, true, "Ensured", self.message.clone(), now)
        } else {
            condition(INDEXES_ENSURED, false, REASON_INDEXES_NOT_ENSURED, self.message.clone(), now)
        }
    }
}

/// `IndexesEnsured=Unknown` while the indexes cannot be ensured yet, with why.
pub fn retrying_indexes(why: &str, now: &Time) -> Condition {
    let message: String = format!("could not ensure the indexes yet, retrying: {why}").chars().take(1000).collect();
    conditions::unknown(INDEXES_ENSURED, "Retrying", message, None, now)
}

/// What a restore records of an index sync: in place or not, and, when not, which
/// indexes and why (the summary alone would not say what to fix).
pub fn indexes_result(report: &IndexReport) -> IndexesResult {
    let created = report.counts().created;
    if report.all_in_place() {
        return IndexesResult {
            in_place: true,
            message: format!("indexes {} in place ({created} created)", report.summary()),
        };
    }
    let problems: Vec<String> = report
        .indexes
        .iter()
        .filter(|i| !matches!(i.state, IndexState::Present | IndexState::Created))
        .map(|i| match &i.message {
            Some(why) => format!("{}.{} {:?}: {why}", i.collection, i.name, i.state),
            None => format!("{}.{} {:?}", i.collection, i.name, i.state),
        })
        .collect();
    IndexesResult {
        in_place: false,
        message: format!("indexes {}: {}", report.summary(), problems.join("; ")).chars().take(1000).collect(),
    }
}

#[cfg(test)]
#[path = "restore_step_tests.rs"]
mod tests;
