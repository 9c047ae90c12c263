//! Status, computed purely from what was observed, and merged with the previous status
//! ([`crate::crd::conditions`]) so `lastTransitionTime` only moves when a condition's
//! status really changes. No client here: the reconcile step gathers [`Observed`] and
//! writes the result.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::backup::drill::DrillVerdict;
use crate::backup::health::BackupHealth;
use crate::crd::conditions::{condition, merge, unknown};
use crate::crd::status::{
    ChainCheckStatus, ChainViolation, HandledRequests, IndexState, IndexStatus, MaintenanceRunStatus,
    ReferralSystemStatus, UnmanagedIndexStatus, UpgradeStatus, WorkerStatus,
};

pub const READY: &str = "Ready";
pub const SPEC_VALID: &str = "SpecValid";
pub const WORKERS_AVAILABLE: &str = "WorkersAvailable";
pub const REDIS_READY: &str = "RedisReady";
pub const MONGO_REACHABLE: &str = "MongoReachable";
pub const MONITORING: &str = "MonitoringConfigured";
pub const PAUSED: &str = "ReconciliationPaused";
pub const CHAIN_INTEGRITY: &str = "ChainIntegrity";
pub const INDEXES_READY: &str = "IndexesReady";
pub const BACKUP_HEALTHY: &str = "BackupHealthy";
pub const BACKUP_VERIFIED: &str = "BackupVerified";

/// Outcome of a dependency probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    Ok {
        message: String,
    },
    Failed {
        reason: String,
        message: String,
    },
    /// Not probed this time, with why (e.g. the spec is invalid).
    Unknown {
        reason: String,
        message: String,
    },
}

/// One worker's Deployment as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerObservation {
    pub name: String,
    pub deployment: String,
    pub desired: i32,
    pub ready: i32,
    /// The Deployment controller has seen the latest template and every pod is updated and available.
    pub rolled_out: bool,
    /// The Deployment reports `ProgressDeadlineExceeded`.
    pub stuck: bool,
    /// The Deployment does not exist (yet).
    pub missing: bool,
}

/// Everything one reconcile learned about a system.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub generation: Option<i64>,
    /// Problems that keep the spec from being built; empty when valid.
    pub spec_problems: Vec<String>,
    /// Secret references that could not be resolved.
    pub missing_secrets: Vec<String>,
    pub paused: bool,
    pub stopped: bool,
    pub workers: Vec<WorkerObservation>,
    /// Managed Redis StatefulSet: (name, ready). None for external Redis.
    pub redis_workload: Option<(String, bool)>,
    pub redis: Probe,
    pub mongo: Probe,
    /// Monitoring objects are wanted but the prometheus-operator CRDs are missing.
    pub monitoring_crds_missing: Option<String>,
    /// The apply step failed with this message.
    pub apply_error: Option<String>,
    /// The last chain check, as the check Job wrote it; `None` before the first.
    pub chain_check: Option<ChainCheckStatus>,
    /// Whether backups are recent enough; `None` when not judged (invalid spec).
    pub backup: Option<BackupHealth>,
    /// Whether the newest backup restored in a drill is recent enough; `None` when
    /// no drill is asked for (or not judged).
    pub restore_drill: Option<DrillVerdict>,
    /// An image change holds this generation back: reason and message.
    pub upgrade: Option<UpgradeGate>,
    /// `status.upgrade` as the upgrade gate recorded it this reconcile.
    pub upgrade_status: Option<UpgradeStatus>,
    /// `status.handledRequests` after this reconcile started the requested Jobs.
    pub handled_requests: Option<HandledRequests>,
    /// What this reconcile learned about the declared indexes.
    pub indexes: IndexObservation,
    /// `status.indexes` as stored, judged when the indexes were not checked now.
    pub stored_indexes: Vec<IndexStatus>,
    /// `status.maintenance` as observed this reconcile; `None` keeps the stored one.
    pub maintenance: Option<Vec<MaintenanceRunStatus>>,
    /// The chain-check CronJob's last run failed before the check could report.
    pub chain_check_job_failure: Option<String>,
}

/// The declared indexes this reconcile.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum IndexObservation {
    /// Not due (checked within the interval), or paused: the stored result stands.
    #[default]
    NotChecked,
    /// Checked now.
    Fresh { statuses: Vec<IndexStatus>, unmanaged: Vec<UnmanagedIndexStatus>, summary: String },
    /// Could not be compared (MongoDB unreachable, credentials, ...).
    Failed { reason: String, message: String },
}

/// How an image change in progress affects Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeGate {
    /// Backup first, migration: the new images wait, as they should.
    Waiting { reason: String, message: String },
    /// Stopped until a person acts (a failed backup or migration, a stalled or
    /// rolled-back rollout).
    Blocked { reason: String, message: String },
}

fn probe_condition(type_: &str, probe: &Probe, generation: Option<i64>, now: &Time) -> Condition {
    match probe {
        Probe::Ok { message } => condition(type_, true, "Reachable", message.clone(), generation, now),
        Probe::Failed { reason, message } => condition(type_, false, reason, message.clone(), generation, now),
        Probe::Unknown { reason, message } => unknown(type_, reason, message.clone(), generation, now),
    }
}

fn workers_condition(observed: &Observed, now: &Time) -> Condition {
    let g = observed.generation;
    if !observed.spec_problems.is_empty() {
        return unknown(WORKERS_AVAILABLE, "InvalidSpec", "the spec is invalid; see SpecValid".into(), g, now);
    }
    let stuck: Vec<String> = observed.workers.iter().filter(|w| w.stuck).map(|w| w.deployment.clone()).collect();
    if !stuck.is_empty() {
        return condition(
            WORKERS_AVAILABLE,
            false,
            "RolloutStuck",
            format!("rollout exceeded its progress deadline: Deployment {}", stuck.join(", ")),
            g,
            now,
        );
    }
    let waiting: Vec<String> = observed
        .workers
        .iter()
        .filter(|w| w.missing || !w.rolled_out || w.ready < w.desired)
        .map(|w| {
            if w.missing {
                format!("{} not created", w.deployment)
            } else {
                format!("{} {}/{} ready", w.deployment, w.ready, w.desired)
            }
        })
        .collect();
    let ready: i32 = observed.workers.iter().map(|w| w.ready).sum();
    let desired: i32 = observed.workers.iter().map(|w| w.desired).sum();
    if waiting.is_empty() {
        let message = if observed.stopped {
            "spec.stopped is true: every worker is scaled to zero".to_string()
        } else {
            format!("{ready}/{desired} pods ready across {} workers", observed.workers.len())
        };
        condition(WORKERS_AVAILABLE, true, if observed.stopped { "Stopped" } else { "AllAvailable" }, message, g, now)
    } else {
        condition(WORKERS_AVAILABLE, false, "Progressing", format!("waiting for {}", waiting.join("; ")), g, now)
    }
}

fn redis_condition(observed: &Observed, now: &Time) -> Condition {
    let g = observed.generation;
    if let Some((name, false)) = &observed.redis_workload {
        return condition(REDIS_READY, false, "NotReady", format!("StatefulSet {name} has no ready pod"), g, now);
    }
    probe_condition(REDIS_READY, &observed.redis, g, now)
}

/// The chain check's verdict. It reports on the data, not on the deployment, so it
/// never blocks Ready; the alert and Argo CD's message carry it.
fn chain_condition(observed: &Observed, now: &Time) -> Condition {
    let g = observed.generation;
    if let Some(failure) = &observed.chain_check_job_failure {
        let last = observed
            .chain_check
            .as_ref()
            .and_then(|c| c.last_run.as_ref())
            .map(|t| format!("; the counts in status are from the check of {}", t.0));
        return unknown(
            CHAIN_INTEGRITY,
            "CheckJobFailed",
            format!("the last chain check could not run: {failure}{}", last.unwrap_or_default()),
            g,
            now,
        );
    }
    let Some(check) = &observed.chain_check else {
        return unknown(
            CHAIN_INTEGRITY,
            "NotRunYet",
            "no chain check has reported yet; it runs on spec.chainCheck.schedule, or now with the annotation referral.dev/check-now".into(),
            g,
            now,
        );
    };
    if let Some(failure) = &check.failure {
        let last = check.last_run.as_ref().map(|t| format!("; the counts in status are from the check of {}", t.0));
        return unknown(
            CHAIN_INTEGRITY,
            &failure.reason,
            format!("the last chain check could not run: {}{}", failure.message, last.unwrap_or_default()),
            g,
            now,
        );
    }
    let parts: Vec<String> = ChainViolation::found(check).into_iter().map(|(kind, n)| kind.describe(n)).collect();
    let when = check.last_run.as_ref().map(|t| format!(" (check of {})", t.0)).unwrap_or_default();
    if parts.is_empty() {
        condition(CHAIN_INTEGRITY, true, "NoViolations", format!("{} users checked{when}", check.users), g, now)
    } else {
        let mut message = format!("{}{when}", parts.join(", "));
        if let Some(first) = check.examples.first() {
            message.push_str(&format!("; e.g. {first}"));
        }
        message.push_str("; `referral-operator check chains --repair-plan` prints the fixes");
        condition(CHAIN_INTEGRITY, false, "ViolationsFound", message, g, now)
    }
}

/// The declared indexes' verdict: from this reconcile's check, or from the stored
/// result when none was due. Like the other data checks it does not block Ready.
fn indexes_condition(observed: &Observed, now: &Time) -> Condition {
    let g = observed.generation;
    let statuses = match &observed.indexes {
        IndexObservation::Failed { reason, message } => {
            return unknown(INDEXES_READY, reason, format!("the indexes could not be checked: {message}"), g, now);
        }
        IndexObservation::Fresh { statuses, .. } => statuses,
        IndexObservation::NotChecked if observed.stored_indexes.is_empty() => {
            return unknown(
                INDEXES_READY,
                "NotCheckedYet",
                "the declared indexes have not been checked yet".into(),
                g,
                now,
            );
        }
        IndexObservation::NotChecked => &observed.stored_indexes,
    };
    let named = |state: IndexState| -> Vec<String> {
        statuses
            .iter()
            .filter(|i| i.state == state)
            .map(|i| match &i.message {
                Some(m) => format!("{}.{}: {m}", i.collection, i.name),
                None => format!("{}.{}", i.collection, i.name),
            })
            .collect()
    };
    let conflicts = named(IndexState::Conflict);
    if !conflicts.is_empty() {
        return condition(INDEXES_READY, false, "IndexConflict", conflicts.join("; "), g, now);
    }
    let missing = named(IndexState::Missing);
    if !missing.is_empty() {
        return condition(INDEXES_READY, false, "IndexesMissing", missing.join("; "), g, now);
    }
    condition(INDEXES_READY, true, "AllPresent", format!("{} declared indexes in place", statuses.len()), g, now)
}

fn backup_condition(observed: &Observed, now: &Time) -> Option<Condition> {
    let health = observed.backup.as_ref()?;
    Some(condition(BACKUP_HEALTHY, health.healthy, health.reason, health.message.clone(), observed.generation, now))
}

fn drill_condition(observed: &Observed, now: &Time) -> Option<Condition> {
    let verdict = observed.restore_drill.as_ref()?;
    Some(condition(
        BACKUP_VERIFIED,
        verdict.verified,
        verdict.reason,
        verdict.message.clone(),
        observed.generation,
        now,
    ))
}

/// Every condition for `observed`, before merging with the old ones.
pub fn conditions(observed: &Observed, now: &Time) -> Vec<Condition> {
    let g = observed.generation;
    let mut out = Vec::new();
    let spec_ok = observed.spec_problems.is_empty();
    out.push(if spec_ok {
        condition(SPEC_VALID, true, "Valid", "the spec passed validation".into(), g, now)
    } else {
        condition(SPEC_VALID, false, "InvalidSpec", observed.spec_problems.join("; "), g, now)
    });
    out.push(if observed.paused {
        condition(
            PAUSED,
            true,
            "Paused",
            "spec.paused is true: children are not changed; status stays live".into(),
            g,
            now,
        )
    } else {
        condition(PAUSED, false, "Reconciling", "children are kept in line with the spec".into(), g, now)
    });
    out.push(workers_condition(observed, now));
    out.push(redis_condition(observed, now));
    out.push(probe_condition(MONGO_REACHABLE, &observed.mongo, g, now));
    out.push(match &observed.monitoring_crds_missing {
        Some(message) => condition(MONITORING, false, "PrometheusOperatorNotInstalled", message.clone(), g, now),
        None => condition(MONITORING, true, "Configured", "monitoring objects are applied as specified".into(), g, now),
    });
    if observed.spec_problems.is_empty() {
        out.push(indexes_condition(observed, now));
    }
    out.push(chain_condition(observed, now));
    out.extend(backup_condition(observed, now));
    out.extend(drill_condition(observed, now));
    out.push(ready_condition(observed, &out, now));
    out
}

/// Ready means this generation is in place and its dependencies answer. The message
/// names what blocks it.
fn ready_condition(observed: &Observed, others: &[Condition], now: &Time) -> Condition {
    let g = observed.generation;
    let not_ready = |reason: &str, message: String| condition(READY, false, reason, message, g, now);
    if !observed.spec_problems.is_empty() {
        return not_ready("InvalidSpec", observed.spec_problems.join("; "));
    }
    if !observed.missing_secrets.is_empty() {
        return not_ready("SecretMissing", format!("cannot resolve {}", observed.missing_secrets.join(", ")));
    }
    if let Some(error) = &observed.apply_error {
        return not_ready("ApplyFailed", error.clone());
    }
    if observed.paused {
        return not_ready("Paused", "spec.paused is true: this generation is not applied".into());
    }
    if observed.stopped {
        return not_ready("Stopped", "spec.stopped is true: every worker is scaled to zero".into());
    }
    if let Some(UpgradeGate::Blocked { reason, message } | UpgradeGate::Waiting { reason, message }) = &observed.upgrade
    {
        return not_ready(reason, message.clone());
    }
    for type_ in [WORKERS_AVAILABLE, REDIS_READY, MONGO_REACHABLE] {
        if let Some(c) = others.iter().filter(|c| c.type_ == type_).find(|c| c.status != "True") {
            return not_ready(&c.reason, format!("{type_}: {}", c.message));
        }
    }
    condition(READY, true, "Ready", format!("generation {} is in place", g.unwrap_or_default()), g, now)
}

/// The whole new status. Fields owned by other writers (index, chain and backup
/// summaries) are carried over from the old status untouched.
pub fn status(observed: &Observed, old: Option<&ReferralSystemStatus>, now: &Time) -> ReferralSystemStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = merge(conditions(observed, now), old_conditions);
    let mut not_ready: Vec<String> = observed
        .workers
        .iter()
        .filter(|w| w.missing || !w.rolled_out || w.ready < w.desired)
        .map(|w| format!("Deployment/{}", w.deployment))
        .collect();
    if let Some((name, false)) = &observed.redis_workload {
        not_ready.push(format!("StatefulSet/{name}"));
    }
    let ready: i32 = observed.workers.iter().map(|w| w.ready).sum();
    let desired: i32 = observed.workers.iter().map(|w| w.desired).sum();
    let base = old.cloned().unwrap_or_default();
    ReferralSystemStatus {
        observed_generation: observed.generation,
        conditions,
        workers_ready: (!observed.workers.is_empty()).then(|| format!("{ready}/{desired}")),
        workers: observed
            .workers
            .iter()
            .map(|w| WorkerStatus { name: w.name.clone(), desired: w.desired, ready: w.ready })
            .collect(),
        resources_not_ready: not_ready,
        upgrade: observed.upgrade_status.clone().or(base.upgrade.clone()),
        handled_requests: observed.handled_requests.clone().or(base.handled_requests.clone()),
        indexes: match &observed.indexes {
            IndexObservation::Fresh { statuses, .. } => statuses.clone(),
            _ => base.indexes.clone(),
        },
        index_summary: match &observed.indexes {
            IndexObservation::Fresh { summary, .. } => Some(summary.clone()),
            _ => base.index_summary.clone(),
        },
        unmanaged_indexes: match &observed.indexes {
            IndexObservation::Fresh { unmanaged, .. } => unmanaged.clone(),
            _ => base.unmanaged_indexes.clone(),
        },
        maintenance: observed.maintenance.clone().unwrap_or_else(|| base.maintenance.clone()),
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn healthy() -> Observed {
        Observed {
            generation: Some(3),
            spec_problems: vec![],
            missing_secrets: vec![],
            paused: false,
            stopped: false,
            workers: vec![WorkerObservation {
                name: "api".into(),
                deployment: "main-api".into(),
                desired: 2,
                ready: 2,
                rolled_out: true,
                stuck: false,
                missing: false,
            }],
            redis_workload: Some(("main-redis".into(), true)),
            redis: Probe::Ok { message: "PONG".into() },
            mongo: Probe::Ok { message: "ping ok".into() },
            monitoring_crds_missing: None,
            apply_error: None,
            chain_check: None,
            backup: None,
            restore_drill: None,
            upgrade: None,
            upgrade_status: None,
            handled_requests: None,
            indexes: IndexObservation::NotChecked,
            stored_indexes: vec![],
            maintenance: None,
            chain_check_job_failure: None,
        }
    }

    fn get<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn healthy_system_is_ready_for_its_generation() {
        let s = status(&healthy(), None, &at(100));
        let ready = get(&s.conditions, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Ready"));
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.workers_ready.as_deref(), Some("2/2"));
        assert!(s.resources_not_ready.is_empty());
    }

    #[test]
    fn a_worker_short_of_pods_blocks_ready_and_is_named() {
        let mut o = healthy();
        o.workers[0].ready = 1;
        let s = status(&o, None, &at(100));
        let ready = get(&s.conditions, READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "Progressing");
        assert!(ready.message.contains("main-api 1/2 ready"), "{}", ready.message);
        assert_eq!(s.resources_not_ready, ["Deployment/main-api"]);
    }

    #[test]
    fn unreachable_mongo_blocks_ready_with_the_probe_reason() {
        let mut o = healthy();
        o.mongo = Probe::Failed { reason: "AuthenticationFailed".into(), message: "bad credentials".into() };
        let s = status(&o, None, &at(100));
        let ready = get(&s.conditions, READY);
        assert_eq!(ready.reason, "AuthenticationFailed");
        assert!(ready.message.starts_with("MongoReachable:"));
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = status(&healthy(), None, &at(100));
        let same = status(&healthy(), Some(&first), &at(200));
        assert_eq!(same, first, "an unchanged observation must produce an identical status");
        let mut o = healthy();
        o.workers[0].ready = 0;
        let degraded = status(&o, Some(&first), &at(300));
        assert_eq!(get(&degraded.conditions, READY).last_transition_time, at(300));
        assert_eq!(get(&degraded.conditions, MONGO_REACHABLE).last_transition_time, at(100));
        o.workers[0].ready = 1;
        let still = status(&o, Some(&degraded), &at(400));
        assert_eq!(get(&still.conditions, READY).last_transition_time, at(300), "message changed, status did not");
    }

    #[test]
    fn invalid_spec_says_why_and_is_not_ready() {
        let mut o = healthy();
        o.spec_problems = vec!["spec.backup.schedule: minute field".into()];
        let s = status(&o, None, &at(1));
        assert_eq!(get(&s.conditions, SPEC_VALID).status, "False");
        assert_eq!(get(&s.conditions, WORKERS_AVAILABLE).status, "Unknown");
        assert_eq!(get(&s.conditions, READY).reason, "InvalidSpec");
    }

    #[test]
    fn paused_and_stopped_are_reported() {
        let mut o = healthy();
        o.paused = true;
        let s = status(&o, None, &at(1));
        assert_eq!(get(&s.conditions, PAUSED).status, "True");
        assert_eq!(get(&s.conditions, READY).reason, "Paused");
        let mut o = healthy();
        o.stopped = true;
        o.workers[0].desired = 0;
        o.workers[0].ready = 0;
        let s = status(&o, None, &at(1));
        assert_eq!(get(&s.conditions, WORKERS_AVAILABLE).reason, "Stopped");
        assert_eq!(get(&s.conditions, READY).reason, "Stopped");
    }

    #[test]
    fn missing_monitoring_crds_are_reported_without_blocking_ready() {
        let mut o = healthy();
        o.monitoring_crds_missing = Some("PrometheusRule CRD not installed".into());
        let s = status(&o, None, &at(1));
        assert_eq!(get(&s.conditions, MONITORING).status, "False");
        assert_eq!(get(&s.conditions, READY).status, "True");
    }

    #[test]
    fn summaries_written_by_others_are_kept() {
        let mut old = status(&healthy(), None, &at(1));
        old.index_summary = Some("6/6".into());
        let s = status(&healthy(), Some(&old), &at(2));
        assert_eq!(s.index_summary.as_deref(), Some("6/6"));
    }

    #[test]
    fn redis_not_answering_over_tls_blocks_ready_and_a_missing_secret_says_so() {
        let mut o = healthy();
        o.redis_workload = None;
        o.redis = Probe::Failed {
            reason: "TLSHandshakeFailed".into(),
            message: "the TLS handshake with Redis at r:6379 failed: invalid peer certificate: UnknownIssuer".into(),
        };
        let s = status(&o, None, &at(1));
        assert_eq!(get(&s.conditions, REDIS_READY).status, "False");
        assert_eq!(get(&s.conditions, READY).reason, "TLSHandshakeFailed");
        o.redis = Probe::Unknown { reason: "SecretMissing".into(), message: "cannot read".into() };
        let s = status(&o, None, &at(1));
        assert_eq!(get(&s.conditions, READY).reason, "SecretMissing");
    }

    #[test]
    fn chain_violations_are_reported_with_an_example_but_do_not_block_ready() {
        let mut o = healthy();
        let s = status(&o, None, &at(1));
        assert_eq!(get(&s.conditions, CHAIN_INTEGRITY).status, "Unknown");
        o.chain_check = Some(ChainCheckStatus {
            users: 1000,
            cycles: 3,
            orphans: 2,
            examples: vec!["cycle: u1 -> u2 -> u1".into()],
            ..ChainCheckStatus::default()
        });
        let s = status(&o, None, &at(1));
        let c = get(&s.conditions, CHAIN_INTEGRITY);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ViolationsFound"));
        assert_eq!(
            c.message,
            "3 cycles, 2 users whose referrer does not exist; e.g. cycle: u1 -> u2 -> u1; \
             `referral-operator check chains --repair-plan` prints the fixes"
        );
        assert_eq!(get(&s.conditions, READY).status, "True");
        o.chain_check = Some(ChainCheckStatus { users: 1000, ..ChainCheckStatus::default() });
        let s = status(&o, None, &at(1));
        assert_eq!(get(&s.conditions, CHAIN_INTEGRITY).status, "True");
    }

    /// Each count is named for what it counts: cycles are cycles (not their users), a
    /// tier above the maximum is a referral record's, malformed ones are documents of
    /// either collection.
    #[test]
    fn the_chain_integrity_message_names_each_count_for_what_it_counts() {
        let mut o = healthy();
        o.chain_check = Some(ChainCheckStatus {
            last_run: Some(at(1_764_558_000)),
            users: 1000,
            cycles: 1,
            too_deep: 4,
            orphans: 1,
            self_referrals: 2,
            malformed: 5,
            bad_referral_records: 1,
            ..ChainCheckStatus::default()
        });
        let s = status(&o, None, &at(1));
        let c = get(&s.conditions, CHAIN_INTEGRITY);
        assert_eq!(
            c.message,
            "1 cycle, 2 users referring themselves, 1 user whose referrer does not exist, \
             4 referral records with a tier above maxChainDepth, 5 malformed documents, \
             1 referral record disagreeing with the chain (check of 2025-12-01T03:00:00Z); \
             `referral-operator check chains --repair-plan` prints the fixes"
        );
    }

    #[test]
    fn a_chain_check_job_that_died_is_a_check_that_could_not_run_and_does_not_block_ready() {
        let mut o = healthy();
        o.chain_check =
            Some(ChainCheckStatus { users: 10, last_run: Some(at(1_764_558_000)), ..ChainCheckStatus::default() });
        o.chain_check_job_failure =
            Some("Job main-chain-check-29000 failed before the check could report: OOMKilled".into());
        let s = status(&o, None, &at(1));
        let c = get(&s.conditions, CHAIN_INTEGRITY);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "CheckJobFailed"));
        assert!(c.message.contains("OOMKilled") && c.message.contains("2025-12-01T03:00:00Z"), "{}", c.message);
        assert_eq!(get(&s.conditions, READY).status, "True");
    }

    #[test]
    fn maintenance_runs_are_reported_and_kept_when_not_observed() {
        let run = MaintenanceRunStatus {
            name: "cleanup".into(),
            cron_job: "main-maint-cleanup".into(),
            last_schedule_time: Some(at(60)),
            last_success_time: None,
            last_result: Some(crate::crd::status::RunResult::Failed),
            message: Some("Job main-maint-cleanup-1 failed: BackoffLimitExceeded".into()),
        };
        let mut o = healthy();
        o.maintenance = Some(vec![run.clone()]);
        let s = status(&o, None, &at(100));
        assert_eq!(s.maintenance, std::slice::from_ref(&run));
        assert_eq!(get(&s.conditions, READY).status, "True", "a maintenance run does not block Ready");
        let kept = status(&healthy(), Some(&s), &at(200));
        assert_eq!(kept.maintenance, [run]);
    }

    #[test]
    fn backup_health_becomes_a_condition_that_does_not_block_ready() {
        let mut o = healthy();
        assert!(status(&o, None, &at(1)).conditions.iter().all(|c| c.type_ != BACKUP_HEALTHY));
        o.backup = Some(BackupHealth {
            healthy: false,
            reason: crate::backup::health::REASON_OVERDUE,
            message: "one was due before X".into(),
            since: k8s_openapi::jiff::Timestamp::from_second(0).unwrap(),
            interval_seconds: Some(86_400),
            due: None,
        });
        let s = status(&o, None, &at(1));
        let c = get(&s.conditions, BACKUP_HEALTHY);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "BackupOverdue"));
        assert_eq!(get(&s.conditions, READY).status, "True");
    }

    #[test]
    fn the_drill_verdict_becomes_backup_verified_which_does_not_block_ready() {
        let mut o = healthy();
        assert!(
            status(&o, None, &at(1)).conditions.iter().all(|c| c.type_ != BACKUP_VERIFIED),
            "no drill, no condition"
        );
        o.restore_drill = Some(DrillVerdict {
            verified: false,
            reason: crate::backup::drill::REASON_FAILED,
            message: "the restore drill of X failed: users.bson.gz".into(),
            since: k8s_openapi::jiff::Timestamp::from_second(0).unwrap(),
            max_age_seconds: Some(691_200),
        });
        let s = status(&o, None, &at(1));
        let c = get(&s.conditions, BACKUP_VERIFIED);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "RestoreDrillFailed"));
        assert!(c.message.contains("users.bson.gz"));
        assert_eq!(get(&s.conditions, READY).status, "True");
    }

    #[test]
    fn an_upgrade_in_progress_or_blocked_holds_ready_with_its_reason() {
        let mut o = healthy();
        o.upgrade = Some(UpgradeGate::Waiting { reason: "BackingUp".into(), message: "backup Job x runs".into() });
        let ready = get(&status(&o, None, &at(1)).conditions, READY).clone();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "BackingUp"));
        o.upgrade =
            Some(UpgradeGate::Blocked { reason: "MigrationFailed".into(), message: "migration Job y failed".into() });
        let ready = get(&status(&o, None, &at(1)).conditions, READY).clone();
        assert_eq!(ready.reason, "MigrationFailed");
        assert_eq!(ready.message, "migration Job y failed");
    }

    #[test]
    fn indexes_are_judged_fresh_or_from_status_and_never_block_ready() {
        let index = |name: &str, state: IndexState, message: Option<&str>| IndexStatus {
            collection: "users".into(),
            name: name.into(),
            state,
            message: message.map(Into::into),
        };
        let mut o = healthy();
        assert_eq!(get(&status(&o, None, &at(1)).conditions, INDEXES_READY).reason, "NotCheckedYet");
        o.indexes = IndexObservation::Fresh {
            statuses: vec![
                index("referralCode_1", IndexState::Conflict, Some("exists without unique: true")),
                index("email_1", IndexState::Present, None),
            ],
            unmanaged: vec![],
            summary: "1/2 (1 conflict)".into(),
        };
        let s = status(&o, None, &at(1));
        let c = get(&s.conditions, INDEXES_READY);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "IndexConflict"));
        assert_eq!(c.message, "users.referralCode_1: exists without unique: true");
        assert_eq!(s.index_summary.as_deref(), Some("1/2 (1 conflict)"));
        assert_eq!(s.indexes.len(), 2);
        assert_eq!(get(&s.conditions, READY).status, "True");

        // Not due: the stored result is judged and kept.
        let mut later = healthy();
        later.stored_indexes = s.indexes.clone();
        let kept = status(&later, Some(&s), &at(2));
        assert_eq!(kept.indexes, s.indexes);
        assert_eq!(get(&kept.conditions, INDEXES_READY).reason, "IndexConflict");

        later.indexes = IndexObservation::Failed { reason: "MongoUnreachable".into(), message: "no server".into() };
        let failed = status(&later, Some(&s), &at(3));
        assert_eq!(get(&failed.conditions, INDEXES_READY).status, "Unknown");
        assert_eq!(failed.indexes, s.indexes, "a failed check keeps the last result");
    }
}
