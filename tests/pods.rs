//! Builder tests of the exact pod objects for production fit: placement and pod
//! metadata on every pod (workers, Redis, CronJobs, one-off Jobs), the default spread
//! of a multi-pod worker, TLS files for MongoDB and Redis in every pod that connects,
//! user containers kept within the restricted standard, probes for workers without a
//! port, and a managed Redis whose password only ever travels as a file.

use referral_operator::crd::ReferralSystem;
use referral_operator::crd::validate::{ValidatedSystem, validate};
use referral_operator::reconcilers::backup::{BackupPurpose, backup_job};
use referral_operator::reconcilers::upgrade::migration_job;
use referral_operator::reconcilers::{BuildContext, build};
use serde_json::{Value, json};

const BASE: &str = r#"
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata: {name: main, namespace: referrals, uid: 6f1c2b9e-0000-4000-8000-000000000001}
spec:
  image: example/referral-service:1.4.2
  workers:
    - {name: api, port: 3000, replicas: 3}
    - {name: reward-processor, replicas: 1}
  mongodb: {uriSecretRef: {name: referral-mongo, key: uri}, database: neurolov}
  redis: {managed: {}}
  maintenance:
    - {name: cleanup, schedule: "0 4 * * 1", args: [npm, run, cleanup]}
  migration: {args: [npm, run, migrate]}
"#;

/// [`BASE`] with `patch` merged into its spec (JSON merge patch semantics for maps).
fn system(patch: Value) -> ValidatedSystem {
    let mut doc: Value = serde_norway::from_str(BASE).unwrap();
    merge(&mut doc["spec"], patch);
    let object: ReferralSystem = serde_json::from_value(doc).unwrap();
    validate(&object, "referrals").unwrap_or_else(|p| panic!("invalid test system: {p:?}"))
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

fn ctx() -> BuildContext {
    BuildContext {
        operator_image: "registry.example/referral-operator:test".into(),
        secrets_hash: Some("h".into()),
        operator_pods: None,
    }
}

/// Every pod template the system's children and its one-off Jobs carry, by
/// `Kind/name`, as JSON: (template metadata, pod spec).
fn pods(system: &ValidatedSystem) -> Vec<(String, Value, Value)> {
    let mut objects = build(system, &ctx()).to_json_objects();
    objects.push(kind("Job", &backup_job(system, &ctx(), "main-backup-now", BackupPurpose::Manual)));
    objects.push(kind("Job", &migration_job(system, &ctx(), "main-migrate-1").unwrap()));
    let mut out = Vec::new();
    for object in objects {
        let name = format!("{}/{}", object["kind"].as_str().unwrap(), object["metadata"]["name"].as_str().unwrap());
        let template = match object["kind"].as_str().unwrap() {
            "Deployment" | "StatefulSet" | "Job" => object["spec"]["template"].clone(),
            "CronJob" => object["spec"]["jobTemplate"]["spec"]["template"].clone(),
            _ => continue,
        };
        out.push((name, template["metadata"].clone(), template["spec"].clone()));
    }
    assert!(out.len() >= 6, "workers, three CronJobs and two Jobs at least: {}", out.len());
    out
}

fn kind<T: serde::Serialize>(kind: &str, object: &T) -> Value {
    let mut value = serde_json::to_value(object).unwrap();
    value["kind"] = json!(kind);
    value
}

fn pod<'a>(pods: &'a [(String, Value, Value)], name: &str) -> (&'a Value, &'a Value) {
    let (_, meta, spec) = pods.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("no pod of {name}"));
    (meta, spec)
}

fn containers(spec: &Value) -> Vec<&Value> {
    spec["containers"].as_array().into_iter().chain(spec["initContainers"].as_array()).flatten().collect()
}

#[test]
fn spec_pods_places_every_pod_and_a_part_overrides_it() {
    let system = system(json!({
        "pods": {
            "nodeSelector": {"pool": "general"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "referral", "effect": "NoSchedule"}],
            "priorityClassName": "referral-normal",
            "labels": {"team": "growth"},
            "annotations": {"sidecar.istio.io/inject": "false"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
            ]}}}
        },
        "workers": [
            {"name": "api", "port": 3000, "replicas": 3,
             "pods": {"nodeSelector": {"pool": "web"}, "priorityClassName": "referral-high",
                      "labels": {"tier": "frontend"}, "annotations": {"vault.hashicorp.com/agent-inject": "true"}}},
            {"name": "reward-processor", "replicas": 1}
        ],
        "redis": {"managed": {"pods": {"nodeSelector": {"disk": "ssd"}, "tolerations": []}}}
    }));
    let pods = pods(&system);
    for (name, meta, spec) in &pods {
        assert_eq!(meta["labels"]["team"], "growth", "{name}");
        assert_eq!(meta["annotations"]["sidecar.istio.io/inject"], "false", "{name}");
        assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "main", "{name}: the operator's labels stay");
        assert!(spec["affinity"]["nodeAffinity"].is_object(), "{name}");
        if name == "StatefulSet/main-redis" {
            assert_eq!(spec["nodeSelector"], json!({"pool": "general", "disk": "ssd"}), "maps merge");
            assert!(spec["tolerations"].is_null(), "an empty list replaces the system's: {name}");
            assert_eq!(spec["priorityClassName"], "referral-normal");
        } else if name == "Deployment/main-api" {
            assert_eq!(spec["nodeSelector"], json!({"pool": "web"}), "the worker's value wins");
            assert_eq!(spec["priorityClassName"], "referral-high");
            assert_eq!(meta["labels"]["tier"], "frontend");
            assert_eq!(meta["annotations"]["vault.hashicorp.com/agent-inject"], "true");
            assert_eq!(meta["annotations"]["referral.dev/secrets-hash"], "h", "ours stay beside theirs");
        } else {
            assert_eq!(spec["nodeSelector"], json!({"pool": "general"}), "{name}");
            assert_eq!(spec["tolerations"][0]["key"], "dedicated", "{name}");
            assert_eq!(spec["priorityClassName"], "referral-normal", "{name}");
            assert!(meta["labels"]["tier"].is_null(), "{name}: a worker's labels stay its own");
        }
    }
}

#[test]
fn a_worker_with_several_pods_is_spread_over_nodes_and_zones_by_default() {
    let pods = pods(&system(json!({})));
    let (_, api) = pod(&pods, "Deployment/main-api");
    let selector = json!({"matchLabels": {
        "app.kubernetes.io/component": "worker", "app.kubernetes.io/instance": "main",
        "app.kubernetes.io/name": "referral-system", "referral.dev/worker": "api"
    }});
    assert_eq!(
        api["topologySpreadConstraints"],
        json!([
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": selector, "matchLabelKeys": ["pod-template-hash"]},
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": selector, "matchLabelKeys": ["pod-template-hash"]}
        ])
    );
    for name in ["Deployment/main-reward-processor", "StatefulSet/main-redis", "CronJob/main-maint-cleanup"] {
        assert!(pod(&pods, name).1["topologySpreadConstraints"].is_null(), "{name}: one pod needs no spread");
    }
    // An empty list turns the default off; the user's own replace it.
    let off = system(json!({"workers": [{"name": "api", "replicas": 3, "pods": {"topologySpreadConstraints": []}}]}));
    assert!(pod(&pods_of(&off), "Deployment/main-api").1["topologySpreadConstraints"].is_null());
    let own =
        json!([{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]);
    let mine = system(json!({"workers": [{"name": "api", "replicas": 3, "pods": {"topologySpreadConstraints": own}}]}));
    assert_eq!(pod(&pods_of(&mine), "Deployment/main-api").1["topologySpreadConstraints"], own);
    // Autoscaled up to several pods counts as several.
    let scaled = system(json!({"workers": [{"name": "api", "autoscaling": {"minReplicas": 1, "maxReplicas": 4}}]}));
    assert_eq!(
        pod(&pods_of(&scaled), "Deployment/main-api").1["topologySpreadConstraints"].as_array().unwrap().len(),
        2
    );
}

fn pods_of(system: &ValidatedSystem) -> Vec<(String, Value, Value)> {
    pods(system)
}

#[test]
fn tls_files_reach_every_pod_that_connects_and_not_redis() {
    let system = system(json!({
        "mongodb": {"tls": {"caSecretRef": {"name": "mongo-ca", "key": "ca.crt"}, "clientCertificateSecretName": "mongo-client"}},
        "redis": {"managed": null, "external": {"host": "redis.example", "port": 6380, "tls": true},
                  "tls": {"caSecretRef": {"name": "redis-ca", "key": "ca.pem"}},
                  "username": "referral", "passwordSecretRef": {"name": "redis-auth", "key": "password"}}
    }));
    let pods = pods(&system);
    let mongo_volume = json!({"name": "mongodb-tls", "projected": {"defaultMode": 0o440, "sources": [
        {"secret": {"name": "mongo-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}], "optional": false}},
        {"secret": {"name": "mongo-client", "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}], "optional": false}}
    ]}});
    let redis_volume = json!({"name": "redis-tls", "projected": {"defaultMode": 0o440, "sources": [
        {"secret": {"name": "redis-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}], "optional": false}}
    ]}});
    for (name, _, spec) in &pods {
        let volumes = spec["volumes"].as_array().unwrap();
        assert!(volumes.contains(&mongo_volume), "{name}: {volumes:#?}");
        assert!(volumes.contains(&redis_volume), "{name}");
        for container in containers(spec) {
            let mounts = container["volumeMounts"].as_array().unwrap();
            assert!(
                mounts.contains(
                    &json!({"name": "mongodb-tls", "mountPath": "/etc/referral/tls/mongodb", "readOnly": true})
                ),
                "{name}"
            );
            assert!(
                mounts
                    .contains(&json!({"name": "redis-tls", "mountPath": "/etc/referral/tls/redis", "readOnly": true})),
                "{name}"
            );
            let env = container["env"].as_array().unwrap();
            for (var, value) in [
                ("MONGODB_TLS_CA_FILE", "/etc/referral/tls/mongodb/ca.crt"),
                ("MONGODB_TLS_CERT_FILE", "/etc/referral/tls/mongodb/tls.crt"),
                ("MONGODB_TLS_KEY_FILE", "/etc/referral/tls/mongodb/tls.key"),
                ("REDIS_TLS_CA_FILE", "/etc/referral/tls/redis/ca.crt"),
            ] {
                assert!(env.contains(&json!({"name": var, "value": value})), "{name}/{}: {var}", container["name"]);
            }
            assert!(!env.iter().any(|v| v["name"] == "REDIS_TLS_CERT_FILE"), "no client certificate for Redis");
        }
    }
    let (_, worker) = pod(&pods, "Deployment/main-api");
    let env = worker["containers"][0]["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "MONGODB_TLS", "value": "true"})));
    assert!(env.contains(&json!({"name": "REDIS_TLS", "value": "true"})));
    assert!(env.contains(&json!({"name": "REDIS_USERNAME", "value": "referral"})));
    // The backup's redis-cli gets every connection flag, the password only by reference.
    let (_, backup) = pod(&pods, "CronJob/main-backup");
    let snapshot = backup["initContainers"].as_array().unwrap().iter().find(|c| c["name"] == "redis-snapshot").unwrap();
    let env = snapshot["env"].as_array().unwrap();
    assert!(env.contains(
        &json!({"name": "REDIS_TLS_FLAG", "value": "--tls --cacert /etc/referral/tls/redis/ca.crt --user referral"})
    ));
    assert!(env.contains(&json!({"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password", "optional": false}}})));
}

#[test]
fn worker_extras_are_kept_within_the_restricted_standard() {
    let system = system(json!({"workers": [{
        "name": "api", "port": 3000,
        "serviceAccountName": "api-identity",
        "volumes": [{"name": "certs", "secret": {"secretName": "api-certs"}}],
        "volumeMounts": [{"name": "certs", "mountPath": "/certs", "readOnly": true}],
        "initContainers": [{"name": "init-cache", "args": ["npm", "run", "init:cache"]}],
        "sidecars": [{"name": "proxy", "image": "envoy:1.30", "securityContext": {"readOnlyRootFilesystem": true}}]
    }]}));
    let pods = pods(&system);
    let (_, spec) = pod(&pods, "Deployment/main-api");
    assert_eq!(spec["serviceAccountName"], "api-identity");
    assert_eq!(spec["automountServiceAccountToken"], false, "workload identity webhooks project their own token");
    assert!(
        spec["volumes"].as_array().unwrap().contains(&json!({"name": "certs", "secret": {"secretName": "api-certs"}}))
    );
    let main = &spec["containers"][0];
    assert_eq!(main["name"], "api");
    assert!(
        main["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "certs", "mountPath": "/certs", "readOnly": true}))
    );
    let init = &spec["initContainers"][0];
    assert_eq!(init["image"], "example/referral-service:1.4.2", "the worker's image by default");
    assert_eq!(init["args"], json!(["npm", "run", "init:cache"]));
    let init_env: Vec<&str> = init["env"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert!(
        init_env.contains(&"MONGODB_URI") && init_env.contains(&"REDIS_HOST"),
        "the worker's environment: {init_env:?}"
    );
    assert_eq!(init["securityContext"], json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}));
    let sidecar = &spec["containers"][1];
    assert_eq!(sidecar["name"], "proxy");
    assert!(sidecar["env"].is_null(), "a sidecar gets none of the service's environment");
    assert_eq!(
        sidecar["securityContext"],
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true})
    );
    // The pod keeps running as non-root with RuntimeDefault seccomp for every container.
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
}

#[test]
fn every_worker_gets_a_liveness_probe_and_custom_probes_replace_the_defaults() {
    let pods = pods(&system(json!({})));
    let (_, processor) = pod(&pods, "Deployment/main-reward-processor");
    assert_eq!(
        processor["containers"][0]["livenessProbe"],
        json!({"httpGet": {"path": "/metrics", "port": "metrics"}, "initialDelaySeconds": 30, "periodSeconds": 20,
               "timeoutSeconds": 5, "failureThreshold": 3}),
        "a worker without a port is restarted when its metrics endpoint stops answering"
    );
    assert!(processor["containers"][0]["readinessProbe"].is_null(), "it serves no traffic");
    let (_, api) = pod(&pods, "Deployment/main-api");
    assert_eq!(api["containers"][0]["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}));
    assert_eq!(api["containers"][0]["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http"}));

    let custom = system(json!({"workers": [
        {"name": "api", "port": 3000, "probes": {"startup": {"tcpSocket": {"port": "http"}, "failureThreshold": 30}}},
        {"name": "reward-processor", "probes": {
            "liveness": {"exec": {"command": ["node", "healthcheck.js"]}, "periodSeconds": 30},
            "readiness": {"tcpSocket": {"port": "metrics"}}}},
        {"name": "queue-cleanup", "probes": {"defaultLiveness": false}}
    ]}));
    let pods = pods_of(&custom);
    let (_, processor) = pod(&pods, "Deployment/main-reward-processor");
    assert_eq!(
        processor["containers"][0]["livenessProbe"],
        json!({"exec": {"command": ["node", "healthcheck.js"]}, "periodSeconds": 30})
    );
    assert_eq!(processor["containers"][0]["readinessProbe"], json!({"tcpSocket": {"port": "metrics"}}));
    let (_, api) = pod(&pods, "Deployment/main-api");
    assert_eq!(api["containers"][0]["startupProbe"], json!({"tcpSocket": {"port": "http"}, "failureThreshold": 30}));
    assert_eq!(api["containers"][0]["livenessProbe"]["httpGet"]["path"], "/healthz", "the defaults stay");
    let (_, cleanup) = pod(&pods, "Deployment/main-queue-cleanup");
    assert!(cleanup["containers"][0]["livenessProbe"].is_null());
}

#[test]
fn managed_redis_reads_its_password_from_a_file_and_one_is_always_there() {
    let pods = pods(&system(json!({})));
    let (_, redis) = pod(&pods, "StatefulSet/main-redis");
    let container = &redis["containers"][0];
    let command = container["command"].as_array().unwrap();
    assert_eq!(command[..2], [json!("sh"), json!("-c")]);
    let script = command[2].as_str().unwrap();
    assert!(script.contains("--aclfile") && !script.contains("requirepass"), "{script}");
    assert!(!container["env"].as_array().unwrap().iter().any(|v| v["name"] == "REDIS_PASSWORD"));
    assert!(
        redis["volumes"].as_array().unwrap().contains(&json!({"name": "password", "secret": {
            "secretName": "main-redis-password", "items": [{"key": "password", "path": "password"}],
            "defaultMode": 0o440, "optional": false
        }})),
        "without passwordSecretRef the generated Secret is used"
    );
    let (_, worker) = pod(&pods, "Deployment/main-api");
    assert!(worker["containers"][0]["env"].as_array().unwrap().contains(&json!({"name": "REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "main-redis-password", "key": "password", "optional": false}}})));
    assert!(redis["volumes"].as_array().unwrap().iter().all(|v| v["name"] != "mongodb-tls"));

    let own = system(
        json!({"redis": {"managed": {}, "passwordSecretRef": {"name": "referral-redis", "key": "pw"}, "username": "referral"}}),
    );
    let pods = pods_of(&own);
    let (_, redis) = pod(&pods, "StatefulSet/main-redis");
    let container = &redis["containers"][0];
    assert!(container["env"].as_array().unwrap().contains(&json!({"name": "REDIS_USERNAME", "value": "referral"})));
    assert_eq!(container["readinessProbe"]["exec"]["command"], json!(["redis-cli", "--user", "referral", "ping"]));
    assert_eq!(redis["volumes"][1]["secret"]["secretName"], "referral-redis");
}
