//! What the child watches have seen, kept small: per child its owner and a
//! fingerprint of the fields someone else could change, and for workloads a trimmed
//! copy with their status. The apply step reads it to skip patches that would change
//! nothing (so an idle system costs no API writes) and to find children to prune
//! without listing the cluster on every reconcile.
//!
//! It must not hold whole objects: at a thousand systems that would be most of the
//! operator's memory. Nothing here talks to the API; the watches feed it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
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
}

/// A child as last seen by its watch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    fingerprint: u64,
    resource_version: Option<u64>,
    /// UID of the controlling owner, if any.
    owner: Option<String>,
}

/// What our last apply of a child sent and got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    desired: u64,
    fingerprint: u64,
}

/// One watch: a child kind in one namespace, or in all (`None`).
type WatchScope = (&'static str, Option<String>);

/// Children of one kind in one namespace with one controlling owner (its UID).
type Owned = (&'static str, String, String);

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<ChildKey, Seen>,
    /// `seen` indexed by owner, kept in step with it: pruning asks for one system's
    /// children on every reconcile, and a scan of every child of every system made
    /// each reconcile cost O(all children) (most of the CPU at a thousand systems).
    ///
    /// Sorted names. Most owners have one child of a kind, and a `BTreeSet` costs a
    /// 300-byte node even for one name: at 10,000 children that was 3 MB.
    owned: HashMap<Owned, Vec<String>>,
    written: HashMap<ChildKey, Written>,
    /// Boxed: a `Deployment` value is kilobytes wide (every optional field of the pod
    /// spec inline), and a map stores its values in its table, empty slots included.
    deployments: HashMap<ChildKey, Box<Deployment>>,
    stateful_sets: HashMap<ChildKey, Box<StatefulSet>>,
    /// Watches (kind, namespace scope) whose initial list is complete.
    synced: HashSet<WatchScope>,
    /// Objects of a re-list in progress, by watch.
    relisting: HashMap<WatchScope, Vec<(ChildKey, Seen)>>,
}

/// The watch-fed view of every child. Shared by all reconciles.
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

fn seen(meta: &ObjectMeta) -> Seen {
    Seen {
        fingerprint: fingerprint(meta),
        resource_version: meta.resource_version.as_deref().and_then(|rv| rv.parse().ok()),
        owner: meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone()),
    }
}

fn trimmed_meta(meta: &ObjectMeta) -> ObjectMeta {
    // Of the annotations, only the image the operator put there: the upgrade gate
    // reads it to tell an image change from another manager's edit.
    let image = meta.annotations.as_ref().and_then(|a| a.get_key_value(ANNOTATION_WORKER_IMAGE));
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        generation: meta.generation,
        resource_version: meta.resource_version.clone(),
        annotations: image.map(|(k, v)| std::collections::BTreeMap::from([(k.clone(), v.clone())])),
        ..ObjectMeta::default()
    }
}

/// Only the container names and images of a pod template: what the upgrade logic
/// compares. The rest is the builders' and is not needed to observe.
fn trimmed_template(template: &PodTemplateSpec) -> PodTemplateSpec {
    let containers = template.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    PodTemplateSpec {
        metadata: None,
        spec: Some(PodSpec {
            containers: containers
                .iter()
                .map(|c| Container { name: c.name.clone(), image: c.image.clone(), ..Container::default() })
                .collect(),
            ..PodSpec::default()
        }),
    }
}

/// A Deployment with what observing it needs: generation, replicas, images, status.
pub fn trim_deployment(d: &Deployment) -> Deployment {
    Deployment {
        metadata: trimmed_meta(&d.metadata),
        spec: d.spec.as_ref().map(|s| DeploymentSpec {
            replicas: s.replicas,
            template: trimmed_template(&s.template),
            ..DeploymentSpec::default()
        }),
        status: d.status.clone(),
    }
}

/// A StatefulSet with what observing it needs.
pub fn trim_stateful_set(s: &StatefulSet) -> StatefulSet {
    StatefulSet {
        metadata: trimmed_meta(&s.metadata),
        spec: s.spec.as_ref().map(|spec| StatefulSetSpec {
            replicas: spec.replicas,
            template: trimmed_template(&spec.template),
            ..StatefulSetSpec::default()
        }),
        status: s.status.clone(),
    }
}

/// How a watched kind is kept: metadata only, or with a trimmed workload copy.
pub trait Observable: Resource + Sized {
    const KIND: &'static str;
    fn keep(_object: &Self, _inner_key: &ChildKey, _live: &mut LiveWorkloads<'_>) {}
    fn forget(_key: &ChildKey, _live: &mut LiveWorkloads<'_>) {}
}

/// The workload maps, for [`Observable`] implementations.
pub struct LiveWorkloads<'a> {
    deployments: &'a mut HashMap<ChildKey, Box<Deployment>>,
    stateful_sets: &'a mut HashMap<ChildKey, Box<StatefulSet>>,
}

impl Observable for Deployment {
    const KIND: &'static str = "Deployment";
    fn keep(object: &Self, key: &ChildKey, live: &mut LiveWorkloads<'_>) {
        live.deployments.insert(key.clone(), Box::new(trim_deployment(object)));
    }
    fn forget(key: &ChildKey, live: &mut LiveWorkloads<'_>) {
        live.deployments.remove(key);
    }
}

impl Observable for StatefulSet {
    const KIND: &'static str = "StatefulSet";
    fn keep(object: &Self, key: &ChildKey, live: &mut LiveWorkloads<'_>) {
        live.stateful_sets.insert(key.clone(), Box::new(trim_stateful_set(object)));
    }
    fn forget(key: &ChildKey, live: &mut LiveWorkloads<'_>) {
        live.stateful_sets.remove(key);
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
    CronJob => k8s_openapi::api::batch::v1::CronJob,
    PodDisruptionBudget => k8s_openapi::api::policy::v1::PodDisruptionBudget,
    HorizontalPodAutoscaler => k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    NetworkPolicy => k8s_openapi::api::networking::v1::NetworkPolicy,
);

fn key_of<K: Observable>(object: &K) -> ChildKey {
    ChildKey::new(K::KIND, object.meta().namespace.as_deref().unwrap_or_default(), &object.name_any())
}

impl Inner {
    fn workloads(&mut self) -> LiveWorkloads<'_> {
        LiveWorkloads { deployments: &mut self.deployments, stateful_sets: &mut self.stateful_sets }
    }

    /// Records `new` for `key`, keeping the owner index in step.
    fn set_seen(&mut self, key: ChildKey, new: Seen) {
        let old_owner = self.seen.get(&key).and_then(|old| old.owner.clone());
        if old_owner != new.owner {
            self.unindex(&key, old_owner);
        }
        if let Some(owner) = &new.owner {
            let names = self.owned.entry((key.kind, key.namespace.clone(), owner.clone())).or_default();
            if let Err(at) = names.binary_search(&key.name) {
                names.insert(at, key.name.clone());
            }
        }
        self.seen.insert(key, new);
    }

    /// Forgets `key` in `seen` and the owner index.
    fn unset_seen(&mut self, key: &ChildKey) {
        if let Some(old) = self.seen.remove(key) {
            self.unindex(key, old.owner);
        }
    }

    fn unindex(&mut self, key: &ChildKey, owner: Option<String>) {
        let Some(owner) = owner else { return };
        let scope = (key.kind, key.namespace.clone(), owner);
        if let Some(names) = self.owned.get_mut(&scope) {
            if let Ok(at) = names.binary_search(&key.name) {
                names.remove(at);
            }
            if names.is_empty() {
                self.owned.remove(&scope);
            }
        }
    }

    fn upsert<K: Observable>(&mut self, object: &K) {
        let key = key_of(object);
        let new = seen(object.meta());
        // A watch event older than what an apply already told us is stale: keep the newer.
        if let (Some(old), Some(new_rv)) = (self.seen.get(&key).and_then(|s| s.resource_version), new.resource_version)
            && new_rv < old
        {
            return;
        }
        K::keep(object, &key, &mut self.workloads());
        self.set_seen(key, new);
    }

    fn remove(&mut self, key: &ChildKey, forget: impl FnOnce(&ChildKey, &mut LiveWorkloads<'_>)) {
        self.unset_seen(key);
        self.written.remove(key);
        forget(key, &mut self.workloads());
    }
}

impl LiveState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another reconcile panicked mid-update; the
        // maps are still usable, and the worst outcome of a stale entry is one patch.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Feeds one watch event of the watch over `scope` (a namespace, or all).
    pub fn observe<K: Observable>(&self, scope: &Option<String>, event: &Event<K>) {
        let mut inner = self.lock();
        let watch = (K::KIND, scope.clone());
        match event {
            Event::Apply(object) => inner.upsert(object),
            Event::Delete(object) => inner.remove(&key_of(object), K::forget),
            Event::Init => {
                inner.relisting.insert(watch, Vec::new());
            }
            Event::InitApply(object) => {
                let key = key_of(object);
                K::keep(object, &key, &mut inner.workloads());
                let entry = (key, seen(object.meta()));
                inner.relisting.entry(watch).or_default().push(entry);
            }
            Event::InitDone => {
                let listed = inner.relisting.remove(&watch).unwrap_or_default();
                let listed_keys: HashSet<&ChildKey> = listed.iter().map(|(k, _)| k).collect();
                let gone: Vec<ChildKey> = inner
                    .seen
                    .keys()
                    .filter(|k| k.kind == K::KIND && scope.as_ref().is_none_or(|ns| &k.namespace == ns))
                    .filter(|k| !listed_keys.contains(k))
                    .cloned()
                    .collect();
                for key in gone {
                    inner.remove(&key, K::forget);
                }
                for (key, new) in listed {
                    inner.set_seen(key, new);
                }
                inner.synced.insert(watch);
            }
        }
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
        match (inner.written.get(key), inner.seen.get(key)) {
            (Some(written), Some(seen)) => written.desired == desired && written.fingerprint == seen.fingerprint,
            _ => false,
        }
    }

    /// Like [`Self::unchanged_since_apply`] for kinds without a watch: `live` is the
    /// object's metadata as just read.
    pub fn unchanged_against(&self, key: &ChildKey, desired: u64, live: &ObjectMeta) -> bool {
        let inner = self.lock();
        inner.written.get(key).is_some_and(|w| w.desired == desired && w.fingerprint == fingerprint(live))
    }

    /// Records what an apply sent (`desired`) and what the server returned.
    pub fn record_apply(&self, key: ChildKey, desired: u64, returned: &ObjectMeta) {
        let mut inner = self.lock();
        let now = seen(returned);
        inner.written.insert(key.clone(), Written { desired, fingerprint: now.fingerprint });
        let newer = match (inner.seen.get(&key).and_then(|s| s.resource_version), now.resource_version) {
            (Some(old), Some(new)) => new >= old,
            _ => true,
        };
        if newer {
            inner.set_seen(key, now);
        }
    }

    /// Children of `kind` in `namespace` whose controlling owner is `owner_uid`, sorted.
    pub fn owned(&self, kind: &'static str, namespace: &str, owner_uid: &str) -> Vec<String> {
        let inner = self.lock();
        let scope = (kind, namespace.to_string(), owner_uid.to_string());
        inner.owned.get(&scope).cloned().unwrap_or_default()
    }

    /// Forgets a child deleted by the apply step (its watch will confirm).
    pub fn forget(&self, key: &ChildKey) {
        self.lock().written.remove(key);
    }

    /// The trimmed Deployment as last seen.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.lock().deployments.get(&ChildKey::new("Deployment", namespace, name)).map(|d| (**d).clone())
    }

    /// The trimmed StatefulSet as last seen.
    pub fn stateful_set(&self, namespace: &str, name: &str) -> Option<StatefulSet> {
        self.lock().stateful_sets.get(&ChildKey::new("StatefulSet", namespace, name)).map(|s| (**s).clone())
    }

    /// Number of children known, for the managed-objects gauge and tests.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
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
            .seen
            .iter()
            .filter(|(k, s)| k.kind == kind && k.namespace == namespace && s.owner.as_deref() == Some(owner))
            .map(|(k, _)| k.name.clone())
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
        let t = trim_deployment(&d);
        assert!(t.metadata.managed_fields.is_none());
        let kept: Vec<&String> = t.metadata.annotations.as_ref().unwrap().keys().collect();
        assert_eq!(kept, [ANNOTATION_WORKER_IMAGE], "only the applied-image annotation is kept");
        let c = &t.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        assert_eq!((c.name.as_str(), c.image.as_deref(), c.args.as_ref()), ("api", Some("img:1"), None));
        assert_eq!(t.spec.unwrap().replicas, Some(2));
        assert_eq!(t.status, d.status);
    }
}
