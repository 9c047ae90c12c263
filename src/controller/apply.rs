//! The apply step: server-side apply of every built child under one field manager,
//! then deletion of children this system owns that are no longer wanted. Data-bearing
//! claims are never deleted here.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::reconcilers::Children;
use crate::reconcilers::meta::{MANAGER, system_selector};

use super::context::Capabilities;
use super::error::Error;

/// What the apply step returns for observation.
#[derive(Debug, Default)]
pub struct Applied {
    pub deployments: Vec<Deployment>,
    pub stateful_sets: Vec<StatefulSet>,
    /// Number of objects applied.
    pub count: usize,
    /// Monitoring objects wanted but not applied because their CRDs are missing.
    pub skipped_monitoring: Vec<&'static str>,
}

/// Where the children go and whose they are.
pub struct Target<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub system: &'a str,
    pub uid: &'a str,
}

fn owned_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
}

async fn apply_typed<K>(target: &Target<'_>, kind: &'static str, items: &[K], prune: bool) -> Result<Vec<K>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let api = Api::<K>::namespaced(target.client.clone(), target.namespace);
    let params = PatchParams::apply(MANAGER).force();
    let mut applied = Vec::with_capacity(items.len());
    let mut wanted = BTreeSet::new();
    for item in items {
        let name = item.name_any();
        let result = api.patch(&name, &params, &Patch::Apply(item)).await.map_err(|source| Error::Apply {
            kind,
            name: name.clone(),
            source,
        })?;
        wanted.insert(name);
        applied.push(result);
    }
    if prune {
        let selector = system_selector(target.system);
        let existing = api
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| Error::ListChildren { kind, system: target.system.to_string(), source })?;
        for object in existing {
            let name = object.name_any();
            if !wanted.contains(&name) && owned_by(&object.metadata, target.uid) {
                tracing::info!(kind, name, system = target.system, "deleting a child that is no longer wanted");
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.is_not_found() => {}
                    Err(source) => return Err(Error::Prune { kind, name, source }),
                }
            }
        }
    }
    Ok(applied)
}

async fn apply_dynamic(
    target: &Target<'_>,
    kind: &'static str,
    resource: Option<&ApiResource>,
    items: &[DynamicObject],
) -> Result<bool, Error> {
    let Some(resource) = resource else { return Ok(false) };
    let api = Api::<DynamicObject>::namespaced_with(target.client.clone(), target.namespace, resource);
    let params = PatchParams::apply(MANAGER).force();
    let mut wanted = BTreeSet::new();
    for item in items {
        let name = item.name_any();
        api.patch(&name, &params, &Patch::Apply(item)).await.map_err(|source| Error::Apply {
            kind,
            name: name.clone(),
            source,
        })?;
        wanted.insert(name);
    }
    let existing = api
        .list_metadata(&ListParams::default().labels(&system_selector(target.system)))
        .await
        .map_err(|source| Error::ListChildren { kind, system: target.system.to_string(), source })?;
    for object in existing {
        let name = object.name_any();
        if !wanted.contains(&name) && owned_by(&object.metadata, target.uid) {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(source) => return Err(Error::Prune { kind, name, source }),
            }
        }
    }
    Ok(true)
}

/// Applies every child and prunes the unwanted ones.
pub async fn apply_all(
    target: &Target<'_>,
    children: &Children,
    capabilities: &Capabilities,
) -> Result<Applied, Error> {
    // Destructured without `..`: a child kind added to Children but not applied here
    // does not compile.
    let Children {
        service_accounts,
        roles,
        role_bindings,
        config_maps,
        persistent_volume_claims,
        services,
        stateful_sets,
        deployments,
        pod_disruption_budgets,
        horizontal_pod_autoscalers,
        network_policies,
        cron_jobs,
        prometheus_rules,
        service_monitors,
    } = children;
    apply_typed(target, "ServiceAccount", service_accounts, true).await?;
    apply_typed(target, "Role", roles, true).await?;
    apply_typed(target, "RoleBinding", role_bindings, true).await?;
    apply_typed(target, "ConfigMap", config_maps, true).await?;
    // Claims hold data: applied, never pruned.
    apply_typed(target, "PersistentVolumeClaim", persistent_volume_claims, false).await?;
    apply_typed(target, "Service", services, true).await?;
    let stateful_sets = apply_typed(target, "StatefulSet", stateful_sets, true).await?;
    let deployments = apply_typed(target, "Deployment", deployments, true).await?;
    apply_typed(target, "PodDisruptionBudget", pod_disruption_budgets, true).await?;
    apply_typed(target, "HorizontalPodAutoscaler", horizontal_pod_autoscalers, true).await?;
    apply_typed(target, "NetworkPolicy", network_policies, true).await?;
    apply_typed(target, "CronJob", cron_jobs, true).await?;
    let mut skipped_monitoring = Vec::new();
    if !apply_dynamic(target, "PrometheusRule", capabilities.prometheus_rule.as_ref(), prometheus_rules).await?
        && !prometheus_rules.is_empty()
    {
        skipped_monitoring.push("PrometheusRule");
    }
    if !apply_dynamic(target, "ServiceMonitor", capabilities.service_monitor.as_ref(), service_monitors).await?
        && !service_monitors.is_empty()
    {
        skipped_monitoring.push("ServiceMonitor");
    }
    let count = service_accounts.len()
        + roles.len()
        + role_bindings.len()
        + config_maps.len()
        + persistent_volume_claims.len()
        + services.len()
        + stateful_sets.len()
        + deployments.len()
        + pod_disruption_budgets.len()
        + horizontal_pod_autoscalers.len()
        + network_policies.len()
        + cron_jobs.len()
        + if capabilities.prometheus_rule.is_some() { prometheus_rules.len() } else { 0 }
        + if capabilities.service_monitor.is_some() { service_monitors.len() } else { 0 };
    Ok(Applied { deployments, stateful_sets, count, skipped_monitoring })
}
