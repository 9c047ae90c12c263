//! A MongoDB client for the command line, from a connection string held in an
//! environment variable, so the URI (and its password) never appears in argv, logs
//! or error messages.

use std::time::Duration;

use mongodb::Client;
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::ClientOptions;

use crate::checks::mongo_error::invalid_uri_reason;

/// Why no client could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MongoClientError {
    #[error("environment variable {var} is not set: it must hold the MongoDB connection string")]
    MissingUri { var: String },
    #[error("the connection string in {var} is not valid: {reason}")]
    InvalidUri { var: String, reason: String },
}

/// Connects (lazily: the driver connects on the first command) with `timeout` for
/// server selection and connection, and an optional command monitor.
pub async fn client_from_env(
    var: &str,
    timeout: Duration,
    app_name: &str,
    monitor: Option<EventHandler<CommandEvent>>,
) -> Result<Client, MongoClientError> {
    let uri = std::env::var(var).map_err(|_| MongoClientError::MissingUri { var: var.into() })?;
    client_from_uri(var, &uri, timeout, app_name, monitor).await
}

/// As [`client_from_env`], for a URI already read; `source` names where it came from.
pub async fn client_from_uri(
    source: &str,
    uri: &str,
    timeout: Duration,
    app_name: &str,
    monitor: Option<EventHandler<CommandEvent>>,
) -> Result<Client, MongoClientError> {
    let invalid = |e: mongodb::error::Error| MongoClientError::InvalidUri {
        var: source.into(),
        reason: invalid_uri_reason(&e, uri),
    };
    let mut options = ClientOptions::parse(uri).await.map_err(invalid)?;
    options.server_selection_timeout = Some(timeout);
    options.connect_timeout = Some(timeout);
    options.app_name = Some(app_name.into());
    options.command_event_handler = monitor;
    Client::with_options(options).map_err(invalid)
}
