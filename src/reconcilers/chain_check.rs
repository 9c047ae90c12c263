//! The referral-chain integrity check: a CronJob running this operator's own binary
//! (`check chains`) as the system's job identity, which may read its ReferralSystem
//! and write that one object's status, and nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::validate::ValidatedSystem;

use super::cron::{Schedule, cron_job};
use super::env::{from_secret, mongo_tls_env};
use super::meta::{MAX_CRONJOB, MAX_DNS_LABEL, child_name};
use super::security::{restricted_container, restricted_pod};
use super::{BuildContext, Children};

/// `app.kubernetes.io/component` of the chain-check objects.
pub const COMPONENT: &str = "chain-check";

/// Name of the chain-check CronJob.
pub fn cron_job_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "chain-check", MAX_CRONJOB)
}

/// Name of the Job for a check asked for with `referral.dev/check-now: <token>`: the
/// same token always gives the same name, so the Job is created once.
pub fn manual_check_job_name(system: &ValidatedSystem, token: &str) -> String {
    let hash = super::meta::short_hash(token.as_bytes());
    child_name(&system.name, &format!("check-now-{}", &hash[..8]), MAX_DNS_LABEL)
}

/// Adds the CronJob; its pods run as [`job_identity`](super::job_identity).
pub fn build(system: &ValidatedSystem, ctx: &BuildContext, children: &mut Children) {
    children.cron_jobs.push(check_cron_job(system, ctx, super::job_identity::identity_name(system)));
}

fn check_cron_job(
    system: &ValidatedSystem,
    ctx: &BuildContext,
    service_account: String,
) -> k8s_openapi::api::batch::v1::CronJob {
    let spec = &system.spec;
    let container = Container {
        args: Some(vec![
            "check".into(),
            "chains".into(),
            "--system".into(),
            system.name.clone(),
            "--write-status".into(),
        ]),
        env: Some(
            [
                from_secret("MONGODB_URI", &spec.mongodb.uri_secret_ref),
                EnvVar {
                    name: "POD_NAMESPACE".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.namespace".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                },
            ]
            .into_iter()
            .chain(mongo_tls_env(system))
            .collect(),
        ),
        // The analysis keeps a few bytes per user (docs/checks.md measures its peak).
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), Quantity("512Mi".into()))])),
            ..ResourceRequirements::default()
        }),
        ..restricted_container("check-chains", ctx.operator_image.clone())
    };
    // The check writes its system's status: it needs the identity's token. It runs
    // this operator's image, which needs no pull secret of the service's.
    let pod = PodSpec {
        service_account_name: Some(service_account),
        automount_service_account_token: Some(true),
        image_pull_secrets: None,
        ..restricted_pod(system, vec![container])
    };
    cron_job(
        system,
        ctx,
        Schedule {
            name: cron_job_name(system),
            component: COMPONENT,
            schedule: &spec.chain_check.schedule,
            suspend: spec.chain_check.suspend,
            backoff_limit: 1,
            active_deadline_seconds: 2 * 3600,
        },
        pod,
    )
}
