//! The e2e suite on the test bed's node: the operator, installed from its chart, runs
//! as pods from the image built from this checkout (scripts/build-images.sh), and
//! what it creates runs for real: workers from the stand-in image pass real probes,
//! Redis runs its generated config behind its NetworkPolicy (enforced by kube-router),
//! the chain-check Job runs the operator image against the MongoDB-wire server and
//! writes status with its projected token. Nothing here writes a status that the
//! kubelet, a controller or a Job owns: each test checks that every pod status was
//! written by the cluster's own components.
//!
//! Each test skips (saying so) on a control-plane-only bed, and fails there instead
//! under REFOP_REQUIRE_NODE=1, as scripts/test-all.sh runs it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use mongodb::bson::{Document, doc, oid::ObjectId};
use referral_operator::backup::store;
use referral_operator::crd::ReferralSystem;
use referral_operator::crd::restore::{ReferralRestore, RestorePhase};
use referral_operator::crd::status::StatusWriter;
use referral_operator::crd::validate::validate;
use referral_operator::reconcilers::backup::{claim_name, manual_backup_job_name};
use serde_json::{Value, json};

use crate::backup::install_restore_crd;
use crate::chart::{Installed, render_chart};
use crate::harness::{
    Node, TestNamespace, client, fit_to_node, install_crd, kubectl, operator_image, put_secret, require_node,
    testbed_var, wait_for,
};

/// How long pods may take to start and pass their probes on a busy 2-core node.
const START: Duration = Duration::from_secs(240);

pub(crate) fn suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}", (std::process::id() ^ nanos.rotate_left(11)) % 0xfffff)
}

/// The operator installed from the chart (namespaced mode, watching one namespace),
/// running as pods from the image built from this checkout.
pub(crate) struct PodOperator {
    pub(crate) ns: TestNamespace,
    release: String,
    deployment: String,
    _installed: Installed,
    _dir: tempfile::TempDir,
}

impl PodOperator {
    pub(crate) async fn install(client: &Client, prefix: &str, watched: &str, leader_election: bool) -> PodOperator {
        let ns = TestNamespace::create(client, &format!("{prefix}-op")).await;
        let dir = tempfile::tempdir().unwrap();
        let release = format!("{prefix}-{}", suffix());
        let image = operator_image();
        let (repository, tag) = image.rsplit_once(':').expect("REFOP_OPERATOR_IMAGE is REPOSITORY:TAG");
        let path = render_chart(
            dir.path(),
            "chart.yaml",
            &[
                "--mode",
                "namespaced",
                "--namespace",
                &ns.name,
                "--watch",
                watched,
                "--release",
                &release,
                "--set",
                &format!("image.repository={repository}"),
                "--set",
                &format!("image.tag={tag}"),
                "--set",
                &format!("leaderElection.enabled={leader_election}"),
            ],
        );
        let installed = Installed::apply(path);
        let deployment = installed
            .objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .and_then(|o| o["metadata"]["name"].as_str())
            .expect("the chart renders a Deployment")
            .to_string();
        let operator = PodOperator { ns, release, deployment, _installed: installed, _dir: dir };
        operator.wait_available(client).await;
        operator
    }

    async fn wait_available(&self, client: &Client) {
        let deployments = Api::<Deployment>::namespaced(client.clone(), &self.ns.name);
        wait_for(START, "the operator's Deployment to be available", || async {
            let d = deployments.get(&self.deployment).await.ok()?;
            let status = d.status?;
            (status.available_replicas.unwrap_or(0) == d.spec?.replicas.unwrap_or(1)).then_some(())
        })
        .await;
    }

    async fn pods(&self, client: &Client) -> Vec<Pod> {
        let selector = format!("app.kubernetes.io/instance={}", self.release);
        Api::<Pod>::namespaced(client.clone(), &self.ns.name)
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("list the operator's pods")
            .items
    }

    /// The operator's logs, for a failure message.
    pub(crate) fn logs(&self) -> String {
        let (_, out, err) = kubectl(
            &["logs", "-n", &self.ns.name, &format!("deployment/{}", self.deployment), "--all-containers", "--tail=80"],
            None,
        );
        format!("{out}{err}")
    }
}

/// A ReferralSystem from `examples/<file>`, named `name` in `namespace`, runnable on
/// the node ([`fit_to_node`]).
pub(crate) fn example(file: &str, name: &str, namespace: &str) -> ReferralSystem {
    let text = std::fs::read_to_string(format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut value: Value = referral_operator::yaml::from_str(&text).unwrap();
    value["metadata"] = json!({"name": name, "namespace": namespace});
    fit_to_node(&mut value["spec"]);
    serde_json::from_value(value).expect("the example is a ReferralSystem")
}

pub(crate) async fn create(client: &Client, system: &ReferralSystem) -> ReferralSystem {
    let namespace = system.metadata.namespace.as_deref().unwrap();
    Api::<ReferralSystem>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), system)
        .await
        .expect("create the ReferralSystem")
}

fn condition(system: &ReferralSystem, type_: &str) -> Option<(String, String, String)> {
    let c = system.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `type_` is True on the system `name` for its current generation.
pub(crate) async fn wait_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    operator: &PodOperator,
) -> ReferralSystem {
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + START;
    loop {
        if let Ok(system) = systems.get(name).await {
            let current = system.status.as_ref().and_then(|s| s.observed_generation) == system.metadata.generation;
            if current && condition(&system, type_).is_some_and(|c| c.0 == "True") {
                return system;
            }
            if Instant::now() > deadline {
                panic!(
                    "{ns}/{name} is not {type_} after {START:?}: {:?}\noperator log:\n{}",
                    system.status.map(|s| s.conditions),
                    operator.logs()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every pod status in `namespace` was written by the cluster's own components (the
/// kubelet, and the scheduler or a controller for their conditions), never by a test.
async fn assert_statuses_are_the_kubelets(client: &Client, namespace: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.unwrap();
    assert!(!pods.items.is_empty(), "no pods in {namespace}");
    let mut by_kubelet = 0;
    for pod in pods.items {
        for entry in pod.metadata.managed_fields.unwrap_or_default() {
            if entry.subresource.as_deref() == Some("status") {
                let manager = entry.manager.as_deref().unwrap_or_default();
                assert!(
                    ["kubelet", "kube-scheduler", "kube-controller-manager"].contains(&manager),
                    "{:?}: status written by {manager:?}",
                    pod.metadata.name
                );
                by_kubelet += usize::from(manager == "kubelet");
            }
        }
    }
    assert!(by_kubelet > 0, "no pod status in {namespace} came from the kubelet");
}

/// GET `path` on a pod's port, straight from this machine (the bed routes the pod
/// network to the host): (status code, body), or None when nothing answers.
fn pod_get(pod: &Pod, port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    let address = SocketAddr::new(ip, port);
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Ready pods of `namespace` matching `selector`.
pub(crate) async fn ready_pods(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let list = pods.list(&ListParams::default().labels(selector)).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect()
}

/// A client pod (the stand-in worker's `connect`), its phase once it ends and its log.
async fn client_pod(
    client: &Client,
    node: &Node,
    ns: &str,
    name: &str,
    labels: Value,
    target: &str,
) -> (String, String) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 60,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": node.worker_image, "imagePullPolicy": "Never",
                "command": ["/worker", "connect", target, "3"],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod).await.expect("create the client pod");
    let phase = wait_for(Duration::from_secs(90), "the client pod to finish", || async {
        let phase = pods.get(name).await.ok()?.status?.phase?;
        (phase == "Succeeded" || phase == "Failed").then_some(phase)
    })
    .await;
    let log = pods.logs(name, &Default::default()).await.unwrap_or_default();
    (phase, log)
}

// ------------------------------------------------------------------ 1 ---

#[tokio::test]
async fn the_operator_runs_as_pods_from_its_image_and_a_deleted_leader_hands_over_within_30s() {
    let Some(_node) = require_node("the operator as pods, leader hand-over") else { return };
    let client = client().await;
    install_crd(&client).await;
    let watched = TestNamespace::create(&client, "lead").await;
    put_secret(&client, &watched.name, "referral-mongo", &[("uri", &testbed_var("REFOP_TEST_MONGODB_URI"))]).await;
    let operator = PodOperator::install(&client, "lead", &watched.name, true).await;
    let pods = operator.pods(&client).await;
    assert_eq!(pods.len(), 2, "leader election runs two replicas");
    for pod in &pods {
        let container = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some(operator_image().as_str()));
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(pod.spec.as_ref().unwrap().security_context.as_ref().unwrap().run_as_user, Some(65532));
    }

    let leases = Api::<Lease>::namespaced(client.clone(), &operator.ns.name);
    let holder = || async {
        let lease = leases.get("referral-operator").await.ok()?;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    };
    let leader = wait_for(START, "a replica to hold the Lease", holder).await;
    assert!(pods.iter().any(|p| p.metadata.name.as_deref() == Some(leader.as_str())), "{leader} is not a pod");

    let mut system = example("minimal.yaml", "main", &watched.name);
    system.spec.redis.managed = None;
    let (host, port) = redis_address();
    system.spec.redis.external = serde_json::from_value(json!({"host": host, "port": port})).unwrap();
    create(&client, &system).await;
    wait_condition(&client, &watched.name, "main", "Ready", &operator).await;

    // The leader goes away; the other replica takes the Lease and goes on reconciling.
    let deleted = Instant::now();
    Api::<Pod>::namespaced(client.clone(), &operator.ns.name)
        .delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leader pod");
    let successor = wait_for(Duration::from_secs(30), "another replica to take the Lease within 30s", || async {
        holder().await.filter(|h| h != &leader)
    })
    .await;
    let handover = deleted.elapsed();
    eprintln!("leader {leader} deleted; {successor} holds the Lease after {handover:?}");
    assert!(handover <= Duration::from_secs(30));
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), &watched.name);
    systems
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"workers": [{"name": "reward-processor", "replicas": 2,
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}}]}})),
        )
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &watched.name);
    wait_for(Duration::from_secs(60), "the new leader to apply the change", || async {
        let d = deployments.get("main-reward-processor").await.ok()?;
        (d.spec?.replicas == Some(2)).then_some(())
    })
    .await;
    wait_condition(&client, &watched.name, "main", "Ready", &operator).await;
    assert_statuses_are_the_kubelets(&client, &watched.name).await;
}

/// Host and port of the test bed's Redis (reachable from pods too).
fn redis_address() -> (String, u16) {
    let url = testbed_var("REFOP_TEST_REDIS_URL");
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let (host, port) = address.rsplit_once(':').expect("REFOP_TEST_REDIS_URL is redis://HOST:PORT");
    (host.to_string(), port.parse().expect("a numeric Redis port"))
}

// ------------------------------------------------------------------ 2 ---

#[tokio::test]
async fn the_examples_become_ready_through_real_probes_and_kubectl_wait_returns() {
    let Some(_node) = require_node("the examples on the node") else { return };
    let client = client().await;
    install_crd(&client).await;
    let watched = TestNamespace::create(&client, "examples").await;
    put_secret(&client, &watched.name, "referral-mongo", &[("uri", &testbed_var("REFOP_TEST_MONGODB_URI"))]).await;
    put_secret(&client, &watched.name, "referral-redis", &[("password", &format!("pw-{}", suffix()))]).await;
    let operator = PodOperator::install(&client, "examples", &watched.name, false).await;
    create(&client, &example("minimal.yaml", "minimal", &watched.name)).await;
    create(&client, &example("full.yaml", "main", &watched.name)).await;

    let (ok, out, err) = kubectl(
        &[
            "wait",
            "-n",
            &watched.name,
            "--for=condition=Ready",
            "referralsystem/minimal",
            "referralsystem/main",
            &format!("--timeout={}s", START.as_secs()),
        ],
        None,
    );
    assert!(ok, "kubectl wait did not return Ready:\n{out}{err}\noperator log:\n{}", operator.logs());
    for name in ["minimal", "main"] {
        let system = wait_condition(&client, &watched.name, name, "Ready", &operator).await;
        assert_eq!(condition(&system, "RedisReady").map(|c| c.0).as_deref(), Some("True"), "{name}");
        assert_eq!(condition(&system, "WorkersAvailable").map(|c| c.0).as_deref(), Some("True"), "{name}");
    }
    // The API worker's pods passed their HTTP readiness probe on the stand-in.
    let api = ready_pods(&client, &watched.name, "app.kubernetes.io/instance=main,referral.dev/worker=api").await;
    assert!(api.len() >= 2, "the HorizontalPodAutoscaler's minimum of ready API pods: {}", api.len());
    for pod in &api {
        let probe = pod.spec.as_ref().unwrap().containers[0].readiness_probe.clone().expect("a readiness probe");
        let path = probe.http_get.expect("an HTTP probe").path.unwrap();
        assert_eq!(pod_get(pod, 3000, &path).map(|r| r.0), Some(200), "{path} on {:?}", pod.metadata.name);
    }
    assert_statuses_are_the_kubelets(&client, &watched.name).await;
}

// ------------------------------------------------------------------ 3 ---

#[tokio::test]
async fn managed_redis_runs_its_config_behind_its_password_and_policy_and_the_operator_still_reaches_it() {
    let Some(node) = require_node("managed Redis on the node") else { return };
    let client = client().await;
    install_crd(&client).await;
    let watched = TestNamespace::create(&client, "redis").await;
    let password = format!("pw-{}-{}", suffix(), suffix());
    put_secret(&client, &watched.name, "referral-mongo", &[("uri", &testbed_var("REFOP_TEST_MONGODB_URI"))]).await;
    put_secret(&client, &watched.name, "referral-redis", &[("password", &password)]).await;
    let operator = PodOperator::install(&client, "redis", &watched.name, false).await;
    let mut system = example("minimal.yaml", "main", &watched.name);
    system.spec.redis.password_secret_ref =
        serde_json::from_value(json!({"name": "referral-redis", "key": "password"})).unwrap();
    if let Some(managed) = system.spec.redis.managed.as_mut() {
        managed.max_memory = "64mb".into();
    }
    create(&client, &system).await;

    // The operator's RedisReady probe runs from its own namespace, through the policy.
    wait_condition(&client, &watched.name, "main", "RedisReady", &operator).await;
    wait_condition(&client, &watched.name, "main", "Ready", &operator).await;

    // Redis runs the generated redis.conf, and wants the password.
    let exec = |script: &str| {
        kubectl(&["exec", "-n", &watched.name, "main-redis-0", "-c", "redis", "--", "sh", "-c", script], None)
    };
    let (ok, out, err) = exec("redis-cli CONFIG GET maxmemory");
    assert!(ok && out.lines().nth(1) == Some("67108864"), "{out}{err}");
    let (ok, out, err) = exec("redis-cli CONFIG GET maxmemory-policy");
    assert!(ok && out.contains("allkeys-lru"), "{out}{err}");
    let (_, out, err) = exec("REDISCLI_AUTH= redis-cli ping");
    assert!(out.contains("NOAUTH") || err.contains("NOAUTH"), "Redis answered without the password: {out}{err}");

    // A worker pod reaches it through the Service name, with the password from the Secret.
    let workers = ready_pods(&client, &watched.name, "app.kubernetes.io/component=worker").await;
    let worker = workers.first().expect("a ready worker pod");
    let env = &worker.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
    let host = env.iter().find(|e| e.name == "REDIS_HOST").and_then(|e| e.value.clone()).unwrap();
    assert_eq!(host, "main-redis", "workers find Redis by its Service name");
    let answer = pod_get(worker, 3000, "/redis/ping");
    assert_eq!(answer.as_ref().map(|a| a.0), Some(200), "the worker could not reach Redis: {answer:?}");

    // A pod outside the system is refused by the NetworkPolicy; the same pod with the
    // system's labels gets through.
    let (phase, log) =
        client_pod(&client, &node, &watched.name, "outsider", json!({"app": "outsider"}), "main-redis:6379").await;
    assert_eq!(phase, "Failed", "a pod outside the system reached Redis: {log}");
    let labels = json!({"app.kubernetes.io/name": "referral-system", "app.kubernetes.io/instance": "main"});
    let (phase, log) = client_pod(&client, &node, &watched.name, "insider", labels, "main-redis:6379").await;
    assert_eq!(phase, "Succeeded", "a pod with the system's labels was refused: {log}");

    let system = wait_condition(&client, &watched.name, "main", "RedisReady", &operator).await;
    assert_eq!(condition(&system, "RedisReady").unwrap().0, "True");
    assert_statuses_are_the_kubelets(&client, &watched.name).await;
}

// ------------------------------------------------------------------ 4 ---

#[tokio::test]
async fn the_chain_check_job_runs_the_operator_image_and_writes_status_with_its_projected_token() {
    let Some(_node) = require_node("the chain-check Job on the node") else { return };
    let client = client().await;
    install_crd(&client).await;
    let watched = TestNamespace::create(&client, "chains").await;
    let mongo_uri = testbed_var("REFOP_TEST_MONGODB_URI");
    put_secret(&client, &watched.name, "referral-mongo", &[("uri", &mongo_uri)]).await;
    let database = format!("e2e_node_chains_{}", suffix());
    let mongo = mongodb::Client::with_uri_str(&mongo_uri).await.unwrap();
    let users = mongo.database(&database).collection::<Document>("users");
    let id = |n: u8| ObjectId::from_bytes([n; 12]);
    // One cycle (3 <-> 4) and one orphan (5 names a user that does not exist).
    users
        .insert_many(vec![
            doc! {"_id": id(1)},
            doc! {"_id": id(2), "referredBy": id(1)},
            doc! {"_id": id(3), "referredBy": id(4)},
            doc! {"_id": id(4), "referredBy": id(3)},
            doc! {"_id": id(5), "referredBy": id(9)},
        ])
        .await
        .unwrap();
    let operator = PodOperator::install(&client, "chains", &watched.name, false).await;
    let mut system = example("minimal.yaml", "main", &watched.name);
    system.spec.mongodb.database = database.clone();
    system.spec.redis.managed = None;
    let (host, port) = redis_address();
    system.spec.redis.external = serde_json::from_value(json!({"host": host, "port": port})).unwrap();
    create(&client, &system).await;
    wait_condition(&client, &watched.name, "main", "Ready", &operator).await;

    // A person asks for a check now; the operator starts a Job from the CronJob's template.
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), &watched.name);
    systems
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"referral.dev/check-now": "node-e2e-1"}}})),
        )
        .await
        .unwrap();
    let checked = wait_for(START, "status.chainCheck from the Job", || async {
        let system = systems.get("main").await.ok()?;
        let chain = system.status.as_ref()?.chain_check.clone()?;
        chain.last_run.is_some().then_some(chain)
    })
    .await;
    assert_eq!((checked.users, checked.cycles, checked.orphans), (5, 1, 1), "{checked:?}");
    assert!(checked.failure.is_none(), "{:?}", checked.failure);

    // It ran in a pod of the operator's image, restricted and with a read-only root,
    // as the Job's own ServiceAccount (a projected token), and succeeded.
    let jobs = Api::<Job>::namespaced(client.clone(), &watched.name);
    let job = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|j| {
            j.spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .is_some_and(|s| s.containers[0].args.as_ref().is_some_and(|a| a.iter().any(|x| x == "chains")))
        })
        .expect("the check Job");
    let job_name = job.metadata.name.clone().unwrap();
    let succeeded = wait_for(Duration::from_secs(60), "the check Job to succeed", || async {
        jobs.get(&job_name).await.ok()?.status?.succeeded.filter(|n| *n >= 1)
    })
    .await;
    assert_eq!(succeeded, 1);
    let pods = Api::<Pod>::namespaced(client.clone(), &watched.name)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
        .await
        .unwrap()
        .items;
    let pod = pods.first().expect("the Job's pod");
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some(operator_image().as_str()));
    assert_eq!(spec.containers[0].security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Succeeded"));
    let token_volume = spec.volumes.as_ref().unwrap().iter().find(|v| v.projected.is_some());
    assert!(token_volume.is_some(), "no projected ServiceAccount token in {:?}", spec.volumes);
    let managers = systems.get("main").await.unwrap().metadata.managed_fields.unwrap_or_default();
    assert!(
        managers.iter().any(|m| m.manager.as_deref() == Some(StatusWriter::ChainCheck.field_manager())
            && m.subresource.as_deref() == Some("status")
            && m.operation.as_deref() == Some("Apply")),
        "status.chainCheck written by another manager: {managers:?}"
    );
    assert_statuses_are_the_kubelets(&client, &watched.name).await;
    let _ = mongo.database(&database).drop().await;
}

// ------------------------------------------------------------------ 6 ---

#[tokio::test]
async fn an_unpullable_image_reaches_the_progress_deadline_degraded_and_is_rolled_back_when_asked() {
    let Some(node) = require_node("an unpullable upgrade on the node") else { return };
    let client = client().await;
    install_crd(&client).await;
    let watched = TestNamespace::create(&client, "unpullable").await;
    put_secret(&client, &watched.name, "referral-mongo", &[("uri", &testbed_var("REFOP_TEST_MONGODB_URI"))]).await;
    let operator = PodOperator::install(&client, "unpullable", &watched.name, false).await;
    let (host, port) = redis_address();
    for (name, rollback) in [("held", false), ("rolled", true)] {
        let mut system = example("minimal.yaml", name, &watched.name);
        system.spec.redis.managed = None;
        system.spec.redis.external = serde_json::from_value(json!({"host": host, "port": port})).unwrap();
        system.spec.upgrade = serde_json::from_value(
            json!({"backupFirst": false, "autoRollback": rollback, "progressDeadlineSeconds": 15}),
        )
        .unwrap();
        create(&client, &system).await;
    }
    for name in ["held", "rolled"] {
        wait_condition(&client, &watched.name, name, "Ready", &operator).await;
    }
    // Nothing listens on localhost:443 in the node's namespace: the pull fails at once.
    let unpullable = "localhost/referral-testbed/absent:1";
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), &watched.name);
    for name in ["held", "rolled"] {
        systems
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": unpullable}})))
            .await
            .unwrap();
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), &watched.name);
    let image_of = |name: String| {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get(&name).await.ok()?;
            d.spec?.template.spec?.containers.first()?.image.clone()
        }
    };
    // Without autoRollback: the Deployment controller gives up after the deadline and
    // the system says so; the new image stays.
    let held = wait_for(START, "the held system to report the stalled rollout", || async {
        let system = systems.get("held").await.ok()?;
        (condition(&system, "Ready")?.1 == "RolloutStalled").then_some(system)
    })
    .await;
    assert_eq!(condition(&held, "Ready").unwrap().0, "False");
    assert_eq!(image_of("held-reward-processor".into()).await.as_deref(), Some(unpullable));
    let (ok, events, _) = kubectl(&["get", "events.events.k8s.io", "-n", &watched.name, "-o", "json"], None);
    assert!(ok && events.contains("Degraded"), "no Degraded event: {events}");
    // With it: the previous image comes back, and the spec is left as written.
    let rolled = wait_for(START, "the rolled-back system", || async {
        let system = systems.get("rolled").await.ok()?;
        (condition(&system, "Ready")?.1 == "RolledBack").then_some(system)
    })
    .await;
    assert_eq!(image_of("rolled-reward-processor".into()).await.as_deref(), Some(node.worker_image.as_str()));
    assert_eq!(rolled.spec.image, unpullable);
    // The old pods kept serving all along: the Deployment never lost its available pod.
    let pods = ready_pods(&client, &watched.name, "app.kubernetes.io/instance=rolled").await;
    assert!(!pods.is_empty(), "no ready pod of the rolled-back system");
    assert_statuses_are_the_kubelets(&client, &watched.name).await;
}

// ------------------------------------------------------------------ 5 ---

/// `n` users in one tree (user `i` referred by user `i / 3`) with ObjectIds, their
/// referrals and some transactions: data whose chains are sound, so the chain check
/// a restore ends with passes.
async fn seed_referrals(db: &mongodb::Database) -> Vec<(&'static str, Vec<Document>)> {
    let id = |i: u32| {
        let mut bytes = [7u8; 12];
        bytes[8..].copy_from_slice(&i.to_be_bytes());
        ObjectId::from_bytes(bytes)
    };
    let users = (0..300u32)
        .map(|i| match i {
            0 => doc! {"_id": id(0), "referralCode": "CODE00000"},
            _ => doc! {"_id": id(i), "referralCode": format!("CODE{i:05}"), "referredBy": id(i / 3)},
        })
        .collect();
    let referrals =
        (1..300u32).map(|i| doc! {"_id": id(10_000 + i), "referrer": id(i / 3), "referee": id(i)}).collect();
    let transactions =
        (0..120u32).map(|i| doc! {"_id": id(20_000 + i), "userId": id(i % 40), "amount": i64::from(i) * 5}).collect();
    let seeded = vec![("users", users), ("referrals", referrals), ("referralTransactions", transactions)];
    for (name, docs) in &seeded {
        db.collection::<Document>(name).insert_many(docs).await.unwrap();
    }
    seeded
}

async fn sorted_contents(db: &mongodb::Database, name: &str) -> Vec<Document> {
    let mut cursor = db.collection::<Document>(name).find(doc! {}).sort(doc! {"_id": 1}).await.unwrap();
    let mut docs = Vec::new();
    while cursor.advance().await.unwrap() {
        docs.push(cursor.deserialize_current().unwrap());
    }
    docs
}

/// Creates the ReferralRestore `name` of `backup` from `source` and watches it to its
/// end: its status, the phases it went through, and whether `worker` was at zero
/// replicas at some point meanwhile.
async fn watch_restore(
    client: &Client,
    ns: &str,
    name: &str,
    backup: &str,
    source: &str,
    worker: &str,
    operator: &PodOperator,
) -> (referral_operator::crd::restore::ReferralRestoreStatus, Vec<RestorePhase>, bool) {
    let restores = Api::<ReferralRestore>::namespaced(client.clone(), ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let restore: ReferralRestore = serde_json::from_value(json!({
        "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralRestore",
        "metadata": {"name": name},
        "spec": {"systemName": "main", "backupName": backup, "source": source}
    }))
    .unwrap();
    restores.create(&PostParams::default(), &restore).await.expect("create the ReferralRestore");
    let mut scaled_to_zero = false;
    let mut phases = Vec::new();
    let deadline = Instant::now() + 2 * START;
    let done = loop {
        let current = restores.get(name).await.unwrap();
        let status = current.status.clone().unwrap_or_default();
        if let Some(phase) = status.phase
            && phases.last() != Some(&phase)
        {
            phases.push(phase);
        }
        if deployments.get(worker).await.ok().and_then(|d| d.spec?.replicas) == Some(0) {
            scaled_to_zero = true;
        }
        if status.phase.is_some_and(|p| p.is_terminal()) {
            break status;
        }
        assert!(Instant::now() < deadline, "the restore is still {phases:?}: {status:?}\n{}", operator.logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    (done, phases, scaled_to_zero)
}

#[tokio::test]
async fn a_backup_job_writes_to_a_volume_and_a_bucket_a_drill_verifies_it_and_a_restore_from_the_bucket_brings_the_data_back()
 {
    let Some(_node) = require_node("backup and restore on the node") else { return };
    let client = client().await;
    install_crd(&client).await;
    install_restore_crd(&client).await;
    let watched = TestNamespace::create(&client, "bkrs").await;
    let ns = watched.name.clone();
    let mongo_uri = testbed_var("REFOP_TEST_MONGODB_URI");
    put_secret(&client, &ns, "referral-mongo", &[("uri", &mongo_uri)]).await;
    put_secret(&client, &ns, "referral-redis", &[("password", &format!("pw-{}-{}", suffix(), suffix()))]).await;
    put_secret(
        &client,
        &ns,
        "backup-s3",
        &[
            ("id", &testbed_var("REFOP_TEST_S3_ACCESS_KEY_ID")),
            ("secret", &testbed_var("REFOP_TEST_S3_SECRET_ACCESS_KEY")),
        ],
    )
    .await;
    let database = format!("e2e_node_backup_{}", suffix());
    let prefix = format!("e2e-node-{}", suffix());
    let mongo = mongodb::Client::with_uri_str(&mongo_uri).await.unwrap();
    let db = mongo.database(&database);
    let seeded = seed_referrals(&db).await;
    let operator = PodOperator::install(&client, "bkrs", &ns, false).await;

    // The minimal example: managed Redis, and backup by default (the native method,
    // on a claim of the default StorageClass, local-path on the bed), plus a copy in
    // the bed's S3 server (versitygw on the host, reached from the node's pods as the
    // MongoDB-wire server is) and a restore drill reading it.
    let mut system = example("minimal.yaml", "main", &ns);
    system.spec.mongodb.database = database.clone();
    system.spec.backup.object_storage = Some(
        serde_json::from_value(json!({
            "endpoint": testbed_var("REFOP_TEST_S3_ENDPOINT"),
            "bucket": testbed_var("REFOP_TEST_S3_BUCKET"),
            "prefix": prefix,
            "region": testbed_var("REFOP_TEST_S3_REGION"),
            "accessKeyIdSecretRef": {"name": "backup-s3", "key": "id"},
            "secretAccessKeySecretRef": {"name": "backup-s3", "key": "secret"},
        }))
        .unwrap(),
    );
    system.spec.backup.restore_drill = Some(serde_json::from_value(json!({})).unwrap());
    system.spec.redis.password_secret_ref =
        serde_json::from_value(json!({"name": "referral-redis", "key": "password"})).unwrap();
    if let Some(managed) = system.spec.redis.managed.as_mut() {
        managed.max_memory = "64mb".into();
    }
    let created = create(&client, &system).await;
    let validated = validate(&created, &ns).expect("a valid system");
    wait_condition(&client, &ns, "main", "Ready", &operator).await;
    let redis = |script: &str| {
        let (ok, out, err) =
            kubectl(&["exec", "-n", &ns, "main-redis-0", "-c", "redis", "--", "sh", "-c", script], None);
        assert!(ok, "{script}: {out}{err}");
        out.trim().to_string()
    };
    redis("redis-cli SET ref:e2e:state before-backup");
    let users = db.collection::<Document>("users");

    // A backup now, asked for as `kubectl referral backup` does.
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), &ns);
    let token = "node-e2e-backup-1";
    let asked = Instant::now();
    systems
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"referral.dev/backup-now": token}}})),
        )
        .await
        .unwrap();
    let job_name = manual_backup_job_name(&validated, token);
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    let job = wait_for(START, "the backup Job to succeed", || async {
        let job = jobs.get(&job_name).await.ok()?;
        let status = job.status.as_ref()?;
        assert_eq!(status.failed.unwrap_or(0), 0, "the backup Job failed: {status:?}\n{}", operator.logs());
        (status.succeeded.unwrap_or(0) >= 1).then_some(job)
    })
    .await;
    let backup_took = asked.elapsed();
    let latest = wait_for(Duration::from_secs(60), "status.backup.latest", || async {
        systems.get("main").await.ok()?.status?.backup?.latest
    })
    .await;
    let job_status = job.status.clone().unwrap();
    let job_run = job_status.completion_time.unwrap().0 - job_status.start_time.unwrap().0;
    eprintln!("backup {latest}: Job {job_name} ran {job_run:?}; asked to succeeded {backup_took:?}");

    // It ran in real pods, and wrote to a claim local-path provisioned.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
        .await
        .unwrap()
        .items;
    assert!(
        pods.iter().any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")),
        "no pod of {job_name} succeeded"
    );
    let claim =
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get(&claim_name(&validated)).await.unwrap();
    let claim_status = claim.status.clone().unwrap_or_default();
    assert_eq!(claim_status.phase.as_deref(), Some("Bound"), "{claim_status:?}");
    let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).expect("a bound volume");
    let volume = Api::<PersistentVolume>::all(client.clone()).get(&volume_name).await.unwrap();
    let volume_spec = volume.spec.unwrap();
    assert_eq!(volume_spec.storage_class_name.as_deref(), Some(testbed_var("TESTBED_STORAGE_CLASS").as_str()));
    let annotations = volume.metadata.annotations.unwrap_or_default();
    let provisioner = annotations.get("pv.kubernetes.io/provisioned-by").map(String::as_str);
    assert_eq!(provisioner, Some("rancher.io/local-path"), "{volume_name} was not provisioned by local-path");
    // The volume is a directory on this machine (the node's): the backup there is
    // complete, its files match its manifest, and it counts every collection.
    let path = volume_spec
        .host_path
        .map(|h| h.path)
        .or(volume_spec.local.map(|l| l.path))
        .expect("a local-path volume has a path on the node");
    let manifest = store::verify(std::path::Path::new(&path), &latest).expect("a complete, sound backup");
    assert!(manifest.redis, "the Redis snapshot is part of the backup");
    let counts: std::collections::BTreeMap<String, u64> =
        manifest.mongodb.expect("a native dump").collections.into_iter().map(|c| (c.name, c.documents)).collect();
    let expected: std::collections::BTreeMap<String, u64> =
        seeded.iter().map(|(name, docs)| (name.to_string(), docs.len() as u64)).collect();
    assert_eq!(counts, expected);
    // The same backup is complete in the bucket: `backup verify` reads every object
    // against the manifest written there last.
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_referral-operator"))
        .args(["backup", "verify", "--name", &latest, "-o", "json"])
        .env("BACKUP_S3_ENDPOINT", testbed_var("REFOP_TEST_S3_ENDPOINT"))
        .env("BACKUP_S3_BUCKET", testbed_var("REFOP_TEST_S3_BUCKET"))
        .env("BACKUP_S3_PREFIX", &prefix)
        .env("BACKUP_S3_REGION", testbed_var("REFOP_TEST_S3_REGION"))
        .env("AWS_ACCESS_KEY_ID", testbed_var("REFOP_TEST_S3_ACCESS_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", testbed_var("REFOP_TEST_S3_SECRET_ACCESS_KEY"))
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "the backup in the bucket: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );

    // The restore drill, run now from its CronJob as `kubectl create job --from` does:
    // it restores the bucket's newest backup into the scratch database on the node and
    // reports it; BackupVerified turns True.
    let drill_job = "main-restore-drill-now";
    let (ok, out, err) = kubectl(&["create", "job", "-n", &ns, drill_job, "--from=cronjob/main-restore-drill"], None);
    assert!(ok, "{out}{err}");
    let drilled = Instant::now();
    wait_for(START, "the drill Job to succeed", || async {
        let status = jobs.get(drill_job).await.ok()?.status?;
        assert_eq!(status.failed.unwrap_or(0), 0, "the drill failed: {status:?}\n{}", operator.logs());
        (status.succeeded.unwrap_or(0) >= 1).then_some(())
    })
    .await;
    let verified = wait_for(Duration::from_secs(60), "BackupVerified True", || async {
        let current = systems.get("main").await.ok()?;
        let report = current.status.as_ref()?.backup.as_ref()?.last_verified_restore.clone()?;
        condition(&current, "BackupVerified").filter(|(status, _, _)| status == "True").map(|c| (report, c))
    })
    .await;
    eprintln!("restore drill of {latest}: {:?} after it was asked for", drilled.elapsed());
    let (report, (_, reason, message)) = verified;
    assert_eq!(report.result, referral_operator::crd::status::DrillResult::Succeeded, "{report:?}");
    assert_eq!(report.backup.as_deref(), Some(latest.as_str()), "{report:?}");
    assert_eq!(report.verified_backup.as_deref(), Some(latest.as_str()), "{report:?}");
    assert_eq!(report.documents, expected.values().sum::<u64>(), "{report:?}");
    assert!(report.source.as_deref().is_some_and(|s| s.contains(&prefix)), "drilled from the bucket: {report:?}");
    assert_eq!(reason, "RestoreVerified", "{message}");
    assert!(
        !mongo.list_database_names().await.unwrap().contains(&format!("{database}_drill")),
        "the scratch database is dropped"
    );

    // The data changes after the backup: MongoDB loses it all, Redis is rewritten.
    db.drop().await.unwrap();
    users.insert_one(doc! {"_id": "written after the backup"}).await.unwrap();
    redis("redis-cli SET ref:e2e:state after-backup");

    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let worker = "main-reward-processor";
    let replicas = deployments.get(worker).await.unwrap().spec.unwrap().replicas.unwrap_or(1);
    assert!(replicas >= 1);
    // From the bucket: the disaster case, the backup volume lost with the cluster.
    let started = Instant::now();
    let (done, phases, scaled_to_zero) =
        watch_restore(&client, &ns, "back", &latest, "ObjectStorage", worker, &operator).await;
    let restore_took = started.elapsed();
    eprintln!("restore of {latest}: {phases:?} in {restore_took:?}");
    assert_eq!(done.phase, Some(RestorePhase::Succeeded), "{done:?}\n{}", operator.logs());
    assert!(scaled_to_zero, "the workers were never scaled to zero during the restore ({phases:?})");
    for step in ["WorkersStopped", "DataRestored", "IndexesEnsured", "ChainsChecked", "WorkersRestored"] {
        assert!(
            done.conditions.iter().any(|c| c.type_ == step && c.status == "True"),
            "{step} is not True: {:?}",
            done.conditions
        );
    }
    // The restore Job and the chain check after it ran in real pods and succeeded.
    for job_name in
        [done.restore_job.clone().expect("the restore Job"), done.chain_check_job.clone().expect("the check Job")]
    {
        let job = jobs.get(&job_name).await.unwrap();
        assert!(job.status.and_then(|s| s.succeeded).unwrap_or(0) >= 1, "{job_name} did not succeed");
    }

    // The data is as it was at the backup: every document, the indexes, the Redis key.
    for (name, docs) in &seeded {
        assert_eq!(&sorted_contents(&db, name).await, docs, "{name} after the restore");
    }
    // The declared indexes (the seed's six, by default) on the restored collections,
    // under their given names or MongoDB's default ones.
    for index in &validated.spec.mongodb.indexes {
        let name = index.name.clone().unwrap_or_else(|| {
            let keys = index.keys.iter().flatten().map(|(field, order)| format!("{field}_{order}"));
            keys.collect::<Vec<_>>().join("_")
        });
        let names = db.collection::<Document>(&index.collection).list_index_names().await.unwrap();
        assert!(names.contains(&name), "{}: no index {name} after the restore: {names:?}", index.collection);
    }
    assert_eq!(redis("redis-cli GET ref:e2e:state"), "before-backup");
    // The workers are back, available.
    wait_for(START, "the workers back and available", || async {
        let d = deployments.get(worker).await.ok()?;
        (d.spec?.replicas == Some(replicas) && d.status?.available_replicas == Some(replicas)).then_some(())
    })
    .await;

    // A restore that fails says why in its own status, not only in the Job's log: the
    // restore container's termination message, read from its pod by the operator.
    let (failed, _, _) = watch_restore(&client, &ns, "missing", "20200101T000000Z", "Volume", worker, &operator).await;
    assert_eq!(failed.phase, Some(RestorePhase::Failed), "{failed:?}");
    let restored = failed.conditions.iter().find(|c| c.type_ == "DataRestored").expect("DataRestored");
    assert_eq!((restored.status.as_str(), restored.reason.as_str()), ("False", "RestoreJobFailed"), "{restored:?}");
    for text in [&restored.message, failed.message.as_ref().expect("a message")] {
        assert!(text.contains("container restore exited 1") && text.contains("20200101T000000Z"), "{text}");
    }
    assert_statuses_are_the_kubelets(&client, &ns).await;
    let _ = db.drop().await;
}
