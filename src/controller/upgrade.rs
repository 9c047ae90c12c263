//! The upgrade gate in the cluster, the thin driver of
//! [`crate::reconcilers::upgrade_step`]: observes what [`next_upgrade_step`] needs, records
//! its `status.upgrade` before acting (so a crash between the two only repeats the
//! step), creates the pre-upgrade backup and migration Jobs, and pins the worker
//! images in the built Deployments while the new ones must wait.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};

use crate::crd::ReferralSystem;
use crate::crd::status::{ReferralSystemStatus, StatusWriter, UpgradePhase, UpgradeStatus};
use crate::crd::validate::ValidatedSystem;
use crate::reconcilers::backup::{BackupPurpose, backup_job};
use crate::reconcilers::job::JobPhase;
use crate::reconcilers::upgrade::{
    backup_job_name, desired_images, migration_job, migration_job_name, pin_worker_images, running_images,
    upgrade_target, verify_job, verify_job_name,
};
use crate::reconcilers::upgrade_step::{
    ImagePlan, REASON_ROLLED_BACK, UpgradeObservation, UpgradeStep, next_upgrade_step, rollout_state,
};
use crate::reconcilers::{BuildContext, Children};

use super::conditions::UpgradeGate;
use super::context::Context;
use super::error::Error;
use super::reconcile::apply_status;

/// Reason on Ready while the new images wait for the backup or the migration.
pub const REASON_UPGRADE_IN_PROGRESS: &str = "UpgradeInProgress";
/// Reason on Ready while the verification Job checks the rolled-out images.
pub const REASON_VERIFYING: &str = "Verifying";

/// What the gate decided for this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOutcome {
    /// How Ready is affected.
    pub gate: Option<UpgradeGate>,
    /// `status.upgrade` after this reconcile.
    pub status: Option<UpgradeStatus>,
}

/// The gate's effect on Ready for a step.
pub fn gate_for(step: &UpgradeStep, message: Option<&str>) -> Option<UpgradeGate> {
    let message = message.unwrap_or_default().to_string();
    match step {
        UpgradeStep::Wait { reason, message } => {
            Some(UpgradeGate::Waiting { reason: reason.to_string(), message: message.clone() })
        }
        UpgradeStep::CreateBackupJob { .. }
        | UpgradeStep::WaitForBackup { .. }
        | UpgradeStep::CreateMigrationJob { .. }
        | UpgradeStep::WaitForMigration { .. } => {
            Some(UpgradeGate::Waiting { reason: REASON_UPGRADE_IN_PROGRESS.into(), message })
        }
        UpgradeStep::CreateVerifyJob { .. } | UpgradeStep::WaitForVerify { .. } => {
            Some(UpgradeGate::Waiting { reason: REASON_VERIFYING.into(), message })
        }
        UpgradeStep::Blocked { reason, message } => {
            Some(UpgradeGate::Blocked { reason: reason.to_string(), message: message.clone() })
        }
        UpgradeStep::RollBack { message } | UpgradeStep::HeldAfterRollback { message } => {
            Some(UpgradeGate::Blocked { reason: REASON_ROLLED_BACK.into(), message: message.clone() })
        }
        UpgradeStep::Steady | UpgradeStep::RollOut | UpgradeStep::WaitForRollout => None,
    }
}

async fn job_phase(jobs: &Api<Job>, name: &str) -> Result<JobPhase, Error> {
    let job = jobs.get_opt(name).await.map_err(|source| Error::Read { kind: "Job", name: name.into(), source })?;
    Ok(JobPhase::of(job.as_ref()))
}

async fn create_job(jobs: &Api<Job>, job: &Job) -> Result<(), Error> {
    let params = PostParams { field_manager: Some(crate::reconcilers::meta::MANAGER.into()), ..PostParams::default() };
    match jobs.create(&params, job).await {
        Ok(_) => Ok(()),
        // Created by an earlier reconcile whose status write came first: the step repeats.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::CreateJob { name: job.metadata.name.clone().unwrap_or_default(), source }),
    }
}

/// Runs the gate: decides, records `status.upgrade`, acts, and pins images in
/// `children`. `deployments` are the worker Deployments as they are now.
#[allow(clippy::too_many_arguments)]
pub async fn gate_images(
    ctx: &Context,
    object: &ReferralSystem,
    system: &ValidatedSystem,
    deployments: &[Deployment],
    restore_in_progress: bool,
    children: &mut Children,
    build: &BuildContext,
    now: Time,
) -> Result<GateOutcome, Error> {
    let recorded = object.status.as_ref().and_then(|s| s.upgrade.as_ref());
    let running = running_images(system, deployments);
    let desired = desired_images(system);
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &system.namespace);
    // The Jobs are only consulted while some worker runs another image than the spec
    // asks for; a steady system costs no reads here.
    let images_differ = desired.iter().any(|(w, image)| running.get(w).is_some_and(|r| r != image));
    let (backup, migration) = if images_differ {
        let target = upgrade_target(system);
        (
            job_phase(&jobs, &backup_job_name(system, &target)).await?,
            job_phase(&jobs, &migration_job_name(system, &target)).await?,
        )
    } else {
        (JobPhase::Absent, JobPhase::Absent)
    };
    // The verification Job is read only while a rollout of these images is followed or
    // verified: a verified system costs no read either.
    let target = upgrade_target(system);
    let following = recorded.filter(|r| r.target == target).is_none_or(|r| {
        matches!(
            r.phase,
            UpgradePhase::RollingOut
                | UpgradePhase::Failed
                | UpgradePhase::Verifying
                | UpgradePhase::VerificationFailed
        )
    });
    let verify = if system.spec.verify.is_some() && !images_differ && following {
        let name = verify_job_name(system, &target);
        let phase = job_phase(&jobs, &name).await?;
        super::job_pods::with_pod_message(&Api::<Pod>::namespaced(ctx.client.clone(), &system.namespace), &name, phase)
            .await
    } else {
        JobPhase::Absent
    };
    let decision = next_upgrade_step(&UpgradeObservation {
        system,
        running: &running,
        recorded,
        backup_job: backup,
        migration_job: migration,
        verify_job: verify,
        rollout: rollout_state(system, deployments),
        restore_in_progress,
        now,
    });
    if decision.status.as_ref() != recorded {
        let name = system.name.clone();
        let api = Api::<ReferralSystem>::namespaced(ctx.client.clone(), &system.namespace);
        let status = ReferralSystemStatus { upgrade: decision.status.clone(), ..ReferralSystemStatus::default() };
        apply_status(&api, &name, StatusWriter::Upgrade, &status)
            .await
            .map_err(|source| Error::WriteStatus { system: name, source })?;
    }
    match &decision.step {
        UpgradeStep::CreateBackupJob { job_name } => {
            create_job(&jobs, &backup_job(system, build, job_name, BackupPurpose::PreUpgrade)).await?;
        }
        UpgradeStep::CreateMigrationJob { job_name } => {
            if let Some(job) = migration_job(system, build, job_name) {
                create_job(&jobs, &job).await?;
            }
        }
        UpgradeStep::CreateVerifyJob { job_name } => {
            if let Some(job) = verify_job(system, build, job_name) {
                create_job(&jobs, &job).await?;
            }
        }
        _ => {}
    }
    publish_transition(ctx, object, recorded, decision.status.as_ref()).await;
    if let ImagePlan::Pin(images) = &decision.images {
        pin_worker_images(children, system, images);
    }
    let message = decision.status.as_ref().and_then(|s| s.message.as_deref());
    Ok(GateOutcome { gate: gate_for(&decision.step, message), status: decision.status.clone() })
}

/// The event for a change of `status.upgrade`'s phase a person should see in
/// `kubectl describe`, if any: pure, for the tests.
pub fn transition_event(
    old: Option<&UpgradeStatus>,
    new: Option<&UpgradeStatus>,
) -> Option<(EventType, &'static str, String)> {
    let new = new?;
    let same_phase = old.is_some_and(|o| o.target == new.target && o.phase == new.phase);
    if same_phase {
        return None;
    }
    let message = new.message.clone().unwrap_or_default();
    match new.phase {
        UpgradePhase::Verifying => Some((EventType::Normal, "Verifying", message)),
        UpgradePhase::Succeeded if new.verify_job.is_some() => Some((EventType::Normal, "Verified", message)),
        UpgradePhase::VerificationFailed => Some((EventType::Warning, "VerificationFailed", message)),
        UpgradePhase::RolledBack => Some((EventType::Warning, "RolledBack", message)),
        UpgradePhase::Failed => Some((EventType::Warning, "UpgradeFailed", message)),
        _ => None,
    }
}

async fn publish_transition(
    ctx: &Context,
    object: &ReferralSystem,
    old: Option<&UpgradeStatus>,
    new: Option<&UpgradeStatus>,
) {
    let Some((type_, reason, note)) = transition_event(old, new) else { return };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Upgrade".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_steps_hold_ready_and_failures_block_it() {
        let wait = gate_for(&UpgradeStep::WaitForBackup { job_name: "j".into() }, Some("backing up"));
        assert_eq!(
            wait,
            Some(UpgradeGate::Waiting { reason: REASON_UPGRADE_IN_PROGRESS.into(), message: "backing up".into() })
        );
        let blocked = gate_for(&UpgradeStep::Blocked { reason: "MigrationFailed", message: "m".into() }, None);
        assert!(matches!(blocked, Some(UpgradeGate::Blocked { reason, .. }) if reason == "MigrationFailed"));
        assert_eq!(gate_for(&UpgradeStep::WaitForRollout, None), None, "a rollout shows in WorkersAvailable");
        assert_eq!(gate_for(&UpgradeStep::Steady, None), None);
        let verifying = gate_for(&UpgradeStep::WaitForVerify { job_name: "v".into() }, Some("verifying"));
        assert!(matches!(verifying, Some(UpgradeGate::Waiting { reason, .. }) if reason == REASON_VERIFYING));
    }

    #[test]
    fn verification_and_rollback_are_told_once_per_phase() {
        let status = |phase, verify: bool| UpgradeStatus {
            phase,
            target: "t".into(),
            target_images: Default::default(),
            previous_images: Default::default(),
            backup_job: None,
            migration_job: None,
            verify_job: verify.then(|| "main-verify-t".to_string()),
            message: Some("m".into()),
            started_at: None,
        };
        let rolling = status(UpgradePhase::RollingOut, false);
        let verifying = status(UpgradePhase::Verifying, true);
        assert_eq!(transition_event(Some(&rolling), Some(&verifying)).map(|e| e.1), Some("Verifying"));
        assert_eq!(transition_event(Some(&verifying), Some(&verifying)), None, "no repeat while it runs");
        let failed = status(UpgradePhase::VerificationFailed, true);
        let event = transition_event(Some(&verifying), Some(&failed)).unwrap();
        assert_eq!((event.0, event.1), (EventType::Warning, "VerificationFailed"));
        let rolled = status(UpgradePhase::RolledBack, true);
        assert_eq!(transition_event(Some(&verifying), Some(&rolled)).map(|e| e.1), Some("RolledBack"));
        let verified = status(UpgradePhase::Succeeded, true);
        assert_eq!(transition_event(Some(&verifying), Some(&verified)).map(|e| e.1), Some("Verified"));
        assert_eq!(transition_event(Some(&rolling), Some(&status(UpgradePhase::Succeeded, false))), None);
    }
}
