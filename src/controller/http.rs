//! The operator's HTTP endpoint: `/metrics` for Prometheus, `/healthz` for the
//! liveness probe and `/readyz` for the readiness probe.
//!
//! Every replica serves it, leader or not: metrics and probes are reads. The module
//! only reports; it must not decide readiness itself (the controller does, through
//! [`Health`]) nor touch the cluster.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::metrics::{CONTENT_TYPE, Metrics};

/// Why serving HTTP failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("binding the metrics and probe address {addr}: {source}")]
    BindAddress { addr: SocketAddr, source: std::io::Error },
    #[error("serving metrics and probes: {source}")]
    Serve { source: std::io::Error },
}

impl HttpError {
    /// A fixed, small set of labels for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::BindAddress { .. } | Self::Serve { .. } => "http",
        }
    }
}

/// Readiness as the controller reports it; clones share one state.
///
/// Starts not ready, so a replica receives no traffic before the controller has
/// said it is up.
#[derive(Clone, Debug)]
pub struct Health {
    /// `None` when ready, otherwise why not.
    not_ready: Arc<RwLock<Option<String>>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health { not_ready: Arc::new(RwLock::new(Some("starting".to_owned()))) }
    }

    pub fn set_ready(&self, ready: bool) {
        if ready {
            *self.not_ready.write().unwrap_or_else(PoisonError::into_inner) = None;
        } else {
            self.set_not_ready("the controller reported not ready");
        }
    }

    /// Marks the process not ready, with the reason `/readyz` answers.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready.write().unwrap_or_else(PoisonError::into_inner) = Some(reason.into());
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready.read().unwrap_or_else(PoisonError::into_inner).is_none()
    }

    fn not_ready_reason(&self) -> Option<String> {
        self.not_ready.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[derive(Clone)]
struct Endpoint {
    metrics: Arc<Metrics>,
    health: Health,
}

/// Binds `addr` and serves until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, health: Health) -> Result<(), HttpError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| HttpError::BindAddress { addr, source })?;
    serve_with_shutdown(listener, metrics, health, std::future::pending()).await
}

/// Serves on an already bound listener until `shutdown` completes, then finishes the
/// requests in flight.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    axum::serve(listener, router(Endpoint { metrics, health }))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| HttpError::Serve { source })
}

fn router(endpoint: Endpoint) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(endpoint)
}

async fn metrics(State(endpoint): State<Endpoint>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], endpoint.metrics.encode()).into_response()
}

/// Liveness: answering at all is the proof. Deliberately independent of the cluster,
/// so an API server outage does not get every replica restarted.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(endpoint): State<Endpoint>) -> Response {
    match endpoint.health.not_ready_reason() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::controller::metrics::RECONCILE_RUNS_TOTAL;

    struct Running {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        server: JoinHandle<Result<(), HttpError>>,
    }

    async fn start(metrics: Arc<Metrics>, health: Health) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_with_shutdown(listener, metrics, health, async {
            let _ = stopped.await;
        }));
        Running { addr, stop, server }
    }

    /// One HTTP/1.1 GET over a plain socket: status code, headers and body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a complete HTTP response");
        let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
        (status, head.to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn probes_and_metrics_over_real_http() {
        let metrics = Arc::new(Metrics::new());
        drop(metrics.reconcile_timer());
        let health = Health::new();
        let running = start(metrics, health.clone()).await;

        let (status, _, body) = get(running.addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        let (status, _, body) = get(running.addr, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("not ready: "), "{body}");

        health.set_ready(true);
        let (status, _, body) = get(running.addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready\n"));

        health.set_not_ready("lost the API server");
        let (status, _, body) = get(running.addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "not ready: lost the API server\n"));

        let (status, head, body) = get(running.addr, "/metrics").await;
        assert_eq!(status, 200, "{head}");
        assert!(head.to_ascii_lowercase().contains(&format!("content-type: {CONTENT_TYPE}")), "{head}");
        assert!(body.contains(&format!("{RECONCILE_RUNS_TOTAL} 1\n")), "{body}");

        let (status, _, _) = get(running.addr, "/nothing-here").await;
        assert_eq!(status, 404);

        running.stop.send(()).unwrap();
        running.server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_taken_address_is_reported_with_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let error = serve(addr, Arc::new(Metrics::new()), Health::new()).await.unwrap_err();
        assert!(matches!(error, HttpError::BindAddress { addr: reported, .. } if reported == addr), "{error}");
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
