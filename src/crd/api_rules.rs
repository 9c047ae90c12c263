//! The API server's own rules for values a ReferralSystem carries into the objects
//! the operator builds (environment variables, resource requirements) and for its
//! own metadata, written out here so `render` and the validate step refuse what the
//! API server would refuse when the child is applied, with the field of the
//! ReferralSystem that holds the value. Each rule names the Kubernetes function it
//! follows (k8s.io/kubernetes `pkg/apis/core/validation`, apimachinery
//! `pkg/util/validation`, v1.35); `tests/e2e/differential.rs` holds them against a
//! real API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::common::quoted;
use super::quantity::{Format, Quantity, parse_quantity, parse_quantity_json};
use super::validate::SpecProblem;

/// `IsDNS1123Label`: at most 63 lower-case letters, digits and '-', starting and
/// ending with a letter or digit.
pub fn is_dns1123_label(value: &str) -> bool {
    value.len() <= 63
        && !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// `IsDNS1123Subdomain`: at most 253 characters of dot-separated parts of lower-case
/// letters, digits and '-', each starting and ending with a letter or digit. Like
/// apimachinery's regular expression, it does not hold a part to 63 characters.
pub fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// The name part of a qualified name and a non-empty label value: at most 63
/// letters, digits, '-', '_' or '.', starting and ending with a letter or digit.
fn is_name_part(value: &str) -> bool {
    value.len() <= 63
        && !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `IsQualifiedName`: a name part with an optional DNS-subdomain prefix and '/'
/// (label keys, annotation keys, finalizers, resource names).
pub fn is_qualified_name(value: &str) -> bool {
    match value.split_once('/') {
        Some((prefix, name)) => !prefix.is_empty() && is_dns1123_subdomain(prefix) && is_name_part(name),
        None => is_name_part(value),
    }
}

/// `IsValidLabelValue`: empty, or a name part.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_name_part(value)
}

/// `IsConfigMapKey`: letters, digits, '-', '_' and '.', at most 253, not `.`, `..`
/// or starting with `..`.
pub fn is_config_map_key(value: &str) -> bool {
    value.len() <= 253
        && !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !value.starts_with("..")
        && value != "."
}

/// What a label key, label value or name must look like, for messages.
pub const QUALIFIED_NAME_RULE: &str = "an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (e.g. app.kubernetes.io/name)";
pub const LABEL_VALUE_RULE: &str =
    "empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
pub const DNS_LABEL_RULE: &str =
    "at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit";
pub const DNS_SUBDOMAIN_RULE: &str = "at most 253 characters of lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit";

/// Fields of the pod a `fieldRef` may read (`validEnvDownwardAPIFieldPathExpressions`).
const ENV_FIELD_PATHS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// Resources a `resourceFieldRef` may read (`validContainerResourceFieldPathExpressions`).
const ENV_RESOURCE_FIELDS: [&str; 6] = [
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
];

/// `ValidateEnv` with relaxed names (on by default since Kubernetes 1.34).
pub fn check_env(env: &[EnvVar], path: &str, problems: &mut Vec<SpecProblem>) {
    for (i, var) in env.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if var.name.is_empty() {
            problems.push(SpecProblem::new(format!("{at}.name"), "an environment variable needs a name"));
        } else if var.name.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
            problems.push(SpecProblem::new(
                format!("{at}.name"),
                format!(
                    "{} is not an environment variable name: printable ASCII characters only, and no '='",
                    quoted(&var.name)
                ),
            ));
        }
        if let Some(source) = &var.value_from {
            check_env_source(source, var.value.as_deref().unwrap_or_default(), &at, problems);
        }
    }
}

fn check_env_source(source: &EnvVarSource, value: &str, at: &str, problems: &mut Vec<SpecProblem>) {
    let path = format!("{at}.valueFrom");
    let EnvVarSource { config_map_key_ref, field_ref, file_key_ref, resource_field_ref, secret_key_ref } = source;
    if file_key_ref.is_some() {
        problems.push(SpecProblem::new(
            format!("{path}.fileKeyRef"),
            "fileKeyRef needs the EnvFiles feature gate, which Kubernetes 1.35 keeps off: use secretKeyRef or configMapKeyRef",
        ));
    }
    let sources =
        [config_map_key_ref.is_some(), field_ref.is_some(), resource_field_ref.is_some(), secret_key_ref.is_some()]
            .iter()
            .filter(|set| **set)
            .count();
    if sources == 0 {
        if file_key_ref.is_none() {
            problems.push(SpecProblem::new(
                path.clone(),
                "valueFrom needs one source: secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef",
            ));
        }
    } else if !value.is_empty() {
        problems.push(SpecProblem::new(
            at.to_string(),
            "set either value or valueFrom, not both: Kubernetes refuses a variable with two sources",
        ));
    } else if sources > 1 {
        problems.push(SpecProblem::new(
            path.clone(),
            "valueFrom may name only one source (secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef)",
        ));
    }
    if let Some(secret) = secret_key_ref {
        check_key_selector(&secret.name, &secret.key, "Secret", &format!("{path}.secretKeyRef"), problems);
    }
    if let Some(config_map) = config_map_key_ref {
        check_key_selector(
            &config_map.name,
            &config_map.key,
            "ConfigMap",
            &format!("{path}.configMapKeyRef"),
            problems,
        );
    }
    if let Some(field) = field_ref {
        let field_path = format!("{path}.fieldRef");
        let api_version = field.api_version.as_deref().unwrap_or("v1");
        if api_version != "v1" && !api_version.is_empty() {
            problems.push(SpecProblem::new(
                format!("{field_path}.apiVersion"),
                format!("{} is not a pod API version: leave it out or write v1", quoted(api_version)),
            ));
        } else if !is_env_field_path(&field.field_path) {
            problems.push(SpecProblem::new(
                format!("{field_path}.fieldPath"),
                format!(
                    "{} is not a pod field Kubernetes exposes to the environment: one of {}, or metadata.labels['KEY'] / metadata.annotations['KEY']",
                    quoted(&field.field_path),
                    ENV_FIELD_PATHS.join(", ")
                ),
            ));
        }
    }
    if let Some(resource) = resource_field_ref {
        let resource_path = format!("{path}.resourceFieldRef");
        let known = ENV_RESOURCE_FIELDS.contains(&resource.resource.as_str())
            || resource.resource.starts_with("requests.hugepages-")
            || resource.resource.starts_with("limits.hugepages-");
        if resource.resource.is_empty() || !known {
            problems.push(SpecProblem::new(
                format!("{resource_path}.resource"),
                format!(
                    "{} is not a container resource Kubernetes exposes: one of {}",
                    quoted(&resource.resource),
                    ENV_RESOURCE_FIELDS.join(", ")
                ),
            ));
        }
        if let Some(divisor) = &resource.divisor {
            check_divisor(&resource.resource, divisor, &format!("{resource_path}.divisor"), problems);
        }
    }
}

fn check_key_selector(name: &str, key: &str, kind: &str, path: &str, problems: &mut Vec<SpecProblem>) {
    if !is_dns1123_subdomain(name) {
        problems.push(SpecProblem::new(
            format!("{path}.name"),
            if name.is_empty() {
                format!("name the {kind} to read")
            } else {
                format!("{} is not a {kind} name: {DNS_SUBDOMAIN_RULE}", quoted(name))
            },
        ));
    }
    if !is_config_map_key(key) {
        problems.push(SpecProblem::new(
            format!("{path}.key"),
            if key.is_empty() {
                format!("name the key of the {kind} to read")
            } else {
                format!(
                    "{} is not a {kind} key: letters, digits, '-', '_' and '.', not starting with '..'",
                    quoted(key)
                )
            },
        ));
    }
}

/// `validateObjectFieldSelector` after `ConvertDownwardAPIFieldLabel`.
fn is_env_field_path(field_path: &str) -> bool {
    if ENV_FIELD_PATHS.contains(&field_path) {
        return true;
    }
    for (prefix, lower) in [("metadata.labels['", false), ("metadata.annotations['", true)] {
        if let Some(key) = field_path.strip_prefix(prefix).and_then(|rest| rest.strip_suffix("']")) {
            let key = if lower { key.to_lowercase() } else { key.to_string() };
            return is_qualified_name(&key);
        }
    }
    false
}

/// `validateContainerResourceDivisor`: the divisor's canonical form must be one of a
/// few; compared here by value and suffix family, which is what the canonical form
/// encodes.
fn check_divisor(resource: &str, divisor: &ApiQuantity, path: &str, problems: &mut Vec<SpecProblem>) {
    let Ok(value) = parse_quantity_json(&divisor.0) else {
        problems.push(SpecProblem::new(path, format!("{} is not a quantity", quoted(&divisor.0))));
        return;
    };
    if value == Quantity::ZERO {
        return;
    }
    let cpu = resource.ends_with(".cpu");
    let allowed: &[&str] = if cpu {
        &["1m", "1"]
    } else {
        &["1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei"]
    };
    let family = |q: Quantity| if q.format() == Format::BinarySi { Format::BinarySi } else { Format::DecimalSi };
    let ok = value.format() != Format::DecimalExponent
        && allowed
            .iter()
            .filter_map(|a| parse_quantity(a).ok())
            .any(|a| a.nanos() == value.nanos() && family(a) == family(value));
    if !ok {
        problems.push(SpecProblem::new(
            path,
            format!("divisor {} is not one Kubernetes allows here: {}", quoted(&divisor.0), allowed.join(", ")),
        ));
    }
}

/// Container resources other than cpu and memory that are compared whole.
const STANDARD_CONTAINER_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// `ValidateContainerResourceRequirements`: names, quantities, requests within limits.
pub fn check_resources(resources: &ResourceRequirements, path: &str, problems: &mut Vec<SpecProblem>) {
    if resources.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        problems.push(SpecProblem::new(
            format!("{path}.claims"),
            "the operator's pods declare no resource claims, so a container cannot use one: remove claims",
        ));
    }
    let empty = BTreeMap::new();
    let limits = resources.limits.as_ref().unwrap_or(&empty);
    let requests = resources.requests.as_ref().unwrap_or(&empty);
    let parsed_limits = check_quantities(limits, &format!("{path}.limits"), problems);
    let parsed_requests = check_quantities(requests, &format!("{path}.requests"), problems);
    for (name, request) in &parsed_requests {
        let at = format!("{path}.requests.{name}");
        let overcommit = is_native(name) && !name.starts_with("hugepages-");
        match parsed_limits.get(name) {
            Some(limit) if !overcommit && request != limit => problems.push(SpecProblem::new(
                at,
                format!(
                    "{name} cannot be overcommitted: its request must equal its limit ({})",
                    limits[name.as_str()].0
                ),
            )),
            Some(limit) if request > limit => problems.push(SpecProblem::new(
                at,
                format!(
                    "request {} is above the limit {}; Kubernetes refuses such a pod",
                    requests[name.as_str()].0.trim(),
                    limits[name.as_str()].0.trim()
                ),
            )),
            None if !overcommit && !limits.contains_key(name.as_str()) => problems.push(SpecProblem::new(
                format!("{path}.limits"),
                format!("{name} cannot be overcommitted: set limits.{name} equal to its request"),
            )),
            _ => {}
        }
    }
    let names = || limits.keys().chain(requests.keys());
    let huge_pages = names().any(|n| n.starts_with("hugepages-"));
    let cpu_or_memory = names().any(|n| n == "cpu" || n == "memory");
    if huge_pages && !cpu_or_memory {
        problems.push(SpecProblem::new(path, "hugepages need a cpu or memory request or limit beside them"));
    }
}

/// The quantities of one map that are valid, by resource name; problems for the rest.
fn check_quantities(
    map: &BTreeMap<String, ApiQuantity>,
    path: &str,
    problems: &mut Vec<SpecProblem>,
) -> BTreeMap<String, Quantity> {
    let mut parsed = BTreeMap::new();
    for (name, text) in map {
        let at = format!("{path}.{name}");
        if let Err(why) = check_resource_name(name) {
            problems.push(SpecProblem::new(at.clone(), why));
            continue;
        }
        let value = match parse_quantity_json(&text.0) {
            Ok(value) => value,
            Err(e) => {
                problems.push(SpecProblem::new(at, format!("{} {e}", quoted(&text.0))));
                continue;
            }
        };
        if value.is_negative() {
            problems.push(SpecProblem::new(at, format!("{} is negative", quoted(&text.0))));
            continue;
        }
        if is_extended(name) && !value.is_whole() {
            problems.push(SpecProblem::new(
                at,
                format!("{} must be a whole number for an extended resource", quoted(&text.0)),
            ));
            continue;
        }
        if let Some(page) = name.strip_prefix("hugepages-") {
            let divisible = parse_quantity(page)
                .ok()
                .filter(|p| p.nanos() > 0 && p.is_whole())
                .is_some_and(|p| value.value_ceil() % p.value_ceil() == 0);
            if !divisible {
                problems
                    .push(SpecProblem::new(at, format!("{} is not a whole number of {page} pages", quoted(&text.0))));
                continue;
            }
        }
        parsed.insert(name.clone(), value);
    }
    parsed
}

/// `IsNativeResource`: no domain, or the kubernetes.io domain.
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// `IsExtendedResourceName`.
fn is_extended(name: &str) -> bool {
    !is_native(name) && !name.starts_with("requests.") && is_qualified_name(&format!("requests.{name}"))
}

/// `validateContainerResourceName`.
fn check_resource_name(name: &str) -> Result<(), String> {
    let shown = quoted(name);
    if !is_qualified_name(name) {
        return Err(format!("{shown} is not a resource name: {QUALIFIED_NAME_RULE}"));
    }
    if !name.contains('/') {
        if !(STANDARD_CONTAINER_RESOURCES.contains(&name) || name.starts_with("hugepages-")) {
            return Err(format!(
                "{shown} is not a resource a container can ask for: cpu, memory, ephemeral-storage, hugepages-<size>, or a domain-qualified extended resource such as example.com/gpu"
            ));
        }
    } else if !is_native(name) && !is_extended(name) {
        return Err(format!("{shown} is not an extended resource name such as example.com/gpu"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env_problems(env: serde_json::Value) -> Vec<String> {
        let env: Vec<EnvVar> = serde_json::from_value(env).unwrap();
        let mut problems = Vec::new();
        check_env(&env, "env", &mut problems);
        problems.into_iter().map(|p| p.to_string()).collect()
    }

    fn resource_problems(resources: serde_json::Value) -> Vec<String> {
        let resources: ResourceRequirements = serde_json::from_value(resources).unwrap();
        let mut problems = Vec::new();
        check_resources(&resources, "r", &mut problems);
        problems.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn names() {
        assert!(is_dns1123_label("a-1") && !is_dns1123_label("A") && !is_dns1123_label("-a") && !is_dns1123_label(""));
        assert!(!is_dns1123_label(&"a".repeat(64)) && is_dns1123_label(&"a".repeat(63)));
        assert!(is_dns1123_subdomain("a.b-c.d") && !is_dns1123_subdomain("a..b") && !is_dns1123_subdomain("a_b"));
        assert!(is_qualified_name("app.kubernetes.io/name") && is_qualified_name("A_b.C"));
        assert!(
            !is_qualified_name("/a")
                && !is_qualified_name("a/")
                && !is_qualified_name("a/b/c")
                && !is_qualified_name("_a")
        );
        assert!(!is_qualified_name("Example.com/a"), "the prefix is a DNS subdomain");
        assert!(is_label_value("") && is_label_value("x.Y_z") && !is_label_value("a b") && !is_label_value("a-"));
        assert!(
            is_config_map_key("a.b")
                && !is_config_map_key("..a")
                && !is_config_map_key(".")
                && !is_config_map_key("a/b")
        );
    }

    #[test]
    fn env_entries_the_api_server_refuses() {
        let cases = [
            (json!([{"name": ""}]), "env[0].name: an environment variable needs a name"),
            (json!([{"name": "A=B"}]), "no '='"),
            (json!([{"name": "tab\there"}]), "printable ASCII"),
            (
                json!([{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
                "env[0]: set either value or valueFrom",
            ),
            (json!([{"name": "A", "valueFrom": {}}]), "valueFrom needs one source"),
            (
                json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "", "key": "k"}}}]),
                "secretKeyRef.name: name the Secret",
            ),
            (
                json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": ""}}}]),
                "secretKeyRef.key: name the key",
            ),
            (
                json!([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "Bad_Name", "key": "k"}}}]),
                "is not a ConfigMap name",
            ),
            (json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]), "fieldRef.fieldPath"),
            (
                json!([{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]),
                "resourceFieldRef.resource",
            ),
            (
                json!([{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "2"}}}]),
                "divisor",
            ),
            (
                json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}}]),
                "only one source",
            ),
        ];
        for (env, expected) in cases {
            let problems = env_problems(env.clone());
            assert!(problems.iter().any(|p| p.contains(expected)), "{env}: expected {expected:?} in {problems:?}");
        }
        for ok in [
            json!([{"name": "my.var-1", "value": ""}]),
            json!([{"name": "A B", "value": "x"}]),
            json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}}}]),
            json!([{"name": "A", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}]),
            json!([{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}]),
            json!([{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1000m"}}}]),
        ] {
            assert_eq!(env_problems(ok.clone()), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn resources_the_api_server_refuses() {
        let cases = [
            (
                json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
                "r.requests.memory: request 2Gi is above the limit 1Gi",
            ),
            (json!({"requests": {"cpu": "-1"}}), "is negative"),
            (json!({"requests": {"cpu": "1 core"}}), "not a Kubernetes quantity"),
            (json!({"requests": {"gpu": "1"}}), "not a resource a container can ask for"),
            (json!({"requests": {"example.com/gpu": "1"}}), "cannot be overcommitted"),
            (json!({"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "2"}}), "must equal its limit"),
            (json!({"limits": {"example.com/gpu": "500m"}}), "whole number"),
            (json!({"limits": {"hugepages-2Mi": "3Mi", "memory": "1Gi"}}), "whole number of 2Mi pages"),
            (json!({"limits": {"hugepages-2Mi": "4Mi"}}), "hugepages need a cpu or memory"),
            (json!({"claims": [{"name": "x"}]}), "r.claims"),
            (json!({"limits": {"memory": "1e60"}}), "larger than the largest"),
        ];
        for (resources, expected) in cases {
            let problems = resource_problems(resources.clone());
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{resources}: expected {expected:?} in {problems:?}"
            );
        }
        for ok in [
            json!({"requests": {"cpu": "250m", "memory": " 1Gi"}, "limits": {"memory": "1073741824"}}),
            json!({"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "1"}}),
            json!({"limits": {"hugepages-2Mi": "4Mi", "memory": "1Gi"}}),
            json!({"requests": {"kubernetes.io/anything": "1"}}),
        ] {
            assert_eq!(resource_problems(ok.clone()), Vec::<String>::new(), "{ok}");
        }
    }
}
