//! The validate step: a parsed ReferralSystem in, a [`ValidatedSystem`] out, or every
//! problem found, each naming the field and saying what to do. It covers what the CRD
//! schema and CEL rules cannot express (cron ranges, quantities, env names the
//! operator owns, index names as MongoDB computes them). Pure: no cluster, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};

use super::cron::check_schedule;
use super::duration::parse_duration;
use super::quantity::{parse_quantity, parse_redis_memory};
use super::{JobTemplate, ReferralSystem, ReferralSystemSpec};

/// One reason a ReferralSystem cannot be built as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Dotted path of the offending field, e.g. `spec.workers[1].env[0].name`.
    pub field_path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl SpecProblem {
    fn new(field_path: impl Into<String>, message: impl Into<String>) -> Self {
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
    let intervals = check_intervals(spec, &mut problems);
    check_image(&spec.image, "spec.image", &mut problems);
    check_workers(spec, &mut problems);
    check_indexes(spec, &mut problems);
    check_redis(spec, &mut problems);
    check_jobs(spec, &mut problems);
    check_monitoring(spec, &mut problems);
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
        if !seen.insert(var.name.as_str()) {
            problems.push(SpecProblem::new(format!("{path}[{i}].name"), format!("{} is set twice", var.name)));
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
    let Some(resources) = resources else { return };
    let requests = resources.requests.clone().unwrap_or_default();
    let limits = resources.limits.clone().unwrap_or_default();
    for (map, which) in [(&requests, "requests"), (&limits, "limits")] {
        for (resource, q) in map {
            if parse_quantity(&q.0).is_none() {
                problems.push(SpecProblem::new(
                    format!("{path}.{which}.{resource}"),
                    format!("{:?} is not a Kubernetes quantity such as 500m or 1Gi", q.0),
                ));
            }
        }
    }
    for (resource, request) in &requests {
        if let (Some(req), Some(lim)) =
            (parse_quantity(&request.0), limits.get(resource).and_then(|l| parse_quantity(&l.0)))
            && req > lim
        {
            problems.push(SpecProblem::new(
                format!("{path}.requests.{resource}"),
                format!(
                    "request {} is above the limit {}; Kubernetes refuses such a pod",
                    request.0, limits[resource].0
                ),
            ));
        }
    }
}

fn check_workers(spec: &ReferralSystemSpec, problems: &mut Vec<SpecProblem>) {
    let mut names = BTreeSet::new();
    for (i, worker) in spec.workers.iter().enumerate() {
        let path = format!("spec.workers[{i}]");
        if !names.insert(worker.name.as_str()) {
            problems
                .push(SpecProblem::new(format!("{path}.name"), format!("worker name {:?} is used twice", worker.name)));
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
        if max_memory.is_none() {
            problems.push(SpecProblem::new(
                "spec.redis.managed.maxMemory",
                format!("{:?} is not a Redis size such as 2gb or 512mb", managed.max_memory),
            ));
        }
        let limit = managed
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| parse_quantity(&q.0));
        if let (Some(max), Some(limit)) = (max_memory, limit)
            && max as f64 >= limit
        {
            problems.push(SpecProblem::new(
                "spec.redis.managed.maxMemory",
                format!("maxMemory {} is not below the pod's memory limit; Redis would be OOM-killed before it evicts: raise resources.limits.memory or lower maxMemory", managed.max_memory),
            ));
        }
        if parse_quantity(&managed.storage.size).is_none() {
            problems.push(SpecProblem::new(
                "spec.redis.managed.storage.size",
                format!("{:?} is not a size such as 1Gi", managed.storage.size),
            ));
        }
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
    if parse_quantity(&backup.storage.size).is_none() {
        problems.push(SpecProblem::new(
            "spec.backup.storage.size",
            format!("{:?} is not a size such as 20Gi", backup.storage.size),
        ));
    }
}

const BUILTIN_ALERTS: [&str; 6] = [
    "ReferralHighFailureRate",
    "ReferralQueueBacklog",
    "ReferralBackupMissing",
    "ReferralBackupFailed",
    "ReferralChainViolations",
    "ReferralIndexMissing",
];

fn check_monitoring(spec: &ReferralSystemSpec, problems: &mut Vec<SpecProblem>) {
    let monitoring = &spec.monitoring;
    for (key, value) in monitoring.labels.iter().chain(monitoring.dashboards.labels.iter()) {
        if !is_label_key(key) {
            problems.push(SpecProblem::new("spec.monitoring.labels", format!("{key:?} is not a valid label key")));
        }
        if !is_label_value(value) {
            problems.push(SpecProblem::new(
                "spec.monitoring.labels",
                format!(
                    "{value:?} (for {key}) is not a valid label value: at most 63 letters, digits, '-', '_' or '.'"
                ),
            ));
        }
    }
    for (i, rule) in monitoring.additional_rules.iter().enumerate() {
        if BUILTIN_ALERTS.contains(&rule.alert.as_str()) {
            problems.push(SpecProblem::new(
                format!("spec.monitoring.additionalRules[{i}].alert"),
                format!("{} is a built-in alert; tune it under monitoring.alerts instead", rule.alert),
            ));
        }
    }
}

/// Names of the built-in alerts, for the monitoring builder.
pub fn builtin_alert_names() -> [&'static str; 6] {
    BUILTIN_ALERTS
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && (value.is_empty()
            || (value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && value.starts_with(|c: char| c.is_ascii_alphanumeric())
                && value.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    });
    prefix_ok && !name.is_empty() && is_label_value(name)
}
