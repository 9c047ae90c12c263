//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas
//! only one writes to the cluster while every one of them serves metrics and probes.
//!
//! Each replica runs one elector ([`spawn`]): it creates the Lease when there is none,
//! renews it while it holds it, takes it over once the holder has stopped renewing
//! for a whole lease duration, and otherwise follows. Every write is a replace
//! guarded by the `resourceVersion` just read, so of two replicas racing for the
//! same Lease exactly one write lands. Whether this replica leads is published on a
//! watch channel; the reconcilers read it and stay read-only while it is false.
//!
//! This module must not act on leadership itself (no reconciling, no metrics): it
//! only answers "may this replica write now?".

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Field manager of the operator's Lease writes.
pub const FIELD_MANAGER: &str = "referral-operator";

/// The shortest pause between two rounds, so a misconfigured `renew_every` cannot
/// turn the elector into a busy loop against the API server.
const MIN_RENEW_EVERY: Duration = Duration::from_millis(100);

/// Which Lease to compete for, as whom, and how fast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name): two replicas with one identity would both
    /// believe they hold the Lease.
    pub identity: String,
    /// How long a claim lasts without renewal; written as whole seconds (at least 1).
    pub lease_duration: Duration,
    /// How often the holder renews and the others look again. Well below
    /// `lease_duration` (a third is usual), or a slow renew loses the lease.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// The duration as written to `leaseDurationSeconds`: the holder must count its
    /// claim with the same value the others read, or it would believe in a claim
    /// they consider expired.
    fn effective_lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration.as_secs().max(1))
    }

    fn effective_renew_every(&self) -> Duration {
        self.renew_every.clamp(MIN_RENEW_EVERY, self.effective_lease_duration() / 2)
    }

    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.effective_lease_duration().as_secs()).unwrap_or(i32::MAX)
    }
}

/// Why one step of the election failed. Each names the operation and the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading Lease {namespace}/{name}: {source}")]
    GetLease { namespace: String, name: String, source: kube::Error },
    #[error("creating Lease {namespace}/{name}: {source}")]
    CreateLease { namespace: String, name: String, source: kube::Error },
    #[error("updating Lease {namespace}/{name}: {source}")]
    UpdateLease { namespace: String, name: String, source: kube::Error },
    #[error("Lease {namespace}/{name}: the API server did not answer within {after:?}")]
    TimedOut { namespace: String, name: String, after: Duration },
}

impl LeaseError {
    /// A fixed, small set of labels for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::GetLease { .. } | Self::CreateLease { .. } | Self::UpdateLease { .. } | Self::TimedOut { .. } => {
                "kubernetes_api"
            }
        }
    }
}

/// Starts competing for the Lease. The receiver says whether this replica holds it
/// now; it starts `false`.
///
/// The task runs until it is aborted or every receiver is dropped; in the latter
/// case it releases the Lease if it held it. After an abort call [`release`] so the
/// next replica need not wait out the lease duration. A receiver whose task has
/// ended keeps its last value: read it with [`holds_lease`], which treats an ended
/// elector as not leading.
pub fn spawn(client: Client, config: LeaseConfig) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (leading, receiver) = watch::channel(false);
    let task = tokio::spawn(elect(Api::namespaced(client, &config.namespace), config, leading));
    (receiver, task)
}

/// Whether the elector behind `receiver` holds the Lease: `false` once its task has
/// ended, whatever it last published, because nobody renews the claim any more.
pub fn holds_lease(receiver: &watch::Receiver<bool>) -> bool {
    receiver.has_changed().is_ok() && *receiver.borrow()
}

/// Gives up the Lease if `config.identity` holds it, so another replica can take
/// over at its next look instead of after the lease duration. Returns whether it did.
///
/// Stop this replica's elector (and its writes) first: the released Lease is free
/// for anyone, this replica included.
pub async fn release(client: Client, config: &LeaseConfig) -> Result<bool, LeaseError> {
    release_with(&Api::namespaced(client, &config.namespace), config).await
}

async fn release_with(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, LeaseError> {
    // A renew of this replica still in flight can bump the resourceVersion between
    // our read and our write; read again then.
    for _ in 0..3 {
        let Some(mut lease) = get(api, config).await? else { return Ok(false) };
        let Some(spec) = lease.spec.as_mut().filter(|spec| holder(spec) == Some(config.identity.as_str())) else {
            return Ok(false);
        };
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match replace(api, config, &lease).await {
            Ok(_) => return Ok(true),
            Err(LeaseError::UpdateLease { source, .. }) if is_conflict(&source) => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(false)
}

/// Where this replica stands after one round.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// Our write landed: we hold the Lease from the round's start for one duration.
    Holding,
    /// Someone else holds a live claim.
    Following,
    /// Another write landed between our read and our write; look again next round.
    Raced,
}

/// What to do with the Lease as read.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Renew,
    Acquire,
    Follow,
}

/// The last `resourceVersion` seen and when it was first seen, on this replica's
/// monotonic clock.
struct Observed {
    resource_version: String,
    since: Instant,
}

async fn elect(api: Api<Lease>, config: LeaseConfig, leading: watch::Sender<bool>) {
    let lease_duration = config.effective_lease_duration();
    let renew_every = config.effective_renew_every();
    let mut observed: Option<Observed> = None;
    // The end of our claim on the monotonic clock. It counts from before the write
    // that renewed it, and another replica counts from after it saw that write, so
    // ours always ends first and the two can never both lead.
    let mut held_until: Option<Instant> = None;

    loop {
        if leading.is_closed() {
            if held_until.is_some_and(|until| Instant::now() < until)
                && let Err(error) = release_with(&api, &config).await
            {
                tracing::warn!(%error, "could not release the leader Lease");
            }
            return;
        }
        // The claim may have ended while we slept: say so before the next round,
        // which can take a while.
        publish(&leading, held_until, &config);
        let started = Instant::now();
        // A hung request must not outlive our claim: past it we have to step down.
        let answer_by = held_until.filter(|until| *until > started).unwrap_or(started + lease_duration);
        match tokio::time::timeout_at(answer_by, round(&api, &config, started, &mut observed)).await {
            Ok(Ok(Round::Holding)) => held_until = Some(started + lease_duration),
            Ok(Ok(Round::Following)) => held_until = None,
            Ok(Ok(Round::Raced)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "leader election round failed"),
            Err(_) => {
                let error = LeaseError::TimedOut {
                    namespace: config.namespace.clone(),
                    name: config.name.clone(),
                    after: answer_by - started,
                };
                tracing::warn!(%error, "leader election round failed");
            }
        }
        let now_leading = publish(&leading, held_until, &config);
        let mut next = started + renew_every;
        // Step down on time even when the next round would start after the claim ends.
        if let Some(until) = held_until.filter(|until| now_leading && *until < next) {
            next = until;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = leading.closed() => {}
        }
    }
}

/// Publishes whether the claim is still current; returns what it published.
fn publish(leading: &watch::Sender<bool>, held_until: Option<Instant>, config: &LeaseConfig) -> bool {
    let now_leading = held_until.is_some_and(|until| Instant::now() < until);
    leading.send_if_modified(|was| {
        if *was == now_leading {
            return false;
        }
        tracing::info!(identity = %config.identity, lease = %config.name, leading = now_leading, "leadership changed");
        *was = now_leading;
        true
    });
    now_leading
}

/// One look at the Lease and, when due, one write.
async fn round(
    api: &Api<Lease>,
    config: &LeaseConfig,
    started: Instant,
    observed: &mut Option<Observed>,
) -> Result<Round, LeaseError> {
    let Some(mut lease) = get(api, config).await? else {
        return match create(api, config).await {
            Ok(created) => {
                *observed = created
                    .metadata
                    .resource_version
                    .map(|resource_version| Observed { resource_version, since: Instant::now() });
                Ok(Round::Holding)
            }
            // Another replica created it first (409 AlreadyExists).
            Err(LeaseError::CreateLease { source, .. }) if is_conflict(&source) => Ok(Round::Raced),
            Err(error) => Err(error),
        };
    };

    let resource_version = lease.metadata.resource_version.clone().unwrap_or_default();
    let unchanged_for = match observed {
        Some(seen) if seen.resource_version == resource_version => started.saturating_duration_since(seen.since),
        _ => {
            *observed = Some(Observed { resource_version, since: started });
            Duration::ZERO
        }
    };

    let now = Timestamp::now();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    match decide(spec, &config.identity, now, unchanged_for, config.effective_lease_duration()) {
        Action::Follow => return Ok(Round::Following),
        Action::Renew => {}
        Action::Acquire => {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.holder_identity = Some(config.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
        }
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(config.lease_duration_seconds());

    match replace(api, config, &lease).await {
        Ok(written) => {
            *observed = written
                .metadata
                .resource_version
                .map(|resource_version| Observed { resource_version, since: Instant::now() });
            Ok(Round::Holding)
        }
        Err(LeaseError::UpdateLease { source, .. }) if is_conflict(&source) => Ok(Round::Raced),
        Err(error) => Err(error),
    }
}

/// The rule, without I/O. A claim of someone else has expired only when both clocks
/// agree: by the wall clock its `renewTime` is more than `leaseDurationSeconds` ago,
/// and this replica has seen the Lease unchanged for that long. The second guards
/// against clock skew between nodes; the first keeps a replica that has just started
/// from ignoring a fresh claim.
fn decide(spec: &LeaseSpec, identity: &str, now: Timestamp, unchanged_for: Duration, fallback: Duration) -> Action {
    let Some(current) = holder(spec) else { return Action::Acquire };
    if current == identity {
        return Action::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|seconds| u64::try_from(seconds).ok())
        .filter(|seconds| *seconds > 0)
        .map_or(fallback, Duration::from_secs);
    let last_renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|time| time.0);
    let wall_clock_expired = match last_renewed {
        Some(at) => {
            SignedDuration::try_from(duration).ok().and_then(|d| at.checked_add(d).ok()).is_none_or(|end| end <= now)
        }
        // A holder that never wrote a time never renewed.
        None => true,
    };
    if wall_clock_expired && unchanged_for >= duration { Action::Acquire } else { Action::Follow }
}

fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|identity| !identity.is_empty())
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

async fn get(api: &Api<Lease>, config: &LeaseConfig) -> Result<Option<Lease>, LeaseError> {
    api.get_opt(&config.name).await.map_err(|source| LeaseError::GetLease {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        source,
    })
}

async fn create(api: &Api<Lease>, config: &LeaseConfig) -> Result<Lease, LeaseError> {
    let now = MicroTime(Timestamp::now());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), "referral-operator".to_owned()),
                ("app.kubernetes.io/component".to_owned(), "leader-election".to_owned()),
                ("app.kubernetes.io/managed-by".to_owned(), "referral-operator".to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_duration_seconds: Some(config.lease_duration_seconds()),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    };
    api.create(&post_params(), &lease).await.map_err(|source| LeaseError::CreateLease {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        source,
    })
}

/// Writes `lease` back. It carries the `resourceVersion` it was read with, so the API
/// server refuses the write (409) if anyone wrote in between.
async fn replace(api: &Api<Lease>, config: &LeaseConfig, lease: &Lease) -> Result<Lease, LeaseError> {
    api.replace(&config.name, &post_params(), lease).await.map_err(|source| LeaseError::UpdateLease {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        source,
    })
}

fn post_params() -> PostParams {
    PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            acquire_time: Some(MicroTime(at(0))),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_free_lease_is_acquired() {
        assert_eq!(decide(&LeaseSpec::default(), "a", at(0), Duration::ZERO, LEASE), Action::Acquire);
        let released = LeaseSpec { holder_identity: Some(String::new()), ..held_by("b", 0) };
        assert_eq!(decide(&released, "a", at(1), Duration::ZERO, LEASE), Action::Acquire);
    }

    #[test]
    fn the_holder_renews() {
        assert_eq!(decide(&held_by("a", 0), "a", at(1), Duration::ZERO, LEASE), Action::Renew);
        // Even past expiry: the write is guarded by the resourceVersion just read,
        // so nobody took over in between.
        assert_eq!(decide(&held_by("a", 0), "a", at(100), Duration::from_secs(100), LEASE), Action::Renew);
    }

    #[test]
    fn a_live_claim_is_followed() {
        assert_eq!(decide(&held_by("b", 10), "a", at(20), Duration::from_secs(10), LEASE), Action::Follow);
    }

    #[test]
    fn an_expired_claim_is_taken_over_only_when_both_clocks_agree() {
        let stale = held_by("b", 0);
        assert_eq!(decide(&stale, "a", at(16), Duration::from_secs(15), LEASE), Action::Acquire);
        // The wall clock says expired, but this replica has not watched it that long
        // (it just started, or its clock runs ahead of the holder's).
        assert_eq!(decide(&stale, "a", at(16), Duration::from_secs(5), LEASE), Action::Follow);
        // Unchanged for long enough here, but the renewTime is recent by this clock.
        assert_eq!(decide(&held_by("b", 10), "a", at(16), Duration::from_secs(20), LEASE), Action::Follow);
    }

    #[test]
    fn the_written_duration_wins_over_the_local_one() {
        let long = LeaseSpec { lease_duration_seconds: Some(60), ..held_by("b", 0) };
        assert_eq!(decide(&long, "a", at(30), Duration::from_secs(30), LEASE), Action::Follow);
        let unset = LeaseSpec { lease_duration_seconds: None, ..held_by("b", 0) };
        assert_eq!(decide(&unset, "a", at(30), Duration::from_secs(30), LEASE), Action::Acquire);
    }

    #[test]
    fn a_claim_without_times_is_expired_once_watched_long_enough() {
        let timeless = LeaseSpec { holder_identity: Some("b".to_owned()), ..LeaseSpec::default() };
        assert_eq!(decide(&timeless, "a", at(0), Duration::ZERO, LEASE), Action::Follow);
        assert_eq!(decide(&timeless, "a", at(0), LEASE, LEASE), Action::Acquire);
    }

    #[test]
    fn durations_are_whole_seconds_and_renewal_fits_inside_them() {
        let config = |lease_ms, renew_ms| LeaseConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "a".into(),
            lease_duration: Duration::from_millis(lease_ms),
            renew_every: Duration::from_millis(renew_ms),
        };
        assert_eq!(config(3_700, 1_000).lease_duration_seconds(), 3);
        assert_eq!(config(3_700, 1_000).effective_lease_duration(), Duration::from_secs(3));
        assert_eq!(config(200, 1_000).lease_duration_seconds(), 1);
        assert_eq!(config(3_000, 10_000).effective_renew_every(), Duration::from_millis(1_500));
        assert_eq!(config(3_000, 0).effective_renew_every(), MIN_RENEW_EVERY);
    }

    #[test]
    fn errors_name_the_operation_and_the_lease() {
        let error = LeaseError::TimedOut { namespace: "ops".into(), name: "leader".into(), after: LEASE };
        assert_eq!(error.to_string(), "Lease ops/leader: the API server did not answer within 15s");
        assert_eq!(error.category(), "kubernetes_api");
    }
}
