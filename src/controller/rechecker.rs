//! The thin driver of [`super::recheck`]: runs the cheap re-checks, sends what they
//! find new into the Controllers' queues, and hears from every reconcile when it
//! starts and how it ended (docs/controller.md, "News first").
//!
//! A re-check reads no ReferralSystem. It compares what can change without a watch
//! event against the [`Baseline`] the system's last reconcile left: the system's
//! resourceVersion in the metadata cache, the Controllers' capabilities, the
//! referenced Secrets (read by name from the API server's cache) and the MongoDB and
//! Redis probes (answered from [`super::probes`], so each server is probed at most
//! once per probe interval, a failing one every few seconds). Only when one differs
//! does the system get a reconcile.

use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::ReferralSystem;

use super::conditions::Probe;
use super::context::Context;
use super::probes::Target;
use super::recheck::{Finding, RecheckPolicy, RecheckSchedule, RecheckStep, Settled, SystemKey};
use super::reconcile::{RedisTarget, probe_dependencies};
use super::secrets::{self, SecretRefs, SecretValues};

/// What a reconcile saw that can change without a watch event, kept per system so a
/// re-check can compare without reading the system. Small: references, hashes, the
/// Redis address; no Secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    /// The system's resourceVersion when the reconcile ended (its own status write
    /// included).
    pub resource_version: Option<u64>,
    /// [`Context::capabilities_generation`] the reconcile applied under.
    pub capabilities: u64,
    pub secrets: SecretRefs,
    /// [`secrets_seen`] of what the Secrets held.
    pub secrets_seen: u64,
    pub redis: RedisTarget,
    /// [`probes_seen`] of the two answers.
    pub probes_seen: u64,
    /// The servers probed (MongoDB, Redis), to wake this system when another system's
    /// probe of one finds it changed.
    pub targets: [Option<Target>; 2],
}

/// A digest of what the Secrets held: the hash of their values and which are missing.
pub fn secrets_seen(values: &SecretValues) -> u64 {
    let mut hasher = DefaultHasher::new();
    values.hash.hash(&mut hasher);
    values.missing.hash(&mut hasher);
    hasher.finish()
}

/// A digest of the two probe answers.
pub fn probes_seen(mongo: &Probe, redis: &Probe) -> u64 {
    let mut hasher = DefaultHasher::new();
    (mongo, redis).hash(&mut hasher);
    hasher.finish()
}

/// A resourceVersion as the number it is in practice (etcd's revision).
pub fn version_number(resource_version: Option<&str>) -> Option<u64> {
    resource_version.and_then(|rv| rv.parse().ok())
}

/// One Controller's systems: its cache of their metadata and its queue.
struct Route {
    /// The namespace it watches; `None` for all.
    scope: Option<String>,
    store: Store<PartialObjectMeta<ReferralSystem>>,
    queue: futures::channel::mpsc::Sender<ObjectRef<PartialObjectMeta<ReferralSystem>>>,
}

/// The schedule and what the driver needs around it; one per process, in [`Context`].
pub struct Rechecks {
    schedule: Mutex<RecheckSchedule<Arc<Baseline>>>,
    wakeup: tokio::sync::Notify,
    routes: Mutex<Vec<Route>>,
}

impl Rechecks {
    pub fn new(policy: RecheckPolicy) -> Self {
        let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Self {
            schedule: Mutex::new(RecheckSchedule::new(policy, seed)),
            wakeup: tokio::sync::Notify::new(),
            routes: Mutex::new(Vec::new()),
        }
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, RecheckSchedule<Arc<Baseline>>> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects a Controller: its systems are re-checked from `store`, and what their
    /// re-checks find new is sent to the returned stream (give it to
    /// `Controller::reconcile_on`).
    pub fn route(
        &self,
        scope: Option<String>,
        store: Store<PartialObjectMeta<ReferralSystem>>,
    ) -> futures::channel::mpsc::Receiver<ObjectRef<PartialObjectMeta<ReferralSystem>>> {
        // Escalations are sent only while a reconcile slot is free, so a few suffice.
        let (queue, receiver) = futures::channel::mpsc::channel(16);
        self.routes.lock().unwrap_or_else(PoisonError::into_inner).push(Route { scope, store, queue });
        receiver
    }

    /// A reconcile of `key` starts; the returned report says how it ended (a failure
    /// unless told otherwise).
    pub fn reconciling(&self, key: &str) -> Report<'_> {
        self.schedule().started(key);
        Report { rechecks: self, key: key.to_string(), settled: Some(Settled::Failed) }
    }

    /// A system is gone.
    pub fn forget(&self, key: &str) {
        self.schedule().forget(key);
        self.wakeup.notify_one();
    }

    /// The answer from `target` changed: every system using it must report that.
    pub fn wake_users_of(&self, target: Target) {
        self.schedule().wake(|b| b.targets.contains(&Some(target)), Instant::now());
        self.wakeup.notify_one();
    }

    /// Systems known to the schedule.
    pub fn len(&self) -> usize {
        self.schedule().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cached(&self, key: &str) -> Option<(ObjectRef<PartialObjectMeta<ReferralSystem>>, Option<u64>)> {
        let (namespace, name) = key.split_once('/')?;
        let reference = ObjectRef::new(name).within(namespace);
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let route = route_for(&routes, namespace)?;
        let meta = route.store.get(&reference)?;
        Some((reference, version_number(meta.metadata.resource_version.as_deref())))
    }

    fn escalate(&self, key: &str) -> bool {
        let Some((namespace, name)) = key.split_once('/') else { return false };
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(route) = route_for(&routes, namespace) else { return false };
        route.queue.clone().try_send(ObjectRef::new(name).within(namespace)).is_ok()
    }
}

fn route_for<'a>(routes: &'a [Route], namespace: &str) -> Option<&'a Route> {
    routes.iter().find(|r| r.scope.as_deref() == Some(namespace)).or_else(|| routes.iter().find(|r| r.scope.is_none()))
}

/// How one reconcile ended, told to the schedule when dropped: a reconcile that
/// returns early by `?` counts as failed.
pub struct Report<'a> {
    rechecks: &'a Rechecks,
    key: String,
    settled: Option<Settled<Arc<Baseline>>>,
}

impl Report<'_> {
    pub fn settle(mut self, settled: Settled<Arc<Baseline>>) {
        self.settled = Some(settled);
    }
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        let settled = self.settled.take().unwrap_or(Settled::Failed);
        self.rechecks.schedule().reconciled(&self.key, settled, Instant::now());
        // A slot is free again: escalations may go.
        self.rechecks.wakeup.notify_one();
    }
}

/// Runs the re-checks for as long as the process lives.
pub async fn drive(ctx: Arc<Context>) {
    loop {
        let now = Instant::now();
        let mut steps = Vec::new();
        let wait = {
            let mut schedule = ctx.rechecks.schedule();
            loop {
                match schedule.next_recheck_step(now) {
                    RecheckStep::Wait(until) => break until,
                    step => steps.push(step),
                }
            }
        };
        for step in steps {
            match step {
                RecheckStep::Escalate(key) => {
                    // A failed send (the Controller stopped) is sent again after the
                    // schedule's timeout.
                    if !ctx.rechecks.escalate(&key) {
                        tracing::debug!(system = %key, "could not hand a re-check's news to its Controller");
                    }
                }
                RecheckStep::Check(key, baseline) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        let finding = look(&ctx, &key, &baseline).await;
                        ctx.metrics.record_recheck(finding_label(finding));
                        ctx.rechecks.schedule().checked(&key, finding, Instant::now());
                        ctx.rechecks.wakeup.notify_one();
                    });
                }
                RecheckStep::Wait(_) => {}
            }
        }
        match wait {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    _ = ctx.rechecks.wakeup.notified() => {}
                }
            }
            None => ctx.rechecks.wakeup.notified().await,
        }
    }
}

fn finding_label(finding: Finding) -> &'static str {
    match finding {
        Finding::NothingNew => "nothing_new",
        Finding::News => "news",
        Finding::Failed => "failed",
        Finding::Gone => "gone",
    }
}

/// The cheap re-check: whether anything a reconcile would act on differs from
/// `baseline`, without reading the system.
async fn look(ctx: &Context, key: &SystemKey, baseline: &Baseline) -> Finding {
    let Some((reference, version)) = ctx.rechecks.cached(key) else {
        return Finding::Gone;
    };
    // A change the watch reported was reconciled already; this only catches one
    // whose event was missed.
    if version > baseline.resource_version || ctx.capabilities_generation() != baseline.capabilities {
        return Finding::News;
    }
    let namespace = reference.namespace.as_deref().unwrap_or_default();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let values = match secrets::read_refs(&api, &baseline.secrets, &ctx.settings.secrets_hash_key).await {
        Ok(values) => values,
        Err(error) => {
            tracing::debug!(system = %key, %error, "re-check could not read the Secrets");
            return Finding::Failed;
        }
    };
    if secrets_seen(&values) != baseline.secrets_seen {
        return Finding::News;
    }
    let seen = probe_dependencies(ctx, &baseline.redis, &values).await;
    if probes_seen(&seen.mongo, &seen.redis) != baseline.probes_seen {
        return Finding::News;
    }
    Finding::NothingNew
}
