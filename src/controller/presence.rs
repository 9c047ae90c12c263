//! Which systems have at least one object of a kind that most systems have none of
//! (a ReferralRestore naming them, a backup Job labelled with them), as a watch saw
//! it. A reconcile reads those objects with a list on every run, because it must act
//! on their current state; when the watch has listed everything and seen none for the
//! system, that list can only come back empty and is skipped. At 10,000 systems the
//! two lists were half of the API reads of every reconcile (docs/benchmarks.md,
//! "Round 6").
//!
//! Only counts are kept: per object its system, per system how many. A watch that has
//! not listed yet (or failed: the CRD absent, the list not granted) answers "maybe",
//! and the reconcile lists as before. The counts are updated before the event goes on
//! to the Controller, so the reconcile a new restore wakes finds it counted; a backup
//! Job is counted from its creation, long before it can fail.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};

/// An object, by namespace and name.
type ObjectKey = (String, String);
/// A system, by namespace and name.
type SystemKey = (String, String);

#[derive(Debug, Default)]
struct Inner {
    /// The system of each object seen.
    objects: HashMap<ObjectKey, String>,
    /// How many objects each system has.
    counts: HashMap<SystemKey, usize>,
    /// Namespace scopes (one namespace, or all: `None`) whose initial list is complete.
    synced: HashSet<Option<String>>,
    /// Objects of a re-list in progress, by scope.
    relisting: HashMap<Option<String>, Vec<(ObjectKey, String)>>,
}

impl Inner {
    fn insert(&mut self, key: ObjectKey, system: String) {
        self.remove(&key);
        *self.counts.entry((key.0.clone(), system.clone())).or_default() += 1;
        self.objects.insert(key, system);
    }

    fn remove(&mut self, key: &ObjectKey) {
        if let Some(system) = self.objects.remove(key) {
            let count_key = (key.0.clone(), system);
            if let Some(n) = self.counts.get_mut(&count_key) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&count_key);
                }
            }
        }
    }
}

/// Objects of one kind, counted by the system they belong to.
#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<Inner>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counts half-updated in a way
        // that hides an object for good: the next re-list rebuilds them.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Feeds one event of the watch over `scope`. `system_of` names the system an
    /// object belongs to, or `None` for one that belongs to none (or does not decode).
    pub fn observe<K: Resource>(
        &self,
        scope: &Option<String>,
        event: &Event<K>,
        system_of: impl Fn(&K) -> Option<String>,
    ) {
        let key = |object: &K| (object.meta().namespace.clone().unwrap_or_default(), object.name_any());
        let mut inner = self.lock();
        match event {
            Event::Apply(object) => match system_of(object) {
                Some(system) => inner.insert(key(object), system),
                None => inner.remove(&key(object)),
            },
            Event::Delete(object) => inner.remove(&key(object)),
            Event::Init => {
                inner.relisting.insert(scope.clone(), Vec::new());
            }
            Event::InitApply(object) => {
                if let Some(system) = system_of(object) {
                    inner.relisting.entry(scope.clone()).or_default().push((key(object), system));
                }
            }
            Event::InitDone => {
                let listed = inner.relisting.remove(scope).unwrap_or_default();
                let gone: Vec<ObjectKey> =
                    inner.objects.keys().filter(|(ns, _)| scope.as_ref().is_none_or(|s| s == ns)).cloned().collect();
                for key in gone {
                    inner.remove(&key);
                }
                for (key, system) in listed {
                    inner.insert(key, system);
                }
                inner.synced.insert(scope.clone());
            }
        }
    }

    /// False only when the watch covering `namespace` has listed everything and holds
    /// no object of `system`: a list for it would come back empty.
    pub fn may_have(&self, namespace: &str, system: &str) -> bool {
        let inner = self.lock();
        let synced = inner.synced.contains(&None) || inner.synced.contains(&Some(namespace.to_string()));
        !synced || inner.counts.contains_key(&(namespace.to_string(), system.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    /// A test object in namespace `ns`, named `name`, of `system` (a label here).
    fn obj(ns: &str, name: &str, system: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([("system".to_string(), system.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn system_of(o: &ConfigMap) -> Option<String> {
        o.labels().get("system").filter(|s| !s.is_empty()).cloned()
    }

    fn feed(p: &Presence, scope: Option<&str>, events: Vec<Event<ConfigMap>>) {
        let scope = scope.map(str::to_string);
        for e in &events {
            p.observe(&scope, e, system_of);
        }
    }

    #[test]
    fn before_the_first_list_everything_may_exist() {
        let p = Presence::default();
        assert!(p.may_have("a", "s1"));
        feed(&p, None, vec![Event::Init, Event::InitApply(obj("a", "r1", "s1"))]);
        assert!(p.may_have("a", "s2"), "a list in progress is not complete");
    }

    #[test]
    fn after_the_list_only_systems_with_objects_may_have_them() {
        let p = Presence::default();
        feed(&p, None, vec![Event::Init, Event::InitApply(obj("a", "r1", "s1")), Event::InitDone]);
        assert!(p.may_have("a", "s1"));
        assert!(!p.may_have("a", "s2"));
        assert!(!p.may_have("b", "s1"), "same system name, another namespace");
    }

    #[test]
    fn applies_and_deletes_move_the_counts() {
        let p = Presence::default();
        feed(&p, None, vec![Event::Init, Event::InitDone]);
        feed(&p, None, vec![Event::Apply(obj("a", "r1", "s1")), Event::Apply(obj("a", "r2", "s1"))]);
        assert!(p.may_have("a", "s1"));
        feed(&p, None, vec![Event::Delete(obj("a", "r1", "s1"))]);
        assert!(p.may_have("a", "s1"), "one of two deleted");
        feed(&p, None, vec![Event::Delete(obj("a", "r2", "s1"))]);
        assert!(!p.may_have("a", "s1"));
        // An object whose system changes (a restore's spec edited) moves with it.
        feed(&p, None, vec![Event::Apply(obj("a", "r3", "s1")), Event::Apply(obj("a", "r3", "s2"))]);
        assert!(!p.may_have("a", "s1"));
        assert!(p.may_have("a", "s2"));
    }

    #[test]
    fn a_relist_forgets_what_was_deleted_while_the_watch_was_down() {
        let p = Presence::default();
        feed(&p, None, vec![Event::Init, Event::InitApply(obj("a", "r1", "s1")), Event::InitDone]);
        feed(&p, None, vec![Event::Init, Event::InitApply(obj("b", "r2", "s2")), Event::InitDone]);
        assert!(!p.may_have("a", "s1"));
        assert!(p.may_have("b", "s2"));
    }

    #[test]
    fn a_namespace_watch_answers_for_its_namespace_only() {
        let p = Presence::default();
        feed(&p, Some("a"), vec![Event::Init, Event::InitDone]);
        feed(&p, Some("b"), vec![Event::Init, Event::InitApply(obj("b", "r1", "s1")), Event::InitDone]);
        assert!(!p.may_have("a", "s1"));
        assert!(p.may_have("b", "s1"));
        assert!(p.may_have("c", "s1"), "no watch covers c: unknown");
        // A re-list of one namespace leaves the other's objects alone.
        feed(&p, Some("a"), vec![Event::Init, Event::InitDone]);
        assert!(p.may_have("b", "s1"));
    }

    #[test]
    fn objects_of_no_system_are_not_counted() {
        let p = Presence::default();
        feed(&p, None, vec![Event::Init, Event::InitDone]);
        feed(&p, None, vec![Event::Apply(obj("a", "x", "s1")), Event::Apply(obj("a", "x", ""))]);
        assert!(!p.may_have("a", "s1"), "the object no longer names s1");
    }
}
