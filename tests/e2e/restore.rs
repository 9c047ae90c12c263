//! The restore controller end to end: `referral-operator run`, acting as the chart's
//! ServiceAccount, restores a ReferralSystem step by step against the test bed's
//! apiserver, MongoDB-wire server and Redis.
//!
//! What a kubelet would do is done by the test: there is no kubelet, so Job status
//! is patched to succeeded or failed, as the Job controller would write it once the
//! pod ended. Everything else is the real thing: the Deployment and ReplicaSet
//! controllers scale the workers (their pods are created Pending and, never
//! scheduled, deleted at once when scaled down), the operator writes status and
//! events, creates the Jobs, and ensures the indexes on the MongoDB-wire server.
//!
//! One test, in the order a person would see it: the hold (workers at zero,
//! CronJobs suspended) comes before the restore Job; a second restore of the same
//! system waits; the operator is killed while the restore Job runs and a new process
//! carries on (same Job, hold kept); the indexes are ensured, the chain check runs,
//! the workers come back; then the second restore runs, its Job fails, the workers
//! stay at zero with a message, and deleting it brings them back.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use mongodb::bson::Document;
use referral_operator::crd::ReferralSystem;
use referral_operator::crd::restore::{ReferralRestore, ReferralRestoreStatus, RestorePhase};
use referral_operator::crd::validate::{ValidatedSystem, validate};
use referral_operator::reconcilers::restore::{restore_job_name, verify_job_name};
use referral_operator::reconcilers::restore_step::WORKERS_STOPPED_FOR;
use serde_json::json;

use crate::backup::{install_restore_crd, job_phase, succeed_job};
use crate::chart::{RunningOperator, namespaced_operator_rbac};
use crate::harness::{
    TestNamespace, client, enabled, fit_requests_to_node, install_crd, kubectl, put_secret, testbed_var, wait_for,
};

const BACKUP: &str = "20261123T010000Z";
const WORKER: &str = "main-reward-processor";
const REPLICAS: i32 = 2;

fn suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}", (std::process::id() ^ nanos) % 0xfffff)
}

/// `redis://HOST:PORT` of the test bed.
fn redis_host_port() -> (String, i32) {
    let url = testbed_var("REFOP_TEST_REDIS_URL");
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let (host, port) = address.rsplit_once(':').expect("REFOP_TEST_REDIS_URL is redis://HOST:PORT");
    (host.to_string(), port.parse().expect("a port number"))
}

pub(crate) fn restore_object(name: &str) -> ReferralRestore {
    serde_json::from_value(json!({
        "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralRestore",
        "metadata": {"name": name},
        "spec": {"systemName": "main", "backupName": BACKUP}
    }))
    .unwrap()
}

/// The operator's log, checked for RBAC refusals on every poll.
fn no_forbidden(operator: &RunningOperator) {
    let log = operator.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "the operator hit RBAC limits:\n{log}");
}

/// Polls `probe` until it yields a value; on timeout fails with the end of the
/// operator's log, which says what it was doing.
async fn until<T, F, Fut>(operator: &RunningOperator, timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        no_forbidden(operator);
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            let log = operator.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("timed out after {timeout:?} waiting for {what}; the operator's log ends:\n{}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn status_of(api: &Api<ReferralRestore>, name: &str) -> Option<ReferralRestoreStatus> {
    api.get(name).await.ok()?.status
}

/// Waits until restore `name` records `phase`; fails at once if it records a
/// terminal phase that is not the one expected.
async fn wait_phase(
    api: &Api<ReferralRestore>,
    name: &str,
    phase: RestorePhase,
    operator: &RunningOperator,
) -> ReferralRestoreStatus {
    until(operator, Duration::from_secs(90), &format!("ReferralRestore {name} to reach {phase:?}"), || async {
        let status = status_of(api, name).await?;
        if let Some(other) = status.phase.filter(|p| p.is_terminal() && *p != phase) {
            panic!("{name} ended {other:?} while {phase:?} was expected: {status:?}\n{}", operator.log_text());
        }
        (status.phase == Some(phase)).then_some(status)
    })
    .await
}

async fn replicas(deployments: &Api<Deployment>) -> Option<i32> {
    deployments.get(WORKER).await.ok()?.spec?.replicas
}

/// (name, suspended) of every CronJob in the namespace.
async fn cron_suspends(client: &Client, ns: &str) -> Vec<(String, bool)> {
    let list = Api::<CronJob>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap();
    list.items.iter().map(|c| (c.name_any(), c.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false))).collect()
}

async fn worker_pods(client: &Client, ns: &str) -> usize {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/instance=main,app.kubernetes.io/component=worker"))
        .await
        .unwrap()
        .items
        .len()
}

pub(crate) async fn jobs_for(client: &Client, ns: &str, purpose: &str) -> Vec<Job> {
    Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("referral.dev/purpose={purpose}")))
        .await
        .unwrap()
        .items
}

/// The index names of a collection; none when the collection does not exist.
async fn index_names(db: &mongodb::Database, collection: &str) -> Vec<String> {
    let exists = db.list_collection_names().await.expect("listCollections").iter().any(|c| c == collection);
    if !exists {
        return Vec::new();
    }
    db.collection::<Document>(collection).list_index_names().await.expect("listIndexes")
}

/// Marks a Job failed, as the Job controller would once its retries are used up.
pub(crate) async fn fail_job(client: &Client, ns: &str, name: &str) {
    let api = Api::<Job>::namespaced(client.clone(), ns);
    let started = wait_for(Duration::from_secs(30), "the Job controller to start the Job", || async {
        api.get(name).await.ok()?.status?.start_time
    })
    .await;
    let now = Time(k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second()).unwrap());
    let reason = "BackoffLimitExceeded";
    let message = "Job has reached the specified backoff limit";
    let patch = json!({"status": {
        "startTime": started, "failed": 2, "active": 0, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {},
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now}
        ]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch {name} status: {e}"));
}

/// Samples for a few seconds that the workers stay at zero (a hold that was lifted
/// would show within one reconcile).
async fn stays_at_zero(deployments: &Api<Deployment>, why: &str) {
    for _ in 0..10 {
        assert_eq!(replicas(deployments).await, Some(0), "{why}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The reasons of the events on ReferralRestore `name`, oldest first.
pub(crate) async fn event_reasons(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let mut events: Vec<Event> = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("ReferralRestore") && r.name.as_deref() == Some(name))
        })
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events.into_iter().filter_map(|e| e.reason).collect()
}

#[tokio::test]
async fn the_operator_restores_step_by_step_and_carries_on_after_a_restart() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    install_restore_crd(&client).await;
    let operator_ns = TestNamespace::create(&client, "refop-restore").await;
    let ns = TestNamespace::create(&client, "restore-run").await;
    let dir = tempfile::tempdir().unwrap();
    let release = format!("restore-{}", suffix());
    let (_installed, kubeconfig) = namespaced_operator_rbac(dir.path(), &operator_ns.name, &ns.name, &release);

    let mongo_uri = testbed_var("REFOP_TEST_MONGODB_URI");
    let database = format!("restore_e2e_{}", suffix());
    put_secret(&client, &ns.name, "referral-mongo", &[("uri", &mongo_uri)]).await;
    let (redis_host, redis_port) = redis_host_port();
    let mut spec = json!({
        "image": "example/referral-service:1.4.2",
        "workers": [{"name": "reward-processor", "replicas": REPLICAS}],
        "mongodb": {
            "uriSecretRef": {"name": "referral-mongo", "key": "uri"},
            "database": database,
            "indexPolicy": "Report"
        },
        "redis": {"external": {"host": redis_host, "port": redis_port}}
    });
    fit_requests_to_node(&mut spec);
    let system: ReferralSystem = serde_json::from_value(json!({
        "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem",
        "metadata": {"name": "main", "namespace": ns.name},
        "spec": spec
    }))
    .unwrap();
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name);
    let created = systems.create(&PostParams::default(), &system).await.expect("create the ReferralSystem");
    let validated: ValidatedSystem = validate(&created, &ns.name).expect("a valid system");

    let log = dir.path().join("operator.log");
    let mut operator = RunningOperator::start(&kubeconfig, log.clone(), &operator_ns.name, "e2e-restore", &[&ns.name]);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    // One reconcile applies the Deployments before the CronJobs: wait for both, and for
    // the workers' pods. A Deployment scaled to zero while the ReplicaSet controller's
    // create of a pod is still on its way reads as stopped (status and ReplicaSet at 0,
    // no pod listed), and the pod appears after that: the restore is of a running system.
    let crons =
        until(&operator, Duration::from_secs(90), "the worker Deployment, its pods and the CronJobs", || async {
            let crons = cron_suspends(&client, &ns.name).await;
            let pods = usize::try_from(REPLICAS).unwrap();
            let running =
                replicas(&deployments).await == Some(REPLICAS) && worker_pods(&client, &ns.name).await == pods;
            (running && crons.len() >= 2).then_some(crons)
        })
        .await;
    assert!(crons.iter().all(|(_, suspended)| !suspended), "{crons:?}");

    // --- The first restore: hold, then the restore Job.
    let restores = Api::<ReferralRestore>::namespaced(client.clone(), &ns.name);
    let first = restores.create(&PostParams::default(), &restore_object("r1")).await.expect("create r1");
    let first_uid = first.uid().unwrap();
    let job_name = restore_job_name(&validated, &first_uid);
    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name);
    let job = until(&operator, Duration::from_secs(90), "the restore Job of r1", || async {
        jobs.get_opt(&job_name).await.ok()?
    })
    .await;
    // By the time the Job exists, the hold is in place and no worker pod is left.
    assert_eq!(replicas(&deployments).await, Some(0), "the restore Job came before the workers were at zero");
    assert_eq!(worker_pods(&client, &ns.name).await, 0, "a worker pod was left when the restore Job was created");
    let crons = cron_suspends(&client, &ns.name).await;
    assert!(crons.iter().all(|(_, suspended)| *suspended), "every CronJob is suspended first: {crons:?}");
    let status = wait_phase(&restores, "r1", RestorePhase::Restoring, &operator).await;
    assert!(status.holds_system, "{status:?}");
    assert_eq!(status.restore_job.as_deref(), Some(job_name.as_str()));
    // The workers were confirmed stopped first: read as stopped (WorkersStopped=True,
    // in whole seconds) at least WORKERS_STOPPED_FOR before the Job, counting the
    // second the stored time may have lost.
    let stopped = status.conditions.iter().find(|c| c.type_ == "WorkersStopped").expect("WorkersStopped");
    assert_eq!((stopped.status.as_str(), stopped.reason.as_str()), ("True", "Stopped"), "{stopped:?}");
    let job_created = job.metadata.creation_timestamp.as_ref().expect("a creation time").0;
    let confirmed_for = job_created.duration_since(stopped.last_transition_time.0);
    assert!(
        confirmed_for
            >= k8s_openapi::jiff::SignedDuration::try_from(WORKERS_STOPPED_FOR + Duration::from_secs(1)).unwrap(),
        "the restore Job came {confirmed_for:?} after the workers first read as stopped"
    );

    // The Job: owned by r1, restores the named backup, the URI only by reference.
    let owner = &job.metadata.owner_references.as_ref().expect("an owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("ReferralRestore", "r1", first_uid.as_str())
    );
    assert_eq!(job.labels()["referral.dev/purpose"], "restore");
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let init = pod.init_containers.as_ref().expect("init containers");
    // The native restore (the default method): the operator's binary checks the
    // backup against its manifest, restores and counts.
    assert_eq!(init[0].name, "restore");
    assert_eq!(init[0].args.as_ref().unwrap(), &["backup", "restore", "--dir", "/backups", "--name", BACKUP]);
    let restore = &init[0];
    let env = restore.env.as_ref().unwrap();
    assert!(env.iter().any(|e| e.name == "BACKUP_NAME" && e.value.as_deref() == Some(BACKUP)), "{env:?}");
    assert!(env.iter().any(|e| e.name == "MONGODB_DATABASE" && e.value.as_deref() == Some(database.as_str())));
    let uri_var = env.iter().find(|e| e.name == "MONGODB_URI").expect("MONGODB_URI");
    assert_eq!(
        uri_var.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).map(|s| s.name.as_str()),
        Some("referral-mongo")
    );
    let job_text = serde_json::to_string(&job).unwrap();
    assert!(!job_text.contains(&mongo_uri), "the MongoDB URI is in the Job in clear");
    assert_eq!(pod.containers[0].name, "redis-restore", "a single external Redis is restored too");

    // --- A second restore of the same system waits for the first.
    restores.create(&PostParams::default(), &restore_object("r2")).await.expect("create r2");
    let waiting = wait_phase(&restores, "r2", RestorePhase::Pending, &operator).await;
    assert!(waiting.message.as_deref().is_some_and(|m| m.contains("r1")), "{waiting:?}");
    assert!(!waiting.holds_system);
    // Waiting writes nothing more: a status that kept changing would wake the
    // controller over and over.
    let version = restores.get("r2").await.unwrap().resource_version();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(restores.get("r2").await.unwrap().resource_version(), version, "r2 is rewritten while it waits");

    // --- The operator dies while the restore Job runs; a new process carries on.
    drop(operator);
    stays_at_zero(&deployments, "nothing lifts the hold while no operator runs").await;
    operator = RunningOperator::start(
        &kubeconfig,
        dir.path().join("operator-2.log"),
        &operator_ns.name,
        "e2e-restore",
        &[&ns.name],
    );
    until(&operator, Duration::from_secs(60), "the new operator to start its controllers", || async {
        operator.log_text().contains("controller started").then_some(())
    })
    .await;
    stays_at_zero(&deployments, "the new operator keeps the recorded hold").await;
    assert_eq!(jobs_for(&client, &ns.name, "restore").await.len(), 1, "the restore Job was found, not created again");
    assert_eq!(status_of(&restores, "r2").await.and_then(|s| s.phase), Some(RestorePhase::Pending));

    // --- The Job succeeds: indexes, chain check, workers back. The system's
    // indexPolicy is Report, so the operator's periodic check never creates an
    // index: the restore ensures them whatever the policy, and is the only writer
    // here. `mongorestore --drop` would have replaced the collections, and their
    // indexes with them: drop the database as the Job would have.
    let mongo = mongodb::Client::with_uri_str(&mongo_uri).await.expect("connect to the test bed's MongoDB");
    let db = mongo.database(&database);
    db.drop().await.expect("drop the test database");
    for spec in &validated.spec.mongodb.indexes {
        let names = index_names(&db, &spec.collection).await;
        assert!(
            !names.contains(&spec.effective_name()),
            "{} still has {} after the drop",
            spec.collection,
            spec.effective_name()
        );
    }
    succeed_job(&client, &ns.name, &job_name).await;
    let check_name = verify_job_name(&validated, &first_uid);
    let check = until(&operator, Duration::from_secs(90), "the chain-check Job after the restore", || async {
        jobs.get_opt(&check_name).await.ok()?
    })
    .await;
    let status = status_of(&restores, "r1").await.unwrap();
    let indexes = status.conditions.iter().find(|c| c.type_ == "IndexesEnsured").expect("IndexesEnsured recorded");
    assert_eq!(indexes.status, "True", "{indexes:?}");
    let declared = validated.spec.mongodb.indexes.len();
    assert!(indexes.message.contains(&format!("({declared} created)")), "the restore created them: {indexes:?}");
    for spec in &validated.spec.mongodb.indexes {
        let names = index_names(&db, &spec.collection).await;
        assert!(
            names.contains(&spec.effective_name()),
            "{} has no index {}: {names:?}",
            spec.collection,
            spec.effective_name()
        );
    }
    assert_eq!(check.labels()["referral.dev/purpose"], "restore-check");
    assert_eq!(check.labels()["app.kubernetes.io/component"], "chain-check");
    assert_eq!(check.metadata.owner_references.as_ref().unwrap()[0].name, "r1");
    assert_eq!(replicas(&deployments).await, Some(0), "workers stay at zero while the chains are checked");
    succeed_job(&client, &ns.name, &check_name).await;

    let done = wait_phase(&restores, "r1", RestorePhase::Succeeded, &operator).await;
    assert!(!done.holds_system);
    let conditions: Vec<(&str, &str)> = done.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
    assert_eq!(
        conditions,
        [
            ("WorkersStopped", "True"),
            ("DataRestored", "True"),
            ("IndexesEnsured", "True"),
            ("ChainsChecked", "True"),
            ("WorkersRestored", "True")
        ]
    );
    assert!(done.started_at.is_some() && done.completed_at.is_some());
    let version = restores.get("r1").await.unwrap().resource_version();
    assert_eq!(replicas(&deployments).await, Some(REPLICAS), "the workers are back");
    let crons = cron_suspends(&client, &ns.name).await;
    assert!(crons.iter().all(|(_, suspended)| !suspended), "the CronJobs follow the spec again: {crons:?}");
    let reasons = event_reasons(&client, &ns.name, "r1").await;
    let steps: Vec<&str> = reasons.iter().map(String::as_str).filter(|r| *r != "Pending").collect();
    assert_eq!(steps, ["ScalingDown", "Restoring", "EnsuringIndexes", "CheckingChains", "ScalingUp", "Restored"]);

    // --- The second restore runs now; its Job fails; the workers stay at zero.
    let second_uid = restores.get("r2").await.unwrap().uid().unwrap();
    let second_job = restore_job_name(&validated, &second_uid);
    until(&operator, Duration::from_secs(90), "the restore Job of r2", || async {
        jobs.get_opt(&second_job).await.ok()?
    })
    .await;
    assert_eq!(replicas(&deployments).await, Some(0));
    let r1_version = restores.get("r1").await.unwrap().resource_version();
    assert_eq!(r1_version, version, "a finished restore is not written again");
    fail_job(&client, &ns.name, &second_job).await;
    let failed = wait_phase(&restores, "r2", RestorePhase::Failed, &operator).await;
    assert!(failed.holds_system, "{failed:?}");
    let message = failed.message.clone().unwrap_or_default();
    assert!(message.contains(&second_job) && message.contains("delete this one"), "{message}");
    assert!(matches!(
        job_phase(&client, &ns.name, &second_job).await,
        referral_operator::reconcilers::job::JobPhase::Failed(_)
    ));
    stays_at_zero(&deployments, "a failed restore keeps the workers at zero").await;
    let (ok, described, _) =
        kubectl(&["get", "referralrestore", "r2", "-n", &ns.name, "-o", "jsonpath={.status.phase}"], None);
    assert!(ok && described == "Failed", "{described}");

    // Deleting the failed restore is how a person starts the workers on the data as it is.
    restores.delete("r2", &DeleteParams::default()).await.expect("delete r2");
    until(
        &operator,
        Duration::from_secs(60),
        "the workers to come back after the failed restore is deleted",
        || async { (replicas(&deployments).await == Some(REPLICAS)).then_some(()) },
    )
    .await;
    no_forbidden(&operator);
    db.drop().await.expect("drop the test database");
}
