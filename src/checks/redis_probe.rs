//! Is Redis there and does it take our credentials? One connection through the
//! `redis` crate (plain TCP or TLS with the given CA and client certificate), `AUTH`
//! with the ACL user and password when given, `PING`, under a deadline.
//!
//! Errors never carry a credential, nor any text a server sent back after our
//! `AUTH`: a server whose `AUTH` is renamed or disabled answers "unknown command,
//! with args beginning with: 'user' 'password'", echoing the password. So a server's
//! error reply is reported by its code alone (`WRONGPASS`, `NOAUTH`, ...), and only
//! errors that come from this side of the connection (the operating system, the TLS
//! library) are quoted.

use std::time::Duration;

use super::tls::TlsMaterial;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo};

/// Where and how to reach one Redis server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    /// Connect with TLS; `None` is plain TCP.
    pub tls: Option<TlsMaterial>,
    /// ACL user; the `default` user when `None`.
    pub username: Option<String>,
    /// The password, exactly as the Secret holds it.
    pub password: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RedisTarget {
    /// `host:port`, as messages name the server.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Why Redis did not answer PING.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisProbeError {
    #[error("cannot connect to Redis at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("the TLS handshake with Redis at {address} failed: {reason}")]
    Tls { address: String, reason: String },
    #[error("Redis at {address} refused the credentials of {user}{code}")]
    Auth { address: String, user: String, code: String },
    #[error(
        "Redis at {address} needs a password and none is configured (set spec.redis.passwordSecretRef, or leave it unset for a managed Redis to get a generated one)"
    )]
    NoAuth { address: String },
    #[error("the Redis client settings are not usable: {reason}")]
    Settings { reason: String },
    #[error("Redis at {address} answered PING with an error{code}")]
    Ping { address: String, code: String },
    #[error("Redis at {address} did not answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
}

impl RedisProbeError {
    /// Short reason for a status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "Unreachable",
            Self::Tls { .. } => "TLSHandshakeFailed",
            Self::Auth { .. } => "AuthenticationFailed",
            Self::NoAuth { .. } => "PasswordRequired",
            Self::Settings { .. } => "InvalidClientSettings",
            Self::Ping { .. } => "PingFailed",
            Self::Timeout { .. } => "Timeout",
        }
    }
}

/// Error codes a server may send that say nothing but what they are: the only part
/// of a server's error reply a message may show.
const KNOWN_CODES: [&str; 8] = ["WRONGPASS", "NOAUTH", "NOPERM", "LOADING", "BUSY", "MASTERDOWN", "READONLY", "ERR"];

/// ` (CODE)` for a code from [`KNOWN_CODES`], nothing otherwise.
fn shown_code(error: &redis::RedisError) -> String {
    match error.code() {
        Some(code) if KNOWN_CODES.contains(&code) => format!(" ({code})"),
        _ => String::new(),
    }
}

/// The operating system's or the TLS library's words for a failure on our side of
/// the connection, one line; `None` when the error came from the server.
fn local_cause(error: &redis::RedisError) -> Option<String> {
    if error.kind() != ErrorKind::Io {
        return None;
    }
    let source = std::error::Error::source(error)?;
    let text: String = source.to_string().lines().next().unwrap_or_default().chars().take(300).collect();
    Some(text)
}

/// Whether rustls raised `error` somewhere down its chain of causes: a handshake
/// or certificate failure, or a certificate that does not parse.
fn is_tls_failure(error: &redis::RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let is_rustls =
        |e: &(dyn std::error::Error + 'static)| e.is::<rustls::Error>() || e.is::<rustls::pki_types::pem::Error>();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(mut current) = cause {
        // The crate keeps its cause behind an `Arc`: look through it.
        if let Some(shared) = current.downcast_ref::<Shared>() {
            current = shared.as_ref();
        }
        if is_rustls(current) {
            return true;
        }
        if let Some(inner) = current.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && is_rustls(inner)
        {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Which part of the exchange failed: the connection (TCP, TLS and the `AUTH` the
/// client sends first) or the `PING` after it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connect,
    Ping,
}

fn classify(target: &RedisTarget, error: &redis::RedisError, stage: Stage) -> RedisProbeError {
    let address = target.address();
    let user = match &target.username {
        Some(user) => format!("user {user}"),
        None => "the default user".into(),
    };
    let server_refused_auth = stage == Stage::Connect && target.password.is_some() && error.code().is_some();
    if error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS") | Some("NOPERM"))
        || server_refused_auth
    {
        // A password was sent and the server said no. Any error reply here may be a
        // renamed or disabled AUTH quoting the password: never its text.
        return RedisProbeError::Auth { address, user, code: shown_code(error) };
    }
    if error.code() == Some("NOAUTH") {
        return RedisProbeError::NoAuth { address };
    }
    if error.kind() == ErrorKind::InvalidClientConfig {
        // Raised by the client before anything is sent (a certificate that does not
        // parse); its detail is our own configuration's problem, never a secret.
        let reason = error.detail().unwrap_or("invalid TLS settings").chars().take(300).collect();
        return RedisProbeError::Settings { reason };
    }
    if let Some(reason) = local_cause(error) {
        return if target.tls.is_some() && is_tls_failure(error) {
            RedisProbeError::Tls { address, reason }
        } else {
            RedisProbeError::Connect { address, reason }
        };
    }
    RedisProbeError::Ping { address, code: shown_code(error) }
}

fn client(target: &RedisTarget) -> Result<Client, RedisProbeError> {
    let settings = |reason: &str| RedisProbeError::Settings { reason: reason.into() };
    let mut redis = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(username) = &target.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &target.password {
        let password = std::str::from_utf8(password)
            .map_err(|_| settings("the Redis password is not UTF-8 text, which the Redis protocol client needs"))?;
        redis = redis.set_password(password);
    }
    let addr = match &target.tls {
        None => ConnectionAddr::Tcp(target.host.clone(), target.port),
        Some(_) => {
            ConnectionAddr::TcpTls { host: target.host.clone(), port: target.port, insecure: false, tls_params: None }
        }
    };
    let info =
        addr.into_connection_info().map_err(|_| settings("the Redis address is not usable"))?.set_redis_settings(redis);
    let built = match &target.tls {
        None => Client::open(info),
        Some(tls) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: tls
                    .client_pair()
                    .map(|(client_cert, client_key)| redis::ClientTlsConfig { client_cert, client_key }),
                root_cert: tls.ca_pem.clone(),
            },
        ),
    };
    built.map_err(|e| classify(target, &e, Stage::Connect))
}

/// Connects to `target`, authenticates when it has a password, and sends PING.
pub async fn ping(target: &RedisTarget, timeout: Duration) -> Result<(), RedisProbeError> {
    let client = client(target)?;
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
    let exchange = async {
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify(target, &e, Stage::Connect))?;
        let reply: String =
            redis::cmd("PING").query_async(&mut connection).await.map_err(|e| classify(target, &e, Stage::Ping))?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(RedisProbeError::Ping { address: target.address(), code: String::new() })
        }
    };
    // The client's own timeouts cover each step; this one bounds the whole exchange.
    match tokio::time::timeout(timeout.saturating_mul(3), exchange).await {
        Ok(result) => result,
        Err(_) => Err(RedisProbeError::Timeout { address: target.address(), timeout }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password_or_key() {
        let target = RedisTarget {
            host: "redis".into(),
            port: 6379,
            tls: Some(TlsMaterial {
                ca_pem: Some(b"CA".to_vec()),
                cert_pem: Some(b"CERT".to_vec()),
                key_pem: Some(b"KEY-s3cret".to_vec()),
            }),
            username: Some("referral".into()),
            password: Some(b"hunter2-s3cret".to_vec()),
        };
        let text = format!("{target:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("referral") && text.contains("<redacted>"), "{text}");
    }

    #[tokio::test]
    async fn a_password_that_is_not_text_is_refused_without_showing_it() {
        let target = RedisTarget {
            host: "127.0.0.1".into(),
            port: 1,
            password: Some(vec![0xff, b's', b'3', b'c']),
            ..RedisTarget::default()
        };
        let error = ping(&target, Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(error.reason(), "InvalidClientSettings");
        assert!(error.to_string().contains("not UTF-8"), "{error}");
    }
}
