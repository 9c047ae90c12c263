//! Leader election against a real kube-apiserver: two electors compete for one Lease
//! and never both lead; when the leader dies the other takes over once the claim has
//! expired, and when the leader releases the Lease the other takes over at its next
//! look.
//!
//! Needs a cluster in KUBECONFIG: `tests/e2e/testbed.sh start` then
//! `source /tmp/referral-testbed/env`. Without one it fails and says so, unless
//! REFOP_SKIP_E2E=1 is set (as for the rest of the e2e suite).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::SignedDuration;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use referral_operator::controller::leader::{self, LeaseConfig, holds_lease};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

const LEASE_NAME: &str = "referral-operator-leader";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_EVERY: Duration = Duration::from_secs(1);
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Room for a slow API server and a busy two-core machine on top of the protocol's
/// own delays.
const SLACK: Duration = Duration::from_millis(2_000);

fn cluster_configured() -> bool {
    if std::env::var("REFOP_SKIP_E2E").as_deref() == Ok("1") {
        eprintln!("SKIPPED: leader election e2e (REFOP_SKIP_E2E=1)");
        return false;
    }
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!(
            "KUBECONFIG is not set: start the test bed with `tests/e2e/testbed.sh start` and \
             `source /tmp/referral-testbed/env` (scripts/test-all.sh does both), point KUBECONFIG at a \
             cluster of your own, or set REFOP_SKIP_E2E=1 to skip the e2e tests"
        );
    }
    true
}

struct Elector {
    config: LeaseConfig,
    leading: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Elector {
    fn start(client: &Client, namespace: &str, identity: &str) -> Elector {
        let config = LeaseConfig {
            namespace: namespace.to_owned(),
            name: LEASE_NAME.to_owned(),
            identity: identity.to_owned(),
            lease_duration: LEASE_DURATION,
            renew_every: RENEW_EVERY,
        };
        let (leading, task) = leader::spawn(client.clone(), config.clone());
        Elector { config, leading, task }
    }

    fn leads(&self) -> bool {
        holds_lease(&self.leading)
    }

    fn identity(&self) -> &str {
        &self.config.identity
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Samples until `done` holds or `limit` passes, failing if two electors ever lead
/// at once. Returns how long it took.
async fn watch_until(electors: &[&Elector], limit: Duration, what: &str, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let leaders: Vec<&str> = electors.iter().filter(|e| e.leads()).map(|e| e.identity()).collect();
        assert!(leaders.len() <= 1, "two replicas lead at once: {leaders:?}");
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        sleep(SAMPLE_EVERY).await;
    }
}

async fn lease(client: &Client, namespace: &str) -> Lease {
    Api::<Lease>::namespaced(client.clone(), namespace).get(LEASE_NAME).await.expect("read the Lease")
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_with_takeover_and_release() {
    if !cluster_configured() {
        return;
    }
    let client = Client::try_default().await.expect("a kube client from KUBECONFIG");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let namespace = format!("e2e-leader-{:05x}", (nanos ^ std::process::id()) % 0xfffff);
    let namespaces = Api::<Namespace>::all(client.clone());
    let object = Namespace {
        metadata: ObjectMeta { name: Some(namespace.clone()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    namespaces.create(&PostParams::default(), &object).await.expect("create the test namespace");

    // Two replicas start together; exactly one wins the race to create the Lease.
    let a = Elector::start(&client, &namespace, "replica-a");
    let b = Elector::start(&client, &namespace, "replica-b");
    let took = watch_until(&[&a, &b], LEASE_DURATION + SLACK, "a first leader", || a.leads() || b.leads()).await;
    eprintln!("first leader after {took:?}");
    let (first, second) = if a.leads() { (a, b) } else { (b, a) };

    // Steady state: the same one leads through several renewals, the other follows.
    let steady = LEASE_DURATION + 2 * RENEW_EVERY;
    let start = Instant::now();
    while start.elapsed() < steady {
        assert!(first.leads() && !second.leads(), "leadership moved without cause");
        sleep(SAMPLE_EVERY).await;
    }
    let held = lease(&client, &namespace).await;
    assert_eq!(holder(&held), Some(first.identity()));
    let spec = held.spec.as_ref().unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some(), "{spec:?}");
    let transitions_before = spec.lease_transitions.unwrap_or(0);

    // The leader dies without a word: the other waits out the claim, then takes over.
    first.task.abort();
    // The claim runs until the last renewal the Lease records plus its duration. (A
    // renewal sent just before the abort may still land after this read: that only
    // makes the claim longer.)
    let last_renewal = lease(&client, &namespace).await.spec.and_then(|s| s.renew_time).expect("a renewTime").0;
    let took =
        watch_until(&[&first, &second], LEASE_DURATION + 2 * RENEW_EVERY + SLACK, "takeover", || second.leads()).await;
    eprintln!("takeover after the leader died: {took:?}");
    // Taking over before that claim ended is a bug. It is judged by the Lease's own
    // times (both written on this machine's clock), not by the time since the abort: on
    // a busy machine the dead leader's last renewal can have come later than its
    // schedule, so its claim can end sooner than LEASE_DURATION - RENEW_EVERY after the
    // abort, and a takeover then is right.
    let taken = lease(&client, &namespace).await;
    let acquired = taken.spec.as_ref().and_then(|s| s.acquire_time.clone()).expect("an acquireTime").0;
    let claim_end = last_renewal + SignedDuration::try_from(LEASE_DURATION).unwrap();
    assert!(
        acquired >= claim_end,
        "took over a live claim after {took:?}: acquired at {acquired}, the claim (renewed at {last_renewal}) ran until {claim_end}"
    );
    assert_eq!(holder(&taken), Some(second.identity()));
    assert_eq!(taken.spec.as_ref().unwrap().lease_transitions, Some(transitions_before + 1));

    // The dead replica comes back under its old name and follows.
    let restarted = Elector::start(&client, &namespace, first.identity());
    drop(first);
    let start = Instant::now();
    while start.elapsed() < 2 * RENEW_EVERY {
        assert!(second.leads() && !restarted.leads(), "a restarted replica took a live claim");
        sleep(SAMPLE_EVERY).await;
    }

    // A clean shutdown: stop the elector, release, and the other leads at its next look.
    second.task.abort();
    // A release from a stale read meets a 409 Conflict (somebody wrote the Lease since):
    // it must write nothing and say so, not panic (kube-lease-manager's own release
    // turns that conflict into `unreachable!`, an abort in a release build).
    let leases = Api::<Lease>::namespaced(client.clone(), &namespace);
    let stale = lease(&client, &namespace).await;
    leases
        .patch(
            LEASE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/touched": "yes"}}})),
        )
        .await
        .expect("touch the Lease");
    assert!(!leader::release_as_read(&leases, &second.config, &stale).await.expect("a stale release"));
    assert_eq!(holder(&lease(&client, &namespace).await), Some(second.identity()), "a stale release wrote");
    assert!(leader::release(client.clone(), &second.config).await.expect("release the Lease"));
    let took =
        watch_until(&[&second, &restarted], RENEW_EVERY + SLACK, "takeover after release", || restarted.leads()).await;
    eprintln!("takeover after release: {took:?}");
    assert!(took < LEASE_DURATION, "release did not hand over faster than expiry ({took:?})");
    assert_eq!(holder(&lease(&client, &namespace).await), Some(restarted.identity()));
    // Only the holder can release.
    assert!(!leader::release(client.clone(), &second.config).await.expect("release by a non-holder"));
    assert_eq!(holder(&lease(&client, &namespace).await), Some(restarted.identity()));

    drop((second, restarted));
    namespaces.delete(&namespace, &DeleteParams::default()).await.expect("delete the test namespace");
}
