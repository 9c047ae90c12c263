//! Redis: a managed single instance the operator runs, or an external one it only uses.

use k8s_openapi::api::core::v1::ResourceRequirements;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{SecretKeyRef, StorageSpec, TlsSpec};
use super::pods::PodOptions;

/// The Redis the referral service uses for its queues and cache.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.managed) != has(self.external)",
     "message": "set exactly one of redis.managed (the operator runs Redis) or redis.external (you run it)"},
    {"rule": "!has(self.tls) || (has(self.external) && self.external.tls)",
     "message": "redis.tls (CA and client certificate) needs redis.external.tls: true; the managed Redis is reached inside the cluster, behind its NetworkPolicy, without TLS"}
]))]
pub struct RedisSpec {
    /// Run Redis in the cluster as a StatefulSet with a persistent volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedRedis>,
    /// Use a Redis you run yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedis>,
    /// Secret key holding the Redis password (REDIS_PASSWORD, through `secretKeyRef`).
    /// For managed Redis it becomes the ACL user's password, read from a file at start
    /// (never on a command line, never in redis.conf). Left unset for a managed Redis,
    /// the operator generates a strong one into the Secret `<system>-redis-password`
    /// (key `password`), owned by the system, kept across reconciles and replaced
    /// only when asked with the `referral.dev/rotate-redis-password` annotation. An
    /// empty value is refused: it is not a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// ACL user to authenticate as (REDIS_USERNAME), with the password above. Unset:
    /// Redis's `default` user. For a managed Redis this user is created and `default`
    /// is switched off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9][-._A-Za-z0-9]*$"))]
    pub username: Option<String>,
    /// TLS settings for an external Redis with `external.tls: true`: the CA that
    /// signed its certificate and an optional client certificate. The operator's own
    /// probe uses them too, so RedisReady means AUTH and PING over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Prefix of every key the service writes (REDIS_PREFIX). Default `ref:`.
    #[serde(default = "default_key_prefix")]
    #[schemars(length(max = 64))]
    pub key_prefix: String,
}

/// redis.conf knobs from the deployment guide, plus storage.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRedis {
    /// Redis image. Default `redis:7.2`.
    #[serde(default = "default_redis_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Persistent volume for the append-only file and snapshots. Default 1Gi.
    #[serde(default = "default_redis_storage")]
    pub storage: StorageSpec,
    /// `maxmemory`, e.g. `2gb`, `512mb`. Default 2gb.
    #[serde(default = "default_max_memory")]
    #[schemars(length(max = 32), pattern(r"^[0-9]+(b|kb|mb|gb|k|m|g)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "!self.matches('^0+(b|kb|mb|gb|k|m|g)?$')",
         "message": "maxMemory 0 means no limit to Redis, which then grows until the pod is OOM-killed: give a size such as 2gb"}
    ]))]
    pub max_memory: String,
    /// `maxmemory-policy`. Default allkeys-lru.
    #[serde(default)]
    pub max_memory_policy: MaxMemoryPolicy,
    /// `appendonly`: persist every write. Default true.
    #[serde(default = "default_true")]
    pub append_only: bool,
    /// `maxclients`. Default 10000.
    #[serde(default = "default_max_clients")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_clients: u32,
    /// `timeout`: close idle clients after this many seconds (0 = never). Default 300.
    #[serde(default = "default_timeout")]
    #[schemars(range(max = 86400))]
    pub timeout_seconds: u32,
    /// `tcp-keepalive` in seconds. Default 60.
    #[serde(default = "default_keepalive")]
    #[schemars(range(max = 86400))]
    pub tcp_keepalive_seconds: u32,
    /// CPU and memory of the Redis pod. Default: requests 100m CPU and the memory
    /// limit sized above `maxMemory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scheduling and pod metadata of the Redis pod, over `spec.pods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodOptions>,
}

/// `maxmemory-policy` values Redis accepts.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MaxMemoryPolicy {
    #[default]
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
    Noeviction,
}

impl MaxMemoryPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllkeysLru => "allkeys-lru",
            Self::AllkeysLfu => "allkeys-lfu",
            Self::AllkeysRandom => "allkeys-random",
            Self::VolatileLru => "volatile-lru",
            Self::VolatileLfu => "volatile-lfu",
            Self::VolatileRandom => "volatile-random",
            Self::VolatileTtl => "volatile-ttl",
            Self::Noeviction => "noeviction",
        }
    }
}

/// A Redis the operator does not run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.host) != (has(self.clusterNodes) && size(self.clusterNodes) > 0)",
     "message": "set either redis.external.host (one server) or redis.external.clusterNodes (a Redis Cluster), not both and not neither"}
]))]
pub struct ExternalRedis {
    /// Host name or address of a single Redis server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// Port of the single server. Default 6379.
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Seed nodes of a Redis Cluster as `host:port` (REDIS_CLUSTER_NODES, comma-separated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 260), pattern(r"^[^:\t\n\f\r ]+:[0-9]{1,5}$")))]
    pub cluster_nodes: Vec<String>,
    /// Connect with TLS (REDIS_TLS). Default false.
    #[serde(default)]
    pub tls: bool,
}

fn default_key_prefix() -> String {
    "ref:".into()
}
fn default_redis_image() -> String {
    "redis:7.2".into()
}
fn default_redis_storage() -> StorageSpec {
    StorageSpec { size: "1Gi".into(), storage_class_name: None, delete_with_system: false }
}
fn default_max_memory() -> String {
    "2gb".into()
}
fn default_true() -> bool {
    true
}
fn default_max_clients() -> u32 {
    10000
}
fn default_timeout() -> u32 {
    300
}
fn default_keepalive() -> u32 {
    60
}
fn default_redis_port() -> i32 {
    6379
}
