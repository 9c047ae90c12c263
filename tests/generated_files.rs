//! Generated files are checked in; these tests fail when one is stale. Regenerate with
//! `UPDATE_GENERATED=1 cargo test --test generated_files`.

use std::path::Path;

use referral_operator::cli::DEFAULT_OPERATOR_IMAGE;
use referral_operator::reconcilers::BuildContext;
use referral_operator::render::{RenderOptions, render};

fn check(path: &str, expected: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{} cannot be read ({e}); run UPDATE_GENERATED=1 cargo test --test generated_files", path.display())
    });
    if actual != expected {
        let line = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| actual.lines().count().min(expected.lines().count()) + 1, |i| i + 1);
        panic!(
            "{} is stale (first difference at line {line}); run UPDATE_GENERATED=1 cargo test --test generated_files and review the diff",
            path.display()
        );
    }
}

#[test]
fn crd_yaml_is_current() {
    check("crds/referralsystems.referral.dev.yaml", &referral_operator::crd::definition_yaml());
}

#[test]
fn restore_crd_yaml_is_current() {
    check("crds/referralrestores.referral.dev.yaml", &referral_operator::crd::restore_definition_yaml());
}

fn rendered(example: &str) -> String {
    let input = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(example)).unwrap();
    let options = RenderOptions {
        default_namespace: "default".into(),
        context: BuildContext {
            operator_image: DEFAULT_OPERATOR_IMAGE.into(),
            secrets_hash: None,
            operator_pods: None,
        },
    };
    render(&input, &options).unwrap_or_else(|e| panic!("{example}: {e}"))
}

#[test]
fn render_of_the_minimal_example_matches_its_snapshot() {
    check("tests/golden/minimal.rendered.yaml", &rendered("examples/minimal.yaml"));
}

#[test]
fn render_of_the_full_example_matches_its_snapshot() {
    check("tests/golden/full.rendered.yaml", &rendered("examples/full.yaml"));
}
