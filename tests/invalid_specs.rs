//! Every way a ReferralSystem can be wrong that we know of: the file is refused (by the
//! schema, a CEL rule or the validate step, whichever the apiserver or the operator
//! would use), and the message names the field and what to do. The corpus of
//! `tests/corpus` runs here through `render` and in `tests/e2e/differential.rs`
//! through a real API server and the operator, which must agree.

mod support;

use referral_operator::cli::DEFAULT_OPERATOR_IMAGE;
use referral_operator::reconcilers::BuildContext;
use referral_operator::render::{RenderError, RenderOptions, render};
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "apiVersion": "referral.dev/v1alpha1",
        "kind": "ReferralSystem",
        "metadata": {"name": "main", "namespace": "referrals"},
        "spec": {
            "image": "example/referral-service:1.4.2",
            "workers": [{"name": "reward-processor", "replicas": 2}],
            "mongodb": {"uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": "neurolov"},
            "redis": {"managed": {}}
        }
    })
}

fn options() -> RenderOptions {
    RenderOptions {
        default_namespace: "default".into(),
        context: BuildContext {
            operator_image: DEFAULT_OPERATOR_IMAGE.into(),
            secrets_hash: None,
            operator_pods: None,
        },
    }
}

/// Renders `doc` and returns the problems it was refused with; fails if it was accepted.
fn refused(doc: &Value) -> Vec<(String, String)> {
    let yaml = serde_norway::to_string(doc).unwrap();
    match render(&yaml, &options()) {
        Ok(_) => panic!("accepted an invalid spec:\n{yaml}"),
        Err(RenderError::Invalid { problems, .. }) => problems.into_iter().map(|p| (p.field_path, p.message)).collect(),
        Err(other) => vec![(String::new(), other.to_string())],
    }
}

fn assert_refused(mutate: impl FnOnce(&mut Value), path: &str, message: &str) {
    let mut doc = base();
    mutate(&mut doc);
    let problems = refused(&doc);
    assert!(
        problems.iter().any(|(p, m)| p == path && m.contains(message)),
        "expected a problem at {path:?} containing {message:?}, got {problems:#?}"
    );
}

#[test]
fn the_base_document_is_valid() {
    let yaml = serde_norway::to_string(&base()).unwrap();
    render(&yaml, &options()).expect("the base of every invalid case must itself be valid");
}

macro_rules! invalid {
    ($name:ident, |$doc:ident| $mutate:block, $path:expr, $message:expr) => {
        #[test]
        fn $name() {
            assert_refused(|$doc: &mut Value| $mutate, $path, $message);
        }
    };
}

// --- schema (OpenAPI) ---
invalid!(
    missing_image,
    |d| {
        d["spec"].as_object_mut().unwrap().remove("image");
    },
    "spec",
    "\"image\" is a required property"
);
invalid!(
    no_workers,
    |d| {
        d["spec"]["workers"] = json!([]);
    },
    "spec.workers",
    "[] has less than 1 item"
);
invalid!(
    chain_depth_too_high,
    |d| {
        d["spec"]["referral"] = json!({"maxChainDepth": 11});
    },
    "spec.referral.maxChainDepth",
    "greater than the maximum of 10"
);
invalid!(
    chain_depth_zero,
    |d| {
        d["spec"]["referral"] = json!({"maxChainDepth": 0});
    },
    "spec.referral.maxChainDepth",
    "less than the minimum of 1"
);
invalid!(
    interval_not_a_duration,
    |d| {
        d["spec"]["referral"] = json!({"rewardProcessingInterval": "5000"});
    },
    "spec.referral.rewardProcessingInterval",
    "does not match"
);
invalid!(
    worker_name_with_capitals,
    |d| {
        d["spec"]["workers"][0]["name"] = json!("Reward");
    },
    "spec.workers[0].name",
    "does not match"
);
invalid!(
    negative_replicas,
    |d| {
        d["spec"]["workers"][0]["replicas"] = json!(-1);
    },
    "spec.workers[0].replicas",
    "less than the minimum of 0"
);
invalid!(
    port_out_of_range,
    |d| {
        d["spec"]["workers"][0]["port"] = json!(70000);
    },
    "spec.workers[0].port",
    "greater than the maximum of 65535"
);
invalid!(
    unknown_index_policy,
    |d| {
        d["spec"]["mongodb"]["indexPolicy"] = json!("Drop");
    },
    "spec.mongodb.indexPolicy",
    "is not one of"
);
invalid!(
    unknown_eviction_policy,
    |d| {
        d["spec"]["redis"]["managed"]["maxMemoryPolicy"] = json!("lru");
    },
    "spec.redis.managed.maxMemoryPolicy",
    "is not one of"
);
invalid!(
    replicas_as_string,
    |d| {
        d["spec"]["workers"][0]["replicas"] = json!("two");
    },
    "spec.workers[0].replicas",
    "is not of type"
);
invalid!(
    schedule_with_four_fields_shape,
    |d| {
        d["spec"]["backup"] = json!({"schedule": "0 1 * *"});
    },
    "spec.backup.schedule",
    "does not match"
);

// --- CEL rules ---
invalid!(
    both_redis_kinds,
    |d| {
        d["spec"]["redis"]["external"] = json!({"host": "redis.example"});
    },
    "spec.redis",
    "set exactly one of redis.managed"
);
invalid!(
    no_redis_kind,
    |d| {
        d["spec"]["redis"] = json!({});
    },
    "spec.redis",
    "set exactly one of redis.managed"
);
invalid!(
    duplicate_worker_names,
    |d| {
        d["spec"]["workers"] = json!([{"name": "a"}, {"name": "a"}]);
    },
    "spec.workers[1]",
    "Duplicate value: name \"a\""
);
invalid!(
    replicas_and_autoscaling,
    |d| {
        d["spec"]["workers"][0]["autoscaling"] = json!({"maxReplicas": 4});
    },
    "spec.workers[0]",
    "set either replicas or autoscaling"
);
invalid!(
    autoscaling_min_above_max,
    |d| {
        d["spec"]["workers"][0] = json!({"name": "api", "autoscaling": {"minReplicas": 5, "maxReplicas": 2}});
    },
    "spec.workers[0].autoscaling",
    "minReplicas must not be greater"
);
invalid!(
    object_storage_with_mongodump,
    |d| {
        d["spec"]["backup"] = json!({"method": "Mongodump", "objectStorage": {"bucket": "backups",
            "accessKeyIdSecretRef": {"name": "s3", "key": "id"}, "secretAccessKeySecretRef": {"name": "s3", "key": "secret"}}});
    },
    "spec.backup",
    "objectStorage needs method Native"
);

invalid!(
    restore_drill_into_the_production_database,
    |d| {
        d["spec"]["backup"] = json!({"restoreDrill": {"scratchDatabase": "Neurolov"}});
    },
    "spec",
    "scratchDatabase must differ from mongodb.database"
);
invalid!(
    restore_drill_max_age_zero,
    |d| {
        d["spec"]["backup"] = json!({"restoreDrill": {"maxUnverifiedAge": "0"}});
    },
    "spec.backup.restoreDrill",
    "maxUnverifiedAge 0 would alert at once"
);
invalid!(
    restore_drill_max_age_not_a_duration,
    |d| {
        d["spec"]["backup"] = json!({"restoreDrill": {"maxUnverifiedAge": "1d2w"}});
    },
    "spec.backup.restoreDrill.maxUnverifiedAge",
    "does not match"
);

invalid!(
    kms_key_without_kms_encryption,
    |d| {
        d["spec"]["backup"] = json!({"objectStorage": {"bucket": "backups", "kmsKeyId": "k1",
            "accessKeyIdSecretRef": {"name": "s3", "key": "id"}, "secretAccessKeySecretRef": {"name": "s3", "key": "secret"}}});
    },
    "spec.backup.objectStorage",
    "kmsKeyId goes with serverSideEncryption: aws:kms"
);

invalid!(
    retention_keeps_nothing,
    |d| {
        d["spec"]["backup"] = json!({"retention": {"daily": 0, "weekly": 0, "monthly": 0}});
    },
    "spec.backup.retention",
    "must keep at least one backup"
);
invalid!(
    external_host_and_cluster,
    |d| {
        d["spec"]["redis"] = json!({"external": {"host": "r", "clusterNodes": ["a:6379"]}});
        d["spec"]["backup"] = json!({"includeRedis": false});
    },
    "spec.redis.external",
    "not both and not neither"
);
invalid!(
    index_key_with_two_fields,
    |d| {
        d["spec"]["mongodb"]["indexes"] = json!([{"collection": "users", "keys": [{"a": 1, "b": 1}]}]);
    },
    "spec.mongodb.indexes[0].keys",
    "exactly one field"
);
invalid!(
    index_direction_two,
    |d| {
        d["spec"]["mongodb"]["indexes"] = json!([{"collection": "users", "keys": [{"a": 2}]}]);
    },
    "spec.mongodb.indexes[0].keys",
    "must be 1 (ascending) or -1"
);
invalid!(
    rebuild_without_name,
    |d| {
        d["spec"]["mongodb"]["indexes"] = json!([{"collection": "users", "keys": [{"a": 1}], "allowRebuild": true}]);
    },
    "spec.mongodb.indexes[0]",
    "allowRebuild needs an explicit index name"
);
invalid!(
    system_name_starts_with_digit,
    |d| {
        d["metadata"]["name"] = json!("1main");
    },
    "",
    "must start with a letter"
);
invalid!(
    maintenance_without_command,
    |d| {
        d["spec"]["maintenance"] = json!([{"name": "cleanup", "schedule": "0 4 * * 1"}]);
    },
    "spec.maintenance[0]",
    "needs command or args"
);

// --- validate step (what CEL cannot express) ---
invalid!(
    cron_minute_out_of_range,
    |d| {
        d["spec"]["backup"] = json!({"schedule": "61 1 * * *"});
    },
    "spec.backup.schedule",
    "minute field"
);
invalid!(
    cron_month_out_of_range,
    |d| {
        d["spec"]["chainCheck"] = json!({"schedule": "0 3 * 13 *"});
    },
    "spec.chainCheck.schedule",
    "month field"
);
invalid!(
    env_overrides_operator_setting,
    |d| {
        d["spec"]["workers"][0]["env"] = json!([{"name": "MONGODB_URI", "value": "mongodb://oops"}]);
    },
    "spec.workers[0].env[0].name",
    "set by the operator"
);
invalid!(
    env_set_twice,
    |d| {
        d["spec"]["workers"][0]["env"] = json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]);
    },
    "spec.workers[0].env[1].name",
    "set twice"
);
invalid!(
    worker_port_is_metrics_port,
    |d| {
        d["spec"]["workers"][0]["port"] = json!(9090);
    },
    "spec.workers[0].port",
    "monitoring.metricsPort"
);
invalid!(
    request_above_limit,
    |d| {
        d["spec"]["workers"][0]["resources"] = json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}});
    },
    "spec.workers[0].resources.requests.memory",
    "above the limit"
);
invalid!(
    redis_maxmemory_above_pod_limit,
    |d| {
        d["spec"]["redis"]["managed"] = json!({"maxMemory": "2gb", "resources": {"limits": {"memory": "1Gi"}}});
    },
    "spec.redis.managed.maxMemory",
    "OOM-killed"
);
invalid!(
    duplicate_index,
    |d| {
        d["spec"]["mongodb"]["indexes"] = json!([
            {"collection": "users", "keys": [{"a": 1}]},
            {"collection": "users", "keys": [{"a": 1}], "unique": true}
        ]);
    },
    "spec.mongodb.indexes[1]",
    "also declared"
);
invalid!(
    interval_too_short,
    |d| {
        d["spec"]["referral"] = json!({"rewardProcessingInterval": "1ms"});
    },
    "spec.referral.rewardProcessingInterval",
    "shorter than"
);
invalid!(
    redis_cluster_snapshot,
    |d| {
        d["spec"]["redis"] = json!({"external": {"clusterNodes": ["a:6379", "b:6379"]}});
    },
    "spec.backup.includeRedis",
    "Redis Cluster"
);
invalid!(
    autoscaling_without_cpu_request,
    |d| {
        d["spec"]["workers"][0] =
            json!({"name": "api", "autoscaling": {"maxReplicas": 4}, "resources": {"requests": {"memory": "1Gi"}}});
    },
    "spec.workers[0].resources.requests.cpu",
    "needs a CPU request"
);
invalid!(
    additional_rule_shadows_builtin,
    |d| {
        d["spec"]["monitoring"] = json!({"additionalRules": [{"alert": "ReferralQueueBacklog", "expr": "vector(1)"}]});
    },
    "spec.monitoring.additionalRules[0].alert",
    "built-in alert"
);
invalid!(
    bad_label_key,
    |d| {
        d["spec"]["monitoring"] = json!({"labels": {"bad key": "x"}});
    },
    "spec.monitoring.labels",
    "not a valid label key"
);

// --- pods: the restricted Pod Security Standard, kept by CEL and the validate step ---
fn sidecar(container: Value) -> impl FnOnce(&mut Value) {
    move |d: &mut Value| {
        d["spec"]["workers"][0]["sidecars"] = json!([container]);
    }
}

#[test]
fn sidecars_that_break_the_restricted_standard_are_refused_by_cel() {
    let cases = [
        (json!({"name": "proxy", "image": "p:1", "securityContext": {"privileged": true}}), "may not be privileged"),
        (
            json!({"name": "proxy", "image": "p:1", "securityContext": {"allowPrivilegeEscalation": true}}),
            "allowPrivilegeEscalation must be false",
        ),
        (json!({"name": "proxy", "image": "p:1", "securityContext": {"runAsUser": 0}}), "must not run as root"),
        (json!({"name": "proxy", "image": "p:1", "securityContext": {"runAsNonRoot": false}}), "must not run as root"),
        (
            json!({"name": "proxy", "image": "p:1", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
            "NET_BIND_SERVICE",
        ),
        (
            json!({"name": "proxy", "image": "p:1", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            "Unconfined",
        ),
        (json!({"name": "proxy"}), "every sidecar needs an image"),
    ];
    for (container, message) in cases {
        assert_refused(sidecar(container), "spec.workers[0].sidecars", message);
    }
    let named_like_the_worker = json!({"name": "reward-processor", "image": "p:1"});
    assert_refused(sidecar(named_like_the_worker), "spec.workers[0]", "may not be named like the worker");
}

#[test]
fn a_sidecar_may_bind_low_ports_and_is_otherwise_free() {
    let mut doc = base();
    sidecar(
        json!({"name": "proxy", "image": "envoy:1", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}),
    )(&mut doc);
    let yaml = serde_norway::to_string(&doc).unwrap();
    render(&yaml, &options()).expect("NET_BIND_SERVICE is what the restricted standard allows");
}

invalid!(
    host_path_volume,
    |d| {
        d["spec"]["workers"][0]["volumes"] = json!([{"name": "host", "hostPath": {"path": "/var/run"}}]);
    },
    "spec.workers[0].volumes",
    "restricted Pod Security Standard refuses the others"
);
invalid!(
    reserved_volume_name,
    |d| {
        d["spec"]["workers"][0]["volumes"] = json!([{"name": "tmp", "emptyDir": {}}]);
    },
    "spec.workers[0].volumes",
    "operator's own"
);
invalid!(
    mount_of_an_unknown_volume,
    |d| {
        d["spec"]["workers"][0]["volumeMounts"] = json!([{"name": "nope", "mountPath": "/data"}]);
    },
    "spec.workers[0].volumeMounts[0].name",
    "must name one of the worker's volumes"
);
invalid!(
    volume_named_twice,
    |d| {
        d["spec"]["workers"][0]["volumes"] = json!([{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]);
    },
    "spec.workers[0].volumes[1].name",
    "used twice"
);
invalid!(
    init_container_named_like_a_sidecar,
    |d| {
        d["spec"]["workers"][0]["initContainers"] = json!([{"name": "proxy"}]);
        d["spec"]["workers"][0]["sidecars"] = json!([{"name": "proxy", "image": "p:1"}]);
    },
    "spec.workers[0].sidecars[0].name",
    "used twice"
);
invalid!(
    host_port_on_a_sidecar,
    |d| {
        d["spec"]["workers"][0]["sidecars"] =
            json!([{"name": "proxy", "image": "p:1", "ports": [{"containerPort": 80, "hostPort": 80}]}]);
    },
    "spec.workers[0].sidecars[0].ports[0].hostPort",
    "host ports are refused"
);
invalid!(
    sidecar_mounts_what_the_worker_lacks,
    |d| {
        d["spec"]["workers"][0]["sidecars"] =
            json!([{"name": "proxy", "image": "p:1", "volumeMounts": [{"name": "certs", "mountPath": "/c"}]}]);
    },
    "spec.workers[0].sidecars[0].volumeMounts[0].name",
    "none of the worker's volumes"
);
invalid!(
    init_container_sets_an_operator_variable,
    |d| {
        d["spec"]["workers"][0]["initContainers"] =
            json!([{"name": "init-cache", "env": [{"name": "REDIS_HOST", "value": "x"}]}]);
    },
    "spec.workers[0].initContainers[0].env[0].name",
    "set by the operator"
);
invalid!(
    pod_label_the_operator_selects_by,
    |d| {
        d["spec"]["pods"] = json!({"labels": {"app.kubernetes.io/instance": "other"}});
    },
    "spec.pods.labels",
    "may not set the operator's own labels"
);
invalid!(
    pod_annotation_the_operator_owns,
    |d| {
        d["spec"]["workers"][0]["pods"] = json!({"annotations": {"referral.dev/secrets-hash": "x"}});
    },
    "spec.workers[0].pods.annotations",
    "referral.dev/*"
);
invalid!(
    pod_label_value_too_long,
    |d| {
        d["spec"]["pods"] = json!({"labels": {"team": "x".repeat(64)}});
    },
    "spec.pods.labels",
    "not a valid label value"
);
invalid!(
    probe_with_two_handlers,
    |d| {
        d["spec"]["workers"][0]["probes"] =
            json!({"liveness": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 9090}}});
    },
    "spec.workers[0].probes.liveness",
    "exactly one of exec, httpGet, tcpSocket or grpc"
);
invalid!(
    probe_on_a_port_the_worker_lacks,
    |d| {
        d["spec"]["workers"][0]["probes"] = json!({"liveness": {"httpGet": {"path": "/healthz", "port": "http"}}});
    },
    "spec.workers[0].probes.liveness",
    "is not a port of the worker's container"
);

// --- TLS and credentials ---
invalid!(
    redis_tls_without_external_tls,
    |d| {
        d["spec"]["redis"]["tls"] = json!({"caSecretRef": {"name": "redis-ca", "key": "ca.crt"}});
    },
    "spec.redis",
    "needs redis.external.tls: true"
);
invalid!(
    redis_username_with_a_space,
    |d| {
        d["spec"]["redis"]["username"] = json!("two words");
    },
    "spec.redis.username",
    "does not match"
);
invalid!(
    verify_without_a_command,
    |d| {
        d["spec"]["verify"] = json!({"activeDeadlineSeconds": 60});
    },
    "spec.verify",
    "a verification needs command or args"
);

#[test]
fn a_file_that_is_not_a_referral_system_is_named_as_such() {
    let err = render("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", &options()).unwrap_err();
    assert!(matches!(err, RenderError::NotAReferralSystem { .. }), "{err}");
    assert!(err.to_string().contains("kind \"ConfigMap\""), "{err}");
}

#[test]
fn broken_yaml_is_an_error_not_a_panic() {
    let err = render("spec: [unclosed\n", &options()).unwrap_err();
    assert!(matches!(err, RenderError::Yaml { document: 1, .. }), "{err}");
}

#[test]
fn an_empty_file_says_so() {
    assert!(matches!(render("", &options()), Err(RenderError::Empty)));
}

#[test]
fn the_command_exits_non_zero_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let mut doc = base();
    doc["spec"]["redis"]["external"] = json!({"host": "redis.example"});
    std::fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_referral-operator"))
        .args(["render", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing is rendered for an invalid file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.redis: set exactly one of redis.managed"), "{stderr}");
}

#[test]
fn every_case_of_the_invalid_corpus_is_refused_naming_its_field() {
    let cases = support::corpus::invalid_cases();
    assert!(cases.len() >= 100, "the corpus holds {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            ["apiserver", "child", "operator"].contains(&case.refused_by.as_str()) && !case.field.is_empty(),
            "{}: needs a refused-by and a field header",
            case.file.display()
        );
        let refusal = match render(&case.text, &options()) {
            Ok(_) => {
                failures.push(format!("{}: accepted", case.slug));
                continue;
            }
            Err(RenderError::Invalid { problems, .. }) => {
                if problems.iter().any(|p| p.field_path == case.field) {
                    continue;
                }
                problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")
            }
            Err(other) => other.to_string(),
        };
        if !support::corpus::names_field(&refusal, &case.field) {
            failures.push(format!("{}: refused without naming {}:\n{refusal}", case.slug, case.field));
        }
        if refusal.len() > 2000 {
            failures.push(format!("{}: a refusal of {} bytes", case.slug, refusal.len()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_case_of_the_valid_corpus_is_accepted() {
    let cases = support::corpus::valid_cases();
    assert!(cases.len() >= 10);
    for case in cases {
        if let Err(e) = render(&case.text, &options()) {
            panic!("{} ({}) was refused: {e}", case.slug, case.why);
        }
    }
}

#[test]
fn the_file_size_is_checked_before_the_file_is_read_whole() {
    let endless = std::io::repeat(b'a');
    let error = referral_operator::render::read_input(endless).unwrap_err();
    assert!(error.to_string().contains("at most"), "{error}");
}
