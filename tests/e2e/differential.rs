//! `render` and the cluster refuse the same ReferralSystems: every case of
//! `tests/corpus/invalid` goes, as its YAML text, to the real API server (a
//! server-side dry run with `fieldValidation=Strict`, as `kubectl --validate=strict`
//! asks, then a real create when the dry run passes) and, when the API server admits
//! it, to the operator, which must report it in `status`; `render` (run in-process
//! here too) must refuse every one of them. Both must name the field, except where
//! the API server cannot (a case marked `apiserver-unnamed`: `.nan` and `.inf` fail
//! its YAML-to-JSON step before any field is known); render must name it even then.
//!
//! Each case says which layer refuses it (`refused-by`), and that is checked too:
//! `apiserver` cases must be refused by admission, `operator` and `child` cases
//! admitted and then refused by the operator. For a `child` case the operator refuses
//! a value the API server would refuse in a child object; to show the rule is the API
//! server's and not invented, the children are built without the validate step and
//! dry-run applied, and at least one of them must be refused.
//!
//! The cases of `tests/corpus/valid` must pass all of it: admitted, SpecValid, and
//! every child applied.

#[path = "../support/corpus.rs"]
#[allow(dead_code)]
mod corpus;

use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use referral_operator::cli::DEFAULT_OPERATOR_IMAGE;
use referral_operator::crd::ReferralSystem;
use referral_operator::crd::duration::parse_duration;
use referral_operator::crd::validate::{Intervals, ValidatedSystem};
use referral_operator::reconcilers::{BuildContext, build};
use referral_operator::render::{RenderError, RenderOptions, render};
use serde_json::Value;

use crate::chart::{RunningOperator, namespaced_operator_rbac};
use crate::harness::{TestNamespace, client, enabled, install_crd, put_secret, testbed_var};

use corpus::{Case, names_field};

/// How long the operator may take to report one system (the machine is busy).
const REPORT: Duration = Duration::from_secs(120);

/// What the cluster did with a case.
#[derive(Debug)]
enum Verdict {
    /// Admission refused it, with this message.
    Admission(String),
    /// Admitted; the operator reported the spec invalid with this message.
    Operator(String),
    /// Admitted, and the operator found nothing wrong (SpecValid True).
    Accepted(Value),
    /// Admitted, and the operator said nothing in time.
    Silent,
}

fn case_name(number: usize) -> String {
    format!("case-{number:03}")
}

/// The case's text with the system renamed, so every case has its own object.
fn renamed(case: &Case, name: &str) -> String {
    case.text.replacen("name: main", &format!("name: {name}"), 1)
}

/// POST the YAML text as it is: the API server reads it as kubectl's files are read.
async fn post(client: &Client, namespace: &str, text: &str, dry_run: bool) -> Result<(), String> {
    let mut uri = format!("/apis/referral.dev/v1alpha1/namespaces/{namespace}/referralsystems?fieldValidation=Strict");
    if dry_run {
        uri.push_str("&dryRun=All");
    }
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/yaml")
        .body(text.as_bytes().to_vec())
        .unwrap();
    match client.request_text(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(format!("{} {}", status.code, status.message)),
        Err(other) => Err(other.to_string()),
    }
}

async fn get(client: &Client, namespace: &str, name: &str) -> Option<Value> {
    let request =
        http::Request::get(format!("/apis/referral.dev/v1alpha1/namespaces/{namespace}/referralsystems/{name}"))
            .body(Vec::new())
            .unwrap();
    client.request_text(request).await.ok().and_then(|t| serde_json::from_str(&t).ok())
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

async fn verdict(client: &Client, namespace: &str, name: &str, text: &str) -> Verdict {
    if let Err(message) = post(client, namespace, text, true).await {
        return Verdict::Admission(message);
    }
    // A dry run writes nothing to etcd, so its size limit shows only now.
    if let Err(message) = post(client, namespace, text, false).await {
        return Verdict::Admission(message);
    }
    let deadline = tokio::time::Instant::now() + REPORT;
    while tokio::time::Instant::now() < deadline {
        if let Some(object) = get(client, namespace, name).await
            && let Some(spec_valid) = condition(&object, "SpecValid")
        {
            let generation = object["metadata"]["generation"].clone();
            if spec_valid["observedGeneration"] == generation {
                return match spec_valid["status"].as_str() {
                    Some("False") => Verdict::Operator(spec_valid["message"].as_str().unwrap_or_default().to_string()),
                    _ => Verdict::Accepted(object),
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Verdict::Silent
}

fn render_refusal(text: &str, namespace: &str) -> Option<String> {
    let options = RenderOptions {
        default_namespace: namespace.into(),
        context: BuildContext {
            operator_image: DEFAULT_OPERATOR_IMAGE.into(),
            secrets_hash: None,
            operator_pods: None,
        },
    };
    match render(text, &options) {
        Ok(_) => None,
        Err(RenderError::Invalid { problems, .. }) => {
            Some(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        }
        Err(other) => Some(other.to_string()),
    }
}

/// The children the operator would build if it skipped its validate step, each
/// dry-run applied; the refusals, as "Kind name: message".
async fn children_refusals(client: &Client, namespace: &str, name: &str, text: &str) -> Vec<String> {
    let mut value: Value = referral_operator::yaml::from_str(text).expect("a child case reads as YAML");
    referral_operator::yaml::as_kubectl_sends(&mut value);
    let mut system: ReferralSystem = serde_json::from_value(value).expect("a child case decodes");
    system.metadata.name = Some(name.into());
    let lenient = |text: &str, fallback: u64| parse_duration(text).unwrap_or(Duration::from_secs(fallback));
    let spec = system.spec.clone();
    let unchecked = ValidatedSystem {
        name: name.into(),
        namespace: namespace.into(),
        uid: None,
        generation: None,
        intervals: Intervals {
            reward_processing: lenient(&spec.referral.reward_processing_interval, 5),
            queue_cleanup: lenient(&spec.referral.queue_cleanup_interval, 3600),
            cache_ttl: lenient(&spec.referral.cache_ttl, 300),
            index_check: lenient(&spec.mongodb.index_check_interval, 600),
        },
        spec,
    };
    let context =
        BuildContext { operator_image: DEFAULT_OPERATOR_IMAGE.into(), secrets_hash: None, operator_pods: None };
    let mut refusals = Vec::new();
    for object in build(&unchecked, &context).to_json_objects() {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        if api_version.starts_with("monitoring.coreos.com/") {
            continue; // the bed has no prometheus-operator CRDs
        }
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let child = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let plural = format!("{}s", kind.to_lowercase()).replace("policys", "policies");
        let prefix = if api_version == "v1" { "/api/v1".to_string() } else { format!("/apis/{api_version}") };
        let uri = format!(
            "{prefix}/namespaces/{namespace}/{plural}/{child}?dryRun=All&fieldValidation=Strict&fieldManager=referral-e2e&force=true"
        );
        let request = http::Request::patch(uri)
            .header(http::header::CONTENT_TYPE, "application/apply-patch+yaml")
            .body(serde_json::to_vec(&object).unwrap())
            .unwrap();
        match client.request_text(request).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) => refusals.push(format!("{kind} {child}: {}", status.message)),
            Err(other) => panic!("dry-run apply of {kind} {child}: {other}"),
        }
    }
    refusals
}

/// Starts the operator as the chart's ServiceAccount on a fresh namespace.
struct Bed {
    _operator: RunningOperator,
    client: Client,
    ns: TestNamespace,
    _installed: crate::chart::Installed,
    _dir: tempfile::TempDir,
}

async fn bed(prefix: &str) -> Bed {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, prefix).await;
    let dir = tempfile::tempdir().unwrap();
    let release = format!("diff{}", std::process::id() % 100_000);
    let (installed, kubeconfig) = namespaced_operator_rbac(dir.path(), &ns.name, &ns.name, &release);
    put_secret(&client, &ns.name, "referral-mongo", &[("uri", &testbed_var("REFOP_TEST_MONGODB_URI"))]).await;
    let operator = RunningOperator::start_with(
        &kubeconfig,
        dir.path().join("operator.log"),
        &ns.name,
        &format!("{prefix}-0"),
        &[&ns.name],
        "info",
        &["--concurrency=8"],
    );
    Bed { _operator: operator, client, ns, _installed: installed, _dir: dir }
}

#[tokio::test]
async fn render_and_the_cluster_refuse_the_same_specs_naming_the_field() {
    if !enabled() {
        return;
    }
    let bed = bed("diff").await;
    let cases = corpus::invalid_cases();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let results: Vec<Result<String, String>> = futures::stream::iter(cases.into_iter().enumerate())
        .map(|(i, case)| {
            let (client, namespace) = (bed.client.clone(), bed.ns.name.clone());
            async move {
                let name = if case.field.starts_with("metadata.name") { "main".to_string() } else { case_name(i + 1) };
                let text = renamed(&case, &name);
                let what = format!("{} ({})", case.slug, case.why);
                let rendered = render_refusal(&text, &namespace).ok_or_else(|| format!("{what}: render accepted it"))?;
                if !names_field(&rendered, &case.field) && !rendered.contains(&format!("{}:", case.field)) {
                    return Err(format!("{what}: render's refusal does not name {}:\n{rendered}", case.field));
                }
                let verdict = verdict(&client, &namespace, &name, &text).await;
                let message = match (&verdict, case.refused_by.as_str()) {
                    (Verdict::Admission(m), "apiserver") => m.clone(),
                    (Verdict::Operator(m), "operator" | "child") => m.clone(),
                    (other, expected) => {
                        return Err(format!("{what}: expected a refusal by {expected}, the cluster gave {other:?}"));
                    }
                };
                if !case.apiserver_unnamed.is_empty() {
                    // The API server's limit, not ours: render (checked above) names it.
                    if case.refused_by != "apiserver" {
                        return Err(format!("{what}: apiserver-unnamed on a case the API server does not refuse"));
                    }
                } else if !names_field(&message, &case.field) {
                    return Err(format!("{what}: the cluster's refusal does not name {}: {message}", case.field));
                }
                if message.len() > 40_000 {
                    return Err(format!("{what}: a refusal of {} bytes", message.len()));
                }
                if case.refused_by == "child" {
                    let refused = children_refusals(&client, &namespace, &format!("{name}-unchecked"), &text).await;
                    if refused.is_empty() {
                        return Err(format!(
                            "{what}: the operator refuses it for the API server's sake, but the API server takes every child built from it"
                        ));
                    }
                    return Ok(format!("{what}: {message}\n    a child refused: {}", refused[0]));
                }
                Ok(format!("{what}: {message}"))
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    for ok in results.iter().filter_map(|r| r.as_ref().ok()) {
        eprintln!("agreed: {}", ok.chars().take(400).collect::<String>());
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree:\n{}",
        failures.len(),
        results.len(),
        failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n\n")
    );
}

#[tokio::test]
async fn render_and_the_cluster_accept_the_same_odd_specs() {
    if !enabled() {
        return;
    }
    let bed = bed("valid").await;
    let cases = corpus::valid_cases();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = if case.slug == "max-length-names" { "a".repeat(45) } else { format!("valid-{:03}", i + 1) };
        let text = if case.slug == "max-length-names" { case.text.clone() } else { renamed(case, &name) };
        if let Some(refusal) = render_refusal(&text, &bed.ns.name) {
            failures.push(format!("{}: render refused it: {refusal}", case.slug));
            continue;
        }
        match verdict(&bed.client, &bed.ns.name, &name, &text).await {
            Verdict::Accepted(object) => {
                // The operator applied every child it built: nothing failed on the API server.
                let ready = condition(&object, "Ready").cloned().unwrap_or_default();
                if ready["reason"] == "ApplyFailed" {
                    failures.push(format!("{}: a child was refused: {}", case.slug, ready["message"]));
                }
            }
            other => failures.push(format!("{}: {other:?}", case.slug)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
