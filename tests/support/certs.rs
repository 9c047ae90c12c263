//! Real certificates for the TLS tests, made with `openssl` in a temporary
//! directory: a CA, a server certificate for 127.0.0.1 and localhost, a client
//! certificate, and a second CA that signed nothing the servers present.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of one test PKI; removed with the directory.
pub struct TestPki {
    _dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed neither the server's nor the client's certificate.
    pub other_ca_cert: PathBuf,
}

impl TestPki {
    pub fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
}

fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn leaf(dir: &Path, name: &str, common_name: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={common_name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// Makes a fresh PKI.
pub fn make() -> TestPki {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    ca(&path, "ca");
    ca(&path, "other-ca");
    leaf(
        &path,
        "server",
        "localhost",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    );
    leaf(
        &path,
        "client",
        "referral-operator",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    TestPki {
        ca_cert: path.join("ca.crt"),
        server_cert: path.join("server.crt"),
        server_key: path.join("server.key"),
        client_cert: path.join("client.crt"),
        client_key: path.join("client.key"),
        other_ca_cert: path.join("other-ca.crt"),
        _dir: dir,
    }
}

/// A port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What Debian's redis-server (7.0; 7.2 adds ` tcp`) logs once it listens.
const REDIS_READY: &str = "Ready to accept connections";
/// What it logs, before exiting, when its port was taken.
const REDIS_PORT_TAKEN: &str = "Address already in use";

/// Starts a redis-server on a free port of 127.0.0.1 and waits until it logs that it
/// is ready. `spawn` starts it listening on the port it is given, with its stdout
/// (its log) piped. Choosing a free port and binding it are two steps, and another
/// process (another test's redis-server) can take the port in between: then this
/// one exits, and waiting for the port would wait for that other server, which
/// answers for a while and then refuses. So the log says which server is ours, and a
/// port taken in between is replaced by another.
pub fn start_redis_server(what: &str, mut spawn: impl FnMut(u16) -> std::process::Child) -> (std::process::Child, u16) {
    use std::io::BufRead;
    for _ in 0..5 {
        let port = free_port();
        let mut child = spawn(port);
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("{what}: its stdout must be piped"));
        let (lines, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end even after it is ready, so it never blocks on a full pipe.
            let mut ready = false;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if !ready {
                    ready = line.contains(REDIS_READY);
                    let _ = lines.send(line);
                }
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if line.contains(REDIS_READY) => return (child, port),
                Ok(line) => seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{what} did not get ready on port {port} within 15 s; its log:\n{}", seen.join("\n"));
                }
            }
        }
        let status = child.wait();
        assert!(
            seen.iter().any(|l| l.contains(REDIS_PORT_TAKEN)),
            "{what} exited ({status:?}) before it was ready on port {port}; its log:\n{}",
            seen.join("\n")
        );
    }
    panic!("{what}: five free ports in a row were taken before it could listen");
}

/// Debian's redis-server on a free port, configured by `config(port)` on its stdin (no
/// file: a password in the config never reaches the disk or the process list), ready
/// once [`start_redis_server`] says so.
pub fn start_redis_server_with_config(what: &str, config: impl Fn(u16) -> String) -> (std::process::Child, u16) {
    use std::io::Write;
    start_redis_server(what, |port| {
        let mut child = std::process::Command::new("redis-server")
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{what}: redis-server is needed (tests/e2e/testbed.sh install puts it there): {e}")
            });
        child.stdin.take().unwrap().write_all(config(port).as_bytes()).unwrap();
        child
    })
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Debian's stunnel terminating TLS in front of a plain TCP server (the test bed's
/// MongoDB-wire server), with the PKI's server certificate; stopped when dropped.
pub struct Stunnel {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Stunnel {
    /// Listens on a free port of 127.0.0.1 and forwards to `backend` (`host:port`).
    /// With `require_client_certificate`, only clients with a certificate signed by
    /// the PKI's CA get through (mutual TLS).
    pub fn start(pki: &TestPki, backend: &str, require_client_certificate: bool) -> Stunnel {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut conf = format!(
            "foreground = yes\npid =\nsyslog = no\noutput = {}\n[tls]\naccept = 127.0.0.1:{port}\nconnect = {backend}\ncert = {}\nkey = {}\n",
            dir.path().join("stunnel.log").display(),
            pki.server_cert.display(),
            pki.server_key.display(),
        );
        if require_client_certificate {
            conf.push_str(&format!("CAfile = {}\nverifyChain = yes\nrequireCert = yes\n", pki.ca_cert.display()));
        }
        let path = dir.path().join("stunnel.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("stunnel")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start stunnel (Debian package stunnel4)");
        let tunnel = Stunnel { child, port, _dir: dir };
        wait_for_port(port, "stunnel");
        tunnel
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
