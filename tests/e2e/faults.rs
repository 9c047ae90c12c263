//! Faults the operator must survive (issue 20), each injected into a system in a
//! steady state or mid-reconcile on the test bed's real control plane, with the
//! operator running as a process with the chart's RBAC ([`Setup`]). Each test
//! measures how long the system takes to converge after the fault ends, counts the
//! operator's API writes during the fault, and checks that nothing was lost; it fails
//! when recovery does not happen within [`RECOVERY_LIMIT`] or something is lost.
//!
//! Each prints one line `FAULT-TABLE<TAB>fault<TAB>seconds<TAB>writes<TAB>lost`, which
//! `scripts/faults-table.sh` gathers into a table. The writes are counted from the
//! kube-apiserver's audit log (`testbed.sh start --audit-log` exports
//! `TESTBED_AUDIT_LOG`): every create/update/patch/delete by the operator's
//! ServiceAccount except its Lease renewals. Without an audit log that column says so,
//! and the tests check what they can from the operator's own log.
//!
//! None of these needs a pod to run, so they run on the control-plane bed as well as
//! on the node (where the kubelet makes workers ready; [`mark_pods_ready`] does it
//! otherwise).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use referral_operator::crd::ReferralSystem;
use referral_operator::reconcilers::backup::manual_backup_job_name;
use referral_operator::reconcilers::chain_check::manual_check_job_name;
use referral_operator::reconcilers::meta::{MANAGER, system_selector};
use referral_operator::reconcilers::monitoring::{ALERT_BACKUP_FAILED, OPERATOR_BACKUP_LAST_FAILURE, prometheus_rule};
use serde_json::{Value, json};

use crate::chart::{RunningOperator, http_get};
use crate::controller_jobs::{Setup, setup};
use crate::harness::{enabled, mark_pods_ready, put_secret, testbed_var, wait_for};
use crate::operator::apply_steps;

/// The target: converged within this long after a fault ends. The table
/// compares each figure with it.
const TARGET: Duration = Duration::from_secs(30);
/// What a test accepts before it calls recovery broken: the target with room for a
/// 2-core machine shared by other builds.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// Resync given to the operators here, so that a storm or a missed change would show
/// many times over within each test.
const RESYNC: &str = "3s";
/// The re-check back-off's ceiling in the suite (see [`restart_args`]).
const RECHECK_CEILING: &str = "12s";
/// Logs the reconcile step's own lines ("applied children", "reconciled").
const RUST_LOG: &str = "info,referral_operator=debug";

/// Prints the row `scripts/faults-table.sh` reads.
fn table_row(fault: &str, converged: Duration, writes: &Option<BTreeMap<String, usize>>, lost: &str) {
    let writes = match writes {
        Some(by_kind) => {
            let total: usize = by_kind.values().sum();
            let detail: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            if detail.is_empty() { "0".to_string() } else { format!("{total} ({})", detail.join(", ")) }
        }
        None => "not counted (no TESTBED_AUDIT_LOG)".to_string(),
    };
    let secs = converged.as_secs_f64();
    let verdict = if converged <= TARGET { "PASS" } else { "MISS" };
    eprintln!("FAULT-TABLE\t{fault}\t{secs:.1} ({verdict} < {}s)\t{writes}\t{lost}", TARGET.as_secs());
}

/// Verbs that change something. The bed's audit log also holds ServiceAccounts'
/// gets and lists (`testbed.sh`'s audit policy), which [`operator_requests`] counts.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Write requests by the operator's ServiceAccount (namespace `operator_ns`) between
/// `from` and `to`, by "verb resource[/subresource]", from the audit log; Lease
/// renewals are left out (they go on whatever the system does). None without one.
fn operator_writes(operator_ns: &str, from: Timestamp, to: Timestamp) -> Option<BTreeMap<String, usize>> {
    let mut all = operator_requests(operator_ns, from, to)?;
    all.retain(|key, _| WRITE_VERBS.iter().any(|verb| key.split(' ').next() == Some(*verb)));
    Some(all)
}

/// Like [`operator_writes`], reads (get, list) included; watches are not logged.
fn operator_requests(operator_ns: &str, from: Timestamp, to: Timestamp) -> Option<BTreeMap<String, usize>> {
    let path = std::env::var_os("TESTBED_AUDIT_LOG")?;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read the audit log {path:?}: {e}"));
    let user = format!("system:serviceaccount:{operator_ns}:");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
        if !event["user"]["username"].as_str().is_some_and(|u| u.starts_with(&user)) {
            continue;
        }
        let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
        if resource == "leases" {
            continue;
        }
        let Some(at) = event["requestReceivedTimestamp"].as_str().and_then(|t| t.parse::<Timestamp>().ok()) else {
            continue;
        };
        if at < from || at > to {
            continue;
        }
        let subresource = event["objectRef"]["subresource"].as_str().map(|s| format!("/{s}")).unwrap_or_default();
        let verb = event["verb"].as_str().unwrap_or_default();
        *out.entry(format!("{verb} {resource}{subresource}")).or_default() += 1;
    }
    Some(out)
}

/// Sends SIGKILL: no shutdown, no Lease release, whatever request was in flight
/// is cut off.
fn sigkill(operator: RunningOperator) {
    // RunningOperator's drop is Child::kill, which is SIGKILL on Unix.
    drop(operator);
}

fn condition(system: &ReferralSystem, type_: &str) -> Option<(String, String, String)> {
    let c = system.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn deployment_replicas(s: &Setup, name: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(s.client.clone(), &s.watched.name).get_opt(name).await.ok()??.spec?.replicas
}

/// A new generation of the system: its one worker at `replicas`.
async fn set_worker_replicas(s: &Setup, replicas: i32) {
    let workers = json!({"spec": {"workers": [{"name": "reward-processor", "replicas": replicas}]}});
    s.systems().patch("main", &PatchParams::default(), &Patch::Merge(workers)).await.unwrap();
}

/// Short re-checks, and a ceiling on their back-off: with the default ceiling (10m) a
/// Ready system's re-checks, doubling from 3 s, took 47-53 s to notice a MongoDB that
/// stopped answering, too close to [`RECOVERY_LIMIT`] on a loaded machine.
fn restart_args() -> Vec<String> {
    vec![
        format!("--resync-ready={RESYNC}"),
        format!("--resync-not-ready={RESYNC}"),
        format!("--recheck-max-interval={RECHECK_CEILING}"),
    ]
}

fn start(s: &Setup, identity: &str) -> RunningOperator {
    let args = restart_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.start_with(identity, RUST_LOG, &args)
}

// ----------------------------------------------------------------- fault 1 ---

/// Fault 1: SIGKILL at several points of a reconcile that has a spec change and two
/// run-now requests to carry out, four times in a row, then a start that is left
/// alone. The restarts keep the identity, as a container restarted in its pod does.
#[tokio::test]
async fn fault_operator_killed_mid_reconcile_repeatedly_converges_without_duplicates() {
    if !enabled() {
        return;
    }
    let s = setup("fault-kill").await;
    let system = s.create_system(json!({})).await;
    let identity = "fault-kill-0";
    let check_token = "2026-12-06T10:00:00Z";
    let backup_token = "2026-12-06T10:00:01Z";
    s.annotate("referral.dev/check-now", check_token).await;
    s.annotate("referral.dev/backup-now", backup_token).await;

    let fault_start = Timestamp::now();
    // When each start is killed: as soon as a run-now Job exists (between creating
    // it and recording it in status, if the kill is quick enough), then at fixed
    // times after the new process takes the Lease.
    let kill_points = [None, Some(0u64), Some(400), Some(1500)];
    let mut killed_before_first_reconcile = 0;
    let mut replicas = 1;
    for (round, point) in kill_points.iter().enumerate() {
        // Each round brings a new generation, so every start has writes to make.
        replicas = round as i32 + 2;
        set_worker_replicas(&s, replicas).await;
        let operator = start(&s, identity);
        let offset = operator.log_text().len();
        let since = |op: &RunningOperator| op.log_text().get(offset..).unwrap_or_default().to_string();
        wait_for(RECOVERY_LIMIT, "the restarted operator to hold the Lease", || async {
            since(&operator).contains("holding the leader lease").then_some(())
        })
        .await;
        let when = match point {
            Some(delay) => {
                tokio::time::sleep(Duration::from_millis(*delay)).await;
                format!("{delay} ms after taking the Lease")
            }
            None => {
                let taken = Instant::now();
                while s.jobs().list(&ListParams::default()).await.unwrap().items.is_empty() {
                    assert!(taken.elapsed() < RECOVERY_LIMIT, "no run-now Job was started");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                format!("as soon as a Job existed ({} ms after taking the Lease)", taken.elapsed().as_millis())
            }
        };
        let before_kill = since(&operator);
        sigkill(operator);
        let handled = s.systems().get("main").await.unwrap().status.and_then(|st| st.handled_requests);
        let reconciled = before_kill.lines().any(|l| l.contains("reconciled") && !l.contains("reconcile failed"));
        if !reconciled {
            killed_before_first_reconcile += 1;
        }
        eprintln!(
            "round {round}: SIGKILL {when}; {} apply steps and {} finished reconciles logged; handled in status: {handled:?}",
            apply_steps(&before_kill).len(),
            before_kill.lines().filter(|l| l.contains("reconciled")).count()
        );
    }
    assert!(
        killed_before_first_reconcile > 0,
        "every kill came after a finished reconcile: none tested a reconcile cut short"
    );

    // The last start has work left too (a generation no killed process saw), so the
    // figure measures a restarted operator doing it, not a system already converged.
    replicas += 1;
    set_worker_replicas(&s, replicas).await;
    let operator = start(&s, identity);
    let fault_end = Timestamp::now();
    let started = Instant::now();
    let generation = s.systems().get("main").await.unwrap().metadata.generation;
    let check_job = manual_check_job_name(&system, check_token);
    let backup_job = manual_backup_job_name(&system, backup_token);
    let converged = wait_for(RECOVERY_LIMIT, "the system to converge after the last SIGKILL", || async {
        let current = s.systems().get("main").await.ok()?;
        let status = current.status.as_ref()?;
        let handled = status.handled_requests.as_ref()?;
        let done = status.observed_generation == generation
            && handled.check_now.as_ref().is_some_and(|r| r.job == check_job)
            && handled.backup_now.as_ref().is_some_and(|r| r.job == backup_job)
            && deployment_replicas(&s, "main-reward-processor").await == Some(replicas);
        done.then(|| started.elapsed())
    })
    .await;
    let writes = operator_writes(&s.operator_ns.name, fault_start, fault_end);

    // Exactly one Job per request: no kill made a second one, none was lost.
    let jobs: Vec<String> = s.jobs().list(&ListParams::default()).await.unwrap().iter().map(|j| j.name_any()).collect();
    let mut expected = vec![backup_job.clone(), check_job.clone()];
    expected.sort();
    let mut sorted = jobs.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "one Job per run-now request, after {} kills", kill_points.len());
    // A later reconcile of the converged system starts nothing more.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let again = s.jobs().list(&ListParams::default()).await.unwrap().items.len();
    assert_eq!(again, 2, "Jobs started again after convergence");
    assert!(!operator.log_text().contains("panicked"), "the operator panicked:\n{}", operator.log_text());
    table_row(
        "1. operator SIGKILLed mid-reconcile 4x, restarted",
        converged,
        &writes,
        "nothing (2 run-now Jobs, once each; last generation applied)",
    );
}

/// Fault 1, during an image change: SIGKILL the moment each upgrade step is recorded
/// in `status.upgrade` (the pre-upgrade backup, the migration, the rollout), and
/// start again with the same identity. Each step happens once: one pre-upgrade
/// backup Job, one migration Job, the new image only after both, the upgrade
/// recorded as succeeded.
#[tokio::test]
async fn fault_operator_killed_at_each_upgrade_step_does_no_step_twice() {
    use referral_operator::crd::status::UpgradePhase;
    use referral_operator::crd::validate::validate;
    use referral_operator::reconcilers::upgrade::{backup_job_name, migration_job_name, upgrade_target};

    if !enabled() {
        return;
    }
    let s = setup("fault-upgrade").await;
    let on_node = crate::harness::node().is_some();
    // On the node the migration runs the new image for real (the stand-in worker's
    // one-off command); elsewhere the test writes its Job's outcome.
    let migrate = if on_node { json!(["/worker", "job", "migrate"]) } else { json!(["npm", "run", "migrate"]) };
    s.create_system(json!({"migration": {"command": migrate}})).await;
    let identity = "fault-upgrade-0";
    let mut operator = start(&s, identity);
    s.reconciled(&operator).await;
    assert_eq!(s.worker_image().await, Some(crate::controller_jobs::old()));

    let fault_start = Timestamp::now();
    let new = crate::controller_jobs::new();
    s.systems().patch("main", &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": new}}))).await.unwrap();
    let current = s.systems().get("main").await.unwrap();
    let target = upgrade_target(&validate(&current, &s.watched.name).unwrap());
    let backup = backup_job_name(&validate(&current, &s.watched.name).unwrap(), &target);
    let migration = migration_job_name(&validate(&current, &s.watched.name).unwrap(), &target);
    let mut last: Option<UpgradePhase> = None;
    let mut killed_in = Vec::new();
    let (fault_end, started) = loop {
        let phase = wait_for(RECOVERY_LIMIT, "the upgrade's next step", || async {
            mark_pods_ready(&s.client, &s.watched.name).await;
            let phase = s.systems().get("main").await.ok()?.status?.upgrade?.phase;
            (Some(phase) != last).then_some(phase)
        })
        .await;
        assert!(
            matches!(
                phase,
                UpgradePhase::BackingUp | UpgradePhase::Migrating | UpgradePhase::RollingOut | UpgradePhase::Succeeded
            ),
            "the upgrade went {phase:?}"
        );
        if phase == UpgradePhase::Succeeded {
            // Only when the rollout finished before the kill could land.
            break (Timestamp::now(), Instant::now());
        }
        sigkill(operator);
        killed_in.push(format!("{phase:?}"));
        if phase != UpgradePhase::RollingOut {
            let image = s.worker_image().await;
            assert_eq!(image, Some(crate::controller_jobs::old()), "the new image before the {phase:?} step was done");
        }
        operator = start(&s, identity);
        last = Some(phase);
        match phase {
            UpgradePhase::BackingUp => {
                wait_for(RECOVERY_LIMIT, "the pre-upgrade backup Job", || async {
                    s.jobs().get_opt(&backup).await.ok()?
                })
                .await;
                crate::backup::succeed_job(&s.client, &s.watched.name, &backup).await;
            }
            UpgradePhase::Migrating => {
                wait_for(RECOVERY_LIMIT, "the migration Job", || async { s.jobs().get_opt(&migration).await.ok()? })
                    .await;
                if !on_node {
                    crate::backup::succeed_job(&s.client, &s.watched.name, &migration).await;
                }
            }
            _ => break (Timestamp::now(), Instant::now()),
        }
    };
    let converged = wait_for(RECOVERY_LIMIT, "the upgrade recorded as succeeded", || async {
        mark_pods_ready(&s.client, &s.watched.name).await;
        let upgrade = s.systems().get("main").await.ok()?.status?.upgrade?;
        let rolled = s.worker_image().await == Some(new.clone());
        (upgrade.phase == UpgradePhase::Succeeded && rolled).then(|| started.elapsed())
    })
    .await;
    eprintln!("SIGKILLed as each upgrade step was recorded: {killed_in:?}");
    assert!(killed_in.len() >= 2, "too few steps were interrupted: {killed_in:?}");
    let writes = operator_writes(&s.operator_ns.name, fault_start, fault_end);
    let mut jobs: Vec<String> =
        s.jobs().list(&ListParams::default()).await.unwrap().iter().map(|j| j.name_any()).collect();
    jobs.sort();
    let mut expected = vec![backup.clone(), migration.clone()];
    expected.sort();
    assert_eq!(jobs, expected, "one pre-upgrade backup and one migration across {} kills", killed_in.len());
    if let Some(by_kind) = &writes {
        let created = by_kind.get("create jobs").copied().unwrap_or_default();
        assert!(created <= 2, "a Job was created twice (an answer 'already exists' counts too): {by_kind:?}");
    }
    assert!(!operator.log_text().contains("panicked"), "the operator panicked:\n{}", operator.log_text());
    table_row(
        &format!("1b. operator SIGKILLed at each upgrade step ({})", killed_in.join(", ")),
        converged,
        &writes,
        "nothing (1 pre-upgrade backup Job, 1 migration Job, new image only after both)",
    );
}

// ----------------------------------------------------------------- fault 5 ---

/// Fault 5: the system is deleted while no operator runs. The garbage collector
/// collects the owned children; the operator, when it starts, must not bring any back
/// nor keep series for the system, and the claims (Redis data, backups) stay.
#[tokio::test]
async fn fault_system_deleted_while_the_operator_is_down_keeps_claims_and_data() {
    if !enabled() {
        return;
    }
    let s = setup("fault-gone").await;
    // Backups on a claim of their own; MongoDB data the system's workers wrote.
    s.create_system(json!({"backup": {"schedule": "0 1 * * *", "storage": {"size": "1Gi"}}})).await;
    let mongo = mongodb::Client::with_uri_str(testbed_var("REFOP_TEST_MONGODB_URI")).await.expect("connect to MongoDB");
    let users = mongo.database("e2e").collection::<mongodb::bson::Document>(&format!("users_{}", s.watched.name));
    users.insert_one(mongodb::bson::doc! {"_id": "u1", "referralCode": "KEEP"}).await.expect("insert");

    let operator = start(&s, "fault-gone-0");
    s.reconciled(&operator).await;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(s.client.clone(), &s.watched.name);
    let selector = system_selector("main");
    let claims_before: Vec<String> = wait_for(RECOVERY_LIMIT, "the backup claim and the Deployment", || async {
        let claims: Vec<String> = pvcs.list(&ListParams::default()).await.ok()?.iter().map(|c| c.name_any()).collect();
        let deployed = deployment_replicas(&s, "main-reward-processor").await.is_some();
        (deployed && !claims.is_empty()).then_some(claims)
    })
    .await;
    sigkill(operator);

    let fault_start = Timestamp::now();
    s.systems().delete("main", &DeleteParams::default()).await.expect("delete the ReferralSystem");
    let deployments = Api::<Deployment>::namespaced(s.client.clone(), &s.watched.name);
    // The operator stays down a while: the garbage collector does its part meanwhile.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let operator = start(&s, "fault-gone-1");
    let fault_end = Timestamp::now();
    let started = Instant::now();
    let namespace_label = format!("referral_namespace=\"{}\"", s.watched.name);
    let converged = wait_for(RECOVERY_LIMIT, "the children collected and no series left", || async {
        // Its HTTP port answers once the controller runs (http_get fails the test before).
        if !operator.log_text().contains("controller started") {
            return None;
        }
        let left = deployments.list(&ListParams::default().labels(&selector)).await.ok()?.items.len();
        let (ok, metrics, _) = http_get(operator.listen, "/metrics");
        let series = metrics.lines().any(|l| !l.starts_with('#') && l.contains(&namespace_label));
        (ok && left == 0 && !series).then(|| started.elapsed())
    })
    .await;
    // Three resyncs later still nothing came back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = operator_writes(&s.operator_ns.name, fault_start, fault_end);
    let created_after = operator_writes(&s.operator_ns.name, fault_end, Timestamp::now());
    assert!(s.systems().get_opt("main").await.unwrap().is_none(), "the system came back");
    let back = deployments.list(&ListParams::default().labels(&selector)).await.unwrap().items.len();
    assert_eq!(back, 0, "the operator recreated a deleted system's Deployment");
    if let Some(created) = &created_after {
        let made: Vec<&String> = created.keys().filter(|k| !k.starts_with("create events")).collect();
        assert!(made.is_empty(), "the operator wrote for a deleted system after its start: {created:?}");
    }
    let claims_after: Vec<String> =
        pvcs.list(&ListParams::default()).await.unwrap().iter().map(|c| c.name_any()).collect();
    assert_eq!(claims_after, claims_before, "claims hold data and must outlive the system");
    for claim in pvcs.list(&ListParams::default()).await.unwrap() {
        assert!(claim.metadata.deletion_timestamp.is_none(), "{} is being deleted", claim.name_any());
    }
    let kept = users.find_one(mongodb::bson::doc! {"_id": "u1"}).await.expect("find");
    assert!(kept.is_some(), "a MongoDB document went with the system");
    users.drop().await.expect("drop the test collection");
    if let Some(during) = &writes {
        assert!(during.is_empty(), "writes by an operator that was down: {during:?}");
    }
    table_row(
        "5. system deleted while the operator is down",
        converged,
        &writes,
        &format!("nothing ({} claims kept, MongoDB document kept)", claims_after.len()),
    );
}

// ----------------------------------------------------------------- fault 6 ---

/// Fault 6: another field manager force-applies a field the operator manages, again
/// and again. Each change is reverted by exactly one write, and between changes the
/// operator (resyncing every 3 s and woken by every Deployment event) writes nothing.
#[tokio::test]
async fn fault_another_manager_fighting_over_a_field_is_reverted_once_per_change() {
    if !enabled() {
        return;
    }
    let s = setup("fault-fight").await;
    s.create_system(json!({})).await;
    let operator = start(&s, "fault-fight-0");
    s.reconciled(&operator).await;
    let deployments = Api::<Deployment>::namespaced(s.client.clone(), &s.watched.name);
    let name = "main-reward-processor";
    let image_of = |d: &Deployment| d.spec.as_ref()?.template.spec.as_ref()?.containers.first()?.image.clone();
    let wanted = s.systems().get("main").await.unwrap().spec.image;
    let container = wait_for(RECOVERY_LIMIT, "the Deployment with the wanted image", || async {
        let d = deployments.get_opt(name).await.ok()??;
        if image_of(&d) != Some(wanted.clone()) {
            return None;
        }
        Some(d.spec?.template.spec?.containers.first()?.name.clone())
    })
    .await;
    // Quiet first: the first reconciles and the Deployment controller's own writes,
    // and on the node the worker's pod turning ready and the status write that reports
    // it. A fixed pause let that write land in the counted window when the kubelet was
    // slow, on top of the node's two status writes per change the bound allows.
    settle(&s, name, Duration::from_secs(8)).await;

    let offset = operator.log_text().len();
    let fault_start = Timestamp::now();
    let changes = 5;
    let mut slowest = Duration::ZERO;
    for round in 0..changes {
        let edit = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"name": container, "image": format!("example/intruder:{round}")}]}}},
        });
        deployments
            .patch(name, &PatchParams::apply("someone-else").force(), &Patch::Apply(&edit))
            .await
            .expect("a forced apply by another manager");
        let edited = Instant::now();
        wait_for(RECOVERY_LIMIT, "the operator to take the image back", || async {
            let d = deployments.get(name).await.ok()?;
            (image_of(&d) == Some(wanted.clone())).then_some(())
        })
        .await;
        eprintln!("change {round}: reverted after {:.1}s", edited.elapsed().as_secs_f64());
        slowest = slowest.max(edited.elapsed());
        // Two resyncs between changes: a revert that wakes another revert would show.
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    let fault_end = Timestamp::now();
    let log = operator.log_text();
    let steps = apply_steps(log.get(offset..).unwrap_or_default());
    let patched: u64 = steps.iter().sum();
    eprintln!("{} apply steps during the fight, {patched} children patched", steps.len());
    assert!(steps.len() >= changes, "only {} reconciles during {changes} changes", steps.len());
    assert_eq!(patched, changes as u64, "one revert per change, nothing more: {steps:?}");
    let writes = operator_writes(&s.operator_ns.name, fault_start, fault_end);
    if let Some(by_kind) = &writes {
        let reverts = by_kind.get("patch deployments").copied().unwrap_or_default();
        assert_eq!(reverts, changes, "the audit log counts the operator's Deployment writes: {by_kind:?}");
        let other: usize =
            by_kind.iter().filter(|(k, _)| !k.ends_with("deployments") && !k.contains("events")).map(|(_, n)| n).sum();
        // Status writes that tell what the fight did. On the node each intruding image
        // starts a real rollout (a new ReplicaSet whose pod cannot pull the image),
        // which the status reports while it lasts and clears after the revert: up to two
        // writes per change (measured: 10 for 5). Without a kubelet no pod starts either
        // way and the status moves at most once per change.
        let per_change = if crate::harness::node().is_some() { 2 } else { 1 };
        assert!(other <= changes * per_change, "writes beyond the reverts and their status: {by_kind:?}");
    }
    let d = deployments.get(name).await.unwrap();
    let owns_image = d.managed_fields().iter().any(|m| {
        m.manager.as_deref() == Some(MANAGER) && serde_json::to_string(&m.fields_v1).unwrap().contains("f:image")
    });
    assert!(owns_image, "{MANAGER} owns the image at the end");
    table_row(
        &format!("6. another manager force-applies the image {changes}x"),
        slowest,
        &writes,
        "nothing (image reverted each time)",
    );
}

/// Waits until the system and Deployment `deployment` have not changed for `quiet`,
/// and, on the node, until the system is Ready (its workers' pods up): a pod still
/// starting changes nothing for a while, then the Deployment's status and the
/// system's. Without a kubelet no pod ever starts, and quiet is all there is to wait for.
async fn settle(s: &Setup, deployment: &str, quiet: Duration) {
    let deployments = Api::<Deployment>::namespaced(s.client.clone(), &s.watched.name);
    let on_node = crate::harness::node().is_some();
    let look = || async {
        let system = s.systems().get("main").await.ok()?;
        let ready = condition(&system, "Ready").is_some_and(|c| c.0 == "True");
        let versions = (system.resource_version(), deployments.get(deployment).await.ok()?.resource_version());
        Some((versions, ready || !on_node))
    };
    let deadline = Instant::now() + RECOVERY_LIMIT * 2;
    let mut last_versions = None;
    let mut quiet_since = Instant::now();
    loop {
        let now = look().await;
        let versions = now.as_ref().map(|(versions, _)| versions.clone());
        if versions != last_versions {
            quiet_since = Instant::now();
            last_versions = versions;
        }
        if now.as_ref().is_some_and(|(_, ready)| *ready) && quiet_since.elapsed() >= quiet {
            return;
        }
        assert!(Instant::now() < deadline, "the system and {deployment} did not settle: {now:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ----------------------------------------------------------------- fault 3 ---

/// A MongoDB-wire server of this test's own (the bed's is shared by every test
/// running at once), started with the bed's server's command line on another port.
struct OwnMongo {
    child: std::process::Child,
    port: u16,
}

impl OwnMongo {
    fn start() -> OwnMongo {
        let bed = testbed_var("TESTBED_DIR");
        let pid = std::fs::read_to_string(format!("{bed}/pids/mongo.pid")).expect("the bed's mongo pid file");
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).expect("the bed's mongo is running");
        let mut args: Vec<String> =
            cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect();
        // java … -jar JAR PORT VERSION HOST (tests/e2e/testbed.sh).
        let jar = args.iter().position(|a| a == "-jar").expect("the bed runs mongo-server with -jar");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        args[jar + 2] = port.to_string();
        let child = std::process::Command::new(&args[0])
            .args(&args[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mongo-server");
        let host = args.get(jar + 4).cloned().unwrap_or_else(|| "127.0.0.1".into());
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect((host.as_str(), port)).is_err() {
            assert!(Instant::now() < deadline, "the test's mongo-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(200));
        }
        OwnMongo { child, port }
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid of our own child and a valid signal number.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal {signal} to mongo-server");
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The system's MongoReachable and Ready, with pods marked ready where no kubelet runs.
async fn mongo_and_ready(s: &Setup) -> Option<(ReferralSystem, (String, String, String), (String, String, String))> {
    mark_pods_ready(&s.client, &s.watched.name).await;
    let current = s.systems().get("main").await.ok()?;
    let mongo = condition(&current, "MongoReachable")?;
    let ready = condition(&current, "Ready")?;
    Some((current, mongo, ready))
}

/// Fault 3: the MongoDB-wire server stops answering for a minute (SIGSTOP: its
/// connections stay open and hang, the harder case for a client; its data stays),
/// then answers again (SIGCONT). Meanwhile MongoReachable and Ready say why; after,
/// both recover, and the declared index was created once only.
#[tokio::test]
async fn fault_mongodb_unanswering_for_a_minute_is_reported_then_recovered() {
    if !enabled() {
        return;
    }
    let down = std::env::var("REFOP_FAULT_MONGO_DOWN_SECS")
        .ok()
        .map(|s| s.parse::<u64>().expect("REFOP_FAULT_MONGO_DOWN_SECS is a number of seconds"))
        .unwrap_or(60);
    let mongo = OwnMongo::start();
    let s = setup("fault-mongo").await;
    let host = testbed_var("REFOP_TEST_MONGODB_URI")
        .trim_start_matches("mongodb://")
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .expect("REFOP_TEST_MONGODB_URI is mongodb://HOST:PORT");
    let uri = format!("mongodb://{host}:{}", mongo.port);
    put_secret(&s.client, &s.watched.name, "referral-mongo", &[("uri", &uri)]).await;
    s.create_system(json!({"mongodb": {
        "uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": "e2e", "indexPolicy": "Ensure",
        "indexes": [{"collection": "users", "keys": [{"referralCode": 1}], "unique": true}],
    }}))
    .await;
    let operator = start(&s, "fault-mongo-0");
    wait_for(RECOVERY_LIMIT * 2, "Ready with MongoDB reachable and the index in place", || async {
        let (current, mongo, ready) = mongo_and_ready(&s).await?;
        let indexes = condition(&current, "IndexesReady")?;
        (mongo.0 == "True" && ready.0 == "True" && indexes.0 == "True").then_some(())
    })
    .await;

    mongo.signal(libc::SIGSTOP);
    let fault_start = Timestamp::now();
    let stopped = Instant::now();
    let (reported_after, mongo_down, ready_down) =
        wait_for(RECOVERY_LIMIT, "MongoReachable False while the server does not answer", || async {
            let (_, mongo, ready) = mongo_and_ready(&s).await?;
            (mongo.0 == "False").then(|| (stopped.elapsed(), mongo, ready))
        })
        .await;
    eprintln!(
        "MongoReachable False {:.1}s into the fault: {mongo_down:?}; Ready: {ready_down:?}",
        reported_after.as_secs_f64()
    );
    assert_eq!(ready_down.0, "False", "Ready while MongoDB does not answer: {ready_down:?}");
    assert!(ready_down.2.starts_with("MongoReachable:"), "Ready says why: {ready_down:?}");
    assert!(!mongo_down.2.is_empty(), "MongoReachable says why: {mongo_down:?}");
    // It keeps saying so for as long as the server is down.
    while stopped.elapsed() < Duration::from_secs(down) {
        let (_, mongo, ready) = mongo_and_ready(&s).await.expect("the status");
        assert_eq!(mongo.0, "False", "MongoReachable during the fault: {mongo:?}");
        assert_eq!(ready.0, "False", "Ready during the fault: {ready:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    mongo.signal(libc::SIGCONT);
    let fault_end = Timestamp::now();
    let resumed = Instant::now();
    let converged = wait_for(RECOVERY_LIMIT, "MongoReachable and Ready True again", || async {
        let (current, mongo, ready) = mongo_and_ready(&s).await?;
        let indexes = condition(&current, "IndexesReady")?;
        (mongo.0 == "True" && ready.0 == "True" && indexes.0 == "True").then(|| resumed.elapsed())
    })
    .await;
    let writes = operator_writes(&s.operator_ns.name, fault_start, fault_end);
    if let Some(by_kind) = &writes {
        let total: usize = by_kind.values().sum();
        // The status changes once or twice (the condition, its message); a tight
        // retry loop would write far more in a minute.
        assert!(total <= 10, "{total} writes while MongoDB was down: {by_kind:?}");
    }

    // The index was created once, before the fault, and is there once.
    let log = operator.log_text();
    let created: Vec<&str> = log.lines().filter(|l| l.contains("created declared MongoDB indexes")).collect();
    assert_eq!(created.len(), 1, "the index was created again after the fault: {created:?}");
    let client = mongodb::Client::with_uri_str(&uri).await.expect("connect");
    let users = client.database("e2e").collection::<mongodb::bson::Document>("users");
    let mut cursor = users.list_indexes().await.expect("listIndexes");
    let mut keys = Vec::new();
    while cursor.advance().await.unwrap() {
        keys.push(cursor.deserialize_current().unwrap().keys);
    }
    assert_eq!(keys.len(), 2, "_id and the declared index, once each: {keys:?}");
    assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
    table_row(
        &format!("3. MongoDB-wire server unanswering (SIGSTOP) {down}s"),
        converged,
        &writes,
        "nothing (index created once, data kept)",
    );
}

// ----------------------------------------------------------------- fault 7 ---

/// A backup volume that can really fill up: a tmpfs of a fixed size, mounted for the
/// test (no node here to give a pod a small volume). The backups live in `backups/`
/// and a filler file beside it takes whatever room is left.
struct SmallVolume {
    mount: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallVolume {
    /// Mounts it, or says why not (mounting needs root with CAP_SYS_ADMIN).
    fn mount(size: &str) -> Result<SmallVolume, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount = dir.path().join("volume");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(&mount)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        std::fs::create_dir(mount.join("backups")).map_err(|e| e.to_string())?;
        Ok(SmallVolume { mount, _dir: dir })
    }

    fn backups(&self) -> std::path::PathBuf {
        self.mount.join("backups")
    }

    /// Writes the filler until the file system refuses: the volume is full.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.mount.join("filler")).expect("create the filler");
        let block = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill the volume: {e}"),
            }
        }
        let _ = file.sync_all();
        written
    }

    fn free(&self) {
        std::fs::remove_file(self.mount.join("filler")).expect("remove the filler");
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Every file under `dir` (relative path) with its bytes' SHA-256.
fn tree_digest(dir: &std::path::Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap_or_else(|e| panic!("read {current:?}: {e}")) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(relative, format!("{:x}", sha2::Sha256::digest(&bytes)));
            }
        }
    }
    out
}

/// The backup Job the operator started for `token`, run container by container on
/// this machine ([`crate::backup_pods::run_pod`]); its outcome reported to the Job as
/// the kubelet would (succeeded, or failed with the failed container's output). Returns
/// the Job's name and what the pod did.
async fn run_backup_job(
    s: &Setup,
    system: &referral_operator::crd::validate::ValidatedSystem,
    node: &crate::backup_pods::Node,
    token: &str,
) -> (String, Result<Vec<(String, String)>, (String, String)>) {
    s.annotate("referral.dev/backup-now", token).await;
    let job = manual_backup_job_name(system, token);
    let created = wait_for(RECOVERY_LIMIT, "the backup Job", || async { s.jobs().get_opt(&job).await.ok()? }).await;
    let pod = created.spec.and_then(|j| j.template.spec).expect("a pod template");
    let ran = crate::backup_pods::run_pod(node, &pod);
    match &ran {
        Ok(_) => crate::backup::succeed_job(&s.client, &s.watched.name, &job).await,
        Err((_, output)) => crate::controller_jobs::fail_job_pod(&s.client, &s.watched.name, &job, output).await,
    }
    (job, ran)
}

/// Events of kind `reason` on the system, by note.
async fn event_notes(s: &Setup, reason: &str) -> Vec<String> {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &s.watched.name);
    let list = events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).filter_map(|e| e.note).collect()
}

/// Fault 7: the backup volume is full. The operator's backup Job runs its real
/// containers (this build's binary) against a tmpfs holding two earlier backups and
/// a filler that takes the rest; the dump fails with ENOSPC. BackupHealthy, a
/// `BackupFailed` event and the alert's series say so; the earlier backups are
/// byte-identical afterwards and retention deleted nothing. Once there is room again,
/// the next backup completes and clears all three.
#[tokio::test]
async fn fault_backup_target_full_is_reported_and_earlier_backups_are_kept() {
    if !enabled() {
        return;
    }
    let volume = match SmallVolume::mount("8m") {
        Ok(volume) => volume,
        Err(why) => {
            eprintln!("SKIPPED fault 7: it mounts a small tmpfs as the full backup volume, which needs root: {why}");
            return;
        }
    };
    let s = setup("fault-backup").await;
    let database = format!("fault_backup_{}", std::process::id());
    let uri = testbed_var("REFOP_TEST_MONGODB_URI");
    let mongo = mongodb::Client::with_uri_str(&uri).await.expect("connect to MongoDB");
    let db = mongo.database(&database);
    db.drop().await.expect("drop the test database");
    let users: Vec<mongodb::bson::Document> = (0..200)
        .map(|i| mongodb::bson::doc! {"_id": format!("u{i}"), "referralCode": format!("C{i:04}"), "referrer": format!("u{}", i / 2)})
        .collect();
    db.collection::<mongodb::bson::Document>("users").insert_many(users).await.expect("seed users");
    let system = s
        .create_system(json!({
            "mongodb": {"uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": database},
            "backup": {"includeRedis": false},
        }))
        .await;
    let mut args = restart_args();
    args.push(format!("--operator-image={}", crate::backup_pods::OPERATOR_IMAGE));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = s.start_with("fault-backup-0", RUST_LOG, &args);
    s.reconciled(&operator).await;

    let scratch = tempfile::tempdir().unwrap();
    let mut volumes = BTreeMap::from([("backups".to_string(), volume.backups())]);
    for name in ["work", "tmp", "scratch", "api-access"] {
        let path = scratch.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        volumes.insert(name.to_string(), path);
    }
    let account = format!("system:serviceaccount:{}:main-jobs", s.watched.name);
    let node = crate::backup_pods::Node {
        secrets: BTreeMap::from([(("referral-mongo".into(), "uri".into()), uri.clone())]),
        fields: BTreeMap::from([
            ("metadata.namespace".into(), s.watched.name.clone()),
            ("status.podIP".into(), "127.0.0.1".into()),
        ]),
        volumes,
        kubeconfig: crate::backup::impersonating(&account, scratch.path()),
    };

    // Two earlier backups, dated one and two days back so that the retention's daily
    // windows keep both: a backup is named after its start, and nothing inside it
    // repeats the name.
    let backups = volume.backups();
    let mut earlier_names: Vec<String> = Vec::new();
    for (days, token) in [(2i64, "2026-12-06T09:00:00Z"), (1, "2026-12-06T09:00:01Z")] {
        let (job, ran) = run_backup_job(&s, &system, &node, token).await;
        ran.unwrap_or_else(|(c, out)| panic!("earlier backup {job}: container {c} failed:\n{out}"));
        let listing = referral_operator::backup::store::list(&backups).unwrap();
        let fresh = listing
            .backups
            .iter()
            .map(|b| b.dir_name.clone())
            .find(|n| !n.ends_with(".partial") && !earlier_names.contains(n))
            .expect("the backup just made");
        // YYYYMMDDTHHMMSSZ, then the label.
        let (stamp, label) = fresh.split_at(16);
        let at: Timestamp = k8s_openapi::jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
            .expect("a backup name starts with its time")
            .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp();
        let earlier = at - k8s_openapi::jiff::SignedDuration::from_hours(24 * days);
        let earlier = format!("{}{label}", earlier.strftime("%Y%m%dT%H%M%SZ"));
        std::fs::rename(backups.join(&fresh), backups.join(&earlier)).unwrap();
        earlier_names.push(earlier);
        std::thread::sleep(Duration::from_millis(1100)); // backup names are to the second
    }
    let before = tree_digest(&backups);
    let complete_before: Vec<String> = referral_operator::backup::store::list(&backups)
        .unwrap()
        .backups
        .iter()
        .filter(|b| !b.dir_name.ends_with(".partial"))
        .map(|b| b.dir_name.clone())
        .collect();
    assert_eq!(complete_before.len(), 2, "{complete_before:?}");
    wait_for(RECOVERY_LIMIT, "BackupHealthy True after the earlier backups", || async {
        let (status, _, _) = condition(&s.systems().get("main").await.ok()?, "BackupHealthy")?;
        (status == "True").then_some(())
    })
    .await;

    // The fault: the volume is full when the next backup runs.
    let filled = volume.fill();
    let fault_start = Timestamp::now();
    let (failed_job, ran) = run_backup_job(&s, &system, &node, "2026-12-06T09:00:02Z").await;
    let (container, output) = ran.expect_err("a backup onto a full volume fails");
    eprintln!("the backup on a full volume ({filled} bytes of filler) failed in {container}: {output}");
    assert_eq!(container, "dump", "the dump is the first to write");
    assert!(output.contains("No space left on device"), "the dump says why: {output}");
    let (_, reason, message) = wait_for(RECOVERY_LIMIT, "BackupHealthy False with BackupFailed", || async {
        let found = condition(&s.systems().get("main").await.ok()?, "BackupHealthy")?;
        (found.0 == "False").then_some(found)
    })
    .await;
    assert_eq!(reason, "BackupFailed", "{message}");
    assert!(message.contains(&failed_job) && message.contains("kept"), "the condition names the Job: {message}");
    let notes = wait_for(RECOVERY_LIMIT, "a BackupFailed event", || async {
        let notes = event_notes(&s, "BackupFailed").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    assert!(notes.iter().all(|n| n.contains(&failed_job)), "the event names the Job: {notes:?}");
    // The alert: the operator exports the failure series for this system, and the
    // rule it applies for the system reads exactly that series (tests/prometheus_rules.rs
    // has promtool fire the alert on it).
    let label = format!("referral_namespace=\"{}\"", s.watched.name);
    let (ok, metrics, _) = http_get(operator.listen, "/metrics");
    let failure_series: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with(OPERATOR_BACKUP_LAST_FAILURE) && l.contains(&label)).collect();
    assert!(ok && failure_series.len() == 1, "one failure series for the system: {failure_series:?}");
    let rules = prometheus_rule(&system).expect("the default PrometheusRule");
    let alert = rules.data["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == ALERT_BACKUP_FAILED)
        .expect("the backup-failed alert is on by default");
    let expr = alert["expr"].as_str().unwrap();
    assert!(expr.contains(OPERATOR_BACKUP_LAST_FAILURE) && expr.contains(&label), "{expr}");

    // Several resyncs into the failure: one event for the one failed Job, and the
    // earlier backups exactly as they were (no retention ran: finalize never did).
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(event_notes(&s, "BackupFailed").await.len(), 1, "one event per failed Job");
    let during = tree_digest(&backups);
    for (file, digest) in &before {
        assert_eq!(during.get(file), Some(digest), "{file} changed or went during the failure");
    }
    let listing = referral_operator::backup::store::list(&backups).unwrap();
    let partial: Vec<String> =
        listing.backups.iter().map(|b| b.dir_name.clone()).filter(|n| n.ends_with(".partial")).collect();

    // The fault ends: room again, and the next backup asked for.
    volume.free();
    let fault_end = Timestamp::now();
    let freed = Instant::now();
    let (job, ran) = run_backup_job(&s, &system, &node, "2026-12-06T09:00:03Z").await;
    ran.unwrap_or_else(|(c, out)| panic!("the backup after the fault: {job}: container {c} failed:\n{out}"));
    let converged = wait_for(RECOVERY_LIMIT, "BackupHealthy True after the next backup", || async {
        let (status, reason, _) = condition(&s.systems().get("main").await.ok()?, "BackupHealthy")?;
        (status == "True" && reason == "BackupRecent").then(|| freed.elapsed())
    })
    .await;
    let writes = operator_writes(&s.operator_ns.name, fault_start, fault_end);

    // The new backup's finalize applied the retention: both earlier backups are kept,
    // byte for byte, and so is the failed run's partial folder (incomplete, young).
    let after = tree_digest(&backups);
    for (file, digest) in &before {
        assert_eq!(after.get(file), Some(digest), "{file} changed or went after the next backup's retention");
    }
    let listing = referral_operator::backup::store::list(&backups).unwrap();
    let names: Vec<String> = listing.backups.iter().map(|b| b.dir_name.clone()).collect();
    for kept in complete_before.iter().chain(&partial) {
        assert!(names.contains(kept), "{kept} is gone: {names:?}");
    }
    assert_eq!(names.len(), complete_before.len() + partial.len() + 1, "{names:?}");
    let (_, metrics, _) = http_get(operator.listen, "/metrics");
    assert!(
        !metrics.lines().any(|l| l.starts_with(OPERATOR_BACKUP_LAST_FAILURE) && l.contains(&label)),
        "the failure series outlived the next complete backup"
    );
    assert!(!operator.log_text().contains("panicked"), "the operator panicked:\n{}", operator.log_text());
    db.drop().await.expect("drop the test database");
    table_row(
        "7. backup volume full (ENOSPC in the dump)",
        converged,
        &writes,
        &format!(
            "nothing ({} earlier backups byte-identical, retention deleted nothing, failed run left as {})",
            complete_before.len(),
            partial.first().map(String::as_str).unwrap_or("nothing")
        ),
    );
}

// ----------------------------------------------------------------- fault 8 ---

/// Fault 8: a restore whose operator is SIGKILLed as soon as each new step is
/// recorded, and started again (same identity), until the restore is over; the
/// confirmation that the workers stay stopped (`WorkersStopped=True` within
/// ScalingDown, between its two observations) counts as a step. Each step
/// happens once: one event per step, one restore Job and one chain-check Job, every
/// step's condition True, the workers back. Then a second restore fails; deleting it
/// (how a failed restore is cancelled) lets the workers start and a third restore run
/// to the end, with no operator restart in between.
///
/// As in `restore.rs`, the test plays the kubelet for the two Jobs (no node here):
/// their status is written succeeded or failed.
#[tokio::test]
async fn fault_restore_interrupted_by_restarts_resumes_and_a_failed_one_can_be_cancelled() {
    use referral_operator::crd::restore::{ReferralRestore, RestorePhase};
    use referral_operator::reconcilers::restore::{restore_job_name, verify_job_name};

    if !enabled() {
        return;
    }
    let s = setup("fault-restore").await;
    crate::backup::install_restore_crd(&s.client).await;
    let database = format!("fault_restore_{}", std::process::id());
    let system = s
        .create_system(json!({"mongodb": {
            "uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": database, "indexPolicy": "Report",
        }}))
        .await;
    let identity = "fault-restore-0";
    let mut operator = start(&s, identity);
    s.reconciled(&operator).await;
    wait_for(RECOVERY_LIMIT, "the worker Deployment", || async {
        (deployment_replicas(&s, "main-reward-processor").await == Some(1)).then_some(())
    })
    .await;

    let restores = Api::<ReferralRestore>::namespaced(s.client.clone(), &s.watched.name);
    let first = restores
        .create(&Default::default(), &crate::restore::restore_object("r1"))
        .await
        .expect("create the ReferralRestore");
    let uid = first.uid().unwrap();
    let restore_job = restore_job_name(&system, &uid);
    let check_job = verify_job_name(&system, &uid);
    let fault_start = Timestamp::now();
    // A step: the phase, and within ScalingDown whether the workers read as stopped
    // and are being confirmed (a step of its own with no phase or event).
    let mut last: Option<(RestorePhase, bool)> = None;
    let mut killed_in = Vec::new();
    // A kill lands between a step's status write and its event only by chance (it
    // did in one of three runs before the event was recorded in status). So after
    // each kill the test puts the restore in exactly the state such a kill leaves:
    // the step recorded, its event not recorded as published (`announcedPhase` one
    // step back), and, every other time, the event itself gone too (killed before
    // the create) rather than there (killed after it). The next process must then
    // publish the missing events and not repeat the present ones.
    let (mut rewound_kept, mut rewound_deleted) = (0, 0);
    let final_start = loop {
        let (phase, confirming) = wait_for(RECOVERY_LIMIT, "the restore's next step", || async {
            let status = crate::restore::status_of(&restores, "r1").await?;
            let phase = status.phase?;
            let confirming = phase == RestorePhase::ScalingDown
                && status.conditions.iter().any(|c| c.type_ == "WorkersStopped" && c.status == "True");
            (Some((phase, confirming)) != last && phase != RestorePhase::Pending).then_some((phase, confirming))
        })
        .await;
        if phase.is_terminal() {
            assert_eq!(phase, RestorePhase::Succeeded, "{:?}", crate::restore::status_of(&restores, "r1").await);
            break None;
        }
        // Killed the moment the step is recorded: before, or while, the operator acts on it.
        sigkill(operator);
        killed_in.push(if confirming { "ScalingDown (confirming)".to_string() } else { format!("{phase:?}") });
        // The step recorded now (the process may have gone one further before the kill).
        let recorded = crate::restore::status_of(&restores, "r1").await.and_then(|st| st.phase).unwrap();
        // The confirmation records no phase, so it has no event to rewind: its
        // phase's event was published (and rewound) when that phase was recorded.
        let no_event = recorded.is_terminal() || (confirming && recorded == RestorePhase::ScalingDown);
        if !no_event {
            // Every other rewind, counting only the kills that have an event to rewind.
            let delete_event = (rewound_kept + rewound_deleted) % 2 == 1;
            rewind_announcement(&s, &restores, "r1", recorded, delete_event).await;
            if delete_event {
                rewound_deleted += 1;
            } else {
                rewound_kept += 1;
            }
        }
        operator = start(&s, identity);
        last = Some((phase, confirming));
        match phase {
            RestorePhase::Restoring => {
                wait_for(RECOVERY_LIMIT, "the restore Job", || async { s.jobs().get_opt(&restore_job).await.ok()? })
                    .await;
                crate::backup::succeed_job(&s.client, &s.watched.name, &restore_job).await;
            }
            RestorePhase::CheckingChains => {
                wait_for(RECOVERY_LIMIT, "the chain-check Job", || async { s.jobs().get_opt(&check_job).await.ok()? })
                    .await;
                crate::backup::succeed_job(&s.client, &s.watched.name, &check_job).await;
            }
            RestorePhase::ScalingUp => break Some((Timestamp::now(), Instant::now())),
            _ => {}
        }
    };
    // The figure: from the start after the last kill (in ScalingUp) until the restore
    // is over and the workers are back.
    let (fault_end, started) = final_start.unwrap_or_else(|| (Timestamp::now(), Instant::now()));
    let converged = wait_for(RECOVERY_LIMIT, "r1 Succeeded and the workers back", || async {
        let phase = crate::restore::status_of(&restores, "r1").await?.phase?;
        let back = deployment_replicas(&s, "main-reward-processor").await == Some(1);
        (phase == RestorePhase::Succeeded && back).then(|| started.elapsed())
    })
    .await;
    eprintln!(
        "SIGKILLed as each step was recorded: {killed_in:?}; left unannounced with the event kept {rewound_kept}x, deleted {rewound_deleted}x"
    );
    assert!(killed_in.len() >= 3, "too few steps were interrupted: {killed_in:?}");
    // The confirmation lasts WORKERS_STOPPED_FOR and more, long enough to be seen:
    // an operator killed between its two observations carried on from the stored
    // condition (one restore Job, below).
    assert!(
        killed_in.iter().any(|k| k == "ScalingDown (confirming)"),
        "no kill between the two observations of stopped workers: {killed_in:?}"
    );
    let writes = operator_writes(&s.operator_ns.name, fault_start, fault_end);

    // Each step once.
    let done = crate::restore::status_of(&restores, "r1").await.unwrap();
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
    // Every step's event exactly once, in order: the driver records each step, then
    // publishes its event under a name of its own, then records that it did; a
    // process killed between the two announces it on its next start, and a create
    // repeated after a kill is refused as existing.
    let reasons = crate::restore::event_reasons(&s.client, &s.watched.name, "r1").await;
    let steps: Vec<&str> = reasons.iter().map(String::as_str).filter(|r| *r != "Pending").collect();
    let order = ["ScalingDown", "Restoring", "EnsuringIndexes", "CheckingChains", "ScalingUp", "Restored"];
    assert_eq!(steps, order, "each step's event once, in order, across {} kills", killed_in.len());
    assert!(reasons.iter().filter(|r| *r == "Pending").count() <= 1, "the Pending event twice: {reasons:?}");
    assert_eq!(done.announced_phase, Some(RestorePhase::Succeeded), "the last event recorded as published");
    let restore_jobs = crate::restore::jobs_for(&s.client, &s.watched.name, "restore").await;
    let check_jobs = crate::restore::jobs_for(&s.client, &s.watched.name, "restore-check").await;
    assert_eq!((restore_jobs.len(), check_jobs.len()), (1, 1), "one Job per step, none started twice");
    if let Some(by_kind) = &writes {
        eprintln!("writes while the restore was being interrupted: {by_kind:?}");
        let created = by_kind.get("create jobs").copied().unwrap_or_default();
        assert!(created <= 2, "Jobs created more than once (an answer 'already exists' counts too): {by_kind:?}");
    }

    // A restore that fails, cancelled by deleting it; the next runs; no restart.
    restores.create(&Default::default(), &crate::restore::restore_object("r2")).await.expect("create r2");
    let second_job = restore_job_name(&system, &restores.get("r2").await.unwrap().uid().unwrap());
    wait_for(RECOVERY_LIMIT, "the restore Job of r2", || async { s.jobs().get_opt(&second_job).await.ok()? }).await;
    crate::restore::fail_job(&s.client, &s.watched.name, &second_job).await;
    wait_for(RECOVERY_LIMIT, "r2 Failed, holding the workers at zero", || async {
        let status = crate::restore::status_of(&restores, "r2").await?;
        let held = deployment_replicas(&s, "main-reward-processor").await == Some(0);
        (status.phase == Some(RestorePhase::Failed) && status.holds_system && held).then_some(())
    })
    .await;
    restores.delete("r2", &DeleteParams::default()).await.expect("delete (cancel) r2");
    let cancelled = Instant::now();
    let released = wait_for(RECOVERY_LIMIT, "the workers back once the failed restore is deleted", || async {
        (deployment_replicas(&s, "main-reward-processor").await == Some(1)).then(|| cancelled.elapsed())
    })
    .await;
    let third = restores.create(&Default::default(), &crate::restore::restore_object("r3")).await.expect("r3");
    let third_uid = third.uid().unwrap();
    let third_job = restore_job_name(&system, &third_uid);
    wait_for(RECOVERY_LIMIT, "the restore Job of r3", || async { s.jobs().get_opt(&third_job).await.ok()? }).await;
    crate::backup::succeed_job(&s.client, &s.watched.name, &third_job).await;
    let third_check = verify_job_name(&system, &third_uid);
    wait_for(RECOVERY_LIMIT, "the chain-check Job of r3", || async { s.jobs().get_opt(&third_check).await.ok()? })
        .await;
    crate::backup::succeed_job(&s.client, &s.watched.name, &third_check).await;
    wait_for(RECOVERY_LIMIT, "r3 Succeeded and the workers back", || async {
        let phase = crate::restore::status_of(&restores, "r3").await?.phase?;
        let back = deployment_replicas(&s, "main-reward-processor").await == Some(1);
        (phase == RestorePhase::Succeeded && back).then_some(())
    })
    .await;
    eprintln!("cancelled r2: workers back after {:.1}s; r3 ran to the end", released.as_secs_f64());
    assert!(!operator.log_text().contains("panicked"), "the operator panicked:\n{}", operator.log_text());
    table_row(
        &format!("8. restore: operator SIGKILLed at each step ({})", killed_in.join(", ")),
        converged,
        &writes,
        &format!(
            "nothing (each step once: 1 restore + 1 check Job; each step's event exactly once, also after {rewound_deleted} kills before the event and {rewound_kept} after it, unrecorded); failed restore cancelled by deletion, workers back {:.1}s later, next restore ran",
            released.as_secs_f64()
        ),
    );
}

/// The phases of a restore in order, each after the one it follows.
const RESTORE_ORDER: [&str; 7] =
    ["Pending", "ScalingDown", "Restoring", "EnsuringIndexes", "CheckingChains", "ScalingUp", "Succeeded"];

/// Leaves restore `name` as an operator killed right after recording `phase` leaves
/// it: `announcedPhase` the step before, and with `delete_event` no event for
/// `phase` either. Only while no operator runs.
async fn rewind_announcement(
    s: &Setup,
    restores: &Api<referral_operator::crd::restore::ReferralRestore>,
    name: &str,
    phase: referral_operator::crd::restore::RestorePhase,
    delete_event: bool,
) {
    let at = RESTORE_ORDER.iter().position(|p| *p == format!("{phase:?}")).expect("a known phase");
    let before = if at <= 1 { Value::Null } else { json!(RESTORE_ORDER[at - 1]) };
    let patch = json!({"status": {"announcedPhase": before}});
    restores.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await.expect("rewind announcedPhase");
    if delete_event {
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &s.watched.name);
        for event in events.list(&ListParams::default()).await.unwrap() {
            let about_it = event.regarding.as_ref().is_some_and(|r| r.name.as_deref() == Some(name));
            if about_it && event.reason.as_deref() == Some(&format!("{phase:?}")) {
                events.delete(&event.name_any(), &DeleteParams::default()).await.expect("delete the step's event");
            }
        }
    }
}

// ----------------------------------------------------------------- fault 2 ---

/// Whether the faults that stop the bed's own API server or etcd may run: every test
/// sharing the bed would feel them, so only `scripts/faults-table.sh`, in a bed of its
/// own, one test at a time, turns them on (`scripts/test-all.sh` runs it so, beside
/// the e2e suite).
fn disruptive(fault: &str) -> bool {
    if std::env::var("REFOP_FAULTS_DISRUPTIVE").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "SKIPPED {fault}: it stops the test bed's API server or etcd, which every test sharing the bed would feel; \
         scripts/test-all.sh and scripts/faults-table.sh run it in a bed of its own (REFOP_FAULTS_DISRUPTIVE=1)"
    );
    false
}

/// `testbed.sh restart` on this test's bed, in the background.
fn restart_bed_process(name: &str, down: Duration, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/testbed.sh"))
        .args(["restart", &testbed_var("TESTBED_DIR"), name, "--down", &down.as_secs().to_string()])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run testbed.sh restart")
}

/// While `outage` runs: the operator's `/readyz` answers, sampled every half second.
/// Returns the not-ready answers seen, and whether the operator process exited.
async fn readiness_during(operator: &mut RunningOperator, outage: &mut std::process::Child) -> (Vec<String>, bool) {
    let mut not_ready = Vec::new();
    loop {
        if let Some(status) = outage.try_wait().expect("wait for testbed.sh restart") {
            assert!(status.success(), "testbed.sh restart failed: {status}");
            return (not_ready, operator.exited().is_some());
        }
        if operator.exited().is_none() {
            let (ok, body, _) = http_get(operator.listen, "/readyz");
            if !ok && !not_ready.contains(&body) {
                not_ready.push(body);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Time until the operator applied a new generation made now (the change reaches it
/// through its watch), with its `/readyz` ready again.
async fn converges_on_a_new_generation(s: &Setup, operator: &RunningOperator, replicas: i32) -> Duration {
    let started = Instant::now();
    set_worker_replicas(s, replicas).await;
    let generation = s.systems().get("main").await.unwrap().metadata.generation;
    wait_for(RECOVERY_LIMIT, "the operator to apply a generation made after the fault", || async {
        let observed = s.systems().get("main").await.ok()?.status?.observed_generation;
        let applied = deployment_replicas(s, "main-reward-processor").await == Some(replicas);
        let (ready, _, _) = http_get(operator.listen, "/readyz");
        (observed == generation && applied && ready).then(|| started.elapsed())
    })
    .await
}

/// Fault 2: the API server stopped and started again, then etcd stopped for 20 s,
/// in a bed of this test's own. Meanwhile the operator's `/readyz` says the API
/// server is not ready; after each, a new generation is applied without anyone
/// restarting the operator for it, which shows its watches resumed. During the etcd
/// outage the API server still logs each request, so the operator's are counted: a
/// tight retry loop would show there.
#[tokio::test]
async fn fault_api_server_restart_and_etcd_stop_are_survived_without_a_retry_storm() {
    if !enabled() || !disruptive("fault 2 (API server restart, etcd stopped)") {
        return;
    }
    let etcd_down = Duration::from_secs(20);
    let s = setup("fault-api").await;
    s.create_system(json!({})).await;
    let mut operator = start(&s, "fault-api-0");
    s.reconciled(&operator).await;
    let (ready, body, _) = http_get(operator.listen, "/readyz");
    assert!(ready, "ready before the fault: {body}");

    // The API server: stopped, down 2 s, started again. The whole outage is longer:
    // `testbed.sh restart` gives it 2 s to exit on TERM before KILL, and it serves
    // again only seconds after it starts (more on a loaded machine).
    let fault_start = Timestamp::now();
    let stopped = Instant::now();
    let mut outage = restart_bed_process("kube-apiserver", Duration::from_secs(2), &[]);
    let (said, exited) = readiness_during(&mut operator, &mut outage).await;
    let fault_end = Timestamp::now();
    let outage_secs = stopped.elapsed().as_secs_f64();
    eprintln!("/readyz while the API server was down ({outage_secs:.1}s in all): {said:?}");
    let note = if exited {
        // A leader that cannot renew its claim (15 s, renewed every 5 s) steps down
        // before it ends and exits, by design: so an outage of 10 s or more may end it
        // (fault 2b shows that path). A shorter one must not.
        assert!(
            outage_secs >= 10.0,
            "the operator exited during an API server outage of {outage_secs:.1}s, shorter than its Lease allows:\n{}",
            operator.log_text()
        );
        assert!(
            operator.log_text().contains("lost the leader lease"),
            "exited for another reason:\n{}",
            operator.log_text()
        );
        operator = start(&s, "fault-api-0");
        format!(
            "the outage ({outage_secs:.0}s) outlasted the Lease's claim: the leader stepped down and was started again"
        )
    } else {
        assert!(said.iter().any(|b| b.contains("the API server is not ready")), "/readyz did not say so: {said:?}");
        format!("same process, watches resumed; /readyz said not ready for the {outage_secs:.0}s")
    };
    let restart_converged = converges_on_a_new_generation(&s, &operator, 2).await;
    let restart_writes = operator_writes(&s.operator_ns.name, fault_start, fault_end);
    table_row(
        "2a. API server stopped 2 s (TERM, KILL after 2 s) and started again",
        restart_converged,
        &restart_writes,
        &format!("nothing ({note})"),
    );

    // etcd: stopped for 20 s. The API server stays up and answers each request with
    // an error, logging it.
    let fault_start = Timestamp::now();
    let mut outage = restart_bed_process("etcd", etcd_down, &[]);
    let (said, exited) = readiness_during(&mut operator, &mut outage).await;
    let fault_end = Timestamp::now();
    eprintln!("/readyz while etcd was down: {said:?}");
    let requests = operator_requests(&s.operator_ns.name, fault_start, fault_end);
    let mut note = "same process".to_string();
    if exited {
        // A leader that cannot renew its Lease steps down and exits, by design, so a
        // replica that can reach the API server takes over; the kubelet starts it again.
        let log = operator.log_text();
        assert!(log.contains("lease"), "the operator exited for another reason than its Lease:\n{log}");
        note =
            "the leader stepped down (its 15 s Lease could not be renewed) and was started again, as the kubelet would"
                .into();
        operator = start(&s, "fault-api-0");
    } else {
        assert!(said.iter().any(|b| b.contains("the API server is not ready")), "/readyz did not say so: {said:?}");
    }
    let etcd_converged = converges_on_a_new_generation(&s, &operator, 3).await;
    if let Some(by_kind) = &requests {
        let total: usize = by_kind.values().sum();
        let per_second = total as f64 / etcd_down.as_secs_f64();
        eprintln!("requests while etcd was down: {total} ({per_second:.1}/s): {by_kind:?}");
        // The probe every 5 s, each controller's watches re-listing with back-off, a
        // status write or two: a few a second at most. A retry loop makes hundreds.
        assert!(per_second <= 5.0, "{total} requests in {}s of etcd outage: {by_kind:?}", etcd_down.as_secs());
    }
    assert!(!operator.log_text().contains("panicked"), "the operator panicked:\n{}", operator.log_text());
    let writes = requests.as_ref().map(|by_kind| {
        by_kind
            .iter()
            .filter(|(k, _)| WRITE_VERBS.iter().any(|v| k.split(' ').next() == Some(*v)))
            .map(|(k, n)| (k.clone(), *n))
            .collect::<BTreeMap<_, _>>()
    });
    let total = requests.as_ref().map(|r| r.values().sum::<usize>()).unwrap_or_default();
    table_row(
        &format!("2b. etcd stopped {}s", etcd_down.as_secs()),
        etcd_converged,
        &writes,
        &format!("nothing ({note}; {total} requests in all during the outage)"),
    );
}

// ----------------------------------------------------------------- fault 9 ---

/// Requests by the operator's ServiceAccount that the API server answered 429 (too
/// many requests) between `from` and `to`; None without an audit log.
fn operator_throttled(operator_ns: &str, from: Timestamp, to: Timestamp) -> Option<usize> {
    let path = std::env::var_os("TESTBED_AUDIT_LOG")?;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read the audit log {path:?}: {e}"));
    let user = format!("system:serviceaccount:{operator_ns}:");
    let throttled = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["user"]["username"].as_str().is_some_and(|u| u.starts_with(&user)))
        .filter(|e| e["responseStatus"]["code"] == 429)
        .filter(|e| {
            e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|at| at >= from && at <= to)
        })
        .count();
    Some(throttled)
}

/// Puts the bed's API server back to its usual limits when the test ends, however it ends.
struct UsualLimits;

impl Drop for UsualLimits {
    fn drop(&mut self) {
        // kube-apiserver's defaults, after the test's: the last flag wins.
        let status = restart_bed_process(
            "kube-apiserver",
            Duration::ZERO,
            &[
                "--max-requests-inflight=400",
                "--max-mutating-requests-inflight=200",
                "--enable-priority-and-fairness=true",
            ],
        )
        .wait();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("could not put the API server back to its usual limits: {status:?}");
        }
    }
}

/// Fault 9: the API server run with few request slots (`--max-requests-inflight`,
/// `--max-mutating-requests-inflight`; its priority-and-fairness limits follow them,
/// while the test's admin requests stay exempt). Many systems are created at once,
/// then one more: all converge, the operator's throttled requests are counted, and
/// the late system is not starved behind the burst.
#[tokio::test]
async fn fault_throttled_api_server_is_backed_off_from_and_no_system_starves() {
    if !enabled() || !disruptive("fault 9 (API throttling)") {
        return;
    }
    let (reads, writes_inflight) = (2, 1);
    let burst = 15usize;
    let s = setup("fault-throttle").await;
    let reads_flag = format!("--max-requests-inflight={reads}");
    let writes_flag = format!("--max-mutating-requests-inflight={writes_inflight}");
    // Without priority and fairness the limits are hard: a request over them is
    // answered 429 at once rather than queued, which is what a client must back off from.
    let flags = [reads_flag.as_str(), writes_flag.as_str(), "--enable-priority-and-fairness=false"];
    let status = restart_bed_process("kube-apiserver", Duration::ZERO, &flags).wait().unwrap();
    assert!(status.success(), "restart the API server with low limits");
    let _usual = UsualLimits;

    s.create_system(json!({})).await;
    let main = s.systems().get("main").await.unwrap();
    let names: Vec<String> = (0..burst).map(|i| format!("burst-{i:02}")).collect();
    for name in &names {
        let object: ReferralSystem = serde_json::from_value(json!({
            "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem",
            "metadata": {"name": name, "namespace": s.watched.name}, "spec": main.spec,
        }))
        .unwrap();
        s.systems().create(&Default::default(), &object).await.expect("create a system");
    }
    let fault_start = Timestamp::now();
    let started = Instant::now();
    let operator = start(&s, "fault-throttle-0");
    // One more system once the operator is at work on the burst.
    wait_for(RECOVERY_LIMIT, "the operator at work", || async {
        operator.log_text().contains("applied children").then_some(())
    })
    .await;
    let late: ReferralSystem = serde_json::from_value(json!({
        "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem",
        "metadata": {"name": "late", "namespace": s.watched.name}, "spec": main.spec,
    }))
    .unwrap();
    s.systems().create(&Default::default(), &late).await.expect("create the late system");
    let late_created = Instant::now();
    let late_converged = std::cell::Cell::new(None);
    let all = wait_for(RECOVERY_LIMIT * 3, "every system reconciled under throttling", || async {
        let list = s.systems().list(&ListParams::default()).await.ok()?;
        let done = |sys: &ReferralSystem| {
            sys.status.as_ref().is_some_and(|st| st.observed_generation == sys.metadata.generation)
        };
        if late_converged.get().is_none() && list.items.iter().any(|sys| sys.name_any() == "late" && done(sys)) {
            late_converged.set(Some(late_created.elapsed()));
        }
        let converged = list.items.iter().filter(|sys| done(sys)).count();
        if started.elapsed() > RECOVERY_LIMIT * 3 - Duration::from_secs(1) {
            let log = operator.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{converged} of {} systems reconciled after {:?} under throttling; the operator stopped: {}; its last lines:\n{}",
                burst + 2,
                started.elapsed(),
                log.contains("the controller stopped"),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        (converged == burst + 2 && late_converged.get().is_some()).then(|| started.elapsed())
    })
    .await;
    let fault_end = Timestamp::now();
    let late_converged = late_converged.get().unwrap();
    let requests = operator_requests(&s.operator_ns.name, fault_start, fault_end);
    let throttled = operator_throttled(&s.operator_ns.name, fault_start, fault_end);
    let writes = operator_writes(&s.operator_ns.name, fault_start, fault_end);
    let total: usize = requests.as_ref().map(|r| r.values().sum()).unwrap_or_default();
    eprintln!(
        "{} systems converged in {:.1}s with {reads}+{writes_inflight} request slots; the late one {:.1}s after its creation; \
         {total} requests ({throttled:?} answered 429)",
        burst + 2,
        all.as_secs_f64(),
        late_converged.as_secs_f64()
    );
    // Not starved: the late system waits for no more than the whole burst took.
    assert!(late_converged <= all, "the late system took {late_converged:?}, the whole burst {all:?}");
    // No storm: a throttled request is retried after a pause, not at once; per system
    // the operator needs a few dozen requests to converge.
    assert!(total <= (burst + 2) * 60, "{total} requests for {} systems: {requests:?}", burst + 2);
    assert!(!operator.log_text().contains("panicked"), "the operator panicked:\n{}", operator.log_text());
    table_row(
        &format!("9. API server with {reads}+{writes_inflight} request slots, {} systems at once + 1 late", burst + 1),
        late_converged,
        &writes,
        &format!(
            "nothing (all {} converged in {:.1}s; {total} requests, {} answered 429)",
            burst + 2,
            all.as_secs_f64(),
            throttled.map_or("not counted".to_string(), |n| n.to_string())
        ),
    );
}

// ----------------------------------------------------------------- fault 4 ---

/// Fault 4, on the node only: the managed Redis pod is deleted (its StatefulSet
/// starts another). Meanwhile RedisReady and Ready say why; after, both recover, and
/// the worker pods are the same pods with the same restart counts (the operator
/// restarted nothing, and nothing made them restart). The operator runs as the
/// chart's pod from the image built from this checkout.
#[tokio::test]
async fn fault_redis_pod_deleted_is_reported_and_no_worker_is_restarted() {
    use k8s_openapi::api::core::v1::Pod;

    use crate::node::{PodOperator, create, example, ready_pods, suffix, wait_condition};

    let Some(_node) = crate::harness::require_node("fault 4 (the managed Redis pod deleted)") else { return };
    let client = crate::harness::client().await;
    crate::harness::install_crd(&client).await;
    let watched = crate::harness::TestNamespace::create(&client, "fault-redis").await;
    let password = format!("pw-{}-{}", suffix(), suffix());
    put_secret(&client, &watched.name, "referral-mongo", &[("uri", &testbed_var("REFOP_TEST_MONGODB_URI"))]).await;
    put_secret(&client, &watched.name, "referral-redis", &[("password", &password)]).await;
    let operator = PodOperator::install(&client, "fault-redis", &watched.name, false).await;
    let mut system = example("minimal.yaml", "main", &watched.name);
    system.spec.redis.password_secret_ref =
        serde_json::from_value(json!({"name": "referral-redis", "key": "password"})).unwrap();
    if let Some(managed) = system.spec.redis.managed.as_mut() {
        managed.max_memory = "64mb".into();
    }
    create(&client, &system).await;
    wait_condition(&client, &watched.name, "main", "RedisReady", &operator).await;
    wait_condition(&client, &watched.name, "main", "Ready", &operator).await;
    // Each worker pod by name and uid (a pod replaced under the same name shows),
    // with its containers' restart counts.
    let restarts = |pods: &[Pod]| -> BTreeMap<(String, String), i32> {
        pods.iter()
            .map(|p| {
                let count =
                    p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()).map(|c| c.restart_count).sum();
                ((p.name_any(), p.metadata.uid.clone().unwrap_or_default()), count)
            })
            .collect()
    };
    let workers_before = restarts(&ready_pods(&client, &watched.name, "app.kubernetes.io/component=worker").await);
    assert!(!workers_before.is_empty(), "no ready worker pod before the fault");

    let pods = Api::<Pod>::namespaced(client.clone(), &watched.name);
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), &watched.name);
    let old_uid = pods.get("main-redis-0").await.unwrap().metadata.uid;
    let fault_start = Timestamp::now();
    let deleted = Instant::now();
    pods.delete("main-redis-0", &DeleteParams::default()).await.expect("delete the Redis pod");
    // Until the new Redis pod is ready: what RedisReady and Ready said.
    // (RedisReady, Ready) as (status, reason, message), one entry per RedisReady reason.
    type Said = ((String, String, String), (String, String, String));
    let mut said: Vec<Said> = Vec::new();
    let back = Instant::now();
    let (fault_end, ready_at, new_pod) = loop {
        assert!(back.elapsed() < RECOVERY_LIMIT * 2, "the Redis pod did not come back: {said:?}");
        if let Ok(current) = systems.get("main").await
            && let (Some(redis), Some(ready)) = (condition(&current, "RedisReady"), condition(&current, "Ready"))
            && redis.0 != "True"
            && !said.iter().any(|(r, _)| r.1 == redis.1)
        {
            said.push((redis, ready));
        }
        if let Ok(Some(pod)) = pods.get_opt("main-redis-0").await {
            let ready = pod
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if pod.metadata.uid != old_uid && ready {
                break (Timestamp::now(), Instant::now(), pod);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("while Redis was away: {said:?}");
    assert!(!said.is_empty(), "RedisReady stayed True while the Redis pod was gone");
    for ((_, reason, message), ready) in &said {
        assert!(!message.is_empty(), "RedisReady {reason} says why");
        assert_eq!(ready.0, "False", "Ready while Redis was away: {ready:?}");
    }
    let away = deleted.elapsed();
    let seen = wait_for(RECOVERY_LIMIT, "RedisReady and Ready True again", || async {
        let current = systems.get("main").await.ok()?;
        let ok = condition(&current, "RedisReady")?.0 == "True" && condition(&current, "Ready")?.0 == "True";
        ok.then(|| (ready_at.elapsed(), current))
    })
    .await;
    // The figure from the API server's own clock (whole seconds): the new pod's Ready
    // transition to RedisReady's. The test's polling (every 0.3 s) can come after the
    // operator, so its own elapsed time can read 0; it bounds the figure from above.
    let transition = |conditions: Vec<(String, String, Timestamp)>, type_: &str| {
        conditions.into_iter().find(|(t, s, _)| t == type_ && s == "True").map(|(_, _, at)| at)
    };
    let pod_ready = transition(
        new_pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .filter_map(|c| Some((c.type_.clone(), c.status.clone(), c.last_transition_time.as_ref()?.0)))
            .collect(),
        "Ready",
    );
    let redis_ready = transition(
        seen.1
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .map(|c| (c.type_.clone(), c.status.clone(), c.last_transition_time.0))
            .collect(),
        "RedisReady",
    );
    let server_seconds = match (pod_ready, redis_ready) {
        (Some(pod), Some(redis)) => Some((redis - pod).get_seconds()),
        _ => None,
    };
    eprintln!(
        "Redis away {:.1}s; RedisReady True {:.1}s after the test saw the new pod ready; by the API server's clock {server_seconds:?}s",
        away.as_secs_f64(),
        seen.0.as_secs_f64()
    );
    let converged = match server_seconds {
        Some(secs) if secs >= 0 => seen.0.max(Duration::from_secs(secs.unsigned_abs())),
        _ => seen.0,
    };
    let writes = operator_writes(&operator.ns.name, fault_start, fault_end);
    // The same worker pods, not restarted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let workers_after = restarts(&ready_pods(&client, &watched.name, "app.kubernetes.io/component=worker").await);
    assert_eq!(workers_after, workers_before, "worker pods were replaced or restarted");
    table_row(
        "4. managed Redis pod deleted (on the node)",
        converged,
        &writes,
        &format!(
            "nothing ({} worker pods, same pods (uids), restart counts unchanged; Redis away {:.0}s; RedisReady said {})",
            workers_before.len(),
            away.as_secs_f64(),
            said.iter().map(|(r, _)| r.1.as_str()).collect::<Vec<_>>().join(", ")
        ),
    );
}
