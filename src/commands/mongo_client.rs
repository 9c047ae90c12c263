//! A MongoDB client for the command line, from a connection string held in an
//! environment variable, so the URI (and its password) never appears in argv, logs
//! or error messages; over TLS when the pod says so (MONGODB_TLS, and the files the
//! operator mounts, named by MONGODB_TLS_CA_FILE, _CERT_FILE and _KEY_FILE).

use std::time::Duration;

use mongodb::Client;
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{ClientOptions, Tls, TlsOptions};

use crate::checks::mongo_error::invalid_uri_reason;
use crate::checks::mongo_probe::{apply_tls, tls_root};
use crate::checks::tls::{TlsFiles, TlsMaterial};

/// Prefix of the TLS variables the operator sets in its pods (`MONGODB_TLS`,
/// `MONGODB_TLS_CA_FILE`, ...).
pub const TLS_ENV_PREFIX: &str = "MONGODB_TLS";

/// Why no client could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MongoClientError {
    #[error("environment variable {var} is not set: it must hold the MongoDB connection string")]
    MissingUri { var: String },
    #[error("the connection string in {var} is not valid: {reason}")]
    InvalidUri { var: String, reason: String },
    #[error("the MongoDB TLS settings cannot be used: {reason}")]
    Tls { reason: String },
}

/// A client and the TLS files its driver reads, which live as long as it does.
#[derive(Debug)]
pub struct CliClient {
    client: Client,
    _tls: Option<TlsFiles>,
}

impl std::ops::Deref for CliClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// The TLS material named by the MONGODB_TLS_* variables, and whether TLS was asked
/// for at all (MONGODB_TLS=true alone trusts the system's roots).
fn tls_from_env() -> Result<(bool, Option<TlsMaterial>), MongoClientError> {
    let material =
        TlsMaterial::from_env(TLS_ENV_PREFIX).map_err(|e| MongoClientError::Tls { reason: e.to_string() })?;
    let asked = std::env::var(TLS_ENV_PREFIX).is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    Ok((asked || material.is_some(), material))
}

/// Connects (lazily: the driver connects on the first command) with `timeout` for
/// server selection and connection, and an optional command monitor.
pub async fn client_from_env(
    var: &str,
    timeout: Duration,
    app_name: &str,
    monitor: Option<EventHandler<CommandEvent>>,
) -> Result<CliClient, MongoClientError> {
    let uri = std::env::var(var).map_err(|_| MongoClientError::MissingUri { var: var.into() })?;
    client_with_env_tls(var, &uri, timeout, app_name, monitor).await
}

/// As [`client_from_env`], for a URI already read (`source` names where it came
/// from): TLS from the MONGODB_TLS_* variables, as the operator sets them in every
/// Job's pod. The backup, restore and drill commands connect with it.
pub async fn client_with_env_tls(
    source: &str,
    uri: &str,
    timeout: Duration,
    app_name: &str,
    monitor: Option<EventHandler<CommandEvent>>,
) -> Result<CliClient, MongoClientError> {
    let (tls, material) = tls_from_env()?;
    client_with_tls(source, uri, timeout, app_name, monitor, tls.then_some(material.unwrap_or_default()).as_ref()).await
}

/// As [`client_from_uri`], connecting with TLS from `tls` when it is set (an empty
/// material trusts the system's roots).
pub async fn client_with_tls(
    source: &str,
    uri: &str,
    timeout: Duration,
    app_name: &str,
    monitor: Option<EventHandler<CommandEvent>>,
    tls: Option<&TlsMaterial>,
) -> Result<CliClient, MongoClientError> {
    let invalid = |e: mongodb::error::Error| MongoClientError::InvalidUri {
        var: source.into(),
        reason: invalid_uri_reason(&e, uri),
    };
    let mut options = ClientOptions::parse(uri).await.map_err(invalid)?;
    options.server_selection_timeout = Some(timeout);
    options.connect_timeout = Some(timeout);
    options.app_name = Some(app_name.into());
    options.command_event_handler = monitor;
    let files = match tls {
        Some(material) if *material == TlsMaterial::default() => {
            options.tls = Some(Tls::Enabled(TlsOptions::default()));
            None
        }
        material => apply_tls(&mut options, material, &tls_root())
            .map_err(|e| MongoClientError::Tls { reason: e.to_string() })?,
    };
    Ok(CliClient { client: Client::with_options(options).map_err(invalid)?, _tls: files })
}

/// As [`client_from_env`], for a URI already read; `source` names where it came from.
pub async fn client_from_uri(
    source: &str,
    uri: &str,
    timeout: Duration,
    app_name: &str,
    monitor: Option<EventHandler<CommandEvent>>,
) -> Result<Client, MongoClientError> {
    Ok(client_with_tls(source, uri, timeout, app_name, monitor, None).await?.client)
}
