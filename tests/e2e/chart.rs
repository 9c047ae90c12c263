//! The Helm chart in a real apiserver: the operator's ServiceAccount and RBAC,
//! rendered by Helm's engine (`tests/chart/render.py`), grant exactly what the chart
//! says and nothing more (`kubectl auth can-i --list` as the ServiceAccount), never
//! list/watch on Secrets, and are enough for the operator to create every child it
//! builds, the Roles included (the API server's escalation check). The whole chart
//! installs into a namespace that enforces the restricted Pod Security Standard,
//! and the controller itself, run with a token of the chart's ServiceAccount,
//! reconciles a system (Secret read, children applied and pruned, status, events,
//! Lease) without one Forbidden.
//!
//! For other e2e tests: [`render_chart`] renders the chart to a file and
//! [`Installed`] applies it and removes its cluster-scoped objects on drop;
//! [`service_account_kubeconfig`] writes a kubeconfig that acts as the operator's
//! ServiceAccount, and [`RunningOperator`] starts `referral-operator run` with it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use kube::api::{Api, PostParams};
use referral_operator::cli::DEFAULT_OPERATOR_IMAGE;
use referral_operator::reconcilers::BuildContext;
use referral_operator::render::{RenderOptions, render};
use serde::Deserialize;
use serde_norway::Value;

use crate::harness::{TestNamespace, client, enabled, install_crd, kubectl, wait_for};

/// Renders charts/referral-operator with Helm's engine into `dir/<file>`; `args` are
/// `tests/chart/render.py` flags (`--mode`, `--namespace`, `--watch`, `--release`,
/// `--set`, `--only rbac`). Fails the test, saying what to install, when Python or
/// the helm-python-sdk is missing.
pub fn render_chart(dir: &Path, file: &str, args: &[&str]) -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let probe = Command::new("python3").args(["-c", "import helm_python, yaml"]).output();
    if !probe.as_ref().is_ok_and(|out| out.status.success()) {
        panic!(
            "rendering the chart needs python3 with the helm-python-sdk and PyYAML packages \
             (pip install helm-python-sdk pyyaml; scripts/test-all.sh installs them)"
        );
    }
    let output = dir.join(file);
    let out = Command::new("python3")
        .arg(format!("{root}/tests/chart/render.py"))
        .args(args)
        .arg("-o")
        .arg(&output)
        .output()
        .expect("run tests/chart/render.py");
    assert!(out.status.success(), "render.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    output
}

/// Rendered objects of a file, as YAML values.
pub fn objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read the rendered chart");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// A rendered chart applied to the cluster. Namespaced objects go with their test
/// namespaces; the cluster-scoped ones (ClusterRoles, bindings) are deleted on drop.
pub struct Installed {
    pub objects: Vec<Value>,
}

impl Installed {
    pub fn apply(path: PathBuf) -> Installed {
        let path_text = path.to_string_lossy().into_owned();
        let (ok, stdout, stderr) = kubectl(&["apply", "-f", &path_text], None);
        assert!(ok, "kubectl apply of the rendered chart failed:\n{stdout}\n{stderr}");
        assert!(!stderr.contains("would violate PodSecurity"), "the chart violates pod security:\n{stderr}");
        Installed { objects: objects(&path) }
    }

    /// `system:serviceaccount:NS:NAME` of the operator.
    pub fn service_account(&self) -> (String, String) {
        let sa = self.objects.iter().find(|o| kind(o) == "ServiceAccount").expect("the chart renders a ServiceAccount");
        (sa["metadata"]["namespace"].as_str().unwrap().to_string(), name(sa).to_string())
    }

    pub fn user(&self) -> String {
        let (namespace, name) = self.service_account();
        format!("system:serviceaccount:{namespace}:{name}")
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        for object in &self.objects {
            if object["metadata"]["namespace"].is_null() && kind(object) != "CustomResourceDefinition" {
                let resource = format!("{}/{}", kind(object).to_lowercase(), name(object));
                let _ = kubectl(&["delete", &resource, "--ignore-not-found", "--wait=false"], None);
            }
        }
    }
}

/// The operator's rights as the chart grants them in namespaced mode with leader
/// election (its Lease in `operator_ns`), watching `watched`: the applied RBAC (keep it
/// alive for the test) and a kubeconfig of the chart's ServiceAccount.
pub fn namespaced_operator_rbac(dir: &Path, operator_ns: &str, watched: &str, release: &str) -> (Installed, PathBuf) {
    let path = render_chart(
        dir,
        "rbac.yaml",
        &[
            "--mode",
            "namespaced",
            "--namespace",
            operator_ns,
            "--watch",
            watched,
            "--release",
            release,
            "--set",
            "leaderElection.enabled=true",
            "--only",
            "rbac",
        ],
    );
    let installed = Installed::apply(path);
    let (sa_namespace, sa_name) = installed.service_account();
    let kubeconfig = service_account_kubeconfig(dir, &sa_namespace, &sa_name);
    (installed, kubeconfig)
}

/// Writes a kubeconfig that authenticates as `namespace/name` with a short-lived
/// token from the TokenRequest API, so a process started with it has exactly the
/// ServiceAccount's rights.
pub fn service_account_kubeconfig(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    let (ok, token, stderr) = kubectl(&["create", "token", name, "-n", namespace, "--duration=1h"], None);
    assert!(ok, "kubectl create token {namespace}/{name} failed: {stderr}");
    let (ok, server, stderr) =
        kubectl(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"], None);
    assert!(ok, "{stderr}");
    let (ok, ca, stderr) = kubectl(
        &["config", "view", "--minify", "--raw", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}"],
        None,
    );
    assert!(ok && !ca.is_empty(), "the test kubeconfig has no embedded CA: {stderr}");
    let path = dir.join(format!("{name}.kubeconfig"));
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": name, "user": {"token": token.trim()}}],
        "contexts": [{"name": name, "context": {"cluster": "test", "user": name, "namespace": namespace}}],
        "current-context": name,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

/// One row of `kubectl auth can-i --list`, split per verb.
type Grant = (String, String, String);

/// What `user` may do in `namespace`, as (resource, resource names, verb). Non-resource
/// URLs are left out: the chart grants none.
fn can_i_list(user: &str, namespace: &str) -> BTreeSet<Grant> {
    let (ok, stdout, stderr) = kubectl(&["auth", "can-i", "--list", "-n", namespace, &format!("--as={user}")], None);
    assert!(ok, "kubectl auth can-i --list failed: {stderr}");
    let row = regex::Regex::new(r"^(\S*)\s+\[([^\]]*)\]\s+\[([^\]]*)\]\s+\[([^\]]*)\]\s*$").unwrap();
    let mut grants = BTreeSet::new();
    for line in stdout.lines().skip(1) {
        let captures = row.captures(line).unwrap_or_else(|| panic!("unexpected can-i line {line:?}\n{stdout}"));
        let resource = &captures[1];
        if resource.is_empty() {
            continue;
        }
        for verb in captures[4].split_whitespace() {
            grants.insert((resource.to_string(), captures[3].to_string(), verb.to_string()));
        }
    }
    grants
}

/// What the chart's rules grant, in can-i's notation (`deployments.apps`,
/// `referralsystems.referral.dev/status`).
fn expected_grants(rules: &Value) -> BTreeSet<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    let mut grants = BTreeSet::new();
    for rule in rules.as_sequence().expect("rules") {
        let names = strings(&rule["resourceNames"]).join(" ");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let key = match (resource.split_once('/'), group.is_empty()) {
                    (_, true) => resource.clone(),
                    (Some((plural, sub)), false) => format!("{plural}.{group}/{sub}"),
                    (None, false) => format!("{resource}.{group}"),
                };
                for verb in strings(&rule["verbs"]) {
                    grants.insert((key.clone(), names.clone(), verb));
                }
            }
        }
    }
    grants
}

fn can_i(user: &str, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let user = format!("--as={user}");
    all.push(&user);
    let (_, stdout, _) = kubectl(&all, None);
    stdout.trim() == "yes"
}

fn verbs_on(grants: &BTreeSet<Grant>, resource: &str) -> BTreeSet<String> {
    grants.iter().filter(|(r, names, _)| r == resource && names.is_empty()).map(|(_, _, v)| v.clone()).collect()
}

fn set(verbs: &[&str]) -> BTreeSet<String> {
    verbs.iter().map(|v| v.to_string()).collect()
}

fn suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}", (std::process::id() ^ nanos) % 0xfffff)
}

/// The children `render` builds for examples/full.yaml in `namespace`, built-in
/// kinds only (the prometheus-operator CRDs are not installed in the test bed).
fn children_of_full_example(namespace: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/examples/full.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut system: Value = serde_norway::from_str(&text).unwrap();
    system["metadata"].as_mapping_mut().unwrap().remove("namespace");
    let options = RenderOptions {
        default_namespace: namespace.into(),
        context: BuildContext {
            operator_image: DEFAULT_OPERATOR_IMAGE.into(),
            secrets_hash: None,
            operator_pods: None,
        },
    };
    let rendered = render(&serde_norway::to_string(&system).unwrap(), &options).expect("render examples/full.yaml");
    let docs: Vec<&str> =
        rendered.split("---\n").filter(|d| !d.trim().is_empty() && !d.contains("monitoring.coreos.com/")).collect();
    assert!(docs.iter().any(|d| d.contains("\nkind: Role\n")), "the example builds no Role");
    docs.iter().map(|d| format!("---\n{d}")).collect()
}

#[tokio::test]
async fn namespaced_mode_grants_exactly_the_chart_rules_in_the_watched_namespaces_only() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let operator_ns = TestNamespace::create(&client, "refop").await;
    let watched = TestNamespace::create(&client, "watched").await;
    let other = TestNamespace::create(&client, "other").await;
    let dir = tempfile::tempdir().unwrap();
    let release = format!("nsmode-{}", suffix());
    let path = render_chart(
        dir.path(),
        "rbac.yaml",
        &[
            "--mode",
            "namespaced",
            "--namespace",
            &operator_ns.name,
            "--watch",
            &watched.name,
            "--release",
            &release,
            "--set",
            "leaderElection.enabled=true",
            "--only",
            "rbac",
        ],
    );
    let installed = Installed::apply(path);
    let user = installed.user();
    let nobody = format!("system:serviceaccount:{}:nobody", operator_ns.name);

    // What the API server says the operator may do, beyond what any ServiceAccount may.
    let baseline = can_i_list(&nobody, &watched.name);
    let granted: BTreeSet<Grant> = can_i_list(&user, &watched.name).difference(&baseline).cloned().collect();
    let role = installed
        .objects
        .iter()
        .find(|o| kind(o) == "Role" && o["metadata"]["namespace"].as_str() == Some(watched.name.as_str()))
        .expect("a Role in the watched namespace");
    assert_eq!(granted, expected_grants(&role["rules"]), "the API server grants other rights than the chart's Role");
    assert!(granted.iter().all(|(r, n, v)| r != "*" && v != "*" && n != "*"), "{granted:?}");
    assert_eq!(
        verbs_on(&granted, "secrets"),
        set(&["get", "create", "patch"]),
        "Secrets: get by name, create and patch the generated Redis password; never list, watch, update or delete"
    );
    assert_eq!(verbs_on(&granted, "referralsystems.referral.dev"), set(&["get", "list", "watch"]));
    assert_eq!(verbs_on(&granted, "referralsystems.referral.dev/status"), set(&["get", "patch"]));
    assert_eq!(verbs_on(&granted, "persistentvolumeclaims"), set(&["get", "list", "watch", "create", "patch"]));
    assert_eq!(verbs_on(&granted, "deployments.apps"), set(&["get", "list", "watch", "create", "patch", "delete"]));
    assert_eq!(verbs_on(&granted, "events.events.k8s.io"), set(&["create", "patch"]));

    // Nothing outside the watched namespaces, and nothing cluster-wide.
    assert_eq!(can_i_list(&user, &other.name), can_i_list(&nobody, &other.name), "rights leak into other namespaces");
    assert!(!can_i(&user, &["list", "secrets", "--all-namespaces"]));
    assert!(!can_i(&user, &["list", "referralsystems.referral.dev", "--all-namespaces"]));
    assert!(!can_i(&user, &["get", "secrets", "-n", &operator_ns.name]));

    // The Lease: created anywhere in its own namespace, renewed by name only.
    assert!(can_i(&user, &["create", "leases.coordination.k8s.io", "-n", &operator_ns.name]));
    assert!(can_i(&user, &["patch", "leases.coordination.k8s.io/referral-operator", "-n", &operator_ns.name]));
    assert!(!can_i(&user, &["patch", "leases.coordination.k8s.io/someone-else", "-n", &operator_ns.name]));
    assert!(!can_i(&user, &["create", "leases.coordination.k8s.io", "-n", &watched.name]));

    // Every child of the full example, Roles and RoleBindings included, can be applied
    // by the operator: the API server would refuse a Role granting more than it holds.
    let children = children_of_full_example(&watched.name);
    let (ok, stdout, stderr) = kubectl(
        &["apply", "--server-side", "--field-manager=referral-operator", &format!("--as={user}"), "-f", "-"],
        Some(&children),
    );
    assert!(ok, "the operator's ServiceAccount cannot apply what the operator builds:\n{stdout}\n{stderr}");
    assert!(stdout.contains("role.rbac.authorization.k8s.io/") && stdout.contains("rolebinding.rbac"), "{stdout}");
    // Claims hold data: the operator may not delete them; other children it prunes.
    let (ok, claims, _) = kubectl(&["get", "pvc", "-n", &watched.name, "-o", "name"], None);
    let claim = claims.lines().next().expect("the example builds a PersistentVolumeClaim").to_string();
    assert!(ok);
    let (deleted, _, stderr) = kubectl(&["delete", &claim, "-n", &watched.name, &format!("--as={user}")], None);
    assert!(!deleted && stderr.contains("forbidden"), "the operator could delete {claim}: {stderr}");
    let (ok, deployments, _) = kubectl(&["get", "deployments", "-n", &watched.name, "-o", "name"], None);
    let deployment = deployments.lines().next().expect("the example builds Deployments").to_string();
    assert!(ok);
    let (deleted, _, stderr) =
        kubectl(&["delete", &deployment, "-n", &watched.name, "--wait=false", &format!("--as={user}")], None);
    assert!(deleted, "the operator cannot prune {deployment}: {stderr}");
    let (listed, _, stderr) = kubectl(&["get", "secrets", "-n", &watched.name, &format!("--as={user}")], None);
    assert!(!listed && stderr.contains("forbidden"), "the operator could list Secrets: {stderr}");

    // The same through the ServiceAccount's own token, as the operator's pod sees it.
    let (sa_namespace, sa_name) = installed.service_account();
    let kubeconfig = service_account_kubeconfig(dir.path(), &sa_namespace, &sa_name);
    let kubeconfig = format!("--kubeconfig={}", kubeconfig.display());
    let (listed, _, stderr) = kubectl(&[&kubeconfig, "get", "secrets", "-n", &watched.name], None);
    assert!(!listed && stderr.contains("forbidden"), "{stderr}");
    let (read, _, stderr) = kubectl(&[&kubeconfig, "get", "secret", "referral-mongo", "-n", &watched.name], None);
    assert!(!read && stderr.contains("NotFound"), "get by name must be allowed (and find nothing): {stderr}");
    let (read, stdout, stderr) = kubectl(&[&kubeconfig, "get", "referralsystems", "-n", &watched.name], None);
    assert!(read, "{stdout}{stderr}");
}

#[tokio::test]
async fn cluster_mode_reaches_every_namespace_but_never_lists_secrets() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let operator_ns = TestNamespace::create(&client, "refop").await;
    let anywhere = TestNamespace::create(&client, "anywhere").await;
    let dir = tempfile::tempdir().unwrap();
    let release = format!("clmode-{}", suffix());
    let path = render_chart(
        dir.path(),
        "rbac.yaml",
        &["--mode", "cluster", "--namespace", &operator_ns.name, "--release", &release, "--only", "rbac"],
    );
    let installed = Installed::apply(path);
    let user = installed.user();
    let nobody = format!("system:serviceaccount:{}:nobody", operator_ns.name);

    let granted: BTreeSet<Grant> =
        can_i_list(&user, &anywhere.name).difference(&can_i_list(&nobody, &anywhere.name)).cloned().collect();
    let cluster_role = installed
        .objects
        .iter()
        .find(|o| kind(o) == "ClusterRole" && name(o) == format!("{release}-referral-operator"))
        .expect("the operator's ClusterRole");
    assert_eq!(granted, expected_grants(&cluster_role["rules"]));
    assert_eq!(verbs_on(&granted, "secrets"), set(&["get", "create", "patch"]));
    assert!(can_i(&user, &["watch", "referralsystems.referral.dev", "--all-namespaces"]));
    assert!(can_i(&user, &["list", "deployments.apps", "--all-namespaces"]));
    assert!(!can_i(&user, &["list", "secrets", "--all-namespaces"]));
    assert!(!can_i(&user, &["watch", "secrets", "--all-namespaces"]));
    assert!(!can_i(&user, &["create", "leases.coordination.k8s.io", "-n", &operator_ns.name]), "no election, no Lease");
    assert!(!can_i(&user, &["patch", "referralsystems.referral.dev", "-n", &anywhere.name]), "never writes spec");

    // The aggregated roles give namespace editors what the kubectl plugin needs.
    let editor = format!("editor-{}", suffix());
    let (ok, _, stderr) = kubectl(
        &["create", "rolebinding", "editors", "--clusterrole=edit", &format!("--user={editor}"), "-n", &anywhere.name],
        None,
    );
    assert!(ok, "{stderr}");
    wait_for(std::time::Duration::from_secs(30), "the edit role to aggregate the chart's rules", || async {
        can_i(&editor, &["patch", "referralsystems.referral.dev", "-n", &anywhere.name]).then_some(())
    })
    .await;
    assert!(!can_i(&editor, &["patch", "referralsystems.referral.dev", "--subresource=status", "-n", &anywhere.name]));
}

#[tokio::test]
async fn the_whole_chart_installs_under_restricted_pod_security() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let operator_ns = TestNamespace::create(&client, "refop").await;
    let watched = TestNamespace::create(&client, "watched").await;
    let dir = tempfile::tempdir().unwrap();
    let release = format!("full-{}", suffix());
    let path = render_chart(
        dir.path(),
        "chart.yaml",
        &[
            "--mode",
            "namespaced",
            "--namespace",
            &operator_ns.name,
            "--watch",
            &watched.name,
            "--release",
            &release,
            "--set",
            "leaderElection.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
        ],
    );
    let installed = Installed::apply(path);
    let kinds: BTreeMap<&str, usize> = installed.objects.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(kind(o)).or_default() += 1;
        m
    });
    for wanted in ["Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"] {
        assert!(kinds.contains_key(wanted), "no {wanted} in {kinds:?}");
    }
    // The ReplicaSet controller creates the pods; the namespace enforces `restricted`,
    // so a pod that violated it would never be created (FailedCreate).
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &operator_ns.name);
    let selector = format!("app.kubernetes.io/instance={release}");
    let created = wait_for(std::time::Duration::from_secs(60), "the operator's pods to be created", || async {
        let list = pods.list(&kube::api::ListParams::default().labels(&selector)).await.ok()?;
        (list.items.len() == 2).then_some(list.items)
    })
    .await;
    for pod in created {
        let spec = pod.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some(installed.service_account().1.as_str()));
        let args = spec.containers[0].args.clone().unwrap();
        assert!(args.contains(&format!("--namespace={}", watched.name)), "{args:?}");
    }
    // A ReferralSystem can be created next to it: CRD and chart agree.
    let systems = Api::<referral_operator::crd::ReferralSystem>::namespaced(client.clone(), &watched.name);
    let text = std::fs::read_to_string(format!("{}/examples/minimal.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut system: referral_operator::crd::ReferralSystem = serde_norway::from_str(&text).unwrap();
    system.metadata.namespace = Some(watched.name.clone());
    systems.create(&PostParams::default(), &system).await.expect("create a ReferralSystem");
}

/// `referral-operator run` started on this machine with a kubeconfig that acts as the
/// chart's ServiceAccount: the controller itself, with exactly the chart's rights.
/// Killed on drop.
pub struct RunningOperator {
    child: std::process::Child,
    pub log: PathBuf,
    pub listen: std::net::SocketAddr,
}

impl RunningOperator {
    pub fn start(kubeconfig: &Path, log: PathBuf, lease_namespace: &str, identity: &str, watch: &[&str]) -> Self {
        Self::start_with(kubeconfig, log, lease_namespace, identity, watch, "info", &[])
    }

    /// Like [`Self::start`], with a `RUST_LOG` filter and extra `run` flags.
    pub fn start_with(
        kubeconfig: &Path,
        log: PathBuf,
        lease_namespace: &str,
        identity: &str,
        watch: &[&str],
        rust_log: &str,
        extra_args: &[&str],
    ) -> Self {
        let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_referral-operator"));
        command
            .args(["run", "--leader-elect", "--lease-name=referral-operator", "--log-format=text"])
            .arg(format!("--listen={listen}"))
            .arg(format!("--identity={identity}"))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", lease_namespace)
            .env("RUST_LOG", rust_log)
            .env_remove("WATCH_NAMESPACES")
            .stdout(std::fs::File::options().create(true).append(true).open(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        for namespace in watch {
            command.arg(format!("--namespace={namespace}"));
        }
        command.args(extra_args);
        RunningOperator { child: command.spawn().expect("start referral-operator run"), log, listen }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM, as the kubelet does, and waits up to `limit` for the process to
    /// exit: its exit status and how long it took, or None if it is still running.
    pub fn terminate(&mut self, limit: std::time::Duration) -> Option<(std::process::ExitStatus, std::time::Duration)> {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid of our own child and a valid signal number.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM to the operator");
        let sent = std::time::Instant::now();
        while sent.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, sent.elapsed()));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_operator_reconciles_with_exactly_the_charts_rights() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::coordination::v1::Lease;

    use kube::api::{Patch, PatchParams};
    use referral_operator::crd::ReferralSystem;
    use std::time::Duration;

    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let operator_ns = TestNamespace::create(&client, "refop").await;
    let watched = TestNamespace::create(&client, "watched").await;
    let dir = tempfile::tempdir().unwrap();
    let release = format!("run-{}", suffix());
    let (_installed, kubeconfig) = namespaced_operator_rbac(dir.path(), &operator_ns.name, &watched.name, &release);

    let uri = crate::harness::testbed_var("REFOP_TEST_MONGODB_URI");
    crate::harness::put_secret(&client, &watched.name, "referral-mongo", &[("uri", &uri)]).await;
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), &watched.name);
    let text = std::fs::read_to_string(format!("{}/examples/minimal.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut system: ReferralSystem = serde_norway::from_str(&text).unwrap();
    system.metadata.name = Some("main".into());
    system.metadata.namespace = Some(watched.name.clone());
    system.spec.workers.push(serde_json::from_value(serde_json::json!({"name": "api"})).unwrap());
    systems.create(&PostParams::default(), &system).await.unwrap();

    let operator = RunningOperator::start(
        &kubeconfig,
        dir.path().join("operator.log"),
        &operator_ns.name,
        "e2e-0",
        &[&watched.name],
    );
    let reconciled =
        wait_for(Duration::from_secs(90), "the operator to write a status for this generation", || async {
            let log = operator.log_text();
            assert!(!log.to_lowercase().contains("forbidden"), "the operator hit RBAC limits:\n{log}");
            let current = systems.get("main").await.ok()?;
            let status = current.status.clone()?;
            (status.observed_generation == current.metadata.generation).then_some(status)
        })
        .await;
    let condition = |type_: &str| reconciled.conditions.iter().find(|c| c.type_ == type_).cloned();
    assert_eq!(condition("SpecValid").map(|c| c.status), Some("True".into()), "{reconciled:?}");
    // The first reconcile applies everything with these rights: no write is refused,
    // whatever the order the writes reach the server in (a RoleBinding sent before
    // its Role is refused to an identity without `bind`).
    assert_ne!(condition("Ready").map(|c| c.reason), Some("ApplyFailed".into()), "{reconciled:?}");
    let log = operator.log_text();
    assert!(!log.contains("reconcile failed"), "a reconcile failed with the chart's rights:\n{log}");
    // The MongoDB URI came from the Secret, read by name with `get` only.
    assert_eq!(condition("MongoReachable").map(|c| c.status), Some("True".into()), "{reconciled:?}");

    let deployments = Api::<Deployment>::namespaced(client.clone(), &watched.name);
    wait_for(Duration::from_secs(30), "both worker Deployments", || async {
        let api = deployments.get_opt("main-api").await.ok()??;
        let rewards = deployments.get_opt("main-reward-processor").await.ok()??;
        Some((api, rewards))
    })
    .await;
    let (ok, roles, _) =
        kubectl(&["get", "roles,rolebindings,cronjobs,statefulsets", "-n", &watched.name, "-o", "name"], None);
    assert!(ok && roles.contains("role.rbac.authorization.k8s.io/main-jobs"), "{roles}");
    assert!(roles.contains("rolebinding.rbac.authorization.k8s.io/main-jobs"), "{roles}");
    let lease = Api::<Lease>::namespaced(client.clone(), &operator_ns.name).get("referral-operator").await.unwrap();
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("e2e-0"));
    // The reconcile publishes its events after its status write (docs/controller.md:
    // "status → events"), so the status seen above can come before the event: wait for it.
    wait_for(Duration::from_secs(30), "an event from the operator", || async {
        let (ok, events, _) = kubectl(&["get", "events.events.k8s.io", "-n", &watched.name, "-o", "json"], None);
        (ok && events.contains("\"reportingController\": \"referral-operator\"")).then_some(())
    })
    .await;

    // Pruning a worker needs list and delete on Deployments.
    let mut workers = serde_json::to_value(&system.spec.workers).unwrap();
    workers.as_array_mut().unwrap().retain(|w| w["name"] != "api");
    systems
        .patch("main", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"workers": workers}})))
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "the operator to prune the removed worker", || async {
        let log = operator.log_text();
        assert!(!log.to_lowercase().contains("forbidden"), "the operator hit RBAC limits:\n{log}");
        deployments.get_opt("main-api").await.ok()?.is_none().then_some(())
    })
    .await;

    let log = operator.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "the operator hit RBAC limits:\n{log}");
    let (ok, body, _) = curl_ready(operator.listen);
    assert!(ok && body.contains("ready"), "/readyz: {body}\n{log}");
}

/// GET /readyz over a plain socket: (200?, body).
fn curl_ready(addr: std::net::SocketAddr) -> (bool, String, String) {
    http_get(addr, "/readyz")
}

/// GET `path` over a plain socket: (200?, body, head).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (bool, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the operator's HTTP port");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.starts_with("HTTP/1.1 200"), body.to_string(), head.to_string())
}

#[tokio::test]
async fn on_sigterm_the_operator_exits_within_seconds_and_releases_its_lease() {
    use k8s_openapi::api::coordination::v1::Lease;
    use std::time::Duration;

    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let operator_ns = TestNamespace::create(&client, "refop").await;
    let watched = TestNamespace::create(&client, "watched").await;
    let dir = tempfile::tempdir().unwrap();
    let release = format!("term-{}", suffix());
    let (_installed, kubeconfig) = namespaced_operator_rbac(dir.path(), &operator_ns.name, &watched.name, &release);
    let mut operator = RunningOperator::start(
        &kubeconfig,
        dir.path().join("operator.log"),
        &operator_ns.name,
        "term-0",
        &[&watched.name],
    );
    let leases = Api::<Lease>::namespaced(client.clone(), &operator_ns.name);
    wait_for(Duration::from_secs(60), "the operator to hold its Lease", || async {
        let lease = leases.get("referral-operator").await.ok()?;
        (lease.spec?.holder_identity.as_deref() == Some("term-0")).then_some(())
    })
    .await;
    // A pod being deleted gets SIGTERM, then SIGKILL after its grace period (30 s):
    // the operator must be gone well before, its Lease free for the standby.
    let (status, took) = operator
        .terminate(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still running 15 s after SIGTERM:\n{}", operator.log_text()));
    assert!(status.success(), "exit status {status}:\n{}", operator.log_text());
    eprintln!("the operator exited {took:?} after SIGTERM");
    let lease = leases.get("referral-operator").await.unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(holder.is_empty(), "the Lease is still held by {holder:?} after exit");
}
