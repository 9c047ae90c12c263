//! What a panic does in the operator: one reconcile that panics fails alone, like a
//! reconcile that returns an error, and every other system goes on being reconciled;
//! a panic anywhere else ends the process.
//!
//! Release builds unwind (Cargo.toml) so that a reconcile's panic can be caught at
//! its edge ([`contain`]). The reconciles of every system share one process: with
//! `panic = "abort"`, a value that slipped past validation into an arithmetic or
//! parsing bug in one system's reconcile would stop all of them, over and over, as
//! Kubernetes restarted the pod into the same spec. Everything outside a reconcile
//! (the leader elector, the watches, the HTTP server) is not contained: a half-dead
//! process that serves `/readyz` beside a panicked elector is worse than a restart,
//! so [`install_hook`] aborts on any panic not raised inside [`contain`].
//!
//! A contained panic leaves no shared state half-written that matters: a reconcile
//! holds no lock across an await, and the locks it takes briefly treat poisoning as
//! harmless (see `live.rs`).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

tokio::task_local! {
    /// Set while a contained reconcile is being polled.
    static CONTAINED: ();
}

/// Whether a panic raised here would be contained: true only while [`contain`] polls.
pub fn contained_here() -> bool {
    CONTAINED.try_with(|_| ()).is_ok()
}

/// Installs a panic hook that prints the panic as the default hook does and then,
/// unless the panic is contained, aborts the process.
pub fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if !contained_here() {
            std::process::abort();
        }
    }));
}

/// The panic's message, cut short: it can quote a spec value, and it goes to a log
/// line and an error.
fn message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    text.chars().take(300).collect()
}

/// Runs one reconcile; a panic inside it becomes the error `on_panic` makes from the
/// panic's message, so the controller backs off and retries that system alone.
pub async fn contain<T, E>(
    reconcile: impl Future<Output = Result<T, E>>,
    on_panic: impl FnOnce(String) -> E,
) -> Result<T, E> {
    match CONTAINED.scope((), AssertUnwindSafe(reconcile).catch_unwind()).await {
        Ok(result) => result,
        Err(payload) => {
            let message = message(payload.as_ref());
            tracing::error!(panic = %message, "a reconcile panicked; the other systems go on");
            Err(on_panic(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_reconcile_fails_alone_while_another_finishes() {
        let panicking = tokio::spawn(contain(
            async {
                tokio::task::yield_now().await;
                let values: Vec<u64> = Vec::new();
                Ok::<u64, String>(values[usize::MAX / 2])
            },
            |message| format!("panicked: {message}"),
        ));
        let healthy = tokio::spawn(contain(
            async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                Ok::<u64, String>(7)
            },
            |message| message,
        ));
        let failed = panicking.await.expect("the task itself does not panic: the panic was contained");
        assert!(failed.as_ref().is_err_and(|e| e.starts_with("panicked: index out of bounds")), "{failed:?}");
        assert_eq!(healthy.await.unwrap(), Ok(7));
    }

    #[tokio::test]
    async fn only_a_panic_inside_contain_is_contained() {
        assert!(!contained_here(), "outside: the hook would abort");
        let inside = contain(async { Ok::<bool, ()>(contained_here()) }, |_| ()).await;
        assert_eq!(inside, Ok(true));
        assert!(!contained_here());
    }

    #[test]
    fn a_long_message_is_cut() {
        let long = "x".repeat(10_000);
        assert_eq!(message(&long).len(), 300);
        assert_eq!(message(&"short"), "short");
    }
}
