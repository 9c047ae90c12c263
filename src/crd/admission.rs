//! The checks the apiserver runs when a ReferralSystem is admitted, run here without
//! a cluster, in the order the apiserver runs them:
//!
//! 1. strict decoding, as `kubectl --validate=strict` asks for: a field the schema
//!    does not declare is refused, not dropped (`replica: 3` would otherwise become
//!    the default of one replica). Duplicate keys are refused earlier, when the YAML
//!    is read (`src/yaml.rs`);
//! 2. object metadata, as `ValidateObjectMetaAccessor` checks it (a name, the
//!    namespace, label and annotation keys and values, owner references,
//!    finalizers) and the size etcd can store;
//! 3. the OpenAPI schema (types, patterns, ranges, required fields) and the CEL
//!    `x-kubernetes-validations` rules, both taken from the generated CRD itself so
//!    they cannot drift from what a cluster enforces.
//!
//! Messages are for a person: a pattern is explained in words, a value is quoted
//! short, and a CEL rule that cannot be evaluated says which rule and why, not what
//! the CEL engine said. `render` uses this so a GitOps preview refuses what
//! `kubectl apply` would refuse, with the same field path.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::api_rules::{
    DNS_LABEL_RULE, DNS_SUBDOMAIN_RULE, LABEL_VALUE_RULE, QUALIFIED_NAME_RULE, is_dns1123_label, is_dns1123_subdomain,
    is_label_value, is_qualified_name,
};
use super::common::quoted;
use super::definition;
use super::validate::SpecProblem;

/// The most an object may weigh as JSON: etcd's default request limit (1.5 MiB).
pub const MAX_OBJECT_BYTES: usize = 3 << 19;
/// The most all annotations of an object may weigh (`TotalAnnotationSizeLimitB`).
pub const MAX_ANNOTATION_BYTES: usize = 256 << 10;

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

/// ObjectMeta's schema with every subschema inline, for its field names and types.
fn metadata_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let generator =
            schemars::generate::SchemaSettings::openapi3().with(|s| s.inline_subschemas = true).into_generator();
        serde_json::to_value(generator.into_root_schema_for::<ObjectMeta>()).unwrap_or(Value::Null)
    })
}

/// Runs every admission check against `object` (a whole ReferralSystem as JSON).
/// `old` is the stored object for an update, so transition rules (`oldSelf`) apply.
pub fn check(object: &Value, old: Option<&Value>) -> Result<(), Vec<SpecProblem>> {
    let mut problems = unknown_fields(object);
    problems.extend(list_problems(object));
    problems.extend(metadata_problems(object));
    problems.extend(schema_problems(object));
    // CEL rules assume a structurally valid object, as in the apiserver, which only
    // evaluates them after the schema passed.
    if problems.is_empty() {
        problems.extend(cel_problems(object, old));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// Fields the schema does not declare, as the apiserver's strict field validation
/// finds them: wherever a schema lists `properties` and neither preserves unknown
/// fields nor allows additional ones.
fn unknown_fields(object: &Value) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    let Value::Object(map) = object else {
        return vec![SpecProblem::new("", "a ReferralSystem is a YAML mapping (apiVersion, kind, metadata, spec)")];
    };
    let top = schema().get("properties").and_then(Value::as_object);
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => walk_unknown(value, metadata_schema(), "metadata", &mut problems),
            other => match top.and_then(|t| t.get(other)) {
                Some(field_schema) => walk_unknown(value, field_schema, other, &mut problems),
                None => {
                    problems.push(unknown(other, other, top.map(|t| t.keys().cloned().collect()).unwrap_or_default()))
                }
            },
        }
    }
    problems
}

fn walk_unknown(value: &Value, schema: &Value, path: &str, problems: &mut Vec<SpecProblem>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, item) in map {
                let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if let Some(field_schema) = properties.and_then(|p| p.get(key)) {
                    walk_unknown(item, field_schema, &at, problems);
                } else if let Some(item_schema) = additional {
                    walk_unknown(item, item_schema, &at, problems);
                } else if let Some(properties) = properties
                    && schema.get("additionalProperties") != Some(&Value::Bool(true))
                {
                    problems.push(unknown(&at, key, properties.keys().cloned().collect()));
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk_unknown(item, item_schema, &format!("{path}[{i}]"), problems);
                }
            }
        }
        _ => {}
    }
}

fn unknown(path: &str, key: &str, known: Vec<String>) -> SpecProblem {
    let hint = nearest(key, &known).map(|k| format!("; did you mean {k:?}?")).unwrap_or_default();
    SpecProblem::new(
        path,
        format!(
            "unknown field {}: the schema does not declare it, and the API server refuses it with kubectl's default --validate=strict{hint}",
            quoted(key)
        ),
    )
}

/// The known name closest to `key`, when it is close (a typo, a case slip, a plural).
fn nearest(key: &str, known: &[String]) -> Option<String> {
    let lower = key.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().take(64).collect(), b.chars().take(64).collect());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current.push((previous[j] + cost).min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Lists the schema declares as maps (`x-kubernetes-list-type: map`) or sets: an
/// entry whose key is already taken is refused by the structural schema, before any
/// rule runs, at the duplicate entry.
fn list_problems(object: &Value) -> Vec<SpecProblem> {
    fn walk(value: &Value, schema: &Value, path: &str, problems: &mut Vec<SpecProblem>) {
        match value {
            Value::Object(map) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                for (key, item) in map {
                    let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    if let Some(item_schema) = properties.and_then(|p| p.get(key)).or(additional) {
                        walk(item, item_schema, &at, problems);
                    }
                }
            }
            Value::Array(items) => {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
                let mut seen = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let identity = match list_type {
                        Some("map") => {
                            Value::Array(keys.iter().map(|k| item.get(*k).cloned().unwrap_or(Value::Null)).collect())
                        }
                        Some("set") => item.clone(),
                        _ => continue,
                    };
                    if seen.contains(&identity) {
                        let what = if keys.is_empty() {
                            shown(item)
                        } else {
                            keys.iter()
                                .map(|k| format!("{k} {}", shown(item.get(*k).unwrap_or(&Value::Null))))
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        problems.push(SpecProblem::new(
                            format!("{path}[{i}]"),
                            format!("Duplicate value: {what} is already used by an earlier entry; each must be unique"),
                        ));
                    } else {
                        seen.push(identity);
                    }
                }
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        walk(item, item_schema, &format!("{path}[{i}]"), problems);
                    }
                }
            }
            _ => {}
        }
    }
    let mut problems = Vec::new();
    walk(object, schema(), "", &mut problems);
    problems
}

/// `ValidateObjectMetaAccessor` for a namespaced object, and etcd's size limit.
fn metadata_problems(object: &Value) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    let size = object.to_string().len();
    if size > MAX_OBJECT_BYTES {
        problems.push(SpecProblem::new(
            "",
            format!("the object is {size} bytes as JSON; etcd stores at most {MAX_OBJECT_BYTES} per object"),
        ));
    }
    let Some(metadata) = object.get("metadata") else {
        problems.push(SpecProblem::new("metadata", "metadata is missing: a ReferralSystem needs metadata.name"));
        return problems;
    };
    let types = metadata_type_problems(metadata);
    if !types.is_empty() {
        return [problems, types].concat();
    }
    let text = |key: &str| metadata.get(key).and_then(Value::as_str).unwrap_or_default();
    let name = text("name");
    if name.is_empty() {
        let generated = if text("generateName").is_empty() {
            ""
        } else {
            " (render needs the name itself: the children's names are made from it, so generateName is not enough)"
        };
        problems.push(SpecProblem::new(
            "metadata.name",
            format!("metadata.name is missing: a ReferralSystem needs a name{generated}"),
        ));
    } else if !is_dns1123_subdomain(name) {
        problems
            .push(SpecProblem::new("metadata.name", format!("{} is not a name: {DNS_SUBDOMAIN_RULE}", quoted(name))));
    }
    let namespace = text("namespace");
    if !namespace.is_empty() && !is_dns1123_label(namespace) {
        problems.push(SpecProblem::new(
            "metadata.namespace",
            format!("{} is not a namespace name: {DNS_LABEL_RULE}", quoted(namespace)),
        ));
    }
    let map = |key: &str| metadata.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
    for (key, value) in map("labels") {
        if !is_qualified_name(&key) {
            problems.push(SpecProblem::new(
                "metadata.labels",
                format!("{} is not a label key: {QUALIFIED_NAME_RULE}", quoted(&key)),
            ));
        }
        let value = value.as_str().unwrap_or_default();
        if !is_label_value(value) {
            problems.push(SpecProblem::new(
                format!("metadata.labels.{key}"),
                format!("{} is not a label value: {LABEL_VALUE_RULE}", quoted(value)),
            ));
        }
    }
    let annotations = map("annotations");
    let mut total = 0;
    for (key, value) in &annotations {
        total += key.len() + value.as_str().map(str::len).unwrap_or_default();
        if !is_qualified_name(&key.to_lowercase()) {
            problems.push(SpecProblem::new(
                "metadata.annotations",
                format!("{} is not an annotation key: {QUALIFIED_NAME_RULE}", quoted(key)),
            ));
        }
    }
    if total > MAX_ANNOTATION_BYTES {
        problems.push(SpecProblem::new(
            "metadata.annotations",
            format!("the annotations hold {total} bytes; Kubernetes allows {MAX_ANNOTATION_BYTES} (a client-side `kubectl apply` of a large spec adds a copy of it here: use --server-side)"),
        ));
    }
    for (i, finalizer) in metadata.get("finalizers").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let finalizer = finalizer.as_str().unwrap_or_default();
        if !is_qualified_name(finalizer) {
            problems.push(SpecProblem::new(
                format!("metadata.finalizers[{i}]"),
                format!("{} is not a finalizer name: {QUALIFIED_NAME_RULE}", quoted(finalizer)),
            ));
        }
    }
    let mut controllers = 0;
    for (i, owner) in metadata.get("ownerReferences").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if owner.get(field).and_then(Value::as_str).unwrap_or_default().is_empty() {
                problems.push(SpecProblem::new(
                    format!("metadata.ownerReferences[{i}].{field}"),
                    format!("an owner reference needs {field}"),
                ));
            }
        }
        controllers += usize::from(owner.get("controller") == Some(&Value::Bool(true)));
    }
    if controllers > 1 {
        problems
            .push(SpecProblem::new("metadata.ownerReferences", "only one owner reference may have controller: true"));
    }
    problems
}

/// ObjectMeta's field types (labels are strings, finalizers a list, ...).
fn metadata_type_problems(metadata: &Value) -> Vec<SpecProblem> {
    static VALIDATOR: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(false)
            .build(&openapi_for_jsonschema(metadata_schema()))
            .ok()
    });
    let Some(validator) = validator else { return Vec::new() };
    validator
        .iter_errors(metadata)
        .map(|e| {
            let path = dotted(e.instance_path().as_str());
            let field = if path.is_empty() { "metadata".to_string() } else { format!("metadata.{path}") };
            SpecProblem { field_path: field, message: describe(&e) }
        })
        .collect()
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
            .map(|e| SpecProblem { field_path: dotted(e.instance_path().as_str()), message: describe(&e) })
            .collect(),
        Err(e) => vec![SpecProblem {
            field_path: String::new(),
            message: format!("the CRD schema could not be compiled for local checks: {e}"),
        }],
    }
}

/// A value in a message: short, whatever its size.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => quoted(text),
        Value::Array(items) if value.to_string().len() > 64 => format!("a list of {} items", items.len()),
        Value::Object(map) if value.to_string().len() > 64 => format!("an object with {} fields", map.len()),
        other => other.to_string(),
    }
}

/// A schema error in words, without echoing a long value.
fn describe(error: &jsonschema::ValidationError<'_>) -> String {
    let value = shown(error.instance());
    match error.kind() {
        ValidationErrorKind::Required { property } => format!("{property} is a required property"),
        ValidationErrorKind::Pattern { pattern } => match pattern_in_words(pattern) {
            Some(words) => format!("{value} does not match the required form: {words}"),
            None => format!("{value} does not match the pattern {pattern}"),
        },
        ValidationErrorKind::Type { kind } => {
            let names = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(ts) => ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
            };
            format!("{value} is not of type {names}")
        }
        ValidationErrorKind::AnyOf { .. } => {
            format!("{value} is not of type integer or string: write a whole number or a quantity such as \"500m\"")
        }
        ValidationErrorKind::Enum { options } => format!("{value} is not one of {options}"),
        ValidationErrorKind::MaxLength { limit } => format!("{value} is longer than {limit} characters"),
        ValidationErrorKind::MinLength { limit } => format!("{value} is shorter than {limit} characters"),
        ValidationErrorKind::MaxItems { limit } => format!("{value} has more than {limit} items"),
        ValidationErrorKind::MinItems { limit } => {
            format!("{value} has less than {limit} item{}", if *limit == 1 { "" } else { "s" })
        }
        ValidationErrorKind::MaxProperties { limit } => format!("{value} has more than {limit} fields"),
        ValidationErrorKind::Maximum { limit } => format!("{value} is greater than the maximum of {limit}"),
        ValidationErrorKind::Minimum { limit } => format!("{value} is less than the minimum of {limit}"),
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            format!("unknown field(s) {}", unexpected.iter().map(|u| quoted(u)).collect::<Vec<_>>().join(", "))
        }
        _ => error.to_string().chars().take(300).collect(),
    }
}

/// Every pattern of the CRDs, in words. A test holds that none is missing.
fn pattern_in_words(pattern: &str) -> Option<&'static str> {
    use super::common::CRON_PATTERN;
    use super::duration::{DURATION_PATTERN, PROMETHEUS_DURATION_PATTERN};
    Some(match pattern {
        r"^[a-z]([-a-z0-9]*[a-z0-9])?$" => {
            "lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"
        }
        p if p == DURATION_PATTERN => "a duration: digits followed by ms, s, m or h, e.g. 5s, 10m or 1h30m",
        p if p == PROMETHEUS_DURATION_PATTERN => {
            "a Prometheus duration: units largest first, each at most once (y, w, d, h, m, s, ms), e.g. 5m or 1h30m"
        }
        p if p == CRON_PATTERN => {
            "five cron fields (minute hour day-of-month month day-of-week, UTC), a descriptor such as @daily, or @every <duration>"
        }
        r"^[^:\t\n\f\r ]+:[0-9]{1,5}$" => "host:port, e.g. redis-0.redis:6379",
        r"^[0-9]+(b|kb|mb|gb|k|m|g)?$" => {
            "a Redis size: digits and an optional unit b, kb, mb, gb, k, m or g, e.g. 2gb"
        }
        r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$" => {
            "a volume size: a number and an optional Ki, Mi, Gi, Ti, Pi, k, M, G, T or P, e.g. 20Gi"
        }
        r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$" => {
            "a Secret key: letters, digits, '-', '_' and '.', not '.' or '..' and not starting with '..'"
        }
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" => {
            "a Kubernetes object name (Secret, ServiceAccount, PriorityClass): lower-case DNS labels separated by '.', each of letters, digits and '-' and starting and ending with a letter or digit, e.g. referral-mongo"
        }
        r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$" => {
            "a StorageClass name: lower-case DNS labels separated by '.', e.g. fast-ssd"
        }
        r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$" => {
            "an S3 bucket name: lower-case letters, digits, '.' and '-', starting and ending with a letter or digit"
        }
        "^https?://" => "a URL starting with http:// or https://, e.g. https://s3.eu-west-1.amazonaws.com",
        r"^[a-z0-9-]+$" => "an object storage region: lower-case letters, digits and '-', e.g. eu-west-1",
        r"^(AES256|aws:kms)$" => "AES256 or aws:kms",
        r"^[A-Za-z0-9][-._A-Za-z0-9]*$" => {
            "a Redis user name: letters, digits, '-', '_' and '.', starting with a letter or digit"
        }
        "^/" => "a path starting with '/', e.g. /healthz",
        r#"^[^/\\. "$*<>:|?]+$"# => r#"a MongoDB database name: none of / \ . space " $ * < > : | ?"#,
        r"^[^$\x00]+$" => "a collection name: no '$' and no NUL byte",
        r"^[^$/\x00]+$" => "a collection name: no '$', no '/' and no NUL byte",
        r"^[a-zA-Z_][a-zA-Z0-9_]*$" => "a Prometheus name: letters, digits and '_', not starting with a digit",
        r"^[0-9]{8}T[0-9]{6}Z(-[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$" => {
            "a backup name as listed in status.backup.backups, e.g. 20261123T010000Z"
        }
        _ => return None,
    })
}

/// The message of every CEL rule, by its expression.
fn rule_messages() -> &'static BTreeMap<String, String> {
    static MESSAGES: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    MESSAGES.get_or_init(|| {
        fn collect(schema: &Value, out: &mut BTreeMap<String, String>) {
            match schema {
                Value::Object(map) => {
                    for rule in map.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
                        if let (Some(r), Some(m)) = (rule["rule"].as_str(), rule["message"].as_str()) {
                            out.insert(r.to_string(), m.to_string());
                        }
                    }
                    map.values().for_each(|v| collect(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
                _ => {}
            }
        }
        let mut out = BTreeMap::new();
        collect(schema(), &mut out);
        out
    })
}

fn cel_problems(object: &Value, old: Option<&Value>) -> Vec<SpecProblem> {
    let validator = kube_cel::Validator::new();
    match validator.validate(schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| {
                let message = match e.kind {
                    kube_cel::ErrorKind::ValidationFailure => e.message.clone(),
                    // The engine's own words ("Missing argument or target") help no one:
                    // name the rule by its message and say why it could not be checked.
                    _ => match rule_messages().get(&e.rule) {
                        Some(rule) => format!(
                            "{rule} (this rule could not be checked: a value it reads is missing or of another type)"
                        ),
                        None => "a validation rule of the CRD could not be checked on this value".to_string(),
                    },
                };
                SpecProblem { field_path: e.field_path.clone(), message }
            })
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

/// The Kubernetes dialect differs from JSON Schema in ways that matter here:
/// `nullable` (absent in draft 4) becomes a `null` alternative so an explicit
/// `null` passes, as it does in the apiserver; `x-kubernetes-int-or-string`
/// becomes "an integer or a string", which the apiserver enforces and draft 4
/// knows nothing of.
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
            if out.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) && !out.contains_key("type") {
                out.insert("anyOf".into(), serde_json::json!([{"type": "integer"}, {"type": "string"}]));
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
    fn every_pattern_of_both_crds_is_explained_in_words() {
        let restore = serde_json::to_value(
            crate::crd::restore_definition().spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.clone(),
        )
        .unwrap();
        let mut patterns = Vec::new();
        collect_patterns(super::openapi_schema(), &mut patterns);
        collect_patterns(&restore, &mut patterns);
        assert!(patterns.len() >= 10, "{patterns:?}");
        for pattern in patterns {
            assert!(super::pattern_in_words(&pattern).is_some(), "no words for the pattern {pattern}");
        }
    }

    fn collect_patterns(schema: &Value, out: &mut Vec<String>) {
        match schema {
            Value::Object(map) => {
                if let Some(Value::String(p)) = map.get("pattern") {
                    out.push(p.clone());
                }
                map.values().for_each(|v| collect_patterns(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, out)),
            _ => {}
        }
    }

    #[test]
    fn unknown_fields_are_refused_with_a_suggestion() {
        let mut doc = system(json!({"managed": {}}));
        doc["spec"]["workers"][0]["replica"] = json!(3);
        doc["metadata"]["labelz"] = json!({});
        doc["spec"]["mongodb"]["indexes"] = json!([{"collection": "u", "keys": [{"a": 1}], "partialFilterExpression": {"anything": {"$exists": true}}}]);
        let refused = messages(check(&doc, None));
        assert!(
            refused.iter().any(|m| m.starts_with("spec.workers[0].replica: unknown field \"replica\"")
                && m.contains("did you mean \"replicas\"")),
            "{refused:?}"
        );
        assert!(refused.iter().any(|m| m.starts_with("metadata.labelz: unknown field")), "{refused:?}");
        assert_eq!(refused.len(), 2, "free-form documents take any field: {refused:?}");
    }

    #[test]
    fn metadata_is_checked_as_the_apiserver_checks_it() {
        let base = system(json!({"managed": {}}));
        let cases = [
            (json!({"namespace": "referrals"}), "metadata.name: metadata.name is missing"),
            (json!({"name": "main", "namespace": "Bad_NS"}), "metadata.namespace: \"Bad_NS\" is not a namespace name"),
            (json!({"name": "main", "labels": {"bad key": "x"}}), "metadata.labels: \"bad key\" is not a label key"),
            (
                json!({"name": "main", "labels": {"ok": "bad value"}}),
                "metadata.labels.ok: \"bad value\" is not a label value",
            ),
            (json!({"name": "main", "labels": {"ok": 1}}), "metadata.labels.ok: 1 is not of type string"),
            (json!({"name": "main", "annotations": {"a": "x".repeat(300_000)}}), "the annotations hold"),
            (json!({"name": "main", "finalizers": ["bad finalizer"]}), "metadata.finalizers[0]"),
        ];
        for (metadata, expected) in cases {
            let mut doc = base.clone();
            doc["metadata"] = metadata.clone();
            let refused = messages(check(&doc, None));
            assert!(refused.iter().any(|m| m.starts_with(expected) || m.contains(expected)), "{metadata}: {refused:?}");
            assert!(refused.iter().all(|m| m.len() < 600), "short messages: {refused:?}");
        }
    }

    #[test]
    fn messages_explain_patterns_and_never_echo_a_huge_value() {
        let mut doc = system(json!({"managed": {}}));
        doc["spec"]["workers"][0]["name"] = json!("Reward");
        let refused = messages(check(&doc, None));
        assert!(refused.iter().any(|m| m.contains("lower-case letters, digits and '-'")), "{refused:?}");
        doc["spec"]["workers"][0]["name"] = json!("x".repeat(1 << 20));
        let refused = messages(check(&doc, None));
        assert!(refused.iter().all(|m| m.len() < 600), "{:?}", refused.iter().map(String::len).collect::<Vec<_>>());
        assert!(refused.iter().any(|m| m.contains("1048576 characters")), "the size is named instead");
    }

    #[test]
    fn int_or_string_quantities_refuse_other_types() {
        let mut doc = system(json!({"managed": {}}));
        doc["spec"]["workers"][0]["resources"] = json!({"requests": {"cpu": 1, "memory": "1Gi"}});
        assert_eq!(check(&doc, None), Ok(()));
        doc["spec"]["workers"][0]["resources"] = json!({"requests": {"cpu": 0.5}});
        let refused = messages(check(&doc, None));
        assert!(
            refused
                .iter()
                .any(|m| m.starts_with("spec.workers[0].resources.requests.cpu: 0.5 is not of type integer or string")),
            "{refused:?}"
        );
        doc["spec"]["workers"][0]["resources"] = json!({"requests": {"cpu": [1]}});
        assert!(check(&doc, None).is_err());
    }

    #[test]
    fn a_rule_that_cannot_be_evaluated_says_which_rule() {
        let mut doc = system(json!({"managed": {}}));
        doc["metadata"].as_object_mut().unwrap().remove("name");
        let refused = super::cel_problems(&doc, None);
        assert!(!refused.is_empty());
        for problem in refused {
            assert!(!problem.message.contains("Missing argument"), "{problem}");
            assert!(problem.message.contains("could not be checked"), "{problem}");
        }
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
