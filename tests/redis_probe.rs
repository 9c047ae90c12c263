//! The operator's Redis probe against Debian's `redis-server`, started here with
//! real certificates made by `openssl`: TLS with the system's CA, ACL users,
//! mutual TLS, and the failures a person must be told about (wrong password,
//! untrusted CA, no client certificate), none of which may show the password, even
//! when a server with a renamed AUTH echoes it back. Also the managed Redis's start
//! script: the password reaches redis-server through a file, never its command line.

#[allow(dead_code)]
#[path = "support/certs.rs"]
mod certs;
#[path = "support/resp.rs"]
mod resp;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use certs::{TestPki, free_port, start_redis_server};
use referral_operator::checks::redis_probe::{RedisProbeError, RedisTarget, ping};
use referral_operator::checks::tls::TlsMaterial;

const PASSWORD: &str = "s3cret-Pa55 with space";
const TIMEOUT: Duration = Duration::from_secs(3);

/// A redis-server stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_available() -> bool {
    support::tool_or_skip("redis-server", "apt-get install redis-server")
        && support::tool_or_skip("openssl", "apt-get install openssl")
}

/// redis-server with `args` after the common ones; `tls` serves TLS only.
fn start(pki: Option<&TestPki>, args: &[&str]) -> Redis {
    let (child, port) = start_redis_server("redis-server", |port| {
        let mut command = Command::new("redis-server");
        command.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--daemonize", "no"]);
        match pki {
            Some(pki) => {
                command.args(["--port", "0", "--tls-port", &port.to_string()]);
                command.arg("--tls-cert-file").arg(&pki.server_cert);
                command.arg("--tls-key-file").arg(&pki.server_key);
                command.arg("--tls-ca-cert-file").arg(&pki.ca_cert);
                command.args(["--tls-auth-clients", "optional"]);
            }
            None => {
                command.args(["--port", &port.to_string()]);
            }
        }
        command.args(args);
        command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start redis-server")
    });
    Redis { child, port }
}

/// The ACL user `referral` with [`PASSWORD`], and `default` switched off.
const ACL_USER: [&str; 14] = [
    "--user",
    "referral",
    "on",
    ">s3cret-Pa55 with space",
    "~*",
    "&*",
    "+@all",
    "--user",
    "default",
    "off",
    "nopass",
    "~*",
    "&*",
    "+@all",
];

fn material(pki: &TestPki, ca: &std::path::Path, client: bool) -> TlsMaterial {
    TlsMaterial {
        ca_pem: Some(TestPki::read(ca)),
        cert_pem: client.then(|| TestPki::read(&pki.client_cert)),
        key_pem: client.then(|| TestPki::read(&pki.client_key)),
    }
}

fn target(redis: &Redis, tls: Option<TlsMaterial>, username: Option<&str>, password: Option<&str>) -> RedisTarget {
    RedisTarget {
        host: "127.0.0.1".into(),
        port: redis.port,
        tls,
        username: username.map(Into::into),
        password: password.map(|p| p.as_bytes().to_vec()),
    }
}

fn assert_no_secret(error: &RedisProbeError) {
    let text = format!("{error} {error:?}");
    for piece in ["s3cret", "Pa55", "wrong-guess"] {
        assert!(!text.contains(piece), "the error shows a piece of a password: {text}");
    }
}

#[tokio::test]
async fn auth_and_ping_over_tls_with_the_ca_and_an_acl_user() {
    if !redis_available() {
        return;
    }
    let pki = certs::make();
    let redis = start(Some(&pki), &ACL_USER);
    let good = target(&redis, Some(material(&pki, &pki.ca_cert, false)), Some("referral"), Some(PASSWORD));
    ping(&good, TIMEOUT).await.expect("TLS, AUTH referral, PING");

    let wrong = target(&redis, Some(material(&pki, &pki.ca_cert, false)), Some("referral"), Some("wrong-guess"));
    let error = ping(&wrong, TIMEOUT).await.unwrap_err();
    assert_eq!(error.reason(), "AuthenticationFailed", "{error}");
    assert!(error.to_string().contains("user referral"), "{error}");
    assert_no_secret(&error);

    // The default user is off: no password is no way in.
    let anonymous = target(&redis, Some(material(&pki, &pki.ca_cert, false)), None, None);
    let error = ping(&anonymous, TIMEOUT).await.unwrap_err();
    assert!(matches!(error.reason(), "PasswordRequired" | "AuthenticationFailed"), "{error}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_fails_the_handshake() {
    if !redis_available() {
        return;
    }
    let pki = certs::make();
    let redis = start(Some(&pki), &ACL_USER);
    let untrusted = target(&redis, Some(material(&pki, &pki.other_ca_cert, false)), Some("referral"), Some(PASSWORD));
    let error = ping(&untrusted, TIMEOUT).await.unwrap_err();
    assert_eq!(error.reason(), "TLSHandshakeFailed", "{error}");
    assert!(error.to_string().contains("certificate"), "the message says what failed: {error}");
    assert_no_secret(&error);
    // Plain TCP to a TLS port does not get a PONG either.
    let plain = target(&redis, None, Some("referral"), Some(PASSWORD));
    assert!(ping(&plain, TIMEOUT).await.is_err());
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    if !redis_available() {
        return;
    }
    let pki = certs::make();
    let mut args = ACL_USER.to_vec();
    args.extend(["--tls-auth-clients", "yes"]);
    let redis = start(Some(&pki), &args);
    let without = target(&redis, Some(material(&pki, &pki.ca_cert, false)), Some("referral"), Some(PASSWORD));
    let error = ping(&without, TIMEOUT).await.unwrap_err();
    assert!(matches!(error.reason(), "TLSHandshakeFailed" | "Unreachable"), "{error}");
    assert_no_secret(&error);
    let with = target(&redis, Some(material(&pki, &pki.ca_cert, true)), Some("referral"), Some(PASSWORD));
    ping(&with, TIMEOUT).await.expect("the client certificate is accepted");
}

#[tokio::test]
async fn a_renamed_auth_that_echoes_its_arguments_never_reaches_the_message() {
    if !redis_available() {
        return;
    }
    // No AUTH command: the server answers "unknown command 'AUTH', with args
    // beginning with: 'referral' 's3cret-Pa55 with space'".
    let redis = start(None, &["--rename-command", "AUTH", ""]);
    let echoing = target(&redis, None, Some("referral"), Some(PASSWORD));
    let error = ping(&echoing, TIMEOUT).await.unwrap_err();
    assert_eq!(error.reason(), "AuthenticationFailed", "{error}");
    assert_no_secret(&error);
    // The server really does echo it: the same exchange by hand shows the password.
    let reply = resp::raw_exchange(redis.port, &["AUTH", "referral", PASSWORD], TIMEOUT);
    assert!(reply.contains("s3cret"), "this test needs a server that echoes: {reply:?}");
}

#[tokio::test]
async fn plain_tcp_with_a_password_and_without_one() {
    if !redis_available() {
        return;
    }
    let redis = start(None, &["--requirepass", PASSWORD]);
    ping(&target(&redis, None, None, Some(PASSWORD)), TIMEOUT).await.expect("AUTH and PING");
    let error = ping(&target(&redis, None, None, None), TIMEOUT).await.unwrap_err();
    assert_eq!(error.reason(), "PasswordRequired", "{error}");
    let closed = RedisTarget { host: "127.0.0.1".into(), port: free_port(), ..RedisTarget::default() };
    assert_eq!(ping(&closed, TIMEOUT).await.unwrap_err().reason(), "Unreachable");
}

/// The flake this guards against: another process takes the free port between its
/// choosing and redis-server binding it. The server that exits for it is replaced on
/// another port, and the one returned is this test's own (it wants this password).
#[tokio::test]
async fn a_port_taken_before_redis_server_binds_it_is_replaced_by_another() {
    if !redis_available() {
        return;
    }
    let mut taken = Vec::new();
    let (child, port) = start_redis_server("redis-server", |port| {
        if taken.is_empty() {
            // Someone else's server, there first.
            taken.push(std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the port"));
        }
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", PASSWORD])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start redis-server")
    });
    let redis = Redis { child, port };
    assert_ne!(port, taken[0].local_addr().unwrap().port(), "the taken port was not replaced");
    ping(&target(&redis, None, None, Some(PASSWORD)), TIMEOUT).await.expect("AUTH and PING on the new port");
}

/// The managed Redis's start script, run as the pod runs it (`sh -c`), with the
/// Secret's key as a file: the password works, and it is on no command line.
#[tokio::test]
async fn the_managed_redis_gets_its_password_from_a_file_never_from_argv() {
    if !redis_available() {
        return;
    }
    use referral_operator::reconcilers::redis::START_SCRIPT;
    for username in [None, Some("referral")] {
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("password");
        // Quotes, a space, a hash and a newline-free tail: what a shell or a
        // config parser would mangle.
        let password = "p@ss w'rd\"#$(x)-s3cret";
        std::fs::write(&password_file, password).unwrap();
        let conf = dir.path().join("redis.conf");
        let (child, port) = start_redis_server("the managed Redis start script", |port| {
            std::fs::write(
                &conf,
                format!("port {port}\nbind 127.0.0.1\nprotected-mode yes\nsave \"\"\nappendonly no\n"),
            )
            .unwrap();
            let mut command = Command::new("sh");
            command
                .args(["-c", START_SCRIPT])
                .env("REDIS_PASSWORD_FILE", &password_file)
                .env("REDIS_ACL_FILE", dir.path().join("users.acl"))
                .env("REDIS_CONFIG_FILE", &conf);
            if let Some(user) = username {
                command.env("REDIS_USERNAME", user);
            }
            command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap()
        });
        let redis = Redis { child, port };

        let cmdline = std::fs::read(format!("/proc/{}/cmdline", redis.child.id())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(cmdline.contains("redis-server"), "exec replaced the shell: {cmdline:?}");
        assert!(!cmdline.contains("s3cret"), "the password is on the command line: {cmdline:?}");
        let acl = std::fs::read_to_string(dir.path().join("users.acl")).unwrap();
        assert!(!acl.contains("s3cret"), "the ACL file holds a hash, not the password: {acl}");

        let good = RedisTarget {
            host: "127.0.0.1".into(),
            port,
            username: username.map(Into::into),
            password: Some(password.as_bytes().to_vec()),
            ..RedisTarget::default()
        };
        ping(&good, TIMEOUT).await.expect("the password from the file works");
        let wrong = RedisTarget { password: Some(b"wrong-guess".to_vec()), ..good.clone() };
        assert_eq!(ping(&wrong, TIMEOUT).await.unwrap_err().reason(), "AuthenticationFailed");
        if username.is_some() {
            let default = RedisTarget { username: None, ..good.clone() };
            assert!(ping(&default, TIMEOUT).await.is_err(), "the default user is off when a user is named");
        }
    }
    // An empty password file stops the start with a message.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), "").unwrap();
    let output = Command::new("sh")
        .args(["-c", START_SCRIPT])
        .env("REDIS_PASSWORD_FILE", dir.path().join("password"))
        .env("REDIS_ACL_FILE", dir.path().join("users.acl"))
        .env("REDIS_CONFIG_FILE", dir.path().join("none.conf"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is empty"));
}
