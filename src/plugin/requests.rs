//! The writes the plugin makes, as pure values: JSON merge patches that touch one
//! annotation or `spec.paused` and nothing else. The run-now annotations are the
//! controller's contract ([`crate::controller::requests`]): a new value asks for one
//! run.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

pub use crate::controller::requests::RunNow;

/// What the plugin says about a run it asked for. The request itself (the
/// annotations, [`RunNow`]) is the controller's contract.
pub(crate) trait RunNowWording {
    /// What failed, for error messages.
    fn operation(self) -> &'static str;
    fn done(self) -> &'static str;
    fn job(self) -> &'static str;
}

impl RunNowWording for RunNow {
    fn operation(self) -> &'static str {
        match self {
            RunNow::Backup => "requesting a backup",
            RunNow::Check => "requesting a chain check",
        }
    }

    fn done(self) -> &'static str {
        match self {
            RunNow::Backup => "backup requested",
            RunNow::Check => "chain check requested",
        }
    }

    fn job(self) -> &'static str {
        match self {
            RunNow::Backup => "backup",
            RunNow::Check => "chain-check",
        }
    }
}

/// The annotation value: the request time in RFC 3339, whole seconds, UTC. Any new
/// value triggers one run; a time also tells a person when it was asked for.
pub fn token(now: Timestamp) -> String {
    Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

/// Merge patch that sets the run-now annotation to `token`, leaving every other
/// annotation as it is.
pub fn run_now_patch(run: RunNow, token: &str) -> Value {
    json!({ "metadata": { "annotations": { run.annotation(): token } } })
}

/// Merge patch that sets `spec.paused` and nothing else.
pub fn paused_patch(paused: bool) -> Value {
    json!({ "spec": { "paused": paused } })
}

/// The GitOps tool that manages the object, if its metadata says so: then a manual
/// change to spec is undone at the next sync.
pub fn gitops_manager(
    annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> Option<&'static str> {
    if annotations.contains_key("argocd.argoproj.io/tracking-id") || labels.contains_key("argocd.argoproj.io/instance")
    {
        return Some("Argo CD");
    }
    if labels.keys().any(|k| k.starts_with("kustomize.toolkit.fluxcd.io/") || k.starts_with("helm.toolkit.fluxcd.io/"))
    {
        return Some("Flux");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_now_patches_touch_one_annotation_only() {
        assert_eq!(
            run_now_patch(RunNow::Check, "2025-06-03T10:00:00Z"),
            json!({"metadata": {"annotations": {"referral.dev/check-now": "2025-06-03T10:00:00Z"}}})
        );
        assert_eq!(
            run_now_patch(RunNow::Backup, "t"),
            json!({"metadata": {"annotations": {"referral.dev/backup-now": "t"}}})
        );
    }

    #[test]
    fn the_token_is_rfc3339_utc_at_whole_seconds() {
        let now: Timestamp = "2025-06-03T10:00:00.987654321Z".parse().unwrap();
        let token = token(now);
        assert_eq!(token, "2025-06-03T10:00:00Z");
        assert_eq!(token.parse::<Timestamp>().unwrap().as_second(), now.as_second());
    }

    #[test]
    fn pause_and_resume_set_spec_paused_only() {
        assert_eq!(paused_patch(true), json!({"spec": {"paused": true}}));
        assert_eq!(paused_patch(false), json!({"spec": {"paused": false}}));
    }

    #[test]
    fn gitops_managed_objects_are_recognised() {
        let none = BTreeMap::new();
        let with = |k: &str| BTreeMap::from([(k.to_string(), "x".to_string())]);
        assert_eq!(gitops_manager(&with("argocd.argoproj.io/tracking-id"), &none), Some("Argo CD"));
        assert_eq!(gitops_manager(&none, &with("argocd.argoproj.io/instance")), Some("Argo CD"));
        assert_eq!(gitops_manager(&none, &with("kustomize.toolkit.fluxcd.io/name")), Some("Flux"));
        assert_eq!(gitops_manager(&none, &with("app.kubernetes.io/instance")), None);
    }
}
