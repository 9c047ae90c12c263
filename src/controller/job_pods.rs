//! What a failed Job's pod said on the way out, read for the status that reports the
//! failure (the ReferralRestore's condition, `BackupHealthy`, the upgrade's Degraded):
//! the pods are listed by the Job's label, never watched or cached, and the text is
//! chosen and cleaned by [`failed_pod_message`].

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::reconcilers::job::{JobPhase, failed_pod_message};

/// A failed Job's phase with what its pod said (see [`failed_pod_message`]).
/// Reading pods needs `list` on them, which the chart grants with restores on
/// (`rbac.referralRestores`, default); without it, or when the pods are gone, the
/// Job's own condition is what is reported.
pub async fn with_pod_message(pods: &Api<Pod>, job: &str, phase: JobPhase) -> JobPhase {
    let JobPhase::Failed(why) = phase else { return phase };
    match pod_message(pods, job).await {
        Some(said) => JobPhase::Failed(format!("{why}; {said}")),
        None => JobPhase::Failed(why),
    }
}

/// What the newest failed pod of `job` said, if a pod can be read.
pub async fn pod_message(pods: &Api<Pod>, job: &str) -> Option<String> {
    let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    match pods.list(&params).await {
        Ok(list) => failed_pod_message(&list.items),
        Err(error) => {
            tracing::debug!(job, %error, "cannot list the Job's pods for its failure message");
            None
        }
    }
}
