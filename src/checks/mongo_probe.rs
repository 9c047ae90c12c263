//! Is MongoDB reachable with the configured connection string? A `ping` command under
//! a server-selection deadline. Clients are cached by a hash of the URI so repeated
//! probes reuse connections, at most [`MAX_CLIENTS`] of them (each holds connections
//! and a monitor that checks its server); the URI itself is never logged or returned
//! in errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::Client;
use mongodb::bson::doc;
use mongodb::event::EventHandler;
use mongodb::event::sdam::SdamEvent;
use mongodb::options::ClientOptions;
use sha2::{Digest, Sha256};

use super::mongo_error::{invalid_uri_reason, redact};

/// Why MongoDB did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MongoProbeError {
    #[error("the MongoDB connection string is not valid: {reason}")]
    InvalidUri { reason: String },
    #[error("MongoDB refused the credentials: {reason}")]
    Auth { reason: String },
    #[error("MongoDB is not reachable: {reason}")]
    Unreachable { reason: String },
}

impl MongoProbeError {
    /// Short reason for a status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUri { .. } => "InvalidURI",
            Self::Auth { .. } => "AuthenticationFailed",
            Self::Unreachable { .. } => "Unreachable",
        }
    }
}

/// Clients kept at most: with more servers than this (a cluster of many tenants) the
/// least recently used goes, closing its connections and its monitor.
pub const MAX_CLIENTS: usize = 256;

/// Mongo clients by URI hash, each last used at the instant kept with it.
#[derive(Default)]
pub struct MongoClients {
    clients: Mutex<HashMap<String, (Client, Instant)>>,
    /// How often each client's monitor checks its server (the driver's `hello`);
    /// the driver's default (10 s) when `None`.
    heartbeat: Option<Duration>,
    /// Called at every such check, to count them.
    on_heartbeat: Option<Arc<dyn Fn() + Send + Sync>>,
}

fn uri_key(uri: &str) -> String {
    Sha256::digest(uri.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl MongoClients {
    /// Clients whose monitors check their server every `heartbeat` (the controller
    /// passes its probe interval: a check more often tells it nothing it uses), each
    /// check reported to `on_heartbeat`.
    pub fn new(heartbeat: Duration, on_heartbeat: impl Fn() + Send + Sync + 'static) -> Self {
        Self { clients: Mutex::default(), heartbeat: Some(heartbeat), on_heartbeat: Some(Arc::new(on_heartbeat)) }
    }

    /// A client for `uri`, created on first use.
    pub async fn client(&self, uri: &str, timeout: Duration) -> Result<Client, MongoProbeError> {
        let key = uri_key(uri);
        if let Some(client) = self.clients.lock().ok().and_then(|mut c| {
            let (client, used) = c.get_mut(&key)?;
            *used = Instant::now();
            Some(client.clone())
        }) {
            return Ok(client);
        }
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| MongoProbeError::InvalidUri { reason: invalid_uri_reason(&e, uri) })?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("referral-operator".into());
        if let Some(heartbeat) = self.heartbeat {
            options.heartbeat_freq = Some(heartbeat);
        }
        if let Some(count) = self.on_heartbeat.clone() {
            options.sdam_event_handler = Some(EventHandler::callback(move |event| {
                if let SdamEvent::ServerHeartbeatStarted(_) = event {
                    count();
                }
            }));
        }
        let client = Client::with_options(options)
            .map_err(|e| MongoProbeError::InvalidUri { reason: redact(&e.to_string(), uri) })?;
        if let Ok(mut clients) = self.clients.lock() {
            if clients.len() >= MAX_CLIENTS
                && let Some(oldest) = clients.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
            {
                clients.remove(&oldest);
            }
            clients.insert(key, (client.clone(), Instant::now()));
        }
        Ok(client)
    }

    /// Sends `ping` to the `admin` database.
    pub async fn ping(&self, uri: &str, timeout: Duration) -> Result<(), MongoProbeError> {
        let client = self.client(uri, timeout).await?;
        let admin = client.database("admin");
        let ping = admin.run_command(doc! {"ping": 1});
        match tokio::time::timeout(timeout + Duration::from_secs(1), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&e, uri)),
            Err(_) => Err(MongoProbeError::Unreachable { reason: format!("no answer within {timeout:?}") }),
        }
    }
}

fn classify(error: &mongodb::error::Error, uri: &str) -> MongoProbeError {
    use mongodb::error::ErrorKind;
    let reason = redact(&error.to_string(), uri);
    match error.kind.as_ref() {
        ErrorKind::Authentication { .. } => MongoProbeError::Auth { reason },
        ErrorKind::Command(c) if c.code == 18 || c.code == 13 => MongoProbeError::Auth { reason },
        _ => MongoProbeError::Unreachable { reason },
    }
}

impl MongoClients {
    /// Clients kept now.
    pub fn len(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_max_clients_are_kept_and_the_least_recently_used_goes() {
        // Creating a client connects nothing yet (the driver connects on first use),
        // so no server is needed to see which ones are kept.
        let clients = MongoClients::new(Duration::from_secs(30), || {});
        let uri = |i: usize| format!("mongodb://127.0.0.1:1/?appName=tenant-{i}");
        for i in 0..MAX_CLIENTS {
            clients.client(&uri(i), Duration::from_millis(100)).await.unwrap();
        }
        clients.client(&uri(0), Duration::from_millis(100)).await.unwrap();
        clients.client(&uri(MAX_CLIENTS), Duration::from_millis(100)).await.unwrap();
        assert_eq!(clients.len(), MAX_CLIENTS);
        let kept = clients.clients.lock().unwrap();
        assert!(kept.contains_key(&uri_key(&uri(0))), "used again just now: kept");
        assert!(!kept.contains_key(&uri_key(&uri(1))), "the least recently used goes");
        assert!(kept.contains_key(&uri_key(&uri(MAX_CLIENTS))));
    }

    #[test]
    fn redaction_removes_the_uri_and_keeps_one_line() {
        let uri = "mongodb://user:s3cret@db:27017/x";
        let message = format!("failed to connect to {uri}\nmore detail");
        let cleaned = redact(&message, uri);
        assert_eq!(cleaned, "failed to connect to <redacted>");
    }
}
