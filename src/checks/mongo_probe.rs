//! Is MongoDB reachable with the configured connection string (and TLS material)? A
//! `ping` command under a server-selection deadline. Clients are cached by a hash of
//! the URI and the TLS material so repeated probes reuse connections; the URI itself
//! is never logged or returned in errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::doc;
use mongodb::options::{ClientOptions, Tls, TlsOptions};
use sha2::{Digest, Sha256};

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

/// Mongo clients by a hash of the URI and TLS material, each with the TLS files
/// it reads (kept as long as the client).
#[derive(Default)]
pub struct MongoClients {
    clients: Mutex<HashMap<String, (Client, Option<TlsFiles>)>>,
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

/// Driver messages can quote the connection string; keep only what comes after the
/// last mention of it, and never more than a line.
fn scrub(message: &str, uri: &str) -> String {
    let cleaned = if uri.is_empty() { message.to_string() } else { message.replace(uri, "<uri>") };
    cleaned.lines().next().unwrap_or_default().chars().take(300).collect()
}

impl MongoClients {
    /// A client for `uri` (with `tls`, when set), created on first use.
    pub async fn client(
        &self,
        uri: &str,
        tls: Option<&TlsMaterial>,
        timeout: Duration,
    ) -> Result<Client, MongoProbeError> {
        let key = format!("{}-{}", uri_key(uri), tls.map(TlsMaterial::fingerprint).unwrap_or_default());
        if let Some(client) = self.clients.lock().ok().and_then(|c| c.get(&key).map(|(client, _)| client.clone())) {
            return Ok(client);
        }
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| MongoProbeError::InvalidUri { reason: scrub(&e.to_string(), uri) })?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("referral-operator".into());
        let files = apply_tls(&mut options, tls, &tls_root())
            .map_err(|e| MongoProbeError::TlsFiles { reason: e.to_string() })?;
        let client = Client::with_options(options)
            .map_err(|e| MongoProbeError::InvalidUri { reason: scrub(&e.to_string(), uri) })?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(key, (client.clone(), files));
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
    let reason = scrub(&error.to_string(), uri);
    match error.kind.as_ref() {
        ErrorKind::Authentication { .. } => MongoProbeError::Auth { reason },
        ErrorKind::Command(c) if c.code == 18 || c.code == 13 => MongoProbeError::Auth { reason },
        _ => MongoProbeError::Unreachable { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrub_removes_the_uri_and_keeps_one_line() {
        let uri = "mongodb://user:s3cret@db:27017/x";
        let message = format!("failed to connect to {uri}\nmore detail");
        let cleaned = scrub(&message, uri);
        assert_eq!(cleaned, "failed to connect to <uri>");
        assert!(!cleaned.contains("s3cret"));
    }
}
