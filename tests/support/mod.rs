//! Shared by integration tests: finding the external tools a test needs.

/// Whether a test may skip when `tool` is absent. CI installs every tool, so there a
/// missing one is a failure; a developer can opt out with REFOP_ALLOW_MISSING_TOOLS=1.
pub fn tool_or_skip(tool: &str, install_hint: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var("REFOP_ALLOW_MISSING_TOOLS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {tool} not found ({install_hint})");
        return false;
    }
    panic!("{tool} not found: {install_hint}, or set REFOP_ALLOW_MISSING_TOOLS=1 to skip this test");
}

/// The Go yardstick of `tests/reference` (robfig/cron, apimachinery's quantities,
/// sigs.k8s.io/yaml, at the versions Kubernetes builds with), built once per test
/// binary with the Go toolchain the test bed already needs and the Go module proxy.
/// `None` (after saying why) when Go is absent and REFOP_ALLOW_MISSING_TOOLS=1.
#[allow(dead_code)]
pub fn reference_tool() -> Option<std::path::PathBuf> {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !tool_or_skip("go", "Go >= 1.25 on PATH, as the e2e test bed needs") {
                return None;
            }
            let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
            let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reference-go");
            let status = std::process::Command::new("go")
                .args(["build", "-trimpath", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(&source)
                .env("GOFLAGS", "-mod=readonly")
                .env("GOTOOLCHAIN", "local")
                .env("CGO_ENABLED", "0")
                .status()
                .expect("run go build");
            assert!(status.success(), "go build of tests/reference failed");
            Some(out)
        })
        .clone()
}

/// Asks the Go yardstick (`mode` cron, quantity or yaml) about every input; one JSON
/// answer per input, in order.
#[allow(dead_code)]
pub fn ask_reference(tool: &std::path::Path, mode: &str, inputs: &[String]) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = std::process::Command::new(tool)
        .arg(mode)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the reference tool");
    let mut stdin = child.stdin.take().unwrap();
    let lines: String = inputs.iter().map(|i| format!("{}\n", serde_json::to_string(i).unwrap())).collect();
    let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
    let output = child.wait_with_output().expect("reference tool output");
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "the reference tool failed");
    let answers: Vec<serde_json::Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), inputs.len(), "one answer per input");
    answers
}

#[allow(dead_code)]
pub mod corpus;
