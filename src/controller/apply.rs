//! The apply step: server-side apply of every built child under one field manager,
//! then deletion of children this system owns that are no longer wanted. Data-bearing
//! claims are never deleted here.
//!
//! The writes of one phase go out together: identity and configuration first (the
//! ServiceAccount, Role, ConfigMaps and Services the workloads refer to), then the
//! RoleBinding, the workloads and what guards them. One after the other, each of a
//! new system's writes waited for the round trip of the one before. A RoleBinding
//! must not overtake its Role: without the `bind` verb (which the chart does not
//! grant) the API server checks the operator holds every rule of the bound Role, and
//! answers NotFound while the Role does not exist yet.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::discovery::ApiResource;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::reconcilers::Children;
use crate::reconcilers::meta::{MANAGER, system_selector};

use super::context::Capabilities;
use super::error::Error;
use super::live::{ChildKey, LiveState, content_hash};

/// What the apply step did, and the workloads it patched (fresh from the server).
#[derive(Debug, Default)]
pub struct Applied {
    /// Deployments patched in this reconcile; unchanged ones are in the live state.
    pub deployments: Vec<Deployment>,
    /// StatefulSets patched in this reconcile.
    pub stateful_sets: Vec<StatefulSet>,
    /// Children patched (a write request each).
    pub patched: usize,
    /// Children skipped because nothing changed since our last apply.
    pub unchanged: usize,
    /// Children deleted as no longer wanted.
    pub deleted: usize,
    /// Label lists made to prune (before the watches had listed, or unwatched kinds).
    pub listed: usize,
    /// Number of objects applied.
    pub count: usize,
    /// Monitoring objects wanted but not applied because their CRDs are missing.
    pub skipped_monitoring: Vec<&'static str>,
    /// Metrics-only worker Services not applied because the ServiceMonitor is not.
    pub skipped_metrics_services: usize,
}

/// Where the children go and whose they are.
pub struct Target<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub system: &'a str,
    pub uid: &'a str,
    pub live: &'a LiveState,
}

fn owned_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
}

/// What applying one kind did, added into [`Applied`] once a phase is done.
#[derive(Debug, Default)]
struct Tally {
    patched: usize,
    unchanged: usize,
    deleted: usize,
    listed: usize,
}

impl Applied {
    fn add(&mut self, tally: Tally) {
        self.patched += tally.patched;
        self.unchanged += tally.unchanged;
        self.deleted += tally.deleted;
        self.listed += tally.listed;
    }
}

/// Server-side applies `items` of one kind, all at once, skipping those the watch
/// shows unchanged since our last apply, then (with `prune`) deletes owned children
/// not in `items`. Returns what was patched, fresh from the server.
async fn apply_typed<K>(
    target: &Target<'_>,
    kind: &'static str,
    items: &[K],
    prune: bool,
) -> Result<(Vec<K>, Tally), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let api = Api::<K>::namespaced(target.client.clone(), target.namespace);
    let params = PatchParams::apply(MANAGER).force();
    let mut tally = Tally::default();
    let mut wanted = BTreeSet::new();
    let mut writes = Vec::new();
    for item in items {
        let name = item.name_any();
        let key = ChildKey::new(kind, target.namespace, &name);
        let desired = content_hash(item);
        wanted.insert(name.clone());
        if target.live.unchanged_since_apply(&key, desired) {
            tally.unchanged += 1;
            continue;
        }
        let (api, params) = (&api, &params);
        writes.push(async move {
            let result = apply_child(api, params, item).await.map_err(|source| Error::Apply { kind, name, source })?;
            target.live.record_apply(key, desired, result.meta());
            Ok::<K, Error>(result)
        });
    }
    let returned = futures::future::try_join_all(writes).await?;
    tally.patched = returned.len();
    if prune {
        prune_typed(target, kind, &api, &wanted, &mut tally).await?;
    }
    Ok((returned, tally))
}

/// Server-side applies one child with `params`. A Service whose cluster IP has to
/// change between none (headless) and allocated is deleted and created again: the API
/// server refuses to change an allocated IP to none, and silently keeps none when the
/// field is left out, so neither direction can happen in place.
pub async fn apply_child<K>(api: &Api<K>, params: &PatchParams, item: &K) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = item.name_any();
    let applied = api.patch(&name, params, &Patch::Apply(item)).await;
    if K::kind(&()) != "Service" {
        return applied;
    }
    let wanted = headless(item);
    let live = match applied {
        Ok(live) if headless(&live) == wanted => return Ok(live),
        Ok(live) => live,
        // Invalid only for the cluster IP? Only then is recreating the answer: a
        // Service refused for anything else stays as it is.
        Err(kube::Error::Api(status)) if status.code == 422 && only_cluster_ip_refused(&status) => {
            match api.get_opt(&name).await? {
                Some(live) if headless(&live) != wanted => live,
                _ => return Err(kube::Error::Api(status)),
            }
        }
        Err(e) => return Err(e),
    };
    tracing::info!(
        name,
        namespace = item.meta().namespace.as_deref().unwrap_or_default(),
        headless = wanted,
        "recreating the Service: its cluster IP cannot change between none and allocated in place"
    );
    // Only the object just read: a Service someone recreated meanwhile is not deleted.
    let preconditions = Preconditions { uid: live.uid(), resource_version: None };
    match api.delete(&name, &DeleteParams { preconditions: Some(preconditions), ..DeleteParams::background() }).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(e) => return Err(e),
    }
    api.patch(&name, params, &Patch::Apply(item)).await
}

/// Whether every cause the API server gave for refusing a Service is its cluster IP.
fn only_cluster_ip_refused(status: &kube::core::Status) -> bool {
    let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    !causes.is_empty() && causes.iter().all(|c| c.field.starts_with("spec.clusterIP"))
}

/// Whether a Service's `spec.clusterIP` is "None".
fn headless(service: &impl Serialize) -> bool {
    serde_json::to_value(service)
        .ok()
        .and_then(|v| v.pointer("/spec/clusterIP").and_then(Value::as_str).map(|ip| ip == "None"))
        .unwrap_or(false)
}

/// Deletes children of `kind` this system controls that are no longer wanted. Reads
/// the watch-fed state once it has listed; before that, lists by label.
async fn prune_typed<K>(
    target: &Target<'_>,
    kind: &'static str,
    api: &Api<K>,
    wanted: &BTreeSet<String>,
    tally: &mut Tally,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let owned = if target.live.synced(kind, target.namespace) {
        target.live.owned(kind, target.namespace, target.uid)
    } else {
        tally.listed += 1;
        api.list_metadata(&ListParams::default().labels(&system_selector(target.system)))
            .await
            .map_err(|source| Error::ListChildren { kind, system: target.system.to_string(), source })?
            .into_iter()
            .filter(|o| owned_by(&o.metadata, target.uid))
            .map(|o| o.name_any())
            .collect()
    };
    for name in owned.into_iter().filter(|n| !wanted.contains(n)) {
        tracing::info!(kind, name, system = target.system, "deleting a child that is no longer wanted");
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(source) => return Err(Error::Prune { kind, name, source }),
        }
        target.live.forget(&ChildKey::new(kind, target.namespace, &name));
        tally.deleted += 1;
    }
    Ok(())
}

/// Kinds that are not watched (they may not exist in the cluster): the live object is
/// read before deciding to patch, and pruning lists by label. Reads, never idle writes.
async fn apply_dynamic(
    target: &Target<'_>,
    kind: &'static str,
    resource: Option<&ApiResource>,
    items: &[DynamicObject],
    applied: &mut Applied,
) -> Result<bool, Error> {
    let Some(resource) = resource else { return Ok(false) };
    let api = Api::<DynamicObject>::namespaced_with(target.client.clone(), target.namespace, resource);
    let params = PatchParams::apply(MANAGER).force();
    let mut wanted = BTreeSet::new();
    for item in items {
        let name = item.name_any();
        let key = ChildKey::new(kind, target.namespace, &name);
        let desired = content_hash(item);
        wanted.insert(name.clone());
        let live =
            api.get_metadata_opt(&name).await.map_err(|source| Error::Read { kind, name: name.clone(), source })?;
        if live.is_some_and(|live| target.live.unchanged_against(&key, desired, &live.metadata)) {
            applied.unchanged += 1;
            continue;
        }
        let result = api.patch(&name, &params, &Patch::Apply(item)).await.map_err(|source| Error::Apply {
            kind,
            name: name.clone(),
            source,
        })?;
        target.live.record_apply(key, desired, &result.metadata);
        applied.patched += 1;
    }
    applied.listed += 1;
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
            target.live.forget(&ChildKey::new(kind, target.namespace, &name));
            applied.deleted += 1;
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
        metrics_services,
        stateful_sets,
        deployments,
        pod_disruption_budgets,
        horizontal_pod_autoscalers,
        network_policies,
        cron_jobs,
        prometheus_rules,
        service_monitors,
    } = children;
    let mut applied = Applied::default();
    // Metrics-only Services go with the ServiceMonitor; without its CRD they are not
    // wanted, so one left from before is pruned with the other unwanted Services.
    let with_metrics;
    let services: &[_] = if capabilities.service_monitor.is_some() && !metrics_services.is_empty() {
        with_metrics = services.iter().chain(metrics_services).cloned().collect::<Vec<_>>();
        &with_metrics
    } else {
        services
    };
    // Identity and configuration, then the workloads that use them.
    let ((_, t1), (_, t2), (_, t3), (_, t4), (_, t5)) = tokio::try_join!(
        apply_typed(target, "ServiceAccount", service_accounts, true),
        apply_typed(target, "Role", roles, true),
        apply_typed(target, "ConfigMap", config_maps, true),
        // Claims hold data: applied, never pruned.
        apply_typed(target, "PersistentVolumeClaim", persistent_volume_claims, false),
        apply_typed(target, "Service", services, true),
    )?;
    for tally in [t1, t2, t3, t4, t5] {
        applied.add(tally);
    }
    let ((_, t0), (sets, t1), (deploys, t2), (_, t3), (_, t4), (_, t5), (_, t6)) = tokio::try_join!(
        // After its Role (see the module doc).
        apply_typed(target, "RoleBinding", role_bindings, true),
        apply_typed(target, "StatefulSet", stateful_sets, true),
        apply_typed(target, "Deployment", deployments, true),
        apply_typed(target, "PodDisruptionBudget", pod_disruption_budgets, true),
        apply_typed(target, "HorizontalPodAutoscaler", horizontal_pod_autoscalers, true),
        apply_typed(target, "NetworkPolicy", network_policies, true),
        apply_typed(target, "CronJob", cron_jobs, true),
    )?;
    applied.stateful_sets = sets;
    applied.deployments = deploys;
    for tally in [t0, t1, t2, t3, t4, t5, t6] {
        applied.add(tally);
    }
    let a = &mut applied;
    if !apply_dynamic(target, "PrometheusRule", capabilities.prometheus_rule.as_ref(), prometheus_rules, a).await?
        && !prometheus_rules.is_empty()
    {
        a.skipped_monitoring.push("PrometheusRule");
    }
    if !apply_dynamic(target, "ServiceMonitor", capabilities.service_monitor.as_ref(), service_monitors, a).await?
        && !service_monitors.is_empty()
    {
        a.skipped_monitoring.push("ServiceMonitor");
        a.skipped_metrics_services = metrics_services.len();
    }
    applied.count = service_accounts.len()
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
    Ok(applied)
}
