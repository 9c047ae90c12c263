//! The corpus of `tests/corpus`: ReferralSystems that must be refused (`invalid/`,
//! each with the layer that refuses it and the field the refusal names) and odd ones
//! that must be accepted (`valid/`). `tests/invalid_specs.rs` runs them through
//! `render`; `tests/e2e/differential.rs` through a real API server and the operator.

use std::path::{Path, PathBuf};

/// One file of the corpus.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: PathBuf,
    /// The file name without its number and extension.
    pub slug: String,
    /// `apiserver` (admission refuses it), `child` (the API server refuses a child
    /// the operator would build from it, so the operator refuses it first) or
    /// `operator` (the operator's own rule). Empty for valid cases.
    pub refused_by: String,
    /// The field the refusal must name.
    pub field: String,
    /// Why the API server's own refusal cannot name the field, when it cannot (its
    /// YAML-to-JSON step fails before any field is known); empty otherwise. `render`
    /// must still name it.
    pub apiserver_unnamed: String,
    pub why: String,
    /// The document, placeholders expanded.
    pub text: String,
}

fn header(text: &str, key: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
        .unwrap_or_default()
        .to_string()
}

/// `{{repeat C N}}` stands for the character C N times (large values stay out of git).
fn expand(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{repeat ") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("an unclosed {{repeat") + start;
        let mut parts = rest[start + 9..end].split(' ');
        let (c, n) = (parts.next().unwrap(), parts.next().unwrap().parse::<usize>().unwrap());
        out.push_str(&c.repeat(n));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    // The header line that explains the placeholder must not repeat it.
    out
}

fn cases(dir: &str) -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .map(|file| {
            let raw = std::fs::read_to_string(&file).unwrap();
            let body: String = raw.lines().skip_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
            let stem = file.file_stem().unwrap().to_string_lossy().to_string();
            Case {
                slug: stem.split_once('-').map(|(_, s)| s.to_string()).unwrap_or(stem),
                refused_by: header(&raw, "refused-by"),
                field: header(&raw, "field"),
                apiserver_unnamed: header(&raw, "apiserver-unnamed"),
                why: if dir == "valid" { header(&raw, "accepted") } else { header(&raw, "why") },
                text: expand(&body),
                file,
            }
        })
        .collect()
}

/// Every case that must be refused.
pub fn invalid_cases() -> Vec<Case> {
    cases("invalid")
}

/// Every odd case that must be accepted.
pub fn valid_cases() -> Vec<Case> {
    cases("valid")
}

/// Whether a refusal's text names `field`: the whole path, or (for a message that
/// quotes only the key, as YAML read errors and the API server's namespace check do,
/// or names it in a Go type, as `ObjectMeta.labels`) its last part.
pub fn names_field(text: &str, field: &str) -> bool {
    let last = field.rsplit('.').next().unwrap_or(field);
    let last = last.split('[').next().unwrap_or(last);
    text.contains(field)
        || text.contains(&format!("\"{last}\""))
        || text.contains(&format!(" {last}"))
        || text.contains(&format!(".{last} "))
}
