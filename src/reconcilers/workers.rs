//! Workers: a Deployment per worker, with a Service (HTTP and metrics when the worker
//! has a port; otherwise a headless one for the ServiceMonitor alone, see
//! [`Children::metrics_services`]), a PodDisruptionBudget when more than one pod runs,
//! and a HorizontalPodAutoscaler when autoscaling is set.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodTemplateSpec, Probe, ResourceRequirements, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::WorkerSpec;
use crate::crd::validate::ValidatedSystem;

use super::env::service_env;
use super::meta::{
    ANNOTATION_SECRETS_HASH, ANNOTATION_WORKER_IMAGE, LABEL_WORKER, MAX_DNS_LABEL, child_name, labels, object_meta,
    selector_labels,
};
use super::security::{restricted_container, restricted_pod};
use super::{BuildContext, Children};

/// `app.kubernetes.io/component` of every worker object.
pub const COMPONENT: &str = "worker";

/// Name of a worker's Deployment, Service, PDB and HPA.
pub fn worker_name(system: &ValidatedSystem, worker: &str) -> String {
    child_name(&system.name, worker, MAX_DNS_LABEL)
}

/// Adds every worker's objects to `children`.
pub fn build(system: &ValidatedSystem, ctx: &BuildContext, children: &mut Children) {
    for worker in &system.spec.workers {
        children.deployments.push(deployment(system, ctx, worker));
        if worker.port.is_some() {
            children.services.push(service(system, worker));
        } else if system.spec.monitoring.service_monitor {
            children.metrics_services.push(service(system, worker));
        }
        children.pod_disruption_budgets.extend(disruption_budget(system, worker));
        children.horizontal_pod_autoscalers.extend(autoscaler(system, worker));
    }
}

fn worker_selector(system: &ValidatedSystem, worker: &WorkerSpec) -> BTreeMap<String, String> {
    let mut selector = selector_labels(system, COMPONENT);
    selector.insert(LABEL_WORKER.into(), worker.name.clone());
    selector
}

fn worker_meta(system: &ValidatedSystem, worker: &WorkerSpec) -> ObjectMeta {
    let mut meta = object_meta(system, worker_name(system, &worker.name), COMPONENT);
    meta.labels.get_or_insert_with(BTreeMap::new).insert(LABEL_WORKER.into(), worker.name.clone());
    meta
}

/// Replica count the Deployment carries: none under autoscaling (the HPA owns it),
/// zero when the system is stopped.
fn replicas(system: &ValidatedSystem, worker: &WorkerSpec) -> Option<i32> {
    if system.spec.stopped {
        Some(0)
    } else if worker.autoscaling.is_some() {
        None
    } else {
        Some(worker.replicas.unwrap_or(1))
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("250m".into())),
            ("memory".to_string(), Quantity("512Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("4Gi".into()))])),
        ..ResourceRequirements::default()
    }
}

fn http_probe(path: &str, initial_delay: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(10),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn deployment(system: &ValidatedSystem, ctx: &BuildContext, worker: &WorkerSpec) -> Deployment {
    let spec = &system.spec;
    let mut ports = Vec::new();
    if let Some(port) = worker.port {
        ports.push(ContainerPort { name: Some("http".into()), container_port: port, ..ContainerPort::default() });
    }
    ports.push(ContainerPort {
        name: Some("metrics".into()),
        container_port: spec.monitoring.metrics_port,
        ..ContainerPort::default()
    });
    let mut env = service_env(system);
    env.extend(worker.env.iter().cloned());
    let image = worker.image.clone().unwrap_or_else(|| spec.image.clone());
    let container = Container {
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: worker.command.clone(),
        args: worker.args.clone(),
        env: Some(env),
        ports: Some(ports),
        resources: Some(worker.resources.clone().unwrap_or_else(default_resources)),
        liveness_probe: worker.port.map(|_| http_probe(&worker.probes.liveness_path, 15)),
        readiness_probe: worker.port.map(|_| http_probe(&worker.probes.readiness_path, 5)),
        ..restricted_container(worker.name.clone(), image)
    };
    let mut template_labels = labels(system, COMPONENT);
    template_labels.insert(LABEL_WORKER.into(), worker.name.clone());
    let annotations =
        ctx.secrets_hash.as_ref().map(|hash| BTreeMap::from([(ANNOTATION_SECRETS_HASH.to_string(), hash.clone())]));
    let mut metadata = worker_meta(system, worker);
    metadata.annotations =
        Some(BTreeMap::from([(ANNOTATION_WORKER_IMAGE.to_string(), container.image.clone().unwrap_or_default())]));
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: replicas(system, worker),
            revision_history_limit: Some(5),
            progress_deadline_seconds: system.spec.upgrade.progress_deadline_seconds,
            selector: LabelSelector { match_labels: Some(worker_selector(system, worker)), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(template_labels), annotations, ..ObjectMeta::default() }),
                spec: Some(restricted_pod(system, vec![container])),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn service(system: &ValidatedSystem, worker: &WorkerSpec) -> Service {
    let mut ports = Vec::new();
    if let Some(port) = worker.port {
        ports.push(ServicePort {
            name: Some("http".into()),
            port,
            target_port: Some(IntOrString::String("http".into())),
            ..ServicePort::default()
        });
    }
    ports.push(ServicePort {
        name: Some("metrics".into()),
        port: system.spec.monitoring.metrics_port,
        target_port: Some(IntOrString::String("metrics".into())),
        ..ServicePort::default()
    });
    Service {
        metadata: worker_meta(system, worker),
        spec: Some(ServiceSpec {
            // Without an HTTP port the Service only lets the ServiceMonitor find the
            // pods: it needs no virtual IP (scrapes go to each pod), so none is
            // allocated. A cluster IP cannot change in place; the apply step recreates
            // the Service when a port comes or goes.
            cluster_ip: worker.port.is_none().then(|| "None".into()),
            selector: Some(worker_selector(system, worker)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn disruption_budget(system: &ValidatedSystem, worker: &WorkerSpec) -> Option<PodDisruptionBudget> {
    if system.spec.stopped {
        return None;
    }
    let fewest = match &worker.autoscaling {
        Some(scaling) => scaling.min_replicas,
        None => worker.replicas.unwrap_or(1),
    };
    (fewest > 1).then(|| PodDisruptionBudget {
        metadata: worker_meta(system, worker),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(worker_selector(system, worker)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

fn autoscaler(system: &ValidatedSystem, worker: &WorkerSpec) -> Option<HorizontalPodAutoscaler> {
    if system.spec.stopped {
        return None;
    }
    let scaling = worker.autoscaling.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: worker_meta(system, worker),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: worker_name(system, &worker.name),
            },
            min_replicas: Some(scaling.min_replicas),
            max_replicas: scaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(scaling.target_cpu_utilization),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    })
}
