//! The controller end to end: `referral-operator run`, started from the built binary
//! as a process that authenticates as the chart's ServiceAccount (namespaced mode,
//! exactly the chart's RBAC, not admin), reconciling ReferralSystems in a namespace
//! that enforces the restricted Pod Security Standard, against the test bed's real
//! kube-apiserver, kube-controller-manager (garbage collector, Deployment, ReplicaSet,
//! StatefulSet, HPA and disruption controllers), MongoDB-wire server and Redis.
//!
//! One test per behaviour of the controller (docs/controller.md), each in its own namespace with its own operator,
//! whose trace-level log is kept in the test's temporary directory. The operator runs
//! with `--resync-ready`/`--resync-not-ready`/`--recheck-max-interval` of [`RESYNC`]
//! and a probe interval of a second, so that periodic re-checks (the only way a
//! rotated Secret is noticed, and what the no-op test must survive) happen many times
//! within each test.
//!
//! On the test bed's node the pods run, from the images built there ([`fit_to_node`]),
//! and become ready through their real probes; on a control-plane-only bed they are
//! created and admitted (or refused) by Pod Security admission but never run, and
//! [`mark_pods_ready`] stands in for the kubelet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::api::{PostParams, ResourceExt};
use referral_operator::controller::apply::apply_child;
use referral_operator::crd::ReferralSystem;
use referral_operator::reconcilers::meta::{ANNOTATION_SECRETS_HASH, MANAGER, system_selector};
use referral_operator::reconcilers::{BuildContext, build};
use serde_json::{Value, json};

use crate::chart::{Installed, RunningOperator, http_get, namespaced_operator_rbac};
use crate::harness::{
    TestNamespace, client, enabled, fit_to_node, install_crd, kubectl, mark_pods_ready, node, put_secret, testbed_var,
    wait_for,
};

/// Resync interval given to the operator under test (both Ready and not Ready).
pub(crate) const RESYNC: Duration = Duration::from_secs(3);
/// How long a convergence may take on a busy 2-core machine.
pub(crate) const CONVERGE: Duration = Duration::from_secs(90);
/// Name of the ReferralSystem every test creates.
pub(crate) const SYSTEM: &str = "main";

/// Every kind the operator creates, as (group, version, kind, plural).
const CHILD_KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "v1", "Service", "services"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "Deployment", "deployments"),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    ("batch", "v1", "CronJob", "cronjobs"),
];

/// Which Redis the system uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisKind {
    /// The example's own: a managed StatefulSet (its probe cannot reach a pod that
    /// never runs, so Ready stays False).
    Managed,
    /// The test bed's Redis as `spec.redis.external`, so the probe answers.
    External,
}

/// One test's world: a restricted namespace, the chart's RBAC for it, the MongoDB
/// Secret, and the operator running as the chart's ServiceAccount.
pub(crate) struct Fixture {
    /// Declared first so it is killed before the namespace goes.
    pub(crate) operator: RunningOperator,
    pub(crate) client: Client,
    pub(crate) systems: Api<ReferralSystem>,
    pub(crate) ns: TestNamespace,
    _installed: Installed,
    _dir: tempfile::TempDir,
}

pub(crate) fn suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}", (std::process::id() ^ nanos.rotate_left(7)) % 0xfffff)
}

impl Fixture {
    /// Sets up everything, with the MongoDB URI Secret pointing at the test bed
    /// (`mongo_uri` overrides it) and `extra_secrets` created before the operator starts.
    pub(crate) async fn start(
        prefix: &str,
        mongo_uri: Option<&str>,
        extra_secrets: &[(&str, &[(&str, &str)])],
    ) -> Fixture {
        let client = client().await;
        install_crd(&client).await;
        let ns = TestNamespace::create(&client, prefix).await;
        let dir = tempfile::tempdir().unwrap();
        let release = format!("op{}", suffix());
        let (installed, kubeconfig) = namespaced_operator_rbac(dir.path(), &ns.name, &ns.name, &release);
        let default_uri = testbed_var("REFOP_TEST_MONGODB_URI");
        put_secret(&client, &ns.name, "referral-mongo", &[("uri", mongo_uri.unwrap_or(&default_uri))]).await;
        for (name, data) in extra_secrets {
            put_secret(&client, &ns.name, name, data).await;
        }
        let resync = format!("{}s", RESYNC.as_secs());
        let operator = RunningOperator::start_with(
            &kubeconfig,
            dir.path().join("operator.log"),
            &ns.name,
            &format!("{prefix}-0"),
            &[&ns.name],
            "trace",
            &[
                &format!("--resync-ready={resync}"),
                &format!("--resync-not-ready={resync}"),
                &format!("--recheck-max-interval={resync}"),
                "--probe-interval=1s",
            ],
        );
        let systems = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name);
        Fixture { operator, client, systems, ns, _installed: installed, _dir: dir }
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.operator.log.clone()
    }

    /// Creates the ReferralSystem `main` from `examples/<file>`.
    pub(crate) async fn create_system(&self, example: &str, redis: RedisKind) -> ReferralSystem {
        let system = example_system(example, &self.ns.name, redis);
        self.systems.create(&PostParams::default(), &system).await.expect("create the ReferralSystem")
    }

    pub(crate) async fn system(&self) -> ReferralSystem {
        self.systems.get(SYSTEM).await.expect("get the ReferralSystem")
    }

    /// Merge-patches the spec as a person with kubectl would (a new generation).
    pub(crate) async fn patch_spec(&self, spec: Value) -> i64 {
        let patched = self
            .systems
            .patch(SYSTEM, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
            .await
            .expect("patch the spec");
        patched.metadata.generation.unwrap()
    }

    /// Waits until the status describes the current generation and returns it.
    pub(crate) async fn observed(&self) -> ReferralSystem {
        wait_for(CONVERGE, "the status to describe the current generation", || async {
            let system = self.systems.get(SYSTEM).await.ok()?;
            let status = system.status.as_ref()?;
            (status.observed_generation.is_some() && status.observed_generation == system.metadata.generation)
                .then_some(system)
        })
        .await
    }

    pub(crate) async fn children(&self) -> BTreeMap<String, DynamicObject> {
        children(&self.client, &self.ns.name).await
    }

    /// Marks pods Ready until the system is Ready for its current generation with every
    /// worker's desired count equal to its Deployment's replicas, and every autoscaled
    /// Deployment at its HorizontalPodAutoscaler's minimum at least (the HPA controller
    /// raises it shortly after creation; Ready before that would not last).
    pub(crate) async fn make_ready(&self) -> ReferralSystem {
        wait_for(CONVERGE, "the system to become Ready with every workload available", || async {
            let children = self.children().await;
            let replicas = |name: &str| {
                children.get(&format!("Deployment/{name}")).map(|d| d.data["spec"]["replicas"].as_i64().unwrap_or(1))
            };
            for hpa in children.iter().filter(|(k, _)| k.starts_with("HorizontalPodAutoscaler/")).map(|(_, o)| o) {
                let target = hpa.data["spec"]["scaleTargetRef"]["name"].as_str()?;
                if replicas(target)? < hpa.data["spec"]["minReplicas"].as_i64().unwrap_or(1) {
                    return None;
                }
            }
            mark_pods_ready(&self.client, &self.ns.name).await;
            let system = self.systems.get(SYSTEM).await.ok()?;
            let status = system.status.as_ref()?;
            let ready = condition(&status.conditions, "Ready").is_some_and(|c| c.status == "True");
            if !ready || status.observed_generation != system.metadata.generation {
                return None;
            }
            let counted =
                status.workers.iter().all(|w| replicas(&format!("{SYSTEM}-{}", w.name)) == Some(i64::from(w.desired)));
            counted.then_some(system)
        })
        .await
    }

    /// Has the system reconciled `how_many` more times. A settled system is no
    /// longer reconciled on a timer (re-checks look for news instead,
    /// docs/controller.md), so each reconcile is asked for: an annotation of no
    /// meaning to the operator changes the object, and the watch queues it.
    pub(crate) async fn more_reconciles(&self, how_many: u32) {
        for nudge in 0..how_many {
            let runs = reconcile_runs(&self.operator);
            let stamp = format!("{}-{nudge}", k8s_openapi::jiff::Timestamp::now().as_millisecond());
            self.systems
                .patch(
                    SYSTEM,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {"e2e.referral.dev/nudge": stamp}}})),
                )
                .await
                .expect("annotate the ReferralSystem");
            wait_for(CONVERGE, "one more reconcile", || async {
                (reconcile_runs(&self.operator) > runs).then_some(())
            })
            .await;
        }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// What the operator logged after `offset` (a [`Self::log_len`]).
    fn log_since(&self, offset: usize) -> String {
        let bytes = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default()).into_owned()
    }

    fn log_len(&self) -> usize {
        std::fs::metadata(self.log_path()).map(|m| m.len() as usize).unwrap_or(0)
    }
}

/// The `patched=N` count of every "applied children" line the reconcile step logs
/// (debug level) in `log`.
pub(crate) fn apply_steps(log: &str) -> Vec<u64> {
    let patched = regex::Regex::new(r"patched=(\d+)").unwrap();
    log.lines()
        .filter(|line| line.contains("applied children"))
        .map(|line| {
            let count = patched.captures(line).unwrap_or_else(|| panic!("no patched= in {line:?}"));
            count[1].parse().unwrap()
        })
        .collect()
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The temporary directory goes with the fixture; a failed test keeps the log.
        if std::thread::panicking() {
            let kept = std::env::temp_dir().join(format!("{}-operator.log", self.ns.name));
            if std::fs::copy(self.log_path(), &kept).is_ok() {
                eprintln!("the operator's log is kept in {}", kept.display());
            }
        }
    }
}

/// The example `examples/<file>` as the system `main` in `namespace`.
pub(crate) fn example_system(file: &str, namespace: &str, redis: RedisKind) -> ReferralSystem {
    let text = std::fs::read_to_string(format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut value: Value = serde_norway::from_str(&text).unwrap();
    value["metadata"] = json!({"name": SYSTEM, "namespace": namespace});
    if redis == RedisKind::External {
        let (host, port) = redis_address();
        value["spec"]["redis"] = json!({"external": {"host": host, "port": port}, "keyPrefix": "ref:"});
    }
    fit_to_node(&mut value["spec"]);
    serde_json::from_value(value).expect("the example is a ReferralSystem")
}

/// Host and port of the test bed's Redis.
pub(crate) fn redis_address() -> (String, u16) {
    let url = testbed_var("REFOP_TEST_REDIS_URL");
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let (host, port) = address.rsplit_once(':').expect("REFOP_TEST_REDIS_URL is redis://HOST:PORT");
    (host.to_string(), port.parse().expect("a numeric Redis port"))
}

pub(crate) fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub(crate) fn condition_of(system: &ReferralSystem, type_: &str) -> Condition {
    let status = system.status.as_ref().expect("a status");
    condition(&status.conditions, type_).cloned().unwrap_or_else(|| panic!("no {type_} condition in {status:?}"))
}

fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Every child of the system `main` in `namespace`, found by the labels every child
/// carries, keyed `Kind/name`.
async fn children(client: &Client, namespace: &str) -> BTreeMap<String, DynamicObject> {
    let selector = system_selector(SYSTEM);
    let mut out = BTreeMap::new();
    for (group, version, kind, plural) in CHILD_KINDS {
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            namespace,
            &api_resource(group, version, kind, plural),
        );
        let list =
            api.list(&ListParams::default().labels(&selector)).await.unwrap_or_else(|e| panic!("list {kind}: {e}"));
        for object in list {
            out.insert(format!("{kind}/{}", object.name_any()), object);
        }
    }
    out
}

/// `Kind/name` of everything the builders make for `system` that the operator applies
/// on the test bed (the prometheus-operator kinds are not installed there).
fn expected_children(system: &ReferralSystem) -> BTreeSet<String> {
    let namespace = system.namespace().unwrap();
    let validated = referral_operator::crd::validate::validate(system, &namespace).expect("a valid example");
    let context = BuildContext {
        operator_image: referral_operator::cli::DEFAULT_OPERATOR_IMAGE.into(),
        secrets_hash: None,
        operator_pods: None,
    };
    let mut children = build(&validated, &context);
    // What goes only with the prometheus-operator kinds.
    children.prometheus_rules.clear();
    children.service_monitors.clear();
    children.metrics_services.clear();
    children
        .to_json_objects()
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect()
}

fn resource_versions(children: &BTreeMap<String, DynamicObject>) -> BTreeMap<String, String> {
    children.iter().map(|(k, o)| (k.clone(), o.resource_version().unwrap_or_default())).collect()
}

/// The managed-fields entries of `object`, keyed by (manager, operation, subresource).
fn field_managers(object: &DynamicObject) -> BTreeMap<String, Value> {
    object
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            let key = format!(
                "{}/{}/{}",
                m.manager.as_deref().unwrap_or_default(),
                m.operation.as_deref().unwrap_or_default(),
                m.subresource.as_deref().unwrap_or_default()
            );
            (key, serde_json::to_value(m).unwrap())
        })
        .collect()
}

/// For each child whose resourceVersion moved between two snapshots, the managers
/// that wrote it: whose managed-fields entry is new or has a new time. (An entry that
/// only lost fields was not written by its manager: someone else took them.) A child
/// that appeared or disappeared is listed with `created`/`deleted`.
fn writers(
    before: &BTreeMap<String, DynamicObject>,
    after: &BTreeMap<String, DynamicObject>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for key in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        match (before.get(key), after.get(key)) {
            (Some(_), None) => {
                out.insert(key.clone(), vec!["deleted".to_string()]);
            }
            (None, Some(_)) => {
                out.insert(key.clone(), vec!["created".to_string()]);
            }
            (Some(old), Some(new)) if old.resource_version() != new.resource_version() => {
                let (old_m, new_m) = (field_managers(old), field_managers(new));
                let changed: Vec<String> = old_m
                    .keys()
                    .chain(new_m.keys())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter(|m| {
                        let time = |entries: &BTreeMap<String, Value>| entries.get(*m).map(|e| e["time"].clone());
                        new_m.contains_key(*m) && time(&old_m) != time(&new_m)
                    })
                    .cloned()
                    .collect();
                out.insert(key.clone(), changed);
            }
            _ => {}
        }
    }
    out
}

fn by_operator(managers: &[String]) -> bool {
    managers.iter().any(|m| m.starts_with(&format!("{MANAGER}/")) || m == "created" || m == "deleted")
}

/// The operator's `referral_operator_reconcile_runs_total`.
pub(crate) fn reconcile_runs(operator: &RunningOperator) -> f64 {
    metric(operator, "referral_operator_reconcile_runs_total ")
}

/// Cheap re-checks done so far that found `result` (`nothing_new`, `news`, ...).
fn rechecks(operator: &RunningOperator, result: &str) -> f64 {
    metric(operator, &format!("referral_operator_rechecks_total{{result=\"{result}\"}} "))
}

/// The value of the series whose line starts with `prefix` on the operator's /metrics.
fn metric(operator: &RunningOperator, prefix: &str) -> f64 {
    let (_, metrics, _) = http_get(operator.listen, "/metrics");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in /metrics:\n{metrics}"))
}

/// Pod specs of every workload child: (Kind/name, pod spec).
fn pod_templates(children: &BTreeMap<String, DynamicObject>) -> Vec<(String, Value)> {
    children
        .iter()
        .filter_map(|(key, object)| {
            let spec = if key.starts_with("CronJob/") {
                object.data["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone()
            } else if key.starts_with("Deployment/") || key.starts_with("StatefulSet/") {
                object.data["spec"]["template"]["spec"].clone()
            } else {
                return None;
            };
            Some((key.clone(), spec))
        })
        .collect()
}

/// Asserts the restricted profile's requirements on a pod spec.
fn assert_restricted(key: &str, spec: &Value) {
    let pod = &spec["securityContext"];
    assert_eq!(pod["runAsNonRoot"], json!(true), "{key}: pod runAsNonRoot");
    assert_eq!(pod["seccompProfile"]["type"], json!("RuntimeDefault"), "{key}: pod seccomp profile");
    let containers = spec["containers"].as_array().into_iter().flatten();
    let init = spec["initContainers"].as_array().into_iter().flatten();
    let mut seen = 0;
    for container in containers.chain(init) {
        seen += 1;
        let name = container["name"].as_str().unwrap_or_default();
        let sc = &container["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], json!(false), "{key} container {name}: allowPrivilegeEscalation");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{key} container {name}: capabilities.drop");
        assert!(sc["capabilities"]["add"].is_null(), "{key} container {name} adds capabilities");
        assert_ne!(sc["privileged"], json!(true), "{key} container {name} is privileged");
        assert_ne!(sc["runAsNonRoot"], json!(false), "{key} container {name} overrides runAsNonRoot");
    }
    assert!(seen > 0, "{key} has no containers");
}

/// Server-side dry run of a Pod with `spec` in `namespace`: what admission says.
fn dry_run_pod(namespace: &str, name: &str, spec: &Value) -> (bool, String) {
    let pod =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec});
    let (ok, stdout, stderr) =
        kubectl(&["create", "--dry-run=server", "-o", "name", "-f", "-"], Some(&pod.to_string()));
    (ok, format!("{stdout}{stderr}"))
}

// ------------------------------------------------------------------- tests ---

#[tokio::test]
async fn an_applied_example_gets_every_child_owned_labelled_restricted_and_admitted() {
    if !enabled() {
        return;
    }
    let fx = Fixture::start("children", None, &[("referral-redis", &[("password", "not-a-canary")])]).await;
    let created = fx.create_system("full.yaml", RedisKind::Managed).await;
    let uid = created.metadata.uid.clone().unwrap();
    let expected = expected_children(&created);
    assert!(expected.len() > 15, "the full example builds many children: {expected:?}");

    let children = wait_for(CONVERGE, "every built child to exist", || async {
        let children = fx.children().await;
        let present: BTreeSet<String> = children.keys().cloned().collect();
        expected.is_subset(&present).then_some(children)
    })
    .await;
    // The first status, read now: on the node the Redis pod turns Ready for real (its
    // volume provisioned, its probe passed) 10-20 s after the create, and the
    // admission checks below take seconds of their own.
    let before = fx.observed().await;
    // The StatefulSet controller labels the claim it makes from the template; nothing
    // else may carry this system's labels.
    let extra: Vec<&String> = children
        .keys()
        .filter(|k| !expected.contains(*k))
        .filter(|k| !k.starts_with("PersistentVolumeClaim/data-"))
        .collect();
    assert!(extra.is_empty(), "children nobody built: {extra:?}");

    for key in &expected {
        let object = &children[key];
        let labels = object.labels();
        for (label, value) in [
            ("app.kubernetes.io/name", "referral-system"),
            ("app.kubernetes.io/instance", SYSTEM),
            ("app.kubernetes.io/managed-by", "referral-operator"),
            ("app.kubernetes.io/part-of", "referral-system"),
        ] {
            assert_eq!(labels.get(label).map(String::as_str), Some(value), "{key}: label {label}");
        }
        assert!(labels.get("app.kubernetes.io/component").is_some_and(|c| !c.is_empty()), "{key}: component label");
        let owners = object.owner_references();
        if key.starts_with("PersistentVolumeClaim/") {
            // Claims hold data: no owner, so deleting the system keeps them.
            assert!(owners.is_empty(), "{key} has owners {owners:?}");
        } else {
            assert_eq!(owners.len(), 1, "{key}: {owners:?}");
            let owner = &owners[0];
            assert_eq!(
                (
                    owner.kind.as_str(),
                    owner.name.as_str(),
                    owner.uid.as_str(),
                    owner.controller,
                    owner.api_version.as_str()
                ),
                ("ReferralSystem", SYSTEM, uid.as_str(), Some(true), "referral.dev/v1alpha1"),
                "{key}: owner reference"
            );
        }
        let managers = field_managers(object);
        assert!(
            managers.keys().any(|m| m == &format!("{MANAGER}/Apply/")),
            "{key}: not applied by {MANAGER}: {managers:?}"
        );
    }

    let templates = pod_templates(&children);
    assert!(
        templates.iter().filter(|(k, _)| k.starts_with("CronJob/")).count() >= 3
            && templates.iter().any(|(k, _)| k.starts_with("StatefulSet/"))
            && templates.iter().filter(|(k, _)| k.starts_with("Deployment/")).count() == 3,
        "{:?}",
        templates.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for (key, spec) in &templates {
        assert_restricted(key, spec);
    }

    // Admission, for real: the namespace enforces `restricted` (a pod without the
    // restricted security settings is refused), the ReplicaSet and StatefulSet controllers got every workload's pods
    // admitted, and each CronJob's pod passes a server-side dry run.
    let (admitted, why) =
        dry_run_pod(&fx.ns.name, "control", &json!({"containers": [{"name": "c", "image": "busybox"}]}));
    assert!(!admitted && why.contains("violates PodSecurity"), "the namespace must refuse an unrestricted pod: {why}");
    let pods = Api::<Pod>::namespaced(fx.client.clone(), &fx.ns.name);
    for (key, object) in children.iter().filter(|(k, _)| k.starts_with("Deployment/") || k.starts_with("StatefulSet/"))
    {
        let selector: Vec<String> = object.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        let selector = selector.join(",");
        wait_for(CONVERGE, &format!("a pod of {key} to be admitted"), || async {
            let list = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
            (!list.items.is_empty()).then_some(())
        })
        .await;
    }
    let (ok, events, _) = kubectl(&["get", "events", "-n", &fx.ns.name, "-o", "json"], None);
    assert!(ok && !events.contains("FailedCreate"), "a controller could not create a pod:\n{events}");
    for (key, spec) in templates.iter().filter(|(k, _)| k.starts_with("CronJob/")) {
        let name = format!("dry-{}", key.trim_start_matches("CronJob/"));
        let (admitted, why) = dry_run_pod(&fx.ns.name, &name, spec);
        assert!(admitted, "{key}'s pod is refused: {why}");
    }

    // The managed Redis StatefulSet: not ready until its pod is, then no longer blocking.
    let not_ready = &before.status.as_ref().unwrap().resources_not_ready;
    let redis_sts = children.keys().find(|k| k.starts_with("StatefulSet/")).unwrap().clone();
    assert!(not_ready.contains(&redis_sts), "{redis_sts} must block while its pod is not ready: {not_ready:?}");
    assert_eq!(condition_of(&before, "RedisReady").reason, "NotReady");
    let monitoring = condition_of(&before, "MonitoringConfigured");
    assert_eq!((monitoring.status.as_str(), monitoring.reason.as_str()), ("False", "PrometheusOperatorNotInstalled"));
    wait_for(CONVERGE, "the Redis StatefulSet to stop blocking once its pod is Ready", || async {
        mark_pods_ready(&fx.client, &fx.ns.name).await;
        let system = fx.systems.get(SYSTEM).await.ok()?;
        let status = system.status.as_ref()?;
        let redis = condition(&status.conditions, "RedisReady")?;
        (!status.resources_not_ready.contains(&redis_sts) && redis.reason != "NotReady").then_some(())
    })
    .await;
    let log = fx.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "the operator hit RBAC limits");
}

#[tokio::test]
async fn conditions_progress_as_workloads_become_available_and_kubectl_wait_returns() {
    if !enabled() {
        return;
    }
    let fx = Fixture::start("conditions", None, &[]).await;
    fx.create_system("full.yaml", RedisKind::External).await;
    let first = fx.observed().await;
    for (type_, status) in
        [("SpecValid", "True"), ("MongoReachable", "True"), ("RedisReady", "True"), ("ReconciliationPaused", "False")]
    {
        assert_eq!(condition_of(&first, type_).status, status, "{type_}: {:?}", condition_of(&first, type_));
    }
    let workers = condition_of(&first, "WorkersAvailable");
    assert_eq!((workers.status.as_str(), workers.reason.as_str()), ("False", "Progressing"), "{workers:?}");
    let ready = condition_of(&first, "Ready");
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("main-"), "Ready names what blocks it: {ready:?}");
    assert!(!first.status.as_ref().unwrap().resources_not_ready.is_empty());

    let kubectl_bin = testbed_var("TESTBED_KUBECTL");
    let wait = |timeout: &str| {
        std::process::Command::new(&kubectl_bin)
            .args(["wait", "--for=condition=Ready", &format!("refsys/{SYSTEM}"), "-n", &fx.ns.name])
            .arg(format!("--timeout={timeout}"))
            .output()
            .expect("run TESTBED_KUBECTL wait")
    };
    assert!(!wait("1s").status.success(), "kubectl wait must not return while workers are unavailable");

    let waiter = {
        let kubectl_bin = kubectl_bin.clone();
        let namespace = fx.ns.name.clone();
        std::thread::spawn(move || {
            std::process::Command::new(kubectl_bin)
                .args(["wait", "--for=condition=Ready", &format!("refsys/{SYSTEM}"), "-n", &namespace, "--timeout=90s"])
                .output()
                .expect("run TESTBED_KUBECTL wait")
        })
    };
    let ready = fx.make_ready().await;
    let out = waiter.join().unwrap();
    assert!(
        out.status.success(),
        "kubectl wait failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));

    let status = ready.status.as_ref().unwrap();
    let workers = condition_of(&ready, "WorkersAvailable");
    assert_eq!((workers.status.as_str(), workers.reason.as_str()), ("True", "AllAvailable"));
    assert_eq!(condition_of(&ready, "Ready").observed_generation, ready.metadata.generation);
    assert!(status.resources_not_ready.is_empty(), "{status:?}");
    assert!(status.workers.iter().all(|w| w.ready == w.desired && w.desired > 0), "{:?}", status.workers);
    // Conditions that did not change keep their transition time.
    assert_eq!(
        condition_of(&ready, "MongoReachable").last_transition_time,
        condition_of(&first, "MongoReachable").last_transition_time
    );
}

#[tokio::test]
async fn editing_one_workers_replicas_changes_only_that_deployment() {
    if !enabled() {
        return;
    }
    let fx = Fixture::start("replicas", None, &[]).await;
    let created = fx.create_system("full.yaml", RedisKind::External).await;
    let expected = expected_children(&created);
    let before = settled_children(&fx, &expected, RESYNC).await;

    let mut workers = serde_json::to_value(&created.spec.workers).unwrap();
    let target = "main-reward-processor";
    for worker in workers.as_array_mut().unwrap() {
        if worker["name"] == "reward-processor" {
            assert_eq!(worker["replicas"], json!(2));
            worker["replicas"] = json!(3);
        }
    }
    let log_offset = fx.log_len();
    let generation = fx.patch_spec(json!({"workers": workers})).await;
    let deployments = Api::<Deployment>::namespaced(fx.client.clone(), &fx.ns.name);
    wait_for(CONVERGE, "the edited worker's Deployment to be scaled", || async {
        let d = deployments.get(target).await.ok()?;
        (d.spec?.replicas == Some(3)).then_some(())
    })
    .await;
    let system = fx.observed().await;
    assert_eq!(system.metadata.generation, Some(generation));
    // Several resyncs, so a stray write would have happened by now.
    tokio::time::sleep(RESYNC * 3).await;
    let after = fx.children().await;
    let written = writers(&before, &after);
    let by_us: BTreeMap<&String, &Vec<String>> = written.iter().filter(|(_, m)| by_operator(m)).collect();
    assert_eq!(
        by_us.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        [format!("Deployment/{target}")],
        "the operator wrote more than the edited Deployment: {written:?}"
    );
    // Anything else that moved was written by the cluster's own controllers (the
    // disruption controller counts the new pod in the worker's PodDisruptionBudget
    // status), never by the operator.
    for (key, managers) in &written {
        if key != &format!("Deployment/{target}") {
            assert!(
                !managers.is_empty() && managers.iter().all(|m| m.starts_with("kube-controller-manager/")),
                "{key} changed by {managers:?}"
            );
            assert_eq!(before[key].metadata.generation, after[key].metadata.generation, "{key}: spec changed");
        }
    }
    // A server-side apply that changes nothing leaves no trace in resourceVersions, so
    // the operator's own account is checked too: one patch in all, the Deployment.
    let patches: Vec<u64> = apply_steps(&fx.log_since(log_offset));
    assert!(!patches.is_empty(), "no apply step logged after the edit");
    assert_eq!(patches.iter().sum::<u64>(), 1, "patches per apply step after the edit: {patches:?}");
    let unchanged =
        resource_versions(&before).into_iter().filter(|(k, rv)| resource_versions(&after).get(k) == Some(rv)).count();
    assert!(unchanged >= expected.len() - 3, "{unchanged} of {} children unchanged: {written:?}", expected.len());
}

/// Whether every autoscaled Deployment among `children` is at its
/// HorizontalPodAutoscaler's minimum at least, and the HPA has seen it there: the HPA
/// controller raises it on its own schedule (every 15 s) and then records what it
/// observed in its status.
fn autoscaled_to_minimum(children: &BTreeMap<String, DynamicObject>) -> bool {
    children.iter().filter(|(k, _)| k.starts_with("HorizontalPodAutoscaler/")).all(|(_, hpa)| {
        let target = hpa.data["spec"]["scaleTargetRef"]["name"].as_str().unwrap_or_default();
        let minimum = hpa.data["spec"]["minReplicas"].as_i64().unwrap_or(1);
        let replicas = children
            .get(&format!("Deployment/{target}"))
            .and_then(|d| d.data["spec"]["replicas"].as_i64())
            .unwrap_or(0);
        let observed = hpa.data["status"]["currentReplicas"].as_i64().unwrap_or(0);
        replicas >= minimum && observed >= minimum
    })
}

/// How long nothing may change before children with a HorizontalPodAutoscaler count
/// as settled: longer than one sync of the HPA controller (15 s), which may write the
/// HPA's status on any of its first syncs (each write makes the operator re-apply the
/// HPA: it has no metadata.generation to tell a status write from a spec change).
fn hpa_quiet(children: &BTreeMap<String, DynamicObject>, quiet: Duration) -> Duration {
    if children.keys().any(|k| k.starts_with("HorizontalPodAutoscaler/")) {
        quiet.max(Duration::from_secs(16))
    } else {
        quiet
    }
}

/// Waits until the operator has applied everything, every autoscaled Deployment is at
/// its minimum, and nothing has written any child for `quiet` (snapshots a resync
/// apart agree), and returns the last snapshot.
async fn settled_children(
    fx: &Fixture,
    expected: &BTreeSet<String>,
    quiet: Duration,
) -> BTreeMap<String, DynamicObject> {
    fx.observed().await;
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut last = fx.children().await;
    let mut quiet_since = tokio::time::Instant::now();
    let mut log_at_change = fx.log_len();
    loop {
        // A change seen in the next snapshot happened after this point: the apply
        // step that answers it is logged after it. A settled system is reconciled
        // only when something changes (no timed resync), so that step may well come
        // before the snapshot that sees the change.
        let log_at_previous_snapshot = fx.log_len();
        tokio::time::sleep(RESYNC).await;
        let now = fx.children().await;
        let present: BTreeSet<String> = now.keys().cloned().collect();
        // Settled also means the operator has caught up with the last change: an apply
        // step since then found nothing to patch (another writer, such as the HPA
        // controller raising replicas, makes it re-apply that child once).
        if !expected.is_subset(&present)
            || resource_versions(&now) != resource_versions(&last)
            || !autoscaled_to_minimum(&now)
        {
            quiet_since = tokio::time::Instant::now();
            log_at_change = log_at_previous_snapshot;
        }
        let caught_up = apply_steps(&fx.log_since(log_at_change)).contains(&0);
        if quiet_since.elapsed() >= hpa_quiet(&now, quiet) && caught_up {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the children did not settle within {CONVERGE:?}: {:?}",
            writers(&last, &now)
        );
        last = now;
    }
}

#[tokio::test]
async fn removing_a_worker_deletes_its_deployment_and_nothing_else() {
    if !enabled() {
        return;
    }
    let fx = Fixture::start("remove", None, &[]).await;
    let created = fx.create_system("full.yaml", RedisKind::External).await;
    let before = settled_children(&fx, &expected_children(&created), RESYNC).await;
    assert!(before.contains_key("Deployment/main-api") && before.contains_key("Service/main-api"));

    let mut workers = serde_json::to_value(&created.spec.workers).unwrap();
    workers.as_array_mut().unwrap().retain(|w| w["name"] != "api");
    fx.patch_spec(json!({"workers": workers})).await;
    let edited = fx.system().await;
    let wanted = expected_children(&edited);
    assert!(!wanted.contains("Deployment/main-api"));
    // `children()` lists kind by kind, so one snapshot can show the Service (listed
    // before its delete) beside a Deployment already gone: wait for every one of the
    // worker's children to be gone, then compare the whole set.
    let after = wait_for(CONVERGE, "the removed worker's children to be deleted", || async {
        let now = fx.children().await;
        (!now.keys().any(|k| k.ends_with("/main-api"))).then_some(now)
    })
    .await;
    let system = fx.observed().await;
    assert!(system.status.unwrap().workers.iter().all(|w| w.name != "api"));
    // Exactly what the new spec builds is left: the worker's Service, autoscaler and
    // disruption budget went with it; everything else is still there, untouched.
    let left: BTreeSet<String> = after.keys().cloned().collect();
    assert_eq!(left, wanted, "children left after removing the api worker");
    let gone: BTreeSet<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    assert!(gone.iter().all(|k| k.ends_with("/main-api")), "deleted more than the api worker's children: {gone:?}");
    for key in &left {
        assert_eq!(before[key].metadata.generation, after[key].metadata.generation, "{key} was changed");
    }
}

/// A worker's Service follows its HTTP port. Without the ServiceMonitor CRD (as on the
/// test bed) a worker without a port gets no Service at all, and status says why.
#[tokio::test]
async fn a_workers_service_follows_its_http_port() {
    if !enabled() {
        return;
    }
    let fx = Fixture::start("svcport", None, &[]).await;
    let created = fx.create_system("full.yaml", RedisKind::External).await;
    let before = settled_children(&fx, &expected_children(&created), RESYNC).await;
    let services = Api::<Service>::namespaced(fx.client.clone(), &fx.ns.name);
    let first = services.get("main-api").await.unwrap();
    let ip = first.spec.as_ref().and_then(|s| s.cluster_ip.clone()).expect("main-api has a cluster IP");
    assert_ne!(ip, "None");
    for worker in ["main-reward-processor", "main-queue-cleanup"] {
        assert!(services.get_opt(worker).await.unwrap().is_none(), "{worker} has a Service with no ServiceMonitor");
    }
    let monitoring = condition_of(&fx.observed().await, "MonitoringConfigured");
    assert!(
        monitoring
            .message
            .ends_with("the metrics Services of the 2 workers without an HTTP port wait for ServiceMonitor"),
        "{monitoring:?}"
    );

    let mut workers = serde_json::to_value(&created.spec.workers).unwrap();
    let port = api_worker(&mut workers).remove("port").expect("the api worker has a port");
    fx.patch_spec(json!({"workers": workers.clone()})).await;
    wait_for(CONVERGE, "main-api's Service to be deleted", || async {
        services.get_opt("main-api").await.unwrap().is_none().then_some(())
    })
    .await;
    let system = fx.observed().await;
    assert_ne!(condition_of(&system, "Ready").reason, "ApplyFailed", "{:?}", system.status);
    assert!(condition_of(&system, "MonitoringConfigured").message.contains("the 3 workers without an HTTP port"));

    api_worker(&mut workers).insert("port".into(), port);
    fx.patch_spec(json!({"workers": workers})).await;
    let again =
        wait_for(CONVERGE, "main-api's Service to come back", || async { services.get_opt("main-api").await.unwrap() })
            .await;
    assert!(again.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).is_some_and(|ip| ip != "None"));
    fx.observed().await;
    // Everything else is the same object as before: nothing was recreated on the way.
    let after = fx.children().await;
    for (key, object) in &before {
        if key != "Service/main-api" {
            assert_eq!(after.get(key).and_then(|o| o.uid()), object.uid(), "{key} was replaced");
        }
    }
}

fn api_worker(workers: &mut Value) -> &mut serde_json::Map<String, Value> {
    workers.as_array_mut().unwrap().iter_mut().find(|w| w["name"] == "api").unwrap().as_object_mut().unwrap()
}

/// Where the ServiceMonitor CRD is installed, a worker's Service exists either way and
/// turns headless when the port goes: the API server cannot change a cluster IP in
/// place, so the apply step recreates the Service, and never over another problem.
#[tokio::test]
async fn a_service_whose_cluster_ip_must_change_is_recreated_by_the_apply_step() {
    if !enabled() {
        return;
    }
    let client = client().await;
    let ns = TestNamespace::create(&client, "clusterip").await;
    let services = Api::<Service>::namespaced(client.clone(), &ns.name);
    let params = PatchParams::apply(MANAGER).force();
    let service = |headless: bool, port: i32| -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "worker", "namespace": ns.name},
            "spec": {
                "clusterIP": if headless { json!("None") } else { Value::Null },
                "selector": {"app": "worker"},
                "ports": [{"name": "metrics", "port": port, "targetPort": "metrics"}],
            },
        }))
        .unwrap()
    };
    let cluster_ip = |s: &Service| s.spec.as_ref().and_then(|s| s.cluster_ip.clone()).unwrap_or_default();

    let allocated = apply_child(&services, &params, &service(false, 9090)).await.unwrap();
    assert!(!cluster_ip(&allocated).is_empty() && cluster_ip(&allocated) != "None");
    let headless = apply_child(&services, &params, &service(true, 9090)).await.unwrap();
    assert_eq!(cluster_ip(&headless), "None");
    assert_ne!(headless.uid(), allocated.uid(), "recreated, not changed in place");
    let again = apply_child(&services, &params, &service(false, 9090)).await.unwrap();
    assert!(cluster_ip(&again) != "None" && !cluster_ip(&again).is_empty(), "{again:?}");
    assert_ne!(again.uid(), headless.uid());
    // Unchanged headlessness: an ordinary apply, the same object.
    let same = apply_child(&services, &params, &service(false, 9191)).await.unwrap();
    assert_eq!(same.uid(), again.uid());
    // Refused for another reason (a port out of range): the error comes back and the
    // Service stays.
    let refused = apply_child(&services, &params, &service(true, 70000)).await;
    assert!(matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422), "{refused:?}");
    assert_eq!(services.get("worker").await.unwrap().uid(), same.uid());
}

#[tokio::test]
async fn deleting_the_system_collects_its_children_but_keeps_the_claims() {
    if !enabled() {
        return;
    }
    let fx = Fixture::start("delete", None, &[("referral-redis", &[("password", "not-a-canary")])]).await;
    let created = fx.create_system("full.yaml", RedisKind::Managed).await;
    let expected = expected_children(&created);
    let claims_expected: BTreeSet<String> =
        expected.iter().filter(|k| k.starts_with("PersistentVolumeClaim/")).cloned().collect();
    assert!(!claims_expected.is_empty(), "the full example keeps backups on a claim");
    // The StatefulSet controller makes the Redis data claim from its template.
    let pvcs = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(fx.client.clone(), &fx.ns.name);
    let claims_before = wait_for(CONVERGE, "every child and the Redis data claim", || async {
        let now = fx.children().await;
        let present: BTreeSet<String> = now.keys().cloned().collect();
        let claims: BTreeSet<String> =
            pvcs.list(&ListParams::default()).await.ok()?.iter().map(|c| c.name_any()).collect();
        (expected.is_subset(&present) && claims.len() > claims_expected.len()).then_some(claims)
    })
    .await;

    fx.systems.delete(SYSTEM, &DeleteParams::default()).await.expect("delete the ReferralSystem");
    wait_for(Duration::from_secs(120), "the garbage collector to delete every owned child", || async {
        let now = fx.children().await;
        let left: Vec<&String> = now.keys().filter(|k| !k.starts_with("PersistentVolumeClaim/")).collect();
        left.is_empty().then_some(())
    })
    .await;
    let claims_after: BTreeSet<String> =
        pvcs.list(&ListParams::default()).await.unwrap().iter().map(|c| c.name_any()).collect();
    assert_eq!(claims_after, claims_before, "claims hold data and must outlive the system");
    for claim in pvcs.list(&ListParams::default()).await.unwrap() {
        assert!(claim.metadata.deletion_timestamp.is_none(), "{} is being deleted", claim.name_any());
    }
}

#[tokio::test]
async fn rotating_the_mongo_secret_changes_the_worker_pod_template_hash() {
    if !enabled() {
        return;
    }
    let fx = Fixture::start("rotate", None, &[]).await;
    let created = fx.create_system("full.yaml", RedisKind::External).await;
    let worker_names: Vec<String> = created.spec.workers.iter().map(|w| format!("main-{}", w.name)).collect();
    let deployments = Api::<Deployment>::namespaced(fx.client.clone(), &fx.ns.name);
    let hash_of = |d: &Deployment| -> Option<String> {
        d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(ANNOTATION_SECRETS_HASH).cloned()
    };
    let hashes = |names: Vec<String>| {
        let deployments = deployments.clone();
        async move {
            let mut out = BTreeSet::new();
            for name in &names {
                out.insert(hash_of(&deployments.get(name).await.ok()?)?);
            }
            Some(out)
        }
    };
    let first = wait_for(CONVERGE, "every worker to carry the Secret hash", || hashes(worker_names.clone())).await;
    assert_eq!(first.len(), 1, "one hash for all workers: {first:?}");
    let generation_before = fx.observed().await.metadata.generation;
    // Quiet first (as in the no-op test, long enough for the HPA controller's writes
    // after creation): then no news is pending, and only a re-check can find the
    // rotation.
    settled_children(&fx, &expected_children(&created), Duration::from_secs(20)).await;

    // Counted before the rotation, not after it: a re-check due just then can read the
    // new Secret and count its news between the write and a count taken after it.
    let news_before = rechecks(&fx.operator, "news");
    // Same server, different bytes: a rotation the probe still accepts.
    let rotated = format!("{}/?appName=rotated-{}", testbed_var("REFOP_TEST_MONGODB_URI"), suffix());
    put_secret(&fx.client, &fx.ns.name, "referral-mongo", &[("uri", &rotated)]).await;
    // No Secret watch (the operator may only `get` Secrets): the change is seen by the
    // next re-check, which reads no system but the Secrets, finds them changed and has
    // the system reconciled; that is what this waits for. The spec is not touched.
    let second = wait_for(CONVERGE, "the workers' Secret hash to change", || async {
        let now = hashes(worker_names.clone()).await?;
        (now.len() == 1 && now != first).then_some(now)
    })
    .await;
    assert_ne!(first, second);
    assert!(rechecks(&fx.operator, "news") > news_before, "the rotation was found by a re-check");
    let system = fx.observed().await;
    assert_eq!(system.metadata.generation, generation_before, "the operator never writes the spec");
    assert_eq!(condition_of(&system, "MongoReachable").status, "True");
    // Every worker rolls: a new ReplicaSet per Deployment.
    for name in &worker_names {
        let d = deployments.get(name).await.unwrap();
        assert!(d.metadata.generation.unwrap() >= 2, "{name} was not updated");
    }
    // On the node the new pods run, and started with the new value (the stand-in
    // worker shows a hash of its environment variable, never the value).
    if node().is_some() {
        let new_hash = second.iter().next().unwrap().clone();
        let wanted = {
            use sha2::{Digest, Sha256};
            Sha256::digest(rotated.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let pods = Api::<Pod>::namespaced(fx.client.clone(), &fx.ns.name);
        for worker in &created.spec.workers {
            let selector = format!("app.kubernetes.io/instance={SYSTEM},referral.dev/worker={}", worker.name);
            let seen = wait_for(CONVERGE, "the worker's new pods to be ready", || async {
                let list = pods.list(&ListParams::default().labels(&selector)).await.ok()?.items;
                let live: Vec<&Pod> = list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
                let all_new_and_ready = !live.is_empty()
                    && live.iter().all(|p| {
                        let annotations = p.metadata.annotations.as_ref();
                        let ready = p
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                        ready && annotations.and_then(|a| a.get(ANNOTATION_SECRETS_HASH)) == Some(&new_hash)
                    });
                if !all_new_and_ready {
                    return None;
                }
                let mut hashes = Vec::new();
                for pod in live {
                    let ip = pod.status.as_ref()?.pod_ip.clone()?;
                    let address: std::net::SocketAddr = format!("{ip}:3000").parse().ok()?;
                    let (ok, body, _) = crate::chart::http_get(address, "/env/MONGODB_URI/sha256");
                    ok.then_some(())?;
                    hashes.push(body.trim().to_string());
                }
                Some(hashes)
            })
            .await;
            assert!(seen.iter().all(|h| h == &wanted), "{}: pods see {seen:?}, the new value is {wanted}", worker.name);
        }
    }
}

#[tokio::test]
async fn paused_systems_get_no_child_writes_and_resume_when_unpaused() {
    if !enabled() {
        return;
    }
    let fx = Fixture::start("pause", None, &[]).await;
    let created = fx.create_system("full.yaml", RedisKind::External).await;
    settled_children(&fx, &expected_children(&created), RESYNC).await;

    fx.patch_spec(json!({"paused": true})).await;
    let paused = fx.observed().await;
    let condition = condition_of(&paused, "ReconciliationPaused");
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "Paused"));
    assert_eq!(condition_of(&paused, "Ready").reason, "Paused");
    let quiet_before = fx.children().await;
    let paused_log = fx.log_len();

    // A person edits a child, and the spec changes: neither is acted on while paused.
    let deployments = Api::<Deployment>::namespaced(fx.client.clone(), &fx.ns.name);
    let scale = json!({"spec": {"replicas": 4}});
    deployments
        .patch("main-queue-cleanup", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("edit a child");
    let mut workers = serde_json::to_value(&created.spec.workers).unwrap();
    for worker in workers.as_array_mut().unwrap() {
        if worker["name"] == "reward-processor" {
            worker["replicas"] = json!(3);
        }
    }
    let generation = fx.patch_spec(json!({"workers": workers})).await;
    let observed = fx.observed().await;
    assert_eq!(observed.metadata.generation, Some(generation), "status keeps up while paused");
    assert_eq!(condition_of(&observed, "ReconciliationPaused").status, "True");
    let looked = rechecks(&fx.operator, "nothing_new") + rechecks(&fx.operator, "news");
    tokio::time::sleep(RESYNC * 3).await;
    // Every reconcile puts the next re-check a RESYNC off again, and the edited
    // Deployment's status updates (its new pods created and, on the node, turning
    // ready one by one) each wake one: a busy machine can spread them over the three
    // RESYNCs above. So the re-check is waited for, never assumed within them.
    wait_for(CONVERGE, "the operator to go on re-checking while paused", || async {
        let looked_after = rechecks(&fx.operator, "nothing_new") + rechecks(&fx.operator, "news");
        (looked_after > looked).then_some(())
    })
    .await;
    let replicas = |name: &'static str| {
        let deployments = deployments.clone();
        async move { deployments.get(name).await.unwrap().spec.unwrap().replicas }
    };
    assert_eq!(replicas("main-queue-cleanup").await, Some(4), "a paused system's child edit was reverted");
    assert_eq!(replicas("main-reward-processor").await, Some(2), "a paused system's new spec was applied");
    let quiet_after = fx.children().await;
    let written: Vec<(String, Vec<String>)> =
        writers(&quiet_before, &quiet_after).into_iter().filter(|(_, m)| by_operator(m)).collect();
    assert!(written.is_empty(), "the operator wrote while paused: {written:?}");
    let applies = apply_steps(&fx.log_since(paused_log));
    assert!(applies.is_empty(), "apply steps ran while paused: {applies:?}");

    fx.patch_spec(json!({"paused": false})).await;
    wait_for(CONVERGE, "the edit to be reverted and the new spec applied after unpausing", || async {
        let cleanup = deployments.get("main-queue-cleanup").await.ok()?.spec?.replicas;
        let rewards = deployments.get("main-reward-processor").await.ok()?.spec?.replicas;
        (cleanup == Some(1) && rewards == Some(3)).then_some(())
    })
    .await;
    let resumed = fx.observed().await;
    assert_eq!(condition_of(&resumed, "ReconciliationPaused").status, "False");
}

#[tokio::test]
async fn a_conflicting_managers_edit_of_a_managed_field_is_reverted() {
    if !enabled() {
        return;
    }
    let fx = Fixture::start("conflict", None, &[]).await;
    let created = fx.create_system("full.yaml", RedisKind::External).await;
    settled_children(&fx, &expected_children(&created), RESYNC).await;
    let deployments = Api::<Deployment>::namespaced(fx.client.clone(), &fx.ns.name);
    let name = "main-reward-processor";
    let image_of =
        |d: &Deployment| d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.clone();
    let container =
        deployments.get(name).await.unwrap().spec.unwrap().template.spec.unwrap().containers[0].name.clone();
    let wanted = created.spec.image.clone();
    assert_eq!(image_of(&deployments.get(name).await.unwrap()), Some(wanted.clone()));

    let intruder = "someone-else";
    let edit = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": "example/intruder:6.6.6"}]}}},
    });
    let edited = deployments
        .patch(name, &PatchParams::apply(intruder).force(), &Patch::Apply(&edit))
        .await
        .expect("a forced apply by another manager");
    assert_eq!(image_of(&edited).as_deref(), Some("example/intruder:6.6.6"), "the edit took the field");

    let reverted = wait_for(CONVERGE, "the operator to take the image back", || async {
        let d = deployments.get(name).await.ok()?;
        (image_of(&d) == Some(wanted.clone())).then_some(d)
    })
    .await;
    let managers: Vec<(String, String)> = reverted
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone().unwrap_or_default(), serde_json::to_string(&m.fields_v1).unwrap()))
        .collect();
    let intruder_owns_image = managers.iter().any(|(m, fields)| m == intruder && fields.contains("f:image"));
    assert!(!intruder_owns_image, "the other manager still owns the image: {managers:?}");
    assert!(
        managers.iter().any(|(m, fields)| m == MANAGER && fields.contains("f:image")),
        "{MANAGER} owns the image again: {managers:?}"
    );
}

/// Nothing changed, so nothing is written: not by the re-checks of the idle system
/// (which read Secrets and probe, and must find nothing new), and not by the full
/// reconciles a person's annotation wakes (which run every step, apply included).
#[tokio::test]
async fn a_no_op_reconcile_writes_nothing() {
    if !enabled() {
        return;
    }
    let window = std::env::var("REFOP_NOOP_WINDOW_SECS")
        .ok()
        .map(|s| s.parse::<u64>().expect("REFOP_NOOP_WINDOW_SECS is a number of seconds"))
        .unwrap_or(60);
    let fx = Fixture::start("noop", None, &[]).await;
    let created = fx.create_system("full.yaml", RedisKind::External).await;
    fx.make_ready().await;
    // Let the cluster's controllers finish their own status updates first: the HPA
    // controller syncs every 15 s and writes its status twice after creation (scaled to
    // the minimum, then metrics unavailable), so quiet must outlast one of its syncs.
    let expected = expected_children(&created);
    settled_children(&fx, &expected, Duration::from_secs(20)).await;
    let system_before = fx.system().await;
    let ready = condition_of(&system_before, "Ready");
    assert_eq!(ready.status, "True", "the no-op test starts from a Ready system: {ready:?}");
    let before = fx.children().await;
    let looked_before = rechecks(&fx.operator, "nothing_new");
    let news_before = rechecks(&fx.operator, "news");
    let runs_before = reconcile_runs(&fx.operator);
    let log_offset = fx.log_len();

    // The first half idle; in the second, an annotation no part of the operator reads
    // is changed every few seconds: each change is news, a full reconcile of a system
    // whose spec, children and dependencies are as they were.
    let window_start = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(window / 2)).await;
    let nudges = (window / 2 / RESYNC.as_secs()).max(2);
    // Each annotation is a real change: a re-check running between the watch's update of
    // the cached metadata and that change's reconcile would truthfully report it as
    // news. So each next annotation goes out once the previous one's reconcile has run
    // and well before the earliest re-check after it (0.8 RESYNC, the jitter's floor):
    // every re-check then looks at a system whose last change was reconciled. The first
    // goes out just after a re-check, for the same reason.
    let looked_so_far = rechecks(&fx.operator, "nothing_new");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while rechecks(&fx.operator, "nothing_new") <= looked_so_far {
        assert!(tokio::time::Instant::now() < deadline, "no re-check within 60 s of an idle system");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..nudges {
        let runs_before_nudge = reconcile_runs(&fx.operator);
        let nudge = json!({"metadata": {"annotations": {"e2e.referral.dev/nudge": i.to_string()}}});
        fx.systems.patch(SYSTEM, &PatchParams::default(), &Patch::Merge(&nudge)).await.expect("annotate the system");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while reconcile_runs(&fx.operator) <= runs_before_nudge {
            assert!(tokio::time::Instant::now() < deadline, "annotation {i} was not reconciled within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(RESYNC * 2 / 5).await;
    }
    // The rest of the window idle again: its re-checks follow a reconciled change.
    tokio::time::sleep_until(window_start + Duration::from_secs(window)).await;

    let system_after = fx.system().await;
    let after = fx.children().await;
    let looked = rechecks(&fx.operator, "nothing_new") - looked_before;
    let runs = reconcile_runs(&fx.operator) - runs_before;
    // Re-checks every RESYNC: the window must have seen many, or it proves nothing.
    let floor = (window / RESYNC.as_secs() / 2).max(2) as f64;
    assert!(looked >= floor, "only {looked} re-checks in {window}s (expected at least {floor})");
    assert_eq!(rechecks(&fx.operator, "news"), news_before, "a re-check of the unchanged system found news");
    assert!(runs >= nudges as f64, "{runs} reconciles for {nudges} annotations");
    assert_eq!(system_after.status, system_before.status, "the status changed");
    // The annotations are the only writes to the system: every field manager of the
    // operator's is as it was (a status write would move its time, if not its fields).
    let operators = |system: &ReferralSystem| -> Vec<String> {
        system
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.manager.as_deref().is_some_and(|m| m.starts_with(MANAGER)))
            .map(|m| serde_json::to_string(m).unwrap())
            .collect()
    };
    assert!(!operators(&system_before).is_empty(), "no field manager of the operator's on the system");
    assert_eq!(operators(&system_after), operators(&system_before), "the operator wrote the ReferralSystem");
    assert_eq!(
        resource_versions(&after),
        resource_versions(&before),
        "children written: {:?}",
        writers(&before, &after)
    );
    assert!(!fx.log_text().contains('\u{1b}'), "the log written to a file has terminal escape codes");
    // No-op applies leave resourceVersions alone too; the apply step's own count shows
    // that none was even sent.
    let applies = apply_steps(&fx.log_since(log_offset));
    assert!(applies.len() as u64 >= nudges, "{} apply steps logged for {nudges} annotations", applies.len());
    assert!(applies.iter().all(|&n| n == 0), "reconciles of the unchanged system patched children: {applies:?}");
    eprintln!(
        "no-op window: {window}s, {looked} re-checks, {runs} reconciles, {} children and the ReferralSystem's status unchanged",
        after.len()
    );
}

/// Standard base64 with padding, as Secret data is shown in JSON.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A Redis of this test's own, fed its configuration on stdin so a password is on
/// no command line. Killed on drop.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    /// Wants `password` (quoted, so `#` and friends are part of it).
    fn with_password(password: &str) -> OwnRedis {
        OwnRedis::start(&format!("requirepass \"{password}\"\n"))
    }

    /// Has no AUTH command: it answers one with "unknown command 'AUTH', with args
    /// beginning with: ..." and quotes what it was sent, the password included.
    fn refusing_auth() -> OwnRedis {
        OwnRedis::start("rename-command AUTH \"\"\n")
    }

    fn start(extra_config: &str) -> OwnRedis {
        let (child, port) = crate::certs::start_redis_server_with_config("the test's own redis-server", |port| {
            format!("port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n{extra_config}")
        });
        OwnRedis { child, port }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A password as a careless user writes one: every character a URI reserves
/// (`? @ : / % #`), between unique runs long enough to search for on their own.
fn hostile_canary(tag: &str) -> String {
    format!("{tag}{}?{tag}q{}@{tag}r{}:/%#{tag}z{}", suffix(), suffix(), suffix(), suffix())
}

/// What must appear nowhere for `secret`: itself, its percent-encoded form, and
/// each run of six or more characters between its reserved characters (a driver
/// that cuts a URI in the wrong place quotes such a run).
fn canary_needles(secret: &str) -> Vec<String> {
    let encoded = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut needles = vec![secret.to_string(), encoded];
    needles.extend(secret.split(['?', '@', ':', '/', '%', '#']).filter(|run| run.len() >= 6).map(str::to_string));
    needles
}

#[tokio::test]
async fn canary_passwords_never_appear_in_logs_events_or_status() {
    if !enabled() {
        return;
    }
    let mongo_canary = hostile_canary("mongocanary");
    let redis_canary = hostile_canary("rediscanary");
    let redis = OwnRedis::with_password(&redis_canary);
    let echoing = OwnRedis::refusing_auth();
    // Positive control: the echoing server really quotes a password it is sent.
    let reply = crate::resp::raw_exchange(echoing.port, &["AUTH", &redis_canary], Duration::from_secs(5));
    assert!(reply.contains(&redis_canary), "this test needs a Redis that echoes AUTH's arguments: {reply:?}");
    let mongo = testbed_var("REFOP_TEST_MONGODB_URI");
    // Not percent-encoded, as the careless user writes it: the driver cannot read the
    // URI, and its parse error is the path most likely to quote a piece of it.
    let mongo_uri = mongo.replacen("mongodb://", &format!("mongodb://referral:{mongo_canary}@"), 1);
    let fx = Fixture::start("canary", Some(&mongo_uri), &[("referral-redis", &[("password", &redis_canary)])]).await;
    let mut system = example_system("full.yaml", &fx.ns.name, RedisKind::External);
    system.spec.redis = serde_json::from_value(json!({
        "external": {"host": "127.0.0.1", "port": redis.port},
        "passwordSecretRef": {"name": "referral-redis", "key": "password"},
        "keyPrefix": "ref:",
    }))
    .unwrap();
    fx.systems.create(&PostParams::default(), &system).await.expect("create the ReferralSystem");

    // Both secrets were used: Redis took the password, MongoDB's URI was read and
    // refused as unreadable.
    let observed = wait_for(CONVERGE, "both dependency probes to report", || async {
        let system = fx.systems.get(SYSTEM).await.ok()?;
        let status = system.status.as_ref()?;
        let redis = condition(&status.conditions, "RedisReady")?;
        let mongo = condition(&status.conditions, "MongoReachable")?;
        (redis.status == "True" && mongo.reason != "NotChecked" && mongo.reason != "SecretMissing").then_some(system)
    })
    .await;
    let mongo_reachable = condition_of(&observed, "MongoReachable");
    eprintln!("MongoReachable with the unencoded URI: {mongo_reachable:?}");
    assert_eq!((mongo_reachable.status.as_str(), mongo_reachable.reason.as_str()), ("False", "InvalidURI"));
    // Several more reconciles, each reading the Secrets and probing again.
    fx.more_reconciles(3).await;

    // Now the Redis that echoes AUTH: refused, said so, and the password not quoted.
    // (redis-rs reports an error reply to AUTH without the server's text today; this
    // guards that, and anything the operator adds to the message.)
    fx.patch_spec(json!({"redis": {"external": {"host": "127.0.0.1", "port": echoing.port}}})).await;
    let refused = wait_for(CONVERGE, "RedisReady False against the echoing Redis", || async {
        let system = fx.systems.get(SYSTEM).await.ok()?;
        let redis = condition(&system.status.as_ref()?.conditions, "RedisReady")?.clone();
        (redis.status == "False" && redis.message.contains(&echoing.port.to_string())).then_some(redis)
    })
    .await;
    eprintln!("RedisReady against the echoing Redis: {refused:?}");
    assert_eq!(refused.reason, "AuthenticationFailed", "{refused:?}");
    assert!(!refused.message.is_empty(), "a message a person can act on: {refused:?}");
    fx.more_reconciles(3).await;

    let b64 = |s: &str| base64(s.as_bytes());
    let mut needles = canary_needles(&mongo_canary);
    needles.extend(canary_needles(&redis_canary));
    needles.extend([b64(&redis_canary), b64(&mongo_uri)]);
    let status = serde_json::to_string(&fx.system().await.status).unwrap();
    let (ok, core_events, err) = kubectl(&["get", "events", "-n", &fx.ns.name, "-o", "json"], None);
    assert!(ok, "{err}");
    let (ok, new_events, err) = kubectl(&["get", "events.events.k8s.io", "-n", &fx.ns.name, "-o", "json"], None);
    assert!(ok, "{err}");
    assert!(new_events.contains("referral-operator"), "the operator published events: {new_events}");
    let children = serde_json::to_string(&fx.children().await.values().collect::<Vec<_>>()).unwrap();
    let log = fx.log_text();
    assert!(log.contains("TRACE"), "the operator's log is trace-level");
    assert!(log.len() > 10_000, "the log holds the whole run ({} bytes)", log.len());
    // The search would find them: the Secrets themselves hold them.
    let (ok, secret, _) = kubectl(&["get", "secret", "referral-redis", "-n", &fx.ns.name, "-o", "json"], None);
    assert!(ok && secret.contains(&b64(&redis_canary)), "positive control: the Redis canary is in its Secret");
    let (ok, secret, _) = kubectl(&["get", "secret", "referral-mongo", "-n", &fx.ns.name, "-o", "json"], None);
    assert!(ok && secret.contains(&b64(&mongo_uri)), "positive control: the MongoDB canary is in its Secret");
    for (place, text) in [
        ("the operator's trace log", &log),
        ("core/v1 Events", &core_events),
        ("events.k8s.io Events", &new_events),
        ("the ReferralSystem status", &status),
        ("the children (env literals)", &children),
    ] {
        for needle in &needles {
            assert_eq!(
                text.matches(needle.as_str()).count(),
                0,
                "{needle} found in {place} (log: {:?})",
                fx.log_path()
            );
        }
    }
    drop(fx);
    drop(redis);
    drop(echoing);
}

#[tokio::test]
async fn mongo_passwords_with_reserved_characters_never_appear_in_logs_events_or_status() {
    if !enabled() {
        return;
    }
    // One password holding every character a connection string reserves, twice: as a
    // person who forgot to percent-encode it writes it (the driver misreads it: part
    // of it becomes a port, an option), and encoded (it parses, and the credentials go
    // to the server, whose refusal is the other error path). Each piece between the
    // reserved characters is its own needle, since a driver quotes pieces.
    let tag = suffix();
    let pieces: Vec<String> = ["qa", "qb", "qc", "qd", "qe", "qf", "qg"].iter().map(|p| format!("{p}{tag}z")).collect();
    let password =
        format!("{}?{}@{}:{}/{}%{}#{}", pieces[0], pieces[1], pieces[2], pieces[3], pieces[4], pieces[5], pieces[6]);
    let encoded: String = password
        .chars()
        .map(|c| match c {
            '?' | '@' | ':' | '/' | '%' | '#' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect();
    let mongo = testbed_var("REFOP_TEST_MONGODB_URI");
    let raw_uri = mongo.replacen("mongodb://", &format!("mongodb://referral:{password}@"), 1);
    let encoded_uri = mongo.replacen("mongodb://", &format!("mongodb://referral:{encoded}@"), 1);
    let fx = Fixture::start("reserved", Some(&raw_uri), &[("referral-mongo-encoded", &[("uri", &encoded_uri)])]).await;
    fx.create_system("full.yaml", RedisKind::External).await;
    let mut encoded_system = example_system("full.yaml", &fx.ns.name, RedisKind::External);
    encoded_system.metadata.name = Some("encoded".into());
    encoded_system.spec.mongodb.uri_secret_ref.name = "referral-mongo-encoded".into();
    fx.systems.create(&PostParams::default(), &encoded_system).await.expect("create the second ReferralSystem");

    let probed = |name: &'static str| {
        let systems = fx.systems.clone();
        async move {
            let system = systems.get(name).await.ok()?;
            let mongo = condition(&system.status.as_ref()?.conditions, "MongoReachable")?.clone();
            (mongo.reason != "NotChecked" && mongo.reason != "SecretMissing").then_some(mongo)
        }
    };
    let raw = wait_for(CONVERGE, "the unencoded password's probe to report", || probed(SYSTEM)).await;
    let encoded_condition = wait_for(CONVERGE, "the encoded password's probe to report", || probed("encoded")).await;
    assert_eq!(raw.reason, "InvalidURI", "{raw:?}");
    assert!(raw.message.contains("percent-encoded"), "the message says what to do: {raw:?}");
    eprintln!("MongoReachable, encoded password: {encoded_condition:?}");
    fx.more_reconciles(3).await;

    let statuses = serde_json::to_string(&[
        fx.systems.get(SYSTEM).await.unwrap().status,
        fx.systems.get("encoded").await.unwrap().status,
    ])
    .unwrap();
    let (ok, core_events, err) = kubectl(&["get", "events", "-n", &fx.ns.name, "-o", "json"], None);
    assert!(ok, "{err}");
    let (ok, new_events, err) = kubectl(&["get", "events.events.k8s.io", "-n", &fx.ns.name, "-o", "json"], None);
    assert!(ok, "{err}");
    let children = serde_json::to_string(&fx.children().await.values().collect::<Vec<_>>()).unwrap();
    let log = fx.log_text();
    assert!(log.contains("TRACE") && log.len() > 10_000, "the log is trace-level and holds the run");
    // Positive control: the search finds a piece where it is.
    let (ok, secret, _) = kubectl(&["get", "secret", "referral-mongo", "-n", &fx.ns.name, "-o", "json"], None);
    assert!(ok && secret.contains(&base64(raw_uri.as_bytes())), "the Secret holds the URI");
    assert!(raw_uri.contains(&pieces[3]), "positive control: the needle is in the URI");
    for (place, text) in [
        ("the operator's trace log", &log),
        ("core/v1 Events", &core_events),
        ("events.k8s.io Events", &new_events),
        ("the ReferralSystems' status", &statuses),
        ("the children", &children),
    ] {
        for needle in pieces.iter().chain([&password, &encoded]) {
            assert!(!text.contains(needle.as_str()), "{needle} found in {place} (log: {:?})", fx.log_path());
        }
    }
}
