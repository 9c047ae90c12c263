//! Whether the API server answers, for `/readyz`: a replica that cannot reach it (an
//! API server restarting, its etcd down) says so in its readiness, so whoever looks
//! at the pod sees why nothing moves. It asks the API server's own `/readyz` (which
//! includes etcd; readable by every authenticated user) every [`PROBE_EVERY`]: one
//! request at a fixed pace whatever the outage, never a retry loop.
//!
//! It reports and nothing more: the controllers' watches and the Lease keep their
//! own retries, and readiness never restarts anything (liveness stays `/healthz`).

use std::time::Duration;

use kube::Client;
use tokio::time::MissedTickBehavior;

use super::http::Health;

/// How often the API server is asked.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// An API server that takes longer counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);
/// Of the API server's answer, at most this much goes into the reason.
const REASON_CHARS: usize = 200;

/// The `/readyz` reason after a failed probe.
pub fn not_ready_reason(why: &str) -> String {
    let why: String = why.trim().replace('\n', " ").chars().take(REASON_CHARS).collect();
    format!("the API server is not ready: {why}")
}

/// Probes until the process ends, marking `health` ready or not after each answer.
pub async fn follow(client: Client, health: Health) {
    let mut ticks = tokio::time::interval(PROBE_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match probe(&client).await {
            Ok(()) => health.set_ready(true),
            Err(why) => {
                if health.is_ready() {
                    tracing::warn!(%why, "the API server is not ready");
                }
                health.set_not_ready(not_ready_reason(&why));
            }
        }
    }
}

async fn probe(client: &Client) -> Result<(), String> {
    let request = axum::http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(PROBE_TIMEOUT, client.request_text(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_one_bounded_line() {
        let reason = not_ready_reason(&format!("[-]etcd failed\n{}", "x".repeat(1000)));
        assert!(reason.starts_with("the API server is not ready: [-]etcd failed x"), "{reason}");
        assert!(!reason.contains('\n'));
        assert_eq!(reason.chars().count(), "the API server is not ready: ".len() + REASON_CHARS);
    }
}
