//! What the child watches have seen, kept small: per child its owner and a
//! fingerprint of the fields someone else could change, and for workloads a trimmed
//! copy with their status. The apply step reads it to skip patches that would change
//! nothing (so an idle system costs no API writes) and to find children to prune
//! without listing the cluster on every reconcile.
//!
//! It must not hold whole objects: at a thousand systems that would be most of the
//! operator's memory. Nothing here talks to the API; the watches feed it.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use hashbrown::Equivalent;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetSpec, StatefulSetStatus,
};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::reconcilers::meta::ANNOTATION_WORKER_IMAGE;

/// One child, by kind and place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildKey {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl ChildKey {
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.to_string(), name: name.to_string() }
    }

    fn as_ref(&self) -> KeyRef<'_> {
        KeyRef { kind: self.kind, namespace: &self.namespace, name: &self.name }
    }
}

/// Text held once however many entries name it: a namespace is shared by all its
/// children, an owner's UID by the children it owns and the owner index, a child's
/// name by its entry and the index.
type Text = Arc<str>;

/// [`ChildKey`] as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: &'static str,
    namespace: Text,
    name: Text,
}

/// A [`Key`] to look up without allocating. Hashes like `Key`: the same three
/// strings in the same order.
#[derive(Hash)]
struct KeyRef<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.kind == key.kind && self.namespace == &*key.namespace && self.name == &*key.name
    }
}

/// A child as a watch event or an apply response shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sighting {
    fingerprint: u64,
    resource_version: Option<u64>,
    /// UID of the controlling owner, if any.
    owner: Option<String>,
}

/// A child as last seen, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    fingerprint: u64,
    resource_version: Option<u64>,
    owner: Option<Text>,
}

/// What our last apply of a child sent and got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    desired: u64,
    fingerprint: u64,
}

/// Everything known about one child. An entry lives while either half is set.
#[derive(Debug, Default)]
struct Child {
    seen: Option<Seen>,
    written: Option<Written>,
    /// For Deployments and StatefulSets: what observing them needs.
    workload: Option<Box<Workload>>,
}

/// One watch: a child kind in one namespace, or in all (`None`).
type WatchScope = (&'static str, Option<String>);

/// `std`'s hasher (SipHash, randomly keyed) with hashbrown's lookup by [`KeyRef`]:
/// the names come from the cluster.
type Map<K, V> = hashbrown::HashMap<K, V, RandomState>;

/// What a re-list found of one child, applied when the list is complete.
type Listed = (ChildKey, Sighting, Option<Box<Workload>>);

#[derive(Debug, Default)]
struct Inner {
    children: Map<Key, Child>,
    /// The children of each owner (by UID), kept in step with `children`: pruning asks
    /// for one system's children on every reconcile, and a scan of every child of
    /// every system made each reconcile cost O(all children) (most of the CPU at a
    /// thousand systems). Its keys are the one copy of each owner's UID.
    owned: Map<Text, Vec<Key>>,
    /// Every namespace a child was seen in. Never shrinks: a few bytes a namespace.
    namespaces: hashbrown::HashSet<Text, RandomState>,
    /// Watches (kind, namespace scope) whose initial list is complete.
    synced: HashSet<WatchScope>,
    /// Objects of a re-list in progress, by watch.
    relisting: HashMap<WatchScope, Vec<Listed>>,
    /// The resourceVersion our last status patch of each system returned, by
    /// `namespace/name`: the watch event carrying it is that write's echo.
    status_writes: HashMap<String, u64>,
}

/// The watch-fed view of every child, and the resourceVersion of each system's last
/// status patch (to tell its echo from news). Shared by all reconciles.
#[derive(Debug, Default)]
pub struct LiveState {
    inner: Mutex<Inner>,
}

/// A hash of `value`'s JSON: equal for equal objects within this process.
pub fn content_hash<T: Serialize>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes.hash(&mut hasher),
        // Cannot happen for API types; a random-looking hash only costs one patch.
        Err(_) => u64::MAX.hash(&mut hasher),
    }
    hasher.finish()
}

/// Prefix of the annotations the Deployment controller writes on Deployments.
const DEPLOYMENT_CONTROLLER_ANNOTATIONS: &str = "deployment.kubernetes.io/";

/// What another writer could change without us knowing. Objects with a generation
/// bump it on every spec change, so status updates (a Deployment's pod counts) do not
/// count; objects without one fall back to the resourceVersion.
pub fn fingerprint(meta: &ObjectMeta) -> u64 {
    let mut hasher = DefaultHasher::new();
    match meta.generation {
        Some(generation) => {
            generation.hash(&mut hasher);
            content_hash(&meta.labels).hash(&mut hasher);
            // The Deployment controller's own annotations (the rollout revision) are
            // not ours and never conflict with our apply: counting them re-patched
            // every new Deployment once its first ReplicaSet appeared.
            // No annotations and only theirs hash alike.
            let annotations: Vec<(&String, &String)> = meta
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| !k.starts_with(DEPLOYMENT_CONTROLLER_ANNOTATIONS))
                .collect();
            content_hash(&annotations).hash(&mut hasher);
            content_hash(&meta.owner_references).hash(&mut hasher);
        }
        None => meta.resource_version.hash(&mut hasher),
    }
    hasher.finish()
}

fn sighting(meta: &ObjectMeta) -> Sighting {
    Sighting {
        fingerprint: fingerprint(meta),
        resource_version: meta.resource_version.as_deref().and_then(|rv| rv.parse().ok()),
        owner: meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone()),
    }
}

/// A Deployment, StatefulSet or CronJob with what observing it needs: generation,
/// replicas, container images, the image annotation the upgrade gate reads, status
/// (for a CronJob only its runs). Kept in
/// this form rather than as a trimmed `Deployment`: k8s-openapi's structs hold every
/// optional field of a pod spec inline, kilobytes per workload even when empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    generation: Option<i64>,
    resource_version: Option<Box<str>>,
    /// The image the operator put in [`ANNOTATION_WORKER_IMAGE`]; the upgrade gate
    /// reads it to tell an image change from another manager's edit.
    image_annotation: Option<Box<str>>,
    spec: Option<WorkloadSpec>,
    status: WorkloadStatus,
}

/// A container's name and image.
type NameAndImage = (Box<str>, Option<Box<str>>);

#[derive(Debug, Clone, PartialEq)]
struct WorkloadSpec {
    replicas: Option<i32>,
    /// Container names and images: what the upgrade logic compares.
    containers: Box<[NameAndImage]>,
}

#[derive(Debug, Clone, PartialEq)]
enum WorkloadStatus {
    Deployment(Option<DeploymentStatus>),
    StatefulSet(Option<StatefulSetStatus>),
    CronJob(CronRuns),
}

/// What a CronJob's status says of its runs: all that judging the last one needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CronRuns {
    /// When the last Job was scheduled.
    pub last_schedule: Option<Time>,
    /// When the last successful Job finished.
    pub last_success: Option<Time>,
    /// Jobs running now.
    pub active: usize,
}

impl CronRuns {
    /// Reads a CronJob's status.
    pub fn of(cron: &CronJob) -> Self {
        let status = cron.status.as_ref();
        CronRuns {
            last_schedule: status.and_then(|s| s.last_schedule_time.clone()),
            last_success: status.and_then(|s| s.last_successful_time.clone()),
            active: status.and_then(|s| s.active.as_ref()).map_or(0, Vec::len),
        }
    }
}

impl Workload {
    fn new(meta: &ObjectMeta, spec: Option<(Option<i32>, &PodTemplateSpec)>, status: WorkloadStatus) -> Self {
        let containers = |template: &PodTemplateSpec| {
            template
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| (c.name.as_str().into(), c.image.as_deref().map(Into::into)))
                .collect()
        };
        Self {
            generation: meta.generation,
            resource_version: meta.resource_version.as_deref().map(Into::into),
            image_annotation: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_WORKER_IMAGE))
                .map(|v| v.as_str().into()),
            spec: spec.map(|(replicas, template)| WorkloadSpec { replicas, containers: containers(template) }),
            status,
        }
    }

    /// Whether observing either gives the same answer: equal in all but resourceVersion.
    fn reads_alike(&self, other: &Workload) -> bool {
        let Workload { generation, resource_version: _, image_annotation, spec, status } = self;
        *generation == other.generation
            && *image_annotation == other.image_annotation
            && *spec == other.spec
            && *status == other.status
    }

    /// Keeps what observing `d` needs.
    pub fn of_deployment(d: &Deployment) -> Self {
        let spec = d.spec.as_ref().map(|s| (s.replicas, &s.template));
        let status = d.status.as_ref().map(|status| DeploymentStatus {
            // Of the conditions only a stalled rollout is read (Progressing False, with
            // its reason and message), never their times. The Deployment controller
            // rewrites the others' reasons and times as a rollout goes: kept, each
            // rewrite would look like news to the owner.
            conditions: status.conditions.as_ref().and_then(|conditions| {
                let kept: Vec<DeploymentCondition> = conditions
                    .iter()
                    .filter(|c| c.type_ == "Progressing" && c.status == "False")
                    .map(|c| DeploymentCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                        ..DeploymentCondition::default()
                    })
                    .collect();
                (!kept.is_empty()).then_some(kept)
            }),
            ..status.clone()
        });
        Self::new(&d.metadata, spec, WorkloadStatus::Deployment(status))
    }

    /// Keeps what judging a CronJob's last run needs.
    pub fn of_cron_job(c: &CronJob) -> Self {
        Self::new(&c.metadata, None, WorkloadStatus::CronJob(CronRuns::of(c)))
    }

    /// Keeps what observing `s` needs.
    pub fn of_stateful_set(s: &StatefulSet) -> Self {
        let spec = s.spec.as_ref().map(|spec| (spec.replicas, &spec.template));
        Self::new(&s.metadata, spec, WorkloadStatus::StatefulSet(s.status.clone()))
    }

    fn meta(&self, namespace: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            generation: self.generation,
            resource_version: self.resource_version.as_deref().map(str::to_string),
            annotations: self
                .image_annotation
                .as_deref()
                .map(|image| BTreeMap::from([(ANNOTATION_WORKER_IMAGE.to_string(), image.to_string())])),
            ..ObjectMeta::default()
        }
    }

    fn template(spec: &WorkloadSpec) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: spec
                    .containers
                    .iter()
                    .map(|(name, image)| Container {
                        name: name.to_string(),
                        image: image.as_deref().map(str::to_string),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
        }
    }

    /// The kept Deployment, as a trimmed `Deployment`; `None` if this is a StatefulSet.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        let WorkloadStatus::Deployment(status) = &self.status else { return None };
        Some(Deployment {
            metadata: self.meta(namespace, name),
            spec: self.spec.as_ref().map(|spec| DeploymentSpec {
                replicas: spec.replicas,
                template: Self::template(spec),
                ..DeploymentSpec::default()
            }),
            status: status.clone(),
        })
    }

    /// The kept StatefulSet, as a trimmed `StatefulSet`; `None` if this is a Deployment.
    pub fn stateful_set(&self, namespace: &str, name: &str) -> Option<StatefulSet> {
        let WorkloadStatus::StatefulSet(status) = &self.status else { return None };
        Some(StatefulSet {
            metadata: self.meta(namespace, name),
            spec: self.spec.as_ref().map(|spec| StatefulSetSpec {
                replicas: spec.replicas,
                template: Self::template(spec),
                ..StatefulSetSpec::default()
            }),
            status: status.clone(),
        })
    }
}

/// How a watched kind is kept: metadata only, or with a [`Workload`].
pub trait Observable: Resource + Sized {
    const KIND: &'static str;
    fn workload(_object: &Self) -> Option<Workload> {
        None
    }
}

impl Observable for Deployment {
    const KIND: &'static str = "Deployment";
    fn workload(object: &Self) -> Option<Workload> {
        Some(Workload::of_deployment(object))
    }
}

impl Observable for StatefulSet {
    const KIND: &'static str = "StatefulSet";
    fn workload(object: &Self) -> Option<Workload> {
        Some(Workload::of_stateful_set(object))
    }
}

impl Observable for CronJob {
    const KIND: &'static str = "CronJob";
    fn workload(object: &Self) -> Option<Workload> {
        Some(Workload::of_cron_job(object))
    }
}

/// Metadata-only kinds.
macro_rules! metadata_only {
    ($($kind:ident => $ty:ty),* $(,)?) => {
        $(impl Observable for kube::core::PartialObjectMeta<$ty> {
            const KIND: &'static str = stringify!($kind);
        })*
    };
}

metadata_only!(
    Service => k8s_openapi::api::core::v1::Service,
    ConfigMap => k8s_openapi::api::core::v1::ConfigMap,
    ServiceAccount => k8s_openapi::api::core::v1::ServiceAccount,
    PersistentVolumeClaim => k8s_openapi::api::core::v1::PersistentVolumeClaim,
    Role => k8s_openapi::api::rbac::v1::Role,
    RoleBinding => k8s_openapi::api::rbac::v1::RoleBinding,
    PodDisruptionBudget => k8s_openapi::api::policy::v1::PodDisruptionBudget,
    HorizontalPodAutoscaler => k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    NetworkPolicy => k8s_openapi::api::networking::v1::NetworkPolicy,
);

fn key_of<K: Observable>(object: &K) -> ChildKey {
    ChildKey::new(K::KIND, object.meta().namespace.as_deref().unwrap_or_default(), &object.name_any())
}

fn boxed_workload<K: Observable>(object: &K) -> Option<Box<Workload>> {
    K::workload(object).map(Box::new)
}

impl Inner {
    /// The stored key for `key`: the existing one, or a new one sharing the namespace.
    fn key(&mut self, key: &ChildKey) -> Key {
        if let Some((stored, _)) = self.children.get_key_value(&key.as_ref()) {
            return stored.clone();
        }
        let namespace = match self.namespaces.get(key.namespace.as_str()) {
            Some(namespace) => namespace.clone(),
            None => {
                let namespace: Text = key.namespace.as_str().into();
                self.namespaces.insert(namespace.clone());
                namespace
            }
        };
        Key { kind: key.kind, namespace, name: key.name.as_str().into() }
    }

    /// The one copy of an owner's UID if any child has it as owner, else a new one.
    fn owner(&self, uid: &str) -> Text {
        match self.owned.get_key_value(uid) {
            Some((stored, _)) => stored.clone(),
            None => uid.into(),
        }
    }

    fn seen(&self, key: &ChildKey) -> Option<&Seen> {
        self.children.get(&key.as_ref()).and_then(|c| c.seen.as_ref())
    }

    /// Records `new` for `key`, keeping the owner index in step.
    fn set_seen(&mut self, key: &ChildKey, new: Sighting) {
        let stored = self.key(key);
        let owner = new.owner.as_deref().map(|uid| self.owner(uid));
        let old_owner = self.children.get(&stored).and_then(|c| c.seen.as_ref()).and_then(|s| s.owner.clone());
        if old_owner != owner {
            if let Some(old) = old_owner {
                self.unindex(&stored, &old);
            }
            if let Some(owner) = &owner {
                self.owned.entry(owner.clone()).or_default().push(stored.clone());
            }
        }
        let seen = Seen { fingerprint: new.fingerprint, resource_version: new.resource_version, owner };
        self.children.entry(stored).or_default().seen = Some(seen);
    }

    fn unindex(&mut self, key: &Key, owner: &Text) {
        if let Some(children) = self.owned.get_mut(owner) {
            children.retain(|k| k != key);
            if children.is_empty() {
                self.owned.remove(owner);
            }
        }
    }

    /// Stores `object` as seen; false when this very version was known already (the
    /// echo of our own apply, whose response came first) or is older than what is.
    fn upsert<K: Observable>(&mut self, object: &K) -> bool {
        let key = key_of(object);
        let new = sighting(object.meta());
        let (known, old_fingerprint) = match self.seen(&key) {
            Some(seen) => (seen.resource_version, Some(seen.fingerprint)),
            None => (None, None),
        };
        // A watch event older than what an apply already told us is stale: keep the newer.
        if let (Some(old), Some(new_rv)) = (known, new.resource_version)
            && new_rv < old
        {
            return false;
        }
        let mut news = new.resource_version.is_none() || new.resource_version != known;
        let fingerprint = new.fingerprint;
        self.set_seen(&key, new);
        if let Some(workload) = boxed_workload(object)
            && let Some(child) = self.children.get_mut(&key.as_ref())
        {
            // A workload is news only when something observing it reads moved: the
            // Deployment controller's rollout-revision annotation is not.
            if news
                && old_fingerprint == Some(fingerprint)
                && child.workload.as_ref().is_some_and(|old| old.reads_alike(&workload))
            {
                news = false;
            }
            child.workload = Some(workload);
        }
        news
    }

    /// Forgets everything about `key`.
    fn remove(&mut self, key: &ChildKey) {
        if let Some((stored, child)) = self.children.remove_entry(&key.as_ref())
            && let Some(owner) = child.seen.and_then(|s| s.owner)
        {
            self.unindex(&stored, &owner);
        }
    }
}

impl LiveState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another reconcile panicked mid-update; the
        // maps are still usable, and the worst outcome of a stale entry is one patch.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Feeds one watch event of the watch over `scope` (a namespace, or all). Returns
    /// whether it may be news to the child's owner: false only for a version already
    /// known, such as the echo of the apply step's own write, which the reconcile that
    /// wrote it has already seen. Waking the owner for it would only run a reconcile
    /// that finds nothing to do (docs/benchmarks.md, "Round 4", counts them).
    pub fn observe<K: Observable>(&self, scope: &Option<String>, event: &Event<K>) -> bool {
        let mut inner = self.lock();
        let watch = (K::KIND, scope.clone());
        match event {
            Event::Apply(object) => return inner.upsert(object),
            Event::Delete(object) => inner.remove(&key_of(object)),
            Event::Init => {
                inner.relisting.insert(watch, Vec::new());
            }
            Event::InitApply(object) => {
                let entry = (key_of(object), sighting(object.meta()), boxed_workload(object));
                inner.relisting.entry(watch).or_default().push(entry);
            }
            Event::InitDone => {
                let listed = inner.relisting.remove(&watch).unwrap_or_default();
                let listed_keys: HashSet<&ChildKey> = listed.iter().map(|(k, _, _)| k).collect();
                let gone: Vec<ChildKey> = inner
                    .children
                    .iter()
                    .filter(|(k, c)| c.seen.is_some() && k.kind == K::KIND)
                    .filter(|(k, _)| scope.as_ref().is_none_or(|ns| &*k.namespace == ns))
                    .map(|(k, _)| ChildKey::new(k.kind, &k.namespace, &k.name))
                    .filter(|k| !listed_keys.contains(k))
                    .collect();
                for key in gone {
                    inner.remove(&key);
                }
                for (key, new, workload) in listed {
                    inner.set_seen(&key, new);
                    if let Some(child) = inner.children.get_mut(&key.as_ref()) {
                        child.workload = workload;
                    }
                }
                inner.synced.insert(watch);
            }
        }
        true
    }

    /// Whether the watch of `kind` covering `namespace` has listed everything once.
    pub fn synced(&self, kind: &'static str, namespace: &str) -> bool {
        let inner = self.lock();
        inner.synced.contains(&(kind, None)) || inner.synced.contains(&(kind, Some(namespace.to_string())))
    }

    /// True when the last apply sent exactly `desired` and nobody has changed the
    /// child since: applying again would change nothing.
    pub fn unchanged_since_apply(&self, key: &ChildKey, desired: u64) -> bool {
        let inner = self.lock();
        match inner.children.get(&key.as_ref()) {
            Some(Child { written: Some(written), seen: Some(seen), .. }) => {
                written.desired == desired && written.fingerprint == seen.fingerprint
            }
            _ => false,
        }
    }

    /// Like [`Self::unchanged_since_apply`] for kinds without a watch: `live` is the
    /// object's metadata as just read.
    pub fn unchanged_against(&self, key: &ChildKey, desired: u64, live: &ObjectMeta) -> bool {
        let inner = self.lock();
        let written = inner.children.get(&key.as_ref()).and_then(|c| c.written);
        written.is_some_and(|w| w.desired == desired && w.fingerprint == fingerprint(live))
    }

    /// Records what an apply sent (`desired`) and what the server returned.
    pub fn record_apply(&self, key: ChildKey, desired: u64, returned: &ObjectMeta) {
        let mut inner = self.lock();
        let now = sighting(returned);
        let written = Written { desired, fingerprint: now.fingerprint };
        let newer = match (inner.seen(&key).and_then(|s| s.resource_version), now.resource_version) {
            (Some(old), Some(new)) => new >= old,
            _ => true,
        };
        if newer {
            inner.set_seen(&key, now);
        }
        let stored = inner.key(&key);
        inner.children.entry(stored).or_default().written = Some(written);
    }

    /// Records the resourceVersion a status patch of the system `namespace/name` returned.
    pub fn record_status_write(&self, namespace: &str, name: &str, resource_version: Option<&str>) {
        let key = format!("{namespace}/{name}");
        let mut inner = self.lock();
        match resource_version.and_then(|rv| rv.parse().ok()) {
            Some(rv) => inner.status_writes.insert(key, rv),
            None => inner.status_writes.remove(&key),
        };
    }

    /// Whether a watch event of the system `namespace/name` at `resource_version` is
    /// the echo of our own last status patch: the reconcile that wrote it has seen
    /// everything in it. A change by anyone else has its own resourceVersion.
    pub fn is_status_echo(&self, namespace: &str, name: &str, resource_version: Option<&str>) -> bool {
        let Some(rv) = resource_version.and_then(|rv| rv.parse::<u64>().ok()) else { return false };
        let inner = self.lock();
        inner.status_writes.get(&format!("{namespace}/{name}")) == Some(&rv)
    }

    /// The resourceVersion our last status patch of `namespace/name` returned.
    pub fn last_status_write(&self, namespace: &str, name: &str) -> Option<u64> {
        self.lock().status_writes.get(&format!("{namespace}/{name}")).copied()
    }

    /// Forgets a deleted system's status write.
    pub fn forget_system(&self, namespace: &str, name: &str) {
        self.lock().status_writes.remove(&format!("{namespace}/{name}"));
    }

    /// Children of `kind` in `namespace` whose controlling owner is `owner_uid`, sorted.
    pub fn owned(&self, kind: &'static str, namespace: &str, owner_uid: &str) -> Vec<String> {
        let inner = self.lock();
        let mut names: Vec<String> = inner
            .owned
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter(|k| k.kind == kind && &*k.namespace == namespace)
            .map(|k| k.name.to_string())
            .collect();
        names.sort();
        names
    }

    /// Forgets a child deleted by the apply step (its watch will confirm).
    pub fn forget(&self, key: &ChildKey) {
        let mut inner = self.lock();
        if let Some(child) = inner.children.get_mut(&key.as_ref()) {
            child.written = None;
            if child.seen.is_none() {
                inner.children.remove(&key.as_ref());
            }
        }
    }

    fn workload<T>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        read: impl FnOnce(&Workload) -> Option<T>,
    ) -> Option<T> {
        let inner = self.lock();
        let key = KeyRef { kind, namespace, name };
        inner.children.get(&key).and_then(|c| c.workload.as_deref()).and_then(read)
    }

    /// The trimmed Deployment as last seen.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.workload("Deployment", namespace, name, |w| w.deployment(namespace, name))
    }

    /// The trimmed StatefulSet as last seen.
    pub fn stateful_set(&self, namespace: &str, name: &str) -> Option<StatefulSet> {
        self.workload("StatefulSet", namespace, name, |w| w.stateful_set(namespace, name))
    }

    /// The runs of a CronJob as last seen.
    pub fn cron_runs(&self, namespace: &str, name: &str) -> Option<CronRuns> {
        self.workload("CronJob", namespace, name, |w| match &w.status {
            WorkloadStatus::CronJob(runs) => Some(runs.clone()),
            _ => None,
        })
    }

    /// Number of children seen, for tests.
    pub fn len(&self) -> usize {
        self.lock().children.values().filter(|c| c.seen.is_some()).count()
    }

    /// True when no child is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use kube::core::PartialObjectMeta;

    fn owner(uid: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference { uid: uid.into(), controller: Some(true), ..OwnerReference::default() }])
    }

    fn config_map(name: &str, rv: &str, uid: &str) -> PartialObjectMeta<ConfigMap> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                owner_references: owner(uid),
                ..ObjectMeta::default()
            },
            _phantom: Default::default(),
        }
    }

    fn deployment(generation: i64, rv: &str, ready: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("w".into()),
                namespace: Some("ns".into()),
                generation: Some(generation),
                resource_version: Some(rv.into()),
                owner_references: owner("u1"),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec { replicas: Some(2), ..DeploymentSpec::default() }),
            status: Some(k8s_openapi::api::apps::v1::DeploymentStatus {
                ready_replicas: Some(ready),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn an_apply_is_skipped_only_while_nobody_else_changed_the_child() {
        let live = LiveState::default();
        let key = ChildKey::new("ConfigMap", "ns", "cm");
        assert!(!live.unchanged_since_apply(&key, 1), "never applied: must apply");
        live.record_apply(key.clone(), 1, &config_map("cm", "10", "u1").metadata);
        assert!(live.unchanged_since_apply(&key, 1));
        assert!(!live.unchanged_since_apply(&key, 2), "the desired object changed");
        // Our own write echoed back by the watch changes nothing.
        live.observe(&None, &Event::Apply(config_map("cm", "10", "u1")));
        assert!(live.unchanged_since_apply(&key, 1));
        // Someone else wrote it: resourceVersion moved.
        live.observe(&None, &Event::Apply(config_map("cm", "11", "u1")));
        assert!(!live.unchanged_since_apply(&key, 1));
    }

    #[test]
    fn only_news_wakes_the_owner_not_the_echo_of_our_own_apply() {
        let live = LiveState::default();
        let key = ChildKey::new("Deployment", "ns", "w");
        // Seen first by the watch: news (someone created it, or our response is late).
        assert!(live.observe(&None, &Event::Apply(deployment(1, "4", 0))));
        assert!(!live.observe(&None, &Event::Apply(deployment(1, "4", 0))), "the same version again");
        live.record_apply(key.clone(), 7, &deployment(2, "5", 0).metadata);
        assert!(!live.observe(&None, &Event::Apply(deployment(2, "5", 0))), "the echo of our apply");
        // What the echo carried is still stored, like any sighting.
        assert_eq!(live.deployment("ns", "w").and_then(|d| d.metadata.generation), Some(2));
        assert!(live.observe(&None, &Event::Apply(deployment(2, "6", 1))), "the controller's status update");
        assert!(!live.observe(&None, &Event::Apply(deployment(2, "5", 0))), "stale");
        let mut revised = deployment(2, "7", 1);
        revised.metadata.annotations =
            Some([("deployment.kubernetes.io/revision".to_string(), "1".to_string())].into());
        assert!(!live.observe(&None, &Event::Apply(revised)), "only the rollout revision moved");
        assert!(live.observe(&None, &Event::Apply(deployment(2, "8", 2))), "a pod became ready");
        let progressing = |rv: &str, status: &str, reason: &str| {
            let mut d = deployment(2, rv, 2);
            d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(format!("{reason} at {rv}")),
                last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..DeploymentCondition::default()
            }]);
            d
        };
        assert!(!live.observe(&None, &Event::Apply(progressing("81", "True", "NewReplicaSetCreated"))));
        assert!(!live.observe(&None, &Event::Apply(progressing("82", "True", "ReplicaSetUpdated"))));
        assert!(live.observe(&None, &Event::Apply(progressing("83", "False", "ProgressDeadlineExceeded"))));
        let stalled = live.deployment("ns", "w").and_then(|d| d.status?.conditions).unwrap();
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].reason.as_deref(), Some("ProgressDeadlineExceeded"));
        assert_eq!(stalled[0].message.as_deref(), Some("ProgressDeadlineExceeded at 83"));
        assert!(live.observe(&None, &Event::Apply(deployment(2, "84", 2))), "no longer stalled");
        assert!(live.observe(&None, &Event::Apply(deployment(3, "85", 2))), "someone edited the spec");
        assert!(live.observe(&None, &Event::Delete(deployment(3, "85", 2))));
        assert!(live.observe(&None, &Event::<Deployment>::Init));
    }

    #[test]
    fn the_echo_of_our_status_write_is_recognised_and_nothing_else() {
        let live = LiveState::default();
        assert!(!live.is_status_echo("ns", "main", Some("7")), "nothing written yet");
        live.record_status_write("ns", "main", Some("7"));
        assert!(live.is_status_echo("ns", "main", Some("7")));
        assert!(!live.is_status_echo("ns", "main", Some("8")), "a later change by someone else");
        assert!(!live.is_status_echo("ns", "main", Some("6")), "an earlier version");
        assert!(!live.is_status_echo("other", "main", Some("7")));
        assert!(!live.is_status_echo("ns", "main", None));
        live.forget_system("ns", "main");
        assert!(!live.is_status_echo("ns", "main", Some("7")));
    }

    #[test]
    fn a_stale_watch_event_does_not_undo_what_an_apply_returned() {
        let live = LiveState::default();
        let key = ChildKey::new("ConfigMap", "ns", "cm");
        live.record_apply(key.clone(), 1, &config_map("cm", "12", "u1").metadata);
        live.observe(&None, &Event::Apply(config_map("cm", "11", "u1")));
        assert!(live.unchanged_since_apply(&key, 1));
    }

    #[test]
    fn status_updates_of_a_deployment_do_not_count_as_changes_but_spec_edits_do() {
        let live = LiveState::default();
        let key = ChildKey::new("Deployment", "ns", "w");
        live.record_apply(key.clone(), 7, &deployment(1, "5", 0).metadata);
        live.observe(&None, &Event::Apply(deployment(1, "6", 2)));
        assert!(live.unchanged_since_apply(&key, 7), "a status update must not trigger a patch");
        assert_eq!(live.deployment("ns", "w").and_then(|d| d.status).and_then(|s| s.ready_replicas), Some(2));
        live.observe(&None, &Event::Apply(deployment(2, "7", 2)));
        assert!(!live.unchanged_since_apply(&key, 7), "a spec edit bumps the generation");
    }

    #[test]
    fn the_rollout_revision_the_deployment_controller_adds_is_not_a_change_but_other_annotations_are() {
        let live = LiveState::default();
        let key = ChildKey::new("Deployment", "ns", "w");
        live.record_apply(key.clone(), 7, &deployment(1, "5", 0).metadata);
        let mut revised = deployment(1, "6", 0);
        revised.metadata.annotations =
            Some([("deployment.kubernetes.io/revision".to_string(), "1".to_string())].into());
        live.observe(&None, &Event::Apply(revised.clone()));
        assert!(live.unchanged_since_apply(&key, 7), "the revision annotation alone must not trigger a patch");
        let mut edited = revised;
        edited.metadata.resource_version = Some("7".into());
        edited.metadata.annotations.get_or_insert_default().insert("team".into(), "a".into());
        live.observe(&None, &Event::Apply(edited));
        assert!(!live.unchanged_since_apply(&key, 7), "someone else's annotation is a change");
    }

    #[test]
    fn a_relist_drops_what_disappeared_in_its_scope_only() {
        let live = LiveState::default();
        let scope = Some("ns".to_string());
        live.observe(&scope, &Event::Apply(config_map("a", "1", "u1")));
        live.observe(&scope, &Event::Apply(config_map("b", "2", "u1")));
        let mut other = config_map("c", "3", "u1");
        other.metadata.namespace = Some("elsewhere".into());
        live.observe(&Some("elsewhere".into()), &Event::Apply(other));
        assert!(!live.synced("ConfigMap", "ns"));
        live.observe(&scope, &Event::<PartialObjectMeta<ConfigMap>>::Init);
        live.observe(&scope, &Event::InitApply(config_map("a", "1", "u1")));
        live.observe(&scope, &Event::<PartialObjectMeta<ConfigMap>>::InitDone);
        assert!(live.synced("ConfigMap", "ns"));
        assert_eq!(live.owned("ConfigMap", "ns", "u1"), ["a"]);
        assert_eq!(live.owned("ConfigMap", "elsewhere", "u1"), ["c"]);
        assert!(live.owned("ConfigMap", "ns", "someone-else").is_empty());
    }

    /// What `owned` answered before it had an index: a scan of every child.
    fn scanned(live: &LiveState, kind: &'static str, namespace: &str, owner: &str) -> Vec<String> {
        let inner = live.lock();
        let mut names: Vec<String> = inner
            .children
            .iter()
            .filter(|(k, c)| {
                k.kind == kind
                    && &*k.namespace == namespace
                    && c.seen.as_ref().and_then(|s| s.owner.as_deref()) == Some(owner)
            })
            .map(|(k, _)| k.name.to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_owner_index_agrees_with_a_scan_through_adds_owner_changes_deletes_and_relists() {
        let live = LiveState::default();
        let scope = Some("ns".to_string());
        let check = |step: &str| {
            for owner in ["u1", "u2", "u3"] {
                assert_eq!(
                    live.owned("ConfigMap", "ns", owner),
                    scanned(&live, "ConfigMap", "ns", owner),
                    "{step} {owner}"
                );
            }
            assert!(live.lock().owned.values().all(|names| !names.is_empty()), "{step}: empty index entries");
        };
        for (name, owner) in [("a", "u1"), ("b", "u1"), ("c", "u2")] {
            live.observe(&scope, &Event::Apply(config_map(name, "1", owner)));
        }
        check("added");
        assert_eq!(live.owned("ConfigMap", "ns", "u1"), ["a", "b"]);
        live.observe(&scope, &Event::Apply(config_map("b", "2", "u2")));
        check("owner changed");
        assert_eq!(live.owned("ConfigMap", "ns", "u2"), ["b", "c"]);
        let mut orphan = config_map("a", "3", "u1");
        orphan.metadata.owner_references = None;
        live.observe(&scope, &Event::Apply(orphan));
        check("owner removed");
        assert!(live.owned("ConfigMap", "ns", "u1").is_empty());
        live.record_apply(ChildKey::new("ConfigMap", "ns", "d"), 1, &config_map("d", "4", "u3").metadata);
        check("applied");
        live.observe(&scope, &Event::Delete(config_map("c", "5", "u2")));
        check("deleted");
        live.observe(&scope, &Event::<PartialObjectMeta<ConfigMap>>::Init);
        live.observe(&scope, &Event::InitApply(config_map("b", "6", "u1")));
        live.observe(&scope, &Event::InitApply(config_map("e", "6", "u3")));
        live.observe(&scope, &Event::<PartialObjectMeta<ConfigMap>>::InitDone);
        check("relisted");
        assert_eq!(live.owned("ConfigMap", "ns", "u1"), ["b"]);
        assert_eq!(live.owned("ConfigMap", "ns", "u3"), ["e"]);
        assert!(live.owned("ConfigMap", "ns", "u2").is_empty());
    }

    #[test]
    fn a_deleted_child_is_forgotten_with_its_workload_copy() {
        let live = LiveState::default();
        live.observe(&None, &Event::Apply(deployment(1, "5", 1)));
        assert!(live.deployment("ns", "w").is_some());
        live.observe(&None, &Event::Delete(deployment(1, "6", 1)));
        assert!(live.deployment("ns", "w").is_none());
        assert!(live.owned("Deployment", "ns", "u1").is_empty());
    }

    #[test]
    fn trimmed_workloads_keep_images_and_status_only() {
        let mut d = deployment(3, "9", 1);
        d.metadata.managed_fields = Some(vec![Default::default()]);
        d.spec.as_mut().unwrap().template.spec = Some(PodSpec {
            containers: vec![Container {
                name: "api".into(),
                image: Some("img:1".into()),
                args: Some(vec!["--big".into()]),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        d.metadata.annotations = Some(
            [(ANNOTATION_WORKER_IMAGE.to_string(), "img:1".to_string()), ("other".to_string(), "x".repeat(1000))]
                .into(),
        );
        let t = Workload::of_deployment(&d).deployment("ns", "w").expect("a Deployment");
        assert!(t.metadata.managed_fields.is_none());
        assert!(t.metadata.owner_references.is_none());
        assert_eq!(t.metadata.name.as_deref(), Some("w"));
        assert_eq!(t.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(t.metadata.generation, Some(3));
        assert_eq!(t.metadata.resource_version.as_deref(), Some("9"));
        let kept: Vec<&String> = t.metadata.annotations.as_ref().unwrap().keys().collect();
        assert_eq!(kept, [ANNOTATION_WORKER_IMAGE], "only the applied-image annotation is kept");
        let c = &t.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        assert_eq!((c.name.as_str(), c.image.as_deref(), c.args.as_ref()), ("api", Some("img:1"), None));
        assert_eq!(t.spec.unwrap().replicas, Some(2));
        assert_eq!(t.status, d.status);
        assert!(Workload::of_deployment(&d).stateful_set("ns", "w").is_none(), "not a StatefulSet");
    }

    #[test]
    fn a_stateful_set_is_kept_with_replicas_images_and_status() {
        let set = StatefulSet {
            metadata: ObjectMeta { generation: Some(4), resource_version: Some("12".into()), ..ObjectMeta::default() },
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "redis".into(),
                            image: Some("redis:7".into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus { ready_replicas: Some(1), replicas: 1, ..StatefulSetStatus::default() }),
        };
        let live = LiveState::default();
        let mut watched = set.clone();
        watched.metadata.name = Some("r".into());
        watched.metadata.namespace = Some("ns".into());
        live.observe(&None, &Event::Apply(watched));
        let kept = live.stateful_set("ns", "r").expect("kept");
        assert_eq!(kept.metadata.generation, Some(4));
        assert_eq!(kept.spec.as_ref().unwrap().replicas, Some(1));
        let containers = &kept.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers;
        assert_eq!((containers[0].name.as_str(), containers[0].image.as_deref()), ("redis", Some("redis:7")));
        assert_eq!(kept.status, set.status);
        assert!(live.deployment("ns", "r").is_none(), "a StatefulSet is not a Deployment");
        let no_spec = Workload::of_stateful_set(&StatefulSet::default()).stateful_set("ns", "r").unwrap();
        assert!(no_spec.spec.is_none() && no_spec.status.is_none());
    }

    #[test]
    fn namespaces_and_owner_uids_are_stored_once() {
        let live = LiveState::default();
        for name in ["a", "b", "c"] {
            live.observe(&None, &Event::Apply(config_map(name, "1", "u1")));
        }
        live.record_apply(ChildKey::new("ConfigMap", "ns", "d"), 1, &config_map("d", "2", "u1").metadata);
        let inner = live.lock();
        let keys: Vec<&Key> = inner.children.keys().collect();
        assert_eq!(keys.len(), 4);
        assert!(keys.iter().all(|k| Arc::ptr_eq(&k.namespace, &keys[0].namespace)), "one namespace string");
        let (index_uid, indexed) = inner.owned.get_key_value("u1").expect("indexed");
        assert_eq!(indexed.len(), 4);
        for child in inner.children.values() {
            let owner = child.seen.as_ref().and_then(|s| s.owner.as_ref()).expect("owned");
            assert!(Arc::ptr_eq(owner, index_uid), "one owner UID string");
        }
    }

    #[test]
    fn forgetting_an_applied_child_keeps_what_its_watch_saw() {
        let live = LiveState::default();
        let key = ChildKey::new("ConfigMap", "ns", "cm");
        live.record_apply(key.clone(), 1, &config_map("cm", "10", "u1").metadata);
        live.forget(&key);
        assert!(!live.unchanged_since_apply(&key, 1), "no record of the apply any more");
        assert_eq!(live.owned("ConfigMap", "ns", "u1"), ["cm"], "still there until its watch says deleted");
        live.observe(&None, &Event::Delete(config_map("cm", "11", "u1")));
        assert!(live.owned("ConfigMap", "ns", "u1").is_empty());
        assert!(live.is_empty());
        assert!(live.lock().owned.is_empty(), "no index entry left behind");
    }
}
