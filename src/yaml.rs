//! YAML in and out, for the whole crate: every file, stream or fixture is read here
//! and every document is written here, so the rules for each live in one place.
//!
//! - **Reading: `serde-saphyr`.** Input is an attack surface (`render -f`, `check
//!   --file`): serde-saphyr is maintained, panic-free, pure Rust, and it has what a
//!   strict reader needs: a budget checked while parsing (depth, nodes, scalar bytes,
//!   documents, aliases and anchors, with an alias-to-anchor ratio against expansion
//!   bombs) and a policy for duplicate keys. [`read_options`] is that policy, and today
//!   it reads as `serde_yaml` 0.9 did (YAML 1.2 core booleans, duplicate keys passed
//!   to the target type, `<<` an ordinary key), with a depth limit of [`MAX_DEPTH`];
//!   `tests/yaml_compat.rs` holds that against the serde_yaml fork below on a corpus.
//!   Strict reading (refusing duplicate keys: `DuplicateKeyPolicy::Error`; tighter
//!   budgets) is a change to [`read_options`] alone.
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

/// How every YAML input is read (see the module docs).
pub fn read_options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.merge_keys = MergeKeyPolicy::AsOrdinary;
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options
}

/// One YAML document as a `T`.
pub fn from_str<T: DeserializeOwned>(input: &str) -> Result<T, ReadError> {
    serde_saphyr::from_str_with_options(input, read_options())
}

/// The documents of a YAML stream that hold something, in order, each as a `T`; empty
/// documents are skipped. After an error in a document the stream ends when the
/// error is in the YAML itself, and goes on with the next document when only the
/// document did not fit `T`.
pub fn documents<T: DeserializeOwned>(input: &str) -> Vec<Result<T, ReadError>> {
    let mut reader = Cursor::new(input.as_bytes());
    serde_saphyr::read_with_options(&mut reader, read_options()).collect()
}

/// `value` as one YAML document (without a leading `---`).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, WriteError> {
    serde_norway::to_string(value)
}
