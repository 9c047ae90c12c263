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

/// The characters a user name or password must percent-encode in a connection
/// string (RFC 3986's reserved set the driver checks, and `%` itself).
const USERINFO_RESERVED: &[char] = &[':', '/', '?', '#', '[', ']', '@', '%'];

/// Where a connection string may hold a secret, found by its structure rather than
/// by what the driver made of it: everything between `://` and the last `@`. A
/// password with an unencoded `?` or `/` makes the driver split the string in the
/// wrong place (part of the password read as a port, an option or a host), so the
/// driver's own idea of the user info cannot be trusted; the last `@` is where a
/// person meant the credentials to end. `None` when there is no `@` after the scheme.
fn credentials_region(uri: &str) -> Option<&str> {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let end = after_scheme.rfind('@')?;
    Some(&after_scheme[..end])
}

/// Every piece of the credentials region a driver message could quote: the region,
/// each run between reserved characters (the places the driver may cut it), and
/// their percent-decoded forms; longest first, so a longer piece is replaced before
/// a shorter one inside it. One-character pieces are left: they carry no secret.
fn secret_pieces(uri: &str) -> Vec<String> {
    let Some(region) = credentials_region(uri) else { return Vec::new() };
    let mut pieces: Vec<String> = vec![uri.to_string(), region.to_string()];
    pieces.extend(region.split(USERINFO_RESERVED).map(str::to_string));
    if let Some((_, password)) = region.split_once(':') {
        pieces.push(password.to_string());
    }
    let decoded: Vec<String> = pieces
        .iter()
        .filter_map(|p| percent_encoding::percent_decode_str(p).decode_utf8().ok().map(|d| d.into_owned()))
        .collect();
    pieces.extend(decoded);
    pieces.retain(|p| p.chars().count() >= 2);
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    pieces.dedup();
    pieces
}

/// A driver message about `uri`, safe for a condition, an event or a log: the whole
/// connection string and every piece of its credentials (by structure, see
/// [`secret_pieces`]) replaced, then cut to one line of at most 300 characters. The
/// cut comes after the replacement, so it cannot leave the start of a secret behind.
pub fn redact(message: &str, uri: &str) -> String {
    let mut text = message.to_string();
    for piece in secret_pieces(uri) {
        text = text.replace(&piece, "<redacted>");
    }
    text.lines().next().unwrap_or_default().chars().take(300).collect()
}

/// Why the driver could not read `uri`, in words. When the credentials hold a
/// character that must be percent-encoded, the driver's message (which then quotes
/// whatever piece it misread) is not used at all.
pub fn invalid_uri_reason(error: &Error, uri: &str) -> String {
    if credentials_region(uri).is_some_and(|region| {
        region.split_once(':').map_or(region, |(_, password)| password).contains(USERINFO_RESERVED)
            || region.split_once(':').is_some_and(|(user, _)| user.contains(USERINFO_RESERVED))
    }) {
        return "the user name or password holds a character that must be percent-encoded \
                (one of : / ? # [ ] @ %, written %3A %2F %3F %23 %5B %5D %40 %25); \
                the driver's message is withheld because it would quote part of it"
            .into();
    }
    redact(&error.to_string(), uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: [&str; 6] = ["pa?ss", "pa@ss", "pa:ss", "pa/ss", "pa%ss", "pa#ss"];

    #[test]
    fn redaction_finds_every_piece_of_an_unencoded_password() {
        for password in HOSTILE {
            let password = password.replace("pa", "alpha1").replace("ss", "omega2");
            let uri = format!("mongodb://referral:{password}@db.example:27017/app");
            // What a driver might quote: the whole password, either half, the host.
            for quoted in [password.as_str(), "alpha1", "omega2", "referral"] {
                let message = format!("invalid port: {quoted}\nmore");
                let cleaned = redact(&message, &uri);
                assert!(!cleaned.contains("alpha1") && !cleaned.contains("omega2"), "{uri}: {cleaned}");
                assert!(cleaned.starts_with("invalid port: <redacted>"), "{cleaned}");
            }
        }
    }

    #[test]
    fn redaction_keeps_messages_about_uris_without_credentials() {
        let uri = "mongodb://db.example:27017/app";
        assert_eq!(
            redact("server selection timeout: db.example:27017", uri),
            "server selection timeout: db.example:27017"
        );
    }

    #[test]
    fn percent_encoded_and_decoded_forms_are_both_redacted() {
        let uri = "mongodb://referral:alpha1%3Fomega2@db:27017";
        let cleaned = redact("auth failed for alpha1?omega2 and alpha1%3Fomega2", uri);
        assert!(!cleaned.contains("alpha1") && !cleaned.contains("omega2"), "{cleaned}");
    }

    #[tokio::test]
    async fn the_driver_never_gets_to_quote_an_unencoded_password() {
        for password in HOSTILE {
            let password = password.replace("pa", "alpha1").replace("ss", "omega2");
            let uri = format!("mongodb://referral:{password}@db.example:27017/app?appName=x");
            match mongodb::options::ClientOptions::parse(&uri).await {
                Err(error) => {
                    let reason = invalid_uri_reason(&error, &uri);
                    assert!(reason.contains("percent-encoded"), "{uri}: {reason}");
                    assert!(!reason.contains("alpha1") && !reason.contains("omega2"), "{uri}: {reason}");
                }
                // `%ss` is no escape, `:` in a password is allowed: whatever parses is
                // the driver's reading, and the reason path is not taken.
                Ok(_) => assert!(password.contains(':') || password.contains('%'), "{uri} parsed"),
            }
        }
    }
}
