//! When each ReferralSystem is re-checked, and how re-checks keep out of the way of
//! news (docs/controller.md, "News first"). A pure rule: no clock, no I/O, no async.
//! The driver ([`super::rechecker`]) passes the time, reports what happened, and asks
//! [`RecheckSchedule::next_recheck_step`] what to do next.
//!
//! - **News first.** News (a new generation, an event of a child, a finished Job, a
//!   restore) goes from the watches straight into the kube-runtime Controller's queue.
//!   A re-check never enters that queue: it is a cheap look done by the driver, and
//!   only what it finds new becomes a reconcile, an *escalation*. An escalation is
//!   sent only while more than a reserve of the reconcile slots is free: then nothing
//!   waits in the queue (the Controller starts whatever is queued whenever a slot is
//!   free), the escalation starts at once, and news arriving next still finds a slot.
//! - **Bounded.** Re-checks start at most `budget` per second, evenly spaced, however
//!   many systems are due; while every reconcile slot is busy (news is queueing), at a
//!   tenth of that.
//! - **Spread and backed off.** A system is due after its base interval (Ready or not
//!   Ready), doubled for every re-check in a row that found nothing new, times a
//!   jitter factor in [0.8, 1.2), and never more than a ceiling; or at a deadline its
//!   last reconcile named (backups turning overdue), whichever comes first. Any reconcile (news, or an
//!   escalation) starts the back-off again from the base interval.
//! - **A dependency that is down is looked at sooner.** While the last reconcile found
//!   MongoDB or Redis failing, the back-off starts from the shorter `dependency_down`
//!   interval and stops at the system's own base interval, so a server that answers
//!   again is seen within that base interval however long it was down, instead of
//!   after a back-off grown over the outage. It costs a few more re-checks per outage
//!   (log2 of base / `dependency_down`), all paced by the same budget.
//! - **Bounded memory.** One entry per system; each ordered set holds a system at
//!   most once, so nothing here grows with time or with the rate of events.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A system, as `namespace/name`.
pub type SystemKey = Arc<str>;

/// A re-check is due after its interval times a factor in `[1 - JITTER, 1 + JITTER)`.
const JITTER: f64 = 0.2;
/// Share of the budget re-checks may use while every reconcile slot is busy.
const SATURATED_SHARE: f64 = 0.1;
/// An escalation that has not started after this long is sent again. It is sent
/// only while a slot is free, so it starts within moments; this only guards against
/// one lost on the way.
pub const ESCALATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The back-off doubles at most this many times, whatever the ceiling.
const MAX_LEVEL: u8 = 16;

/// How re-checks are paced and spread.
#[derive(Debug, Clone, PartialEq)]
pub struct RecheckPolicy {
    /// Re-checks started per second at most, however many systems are due (> 0).
    pub budget: f64,
    /// Base interval of a Ready system.
    pub ready: Duration,
    /// Base interval of a system that is not Ready.
    pub not_ready: Duration,
    /// First interval of a system whose MongoDB or Redis probe failed; it backs off
    /// from there up to the system's base interval, not beyond.
    pub dependency_down: Duration,
    /// Ceiling of the back-off (a base interval above it is kept as it is).
    pub max_interval: Duration,
    /// Reconciles that can run at once: the Controllers' concurrency, summed.
    pub slots: usize,
    /// Cheap checks in flight at once.
    pub max_checking: usize,
}

impl RecheckPolicy {
    /// Escalations are sent only while fewer reconciles than this run or wait to start:
    /// a quarter of the slots (at least one when there are two or more) stays news's.
    pub fn escalation_limit(&self) -> usize {
        self.slots.saturating_sub(self.slots / 4).max(1)
    }

    /// The back-off interval, before jitter.
    pub fn interval(&self, ready: bool, level: u8) -> Duration {
        self.interval_of(Health { ready, dependency_down: false }, level)
    }

    /// The back-off interval of a system in `health`, before jitter.
    fn interval_of(&self, health: Health, level: u8) -> Duration {
        let base = if health.ready { self.ready } else { self.not_ready };
        let (start, ceiling) = if health.dependency_down {
            (self.dependency_down.min(base), base)
        } else {
            (base, self.max_interval.max(base))
        };
        start.saturating_mul(1u32 << level.min(MAX_LEVEL)).min(ceiling)
    }

    /// Least time between two re-checks starting.
    fn spacing(&self, saturated: bool) -> Duration {
        let rate = if saturated { self.budget * SATURATED_SHARE } else { self.budget };
        // A budget of zero or below is refused by the CLI; here it means "hardly ever".
        Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::from_secs(3600)).min(Duration::from_secs(3600))
    }
}

/// What the last reconcile of a system found, as far as its re-check interval goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    pub ready: bool,
    /// A MongoDB or Redis probe failed (MongoReachable or RedisReady False).
    pub dependency_down: bool,
}

/// How a reconcile ended, for the schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled<T> {
    /// Re-check after the base interval (or at `wake_at`), comparing against `baseline`.
    Recheck { health: Health, wake_at: Option<Instant>, baseline: T },
    /// Nothing to re-check until news (an invalid spec waits for a new one).
    Parked,
    /// The reconcile failed and kube-runtime retries it with its own back-off; the
    /// re-check keeps its place and what it compared against.
    Failed,
    /// The system is gone.
    Gone,
}

/// What a cheap re-check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// Everything as the last reconcile saw it: back off.
    NothingNew,
    /// Something changed: reconcile (escalate).
    News,
    /// The look itself failed (an API error): try again after the same interval.
    Failed,
    /// The system is gone.
    Gone,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum RecheckStep<T> {
    /// Send this system's reconcile into the Controller's queue: a re-check found news
    /// (or had nothing to compare against). Report its start with
    /// [`RecheckSchedule::started`] like any reconcile.
    Escalate(SystemKey),
    /// Look at this system cheaply against `T`, the baseline of its last reconcile, and
    /// report with [`RecheckSchedule::checked`].
    Check(SystemKey, T),
    /// Nothing to do before this time, or before the next report when `None`.
    Wait(Option<Instant>),
}

/// Where a system is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its re-check.
    Idle { due: Instant },
    /// No re-check until news.
    Parked,
    /// A cheap check is in flight.
    Checking,
    /// A re-check found news; waiting for a free slot. `seq` keeps them in order.
    Escalating { seq: u64 },
    /// Sent into the Controller's queue at `since`, not started yet.
    Escalated { since: Instant },
    /// A reconcile runs.
    Running,
}

#[derive(Debug)]
struct Entry<T> {
    state: State,
    /// Re-checks in a row that found nothing new (capped where the interval stops growing).
    level: u8,
    health: Health,
    wake_at: Option<Instant>,
    /// What the last reconcile saw; `None` until one settled, so the first re-check escalates.
    baseline: Option<T>,
}

/// Every system's place in the re-check cycle, and the pacing of re-checks.
#[derive(Debug)]
pub struct RecheckSchedule<T> {
    policy: RecheckPolicy,
    entries: HashMap<SystemKey, Entry<T>>,
    due: BTreeSet<(Instant, SystemKey)>,
    escalating: BTreeSet<(u64, SystemKey)>,
    escalated: BTreeSet<(Instant, SystemKey)>,
    next_seq: u64,
    running: usize,
    checking: usize,
    /// No re-check starts before this (pacing).
    next_release: Option<Instant>,
    /// xorshift64 state for the jitter; any non-zero seed.
    rng: u64,
}

impl<T: Clone> RecheckSchedule<T> {
    /// An empty schedule; `seed` drives the jitter (the driver passes a random one,
    /// tests a fixed one).
    pub fn new(policy: RecheckPolicy, seed: u64) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
            due: BTreeSet::new(),
            escalating: BTreeSet::new(),
            escalated: BTreeSet::new(),
            next_seq: 0,
            running: 0,
            checking: 0,
            next_release: None,
            rng: seed | 1,
        }
    }

    pub fn policy(&self) -> &RecheckPolicy {
        &self.policy
    }

    /// Systems known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reconciles running now (news or escalations).
    pub fn running(&self) -> usize {
        self.running
    }

    /// A reconcile of `key` starts, whatever woke it.
    pub fn started(&mut self, key: &str) {
        let key = self.intern(key);
        self.transition(&key, State::Running);
    }

    /// The reconcile of `key` ended.
    pub fn reconciled(&mut self, key: &str, settled: Settled<T>, now: Instant) {
        if let Settled::Gone = settled {
            self.forget(key);
            return;
        }
        let key = self.intern(key);
        let next = {
            let Some(entry) = self.entries.get_mut(&key) else { return };
            match settled {
                Settled::Recheck { health, wake_at, baseline } => {
                    entry.health = health;
                    entry.level = 0;
                    entry.wake_at = wake_at;
                    entry.baseline = Some(baseline);
                    None
                }
                Settled::Parked => {
                    entry.level = 0;
                    entry.wake_at = None;
                    entry.baseline = None;
                    Some(State::Parked)
                }
                Settled::Failed | Settled::Gone => None,
            }
        };
        let next = match next {
            Some(state) => state,
            None => State::Idle { due: self.due_at(&key, now) },
        };
        self.transition(&key, next);
    }

    /// The cheap check of `key` ended. Ignored unless that check is still what the
    /// system waits for (a reconcile that started meanwhile supersedes it).
    pub fn checked(&mut self, key: &str, finding: Finding, now: Instant) {
        let Some((key, entry)) = self.entries.get_key_value(key) else { return };
        if entry.state != State::Checking {
            return;
        }
        let key = key.clone();
        match finding {
            Finding::Gone => self.forget(&key),
            Finding::News => {
                let seq = self.seq();
                self.transition(&key, State::Escalating { seq });
            }
            Finding::NothingNew | Finding::Failed => {
                if finding == Finding::NothingNew
                    && let Some(entry) = self.entries.get_mut(&key)
                    && self.policy.interval_of(entry.health, entry.level)
                        < self.policy.interval_of(entry.health, MAX_LEVEL)
                {
                    entry.level += 1;
                }
                let due = self.due_at(&key, now);
                self.transition(&key, State::Idle { due });
            }
        }
    }

    /// Forgets a system that is gone.
    pub fn forget(&mut self, key: &str) {
        let Some((key, entry)) = self.entries.remove_entry(key) else { return };
        self.leave(&key, entry.state);
    }

    /// Makes every waiting system whose baseline `affected` says so due now: a
    /// dependency they share changed, which each of them must report.
    pub fn wake(&mut self, affected: impl Fn(&T) -> bool, now: Instant) {
        let woken: Vec<SystemKey> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Idle { due } if due > now))
            .filter(|(_, e)| e.baseline.as_ref().is_some_and(&affected))
            .map(|(k, _)| k.clone())
            .collect();
        for key in woken {
            self.transition(&key, State::Idle { due: now });
        }
    }

    /// The next thing to do at `now`. Call until it answers [`RecheckStep::Wait`].
    pub fn next_recheck_step(&mut self, now: Instant) -> RecheckStep<T> {
        loop {
            // An escalation lost on the way is sent again.
            if let Some((since, key)) = self.escalated.first().cloned()
                && now >= since + ESCALATION_TIMEOUT
            {
                let seq = self.seq();
                self.transition(&key, State::Escalating { seq });
            }
            if self.running + self.escalated.len() < self.policy.escalation_limit()
                && let Some((_, key)) = self.escalating.first().cloned()
            {
                self.transition(&key, State::Escalated { since: now });
                return RecheckStep::Escalate(key);
            }
            let lost = self.escalated.first().map(|(since, _)| *since + ESCALATION_TIMEOUT);
            let Some((due, key)) = self.due.first().cloned() else {
                return RecheckStep::Wait(lost);
            };
            if due > now {
                return RecheckStep::Wait(Some(lost.map_or(due, |l| l.min(due))));
            }
            if self.checking >= self.policy.max_checking {
                // A report frees a place, and wakes the driver.
                return RecheckStep::Wait(lost);
            }
            if let Some(at) = self.next_release
                && at > now
            {
                return RecheckStep::Wait(Some(lost.map_or(at, |l| l.min(at))));
            }
            let saturated = self.running >= self.policy.slots;
            self.next_release = Some(now + self.policy.spacing(saturated));
            let Some(entry) = self.entries.get(&key) else {
                // Cannot happen: the sets hold only known systems. Drop it and go on.
                self.due.remove(&(due, key));
                continue;
            };
            let deadline_passed = entry.wake_at.is_some_and(|at| at <= now);
            match (&entry.baseline, deadline_passed) {
                (Some(baseline), false) => {
                    let baseline = baseline.clone();
                    self.transition(&key, State::Checking);
                    return RecheckStep::Check(key, baseline);
                }
                // Nothing to compare against, or a deadline to act on: no look can
                // spare the reconcile.
                _ => {
                    let seq = self.seq();
                    self.transition(&key, State::Escalating { seq });
                }
            }
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// The map's copy of `key`, adding a parked entry for a system not seen before.
    fn intern(&mut self, key: &str) -> SystemKey {
        if let Some((k, _)) = self.entries.get_key_value(key) {
            return k.clone();
        }
        let k: SystemKey = key.into();
        self.entries.insert(
            k.clone(),
            Entry { state: State::Parked, level: 0, health: Health::default(), wake_at: None, baseline: None },
        );
        k
    }

    /// When `key` is next due: its jittered back-off interval from `now`, or its
    /// deadline if sooner.
    fn due_at(&mut self, key: &SystemKey, now: Instant) -> Instant {
        let (health, level, wake_at) = match self.entries.get(key) {
            Some(e) => (e.health, e.level, e.wake_at),
            None => (Health::default(), 0, None),
        };
        let factor = 1.0 - JITTER + 2.0 * JITTER * self.uniform();
        let ceiling = self.policy.interval_of(health, MAX_LEVEL);
        let interval = self.policy.interval_of(health, level).mul_f64(factor).min(ceiling);
        let due = now + interval;
        match wake_at {
            Some(at) => due.min(at.max(now)),
            None => due,
        }
    }

    /// A number in [0, 1).
    fn uniform(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn transition(&mut self, key: &SystemKey, next: State) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        let previous = std::mem::replace(&mut entry.state, next);
        self.leave(key, previous);
        self.enter(key, next);
    }

    fn leave(&mut self, key: &SystemKey, state: State) {
        match state {
            State::Idle { due } => {
                self.due.remove(&(due, key.clone()));
            }
            State::Escalating { seq } => {
                self.escalating.remove(&(seq, key.clone()));
            }
            State::Escalated { since } => {
                self.escalated.remove(&(since, key.clone()));
            }
            State::Checking => self.checking = self.checking.saturating_sub(1),
            State::Running => self.running = self.running.saturating_sub(1),
            State::Parked => {}
        }
    }

    fn enter(&mut self, key: &SystemKey, state: State) {
        match state {
            State::Idle { due } => {
                self.due.insert((due, key.clone()));
            }
            State::Escalating { seq } => {
                self.escalating.insert((seq, key.clone()));
            }
            State::Escalated { since } => {
                self.escalated.insert((since, key.clone()));
            }
            State::Checking => self.checking += 1,
            State::Running => self.running += 1,
            State::Parked => {}
        }
    }

    /// Sizes of the internal sets, for tests of the memory bound.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize, usize, usize) {
        (self.entries.len(), self.due.len(), self.escalating.len(), self.escalated.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn policy() -> RecheckPolicy {
        RecheckPolicy {
            budget: 20.0,
            ready: Duration::from_secs(300),
            not_ready: Duration::from_secs(30),
            dependency_down: Duration::from_secs(5),
            max_interval: Duration::from_secs(600),
            slots: 16,
            max_checking: 8,
        }
    }

    fn key(i: usize) -> String {
        format!("ns-{}/sys-{i}", i % 20)
    }

    const READY: Health = Health { ready: true, dependency_down: false };
    const NOT_READY: Health = Health { ready: false, dependency_down: false };
    const DEPENDENCY_DOWN: Health = Health { ready: false, dependency_down: true };

    /// Settles `n` not-Ready systems at `t0` with a baseline, as their first reconciles do.
    fn settled(n: usize, t0: Instant) -> RecheckSchedule<u32> {
        settled_as(n, t0, NOT_READY)
    }

    fn settled_as(n: usize, t0: Instant, health: Health) -> RecheckSchedule<u32> {
        let mut s = RecheckSchedule::new(policy(), 42);
        for i in 0..n {
            s.started(&key(i));
            s.reconciled(&key(i), Settled::Recheck { health, wake_at: None, baseline: 0 }, t0);
        }
        s
    }

    /// Where a queued or running reconcile came from.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Origin {
        News,
        Escalation,
    }

    /// kube-runtime's Controller as far as order goes: a queue, `slots` reconciles at
    /// once, never two of one system at once; each reconcile takes `duration`.
    struct Runner {
        slots: usize,
        duration: Duration,
        queue: VecDeque<(String, Instant, Origin)>,
        running: Vec<(String, Instant, Origin)>,
        /// (arrived, started) of every news reconcile.
        news_waits: Vec<Duration>,
        /// Start times of escalations and of cheap checks.
        escalations: Vec<Instant>,
        checks: Vec<Instant>,
    }

    impl Runner {
        fn new(duration: Duration) -> Self {
            Runner {
                slots: policy().slots,
                duration,
                queue: VecDeque::new(),
                running: Vec::new(),
                news_waits: Vec::new(),
                escalations: Vec::new(),
                checks: Vec::new(),
            }
        }

        /// News that could start now (a slot free, its system not running) but waits.
        fn startable_news_waiting(&self) -> bool {
            self.running.len() < self.slots
                && self.queue.iter().any(|(k, _, o)| *o == Origin::News && !self.running.iter().any(|(r, _, _)| r == k))
        }

        fn start_what_fits(&mut self, s: &mut RecheckSchedule<u32>, now: Instant) {
            while self.running.len() < self.slots {
                let Some(i) = self.queue.iter().position(|(k, _, _)| !self.running.iter().any(|(r, _, _)| r == k))
                else {
                    break;
                };
                let (k, arrived, origin) = self.queue.remove(i).unwrap();
                if origin == Origin::News {
                    self.news_waits.push(now - arrived);
                }
                s.started(&k);
                self.running.push((k, now + self.duration, origin));
            }
        }

        /// One moment of the simulation: reconciles end, news arrives, the Controller
        /// starts what it can, the driver steps (every check answered at once with
        /// `finding`), the Controller starts what the driver sent.
        fn tick(
            &mut self,
            s: &mut RecheckSchedule<u32>,
            now: Instant,
            news: &[String],
            finding: impl Fn(&str) -> Finding,
        ) {
            let (done, still): (Vec<_>, Vec<_>) = self.running.drain(..).partition(|(_, end, _)| *end <= now);
            self.running = still;
            for (k, _, _) in done {
                s.reconciled(&k, Settled::Recheck { health: NOT_READY, wake_at: None, baseline: 0 }, now);
            }
            for k in news {
                self.queue.push_back((k.clone(), now, Origin::News));
            }
            self.start_what_fits(s, now);
            loop {
                match s.next_recheck_step(now) {
                    RecheckStep::Escalate(k) => {
                        assert!(
                            !self.startable_news_waiting(),
                            "an escalation was sent while news waited for a slot: {:?}",
                            self.queue
                        );
                        assert!(self.running.len() < self.slots, "an escalation was sent with no slot free");
                        self.escalations.push(now);
                        self.queue.push_back((k.to_string(), now, Origin::Escalation));
                        self.start_what_fits(s, now);
                    }
                    RecheckStep::Check(k, _) => {
                        self.checks.push(now);
                        s.checked(&k, finding(&k), now);
                    }
                    RecheckStep::Wait(_) => break,
                }
            }
            self.start_what_fits(s, now);
        }
    }

    /// The most events in any one-second window.
    fn peak_per_second(times: &[Instant]) -> usize {
        let mut peak = 0;
        for (i, start) in times.iter().enumerate() {
            let within = times[i..].iter().take_while(|t| **t < *start + Duration::from_secs(1)).count();
            peak = peak.max(within);
        }
        peak
    }

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn news_never_waits_behind_rechecks_of_five_thousand_unready_systems() {
        // The worst case of the issue: 5,000 not-Ready systems whose every re-check
        // finds news (a shared MongoDB went down), and a new system every half second.
        let t0 = Instant::now();
        let mut s = settled(5000, t0);
        let mut runner = Runner::new(Duration::from_millis(150));
        let mut new_systems = 0;
        let mut t = t0;
        while t < t0 + Duration::from_secs(120) {
            let news: Vec<String> = if (t - t0).as_millis().is_multiple_of(500) {
                new_systems += 1;
                vec![format!("new/sys-{new_systems}")]
            } else {
                Vec::new()
            };
            runner.tick(&mut s, t, &news, |_| Finding::News);
            t += TICK;
        }
        assert_eq!(runner.news_waits.len(), new_systems);
        assert!(
            runner.news_waits.iter().all(|w| w.is_zero()),
            "news waited: {:?}",
            runner.news_waits.iter().filter(|w| !w.is_zero()).collect::<Vec<_>>()
        );
        // Re-checks did run, all within the budget: 20 a second out of 5,000 due.
        // (The first are due 24 s in: 30 s less the jitter.)
        assert!(runner.checks.len() >= 1900, "only {} re-checks in 120 s", runner.checks.len());
        assert!(peak_per_second(&runner.checks) <= 20, "{} re-checks in one second", peak_per_second(&runner.checks));
        assert!(peak_per_second(&runner.escalations) <= 20);
        assert_eq!(runner.escalations.len(), runner.checks.len(), "every re-check found news and was reconciled");
    }

    #[test]
    fn a_burst_of_news_runs_before_any_escalation_and_rechecks_slow_down_meanwhile() {
        let t0 = Instant::now();
        let mut s = settled(5000, t0);
        let mut runner = Runner::new(Duration::from_millis(150));
        // Re-checks run at full budget first.
        let mut t = t0;
        while t < t0 + Duration::from_secs(40) {
            runner.tick(&mut s, t, &[], |_| Finding::News);
            t += TICK;
        }
        let checks_before = runner.checks.len();
        let escalations_before = runner.escalations.len();
        // 2,000 new systems at once: 19 s of work for 16 slots.
        let burst: Vec<String> = (0..2000).map(|i| format!("burst/sys-{i}")).collect();
        let burst_at = t;
        runner.tick(&mut s, t, &burst, |_| Finding::News);
        let mut last_news_start = t;
        while runner.queue.iter().any(|(_, _, o)| *o == Origin::News) {
            t += TICK;
            runner.tick(&mut s, t, &[], |_| Finding::News);
            last_news_start = t;
        }
        assert!(last_news_start - burst_at > Duration::from_secs(15), "the burst saturated the slots");
        assert_eq!(runner.escalations.len(), escalations_before, "no escalation while the burst's news waited");
        // While saturated, re-checks go on at a tenth of the budget (their findings wait).
        let during = runner.checks[checks_before..].iter().filter(|c| **c < last_news_start).count();
        let seconds = (last_news_start - burst_at).as_secs_f64();
        assert!(during as f64 <= seconds * 2.0 + 1.0, "{during} re-checks in {seconds} s of saturation");
        assert!(during > 0, "re-checks stopped altogether");
        // Once the news is done, what the re-checks found is reconciled.
        for _ in 0..100 {
            t += TICK;
            runner.tick(&mut s, t, &[], |_| Finding::News);
        }
        assert!(runner.escalations.len() > escalations_before);
    }

    #[test]
    fn the_recheck_rate_stays_under_the_budget_with_ten_thousand_systems() {
        let t0 = Instant::now();
        let mut s = settled(10_000, t0);
        let mut runner = Runner::new(Duration::from_millis(150));
        let mut t = t0;
        while t < t0 + Duration::from_secs(600) {
            runner.tick(&mut s, t, &[], |_| Finding::NothingNew);
            t += TICK;
        }
        assert!(peak_per_second(&runner.checks) <= 20);
        // The budget was used: demand (10,000 every 30 s at first) exceeds it.
        // (The first are due 24 s in: 30 s less the jitter.)
        assert!(runner.checks.len() >= 20 * 570, "{} re-checks in 600 s", runner.checks.len());
        assert!(runner.escalations.is_empty(), "nothing new, nothing reconciled");
        let (entries, due, escalating, escalated) = s.sizes();
        assert_eq!((entries, due, escalating, escalated), (10_000, 10_000, 0, 0));
    }

    #[test]
    fn ten_thousand_systems_with_a_dependency_down_stay_within_the_budget() {
        // A shared MongoDB is down for all of them: each wants a look every 5 s at
        // first (2,000 a second), the budget still allows 20.
        let t0 = Instant::now();
        let mut s = settled_as(10_000, t0, DEPENDENCY_DOWN);
        let mut runner = Runner::new(Duration::from_millis(150));
        let mut t = t0;
        while t < t0 + Duration::from_secs(300) {
            // A new system every second meanwhile.
            let news: Vec<String> = if (t - t0).as_millis().is_multiple_of(1000) {
                vec![format!("new/sys-{}", (t - t0).as_secs())]
            } else {
                Vec::new()
            };
            runner.tick(&mut s, t, &news, |_| Finding::NothingNew);
            t += TICK;
        }
        assert!(peak_per_second(&runner.checks) <= 20, "{} re-checks in one second", peak_per_second(&runner.checks));
        assert!(runner.checks.len() >= 20 * 295, "the budget was used: {} re-checks", runner.checks.len());
        assert!(runner.news_waits.iter().all(|w| w.is_zero()), "news waited behind the looks");
        assert_eq!(runner.news_waits.len(), 300);
        assert_eq!(s.sizes().0, 10_000 + 300, "one entry per system");
    }

    /// Intervals between the cheap checks of one system that never finds anything new.
    fn intervals(s: &mut RecheckSchedule<u32>, t0: Instant, count: usize, finding: Finding) -> Vec<Duration> {
        let mut last = t0;
        let mut out = Vec::new();
        let mut t = t0;
        while out.len() < count {
            match s.next_recheck_step(t) {
                RecheckStep::Check(k, _) => {
                    out.push(t - last);
                    last = t;
                    s.checked(&k, finding, t);
                }
                RecheckStep::Escalate(k) => panic!("escalated {k}"),
                RecheckStep::Wait(Some(at)) => t = at,
                RecheckStep::Wait(None) => panic!("nothing due"),
            }
        }
        out
    }

    #[test]
    fn a_system_whose_rechecks_find_nothing_backs_off_to_the_ceiling_with_jitter() {
        let t0 = Instant::now();
        let mut s = settled(1, t0);
        let seen = intervals(&mut s, t0, 9, Finding::NothingNew);
        let base = [30, 60, 120, 240, 480, 600, 600, 600, 600];
        for (interval, base) in seen.iter().zip(base) {
            let (low, high) = (base as f64 * 0.8, (base as f64 * 1.2).min(600.0));
            let secs = interval.as_secs_f64();
            assert!(secs >= low - 0.001 && secs <= high + 0.001, "{seen:?}");
        }
        assert!(seen.iter().all(|i| *i <= Duration::from_secs(600)), "never above the ceiling: {seen:?}");
        // A failed look neither backs off further nor resets.
        let failed = intervals(&mut s, t0 + seen.iter().sum::<Duration>(), 3, Finding::Failed);
        assert!(failed.iter().all(|i| *i >= Duration::from_secs(480)), "{failed:?}");
    }

    #[test]
    fn a_system_with_a_dependency_down_is_looked_at_sooner_backing_off_to_its_base_only() {
        let t0 = Instant::now();
        let mut s = settled_as(1, t0, DEPENDENCY_DOWN);
        let seen = intervals(&mut s, t0, 8, Finding::NothingNew);
        let base = [5, 10, 20, 30, 30, 30, 30, 30];
        for (interval, base) in seen.iter().zip(base) {
            let (low, high) = (base as f64 * 0.8, (base as f64 * 1.2).min(30.0));
            let secs = interval.as_secs_f64();
            assert!(secs >= low - 0.001 && secs <= high + 0.001, "{seen:?}");
        }
        // However long the outage, the answer coming back is looked for every 30 s at most.
        let later = intervals(&mut s, t0 + seen.iter().sum::<Duration>(), 20, Finding::NothingNew);
        assert!(later.iter().all(|i| *i <= Duration::from_secs(30) && *i >= Duration::from_secs(24)), "{later:?}");
        // The server answers again: the reconcile that reports it returns to the normal back-off.
        let t = t0 + seen.iter().chain(&later).sum::<Duration>();
        s.started(&key(0));
        s.reconciled(&key(0), Settled::Recheck { health: NOT_READY, wake_at: None, baseline: 1 }, t);
        let normal = intervals(&mut s, t, 3, Finding::NothingNew);
        assert!(normal[0] >= Duration::from_secs(24) && normal[0] < Duration::from_secs(36), "{normal:?}");
        assert!(normal[2] >= Duration::from_secs(96), "backs off beyond 30 s again: {normal:?}");
        // A Ready system whose dependency is down (none today, but the rule is general)
        // backs off to its own base, and a base below the first interval is kept.
        let p = policy();
        assert_eq!(p.interval_of(Health { ready: true, dependency_down: true }, 9), Duration::from_secs(300));
        let fast = RecheckPolicy { not_ready: Duration::from_secs(3), ..policy() };
        assert_eq!(fast.interval_of(DEPENDENCY_DOWN, 0), Duration::from_secs(3));
        assert_eq!(fast.interval_of(DEPENDENCY_DOWN, 5), Duration::from_secs(3));
    }

    #[test]
    fn a_ready_system_starts_from_its_own_base_interval() {
        let t0 = Instant::now();
        let mut s = RecheckSchedule::new(policy(), 7);
        s.started("ns/a");
        s.reconciled("ns/a", Settled::Recheck { health: READY, wake_at: None, baseline: 1 }, t0);
        let seen = intervals(&mut s, t0, 3, Finding::NothingNew);
        assert!(seen[0] >= Duration::from_secs(240) && seen[0] < Duration::from_secs(360), "{seen:?}");
        assert!(seen[1] >= Duration::from_secs(480) && seen[1] <= Duration::from_secs(600), "{seen:?}");
    }

    #[test]
    fn a_reconcile_starts_the_back_off_again_and_a_shared_change_wakes_at_once() {
        let t0 = Instant::now();
        let mut s = settled(3, t0);
        let seen = intervals(&mut s, t0, 24, Finding::NothingNew);
        let t = t0 + seen.iter().sum::<Duration>();
        // News for sys-0: a reconcile, after which its re-check is ~30 s away again.
        s.started(&key(0));
        s.reconciled(&key(0), Settled::Recheck { health: NOT_READY, wake_at: None, baseline: 5 }, t);
        let mut due = None;
        let mut now = t;
        while due.is_none() {
            match s.next_recheck_step(now) {
                RecheckStep::Check(k, baseline) if *k == *key(0) => due = Some((now - t, baseline)),
                RecheckStep::Check(k, _) => s.checked(&k, Finding::NothingNew, now),
                RecheckStep::Wait(Some(at)) => now = at,
                other => panic!("{other:?}"),
            }
        }
        let (after, baseline) = due.unwrap();
        assert!(after >= Duration::from_secs(24) && after < Duration::from_secs(36), "{after:?}");
        assert_eq!(baseline, 5, "the check compares against the newest baseline");
        s.checked(&key(0), Finding::NothingNew, now);
        // A dependency shared by the systems whose baseline is 0 changed: they are due now.
        s.wake(|b| *b == 0, now);
        let mut woken = Vec::new();
        while let RecheckStep::Check(k, _) =
            s.next_recheck_step(now + Duration::from_secs(1) * (woken.len() as u32 + 1))
        {
            woken.push(k.to_string());
        }
        woken.sort();
        assert_eq!(woken, [key(1), key(2)]);
    }

    #[test]
    fn due_times_of_systems_settled_together_are_spread() {
        let t0 = Instant::now();
        let mut s = settled(1000, t0);
        let dues: Vec<Duration> = s.due.iter().map(|(at, _)| *at - t0).collect();
        assert_eq!(dues.len(), 1000);
        let (min, max) = (dues.iter().min().unwrap(), dues.iter().max().unwrap());
        assert!(*min >= Duration::from_secs(24) && *max < Duration::from_secs(36), "{min:?}..{max:?}");
        assert!(*max - *min > Duration::from_secs(11), "spread over most of ±20 %: {min:?}..{max:?}");
        // No second of the window holds more than a fifth of them (uniform: ~1/12).
        let mut per_second = HashMap::new();
        for d in &dues {
            *per_second.entry(d.as_secs()).or_insert(0) += 1;
        }
        assert!(per_second.values().all(|n| *n < 200), "{per_second:?}");
        let _ = s.next_recheck_step(t0);
    }

    #[test]
    fn a_deadline_is_kept_and_reconciled_without_a_look() {
        let t0 = Instant::now();
        let mut s = RecheckSchedule::new(policy(), 3);
        s.started("ns/a");
        let wake_at = t0 + Duration::from_secs(10);
        s.reconciled("ns/a", Settled::Recheck { health: READY, wake_at: Some(wake_at), baseline: 1 }, t0);
        assert_eq!(s.next_recheck_step(t0), RecheckStep::Wait(Some(wake_at)));
        assert_eq!(s.next_recheck_step(wake_at), RecheckStep::Escalate("ns/a".into()));
        // Sent; its start and end settle it again with a new deadline.
        s.started("ns/a");
        assert_eq!(s.running(), 1);
        s.reconciled("ns/a", Settled::Recheck { health: READY, wake_at: None, baseline: 2 }, wake_at);
        assert_eq!(s.running(), 0);
        assert!(
            matches!(s.next_recheck_step(wake_at), RecheckStep::Wait(Some(at)) if at > wake_at + Duration::from_secs(200))
        );
    }

    #[test]
    fn without_a_baseline_a_recheck_escalates_and_a_parked_system_is_never_due() {
        let t0 = Instant::now();
        let mut s: RecheckSchedule<u32> = RecheckSchedule::new(policy(), 3);
        s.started("ns/failed-first");
        s.reconciled("ns/failed-first", Settled::Failed, t0);
        s.started("ns/invalid");
        s.reconciled("ns/invalid", Settled::Parked, t0);
        let later = t0 + Duration::from_secs(40);
        assert_eq!(s.next_recheck_step(later), RecheckStep::Escalate("ns/failed-first".into()));
        assert_eq!(s.next_recheck_step(later), RecheckStep::Wait(Some(later + ESCALATION_TIMEOUT)));
        // An escalation that never started is sent again.
        let lost = later + ESCALATION_TIMEOUT;
        assert_eq!(s.next_recheck_step(lost), RecheckStep::Escalate("ns/failed-first".into()));
        s.started("ns/failed-first");
        s.reconciled("ns/failed-first", Settled::Gone, lost);
        assert_eq!(s.next_recheck_step(lost + Duration::from_secs(3600)), RecheckStep::Wait(None));
        assert_eq!(s.len(), 1, "the parked system is still known");
    }

    #[test]
    fn a_check_overtaken_by_a_reconcile_is_ignored_and_gone_systems_are_forgotten() {
        let t0 = Instant::now();
        let mut s = settled(2, t0);
        let t = t0 + Duration::from_secs(40);
        let RecheckStep::Check(first, _) = s.next_recheck_step(t) else { panic!() };
        s.started(&first);
        s.checked(&first, Finding::News, t);
        assert_eq!(s.sizes().2, 0, "news found by a check a reconcile overtook is not escalated");
        s.reconciled(&first, Settled::Recheck { health: NOT_READY, wake_at: None, baseline: 0 }, t);
        let RecheckStep::Check(second, _) = s.next_recheck_step(t + Duration::from_secs(1)) else { panic!() };
        assert_ne!(first, second);
        s.checked(&second, Finding::Gone, t);
        s.forget(&first);
        assert_eq!(s.sizes(), (0, 0, 0, 0));
        assert_eq!(s.running(), 0);
    }

    #[test]
    fn memory_stays_one_entry_per_system_through_churn() {
        let t0 = Instant::now();
        let mut s = settled(500, t0);
        let mut runner = Runner::new(Duration::from_millis(150));
        let mut t = t0;
        let mut i = 0usize;
        while t < t0 + Duration::from_secs(300) {
            // Constant churn: news for existing systems, systems deleted and created.
            let news = vec![key(i % 500)];
            if i.is_multiple_of(7) {
                s.forget(&key((i * 13) % 500));
            }
            runner.tick(&mut s, t, &news, |k| if k.len() % 2 == 0 { Finding::News } else { Finding::NothingNew });
            let (entries, due, escalating, escalated) = s.sizes();
            assert!(entries <= 500 && due + escalating + escalated <= entries, "{:?}", s.sizes());
            i += 1;
            t += TICK * 5;
        }
    }

    #[test]
    fn escalations_leave_a_quarter_of_the_slots_to_news() {
        let p = |slots| RecheckPolicy { slots, ..policy() };
        assert_eq!(p(16).escalation_limit(), 12);
        assert_eq!(p(4).escalation_limit(), 3);
        assert_eq!(p(1).escalation_limit(), 1);
        assert_eq!(p(0).escalation_limit(), 1);
        assert_eq!(p(16).interval(false, 200), Duration::from_secs(600));
        let slow_base = RecheckPolicy { ready: Duration::from_secs(900), ..policy() };
        assert_eq!(slow_base.interval(true, 3), Duration::from_secs(900), "a base above the ceiling is kept");
    }
}
