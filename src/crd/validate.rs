//! The validate step: a parsed ReferralSystem in, a [`ValidatedSystem`] out, or every
//! problem found, each naming the field and saying what to do. It covers what the CRD
//! schema and CEL rules cannot express (cron ranges, quantities, env names the
//! operator owns, index names as MongoDB computes them). Pure: no cluster, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::api_rules::{self, LABEL_VALUE_RULE, QUALIFIED_NAME_RULE};
use super::common::quoted;
use super::cron::check_schedule;
use super::duration::{parse_duration, parse_prometheus_duration};
use super::quantity::{parse_quantity, parse_quantity_json, parse_redis_memory};
use super::{JobTemplate, PodOptions, ReferralSystem, ReferralSystemSpec, WorkerSpec};

/// One reason a ReferralSystem cannot be built as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Dotted path of the offending field, e.g. `spec.workers[1].env[0].name`.
    pub field_path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl SpecProblem {
    pub(crate) fn new(field_path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field_path: field_path.into(), message: message.into() }
    }
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field_path, self.message)
    }
}

/// Environment variable names the operator sets from the typed spec. A worker's `env`
/// may not set them: two sources of truth for one setting is how outages start.
pub const OPERATOR_ENV_PREFIXES: [&str; 3] = ["MONGODB_", "REDIS_", "REFERRAL_"];
/// Exact names the operator sets besides the prefixed ones.
pub const OPERATOR_ENV_NAMES: [&str; 2] = ["METRICS_PORT", "PROMETHEUS_ENABLED"];

/// Worker names whose objects would take the name of another child of the same
/// kind: a worker's Deployment, Service, PodDisruptionBudget and autoscaler are
/// `<system>-<worker>`, and the managed Redis Service is `<system>-redis`.
/// `tests/builders.rs` builds every child and fails when this list misses one.
pub const RESERVED_WORKER_NAMES: [&str; 1] = ["redis"];

/// The largest spec the operator takes, as JSON. etcd refuses an object over
/// 1.5 MiB, and the stored object also carries its status and managed fields.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// The largest `redis.managed.maxMemory`: the default pod limit is half as large
/// again, and it must stay within the 2^63-1 bytes a quantity can hold.
pub const MAX_REDIS_MEMORY: u64 = 1 << 60;

/// The intervals of the spec, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intervals {
    pub reward_processing: Duration,
    pub queue_cleanup: Duration,
    pub cache_ttl: Duration,
    pub index_check: Duration,
}

/// A ReferralSystem that passed every check: the only input builders take.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedSystem {
    pub name: String,
    pub namespace: String,
    /// Set when the object came from a cluster; owner references need it.
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub spec: ReferralSystemSpec,
    pub intervals: Intervals,
}

/// Checks a ReferralSystem whose namespace is already known.
pub fn validate(system: &ReferralSystem, namespace: &str) -> Result<ValidatedSystem, Vec<SpecProblem>> {
    let mut problems = Vec::new();
    let name = system.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        problems.push(SpecProblem::new("metadata.name", "a ReferralSystem needs a name"));
    }
    let spec = &system.spec;
    check_text(spec, &mut problems);
    let intervals = check_intervals(spec, &mut problems);
    check_image(&spec.image, "spec.image", &mut problems);
    check_workers(spec, &mut problems);
    check_indexes(spec, &mut problems);
    check_redis(spec, &mut problems);
    check_jobs(spec, &mut problems);
    check_monitoring(spec, &mut problems);
    if let Some(pods) = &spec.pods {
        check_pod_options(pods, "spec.pods", &mut problems);
    }
    if let Some(pods) = spec.redis.managed.as_ref().and_then(|m| m.pods.as_ref()) {
        check_pod_options(pods, "spec.redis.managed.pods", &mut problems);
    }
    if let Some(verify) = &spec.verify {
        check_job_template(&verify.template, "spec.verify", &mut problems);
    }
    match (problems.is_empty(), intervals) {
        (true, Some(intervals)) => Ok(ValidatedSystem {
            name,
            namespace: namespace.to_string(),
            uid: system.metadata.uid.clone(),
            generation: system.metadata.generation,
            spec: spec.clone(),
            intervals,
        }),
        _ => Err(problems),
    }
}

fn check_intervals(spec: &ReferralSystemSpec, problems: &mut Vec<SpecProblem>) -> Option<Intervals> {
    let mut parse = |path: &str, value: &str, min: Duration| match parse_duration(value) {
        Ok(d) if d < min => {
            problems.push(SpecProblem::new(path, format!("{value:?} is shorter than the smallest allowed {min:?}")));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(SpecProblem::new(path, e.to_string()));
            None
        }
    };
    let r = &spec.referral;
    let reward =
        parse("spec.referral.rewardProcessingInterval", &r.reward_processing_interval, Duration::from_millis(100));
    let cleanup = parse("spec.referral.queueCleanupInterval", &r.queue_cleanup_interval, Duration::from_secs(1));
    let ttl = parse("spec.referral.cacheTTL", &r.cache_ttl, Duration::from_secs(1));
    let index = parse("spec.mongodb.indexCheckInterval", &spec.mongodb.index_check_interval, Duration::from_secs(10));
    Some(Intervals { reward_processing: reward?, queue_cleanup: cleanup?, cache_ttl: ttl?, index_check: index? })
}

fn check_image(image: &str, path: &str, problems: &mut Vec<SpecProblem>) {
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        problems.push(SpecProblem::new(
            path,
            format!("{image:?} is not an image reference: no spaces, e.g. example/referral-service:1.4.2"),
        ));
    }
}

fn check_env(env: &[EnvVar], path: &str, problems: &mut Vec<SpecProblem>) {
    api_rules::check_env(env, path, problems);
    let mut seen = BTreeSet::new();
    for (i, var) in env.iter().enumerate() {
        let owned = OPERATOR_ENV_NAMES.contains(&var.name.as_str())
            || OPERATOR_ENV_PREFIXES.iter().any(|p| var.name.starts_with(p));
        if owned {
            problems.push(SpecProblem::new(
                format!("{path}[{i}].name"),
                format!("{} is set by the operator from the typed spec (mongodb, redis, referral, monitoring); change that setting instead", var.name),
            ));
        }
        if !var.name.is_empty() && !seen.insert(var.name.as_str()) {
            problems.push(SpecProblem::new(format!("{path}[{i}].name"), format!("{} is set twice", quoted(&var.name))));
        }
    }
}

/// The rules of a job's own fields (image, env, resources), at `path`.
fn check_job_template(template: &JobTemplate, path: &str, problems: &mut Vec<SpecProblem>) {
    if let Some(image) = &template.image {
        check_image(image, &format!("{path}.image"), problems);
    }
    check_env(&template.env, &format!("{path}.env"), problems);
    check_resources(template.resources.as_ref(), &format!("{path}.resources"), problems);
}

fn check_resources(resources: Option<&ResourceRequirements>, path: &str, problems: &mut Vec<SpecProblem>) {
    if let Some(resources) = resources {
        api_rules::check_resources(resources, path, problems);
    }
}

/// Every string of the spec, keys included: a NUL byte cannot reach a process (an
/// argument, a variable, a file are C strings), and the spec as a whole must fit in
/// etcd.
fn check_text(spec: &ReferralSystemSpec, problems: &mut Vec<SpecProblem>) {
    let Ok(json) = serde_json::to_value(spec) else { return };
    let size = json.to_string().len();
    if size > MAX_SPEC_BYTES {
        problems.push(SpecProblem::new(
            "spec",
            format!("the spec is {size} bytes as JSON; at most {MAX_SPEC_BYTES} fit in etcd beside its status: move large values (scripts, documents) into a ConfigMap or the image"),
        ));
    }
    fn walk(value: &Value, path: &str, problems: &mut Vec<SpecProblem>) {
        const NUL: &str = "holds a NUL byte (\\u0000), which no argument, environment variable or file name can carry";
        match value {
            Value::String(text) if text.contains('\0') => problems.push(SpecProblem::new(path, NUL)),
            Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, v)| walk(v, &format!("{path}[{i}]"), problems))
            }
            Value::Object(map) => {
                for (key, v) in map {
                    let at = format!("{path}.{key}");
                    if key.contains('\0') {
                        problems.push(SpecProblem::new(at.clone(), format!("the key {}", NUL)));
                    }
                    walk(v, &at, problems);
                }
            }
            _ => {}
        }
    }
    walk(&json, "spec", problems);
}

fn check_workers(spec: &ReferralSystemSpec, problems: &mut Vec<SpecProblem>) {
    let mut names = BTreeSet::new();
    for (i, worker) in spec.workers.iter().enumerate() {
        let path = format!("spec.workers[{i}]");
        if !names.insert(worker.name.as_str()) {
            problems
                .push(SpecProblem::new(format!("{path}.name"), format!("worker name {:?} is used twice", worker.name)));
        }
        if RESERVED_WORKER_NAMES.contains(&worker.name.as_str()) {
            problems.push(SpecProblem::new(
                format!("{path}.name"),
                format!(
                    "{:?} is reserved: the worker's Service would take the name of the managed Redis Service (<system>-{}); choose another name",
                    worker.name, worker.name
                ),
            ));
        }
        if let Some(image) = &worker.image {
            check_image(image, &format!("{path}.image"), problems);
        }
        if worker.port == Some(spec.monitoring.metrics_port) {
            problems.push(SpecProblem::new(
                format!("{path}.port"),
                format!(
                    "port {} is monitoring.metricsPort; give the worker's HTTP port another number",
                    spec.monitoring.metrics_port
                ),
            ));
        }
        check_env(&worker.env, &format!("{path}.env"), problems);
        check_resources(worker.resources.as_ref(), &format!("{path}.resources"), problems);
        check_worker_pods(spec, worker, &path, problems);
        if worker.autoscaling.is_some() {
            let has_cpu_request = worker
                .resources
                .as_ref()
                .map(|r| r.requests.as_ref().is_some_and(|q| q.contains_key("cpu")))
                .unwrap_or(true); // the default resources carry a CPU request
            if !has_cpu_request {
                problems.push(SpecProblem::new(
                    format!("{path}.resources.requests.cpu"),
                    "autoscaling on CPU utilisation needs a CPU request; add resources.requests.cpu",
                ));
            }
        }
    }
}

/// What the CRD's CEL rules cannot say cheaply about a worker's pods: the user's
/// containers (host ports, names, mounts), named probe ports, and label syntax.
fn check_worker_pods(spec: &ReferralSystemSpec, worker: &WorkerSpec, path: &str, problems: &mut Vec<SpecProblem>) {
    let mut volumes = BTreeSet::from([TMP_VOLUME_NAME]);
    for (j, volume) in worker.volumes.iter().enumerate() {
        if !volumes.insert(volume.name.as_str()) {
            problems.push(SpecProblem::new(
                format!("{path}.volumes[{j}].name"),
                format!("volume name {:?} is used twice", volume.name),
            ));
        }
    }
    for (j, mount) in worker.volume_mounts.iter().enumerate() {
        if !volumes.contains(mount.name.as_str()) {
            problems.push(SpecProblem::new(
                format!("{path}.volumeMounts[{j}].name"),
                format!("{:?} must name one of the worker's volumes", mount.name),
            ));
        }
    }
    let mut container_names = BTreeSet::from([worker.name.as_str()]);
    let lists = [("initContainers", &worker.init_containers), ("sidecars", &worker.sidecars)];
    for (list, containers) in lists {
        for (j, container) in containers.iter().enumerate() {
            let at = format!("{path}.{list}[{j}]");
            if !container_names.insert(container.name.as_str()) {
                problems.push(SpecProblem::new(
                    format!("{at}.name"),
                    format!(
                        "container name {:?} is used twice in this worker (its own container is named {:?})",
                        container.name, worker.name
                    ),
                ));
            }
            if !is_dns_label(&container.name) {
                problems.push(SpecProblem::new(
                    format!("{at}.name"),
                    format!(
                        "{:?} is not a container name: lower-case letters, digits and '-', at most 63",
                        container.name
                    ),
                ));
            }
            for (k, port) in container.ports.iter().flatten().enumerate() {
                if port.host_port.is_some_and(|p| p != 0) {
                    problems.push(SpecProblem::new(
                        format!("{at}.ports[{k}].hostPort"),
                        "host ports are refused by the Pod Security Standard (baseline and restricted): use a Service",
                    ));
                }
            }
            for (k, mount) in container.volume_mounts.iter().flatten().enumerate() {
                if !volumes.contains(mount.name.as_str()) {
                    problems.push(SpecProblem::new(
                        format!("{at}.volumeMounts[{k}].name"),
                        format!("{:?} is none of the worker's volumes (spec.workers[].volumes) nor tmp", mount.name),
                    ));
                }
            }
            if let Some(image) = &container.image {
                check_image(image, &format!("{at}.image"), problems);
            }
            if list == "initContainers" {
                // They get the worker's environment: the operator's names stay its own.
                check_env(container.env.as_deref().unwrap_or_default(), &format!("{at}.env"), problems);
            }
        }
    }
    let probes = [
        ("liveness", &worker.probes.liveness),
        ("readiness", &worker.probes.readiness),
        ("startup", &worker.probes.startup),
    ];
    for (name, probe) in probes {
        let Some(probe) = probe else { continue };
        let port = probe.http_get.as_ref().map(|h| &h.port).or(probe.tcp_socket.as_ref().map(|t| &t.port));
        if let Some(IntOrString::String(named)) = port
            && named != "metrics"
            && !(named == "http" && worker.port.is_some())
        {
            problems.push(SpecProblem::new(
                format!("{path}.probes.{name}"),
                format!(
                    "port {named:?} is not a port of the worker's container: use \"metrics\" ({}){}, or a number",
                    spec.monitoring.metrics_port,
                    if worker.port.is_some() { ", \"http\"" } else { "" }
                ),
            ));
        }
    }
    if let Some(pods) = &worker.pods {
        check_pod_options(pods, &format!("{path}.pods"), problems);
    }
}

/// Label and annotation syntax of pod options, which the API server would refuse
/// only when the workload is applied.
fn check_pod_options(pods: &PodOptions, path: &str, problems: &mut Vec<SpecProblem>) {
    for (map, what) in [(&pods.labels, "labels"), (&pods.node_selector, "nodeSelector")] {
        for (key, value) in map {
            if !api_rules::is_qualified_name(key) {
                problems.push(SpecProblem::new(format!("{path}.{what}"), format!("{key:?} is not a valid label key")));
            }
            if !api_rules::is_label_value(value) {
                problems.push(SpecProblem::new(
                    format!("{path}.{what}"),
                    format!(
                        "{value:?} (for {key}) is not a valid label value: at most 63 letters, digits, '-', '_' or '.'"
                    ),
                ));
            }
        }
    }
    for key in pods.annotations.keys() {
        if !api_rules::is_qualified_name(key) {
            problems.push(SpecProblem::new(
                format!("{path}.annotations"),
                format!("{key:?} is not a valid annotation key"),
            ));
        }
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The scratch volume every pod of the operator has (`reconcilers::security::TMP_VOLUME`).
const TMP_VOLUME_NAME: &str = "tmp";

fn check_indexes(spec: &ReferralSystemSpec, problems: &mut Vec<SpecProblem>) {
    let mut names: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut keys: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (i, index) in spec.mongodb.indexes.iter().enumerate() {
        let path = format!("spec.mongodb.indexes[{i}]");
        let name = index.effective_name();
        if let Some(first) = names.insert((index.collection.as_str(), name.clone()), i) {
            problems.push(SpecProblem::new(
                path.clone(),
                format!("index {name:?} on {} is also declared at spec.mongodb.indexes[{first}]; remove one or give it another name", index.collection),
            ));
        }
        let key_text = format!("{:?}", index.keys);
        if let Some(first) = keys.insert((index.collection.as_str(), key_text), i) {
            problems.push(SpecProblem::new(
                format!("{path}.keys"),
                format!("the same keys on {} are already indexed at spec.mongodb.indexes[{first}]; MongoDB keeps one index per key pattern", index.collection),
            ));
        }
        for (k, key) in index.keys.iter().enumerate() {
            for field in key.keys() {
                if field.is_empty() || field.starts_with('$') {
                    problems
                        .push(SpecProblem::new(format!("{path}.keys[{k}]"), format!("{field:?} is not a field name")));
                }
            }
        }
    }
}

fn check_redis(spec: &ReferralSystemSpec, problems: &mut Vec<SpecProblem>) {
    let redis = &spec.redis;
    if let Some(managed) = &redis.managed {
        check_image(&managed.image, "spec.redis.managed.image", problems);
        check_resources(managed.resources.as_ref(), "spec.redis.managed.resources", problems);
        let max_memory = parse_redis_memory(&managed.max_memory);
        match max_memory {
            None => problems.push(SpecProblem::new(
                "spec.redis.managed.maxMemory",
                format!("{} is not a Redis size such as 2gb or 512mb", quoted(&managed.max_memory)),
            )),
            Some(0) => problems.push(SpecProblem::new(
                "spec.redis.managed.maxMemory",
                "maxMemory 0 means no limit to Redis, which then grows until the pod is OOM-killed: give a size such as 2gb",
            )),
            Some(bytes) if bytes > MAX_REDIS_MEMORY => problems.push(SpecProblem::new(
                "spec.redis.managed.maxMemory",
                format!("{} is more than the largest size the operator sizes a pod for (1073741824gb, 2^60 bytes)", quoted(&managed.max_memory)),
            )),
            Some(_) => {}
        }
        let limit = managed
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| parse_quantity_json(&q.0).ok());
        if let (Some(max), Some(limit)) = (max_memory, limit)
            && i128::from(max) * 1_000_000_000 >= limit.nanos()
        {
            problems.push(SpecProblem::new(
                "spec.redis.managed.maxMemory",
                format!("maxMemory {} is not below the pod's memory limit; Redis would be OOM-killed before it evicts: raise resources.limits.memory or lower maxMemory", managed.max_memory),
            ));
        }
        check_storage_size(&managed.storage.size, "spec.redis.managed.storage.size", "1Gi", problems);
    }
    if let Some(external) = &redis.external
        && spec.backup.include_redis
        && !external.cluster_nodes.is_empty()
    {
        problems.push(SpecProblem::new(
            "spec.backup.includeRedis",
            "a network RDB snapshot covers one node, not a Redis Cluster: set backup.includeRedis to false and back the cluster up with its own tooling",
        ));
    }
}

fn check_jobs(spec: &ReferralSystemSpec, problems: &mut Vec<SpecProblem>) {
    let mut schedule = |path: &str, value: &str| {
        if let Err(why) = check_schedule(value) {
            problems.push(SpecProblem::new(path, why));
        }
    };
    schedule("spec.chainCheck.schedule", &spec.chain_check.schedule);
    schedule("spec.backup.schedule", &spec.backup.schedule);
    for (i, job) in spec.maintenance.iter().enumerate() {
        schedule(&format!("spec.maintenance[{i}].schedule"), &job.schedule);
    }
    let mut names = BTreeSet::new();
    for (i, job) in spec.maintenance.iter().enumerate() {
        let path = format!("spec.maintenance[{i}]");
        if !names.insert(job.name.as_str()) {
            problems.push(SpecProblem::new(
                format!("{path}.name"),
                format!("maintenance job name {:?} is used twice", job.name),
            ));
        }
        check_job_template(&job.template, &path, problems);
    }
    if let Some(migration) = &spec.migration {
        check_job_template(&migration.template, "spec.migration", problems);
    }
    let backup = &spec.backup;
    check_image(&backup.mongo_tools_image, "spec.backup.mongoToolsImage", problems);
    if let Some(image) = &backup.redis_tools_image {
        check_image(image, "spec.backup.redisToolsImage", problems);
    }
    check_resources(backup.resources.as_ref(), "spec.backup.resources", problems);
    if backup.object_storage.is_some() && backup.method != crate::crd::BackupMethod::Native {
        problems.push(SpecProblem::new(
            "spec.backup.objectStorage",
            "objectStorage needs method Native: mongodump archives are written to the volume only",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, collection) in backup.collections.iter().enumerate() {
        if !seen.insert(collection) {
            problems.push(SpecProblem::new(
                format!("spec.backup.collections[{i}]"),
                format!("{collection:?} is listed twice"),
            ));
        }
    }
    check_storage_size(&backup.storage.size, "spec.backup.storage.size", "20Gi", problems);
    if let Some(drill) = &backup.restore_drill {
        check_restore_drill(drill, &spec.mongodb.database, problems);
    }
}

/// The drill's schedule and age limit, and the one rule that keeps it away from the
/// production data: its scratch database is another database.
fn check_restore_drill(drill: &crate::crd::RestoreDrillSpec, database: &str, problems: &mut Vec<SpecProblem>) {
    if let Err(why) = check_schedule(&drill.schedule) {
        problems.push(SpecProblem::new("spec.backup.restoreDrill.schedule", why));
    }
    match crate::crd::duration::parse_prometheus_duration(&drill.max_unverified_age) {
        Ok(0) => problems.push(SpecProblem::new(
            "spec.backup.restoreDrill.maxUnverifiedAge",
            "maxUnverifiedAge 0 would alert at once after every backup: give a duration such as 8d",
        )),
        Ok(_) => {}
        Err(why) => problems.push(SpecProblem::new("spec.backup.restoreDrill.maxUnverifiedAge", why.to_string())),
    }
    if let Some(scratch) = &drill.scratch_database
        && scratch.eq_ignore_ascii_case(database)
    {
        problems.push(SpecProblem::new(
            "spec.backup.restoreDrill.scratchDatabase",
            "backup.restoreDrill.scratchDatabase must differ from mongodb.database: the drill drops its scratch database, so it must never be the production one",
        ));
    }
    check_resources(drill.resources.as_ref(), "spec.backup.restoreDrill.resources", problems);
}

/// A volume size: a quantity above zero (Kubernetes refuses a claim for nothing).
fn check_storage_size(size: &str, path: &str, example: &str, problems: &mut Vec<SpecProblem>) {
    match parse_quantity(size) {
        Ok(q) if q.nanos() > 0 => {}
        Ok(_) => problems.push(SpecProblem::new(path, format!("a volume needs a size above zero, such as {example}"))),
        Err(e) => problems.push(SpecProblem::new(path, format!("{} {e}; e.g. {example}", quoted(size)))),
    }
}

const BUILTIN_ALERTS: [&str; 13] = [
    "ReferralHighFailureRate",
    "ReferralQueueBacklog",
    "ReferralBackupMissing",
    "ReferralBackupFailed",
    "ReferralBackupUnverified",
    "ReferralChainViolations",
    "ReferralIndexMissing",
    "ReferralRedisUnreachable",
    "ReferralMongoUnreachable",
    "ReferralWorkersUnavailable",
    "ReferralWorkerCrashLooping",
    "ReferralChainCheckFailed",
    "ReferralMaintenanceJobFailed",
];

fn check_monitoring(spec: &ReferralSystemSpec, problems: &mut Vec<SpecProblem>) {
    let monitoring = &spec.monitoring;
    for (field, labels) in [
        ("spec.monitoring.labels", &monitoring.labels),
        ("spec.monitoring.dashboards.labels", &monitoring.dashboards.labels),
    ] {
        for (key, value) in labels {
            if !api_rules::is_qualified_name(key) {
                problems.push(SpecProblem::new(
                    field,
                    format!("{} is not a valid label key: {QUALIFIED_NAME_RULE}", quoted(key)),
                ));
            }
            if !api_rules::is_label_value(value) {
                problems.push(SpecProblem::new(
                    field,
                    format!("{} (for {}) is not a valid label value: {LABEL_VALUE_RULE}", quoted(value), quoted(key)),
                ));
            }
        }
    }
    let alerts = &monitoring.alerts;
    for (name, alert) in [("highFailureRate", &alerts.high_failure_rate), ("queueBacklog", &alerts.queue_backlog)] {
        if let Err(e) = parse_prometheus_duration(&alert.for_) {
            problems.push(SpecProblem::new(format!("spec.monitoring.alerts.{name}.for"), e.to_string()));
        }
        if !alert.threshold.is_finite() {
            problems.push(SpecProblem::new(
                format!("spec.monitoring.alerts.{name}.threshold"),
                "the threshold must be a finite number",
            ));
        }
    }
    for (i, rule) in monitoring.additional_rules.iter().enumerate() {
        let path = format!("spec.monitoring.additionalRules[{i}]");
        if BUILTIN_ALERTS.contains(&rule.alert.as_str()) {
            problems.push(SpecProblem::new(
                format!("{path}.alert"),
                format!("{} is a built-in alert; tune it under monitoring.alerts instead", rule.alert),
            ));
        }
        if let Some(for_) = &rule.for_
            && let Err(e) = parse_prometheus_duration(for_)
        {
            problems.push(SpecProblem::new(format!("{path}.for"), e.to_string()));
        }
        for (field, names) in [("labels", &rule.labels), ("annotations", &rule.annotations)] {
            for name in names.keys().filter(|n| !is_prometheus_label_name(n)) {
                problems.push(SpecProblem::new(
                    format!("{path}.{field}"),
                    format!("{} is not a name Prometheus accepts for a rule's {field}: letters, digits and '_', not starting with a digit", quoted(name)),
                ));
            }
        }
    }
}

/// Prometheus' label name rule (`model.LabelName.IsValid`, legacy validation).
fn is_prometheus_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Names of the built-in alerts, for the monitoring builder.
pub fn builtin_alert_names() -> [&'static str; 13] {
    BUILTIN_ALERTS
}
