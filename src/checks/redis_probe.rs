//! Is Redis there and does it take our password? One connection, `AUTH` when a
//! password is given, `PING`, under a deadline. Speaks just enough RESP for that.
//!
//! Errors never contain the password: a refused AUTH is reported as such, with the
//! server's error kind, not the command we sent.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Why Redis did not answer PING.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisProbeError {
    #[error("cannot connect to Redis at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("Redis at {address} refused the password: {reason}")]
    Auth { address: String, reason: String },
    #[error("Redis at {address} needs a password and none is configured (set spec.redis.passwordSecretRef)")]
    NoAuth { address: String },
    #[error("Redis at {address} answered PING with an error: {reason}")]
    Ping { address: String, reason: String },
    #[error("Redis at {address} did not answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
}

impl RedisProbeError {
    /// Short reason for a status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "Unreachable",
            Self::Auth { .. } => "AuthenticationFailed",
            Self::NoAuth { .. } => "PasswordRequired",
            Self::Ping { .. } => "PingFailed",
            Self::Timeout { .. } => "Timeout",
        }
    }
}

/// Connects to `host:port`, authenticates when `password` is given, and sends PING.
pub async fn ping(host: &str, port: u16, password: Option<&[u8]>, timeout: Duration) -> Result<(), RedisProbeError> {
    let address = format!("{host}:{port}");
    match tokio::time::timeout(timeout, exchange(&address, password)).await {
        Ok(result) => result,
        Err(_) => Err(RedisProbeError::Timeout { address, timeout }),
    }
}

async fn exchange(address: &str, password: Option<&[u8]>) -> Result<(), RedisProbeError> {
    let connect = |reason: String| RedisProbeError::Connect { address: address.to_string(), reason };
    let stream = TcpStream::connect(address).await.map_err(|e| connect(e.to_string()))?;
    let mut stream = BufReader::new(stream);
    if let Some(password) = password {
        send(&mut stream, &[b"AUTH", password]).await.map_err(|e| connect(e.to_string()))?;
        let reply = read_line(&mut stream).await.map_err(|e| connect(e.to_string()))?;
        if !reply.starts_with('+') {
            return Err(RedisProbeError::Auth { address: address.to_string(), reason: error_kind(&reply) });
        }
    }
    send(&mut stream, &[b"PING"]).await.map_err(|e| connect(e.to_string()))?;
    let reply = read_line(&mut stream).await.map_err(|e| connect(e.to_string()))?;
    if reply == "+PONG" {
        Ok(())
    } else if reply.starts_with("-NOAUTH") {
        Err(RedisProbeError::NoAuth { address: address.to_string() })
    } else {
        Err(RedisProbeError::Ping { address: address.to_string(), reason: error_kind(&reply) })
    }
}

/// The error line without anything that could echo input back.
fn error_kind(reply: &str) -> String {
    reply.trim_start_matches('-').chars().take(120).collect()
}

async fn send(stream: &mut BufReader<TcpStream>, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut frame = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        frame.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        frame.extend_from_slice(part);
        frame.extend_from_slice(b"\r\n");
    }
    stream.get_mut().write_all(&frame).await
}

async fn read_line(stream: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    let read = stream.read_line(&mut line).await?;
    if read == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    Ok(line.trim_end().to_string())
}
