//! Worker processes of the referral service: one Deployment each.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One long-running process of the referral service (reward processor, queue cleanup,
/// API, ...). The operator runs it as a Deployment, with a Service when it listens on a
/// port or exports metrics, a PodDisruptionBudget when it has more than one replica,
/// and a HorizontalPodAutoscaler when `autoscaling` is set.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.autoscaling) || !has(self.replicas)",
     "message": "set either replicas or autoscaling on a worker, not both: with autoscaling the HorizontalPodAutoscaler owns the replica count"},
    {"rule": "!has(self.command) || size(self.command) > 0",
     "message": "command, when given, must name at least the program to run"}
]))]
pub struct WorkerSpec {
    /// Name of the worker, unique within the system; used in child object names.
    /// Lower-case letters, digits and '-', starting with a letter, at most 24 characters.
    #[schemars(length(min = 1, max = 24), pattern(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Number of pods. Default 1. Leave unset when `autoscaling` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Image for this worker; defaults to `spec.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Entrypoint override (the container's `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments (the container's `args`), e.g. `["npm", "run", "start:jobs"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Port the worker serves HTTP on. When set, the worker gets a Service port named
    /// `http` and HTTP liveness/readiness probes on `probes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// HTTP paths probed when `port` is set.
    #[serde(default)]
    pub probes: WorkerProbes,
    /// CPU and memory for each pod. Default: requests 250m CPU and 512Mi memory,
    /// limit 4Gi memory (the seed's `--max-old-space-size=4096`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables. Names the operator sets itself (MONGODB_*, REDIS_*,
    /// REFERRAL_*, METRICS_PORT, PROMETHEUS_ENABLED) are refused: change the typed
    /// setting instead. Use `valueFrom.secretKeyRef` for anything secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Scale on CPU with a HorizontalPodAutoscaler. The Deployment then carries no
    /// replica count, so Git, the HPA and the operator never fight over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<WorkerAutoscaling>,
}

/// HTTP probe paths of a worker that listens on a port.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerProbes {
    /// Liveness probe path. Default `/healthz`.
    #[serde(default = "default_liveness_path")]
    #[schemars(pattern(r"^/"))]
    pub liveness_path: String,
    /// Readiness probe path. Default `/readyz`.
    #[serde(default = "default_readiness_path")]
    #[schemars(pattern(r"^/"))]
    pub readiness_path: String,
}

impl Default for WorkerProbes {
    fn default() -> Self {
        Self { liveness_path: default_liveness_path(), readiness_path: default_readiness_path() }
    }
}

fn default_liveness_path() -> String {
    "/healthz".into()
}
fn default_readiness_path() -> String {
    "/readyz".into()
}

/// CPU-based autoscaling bounds for one worker.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas",
     "message": "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"}
]))]
pub struct WorkerAutoscaling {
    /// Fewest pods. Default 1.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) the autoscaler aims for. Default 70.
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: i32,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_target_cpu() -> i32 {
    70
}
