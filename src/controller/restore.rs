//! The restore controller: a kube-runtime Controller over ReferralRestores that drives
//! each one through the pure state machine of [`crate::reconcilers::restore_step`]
//! ([`next_restore_step`]); this module is its thin driver, the I/O around it.
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

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::checks::index_sync::sync_indexes;
use crate::crd::ReferralSystem;
use crate::crd::mongodb::IndexPolicy;
use crate::crd::restore::{ReferralRestore, ReferralRestoreStatus, RestorePhase};
use crate::crd::status::ReferralSystemStatus;
use crate::crd::validate::{ValidatedSystem, validate};
use crate::reconcilers::job::{JobPhase, LABEL_PURPOSE, job_from_cron_job};
use crate::reconcilers::meta::{APP_NAME, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_NAME, MANAGER, selector_labels};
use crate::reconcilers::restore::{
    PURPOSE_RESTORE, PURPOSE_RESTORE_CHECK, owned_by_restore, restore_job_from, restore_job_name, restore_owner,
    verify_job_name,
};
use crate::reconcilers::restore_step::{
    IndexesResult, RestoreEntry, RestoreObservation, RestoreStep, StepFacts, WORKERS_STOPPED_FOR, blocking_restore,
    chain_check_result, holding_restore, indexes_result, next_restore_step, next_status, recorded_indexes,
    restored_as_built, retrying_indexes, set_condition, status_patch, still_running, upgrade_in_progress,
};
use crate::reconcilers::{BuildContext, Children, build, chain_check};

use super::context::Context;
use super::error::Error;
use super::reconcile::STATUS_MANAGER;

/// How soon to look again while a step is under way (workers stopping, a Job
/// running). The Job watch usually wakes the reconcile sooner.
const ACTIVE_REQUEUE: Duration = Duration::from_secs(3);
/// How soon to look again once the workers read as stopped: when the recorded
/// `WorkersStopped=True` is old enough to confirm them (its time keeps whole seconds,
/// so a second more). The status write of the first observation also wakes the
/// reconcile; that one writes nothing and sets this again.
const CONFIRM_REQUEUE: Duration = WORKERS_STOPPED_FOR.saturating_add(Duration::from_secs(1));
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
    #[error("reconciling ReferralRestore {name} panicked (an operator bug; the others go on): {message}")]
    Panicked { name: String, message: String },
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
            Self::Panicked { .. } => "panic",
        }
    }
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
    // The watch has listed every restore and none names this system: the list would
    // find none. A restore created since wakes this system through that same watch.
    if !ctx.restores.may_have(&system.namespace, &system.name) {
        return Ok(None);
    }
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

/// The watch stream of ReferralRestores for [`system_of_restore`]. It also keeps
/// `ctx.restores`, so a reconcile of a system no restore names lists none.
pub fn restore_triggers(
    client: &Client,
    namespace: &Option<String>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = Result<DeserializeGuard<ReferralRestore>, watcher::Error>> + Send + 'static {
    let api: Api<DeserializeGuard<ReferralRestore>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let scope = namespace.clone();
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .map_ok(move |event| {
            ctx.restores.observe(&scope, &event, |guard: &DeserializeGuard<ReferralRestore>| {
                guard.0.as_ref().ok().map(|r| r.spec.system_name.clone())
            });
            event
        })
        .touched_objects()
}

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
    // A step recorded by an operator that stopped before its event: the event first,
    // then the next step, from the status that write leaves (the watch brings it).
    if unannounced(&old).is_some() {
        let mut status = old.clone();
        announce(ctx, restore, &mut restore.resource_version(), &mut status).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
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
    let mut restore_phase = JobPhase::of(state.as_ref().and_then(|s| s.restore_job.as_ref()));
    if let (Some(system), JobPhase::Failed(_)) = (&system, &restore_phase) {
        // Read once: the step that sees the failure records it, and a finished
        // restore is not reconciled again.
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &system.namespace);
        restore_phase = super::job_pods::with_pod_message(&pods, &restore_job_name(system, &uid), restore_phase).await;
    }
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
        now: Timestamp::now(),
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
    announce(ctx, restore, &mut version, &mut status).await?;

    let owner = restore_owner(restore);
    Ok(match (&step, system.as_ref(), state.as_ref()) {
        (RestoreStep::Wait { .. }, _, _) => Action::requeue(PENDING_REQUEUE),
        (RestoreStep::Done { .. }, _, _) => Action::await_change(),
        (RestoreStep::ConfirmWorkersStopped, _, _) => Action::requeue(CONFIRM_REQUEUE),
        (RestoreStep::CreateRestoreJob { job_name }, Some(system), _) => {
            let build_ctx = BuildContext {
                operator_image: ctx.settings.operator_image.clone(),
                secrets_hash: None,
                operator_pods: ctx.settings.operator_pods.clone(),
            };
            let job = restore_job_from(
                system,
                &build_ctx,
                &restore.spec.backup_name,
                job_name,
                restore.spec.redis,
                restore.spec.source,
            );
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
                    set_condition(&mut status.conditions, retrying_indexes(&error.to_string(), &now()));
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

/// Ensures the declared indexes on the restored data, whatever `indexPolicy` says:
/// the restore replaced the collections, and the indexes are part of the data's
/// shape (the guide's restore procedure rebuilds them). A conflicting index is
/// reported, never dropped.
async fn ensure_indexes(ctx: &Context, system: &ValidatedSystem) -> Result<IndexesResult, RestoreError> {
    let failed = |reason: String| RestoreError::EnsureIndexes { system: system.name.clone(), reason };
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &system.namespace);
    let values =
        super::secrets::read(&secrets, system, &ctx.settings.secrets_hash_key).await.map_err(|error| match error {
            Error::ReadSecret { name, source } => RestoreError::ReadSecret { name, source },
            other => failed(other.to_string()),
        })?;
    let reference = &system.spec.mongodb.uri_secret_ref;
    let uri = values
        .mongo_uri
        .ok_or_else(|| RestoreError::MissingMongoUri { secret: reference.name.clone(), key: reference.key.clone() })?;
    // The probe error is scrubbed of the URI; the sync errors never hold it.
    let client = ctx
        .mongo
        .client(&uri, values.mongo_tls.as_ref(), ctx.settings.probe_timeout)
        .await
        .map_err(|e| failed(e.to_string()))?;
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
    }
    Ok(())
}

/// Whether the recorded phase still needs its event. A restore that finished before
/// `announcedPhase` existed had its events published then (best effort) and is left
/// alone; one still under way gets its current step's event once more, at most.
fn unannounced(status: &ReferralRestoreStatus) -> Option<RestorePhase> {
    let phase = status.phase?;
    match status.announced_phase {
        Some(announced) if announced == phase => None,
        None if phase.is_terminal() => None,
        _ => Some(phase),
    }
}

/// The event's name for one step of one restore: the same on every attempt, so a
/// retry after a restart is answered "already exists" instead of adding a second
/// event. Within the 253 characters of an object name.
fn step_event_name(restore: &str, uid: &str, phase: RestorePhase) -> String {
    let suffix = format!("{}-{}", format!("{phase:?}").to_lowercase(), uid.chars().take(8).collect::<String>());
    let room = 253 - suffix.len() - 1;
    let base: String = restore.chars().take(room).collect();
    format!("{}.{suffix}", base.trim_end_matches(['.', '-']))
}

/// Publishes the event of the step recorded in `status` (if it has not been), then
/// records that it was. The event is created under [`step_event_name`] and the
/// record follows it, so an operator stopped between the two publishes nothing twice:
/// the next reconcile finds the step unannounced, and its create is refused as
/// existing. The event is best effort (Kubernetes may refuse it): a refused create
/// other than "already exists" is logged and the step is recorded as announced, so
/// one refusal does not block the restore.
async fn announce(
    ctx: &Context,
    restore: &ReferralRestore,
    version: &mut Option<String>,
    status: &mut ReferralRestoreStatus,
) -> Result<(), RestoreError> {
    let Some(phase) = unannounced(status) else { return Ok(()) };
    let name = restore.name_any();
    let namespace = restore.namespace().unwrap_or_default();
    let (type_, reason) = match phase {
        RestorePhase::Failed => ("Warning", "RestoreFailed".to_string()),
        RestorePhase::Succeeded => ("Normal", "Restored".to_string()),
        other => ("Normal", format!("{other:?}")),
    };
    let event = k8s_openapi::api::events::v1::Event {
        metadata: kube::api::ObjectMeta {
            name: Some(step_event_name(&name, &restore.uid().unwrap_or_default(), phase)),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        action: Some("Restore".into()),
        reason: Some(reason),
        note: status.message.as_deref().map(|m| truncate(m, 1000)),
        type_: Some(type_.into()),
        event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now())),
        regarding: Some(restore.object_ref(&())),
        reporting_controller: Some(MANAGER.into()),
        reporting_instance: Some(MANAGER.into()),
        ..Default::default()
    };
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(ctx.client.clone(), &namespace);
    match events.create(&PostParams::default(), &event).await {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.is_already_exists() => {
            tracing::debug!(restore = %name, ?phase, "the step's event was published before a restart");
        }
        Err(error) => tracing::warn!(%error, restore = %name, ?phase, "could not publish the step's event"),
    }
    let before = status.clone();
    status.announced_phase = Some(phase);
    write_status(ctx, restore, version, &before, status).await
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
        .run(
            |guard, ctx| {
                let name = format!("{}/{}", guard.namespace().unwrap_or_default(), guard.name_any());
                super::panics::contain(reconcile(guard, ctx), |message| RestoreError::Panicked { name, message })
            },
            error_policy,
            ctx,
        )
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
    use super::{ReferralRestoreStatus, RestorePhase, step_event_name, unannounced};

    fn status(phase: Option<RestorePhase>, announced: Option<RestorePhase>) -> ReferralRestoreStatus {
        ReferralRestoreStatus { phase, announced_phase: announced, ..ReferralRestoreStatus::default() }
    }

    #[test]
    fn a_recorded_step_is_announced_until_its_event_is_recorded() {
        use RestorePhase::*;
        assert_eq!(unannounced(&status(None, None)), None, "nothing recorded yet");
        // Recorded, and the operator stopped before the event: announce it.
        assert_eq!(unannounced(&status(Some(ScalingDown), None)), Some(ScalingDown));
        assert_eq!(unannounced(&status(Some(Restoring), Some(ScalingDown))), Some(Restoring));
        assert_eq!(unannounced(&status(Some(Succeeded), Some(ScalingUp))), Some(Succeeded));
        assert_eq!(unannounced(&status(Some(Failed), Some(Restoring))), Some(Failed));
        // Announced: nothing more.
        assert_eq!(unannounced(&status(Some(Restoring), Some(Restoring))), None);
        assert_eq!(unannounced(&status(Some(Succeeded), Some(Succeeded))), None);
        // Finished before the field existed: its events went out then.
        assert_eq!(unannounced(&status(Some(Succeeded), None)), None);
        assert_eq!(unannounced(&status(Some(Failed), None)), None);
    }

    #[test]
    fn a_steps_event_name_is_the_same_on_every_attempt_and_a_valid_name() {
        let uid = "0b6c2d1e-8f4a-4c3b-9d2e-1a2b3c4d5e6f";
        let name = step_event_name("r1", uid, RestorePhase::EnsuringIndexes);
        assert_eq!(name, "r1.ensuringindexes-0b6c2d1e");
        assert_eq!(name, step_event_name("r1", uid, RestorePhase::EnsuringIndexes));
        assert_ne!(name, step_event_name("r1", uid, RestorePhase::Restoring), "one event per step");
        assert_ne!(name, step_event_name("r1", "ffff0000-rest", RestorePhase::EnsuringIndexes), "one per restore");
        // The longest object name still gives a valid one: at most 253 characters,
        // not ending the restore's part with a dot or a dash.
        let long = format!("{}-{}", "a".repeat(200), "b.c-".repeat(13));
        let name = step_event_name(&long, uid, RestorePhase::CheckingChains);
        assert!(name.len() <= 253, "{}", name.len());
        assert!(name.ends_with(".checkingchains-0b6c2d1e"), "{name}");
        assert!(!name.contains("-.") && !name.contains(".."), "{name}");
    }
}
