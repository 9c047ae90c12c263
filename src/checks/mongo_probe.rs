//! Is MongoDB reachable with the configured connection string? A `ping` command under
//! a server-selection deadline. Clients are cached by a hash of the URI so repeated
//! probes reuse connections; the URI itself is never logged or returned in errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::doc;
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

/// Mongo clients by URI hash.
#[derive(Default)]
pub struct MongoClients {
    clients: Mutex<HashMap<String, Client>>,
}

fn uri_key(uri: &str) -> String {
    Sha256::digest(uri.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl MongoClients {
    /// A client for `uri`, created on first use.
    pub async fn client(&self, uri: &str, timeout: Duration) -> Result<Client, MongoProbeError> {
        let key = uri_key(uri);
        if let Some(client) = self.clients.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(client);
        }
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| MongoProbeError::InvalidUri { reason: invalid_uri_reason(&e, uri) })?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("referral-operator".into());
        let client = Client::with_options(options)
            .map_err(|e| MongoProbeError::InvalidUri { reason: redact(&e.to_string(), uri) })?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(key, client.clone());
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

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redaction_removes_the_uri_and_keeps_one_line() {
        let uri = "mongodb://user:s3cret@db:27017/x";
        let message = format!("failed to connect to {uri}\nmore detail");
        let cleaned = redact(&message, uri);
        assert_eq!(cleaned, "failed to connect to <redacted>");
    }
}
