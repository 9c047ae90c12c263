//! The shell scripts of the backup and restore Jobs, run with `sh` as the pods run
//! them, on temporary directories.
//!
//! Redis is real: a source `redis-server` is snapshotted with the backup Job's
//! script (`redis-cli --rdb`), and a second, live one with other data is restored
//! from that snapshot with the restore Job's script (a throwaway server and one
//! REPLICAOF resync). mongodump and mongorestore are stand-ins: the MongoDB Database
//! Tools are not packaged by Debian nor published on the registries this machine
//! reaches, so the stand-ins check the scripts' side of the contract (arguments,
//! among them the exact TLS options, the config file that carries the URI, the
//! joined client certificate file, what is written where) and nothing of MongoDB.

#[allow(dead_code)]
#[path = "support/certs.rs"]
mod certs;
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use certs::free_port;
use referral_operator::backup::store::{self, FinalizeOptions};
use referral_operator::reconcilers::backup::{MONGODUMP_SCRIPT, REDIS_SNAPSHOT_SCRIPT};
use referral_operator::reconcilers::restore::{MONGORESTORE_SCRIPT, REDIS_RESTORE_SCRIPT};

/// A redis-server on 127.0.0.1 that is stopped when dropped.
struct Redis {
    port: u16,
    password: String,
    child: Child,
}

impl Redis {
    fn start(dir: &Path, password: &str, append_only: bool) -> Redis {
        fs::create_dir_all(dir).unwrap();
        let (child, port) = certs::start_redis_server("redis-server", |port| {
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--requirepass", password])
                .args(["--appendonly", if append_only { "yes" } else { "no" }, "--dir", dir.to_str().unwrap()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start redis-server")
        });
        let redis = Redis { port, password: password.into(), child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server on {port} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .env("REDISCLI_AUTH", &self.password)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sh(script: &str, args: &[&str], env: &[(&str, &str)], path_prefix: Option<&Path>) -> Output {
    let mut command = Command::new("sh");
    command.arg("-c").arg(script).arg("script").args(args).env_remove("REDISCLI_AUTH");
    for (k, v) in env {
        command.env(k, v);
    }
    if let Some(prefix) = path_prefix {
        command.env("PATH", format!("{}:{}", prefix.display(), std::env::var("PATH").unwrap_or_default()));
    }
    command.output().expect("run sh")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn tools_present() -> bool {
    support::tool_or_skip("redis-server", "apt-get install redis-server")
        && support::tool_or_skip("redis-cli", "apt-get install redis-tools")
}

#[test]
fn a_redis_snapshot_taken_by_the_backup_job_is_restored_into_a_live_redis() {
    if !tools_present() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    let work = root.path().join("work");
    let scratch = root.path().join("scratch");
    for dir in [&backups, &work, &scratch] {
        fs::create_dir_all(dir).unwrap();
    }

    let source = Redis::start(&root.path().join("source"), "source-pw", false);
    for i in 0..200 {
        source.cli(&["SET", &format!("ref:user:{i}"), &format!("code-{i}")]);
    }
    source.cli(&["HSET", "ref:stats", "total", "42"]);
    source.cli(&["RPUSH", "ref:queue", "a", "b", "c"]);
    source.cli(&["SET", "ref:session", "x", "EX", "86400"]);

    // The backup Job: the dump step made the folder and the name file.
    let name = "20261123T010000Z";
    fs::create_dir(backups.join(format!("{name}.partial"))).unwrap();
    fs::write(work.join("backup-name"), name).unwrap();
    let port = source.port.to_string();
    let out = sh(
        REDIS_SNAPSHOT_SCRIPT,
        &[],
        &[
            ("BACKUP_DIR", backups.to_str().unwrap()),
            ("WORK_DIR", work.to_str().unwrap()),
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", &port),
            ("REDIS_TLS_FLAG", ""),
            ("REDISCLI_AUTH", "source-pw"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("source-pw"));
    // The MongoDB part is not under test here; a stand-in archive lets finalize run.
    let gzip = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    fs::write(backups.join(format!("{name}.partial/mongodb-referrals.archive.gz")), gzip).unwrap();
    let manifest = store::finalize(
        &backups,
        name,
        &FinalizeOptions { expect_redis: true, completed_at: "2026-11-23T01:05:00Z".parse().unwrap() },
    )
    .expect("finalize");
    assert!(manifest.redis);

    // The live Redis holds other data, and AOF is on as in the managed Redis.
    let live = Redis::start(&root.path().join("live"), "live-pw", true);
    for i in 0..50 {
        live.cli(&["SET", &format!("ref:newer:{i}"), "v"]);
    }
    let live_port = live.port.to_string();
    let restore_port = free_port().to_string();
    let out = sh(
        REDIS_RESTORE_SCRIPT,
        &[],
        &[
            ("BACKUP_DIR", backups.to_str().unwrap()),
            ("BACKUP_NAME", name),
            ("SCRATCH_DIR", scratch.to_str().unwrap()),
            ("RESTORE_PORT", &restore_port),
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", &live_port),
            ("REDIS_TLS_FLAG", ""),
            ("REDISCLI_AUTH", "live-pw"),
            ("POD_IP", "127.0.0.1"),
        ],
        None,
    );
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("the snapshot holds 203 keys"), "{printed}");
    assert!(printed.contains("Redis restored: 203 keys"), "{printed}");

    assert_eq!(live.cli(&["DBSIZE"]), "203");
    assert_eq!(live.cli(&["GET", "ref:user:7"]), "code-7");
    assert_eq!(live.cli(&["HGET", "ref:stats", "total"]), "42");
    assert_eq!(live.cli(&["LRANGE", "ref:queue", "0", "-1"]), "a\nb\nc");
    assert_eq!(live.cli(&["EXISTS", "ref:newer:1"]), "0", "data written after the backup is gone");
    let ttl: i64 = live.cli(&["TTL", "ref:session"]).parse().unwrap();
    assert!(ttl > 80_000, "expiry kept: {ttl}");
    assert!(live.cli(&["ROLE"]).starts_with("master"), "promoted back: {}", live.cli(&["ROLE"]));
    assert_eq!(live.cli(&["CONFIG", "GET", "masterauth"]), "masterauth");
    assert_eq!(live.cli(&["SET", "ref:after", "1"]), "OK", "writable again");
    assert!(std::net::TcpListener::bind(format!("127.0.0.1:{restore_port}")).is_ok(), "the throwaway server is gone");
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "scratch emptied");
    assert_eq!(store::verify(&backups, name).unwrap(), manifest, "the backup itself is unchanged");
}

#[test]
fn a_backup_without_a_redis_snapshot_leaves_redis_alone() {
    if !tools_present() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    fs::create_dir_all(backups.join("20261123T010000Z")).unwrap();
    let live = Redis::start(&root.path().join("live"), "live-pw", false);
    live.cli(&["SET", "keep", "me"]);
    let port = live.port.to_string();
    let out = sh(
        REDIS_RESTORE_SCRIPT,
        &[],
        &[
            ("BACKUP_DIR", backups.to_str().unwrap()),
            ("BACKUP_NAME", "20261123T010000Z"),
            ("SCRATCH_DIR", root.path().to_str().unwrap()),
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", &port),
            ("REDIS_TLS_FLAG", ""),
            ("REDISCLI_AUTH", "live-pw"),
            ("POD_IP", "127.0.0.1"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("holds no Redis snapshot"), "{}", text(&out));
    assert_eq!(live.cli(&["GET", "keep"]), "me");
}

#[test]
fn a_snapshot_that_cannot_be_loaded_fails_before_the_live_redis_is_touched() {
    if !tools_present() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    let folder = backups.join("20261123T010000Z");
    fs::create_dir_all(&folder).unwrap();
    // Not an RDB: the throwaway server cannot load it and exits.
    fs::write(folder.join("redis.rdb"), b"REDIS0011 not really").unwrap();
    let scratch = root.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let live = Redis::start(&root.path().join("live"), "live-pw", false);
    live.cli(&["SET", "keep", "me"]);
    let port = live.port.to_string();
    let restore_port = free_port().to_string();
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["120", "sh", "-c", REDIS_RESTORE_SCRIPT])
        .env("BACKUP_DIR", &backups)
        .env("BACKUP_NAME", "20261123T010000Z")
        .env("SCRATCH_DIR", &scratch)
        .env("RESTORE_PORT", &restore_port)
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", &port)
        .env("REDIS_TLS_FLAG", "")
        .env("REDISCLI_AUTH", "live-pw")
        .env("POD_IP", "127.0.0.1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("could not load the snapshot"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(60), "a dead server is noticed at once");
    assert!(live.cli(&["ROLE"]).starts_with("master"));
    assert_eq!(live.cli(&["GET", "keep"]), "me");
}

/// A stand-in for a MongoDB tool: records its arguments (in `TOOL.log` joined by
/// spaces, in `TOOL.log.argv` each in brackets, so word boundaries show), the
/// config file and the client certificate file it was given with their modes, and
/// writes a gzip stream where mongodump would write its archive.
fn stand_in(dir: &Path, tool: &str) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = dir.join(format!("{tool}.log"));
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "$*" >> "{log}"
printf '[%s]' "$@" >> "{log}.argv"
echo >> "{log}.argv"
for arg in "$@"; do
  case "$arg" in
    --config=*) f="${{arg#--config=}}"; cat "$f" >> "{log}.config"; stat -c '%a' "$f" >> "{log}.mode" ;;
    --sslPEMKeyFile=*) f="${{arg#--sslPEMKeyFile=}}"; cat "$f" >> "{log}.pem"; stat -c '%a' "$f" >> "{log}.pem-mode" ;;
    --archive=*) if [ "{tool}" = mongodump ]; then printf '\037\213\010\000' > "${{arg#--archive=}}"; fi ;;
  esac
done
"#,
        log = log.display()
    );
    let path = bin.join(tool);
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn mongodump_gets_the_uri_from_a_private_file_and_never_on_its_command_line() {
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    let work = root.path().join("work");
    fs::create_dir_all(&backups).unwrap();
    fs::create_dir_all(&work).unwrap();
    let bin = stand_in(root.path(), "mongodump");
    // A fixed clock, so two runs land in the same second.
    fs::write(bin.join("date"), "#!/bin/sh\necho 20261123T010000Z\n").unwrap();
    fs::set_permissions(bin.join("date"), fs::Permissions::from_mode(0o755)).unwrap();
    let uri = "mongodb://backup:s3cret-pass@mongo.example:27017/?authSource=admin";
    let env = [
        ("BACKUP_DIR", backups.to_str().unwrap()),
        ("WORK_DIR", work.to_str().unwrap()),
        ("MONGODB_URI", uri),
        ("MONGODB_DATABASE", "neurolov"),
        ("BACKUP_LABEL", "manual"),
    ];
    let out = sh(MONGODUMP_SCRIPT, &["referrals", "referralTransactions"], &env, Some(&bin));
    assert!(out.status.success(), "{}", text(&out));

    let folder = backups.join("20261123T010000Z-manual.partial");
    assert_eq!(fs::read_to_string(work.join("backup-name")).unwrap(), "20261123T010000Z-manual");
    assert_eq!(fs::read_to_string(folder.join("mongodb-database.txt")).unwrap().trim(), "neurolov");
    assert!(folder.join("mongodb-referrals.archive.gz").is_file());
    assert!(folder.join("mongodb-referralTransactions.archive.gz").is_file());
    let args = fs::read_to_string(root.path().join("mongodump.log")).unwrap();
    assert_eq!(args.lines().count(), 2, "{args}");
    assert!(!args.contains("s3cret"), "the password reached a command line: {args}");
    assert!(args.contains("--collection=referrals") && args.contains("--gzip") && args.contains("--db=neurolov"));
    let config = fs::read_to_string(root.path().join("mongodump.log.config")).unwrap();
    assert!(config.contains(&format!("uri: \"{uri}\"")), "{config}");
    assert_eq!(fs::read_to_string(root.path().join("mongodump.log.mode")).unwrap().lines().next(), Some("600"));
    assert!(!work.join("mongodump.yaml").exists(), "the config file is removed after the dump");
    assert!(!args.contains("--ssl"), "no TLS option without mongodb.tls: {args}");

    // A second run in the same second must not write into the first one's folder.
    let again = sh(MONGODUMP_SCRIPT, &["referrals"], &env, Some(&bin));
    assert!(!again.status.success(), "{}", text(&again));
    assert_eq!(fs::read_to_string(root.path().join("mongodump.log")).unwrap().lines().count(), 2);

    // No collections: the whole database in one archive.
    let env_plain = [env[0], env[1], env[2], env[3]];
    fs::write(bin.join("date"), "#!/bin/sh\necho 20261124T010000Z\n").unwrap();
    let whole = sh(MONGODUMP_SCRIPT, &[], &env_plain, Some(&bin));
    assert!(whole.status.success(), "{}", text(&whole));
    assert!(backups.join("20261124T010000Z.partial/mongodb.archive.gz").is_file());
}

#[test]
fn mongorestore_drops_and_restores_each_archive_into_the_current_database() {
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    let work = root.path().join("work");
    let folder = backups.join("20261123T010000Z");
    fs::create_dir_all(&folder).unwrap();
    fs::create_dir_all(&work).unwrap();
    fs::write(folder.join("mongodb-referrals.archive.gz"), b"x").unwrap();
    fs::write(folder.join("mongodb-referralTransactions.archive.gz"), b"x").unwrap();
    fs::write(folder.join("mongodb-database.txt"), "olddb\n").unwrap();
    let bin = stand_in(root.path(), "mongorestore");
    let uri = "mongodb://restore:s3cret@mongo.example/";
    let env = [
        ("BACKUP_DIR", backups.to_str().unwrap()),
        ("WORK_DIR", work.to_str().unwrap()),
        ("MONGODB_URI", uri),
        ("MONGODB_DATABASE", "neurolov"),
        ("BACKUP_NAME", "20261123T010000Z"),
    ];
    let out = sh(MONGORESTORE_SCRIPT, &[], &env, Some(&bin));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("the backup is of database olddb; restoring into neurolov"), "{}", text(&out));
    let args = fs::read_to_string(root.path().join("mongorestore.log")).unwrap();
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(lines.len(), 2, "{args}");
    for line in &lines {
        for expected in
            ["--drop", "--gzip", "--stopOnError", "--nsInclude=olddb.*", "--nsFrom=olddb.*", "--nsTo=neurolov.*"]
        {
            assert!(line.contains(expected), "{expected} missing from {line}");
        }
        assert!(!line.contains("s3cret"));
        assert!(!line.contains("--ssl"), "no TLS option without mongodb.tls: {line}");
    }
    assert!(!work.join("mongorestore.yaml").exists());

    // Same database: no renaming.
    fs::write(folder.join("mongodb-database.txt"), "neurolov\n").unwrap();
    fs::remove_file(root.path().join("mongorestore.log")).unwrap();
    assert!(sh(MONGORESTORE_SCRIPT, &[], &env, Some(&bin)).status.success());
    let args = fs::read_to_string(root.path().join("mongorestore.log")).unwrap();
    assert!(!args.contains("--nsFrom"), "{args}");

    // Nothing to restore is an error, not a silent success.
    for archive in ["mongodb-referrals.archive.gz", "mongodb-referralTransactions.archive.gz"] {
        fs::remove_file(folder.join(archive)).unwrap();
    }
    let empty = sh(MONGORESTORE_SCRIPT, &[], &env, Some(&bin));
    assert!(!empty.status.success());
    assert!(text(&empty).contains("holds no MongoDB archive"), "{}", text(&empty));
}

/// What a MongoDB tool script run under the stand-in left behind.
struct ToolRun {
    out: Output,
    /// One line per invocation, each argument in brackets.
    argv: String,
    /// The client certificate file as the tool read it, and its mode.
    pem: Option<(String, String)>,
}

/// Runs `script` (the mongodump or the mongorestore one) with the stand-in `tool`
/// on PATH, a backup folder holding one archive, and `tls` added to its environment.
fn run_tool_script(root: &Path, script: &str, tool: &str, args: &[&str], tls: &[(&str, &str)]) -> ToolRun {
    let backups = root.join("backups");
    let work = root.join("work");
    let folder = backups.join("20261123T010000Z");
    fs::create_dir_all(&folder).unwrap();
    fs::create_dir_all(&work).unwrap();
    fs::write(folder.join("mongodb-referrals.archive.gz"), b"x").unwrap();
    let bin = stand_in(root, tool);
    fs::write(bin.join("date"), "#!/bin/sh\necho 20261124T010000Z\n").unwrap();
    fs::set_permissions(bin.join("date"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut env = vec![
        ("BACKUP_DIR", backups.to_str().unwrap()),
        ("WORK_DIR", work.to_str().unwrap()),
        ("MONGODB_URI", "mongodb://backup:s3cret@mongo.example/"),
        ("MONGODB_DATABASE", "neurolov"),
        ("BACKUP_NAME", "20261123T010000Z"),
    ];
    env.extend_from_slice(tls);
    let out = sh(script, args, &env, Some(&bin));
    let log = root.join(format!("{tool}.log"));
    let read = |suffix: &str| fs::read_to_string(format!("{}{suffix}", log.display())).ok();
    let pem = read(".pem").map(|pem| (pem, read(".pem-mode").unwrap_or_default().trim().to_string()));
    let argv = read(".argv").unwrap_or_default();
    for leftover in ["mongodump.yaml", "mongorestore.yaml", "mongodb-client.pem"] {
        assert!(!work.join(leftover).exists(), "{leftover} left in the work directory: {}", text(&out));
    }
    ToolRun { out, argv, pem }
}

/// TLS files as the operator mounts them (made-up PEM: the stand-in only copies it).
fn tls_files(root: &Path) -> (String, String, String) {
    let dir = root.join("tls");
    fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, body: &str| {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_string()
    };
    (
        write("ca.crt", "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"),
        write("tls.crt", "-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n"),
        write("tls.key", "-----BEGIN PRIVATE KEY-----\nclient-key\n-----END PRIVATE KEY-----\n"),
    )
}

#[test]
fn mongodump_connects_over_tls_with_the_mounted_files_only_when_they_are_set() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(root.path());
    let base = |root: &Path| {
        let work = root.join("work");
        let dir = root.join("backups/20261124T010000Z.partial");
        format!(
            "[--config={}/mongodump.yaml][--db=neurolov][--collection=referrals][--archive={}/mongodb-referrals.archive.gz][--gzip]",
            work.display(),
            dir.display()
        )
    };

    // CA and client certificate: --ssl, the CA as is, and the certificate and key
    // joined into one private file (what --sslPEMKeyFile reads), gone afterwards.
    let full = tempfile::tempdir().unwrap();
    let run = run_tool_script(
        full.path(),
        MONGODUMP_SCRIPT,
        "mongodump",
        &["referrals"],
        &[
            ("MONGODB_TLS", "true"),
            ("MONGODB_TLS_CA_FILE", &ca),
            ("MONGODB_TLS_CERT_FILE", &cert),
            ("MONGODB_TLS_KEY_FILE", &key),
        ],
    );
    assert!(run.out.status.success(), "{}", text(&run.out));
    let client_pem = full.path().join("work/mongodb-client.pem");
    assert_eq!(
        run.argv,
        format!("{}[--ssl][--sslCAFile={ca}][--sslPEMKeyFile={}]\n", base(full.path()), client_pem.display())
    );
    let (pem, mode) = run.pem.expect("the tool was given the client certificate file");
    assert_eq!(pem, format!("{}{}", fs::read_to_string(&cert).unwrap(), fs::read_to_string(&key).unwrap()));
    assert_eq!(mode, "600", "the private key is readable by the pod's user alone");
    assert!(!run.argv.contains("BEGIN") && !run.argv.contains("s3cret"), "{}", run.argv);

    // `tls: {}`: MONGODB_TLS=true alone is --ssl with the image's roots.
    let roots = tempfile::tempdir().unwrap();
    let run = run_tool_script(roots.path(), MONGODUMP_SCRIPT, "mongodump", &["referrals"], &[("MONGODB_TLS", "true")]);
    assert!(run.out.status.success(), "{}", text(&run.out));
    assert_eq!(run.argv, format!("{}[--ssl]\n", base(roots.path())));
    assert!(run.pem.is_none());

    // A CA without a client certificate.
    let ca_only = tempfile::tempdir().unwrap();
    let run = run_tool_script(
        ca_only.path(),
        MONGODUMP_SCRIPT,
        "mongodump",
        &["referrals"],
        &[("MONGODB_TLS", "true"), ("MONGODB_TLS_CA_FILE", &ca)],
    );
    assert!(run.out.status.success(), "{}", text(&run.out));
    assert_eq!(run.argv, format!("{}[--ssl][--sslCAFile={ca}]\n", base(ca_only.path())));

    // Without mongodb.tls: no TLS option at all (MONGODB_TLS unset or not "true").
    for tls in [&[][..], &[("MONGODB_TLS", "false")][..]] {
        let plain = tempfile::tempdir().unwrap();
        let run = run_tool_script(plain.path(), MONGODUMP_SCRIPT, "mongodump", &["referrals"], tls);
        assert!(run.out.status.success(), "{}", text(&run.out));
        assert_eq!(run.argv, format!("{}\n", base(plain.path())), "{tls:?}");
    }

    // Half a client certificate is refused before the tool runs, naming the variable.
    let half = tempfile::tempdir().unwrap();
    let run = run_tool_script(
        half.path(),
        MONGODUMP_SCRIPT,
        "mongodump",
        &["referrals"],
        &[("MONGODB_TLS", "true"), ("MONGODB_TLS_CERT_FILE", &cert)],
    );
    assert!(!run.out.status.success());
    assert!(text(&run.out).contains("MONGODB_TLS_KEY_FILE"), "{}", text(&run.out));
    assert_eq!(run.argv, "", "the tool never ran");
}

#[test]
fn mongorestore_connects_over_tls_as_mongodump_does() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(root.path());
    let base = |root: &Path| {
        format!(
            "[--config={}/mongorestore.yaml][--archive={}/mongodb-referrals.archive.gz][--gzip][--drop][--stopOnError][--nsInclude=neurolov.*]",
            root.join("work").display(),
            root.join("backups/20261123T010000Z").display()
        )
    };
    let full = tempfile::tempdir().unwrap();
    let run = run_tool_script(
        full.path(),
        MONGORESTORE_SCRIPT,
        "mongorestore",
        &[],
        &[
            ("MONGODB_TLS", "true"),
            ("MONGODB_TLS_CA_FILE", &ca),
            ("MONGODB_TLS_CERT_FILE", &cert),
            ("MONGODB_TLS_KEY_FILE", &key),
        ],
    );
    assert!(run.out.status.success(), "{}", text(&run.out));
    assert_eq!(
        run.argv,
        format!(
            "{}[--ssl][--sslCAFile={ca}][--sslPEMKeyFile={}]\n",
            base(full.path()),
            full.path().join("work/mongodb-client.pem").display()
        )
    );
    let (pem, mode) = run.pem.expect("the tool was given the client certificate file");
    assert!(pem.contains("client-key") && pem.contains("-----BEGIN CERTIFICATE-----\nclient"), "{pem}");
    assert_eq!(mode, "600");

    let roots = tempfile::tempdir().unwrap();
    let run = run_tool_script(roots.path(), MONGORESTORE_SCRIPT, "mongorestore", &[], &[("MONGODB_TLS", "true")]);
    assert!(run.out.status.success(), "{}", text(&run.out));
    assert_eq!(run.argv, format!("{}[--ssl]\n", base(roots.path())));

    let plain = tempfile::tempdir().unwrap();
    let run = run_tool_script(plain.path(), MONGORESTORE_SCRIPT, "mongorestore", &[], &[]);
    assert!(run.out.status.success(), "{}", text(&run.out));
    assert_eq!(run.argv, format!("{}\n", base(plain.path())));
}
