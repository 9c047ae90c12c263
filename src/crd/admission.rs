//! The checks the apiserver runs when a ReferralSystem is admitted, run here without
//! a cluster: the OpenAPI schema (types, patterns, ranges, required fields) and the
//! CEL `x-kubernetes-validations` rules, both taken from the generated CRD itself so
//! they cannot drift from what a cluster enforces.
//!
//! `render` uses this so a GitOps preview refuses what `kubectl apply` would refuse,
//! with the same field path and message.

use std::sync::OnceLock;

use serde_json::Value;

use super::definition;
use super::validate::SpecProblem;

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = definition();
        crd.spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null)
    })
}

/// The openAPIV3Schema of the served version, as JSON.
pub fn openapi_schema() -> &'static Value {
    schema()
}

/// Runs the schema and the CEL rules against `object` (a whole ReferralSystem as JSON).
/// `old` is the stored object for an update, so transition rules (`oldSelf`) apply.
pub fn check(object: &Value, old: Option<&Value>) -> Result<(), Vec<SpecProblem>> {
    let mut problems = schema_problems(object);
    // CEL rules assume a structurally valid object, as in the apiserver, which only
    // evaluates them after the schema passed.
    if problems.is_empty() {
        problems.extend(cel_problems(object, old));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

fn schema_problems(object: &Value) -> Vec<SpecProblem> {
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(false)
            .build(&openapi_for_jsonschema(schema()))
            .map_err(|e| e.to_string())
    });
    match validator {
        Ok(validator) => validator
            .iter_errors(object)
            .map(|e| SpecProblem { field_path: dotted(e.instance_path().as_str()), message: e.to_string() })
            .collect(),
        Err(e) => vec![SpecProblem {
            field_path: String::new(),
            message: format!("the CRD schema could not be compiled for local checks: {e}"),
        }],
    }
}

fn cel_problems(object: &Value, old: Option<&Value>) -> Vec<SpecProblem> {
    let validator = kube_cel::Validator::new();
    match validator.validate(schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| SpecProblem { field_path: e.field_path.clone(), message: e.message.clone() })
            .collect(),
    }
}

/// JSON pointer (`/spec/workers/0/name`) to the dotted form kubectl prints
/// (`spec.workers[0].name`).
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

/// The Kubernetes dialect differs from JSON Schema in two ways that matter here:
/// `nullable` (absent in draft 4) and `x-kubernetes-int-or-string`, which the
/// generated schema already expresses as `anyOf`. `nullable: true` becomes a
/// `null` alternative so an explicit `null` passes, as it does in the apiserver.
fn openapi_for_jsonschema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), openapi_for_jsonschema(v));
            }
            if out.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = out.get("type").cloned()
            {
                out.insert("type".into(), Value::Array(vec![Value::String(t), "null".into()]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(openapi_for_jsonschema).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    //! The CRD's CEL rules run by a CEL engine (kube-cel), including the transition
    //! rules that compare with the stored object.

    use serde_json::{Value, json};

    use super::check;

    fn system(redis: Value) -> Value {
        json!({
            "apiVersion": "referral.dev/v1alpha1",
            "kind": "ReferralSystem",
            "metadata": {"name": "main", "namespace": "referrals"},
            "spec": {
                "image": "example/referral-service:1.4.2",
                "workers": [{"name": "reward-processor"}],
                "mongodb": {"uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": "neurolov"},
                "redis": redis
            }
        })
    }

    fn messages(result: Result<(), Vec<super::SpecProblem>>) -> Vec<String> {
        result.err().unwrap_or_default().into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn growing_storage_is_allowed_and_shrinking_is_refused() {
        let old = system(json!({"managed": {"storage": {"size": "5Gi"}}}));
        let grown = system(json!({"managed": {"storage": {"size": "10Gi"}}}));
        let shrunk = system(json!({"managed": {"storage": {"size": "2Gi"}}}));
        assert_eq!(check(&grown, Some(&old)), Ok(()));
        let refused = messages(check(&shrunk, Some(&old)));
        assert!(refused.iter().any(|m| m.contains("storage size cannot shrink")), "{refused:?}");
        // On create there is no old object, so the transition rule does not apply.
        assert_eq!(check(&shrunk, None), Ok(()));
    }

    #[test]
    fn storage_class_is_immutable_once_set() {
        let old = system(json!({"managed": {"storage": {"size": "1Gi", "storageClassName": "fast"}}}));
        let changed = system(json!({"managed": {"storage": {"size": "1Gi", "storageClassName": "slow"}}}));
        let refused = messages(check(&changed, Some(&old)));
        assert!(refused.iter().any(|m| m.contains("storageClassName cannot be changed")), "{refused:?}");
        assert_eq!(check(&old, Some(&old)), Ok(()));
    }

    #[test]
    fn exactly_one_redis_kind() {
        assert_eq!(check(&system(json!({"external": {"host": "redis.example"}})), None), Ok(()));
        let both = messages(check(&system(json!({"managed": {}, "external": {"host": "r"}})), None));
        assert!(both.iter().any(|m| m.starts_with("spec.redis: set exactly one")), "{both:?}");
    }

    #[test]
    fn metadata_name_rule_sees_the_name() {
        let mut long = system(json!({"managed": {}}));
        long["metadata"]["name"] = json!("a".repeat(46));
        assert!(messages(check(&long, None)).iter().any(|m| m.contains("at most 45 characters")));
        long["metadata"]["name"] = json!("a".repeat(45));
        assert_eq!(check(&long, None), Ok(()));
    }

    #[test]
    fn every_rule_in_the_crd_compiles_and_carries_a_message() {
        let compiled = kube_cel::compile_schema(super::openapi_schema());
        assert!(!compiled.has_errors(), "{:?}", compiled.compilation_errors());
        let mut rules = Vec::new();
        collect_rules(super::openapi_schema(), &mut rules);
        assert!(rules.len() >= 15, "only {} CEL rules found", rules.len());
        for rule in rules {
            let message = rule["message"].as_str().unwrap_or_default();
            assert!(message.len() > 20, "rule {} needs a message a person can act on", rule["rule"]);
        }
    }

    fn collect_rules(schema: &Value, out: &mut Vec<Value>) {
        match schema {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    out.extend(rules.iter().cloned());
                }
                map.values().for_each(|v| collect_rules(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_rules(v, out)),
            _ => {}
        }
    }
}
