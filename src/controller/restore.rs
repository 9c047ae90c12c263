//! The restore controller: a kube-runtime Controller over ReferralRestores that drives
//! each one through the pure state machine [`next_restore_step`].
//!
//! Each reconcile observes (the named ReferralSystem, the other restores of that
//! system, its running Jobs, its worker Deployments, Pods and CronJobs, and the
//! restore's own Jobs by name), asks the state machine for one step, records that step
//! in the ReferralRestore's status, and only then acts (creates a Job, ensures the
//! indexes). Nothing lives in memory between reconciles, so an operator that restarts
//! midway observes the same things, gets the same step and finds the Jobs it created.
//!
//! The hold itself (workers at zero, CronJobs suspended) is not applied here: the
//! system's own reconcile asks [`restore_holding`], which reads `holdsSystem` from the
//! restores' status, and applies `hold_for_restore` to what it builds. One writer per
//! Deployment, and the hold survives a restart because it is recorded, not remembered.
//!
//! What this module must not do: delete anything (it creates Jobs, never deletes
//! them; the data is changed only by the restore Job a person asked for); write a
//! secret value into status, events or logs (the MongoDB URI is read from its Secret
//! only to ensure the indexes and stays in memory); act on a step before recording it.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::checks::index_sync::{IndexReport, sync_indexes};
use crate::crd::mongodb::IndexPolicy;
use crate::crd::restore::{ReferralRestore, ReferralRestoreStatus, RestorePhase};
use crate::crd::status::{IndexState, ReferralSystemStatus, UpgradePhase};
use crate::crd::validate::{ValidatedSystem, validate};
use crate::crd::{GROUP, ReferralSystem, VERSION};
use crate::reconcilers::job::{LABEL_PURPOSE, job_from_cron_job};
use crate::reconcilers::meta::{APP_NAME, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_NAME, MANAGER, selector_labels};
use crate::reconcilers::restore::{
    IndexOutcome, JobPhase, RestoreObservation, RestoreStep, next_restore_step, restore_job, restore_job_name,
    verify_job_name,
};
use crate::reconcilers::{BuildContext, Children, build, chain_check};

use super::context::Context;
use super::error::Error;
use super::reconcile::STATUS_MANAGER;

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

/// `referral.dev/purpose` of the restore Job (set by the builder) and of the chain
/// check run after it.
pub const PURPOSE_RESTORE: &str = "restore";
pub const PURPOSE_RESTORE_CHECK: &str = "restore-check";

/// How soon to look again while a step is under way (workers stopping, a Job
/// running). The Job watch usually wakes the reconcile sooner.
const ACTIVE_REQUEUE: Duration = Duration::from_secs(3);
/// How soon a restore that waits for something else looks again.
const PENDING_REQUEUE: Duration = Duration::from_secs(10);
/// How soon a restore whose system became invalid midway looks again.
const INVALID_SYSTEM_REQUEUE: Duration = Duration::from_secs(30);

/// What went wrong in one reconcile of a ReferralRestore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("reading ReferralSystem {system}: {source}")]
    ReadSystem { system: String, source: kube::Error },
    #[error("listing the ReferralRestores of namespace {namespace}: {source}")]
    ListRestores { namespace: String, source: kube::Error },
    #[error("listing the Jobs of ReferralSystem {system}: {source}")]
    ListJobs { system: String, source: kube::Error },
    #[error("listing the worker Pods of ReferralSystem {system}: {source}")]
    ListPods { system: String, source: kube::Error },
    #[error("reading {kind} {name}: {source}")]
    Read { kind: &'static str, name: String, source: kube::Error },
    #[error("creating Job {name}: {source}")]
    CreateJob { name: String, source: kube::Error },
    #[error("the chain-check CronJob {name} has no Job template to run the check after the restore")]
    NoChainCheckTemplate { name: String },
    #[error("reading Secret {name} for the MongoDB URI: {source}")]
    ReadSecret { name: String, source: kube::Error },
    #[error("Secret {secret} has no key {key} with the MongoDB URI")]
    MissingMongoUri { secret: String, key: String },
    #[error("writing the status of ReferralRestore {restore}: {source}")]
    WriteStatus { restore: String, source: kube::Error },
    #[error("ReferralRestore {restore} changed since it was read; reading it again")]
    Stale { restore: String },
    #[error("ensuring the indexes of ReferralSystem {system} after the restore: {reason}")]
    EnsureIndexes { system: String, reason: String },
    #[error("the ReferralRestore {name} has no namespace")]
    NoNamespace { name: String },
    #[error("the ReferralRestore {name} has no uid")]
    NoUid { name: String },
}

impl RestoreError {
    /// A fixed, small set of labels for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReadSystem { .. }
            | Self::ListRestores { .. }
            | Self::ListJobs { .. }
            | Self::ListPods { .. }
            | Self::Read { .. }
            | Self::CreateJob { .. } => "kubernetes_api",
            Self::ReadSecret { .. } | Self::MissingMongoUri { .. } => "missing_secret",
            Self::WriteStatus { .. } => "status_write",
            Self::Stale { .. } => "conflict",
            Self::EnsureIndexes { .. } => "mongodb",
            Self::NoChainCheckTemplate { .. } | Self::NoNamespace { .. } | Self::NoUid { .. } => "invalid_spec",
        }
    }
}

// ---------------------------------------------------------------------------------
// Which restore waits for which, and which one holds the system (pure).

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

/// The ReferralRestores of `system` in `namespace`. Objects that do not decode are
/// skipped: they cannot have been started by this operator.
async fn restores_of(client: &Client, namespace: &str, system: &str) -> Result<Vec<RestoreEntry>, kube::Error> {
    let api = Api::<DeserializeGuard<ReferralRestore>>::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|r| r.spec.system_name == system)
        .map(RestoreEntry::of)
        .collect())
}

/// Whether a ReferralRestore holds `system` now: `Some(restore name)` when the
/// system's workers must stay at zero and its CronJobs suspended
/// (`reconcilers::restore::hold_for_restore`). The system's reconcile calls this
/// after `build` and passes `.is_some()` to the upgrade gate as `restore_in_progress`.
///
/// Read from the restores' recorded status, never from memory. When the
/// ReferralRestore API is absent (CRD not installed) or not granted
/// (`rbac.referralRestores: false`), no restore can exist or be run by this
/// operator, so nothing holds.
pub async fn restore_holding(ctx: &Context, system: &ValidatedSystem) -> Result<Option<String>, Error> {
    match restores_of(&ctx.client, &system.namespace, &system.name).await {
        Ok(entries) => Ok(holding_restore(&entries).map(str::to_string)),
        // Without the ReferralRestore CRD the API server answers a bare "404 page
        // not found" (no NotFound reason): any 404 means no restore can exist.
        Err(kube::Error::Api(status)) if status.code == 404 || status.is_forbidden() => {
            tracing::debug!(system = %system.name, reason = %status.reason, "ReferralRestores cannot be listed; none holds");
            Ok(None)
        }
        Err(source) => Err(Error::Read {
            kind: "ReferralRestore",
            name: format!("{}/* of {}", system.namespace, system.name),
            source,
        }),
    }
}

/// The system a ReferralRestore names, for the system controller's watch: a change
/// of a restore (its status above all) re-reconciles that system, which then applies
/// or lifts the hold.
pub fn system_of_restore(
    guard: DeserializeGuard<ReferralRestore>,
) -> Option<ObjectRef<PartialObjectMeta<ReferralSystem>>> {
    let restore = guard.0.ok()?;
    let reference = ObjectRef::new(&restore.spec.system_name);
    Some(match restore.namespace() {
        Some(namespace) => reference.within(&namespace),
        None => reference,
    })
}

/// The watch stream of ReferralRestores for [`system_of_restore`].
pub fn restore_triggers(
    client: &Client,
    namespace: &Option<String>,
) -> impl futures::Stream<Item = Result<DeserializeGuard<ReferralRestore>, watcher::Error>> + Send + 'static {
    let api: Api<DeserializeGuard<ReferralRestore>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    watcher(api, watcher::Config::default().any_semantic()).default_backoff().touched_objects()
}

// ---------------------------------------------------------------------------------
// What the workers and Jobs look like (pure).

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

/// An image change between its pre-upgrade backup and the end of its rollout.
pub fn upgrade_in_progress(status: Option<&ReferralSystemStatus>) -> bool {
    status.and_then(|s| s.upgrade.as_ref()).is_some_and(|u| {
        matches!(u.phase, UpgradePhase::BackingUp | UpgradePhase::Migrating | UpgradePhase::RollingOut)
    })
}

// ---------------------------------------------------------------------------------
// The status to record for a step (pure).

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

fn condition(type_: &str, ok: bool, reason: &str, message: String, now: &Time) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: None,
        last_transition_time: now.clone(),
    }
}

/// Sets one condition, keeping its `lastTransitionTime` when its status is the same.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
    conditions.sort_by_key(|c| CONDITION_ORDER.iter().position(|t| *t == c.type_).unwrap_or(CONDITION_ORDER.len()));
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
            "startedAt": status.started_at,
            "completedAt": status.completed_at,
        }
    })
}

/// Owner reference to the ReferralRestore for the Jobs it runs: deleting the
/// ReferralRestore removes them (and stops a restore Job still running), and one
/// restore's Jobs are told apart from another's. `blockOwnerDeletion` stays unset:
/// setting it would need update rights on `referralrestores/finalizers`, and
/// foreground deletion of a restore has nothing to wait for.
pub fn restore_owner(restore: &ReferralRestore) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "ReferralRestore".into(),
        name: restore.metadata.name.clone()?,
        uid: restore.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// `job` owned by the restore instead of the system.
pub fn owned_by_restore(mut job: Job, owner: OwnerReference) -> Job {
    job.metadata.owner_references = Some(vec![owner]);
    job
}

// ---------------------------------------------------------------------------------
// The controller (I/O).

fn now() -> Time {
    // Whole seconds, as the apiserver stores them: a finer value would make an
    // unchanged status look changed.
    let seconds = Timestamp::now().as_second();
    Time(Timestamp::from_second(seconds).unwrap_or_else(|_| Timestamp::now()))
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn backoff_key(namespace: &str, name: &str) -> String {
    format!("ReferralRestore {namespace}/{name}")
}

/// The ReferralSystem a restore names, as found.
enum SystemLookup {
    Missing,
    Invalid(String),
    Valid(Box<(ValidatedSystem, Option<ReferralSystemStatus>)>),
}

async fn lookup_system(ctx: &Context, namespace: &str, name: &str) -> Result<SystemLookup, RestoreError> {
    let api = Api::<DeserializeGuard<ReferralSystem>>::namespaced(ctx.client.clone(), namespace);
    let found =
        api.get_opt(name).await.map_err(|source| RestoreError::ReadSystem { system: name.to_string(), source })?;
    Ok(match found {
        None => SystemLookup::Missing,
        Some(DeserializeGuard(Err(invalid))) => {
            SystemLookup::Invalid(format!("it cannot be decoded: {}", invalid.error))
        }
        Some(DeserializeGuard(Ok(system))) => match validate(&system, namespace) {
            Ok(valid) => SystemLookup::Valid(Box::new((valid, system.status.clone()))),
            Err(problems) => {
                SystemLookup::Invalid(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
            }
        },
    })
}

/// Everything the state machine and the status need about a valid system.
struct SystemState {
    built: Children,
    deployments: Vec<Option<Deployment>>,
    cron_jobs: Vec<Option<CronJob>>,
    running_pods: usize,
    backup_running: Option<String>,
    other_jobs: Vec<String>,
    restore_job: Option<Job>,
    check_job: Option<Job>,
}

async fn observe_system(
    ctx: &Context,
    system: &ValidatedSystem,
    own_jobs: [&str; 2],
) -> Result<SystemState, RestoreError> {
    let ns = &system.namespace;
    let build_ctx = BuildContext {
        operator_image: ctx.settings.operator_image.clone(),
        secrets_hash: None,
        operator_pods: ctx.settings.operator_pods.clone(),
    };
    let built = build(system, &build_ctx);
    let deployment_api = Api::<Deployment>::namespaced(ctx.client.clone(), ns);
    let mut deployments = Vec::new();
    for d in &built.deployments {
        let name = d.name_any();
        let live = deployment_api.get_opt(&name).await.map_err(|source| RestoreError::Read {
            kind: "Deployment",
            name,
            source,
        })?;
        deployments.push(live);
    }
    let cron_api = Api::<CronJob>::namespaced(ctx.client.clone(), ns);
    let mut cron_jobs = Vec::new();
    for c in &built.cron_jobs {
        let name = c.name_any();
        let live =
            cron_api.get_opt(&name).await.map_err(|source| RestoreError::Read { kind: "CronJob", name, source })?;
        cron_jobs.push(live);
    }
    let worker_selector = label_selector(&selector_labels(system, crate::reconcilers::workers::COMPONENT));
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&worker_selector))
        .await
        .map_err(|source| RestoreError::ListPods { system: system.name.clone(), source })?;
    // A pod that has ended runs nothing; one being deleted may still write.
    let running_pods = pods
        .items
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded") | Some("Failed"))
        })
        .count();
    let system_selector = format!("{LABEL_NAME}={APP_NAME},{LABEL_INSTANCE}={}", system.name);
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&system_selector))
        .await
        .map_err(|source| RestoreError::ListJobs { system: system.name.clone(), source })?;
    let mut backup_running = None;
    let mut other_jobs = Vec::new();
    for job in &jobs.items {
        let name = job.name_any();
        if own_jobs.contains(&name.as_str()) || JobPhase::of(Some(job)) != JobPhase::Running {
            continue;
        }
        let component = job.labels().get(LABEL_COMPONENT).map(String::as_str);
        if component == Some(crate::reconcilers::backup::COMPONENT) {
            backup_running.get_or_insert(name);
        } else {
            other_jobs.push(name);
        }
    }
    other_jobs.sort();
    let by_name = |name: &str| jobs.items.iter().find(|j| j.metadata.name.as_deref() == Some(name)).cloned();
    let [restore_job, check_job] = own_jobs.map(by_name);
    Ok(SystemState { built, deployments, cron_jobs, running_pods, backup_running, other_jobs, restore_job, check_job })
}

fn label_selector(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// What the chain check found, for the restore's status: the system's own
/// `status.chainCheck` summary when the check Job wrote it after it started.
fn chain_check_result(
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

/// Entry point for the kube-runtime Controller.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<ReferralRestore>>,
    ctx: Arc<Context>,
) -> Result<Action, RestoreError> {
    let _timer = ctx.metrics.reconcile_timer();
    let restore = match &guard.0 {
        Ok(restore) => restore,
        Err(invalid) => {
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidObject".into(),
                note: Some(truncate(&format!("cannot decode this ReferralRestore: {}", invalid.error), 1000)),
                action: "Decode".into(),
                secondary: None,
            };
            let _ = ctx.recorder.publish(&event, &guard.object_ref(&())).await;
            ctx.metrics.record_failure("invalid_spec");
            return Ok(Action::await_change());
        }
    };
    let result = reconcile_restore(restore, &ctx).await;
    if result.is_ok() {
        ctx.reset_backoff(&backoff_key(&restore.namespace().unwrap_or_default(), &restore.name_any()));
    }
    result
}

/// Requeue policy after an error: exponential backoff per restore.
pub fn error_policy(guard: Arc<DeserializeGuard<ReferralRestore>>, error: &RestoreError, ctx: Arc<Context>) -> Action {
    let key = backoff_key(&guard.namespace().unwrap_or_default(), &guard.name_any());
    ctx.metrics.record_failure(error.category());
    let wait = ctx.next_backoff(&key);
    tracing::warn!(restore = %key, category = error.category(), %error, retry_in = ?wait, "restore reconcile failed");
    Action::requeue(wait)
}

async fn reconcile_restore(restore: &ReferralRestore, ctx: &Context) -> Result<Action, RestoreError> {
    let name = restore.name_any();
    let namespace = restore.namespace().ok_or_else(|| RestoreError::NoNamespace { name: name.clone() })?;
    let uid = restore.uid().ok_or_else(|| RestoreError::NoUid { name: name.clone() })?;
    let old = restore.status.clone().unwrap_or_default();
    // A finished restore does nothing more while it exists.
    if old.phase.is_some_and(RestorePhase::is_terminal) {
        return Ok(Action::await_change());
    }
    let system_name = restore.spec.system_name.as_str();
    let started = old.phase.is_some_and(|p| p != RestorePhase::Pending);
    let (system, system_status) = match lookup_system(ctx, &namespace, system_name).await? {
        SystemLookup::Valid(found) => {
            let (system, status) = *found;
            (Some(system), status)
        }
        SystemLookup::Invalid(problems) if started => {
            // Failing the restore here would lift the hold while its Job may still
            // run; an invalid spec changes nothing in the cluster, so keep holding and
            // carry on once it is fixed.
            let status = ReferralRestoreStatus {
                message: Some(truncate(
                    &format!(
                        "ReferralSystem {system_name} is invalid ({problems}); the restore continues when it is fixed"
                    ),
                    1000,
                )),
                ..old.clone()
            };
            write_status(ctx, restore, &mut restore.resource_version(), &old, &status).await?;
            return Ok(Action::requeue(INVALID_SYSTEM_REQUEUE));
        }
        SystemLookup::Invalid(_) | SystemLookup::Missing => (None, None),
    };

    let entries = restores_of(&ctx.client, &namespace, system_name)
        .await
        .map_err(|source| RestoreError::ListRestores { namespace: namespace.clone(), source })?;
    let me = RestoreEntry::of(restore);
    let blocking = blocking_restore(&me, &entries).map(str::to_string);

    let state = match &system {
        Some(system) => {
            let (restore_job, check_job) = (restore_job_name(system, &uid), verify_job_name(system, &uid));
            Some(observe_system(ctx, system, [&restore_job, &check_job]).await?)
        }
        None => None,
    };
    let restore_phase = JobPhase::of(state.as_ref().and_then(|s| s.restore_job.as_ref()));
    let check_phase = JobPhase::of(state.as_ref().and_then(|s| s.check_job.as_ref()));
    let still = state
        .as_ref()
        .map(|s| still_running(&s.built, &s.deployments, &s.cron_jobs, s.running_pods, s.other_jobs.clone()))
        .unwrap_or_default();
    let restored = state.as_ref().is_some_and(|s| restored_as_built(&s.built, &s.deployments, &s.cron_jobs));
    let backup_running = state.as_ref().and_then(|s| s.backup_running.clone());
    let step = next_restore_step(&RestoreObservation {
        restore_uid: &uid,
        status: restore.status.as_ref(),
        system: system.as_ref(),
        earlier_restore: blocking.as_deref(),
        backup_running: backup_running.as_deref(),
        upgrade_in_progress: upgrade_in_progress(system_status.as_ref()),
        workers_stopped: still.is_empty(),
        restore_job: restore_phase.clone(),
        indexes: recorded_indexes(restore.status.as_ref()),
        chain_check_job: check_phase.clone(),
        workers_restored: restored,
    });
    let facts = StepFacts {
        system: system_name,
        backup: &restore.spec.backup_name,
        restore_job: &restore_phase,
        chain_check_job: &check_phase,
        still_running: &still,
        backup_running: backup_running.as_deref(),
        system_paused: system.as_ref().is_some_and(|s| s.spec.paused),
        chain_check: chain_check_result(
            &check_phase,
            state.as_ref().and_then(|s| s.check_job.as_ref()),
            system_status.as_ref(),
        ),
    };
    let mut status = next_status(&old, &step, &facts, &now());
    // Record first: if the operator stops after this, the next one reads the step
    // from status (and the hold from `holdsSystem`) and finds what it created. The
    // write is guarded by the resourceVersion read, so a step decided on a stale
    // copy (the watch a write behind) is refused before it acts twice.
    let mut version = restore.resource_version();
    write_status(ctx, restore, &mut version, &old, &status).await?;

    let owner = restore_owner(restore);
    Ok(match (&step, system.as_ref(), state.as_ref()) {
        (RestoreStep::Wait { .. }, _, _) => Action::requeue(PENDING_REQUEUE),
        (RestoreStep::Done { .. }, _, _) => Action::await_change(),
        (RestoreStep::CreateRestoreJob { job_name }, Some(system), _) => {
            let build_ctx = BuildContext {
                operator_image: ctx.settings.operator_image.clone(),
                secrets_hash: None,
                operator_pods: ctx.settings.operator_pods.clone(),
            };
            let job = restore_job(system, &build_ctx, &restore.spec.backup_name, job_name, restore.spec.redis);
            create_job(ctx, &namespace, with_owner(job, owner)).await?;
            Action::requeue(ACTIVE_REQUEUE)
        }
        (RestoreStep::RunChainCheck { job_name }, Some(system), Some(state)) => {
            let cron_name = chain_check::cron_job_name(system);
            let cron = state.built.cron_jobs.iter().find(|c| c.metadata.name.as_deref() == Some(cron_name.as_str()));
            let job = cron
                .and_then(|c| job_from_cron_job(c, job_name, PURPOSE_RESTORE_CHECK))
                .ok_or(RestoreError::NoChainCheckTemplate { name: cron_name })?;
            create_job(ctx, &namespace, with_owner(job, owner)).await?;
            Action::requeue(ACTIVE_REQUEUE)
        }
        (RestoreStep::EnsureIndexes, Some(system), _) => {
            let written = status.clone();
            match ensure_indexes(ctx, system).await {
                Ok(outcome) => {
                    set_condition(&mut status.conditions, outcome.condition(&now()));
                    write_status(ctx, restore, &mut version, &written, &status).await?;
                    Action::requeue(Duration::from_secs(1))
                }
                Err(error) => {
                    // Not a verdict on the indexes (MongoDB unreachable, Secret
                    // missing): say so and retry with backoff, still holding the
                    // system. In the condition, not `message`: the step rewrites its
                    // message each reconcile, and two writers of one field would
                    // wake each other without end.
                    set_condition(&mut status.conditions, retrying_indexes(&error, &now()));
                    write_status(ctx, restore, &mut version, &written, &status).await?;
                    return Err(error);
                }
            }
        }
        _ => Action::requeue(ACTIVE_REQUEUE),
    })
}

fn with_owner(job: Job, owner: Option<OwnerReference>) -> Job {
    match owner {
        Some(owner) => owned_by_restore(job, owner),
        None => job,
    }
}

/// Creates a Job under its deterministic name; one that exists already is the one an
/// earlier reconcile (or an operator before a restart) created.
async fn create_job(ctx: &Context, namespace: &str, job: Job) -> Result<(), RestoreError> {
    let name = job.name_any();
    let params = PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() };
    match Api::<Job>::namespaced(ctx.client.clone(), namespace).create(&params, &job).await {
        Ok(_) => {
            tracing::info!(job = %name, namespace, "created Job");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(source) => Err(RestoreError::CreateJob { name, source }),
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

/// `IndexesEnsured=Unknown` while the indexes cannot be ensured yet.
fn retrying_indexes(error: &RestoreError, now: &Time) -> Condition {
    let message = truncate(&format!("could not ensure the indexes yet, retrying: {error}"), 1000);
    Condition { status: "Unknown".into(), ..condition(INDEXES_ENSURED, false, "Retrying", message, now) }
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
        message: truncate(&format!("indexes {}: {}", report.summary(), problems.join("; ")), 1000),
    }
}

/// Ensures the declared indexes on the restored data, whatever `indexPolicy` says:
/// the restore replaced the collections, and the indexes are part of the data's
/// shape (the guide's restore procedure rebuilds them). A conflicting index is
/// reported, never dropped.
async fn ensure_indexes(ctx: &Context, system: &ValidatedSystem) -> Result<IndexesResult, RestoreError> {
    let failed = |reason: String| RestoreError::EnsureIndexes { system: system.name.clone(), reason };
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &system.namespace);
    let values = super::secrets::read(&secrets, &system.spec).await.map_err(|error| match error {
        Error::ReadSecret { name, source } => RestoreError::ReadSecret { name, source },
        other => failed(other.to_string()),
    })?;
    let reference = &system.spec.mongodb.uri_secret_ref;
    let uri = values
        .mongo_uri
        .ok_or_else(|| RestoreError::MissingMongoUri { secret: reference.name.clone(), key: reference.key.clone() })?;
    // The probe error is scrubbed of the URI; the sync errors never hold it.
    let client = ctx.mongo.client(&uri, ctx.settings.probe_timeout).await.map_err(|e| failed(e.to_string()))?;
    let mongo = &system.spec.mongodb;
    let report = sync_indexes(&client, &mongo.database, &mongo.indexes, IndexPolicy::Ensure)
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(indexes_result(&report))
}

/// Writes the restore's status when it changed, guarded by `version` (the
/// resourceVersion the step was decided on) and moved on to the written one, so a
/// second write of the same reconcile is guarded too. A refused write is `Stale`.
async fn write_status(
    ctx: &Context,
    restore: &ReferralRestore,
    version: &mut Option<String>,
    old: &ReferralRestoreStatus,
    status: &ReferralRestoreStatus,
) -> Result<(), RestoreError> {
    if old == status {
        return Ok(());
    }
    let name = restore.name_any();
    let namespace = restore.namespace().unwrap_or_default();
    let api = Api::<ReferralRestore>::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams { field_manager: Some(STATUS_MANAGER.into()), ..PatchParams::default() };
    let mut patch = status_patch(status);
    if let Some(version) = version.as_deref() {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    let written = api.patch_status(&name, &params, &Patch::Merge(patch)).await.map_err(|source| match source {
        kube::Error::Api(ref response) if response.code == 409 => RestoreError::Stale { restore: name.clone() },
        source => RestoreError::WriteStatus { restore: name.clone(), source },
    })?;
    *version = written.resource_version();
    if old.phase != status.phase
        && let Some(phase) = status.phase
    {
        tracing::info!(restore = %name, namespace = %namespace, ?phase, "restore step");
        let (type_, reason) = match phase {
            RestorePhase::Failed => (EventType::Warning, "RestoreFailed".to_string()),
            RestorePhase::Succeeded => (EventType::Normal, "Restored".to_string()),
            other => (EventType::Normal, format!("{other:?}")),
        };
        let event = Event {
            type_,
            reason,
            note: status.message.as_deref().map(|m| truncate(m, 1000)),
            action: "Restore".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &restore.object_ref(&())).await {
            tracing::warn!(%error, restore = %name, "could not publish an event");
        }
    }
    Ok(())
}

/// One Controller over the ReferralRestores of one namespace (or all), sharing `ctx`
/// with the system controller. Its Jobs (restore, chain check) wake it when they end.
pub async fn controller(client: Client, namespace: Option<String>, ctx: Arc<Context>) {
    let restores: Api<DeserializeGuard<ReferralRestore>> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let jobs: Api<PartialObjectMeta<Job>> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    // Managed fields are dropped before caching; nothing reads them.
    let stream = watcher(restores, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|guard: &mut DeserializeGuard<ReferralRestore>| {
            guard.meta_mut().managed_fields = None;
        })
        .reflect(writer)
        .touched_objects();
    let purposes = format!("{LABEL_PURPOSE} in ({PURPOSE_RESTORE},{PURPOSE_RESTORE_CHECK})");
    let job_stream = watcher(jobs, watcher::Config::default().labels(&purposes))
        .default_backoff()
        .modify(|job: &mut PartialObjectMeta<Job>| {
            job.meta_mut().managed_fields = None;
        })
        .touched_objects();
    Controller::for_stream(stream, reader)
        .owns_stream(job_stream)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(restore = %object.name, "reconciled restore"),
                Err(error) => tracing::debug!(%error, "restore reconcile error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn entry(name: &str, created: i64, phase: Option<RestorePhase>, holds: bool) -> RestoreEntry {
        RestoreEntry { name: name.into(), created: Some(at(created).0), phase, holds_system: holds }
    }

    #[test]
    fn a_restore_waits_for_earlier_unfinished_ones_and_for_any_started_one() {
        use RestorePhase::*;
        let me = entry("b", 20, None, false);
        assert_eq!(blocking_restore(&me, std::slice::from_ref(&me)), None, "itself never blocks");
        let earlier = entry("a", 10, Some(Pending), false);
        assert_eq!(blocking_restore(&me, &[earlier.clone(), me.clone()]), Some("a"));
        // Created later: it waits for me, not the other way round.
        let later = entry("c", 30, Some(Pending), false);
        assert_eq!(blocking_restore(&me, &[later.clone(), me.clone()]), None);
        // Started, even if created later (clock ties, re-created objects): wait.
        let running = entry("c", 30, Some(Restoring), true);
        assert_eq!(blocking_restore(&me, &[running, me.clone()]), Some("c"));
        // Finished ones, failed included, never block: a new restore is the way on.
        let failed = entry("a", 10, Some(Failed), true);
        let done = entry("z", 5, Some(Succeeded), false);
        assert_eq!(blocking_restore(&me, &[failed, done, me.clone()]), None);
        // Same second: the name decides, the same way for both.
        let twin = entry("a", 20, None, false);
        assert_eq!(blocking_restore(&me, &[twin.clone(), me.clone()]), Some("a"));
        assert_eq!(blocking_restore(&twin, &[twin.clone(), me.clone()]), None);
        // The first of several earlier ones is named.
        let first = entry("x", 1, None, false);
        assert_eq!(blocking_restore(&me, &[earlier, first, me.clone()]), Some("x"));
    }

    #[test]
    fn the_latest_started_restore_decides_whether_the_system_is_held() {
        use RestorePhase::*;
        assert_eq!(holding_restore(&[]), None);
        assert_eq!(holding_restore(&[entry("a", 10, Some(Pending), false)]), None);
        assert_eq!(holding_restore(&[entry("a", 10, Some(Restoring), true)]), Some("a"));
        assert_eq!(holding_restore(&[entry("a", 10, Some(ScalingUp), false)]), None);
        // A failed restore holds until it is deleted ...
        let failed = entry("a", 10, Some(Failed), true);
        assert_eq!(holding_restore(std::slice::from_ref(&failed)), Some("a"));
        // ... or a newer one starts: that one holds while it runs ...
        let newer = entry("b", 20, Some(ScalingDown), true);
        assert_eq!(holding_restore(&[failed.clone(), newer]), Some("b"));
        // ... and releases the system when it succeeds.
        let succeeded = entry("b", 20, Some(Succeeded), false);
        assert_eq!(holding_restore(&[succeeded.clone(), failed.clone()]), None);
        // A newer restore that has not started changes nothing.
        let waiting = entry("c", 30, Some(Pending), false);
        assert_eq!(holding_restore(&[failed, waiting.clone()]), Some("a"));
        assert_eq!(holding_restore(&[succeeded, waiting]), None);
    }

    fn deployment(replicas: Option<i32>, generation: i64, observed: i64) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "main-reward-processor", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed}
        }))
        .unwrap()
    }

    #[test]
    fn scaled_as_built_needs_the_built_replicas_seen_by_the_deployment_controller() {
        let built = deployment(Some(2), 0, 0);
        assert!(scaled_as_built(&built, Some(&deployment(Some(2), 3, 3))));
        assert!(!scaled_as_built(&built, Some(&deployment(Some(2), 4, 3))), "not yet observed");
        assert!(!scaled_as_built(&built, Some(&deployment(Some(0), 3, 3))));
        assert!(!scaled_as_built(&built, None));
        // Autoscaled: the builder leaves replicas out; anything but zero is back.
        let autoscaled = deployment(None, 0, 0);
        assert!(scaled_as_built(&autoscaled, Some(&deployment(Some(5), 2, 2))));
        assert!(scaled_as_built(&autoscaled, Some(&deployment(None, 2, 2))));
        assert!(!scaled_as_built(&autoscaled, Some(&deployment(Some(0), 2, 2))));
    }

    fn cron(name: &str, suspend: Option<bool>) -> CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"schedule": "0 1 * * *", "suspend": suspend, "jobTemplate": {}}
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_is_stopped_only_once_its_controller_has_scaled_it_down() {
        assert!(scaled_to_zero(&deployment(Some(0), 2, 2)));
        assert!(!scaled_to_zero(&deployment(Some(1), 2, 2)));
        // Spec at zero but not yet seen: the ReplicaSet may still create a pod.
        assert!(!scaled_to_zero(&deployment(Some(0), 3, 2)));
        // Seen, but a replica is still counted.
        let mut counting = deployment(Some(0), 2, 2);
        counting.status.as_mut().unwrap().replicas = Some(1);
        assert!(!scaled_to_zero(&counting));
        let built = Children { deployments: vec![deployment(Some(2), 0, 0)], ..Children::default() };
        assert_eq!(still_running(&built, &[Some(counting)], &[], 0, vec![]).deployments, ["main-reward-processor"]);
    }

    #[test]
    fn still_running_names_what_the_restore_waits_for() {
        let built = Children {
            deployments: vec![deployment(Some(2), 0, 0)],
            cron_jobs: vec![cron("main-backup", Some(false)), cron("main-chain-check", Some(false))],
            ..Children::default()
        };
        let held_crons = [Some(cron("main-backup", Some(true))), Some(cron("main-chain-check", Some(true)))];
        let stopped = still_running(&built, &[Some(deployment(Some(0), 2, 2))], &held_crons, 0, vec![]);
        assert!(stopped.is_empty(), "{stopped:?}");
        // A Deployment or CronJob that does not exist runs nothing.
        assert!(still_running(&built, &[None], &[None, None], 0, vec![]).is_empty());

        let running = still_running(
            &built,
            &[Some(deployment(Some(2), 1, 1))],
            &[Some(cron("main-backup", Some(true))), Some(cron("main-chain-check", None))],
            3,
            vec!["main-maintenance-1".into()],
        );
        assert_eq!(running.deployments, ["main-reward-processor"]);
        assert_eq!(running.cron_jobs, ["main-chain-check"]);
        let text = running.describe();
        for part in ["main-reward-processor", "3 worker pod(s)", "main-chain-check", "main-maintenance-1"] {
            assert!(text.contains(part), "{text}");
        }
        // Pods alone keep it waiting: a spec of zero is not enough.
        assert!(!still_running(&built, &[Some(deployment(Some(0), 2, 2))], &held_crons, 1, vec![]).is_empty());

        // Restored: Deployments at the built replicas and CronJobs as built.
        let back = [Some(cron("main-backup", Some(false))), Some(cron("main-chain-check", None))];
        assert!(restored_as_built(&built, &[Some(deployment(Some(2), 3, 3))], &back));
        assert!(!restored_as_built(&built, &[Some(deployment(Some(2), 3, 3))], &held_crons));
        assert!(!restored_as_built(&built, &[Some(deployment(Some(0), 3, 3))], &back));
        assert!(!restored_as_built(&built, &[Some(deployment(Some(2), 3, 3))], &[None, None]));
    }

    #[test]
    fn the_index_outcome_is_read_back_from_the_recorded_condition() {
        let mut status = ReferralRestoreStatus::default();
        assert_eq!(recorded_indexes(None), IndexOutcome::NotYet);
        assert_eq!(recorded_indexes(Some(&status)), IndexOutcome::NotYet);
        let ok = IndexesResult { in_place: true, message: "6/6".into() };
        set_condition(&mut status.conditions, ok.condition(&at(1)));
        assert_eq!(recorded_indexes(Some(&status)), IndexOutcome::Ensured);
        let bad = IndexesResult { in_place: false, message: "5/6 (1 conflict)".into() };
        set_condition(&mut status.conditions, bad.condition(&at(2)));
        assert_eq!(recorded_indexes(Some(&status)), IndexOutcome::Failed("5/6 (1 conflict)".into()));
        // Retrying (MongoDB unreachable) is not a verdict, nor is any other False.
        let unreachable = RestoreError::EnsureIndexes { system: "main".into(), reason: "unreachable".into() };
        set_condition(&mut status.conditions, retrying_indexes(&unreachable, &at(3)));
        assert_eq!(status.conditions[0].status, "Unknown");
        assert_eq!(recorded_indexes(Some(&status)), IndexOutcome::NotYet);
        status.conditions[0].status = "False".into();
        assert_eq!(recorded_indexes(Some(&status)), IndexOutcome::NotYet);
    }

    #[test]
    fn an_index_sync_is_recorded_with_what_was_created_or_what_is_wrong() {
        use crate::checks::index_sync::IndexResult;
        let index = |name: &str, state: IndexState, message: Option<&str>| IndexResult {
            collection: "users".into(),
            name: name.into(),
            state,
            message: message.map(Into::into),
            existing_name: None,
        };
        let mut report = IndexReport {
            database: "neurolov".into(),
            policy: IndexPolicy::Ensure,
            indexes: vec![
                index("referralCode_1", IndexState::Created, None),
                index("createdAt_-1", IndexState::Present, None),
            ],
            unmanaged: vec![],
            writes: 1,
        };
        let ok = indexes_result(&report);
        assert!(ok.in_place);
        assert_eq!(ok.message, "indexes 2/2 in place (1 created)");
        assert_eq!(ok.condition(&at(1)).reason, "Ensured");

        report.indexes.push(index("referredBy_1", IndexState::Conflict, Some("exists with unique: false")));
        report.indexes.push(index("code_1", IndexState::Missing, None));
        let bad = indexes_result(&report);
        assert!(!bad.in_place);
        assert!(bad.message.starts_with("indexes 2/4"), "{}", bad.message);
        assert!(bad.message.contains("users.referredBy_1 Conflict: exists with unique: false"), "{}", bad.message);
        assert!(bad.message.contains("users.code_1 Missing"), "{}", bad.message);
        assert!(!bad.message.contains("referralCode_1"), "only what is wrong is named: {}", bad.message);
        let condition = bad.condition(&at(1));
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", REASON_INDEXES_NOT_ENSURED));
    }

    #[test]
    fn only_an_image_change_between_backup_and_rollout_blocks_a_restore() {
        let with = |phase: UpgradePhase| -> ReferralSystemStatus {
            serde_json::from_value(json!({"upgrade": {"phase": phase, "target": "abc"}})).unwrap()
        };
        assert!(!upgrade_in_progress(None));
        assert!(!upgrade_in_progress(Some(&ReferralSystemStatus::default())));
        for phase in [UpgradePhase::BackingUp, UpgradePhase::Migrating, UpgradePhase::RollingOut] {
            assert!(upgrade_in_progress(Some(&with(phase))), "{phase:?}");
        }
        for phase in [UpgradePhase::Succeeded, UpgradePhase::Failed, UpgradePhase::RolledBack] {
            assert!(!upgrade_in_progress(Some(&with(phase))), "{phase:?}");
        }
    }

    fn facts<'a>(restore_job: &'a JobPhase, check: &'a JobPhase, still: &'a StillRunning) -> StepFacts<'a> {
        StepFacts {
            system: "main",
            backup: "20261123T010000Z",
            restore_job,
            chain_check_job: check,
            still_running: still,
            backup_running: None,
            system_paused: false,
            chain_check: None,
        }
    }

    fn types(status: &ReferralRestoreStatus) -> Vec<(&str, &str)> {
        status.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect()
    }

    #[test]
    fn each_step_is_recorded_with_its_condition_and_the_hold() {
        let absent = JobPhase::Absent;
        let still = StillRunning { pods: 2, ..StillRunning::default() };
        let nothing = StillRunning::default();
        let old = ReferralRestoreStatus::default();

        let waiting = RestoreStep::Wait { reason: "AnotherRestoreRunning", message: "waiting for a".into() };
        let pending = next_status(&old, &waiting, &facts(&absent, &absent, &nothing), &at(10));
        assert_eq!(pending.phase, Some(RestorePhase::Pending));
        assert!(!pending.holds_system && pending.started_at.is_none() && pending.conditions.is_empty());
        assert_eq!(pending.message.as_deref(), Some("waiting for a"));

        let down = next_status(&pending, &RestoreStep::WaitForWorkersToStop, &facts(&absent, &absent, &still), &at(20));
        assert_eq!(down.phase, Some(RestorePhase::ScalingDown));
        assert!(down.holds_system);
        assert_eq!(down.started_at, Some(at(20)));
        assert_eq!(types(&down), [(WORKERS_STOPPED, "False")]);
        assert!(down.message.as_deref().unwrap().contains("2 worker pod(s)"), "{:?}", down.message);

        let job = RestoreStep::CreateRestoreJob { job_name: "main-restore-1".into() };
        let restoring = next_status(&down, &job, &facts(&absent, &absent, &nothing), &at(30));
        assert_eq!(restoring.restore_job.as_deref(), Some("main-restore-1"), "named before it is created");
        assert_eq!(types(&restoring), [(WORKERS_STOPPED, "True"), (DATA_RESTORED, "False")]);
        assert_eq!(restoring.started_at, Some(at(20)), "kept");
        // Nothing new observed: nothing to write.
        let wait_job = RestoreStep::WaitForRestoreJob { job_name: "main-restore-1".into() };
        let running = JobPhase::Running;
        let same = next_status(&restoring, &wait_job, &facts(&running, &absent, &nothing), &at(40));
        assert_eq!(same, restoring, "a repeated step changes nothing, timestamps included");

        let succeeded = JobPhase::Succeeded;
        let indexes = next_status(&same, &RestoreStep::EnsureIndexes, &facts(&succeeded, &absent, &nothing), &at(50));
        assert_eq!(indexes.phase, Some(RestorePhase::EnsuringIndexes));
        assert_eq!(types(&indexes)[1], (DATA_RESTORED, "True"));
        let mut indexes = indexes;
        set_condition(
            &mut indexes.conditions,
            IndexesResult { in_place: true, message: "6/6".into() }.condition(&at(55)),
        );

        let check = RestoreStep::RunChainCheck { job_name: "main-restore-check-1".into() };
        let checking = next_status(&indexes, &check, &facts(&succeeded, &absent, &nothing), &at(60));
        assert_eq!(checking.chain_check_job.as_deref(), Some("main-restore-check-1"));
        assert!(checking.holds_system);

        let mut up_facts = facts(&succeeded, &succeeded, &nothing);
        up_facts.chain_check = Some("OK".into());
        let up = next_status(&checking, &RestoreStep::ScaleWorkersBack, &up_facts, &at(70));
        assert_eq!(up.phase, Some(RestorePhase::ScalingUp));
        assert!(!up.holds_system, "scaling back is lifting the hold");
        assert_eq!(up.chain_check.as_deref(), Some("OK"));

        let done = RestoreStep::Done { phase: RestorePhase::Succeeded, message: "restored".into(), hold: false };
        let finished = next_status(&up, &done, &facts(&succeeded, &succeeded, &nothing), &at(80));
        assert_eq!(finished.phase, Some(RestorePhase::Succeeded));
        assert_eq!(finished.completed_at, Some(at(80)));
        assert_eq!(finished.chain_check.as_deref(), Some("OK"), "kept when no longer observed");
        assert_eq!(
            types(&finished),
            [
                (WORKERS_STOPPED, "True"),
                (DATA_RESTORED, "True"),
                (INDEXES_ENSURED, "True"),
                (CHAINS_CHECKED, "True"),
                (WORKERS_RESTORED, "True")
            ]
        );
        let stopped = finished.conditions.iter().find(|c| c.type_ == WORKERS_STOPPED).unwrap();
        assert_eq!(stopped.last_transition_time, at(30), "moves only when the status changes");
    }

    #[test]
    fn a_failed_restore_job_is_recorded_as_held() {
        let failed = JobPhase::Failed("BackoffLimitExceeded".into());
        let absent = JobPhase::Absent;
        let nothing = StillRunning::default();
        let old = ReferralRestoreStatus {
            phase: Some(RestorePhase::Restoring),
            restore_job: Some("main-restore-1".into()),
            holds_system: true,
            ..ReferralRestoreStatus::default()
        };
        let step = RestoreStep::Done { phase: RestorePhase::Failed, message: "restore Job failed".into(), hold: true };
        let status = next_status(&old, &step, &facts(&failed, &absent, &nothing), &at(10));
        assert_eq!(status.phase, Some(RestorePhase::Failed));
        assert!(status.holds_system);
        let data = status.conditions.iter().find(|c| c.type_ == DATA_RESTORED).unwrap();
        assert_eq!((data.status.as_str(), data.reason.as_str()), ("False", "RestoreJobFailed"));
        assert!(data.message.contains("main-restore-1") && data.message.contains("BackoffLimitExceeded"));
        let workers = status.conditions.iter().find(|c| c.type_ == WORKERS_RESTORED).unwrap();
        assert_eq!(workers.reason, "HeldAfterFailure");
    }

    #[test]
    fn a_paused_system_is_named_as_the_reason_workers_do_not_stop() {
        let absent = JobPhase::Absent;
        let nothing = StillRunning { deployments: vec!["main-api".into()], ..StillRunning::default() };
        let mut f = facts(&absent, &absent, &nothing);
        f.system_paused = true;
        f.backup_running = Some("main-backup-29000000");
        let status = next_status(&ReferralRestoreStatus::default(), &RestoreStep::WaitForWorkersToStop, &f, &at(1));
        let message = status.message.unwrap();
        assert!(message.contains("is paused") && message.contains("spec.paused"), "{message}");
        assert!(message.contains("main-api") && message.contains("backup Job main-backup-29000000"), "{message}");
    }

    #[test]
    fn the_status_patch_clears_what_is_gone() {
        let status = ReferralRestoreStatus { phase: Some(RestorePhase::ScalingUp), ..ReferralRestoreStatus::default() };
        let patch = status_patch(&status);
        assert_eq!(patch["status"]["phase"], "ScalingUp");
        assert_eq!(patch["status"]["holdsSystem"], false, "written even when false, so a hold is lifted");
        for key in ["message", "restoreJob", "chainCheckJob", "chainCheck", "startedAt", "completedAt"] {
            assert!(patch["status"][key].is_null(), "{key}");
            assert!(patch["status"].as_object().unwrap().contains_key(key), "{key} is sent as null");
        }
        // Every field of the status is in the patch: a new field cannot be forgotten.
        let full = ReferralRestoreStatus {
            phase: Some(RestorePhase::Restoring),
            message: Some("m".into()),
            conditions: vec![condition(DATA_RESTORED, false, "Restoring", "m".into(), &at(1))],
            holds_system: true,
            restore_job: Some("j".into()),
            chain_check_job: Some("c".into()),
            chain_check: Some("OK".into()),
            started_at: Some(at(1)),
            completed_at: Some(at(2)),
        };
        let sent: ReferralRestoreStatus = serde_json::from_value(status_patch(&full)["status"].clone()).unwrap();
        assert_eq!(sent, full);
        let keys = status_patch(&full)["status"].as_object().unwrap().len();
        assert_eq!(keys, serde_json::to_value(&full).unwrap().as_object().unwrap().len());
    }

    #[test]
    fn jobs_are_owned_by_the_restore_without_blocking_its_deletion() {
        let restore: ReferralRestore = serde_json::from_value(json!({
            "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralRestore",
            "metadata": {"name": "r1", "namespace": "referrals", "uid": "u-1"},
            "spec": {"systemName": "main", "backupName": "20261123T010000Z"}
        }))
        .unwrap();
        let owner = restore_owner(&restore).unwrap();
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("ReferralRestore", "r1", "u-1"));
        assert_eq!(owner.api_version, "referral.dev/v1alpha1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, None);
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "ownerReferences": [{"apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem", "name": "main", "uid": "s-1", "controller": true}]}
        }))
        .unwrap();
        let owned = owned_by_restore(job, owner.clone());
        assert_eq!(owned.metadata.owner_references, Some(vec![owner]));
        let mut nameless = restore.clone();
        nameless.metadata.uid = None;
        assert!(restore_owner(&nameless).is_none());
    }

    #[test]
    fn the_chain_check_result_is_the_systems_summary_written_after_the_job_started() {
        let job: Job =
            serde_json::from_value(json!({"metadata": {"name": "c", "creationTimestamp": "2026-11-23T01:00:00Z"}}))
                .unwrap();
        let status = |last_run: &str, summary: &str| -> ReferralSystemStatus {
            serde_json::from_value(json!({"chainCheck": {
                "lastRun": last_run, "summary": summary, "users": 10, "cycles": 0, "tooDeep": 0,
                "orphans": 0, "selfReferrals": 0, "malformed": 0, "badReferralRecords": 0
            }}))
            .unwrap()
        };
        let fresh = status("2026-11-23T01:05:00Z", "OK");
        let stale = status("2026-11-22T03:00:00Z", "2 violations");
        assert_eq!(chain_check_result(&JobPhase::Succeeded, Some(&job), Some(&fresh)).as_deref(), Some("OK"));
        assert_eq!(
            chain_check_result(&JobPhase::Succeeded, Some(&job), Some(&stale)).as_deref(),
            Some("the chain-check Job succeeded"),
            "an older check's result is not this one's"
        );
        let failed = chain_check_result(&JobPhase::Failed("DeadlineExceeded".into()), Some(&job), None).unwrap();
        assert!(failed.contains("DeadlineExceeded"), "{failed}");
        assert_eq!(chain_check_result(&JobPhase::Running, Some(&job), Some(&fresh)), None);
    }
}
