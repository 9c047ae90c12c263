//! Tests of the restore state machine, its ordering and predicates, and the status
//! it records: hand-made observations with known answers.

use super::*;
use crate::crd::IndexPolicy;
use crate::reconcilers::restore::tests::system;

fn status(phase: RestorePhase) -> ReferralRestoreStatus {
    ReferralRestoreStatus { phase: Some(phase), ..ReferralRestoreStatus::default() }
}

fn observed<'a>(system: &'a ValidatedSystem, status: Option<&'a ReferralRestoreStatus>) -> RestoreObservation<'a> {
    RestoreObservation {
        restore_uid: "uid-1",
        status,
        system: Some(system),
        earlier_restore: None,
        backup_running: None,
        upgrade_in_progress: false,
        workers_stopped: false,
        now: at(1_000).0,
        restore_job: JobPhase::Absent,
        indexes: IndexOutcome::NotYet,
        chain_check_job: JobPhase::Absent,
        workers_restored: false,
    }
}

#[test]
fn a_restore_walks_every_step_in_order() {
    let system = system("{managed: {}}");
    let job = restore_job_name(&system, "uid-1");
    let check = verify_job_name(&system, "uid-1");
    let mut recorded: Option<ReferralRestoreStatus> = None;
    let mut steps = Vec::new();
    let (absent, nothing) = (JobPhase::Absent, StillRunning::default());
    // The world as the controller would see it after acting on each step, a second
    // later (the status as the driver records it, in whole seconds).
    let mut world = observed(&system, None);
    for _ in 0..12 {
        let step = next_restore_step(&RestoreObservation { status: recorded.as_ref(), ..world.clone() });
        steps.push(step.clone());
        let old = recorded.clone().unwrap_or_default();
        recorded = Some(next_status(&old, &step, &facts(&absent, &absent, &nothing), &Time(world.now)));
        world.now += SignedDuration::from_secs(1);
        match &step {
            RestoreStep::ScaleWorkersToZero => {}
            RestoreStep::WaitForWorkersToStop => world.workers_stopped = true,
            // The driver looks again once the confirmation can pass.
            RestoreStep::ConfirmWorkersStopped => world.now += SignedDuration::from_secs(2),
            RestoreStep::CreateRestoreJob { .. } => world.restore_job = JobPhase::Running,
            RestoreStep::WaitForRestoreJob { .. } => world.restore_job = JobPhase::Succeeded,
            RestoreStep::EnsureIndexes => world.indexes = IndexOutcome::Ensured,
            RestoreStep::RunChainCheck { .. } => world.chain_check_job = JobPhase::Running,
            RestoreStep::WaitForChainCheck { .. } => world.chain_check_job = JobPhase::Succeeded,
            RestoreStep::ScaleWorkersBack => world.workers_restored = true,
            RestoreStep::Done { .. } | RestoreStep::Wait { .. } => {}
        }
        if matches!(step, RestoreStep::Done { .. }) {
            break;
        }
    }
    assert_eq!(
        steps,
        [
            RestoreStep::ScaleWorkersToZero,
            RestoreStep::WaitForWorkersToStop,
            RestoreStep::ConfirmWorkersStopped,
            RestoreStep::CreateRestoreJob { job_name: job.clone() },
            RestoreStep::WaitForRestoreJob { job_name: job },
            RestoreStep::EnsureIndexes,
            RestoreStep::RunChainCheck { job_name: check.clone() },
            RestoreStep::WaitForChainCheck { job_name: check },
            RestoreStep::ScaleWorkersBack,
            RestoreStep::Done {
                phase: RestorePhase::Succeeded,
                message: "restored; the chain check after the restore passed".into(),
                hold: false
            },
        ]
    );
    let holds: Vec<bool> = steps.iter().map(RestoreStep::holds_system).collect();
    assert_eq!(holds, [true, true, true, true, true, true, true, true, false, false]);
    let phases: Vec<RestorePhase> = steps.iter().map(RestoreStep::phase).collect();
    assert_eq!(phases[..3], [RestorePhase::ScalingDown; 3], "the confirmation is part of scaling down: no new event");
}

/// The status as the driver records it for `step` at `second`.
fn record(old: Option<&ReferralRestoreStatus>, step: &RestoreStep, second: i64) -> ReferralRestoreStatus {
    let (absent, nothing) = (JobPhase::Absent, StillRunning::default());
    next_status(&old.cloned().unwrap_or_default(), step, &facts(&absent, &absent, &nothing), &at(second))
}

fn at_millis(millis: i64) -> Timestamp {
    Timestamp::from_millisecond(millis).unwrap()
}

/// A restore past the scale-down, its workers still stopping, recorded at `second`.
fn scaling_down(second: i64) -> ReferralRestoreStatus {
    let started = record(None, &RestoreStep::ScaleWorkersToZero, second);
    record(Some(&started), &RestoreStep::WaitForWorkersToStop, second)
}

#[test]
fn the_restore_job_waits_until_the_workers_have_read_as_stopped_long_enough() {
    let system = system("{managed: {}}");
    let stopping = scaling_down(95);
    // First seen stopped at 100.9 s: recorded as 100 s (whole seconds).
    let first =
        RestoreObservation { workers_stopped: true, now: at_millis(100_900), ..observed(&system, Some(&stopping)) };
    assert_eq!(next_restore_step(&first), RestoreStep::ConfirmWorkersStopped);
    let confirming = record(Some(&stopping), &RestoreStep::ConfirmWorkersStopped, 100);
    let stopped = confirming.conditions.iter().find(|c| c.type_ == WORKERS_STOPPED).unwrap();
    assert_eq!((stopped.status.as_str(), stopped.reason.as_str()), ("True", "Stopped"));
    assert_eq!(stopped.last_transition_time, at(100));
    assert_eq!(confirming.phase, Some(RestorePhase::ScalingDown));
    assert!(confirming.holds_system);
    let message = confirming.message.as_deref().unwrap();
    assert!(message.contains("read as stopped") && message.contains("2s before the restore starts"), "{message}");
    // Looked at again (the write's own wake-up, a requeue): still confirming, and the
    // status it records is the one stored, so nothing is written.
    for millis in [101_000, 102_000, 102_900] {
        let again = RestoreObservation { now: at_millis(millis), ..first.clone() };
        let again = RestoreObservation { status: Some(&confirming), ..again };
        assert_eq!(next_restore_step(&again), RestoreStep::ConfirmWorkersStopped, "at {millis} ms");
        assert_eq!(record(Some(&confirming), &RestoreStep::ConfirmWorkersStopped, millis / 1000), confirming);
    }
    // 102.9 s is 2 s after 100.9 s but the stored 100 s cannot tell: only from 103 s
    // on is the first observation surely WORKERS_STOPPED_FOR old.
    let later = RestoreObservation { status: Some(&confirming), now: at_millis(103_000), ..first.clone() };
    let job = restore_job_name(&system, "uid-1");
    assert_eq!(next_restore_step(&later), RestoreStep::CreateRestoreJob { job_name: job.clone() });
    // The condition keeps the time the workers were first seen stopped.
    let restoring = record(Some(&confirming), &RestoreStep::CreateRestoreJob { job_name: job }, 103);
    let stopped = restoring.conditions.iter().find(|c| c.type_ == WORKERS_STOPPED).unwrap();
    assert_eq!((stopped.status.as_str(), stopped.last_transition_time.clone()), ("True", at(100)));
    // A recorded time ahead of this clock (another operator's) is not long enough.
    let ahead = RestoreObservation { status: Some(&confirming), now: at_millis(99_000), ..first };
    assert_eq!(next_restore_step(&ahead), RestoreStep::ConfirmWorkersStopped);
}

#[test]
fn a_worker_pod_seen_between_the_two_observations_sends_the_restore_back_to_waiting() {
    let system = system("{managed: {}}");
    let stopping = scaling_down(95);
    let confirming = record(Some(&stopping), &RestoreStep::ConfirmWorkersStopped, 100);
    // The pod whose create was on its way appears.
    let pod =
        RestoreObservation { workers_stopped: false, now: at_millis(101_000), ..observed(&system, Some(&confirming)) };
    assert_eq!(next_restore_step(&pod), RestoreStep::WaitForWorkersToStop);
    let waiting = record(Some(&confirming), &RestoreStep::WaitForWorkersToStop, 101);
    let stopped = waiting.conditions.iter().find(|c| c.type_ == WORKERS_STOPPED).unwrap();
    assert_eq!((stopped.status.as_str(), stopped.reason.as_str()), ("False", "Stopping"));
    // Gone again: long after the first True, yet no Job: the confirmation starts over.
    let gone = RestoreObservation { workers_stopped: true, now: at_millis(110_000), ..pod };
    let gone = RestoreObservation { status: Some(&waiting), ..gone };
    assert_eq!(next_restore_step(&gone), RestoreStep::ConfirmWorkersStopped);
    let again = record(Some(&waiting), &RestoreStep::ConfirmWorkersStopped, 110);
    let stopped = again.conditions.iter().find(|c| c.type_ == WORKERS_STOPPED).unwrap();
    assert_eq!((stopped.status.as_str(), stopped.last_transition_time.clone()), ("True", at(110)), "a new time");
    let soon = RestoreObservation { status: Some(&again), now: at_millis(112_000), ..gone.clone() };
    assert_eq!(next_restore_step(&soon), RestoreStep::ConfirmWorkersStopped);
    let late = RestoreObservation { status: Some(&again), now: at_millis(113_000), ..gone };
    assert!(matches!(next_restore_step(&late), RestoreStep::CreateRestoreJob { .. }));
}

#[test]
fn an_operator_restart_between_the_two_observations_carries_on() {
    let system = system("{managed: {}}");
    let confirming = record(Some(&scaling_down(95)), &RestoreStep::ConfirmWorkersStopped, 100);
    // The next process reads the status back from the API server: the stored
    // condition is the only memory of the first observation.
    let stored: ReferralRestoreStatus = serde_json::from_value(serde_json::to_value(&confirming).unwrap()).unwrap();
    assert_eq!(stored, confirming);
    for (millis, created) in [(101_500, false), (103_000, true)] {
        let before = RestoreObservation {
            workers_stopped: true,
            now: at_millis(millis),
            ..observed(&system, Some(&confirming))
        };
        let after = RestoreObservation { status: Some(&stored), ..before.clone() };
        let step = next_restore_step(&after);
        assert_eq!(step, next_restore_step(&before), "at {millis} ms");
        assert_eq!(matches!(step, RestoreStep::CreateRestoreJob { .. }), created, "at {millis} ms: {step:?}");
    }
}

#[test]
fn a_restore_never_starts_while_a_backup_another_restore_or_an_upgrade_runs() {
    let system = system("{managed: {}}");
    let mut world = observed(&system, None);
    world.backup_running = Some("main-backup-29000000");
    assert!(matches!(next_restore_step(&world), RestoreStep::Wait { reason: WAIT_BACKUP_RUNNING, .. }));
    world.upgrade_in_progress = true;
    assert!(matches!(next_restore_step(&world), RestoreStep::Wait { reason: WAIT_UPGRADE_RUNNING, .. }));
    world.earlier_restore = Some("restore-a");
    let step = next_restore_step(&world);
    assert!(
        matches!(&step, RestoreStep::Wait { reason: WAIT_OTHER_RESTORE, message } if message.contains("restore-a"))
    );
    assert!(!step.holds_system());
    assert_eq!(step.phase(), RestorePhase::Pending);
    world.system = None;
    assert!(matches!(next_restore_step(&world), RestoreStep::Wait { reason: WAIT_SYSTEM_MISSING, .. }));
}

#[test]
fn a_backup_that_began_before_the_hold_delays_the_restore_job() {
    let system = system("{managed: {}}");
    // The workers read as stopped long enough ago.
    let scaling = record(Some(&scaling_down(95)), &RestoreStep::ConfirmWorkersStopped, 100);
    let mut world = observed(&system, Some(&scaling));
    world.workers_stopped = true;
    world.backup_running = Some("main-backup-29000000");
    assert_eq!(next_restore_step(&world), RestoreStep::WaitForWorkersToStop);
    world.backup_running = None;
    assert!(matches!(next_restore_step(&world), RestoreStep::CreateRestoreJob { .. }));
    // Recorded, the backup sends the confirmation back to the start.
    world.backup_running = Some("main-backup-29000000");
    let waiting = record(Some(&scaling), &next_restore_step(&world), 1_000);
    world.backup_running = None;
    world.status = Some(&waiting);
    assert_eq!(next_restore_step(&world), RestoreStep::ConfirmWorkersStopped);
}

#[test]
fn an_operator_restart_midway_gives_the_same_step_and_job_name() {
    let system = system("{managed: {}}");
    let restoring = status(RestorePhase::Restoring);
    let mut world = observed(&system, Some(&restoring));
    world.workers_stopped = true;
    world.restore_job = JobPhase::Running;
    let before = next_restore_step(&world);
    // A new operator process: nothing in memory, the same status and cluster.
    let again = observed(&system, Some(&restoring));
    let again = RestoreObservation { workers_stopped: true, restore_job: JobPhase::Running, ..again };
    assert_eq!(next_restore_step(&again), before);
    assert_eq!(before, RestoreStep::WaitForRestoreJob { job_name: restore_job_name(&system, "uid-1") });
    // After a restart while the Job was being created, it is found, not duplicated.
    let created_but_not_recorded = status(RestorePhase::ScalingDown);
    let world = RestoreObservation {
        workers_stopped: true,
        restore_job: JobPhase::Running,
        ..observed(&system, Some(&created_but_not_recorded))
    };
    assert!(matches!(next_restore_step(&world), RestoreStep::WaitForRestoreJob { .. }));
}

#[test]
fn a_failed_restore_job_keeps_workers_at_zero_and_says_how_to_go_on() {
    let system = system("{managed: {}}");
    let restoring = status(RestorePhase::Restoring);
    let mut world = observed(&system, Some(&restoring));
    world.workers_stopped = true;
    world.restore_job = JobPhase::Failed("BackoffLimitExceeded".into());
    let step = next_restore_step(&world);
    let RestoreStep::Done { phase, message, hold } = &step else { panic!("{step:?}") };
    assert_eq!(*phase, RestorePhase::Failed);
    assert!(*hold && step.holds_system());
    assert!(message.contains("delete this one"), "{message}");
    // Once recorded as Failed, it stays failed and held, whatever is observed.
    let failed = ReferralRestoreStatus {
        phase: Some(RestorePhase::Failed),
        message: Some(message.clone()),
        ..ReferralRestoreStatus::default()
    };
    let later = observed(&system, Some(&failed));
    assert!(matches!(next_restore_step(&later), RestoreStep::Done { phase: RestorePhase::Failed, hold: true, .. }));
}

#[test]
fn failed_indexes_hold_and_a_failed_chain_check_is_reported_but_releases() {
    let system = system("{managed: {}}");
    let ensuring = status(RestorePhase::EnsuringIndexes);
    let mut world = observed(&system, Some(&ensuring));
    world.workers_stopped = true;
    world.restore_job = JobPhase::Succeeded;
    world.indexes = IndexOutcome::Failed("conflict on users.referralCode_1".into());
    assert!(matches!(next_restore_step(&world), RestoreStep::Done { phase: RestorePhase::Failed, hold: true, .. }));
    world.indexes = IndexOutcome::Ensured;
    world.chain_check_job = JobPhase::Failed("BackoffLimitExceeded".into());
    assert_eq!(next_restore_step(&world), RestoreStep::ScaleWorkersBack);
    world.workers_restored = true;
    let RestoreStep::Done { phase, message, hold } = next_restore_step(&world) else { panic!() };
    assert_eq!(phase, RestorePhase::Succeeded);
    assert!(!hold);
    assert!(message.contains("chain check after the restore failed"), "{message}");
}

#[test]
fn a_succeeded_restore_is_left_alone() {
    let system = system("{managed: {}}");
    let done = status(RestorePhase::Succeeded);
    let world = observed(&system, Some(&done));
    assert!(matches!(next_restore_step(&world), RestoreStep::Done { phase: RestorePhase::Succeeded, hold: false, .. }));
}

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
    set_condition(&mut status.conditions, retrying_indexes("MongoDB unreachable", &at(3)));
    assert_eq!(status.conditions[0].status, "Unknown");
    assert_eq!(status.conditions[0].message, "could not ensure the indexes yet, retrying: MongoDB unreachable");
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
    for phase in [UpgradePhase::BackingUp, UpgradePhase::Migrating, UpgradePhase::RollingOut, UpgradePhase::Verifying] {
        assert!(upgrade_in_progress(Some(&with(phase))), "{phase:?}");
    }
    for phase in
        [UpgradePhase::Succeeded, UpgradePhase::Failed, UpgradePhase::RolledBack, UpgradePhase::VerificationFailed]
    {
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

    let confirming =
        next_status(&down, &RestoreStep::ConfirmWorkersStopped, &facts(&absent, &absent, &nothing), &at(25));
    assert_eq!(confirming.phase, Some(RestorePhase::ScalingDown));
    assert!(confirming.holds_system);
    assert_eq!(types(&confirming), [(WORKERS_STOPPED, "True")]);

    let job = RestoreStep::CreateRestoreJob { job_name: "main-restore-1".into() };
    let restoring = next_status(&confirming, &job, &facts(&absent, &absent, &nothing), &at(30));
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
    set_condition(&mut indexes.conditions, IndexesResult { in_place: true, message: "6/6".into() }.condition(&at(55)));

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
    assert_eq!(stopped.last_transition_time, at(25), "moves only when the status changes");
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
    for key in ["message", "restoreJob", "chainCheckJob", "chainCheck", "announcedPhase", "startedAt", "completedAt"] {
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
        announced_phase: Some(RestorePhase::ScalingDown),
        started_at: Some(at(1)),
        completed_at: Some(at(2)),
    };
    let sent: ReferralRestoreStatus = serde_json::from_value(status_patch(&full)["status"].clone()).unwrap();
    assert_eq!(sent, full);
    let keys = status_patch(&full)["status"].as_object().unwrap().len();
    assert_eq!(keys, serde_json::to_value(&full).unwrap().as_object().unwrap().len());
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
