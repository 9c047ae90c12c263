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
