//! `kubectl referral` against a real apiserver, found by kubectl itself on the PATH
//! as `kubectl-referral` (a link to this crate's binary): run-now annotations,
//! pause/resume, and `status` on a status written the way the operator writes it.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use referral_operator::crd::ReferralSystem;
use serde_json::json;

use crate::harness::{TestNamespace, client, enabled, install_crd, kubectl};

/// A directory on the PATH holding `kubectl-referral`, linked to the binary.
struct PluginPath {
    dir: tempfile::TempDir,
}

impl PluginPath {
    fn new() -> PluginPath {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_referral-operator"), dir.path().join("kubectl-referral"))
            .expect("link kubectl-referral");
        PluginPath { dir }
    }

    fn plugin(&self) -> PathBuf {
        self.dir.path().join("kubectl-referral")
    }

    /// `kubectl referral ARGS`: kubectl finds the plugin on the PATH.
    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let path = format!("{}:{}", self.dir.path().display(), std::env::var("PATH").unwrap_or_default());
        let mut all = vec!["referral"];
        all.extend_from_slice(args);
        run(Command::new("kubectl").args(&all).env("PATH", path))
    }
}

fn run(command: &mut Command) -> (bool, String, String) {
    let out = command.output().expect("run the plugin");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn minimal(namespace: &str) -> ReferralSystem {
    let text = std::fs::read_to_string(format!("{}/examples/minimal.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut system: ReferralSystem = serde_norway::from_str(&text).unwrap();
    system.metadata.name = Some("main".into());
    system.metadata.namespace = Some(namespace.into());
    system
}

fn annotation(system: &ReferralSystem, key: &str) -> Option<String> {
    system.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The annotation holds an RFC 3339 time between `before` and now.
fn assert_recent(value: &str, before: Timestamp) {
    let at: Timestamp = value.parse().unwrap_or_else(|e| panic!("{value:?} is not RFC 3339: {e}"));
    let now = Timestamp::now();
    assert!(
        at >= before - SignedDuration::from_secs(1) && at <= now + SignedDuration::from_secs(1),
        "{value} is not the time of the request ({before} .. {now})"
    );
}

fn assert_fits_80_columns(text: &str) {
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "{} columns: {line:?}\n{text}", line.chars().count());
    }
}

#[tokio::test]
async fn run_now_requests_and_pause_write_only_their_fields() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "plugin").await;
    let api = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name);
    let created = api.create(&PostParams::default(), &minimal(&ns.name)).await.expect("create");
    let plugin = PluginPath::new();

    let before = Timestamp::now();
    let (ok, stdout, stderr) = plugin.kubectl(&["check", "now", "main", "-n", &ns.name]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("chain check requested"), "{stdout}");
    assert_fits_80_columns(&stdout);
    let after_check = api.get("main").await.unwrap();
    let check = annotation(&after_check, "referral.dev/check-now").expect("the check-now annotation");
    assert_recent(&check, before);
    assert_eq!(annotation(&after_check, "referral.dev/backup-now"), None);
    assert_eq!(after_check.spec, created.spec, "a run-now request must not touch spec");

    let (ok, stdout, stderr) = plugin.kubectl(&["backup", "now", "main", "-n", &ns.name]);
    assert!(ok, "{stdout}{stderr}");
    let after_backup = api.get("main").await.unwrap();
    assert_recent(&annotation(&after_backup, "referral.dev/backup-now").expect("backup-now"), before);
    assert_eq!(annotation(&after_backup, "referral.dev/check-now"), Some(check.clone()), "other annotations stay");

    // A later request is a new value, which is what asks the controller for a new run.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (ok, _, stderr) = plugin.kubectl(&["check", "now", "main", "-n", &ns.name]);
    assert!(ok, "{stderr}");
    let again = annotation(&api.get("main").await.unwrap(), "referral.dev/check-now").unwrap();
    assert_ne!(again, check, "a second request must write a new token");

    let (ok, stdout, stderr) = plugin.kubectl(&["pause", "main", "-n", &ns.name]);
    assert!(ok && stdout.contains("paused"), "{stdout}{stderr}");
    let paused = api.get("main").await.unwrap();
    assert!(paused.spec.paused);
    let managers: Vec<String> =
        paused.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&"kubectl-referral".to_string()), "{managers:?}");
    let mut unchanged = paused.spec.clone();
    unchanged.paused = false;
    assert_eq!(unchanged, created.spec, "pause changes spec.paused and nothing else");
    let (ok, stdout, _) = plugin.kubectl(&["pause", "main", "-n", &ns.name]);
    assert!(ok && stdout.contains("already paused"), "{stdout}");
    let (ok, stdout, stderr) = plugin.kubectl(&["resume", "main", "-n", &ns.name]);
    assert!(ok && stdout.contains("resumed"), "{stdout}{stderr}");
    assert!(!api.get("main").await.unwrap().spec.paused);

    let (ok, _, stderr) = plugin.kubectl(&["backup", "now", "nope", "-n", &ns.name]);
    assert!(
        !ok && stderr.contains(&format!("referralsystem \"nope\" not found in namespace \"{}\"", ns.name)),
        "{stderr}"
    );
    assert!(api.get_opt("nope").await.unwrap().is_none(), "a request for a missing system creates nothing");
}

fn status_fixture(generation: i64) -> serde_json::Value {
    let at = "2025-06-03T09:00:00Z";
    json!({"status": {
        "observedGeneration": generation,
        "workersReady": "1/2",
        "workers": [{"name": "reward-processor", "desired": 2, "ready": 1}],
        "resourcesNotReady": ["Deployment/main-reward-processor"],
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "RolloutStuck", "observedGeneration": generation,
             "lastTransitionTime": at,
             "message": "WorkersAvailable: rollout exceeded its progress deadline: Deployment main-reward-processor; \
                         the new pods fail their readiness probe on port 3000 and the old ones keep serving"},
            {"type": "WorkersAvailable", "status": "False", "reason": "RolloutStuck", "observedGeneration": generation,
             "lastTransitionTime": at,
             "message": "rollout exceeded its progress deadline: Deployment main-reward-processor"},
            {"type": "RedisReady", "status": "True", "reason": "Reachable", "observedGeneration": generation,
             "lastTransitionTime": at, "message": "PONG"},
        ],
        "indexSummary": "5/6 (1 conflict)",
        "indexes": [{"collection": "referrals", "name": "code_1_status_1", "state": "Conflict",
                     "message": "an index with this name exists with keys {code: 1}"}],
        "chainCheck": {"lastRun": "2025-06-01T03:00:12Z", "summary": "3 violations", "users": 1000,
                       "cycles": 1, "tooDeep": 2, "orphans": 0, "selfReferrals": 0, "malformed": 0,
                       "badReferralRecords": 0, "examples": ["cycle: u1 -> u2 -> u1", "too deep: u9 at depth 5"]},
        "backup": {"lastSuccess": "2025-06-03T01:00:40Z", "kept": 12, "sizeBytes": 3_435_973_837u64},
    }})
}

#[tokio::test]
async fn status_summarises_what_the_operator_and_jobs_wrote() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "status").await;
    let api = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name);
    let created = api.create(&PostParams::default(), &minimal(&ns.name)).await.expect("create");
    let plugin = PluginPath::new();

    let (ok, stdout, stderr) = plugin.kubectl(&["status", "main", "-n", &ns.name]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("none yet: the operator has not reconciled this system"), "{stdout}");

    let generation = created.metadata.generation.unwrap();
    api.patch_status("main", &PatchParams::default(), &Patch::Merge(status_fixture(generation)))
        .await
        .expect("write a status");
    let (ok, stdout, stderr) = plugin.kubectl(&["status", "main", "-n", &ns.name]);
    assert!(ok, "{stderr}");
    assert_fits_80_columns(&stdout);
    assert!(stdout.starts_with(&format!("ReferralSystem {}/main\n", ns.name)), "{stdout}");
    assert!(
        stdout.contains("  Health:      Ready False (RolloutStuck): WorkersAvailable: rollout exceeded"),
        "{stdout}"
    );
    assert!(stdout.contains("readiness probe on port 3000"), "the long message is wrapped, not lost:\n{stdout}");
    assert!(stdout.contains(&format!("  Generation:  {generation} (status is current)\n")), "{stdout}");
    assert!(stdout.contains("  reward-processor  1/2\n"), "{stdout}");
    assert!(stdout.contains("  Not ready: Deployment/main-reward-processor\n"), "{stdout}");
    assert!(stdout.contains("  referrals.code_1_status_1: Conflict\n"), "{stdout}");
    assert!(stdout.contains("Chain check: 3 violations, last run 2025-06-01T03:00:12Z"), "{stdout}");
    assert!(stdout.contains("    too deep: u9 at depth 5\n"), "{stdout}");
    assert!(stdout.contains("12 kept, 3.2 GiB"), "{stdout}");

    let (ok, stdout, stderr) = plugin.kubectl(&["status", "main", "-n", &ns.name, "-o", "json"]);
    assert!(ok, "{stderr}");
    let document: serde_json::Value = serde_json::from_str(&stdout).expect("-o json prints JSON");
    assert_eq!(document["ready"]["reason"], "RolloutStuck");
    assert_eq!(document["status"]["chainCheck"]["tooDeep"], 2);
    assert_eq!(document["observedGeneration"], generation);

    // Without -n: the namespace of the kubeconfig's context, as kubectl does.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = copy_kubeconfig_with_namespace(dir.path(), &ns.name);
    let (ok, stdout, stderr) =
        run(Command::new(plugin.plugin()).args(["status", "main"]).env("KUBECONFIG", &kubeconfig));
    assert!(ok && stdout.contains("Chain check: 3 violations"), "{stdout}{stderr}");
    // The subcommand face of the same code.
    let (ok, stdout, stderr) = run(Command::new(env!("CARGO_BIN_EXE_referral-operator"))
        .args(["plugin", "status", "main", "-o", "json"])
        .env("KUBECONFIG", &kubeconfig));
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["name"], "main");
}

fn copy_kubeconfig_with_namespace(dir: &Path, namespace: &str) -> PathBuf {
    let source = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let copy = dir.join("kubeconfig");
    std::fs::copy(&source, &copy).expect("copy the kubeconfig");
    let copy_arg = format!("--kubeconfig={}", copy.display());
    let (ok, _, stderr) =
        kubectl(&["config", "set-context", "--current", &format!("--namespace={namespace}"), &copy_arg], None);
    assert!(ok, "{stderr}");
    copy
}
