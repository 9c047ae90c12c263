//! How a MongoDB driver error reads to a person and to a status condition: a bounded
//! kind (unreachable, credentials refused, not authorized, namespace missing) and a
//! one-line reason. Shared by the index sync and the chain source; no I/O here.

use mongodb::error::{Error, ErrorKind};

/// MongoDB's `NamespaceNotFound`: the collection does not exist.
pub const NAMESPACE_NOT_FOUND: i32 = 26;
const UNAUTHORIZED: i32 = 13;
const AUTHENTICATION_FAILED: i32 = 18;

/// The kinds of failure a caller treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MongoFailure {
    /// No server answered (selection timeout, connection refused, network error).
    Unreachable,
    /// The server refused the credentials.
    AuthenticationFailed,
    /// The user lacks the privilege for this command.
    NotAuthorized,
    /// The collection does not exist.
    NamespaceNotFound,
    /// Anything else the server or driver said.
    Other,
}

/// Sorts a driver error into a [`MongoFailure`].
pub fn classify(error: &Error) -> MongoFailure {
    match error.kind.as_ref() {
        ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
            MongoFailure::Unreachable
        }
        ErrorKind::Authentication { .. } => MongoFailure::AuthenticationFailed,
        ErrorKind::Command(c) if c.code == AUTHENTICATION_FAILED => MongoFailure::AuthenticationFailed,
        ErrorKind::Command(c) if c.code == UNAUTHORIZED => MongoFailure::NotAuthorized,
        ErrorKind::Command(c) if c.code == NAMESPACE_NOT_FOUND => MongoFailure::NamespaceNotFound,
        _ => MongoFailure::Other,
    }
}

/// What went wrong, in one line of at most 300 characters: the server's code name
/// and message for a command error, the driver's message otherwise (never the raw
/// server response). Driver messages name hosts, never the password; the connection
/// string itself is never passed in.
pub fn describe(error: &Error) -> String {
    let text = match error.kind.as_ref() {
        ErrorKind::Command(c) => format!("{} ({}): {}", c.code_name, c.code, c.message),
        ErrorKind::Authentication { message, .. }
        | ErrorKind::ServerSelection { message, .. }
        | ErrorKind::ConnectionPoolCleared { message, .. }
        | ErrorKind::InvalidArgument { message, .. }
        | ErrorKind::InvalidResponse { message, .. } => message.clone(),
        ErrorKind::Io(e) => format!("I/O error: {e}"),
        other => other.to_string(),
    };
    text.lines().next().unwrap_or_default().chars().take(300).collect()
}
