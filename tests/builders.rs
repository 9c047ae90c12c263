//! What the builders produce for the examples: exact names, labels, owner references,
//! restricted pods, secrets only by reference, and the seed's settings in the env.

use std::collections::BTreeMap;

use referral_operator::crd::ReferralSystem;
use referral_operator::crd::validate::{ValidatedSystem, validate};
use referral_operator::reconcilers::{BuildContext, Children, OperatorPods, build};
use serde_json::Value;

const UID: &str = "6f1c2b9e-0000-4000-8000-000000000001";

fn system(example: &str, uid: Option<&str>) -> ValidatedSystem {
    let text = std::fs::read_to_string(format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut system: ReferralSystem = serde_norway::from_str(&text).unwrap();
    system.metadata.uid = uid.map(str::to_string);
    validate(&system, "referrals").unwrap()
}

fn ctx(hash: Option<&str>) -> BuildContext {
    BuildContext {
        operator_image: "registry.example/referral-operator:test".into(),
        secrets_hash: hash.map(str::to_string),
        operator_pods: None,
    }
}

fn names(objects: &[Value], kind: &str) -> Vec<String> {
    objects.iter().filter(|o| o["kind"] == kind).map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

fn full() -> (ValidatedSystem, Children) {
    let system = system("full.yaml", Some(UID));
    let children = build(&system, &ctx(Some("abc123")));
    (system, children)
}

#[test]
fn full_example_children_have_exact_names() {
    let (_, children) = full();
    let objects = children.to_json_objects();
    assert_eq!(names(&objects, "Deployment"), ["main-api", "main-queue-cleanup", "main-reward-processor"]);
    assert_eq!(names(&objects, "Service"), ["main-api", "main-queue-cleanup", "main-redis", "main-reward-processor"]);
    assert_eq!(names(&objects, "PodDisruptionBudget"), ["main-api", "main-reward-processor"]);
    assert_eq!(names(&objects, "HorizontalPodAutoscaler"), ["main-api"]);
    assert_eq!(names(&objects, "StatefulSet"), ["main-redis"]);
    assert_eq!(names(&objects, "NetworkPolicy"), ["main-redis"]);
    assert_eq!(names(&objects, "PersistentVolumeClaim"), ["main-backups"]);
    assert_eq!(
        names(&objects, "CronJob"),
        [
            "main-backup",
            "main-chain-check",
            "main-maint-cleanup-old-data",
            "main-maint-cleanup-transactions",
            "main-maint-update-statistics"
        ]
    );
    // main-jobs: the one identity of the backup, restore and chain-check pods (each
    // writes its part of the status).
    assert_eq!(names(&objects, "ServiceAccount"), ["main-jobs"]);
    assert_eq!(names(&objects, "Role"), ["main-jobs"]);
    assert_eq!(names(&objects, "RoleBinding"), ["main-jobs"]);
    assert!(names(&objects, "ConfigMap").contains(&"main-redis-config".to_string()));
}

#[test]
fn every_child_is_labelled_namespaced_and_owned_except_kept_data() {
    let (_, children) = full();
    for object in children.to_json_objects() {
        let name = format!("{}/{}", object["kind"], object["metadata"]["name"]);
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "referral-system", "{name}");
        assert_eq!(labels["app.kubernetes.io/instance"], "main", "{name}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "referral-operator", "{name}");
        assert!(labels["app.kubernetes.io/component"].is_string(), "{name}");
        assert_eq!(object["metadata"]["namespace"], "referrals", "{name}");
        let owners = &object["metadata"]["ownerReferences"];
        if object["kind"] == "PersistentVolumeClaim" {
            assert!(owners.is_null(), "{name}: the backup volume must survive the system unless the spec says so");
            continue;
        }
        assert_eq!(owners.as_array().map(Vec::len), Some(1), "{name}");
        assert_eq!(owners[0]["kind"], "ReferralSystem");
        assert_eq!(owners[0]["apiVersion"], "referral.dev/v1alpha1");
        assert_eq!(owners[0]["name"], "main");
        assert_eq!(owners[0]["uid"], UID);
        assert_eq!(owners[0]["controller"], true);
    }
}

#[test]
fn backup_volume_is_owned_only_when_the_spec_says_delete_with_system() {
    let mut system = system("full.yaml", Some(UID));
    system.spec.backup.storage.delete_with_system = true;
    let children = build(&system, &ctx(None));
    assert!(children.persistent_volume_claims[0].metadata.owner_references.is_some());
    let redis = children.stateful_sets[0].spec.as_ref().unwrap();
    assert_eq!(
        redis.persistent_volume_claim_retention_policy.as_ref().unwrap().when_deleted.as_deref(),
        Some("Retain")
    );
}

#[test]
fn rendering_without_a_uid_sets_no_made_up_owner() {
    let system = system("minimal.yaml", None);
    for object in build(&system, &ctx(None)).to_json_objects() {
        assert!(object["metadata"]["ownerReferences"].is_null(), "{}", object["metadata"]["name"]);
    }
}

fn pod_specs(objects: &[Value]) -> Vec<(String, Value)> {
    let mut pods = Vec::new();
    for o in objects {
        let name = format!("{}/{}", o["kind"], o["metadata"]["name"]);
        let pod = match o["kind"].as_str().unwrap() {
            "Deployment" | "StatefulSet" => o["spec"]["template"]["spec"].clone(),
            "CronJob" => o["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone(),
            _ => continue,
        };
        pods.push((name, pod));
    }
    pods
}

#[test]
fn every_pod_meets_the_restricted_pod_security_standard() {
    let (_, children) = full();
    let pods = pod_specs(&children.to_json_objects());
    assert_eq!(pods.len(), 9);
    for (name, pod) in pods {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let containers =
            pod["containers"].as_array().unwrap().iter().chain(pod["initContainers"].as_array().into_iter().flatten());
        for c in containers {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}/{}", c["name"]);
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}/{}", c["name"]);
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}/{}", c["name"]);
        }
    }
}

#[test]
fn credentials_reach_pods_only_through_secret_key_refs() {
    let (_, children) = full();
    let mut secret_refs = 0;
    for (name, pod) in pod_specs(&children.to_json_objects()) {
        let containers =
            pod["containers"].as_array().unwrap().iter().chain(pod["initContainers"].as_array().into_iter().flatten());
        for c in containers {
            for env in c["env"].as_array().into_iter().flatten() {
                let var = env["name"].as_str().unwrap();
                if ["MONGODB_URI", "REDIS_PASSWORD", "REDISCLI_AUTH"].contains(&var) {
                    assert!(env["value"].is_null(), "{name}: {var} must not be a literal");
                    assert!(env["valueFrom"]["secretKeyRef"]["name"].is_string(), "{name}: {var}");
                    secret_refs += 1;
                }
            }
        }
    }
    // 3 workers + 3 maintenance jobs carry URI and password; backup and chain check the URI.
    assert!(secret_refs >= 14, "only {secret_refs} secret references found");
}

fn env_of(deployment: &Value) -> BTreeMap<String, Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
        .collect()
}

#[test]
fn workers_get_the_seed_environment_in_the_units_the_service_expects() {
    let (_, children) = full();
    let objects = children.to_json_objects();
    let deployment =
        objects.iter().find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "main-reward-processor").unwrap();
    let env = env_of(deployment);
    let expect = [
        ("MONGODB_DATABASE", "neurolov"),
        ("MONGODB_POOL_SIZE", "10"),
        ("MONGODB_WTIMEOUT_MS", "2500"),
        ("MONGODB_RETRY_WRITES", "true"),
        ("MONGODB_READ_PREFERENCE", "secondaryPreferred"),
        ("REDIS_HOST", "main-redis"),
        ("REDIS_PORT", "6379"),
        ("REDIS_PREFIX", "ref:"),
        ("REFERRAL_MAX_CHAIN_DEPTH", "3"),
        ("REFERRAL_REWARD_PROCESSING_INTERVAL", "5000"),
        ("REFERRAL_QUEUE_CLEANUP_INTERVAL", "3600000"),
        ("REFERRAL_CACHE_TTL", "300"),
        ("REFERRAL_MAX_RETRIES", "3"),
        ("PROMETHEUS_ENABLED", "true"),
        ("METRICS_PORT", "9090"),
        ("UV_THREADPOOL_SIZE", "8"),
    ];
    for (name, value) in expect {
        assert_eq!(env.get(name), Some(&Value::from(value)), "{name}");
    }
    assert_eq!(deployment["spec"]["replicas"], 2);
    let template = &deployment["spec"]["template"];
    assert_eq!(template["metadata"]["annotations"]["referral.dev/secrets-hash"], "abc123");
}

#[test]
fn only_workers_with_an_http_port_get_a_cluster_ip() {
    let (_, children) = full();
    let names_of = |services: &[k8s_openapi::api::core::v1::Service]| -> Vec<String> {
        services.iter().map(|s| s.metadata.name.clone().unwrap()).collect()
    };
    // main-api serves HTTP: clients need its virtual IP, which the API server allocates.
    assert_eq!(names_of(&children.services), ["main-api", "main-redis"]);
    let api = &children.services[0];
    assert_eq!(api.spec.as_ref().unwrap().cluster_ip, None);
    // Metrics-only workers: the Service exists for the ServiceMonitor alone, which
    // scrapes each pod, so no virtual IP is allocated.
    assert_eq!(names_of(&children.metrics_services), ["main-reward-processor", "main-queue-cleanup"]);
    for service in &children.metrics_services {
        assert_eq!(service.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
        let ports: Vec<_> = service.spec.as_ref().unwrap().ports.iter().flatten().map(|p| p.name.clone()).collect();
        assert_eq!(ports, [Some("metrics".to_string())]);
    }
}

#[test]
fn without_a_service_monitor_metrics_only_workers_get_no_service() {
    let mut system = system("full.yaml", Some(UID));
    system.spec.monitoring.service_monitor = false;
    let children = build(&system, &ctx(None));
    assert!(children.metrics_services.is_empty());
    assert!(children.service_monitors.is_empty());
    let services: Vec<_> = children.services.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
    assert_eq!(services, ["main-api", "main-redis"]);
}

#[test]
fn autoscaled_workers_leave_replicas_to_the_autoscaler() {
    let (_, children) = full();
    let api = children.deployments.iter().find(|d| d.metadata.name.as_deref() == Some("main-api")).unwrap();
    assert_eq!(api.spec.as_ref().unwrap().replicas, None);
    let hpa = &children.horizontal_pod_autoscalers[0];
    assert_eq!(hpa.spec.as_ref().unwrap().scale_target_ref.name, "main-api");
    assert_eq!(hpa.spec.as_ref().unwrap().min_replicas, Some(2));
}

#[test]
fn stopped_scales_every_worker_to_zero_and_keeps_redis_and_jobs() {
    let mut system = system("full.yaml", Some(UID));
    system.spec.stopped = true;
    let children = build(&system, &ctx(None));
    for d in &children.deployments {
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(0), "{:?}", d.metadata.name);
    }
    assert!(children.horizontal_pod_autoscalers.is_empty(), "an HPA would scale a stopped worker back up");
    assert!(children.pod_disruption_budgets.is_empty());
    assert_eq!(children.stateful_sets.len(), 1);
    assert_eq!(children.cron_jobs.len(), 5);
}

#[test]
fn redis_conf_holds_the_seed_settings_and_no_password() {
    let (_, children) = full();
    let conf = children
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("main-redis-config"))
        .and_then(|c| c.data.as_ref())
        .map(|d| d["redis.conf"].clone())
        .unwrap();
    for line in [
        "maxmemory 2gb",
        "maxmemory-policy allkeys-lru",
        "appendonly yes",
        "maxclients 10000",
        "timeout 300",
        "tcp-keepalive 60",
    ] {
        assert!(conf.lines().any(|l| l == line), "missing {line:?} in\n{conf}");
    }
    assert!(!conf.contains("requirepass"), "the password never goes into a ConfigMap");
}

#[test]
fn redis_accepts_only_this_systems_pods() {
    let (_, children) = full();
    let policy = serde_json::to_value(&children.network_policies[0]).unwrap();
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "redis");
    let from = &policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"];
    assert_eq!(from["app.kubernetes.io/instance"], "main");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 6379);
    assert_eq!(policy["spec"]["ingress"][0]["from"].as_array().unwrap().len(), 1, "no operator pods were named");
}

#[test]
fn redis_lets_in_the_operators_own_pods_from_their_namespace() {
    let system = system("full.yaml", Some(UID));
    let operator_labels = std::collections::BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "referral-operator".to_string()),
        ("app.kubernetes.io/instance".to_string(), "ops".to_string()),
    ]);
    let mut context = ctx(None);
    context.operator_pods = Some(OperatorPods { namespace: "referral-system".into(), labels: operator_labels.clone() });
    let children = build(&system, &context);
    let policy = serde_json::to_value(&children.network_policies[0]).unwrap();
    let from = policy["spec"]["ingress"][0]["from"].as_array().unwrap();
    assert_eq!(from.len(), 2, "{from:?}");
    assert_eq!(from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"], "main");
    assert!(from[0].get("namespaceSelector").is_none(), "the system's own pods: this namespace only");
    // Both selectors in one peer: those pods, in that namespace, and nothing else there.
    assert_eq!(
        from[1]["namespaceSelector"]["matchLabels"],
        serde_json::json!({"kubernetes.io/metadata.name": "referral-system"})
    );
    assert_eq!(from[1]["podSelector"]["matchLabels"], serde_json::to_value(&operator_labels).unwrap());
    assert_eq!(policy["spec"]["ingress"].as_array().unwrap().len(), 1, "still the Redis port only");
}

#[test]
fn scheduled_jobs_never_overlap_and_catch_up_after_an_outage() {
    let (_, children) = full();
    for job in &children.cron_jobs {
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"), "{:?}", job.metadata.name);
        assert!(spec.starting_deadline_seconds.is_some());
        assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"));
    }
    let check = children.cron_jobs.iter().find(|j| j.metadata.name.as_deref() == Some("main-chain-check")).unwrap();
    let spec = check.spec.as_ref().unwrap();
    assert_eq!(spec.schedule, "0 3 * * 0");
    let pod = spec.job_template.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("main-jobs"));
    assert_eq!(pod.containers[0].image.as_deref(), Some("registry.example/referral-operator:test"));
    assert_eq!(pod.containers[0].args.as_deref().unwrap()[..2], ["check".to_string(), "chains".to_string()]);
}

#[test]
fn the_job_role_reaches_only_its_own_system() {
    let (_, children) = full();
    assert_eq!(children.roles.len(), 1);
    let rules = children.roles[0].rules.as_ref().unwrap();
    for rule in rules {
        assert_eq!(rule.resource_names.as_deref(), Some(&["main".to_string()][..]));
        assert!(!rule.verbs.iter().any(|v| v == "*" || v == "delete" || v == "list"));
    }
}

#[test]
fn long_names_stay_within_kubernetes_limits() {
    let mut system = system("full.yaml", Some(UID));
    system.name = "a".repeat(45);
    system.spec.workers[0].name = "b".repeat(24);
    system.spec.maintenance[0].name = "c".repeat(24);
    let objects = build(&system, &ctx(None)).to_json_objects();
    for o in objects {
        let name = o["metadata"]["name"].as_str().unwrap();
        let max = match o["kind"].as_str().unwrap() {
            "CronJob" | "StatefulSet" => 52,
            _ => 63,
        };
        assert!(name.len() <= max, "{} {name} is {} long", o["kind"], name.len());
    }
}

/// The production example (MongoDB with a CA and a client certificate) with its
/// backups in a bucket and a restore drill.
fn production_with_drill() -> ValidatedSystem {
    let text = std::fs::read_to_string(format!("{}/examples/production.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut value: Value = serde_norway::from_str(&text).unwrap();
    value["spec"]["backup"] = serde_json::json!({
        "restoreDrill": {},
        "objectStorage": {
            "bucket": "backups",
            "accessKeyIdSecretRef": {"name": "s3", "key": "id"},
            "secretAccessKeySecretRef": {"name": "s3", "key": "secret"},
        },
    });
    let mut system: ReferralSystem = serde_json::from_value(value).unwrap();
    system.metadata.uid = Some(UID.into());
    validate(&system, "referrals").unwrap()
}

/// Asserts that `pod`'s container `name` reaches MongoDB as the workers do: the CA
/// and client certificate mounted read-only from their Secrets, their paths in
/// MONGODB_TLS_*, MONGODB_TLS=true, and no Secret's bytes anywhere in the pod; and,
/// with `reports_failures`, every container's failure reaches the status.
fn assert_mongo_tls(pod: &Value, name: &str, reports_failures: bool) {
    let containers =
        pod["containers"].as_array().unwrap().iter().chain(pod["initContainers"].as_array().into_iter().flatten());
    let container = containers.clone().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no container {name}"));
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "mongodb-tls")
        .unwrap_or_else(|| panic!("{name} does not mount the MongoDB TLS files"));
    assert_eq!(mount["mountPath"], "/etc/referral/tls/mongodb", "{name}");
    assert_eq!(mount["readOnly"], true, "{name}");
    let env: BTreeMap<&str, &Value> =
        container["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
    for (var, value) in [
        ("MONGODB_TLS", "true"),
        ("MONGODB_TLS_CA_FILE", "/etc/referral/tls/mongodb/ca.crt"),
        ("MONGODB_TLS_CERT_FILE", "/etc/referral/tls/mongodb/tls.crt"),
        ("MONGODB_TLS_KEY_FILE", "/etc/referral/tls/mongodb/tls.key"),
    ] {
        assert_eq!(env.get(var).map(|e| &e["value"]), Some(&Value::from(value)), "{name}: {var}");
    }
    assert!(env["MONGODB_URI"]["valueFrom"]["secretKeyRef"].is_object(), "{name}: the URI by reference only");
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "mongodb-tls").unwrap();
    let secrets: Vec<&str> = volume["projected"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["secret"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(secrets, ["referral-db-ca", "referral-mongo-client"], "{name}");
    let text = pod.to_string();
    assert!(!text.contains("BEGIN"), "no PEM bytes in the pod: {text}");
    // Why a container failed reaches the status: its termination message, or its log's end.
    for container in containers.filter(|_| reports_failures) {
        assert_eq!(container["terminationMessagePolicy"], "FallbackToLogsOnError", "{}", container["name"]);
    }
}

#[test]
fn the_native_backup_restore_drill_and_check_pods_reach_mongodb_over_tls_as_the_workers_do() {
    use referral_operator::crd::restore::RestoreSource;
    use referral_operator::reconcilers::restore::restore_job_from;
    let system = production_with_drill();
    let ctx = ctx(None);
    let objects = build(&system, &ctx).to_json_objects();
    let cron_pod = |name: &str| {
        let cron = objects.iter().find(|o| o["kind"] == "CronJob" && o["metadata"]["name"] == name).unwrap();
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone()
    };
    assert_mongo_tls(&cron_pod("prod-backup"), "dump", true);
    assert_mongo_tls(&cron_pod("prod-restore-drill"), "drill", true);
    assert_mongo_tls(&cron_pod("prod-chain-check"), "check-chains", false);
    for source in [RestoreSource::Volume, RestoreSource::ObjectStorage] {
        let job = restore_job_from(&system, &ctx, "20261123T010000Z", "prod-restore-x", true, source);
        let job = serde_json::to_value(job).unwrap();
        assert_mongo_tls(&job["spec"]["template"]["spec"], "restore", true);
    }
}
