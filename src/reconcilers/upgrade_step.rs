//! Image changes as a pure state machine: back up first, migrate, then roll out; roll
//! back a rollout that stalls (docs/controller.md, "Image changes"). What is built
//! for each step is in [`super::upgrade`]; the driver is `controller::upgrade`.
//!
//! [`next_upgrade_step`] is a pure state machine. Its inputs are what the controller
//! observed (the images the worker Deployments carry, the pre-upgrade backup and
//! migration Jobs looked up by name, how the rollout goes) and `status.upgrade`; its
//! output is one step, the images the worker Deployments must carry this reconcile,
//! and the `status.upgrade` to record. Job names come from a hash of the target
//! images (and the migration), so an operator that restarts midway finds the Jobs it
//! created, and progress lives in status, never in memory: the same inputs always
//! give the same decision.
//!
//! The controller must write the returned status before it acts on the step (create
//! a Job, apply Deployments): then a crash between the two only repeats the step.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::status::{UpgradePhase, UpgradeStatus};
use crate::crd::validate::ValidatedSystem;

use super::job::JobPhase;
use super::upgrade::{WorkerImages, backup_job_name, desired_images, migration_job_name, upgrade_target};
use super::workers::worker_name;

/// How the worker Deployments' rollout goes (over every worker Deployment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    /// Some Deployment has not finished.
    Progressing,
    /// Every Deployment is current, updated and available.
    Complete,
    /// A Deployment reports `Progressing=False, ProgressDeadlineExceeded`.
    Stalled { deployment: String, message: String },
}

/// How the worker Deployments' rollout goes, from their status.
pub fn rollout_state(system: &ValidatedSystem, deployments: &[Deployment]) -> RolloutState {
    let mut complete = true;
    for worker in &system.spec.workers {
        let name = worker_name(system, &worker.name);
        let Some(d) = deployments.iter().find(|d| d.metadata.name.as_deref() == Some(name.as_str())) else {
            complete = false;
            continue;
        };
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        if let Some(stalled) = status.conditions.iter().flatten().find(|c| {
            c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        }) {
            return RolloutState::Stalled { deployment: name, message: stalled.message.clone().unwrap_or_default() };
        }
        let current = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        complete &= current
            && status.updated_replicas.unwrap_or(0) >= desired
            && status.available_replicas.unwrap_or(0) >= desired
            && status.replicas.unwrap_or(0) <= desired;
    }
    if complete { RolloutState::Complete } else { RolloutState::Progressing }
}

/// What the controller observed.
#[derive(Debug, Clone, PartialEq)]
pub struct UpgradeObservation<'a> {
    pub system: &'a ValidatedSystem,
    /// [`running_images`].
    pub running: &'a WorkerImages,
    /// `status.upgrade` as stored.
    pub recorded: Option<&'a UpgradeStatus>,
    /// The Job named [`backup_job_name`] for the current target.
    pub backup_job: JobPhase,
    /// The Job named [`migration_job_name`] for the current target.
    pub migration_job: JobPhase,
    pub rollout: RolloutState,
    /// A ReferralRestore holds this system: nothing changes images meanwhile.
    pub restore_in_progress: bool,
    /// Time recorded as `startedAt` when a change starts.
    pub now: Time,
}

/// What to do this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeStep {
    /// No image change is under way; build Deployments as the spec says.
    Steady,
    /// An image change waits for something else (a restore); images held.
    Wait {
        reason: &'static str,
        message: String,
    },
    /// Create the pre-upgrade backup Job (`backup::backup_job` with
    /// `BackupPurpose::PreUpgrade`); images held.
    CreateBackupJob {
        job_name: String,
    },
    WaitForBackup {
        job_name: String,
    },
    /// Create [`migration_job`]; images held.
    CreateMigrationJob {
        job_name: String,
    },
    WaitForMigration {
        job_name: String,
    },
    /// Apply the new images now.
    RollOut,
    /// The new images are applied; pods are rolling.
    WaitForRollout,
    /// Stopped: the system is Degraded with this reason until a person acts.
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// The rollout stalled and `autoRollback` is on: apply the previous images.
    RollBack {
        message: String,
    },
    /// Rolled back earlier; previous images stay until the spec's images change.
    HeldAfterRollback {
        message: String,
    },
}

/// Reasons of [`UpgradeStep::Wait`] and [`UpgradeStep::Blocked`], for the Degraded
/// condition.
pub const REASON_RESTORE_IN_PROGRESS: &str = "RestoreInProgress";
pub const REASON_BACKUP_FAILED: &str = "PreUpgradeBackupFailed";
pub const REASON_MIGRATION_FAILED: &str = "MigrationFailed";
pub const REASON_ROLLOUT_STALLED: &str = "RolloutStalled";
pub const REASON_ROLLED_BACK: &str = "RolledBack";

/// The images worker Deployments carry this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagePlan {
    /// As the spec says.
    Desired,
    /// These images ([`pin_worker_images`]); workers not listed follow the spec.
    Pin(WorkerImages),
}

/// The decision: one step, the images, and `status.upgrade` to record first.
#[derive(Debug, Clone, PartialEq)]
pub struct UpgradeDecision {
    pub step: UpgradeStep,
    pub images: ImagePlan,
    /// The `status.upgrade` to store (write it when it differs from what is stored).
    pub status: Option<UpgradeStatus>,
}

impl UpgradeDecision {
    /// Whether the system should be reported Degraded, with reason and message.
    pub fn degraded(&self) -> Option<(&'static str, &str)> {
        match &self.step {
            UpgradeStep::Blocked { reason, message } => Some((reason, message)),
            UpgradeStep::RollBack { message } | UpgradeStep::HeldAfterRollback { message } => {
                Some((REASON_ROLLED_BACK, message))
            }
            _ => None,
        }
    }
}

/// The next step of an image change. Pure; see the module docs.
pub fn next_upgrade_step(observed: &UpgradeObservation<'_>) -> UpgradeDecision {
    let system = observed.system;
    let desired = desired_images(system);
    let target = upgrade_target(system);
    let recorded = observed.recorded;
    let for_target = recorded.filter(|r| r.target == target);
    let changed: Vec<&String> = desired
        .iter()
        .filter(|(w, image)| observed.running.get(*w).is_some_and(|r| r != *image))
        .map(|(w, _)| w)
        .collect();
    let keep = |step| UpgradeDecision { step, images: ImagePlan::Desired, status: recorded.cloned() };

    if changed.is_empty() {
        // The Deployments carry the spec's images: either nothing changes, or a
        // rollout this operator started is under way or done.
        let Some(record) = for_target.filter(|r| matches!(r.phase, UpgradePhase::RollingOut | UpgradePhase::Failed))
        else {
            return keep(UpgradeStep::Steady);
        };
        let with = |phase, message: Option<String>| UpgradeStatus { phase, message, ..record.clone() };
        return match &observed.rollout {
            RolloutState::Complete => UpgradeDecision {
                step: UpgradeStep::Steady,
                images: ImagePlan::Desired,
                status: Some(with(UpgradePhase::Succeeded, Some("every worker runs the new images".into()))),
            },
            RolloutState::Progressing => UpgradeDecision {
                step: UpgradeStep::WaitForRollout,
                images: ImagePlan::Desired,
                status: Some(record.clone()),
            },
            RolloutState::Stalled { deployment, message } if system.spec.upgrade.auto_rollback => {
                let text = format!(
                    "Deployment {deployment} did not progress ({message}); the previous images are back and stay until spec.image changes"
                );
                UpgradeDecision {
                    step: UpgradeStep::RollBack { message: text.clone() },
                    images: ImagePlan::Pin(record.previous_images.clone()),
                    status: Some(with(UpgradePhase::RolledBack, Some(text))),
                }
            }
            RolloutState::Stalled { deployment, message } => {
                let text = format!(
                    "Deployment {deployment} did not progress ({message}); fix the image or set spec.upgrade.autoRollback"
                );
                UpgradeDecision {
                    step: UpgradeStep::Blocked { reason: REASON_ROLLOUT_STALLED, message: text.clone() },
                    images: ImagePlan::Desired,
                    status: Some(with(UpgradePhase::Failed, Some(text))),
                }
            }
        };
    }

    // Some worker runs another image than the spec asks for.
    if let Some(record) = for_target.filter(|r| r.phase == UpgradePhase::RolledBack) {
        return UpgradeDecision {
            step: UpgradeStep::HeldAfterRollback { message: record.message.clone().unwrap_or_default() },
            images: ImagePlan::Pin(record.previous_images.clone()),
            status: Some(record.clone()),
        };
    }
    let hold = ImagePlan::Pin(observed.running.clone());
    if observed.restore_in_progress {
        return UpgradeDecision {
            step: UpgradeStep::Wait {
                reason: REASON_RESTORE_IN_PROGRESS,
                message: "a ReferralRestore holds the system; the new images wait for it".into(),
            },
            images: hold,
            status: recorded.cloned(),
        };
    }
    let backup_job = backup_job_name(system, &target);
    let migration_job = migration_job_name(system, &target);
    let status_for = |phase: UpgradePhase, message: String| UpgradeStatus {
        phase,
        target: target.clone(),
        target_images: desired.clone(),
        // What runs now is what a rollback returns to; once recorded for this target
        // it is kept, since the images are held until the rollout.
        previous_images: for_target.map(|r| r.previous_images.clone()).unwrap_or_else(|| observed.running.clone()),
        backup_job: system.spec.upgrade.backup_first.then(|| backup_job.clone()),
        migration_job: system.spec.migration.is_some().then(|| migration_job.clone()),
        message: Some(message),
        started_at: for_target.and_then(|r| r.started_at.clone()).or_else(|| Some(observed.now.clone())),
    };
    let held =
        |step, phase, message| UpgradeDecision { step, images: hold.clone(), status: Some(status_for(phase, message)) };
    if system.spec.upgrade.backup_first {
        match &observed.backup_job {
            JobPhase::Absent => {
                return held(
                    UpgradeStep::CreateBackupJob { job_name: backup_job.clone() },
                    UpgradePhase::BackingUp,
                    format!("backing up before the new images (Job {backup_job})"),
                );
            }
            JobPhase::Running => {
                return held(
                    UpgradeStep::WaitForBackup { job_name: backup_job.clone() },
                    UpgradePhase::BackingUp,
                    format!("backing up before the new images (Job {backup_job})"),
                );
            }
            JobPhase::Failed(why) => {
                let message = format!(
                    "the pre-upgrade backup Job {backup_job} failed ({why}); the workers keep their images. Delete the Job to try again"
                );
                return held(
                    UpgradeStep::Blocked { reason: REASON_BACKUP_FAILED, message: message.clone() },
                    UpgradePhase::Failed,
                    message,
                );
            }
            JobPhase::Succeeded => {}
        }
    }
    if system.spec.migration.is_some() {
        match &observed.migration_job {
            JobPhase::Absent => {
                return held(
                    UpgradeStep::CreateMigrationJob { job_name: migration_job.clone() },
                    UpgradePhase::Migrating,
                    format!("migrating the database (Job {migration_job})"),
                );
            }
            JobPhase::Running => {
                return held(
                    UpgradeStep::WaitForMigration { job_name: migration_job.clone() },
                    UpgradePhase::Migrating,
                    format!("migrating the database (Job {migration_job})"),
                );
            }
            JobPhase::Failed(why) => {
                let message = format!(
                    "the migration Job {migration_job} failed ({why}); the workers keep their images. The pre-upgrade backup can be restored with a ReferralRestore; delete the Job to run the migration again"
                );
                return held(
                    UpgradeStep::Blocked { reason: REASON_MIGRATION_FAILED, message: message.clone() },
                    UpgradePhase::Failed,
                    message,
                );
            }
            JobPhase::Succeeded => {}
        }
    }
    UpgradeDecision {
        step: UpgradeStep::RollOut,
        images: ImagePlan::Desired,
        status: Some(status_for(UpgradePhase::RollingOut, format!("rolling out {}", changed_list(&changed, &desired)))),
    }
}

fn changed_list(changed: &[&String], desired: &WorkerImages) -> String {
    changed
        .iter()
        .map(|w| format!("{w}={}", desired.get(*w).map(String::as_str).unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcilers::BuildContext;
    use crate::reconcilers::upgrade::tests::{MIGRATION, NEW, OLD, images, system};
    use crate::reconcilers::upgrade::{migration_job_name, pin_worker_images, running_images};
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn now() -> Time {
        Time("2026-11-23T10:00:00Z".parse().unwrap())
    }

    fn observe<'a>(
        system: &'a ValidatedSystem,
        running: &'a WorkerImages,
        recorded: Option<&'a UpgradeStatus>,
    ) -> UpgradeObservation<'a> {
        UpgradeObservation {
            system,
            running,
            recorded,
            backup_job: JobPhase::Absent,
            migration_job: JobPhase::Absent,
            rollout: RolloutState::Complete,
            restore_in_progress: false,
            now: now(),
        }
    }

    #[test]
    fn running_images_are_what_the_operator_put_there_not_another_managers_edit() {
        let old = system(OLD, "");
        let ctx = BuildContext { operator_image: "operator:test".into(), secrets_hash: None, operator_pods: None };
        let mut deployments = super::super::build(&old, &ctx).deployments;
        let system = old;
        assert_eq!(running_images(&system, &deployments), images(OLD));
        // Another manager sets the container's image: drift, not an image change.
        for d in &mut deployments {
            d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some("intruder:1".into());
        }
        assert_eq!(running_images(&system, &deployments), images(OLD));
        assert_eq!(
            next_upgrade_step(&observe(&system, &running_images(&system, &deployments), None)).step,
            UpgradeStep::Steady
        );
        // A Deployment from before the annotation: its container's image.
        for d in &mut deployments {
            d.metadata.annotations = None;
        }
        assert_eq!(running_images(&system, &deployments), images("intruder:1"));
        // Pinning keeps the annotation in step with the container.
        let new = self::system(NEW, "");
        let mut children = super::super::build(&new, &ctx);
        pin_worker_images(&mut children, &system, &images(OLD));
        assert_eq!(running_images(&system, &children.deployments), images(OLD));
    }

    #[test]
    fn a_new_system_or_an_unchanged_image_is_steady() {
        let system = system(OLD, "");
        let nothing = WorkerImages::new();
        let decision = next_upgrade_step(&observe(&system, &nothing, None));
        assert_eq!(decision, UpgradeDecision { step: UpgradeStep::Steady, images: ImagePlan::Desired, status: None });
        let same = images(OLD);
        assert_eq!(next_upgrade_step(&observe(&system, &same, None)).step, UpgradeStep::Steady);
    }

    #[test]
    fn backup_then_migration_then_rollout_with_images_held_until_then() {
        let system = system(NEW, MIGRATION);
        let target = upgrade_target(&system);
        let running = images(OLD);
        let backup = backup_job_name(&system, &target);
        let migrate = migration_job_name(&system, &target);

        let first = next_upgrade_step(&observe(&system, &running, None));
        assert_eq!(first.step, UpgradeStep::CreateBackupJob { job_name: backup.clone() });
        assert_eq!(first.images, ImagePlan::Pin(running.clone()));
        let recorded = first.status.clone().unwrap();
        assert_eq!(recorded.phase, UpgradePhase::BackingUp);
        assert_eq!(recorded.previous_images, running);
        assert_eq!(recorded.target_images, images(NEW));
        assert_eq!(recorded.started_at, Some(now()));

        let mut seen = observe(&system, &running, Some(&recorded));
        seen.backup_job = JobPhase::Running;
        let waiting = next_upgrade_step(&seen);
        assert_eq!(waiting.step, UpgradeStep::WaitForBackup { job_name: backup.clone() });
        assert_eq!(waiting.images, ImagePlan::Pin(running.clone()), "Deployments untouched while the backup runs");
        assert_eq!(waiting.status.as_ref(), Some(&recorded), "nothing new to record");

        seen.backup_job = JobPhase::Succeeded;
        let migrate_now = next_upgrade_step(&seen);
        assert_eq!(migrate_now.step, UpgradeStep::CreateMigrationJob { job_name: migrate.clone() });
        assert_eq!(migrate_now.images, ImagePlan::Pin(running.clone()));
        let recorded = migrate_now.status.clone().unwrap();
        assert_eq!(recorded.phase, UpgradePhase::Migrating);

        let mut seen = observe(&system, &running, Some(&recorded));
        seen.backup_job = JobPhase::Succeeded;
        seen.migration_job = JobPhase::Running;
        assert_eq!(next_upgrade_step(&seen).step, UpgradeStep::WaitForMigration { job_name: migrate });
        seen.migration_job = JobPhase::Succeeded;
        let roll = next_upgrade_step(&seen);
        assert_eq!(roll.step, UpgradeStep::RollOut);
        assert_eq!(roll.images, ImagePlan::Desired);
        let recorded = roll.status.clone().unwrap();
        assert_eq!(recorded.phase, UpgradePhase::RollingOut);
        assert_eq!(recorded.previous_images, running, "the rollback target survives every step");
        assert_eq!(recorded.started_at, Some(now()));

        // The Deployments carry the new images now.
        let now_running = images(NEW);
        let mut seen = observe(&system, &now_running, Some(&recorded));
        seen.rollout = RolloutState::Progressing;
        assert_eq!(next_upgrade_step(&seen).step, UpgradeStep::WaitForRollout);
        seen.rollout = RolloutState::Complete;
        let done = next_upgrade_step(&seen);
        assert_eq!(done.step, UpgradeStep::Steady);
        assert_eq!(done.status.unwrap().phase, UpgradePhase::Succeeded);
    }

    #[test]
    fn without_backup_first_or_migration_the_rollout_is_immediate() {
        let system = system(NEW, "  upgrade: {backupFirst: false}");
        let running = images(OLD);
        let decision = next_upgrade_step(&observe(&system, &running, None));
        assert_eq!(decision.step, UpgradeStep::RollOut);
        assert_eq!(decision.status.unwrap().backup_job, None);
    }

    #[test]
    fn a_failed_backup_blocks_the_rollout_and_keeps_the_old_images() {
        let system = system(NEW, MIGRATION);
        let running = images(OLD);
        let mut seen = observe(&system, &running, None);
        seen.backup_job = JobPhase::Failed("BackoffLimitExceeded".into());
        let decision = next_upgrade_step(&seen);
        let UpgradeStep::Blocked { reason, message } = &decision.step else { panic!("{decision:?}") };
        assert_eq!(*reason, REASON_BACKUP_FAILED);
        assert!(message.contains("Delete the Job"), "{message}");
        assert_eq!(decision.images, ImagePlan::Pin(running.clone()));
        assert_eq!(decision.status.as_ref().unwrap().phase, UpgradePhase::Failed);
        assert_eq!(decision.degraded().map(|(r, _)| r), Some(REASON_BACKUP_FAILED));
        // Even with the migration Job somehow done, a failed backup still blocks.
        seen.migration_job = JobPhase::Succeeded;
        assert!(matches!(next_upgrade_step(&seen).step, UpgradeStep::Blocked { .. }));
    }

    #[test]
    fn a_failed_migration_blocks_and_points_at_the_backup() {
        let system = system(NEW, MIGRATION);
        let running = images(OLD);
        let mut seen = observe(&system, &running, None);
        seen.backup_job = JobPhase::Succeeded;
        seen.migration_job = JobPhase::Failed("BackoffLimitExceeded".into());
        let decision = next_upgrade_step(&seen);
        assert!(
            matches!(&decision.step, UpgradeStep::Blocked { reason: REASON_MIGRATION_FAILED, message } if message.contains("ReferralRestore"))
        );
        assert_eq!(decision.images, ImagePlan::Pin(running));
    }

    #[test]
    fn an_operator_restart_midway_gives_the_same_decision() {
        let system = system(NEW, MIGRATION);
        let running = images(OLD);
        let first = next_upgrade_step(&observe(&system, &running, None));
        let recorded = first.status.clone().unwrap();
        // Restarted after recording BackingUp and creating the Job: the Job is found
        // by its name (Running), the same step follows, no second Job.
        let mut after = observe(&system, &running, Some(&recorded));
        after.backup_job = JobPhase::Running;
        let a = next_upgrade_step(&after);
        let b = next_upgrade_step(&after.clone());
        assert_eq!(a, b);
        assert_eq!(a.step, UpgradeStep::WaitForBackup { job_name: backup_job_name(&system, &upgrade_target(&system)) });
        // Restarted after recording RollingOut but before applying: rolls out again.
        let mut seen = observe(&system, &running, None);
        seen.backup_job = JobPhase::Succeeded;
        seen.migration_job = JobPhase::Succeeded;
        let roll = next_upgrade_step(&seen);
        let rolling = roll.status.clone().unwrap();
        let mut restarted = observe(&system, &running, Some(&rolling));
        restarted.backup_job = JobPhase::Succeeded;
        restarted.migration_job = JobPhase::Succeeded;
        let again = next_upgrade_step(&restarted);
        assert_eq!(again.step, UpgradeStep::RollOut);
        assert_eq!(again.status.as_ref().unwrap().previous_images, running);
        assert_eq!(again.status.unwrap().started_at, rolling.started_at);
    }

    #[test]
    fn job_names_follow_the_target_so_a_new_image_gets_new_jobs() {
        let a = system(NEW, MIGRATION);
        let b = system("example/referral-service:1.6.0", MIGRATION);
        let c = system(NEW, "  migration: {args: [npm, run, migrate:other]}");
        let (ta, tb, tc) = (upgrade_target(&a), upgrade_target(&b), upgrade_target(&c));
        assert_ne!(ta, tb);
        assert_ne!(ta, tc, "another migration is another change");
        assert_eq!(ta, upgrade_target(&system(NEW, MIGRATION)));
        assert_ne!(backup_job_name(&a, &ta), backup_job_name(&a, &tb));
        assert!(backup_job_name(&a, &ta).len() <= 63);
        // A change of target mid-way starts over with the new Job names, keeping what
        // actually runs as the rollback target.
        let running = images(OLD);
        let first = next_upgrade_step(&observe(&a, &running, None)).status.unwrap();
        let second = next_upgrade_step(&observe(&b, &running, Some(&first)));
        assert_eq!(second.step, UpgradeStep::CreateBackupJob { job_name: backup_job_name(&b, &tb) });
        assert_eq!(second.status.unwrap().previous_images, running);
    }

    #[test]
    fn a_stalled_rollout_degrades_or_rolls_back_and_stays_rolled_back() {
        let running_new = images(NEW);
        let old = images(OLD);
        for auto in [false, true] {
            let extra = format!("  upgrade: {{autoRollback: {auto}}}");
            let system = system(NEW, &extra);
            let rolling = UpgradeStatus {
                phase: UpgradePhase::RollingOut,
                target: upgrade_target(&system),
                target_images: images(NEW),
                previous_images: old.clone(),
                backup_job: None,
                migration_job: None,
                message: None,
                started_at: Some(now()),
            };
            let mut seen = observe(&system, &running_new, Some(&rolling));
            seen.rollout = RolloutState::Stalled {
                deployment: "main-api".into(),
                message: "ReplicaSet main-api-5d9 has timed out progressing".into(),
            };
            let decision = next_upgrade_step(&seen);
            if !auto {
                assert!(
                    matches!(&decision.step, UpgradeStep::Blocked { reason: REASON_ROLLOUT_STALLED, message } if message.contains("main-api"))
                );
                assert_eq!(decision.images, ImagePlan::Desired, "without autoRollback nothing is changed back");
                assert_eq!(decision.status.as_ref().unwrap().phase, UpgradePhase::Failed);
                // If the rollout later completes, the change succeeded after all.
                let failed = decision.status.unwrap();
                let mut later = observe(&system, &running_new, Some(&failed));
                later.rollout = RolloutState::Complete;
                assert_eq!(next_upgrade_step(&later).status.unwrap().phase, UpgradePhase::Succeeded);
                continue;
            }
            assert!(matches!(decision.step, UpgradeStep::RollBack { .. }));
            assert_eq!(decision.images, ImagePlan::Pin(old.clone()));
            let rolled_back = decision.status.unwrap();
            assert_eq!(rolled_back.phase, UpgradePhase::RolledBack);
            // Next reconcile: the Deployments run the old images again, spec still says
            // new: hold the old ones, no new backup, no loop.
            let held = next_upgrade_step(&observe(&system, &old, Some(&rolled_back)));
            assert!(matches!(held.step, UpgradeStep::HeldAfterRollback { .. }));
            assert_eq!(held.images, ImagePlan::Pin(old.clone()));
            assert_eq!(held.degraded().map(|(r, _)| r), Some(REASON_ROLLED_BACK));
            // A new image in the spec starts a new change.
            let fixed = self::system("example/referral-service:1.5.1", &extra);
            let next = next_upgrade_step(&observe(&fixed, &old, Some(&rolled_back)));
            assert!(matches!(next.step, UpgradeStep::CreateBackupJob { .. }));
        }
    }

    #[test]
    fn a_restore_in_progress_holds_the_images() {
        let system = system(NEW, "");
        let running = images(OLD);
        let mut seen = observe(&system, &running, None);
        seen.restore_in_progress = true;
        let decision = next_upgrade_step(&seen);
        assert!(matches!(decision.step, UpgradeStep::Wait { reason: REASON_RESTORE_IN_PROGRESS, .. }));
        assert_eq!(decision.images, ImagePlan::Pin(running));
    }

    fn deployment(name: &str, generation: i64, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta { name: Some(name.into()), generation: Some(generation), ..ObjectMeta::default() },
            spec: Some(DeploymentSpec { replicas: Some(1), ..DeploymentSpec::default() }),
            status: Some(status),
        }
    }

    fn all(system: &ValidatedSystem, status: DeploymentStatus) -> Vec<Deployment> {
        system.spec.workers.iter().map(|w| deployment(&worker_name(system, &w.name), 2, status.clone())).collect()
    }

    #[test]
    fn the_rollout_is_complete_only_when_every_worker_is_current_and_available() {
        let s = system(OLD, "");
        let done = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(1),
            updated_replicas: Some(1),
            available_replicas: Some(1),
            ..DeploymentStatus::default()
        };
        assert_eq!(rollout_state(&s, &all(&s, done.clone())), RolloutState::Complete);
        let stale = DeploymentStatus { observed_generation: Some(1), ..done.clone() };
        assert_eq!(rollout_state(&s, &all(&s, stale)), RolloutState::Progressing);
        assert_eq!(rollout_state(&s, &[]), RolloutState::Progressing, "a missing Deployment is not rolled out");
        let stalled = DeploymentStatus {
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet x has timed out progressing".into()),
                ..DeploymentCondition::default()
            }]),
            ..done
        };
        match rollout_state(&s, &all(&s, stalled)) {
            RolloutState::Stalled { message, .. } => assert!(message.contains("timed out")),
            other => panic!("expected Stalled, got {other:?}"),
        }
    }
}
