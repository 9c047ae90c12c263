//! The CRD in a real apiserver: established, round-trips a ReferralSystem, refuses an
//! invalid one with the CEL message, prints its columns, and children it owns are
//! garbage-collected with it.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};
use referral_operator::crd::ReferralSystem;

use crate::harness::{TestNamespace, client, enabled, install_crd, kubectl, wait_for};

fn example(name: &str, namespace: &str) -> ReferralSystem {
    let text = std::fs::read_to_string(format!("{}/examples/full.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut system: ReferralSystem = serde_norway::from_str(&text).unwrap();
    system.metadata.name = Some(name.into());
    system.metadata.namespace = Some(namespace.into());
    system
}

#[tokio::test]
async fn a_referral_system_round_trips_through_the_apiserver() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "crd").await;
    let api = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name);
    let created = api.create(&PostParams::default(), &example("main", &ns.name)).await.expect("create");
    let read = api.get("main").await.expect("read back");
    assert_eq!(read.spec, created.spec);
    assert_eq!(read.spec.workers.len(), 3);
    assert_eq!(read.spec.mongodb.indexes.len(), 6);
    assert!(read.status.is_none(), "nobody has written a status yet");
}

#[tokio::test]
async fn server_dry_run_refuses_an_invalid_system_with_the_cel_message() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "cel").await;
    let mut bad = example("bad", &ns.name);
    bad.spec.redis.external = Some(serde_json::from_value(serde_json::json!({"host": "redis.example"})).unwrap());
    let yaml = serde_norway::to_string(&bad).unwrap();
    let (ok, _, stderr) = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
    assert!(!ok, "the apiserver accepted a system with both managed and external Redis");
    assert!(stderr.contains("set exactly one of redis.managed"), "{stderr}");

    let mut shrink = example("shrink", &ns.name);
    let api = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name);
    api.create(&PostParams::default(), &shrink).await.expect("create");
    shrink.spec.redis.managed.as_mut().unwrap().storage.size = "1Gi".into();
    let yaml = serde_norway::to_string(&shrink).unwrap();
    let (ok, _, stderr) = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
    assert!(!ok, "the apiserver accepted shrinking Redis storage");
    assert!(stderr.contains("storage size cannot shrink"), "{stderr}");
}

#[tokio::test]
async fn kubectl_get_prints_the_printer_columns() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "columns").await;
    let api = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name);
    api.create(&PostParams::default(), &example("main", &ns.name)).await.expect("create");
    let (ok, stdout, stderr) = kubectl(&["get", "refsys", "-n", &ns.name], None);
    assert!(ok, "{stderr}");
    let header: Vec<&str> = stdout.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "WORKERS", "INDEXES", "CHAINS", "LAST", "BACKUP", "AGE"], "{stdout}");
    assert!(stdout.lines().nth(1).unwrap_or_default().starts_with("main "), "{stdout}");
    let (ok, wide, _) = kubectl(&["get", "referralsystems.referral.dev", "-n", &ns.name, "-o", "wide"], None);
    assert!(ok && wide.contains("REASON"), "{wide}");
    let (ok, explain, stderr) = kubectl(&["explain", "referralsystem.spec.redis"], None);
    assert!(ok, "{stderr}");
    assert!(explain.contains("set exactly one") || explain.contains("managed"), "{explain}");
}

#[tokio::test]
async fn deleting_a_system_garbage_collects_what_it_owns() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "gc").await;
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name);
    let system = systems.create(&PostParams::default(), &example("main", &ns.name)).await.expect("create");
    let owner = system.controller_owner_ref(&()).expect("a created object has a uid");
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns.name);
    let mut child = ConfigMap::default();
    child.metadata.name = Some("owned".into());
    child.metadata.owner_references = Some(vec![owner]);
    config_maps.create(&PostParams::default(), &child).await.expect("create owned ConfigMap");
    systems.delete("main", &DeleteParams::default()).await.expect("delete system");
    // Only kube-controller-manager's garbage collector removes the child.
    wait_for(Duration::from_secs(60), "the garbage collector to delete the owned ConfigMap", || async {
        config_maps.get_opt("owned").await.ok()?.is_none().then_some(())
    })
    .await;
}
