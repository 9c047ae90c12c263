//! MongoDB over TLS, against the test bed's MongoDB-wire server behind Debian's
//! stunnel, with certificates made here by `openssl`: the operator's probe and the
//! `check` subcommand (what the chain-check and backup Jobs run) connect with the CA
//! and the client certificate, from Secret bytes or from the files the operator mounts,
//! and fail with a message that says why when the CA is wrong or the certificate is
//! missing; and the native `backup dump`, `verify`, `restore` and `drill` (what the
//! backup CronJob, the restore Job and the restore drill run) move real documents over
//! mutual TLS with the files the operator mounts, and get nowhere without them.
//!
//! Needs `REFOP_TEST_MONGODB_URI` (the test bed); REFOP_SKIP_E2E=1 skips.

#[allow(dead_code)]
#[path = "support/certs.rs"]
mod certs;
mod support;

use std::time::Duration;

use certs::{Stunnel, TestPki};
use referral_operator::checks::mongo_probe::MongoClients;
use referral_operator::checks::tls::TlsMaterial;

const BINARY: &str = env!("CARGO_BIN_EXE_referral-operator");

/// `host:port` of the test bed's MongoDB-wire server, or `None` to skip.
fn backend() -> Option<String> {
    if std::env::var("REFOP_SKIP_E2E").as_deref() == Ok("1") {
        eprintln!("SKIPPED: needs the test bed's MongoDB-wire server (REFOP_SKIP_E2E=1)");
        return None;
    }
    let uri = std::env::var("REFOP_TEST_MONGODB_URI").unwrap_or_else(|_| {
        panic!(
            "REFOP_TEST_MONGODB_URI is not set: start the test bed with `tests/e2e/testbed.sh start DIR` and \
             `source DIR/env`, or set REFOP_SKIP_E2E=1 to skip"
        )
    });
    if !support::tool_or_skip("stunnel", "apt-get install stunnel4")
        || !support::tool_or_skip("openssl", "apt-get install openssl")
    {
        return None;
    }
    Some(uri.trim_start_matches("mongodb://").trim_end_matches('/').to_string())
}

fn material(ca: &std::path::Path, pki: &TestPki, client: bool) -> TlsMaterial {
    TlsMaterial {
        ca_pem: Some(TestPki::read(ca)),
        cert_pem: client.then(|| TestPki::read(&pki.client_cert)),
        key_pem: client.then(|| TestPki::read(&pki.client_key)),
    }
}

#[tokio::test]
async fn the_probe_pings_over_mutual_tls_and_says_why_it_cannot() {
    let Some(backend) = backend() else { return };
    let pki = certs::make();
    let tunnel = Stunnel::start(&pki, &backend, true);
    let uri = format!("mongodb://127.0.0.1:{}/", tunnel.port);
    let timeout = Duration::from_secs(3);

    MongoClients::default()
        .ping(&uri, Some(&material(&pki.ca_cert, &pki, true)), timeout)
        .await
        .expect("ping over TLS with the CA and the client certificate");

    let wrong_ca =
        MongoClients::default().ping(&uri, Some(&material(&pki.other_ca_cert, &pki, true)), timeout).await.unwrap_err();
    assert_eq!(wrong_ca.reason(), "Unreachable", "{wrong_ca}");
    assert!(wrong_ca.to_string().to_lowercase().contains("certificate"), "says why: {wrong_ca}");

    let no_client_certificate =
        MongoClients::default().ping(&uri, Some(&material(&pki.ca_cert, &pki, false)), timeout).await;
    assert!(no_client_certificate.is_err(), "stunnel requires a client certificate");

    // Plain TCP to the TLS port gets nowhere either: TLS is really in the path.
    assert!(MongoClients::default().ping(&uri, None, timeout).await.is_err());
}

#[test]
fn the_check_command_reads_the_mounted_files_named_by_the_environment() {
    let Some(backend) = backend() else { return };
    let pki = certs::make();
    let tunnel = Stunnel::start(&pki, &backend, true);
    let uri = format!("mongodb://127.0.0.1:{}/", tunnel.port);
    let database = format!("it_tls_{}", std::process::id());
    let run = |ca: &std::path::Path, with_client: bool| {
        let mut command = std::process::Command::new(BINARY);
        command
            .args(["check", "indexes", "--database", &database, "--timeout", "3", "--policy", "report"])
            .env("MONGODB_URI", &uri)
            .env("MONGODB_TLS", "true")
            .env("MONGODB_TLS_CA_FILE", ca)
            .env_remove("MONGODB_TLS_CERT_FILE")
            .env_remove("MONGODB_TLS_KEY_FILE");
        if with_client {
            command.env("MONGODB_TLS_CERT_FILE", &pki.client_cert).env("MONGODB_TLS_KEY_FILE", &pki.client_key);
        }
        command.output().unwrap()
    };
    let out = run(&pki.ca_cert, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0 (all in place) or 1 (missing, under Report): either way it ran against the server.
    assert!(matches!(out.status.code(), Some(0 | 1)), "exit {:?}: {stderr}", out.status.code());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert!(report["summary"].is_string(), "{report}");

    let out = run(&pki.other_ca_cert, true);
    assert_eq!(out.status.code(), Some(2), "an untrusted server is an error, not a finding");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // Half a client certificate is a configuration error, said before connecting.
    let out = std::process::Command::new(BINARY)
        .args(["check", "indexes", "--database", &database, "--timeout", "3"])
        .env("MONGODB_URI", &uri)
        .env("MONGODB_TLS_CERT_FILE", &pki.client_cert)
        .env_remove("MONGODB_TLS_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MONGODB_TLS_KEY_FILE"), "names what is missing");
}

/// The binary as a backup, restore or drill pod would run it, against `uri`, with the
/// MONGODB_TLS_* variables the operator sets when `with_tls` (and none otherwise).
fn native(uri: &str, pki: &TestPki, with_tls: bool, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(BINARY);
    command.args(args).env("MONGODB_URI", uri);
    for var in
        ["MONGODB_TLS", "MONGODB_TLS_CA_FILE", "MONGODB_TLS_CERT_FILE", "MONGODB_TLS_KEY_FILE", "MONGODB_DATABASE"]
    {
        command.env_remove(var);
    }
    if with_tls {
        command
            .env("MONGODB_TLS", "true")
            .env("MONGODB_TLS_CA_FILE", &pki.ca_cert)
            .env("MONGODB_TLS_CERT_FILE", &pki.client_cert)
            .env("MONGODB_TLS_KEY_FILE", &pki.client_key);
    }
    command
}

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn native_dump_verify_restore_and_drill_run_over_mutual_tls_and_not_without_it() {
    use mongodb::bson::{Document, doc};
    let Some(backend) = backend() else { return };
    let pki = certs::make();
    let tunnel = Stunnel::start(&pki, &backend, true);
    let uri = format!("mongodb://127.0.0.1:{}/", tunnel.port);
    // The data is seeded and compared over the bed's plain port: only the commands
    // under test go through the tunnel.
    let plain = mongodb::Client::with_uri_str(format!("mongodb://{backend}/")).await.unwrap();
    let database = format!("it_tls_backup_{}", std::process::id());
    let scratch = format!("{database}_drill");
    let db = plain.database(&database);
    db.drop().await.unwrap();
    let users: Vec<Document> =
        (0..300).map(|i| doc! {"_id": i, "referralCode": format!("R{i}"), "referredBy": i / 2}).collect();
    db.collection::<Document>("users").insert_many(&users).await.unwrap();
    let referrals: Vec<Document> = (0..50).map(|i| doc! {"_id": i, "amount": i * 3}).collect();
    db.collection::<Document>("referrals").insert_many(&referrals).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().to_str().unwrap();
    let name_file = dir.path().join("name");
    let dump =
        ["backup", "dump", "--dir", backups, "--database", &database, "--name-file", name_file.to_str().unwrap()];

    let out = native(&uri, &pki, true, &dump).output().unwrap();
    assert!(out.status.success(), "dump over TLS: {}", text(&out));
    let name = std::fs::read_to_string(&name_file).unwrap().trim().to_string();
    let out = native(&uri, &pki, false, &["backup", "verify", "--dir", backups, "--name", &name]).output().unwrap();
    assert!(out.status.success(), "verify reads files only: {}", text(&out));

    // Without the files each command waits out server selection (30 s) and fails:
    // all three at once, so the test waits once.
    let drill = ["backup", "drill", "--dir", backups, "--database", &database, "--scratch-database", &scratch];
    let restore = ["backup", "restore", "--dir", backups, "--name", &name, "--database", &database];
    let other = tempfile::tempdir().unwrap();
    let other_dump = ["backup", "dump", "--dir", other.path().to_str().unwrap(), "--database", &database];
    let without: Vec<_> = [&other_dump[..], &drill[..], &restore[..]]
        .into_iter()
        .map(|args| {
            native(&uri, &pki, false, args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let without: Vec<_> = without.into_iter().map(|child| child.wait_with_output().unwrap()).collect();
    assert!(
        !without[0].status.success(),
        "a dump without the TLS files must not reach the server: {}",
        text(&without[0])
    );
    assert!(
        std::fs::read_dir(other.path()).unwrap().all(|e| !e.unwrap().path().join("complete.json").exists()),
        "no complete backup from a dump that reached nothing"
    );
    assert_eq!(without[1].status.code(), Some(1), "a drill that cannot reach MongoDB fails: {}", text(&without[1]));
    assert!(
        !without[2].status.success(),
        "a restore without the TLS files must not reach the server: {}",
        text(&without[2])
    );
    assert_eq!(db.collection::<Document>("users").count_documents(doc! {}).await.unwrap(), 300, "nothing dropped");

    // The drill restores into the scratch database over TLS and drops it.
    let out = native(&uri, &pki, true, &drill).output().unwrap();
    assert!(out.status.success(), "drill over TLS: {}", text(&out));
    assert!(text(&out).contains("350"), "the drill counted the 350 documents: {}", text(&out));
    assert!(!plain.list_database_names().await.unwrap().contains(&scratch), "the scratch database is dropped");

    db.drop().await.unwrap();
    let out = native(&uri, &pki, true, &restore).output().unwrap();
    assert!(out.status.success(), "restore over TLS: {}", text(&out));
    let mut restored = Vec::new();
    let mut cursor = db.collection::<Document>("users").find(doc! {}).sort(doc! {"_id": 1}).await.unwrap();
    while cursor.advance().await.unwrap() {
        restored.push(cursor.deserialize_current().unwrap());
    }
    assert_eq!(restored, users, "every user came back over TLS");
    assert_eq!(db.collection::<Document>("referrals").count_documents(doc! {}).await.unwrap(), 50);
    db.drop().await.unwrap();
}
