//! The environment the referral service reads (the `REFERRAL_*` settings of README.md,
//! "The resource"), derived from the typed spec. Credentials only through
//! `secretKeyRef`: no secret value is ever written into an object the operator
//! creates.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};

use crate::crd::SecretKeyRef;
use crate::crd::validate::ValidatedSystem;

use super::meta::{MAX_STATEFULSET, child_name};

/// Port of the managed Redis and the default of an external one.
pub const REDIS_PORT: i32 = 6379;

fn literal(name: &str, value: impl ToString) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.to_string()), value_from: None }
}

/// An env var read from a Secret key at pod start.
pub fn from_secret(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Name of the managed Redis StatefulSet and of its Service.
pub fn managed_redis_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "redis", MAX_STATEFULSET)
}

/// The MongoDB variables: URI from the Secret, the rest literal.
pub fn mongo_env(system: &ValidatedSystem) -> Vec<EnvVar> {
    let mongo = &system.spec.mongodb;
    vec![
        from_secret("MONGODB_URI", &mongo.uri_secret_ref),
        literal("MONGODB_DATABASE", &mongo.database),
        literal("MONGODB_POOL_SIZE", mongo.client.pool_size),
        literal("MONGODB_WTIMEOUT_MS", mongo.client.wtimeout_ms),
        literal("MONGODB_RETRY_WRITES", mongo.client.retry_writes),
        literal("MONGODB_READ_PREFERENCE", mongo.client.read_preference.as_str()),
    ]
}

/// Host and port a client reaches Redis on (the first seed node for a cluster).
pub fn redis_endpoint(system: &ValidatedSystem) -> (String, i32) {
    let redis = &system.spec.redis;
    match &redis.external {
        Some(external) => match &external.host {
            Some(host) => (host.clone(), external.port),
            None => {
                let first = external.cluster_nodes.first().cloned().unwrap_or_default();
                match first.rsplit_once(':') {
                    Some((host, port)) => (host.to_string(), port.parse().unwrap_or(REDIS_PORT)),
                    None => (first, REDIS_PORT),
                }
            }
        },
        None => (managed_redis_name(system), REDIS_PORT),
    }
}

/// The Redis variables.
pub fn redis_env(system: &ValidatedSystem) -> Vec<EnvVar> {
    let redis = &system.spec.redis;
    let (host, port) = redis_endpoint(system);
    let mut env = vec![literal("REDIS_HOST", host), literal("REDIS_PORT", port)];
    if let Some(password) = &redis.password_secret_ref {
        env.push(from_secret("REDIS_PASSWORD", password));
    }
    env.push(literal("REDIS_PREFIX", &redis.key_prefix));
    if let Some(external) = &redis.external {
        if !external.cluster_nodes.is_empty() {
            env.push(literal("REDIS_CLUSTER_NODES", external.cluster_nodes.join(",")));
        }
        if external.tls {
            env.push(literal("REDIS_TLS", "true"));
        }
    }
    env
}

/// Everything the referral service reads: MongoDB, Redis, REFERRAL_* and metrics.
pub fn service_env(system: &ValidatedSystem) -> Vec<EnvVar> {
    let referral = &system.spec.referral;
    let intervals = &system.intervals;
    let mut env = mongo_env(system);
    env.extend(redis_env(system));
    env.extend([
        literal("REFERRAL_MAX_CHAIN_DEPTH", referral.max_chain_depth),
        literal("REFERRAL_REWARD_PROCESSING_INTERVAL", intervals.reward_processing.as_millis()),
        literal("REFERRAL_QUEUE_CLEANUP_INTERVAL", intervals.queue_cleanup.as_millis()),
        literal("REFERRAL_CACHE_TTL", intervals.cache_ttl.as_secs()),
        literal("REFERRAL_MAX_RETRIES", referral.max_retries),
        literal("PROMETHEUS_ENABLED", "true"),
        literal("METRICS_PORT", system.spec.monitoring.metrics_port),
    ]);
    env
}
