//! The backup CronJob's pod and a ReferralRestore's Job pod, as the builders make them,
//! admitted by the test bed's apiserver and then run container by container on this
//! machine against the bed's MongoDB-wire server and Redis.
//!
//! Why run the containers here: the bed has no node (no kubelet, no container
//! runtime) yet, and these tests are about the builders' wiring (which binary, which
//! arguments, which environment, which volume) meeting the real binary and real
//! servers. [`run_pod`] does what a kubelet does with such a pod, minus isolation:
//! init containers in order, then the main container, each with its environment
//! resolved from the Secret and the downward API and nothing else, each volume a
//! directory. Containers of the operator's image run this build's binary; the
//! others run their `sh -c` script with the Debian tools (redis-cli). A pod whose
//! paths or arguments are wrong fails here as it would on a node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Container, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use referral_operator::backup::store;
use referral_operator::crd::ReferralSystem;
use referral_operator::crd::restore::RestoreSource;
use referral_operator::crd::validate::validate;
use referral_operator::reconcilers::restore::{restore_job, restore_job_from};
use referral_operator::reconcilers::{BuildContext, build};
use serde_json::json;

use crate::backup::impersonating;
use crate::harness::{TestNamespace, client, enabled, install_crd, testbed_var};

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_referral-operator");
pub(crate) const OPERATOR_IMAGE: &str = "ghcr.io/referral-dev/referral-operator:e2e";

fn ctx() -> BuildContext {
    BuildContext { operator_image: OPERATOR_IMAGE.into(), secrets_hash: None, operator_pods: None }
}

/// What the kubelet would supply: Secret values, downward-API fields, and a
/// directory per volume; plus the kubeconfig the pod's service account token stands
/// for.
pub(crate) struct Node {
    pub(crate) secrets: BTreeMap<(String, String), String>,
    pub(crate) fields: BTreeMap<String, String>,
    pub(crate) volumes: BTreeMap<String, PathBuf>,
    pub(crate) kubeconfig: PathBuf,
}

impl Node {
    /// `word` with a mount path at its start replaced by the volume's directory.
    fn host_path(&self, container: &Container, word: &str) -> String {
        for mount in container.volume_mounts.iter().flatten() {
            let Some(dir) = self.volumes.get(&mount.name) else { continue };
            let path = mount.mount_path.as_str();
            if word == path {
                return dir.display().to_string();
            }
            if let Some(rest) = word.strip_prefix(path).and_then(|r| r.strip_prefix('/')) {
                return dir.join(rest).display().to_string();
            }
        }
        word.to_string()
    }

    fn run(&self, container: &Container) -> Output {
        let words = |list: &Option<Vec<String>>| -> Vec<String> {
            list.iter().flatten().map(|w| self.host_path(container, w)).collect()
        };
        let image = container.image.as_deref().unwrap_or_default();
        let mut command = if image == OPERATOR_IMAGE {
            assert!(container.command.is_none(), "{}: the operator's image runs its entrypoint", container.name);
            Command::new(BINARY)
        } else {
            let line = words(&container.command);
            assert_eq!(line.first().map(String::as_str), Some("sh"), "{}: a shell script", container.name);
            let mut command = Command::new("sh");
            command.args(&line[1..]);
            command
        };
        command.args(words(&container.args)).env_clear();
        command.env("PATH", std::env::var("PATH").unwrap_or_default());
        command.env("KUBECONFIG", &self.kubeconfig);
        // The scripts' directories, which they default to the mount paths.
        for (var, path) in [("BACKUP_DIR", "/backups"), ("WORK_DIR", "/work"), ("SCRATCH_DIR", "/scratch")] {
            command.env(var, self.host_path(container, path));
        }
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    if let Some(secret) = &from.secret_key_ref {
                        self.secrets
                            .get(&(secret.name.clone(), secret.key.clone()))
                            .unwrap_or_else(|| panic!("{}: no Secret {}/{}", container.name, secret.name, secret.key))
                            .clone()
                    } else if let Some(field) = &from.field_ref {
                        self.fields
                            .get(&field.field_path)
                            .unwrap_or_else(|| panic!("{}: no field {}", container.name, field.field_path))
                            .clone()
                    } else {
                        panic!("{}: env {} from an unknown source", container.name, var.name)
                    }
                }
                (None, None) => String::new(),
            };
            command.env(&var.name, value);
        }
        command.output().unwrap_or_else(|e| panic!("run container {}: {e}", container.name))
    }
}

/// Runs the pod's containers in order; the first failure ends the pod. Returns each
/// container's name and output.
pub(crate) fn run_pod(node: &Node, pod: &PodSpec) -> Result<Vec<(String, String)>, (String, String)> {
    let mut done = Vec::new();
    for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
        let out = node.run(container);
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            return Err((container.name.clone(), printed));
        }
        done.push((container.name.clone(), printed));
    }
    Ok(done)
}

async fn seed(db: &mongodb::Database) -> BTreeMap<String, Vec<Document>> {
    let mut seeded = BTreeMap::new();
    let users: Vec<Document> = (0..500)
        .map(|i| doc! {"_id": i, "referralCode": format!("CODE{i:05}"), "referredBy": if i == 0 { None } else { Some(i / 3) }})
        .collect();
    let referrals: Vec<Document> = (1..500).map(|i| doc! {"_id": i, "referrer": i / 3, "referee": i}).collect();
    let transactions: Vec<Document> = (0..300)
        .map(|i| doc! {"_id": i, "userId": i % 50, "amount": mongodb::bson::Decimal128::from_bytes([i as u8; 16])})
        .collect();
    for (name, docs) in [("users", users), ("referrals", referrals), ("referralTransactions", transactions)] {
        db.collection::<Document>(name).insert_many(&docs).await.unwrap();
        seeded.insert(name.to_string(), docs);
    }
    db.collection::<Document>("users")
        .create_index(
            IndexModel::builder()
                .keys(doc! {"referralCode": 1})
                .options(mongodb::options::IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();
    seeded
}

async fn contents(db: &mongodb::Database, name: &str) -> Vec<Document> {
    let mut cursor = db.collection::<Document>(name).find(doc! {}).sort(doc! {"_id": 1}).await.unwrap();
    let mut docs = Vec::new();
    while cursor.advance().await.unwrap() {
        docs.push(cursor.deserialize_current().unwrap());
    }
    docs
}

async fn apply<K>(client: &Client, ns: &str, object: &K)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(&name, &PatchParams::apply("referral-operator").force(), &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

#[tokio::test]
async fn the_native_backup_cronjob_pod_and_the_restore_job_pod_bring_a_dropped_database_back() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "bkpod").await;
    let uri = testbed_var("REFOP_TEST_MONGODB_URI");
    let redis_url = testbed_var("REFOP_TEST_REDIS_URL");
    let (redis_host, redis_port) =
        redis_url.trim_start_matches("redis://").trim_end_matches('/').rsplit_once(':').expect("redis://HOST:PORT");
    let database = format!("bkpod_{}", std::process::id());
    let mongo = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let db = mongo.database(&database);
    db.drop().await.unwrap();
    let seeded = seed(&db).await;
    let prefix = format!("e2e/bkpod-{}-{}", std::process::id(), mongodb::bson::oid::ObjectId::new().to_hex());
    let s3_key = testbed_var("REFOP_TEST_S3_ACCESS_KEY_ID");
    let s3_secret = testbed_var("REFOP_TEST_S3_SECRET_ACCESS_KEY");
    let bucket_cli = |args: &[&str]| {
        let out = Command::new(BINARY)
            .args(args)
            .args(["--s3-bucket", &testbed_var("REFOP_TEST_S3_BUCKET"), "--s3-endpoint"])
            .arg(testbed_var("REFOP_TEST_S3_ENDPOINT"))
            .args(["--s3-region", &testbed_var("REFOP_TEST_S3_REGION"), "--s3-prefix", &prefix])
            .env("AWS_ACCESS_KEY_ID", &s3_key)
            .env("AWS_SECRET_ACCESS_KEY", &s3_secret)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };

    // The system as a user writes it: no backup section, so the defaults (the native
    // method, users among the collections, a Redis snapshot).
    let system: ReferralSystem = serde_json::from_value(json!({
        "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem",
        "metadata": {"name": "main", "namespace": ns.name},
        "spec": {
            "image": "example/referral-service:1.4.2",
            "workers": [{"name": "reward-processor", "replicas": 1}],
            "mongodb": {"uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": database},
            "redis": {"external": {"host": redis_host, "port": redis_port.parse::<i32>().unwrap()}},
            "backup": {"objectStorage": {
                "endpoint": testbed_var("REFOP_TEST_S3_ENDPOINT"), "bucket": testbed_var("REFOP_TEST_S3_BUCKET"),
                "region": testbed_var("REFOP_TEST_S3_REGION"), "prefix": prefix,
                "accessKeyIdSecretRef": {"name": "backup-s3", "key": "id"},
                "secretAccessKeySecretRef": {"name": "backup-s3", "key": "secret"}
            }}
        }
    }))
    .unwrap();
    let created = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &system)
        .await
        .unwrap();
    let validated = validate(&created, &ns.name).expect("a valid system");
    let children = build(&validated, &ctx());
    for account in &children.service_accounts {
        apply::<ServiceAccount>(&client, &ns.name, account).await;
    }
    for role in &children.roles {
        apply::<Role>(&client, &ns.name, role).await;
    }
    for binding in &children.role_bindings {
        apply::<RoleBinding>(&client, &ns.name, binding).await;
    }
    let cron = children.cron_jobs.iter().find(|c| c.name_any() == "main-backup").expect("the backup CronJob");
    apply::<CronJob>(&client, &ns.name, cron).await;
    let stored = Api::<CronJob>::namespaced(client.clone(), &ns.name).get("main-backup").await.unwrap();
    let pod = stored.spec.unwrap().job_template.spec.unwrap().template.spec.unwrap();
    let images: Vec<&str> =
        pod.init_containers.iter().flatten().chain(&pod.containers).filter_map(|c| c.image.as_deref()).collect();
    assert!(!images.iter().any(|i| i.starts_with("mongo:")), "a tools image in the native pod: {images:?}");

    let dir = tempfile::tempdir().unwrap();
    let volume = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let account = pod.service_account_name.clone().unwrap();
    let node = Node {
        secrets: BTreeMap::from([
            (("referral-mongo".into(), "uri".into()), uri.clone()),
            (("backup-s3".into(), "id".into()), s3_key.clone()),
            (("backup-s3".into(), "secret".into()), s3_secret.clone()),
        ]),
        fields: BTreeMap::from([
            ("metadata.namespace".into(), ns.name.clone()),
            ("status.podIP".into(), "127.0.0.1".into()),
        ]),
        volumes: ["backups", "work", "tmp", "scratch", "api-access"]
            .into_iter()
            .map(|v| (v.to_string(), volume(v)))
            .collect(),
        kubeconfig: impersonating(&format!("system:serviceaccount:{}:{account}", ns.name), dir.path()),
    };
    let ran = run_pod(&node, &pod).unwrap_or_else(|(c, out)| panic!("backup container {c} failed:\n{out}"));
    let names: Vec<&str> = ran.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["dump", "redis-snapshot", "finalize"]);

    // One complete backup: every collection counted in its manifest, Redis in it.
    let backups = &node.volumes["backups"];
    let listing = store::list(backups).unwrap();
    assert_eq!(listing.backups.len(), 1, "{:?}", listing.backups);
    let name = listing.backups[0].dir_name.clone();
    let manifest = store::verify(backups, &name).expect("a complete backup whose files match its manifest");
    assert!(manifest.redis, "the Redis snapshot is part of the backup");
    let summary = manifest.mongodb.clone().expect("a native dump");
    let counts: BTreeMap<&str, u64> = summary.collections.iter().map(|c| (c.name.as_str(), c.documents)).collect();
    assert_eq!(counts, BTreeMap::from([("referralTransactions", 300), ("referrals", 499), ("users", 500)]));
    assert!(backups.join(&name).join(&database).join("users.bson.gz").is_file());
    let status = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name).get("main").await.unwrap().status;
    assert_eq!(status.and_then(|s| s.backup).and_then(|b| b.latest), Some(name.clone()));
    // The same backup in the bucket, off the cluster: complete (manifest written
    // last by finalize, after the snapshot's upload) and sound, document by document.
    let (ok, printed) = bucket_cli(&["backup", "verify", "--name", &name]);
    assert!(ok, "{printed}");
    assert!(printed.contains("a Redis snapshot") && printed.contains("1299 documents"), "{printed}");

    // A run that fails (Redis unreachable, after the dump) never reaches finalize:
    // the earlier backup stays complete and sound, nothing is pruned, status keeps
    // naming it, and the failed run is left as an incomplete folder.
    let mut failing = pod.clone();
    for container in failing.init_containers.iter_mut().flatten().filter(|c| c.name == "redis-snapshot") {
        for var in container.env.iter_mut().flatten().filter(|v| v.name == "REDIS_PORT") {
            var.value = Some("1".into());
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a backup name is to the second
    let (container, _) = run_pod(&node, &failing).expect_err("the run with Redis unreachable fails");
    assert_eq!(container, "redis-snapshot");
    let listing = store::list(backups).unwrap();
    assert_eq!(listing.backups.len(), 2, "{:?}", listing.backups);
    assert!(listing.backups.iter().any(|b| b.dir_name.ends_with(".partial")), "{:?}", listing.backups);
    assert_eq!(store::verify(backups, &name).expect("the earlier backup is untouched").files, manifest.files);
    let status = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name).get("main").await.unwrap().status;
    assert_eq!(status.and_then(|s| s.backup).and_then(|b| b.latest), Some(name.clone()));
    // In the bucket the failed run has no manifest: incomplete, and the first intact.
    let (ok, printed) = bucket_cli(&["backup", "list", "-o", "json"]);
    assert!(ok, "{printed}");
    let listed: serde_json::Value = serde_json::from_str(printed.trim()).unwrap_or_else(|e| panic!("{e}: {printed}"));
    let complete: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "complete")
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(complete, [name.as_str()], "{printed}");
    let (ok, printed) = bucket_cli(&["backup", "verify", "--name", &name]);
    assert!(ok, "{printed}");

    // Lose the data, then restore with the Job a ReferralRestore makes.
    db.drop().await.unwrap();
    db.collection::<Document>("users").insert_one(doc! {"_id": "written after the backup"}).await.unwrap();
    let job = restore_job(&validated, &ctx(), &name, "main-restore-e2e", false);
    apply::<Job>(&client, &ns.name, &job).await;
    let restore_pod = job.spec.unwrap().template.spec.unwrap();
    let ran = run_pod(&node, &restore_pod).unwrap_or_else(|(c, out)| panic!("restore container {c} failed:\n{out}"));
    let (_, printed) = ran.last().unwrap();
    assert!(printed.contains("count checked"), "{printed}");
    for (collection, docs) in &seeded {
        assert_eq!(&contents(&db, collection).await, docs, "{collection} after the restore");
    }
    let mut indexes = db.collection::<Document>("users").list_index_names().await.unwrap();
    indexes.sort();
    assert_eq!(indexes, ["_id_", "referralCode_1"]);

    // The volume is lost: a ReferralRestore with source ObjectStorage brings the
    // data back from the bucket, the Redis snapshot copied for the Redis restore.
    db.drop().await.unwrap();
    db.collection::<Document>("users").insert_one(doc! {"_id": "written after the backup"}).await.unwrap();
    let lost = dir.path().join("backups-lost");
    std::fs::rename(backups, &lost).unwrap();
    std::fs::create_dir_all(backups).unwrap();
    let job = restore_job_from(&validated, &ctx(), &name, "main-restore-bucket", true, RestoreSource::ObjectStorage);
    apply::<Job>(&client, &ns.name, &job).await;
    let bucket_pod = job.spec.unwrap().template.spec.unwrap();
    let restore = bucket_pod.init_containers.iter().flatten().find(|c| c.name == "restore").expect("restore first");
    let out = node.run(restore);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains(&testbed_var("REFOP_TEST_S3_BUCKET")), "read from the bucket: {printed}");
    for (collection, docs) in &seeded {
        assert_eq!(&contents(&db, collection).await, docs, "{collection} after the restore from the bucket");
    }
    let snapshot = node.volumes["scratch"].join(&name).join("redis.rdb");
    assert_eq!(
        std::fs::read(&snapshot).expect("the Redis snapshot handed on"),
        std::fs::read(lost.join(&name).join("redis.rdb")).unwrap(),
        "the snapshot from the bucket is the one the backup took"
    );
    std::fs::remove_dir_all(backups).unwrap();
    std::fs::rename(&lost, backups).unwrap();
    // Without a bucket in the system's spec the same restore refuses, saying so.
    let mut plain = validated.clone();
    plain.spec.backup.object_storage = None;
    let job = restore_job_from(&plain, &ctx(), &name, "main-restore-nobucket", false, RestoreSource::ObjectStorage);
    let (container, printed) =
        run_pod(&node, &job.spec.unwrap().template.spec.unwrap()).expect_err("no bucket to read from");
    assert_eq!(container, "restore");
    assert!(printed.contains("spec.backup.objectStorage"), "{printed}");

    // A backup whose file no longer matches its manifest is refused by the same Job
    // before anything is dropped, and the message names the file.
    db.collection::<Document>("referrals").insert_one(doc! {"_id": "kept"}).await.unwrap();
    let data = backups.join(&name).join(&database).join("referrals.bson.gz");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let (container, printed) = run_pod(&node, &restore_pod).expect_err("a tampered backup is refused");
    assert_eq!(container, "restore");
    assert!(printed.contains("referrals.bson.gz"), "{printed}");
    assert!(
        db.collection::<Document>("referrals").find_one(doc! {"_id": "kept"}).await.unwrap().is_some(),
        "the refused restore touched the database"
    );
    assert!(!printed.contains(&uri), "the connection string reached the output");
    db.drop().await.unwrap();
}

/// Recomputes the size and SHA-256 recorded for `path` in a backup's manifest (and
/// in the dump summary it also lists), as if the backup had been written that way:
/// a backup that is sound by its manifest but does not restore.
fn reseal(folder: &std::path::Path, path: &str) {
    use sha2::Digest;
    fn restamp(value: &mut serde_json::Value, path: &str, size: u64, sha: &str) {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("path").and_then(|p| p.as_str()) == Some(path) {
                    map.insert("sizeBytes".into(), json!(size));
                    map.insert("sha256".into(), json!(sha));
                }
                map.values_mut().for_each(|v| restamp(v, path, size, sha));
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| restamp(v, path, size, sha)),
            _ => {}
        }
    }
    let digest = |file: &str| {
        let bytes = std::fs::read(folder.join(file)).unwrap();
        let sha: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        (bytes.len() as u64, sha)
    };
    let (size, sha) = digest(path);
    let summary_path = folder.join("mongodb-dump.json");
    let mut summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    restamp(&mut summary, path, size, &sha);
    std::fs::write(&summary_path, serde_json::to_vec_pretty(&summary).unwrap()).unwrap();
    let (summary_size, summary_sha) = digest("mongodb-dump.json");
    let manifest_path = folder.join("complete.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    restamp(&mut manifest, path, size, &sha);
    restamp(&mut manifest, "mongodb-dump.json", summary_size, &summary_sha);
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

async fn database_names(mongo: &mongodb::Client) -> Vec<String> {
    mongo.list_database_names().await.unwrap()
}

async fn drill_status(client: &Client, ns: &str) -> serde_json::Value {
    let system = Api::<ReferralSystem>::namespaced(client.clone(), ns).get("main").await.unwrap();
    serde_json::to_value(system.status.and_then(|s| s.backup)).unwrap()
}

/// The restore drill's CronJob pod, run as a node would: the newest backup restored
/// into the scratch database, counted and chain-checked, the scratch database gone
/// afterwards, `status.backup.lastVerifiedRestore` written beside the backup Job's
/// fields; a backup that does not restore fails the drill with a message naming what,
/// the scratch database is dropped all the same, and production is never touched.
#[tokio::test]
async fn the_restore_drill_pod_verifies_the_newest_backup_and_never_touches_production() {
    if !enabled() {
        return;
    }
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "drill").await;
    let uri = testbed_var("REFOP_TEST_MONGODB_URI");
    let database = format!("drill_{}", std::process::id());
    let scratch = format!("{database}_drill");
    let mongo = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let db = mongo.database(&database);
    db.drop().await.unwrap();
    mongo.database(&scratch).drop().await.unwrap();
    let seeded = seed(&db).await;

    let system: ReferralSystem = serde_json::from_value(json!({
        "apiVersion": "referral.dev/v1alpha1", "kind": "ReferralSystem",
        "metadata": {"name": "main", "namespace": ns.name},
        "spec": {
            "image": "example/referral-service:1.4.2",
            "workers": [{"name": "reward-processor", "replicas": 1}],
            "mongodb": {"uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": database},
            "redis": {"managed": {}},
            "backup": {"includeRedis": false, "restoreDrill": {"maxUnverifiedAge": "8d"}}
        }
    }))
    .unwrap();
    let created = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &system)
        .await
        .unwrap();
    let validated = validate(&created, &ns.name).expect("a valid system");
    let children = build(&validated, &ctx());
    for account in &children.service_accounts {
        apply::<ServiceAccount>(&client, &ns.name, account).await;
    }
    for role in &children.roles {
        apply::<Role>(&client, &ns.name, role).await;
    }
    for binding in &children.role_bindings {
        apply::<RoleBinding>(&client, &ns.name, binding).await;
    }
    let cron_pod = |name: &str| {
        let cron = children.cron_jobs.iter().find(|c| c.name_any() == name).unwrap_or_else(|| panic!("{name}"));
        cron.clone()
    };
    let crons = Api::<CronJob>::namespaced(client.clone(), &ns.name);
    let mut pods = BTreeMap::new();
    for name in ["main-backup", "main-restore-drill"] {
        // Admitted by the apiserver under the namespace's restricted Pod Security.
        apply::<CronJob>(&client, &ns.name, &cron_pod(name)).await;
        let stored = crons.get(name).await.unwrap();
        pods.insert(name, stored.spec.unwrap().job_template.spec.unwrap().template.spec.unwrap());
    }

    let dir = tempfile::tempdir().unwrap();
    let volume = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let account = pods["main-restore-drill"].service_account_name.clone().unwrap();
    let node = Node {
        secrets: BTreeMap::from([(("referral-mongo".into(), "uri".into()), uri.clone())]),
        fields: BTreeMap::from([("metadata.namespace".into(), ns.name.clone())]),
        volumes: ["backups", "work", "tmp", "api-access"].into_iter().map(|v| (v.to_string(), volume(v))).collect(),
        kubeconfig: impersonating(&format!("system:serviceaccount:{}:{account}", ns.name), dir.path()),
    };
    run_pod(&node, &pods["main-backup"]).unwrap_or_else(|(c, out)| panic!("backup container {c} failed:\n{out}"));
    let backups = node.volumes["backups"].clone();
    let name = store::list(&backups).unwrap().backups[0].dir_name.clone();

    // A leftover of a drill killed midway: the drill starts from nothing.
    mongo.database(&scratch).collection::<Document>("leftover").insert_one(doc! {"x": 1}).await.unwrap();
    let ran = run_pod(&node, &pods["main-restore-drill"])
        .unwrap_or_else(|(c, out)| panic!("drill container {c} failed:\n{out}"));
    assert!(ran[0].1.contains("restore drill succeeded"), "{}", ran[0].1);
    let status = drill_status(&client, &ns.name).await;
    let drill = &status["lastVerifiedRestore"];
    assert_eq!(drill["result"], "Succeeded", "{status}");
    assert_eq!(drill["backup"], name.as_str());
    assert_eq!(drill["verifiedBackup"], name.as_str());
    assert_eq!(drill["scratchDatabase"], scratch.as_str());
    assert_eq!(drill["documents"], 1299, "users, referrals and transactions counted: {drill}");
    assert!(drill["chains"].is_string(), "the chain check ran on the restored data: {drill}");
    assert_eq!(status["latest"], name.as_str(), "the backup Job's fields are still there: {status}");
    assert!(!database_names(&mongo).await.contains(&scratch), "the scratch database is dropped");
    for (collection, docs) in &seeded {
        assert_eq!(&contents(&db, collection).await, docs, "{collection} of production after the drill");
    }
    // The drill wrote under its own field manager, and only its field.
    let stored = Api::<ReferralSystem>::namespaced(client.clone(), &ns.name).get("main").await.unwrap();
    let drill_fields = stored
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("referral-operator-restore-drill"))
        .and_then(|m| m.fields_v1.as_ref())
        .map(|f| f.0.to_string())
        .expect("the drill's field manager");
    assert!(drill_fields.contains("f:lastVerifiedRestore") && !drill_fields.contains("f:latest"), "{drill_fields}");

    // A newer backup that is sound by its manifest but does not restore: its users
    // carry a duplicate referral code under an index recorded as unique. The
    // documents go into the scratch database before the index fails, so the drop
    // afterwards is what leaves no scratch database behind.
    let broken_source = format!("{database}_src");
    let source = mongo.database(&broken_source);
    source.drop().await.unwrap();
    source
        .collection::<Document>("users")
        .insert_many([doc! {"_id": 1, "referralCode": "SAME"}, doc! {"_id": 2, "referralCode": "SAME"}])
        .await
        .unwrap();
    source
        .collection::<Document>("users")
        .create_index(IndexModel::builder().keys(doc! {"referralCode": 1}).build())
        .await
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a backup name is to the second
    let out = Command::new(BINARY)
        .args(["backup", "dump", "--no-gzip", "--database", &broken_source, "--dir"])
        .arg(&backups)
        .env("MONGODB_URI", &uri)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    source.drop().await.unwrap();
    let listing = store::list(&backups).unwrap();
    let newer = listing.backups.iter().map(|b| b.dir_name.clone()).max().unwrap();
    assert_ne!(newer, name);
    let metadata_path = format!("{broken_source}/users.metadata.json");
    let metadata_file = backups.join(&newer).join(&metadata_path);
    let text = std::fs::read_to_string(&metadata_file).unwrap();
    let mut metadata: serde_json::Value = serde_json::from_str(&text).unwrap();
    for index in metadata["indexes"].as_array_mut().unwrap() {
        if index["name"] == "referralCode_1" {
            index["unique"] = json!(true);
        }
    }
    std::fs::write(&metadata_file, serde_json::to_vec(&metadata).unwrap()).unwrap();
    reseal(&backups.join(&newer), &metadata_path);
    store::verify(&backups, &newer).expect("sound by its manifest");

    let (container, printed) =
        run_pod(&node, &pods["main-restore-drill"]).expect_err("the drill of a backup that does not restore fails");
    assert_eq!(container, "drill");
    assert!(printed.contains("restore drill failed"), "{printed}");
    let status = drill_status(&client, &ns.name).await;
    let drill = &status["lastVerifiedRestore"];
    assert_eq!(drill["result"], "Failed", "{status}");
    assert_eq!(drill["backup"], newer.as_str());
    assert_eq!(drill["verifiedBackup"], name.as_str(), "the last good backup is kept: {drill}");
    assert!(drill["message"].as_str().unwrap().contains("referralCode"), "a message naming what failed: {drill}");
    assert!(!database_names(&mongo).await.contains(&scratch), "dropped although the drill failed");
    assert!(!drill.to_string().contains(&uri), "the connection string reached status");

    // A tampered file: refused before anything is restored, named in the message.
    let data = backups.join(&newer).join(&broken_source).join("users.bson");
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    run_pod(&node, &pods["main-restore-drill"]).expect_err("a tampered backup fails the drill");
    let status = drill_status(&client, &ns.name).await;
    let message = status["lastVerifiedRestore"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("users.bson"), "{message}");
    assert!(!database_names(&mongo).await.contains(&scratch));
    for (collection, docs) in &seeded {
        assert_eq!(&contents(&db, collection).await, docs, "{collection} of production after the failed drills");
    }
    db.drop().await.unwrap();
}
