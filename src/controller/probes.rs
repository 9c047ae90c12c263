//! Dependency probe answers, shared by every system that uses the same MongoDB or
//! Redis with the same credentials: each is probed at most once per probe interval,
//! however many systems use it and however often they are reconciled or re-checked,
//! and systems asking at the same moment wait for the one probe in flight instead of
//! each sending their own. A probe whose answer differs from the one before it says
//! so, so that the other systems using that server can be woken to report it.
//!
//! A failed answer is kept for a shorter time (the retry interval, jittered down by up
//! to a fifth so servers that failed together are not probed together): a server that
//! answers again is seen within seconds. That costs at most one probe per failing
//! server per retry interval, and probes are only sent when a reconcile or a re-check
//! asks, so their rate stays within the re-check budget plus the reconciles.
//!
//! Servers are known by a key hashed with this process's random key, so the cache
//! holds no URI or password; answers are the probe's own (already scrubbed) messages.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::conditions::Probe;

/// A server, with the credentials used on it.
pub type Target = u64;

/// A probe's answer, and whether it differs from the previous answer for that server.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub probe: Probe,
    pub changed: bool,
    /// Whether this answer came from a probe sent now (not from the cache).
    pub sent: bool,
}

/// The last answer and until when it is fresh.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Probe)>>>;

/// Share by which a failed answer's freshness is shortened at random, at most.
const RETRY_JITTER: f64 = 0.2;

/// How long an answer stays fresh: `interval` when the server answered (or was not
/// asked), `retry` (never above `interval`) shortened by `unit * RETRY_JITTER` when
/// it failed. `unit` is a number in [0, 1).
pub fn fresh_for(probe: &Probe, interval: Duration, retry: Duration, unit: f64) -> Duration {
    match probe {
        Probe::Failed { .. } => {
            let unit = if (0.0..1.0).contains(&unit) { unit } else { 0.0 };
            retry.min(interval).mul_f64(1.0 - RETRY_JITTER * unit)
        }
        _ => interval,
    }
}

/// The last answer of each server probed recently.
#[derive(Debug)]
pub struct ProbeCache {
    interval: Duration,
    /// Freshness of a failed answer (before jitter).
    retry: Duration,
    keys: RandomState,
    slots: Mutex<HashMap<Target, Slot>>,
    /// Slots kept after the last sweep; the next sweep waits until there are twice as many.
    swept_to: Mutex<usize>,
}

/// Below this many servers the cache is never swept.
const SWEEP_FLOOR: usize = 64;

impl ProbeCache {
    pub fn new(interval: Duration, retry: Duration) -> Self {
        Self { interval, retry, keys: RandomState::new(), slots: Mutex::new(HashMap::new()), swept_to: Mutex::new(0) }
    }

    /// The key of a server: a hash of `parts` (address, credentials) under this
    /// process's random key.
    pub fn target(&self, parts: impl Hash) -> Target {
        self.keys.hash_one(parts)
    }

    /// The answer for `target`: the cached one while fresh ([`fresh_for`]), otherwise
    /// `probe`'s, sent once however many ask at the same time.
    pub async fn answer<F, Fut>(&self, target: Target, probe: F) -> Answer
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Probe>,
    {
        let slot = self.slot(target);
        let mut held = slot.lock().await;
        if let Some((until, cached)) = held.as_ref()
            && Instant::now() < *until
        {
            return Answer { probe: cached.clone(), changed: false, sent: false };
        }
        let fresh = probe().await;
        let changed = held.as_ref().is_some_and(|(_, previous)| *previous != fresh);
        let now = Instant::now();
        // Any well-mixed number does for the jitter: this process's keyed hash of the moment.
        let unit = (self.keys.hash_one((target, now)) >> 11) as f64 / (1u64 << 53) as f64;
        *held = Some((now + fresh_for(&fresh, self.interval, self.retry, unit), fresh.clone()));
        Answer { probe: fresh, changed, sent: true }
    }

    /// Servers known now (for tests of the bound).
    pub fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, target: Target) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut swept_to = self.swept_to.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slots.len() >= SWEEP_FLOOR.max(*swept_to * 2) {
            // Keep a server while someone holds its slot or its answer is fresh; a
            // forgotten one is only probed again when next asked for.
            let now = Instant::now();
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |held| held.as_ref().is_some_and(|(until, _)| now < *until))
            });
            *swept_to = slots.len();
        }
        slots.entry(target).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn ok() -> Probe {
        Probe::Ok { message: "answered".into() }
    }

    fn down() -> Probe {
        Probe::Failed { reason: "Unreachable".into(), message: "refused".into() }
    }

    #[tokio::test]
    async fn a_server_is_probed_once_per_interval_however_many_ask() {
        let cache = ProbeCache::new(Duration::from_secs(60), Duration::from_secs(60));
        let sent = AtomicUsize::new(0);
        let target = cache.target(("redis", "10.0.0.1", 6379, Some(b"pw".as_slice())));
        let probe = || async {
            sent.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            ok()
        };
        let answers = futures::future::join_all((0..50).map(|_| cache.answer(target, probe))).await;
        assert_eq!(sent.load(Ordering::SeqCst), 1, "one probe for fifty systems asking together");
        assert!(answers.iter().all(|a| a.probe == ok() && !a.changed));
        assert_eq!(answers.iter().filter(|a| a.sent).count(), 1);
        cache.answer(target, probe).await;
        assert_eq!(sent.load(Ordering::SeqCst), 1, "still fresh");
        let other = cache.target(("redis", "10.0.0.1", 6379, Some(b"other".as_slice())));
        assert_ne!(target, other, "other credentials are another target");
        cache.answer(other, probe).await;
        assert_eq!(sent.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stale_answer_is_probed_again_and_a_different_one_says_so() {
        let cache = ProbeCache::new(Duration::from_millis(30), Duration::from_millis(30));
        let target = cache.target("mongodb://a");
        let first = cache.answer(target, || async { ok() }).await;
        assert!(first.sent && !first.changed, "nothing to compare the first answer with");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let same = cache.answer(target, || async { ok() }).await;
        assert!(same.sent && !same.changed);
        tokio::time::sleep(Duration::from_millis(40)).await;
        let changed = cache.answer(target, || async { down() }).await;
        assert_eq!(changed, Answer { probe: down(), changed: true, sent: true });
    }

    #[test]
    fn a_failed_answer_is_fresh_for_the_jittered_retry_interval_only() {
        let (interval, retry) = (Duration::from_secs(30), Duration::from_secs(5));
        for unit in [0.0, 0.5, 0.999] {
            assert_eq!(fresh_for(&ok(), interval, retry, unit), interval);
            let unknown = Probe::Unknown { reason: "SecretMissing".into(), message: "no URI".into() };
            assert_eq!(fresh_for(&unknown, interval, retry, unit), interval, "not asked: nothing to retry");
            let failed = fresh_for(&down(), interval, retry, unit);
            assert!(failed <= retry && failed > Duration::from_secs(4), "{failed:?} at {unit}");
        }
        assert!(fresh_for(&down(), interval, retry, 0.9) < fresh_for(&down(), interval, retry, 0.1), "jittered");
        assert_eq!(fresh_for(&down(), retry, interval, 0.0), retry, "never above the interval");
        assert_eq!(fresh_for(&down(), interval, retry, f64::NAN), retry, "any unit is safe");
    }

    #[tokio::test]
    async fn a_failing_server_is_probed_again_after_the_retry_interval_and_its_recovery_says_so() {
        let cache = ProbeCache::new(Duration::from_secs(60), Duration::from_millis(30));
        let target = cache.target("mongodb://a");
        assert!(cache.answer(target, || async { down() }).await.sent);
        assert!(!cache.answer(target, || async { ok() }).await.sent, "fresh for a moment");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let back = cache.answer(target, || async { ok() }).await;
        assert_eq!(back, Answer { probe: ok(), changed: true, sent: true });
        tokio::time::sleep(Duration::from_millis(40)).await;
        let kept = cache.answer(target, || async { down() }).await;
        assert_eq!(kept, Answer { probe: ok(), changed: false, sent: false }, "an answer is kept the full interval");
    }

    #[tokio::test]
    async fn servers_not_asked_for_within_the_interval_are_forgotten() {
        let cache = ProbeCache::new(Duration::from_millis(20), Duration::from_millis(20));
        for i in 0..SWEEP_FLOOR {
            cache.answer(cache.target(i), || async { ok() }).await;
        }
        assert_eq!(cache.len(), SWEEP_FLOOR);
        tokio::time::sleep(Duration::from_millis(30)).await;
        for i in 0..1000 {
            cache.answer(cache.target(("more", i)), || async { ok() }).await;
        }
        // Swept each time the count doubled: the stale first 64 went in the first sweep.
        assert!(cache.len() <= 1000, "{}", cache.len());
        let kept: Vec<bool> =
            (0..SWEEP_FLOOR).map(|i| cache.slots.lock().unwrap().contains_key(&cache.target(i))).collect();
        assert!(kept.iter().all(|k| !k), "stale servers were kept");
    }
}
