//! Worker processes of the referral service: one Deployment each.

use k8s_openapi::api::core::v1::{Container, EnvVar, Probe, ResourceRequirements, Volume, VolumeMount};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pods::PodOptions;

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
     "message": "command, when given, must name at least the program to run"},
    {"rule": "(!has(self.sidecars) || self.sidecars.all(c, c.name != self.name)) && (!has(self.initContainers) || self.initContainers.all(c, c.name != self.name))",
     "message": "sidecars and initContainers may not be named like the worker: that name is its main container's"}
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
    /// Scheduling and pod metadata of this worker, over `spec.pods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodOptions>,
    /// ServiceAccount the pods run as (workload identity: IRSA, GKE or Azure
    /// workload identity). Default: the namespace's `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub service_account_name: Option<String>,
    /// Mount the ServiceAccount's API token into the pods. Default false: the
    /// service does not talk to Kubernetes, and workload-identity webhooks project
    /// their own token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub automount_service_account_token: bool,
    /// Extra volumes of the pods. Only the kinds the restricted Pod Security
    /// Standard allows: configMap, secret, emptyDir, projected, downwardAPI,
    /// persistentVolumeClaim, csi, ephemeral.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(v, has(v.configMap) || has(v.secret) || has(v.emptyDir) || has(v.projected) || has(v.downwardAPI) || has(v.persistentVolumeClaim) || has(v.csi) || has(v.ephemeral))",
         "message": "volumes may only be configMap, secret, emptyDir, projected, downwardAPI, persistentVolumeClaim, csi or ephemeral: the restricted Pod Security Standard refuses the others (hostPath among them)"},
        {"rule": "self.all(v, !(v.name in ['tmp', 'mongodb-tls', 'redis-tls']))",
         "message": "volume names tmp, mongodb-tls and redis-tls are the operator's own"}
    ]))]
    pub volumes: Vec<Volume>,
    /// Where the worker's own container mounts `volumes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(m, m.mountPath != '/tmp' && !m.mountPath.startsWith('/etc/referral/'))",
         "message": "mountPath /tmp and /etc/referral/ are the operator's own"}
    ]))]
    pub volume_mounts: Vec<VolumeMount>,
    /// Containers run to completion before the worker starts (the guide's
    /// `npm run init:cache`, a schema check): the worker's image unless they name
    /// another, and the worker's environment (MONGODB_*, REDIS_*, REFERRAL_*) before
    /// their own. They get the restricted security context where they do not set
    /// one; a `restartPolicy: Always` one is a native sidecar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend("x-kubernetes-validations" = restricted_init_container_rules()))]
    pub init_containers: Vec<Container>,
    /// Containers run beside the worker (a proxy, a log shipper): an image of their
    /// own, none of the worker's environment, the restricted security context where
    /// they do not set one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend("x-kubernetes-validations" = restricted_container_rules()))]
    pub sidecars: Vec<Container>,
}

/// CEL rules that keep user containers within the restricted Pod Security Standard,
/// each at a constant cost per container (no walk over a container's own lists, which
/// the API server would cost as unbounded). What CEL cannot say cheaply (host ports,
/// and anything comparing names, whose length the Kubernetes schema leaves unbounded)
/// the validate step checks.
fn restricted_container_rules() -> serde_json::Value {
    with_rules(vec![serde_json::json!(
        {"rule": "self.all(c, has(c.image) && size(c.image) > 0)",
         "message": "every sidecar needs an image"}
    )])
}

/// The rules of [`restricted_container_rules`] for init containers, whose image
/// defaults to the worker's.
fn restricted_init_container_rules() -> serde_json::Value {
    with_rules(Vec::new())
}

fn with_rules(mut first: Vec<serde_json::Value>) -> serde_json::Value {
    let rest = serde_json::json!([
        {"rule": "self.all(c, !has(c.securityContext) || !has(c.securityContext.privileged) || !c.securityContext.privileged)",
         "message": "containers may not be privileged: the restricted Pod Security Standard refuses it"},
        {"rule": "self.all(c, !has(c.securityContext) || !has(c.securityContext.allowPrivilegeEscalation) || !c.securityContext.allowPrivilegeEscalation)",
         "message": "allowPrivilegeEscalation must be false (or unset: the operator sets false): the restricted Pod Security Standard requires it"},
        {"rule": "self.all(c, !has(c.securityContext) || ((!has(c.securityContext.runAsNonRoot) || c.securityContext.runAsNonRoot) && (!has(c.securityContext.runAsUser) || c.securityContext.runAsUser != 0)))",
         "message": "containers must not run as root (runAsNonRoot false or runAsUser 0): the restricted Pod Security Standard refuses it"},
        {"rule": "self.all(c, !has(c.securityContext) || !has(c.securityContext.capabilities) || !has(c.securityContext.capabilities.add) || size(c.securityContext.capabilities.add) == 0 || (size(c.securityContext.capabilities.add) == 1 && c.securityContext.capabilities.add[0] == 'NET_BIND_SERVICE'))",
         "message": "capabilities.add may only hold NET_BIND_SERVICE: the restricted Pod Security Standard refuses the others"},
        {"rule": "self.all(c, !has(c.securityContext) || !has(c.securityContext.seccompProfile) || c.securityContext.seccompProfile.type != 'Unconfined')",
         "message": "seccompProfile Unconfined is refused by the restricted Pod Security Standard: leave it unset (RuntimeDefault) or use Localhost"},
        {"rule": "self.all(c, !has(c.securityContext) || ((!has(c.securityContext.procMount) || c.securityContext.procMount == 'Default') && (!has(c.securityContext.windowsOptions) || !has(c.securityContext.windowsOptions.hostProcess) || !c.securityContext.windowsOptions.hostProcess)))",
         "message": "procMount other than Default and Windows hostProcess are refused by the restricted Pod Security Standard"}
    ]);
    if let serde_json::Value::Array(rest) = rest {
        first.extend(rest);
    }
    serde_json::Value::Array(first)
}

/// Health checks of a worker. A worker with a `port` gets HTTP liveness and
/// readiness probes on `livenessPath`/`readinessPath`. A worker without one gets a
/// liveness probe on its metrics endpoint (`GET /metrics` on `metricsPort`, which
/// every worker serves), so a hung process is restarted. Any probe can be replaced
/// with your own (`exec`, `tcpSocket`, `httpGet` or `grpc`); named ports are `http`
/// (with `port`) and `metrics`.
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
    /// Liveness probe replacing the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = one_handler()))]
    pub liveness: Option<Probe>,
    /// Readiness probe replacing the default one (a worker without `port` has none
    /// by default: it serves no traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = one_handler()))]
    pub readiness: Option<Probe>,
    /// Startup probe, for a worker that needs long to start (liveness waits for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = one_handler()))]
    pub startup: Option<Probe>,
    /// Give a worker the default liveness probe when `liveness` is not set. Default
    /// true; false runs it without one.
    #[serde(default = "default_true")]
    pub default_liveness: bool,
}

fn one_handler() -> serde_json::Value {
    serde_json::json!([
        {"rule": "[has(self.exec), has(self.httpGet), has(self.tcpSocket), has(self.grpc)].filter(x, x).size() == 1",
         "message": "a probe needs exactly one of exec, httpGet, tcpSocket or grpc"}
    ])
}

impl Default for WorkerProbes {
    fn default() -> Self {
        Self {
            liveness_path: default_liveness_path(),
            readiness_path: default_readiness_path(),
            liveness: None,
            readiness: None,
            startup: None,
            default_liveness: true,
        }
    }
}

fn default_true() -> bool {
    true
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
