//! `render`: every child object of the ReferralSystems in a file, as a YAML stream, with
//! no cluster. The same admission rules the apiserver runs (schema and CEL, from the
//! generated CRD) and the validate step run first, so a file `render` accepts is one
//! `kubectl apply` accepts and the operator can build.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use crate::crd::validate::{SpecProblem, validate};
use crate::crd::{GROUP, ReferralSystem, VERSION, admission};
use crate::reconcilers::{BuildContext, build};

/// Why a file could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {document}: cannot be read: {explained}")]
    Yaml { document: usize, source: Box<crate::yaml::ReadError>, explained: String },
    #[error("document {document}: expected apiVersion {GROUP}/{VERSION} and kind ReferralSystem, found {found}")]
    NotAReferralSystem { document: usize, found: String },
    #[error("document {document} ({name}) is invalid:\n{}", list(problems))]
    Invalid { document: usize, name: String, problems: Vec<SpecProblem> },
    #[error("no ReferralSystem found in the input")]
    Empty,
}

fn list(problems: &[SpecProblem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

/// What `render` needs besides the file.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Namespace for objects whose file names none.
    pub default_namespace: String,
    pub context: BuildContext,
}

/// Parses and checks one ReferralSystem document given as JSON.
pub fn parse_system(document: usize, value: Value) -> Result<ReferralSystem, RenderError> {
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != format!("{GROUP}/{VERSION}") || kind != "ReferralSystem" {
        return Err(RenderError::NotAReferralSystem {
            document,
            found: format!("apiVersion {api_version:?}, kind {kind:?}"),
        });
    }
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>").to_string();
    let invalid = |problems| RenderError::Invalid { document, name: name.clone(), problems };
    admission::check(&value, None).map_err(invalid)?;
    // The schema passed, so a type error here would be a gap between schema and
    // types; report it with its path all the same rather than panic.
    serde_path_to_error::deserialize(value)
        .map_err(|e| invalid(vec![SpecProblem { field_path: e.path().to_string(), message: e.inner().to_string() }]))
}

/// Reads render's input, at most [`crate::yaml::MAX_INPUT_BYTES`] of it: a larger
/// stream is refused before it is held in memory whole.
pub fn read_input(reader: impl Read) -> Result<String, RenderReadError> {
    let mut text = String::new();
    let limit = crate::yaml::MAX_INPUT_BYTES as u64;
    reader.take(limit + 1).read_to_string(&mut text).map_err(RenderReadError::Io)?;
    if text.len() as u64 > limit {
        return Err(RenderReadError::TooLarge);
    }
    Ok(text)
}

/// Why render's input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RenderReadError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("it is more than {} bytes; render reads at most that", crate::yaml::MAX_INPUT_BYTES)]
    TooLarge,
}

/// Renders every ReferralSystem in `input` (one or more YAML documents; documents
/// are numbered among those that hold something).
pub fn render(input: &str, options: &RenderOptions) -> Result<String, RenderError> {
    let mut out = String::new();
    let mut rendered = 0;
    // Every child of every system in the file, by (namespace, kind, name): two
    // systems of one namespace must not both want the same object.
    let mut owners: BTreeMap<(String, String, String), (usize, String)> = BTreeMap::new();
    for (index, document) in crate::yaml::documents::<Value>(input).into_iter().enumerate() {
        let number = index + 1;
        let mut value = document.map_err(|source| RenderError::Yaml {
            document: number,
            explained: crate::yaml::explain_in(&source, input),
            source: Box::new(source),
        })?;
        crate::yaml::as_kubectl_sends(&mut value);
        if value.is_null() {
            continue;
        }
        let system = parse_system(number, value)?;
        let namespace = system.metadata.namespace.clone().unwrap_or_else(|| options.default_namespace.clone());
        let name = system.metadata.name.clone().unwrap_or_default();
        let validated = validate(&system, &namespace).map_err(|problems| RenderError::Invalid {
            document: number,
            name,
            problems,
        })?;
        let objects = build(&validated, &options.context).to_json_objects();
        for object in &objects {
            let text = |key: &str| object.pointer(key).and_then(Value::as_str).unwrap_or_default().to_string();
            let key = (text("/metadata/namespace"), text("/kind"), text("/metadata/name"));
            if let Some((other, other_name)) = owners.insert(key.clone(), (number, validated.name.clone()))
                && other != number
            {
                return Err(RenderError::Invalid {
                    document: number,
                    name: validated.name.clone(),
                    problems: vec![SpecProblem {
                        field_path: "metadata.name".into(),
                        message: format!(
                            "the {} {} would also be a child of document {other} ({other_name}) in namespace {}: rename one system or the worker that makes the name",
                            key.1, key.2, key.0
                        ),
                    }],
                });
            }
        }
        for object in objects {
            out.push_str("---\n");
            out.push_str(&crate::yaml::to_string(&object).unwrap_or_default());
        }
        rendered += 1;
    }
    if rendered == 0 {
        return Err(RenderError::Empty);
    }
    Ok(out)
}
