//! `referral-operator run`: wires the kube-runtime Controller(s), the health and
//! metrics endpoints, leader election and periodic discovery together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{Controller, WatchStreamExt};

use kube::{Client, Resource, ResourceExt};

use crate::crd::ReferralSystem;
use crate::reconcilers::meta::{LABEL_MANAGED_BY, MANAGER};

use super::api_retry::SpreadRetry;
use super::context::{Capabilities, Context, ControllerSettings};
use super::error::Error;
use super::http::{self, Health};
use super::leader::{self, LeaseConfig};
use super::live::Observable;
use super::metrics::Metrics;
use super::reconcile::{error_policy, reconcile};

/// How `run` was asked to behave.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Watch only these namespaces; all when empty.
    pub namespaces: Vec<String>,
    pub listen: SocketAddr,
    pub settings: ControllerSettings,
    /// Hold a Lease before writing; `None` runs without election (one replica).
    pub lease: Option<LeaseConfig>,
    /// How often to look for the prometheus-operator CRDs again.
    pub discovery_interval: Duration,
}

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build a Kubernetes client (in-cluster config or KUBECONFIG): {source}")]
    Client { source: kube::Error },
    #[error("the health and metrics server failed: {source}")]
    Http { source: http::HttpError },
    #[error("lost the leader lease {name}; exiting so a replica that holds it takes over")]
    LostLease { name: String },
}

/// Looks for the prometheus-operator kinds.
pub async fn discover(client: &Client) -> Capabilities {
    match kube::discovery::group(client, "monitoring.coreos.com").await {
        Ok(group) => Capabilities {
            prometheus_rule: group.recommended_kind("PrometheusRule").map(|(r, _)| r),
            service_monitor: group.recommended_kind("ServiceMonitor").map(|(r, _)| r),
        },
        Err(_) => Capabilities::default(),
    }
}

/// The annotation `kubectl apply` (client-side) keeps the whole applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A trigger stream without its errors, which are logged instead. Each watch retries
/// with its own back-off; an error that reached the Controller would make it back off
/// its whole merged trigger stream, so one failing watch (the ReferralRestore one while
/// that CRD is not installed) would hold back every trigger, news included.
fn without_errors<T: Send + 'static>(
    stream: impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    watch: &'static str,
) -> impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static {
    stream.filter(move |item| {
        if let Err(error) = item {
            tracing::debug!(%error, watch, "watch failed; it retries on its own");
        }
        futures::future::ready(item.is_ok())
    })
}

fn child_config() -> watcher::Config {
    watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"))
}

/// One Controller over one namespace (or all), sharing `ctx`.
async fn controller(client: Client, namespace: Option<String>, ctx: Arc<Context>) {
    fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let systems: Api<PartialObjectMeta<ReferralSystem>> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Only the systems' metadata is cached; each reconcile reads its system whole
    // (see `reconcile::fetch`): whole systems, with their defaults and conditions,
    // were the largest thing the operator held (docs/benchmarks.md, "Round 3").
    // Managed fields and `kubectl apply`'s copy of the whole spec go too.
    let (reader, writer) = reflector::store();
    let stream = watcher(systems, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|meta: &mut PartialObjectMeta<ReferralSystem>| {
            let meta = meta.meta_mut();
            meta.managed_fields = None;
            if let Some(annotations) = meta.annotations.as_mut() {
                annotations.remove(LAST_APPLIED);
            }
        })
        .reflect(writer)
        .touched_objects()
        // The echo of our own status patch is no news to the reconcile that wrote it;
        // waking for it would only run a reconcile that finds nothing to do.
        .try_filter({
            let ctx = ctx.clone();
            move |meta| {
                let echo = ctx.live.is_status_echo(
                    meta.metadata.namespace.as_deref().unwrap_or_default(),
                    meta.metadata.name.as_deref().unwrap_or_default(),
                    meta.metadata.resource_version.as_deref(),
                );
                futures::future::ready(!echo)
            }
        });
    // Every child watch feeds the live state (what the apply step compares against)
    // before it wakes the owner's reconcile, which it does only for news: not for the
    // echo of the operator's own apply (see `LiveState::observe`).
    fn feed<K>(
        api: Api<K>,
        scope: &Option<String>,
        ctx: &Arc<Context>,
        modify: fn(&mut K),
    ) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
    where
        K: Resource<DynamicType = ()>
            + Observable
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let live = ctx.clone();
        let scope = scope.clone();
        let stream = watcher(api, child_config())
            .default_backoff()
            .try_filter_map(move |event| {
                let event = event.modify(modify);
                let news = live.live.observe(&scope, &event);
                futures::future::ready(Ok(news.then_some(event)))
            })
            .touched_objects();
        without_errors(stream, K::KIND)
    }
    fn strip<K: Resource>(object: &mut K) {
        object.meta_mut().managed_fields = None;
    }
    let c = &ctx;
    let ns = &namespace;
    let config = kube::runtime::controller::Config::default()
        .concurrency(ctx.settings.concurrency)
        .debounce(ctx.settings.debounce);
    // What re-checks find new comes in here; the re-checks themselves never enter the
    // Controller's queue (docs/controller.md, "News first").
    let escalations = ctx.rechecks.route(namespace.clone(), reader.clone());
    Controller::for_stream(without_errors(stream, "ReferralSystem"), reader)
        .with_config(config)
        .reconcile_on(escalations)
        .owns_stream(feed(api::<Deployment>(&client, ns), ns, c, strip::<Deployment>))
        .owns_stream(feed(api::<StatefulSet>(&client, ns), ns, c, strip::<StatefulSet>))
        .owns_stream(feed(api::<PartialObjectMeta<Service>>(&client, ns), ns, c, strip))
        .owns_stream(feed(api::<PartialObjectMeta<ConfigMap>>(&client, ns), ns, c, strip))
        // Whole CronJobs, of which the live state keeps only their runs (CronRuns):
        // a finished run wakes its system, which reports it.
        .owns_stream(feed(api::<CronJob>(&client, ns), ns, c, strip::<CronJob>))
        .owns_stream(feed(api::<PartialObjectMeta<PodDisruptionBudget>>(&client, ns), ns, c, strip))
        .owns_stream(feed(api::<PartialObjectMeta<HorizontalPodAutoscaler>>(&client, ns), ns, c, strip))
        .owns_stream(feed(api::<PartialObjectMeta<NetworkPolicy>>(&client, ns), ns, c, strip))
        .owns_stream(feed(api::<PartialObjectMeta<ServiceAccount>>(&client, ns), ns, c, strip))
        .owns_stream(feed(api::<PartialObjectMeta<Role>>(&client, ns), ns, c, strip))
        .owns_stream(feed(api::<PartialObjectMeta<RoleBinding>>(&client, ns), ns, c, strip))
        .owns_stream(feed(api::<PartialObjectMeta<PersistentVolumeClaim>>(&client, ns), ns, c, strip))
        // Jobs the controller started (run now, pre-upgrade backup, migration) wake
        // their system when they finish; their status is read by name when needed.
        .owns_stream(without_errors(
            watcher(api::<PartialObjectMeta<Job>>(&client, ns), child_config())
                .default_backoff()
                .map_ok({
                    let ctx = ctx.clone();
                    let scope = namespace.clone();
                    move |event| {
                        ctx.backup_jobs.observe(&scope, &event, crate::reconcilers::backup::system_of_backup_job);
                        event
                    }
                })
                .touched_objects(),
            "Job",
        ))
        .watches_stream(
            without_errors(super::restore::restore_triggers(&client, ns, ctx.clone()), "ReferralRestore"),
            super::restore::system_of_restore,
        )
        .shutdown_on_signal()
        .run(
            |meta, ctx| {
                let system = format!("{}/{}", meta.namespace().unwrap_or_default(), meta.name_any());
                super::panics::contain(reconcile(meta, ctx), |message| Error::Panicked { system, message })
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            let ctx = ctx.clone();
            async move {
                match result {
                    Ok((object, _)) => tracing::debug!(system = %object_key(&object), "reconciled"),
                    // A system that is gone: its series go too, or a deleted system's
                    // backup age would grow until it fires the backup alert.
                    Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                        ctx.metrics.forget_system(object.namespace.as_deref().unwrap_or_default(), &object.name);
                        ctx.live.forget_system(object.namespace.as_deref().unwrap_or_default(), &object.name);
                        ctx.rechecks.forget(&format!(
                            "{}/{}",
                            object.namespace.as_deref().unwrap_or_default(),
                            object.name
                        ));
                        tracing::debug!(system = %object.name, "deleted; its metrics are removed");
                    }
                    Err(error) => tracing::debug!(%error, "reconcile error"),
                }
            }
        })
        .await;
}

fn object_key(object: &ObjectRef<PartialObjectMeta<ReferralSystem>>) -> String {
    format!("{}/{}", object.namespace.as_deref().unwrap_or_default(), object.name)
}

/// How long reconciles in flight may take to finish once SIGTERM or SIGINT came: well
/// inside a pod's default termination grace period (30 s).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves on SIGTERM (what the kubelet sends) or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The API client, with at most `max_requests` requests waiting for their response
/// headers at once (a watch holds its slot only until its stream starts).
///
/// kube's HTTP/1.1 pool opens a connection per concurrent request and keeps every one
/// for good, each with its read buffer, TLS state and request channel, so a burst of
/// new systems left dozens open at idle (docs/benchmarks.md, "Round 3"). Bounded, a
/// burst reuses what it opened.
///
/// Requests the server turns away are retried as kube would, spread in time
/// ([`SpreadRetry`]): outside the bound, so a retry waiting holds no slot, and behind
/// a buffer, which gives the retry a service it can clone.
async fn bounded_client(max_requests: usize) -> Result<Client, kube::Error> {
    let mut config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    config.default_retry = false;
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(max_requests))
        .with_layer(&tower::buffer::BufferLayer::new(REQUEST_BUFFER))
        .with_layer(&tower::retry::RetryLayer::new(SpreadRetry::server_retry()))
        .build())
}

/// Requests waiting for a slot of the bounded client's at most; more wait to enter.
const REQUEST_BUFFER: usize = 1024;

/// The leader election's own client: its own connections, so that a renewal never
/// waits behind the reconciles' requests (the main client bounds those).
async fn lease_client() -> Result<Client, kube::Error> {
    let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    Client::try_from(config)
}

/// Runs until SIGTERM/SIGINT, or until the lease is lost.
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    super::panics::install_hook();
    // Two per reconcile that may run at once (`concurrency` per watched namespace):
    // the API server is the bottleneck well before that.
    let controllers = config.namespaces.len().max(1);
    let max_requests = usize::from(config.settings.concurrency) * 2 * controllers;
    let client = bounded_client(max_requests).await.map_err(|source| RunError::Client { source })?;
    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    let server = tokio::spawn(http::serve(config.listen, metrics.clone(), health.clone()));

    // A standby is ready: it serves health and metrics and takes over when the lease
    // frees. Holding readiness back until it leads would stall every rollout of a
    // two-replica Deployment behind its PodDisruptionBudget.
    health.set_ready(true);
    // Leader or not, readiness follows whether the API server answers.
    tokio::spawn(super::apiserver_probe::follow(client.clone(), health.clone()));

    let mut leadership = None;
    if let Some(lease) = &config.lease {
        let lease_client = lease_client().await.map_err(|source| RunError::Client { source })?;
        let (mut is_leader, task) = leader::spawn(lease_client, lease.clone());
        tracing::info!(lease = %lease.name, identity = %lease.identity, "waiting for the leader lease");
        let acquired = async {
            while !*is_leader.borrow() {
                if is_leader.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::select! {
            acquired = acquired => if !acquired {
                return Err(RunError::LostLease { name: lease.name.clone() });
            },
            _ = shutdown_signal() => {
                tracing::info!("stopped while waiting for the leader lease");
                return Ok(());
            }
        }
        metrics.set_leader(true);
        tracing::info!(lease = %lease.name, "holding the leader lease");
        leadership = Some((is_leader, task));
    }

    let reporter = Reporter { controller: MANAGER.into(), instance: config.lease.as_ref().map(|l| l.identity.clone()) };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Recorder::new(client.clone(), reporter),
        metrics.clone(),
        config.settings.clone(),
        controllers,
    ));
    ctx.set_capabilities(discover(&client).await);
    let discovery_ctx = ctx.clone();
    let interval = config.discovery_interval;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            discovery_ctx.set_capabilities(discover(&discovery_ctx.client).await);
        }
    });
    tokio::spawn(super::rechecker::drive(ctx.clone()));

    let namespaces: Vec<Option<String>> =
        if config.namespaces.is_empty() { vec![None] } else { config.namespaces.iter().cloned().map(Some).collect() };
    let restores = futures::future::join_all(
        namespaces.iter().cloned().map(|ns| super::restore::controller(client.clone(), ns, ctx.clone())),
    );
    let systems =
        futures::future::join_all(namespaces.into_iter().map(|ns| controller(client.clone(), ns, ctx.clone())));
    let controllers = futures::future::join(systems, restores);
    tokio::pin!(controllers);
    tracing::info!("controller started");

    let lost = async {
        match &mut leadership {
            Some((is_leader, _)) => loop {
                if is_leader.changed().await.is_err() || !*is_leader.borrow() {
                    break;
                }
            },
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = &mut controllers => {
            tracing::info!("controller stopped");
            if let Some(lease) = &config.lease {
                // The elector first, or it could renew the claim just given up.
                if let Some((_, task)) = &leadership {
                    task.abort();
                }
                let _ = leader::release(client.clone(), lease).await;
            }
            Ok(())
        }
        _ = shutdown_signal() => {
            // The controllers shut down gracefully on the same signal, but their
            // graceful shutdown did not end on its own (seen on a real node: a deleted
            // pod ran, and renewed the Lease, until the kubelet killed it 30 s later),
            // which also kept a standby from taking over. Reconciles in flight get
            // SHUTDOWN_GRACE; then the Lease is released and the process exits.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await.is_err() {
                tracing::info!(grace = ?SHUTDOWN_GRACE, "stopping without waiting longer for the controllers");
            } else {
                tracing::info!("controller stopped");
            }
            if let Some(lease) = &config.lease {
                let _ = leader::release(client.clone(), lease).await;
            }
            Ok(())
        }
        _ = lost => {
            metrics.set_leader(false);
            Err(RunError::LostLease { name: config.lease.map(|l| l.name).unwrap_or_default() })
        }
        result = server => match result {
            Ok(Err(source)) => Err(RunError::Http { source }),
            _ => Ok(()),
        },
    }
}
