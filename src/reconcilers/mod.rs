//! Pure builders: a [`ValidatedSystem`] in, every child object out. One module per
//! concern; none of them needs a client, so each is tested without a cluster. The
//! controller's apply step takes the [`Children`] whole.

pub mod backup;
pub mod chain_check;
pub mod cron;
pub mod dashboards;
pub mod env;
pub mod job;
pub mod job_identity;
pub mod maintenance;
pub mod meta;
pub mod monitoring;
pub mod pods;
pub mod redis;
pub mod restore;
pub mod restore_drill;
pub mod restore_step;
pub mod security;
pub mod upgrade;
pub mod upgrade_step;
pub mod workers;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::DynamicObject;

use crate::crd::validate::ValidatedSystem;

/// What the builders need besides the spec, supplied by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContext {
    /// Image of this operator; the chain-check and backup jobs run it.
    pub operator_image: String,
    /// Hash of the data of every Secret the system references, when known (the
    /// controller reads them; `render` cannot). Goes into pod templates so a
    /// rotation rolls the pods.
    pub secrets_hash: Option<String>,
    /// Where the operator's own pods run, when it runs in the cluster: its probes
    /// must get through the NetworkPolicies it writes.
    pub operator_pods: Option<OperatorPods>,
}

/// The operator's pods: their namespace and the labels that select them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Every object one ReferralSystem wants in the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Children {
    pub service_accounts: Vec<ServiceAccount>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    pub config_maps: Vec<ConfigMap>,
    pub persistent_volume_claims: Vec<PersistentVolumeClaim>,
    pub services: Vec<Service>,
    /// Services of workers without an HTTP port. Only the ServiceMonitor uses them
    /// (scrapes go to each pod), so they are applied with it: only when its CRD exists.
    pub metrics_services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    pub horizontal_pod_autoscalers: Vec<HorizontalPodAutoscaler>,
    pub network_policies: Vec<NetworkPolicy>,
    pub cron_jobs: Vec<CronJob>,
    /// `monitoring.coreos.com/v1` PrometheusRule; applied only when its CRD exists.
    pub prometheus_rules: Vec<DynamicObject>,
    /// `monitoring.coreos.com/v1` ServiceMonitor; applied only when its CRD exists.
    pub service_monitors: Vec<DynamicObject>,
}

/// Builds every child of `system`.
pub fn build(system: &ValidatedSystem, ctx: &BuildContext) -> Children {
    let mut children = Children::default();
    workers::build(system, ctx, &mut children);
    redis::build(system, ctx, &mut children);
    job_identity::build(system, &mut children);
    backup::build(system, ctx, &mut children);
    chain_check::build(system, ctx, &mut children);
    maintenance::build(system, ctx, &mut children);
    children.prometheus_rules.extend(monitoring::prometheus_rule(system));
    children.service_monitors.extend(monitoring::service_monitor(system));
    children.config_maps.extend(dashboards::dashboard_config_map(system));
    children
}

impl Children {
    /// Every object as JSON, in a stable order: by kind in apply order (identity and
    /// configuration before the workloads that use them), then by name.
    pub fn to_json_objects(&self) -> Vec<serde_json::Value> {
        // Destructured without `..`: a new child kind that is not listed here fails to compile.
        let Children {
            service_accounts,
            roles,
            role_bindings,
            config_maps,
            persistent_volume_claims,
            services,
            metrics_services,
            stateful_sets,
            deployments,
            pod_disruption_budgets,
            horizontal_pod_autoscalers,
            network_policies,
            cron_jobs,
            prometheus_rules,
            service_monitors,
        } = self;
        let mut out = Vec::new();
        push_sorted(&mut out, service_accounts, "v1", "ServiceAccount");
        push_sorted(&mut out, roles, "rbac.authorization.k8s.io/v1", "Role");
        push_sorted(&mut out, role_bindings, "rbac.authorization.k8s.io/v1", "RoleBinding");
        push_sorted(&mut out, config_maps, "v1", "ConfigMap");
        push_sorted(&mut out, persistent_volume_claims, "v1", "PersistentVolumeClaim");
        let all_services: Vec<&Service> = services.iter().chain(metrics_services).collect();
        push_sorted(&mut out, &all_services, "v1", "Service");
        push_sorted(&mut out, stateful_sets, "apps/v1", "StatefulSet");
        push_sorted(&mut out, deployments, "apps/v1", "Deployment");
        push_sorted(&mut out, pod_disruption_budgets, "policy/v1", "PodDisruptionBudget");
        push_sorted(&mut out, horizontal_pod_autoscalers, "autoscaling/v2", "HorizontalPodAutoscaler");
        push_sorted(&mut out, network_policies, "networking.k8s.io/v1", "NetworkPolicy");
        push_sorted(&mut out, cron_jobs, "batch/v1", "CronJob");
        push_sorted(&mut out, prometheus_rules, monitoring::API_VERSION, "PrometheusRule");
        push_sorted(&mut out, service_monitors, monitoring::API_VERSION, "ServiceMonitor");
        out
    }
}

fn push_sorted<T: serde::Serialize>(out: &mut Vec<serde_json::Value>, items: &[T], api_version: &str, kind: &str) {
    let mut values: Vec<serde_json::Value> = items
        .iter()
        .filter_map(|item| serde_json::to_value(item).ok())
        .map(|mut value| {
            if let Some(map) = value.as_object_mut() {
                // Typed k8s-openapi values serialise apiVersion/kind themselves;
                // DynamicObject carries them in `types`. Set both the same way.
                map.insert("apiVersion".into(), api_version.into());
                map.insert("kind".into(), kind.into());
            }
            value
        })
        .collect();
    values.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
    out.extend(values);
}
