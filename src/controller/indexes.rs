//! The declared MongoDB indexes, checked from the reconcile: at most once per
//! `spec.mongodb.indexCheckInterval` per system, and at once when the declared
//! indexes, the policy or the database change. An unchanged database costs one
//! `listIndexes` per collection and no write (see [`crate::checks::index_sync`]).
//! Paused systems are not checked: under `Ensure` a check may create indexes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::checks::index_sync::sync_indexes;
use crate::crd::validate::ValidatedSystem;

use super::conditions::IndexObservation;
use super::context::Context;
use super::live::content_hash;

/// When each system's indexes were last checked, and for which declaration.
#[derive(Debug, Default)]
pub struct IndexSchedule {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl IndexSchedule {
    /// Whether a check is due now for `key` with `declaration` (a hash of what is
    /// declared), given `interval`.
    pub fn due(&self, key: &str, declaration: u64, interval: std::time::Duration, now: Instant) -> bool {
        let last = self.last.lock().map(|m| m.get(key).copied()).unwrap_or(None);
        match last {
            None => true,
            Some((at, declared)) => declared != declaration || now.duration_since(at) >= interval,
        }
    }

    /// When the next check of `key` is due, if one was made.
    pub fn next_due(&self, key: &str, interval: std::time::Duration) -> Option<Instant> {
        let last = self.last.lock().ok()?.get(key).copied();
        last.map(|(at, _)| at + interval)
    }

    pub fn record(&self, key: &str, declaration: u64, now: Instant) {
        if let Ok(mut m) = self.last.lock() {
            m.insert(key.to_string(), (now, declaration));
        }
    }

    /// Forgets a failed attempt's time, so the next reconcile tries again.
    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.last.lock() {
            m.remove(key);
        }
    }
}

/// An index check whose result has not reached the status yet. Dropped before
/// [`UnwrittenCheck::written`] (the reconcile failed later, or was cancelled), it
/// forgets the check's time, so the next reconcile checks again: otherwise the status
/// would keep the previous result (or `NotCheckedYet`) for a whole interval, and the
/// next check would write the status of a system in which nothing changed.
pub struct UnwrittenCheck<'a> {
    schedule: &'a IndexSchedule,
    key: Option<String>,
}

impl<'a> UnwrittenCheck<'a> {
    pub fn new(schedule: &'a IndexSchedule, key: String) -> Self {
        Self { schedule, key: Some(key) }
    }

    /// The status now holds the result: the check's time stands.
    pub fn written(mut self) {
        self.key = None;
    }
}

impl Drop for UnwrittenCheck<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.schedule.forget(&key);
        }
    }
}

/// Checks (and under `Ensure`, creates) the declared indexes when due.
pub async fn observe_indexes(
    ctx: &Context,
    system: &ValidatedSystem,
    uri: Option<&str>,
    tls: Option<&crate::checks::tls::TlsMaterial>,
) -> IndexObservation {
    let mongo = &system.spec.mongodb;
    if system.spec.paused {
        return IndexObservation::NotChecked;
    }
    let Some(uri) = uri else {
        return IndexObservation::Failed {
            reason: "SecretMissing".into(),
            message: "the MongoDB URI Secret cannot be read, so the indexes cannot be checked".into(),
        };
    };
    let key = format!("{}/{}", system.namespace, system.name);
    let declaration = content_hash(&(&mongo.indexes, &mongo.index_policy, &mongo.database, content_hash(&uri)));
    let now = Instant::now();
    if !ctx.index_schedule.due(&key, declaration, system.intervals.index_check, now) {
        return IndexObservation::NotChecked;
    }
    ctx.index_schedule.record(&key, declaration, now);
    let client = match ctx.mongo.client(uri, tls, ctx.settings.probe_timeout).await {
        Ok(client) => client,
        Err(error) => {
            ctx.index_schedule.forget(&key);
            return IndexObservation::Failed { reason: error.reason().into(), message: error.to_string() };
        }
    };
    match sync_indexes(&client, &mongo.database, &mongo.indexes, mongo.index_policy).await {
        Ok(report) => {
            let c = report.counts();
            let count = |n: u32| i64::from(n);
            ctx.metrics.set_index_states(
                &system.namespace,
                &system.name,
                &[
                    ("present", count(c.present)),
                    ("created", count(c.created)),
                    ("missing", count(c.missing)),
                    ("conflict", count(c.conflict)),
                ],
            );
            if report.writes > 0 {
                tracing::info!(system = %key, writes = report.writes, "created declared MongoDB indexes");
            }
            IndexObservation::Fresh {
                statuses: report.statuses(),
                unmanaged: report.unmanaged_statuses(),
                summary: report.summary(),
            }
        }
        Err(error) => {
            ctx.index_schedule.forget(&key);
            ctx.metrics.record_failure(error.category());
            IndexObservation::Failed { reason: error.reason().into(), message: error.to_string() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_check_is_due_first_after_the_interval_and_when_the_declaration_changes() {
        let schedule = IndexSchedule::default();
        let t0 = Instant::now();
        let interval = Duration::from_secs(600);
        assert!(schedule.due("ns/a", 1, interval, t0));
        schedule.record("ns/a", 1, t0);
        assert!(!schedule.due("ns/a", 1, interval, t0 + Duration::from_secs(599)));
        assert!(schedule.due("ns/a", 1, interval, t0 + Duration::from_secs(600)));
        assert!(schedule.due("ns/a", 2, interval, t0 + Duration::from_secs(1)), "a new declaration is checked at once");
        assert!(schedule.due("ns/b", 1, interval, t0), "per system");
        schedule.forget("ns/a");
        assert!(schedule.due("ns/a", 1, interval, t0 + Duration::from_secs(1)), "a failure is retried");
    }

    #[test]
    fn a_check_whose_result_was_not_written_is_made_again() {
        let schedule = IndexSchedule::default();
        let t0 = Instant::now();
        let interval = Duration::from_secs(600);
        schedule.record("ns/a", 1, t0);
        UnwrittenCheck::new(&schedule, "ns/a".into()).written();
        assert!(!schedule.due("ns/a", 1, interval, t0 + Duration::from_secs(1)), "written: not due again");
        // The reconcile failed after the check (or was dropped): due at once.
        drop(UnwrittenCheck::new(&schedule, "ns/a".into()));
        assert!(schedule.due("ns/a", 1, interval, t0 + Duration::from_secs(1)));
    }
}
