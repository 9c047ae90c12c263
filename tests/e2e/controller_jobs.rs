//! The controller's Jobs, through the running operator (as the chart's
//! ServiceAccount): run-now annotations start one Job per token and never again, and
//! an image change waits for the pre-upgrade backup and the migration before the
//! Deployments change, across an operator restart; and the status writers (the
//! operator, the chain check, the backup's finalize) each keep their own fields. On
//! the test bed's node the workers and the migration run for real (the stand-in
//! worker's images); the pre-upgrade backup Job's completion is still written by the
//! test, as no image here can run mongodump, and the status writers' commands run
//! here as the Jobs' identity. On a control-plane-only bed the test also stands in for
//! the kubelet, patching Jobs and Deployments' status.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use referral_operator::crd::ReferralSystem;
use referral_operator::crd::status::{StatusWriter, UpgradePhase};
use referral_operator::crd::validate::{ValidatedSystem, validate};
use referral_operator::reconcilers::backup::manual_backup_job_name;
use referral_operator::reconcilers::chain_check::manual_check_job_name;
use referral_operator::reconcilers::upgrade::{backup_job_name, migration_job_name, upgrade_target};
use serde_json::json;

use crate::backup::{impersonating, succeed_job};
use crate::chart::{RunningOperator, http_get, namespaced_operator_rbac};
use crate::harness::{
    TestNamespace, client, enabled, fit_to_node, install_crd, kubectl, mark_pods_ready, node, put_secret, testbed_var,
    wait_for,
};
use referral_operator::reconcilers::job::JobPhase;

/// The image the systems start with: on the node, the stand-in worker.
pub(crate) fn old() -> String {
    node().map_or_else(|| "example/referral-service:1.4.2".into(), |n| n.worker_image)
}

/// The image they upgrade to: on the node, the stand-in worker under another tag.
pub(crate) fn new() -> String {
    node().map_or_else(|| "example/referral-service:1.5.0".into(), |n| n.worker_image_next)
}

/// An image no one can pull, anywhere: nothing listens on localhost:443 in the node's
/// network namespace, and on a control-plane-only bed no pod runs at all.
const UNPULLABLE: &str = "localhost/referral-testbed/absent:1";

/// A namespace the operator watches, the chart's RBAC for it, and the kubeconfig of
/// the chart's ServiceAccount.
pub(crate) struct Setup {
    pub(crate) client: Client,
    pub(crate) operator_ns: TestNamespace,
    pub(crate) watched: TestNamespace,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

pub(crate) async fn setup(prefix: &str) -> Setup {
    let client = client().await;
    install_crd(&client).await;
    let operator_ns = TestNamespace::create(&client, &format!("{prefix}-op")).await;
    let watched = TestNamespace::create(&client, prefix).await;
    let dir = tempfile::tempdir().unwrap();
    let release = format!("{prefix}-{}", &watched.name[watched.name.len().saturating_sub(5)..]);
    let (_installed, kubeconfig) = namespaced_operator_rbac(dir.path(), &operator_ns.name, &watched.name, &release);
    put_secret(&client, &watched.name, "referral-mongo", &[("uri", &testbed_var("REFOP_TEST_MONGODB_URI"))]).await;
    Setup { client, operator_ns, watched, dir, kubeconfig }
}

impl Setup {
    fn start(&self, identity: &str) -> RunningOperator {
        RunningOperator::start(
            &self.kubeconfig,
            self.dir.path().join(format!("{identity}.log")),
            &self.operator_ns.name,
            identity,
            &[&self.watched.name],
        )
    }

    /// Like [`Self::start`], with a `RUST_LOG` filter and extra `run` flags. A log
    /// that exists already is appended to, so a restarted operator keeps one log.
    pub(crate) fn start_with(&self, identity: &str, rust_log: &str, extra_args: &[&str]) -> RunningOperator {
        RunningOperator::start_with(
            &self.kubeconfig,
            self.dir.path().join(format!("{identity}.log")),
            &self.operator_ns.name,
            identity,
            &[&self.watched.name],
            rust_log,
            extra_args,
        )
    }

    pub(crate) fn systems(&self) -> Api<ReferralSystem> {
        Api::namespaced(self.client.clone(), &self.watched.name)
    }

    pub(crate) fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.watched.name)
    }

    pub(crate) async fn create_system(&self, spec: serde_json::Value) -> ValidatedSystem {
        // The test bed's Redis, so the dependency probe answers.
        let url = testbed_var("REFOP_TEST_REDIS_URL");
        let address = url.trim_start_matches("redis://").trim_end_matches('/');
        let (host, port) = address.rsplit_once(':').expect("REFOP_TEST_REDIS_URL is redis://host:port");
        let port: u16 = port.parse().expect("a port number");
        let mut full = json!({
            "workers": [{"name": "reward-processor", "replicas": 1}],
            "mongodb": {"uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": "e2e"},
            "redis": {"external": {"host": host, "port": port}},
        });
        fit_to_node(&mut full);
        full["image"] = old().into();
        if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            full.extend(extra.clone());
        }
        let system: ReferralSystem = serde_json::from_value(json!({
            "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem",
            "metadata": {"name": "main", "namespace": self.watched.name}, "spec": full
        }))
        .unwrap();
        let created = self.systems().create(&PostParams::default(), &system).await.expect("create the system");
        validate(&created, &self.watched.name).expect("a valid system")
    }

    /// Waits until the operator reported the current generation.
    pub(crate) async fn reconciled(&self, operator: &RunningOperator) -> ReferralSystem {
        wait_for(Duration::from_secs(60), "a status for the current generation", || async {
            let log = operator.log_text();
            assert!(!log.to_lowercase().contains("forbidden"), "the operator hit RBAC limits:\n{log}");
            let current = self.systems().get("main").await.ok()?;
            let observed = current.status.as_ref()?.observed_generation;
            (observed == current.metadata.generation).then_some(current)
        })
        .await
    }

    pub(crate) async fn annotate(&self, annotation: &str, token: &str) {
        self.systems()
            .patch(
                "main",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {annotation: token}}})),
            )
            .await
            .unwrap();
    }

    pub(crate) async fn worker_image(&self) -> Option<String> {
        let d = Api::<Deployment>::namespaced(self.client.clone(), &self.watched.name)
            .get_opt("main-reward-processor")
            .await
            .ok()??;
        d.spec?.template.spec?.containers.first()?.image.clone()
    }
}

fn condition(system: &ReferralSystem, type_: &str) -> Option<(String, String, String)> {
    let c = system.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn run_now_annotations_start_one_job_per_token() {
    if !enabled() {
        return;
    }
    let s = setup("runnow").await;
    let system = s.create_system(json!({})).await;
    let operator = s.start("runnow-0");
    s.reconciled(&operator).await;

    s.annotate("referral.dev/check-now", "2026-11-23T10:00:00Z").await;
    s.annotate("referral.dev/backup-now", "2026-11-23T10:00:00Z").await;
    let check = manual_check_job_name(&system, "2026-11-23T10:00:00Z");
    let backup = manual_backup_job_name(&system, "2026-11-23T10:00:00Z");
    let handled = wait_for(Duration::from_secs(60), "both requests handled in status", || async {
        let current = s.systems().get("main").await.ok()?;
        let handled = current.status?.handled_requests?;
        (handled.check_now.is_some() && handled.backup_now.is_some()).then_some(handled)
    })
    .await;
    assert_eq!(handled.check_now.as_ref().map(|r| r.job.as_str()), Some(check.as_str()));
    assert_eq!(handled.backup_now.as_ref().map(|r| r.job.as_str()), Some(backup.as_str()));
    let check_job = s.jobs().get(&check).await.expect("the check Job exists");
    let args = check_job.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap_or_default();
    assert!(args.join(" ").contains("chains"), "the check Job runs the chain check: {args:?}");
    assert_eq!(check_job.metadata.owner_references.unwrap()[0].name, "main");
    s.jobs().get(&backup).await.expect("the backup Job exists");
    let (ok, events, _) = kubectl(&["get", "events.events.k8s.io", "-n", &s.watched.name, "-o", "json"], None);
    assert!(ok && events.contains("ChainCheckStarted") && events.contains("BackupStarted"), "{events}");

    // The check Job reports as the chain-check writer does (server-side apply of
    // status.chainCheck under its own field manager); the operator turns it into
    // ChainIntegrity and gauges, and its own status writes keep the report.
    let report = json!({"apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem", "status": {"chainCheck": {
        "lastRun": "2026-11-23T10:05:00Z", "summary": "3 violations", "users": 1000, "cycles": 2,
        "tooDeep": 0, "orphans": 1, "selfReferrals": 0, "malformed": 0, "badReferralRecords": 0,
        "examples": ["cycle: u1 -> u2 -> u1"]
    }}});
    s.systems().patch_status("main", &StatusWriter::ChainCheck.apply_params(), &Patch::Apply(&report)).await.unwrap();
    let with_report = wait_for(Duration::from_secs(60), "ChainIntegrity from the check's report", || async {
        let current = s.systems().get("main").await.ok()?;
        (condition(&current, "ChainIntegrity")?.0 == "False").then_some(current)
    })
    .await;
    let (_, reason, message) = condition(&with_report, "ChainIntegrity").unwrap();
    assert_eq!(reason, "ViolationsFound");
    assert!(
        message.starts_with("2 cycles, 1 user whose referrer does not exist")
            && message.contains("cycle: u1 -> u2 -> u1"),
        "{message}"
    );
    let metrics = wait_for(Duration::from_secs(30), "the chain gauges on /metrics", || async {
        let (ok, body, _) = http_get(operator.listen, "/metrics");
        (ok && body.contains("referral_operator_chain_violations{")).then_some(body)
    })
    .await;
    let line = |kind: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("referral_operator_chain_violations{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains(&format!("referral_namespace=\"{}\"", s.watched.name))
            })
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
    };
    assert_eq!(line("cycles").as_deref(), Some("2"), "{metrics}");
    assert_eq!(line("orphans").as_deref(), Some("1"), "{metrics}");

    // The check Job goes away (its TTL, or a person); a later reconcile must not start
    // it again for the same token.
    s.jobs().delete(&check, &Default::default()).await.unwrap();
    wait_for(Duration::from_secs(30), "the Job to be gone", || async {
        s.jobs().get_opt(&check).await.ok()?.is_none().then_some(())
    })
    .await;
    s.systems()
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"workers": [{"name": "reward-processor", "replicas": 2}]}})),
        )
        .await
        .unwrap();
    let after = s.reconciled(&operator).await;
    assert!(s.jobs().get_opt(&check).await.unwrap().is_none(), "a handled token started its Job again");
    assert_eq!(
        after.status.and_then(|st| st.chain_check).map(|c| c.cycles),
        Some(2),
        "the controller's status writes cleared the check's report"
    );

    // A new token is a new request.
    s.annotate("referral.dev/check-now", "2026-11-23T11:00:00Z").await;
    let second = manual_check_job_name(&system, "2026-11-23T11:00:00Z");
    assert_ne!(second, check);
    wait_for(Duration::from_secs(60), "the second check Job", || async {
        s.jobs().get_opt(&second).await.ok()?.map(|_| ())
    })
    .await;
    let jobs: Vec<String> =
        s.jobs().list(&Default::default()).await.unwrap().items.iter().map(|j| j.name_any()).collect();
    assert_eq!(jobs.len(), 2, "exactly the backup and the second check: {jobs:?}");

    // A deleted system takes its series with it.
    s.systems().delete("main", &Default::default()).await.unwrap();
    let namespace_label = format!("referral_namespace=\"{}\"", s.watched.name);
    wait_for(Duration::from_secs(30), "the deleted system's series to leave /metrics", || async {
        let (ok, body, _) = http_get(operator.listen, "/metrics");
        (ok && !body.lines().any(|l| !l.starts_with('#') && l.contains(&namespace_label))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_image_change_waits_for_backup_and_migration_across_a_restart() {
    if !enabled() {
        return;
    }
    let s = setup("upgrade").await;
    // On the node the migration runs the new image for real: the stand-in worker's
    // one-off command.
    let migrate =
        if node().is_some() { json!(["/worker", "job", "migrate"]) } else { json!(["npm", "run", "migrate"]) };
    s.create_system(json!({"migration": {"command": migrate}})).await;
    let operator = s.start("upgrade-0");
    s.reconciled(&operator).await;
    assert_eq!(s.worker_image().await, Some(old()));

    s.systems().patch("main", &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": new()}}))).await.unwrap();
    let current = s.reconciled(&operator).await;
    let validated = validate(&current, &s.watched.name).unwrap();
    let target = upgrade_target(&validated);
    let backup = backup_job_name(&validated, &target);
    let migration = migration_job_name(&validated, &target);
    wait_for(Duration::from_secs(30), "the pre-upgrade backup Job", || async {
        s.jobs().get_opt(&backup).await.ok()?.map(|_| ())
    })
    .await;
    // status.upgrade is written before the Job; Ready at the end of that reconcile.
    let current = wait_for(Duration::from_secs(30), "Ready to say UpgradeInProgress", || async {
        let current = s.systems().get("main").await.ok()?;
        (condition(&current, "Ready")?.1 == "UpgradeInProgress").then_some(current)
    })
    .await;
    let upgrade = current.status.clone().unwrap().upgrade.expect("status.upgrade is recorded");
    assert_eq!(upgrade.phase, UpgradePhase::BackingUp);
    assert_eq!(upgrade.previous_images.get("reward-processor"), Some(&old()));
    assert_eq!(condition(&current, "Ready").unwrap().0, "False");
    assert_eq!(s.worker_image().await, Some(old()), "the image changed before the backup finished");
    assert!(s.jobs().get_opt(&migration).await.unwrap().is_none(), "the migration started before the backup finished");

    // The operator restarts in the middle: nothing carries over but the cluster.
    // The backup Job's completion is written here (its mongodump image cannot run on
    // this machine; the operator's own dump is issue 17's).
    drop(operator);
    succeed_job(&s.client, &s.watched.name, &backup).await;
    let operator = s.start("upgrade-1");
    wait_for(Duration::from_secs(60), "the migration Job after the backup", || async {
        s.jobs().get_opt(&migration).await.ok()?.map(|_| ())
    })
    .await;
    let job = s.jobs().get(&backup).await.unwrap();
    assert!(job.metadata.deletion_timestamp.is_none());
    if node().is_none() {
        // The migration is still held at Migrating while its Job runs (on the node it
        // may already have finished by now).
        let phase = s.systems().get("main").await.unwrap().status.unwrap().upgrade.unwrap().phase;
        assert_eq!(phase, UpgradePhase::Migrating);
        assert_eq!(s.worker_image().await, Some(old()), "the image changed before the migration finished");
        succeed_job(&s.client, &s.watched.name, &migration).await;
    }
    wait_for(Duration::from_secs(120), "the new image on the Deployment", || async {
        (s.worker_image().await == Some(new())).then_some(())
    })
    .await;
    if node().is_some() {
        let job = s.jobs().get(&migration).await.unwrap();
        assert_eq!(job.status.and_then(|st| st.succeeded), Some(1), "the migration Job's pod ran and succeeded");
    }

    // The pods come up (on the node for real; elsewhere the test plays the kubelet),
    // the Deployment controller finishes the rollout, and the operator records the
    // upgrade as done.
    wait_for(Duration::from_secs(60), "the upgrade to be recorded as succeeded", || async {
        mark_pods_ready(&s.client, &s.watched.name).await;
        let upgrade = s.systems().get("main").await.ok()?.status?.upgrade?;
        (upgrade.phase == UpgradePhase::Succeeded).then_some(())
    })
    .await;
    let log = operator.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
}

#[tokio::test]
async fn a_stalled_rollout_is_rolled_back_when_the_spec_asks() {
    if !enabled() {
        return;
    }
    let s = setup("rollback").await;
    s.create_system(json!({"upgrade": {"backupFirst": false, "autoRollback": true, "progressDeadlineSeconds": 10}}))
        .await;
    let operator = s.start("rollback-0");
    s.reconciled(&operator).await;
    assert_eq!(s.worker_image().await, Some(old()));

    s.systems()
        .patch("main", &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": UNPULLABLE}})))
        .await
        .unwrap();
    // No backup asked for: the new image goes out at once.
    wait_for(Duration::from_secs(60), "the new image on the Deployment", || async {
        (s.worker_image().await.as_deref() == Some(UNPULLABLE)).then_some(())
    })
    .await;
    // The new pods never become ready (on the node their image cannot be pulled), so
    // the Deployment controller itself reports ProgressDeadlineExceeded after
    // progressDeadlineSeconds.
    wait_for(Duration::from_secs(90), "the previous image back on the Deployment", || async {
        (s.worker_image().await == Some(old())).then_some(())
    })
    .await;
    // The status write follows the apply within the same reconcile.
    let current = wait_for(Duration::from_secs(30), "Ready to say RolledBack", || async {
        let current = s.systems().get("main").await.ok()?;
        (condition(&current, "Ready")?.1 == "RolledBack").then_some(current)
    })
    .await;
    let upgrade = current.status.clone().unwrap().upgrade.unwrap();
    assert_eq!(upgrade.phase, UpgradePhase::RolledBack);
    assert!(upgrade.message.unwrap_or_default().contains("timed out"));
    assert_eq!(condition(&current, "Ready").unwrap().0, "False");
    // The spec is not touched: it still asks for the new image.
    assert_eq!(current.spec.image, UNPULLABLE);
}

/// Fails Job `job` the way kubelets report failed containers with
/// `terminationMessagePolicy: FallbackToLogsOnError`: each of its pods that has not
/// failed yet exits with code 1 and the last log lines as its message, until the Job
/// controller itself fails the Job (after its backoffLimit).
pub(crate) async fn fail_job_pod(client: &Client, ns: &str, job: &str, output: &str) {
    fail_job_pods(client, ns, job, output, false).await;
}

/// As [`fail_job_pod`], with the pod's first init container failing (the dump of a
/// backup pod) and its main container never started.
pub(crate) async fn fail_job_init_container(client: &Client, ns: &str, job: &str, output: &str) {
    fail_job_pods(client, ns, job, output, true).await;
}

async fn fail_job_pods(client: &Client, ns: &str, job: &str, output: &str, init: bool) {
    use k8s_openapi::api::core::v1::Pod;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    wait_for(Duration::from_secs(60), "the Job controller to fail the Job", || async {
        if let JobPhase::Failed(_) = crate::backup::job_phase(client, ns, job).await {
            return Some(());
        }
        let list = pods.list(&kube::api::ListParams::default().labels(&selector)).await.ok()?;
        for pod in list.items {
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed") {
                continue;
            }
            let spec = pod.spec.as_ref()?;
            let now = k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
                .unwrap()
                .to_string();
            let status = |container: &k8s_openapi::api::core::v1::Container, state: serde_json::Value| {
                json!({"name": container.name, "image": container.image, "imageID": "", "ready": false,
                       "restartCount": 0, "state": state})
            };
            let failed = json!({"terminated": {"exitCode": 1, "reason": "Error", "message": output,
                                               "startedAt": now, "finishedAt": now}});
            let patch = match spec.init_containers.as_ref().and_then(|c| c.first()).filter(|_| init) {
                Some(first) => json!({"status": {"phase": "Failed",
                    "initContainerStatuses": [status(first, failed)],
                    "containerStatuses": [status(&spec.containers[0], json!({"waiting": {"reason": "PodInitializing"}}))]}}),
                None => json!({"status": {"phase": "Failed", "containerStatuses": [status(&spec.containers[0], failed)]}}),
            };
            let _ = pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
        None
    })
    .await;
}

#[tokio::test]
async fn a_failed_verification_rolls_back_and_says_what_the_job_said() {
    if !enabled() {
        return;
    }
    let s = setup("verify").await;
    // On the node the verification runs for real: the stand-in worker's one-off
    // command passes, and a connection to a closed port fails with its own words.
    // `args` follow the image's entrypoint (the stand-in's is `/worker`).
    let on_node = node().is_some();
    let passes = if on_node { json!(["job", "verify-migration"]) } else { json!(["npm", "run", "verify-migration"]) };
    s.create_system(json!({
        "verify": {"args": passes},
        "upgrade": {"backupFirst": false, "autoRollback": true}
    }))
    .await;
    let operator = s.start("verify-0");
    // The first rollout is verified before the system is Ready: Ready is never True
    // before the verification passed, and says Verifying while it runs.
    // `status.upgrade` and the conditions are written by two status writers, one
    // after the other in a reconcile (the upgrade gate first, the conditions at its
    // end), so a read between the two sees the phase Verifying next to the previous
    // Ready; both are read from one object, and the test waits for the conditions to
    // catch up. On the node, where the previous Ready is a real rollout's, such a read
    // is common.
    let first = wait_for(Duration::from_secs(90), "Ready to say Verifying during the first verification", || async {
        mark_pods_ready(&s.client, &s.watched.name).await;
        let current = s.systems().get("main").await.ok()?;
        let (status, reason, _) = condition(&current, "Ready")?;
        let upgrade = current.status.as_ref()?.upgrade.clone();
        assert!(
            status != "True" || upgrade.as_ref().is_some_and(|u| u.phase == UpgradePhase::Succeeded),
            "Ready before the verification passed: {upgrade:?}"
        );
        let upgrade = upgrade?;
        (upgrade.phase == UpgradePhase::Verifying && (status.as_str(), reason.as_str()) == ("False", "Verifying"))
            .then_some(upgrade.verify_job?)
    })
    .await;
    if !on_node {
        succeed_job(&s.client, &s.watched.name, &first).await;
    }
    wait_for(Duration::from_secs(60), "Ready after the verification passed", || async {
        let current = s.systems().get("main").await.ok()?;
        (condition(&current, "Ready")?.0 == "True").then_some(())
    })
    .await;

    // A new image: rolled out at once, then verified; the verification fails. On the
    // node it tries five times, a second apart, so that its Job runs long enough for
    // the Verifying phase to be seen before the rollback.
    let change = if on_node {
        json!({"image": new(), "verify": {"args": ["connect", "127.0.0.1:1", "5"]}})
    } else {
        json!({"image": new()})
    };
    s.systems().patch("main", &PatchParams::default(), &Patch::Merge(json!({"spec": change}))).await.unwrap();
    let second = wait_for(Duration::from_secs(90), "the verification of the new image", || async {
        mark_pods_ready(&s.client, &s.watched.name).await;
        let upgrade = s.systems().get("main").await.ok()?.status?.upgrade?;
        let job = upgrade.verify_job.clone()?;
        (upgrade.phase == UpgradePhase::Verifying && job != first).then_some(job)
    })
    .await;
    assert_eq!(s.worker_image().await.as_deref(), Some(new().as_str()));
    let said =
        if on_node { "connect: connection refused" } else { "verify-migration: 3 referral codes point at no user" };
    if !on_node {
        fail_job_pod(&s.client, &s.watched.name, &second, said).await;
    }
    wait_for(Duration::from_secs(60), "the previous image back on the Deployment", || async {
        (s.worker_image().await.as_deref() == Some(old().as_str())).then_some(())
    })
    .await;
    let current = wait_for(Duration::from_secs(30), "Ready to say RolledBack", || async {
        let current = s.systems().get("main").await.ok()?;
        (condition(&current, "Ready")?.1 == "RolledBack").then_some(current)
    })
    .await;
    let (_, _, message) = condition(&current, "Ready").unwrap();
    assert!(message.contains(said), "the Job's own words: {message}");
    assert!(message.contains(&second), "the Job is named: {message}");
    assert_eq!(current.status.unwrap().upgrade.unwrap().phase, UpgradePhase::RolledBack);
    assert_eq!(current.spec.image, new(), "the spec is never written");
    let (found, events, _) = kubectl(&["get", "events", "-n", &s.watched.name, "-o", "json"], None);
    assert!(found);
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let reasons: Vec<&str> = events["items"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains(&"RolledBack"), "an event says so: {reasons:?}");
    assert!(reasons.contains(&"Verified") && reasons.contains(&"Verifying"), "{reasons:?}");
    let log = operator.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
}

#[tokio::test]
async fn the_operator_ensures_declared_indexes_and_reports_a_conflict_without_dropping_it() {
    use mongodb::bson::doc;
    if !enabled() {
        return;
    }
    let s = setup("indexes").await;
    let database = format!("idx-{}", &s.watched.name[s.watched.name.len().saturating_sub(5)..]);
    let mongo = mongodb::Client::with_uri_str(testbed_var("REFOP_TEST_MONGODB_URI")).await.unwrap();
    let db = mongo.database(&database);
    // Someone created the referral-code index without `unique` by hand.
    db.run_command(
        doc! {"createIndexes": "users", "indexes": [{"key": {"referralCode": 1}, "name": "referralCode_1"}]},
    )
    .await
    .unwrap();
    s.create_system(
        json!({"mongodb": {"uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": database}}),
    )
    .await;
    let operator = s.start("indexes-0");
    let current = wait_for(Duration::from_secs(60), "IndexesReady from the operator's check", || async {
        let current = s.systems().get("main").await.ok()?;
        condition(&current, "IndexesReady").filter(|c| c.0 != "Unknown").map(|_| current)
    })
    .await;
    let (status, reason, message) = condition(&current, "IndexesReady").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "IndexConflict"), "{message}");
    assert!(message.contains("referralCode_1") && message.contains("unique"), "{message}");
    let st = current.status.clone().unwrap();
    assert_eq!(st.index_summary.as_deref(), Some("5/6 (1 conflict)"), "{:?}", st.indexes);
    // The workers come up (on a control-plane-only bed the test plays the kubelet):
    // Ready despite the conflict.
    wait_for(Duration::from_secs(60), "Ready with an index conflict", || async {
        mark_pods_ready(&s.client, &s.watched.name).await;
        let current = s.systems().get("main").await.ok()?;
        (condition(&current, "Ready")?.0 == "True" && condition(&current, "IndexesReady")?.1 == "IndexConflict")
            .then_some(())
    })
    .await;

    // The five others exist in the database now; the conflicting one is untouched.
    let mut names = Vec::new();
    for collection in ["users", "referrals", "referralTransactions"] {
        let mut cursor = db.collection::<mongodb::bson::Document>(collection).list_indexes().await.unwrap();
        while cursor.advance().await.unwrap() {
            let index = cursor.deserialize_current().unwrap();
            names.push((index.keys.to_string(), index.options.and_then(|o| o.unique).unwrap_or(false)));
        }
    }
    assert_eq!(names.iter().filter(|(k, _)| !k.contains("_id")).count(), 6, "{names:?}");
    assert!(
        names.iter().any(|(k, unique)| k.contains("referralCode") && !unique),
        "the conflicting index was rebuilt: {names:?}"
    );

    // A no-op: another reconcile within the interval leaves status as it is.
    let before = s.systems().get("main").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.systems().get("main").await.unwrap().metadata.resource_version, before);
    let _ = db.drop().await;
    drop(operator);
}

/// The managed-fields entry of `manager` on the status subresource: its operation and
/// the fields of `status` it owns.
fn status_owner(system: &ReferralSystem, manager: &str) -> Option<(String, Vec<String>)> {
    let entry = system
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some(manager) && m.subresource.as_deref() == Some("status"))?;
    let fields = entry.fields_v1.as_ref()?.0.get("f:status")?.as_object()?.keys().cloned().collect();
    Some((entry.operation.clone().unwrap_or_default(), fields))
}

#[tokio::test]
async fn each_status_writer_owns_its_fields_and_none_erases_another() {
    if !enabled() {
        return;
    }
    let s = setup("writers").await;
    s.create_system(json!({})).await;
    let operator = s.start("writers-0");
    s.reconciled(&operator).await;

    // The two in-cluster writers, run here as the Jobs' identity (which the operator
    // applied): the chain check against the test bed's MongoDB, and finalize on a
    // backup folder.
    let jobs_dir = s.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let kubeconfig = impersonating(&format!("system:serviceaccount:{}:main-jobs", s.watched.name), &jobs_dir);
    let binary = env!("CARGO_BIN_EXE_referral-operator");
    let check = || {
        let out = std::process::Command::new(binary)
            .args(["check", "chains", "--system", "main", "--write-status"])
            .env("KUBECONFIG", &kubeconfig)
            .env("MONGODB_URI", testbed_var("REFOP_TEST_MONGODB_URI"))
            .env("POD_NAMESPACE", &s.watched.name)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    };
    check();
    let backups = jobs_dir.join("backups");
    let folder = backups.join("20261123T010000Z.partial");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("mongodb-referrals.archive.gz"), [0x1f, 0x8b, 8, 0]).unwrap();
    std::fs::write(jobs_dir.join("name"), "20261123T010000Z").unwrap();
    let out = std::process::Command::new(binary)
        .args(["backup", "finalize", "--dir", backups.to_str().unwrap(), "--name-file"])
        .arg(jobs_dir.join("name"))
        .args(["--daily", "7", "--weekly", "4", "--monthly", "6", "--system", "main"])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", &s.watched.name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The operator reads both (ChainIntegrity from the check, BackupHealthy from the
    // backup) and writes its own fields again.
    let both = wait_for(Duration::from_secs(60), "the operator's conditions from both reports", || async {
        let current = s.systems().get("main").await.ok()?;
        let integrity = condition(&current, "ChainIntegrity")?;
        let backup = condition(&current, "BackupHealthy")?;
        // Either reason means the operator read status.backup (the folder's date is fixed).
        let read_backup = ["BackupRecent", "BackupOverdue"].contains(&backup.1.as_str());
        (integrity.1 != "NotRunYet" && read_backup).then_some(current)
    })
    .await;
    let status = both.status.clone().unwrap();
    let chain = status.chain_check.clone().expect("status.chainCheck");
    let backup = status.backup.clone().expect("status.backup");
    assert_eq!(backup.latest.as_deref(), Some("20261123T010000Z"));

    // managedFields name each writer as the owner of its fields, by apply.
    let expect = |writer: StatusWriter| {
        let (operation, mut fields) = status_owner(&both, writer.field_manager()).unwrap_or_else(|| {
            panic!("no status entry of {}: {:?}", writer.field_manager(), both.metadata.managed_fields)
        });
        assert_eq!(operation, "Apply", "{}", writer.field_manager());
        fields.sort();
        fields
    };
    assert_eq!(expect(StatusWriter::ChainCheck), ["f:chainCheck"]);
    assert_eq!(expect(StatusWriter::Backup), ["f:backup"]);
    let controller = expect(StatusWriter::Controller);
    assert!(
        controller.contains(&"f:conditions".to_string()) && controller.contains(&"f:observedGeneration".to_string())
    );
    assert!(!controller.iter().any(|f| f == "f:chainCheck" || f == "f:backup"), "{controller:?}");

    // A new generation: the operator applies its fields again, the Jobs' stay as written.
    s.systems()
        .patch("main", &PatchParams::default(), &Patch::Merge(json!({"spec": {"referral": {"maxRetries": 5}}})))
        .await
        .unwrap();
    let after = s.reconciled(&operator).await;
    let after_status = after.status.clone().unwrap();
    assert_ne!(after.metadata.generation, both.metadata.generation);
    assert_eq!(after_status.chain_check.as_ref(), Some(&chain), "the operator's apply erased status.chainCheck");
    assert_eq!(after_status.backup.as_ref(), Some(&backup), "the operator's apply erased status.backup");

    // The check again: the operator's fields stay as they were. The operator is stopped
    // first, so the check is the only writer: on a real node a worker pod becoming ready
    // would otherwise change a condition in between, legitimately.
    drop(operator);
    // A status write the operator sent just before the kill can still land after a read
    // made at once (the API server finishes a request it has received): read the status
    // once it has stayed the same for a while, so that the check is really the only writer.
    let settled = {
        let mut last = s.systems().get("main").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = s.systems().get("main").await.unwrap();
            if now.resource_version() == last.resource_version() {
                break now.status.unwrap();
            }
            assert!(tokio::time::Instant::now() < deadline, "the status kept changing after the operator was killed");
            last = now;
        }
    };
    assert_eq!(settled.observed_generation, after_status.observed_generation);
    check();
    let last = s.systems().get("main").await.unwrap();
    let last_status = last.status.clone().unwrap();
    assert_eq!(last_status.observed_generation, settled.observed_generation);
    assert_eq!(last_status.conditions, settled.conditions, "the check's apply erased the operator's conditions");
    assert_eq!(last_status.backup.as_ref(), Some(&backup), "the check's apply erased status.backup");
    assert!(last_status.chain_check.unwrap().last_run >= chain.last_run);
}

#[tokio::test]
async fn a_failed_backup_job_turns_backup_healthy_false_with_its_name_and_an_event() {
    if !enabled() {
        return;
    }
    let s = setup("bkfail").await;
    let system = s.create_system(json!({})).await;
    let operator = s.start("bkfail-0");
    let first = s.reconciled(&operator).await;
    let (_, reason, _) = condition(&first, "BackupHealthy").expect("BackupHealthy");
    assert_eq!(reason, "FirstBackupPending");

    // A backup asked for now, whose Job then fails (the test plays the Job controller:
    // there is no kubelet).
    s.annotate("referral.dev/backup-now", "2026-11-23T11:00:00Z").await;
    let job = manual_backup_job_name(&system, "2026-11-23T11:00:00Z");
    wait_for(Duration::from_secs(60), "the backup Job", || async { s.jobs().get_opt(&job).await.ok()? }).await;
    // Its dump container ran out of space: what it wrote to its termination message
    // (or its log's end) is in the condition and the event, not only in the log. On
    // the node the kubelet owns the pod's status, so there the Job alone is failed
    // (node.rs checks a real pod's message reaching a ReferralRestore).
    let full = "backup 20261123T110000Z: cannot write neurolov/users.bson.gz: No space left on device (os error 28)";
    let on_node = node().is_some();
    if on_node {
        crate::restore::fail_job(&s.client, &s.watched.name, &job).await;
    } else {
        fail_job_init_container(&s.client, &s.watched.name, &job, full).await;
    }
    let failed = wait_for(Duration::from_secs(60), "BackupHealthy False with BackupFailed", || async {
        let current = s.systems().get("main").await.ok()?;
        let (status, reason, message) = condition(&current, "BackupHealthy")?;
        (status == "False" && reason == "BackupFailed").then_some(message)
    })
    .await;
    assert!(failed.contains(&job) && failed.contains("BackoffLimitExceeded"), "{failed}");
    assert!(on_node || failed.contains(&format!("container dump exited 1: {full}")), "the pod's reason: {failed}");
    assert!(failed.contains("kept"), "{failed}");
    let events = wait_for(Duration::from_secs(30), "a BackupFailed event", || async {
        let (ok, events, _) = kubectl(&["get", "events.events.k8s.io", "-n", &s.watched.name, "-o", "json"], None);
        (ok && events.contains("\"BackupFailed\"")).then_some(events)
    })
    .await;
    assert!(events.contains(&job), "the event names the Job: {events}");
    assert!(on_node || events.contains("No space left on device"), "the event says why: {events}");

    // The next complete backup (as finalize reports it) clears the failure.
    let report = json!({"apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem", "status": {"backup": {
        "lastSuccess": k8s_openapi::jiff::Timestamp::now().to_string(), "latest": "20261123T120000Z",
        "backups": ["20261123T120000Z"], "kept": 1, "sizeBytes": 10
    }}});
    s.systems().patch_status("main", &StatusWriter::Backup.apply_params(), &Patch::Apply(&report)).await.unwrap();
    s.annotate("referral.dev/touch", "1").await;
    wait_for(Duration::from_secs(60), "BackupHealthy True after a newer success", || async {
        let current = s.systems().get("main").await.ok()?;
        let (status, reason, _) = condition(&current, "BackupHealthy")?;
        (status == "True" && reason == "BackupRecent").then_some(())
    })
    .await;
    drop(operator);
}
