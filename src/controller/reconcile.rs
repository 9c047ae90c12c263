//! One reconcile of one ReferralSystem: fetch -> validate -> read Secrets -> probe
//! dependencies -> build -> apply (unless paused) -> observe -> status -> events.
//! Every step that can fail says so in status; only Kubernetes API failures are
//! returned as errors (and retried with backoff).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, DynamicObject, GetParams, ListParams, Patch};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::crd::ReferralSystem;
use crate::crd::SecretKeyRef;
use crate::crd::status::{ChainCheckStatus, ChainViolation, ReferralSystemStatus, StatusWriter};
use crate::crd::validate::{ValidatedSystem, validate};
use crate::reconcilers::env::{generated_redis_password_name, redis_endpoint, redis_password_ref};
use crate::reconcilers::workers::worker_name;
use crate::reconcilers::{BuildContext, build};

use crate::backup::drill::{DrillVerdict, DrillVerdictInput, restore_drill_verdict};
use crate::backup::health::{BackupFailure, BackupHealth, BackupHealthInput, REASON_FAILED, backup_health};

use super::apply::{Applied, Target, apply_all};
use super::conditions::{self, Observed, Probe, READY, WorkerObservation};
use super::context::Context;
use super::error::Error;
use super::recheck::{Health, Settled};
use super::rechecker::{Baseline, probes_seen, secrets_seen, version_number};
use super::requests::{self, RunNow};
use super::secrets::{self, SecretRefs, SecretValues};
use super::{indexes, scheduled, upgrade};

/// Field manager of the ReferralRestore status the restore controller writes (the
/// ReferralSystem's own status writers are [`StatusWriter`]).
pub const STATUS_MANAGER: &str = "referral-operator-status";

/// Entry point for the kube-runtime Controller, which caches only the systems'
/// metadata: the system itself is read here. A reconcile never asks to be requeued
/// after a time: re-checks are the re-check schedule's ([`super::recheck`]), told
/// here when each reconcile starts and how it ended; only a failure is retried by
/// kube-runtime, with [`error_policy`]'s back-off.
pub async fn reconcile(meta: Arc<PartialObjectMeta<ReferralSystem>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let key = format!("{}/{}", meta.namespace().unwrap_or_default(), meta.name_any());
    let report = ctx.rechecks.reconciling(&key);
    let Some(guard) = fetch(&meta, &ctx).await? else {
        // Deleted since the watch saw it; the controller hears of that separately.
        report.settle(Settled::Gone);
        return Ok(Action::await_change());
    };
    let system = match &guard.0 {
        Ok(system) => system,
        Err(invalid) => {
            // One object that does not decode must not stall the others: report it
            // on the object and wait for someone to fix it.
            let reference = meta.object_ref(&());
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidObject".into(),
                note: Some(truncate(&format!("cannot decode this ReferralSystem: {}", invalid.error), 1000)),
                action: "Decode".into(),
                secondary: None,
            };
            let _ = ctx.recorder.publish(&event, &reference).await;
            ctx.metrics.record_failure("invalid_spec");
            report_undecodable(&meta, &invalid.error, &ctx).await?;
            report.settle(Settled::Parked);
            return Ok(Action::await_change());
        }
    };
    let settled = reconcile_system(system, &ctx).await?;
    ctx.reset_backoff(&key);
    report.settle(settled);
    Ok(Action::await_change())
}

/// The system whole, at least as new as the cached metadata that woke this reconcile
/// and as this operator's last status write (the API server answers from its watch
/// cache, not etcd); `None` once deleted. Without the second floor, a reconcile woken
/// by a child's event just after the previous one wrote status could read the system
/// from before that write, judge against the stale status (the index check's result
/// missing, say) and write it back: at 10,000 systems a status of an unchanged system
/// then moved again ten minutes later, at the next index check (docs/benchmarks.md,
/// Round 6).
/// One read per reconcile instead of a cached copy of every system: the operator's
/// memory stays flat in the number of systems' specs and statuses, and a reconcile
/// already reads the system's Secrets and probes its databases.
async fn fetch(
    meta: &PartialObjectMeta<ReferralSystem>,
    ctx: &Context,
) -> Result<Option<DeserializeGuard<ReferralSystem>>, Error> {
    let namespace = meta.namespace().ok_or(Error::NoNamespace)?;
    let name = meta.name_any();
    let api = Api::<DeserializeGuard<ReferralSystem>>::namespaced(ctx.client.clone(), &namespace);
    let params =
        match read_floor(meta.metadata.resource_version.as_deref(), ctx.live.last_status_write(&namespace, &name)) {
            Some(version) => GetParams::at(&version),
            None => GetParams::default(),
        };
    match api.get_with(&name, &params).await {
        Ok(guard) => Ok(Some(guard)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(source) => Err(Error::Read { kind: "ReferralSystem", name: format!("{namespace}/{name}"), source }),
    }
}

/// The resourceVersion a reconcile's read of its system must be at least as new as:
/// the newer of the cached metadata's and the last status write's. A version that is
/// not a number (the API server's are, but they are opaque by contract) is used as is.
fn read_floor(cached: Option<&str>, status_write: Option<u64>) -> Option<String> {
    match (cached, super::rechecker::version_number(cached), status_write) {
        (_, Some(cached), Some(written)) => Some(cached.max(written).to_string()),
        (Some(cached), _, _) => Some(cached.to_string()),
        (None, _, written) => written.map(|w| w.to_string()),
    }
}

/// A system the API server stored but the operator cannot decode (a value its schema
/// admits and its types do not) is reported like any invalid spec: SpecValid and
/// Ready False, naming the field, so a person sees it in `status`, not only in an
/// event. The field is found by decoding the object again with its path tracked.
async fn report_undecodable(meta: &PartialObjectMeta<ReferralSystem>, error: &str, ctx: &Context) -> Result<(), Error> {
    let namespace = meta.namespace().ok_or(Error::NoNamespace)?;
    let name = meta.name_any();
    let resource = ApiResource::erase::<ReferralSystem>(&());
    let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let problem = match api.get(&name).await {
        Ok(object) => match serde_json::to_value(&object).map_err(|e| e.to_string()).and_then(|v| {
            serde_path_to_error::deserialize::<_, ReferralSystem>(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
        }) {
            Ok(_) => format!("cannot decode this ReferralSystem: {error}"),
            Err(why) => format!("cannot decode this ReferralSystem: {why}"),
        },
        Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
        Err(source) => return Err(Error::Read { kind: "ReferralSystem", name: format!("{namespace}/{name}"), source }),
    };
    let observed = Observed {
        generation: meta.metadata.generation,
        spec_problems: vec![truncate(&problem, 1000)],
        missing_secrets: Vec::new(),
        paused: false,
        stopped: false,
        workers: Vec::new(),
        redis_workload: None,
        redis: Probe::Unknown {
            reason: "NotChecked".into(),
            message: "not checked: the spec cannot be decoded".into(),
        },
        mongo: Probe::Unknown {
            reason: "NotChecked".into(),
            message: "not checked: the spec cannot be decoded".into(),
        },
        monitoring_crds_missing: None,
        apply_error: None,
        chain_check: None,
        backup: None,
        restore_drill: None,
        upgrade: None,
        upgrade_status: None,
        handled_requests: None,
        indexes: conditions::IndexObservation::NotChecked,
        stored_indexes: Vec::new(),
        maintenance: None,
        chain_check_job_failure: None,
    };
    let status = conditions::status(&observed, None, &now());
    let writer = StatusWriter::Controller;
    api.patch_status(&name, &writer.apply_params(), &Patch::Apply(writer.apply_body(&status)))
        .await
        .map_err(|source| Error::WriteStatus { system: name.clone(), source })?;
    Ok(())
}

/// Requeue policy after an error: exponential backoff per object.
pub fn error_policy(meta: Arc<PartialObjectMeta<ReferralSystem>>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", meta.namespace().unwrap_or_default(), meta.name_any());
    ctx.metrics.record_failure(error.category());
    let wait = ctx.next_backoff(&key);
    tracing::warn!(system = %key, category = error.category(), %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn new_observed(system: &ReferralSystem) -> Observed {
    Observed {
        generation: system.metadata.generation,
        spec_problems: Vec::new(),
        missing_secrets: Vec::new(),
        paused: system.spec.paused,
        stopped: system.spec.stopped,
        workers: Vec::new(),
        redis_workload: None,
        redis: Probe::Unknown { reason: "NotChecked".into(), message: "not checked yet".into() },
        mongo: Probe::Unknown { reason: "NotChecked".into(), message: "not checked yet".into() },
        monitoring_crds_missing: None,
        apply_error: None,
        chain_check: system.status.as_ref().and_then(|s| s.chain_check.clone()),
        backup: None,
        restore_drill: None,
        upgrade: None,
        upgrade_status: None,
        handled_requests: None,
        indexes: conditions::IndexObservation::NotChecked,
        stored_indexes: system.status.as_ref().map(|s| s.indexes.clone()).unwrap_or_default(),
        maintenance: None,
        chain_check_job_failure: None,
    }
}

/// One reconcile; says when the system is to be re-checked and against what.
async fn reconcile_system(system: &ReferralSystem, ctx: &Context) -> Result<Settled<Arc<Baseline>>, Error> {
    let namespace = system.namespace().ok_or(Error::NoNamespace)?;
    let name = system.name_any();
    let mut observed = new_observed(system);
    let capabilities = ctx.capabilities_generation();

    let validated = match validate(system, &namespace) {
        Ok(validated) => validated,
        Err(problems) => {
            observed.spec_problems = problems.iter().map(ToString::to_string).collect();
            write_status(system, ctx, &observed).await?;
            // Nothing will change until the spec does.
            return Ok(Settled::Parked);
        }
    };

    let secret_refs = SecretRefs::of(&validated);
    let secret_api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    // The generated Redis password first, so the read below finds it. Paused, the
    // operator writes nothing, this Secret included.
    let rotation = requests::pending_rotation(system);
    let generated = if system.spec.paused {
        secrets::GeneratedPassword::Kept
    } else {
        secrets::ensure_generated_password(&secret_api, &validated, rotation.as_ref().map(|r| r.token_hash.as_str()))
            .await?
    };
    let secrets = secrets::read_refs(&secret_api, &secret_refs, &ctx.settings.secrets_hash_key).await?;
    observed.missing_secrets = secrets.missing.clone();
    let redis_target = RedisTarget::of(&validated);
    let dependencies = probe_dependencies(ctx, &redis_target, &secrets).await;
    let probes_seen = probes_seen(&dependencies.mongo, &dependencies.redis);
    observed.mongo = dependencies.mongo;
    observed.redis = dependencies.redis;
    let mut wake_at = None;
    let mut unwritten_check = None;
    if matches!(observed.mongo, Probe::Ok { .. }) {
        observed.indexes =
            indexes::observe_indexes(ctx, &validated, secrets.mongo_uri.as_deref(), secrets.mongo_tls.as_ref()).await;
        if matches!(observed.indexes, conditions::IndexObservation::Fresh { .. }) {
            unwritten_check = Some(indexes::UnwrittenCheck::new(&ctx.index_schedule, format!("{namespace}/{name}")));
        }
        // The next index check is due work: a re-check cannot do it without the spec.
        if !system.spec.paused {
            wake_at = ctx.index_schedule.next_due(&format!("{namespace}/{name}"), validated.intervals.index_check);
        }
    }

    let build_context = BuildContext {
        operator_image: ctx.settings.operator_image.clone(),
        secrets_hash: Some(secrets.hash.clone()),
        operator_pods: ctx.settings.operator_pods.clone(),
    };
    let mut children = build(&validated, &build_context);
    let now = now();
    let last_backup = system.status.as_ref().and_then(|s| s.backup.as_ref()).and_then(|b| b.last_success.as_ref());
    let backup_failure = newest_backup_failure(ctx, &validated, last_backup.map(|t| t.0)).await;
    let backup = judge_backups(ctx, system, &validated, &now, backup_failure.as_ref());
    let restore_hold = super::restore::restore_holding(ctx, &validated).await?;
    if restore_hold.is_some() {
        crate::reconcilers::restore::hold_for_restore(&mut children);
    }
    let monitoring_wanted = !children.prometheus_rules.is_empty() || !children.service_monitors.is_empty();
    let before = current_workloads(ctx, &validated).await?;
    let mut apply_failure = None;
    let mut applied = if system.spec.paused || !secrets.missing.is_empty() {
        // Paused: no child writes. Missing Secret: applying would roll pods into a
        // state where they cannot start, so keep what runs and say why.
        Applied::default()
    } else {
        let gate = upgrade::gate_images(
            ctx,
            system,
            &validated,
            &before.deployments,
            restore_hold.is_some(),
            &mut children,
            &build_context,
            now.clone(),
        )
        .await?;
        observed.upgrade = gate.gate;
        observed.upgrade_status = gate.status;
        let uid = system.metadata.uid.clone().unwrap_or_default();
        let target = Target { client: &ctx.client, namespace: &namespace, system: &name, uid: &uid, live: &ctx.live };
        match apply_all(&target, &children, &ctx.capabilities()).await {
            Ok(applied) => {
                ctx.metrics.set_managed_objects(&namespace, &name, applied.count as i64);
                tracing::debug!(
                    system = %name,
                    patched = applied.patched,
                    unchanged = applied.unchanged,
                    deleted = applied.deleted,
                    "applied children"
                );
                // A restore owns the data until it ends: run-now requests wait for it.
                if restore_hold.is_none() {
                    let (handled, started) =
                        requests::start_requested_jobs(ctx, system, &validated, &children, &build_context).await?;
                    observed.handled_requests = handled;
                    publish_started(system, ctx, &started).await;
                }
                applied
            }
            Err(error) => {
                observed.apply_error = Some(error.to_string());
                apply_failure = Some(error);
                Applied::default()
            }
        }
    };
    if let Some(rotation) = rotation.filter(|_| !system.spec.paused) {
        let mut handled = observed
            .handled_requests
            .clone()
            .or_else(|| system.status.as_ref().and_then(|s| s.handled_requests.clone()))
            .unwrap_or_default();
        handled.rotate_redis_password = Some(rotation.handled());
        observed.handled_requests = Some(handled);
        publish_rotation(system, ctx, &validated, &generated).await;
    }
    // What this reconcile patched is newest; the rest is as it was before.
    fill_missing(&mut applied.deployments, before.deployments);
    fill_missing(&mut applied.stateful_sets, before.stateful_sets);
    if monitoring_wanted && !applied.skipped_monitoring.is_empty() {
        let services = match applied.skipped_metrics_services {
            0 => String::new(),
            1 => "; the metrics Service of the worker without an HTTP port waits for ServiceMonitor".into(),
            n => format!("; the metrics Services of the {n} workers without an HTTP port wait for ServiceMonitor"),
        };
        observed.monitoring_crds_missing = Some(format!(
            "the prometheus-operator CRDs for {} are not installed (monitoring.coreos.com); alerts and scraping are not configured{services}",
            applied.skipped_monitoring.join(" and ")
        ));
    }
    observe_workloads(&validated, &applied, &mut observed);
    observed.backup = Some(backup.clone());
    observed.restore_drill = judge_restore_drill(ctx, system, &validated, &now);
    let drill_due = observed.restore_drill.as_ref().and_then(|v| {
        let max = v.max_age_seconds?;
        v.since.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(max)).ok()
    });
    export_chain_check(ctx, &validated, observed.chain_check.as_ref());
    let (maintenance, chain_cron) = scheduled::observe(ctx, &validated, system.status.as_ref()).await?;
    observed.maintenance = Some(scheduled::maintenance_statuses(&validated, &maintenance, system.status.as_ref()));
    observed.chain_check_job_failure = scheduled::chain_check_job_failure(&chain_cron, system.status.as_ref());

    let status = write_status(system, ctx, &observed).await?;
    if let Some(check) = unwritten_check {
        check.written();
    }
    export_health(ctx, &validated, &observed, &status);
    publish_failed_runs(system, ctx, &status).await;
    if let Some(error) = apply_failure {
        return Err(error);
    }
    let health = Health {
        ready: crate::crd::conditions::is_true(&status.conditions, READY),
        // Looked at again sooner, so a server that answers again is reported soon.
        dependency_down: [&observed.mongo, &observed.redis].iter().any(|p| matches!(p, Probe::Failed { .. })),
    };
    // Come back when the backups (or their verification) turn overdue, so
    // BackupHealthy and BackupVerified flip on time.
    for due in [backup.due, drill_due].into_iter().flatten() {
        let until = due.duration_since(now.0).as_secs();
        if until >= 0 {
            let at = std::time::Instant::now() + std::time::Duration::from_secs(until.unsigned_abs() + 1);
            wake_at = Some(wake_at.map_or(at, |w: std::time::Instant| w.min(at)));
        }
    }
    // This reconcile's own status write is not news to the re-check.
    let resource_version =
        version_number(system.metadata.resource_version.as_deref()).max(ctx.live.last_status_write(&namespace, &name));
    let baseline = Baseline {
        resource_version,
        capabilities,
        secrets: secret_refs,
        secrets_seen: secrets_seen(&secrets),
        redis: redis_target,
        probes_seen,
        targets: dependencies.targets,
    };
    Ok(Settled::Recheck { health, wake_at, baseline: Arc::new(baseline) })
}

/// The newest failed backup Job of the system, with what its pod said when it failed
/// after `last_success` (an older one is not reported, so its pods are not read). A
/// failed read is logged and counts as no failure: the next reconcile reads again, and
/// a list error must not hide the rest of the status.
async fn newest_backup_failure(
    ctx: &Context,
    system: &ValidatedSystem,
    last_success: Option<k8s_openapi::jiff::Timestamp>,
) -> Option<BackupFailure> {
    // The Jobs' watch has listed them all and holds no backup Job of this system: the
    // list would find none (most systems, between their backups' runs and TTLs).
    if !ctx.backup_jobs.may_have(&system.namespace, &system.name) {
        return None;
    }
    let selector = format!(
        "{},{}={}",
        crate::reconcilers::meta::system_selector(&system.name),
        crate::reconcilers::meta::LABEL_COMPONENT,
        crate::reconcilers::backup::COMPONENT
    );
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &system.namespace);
    match jobs.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => {
            let mut failure = crate::reconcilers::backup::newest_failure(&list.items)?;
            if last_success.is_some_and(|done| done >= failure.at) {
                return Some(failure);
            }
            // Only the Job's condition says it failed; its pod says why (a dump's
            // error, a full volume).
            let pods = Api::<Pod>::namespaced(ctx.client.clone(), &system.namespace);
            if let Some(said) = super::job_pods::pod_message(&pods, &failure.job).await {
                failure.why = format!("{}; {said}", failure.why);
            }
            Some(failure)
        }
        Err(error) => {
            tracing::warn!(system = %system.name, %error, "cannot list the backup Jobs");
            None
        }
    }
}

/// `BackupHealthy`, from what the backup Job last reported; also exported as the
/// gauges the backup alert reads, so the two agree.
fn judge_backups(
    ctx: &Context,
    object: &ReferralSystem,
    system: &ValidatedSystem,
    now: &Time,
    last_failure: Option<&BackupFailure>,
) -> BackupHealth {
    let last_success = object.status.as_ref().and_then(|s| s.backup.as_ref()).and_then(|b| b.last_success.clone());
    let created = object.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now.0);
    let health = backup_health(BackupHealthInput {
        last_success: last_success.as_ref().map(|t| t.0),
        created,
        schedule: &system.spec.backup.schedule,
        suspended: system.spec.backup.suspend,
        last_failure,
        now: now.0,
    });
    let unresolved = last_failure.filter(|_| health.reason == REASON_FAILED);
    ctx.metrics.set_backup_failure(&system.namespace, &system.name, unresolved.map(|f| f.at.as_second() as f64));
    if let Some(interval) = health.interval_seconds {
        ctx.metrics.set_backup(
            &system.namespace,
            &system.name,
            last_success.map(|t| t.0.as_second() as f64),
            interval as f64,
        );
    }
    health
}

/// `BackupVerified`, from what the drill Job last reported; also exported as the two
/// gauges the `ReferralBackupUnverified` alert compares, so the two agree. Without a
/// drill in the spec: no condition and no series.
fn judge_restore_drill(
    ctx: &Context,
    object: &ReferralSystem,
    system: &ValidatedSystem,
    now: &Time,
) -> Option<DrillVerdict> {
    let Some(drill) = &system.spec.backup.restore_drill else {
        ctx.metrics.set_restore_drill(&system.namespace, &system.name, None);
        return None;
    };
    let last = object.status.as_ref().and_then(|s| s.backup.as_ref()).and_then(|b| b.last_verified_restore.as_ref());
    let verdict = restore_drill_verdict(DrillVerdictInput {
        max_unverified_age: &drill.max_unverified_age,
        schedule: &drill.schedule,
        last,
        created: object.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now.0),
        now: now.0,
    });
    let gauges = verdict.max_age_seconds.map(|max| (verdict.since.as_second() as f64, max as f64));
    ctx.metrics.set_restore_drill(&system.namespace, &system.name, gauges);
    Some(verdict)
}

/// The last chain check's counts as gauges (the check Job reports into status; the
/// operator is what Prometheus scrapes).
fn export_chain_check(ctx: &Context, system: &ValidatedSystem, check: Option<&ChainCheckStatus>) {
    let Some(c) = check else { return };
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let depths: Vec<(u32, i64)> = c.depths.iter().map(|d| (d.depth, count(d.users))).collect();
    ctx.metrics.set_chain_depths(&system.namespace, &system.name, &depths);
    let violations: Vec<(ChainViolation, i64)> =
        ChainViolation::ALL.iter().map(|kind| (*kind, count(kind.count(c)))).collect();
    ctx.metrics.set_chain_violations(&system.namespace, &system.name, &violations);
}

/// The gauges of the alerts on dependencies, workers, the chain check and the
/// maintenance jobs, from what this reconcile observed and judged.
fn export_health(ctx: &Context, system: &ValidatedSystem, observed: &Observed, status: &ReferralSystemStatus) {
    let (ns, name) = (&system.namespace, &system.name);
    let up = |type_: &str| match find(&status.conditions, type_).map(|c| c.status.as_str()) {
        Some("True") => Some(true),
        Some("False") => Some(false),
        _ => None,
    };
    ctx.metrics.set_dependencies(ns, name, up(conditions::REDIS_READY), up(conditions::MONGO_REACHABLE));
    let workers: Vec<(String, i64, i64)> =
        observed.workers.iter().map(|w| (w.name.clone(), i64::from(w.desired), i64::from(w.ready))).collect();
    ctx.metrics.set_worker_pods(ns, name, &workers);
    let check_failed = observed.chain_check_job_failure.is_some()
        || observed.chain_check.as_ref().is_some_and(|c| c.failure.is_some());
    ctx.metrics.set_chain_check_failed(ns, name, check_failed);
    let jobs: Vec<(String, bool)> = status
        .maintenance
        .iter()
        .map(|m| (m.name.clone(), m.last_result == Some(crate::crd::status::RunResult::Failed)))
        .collect();
    ctx.metrics.set_maintenance_failed(ns, name, &jobs);
}

/// A Warning event for each maintenance run that failed since the last status.
async fn publish_failed_runs(system: &ReferralSystem, ctx: &Context, status: &ReferralSystemStatus) {
    let old = system.status.as_ref().map(|s| s.maintenance.as_slice()).unwrap_or_default();
    for run in scheduled::newly_failed(old, &status.maintenance) {
        let when = run.last_schedule_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
        let note = format!(
            "maintenance job {} (CronJob {}) failed its run of {when}: {}",
            run.name,
            run.cron_job,
            run.message.as_deref().unwrap_or("no reason given")
        );
        let event = Event {
            type_: EventType::Warning,
            reason: "MaintenanceJobFailed".into(),
            note: Some(truncate(&note, 1000)),
            action: "Observe".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &system.object_ref(&())).await {
            tracing::warn!(%error, "could not publish an event");
        }
    }
}

/// An event per Job started on request.
async fn publish_started(system: &ReferralSystem, ctx: &Context, started: &[requests::PendingRequest]) {
    let reference = system.object_ref(&());
    for request in started {
        let (reason, what) = match request.run {
            RunNow::Check => ("ChainCheckStarted", "chain check"),
            RunNow::Backup => ("BackupStarted", "backup"),
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(truncate(
                &format!("{what} asked for with {}: Job {}", request.run.annotation(), request.job),
                1000,
            )),
            action: "RunNow".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }
}

/// What the Redis probe needs from the spec, kept in a re-check's [`Baseline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    host: String,
    port: u16,
    tls: bool,
    username: Option<String>,
    /// The password's Secret key (the generated one for a managed Redis without
    /// one), when Redis wants a password.
    password_ref: Option<SecretKeyRef>,
}

impl RedisTarget {
    pub fn of(system: &ValidatedSystem) -> Self {
        let redis = &system.spec.redis;
        let (host, port) = redis_endpoint(system);
        // Managed Redis is reached through its Service's cluster DNS name.
        let host = if redis.managed.is_some() { format!("{host}.{}.svc", system.namespace) } else { host };
        Self {
            host,
            port: u16::try_from(port).unwrap_or(6379),
            tls: redis.external.as_ref().is_some_and(|e| e.tls),
            username: redis.username.clone(),
            password_ref: redis_password_ref(system),
        }
    }

    /// Where and how to connect, with the credentials and TLS files read.
    fn connection(&self, secrets: &SecretValues) -> crate::checks::redis_probe::RedisTarget {
        crate::checks::redis_probe::RedisTarget {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls.then(|| secrets.redis_tls.clone().unwrap_or_default()),
            username: self.username.clone(),
            password: secrets.redis_password.clone(),
        }
    }
}

/// Both dependency probes' answers, and the servers they came from.
pub struct Dependencies {
    pub mongo: Probe,
    pub redis: Probe,
    /// MongoDB's and Redis's [`super::probes::Target`], when probed.
    pub targets: [Option<super::probes::Target>; 2],
}

/// Probes MongoDB and Redis, each at most once per probe interval (a failing one
/// every few seconds) however many systems use it ([`super::probes`]); a changed answer wakes the other systems that
/// use the same server, so that each reports it.
pub async fn probe_dependencies(ctx: &Context, redis: &RedisTarget, secrets: &SecretValues) -> Dependencies {
    let ((mongo, mongo_target), (redis, redis_target)) =
        tokio::join!(probe_mongo(ctx, secrets), probe_redis(ctx, redis, secrets));
    Dependencies { mongo, redis, targets: [mongo_target, redis_target] }
}

async fn probe_mongo(ctx: &Context, secrets: &SecretValues) -> (Probe, Option<super::probes::Target>) {
    let Some(uri) = &secrets.mongo_uri else {
        let probe =
            Probe::Unknown { reason: "SecretMissing".into(), message: "the MongoDB URI Secret cannot be read".into() };
        return (probe, None);
    };
    let tls = secrets.mongo_tls.as_ref();
    let target = ctx.probes.target(("mongodb", uri, tls));
    let answer = ctx
        .probes
        .answer(target, || async {
            ctx.metrics.record_probe("mongodb");
            match ctx.mongo.ping(uri, tls, ctx.settings.probe_timeout).await {
                Ok(()) => Probe::Ok { message: "MongoDB answered ping".into() },
                Err(e) => Probe::Failed { reason: e.reason().into(), message: e.to_string() },
            }
        })
        .await;
    if answer.changed {
        ctx.rechecks.wake_users_of(target);
    }
    (answer.probe, Some(target))
}

async fn probe_redis(
    ctx: &Context,
    redis: &RedisTarget,
    secrets: &SecretValues,
) -> (Probe, Option<super::probes::Target>) {
    if let Some(reference) = &redis.password_ref
        && secrets.redis_password.is_none()
    {
        let probe = Probe::Unknown {
            reason: "SecretMissing".into(),
            message: format!(
                "the Redis password (Secret {} key {}) is missing or empty, so Redis was not asked",
                reference.name, reference.key
            ),
        };
        return (probe, None);
    }
    let connection = redis.connection(secrets);
    let target = ctx.probes.target((
        "redis",
        &connection.host,
        connection.port,
        &connection.tls,
        &connection.username,
        &connection.password,
    ));
    let answer = ctx
        .probes
        .answer(target, || async {
            ctx.metrics.record_probe("redis");
            match crate::checks::redis_probe::ping(&connection, ctx.settings.probe_timeout).await {
                Ok(()) => {
                    let how = match (&connection.tls, &connection.password) {
                        (Some(_), Some(_)) => " over TLS, after AUTH",
                        (Some(_), None) => " over TLS",
                        (None, Some(_)) => " after AUTH",
                        (None, None) => "",
                    };
                    Probe::Ok { message: format!("Redis at {} answered PING{how}", connection.address()) }
                }
                Err(e) => Probe::Failed { reason: e.reason().into(), message: e.to_string() },
            }
        })
        .await;
    if answer.changed {
        ctx.rechecks.wake_users_of(target);
    }
    (answer.probe, Some(target))
}

/// Says what a rotation request did: a new password, or why there is none to rotate.
async fn publish_rotation(
    system: &ReferralSystem,
    ctx: &Context,
    validated: &ValidatedSystem,
    generated: &secrets::GeneratedPassword,
) {
    let secret = generated_redis_password_name(validated);
    let (type_, reason, note) = match (generated, &validated.spec.redis.password_secret_ref) {
        (_, Some(own)) => (
            EventType::Warning,
            "RotationNotApplicable",
            format!(
                "{} asks for a new password, but spec.redis.passwordSecretRef names your Secret {}: change the password there, and the pods roll",
                requests::ROTATE_REDIS_PASSWORD_ANNOTATION,
                own.name
            ),
        ),
        (secrets::GeneratedPassword::Rotated | secrets::GeneratedPassword::Created, None) => (
            EventType::Normal,
            "RedisPasswordRotated",
            format!(
                "a new Redis password was generated into Secret {secret}; Redis and every pod using it restart with it"
            ),
        ),
        (_, None) => (
            EventType::Normal,
            "RedisPasswordRotated",
            format!("the Redis password in Secret {secret} was already rotated for this request"),
        ),
    };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(&note, 1000)),
        action: "Rotate".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &system.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish an event");
    }
}

fn fill_missing<K: Resource>(fresh: &mut Vec<K>, before: Vec<K>) {
    for object in before {
        if !fresh.iter().any(|f| f.meta().name == object.meta().name) {
            fresh.push(object);
        }
    }
}

/// The worker Deployments and the managed Redis StatefulSet as they are now.
#[derive(Debug, Default)]
struct Workloads {
    deployments: Vec<Deployment>,
    stateful_sets: Vec<StatefulSet>,
}

/// The workloads as they are now, without writing anything: from the watch-fed
/// state, or read while the watches have not listed yet.
async fn current_workloads(ctx: &Context, system: &ValidatedSystem) -> Result<Workloads, Error> {
    let ns = &system.namespace;
    let mut found = Workloads::default();
    for worker in &system.spec.workers {
        let name = worker_name(system, &worker.name);
        let deployment = if ctx.live.synced("Deployment", ns) {
            ctx.live.deployment(ns, &name)
        } else {
            Api::<Deployment>::namespaced(ctx.client.clone(), ns)
                .get_opt(&name)
                .await
                .map_err(|source| Error::Read { kind: "Deployment", name: name.clone(), source })?
        };
        found.deployments.extend(deployment);
    }
    if system.spec.redis.managed.is_some() {
        let name = crate::reconcilers::env::managed_redis_name(system);
        let stateful_set = if ctx.live.synced("StatefulSet", ns) {
            ctx.live.stateful_set(ns, &name)
        } else {
            Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
                .get_opt(&name)
                .await
                .map_err(|source| Error::Read { kind: "StatefulSet", name: name.clone(), source })?
        };
        found.stateful_sets.extend(stateful_set);
    }
    Ok(found)
}

fn observe_workloads(system: &ValidatedSystem, applied: &Applied, observed: &mut Observed) {
    for worker in &system.spec.workers {
        let name = worker_name(system, &worker.name);
        let deployment = applied.deployments.iter().find(|d| d.metadata.name.as_deref() == Some(name.as_str()));
        observed.workers.push(match deployment {
            None => WorkerObservation {
                name: worker.name.clone(),
                deployment: name,
                desired: if system.spec.stopped { 0 } else { worker.replicas.unwrap_or(1) },
                ready: 0,
                rolled_out: false,
                stuck: false,
                missing: true,
            },
            Some(d) => observe_deployment(&worker.name, name, d),
        });
    }
    if system.spec.redis.managed.is_some() {
        let name = crate::reconcilers::env::managed_redis_name(system);
        let ready = applied
            .stateful_sets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
            >= 1;
        observed.redis_workload = Some((name, ready));
    }
}

fn observe_deployment(worker: &str, name: String, d: &Deployment) -> WorkerObservation {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let current = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let rolled_out = current
        && status.updated_replicas.unwrap_or(0) >= desired
        && status.available_replicas.unwrap_or(0) >= desired
        && status.replicas.unwrap_or(0) <= desired;
    let stuck = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    WorkerObservation { name: worker.to_string(), deployment: name, desired, ready, rolled_out, stuck, missing: false }
}

fn now() -> Time {
    // Whole seconds: the apiserver stores conditions at that precision, and a finer
    // value would make an unchanged status look changed.
    let seconds = k8s_openapi::jiff::Timestamp::now().as_second();
    Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()))
}

async fn write_status(
    system: &ReferralSystem,
    ctx: &Context,
    observed: &Observed,
) -> Result<ReferralSystemStatus, Error> {
    let old = system.status.clone();
    let status = conditions::status(observed, old.as_ref(), &now());
    let writer = StatusWriter::Controller;
    // Only its own fields count: the others' are written by their own writers.
    if old.as_ref().map(|o| writer.owned(o)) == Some(writer.owned(&status)) {
        return Ok(status);
    }
    let namespace = system.namespace().unwrap_or_default();
    let name = system.name_any();
    let api = Api::<ReferralSystem>::namespaced(ctx.client.clone(), &namespace);
    let written = apply_status(&api, &name, writer, &status)
        .await
        .map_err(|source| Error::WriteStatus { system: name.clone(), source })?;
    ctx.live.record_status_write(&namespace, &name, written.metadata.resource_version.as_deref());
    publish_transitions(
        system,
        ctx,
        old.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default(),
        &status.conditions,
    )
    .await;
    Ok(status)
}

/// Writes `writer`'s part of `status` by server-side apply (see [`StatusWriter`]),
/// then clears what a merge patch of an older operator left of it. Returns the
/// system as last written.
pub(super) async fn apply_status(
    api: &Api<ReferralSystem>,
    name: &str,
    writer: StatusWriter,
    status: &ReferralSystemStatus,
) -> Result<ReferralSystem, kube::Error> {
    let written = api.patch_status(name, &writer.apply_params(), &Patch::Apply(writer.apply_body(status))).await?;
    match writer.leftovers(written.status.as_ref(), status) {
        None => Ok(written),
        Some(patch) => api.patch_status(name, &writer.leftover_params(), &Patch::Merge(patch)).await,
    }
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Events for the transitions a person wants to see in `kubectl describe`.
async fn publish_transitions(system: &ReferralSystem, ctx: &Context, old: &[Condition], new: &[Condition]) {
    let mut events = Vec::new();
    let was = |t: &str| find(old, t).map(|c| c.status.as_str());
    let is = |t: &str| find(new, t);
    if let Some(c) = is(conditions::SPEC_VALID)
        && c.status == "False"
        && was(conditions::SPEC_VALID) != Some("False")
    {
        events.push((EventType::Warning, "InvalidSpec", c.message.clone()));
    }
    if let Some(c) = is(conditions::PAUSED) {
        match (was(conditions::PAUSED), c.status.as_str()) {
            (Some("True"), "False") => events.push((EventType::Normal, "Resumed", c.message.clone())),
            (old, "True") if old != Some("True") => events.push((EventType::Normal, "Paused", c.message.clone())),
            _ => {}
        }
    }
    if let Some(c) = is(READY) {
        match (was(READY), c.status.as_str()) {
            (None, _) => events.push((EventType::Normal, "Created", "children created; status is now reported".into())),
            (Some(old), "True") if old != "True" => events.push((EventType::Normal, "Ready", c.message.clone())),
            (Some("True"), status) if status != "True" => {
                events.push((EventType::Warning, "Degraded", format!("{}: {}", c.reason, c.message)))
            }
            _ => {}
        }
        if was(READY).is_none() && c.status == "True" {
            events.push((EventType::Normal, "Ready", c.message.clone()));
        }
    }
    // A failed backup is news once per failed Job: the message names the Job.
    if let Some(c) = is(conditions::BACKUP_HEALTHY)
        && c.reason == REASON_FAILED
        && find(old, conditions::BACKUP_HEALTHY).is_none_or(|o| o.reason != REASON_FAILED || o.message != c.message)
    {
        events.push((EventType::Warning, REASON_FAILED, c.message.clone()));
    }
    let reference = system.object_ref(&());
    for (type_, reason, note) in events {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(&note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read_floor;

    #[test]
    fn the_read_is_at_least_as_new_as_the_last_status_write() {
        assert_eq!(read_floor(Some("100"), Some(120)).as_deref(), Some("120"), "our write is newer than the cache");
        assert_eq!(read_floor(Some("130"), Some(120)).as_deref(), Some("130"));
        assert_eq!(read_floor(Some("100"), None).as_deref(), Some("100"));
        assert_eq!(read_floor(None, Some(120)).as_deref(), Some("120"));
        assert_eq!(read_floor(None, None), None);
        assert_eq!(read_floor(Some("opaque"), Some(120)).as_deref(), Some("opaque"), "not a number: as is");
    }
}
