//! The chain-check CronJob end to end, minus a kubelet: its objects are created in the
//! real apiserver, a Job made from its template gets a Pod from the Job controller,
//! and that Pod runs the right command with MONGODB_URI from the system's Secret.
//! Then the exact command of that Pod runs here, authenticated as the Job's own
//! ServiceAccount, against the test bed's MongoDB: it proves the Role is enough (and no
//! more than needed) and that the status it writes is accepted by the CRD.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use mongodb::bson::{Document, doc, oid::ObjectId};
use referral_operator::crd::ReferralSystem;
use referral_operator::crd::status::StatusWriter;
use referral_operator::crd::validate::validate;
use referral_operator::reconcilers::{BuildContext, build, chain_check, job_identity};

use crate::harness::{TestNamespace, client, enabled, install_crd, testbed_var, wait_for};

const BINARY: &str = env!("CARGO_BIN_EXE_referral-operator");
const IMAGE: &str = "registry.example/referral-operator:e2e";

fn system(name: &str, namespace: &str, database: &str) -> ReferralSystem {
    let text = std::fs::read_to_string(format!("{}/examples/full.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut system: ReferralSystem = serde_norway::from_str(&text).unwrap();
    system.metadata.name = Some(name.into());
    system.metadata.namespace = Some(namespace.into());
    system.spec.mongodb.database = database.into();
    system
}

/// A kubeconfig for the test bed's apiserver that authenticates with `token`.
fn kubeconfig_with_token(token: &str, namespace: &str, path: &std::path::Path) {
    let admin: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(testbed_var("KUBECONFIG")).unwrap()).unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bed", "cluster": cluster}],
        "users": [{"name": "job", "user": {"token": token}}],
        "contexts": [{"name": "job", "context": {"cluster": "bed", "user": "job", "namespace": namespace}}],
        "current-context": "job",
    });
    std::fs::write(path, serde_norway::to_string(&config).unwrap()).unwrap();
}

#[tokio::test]
async fn the_chain_check_job_runs_the_check_and_writes_status_as_its_service_account() {
    if !enabled() {
        return;
    }
    let mongo_uri = testbed_var("REFOP_TEST_MONGODB_URI");
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "chains").await;
    let database = format!("e2e_chains_{}", std::process::id());

    // The system and the Secret its mongodb.uriSecretRef names.
    let systems = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name);
    let created = systems.create(&PostParams::default(), &system("main", &ns.name, &database)).await.unwrap();
    let secret_ref = created.spec.mongodb.uri_secret_ref.clone();
    let secret = Secret {
        metadata: ObjectMeta { name: Some(secret_ref.name.clone()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([(secret_ref.key.clone(), ByteString(mongo_uri.clone().into_bytes()))])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &secret).await.unwrap();

    // The chain-check objects exactly as the builder makes them.
    let validated = validate(&created, &ns.name).expect("the example is valid");
    let children =
        build(&validated, &BuildContext { operator_image: IMAGE.into(), secrets_hash: None, operator_pods: None });
    let identity = job_identity::identity_name(&validated);
    let cron_name = chain_check::cron_job_name(&validated);
    let pp = PostParams::default();
    for sa in children.service_accounts.iter().filter(|o| o.metadata.name.as_deref() == Some(&identity)) {
        Api::<ServiceAccount>::namespaced(client.clone(), &ns.name).create(&pp, sa).await.unwrap();
    }
    for role in children.roles.iter().filter(|o| o.metadata.name.as_deref() == Some(&identity)) {
        Api::<Role>::namespaced(client.clone(), &ns.name).create(&pp, role).await.unwrap();
    }
    for binding in children.role_bindings.iter().filter(|o| o.metadata.name.as_deref() == Some(&identity)) {
        Api::<RoleBinding>::namespaced(client.clone(), &ns.name).create(&pp, binding).await.unwrap();
    }
    let cron = children.cron_jobs.iter().find(|c| c.metadata.name.as_deref() == Some(&cron_name)).unwrap();
    let cron = Api::<CronJob>::namespaced(client.clone(), &ns.name).create(&pp, cron).await.expect("create CronJob");

    // A Job from the CronJob's template, as `kubectl create job --from=cronjob/...` does.
    let job = Job {
        metadata: ObjectMeta { name: Some(format!("{cron_name}-now")), ..ObjectMeta::default() },
        spec: cron.spec.as_ref().and_then(|s| s.job_template.spec.clone()),
        ..Job::default()
    };
    Api::<Job>::namespaced(client.clone(), &ns.name).create(&pp, &job).await.expect("create Job");
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let selector = format!("batch.kubernetes.io/job-name={cron_name}-now");
    let pod = wait_for(Duration::from_secs(60), "the Job controller to create the check Pod", || async {
        pods.list(&ListParams::default().labels(&selector)).await.ok()?.items.into_iter().next()
    })
    .await;
    let spec = pod.spec.expect("pod spec");
    assert_eq!(spec.service_account_name.as_deref(), Some(identity.as_str()));
    let container = &spec.containers[0];
    assert_eq!(container.image.as_deref(), Some(IMAGE));
    let args = container.args.clone().unwrap();
    assert_eq!(args, vec!["check", "chains", "--system", "main", "--write-status"]);
    let env = container.env.clone().unwrap();
    let uri_env = env.iter().find(|e| e.name == "MONGODB_URI").expect("MONGODB_URI");
    assert_eq!(uri_env.value, None, "the URI must never be a literal");
    let key_ref = uri_env.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!((key_ref.name.as_str(), key_ref.key.as_str()), (secret_ref.name.as_str(), secret_ref.key.as_str()));
    let namespace_env = env.iter().find(|e| e.name == "POD_NAMESPACE").expect("POD_NAMESPACE");
    assert_eq!(namespace_env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "metadata.namespace");

    // Data with one cycle and one orphan.
    let mongo = mongodb::Client::with_uri_str(&mongo_uri).await.unwrap();
    let users = mongo.database(&database).collection::<Document>("users");
    let id = |n: u8| ObjectId::from_bytes([n; 12]);
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

    // What the kubelet would do: the Pod's command, its environment from the Secret
    // and the downward API, and the ServiceAccount's token.
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create_token_request(
            &identity,
            &pp,
            &TokenRequest {
                spec: TokenRequestSpec { expiration_seconds: Some(600), ..TokenRequestSpec::default() },
                ..TokenRequest::default()
            },
        )
        .await
        .expect("token for the Job's ServiceAccount")
        .status
        .unwrap()
        .token;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kubeconfig_with_token(&token, &ns.name, &kubeconfig);
    let run = |uri: &str, extra: &[&str]| {
        Command::new(BINARY)
            .args(&args)
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("MONGODB_URI", uri)
            .env("POD_NAMESPACE", &ns.name)
            .output()
            .unwrap()
    };
    let out = run(&mongo_uri, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "violations are recorded in status, not in the exit code: {stderr}");
    assert!(stderr.contains(&format!("wrote status.chainCheck of {}/main: 2 violations", ns.name)), "{stderr}");

    let read = systems.get("main").await.unwrap();
    let chain = read.status.as_ref().and_then(|s| s.chain_check.clone()).expect("status.chainCheck");
    assert_eq!((chain.users, chain.cycles, chain.orphans), (5, 1, 1));
    assert_eq!(chain.summary.as_deref(), Some("2 violations"));
    assert!(chain.last_run.is_some());
    assert!(chain.failure.is_none());
    let depths: Vec<(u32, u64)> = chain.depths.iter().map(|d| (d.depth, d.users)).collect();
    assert_eq!(depths, vec![(0, 1), (1, 2)]);
    assert_eq!(chain.examples.len(), 2);
    let managers = read.metadata.managed_fields.unwrap_or_default();
    assert!(
        managers.iter().any(|m| m.manager.as_deref() == Some(StatusWriter::ChainCheck.field_manager())
            && m.operation.as_deref() == Some("Apply")
            && m.subresource.as_deref() == Some("status")),
        "status written by another manager: {managers:?}"
    );

    // The Role allows this one system only.
    let out = Command::new(BINARY)
        .args(["check", "chains", "--system", "other", "--write-status"])
        .env("KUBECONFIG", &kubeconfig)
        .env("MONGODB_URI", &mongo_uri)
        .env("POD_NAMESPACE", &ns.name)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{}", String::from_utf8_lossy(&out.stderr));

    // MongoDB unreachable: exit 2, the failure recorded, the last counts kept.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("mongodb://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    let out = run(&closed, &["--timeout", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let chain = systems.get("main").await.unwrap().status.unwrap().chain_check.unwrap();
    let failure = chain.failure.clone().expect("the failure is in status");
    assert_eq!(failure.reason, "MongoUnreachable");
    assert!(failure.message.starts_with("MongoDB is not reachable"), "{}", failure.message);
    assert_eq!((chain.users, chain.cycles), (5, 1), "a failed attempt erased the last counts");

    // The next good run clears the failure.
    users.update_one(doc! {"_id": id(5)}, doc! {"$unset": {"referredBy": ""}}).await.unwrap();
    let out = run(&mongo_uri, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let chain = systems.get("main").await.unwrap().status.unwrap().chain_check.unwrap();
    assert!(chain.failure.is_none());
    assert_eq!((chain.orphans, chain.summary.as_deref()), (0, Some("1 violation")));
    mongo.database(&database).drop().await.unwrap();
}
