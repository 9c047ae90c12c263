//! Backups, restores and upgrades against the test control plane: the objects the
//! builders make are admitted by a real apiserver (restricted Pod Security, RBAC),
//! `backup finalize` writes status as the backup ServiceAccount and nothing more,
//! and the upgrade and restore state machines, driven step by step against real
//! Jobs and Deployments (Job status patched by the test: there is no kubelet), hold
//! images until the backup succeeds and survive a restart midway.
//!
//! The drive loops here play the controller's part with the same pure functions
//! the controller calls; they test those functions and the objects, not the
//! controller's wiring.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use referral_operator::crd::restore::{ReferralRestore, ReferralRestoreStatus};
use referral_operator::crd::status::{StatusWriter, UpgradeStatus};
use referral_operator::crd::validate::{ValidatedSystem, validate};
use referral_operator::crd::{ReferralSystem, restore_definition};
use referral_operator::reconcilers::backup::{BackupPurpose, backup_job, manual_backup_job_name};
use referral_operator::reconcilers::job::JobPhase;
use referral_operator::reconcilers::restore::{hold_for_restore, restore_job};
use referral_operator::reconcilers::restore_step::{
    IndexOutcome, RestoreObservation, RestoreStep, StepFacts, StillRunning, next_restore_step, next_status,
    status_patch,
};
use referral_operator::reconcilers::upgrade::{migration_job, pin_worker_images, running_images};
use referral_operator::reconcilers::upgrade_step::{
    ImagePlan, RolloutState, UpgradeObservation, UpgradeStep, next_upgrade_step,
};
use referral_operator::reconcilers::{BuildContext, Children, build};
use serde_json::json;

use crate::harness::{TEST_MANAGER, TestNamespace, client, enabled, fit_requests_to_node, install_crd, wait_for};

const OLD: &str = "example/referral-service:1.4.2";
const NEW: &str = "example/referral-service:1.5.0";

fn ctx() -> BuildContext {
    BuildContext {
        operator_image: "ghcr.io/referral-dev/referral-operator:e2e".into(),
        secrets_hash: None,
        operator_pods: None,
    }
}

async fn create_system(client: &Client, ns: &str, extra: serde_json::Value) -> ReferralSystem {
    let mut spec = json!({
        "image": OLD,
        "workers": [{"name": "reward-processor", "replicas": 1}],
        "mongodb": {"uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": "neurolov"},
        "redis": {"managed": {}, "passwordSecretRef": {"name": "referral-redis", "key": "password"}}
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    fit_requests_to_node(&mut spec);
    let system: ReferralSystem = serde_json::from_value(json!({
        "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem",
        "metadata": {"name": "main", "namespace": ns}, "spec": spec
    }))
    .unwrap();
    Api::<ReferralSystem>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &system)
        .await
        .expect("create system")
}

fn validated(system: &ReferralSystem, ns: &str) -> ValidatedSystem {
    validate(system, ns).expect("a valid system")
}

async fn apply<K>(client: &Client, ns: &str, object: &K)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    let name = object.meta().name.clone().unwrap();
    api.patch(&name, &PatchParams::apply("referral-operator").force(), &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

async fn apply_deployments(client: &Client, ns: &str, children: &Children) {
    for deployment in &children.deployments {
        apply(client, ns, deployment).await;
    }
}

pub(crate) async fn job_phase(client: &Client, ns: &str, name: &str) -> JobPhase {
    let job = Api::<Job>::namespaced(client.clone(), ns).get_opt(name).await.expect("read Job");
    JobPhase::of(job.as_ref())
}

/// Marks a Job succeeded, as the Job controller would once its pod exits 0.
pub async fn succeed_job(client: &Client, ns: &str, name: &str) {
    let api = Api::<Job>::namespaced(client.clone(), ns);
    // The Job controller sets startTime first; completion must not precede it.
    let started = wait_for(Duration::from_secs(30), "the Job controller to start the Job", || async {
        api.get(name).await.ok()?.status?.start_time
    })
    .await;
    let now =
        Time(k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second() + 1).unwrap());
    let patch = json!({"status": {
        "startTime": started, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0,
        "terminating": 0, "uncountedTerminatedPods": {},
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}
        ]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch {name} status: {e}"));
    wait_for(Duration::from_secs(20), "the Job to read as succeeded", || async {
        (job_phase(client, ns, name).await == JobPhase::Succeeded).then_some(())
    })
    .await;
}

async fn deployment_images(
    client: &Client,
    ns: &str,
    system: &ValidatedSystem,
) -> referral_operator::reconcilers::upgrade::WorkerImages {
    let list =
        Api::<Deployment>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list Deployments");
    running_images(system, &list.items)
}

async fn job_names(client: &Client, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_backup_cronjob_identity_and_a_manual_backup_job_are_admitted_and_its_pod_created() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "backup").await;
    let system = create_system(&client, &ns.name, json!({})).await;
    let system = validated(&system, &ns.name);
    let children = build(&system, &ctx());
    for account in children.service_accounts.iter().filter(|a| a.name_any() == "main-jobs") {
        apply::<ServiceAccount>(&client, &ns.name, account).await;
    }
    for role in children.roles.iter().filter(|r| r.name_any() == "main-jobs") {
        apply::<Role>(&client, &ns.name, role).await;
    }
    for binding in children.role_bindings.iter().filter(|b| b.name_any() == "main-jobs") {
        apply::<RoleBinding>(&client, &ns.name, binding).await;
    }
    let cron = children.cron_jobs.iter().find(|c| c.name_any() == "main-backup").expect("backup CronJob");
    apply::<CronJob>(&client, &ns.name, cron).await;
    let stored = Api::<CronJob>::namespaced(client.clone(), &ns.name).get("main-backup").await.unwrap();
    let spec = stored.spec.unwrap();
    assert_eq!(spec.schedule, "0 1 * * *");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].args.clone().unwrap().join(" "),
        "backup finalize --dir /backups --name-file /work/backup-name --daily 7 --weekly 4 --monthly 6 --system main --expect-redis"
    );
    // The native dump (the default method), from the operator's own image.
    let dump = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(dump.name, "dump");
    assert!(dump.command.is_none());
    assert_eq!(dump.image, pod.containers[0].image, "the dump runs the operator's image");
    assert!(dump.args.as_ref().unwrap().join(" ").starts_with("backup dump --dir /backups"), "{:?}", dump.args);

    // A backup asked for now: the Job controller creates its pod, which the
    // namespace's restricted Pod Security admits (it would refuse a pod that is not).
    let token = "2026-11-23T10:00:00Z";
    let name = manual_backup_job_name(&system, token);
    let job = backup_job(&system, &ctx(), &name, BackupPurpose::Manual);
    Api::<Job>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &job).await.expect("create Job");
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let pod = wait_for(Duration::from_secs(60), "the backup Job's pod", || async {
        pods.list(&ListParams::default().labels(&format!("job-name={name}"))).await.ok()?.items.into_iter().next()
    })
    .await;
    assert_eq!(pod.spec.unwrap().service_account_name.as_deref(), Some("main-jobs"));
    assert_eq!(job_phase(&client, &ns.name, &name).await, JobPhase::Running);
    // The same token names the same Job: a second create is refused, not duplicated.
    let again = Api::<Job>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &job).await;
    assert!(matches!(again, Err(kube::Error::Api(e)) if e.code == 409));
}

/// A kubeconfig that acts as `user` (impersonation by the test bed's admin).
pub(crate) fn impersonating(user: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let original = std::env::var("KUBECONFIG").unwrap();
    let mut config: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(original).unwrap()).unwrap();
    for entry in config["users"].as_sequence_mut().unwrap() {
        entry["user"]["as"] = serde_norway::Value::String(user.into());
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_norway::to_string(&config).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn finalize_writes_status_backup_as_the_job_service_account_and_nothing_else() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "finalize").await;
    let created = create_system(&client, &ns.name, json!({})).await;
    let system = validated(&created, &ns.name);
    let children = build(&system, &ctx());
    apply::<ServiceAccount>(
        &client,
        &ns.name,
        children.service_accounts.iter().find(|a| a.name_any() == "main-jobs").unwrap(),
    )
    .await;
    apply::<Role>(&client, &ns.name, children.roles.iter().find(|r| r.name_any() == "main-jobs").unwrap()).await;
    apply::<RoleBinding>(
        &client,
        &ns.name,
        children.role_bindings.iter().find(|b| b.name_any() == "main-jobs").unwrap(),
    )
    .await;
    // Another system in the namespace, whose status the backup identity must not touch.
    let mut other = created.clone();
    other.metadata =
        kube::api::ObjectMeta { name: Some("other".into()), namespace: Some(ns.name.clone()), ..Default::default() };
    Api::<ReferralSystem>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &other).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let folder = backups.join("20261123T010000Z.partial");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("mongodb-referrals.archive.gz"), [0x1f, 0x8b, 8, 0]).unwrap();
    std::fs::write(folder.join("redis.rdb"), b"REDIS0011").unwrap();
    std::fs::write(dir.path().join("name"), "20261123T010000Z").unwrap();
    let kubeconfig = impersonating(&format!("system:serviceaccount:{}:main-jobs", ns.name), dir.path());
    let finalize = |system: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_referral-operator"))
            .args(["backup", "finalize", "--dir", backups.to_str().unwrap(), "--name-file"])
            .arg(dir.path().join("name"))
            .args(["--daily", "7", "--weekly", "4", "--monthly", "6", "--expect-redis", "--system", system])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", &ns.name)
            .output()
            .unwrap()
    };
    let out = finalize("main");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{printed}");
    let stored = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name).get("main").await.unwrap();
    let backup = stored.status.and_then(|s| s.backup).expect("status.backup written");
    assert_eq!(backup.latest.as_deref(), Some("20261123T010000Z"));
    assert_eq!(backup.backups, ["20261123T010000Z"]);
    assert_eq!(backup.kept, 1);
    assert!(backup.last_success.is_some() && backup.size_bytes > 0);
    let managers: Vec<String> =
        stored.metadata.managed_fields.unwrap_or_default().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&StatusWriter::Backup.field_manager().to_string()), "{managers:?}");

    // The same identity cannot write another system's status: exit 3, backup kept.
    std::fs::create_dir_all(backups.join("20261124T010000Z.partial")).unwrap();
    std::fs::write(backups.join("20261124T010000Z.partial/mongodb.archive.gz"), [0x1f, 0x8b, 8, 0]).unwrap();
    std::fs::write(backups.join("20261124T010000Z.partial/redis.rdb"), b"REDIS0011").unwrap();
    std::fs::write(dir.path().join("name"), "20261124T010000Z").unwrap();
    let out = finalize("other");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{printed}");
    assert!(printed.contains("forbidden") || printed.contains("Forbidden"), "{printed}");
    assert!(backups.join("20261124T010000Z/complete.json").is_file());
    let other = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name).get("other").await.unwrap();
    assert!(other.status.and_then(|s| s.backup).is_none());
}

/// One round of the upgrade state machine against the cluster, acting as the
/// controller would: status first, then the step.
async fn upgrade_round(client: &Client, ns: &str) -> UpgradeStep {
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), ns);
    let stored = systems.get("main").await.unwrap();
    let system = validated(&stored, ns);
    let running = deployment_images(client, ns, &system).await;
    let target = referral_operator::reconcilers::upgrade::upgrade_target(&system);
    let backup_name = referral_operator::reconcilers::upgrade::backup_job_name(&system, &target);
    let migration_name = referral_operator::reconcilers::upgrade::migration_job_name(&system, &target);
    let recorded: Option<UpgradeStatus> = stored.status.as_ref().and_then(|s| s.upgrade.clone());
    let decision = next_upgrade_step(&UpgradeObservation {
        system: &system,
        running: &running,
        recorded: recorded.as_ref(),
        backup_job: job_phase(client, ns, &backup_name).await,
        migration_job: job_phase(client, ns, &migration_name).await,
        // The system under test has no `verify`.
        verify_job: JobPhase::Absent,
        // No kubelet: pods never become available, so a rollout stays in progress.
        rollout: RolloutState::Progressing,
        restore_in_progress: false,
        now: Time(k8s_openapi::jiff::Timestamp::from_second(1_795_428_000).unwrap()),
    });
    if decision.status != recorded {
        systems
            .patch_status(
                "main",
                &PatchParams::apply(TEST_MANAGER),
                &Patch::Merge(json!({"status": {"upgrade": decision.status}})),
            )
            .await
            .expect("record status.upgrade");
    }
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    match &decision.step {
        UpgradeStep::CreateBackupJob { job_name } => {
            jobs.create(&PostParams::default(), &backup_job(&system, &ctx(), job_name, BackupPurpose::PreUpgrade))
                .await
                .expect("create backup Job");
        }
        UpgradeStep::CreateMigrationJob { job_name } => {
            jobs.create(&PostParams::default(), &migration_job(&system, &ctx(), job_name).unwrap())
                .await
                .expect("create migration Job");
        }
        _ => {}
    }
    let mut children = build(&system, &ctx());
    if let ImagePlan::Pin(images) = &decision.images {
        pin_worker_images(&mut children, &system, images);
    }
    apply_deployments(client, ns, &children).await;
    decision.step
}

#[tokio::test]
async fn the_upgrade_gate_holds_images_until_backup_and_migration_succeed_and_survives_a_restart() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "upgrade").await;
    let created =
        create_system(&client, &ns.name, json!({"migration": {"args": ["npm", "run", "migrate:referral"]}})).await;
    let system = validated(&created, &ns.name);
    // The system runs the old image.
    assert_eq!(upgrade_round(&client, &ns.name).await, UpgradeStep::Steady);
    assert_eq!(deployment_images(&client, &ns.name, &system).await["reward-processor"], OLD);

    // spec.image changes.
    Api::<ReferralSystem>::namespaced(client.clone(), &ns.name)
        .patch("main", &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": NEW}})))
        .await
        .unwrap();
    let step = upgrade_round(&client, &ns.name).await;
    let UpgradeStep::CreateBackupJob { job_name: backup } = step else { panic!("{step:?}") };
    assert_eq!(
        deployment_images(&client, &ns.name, &system).await["reward-processor"],
        OLD,
        "untouched while backing up"
    );
    for _ in 0..3 {
        assert_eq!(upgrade_round(&client, &ns.name).await, UpgradeStep::WaitForBackup { job_name: backup.clone() });
        assert_eq!(deployment_images(&client, &ns.name, &system).await["reward-processor"], OLD);
    }
    assert_eq!(
        job_names(&client, &ns.name).await,
        std::slice::from_ref(&backup),
        "one backup Job, however many rounds"
    );

    // An operator restart: nothing carried over but what the cluster holds.
    let after_restart = upgrade_round(&client, &ns.name).await;
    assert_eq!(after_restart, UpgradeStep::WaitForBackup { job_name: backup.clone() });
    assert_eq!(job_names(&client, &ns.name).await, std::slice::from_ref(&backup));

    succeed_job(&client, &ns.name, &backup).await;
    let step = upgrade_round(&client, &ns.name).await;
    let UpgradeStep::CreateMigrationJob { job_name: migration } = step else { panic!("{step:?}") };
    assert_eq!(
        deployment_images(&client, &ns.name, &system).await["reward-processor"],
        OLD,
        "untouched while migrating"
    );
    assert_eq!(upgrade_round(&client, &ns.name).await, UpgradeStep::WaitForMigration { job_name: migration.clone() });
    let migration_job = Api::<Job>::namespaced(client.clone(), &ns.name).get(&migration).await.unwrap();
    let container = &migration_job.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some(NEW));

    succeed_job(&client, &ns.name, &migration).await;
    assert_eq!(upgrade_round(&client, &ns.name).await, UpgradeStep::RollOut);
    assert_eq!(deployment_images(&client, &ns.name, &system).await["reward-processor"], NEW, "rolled out");
    assert_eq!(upgrade_round(&client, &ns.name).await, UpgradeStep::WaitForRollout);
    let stored = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name).get("main").await.unwrap();
    let upgrade = stored.status.unwrap().upgrade.unwrap();
    assert_eq!(upgrade.previous_images["reward-processor"], OLD, "the rollback target is recorded");
    assert_eq!(job_names(&client, &ns.name).await.len(), 2);
}

pub(crate) async fn install_restore_crd(client: &Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let name = "referralrestores.referral.dev";
    api.patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&restore_definition()))
        .await
        .expect("apply CRD");
    wait_for(Duration::from_secs(30), "the ReferralRestore CRD to be Established", || async {
        let crd = api.get(name).await.ok()?;
        crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_restore_goes_through_its_steps_against_real_deployments_and_jobs() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    install_restore_crd(&client).await;
    let ns = TestNamespace::create(&client, "restore").await;
    let created = create_system(&client, &ns.name, json!({})).await;
    let system = validated(&created, &ns.name);
    let built = build(&system, &ctx());
    apply_deployments(&client, &ns.name, &built).await;
    // A running system first: every worker pod made. Scaled to zero while the
    // ReplicaSet controller's create of a pod was still on its way, a Deployment reads
    // as stopped (its status and its ReplicaSet's say 0 replicas, no pod is listed) and
    // the pod appears after that (seen on the bed: created 160 ms after the scale-down,
    // deleted 40 ms later, and listed by the check before the restore Job below).
    let wanted: i32 = built.deployments.iter().map(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)).sum();
    let worker_pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    wait_for(Duration::from_secs(90), "every worker pod of the running system", || async {
        let listed =
            worker_pods.list(&ListParams::default().labels("app.kubernetes.io/component=worker")).await.ok()?;
        (listed.items.len() == usize::try_from(wanted).unwrap()).then_some(())
    })
    .await;

    let restores = Api::<ReferralRestore>::namespaced(client.clone(), &ns.name);
    let restore: ReferralRestore = serde_json::from_value(json!({
        "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralRestore",
        "metadata": {"name": "back-to-monday"},
        "spec": {"systemName": "main", "backupName": "20261123T010000Z"}
    }))
    .unwrap();
    let restore = restores.create(&PostParams::default(), &restore).await.expect("create ReferralRestore");
    // The CEL rule refuses a change of backup.
    let changed = restores
        .patch(
            "back-to-monday",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"backupName": "20261124T010000Z"}})),
        )
        .await;
    assert!(
        matches!(&changed, Err(kube::Error::Api(e)) if e.message.contains("backupName cannot be changed")),
        "{changed:?}"
    );
    let uid = restore.uid().unwrap();

    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let mut steps = Vec::new();
    let mut indexes = IndexOutcome::NotYet;
    // Bounded by time, not by a count of rounds: how many rounds see the workers still
    // stopping is up to the cluster (on the node the kubelet tears each pod down, more
    // slowly on a busy machine), and a slow round must not read as a missing step.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        let stored = restores.get("back-to-monday").await.unwrap();
        let status: Option<ReferralRestoreStatus> = stored.status.clone();
        let listed = deployments.list(&ListParams::default()).await.unwrap().items;
        // Stopped means no worker pod is left, not merely a spec of zero.
        let worker_pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
            .await
            .unwrap();
        let workers_stopped = worker_pods.items.is_empty()
            && listed.iter().all(referral_operator::reconcilers::restore_step::scaled_to_zero);
        let workers_restored = listed.iter().all(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(1));
        let restore_job_name = referral_operator::reconcilers::restore::restore_job_name(&system, &uid);
        let check_job_name = referral_operator::reconcilers::restore::verify_job_name(&system, &uid);
        let restore_phase = job_phase(&client, &ns.name, &restore_job_name).await;
        let check_phase = job_phase(&client, &ns.name, &check_job_name).await;
        let now = Timestamp::now();
        let step = next_restore_step(&RestoreObservation {
            restore_uid: &uid,
            status: status.as_ref(),
            system: Some(&system),
            earlier_restore: None,
            backup_running: None,
            upgrade_in_progress: false,
            workers_stopped,
            now,
            restore_job: restore_phase.clone(),
            indexes: indexes.clone(),
            chain_check_job: check_phase.clone(),
            workers_restored,
        });
        // Record first, then act: the status as the operator records it (whole
        // seconds, as the API server keeps them), since the confirmation that the
        // workers stay stopped is read back from its `WorkersStopped` condition.
        let facts = StepFacts {
            system: "main",
            backup: "20261123T010000Z",
            restore_job: &restore_phase,
            chain_check_job: &check_phase,
            still_running: &StillRunning::default(),
            backup_running: None,
            system_paused: false,
            chain_check: None,
        };
        let second = Time(Timestamp::from_second(now.as_second()).unwrap());
        let recorded = next_status(&status.clone().unwrap_or_default(), &step, &facts, &second);
        restores
            .patch_status("back-to-monday", &PatchParams::default(), &Patch::Merge(status_patch(&recorded)))
            .await
            .unwrap();
        let mut children = build(&system, &ctx());
        if step.holds_system() {
            hold_for_restore(&mut children);
        }
        apply_deployments(&client, &ns.name, &children).await;
        let jobs = Api::<Job>::namespaced(client.clone(), &ns.name);
        match &step {
            RestoreStep::CreateRestoreJob { job_name } => {
                let worker_pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
                    .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
                    .await
                    .unwrap();
                assert!(worker_pods.items.is_empty(), "the restore starts only once no worker pod is left");
                jobs.create(&PostParams::default(), &restore_job(&system, &ctx(), "20261123T010000Z", job_name, true))
                    .await
                    .expect("create restore Job");
            }
            RestoreStep::WaitForRestoreJob { job_name } | RestoreStep::WaitForChainCheck { job_name } => {
                succeed_job(&client, &ns.name, job_name).await;
            }
            RestoreStep::EnsureIndexes => indexes = IndexOutcome::Ensured,
            RestoreStep::RunChainCheck { job_name } => {
                let built = build(&system, &ctx());
                let cron = built.cron_jobs.iter().find(|c| c.name_any() == "main-chain-check").unwrap();
                let job =
                    referral_operator::reconcilers::job::job_from_cron_job(cron, job_name, "restore-check").unwrap();
                jobs.create(&PostParams::default(), &job).await.expect("create check Job");
            }
            RestoreStep::WaitForWorkersToStop | RestoreStep::ConfirmWorkersStopped => {
                // The Deployment controller scales the ReplicaSet down, or the
                // confirmation needs time to pass; wait for it.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => {}
        }
        let done = matches!(step, RestoreStep::Done { .. });
        if steps.last() != Some(&step) {
            steps.push(step);
        }
        if done {
            break;
        }
    }
    let kinds: Vec<&str> = steps
        .iter()
        .map(|s| match s {
            RestoreStep::Wait { .. } => "wait",
            RestoreStep::ScaleWorkersToZero => "scale-down",
            RestoreStep::WaitForWorkersToStop => "wait-workers",
            RestoreStep::ConfirmWorkersStopped => "confirm-stopped",
            RestoreStep::CreateRestoreJob { .. } => "create-restore",
            RestoreStep::WaitForRestoreJob { .. } => "wait-restore",
            RestoreStep::EnsureIndexes => "indexes",
            RestoreStep::RunChainCheck { .. } => "create-check",
            RestoreStep::WaitForChainCheck { .. } => "wait-check",
            RestoreStep::ScaleWorkersBack => "scale-up",
            RestoreStep::Done { .. } => "done",
        })
        .collect();
    // Whether a round sees the workers still stopping depends on the Deployment
    // controller's speed (and a pod seen after the first confirmation sends it back to
    // waiting); every other step must come, in this order.
    let mut deduped: Vec<&str> = kinds.iter().copied().filter(|k| *k != "wait-workers").collect();
    deduped.dedup();
    assert_eq!(
        deduped,
        [
            "scale-down",
            "confirm-stopped",
            "create-restore",
            "wait-restore",
            "indexes",
            "create-check",
            "wait-check",
            "scale-up",
            "done"
        ],
        "{steps:?}"
    );
    let stored = restores.get("back-to-monday").await.unwrap();
    assert_eq!(serde_json::to_value(stored.status.unwrap().phase).unwrap(), "Succeeded");
    let listed = deployments.list(&ListParams::default()).await.unwrap().items;
    assert!(listed.iter().all(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(1)), "workers back");
}
