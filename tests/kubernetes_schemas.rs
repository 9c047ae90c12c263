//! Every built-in object `render` produces validates, in strict mode (no unknown
//! fields), against the Kubernetes OpenAPI schemas of the release the operator
//! targets, using the `kubernetes-validate` tool. Custom resources (PrometheusRule,
//! ServiceMonitor) are skipped by that tool; the e2e suite checks them by server
//! dry-run.

mod support;

use std::process::Command;

use referral_operator::cli::DEFAULT_OPERATOR_IMAGE;
use referral_operator::reconcilers::BuildContext;
use referral_operator::render::{RenderOptions, render};

/// Kubernetes minor release the schemas come from (matches k8s-openapi's feature).
const KUBERNETES_VERSION: &str = "1.35.0";

fn validate_example(example: &str) {
    if !support::tool_or_skip("kubernetes-validate", "pip install kubernetes-validate") {
        return;
    }
    let input = std::fs::read_to_string(format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let options = RenderOptions {
        default_namespace: "default".into(),
        context: BuildContext {
            operator_image: DEFAULT_OPERATOR_IMAGE.into(),
            secrets_hash: Some("0123456789".into()),
            operator_pods: None,
        },
    };
    let rendered = render(&input, &options).unwrap();
    let builtin: Vec<&str> = rendered
        .split("---\n")
        .filter(|doc| !doc.trim().is_empty() && !doc.contains("apiVersion: monitoring.coreos.com/"))
        .collect();
    assert!(builtin.len() >= 10, "expected the example to render at least 10 built-in objects");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rendered.yaml");
    std::fs::write(&path, builtin.iter().map(|d| format!("---\n{d}")).collect::<String>()).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn", "-k", KUBERNETES_VERSION])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubernetes-validate refused {example}:\n{stdout}\n{stderr}");
    let passed = stdout.lines().filter(|l| l.contains(" passed for resource ")).count();
    assert_eq!(passed, builtin.len(), "every object must be checked, not skipped:\n{stdout}");
}

#[test]
fn minimal_example_objects_match_the_kubernetes_schemas() {
    validate_example("minimal.yaml");
}

#[test]
fn full_example_objects_match_the_kubernetes_schemas() {
    validate_example("full.yaml");
}
