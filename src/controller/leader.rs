//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas
//! only one writes to the cluster while every one of them serves metrics and probes.
//!
//! The protocol is `kube-lease-manager`'s: a replica takes the Lease when it is free
//! or its holder's claim has expired (`renewTime + leaseDurationSeconds`), with a
//! server-side apply under a field manager of its own, so of two replicas racing for
//! it exactly one write lands; the holder renews `grace` before its claim ends. This
//! module adds what the operator needs around it ([`spawn`]):
//!
//! - a follower looks at the Lease again every `renew_every` (the crate would sleep
//!   until the claim it saw expires), so a released Lease is taken at the next look;
//! - a holder reads the Lease every `renew_every` to learn until when its claim runs,
//!   on its own monotonic clock, and steps down before that end when no renewal
//!   shows (failed or hung): the task ends, the receiver reads `false`, and `run`
//!   exits so that a replica that can reach the API server takes over;
//! - when every receiver is dropped the task releases the Lease if it held it.
//!
//! This module must not act on leadership itself (no reconciling, no metrics): it
//! only answers "may this replica write now?".

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Prefix of each replica's field manager on the Lease (`referral-operator-<identity>`):
/// one per replica, so that two replicas' claims conflict instead of overwriting.
pub const FIELD_MANAGER: &str = "referral-operator";

/// The shortest pause between two looks, so a misconfigured `renew_every` cannot
/// turn a follower into a busy loop against the API server.
const MIN_RENEW_EVERY: Duration = Duration::from_secs(1);

/// Which Lease to compete for, as whom, and how fast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name): two replicas with one identity would both
    /// believe they hold the Lease.
    pub identity: String,
    /// How long a claim lasts without renewal; written as whole seconds (at least 2).
    pub lease_duration: Duration,
    /// How often the holder renews and the others look again. Well below
    /// `lease_duration` (a third is usual), or a slow renew loses the lease.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// The claim's length in whole seconds, as written to `leaseDurationSeconds`.
    fn duration_seconds(&self) -> u64 {
        self.lease_duration.as_secs().max(2)
    }

    /// How often a follower looks and the holder renews, in whole seconds: at least
    /// one, and less than the claim's length.
    fn renew_seconds(&self) -> u64 {
        self.renew_every.as_secs().clamp(MIN_RENEW_EVERY.as_secs(), self.duration_seconds() - 1)
    }

    /// kube-lease-manager's `grace`: the holder renews this long before its claim
    /// ends, which makes it renew every [`Self::renew_seconds`].
    fn grace_seconds(&self) -> u64 {
        self.duration_seconds() - self.renew_seconds()
    }

    fn field_manager(&self) -> String {
        format!("{FIELD_MANAGER}-{}", self.identity)
    }
}

/// Why one step of the election failed. Each names the operation and the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading Lease {namespace}/{name}: {source}")]
    GetLease { namespace: String, name: String, source: kube::Error },
    #[error("taking part in the election on Lease {namespace}/{name}: {source}")]
    Elect { namespace: String, name: String, source: LeaseManagerError },
    #[error("releasing Lease {namespace}/{name}: {source}")]
    Release { namespace: String, name: String, source: kube::Error },
}

impl LeaseError {
    /// A fixed, small set of labels for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::GetLease { .. } | Self::Elect { .. } | Self::Release { .. } => "kubernetes_api",
        }
    }
}

/// Starts competing for the Lease. The receiver says whether this replica holds it
/// now; it starts `false`.
///
/// The task runs until it is aborted, until this replica as holder cannot renew, or
/// until every receiver is dropped; in the last case it releases the Lease if it held
/// it. After an abort call [`release`] so the next replica need not wait out the
/// lease duration. A receiver whose task has ended keeps its last value: read it with
/// [`holds_lease`], which treats an ended elector as not leading.
pub fn spawn(client: Client, config: LeaseConfig) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (leading, receiver) = watch::channel(false);
    let task = tokio::spawn(elect(client, config, leading));
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
    let api = Api::<Lease>::namespaced(client, &config.namespace);
    let get_error =
        |source| LeaseError::GetLease { namespace: config.namespace.clone(), name: config.name.clone(), source };
    let Some(lease) = api.get_opt(&config.name).await.map_err(get_error)? else { return Ok(false) };
    release_as_read(&api, config, &lease).await
}

/// As [`release`], for the Lease as it was read: if it changed since (its
/// resourceVersion moved on), nothing is written and the answer is `false`.
pub async fn release_as_read(api: &Api<Lease>, config: &LeaseConfig, lease: &Lease) -> Result<bool, LeaseError> {
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
    if holder != Some(config.identity.as_str()) {
        return Ok(false);
    }
    // Our own write, not `LeaseManager::release`: that one turns a 409 Conflict on its
    // patch into `unreachable!` (kube-lease-manager 0.13.1, `impl From<LeaseStateError>
    // for LeaseManagerError`), and a release build aborts on panic, so a busy Lease
    // would take the whole process down on its way out. The resourceVersion makes the
    // write conditional: it lands only if nobody took the Lease since it was read, and
    // a conflict means somebody did, so there is nothing left to release.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": lease.metadata.resource_version},
        "spec": {"holderIdentity": null, "acquireTime": null, "renewTime": null, "leaseDurationSeconds": null},
    });
    let params = PatchParams { field_manager: Some(config.field_manager()), ..PatchParams::default() };
    match api.patch(&config.name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => {
            Err(LeaseError::Release { namespace: config.namespace.clone(), name: config.name.clone(), source })
        }
    }
}

async fn manager(client: &Client, config: &LeaseConfig) -> Result<LeaseManager, LeaseManagerError> {
    LeaseManagerBuilder::new(client.clone(), &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_field_manager(config.field_manager())
        .with_duration(config.duration_seconds())
        .with_grace(config.grace_seconds())
        .build()
        .await
}

async fn elect(client: Client, config: LeaseConfig, leading: watch::Sender<bool>) {
    let look_every = Duration::from_secs(config.renew_seconds());
    loop {
        // A follower's manager sleeps until the claim it last saw expires; a fresh
        // one reads the Lease again, so each look starts with a new manager.
        let manager = match manager(&client, &config).await {
            Ok(manager) => manager,
            Err(source) => {
                warn_round(&config, source);
                tokio::select! {
                    () = tokio::time::sleep(look_every) => continue,
                    () = leading.closed() => return,
                }
            }
        };
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(look_every, manager.changed()) => outcome,
            () = leading.closed() => return,
        };
        match outcome {
            Ok(Ok(true)) => {
                publish(&leading, true, &config);
                if !lead(&client, &config, &manager, &leading).await {
                    return;
                }
            }
            // Not this time (or no news within the look): look again afresh.
            Ok(Ok(false)) | Err(_) => {}
            Ok(Err(source)) => {
                warn_round(&config, source);
                tokio::select! {
                    () = tokio::time::sleep(look_every) => {}
                    () = leading.closed() => return,
                }
            }
        }
    }
}

/// Holds the Lease: `manager` renews it, and every renew interval this replica reads
/// the Lease to learn until when its claim runs (on its monotonic clock). It steps
/// down when the Lease names another holder, or when its claim is about to end
/// without a renewal it could see (a renew that fails, or hangs, cannot keep it
/// leading past its claim). Returns whether to go on following (`false`: the task
/// ends).
async fn lead(client: &Client, config: &LeaseConfig, manager: &LeaseManager, leading: &watch::Sender<bool>) -> bool {
    let look_every = Duration::from_secs(config.renew_seconds());
    let mut claim_end = Instant::now() + Duration::from_secs(config.duration_seconds());
    let mut renewing = Box::pin(manager.changed());
    let mut retry_pause = MIN_RENEW_EVERY / 4;
    // The first look waits one renew period: a replica restarted under the same
    // identity finds its own stale renewTime in the Lease, and judging that before the
    // manager's first renewal would step down at once.
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + look_every, look_every);
    loop {
        tokio::select! {
            outcome = &mut renewing => match outcome {
                Ok(true) => {
                    retry_pause = MIN_RENEW_EVERY / 4;
                    renewing = Box::pin(manager.changed());
                }
                Ok(false) => {
                    publish(leading, false, config);
                    return true;
                }
                // A renew failed: the manager tries again at once, so the pause is
                // ours, doubling up to MIN_RENEW_EVERY: an API server that is down
                // gets one renew a second, not four (issue 20, fault 2). The check
                // below decides whether the claim still holds.
                Err(source) => {
                    warn_round(config, source);
                    tokio::time::sleep(retry_pause).await;
                    retry_pause = (retry_pause * 2).min(MIN_RENEW_EVERY);
                    renewing = Box::pin(manager.changed());
                }
            },
            _ = check.tick() => {
                match claim(client, config).await {
                    Some(Some(end)) => claim_end = end,
                    Some(None) => {
                        publish(leading, false, config);
                        return true;
                    }
                    None => {}
                }
                if Instant::now() + look_every >= claim_end {
                    tracing::warn!(lease = %config.name, "the claim ends before a renewal could be seen: stepping down");
                    publish(leading, false, config);
                    return false;
                }
            }
            () = leading.closed() => {
                drop(renewing);
                if let Err(error) = release(client.clone(), config).await {
                    tracing::warn!(%error, "could not release the leader Lease");
                }
                return false;
            }
        }
    }
}

/// This replica's claim as the Lease says now: `Some(Some(end))` while it holds it
/// (`end` on the monotonic clock), `Some(None)` when it does not, `None` when the
/// Lease could not be read in time.
async fn claim(client: &Client, config: &LeaseConfig) -> Option<Option<Instant>> {
    let api = Api::<Lease>::namespaced(client.clone(), &config.namespace);
    let read = tokio::time::timeout(Duration::from_secs(config.renew_seconds()), api.get(&config.name)).await;
    let lease = match read {
        Ok(Ok(lease)) => lease,
        Ok(Err(source)) => {
            let error = LeaseError::GetLease { namespace: config.namespace.clone(), name: config.name.clone(), source };
            tracing::warn!(%error, "could not read the leader Lease");
            return None;
        }
        Err(_) => return None,
    };
    let spec = lease.spec.unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Some(None);
    }
    let renewed = spec.renew_time.or(spec.acquire_time).map(|t| t.0)?;
    let seconds = spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).unwrap_or(config.duration_seconds());
    let left = renewed.as_millisecond() + i64::try_from(seconds * 1000).unwrap_or(i64::MAX)
        - Timestamp::now().as_millisecond();
    Some(Some(Instant::now() + Duration::from_millis(u64::try_from(left).unwrap_or(0))))
}

fn warn_round(config: &LeaseConfig, source: LeaseManagerError) {
    let error = LeaseError::Elect { namespace: config.namespace.clone(), name: config.name.clone(), source };
    tracing::warn!(%error, "leader election round failed");
}

fn publish(leading: &watch::Sender<bool>, now_leading: bool, config: &LeaseConfig) {
    leading.send_if_modified(|was| {
        if *was == now_leading {
            return false;
        }
        tracing::info!(identity = %config.identity, lease = %config.name, leading = now_leading, "leadership changed");
        *was = now_leading;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lease_ms: u64, renew_ms: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "a".into(),
            lease_duration: Duration::from_millis(lease_ms),
            renew_every: Duration::from_millis(renew_ms),
        }
    }

    #[test]
    fn durations_are_whole_seconds_and_renewal_fits_inside_them() {
        // The chart's 15 s and 5 s: renew 10 s before the claim ends.
        let chart = config(15_000, 5_000);
        assert_eq!((chart.duration_seconds(), chart.renew_seconds(), chart.grace_seconds()), (15, 5, 10));
        // kube-lease-manager needs 0 < grace < duration; the config cannot break that.
        for (lease, renew) in [(3_700, 1_000), (200, 1_000), (3_000, 10_000), (3_000, 0), (0, 0), (2_000, 2_000)] {
            let c = config(lease, renew);
            let (duration, grace) = (c.duration_seconds(), c.grace_seconds());
            assert!(grace > 0 && grace < duration, "{lease} ms / {renew} ms gives grace {grace} of {duration}");
            assert!(c.renew_seconds() >= 1);
        }
    }

    #[test]
    fn each_replica_has_a_field_manager_of_its_own() {
        let a = config(15_000, 5_000);
        let b = LeaseConfig { identity: "b".into(), ..a.clone() };
        assert_eq!(a.field_manager(), "referral-operator-a");
        assert_ne!(a.field_manager(), b.field_manager(), "a shared manager would let one claim overwrite another");
    }

    #[test]
    fn errors_name_the_operation_and_the_lease() {
        let error = LeaseError::Elect {
            namespace: "ops".into(),
            name: "leader".into(),
            source: LeaseManagerError::NonexistentLease("leader".into()),
        };
        assert_eq!(
            error.to_string(),
            "taking part in the election on Lease ops/leader: Lease resource `leader` doesn't exist"
        );
        assert_eq!(error.category(), "kubernetes_api");
    }
}
