//! The YAML reader (`referral_operator::yaml`, serde-saphyr with `read_options`) reads
//! what `serde_yaml` 0.9 read, the same way: every file of the repository and a corpus
//! of the spellings where YAML readers differ give the same JSON value as
//! `serde_norway` (the serde_yaml fork that writes our YAML), or both refuse them.
//! When strict reading lands (duplicate keys refused, tighter budgets), the cases it
//! means to change move from `SAME` to a list of their own, refused on purpose.

use referral_operator::yaml;
use serde::Deserialize;
use serde_json::Value;

/// Spellings where YAML 1.1, YAML 1.2 and individual readers disagree.
const SAME: &[&str] = &[
    // Booleans: YAML 1.2 core only; the 1.1 words are strings.
    "a: true\nb: True\nc: TRUE\nd: false\ne: yes\nf: no\ng: on\nh: off\ni: y\nj: N\n",
    // Nulls and empty values.
    "a: ~\nb: null\nc: Null\nd:\ne: ''\nf: [~, null, '']\n",
    // Numbers: decimal, signs, octal and hex, leading zeros, underscores, floats.
    "a: 10\nb: -7\nc: +3\nd: 0o17\ne: 0x1F\nf: 0755\ng: 007\nh: 1_000\ni: 1e3\nj: .5\nk: -0.0\nl: 3.\nm: 12e-3\n",
    // Strings that look like other things, quoted and not.
    "a: '1'\nb: \"true\"\nc: 0.1.2\nd: 2026-11-23\ne: 2026-11-23T01:00:00Z\nf: 1:20\ng: 12:30:45\nh: 1h30m\ni: 'ref:'\n",
    "image: example/referral-service:1.4.2\nschedule: 0 3 * * 0\nmemory: 512Mi\ncpu: 250m\nratio: 0.1\n",
    // Block scalars and chomping.
    "a: |\n  one\n  two\nb: |-\n  one\nc: >\n  folded\n  line\n\nd: |+\n  kept\n\ne: >-\n  x\n",
    // Multi-line plain and quoted scalars, escapes.
    "a: one\n  two\nb: \"tab\\there \\u00e9 \\\"q\\\"\"\nc: 'it''s'\n",
    // Flow collections and nesting.
    "a: {b: [1, {c: d}], e: []}\nf: [[], {}]\n",
    // Anchors and aliases; `<<` as serde_yaml read it (an ordinary key).
    "base: &b {x: 1}\nuse: *b\nlist: [&i 5, *i]\nmerged: {<<: *b, y: 2}\n",
    // Duplicate keys: the later one stays, as serde_yaml passed both to the map.
    "a: 1\na: 2\nb: {c: 1, c: 3}\n",
    // Tags the core schema knows.
    "a: !!str 12\nb: !!int '7'\nc: !!float 1\n",
    // Keys that are not strings become strings in JSON, or are refused alike.
    "1: a\ntrue: b\n",
    // Comments and documents.
    "# head\na: 1 # tail\n",
    // Broken YAML is refused by both.
    "spec: [unclosed\n",
    "a: b: c\n",
    "- a\nb: c\n",
    "a: &x 1\nb: *y\n",
    "a:\n\tb: 1\n",
    "- a\n\t- b\n",
];

/// Where serde-saphyr reads what libyaml refused, with what it reads. YAML 1.2 allows
/// a tab as separation after the indentation, and an explicit `!!null` empty scalar
/// is null; libyaml (YAML 1.1) refused both.
const DIFFERENT: &[(&str, &str)] =
    &[("\t- tab\n", r#"["tab"]"#), ("a:\n \tb: 1\n", r#"{"a": {"b": 1}}"#), ("a: !!null ''\n", r#"{"a": null}"#)];

fn saphyr(text: &str) -> Vec<Result<Value, String>> {
    yaml::documents::<Value>(text).into_iter().map(|d| d.map_err(|e| e.to_string())).collect()
}

fn norway(text: &str) -> Vec<Result<Value, String>> {
    let mut out = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        match Value::deserialize(document) {
            // Empty documents are skipped by our reader, which numbers the ones that
            // hold something.
            Ok(Value::Null) => {}
            Ok(value) => out.push(Ok(value)),
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    out
}

/// Both give the same values, or both refuse the text (the messages differ).
fn agree(what: &str, text: &str) -> Result<(), String> {
    let (ours, reference) = (saphyr(text), norway(text));
    let same = ours.len() == reference.len()
        && ours.iter().zip(&reference).all(|(a, b)| match (a, b) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        });
    if same { Ok(()) } else { Err(format!("{what}:\n  ours:      {ours:?}\n  reference: {reference:?}")) }
}

fn repository_files() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "examples",
        "crds",
        "tests/golden",
        "charts/referral-operator",
        "charts/referral-operator/crds",
        "deploy/argocd",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_yaml_file_of_the_repository_reads_as_serde_yaml_read_it() {
    let files = repository_files();
    assert!(files.len() >= 8, "found only {files:?}");
    let broken: Vec<String> = files
        .iter()
        .filter_map(|f| agree(&f.display().to_string(), &std::fs::read_to_string(f).unwrap()).err())
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_spellings_where_readers_differ_read_as_serde_yaml_read_them() {
    let broken: Vec<String> = SAME.iter().filter_map(|text| agree(text, text).err()).collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    for (text, read) in DIFFERENT {
        let expected: Value = serde_json::from_str(read).unwrap();
        assert_eq!(saphyr(text), [Ok(expected)], "{text:?}");
        assert!(norway(text).iter().any(Result::is_err), "{text:?} is no longer a difference");
    }
    // The corpus is not vacuous: it holds values and refusals.
    assert!(SAME.iter().any(|t| saphyr(t).iter().all(Result::is_ok)));
    assert!(SAME.iter().any(|t| saphyr(t).iter().any(Result::is_err)));
}

#[test]
fn writing_is_serde_yaml_s_emitter() {
    let value = serde_json::json!({"a": "yes", "b": "0755", "c": "multi\nline\n", "d": [1, "2"], "e": {}});
    assert_eq!(yaml::to_string(&value).unwrap(), serde_norway::to_string(&value).unwrap());
    assert_eq!(yaml::to_string(&value).unwrap(), "a: yes\nb: '0755'\nc: |\n  multi\n  line\nd:\n- 1\n- '2'\ne: {}\n");
    // What it writes reads back as it was.
    assert_eq!(yaml::from_str::<Value>(&yaml::to_string(&value).unwrap()).unwrap(), value);
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    assert!(yaml::from_str::<Value>(&nested(yaml::MAX_DEPTH + 10)).is_err());
    assert!(yaml::from_str::<Value>(&nested(yaml::MAX_DEPTH - 2)).is_ok());
}
