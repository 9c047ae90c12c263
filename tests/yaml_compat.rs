//! The YAML reader (`referral_operator::yaml`, serde-saphyr with `read_options`) reads
//! what kubectl reads, the same way: every file of the repository and a corpus of the
//! spellings where YAML readers differ give the same JSON value as sigs.k8s.io/yaml
//! (go-yaml v2, kubectl's reader; through the Go yardstick of `tests/reference`), or
//! both refuse them. The few places where it deliberately or unavoidably reads
//! otherwise are listed in [`DIFFERENT`], each with the reason.

mod support;

use referral_operator::yaml;
use serde_json::Value;

/// Spellings where YAML 1.1, YAML 1.2 and individual readers disagree.
const SAME: &[&str] = &[
    // Booleans: YAML 1.1, as kubectl reads them.
    "a: true\nb: True\nc: TRUE\nd: false\ne: yes\nf: no\ng: on\nh: off\ni: y\nj: N\nk: Yes\nl: OFF\n",
    // Nulls and empty values.
    "a: ~\nb: null\nc: Null\nd:\ne: ''\nf: [~, null, '']\n",
    // Numbers: decimal, signs, octal and hex, leading zeros, underscores, floats.
    "a: 10\nb: -7\nc: +3\nd: 0o17\ne: 0x1F\nf: 0755\ng: 007\nh: 1_000\ni: 1e3\nj: .5\nk: -0.0\nl: 3.\nm: 12e-3\n",
    // Strings that look like other things, quoted and not.
    "a: '1'\nb: \"true\"\nc: 0.1.2\nd: 2026-11-23\nf: 1:20\nh: 1h30m\ni: 'ref:'\nj: 'yes'\n",
    "image: example/referral-service:1.4.2\nschedule: 0 3 * * 0\nmemory: 512Mi\ncpu: 250m\nratio: 0.1\n",
    // Block scalars and chomping.
    "a: |\n  one\n  two\nb: |-\n  one\nc: >\n  folded\n  line\n\nd: |+\n  kept\n\ne: >-\n  x\n",
    // Multi-line plain and quoted scalars, escapes.
    "a: one\n  two\nb: \"tab\\there \\u00e9 \\\"q\\\"\"\nc: 'it''s'\n",
    // Flow collections and nesting.
    "a: {b: [1, {c: d}], e: []}\nf: [[], {}]\n",
    // Anchors, aliases and merge keys (kubectl merges `<<`).
    "base: &b {x: 1}\nuse: *b\nlist: [&i 5, *i]\nmerged: {<<: *b, z: 2}\nover: {<<: *b, x: 3}\n",
    // Tags the core schema knows.
    "a: !!str 12\nb: !!int '7'\nc: !!float 1\n",
    // Comments.
    "# head\na: 1 # tail\n",
    // Broken YAML and values JSON cannot carry are refused by both.
    "spec: [unclosed\n",
    "a: b: c\n",
    "- a\nb: c\n",
    "a: &x 1\nb: *y\n",
    "a:\n\tb: 1\n",
    "a: .nan\n",
    "a: [.inf]\n",
];

/// Where we read otherwise than kubectl, and why.
const DIFFERENT: &[(&str, &str, &str)] = &[
    // A key given twice: kubectl's plain reader keeps the last, its strict
    // validation and the API server's strict decoding refuse it, and so do we.
    ("a: 1\na: 2\n", "refused", "a duplicate key is refused, as --validate=strict refuses it"),
    ("b: {c: 1, c: 3}\n", "refused", "a duplicate key is refused, as --validate=strict refuses it"),
    // go-yaml v2 matches the YAML 1.1 boolean words in three spellings only.
    ("f: yEs\n", r#"{"f": true}"#, "serde-saphyr matches YAML 1.1 booleans case-insensitively"),
    // go-yaml v2 turns the key `y` into the boolean true, then the string "true".
    ("y: 2\n", r#"{"y": 2}"#, "a mapping key stays the text it is"),
    // YAML 1.2 allows a tab as separation after the indentation; go-yaml v2 does not.
    ("\t- tab\n", r#"["tab"]"#, "YAML 1.2 tab separation"),
];

fn ours(text: &str) -> Result<Value, String> {
    yaml::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// Equal as JSON, numbers by value (Go writes 1e3 as 1000).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// kubectl's reading of each text: its JSON, or an error.
fn kubectl_reads(texts: &[String]) -> Option<Vec<Result<Value, String>>> {
    let tool = support::reference_tool()?;
    Some(
        support::ask_reference(&tool, "yaml", texts)
            .into_iter()
            .map(|a| match a["error"].as_str() {
                Some(e) => Err(e.to_string()),
                None => Ok(serde_json::from_str(a["value"].as_str().unwrap_or("null")).unwrap()),
            })
            .collect(),
    )
}

fn agree(what: &str, ours: &Result<Value, String>, kubectl: &Result<Value, String>) -> Result<(), String> {
    let agreed = match (ours, kubectl) {
        (Ok(a), Ok(b)) => same(a, b),
        (Err(_), Err(_)) => true,
        _ => false,
    };
    if agreed { Ok(()) } else { Err(format!("{what}:\n  ours:    {ours:?}\n  kubectl: {kubectl:?}")) }
}

fn repository_documents() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents = Vec::new();
    for dir in [
        "examples",
        "crds",
        "tests/golden",
        "charts/referral-operator",
        "charts/referral-operator/crds",
        "deploy/argocd",
    ] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            // The repository's streams separate documents with a bare `---` line.
            for (i, document) in text.split("\n---\n").enumerate() {
                let document = document.strip_prefix("---\n").unwrap_or(document);
                if !document.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
                    documents.push((format!("{} document {}", path.display(), i + 1), document.to_string()));
                }
            }
        }
    }
    documents
}

#[test]
fn every_yaml_file_of_the_repository_reads_as_kubectl_reads_it() {
    let documents = repository_documents();
    assert!(documents.len() >= 8, "found only {}", documents.len());
    let texts: Vec<String> = documents.iter().map(|(_, t)| t.clone()).collect();
    let Some(kubectl) = kubectl_reads(&texts) else { return };
    let broken: Vec<String> = documents
        .iter()
        .zip(&kubectl)
        .filter_map(|((what, text), theirs)| agree(what, &ours(text), theirs).err())
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_spellings_where_readers_differ_read_as_kubectl_reads_them() {
    let texts: Vec<String> = SAME.iter().map(|t| t.to_string()).collect();
    let Some(kubectl) = kubectl_reads(&texts) else { return };
    let broken: Vec<String> =
        SAME.iter().zip(&kubectl).filter_map(|(text, theirs)| agree(text, &ours(text), theirs).err()).collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    // The corpus is not vacuous: it holds values and refusals.
    assert!(SAME.iter().any(|t| ours(t).is_ok()));
    assert!(SAME.iter().any(|t| ours(t).is_err()));
    assert_eq!(ours("e: yes\nf: 0755\ng: 1_000\n").unwrap(), serde_json::json!({"e": true, "f": 493, "g": 1000}));
}

#[test]
fn the_differences_are_the_documented_ones() {
    let texts: Vec<String> = DIFFERENT.iter().map(|(t, _, _)| t.to_string()).collect();
    let Some(kubectl) = kubectl_reads(&texts) else { return };
    for ((text, read, why), theirs) in DIFFERENT.iter().zip(kubectl) {
        let mine = ours(text);
        match *read {
            "refused" => assert!(mine.is_err(), "{text:?} ({why}): {mine:?}"),
            json => assert_eq!(mine, Ok(serde_json::from_str::<Value>(json).unwrap()), "{text:?} ({why})"),
        }
        assert!(agree(text, &mine, &theirs).is_err() || *read == "refused", "{text:?} is no longer a difference");
    }
}

#[test]
fn writing_is_serde_yaml_s_emitter_unless_kubectl_would_misread_it() {
    let value = serde_json::json!({"a": "x", "b": "0755", "c": "multi\nline\n", "d": [1, "2"], "e": {}});
    assert_eq!(yaml::to_string(&value).unwrap(), serde_norway::to_string(&value).unwrap());
    assert_eq!(yaml::to_string(&value).unwrap(), "a: x\nb: '0755'\nc: |\n  multi\n  line\nd:\n- 1\n- '2'\ne: {}\n");
    // serde_norway writes `yes` and `y` bare; kubectl would read booleans. Such a
    // document is written as JSON, which reads back as it was everywhere.
    for risky in ["yes", "on", "y", "N", "Off"] {
        let value = serde_json::json!({"env": [{"name": "FLAG", "value": risky}]});
        let text = yaml::to_string(&value).unwrap();
        assert_eq!(yaml::from_str::<Value>(&text).unwrap(), value, "{text}");
        let Some(kubectl) = kubectl_reads(std::slice::from_ref(&text)) else { return };
        assert_eq!(kubectl[0].as_ref().ok(), Some(&value), "kubectl reads {text:?} back");
    }
}

#[test]
fn nesting_deeper_than_the_limit_and_oversized_input_are_refused() {
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    assert!(yaml::from_str::<Value>(&nested(yaml::MAX_DEPTH + 10)).is_err());
    assert!(yaml::from_str::<Value>(&nested(yaml::MAX_DEPTH - 2)).is_ok());
    // A million levels is refused at once, not parsed for minutes.
    let started = std::time::Instant::now();
    assert!(yaml::from_str::<Value>(&nested(1_000_000)).is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    let huge = format!("a: '{}'\n", "x".repeat(yaml::MAX_INPUT_BYTES));
    let error = yaml::from_str::<Value>(&huge).unwrap_err().to_string();
    assert!(error.contains("at most"), "{error}");
    assert_eq!(yaml::documents::<Value>(&huge).len(), 1);
}
