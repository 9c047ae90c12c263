//! No spec can crash `render` or make it build an object the API server would refuse.
//!
//! The generator walks the CRD's own openAPIV3Schema, so every field the schema has
//! can be drawn: each property is set with a small probability, to a value from a
//! palette of extremes for its type (integer limits, quantities past int64, Redis
//! sizes past u64, cron steps past u32, durations past a Duration, names at and past
//! their length limits, reserved characters, NUL) or to a string drawn from the
//! field's own pattern. The drawn values are laid over `examples/full.yaml`, so most
//! of each spec stays valid and the odd value reaches the code behind admission.
//!
//! For every spec, `render` (admission, validate, build) must return rather than
//! panic; for every spec it accepts, each built object must pass the checks the API
//! server would apply to it: names, labels, each container's env and resources (the
//! same `api_rules` the validate step uses), each CronJob's schedule, the object
//! size. The test also counts how many specs got as far as building, so a generator
//! that only ever produces refused specs fails instead of passing vacuously.

use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use referral_operator::cli::DEFAULT_OPERATOR_IMAGE;
use referral_operator::crd::admission::openapi_schema;
use referral_operator::crd::api_rules::{
    check_env, check_resources, is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name,
};
use referral_operator::reconcilers::BuildContext;
use referral_operator::render::{RenderOptions, render};
use serde_json::{Map, Value, json};

/// How often a property is set when its object is drawn.
const SET_ONE_IN: u32 = 40;
/// Generated nesting below `spec`; the schema is shallower than this where it matters.
const MAX_DEPTH: usize = 8;
const CASES: u32 = 1000;

fn integers(schema: &Value) -> Vec<i64> {
    let mut out = vec![
        0,
        1,
        2,
        3,
        -1,
        59,
        60,
        1000,
        65535,
        65536,
        i64::from(i32::MAX),
        i64::from(i32::MIN),
        i64::from(u32::MAX),
        1 << 53,
        i64::MAX,
        i64::MIN,
    ];
    for bound in ["minimum", "maximum"] {
        if let Some(b) = schema[bound].as_i64() {
            out.extend([b.saturating_sub(1), b, b.saturating_add(1)]);
        }
    }
    out
}

fn strings() -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        "a",
        "main",
        "redis",
        "x-y",
        "0",
        "1",
        "-1",
        "0s",
        "1ns",
        "5s",
        "1h30m",
        "9999999999999999h",
        "2562047h47m16.854775807s",
        "2562047h47m16.854775808s",
        "1e60",
        "1e-9",
        "0.000000001",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "8Ei",
        "1Ei",
        "0.001m",
        "100m",
        "1Gi",
        "2gb",
        "0b",
        "1073741824gb",
        "1073741825gb",
        "18446744073709551615b",
        "18446744073709551616",
        "*/4294967295 * * * *",
        "*/18446744073709551616 * * * *",
        "0 0 31 2 *",
        "? ? ? ? ?",
        "0 3 * * ?",
        "@every 1ns",
        "@every 2562047h",
        "@hourly",
        "?@:/%#",
        "a\u{0}b",
        "référral",
        "UPPER",
        "A=B",
        "$where",
        "a.b",
        "example/referral-service:1.4.2",
        "ref:",
        "https://runbooks.example/",
        "rate(x[5m]) > 1",
        "allkeys-lru",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.extend(["a".repeat(63), "a".repeat(64), "a".repeat(253), "a".repeat(254), "ab".repeat(5000)]);
    out
}

fn string_strategy(schema: &Value) -> BoxedStrategy<Value> {
    if let Some(values) = schema["enum"].as_array().filter(|v| !v.is_empty()) {
        let values = values.clone();
        return prop::sample::select(values).boxed();
    }
    let palette = prop::sample::select(strings()).prop_map(Value::String).boxed();
    let pattern = schema["pattern"].as_str().map(|p| p.trim_start_matches('^').trim_end_matches('$').to_string());
    match pattern.and_then(|p| proptest::string::string_regex(&p).ok()) {
        Some(from_pattern) => prop_oneof![1 => palette, 2 => from_pattern.prop_map(Value::String)].boxed(),
        None => palette,
    }
}

/// Extremes, any integer, and (twice as often) one within the schema's bounds.
fn integer_strategy(schema: &Value) -> BoxedStrategy<Value> {
    let low = schema["minimum"].as_i64().unwrap_or(0);
    let high = schema["maximum"].as_i64().unwrap_or(100).max(low);
    prop_oneof![
        1 => prop::sample::select(integers(schema)).prop_map(|i| json!(i)),
        1 => any::<i64>().prop_map(|i| json!(i)),
        2 => (low..=high).prop_map(|i| json!(i)),
    ]
    .boxed()
}

/// A value for `schema`, each property of an object set one time in [`SET_ONE_IN`]
/// (required ones always).
fn value_for(schema: &Value, depth: usize) -> BoxedStrategy<Value> {
    if depth > MAX_DEPTH {
        return Just(Value::Null).boxed();
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return prop_oneof![integer_strategy(schema), string_strategy(schema)].boxed();
    }
    match schema["type"].as_str() {
        Some("object") => object_for(schema, depth),
        Some("array") => {
            let items = value_for(&schema["items"], depth + 1);
            prop::collection::vec(items, 0..4).prop_map(Value::Array).boxed()
        }
        Some("integer") => integer_strategy(schema),
        Some("number") => prop_oneof![
            integer_strategy(schema),
            prop::sample::select(vec![0.5, -0.5, 1e308, -1e308, 1e-300, 99.999]).prop_map(|f| json!(f)),
        ]
        .boxed(),
        Some("boolean") => any::<bool>().prop_map(Value::Bool).boxed(),
        Some("string") => string_strategy(schema),
        _ => Just(Value::Null).boxed(),
    }
}

fn object_for(schema: &Value, depth: usize) -> BoxedStrategy<Value> {
    let required: Vec<&str> =
        schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, sub) in properties {
            let name = name.clone();
            let value = value_for(sub, depth + 1);
            let set = if required.contains(&name.as_str()) {
                value.prop_map(move |v| Some((name.clone(), v))).boxed()
            } else {
                prop::option::weighted(1.0 / f64::from(SET_ONE_IN), value.prop_map(move |v| (name.clone(), v))).boxed()
            };
            fields.push(set);
        }
    }
    if let Some(additional) = schema["additionalProperties"].as_object() {
        let keys = prop::sample::select(vec![
            "a".to_string(),
            "app.kubernetes.io/name".to_string(),
            "example.com/x".to_string(),
            "x/y/z".to_string(),
            String::new(),
            "k".repeat(64),
            "Tier".to_string(),
        ]);
        let values = value_for(&Value::Object(additional.clone()), depth + 1);
        let map = prop::collection::vec((keys, values), 0..3);
        return (fields, map)
            .prop_map(|(fields, extra)| {
                let mut object: Map<String, Value> = fields.into_iter().flatten().collect();
                object.extend(extra);
                Value::Object(object)
            })
            .boxed();
    }
    fields.prop_map(|fields| Value::Object(fields.into_iter().flatten().collect())).boxed()
}

/// `overlay` laid over `base`: objects merge key by key, arrays item by item (extra
/// items appended), anything else replaces.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (Value::Array(base), Value::Array(overlay)) => {
            for (i, value) in overlay.into_iter().enumerate() {
                match base.get_mut(i) {
                    Some(item) => merge(item, value),
                    None => base.push(value),
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn example() -> Value {
    let text = std::fs::read_to_string(format!("{}/examples/full.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// The checks the API server applies to a built object, as far as this crate knows
/// them; each failure as "Kind/name: what".
fn object_problems(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let at = format!("{kind}/{name}");
    let mut problems = Vec::new();
    let name_ok = if kind == "Service" { is_dns1123_label(name) } else { is_dns1123_subdomain(name) };
    if !name_ok {
        problems.push(format!("{at}: the name is not valid for a {kind}"));
    }
    if serde_json::to_vec(object).map(|b| b.len()).unwrap_or(usize::MAX) > 1_572_864 {
        problems.push(format!("{at}: over the API server's 1.5 MiB request limit"));
    }
    let mut label_maps = vec![&object["metadata"]["labels"]];
    for pointer in ["/spec/template/metadata/labels", "/spec/jobTemplate/spec/template/metadata/labels"] {
        if let Some(labels) = object.pointer(pointer) {
            label_maps.push(labels);
        }
    }
    for labels in label_maps.into_iter().filter_map(Value::as_object) {
        for (key, value) in labels {
            let value = value.as_str().unwrap_or_default();
            if !is_qualified_name(key) || !is_label_value(value) {
                problems.push(format!("{at}: label {key:?}={value:?} is not valid"));
            }
        }
    }
    if kind == "CronJob"
        && let Some(schedule) = object["spec"]["schedule"].as_str()
        && let Err(why) = referral_operator::crd::cron::parse(schedule)
    {
        problems.push(format!("{at}: schedule {schedule:?}: {why}"));
    }
    for pod in ["/spec/template/spec", "/spec/jobTemplate/spec/template/spec"] {
        let Some(pod) = object.pointer(pod) else { continue };
        for list in ["containers", "initContainers"] {
            for (i, container) in pod[list].as_array().into_iter().flatten().enumerate() {
                let path = format!("{at} {list}[{i}]");
                let mut found = Vec::new();
                let env: Vec<EnvVar> = serde_json::from_value(container["env"].clone()).unwrap_or_default();
                check_env(&env, &format!("{path}.env"), &mut found);
                if let Some(resources) = container.get("resources") {
                    match serde_json::from_value::<ResourceRequirements>(resources.clone()) {
                        Ok(resources) => check_resources(&resources, &format!("{path}.resources"), &mut found),
                        Err(e) => problems.push(format!("{path}.resources do not decode: {e}")),
                    }
                }
                problems.extend(found.into_iter().map(|p| format!("{}: {}", p.field_path, p.message)));
            }
        }
    }
    problems
}

#[test]
fn no_schema_shaped_spec_panics_render_or_builds_an_object_the_api_server_refuses() {
    let spec_schema = openapi_schema()["properties"]["spec"].clone();
    assert!(spec_schema["properties"].as_object().is_some_and(|p| p.len() > 5), "the CRD schema has spec properties");
    let overlay = object_for(&spec_schema, 0);
    let options = RenderOptions {
        default_namespace: "referrals".into(),
        context: BuildContext {
            operator_image: DEFAULT_OPERATOR_IMAGE.into(),
            secrets_hash: Some("0123456789abcdef".into()),
            operator_pods: None,
        },
    };
    let built = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    let result = runner.run(&overlay, |overlay| {
        let mut system = example();
        merge(&mut system["spec"], overlay);
        // As YAML, the way a person writes it: the emitter escapes what YAML may not
        // carry raw (DEL, C1 controls), which JSON would carry raw and render's YAML
        // reader refuses (a known difference from kubectl reading a JSON file).
        let text = serde_norway::to_string(&system).unwrap();
        match render(&text, &options) {
            Ok(out) => {
                built.fetch_add(1, Ordering::Relaxed);
                let mut problems = Vec::new();
                for document in out.split("\n---\n").map(|d| d.trim_start_matches("---\n")) {
                    let object: Value =
                        serde_norway::from_str(document).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    problems.extend(object_problems(&object));
                }
                prop_assert!(
                    problems.is_empty(),
                    "render accepted a spec that builds refused objects:\n{}\nspec: {}",
                    problems.join("\n"),
                    text.chars().take(4000).collect::<String>()
                );
            }
            Err(error) => {
                refused.fetch_add(1, Ordering::Relaxed);
                prop_assert!(!error.to_string().is_empty());
            }
        }
        Ok(())
    });
    let (built, refused) = (built.into_inner(), refused.into_inner());
    eprintln!("{built} specs built, {refused} refused (including shrinking runs)");
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(
        built * 20 >= CASES as usize,
        "only {built} of {CASES} specs got as far as building: the generator is too wild to test the builders"
    );
    assert!(
        refused * 10 >= CASES as usize,
        "only {refused} of {CASES} specs were refused: the generator is too tame to test the checks"
    );
}
