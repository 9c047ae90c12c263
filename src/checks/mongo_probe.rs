//! Is MongoDB reachable with the configured connection string (and TLS material)? A
//! `ping` command under a server-selection deadline. Clients are cached by a hash of
//! the URI and the TLS material so repeated probes reuse connections, at most
//! [`MAX_CLIENTS`] of them (each holds connections and a monitor that checks its
//! server); the URI itself is never logged or returned in errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::Client;
use mongodb::bson::doc;
use mongodb::event::EventHandler;
use mongodb::event::sdam::SdamEvent;
use mongodb::options::{ClientOptions, Tls, TlsOptions};
use sha2::{Digest, Sha256};

use super::mongo_error::{invalid_uri_reason, redact};
use super::tls::{TlsFiles, TlsMaterial};

/// Why MongoDB did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MongoProbeError {
    #[error("the MongoDB connection string is not valid: {reason}")]
    InvalidUri { reason: String },
    #[error("MongoDB refused the credentials: {reason}")]
    Auth { reason: String },
    #[error("MongoDB is not reachable: {reason}")]
    Unreachable { reason: String },
    #[error("the MongoDB TLS files could not be prepared: {reason}")]
    TlsFiles { reason: String },
}

impl MongoProbeError {
    /// Short reason for a status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUri { .. } => "InvalidURI",
            Self::Auth { .. } => "AuthenticationFailed",
            Self::Unreachable { .. } => "Unreachable",
            Self::TlsFiles { .. } => "TLSFilesUnavailable",
        }
    }
}

/// Clients kept at most: with more servers than this (a cluster of many tenants) the
/// least recently used goes, closing its connections and its monitor.
pub const MAX_CLIENTS: usize = 256;

/// Mongo clients by a hash of the URI and TLS material, each with the TLS files it
/// reads (kept as long as the client) and the instant it was last used.
#[derive(Default)]
pub struct MongoClients {
    clients: Mutex<HashMap<String, Kept>>,
    /// How often each client's monitor checks its server (the driver's `hello`);
    /// the driver's default (10 s) when `None`.
    heartbeat: Option<Duration>,
    /// Called at every such check, to count them.
    on_heartbeat: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// One cached client, the TLS files it reads and when it was last used.
struct Kept {
    client: Client,
    /// Deleted when the client goes.
    _files: Option<TlsFiles>,
    used: Instant,
}

/// Sets `options` to connect with TLS from `material`; the files the driver reads
/// are written under `root` and returned, to live as long as the client.
pub fn apply_tls(
    options: &mut ClientOptions,
    material: Option<&TlsMaterial>,
    root: &std::path::Path,
) -> Result<Option<TlsFiles>, super::tls::TlsFileError> {
    let Some(material) = material else { return Ok(None) };
    let files = material.write_for_driver(root)?;
    let mut tls = TlsOptions::default();
    tls.ca_file_path = files.ca.clone();
    tls.cert_key_file_path = files.cert_key.clone();
    options.tls = Some(Tls::Enabled(tls));
    Ok(Some(files))
}

/// Where the operator writes TLS files for the driver: a directory of its own under
/// the temporary directory (a memory-backed volume in the chart).
pub fn tls_root() -> std::path::PathBuf {
    std::env::temp_dir().join("referral-operator-tls")
}

fn uri_key(uri: &str) -> String {
    Sha256::digest(uri.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache key of a client: its URI's hash, and its TLS material's fingerprint.
fn client_key(uri: &str, tls: Option<&TlsMaterial>) -> String {
    format!("{}-{}", uri_key(uri), tls.map(TlsMaterial::fingerprint).unwrap_or_default())
}

impl MongoClients {
    /// Clients whose monitors check their server every `heartbeat` (the controller
    /// passes its probe interval: a check more often tells it nothing it uses), each
    /// check reported to `on_heartbeat`.
    pub fn new(heartbeat: Duration, on_heartbeat: impl Fn() + Send + Sync + 'static) -> Self {
        Self { clients: Mutex::default(), heartbeat: Some(heartbeat), on_heartbeat: Some(Arc::new(on_heartbeat)) }
    }

    /// A client for `uri` (with `tls`, when set), created on first use.
    pub async fn client(
        &self,
        uri: &str,
        tls: Option<&TlsMaterial>,
        timeout: Duration,
    ) -> Result<Client, MongoProbeError> {
        let key = client_key(uri, tls);
        if let Some(client) = self.clients.lock().ok().and_then(|mut c| {
            let kept = c.get_mut(&key)?;
            kept.used = Instant::now();
            Some(kept.client.clone())
        }) {
            return Ok(client);
        }
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| MongoProbeError::InvalidUri { reason: invalid_uri_reason(&e, uri) })?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("referral-operator".into());
        let files = apply_tls(&mut options, tls, &tls_root())
            .map_err(|e| MongoProbeError::TlsFiles { reason: e.to_string() })?;
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
                && let Some(oldest) = clients.iter().min_by_key(|(_, kept)| kept.used).map(|(k, _)| k.clone())
            {
                clients.remove(&oldest);
            }
            clients.insert(key, Kept { client: client.clone(), _files: files, used: Instant::now() });
        }
        Ok(client)
    }

    /// Sends `ping` to the `admin` database.
    pub async fn ping(&self, uri: &str, tls: Option<&TlsMaterial>, timeout: Duration) -> Result<(), MongoProbeError> {
        let client = self.client(uri, tls, timeout).await?;
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
            clients.client(&uri(i), None, Duration::from_millis(100)).await.unwrap();
        }
        clients.client(&uri(0), None, Duration::from_millis(100)).await.unwrap();
        clients.client(&uri(MAX_CLIENTS), None, Duration::from_millis(100)).await.unwrap();
        assert_eq!(clients.len(), MAX_CLIENTS);
        let kept = clients.clients.lock().unwrap();
        assert!(kept.contains_key(&client_key(&uri(0), None)), "used again just now: kept");
        assert!(!kept.contains_key(&client_key(&uri(1), None)), "the least recently used goes");
        assert!(kept.contains_key(&client_key(&uri(MAX_CLIENTS), None)));
    }

    #[test]
    fn redaction_removes_the_uri_and_keeps_one_line() {
        let uri = "mongodb://user:s3cret@db:27017/x";
        let message = format!("failed to connect to {uri}\nmore detail");
        let cleaned = redact(&message, uri);
        assert_eq!(cleaned, "failed to connect to <redacted>");
    }
}
