//! Image changes, what gets built for them: the images the spec asks for and the
//! ones running, the change's identity and its Job names, the migration Job, and the
//! worker Deployments with their images held back. The pre-upgrade backup Job is
//! [`super::backup::backup_job`]. The steps that decide when each is used are in
//! [`super::upgrade_step`] (docs/controller.md, "Image changes").

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;

use crate::crd::validate::ValidatedSystem;

use super::job::{OneOff, one_off_job, template_pod};
use super::meta::{ANNOTATION_WORKER_IMAGE, MAX_DNS_LABEL, child_name, short_hash};
use super::workers::worker_name;
use super::{BuildContext, Children};

/// `app.kubernetes.io/component` of migration Jobs (pre-upgrade backups are
/// `backup`).
pub const MIGRATION_COMPONENT: &str = "migration";

/// Image per worker name.
pub type WorkerImages = BTreeMap<String, String>;

/// The images the spec asks for, per worker.
pub fn desired_images(system: &ValidatedSystem) -> WorkerImages {
    system
        .spec
        .workers
        .iter()
        .map(|w| (w.name.clone(), w.image.clone().unwrap_or_else(|| system.spec.image.clone())))
        .collect()
}

/// The images the operator last put on the worker Deployments (their
/// `referral.dev/image` annotation). Workers without a Deployment (a new system, a
/// new worker) are absent: nothing runs to protect.
pub fn running_images(system: &ValidatedSystem, deployments: &[Deployment]) -> WorkerImages {
    let mut running = WorkerImages::new();
    for worker in &system.spec.workers {
        let name = worker_name(system, &worker.name);
        let Some(deployment) = deployments.iter().find(|d| d.metadata.name.as_deref() == Some(name.as_str())) else {
            continue;
        };
        // What the operator put there; the container's image only for a Deployment
        // written before the annotation existed.
        let applied = deployment.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_WORKER_IMAGE)).cloned();
        let image = applied.filter(|i| !i.is_empty()).or_else(|| {
            deployment
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.iter().find(|c| c.name == worker.name))
                .and_then(|c| c.image.clone())
        });
        if let Some(image) = image {
            running.insert(worker.name.clone(), image);
        }
    }
    running
}

/// Identifies one change: the target images and the migration that goes with them.
pub fn upgrade_target(system: &ValidatedSystem) -> String {
    let mut text = String::new();
    for (worker, image) in desired_images(system) {
        text.push_str(&format!("{worker}={image}\n"));
    }
    if let Some(migration) = &system.spec.migration {
        text.push_str(&serde_json::to_string(migration).unwrap_or_default());
    }
    short_hash(text.as_bytes())
}

/// Name of the pre-upgrade backup Job for `target`.
pub fn backup_job_name(system: &ValidatedSystem, target: &str) -> String {
    child_name(&system.name, &format!("pre-upgrade-{}", head(target)), MAX_DNS_LABEL)
}

/// Name of the migration Job for `target`.
pub fn migration_job_name(system: &ValidatedSystem, target: &str) -> String {
    child_name(&system.name, &format!("migrate-{}", head(target)), MAX_DNS_LABEL)
}

/// The first 8 characters of a target (it may come back from status, so it is not
/// trusted to be the ASCII hash the operator wrote).
fn head(target: &str) -> String {
    target.chars().take(8).collect()
}

/// Name of the verification Job for `target`.
pub fn verify_job_name(system: &ValidatedSystem, target: &str) -> String {
    child_name(&system.name, &format!("verify-{}", &target[..target.len().min(8)]), MAX_DNS_LABEL)
}

/// `app.kubernetes.io/component` of verification Jobs.
pub const VERIFY_COMPONENT: &str = "verify";

/// The verification Job from `spec.verify`: the spec's (new) image unless another is
/// set, the workers' environment, no retries (a failed check is the answer, not a
/// flake to retry). Its container's last log lines become its termination message,
/// which the controller reports when it fails. `None` when the spec has no `verify`.
pub fn verify_job(system: &ValidatedSystem, ctx: &BuildContext, job_name: &str) -> Option<Job> {
    let verify = system.spec.verify.as_ref()?;
    let mut pod = template_pod(system, "verify", &verify.template);
    for container in &mut pod.containers {
        container.termination_message_policy = Some("FallbackToLogsOnError".into());
    }
    Some(one_off_job(
        system,
        ctx,
        OneOff {
            name: job_name,
            component: VERIFY_COMPONENT,
            purpose: "verify",
            backoff_limit: 0,
            active_deadline_seconds: verify.template.active_deadline_seconds,
            pod_failure_policy: None,
        },
        pod,
    ))
}

/// The migration Job from `spec.migration`: the new image (unless another is set),
/// the workers' environment, no retries (a migration that failed halfway needs a
/// person, not a second run). `None` when the spec has no migration.
pub fn migration_job(system: &ValidatedSystem, ctx: &BuildContext, job_name: &str) -> Option<Job> {
    let migration = system.spec.migration.as_ref()?;
    Some(one_off_job(
        system,
        ctx,
        OneOff {
            name: job_name,
            component: MIGRATION_COMPONENT,
            purpose: "migration",
            backoff_limit: 0,
            active_deadline_seconds: migration.template.active_deadline_seconds,
            pod_failure_policy: None,
        },
        template_pod(system, "migrate", &migration.template),
    ))
}

/// Puts `images` into the built worker Deployments (the container named after the
/// worker), leaving every other field as built: replicas, env and resources still
/// follow the spec while an image is held back.
pub fn pin_worker_images(children: &mut Children, system: &ValidatedSystem, images: &WorkerImages) {
    for (worker, image) in images {
        let name = worker_name(system, worker);
        let containers = children
            .deployments
            .iter_mut()
            .filter(|d| d.metadata.name.as_deref() == Some(name.as_str()))
            .filter_map(|d| d.spec.as_mut())
            .filter_map(|s| s.template.spec.as_mut())
            .flat_map(|p| p.containers.iter_mut());
        for container in containers.filter(|c| &c.name == worker) {
            container.image = Some(image.clone());
        }
        for deployment in children.deployments.iter_mut().filter(|d| d.metadata.name.as_deref() == Some(name.as_str()))
        {
            deployment
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(ANNOTATION_WORKER_IMAGE.into(), image.clone());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::validate;

    /// A system with two workers of `image`, plus `extra` lines of spec.
    pub(crate) fn system(image: &str, extra: &str) -> ValidatedSystem {
        let yaml = format!(
            r#"
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata: {{name: main, namespace: referrals, uid: 1234}}
spec:
  image: {image}
  workers: [{{name: reward-processor, replicas: 2}}, {{name: api, port: 3000}}]
  mongodb: {{uriSecretRef: {{name: referral-mongo, key: uri}}, database: neurolov}}
  redis: {{managed: {{}}}}
{extra}
"#
        );
        let parsed: ReferralSystem = crate::yaml::from_str(&yaml).unwrap();
        validate(&parsed, "referrals").unwrap()
    }

    pub(crate) const OLD: &str = "example/referral-service:1.4.2";
    pub(crate) const NEW: &str = "example/referral-service:1.5.0";
    pub(crate) const MIGRATION: &str = "  migration: {args: [npm, run, migrate:referral]}";

    /// `image` for both workers of [`system`].
    pub(crate) fn images(image: &str) -> WorkerImages {
        WorkerImages::from([
            ("api".to_string(), image.to_string()),
            ("reward-processor".to_string(), image.to_string()),
        ])
    }

    #[test]
    fn pinning_changes_only_the_worker_image() {
        let system = system(NEW, MIGRATION);
        let ctx = BuildContext { operator_image: "operator:test".into(), secrets_hash: None, operator_pods: None };
        let built = super::super::build(&system, &ctx);
        assert_eq!(running_images(&system, &built.deployments), images(NEW));
        let mut pinned = built.clone();
        pin_worker_images(&mut pinned, &system, &WorkerImages::from([("api".to_string(), OLD.to_string())]));
        let now = running_images(&system, &pinned.deployments);
        assert_eq!(now["api"], OLD);
        assert_eq!(now["reward-processor"], NEW);
        let strip = |c: &Children| {
            let mut c = c.clone();
            pin_worker_images(&mut c, &system, &images("x"));
            c
        };
        assert_eq!(strip(&pinned), strip(&built), "nothing but the image differs");
    }

    #[test]
    fn the_verify_job_runs_the_spec_image_once_and_reports_its_logs() {
        let system = system(NEW, "  verify: {args: [npm, run, verify-migration], activeDeadlineSeconds: 600}");
        let ctx = BuildContext {
            operator_image: "operator:test".into(),
            secrets_hash: Some("h".into()),
            operator_pods: None,
        };
        let target = upgrade_target(&system);
        let name = verify_job_name(&system, &target);
        assert!(name.starts_with("main-verify-") && name.len() <= 63, "{name}");
        let job = verify_job(&system, &ctx, &name).unwrap();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!((spec.backoff_limit, spec.active_deadline_seconds), (Some(0), Some(600)));
        let container = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some(NEW));
        assert_eq!(container.args.as_ref().unwrap(), &["npm", "run", "verify-migration"]);
        assert_eq!(container.termination_message_policy.as_deref(), Some("FallbackToLogsOnError"));
        assert!(container.env.as_ref().unwrap().iter().any(|e| e.name == "REDIS_HOST"));
        assert_eq!(job.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"], VERIFY_COMPONENT);
        assert!(verify_job(&self::system(NEW, ""), &ctx, "x").is_none());
    }

    #[test]
    fn the_migration_job_runs_the_new_image_with_the_workers_environment() {
        let system = system(NEW, MIGRATION);
        let ctx = BuildContext {
            operator_image: "operator:test".into(),
            secrets_hash: Some("h".into()),
            operator_pods: None,
        };
        let job = migration_job(&system, &ctx, "main-migrate-abc").unwrap();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        let container = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some(NEW));
        assert_eq!(container.args.as_ref().unwrap(), &["npm", "run", "migrate:referral"]);
        let env = container.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "MONGODB_URI" && e.value_from.is_some()));
        assert!(env.iter().any(|e| e.name == "REFERRAL_MAX_CHAIN_DEPTH"));
        assert_eq!(job.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"], MIGRATION_COMPONENT);
        assert!(migration_job(&self::system(NEW, ""), &ctx, "x").is_none());
    }
}
