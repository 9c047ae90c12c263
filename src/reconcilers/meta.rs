//! Names, labels and owner references every child shares.
//!
//! Names are deterministic and fit Kubernetes' length limits: a name that would be too
//! long is cut and ends in a hash of the full name, so two long names never collide.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

use crate::crd::validate::ValidatedSystem;
use crate::crd::{GROUP, VERSION};

/// `app.kubernetes.io/name` of every child.
pub const APP_NAME: &str = "referral-system";
/// `app.kubernetes.io/managed-by` of every child, and the server-side-apply field manager.
pub const MANAGER: &str = "referral-operator";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Which worker a pod belongs to (component is `worker` for all of them).
pub const LABEL_WORKER: &str = "referral.dev/worker";
/// Pod-template annotation holding a hash of every referenced Secret's data.
pub const ANNOTATION_SECRETS_HASH: &str = "referral.dev/secrets-hash";
/// On a worker Deployment: the image the operator put there. The upgrade gate reads
/// it rather than the container's image, so another manager's edit of the image is
/// drift to revert, not an image change to back up for.
pub const ANNOTATION_WORKER_IMAGE: &str = "referral.dev/image";
/// Pod-template annotation holding a hash of generated configuration.
pub const ANNOTATION_CONFIG_HASH: &str = "referral.dev/config-hash";

/// Longest name for kinds whose name becomes a DNS label (Service, Deployment, ...).
pub const MAX_DNS_LABEL: usize = 63;
/// Longest CronJob name: the controller appends an 11-character suffix to Job names.
pub const MAX_CRONJOB: usize = 52;
/// Longest StatefulSet name: `controller-revision-hash` label values append 11 characters.
pub const MAX_STATEFULSET: usize = 52;

/// `{system}-{suffix}`, cut to `max` with a hash suffix when longer.
pub fn child_name(system: &str, suffix: &str, max: usize) -> String {
    let full = format!("{system}-{suffix}");
    if full.len() <= max {
        return full;
    }
    let hash = short_hash(full.as_bytes());
    let mut keep = max.saturating_sub(hash.len() + 1);
    // Names are ASCII once validated; a char boundary keeps this total regardless.
    while !full.is_char_boundary(keep) {
        keep -= 1;
    }
    let cut = full[..keep].trim_end_matches('-');
    format!("{cut}-{hash}")
}

/// First 10 hex digits of SHA-256: enough to tell names and contents apart.
pub fn short_hash(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// Labels that select one component's pods; never change for a live object.
pub fn selector_labels(system: &ValidatedSystem, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), system.name.clone()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
    ])
}

/// Every label a child carries. The ReferralSystem's own labels (such as a GitOps
/// tool's tracking label) are deliberately not copied.
pub fn labels(system: &ValidatedSystem, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(system, component);
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGER.to_string());
    labels.insert(LABEL_PART_OF.to_string(), APP_NAME.to_string());
    labels
}

/// Labels every child of one system carries; the controller finds children with it.
pub fn system_selector(system_name: &str) -> String {
    format!("{LABEL_NAME}={APP_NAME},{LABEL_INSTANCE}={system_name},{LABEL_MANAGED_BY}={MANAGER}")
}

/// The controller owner reference, when the system came from a cluster (has a uid).
/// A file rendered offline has no uid, and a made-up one would be worse than none.
pub fn owner_references(system: &ValidatedSystem) -> Option<Vec<OwnerReference>> {
    system.uid.as_ref().map(|uid| {
        vec![OwnerReference {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: "ReferralSystem".into(),
            name: system.name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    })
}

/// Metadata of a child: name, namespace, labels, owner reference.
pub fn object_meta(system: &ValidatedSystem, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(system.namespace.clone()),
        labels: Some(labels(system, component)),
        owner_references: owner_references(system),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_long_ones_cut_with_a_hash() {
        assert_eq!(child_name("main", "redis", MAX_STATEFULSET), "main-redis");
        let long = "a".repeat(45);
        let a = child_name(&long, "reward-processor-and-more", MAX_DNS_LABEL);
        let b = child_name(&long, "reward-processor-and-mora", MAX_DNS_LABEL);
        assert!(a.len() <= MAX_DNS_LABEL && b.len() <= MAX_DNS_LABEL);
        assert_ne!(a, b, "names cut to the same prefix must still differ");
        assert_eq!(a, child_name(&long, "reward-processor-and-more", MAX_DNS_LABEL), "deterministic");
        let cron = child_name(&long, "chain-check", MAX_CRONJOB);
        assert!(cron.len() <= MAX_CRONJOB, "{cron}");
        assert!(!cron.contains("--"));
    }
}
