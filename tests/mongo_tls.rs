//! MongoDB over TLS, against the test bed's MongoDB-wire server behind Debian's
//! stunnel, with certificates made here by `openssl`: the operator's probe and the
//! `check` subcommand (what the chain-check and backup Jobs run) connect with the CA
//! and the client certificate, from Secret bytes or from the files the operator mounts,
//! and fail with a message that says why when the CA is wrong or the certificate is
//! missing.
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
