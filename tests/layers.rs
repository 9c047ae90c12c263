//! The layer rules of DESIGN.md's layout, held by a test: each top-level module of
//! `src/` may use only the modules below it, and the pure layers may not reach the
//! cluster or the databases.
//!
//! ```text
//! cli, main, lib                     anything
//! plugin                             crd, controller
//! controller, commands, render       crd, backup, checks, reconcilers (+ render for commands)
//! reconcilers                        crd, backup, checks    (pure builders and steps: no client)
//! checks                             crd                    (no kube, no k8s-openapi)
//! backup                             crd                    (no kube; k8s-openapi only for jiff)
//! (and every layer: yaml)
//! crd                                yaml                   (no client)
//! yaml                               nothing of the crate   (every YAML read and write)
//! ```
//!
//! The check reads the source text: comments and `#[cfg(test)] mod tests` blocks are
//! left out (tests may build fixtures from any layer), then every `crate::name` path,
//! `use crate::{..}` group and external-crate path is matched against the rules. A
//! new module of `src/` must be given a place here, or this test fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which crate modules each layer may use, besides itself.
fn allowed_modules(layer: &str) -> Option<&'static [&'static str]> {
    Some(match layer {
        "yaml" => &[],
        "crd" => &["yaml"],
        "backup" => &["yaml", "crd"],
        "checks" => &["yaml", "crd"],
        "reconcilers" => &["yaml", "crd", "backup", "checks"],
        "render" => &["yaml", "crd", "reconcilers"],
        "controller" => &["yaml", "crd", "backup", "checks", "reconcilers"],
        "commands" => &["yaml", "crd", "backup", "checks", "reconcilers", "render"],
        "plugin" => &["yaml", "crd", "controller"],
        "cli" | "lib" | "main" => {
            &["yaml", "crd", "backup", "checks", "reconcilers", "render", "controller", "commands", "plugin", "cli"]
        }
        _ => return None,
    })
}

/// Paths a layer may not use at all, as patterns, with why.
fn forbidden_paths(layer: &str) -> &'static [(&'static str, &'static str)] {
    const NO_CLIENT: &[(&str, &str)] = &[
        (r"kube::(Client|client|Api\b|runtime)", "a pure layer has no API client and runs no controller"),
        (r"kube::api::(Api\b|\{[^}]*\bApi\b)", "a pure layer has no API client"),
        // The driver's items, not `crd::mongodb` (the spec's MongoDB section).
        (
            r"\bmongodb::(Client|Database|Collection|Cursor|options|bson|error)\b",
            "a pure layer does not talk to MongoDB",
        ),
        (r"\btokio::", "a pure layer does no I/O"),
    ];
    match layer {
        "crd" | "reconcilers" | "render" => NO_CLIENT,
        "checks" => &[
            (r"\bkube::", "src/checks is the analysis layer and must not import kube"),
            (r"\bk8s_openapi::", "src/checks is the analysis layer and must not import k8s-openapi"),
        ],
        "backup" => &[
            (r"\bkube::", "src/backup works on the backup volume and must not import kube"),
            (r"\bk8s_openapi::(api|apimachinery)", "src/backup must not use Kubernetes objects"),
        ],
        _ => &[],
    }
}

/// The layer a source file belongs to: its top-level module.
fn layer_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// The code of a file without comments and without its test module.
fn code_of(text: &str) -> String {
    let module = regex::Regex::new(r"^\s*(pub(\([a-z]+\))?\s+)?mod\s").unwrap();
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            // A test module (inline or `#[path]`) ends the code that ships; the
            // test modules of this crate are always last in their file.
            let rest: Vec<&str> = lines.clone().take(2).collect();
            if rest.iter().any(|l| module.is_match(l) || l.trim_start().starts_with("#[path")) {
                break;
            }
        }
        let code = match line.find("//") {
            // `//` inside a string literal (a URL) is rare in these modules and only
            // ever cuts code off, which can hide a use but never invent one.
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every module of the crate a piece of code names: `crate::x`, and the first names
/// of a `crate::{x, y::z}` group.
fn crate_modules(code: &str) -> Vec<String> {
    let path = regex::Regex::new(r"\bcrate::([a-z_][a-z0-9_]*)").unwrap();
    let group = regex::Regex::new(r"\bcrate::\{([^}]*)\}").unwrap();
    let mut found: Vec<String> = path.captures_iter(code).map(|c| c[1].to_string()).collect();
    for captures in group.captures_iter(code) {
        for item in captures[1].split(',') {
            let name = item.trim().split("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                found.push(name.to_string());
            }
        }
    }
    found
}

/// What `code`, in `layer`, does against the rules.
fn violations(layer: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(allowed) = allowed_modules(layer) else {
        return vec![format!("module {layer} has no place in the layer rules of tests/layers.rs")];
    };
    for module in crate_modules(code) {
        if module != layer && !allowed.contains(&module.as_str()) {
            out.push(format!("{layer} uses crate::{module} (allowed: {allowed:?})"));
        }
    }
    for (pattern, why) in forbidden_paths(layer) {
        if let Some(found) = regex::Regex::new(pattern).unwrap().find(code) {
            out.push(format!("{layer} uses {}: {why}", found.as_str()));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut broken: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let layer = layer_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let found = violations(&layer, &code_of(&text));
        if !found.is_empty() {
            broken.insert(file.strip_prefix(&src).unwrap().display().to_string(), found);
        }
    }
    assert!(files.len() > 50, "found only {} source files under {}", files.len(), src.display());
    assert!(broken.is_empty(), "layer rules broken (see tests/layers.rs):\n{broken:#?}");
}

/// The checker itself: each kind of breach is found, and allowed uses are not.
#[test]
fn the_checker_finds_forbidden_uses() {
    assert_eq!(
        violations("checks", "use kube::Api;\n"),
        ["checks uses kube::: src/checks is the analysis layer and must not import kube"]
    );
    assert!(violations("checks", "use k8s_openapi::jiff::Timestamp;\n")[0].contains("k8s-openapi"));
    assert_eq!(
        violations("controller", "use crate::cli::DEFAULT;\n"),
        ["controller uses crate::cli (allowed: [\"yaml\", \"crd\", \"backup\", \"checks\", \"reconcilers\"])"]
    );
    assert!(violations("reconcilers", "use crate::{crd::X, commands::backup::Y};\n")[0].contains("crate::commands"));
    assert!(violations("reconcilers", "let api: kube::Api<Job> = todo!();\n")[0].contains("kube::Api"));
    assert!(violations("reconcilers", "use kube::api::{DynamicObject, Api};\n")[0].contains("no API client"));
    assert!(violations("render", "use kube::runtime::watcher;\n")[0].contains("runs no controller"));
    assert!(violations("reconcilers", "use mongodb::Client;\n")[0].contains("MongoDB"));
    assert!(violations("crd", "pub use mongodb::{ChainModel, MongoSpec};\n").is_empty(), "crd's own module");
    assert!(violations("backup", "use k8s_openapi::api::batch::v1::Job;\n")[0].contains("Kubernetes objects"));
    assert!(violations("newlayer", "")[0].contains("no place"));
    // Allowed: the layers below, k8s-openapi's time types in backup, comments, tests.
    assert!(violations("controller", "use crate::reconcilers::build;\nuse crate::crd::X;\n").is_empty());
    assert!(violations("backup", "use k8s_openapi::jiff::Timestamp;\n").is_empty());
    let commented = code_of("// use crate::cli::X;\nfn f() {}\n#[cfg(test)]\nmod tests {\n use crate::cli::Y;\n}\n");
    assert!(violations("crd", &commented).is_empty(), "{commented}");
    let shared = code_of("fn f() {}\n#[cfg(test)]\npub(crate) mod tests {\n use crate::cli::Y;\n}\n");
    assert!(violations("crd", &shared).is_empty(), "{shared}");
    let not_tests = code_of("#[cfg(test)]\nconst X: u8 = 1;\nuse crate::cli::Y;\n");
    assert!(!violations("crd", &not_tests).is_empty(), "only a test module ends the scan: {not_tests}");
}
