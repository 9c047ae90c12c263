//! YAML in and out, for the whole crate: every file, stream or fixture is read here
//! and every document is written here, so the rules for each live in one place.
//!
//! - **Reading: `serde-saphyr`.** Input is an attack surface (`render -f`, `check
//!   --file`): serde-saphyr is maintained, panic-free, pure Rust, and it has what a
//!   strict reader needs: a budget checked while parsing (depth, nodes, scalar bytes,
//!   documents, aliases and anchors, with an alias-to-anchor ratio against expansion
//!   bombs) and a policy for duplicate keys. [`read_options`] reads as `kubectl`
//!   does (sigs.k8s.io/yaml, go-yaml v2 underneath), so `render` sees the values the
//!   API server will: YAML 1.1 booleans (`yes`, `on`, `n`), `<<` merge keys, octal
//!   `0755`, `1_000`; a key given twice is refused, as `kubectl --validate=strict`
//!   refuses it (`replicas: 3` then `replicas: 1` is a mistake, not an override);
//!   `.nan` and `.inf`, which JSON cannot carry, are refused; nesting is limited to
//!   [`MAX_DEPTH`] and a stream to [`MAX_INPUT_BYTES`], both checked before any
//!   value is built. `tests/yaml_compat.rs` holds the reading against
//!   sigs.k8s.io/yaml itself on a corpus.
//! - **Writing: `serde_norway`**, the maintained fork of the archived `serde_yaml`
//!   with the same libyaml emitter: the CRDs under `crds/`, `render`'s output and the
//!   golden files stay byte for byte what they were, so a GitOps diff does not churn.
//!   (`serde_yaml_ng` writes the same bytes but still builds on the archived
//!   `unsafe-libyaml`; serde-saphyr's own writer quotes and folds differently.)
//!
//! Unknown fields are a matter of the schema, not of YAML: they are best refused by
//! comparing the parsed value with the CRD's structural schema (what the API server's
//! strict field validation does), since `#[serde(flatten)]` (the job template) rules
//! out serde's `deny_unknown_fields`.

use std::io::Cursor;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_saphyr::{Budget, DuplicateKeyPolicy, MergeKeyPolicy, Options};

/// Why YAML could not be read.
pub type ReadError = serde_saphyr::Error;
/// Why a value could not be written as YAML.
pub type WriteError = serde_norway::Error;

/// The deepest nesting read: serde-saphyr's own default. `serde_yaml` allowed 128,
/// but a value nested 96 deep already overflowed a 2 MiB thread stack (a tokio
/// worker's, a test's) while it was deserialized in a debug build; the operator's
/// own files nest fewer than 20 deep.
pub const MAX_DEPTH: usize = 64;

/// The largest YAML input read: a stream of many objects, each of which etcd
/// limits to 1.5 MiB. Checked before parsing starts.
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// How every YAML input is read (see the module docs).
pub fn read_options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_reader_input_bytes = Some(MAX_INPUT_BYTES);
    budget.max_total_scalar_bytes = MAX_INPUT_BYTES;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    options.merge_keys = MergeKeyPolicy::Merge;
    options.strict_booleans = false;
    options.legacy_octal_numbers = true;
    options.leading_zero_numbers_as_strings = false;
    options.underscored_numbers_as_strings = false;
    options
}

fn too_large(input: &str) -> Option<ReadError> {
    (input.len() > MAX_INPUT_BYTES).then(|| {
        <ReadError as serde::de::Error>::custom(format!(
            "the input is {} bytes; at most {MAX_INPUT_BYTES} are read",
            input.len()
        ))
    })
}

/// A read error in words: which key, where, and what to do; the reader's own advice
/// ("set DuplicateKeyPolicy in Options") is for programmers, not for this file's author.
pub fn explain(error: &ReadError) -> String {
    let at = |location: serde_saphyr::Location| format!("line {}, column {}", location.line(), location.column());
    match error {
        ReadError::DuplicateMappingKey { key, location } => format!(
            "the key {} is given twice (the second at {}): one would silently replace the other, so keep one",
            key.as_deref().map(short).unwrap_or_else(|| "here".into()),
            at(*location)
        ),
        ReadError::NonFiniteFloat { value, location } => format!(
            "{} at {} is not a number JSON can carry (NaN or infinity): write a finite number, or quote it if it is text",
            short(value),
            at(*location)
        ),
        other => other.to_string(),
    }
}

/// [`explain`], with the key the error is at when the error has a place in `input`
/// (a `.nan` says which field it is the value of).
pub fn explain_in(error: &ReadError, input: &str) -> String {
    let text = explain(error);
    let Some(location) = error.location() else { return text };
    let line = usize::try_from(location.line()).unwrap_or(0);
    let column = usize::try_from(location.column()).unwrap_or(0);
    let Some(source) = input.lines().nth(line.saturating_sub(1)) else { return text };
    let before: String = source.chars().take(column.saturating_sub(1)).collect();
    let key = before
        .trim_end()
        .strip_suffix(':')
        .map(|head| {
            head.rsplit(|c: char| c == '{' || c == ',' || c == '-' || c.is_whitespace()).next().unwrap_or_default()
        })
        .map(|key| key.trim_matches(|c| c == '"' || c == '\''))
        .filter(|key| !key.is_empty());
    match key {
        Some(key) => format!("{text} (the value of {})", short(key)),
        None => text,
    }
}

/// A piece of the input quoted, never more than 64 characters of it.
fn short(text: &str) -> String {
    let head: String = text.chars().take(64).collect();
    if head.len() < text.len() { format!("{head:?}…") } else { format!("{head:?}") }
}

/// What kubectl sends for a value read from YAML: Go's JSON encoder writes a whole
/// float below 1e21 without a fraction (`2e3` goes out as `2000`), so the API server
/// sees an integer. Whole floats within 2^53 become integers here too.
pub fn as_kubectl_sends(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= 9_007_199_254_740_992.0
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(as_kubectl_sends),
        Value::Object(map) => map.values_mut().for_each(as_kubectl_sends),
        _ => {}
    }
}

/// One YAML document as a `T`.
pub fn from_str<T: DeserializeOwned>(input: &str) -> Result<T, ReadError> {
    if let Some(error) = too_large(input) {
        return Err(error);
    }
    serde_saphyr::from_str_with_options(input, read_options())
}

/// The documents of a YAML stream that hold something, in order, each as a `T`; empty
/// documents are skipped. After an error in a document the stream ends when the
/// error is in the YAML itself, and goes on with the next document when only the
/// document did not fit `T`.
pub fn documents<T: DeserializeOwned>(input: &str) -> Vec<Result<T, ReadError>> {
    if let Some(error) = too_large(input) {
        return vec![Err(error)];
    }
    let mut reader = Cursor::new(input.as_bytes());
    serde_saphyr::read_with_options(&mut reader, read_options()).collect()
}

/// `value` as one YAML document (without a leading `---`). serde_norway writes YAML
/// 1.2, where `yes`, `on` or `y` need no quotes, but kubectl reads YAML 1.1 and would
/// take them for booleans: a document that does not read back as the value it was
/// written from is written as JSON instead, which every YAML reader reads alike.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, WriteError> {
    let text = serde_norway::to_string(value)?;
    let Ok(original) = serde_json::to_value(value) else { return Ok(text) };
    match from_str::<serde_json::Value>(&text) {
        Ok(read) if same_value(&read, &original) => Ok(text),
        _ => Ok(format!("{}\n", serde_json::to_string_pretty(&original).unwrap_or_default())),
    }
}

/// Equal as JSON values, numbers by value (`1000` and `1000.0` are one number).
fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}
