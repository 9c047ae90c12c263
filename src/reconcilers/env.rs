//! The environment the referral service reads (the `REFERRAL_*` settings of README.md,
//! "The resource"), derived from the typed spec. Credentials only through
//! `secretKeyRef`: no secret value is ever written into an object the operator
//! creates.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};

use crate::crd::validate::ValidatedSystem;
use crate::crd::{SecretKeyRef, TlsSpec};

use super::meta::{MAX_DNS_LABEL, MAX_STATEFULSET, child_name};

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

/// Key of the generated Redis password in its Secret.
pub const GENERATED_PASSWORD_KEY: &str = "password";

/// Name of the Secret the operator generates the managed Redis's password into when
/// `spec.redis.passwordSecretRef` is unset.
pub fn generated_redis_password_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "redis-password", MAX_DNS_LABEL)
}

/// The Secret key holding the Redis password: the spec's, or for a managed Redis
/// without one the generated Secret (so a managed Redis is never open). `None` only
/// for an external Redis without a password.
pub fn redis_password_ref(system: &ValidatedSystem) -> Option<SecretKeyRef> {
    let redis = &system.spec.redis;
    match (&redis.password_secret_ref, &redis.managed) {
        (Some(reference), _) => Some(reference.clone()),
        (None, Some(_)) => {
            Some(SecretKeyRef { name: generated_redis_password_name(system), key: GENERATED_PASSWORD_KEY.into() })
        }
        (None, None) => None,
    }
}

/// Whether the operator must generate the Redis password.
pub fn redis_password_generated(system: &ValidatedSystem) -> bool {
    system.spec.redis.managed.is_some() && system.spec.redis.password_secret_ref.is_none()
}

/// Where TLS material is mounted in every pod that connects to a server over TLS.
pub const TLS_MOUNT_ROOT: &str = "/etc/referral/tls";
/// File names inside a TLS mount.
pub const TLS_CA_FILE: &str = "ca.crt";
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";

/// A server reached over TLS with files from Secrets: MongoDB or Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsTarget {
    MongoDb,
    Redis,
}

impl TlsTarget {
    /// Name of the pod volume holding its files.
    pub fn volume(self) -> &'static str {
        match self {
            TlsTarget::MongoDb => "mongodb-tls",
            TlsTarget::Redis => "redis-tls",
        }
    }

    /// Where the files are mounted.
    pub fn mount_path(self) -> String {
        match self {
            TlsTarget::MongoDb => format!("{TLS_MOUNT_ROOT}/mongodb"),
            TlsTarget::Redis => format!("{TLS_MOUNT_ROOT}/redis"),
        }
    }

    /// Prefix of its environment variables (`MONGODB_TLS_CA_FILE`, ...).
    fn env_prefix(self) -> &'static str {
        match self {
            TlsTarget::MongoDb => "MONGODB_TLS",
            TlsTarget::Redis => "REDIS_TLS",
        }
    }

    /// The system's TLS settings for this server, when it has files to mount.
    pub fn spec(self, system: &ValidatedSystem) -> Option<&TlsSpec> {
        match self {
            TlsTarget::MongoDb => system.spec.mongodb.tls.as_ref(),
            TlsTarget::Redis => system.spec.redis.tls.as_ref(),
        }
        .filter(|tls| tls.ca_secret_ref.is_some() || tls.client_certificate_secret_name.is_some())
    }

    /// `<PREFIX>_CA_FILE`, `_CERT_FILE`, `_KEY_FILE` for the files the spec provides.
    pub fn file_env(self, system: &ValidatedSystem) -> Vec<EnvVar> {
        let Some(tls) = self.spec(system) else { return Vec::new() };
        let prefix = self.env_prefix();
        let dir = self.mount_path();
        let mut env = Vec::new();
        if tls.ca_secret_ref.is_some() {
            env.push(literal(&format!("{prefix}_CA_FILE"), format!("{dir}/{TLS_CA_FILE}")));
        }
        if tls.client_certificate_secret_name.is_some() {
            env.push(literal(&format!("{prefix}_CERT_FILE"), format!("{dir}/{TLS_CERT_FILE}")));
            env.push(literal(&format!("{prefix}_KEY_FILE"), format!("{dir}/{TLS_KEY_FILE}")));
        }
        env
    }
}

/// The MongoDB variables: URI from the Secret, the rest literal. With
/// `mongodb.tls`, MONGODB_TLS=true; the files' paths come with their mount
/// ([`TlsTarget::file_env`], added to every pod by `pod::integrate`).
pub fn mongo_env(system: &ValidatedSystem) -> Vec<EnvVar> {
    let mongo = &system.spec.mongodb;
    let mut env = vec![
        from_secret("MONGODB_URI", &mongo.uri_secret_ref),
        literal("MONGODB_DATABASE", &mongo.database),
        literal("MONGODB_POOL_SIZE", mongo.client.pool_size),
        literal("MONGODB_WTIMEOUT_MS", mongo.client.wtimeout_ms),
        literal("MONGODB_RETRY_WRITES", mongo.client.retry_writes),
        literal("MONGODB_READ_PREFERENCE", mongo.client.read_preference.as_str()),
    ];
    env.extend(mongo_tls_env(system));
    env
}

/// MONGODB_TLS=true when `mongodb.tls` is set: TLS even when the spec names no file
/// (`tls: {}` trusts the image's roots), which the mounted files alone cannot say.
/// Every container of ours that talks to MongoDB gets it beside the files' paths.
pub fn mongo_tls_env(system: &ValidatedSystem) -> Option<EnvVar> {
    system.spec.mongodb.tls.is_some().then(|| literal("MONGODB_TLS", "true"))
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
    if let Some(username) = &redis.username {
        env.push(literal("REDIS_USERNAME", username));
    }
    if let Some(password) = redis_password_ref(system) {
        env.push(from_secret("REDIS_PASSWORD", &password));
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

/// How a `redis-cli` in a job reaches Redis: REDIS_HOST, REDIS_PORT, the password in
/// REDISCLI_AUTH (which redis-cli reads itself, never from argv) and in
/// REDIS_TLS_FLAG every other connection flag (`--tls` with the mounted CA and
/// client certificate, `--user`), for scripts that pass it unquoted. File paths and
/// user names hold no spaces (the CRD's patterns), so splitting keeps them whole.
pub fn redis_cli_env(system: &ValidatedSystem) -> Vec<EnvVar> {
    let redis = &system.spec.redis;
    let (host, port) = redis_endpoint(system);
    let mut flags = Vec::new();
    if redis.external.as_ref().is_some_and(|e| e.tls) {
        flags.push("--tls".to_string());
        if let Some(tls) = TlsTarget::Redis.spec(system) {
            let dir = TlsTarget::Redis.mount_path();
            if tls.ca_secret_ref.is_some() {
                flags.push(format!("--cacert {dir}/{TLS_CA_FILE}"));
            }
            if tls.client_certificate_secret_name.is_some() {
                flags.push(format!("--cert {dir}/{TLS_CERT_FILE} --key {dir}/{TLS_KEY_FILE}"));
            }
        }
    }
    if let Some(user) = &redis.username {
        flags.push(format!("--user {user}"));
    }
    let mut env =
        vec![literal("REDIS_HOST", host), literal("REDIS_PORT", port), literal("REDIS_TLS_FLAG", flags.join(" "))];
    if let Some(secret) = redis_password_ref(system) {
        env.push(from_secret("REDISCLI_AUTH", &secret));
    }
    env
}
