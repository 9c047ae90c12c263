//! Retries of API requests the server turned away (429, 503, 504), spread in time.
//!
//! kube's default retry ([`RetryPolicy::server_retry`]: the server's `Retry-After`,
//! else an exponential back-off with jitter) gives every request a clone of one
//! policy, jitter state included (tower's `HasherRng` is a hasher and a counter), so
//! every request draws the same "random" delays. Requests turned away together come
//! back together, at the same millisecond, every time. Against an API server with
//! one mutating slot that let one of them through per round while the rounds grew
//! minutes apart: fault 9 (tests/e2e/faults.rs) saw twelve patches of three systems
//! retry in lockstep until the test gave up. [`SpreadRetry`] keeps kube's decision
//! (what is retried, how often, the server's delay as a floor) and waits a random
//! part longer, drawn anew for each retry.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::client::retry::RetryPolicy;
use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower::retry::Policy;

/// The part of the planned delay added at most: a retry waits between the planned
/// delay and twice it, never sooner than the server or kube's back-off asked.
const SPREAD: f64 = 1.0;

/// kube's retry decision with each delay spread by a fresh random part.
#[derive(Clone)]
pub struct SpreadRetry {
    inner: RetryPolicy,
}

impl SpreadRetry {
    /// kube's server-aware policy for controllers (up to 15 retries, the server's
    /// `Retry-After` respected), spread.
    pub fn server_retry() -> Self {
        Self { inner: RetryPolicy::server_retry() }
    }
}

impl Default for SpreadRetry {
    fn default() -> Self {
        Self::server_retry()
    }
}

/// `planned` lengthened by `unit * SPREAD` of itself (`unit` in `[0, 1]`; anything
/// else counts as 0, so the delay is never shorter than planned).
pub fn spread(planned: Duration, unit: f64) -> Duration {
    let unit = if (0.0..=1.0).contains(&unit) { unit } else { 0.0 };
    // `mul_f64` panics past Duration::MAX: saturate instead.
    let extra = Duration::try_from_secs_f64(planned.as_secs_f64() * unit * SPREAD).unwrap_or(Duration::MAX);
    planned.saturating_add(extra)
}

/// A fresh number in `[0, 1)` for each call: this process's keyed hash of a counter.
fn random_unit() -> f64 {
    static KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let draw = DRAWS.fetch_add(1, Ordering::Relaxed);
    (KEYS.hash_one(draw) >> 11) as f64 / (1u64 << 53) as f64
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for SpreadRetry {
    type Future = Sleep;

    fn retry(&mut self, request: &mut Request<Body>, result: &mut Result<Response<Res>, BoxError>) -> Option<Sleep> {
        let planned = self.inner.retry(request, result)?;
        let delay = planned.deadline().saturating_duration_since(Instant::now());
        Some(tokio::time::sleep(spread(delay, random_unit())))
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        <RetryPolicy as Policy<Request<Body>, Response<Res>, BoxError>>::clone_request(&mut self.inner, request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_delay_is_between_the_planned_one_and_twice_it() {
        let planned = Duration::from_secs(1);
        assert_eq!(spread(planned, 0.0), planned);
        assert_eq!(spread(planned, 0.5), Duration::from_millis(1500));
        assert_eq!(spread(planned, 1.0), Duration::from_secs(2));
        for odd in [f64::NAN, -1.0, 2.0, f64::INFINITY] {
            assert_eq!(spread(planned, odd), planned, "{odd}");
        }
        assert_eq!(spread(Duration::MAX, 1.0), Duration::MAX, "saturates");
    }

    fn turned_away(retry_after: Option<&str>) -> Result<Response<()>, BoxError> {
        let mut response = Response::builder().status(429);
        if let Some(seconds) = retry_after {
            response = response.header("Retry-After", seconds);
        }
        Ok(response.body(()).unwrap())
    }

    /// Requests turned away together, each with its clone of one policy (as tower's
    /// retry layer gives them), do not come back together; none comes back before
    /// the server said, and a request the server did not turn away is not retried.
    #[tokio::test(start_paused = true)]
    async fn requests_turned_away_together_come_back_apart_and_not_before_the_server_said() {
        let template = SpreadRetry::server_retry();
        for retry_after in [Some("1"), None] {
            let start = Instant::now();
            let mut deadlines = Vec::new();
            for _ in 0..12 {
                let mut policy = template.clone();
                let mut request = Request::new(Body::empty());
                let sleep = policy.retry(&mut request, &mut turned_away(retry_after)).expect("a 429 is retried");
                deadlines.push(sleep.deadline() - start);
            }
            if retry_after.is_some() {
                assert!(deadlines.iter().all(|d| *d >= Duration::from_secs(1)), "{deadlines:?}");
            }
            deadlines.sort();
            deadlines.dedup();
            assert!(deadlines.len() >= 10, "the retries of {retry_after:?} came back together: {deadlines:?}");
        }
        let mut ok: Result<Response<()>, BoxError> = Ok(Response::builder().status(200).body(()).unwrap());
        assert!(template.clone().retry(&mut Request::new(Body::empty()), &mut ok).is_none());
    }

    /// kube's own policy, for contrast: its clones draw the same delays. Should kube
    /// start drawing them apart, this fails and the spreading can go.
    #[tokio::test(start_paused = true)]
    async fn kubes_policy_clones_come_back_together() {
        let template = RetryPolicy::server_retry();
        let start = Instant::now();
        let mut deadlines: Vec<Duration> = (0..12)
            .map(|_| {
                let mut policy = template.clone();
                let sleep = policy.retry(&mut Request::new(Body::empty()), &mut turned_away(None)).unwrap();
                sleep.deadline() - start
            })
            .collect();
        deadlines.dedup();
        assert_eq!(deadlines.len(), 1, "{deadlines:?}");
    }
}
