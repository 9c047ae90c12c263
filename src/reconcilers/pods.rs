//! What every pod the operator creates gets from the spec besides its containers:
//! placement and extra metadata (`spec.pods`, overridden per worker and for Redis),
//! the default spread of a multi-pod worker over nodes and zones, and the TLS files
//! of MongoDB and Redis with the variables naming them. Every pod builder (workers,
//! Redis, CronJobs, one-off Jobs) ends with [`integrate`], so no kind of pod can
//! miss one of them.
//!
//! Pure: spec in, pod out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, PodSpec, ProjectedVolumeSource, SecretProjection, TopologySpreadConstraint, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::crd::WorkerSpec;
use crate::crd::pods::PodOptions;
use crate::crd::validate::ValidatedSystem;

use super::env::{TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE, TlsTarget};

/// Node label of the default spread over nodes.
pub const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";
/// Node label of the default spread over zones.
pub const ZONE_TOPOLOGY: &str = "topology.kubernetes.io/zone";
/// Label the Deployment controller puts on each ReplicaSet's pods: counting only the
/// pods of the same ReplicaSet keeps a rollout from skewing the spread.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Which pod is being finished.
pub enum PodRole<'a> {
    /// A worker's pods, with the labels that select them.
    Worker { worker: &'a WorkerSpec, selector: BTreeMap<String, String> },
    /// The managed Redis.
    Redis,
    /// Any job: chain check, backup, restore, maintenance, migration, verification.
    Job,
}

/// The pod options in force for `role`: `spec.pods` under the part's own.
pub fn options_for(system: &ValidatedSystem, role: &PodRole<'_>) -> PodOptions {
    let base = system.spec.pods.clone().unwrap_or_default();
    match role {
        PodRole::Worker { worker, .. } => base.overridden_by(worker.pods.as_ref()),
        PodRole::Redis => base.overridden_by(system.spec.redis.managed.as_ref().and_then(|m| m.pods.as_ref())),
        PodRole::Job => base,
    }
}

/// Whether a worker may run more than one pod.
fn runs_several(worker: &WorkerSpec) -> bool {
    match &worker.autoscaling {
        Some(scaling) => scaling.max_replicas > 1,
        None => worker.replicas.unwrap_or(1) > 1,
    }
}

/// The spread a worker with several pods gets unless told otherwise: at most one
/// pod more on any node, and on any zone, than on the emptiest, as a preference
/// (`ScheduleAnyway`), so a one-node or one-zone cluster still runs every pod.
pub fn default_spread(selector: &BTreeMap<String, String>) -> Vec<TopologySpreadConstraint> {
    [HOSTNAME_TOPOLOGY, ZONE_TOPOLOGY]
        .into_iter()
        .map(|topology_key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: topology_key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector { match_labels: Some(selector.clone()), match_expressions: None }),
            match_label_keys: Some(vec![POD_TEMPLATE_HASH.into()]),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

/// Finishes a pod template: placement, extra labels and annotations (the operator's
/// own keys win), and the TLS files (not for Redis, which serves without TLS).
pub fn integrate(system: &ValidatedSystem, role: PodRole<'_>, meta: &mut ObjectMeta, pod: &mut PodSpec) {
    let options = options_for(system, &role);
    if !options.node_selector.is_empty() {
        pod.node_selector = Some(options.node_selector.clone());
    }
    pod.affinity = options.affinity.clone();
    pod.tolerations = options.tolerations.clone().filter(|t| !t.is_empty());
    pod.priority_class_name = options.priority_class_name.clone();
    pod.topology_spread_constraints = match (&options.topology_spread_constraints, &role) {
        (Some(constraints), _) => (!constraints.is_empty()).then(|| constraints.clone()),
        (None, PodRole::Worker { worker, selector }) if runs_several(worker) => Some(default_spread(selector)),
        (None, _) => None,
    };
    add_missing(meta.labels.get_or_insert_with(BTreeMap::new), &options.labels);
    if !options.annotations.is_empty() {
        add_missing(meta.annotations.get_or_insert_with(BTreeMap::new), &options.annotations);
    }
    if !matches!(role, PodRole::Redis) {
        for target in [TlsTarget::MongoDb, TlsTarget::Redis] {
            add_tls(system, target, pod);
        }
    }
}

fn add_missing(ours: &mut BTreeMap<String, String>, theirs: &BTreeMap<String, String>) {
    for (key, value) in theirs {
        ours.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

/// The projected volume of `target`'s CA and client certificate.
pub fn tls_volume(system: &ValidatedSystem, target: TlsTarget) -> Option<Volume> {
    let tls = target.spec(system)?;
    let mut sources = Vec::new();
    if let Some(ca) = &tls.ca_secret_ref {
        sources.push(secret_projection(&ca.name, &[(&ca.key, TLS_CA_FILE)]));
    }
    if let Some((cert, key)) = tls.client_certificate_refs() {
        sources.push(secret_projection(&cert.name, &[(&cert.key, TLS_CERT_FILE), (&key.key, TLS_KEY_FILE)]));
    }
    Some(Volume {
        name: target.volume().into(),
        projected: Some(ProjectedVolumeSource {
            // Readable by the pod's group (fsGroup), not by the world.
            default_mode: Some(0o440),
            sources: Some(sources),
        }),
        ..Volume::default()
    })
}

fn secret_projection(name: &str, items: &[(&str, &str)]) -> VolumeProjection {
    VolumeProjection {
        secret: Some(SecretProjection {
            name: name.to_string(),
            items: Some(
                items
                    .iter()
                    .map(|(key, path)| KeyToPath { key: key.to_string(), path: path.to_string(), mode: None })
                    .collect(),
            ),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    }
}

fn add_tls(system: &ValidatedSystem, target: TlsTarget, pod: &mut PodSpec) {
    let Some(volume) = tls_volume(system, target) else { return };
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    if !volumes.iter().any(|v| v.name == volume.name) {
        volumes.push(volume);
    }
    let mount = VolumeMount {
        name: target.volume().into(),
        mount_path: target.mount_path(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let env = target.file_env(system);
    let containers = pod.containers.iter_mut().chain(pod.init_containers.iter_mut().flatten());
    for container in containers {
        add_mount_and_env(container, &mount, &env);
    }
}

fn add_mount_and_env(container: &mut Container, mount: &VolumeMount, env: &[EnvVar]) {
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    if !mounts.iter().any(|m| m.name == mount.name) {
        mounts.push(mount.clone());
    }
    let vars = container.env.get_or_insert_with(Vec::new);
    for var in env {
        if !vars.iter().any(|v| v.name == var.name) {
            vars.push(var.clone());
        }
    }
}
