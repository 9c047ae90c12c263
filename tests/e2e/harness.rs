//! The e2e harness: a kube client for the test bed's control plane (or any cluster
//! named by KUBECONFIG), a fresh namespace per test that enforces the restricted Pod
//! Security Standard, and the addresses of the test bed's MongoDB-wire server and
//! Redis. Start the bed with `tests/e2e/testbed.sh start` and source its `env` file;
//! `scripts/test-all.sh` does both.
//!
//! Without a cluster the suite fails and says why, unless REFOP_SKIP_E2E=1 is set for
//! a quick local loop, in which case each test prints that it was skipped.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// Field manager the tests apply with (the operator uses its own).
pub const TEST_MANAGER: &str = "referral-e2e";

/// Whether the e2e suite should run; panics with instructions when it cannot.
pub fn enabled() -> bool {
    if std::env::var("REFOP_SKIP_E2E").as_deref() == Ok("1") {
        eprintln!("SKIPPED: e2e test (REFOP_SKIP_E2E=1)");
        return false;
    }
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!(
            "KUBECONFIG is not set: start the test bed with `tests/e2e/testbed.sh start` and \
             `source /tmp/referral-testbed/env` (scripts/test-all.sh does both), point KUBECONFIG at a \
             cluster of your own, or set REFOP_SKIP_E2E=1 to skip the e2e suite"
        );
    }
    true
}

/// Reads a test bed variable, failing with the reason when it is absent.
pub fn testbed_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: source the test bed's env file (tests/e2e/testbed.sh start writes it)")
    })
}

pub async fn client() -> Client {
    Client::try_default().await.expect("cannot build a kube client from KUBECONFIG")
}

/// A namespace that exists for one test and enforces `restricted` pod security.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> TestNamespace {
        let suffix: u32 = std::process::id()
            ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos());
        let name = format!("e2e-{prefix}-{:x}", suffix % 0xfffff);
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                    "referral.dev/e2e": "true"
                }
            }
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await; kubectl deletes without blocking the test's runtime.
        let _ = Command::new("kubectl").args(["delete", "namespace", &self.name, "--wait=false"]).output();
    }
}

/// Applies the checked-in CRD and waits until the apiserver serves it.
pub async fn install_crd(client: &Client) {
    let crd = referral_operator::crd::definition();
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let name = "referralsystems.referral.dev";
    api.patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&crd)).await.expect("apply CRD");
    wait_for(Duration::from_secs(30), "the CRD to be Established", || async {
        let crd = api.get(name).await.ok()?;
        let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

/// Polls `probe` until it yields a value or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The test bed's node, when it has one (`testbed.sh start` without `--no-node`
/// writes `TESTBED_NODE` and the images it imported into its env file): there the
/// kubelet runs pods from images built on this machine, and nothing is pulled.
#[derive(Debug, Clone)]
pub struct Node {
    /// The stand-in for the user's application (tests/e2e/node/worker).
    pub worker_image: String,
    /// The same image under a second tag: an upgrade that really rolls out.
    pub worker_image_next: String,
    /// Redis from Debian's packages, user 999.
    pub redis_image: String,
}

/// The node of the test bed, or None for a control-plane-only bed.
pub fn node() -> Option<Node> {
    std::env::var_os("TESTBED_NODE")?;
    let worker_image = testbed_var("TESTBED_WORKER_IMAGE");
    let worker_image_next = testbed_var("TESTBED_WORKER_IMAGE_NEXT");
    Some(Node { worker_image, worker_image_next, redis_image: testbed_var("TESTBED_REDIS_IMAGE") })
}

/// For a test that only means something where pods run: the node, or None after
/// printing why the test is skipped (a control-plane-only bed). With
/// REFOP_REQUIRE_NODE=1 (scripts/test-all.sh sets it) a missing node fails instead.
pub fn require_node(test: &str) -> Option<Node> {
    if !enabled() {
        return None;
    }
    match node() {
        Some(node) => Some(node),
        None if std::env::var("REFOP_REQUIRE_NODE").as_deref() == Ok("1") => {
            panic!("{test} needs the test bed's node, and REFOP_REQUIRE_NODE=1: start the bed without --no-node")
        }
        None => {
            eprintln!("SKIPPED: {test}: the test bed has no node (started with --no-node); pods do not run");
            None
        }
    }
}

/// The operator image built from this checkout (scripts/build-images.sh operator)
/// and loaded into the node (tests/e2e/testbed.sh load-image); scripts/test-all.sh
/// does both and exports REFOP_OPERATOR_IMAGE.
pub fn operator_image() -> String {
    std::env::var("REFOP_OPERATOR_IMAGE").unwrap_or_else(|_| {
        panic!(
            "REFOP_OPERATOR_IMAGE is not set: build the operator image with `scripts/build-images.sh operator`, \
             load it with `tests/e2e/testbed.sh load-image DIR ARCHIVE`, and export the name it printed \
             (scripts/test-all.sh does all three)"
        )
    })
}

/// Makes a ReferralSystem spec runnable on the node, if there is one: its images
/// become the ones built here (the stand-in worker for the user's application, Redis
/// from Debian), and its requests small ([`fit_requests_to_node`]). Without a node it
/// leaves the spec as it is.
pub fn fit_to_node(spec: &mut serde_json::Value) {
    let Some(node) = node() else { return };
    spec["image"] = node.worker_image.clone().into();
    if let Some(managed) = spec.get_mut("redis").and_then(|r| r.get_mut("managed")) {
        managed["image"] = node.redis_image.clone().into();
    }
    fit_requests_to_node(spec);
}

/// Makes a spec's requests small on the node, so that the systems of several tests
/// fit the one 2-core node together (a pod that cannot pull its image still holds
/// what it requests). Without a node it leaves the spec as it is.
pub fn fit_requests_to_node(spec: &mut serde_json::Value) {
    if node().is_none() {
        return;
    }
    let small = serde_json::json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}});
    if let Some(workers) = spec.get_mut("workers").and_then(|w| w.as_array_mut()) {
        for worker in workers {
            worker["resources"] = small.clone();
        }
    }
    if let Some(managed) = spec.get_mut("redis").and_then(|r| r.get_mut("managed")) {
        // The limit stays above the default maxMemory (2gb), as validation insists;
        // only requests take room on the node.
        managed["resources"] =
            serde_json::json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "4Gi"}});
    }
}

/// Stands in for the kubelet where there is none. On the node it does nothing: the
/// kubelet runs every pod of `namespace` and reports its readiness from real probes.
/// On a control-plane-only bed no container ever starts, and patching a Deployment's
/// status to "available" does not stick (the Deployment controller recomputes it from
/// its ReplicaSets within a second), so it reports what a kubelet would: each Pod's
/// status subresource becomes Running and Ready, and the ReplicaSet, Deployment and
/// StatefulSet controllers compute their own status from those pods.
pub async fn mark_pods_ready(client: &Client, namespace: &str) -> usize {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};
    if node().is_some() {
        return 0;
    }
    let pods = kube::Api::<Pod>::namespaced(client.clone(), namespace);
    let Ok(list) = pods.list(&Default::default()).await else { return 0 };
    let now =
        k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second()).unwrap().to_string();
    let mut marked = 0;
    for pod in list.items {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let Some(name) = pod.metadata.name.clone() else { continue };
        if ready || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ]}});
        if pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
            marked += 1;
        }
    }
    marked
}

/// Runs kubectl against the test cluster and returns (success, stdout, stderr).
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl is needed by the e2e suite");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Creates a Secret in `namespace` with string data.
pub async fn put_secret(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let string_data: std::collections::BTreeMap<&str, &str> = data.iter().copied().collect();
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "stringData": string_data})).unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&secret))
        .await
        .unwrap_or_else(|e| panic!("create Secret {name}: {e}"));
}
