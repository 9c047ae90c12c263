//! The restricted Pod Security Standard, applied to every pod the operator creates:
//! one container builder and one pod builder that every worker, job and CronJob pod
//! starts from (Redis's StatefulSet, which runs as the image's own user, takes the
//! two security contexts alone).

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, LocalObjectReference, PodSecurityContext, PodSpec, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};

use crate::crd::validate::ValidatedSystem;

/// Default user for the service's pods; images whose user is root still start
/// under `runAsNonRoot` because a numeric user is set.
pub const DEFAULT_USER: i64 = 1000;

/// Name of the scratch volume every restricted pod mounts at `/tmp`: the root
/// filesystem is read-only.
pub const TMP_VOLUME: &str = "tmp";

/// Pod-level context: non-root, RuntimeDefault seccomp, volumes writable by the group.
pub fn pod_security(user: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        fs_group: Some(user),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..PodSecurityContext::default()
    }
}

/// Container-level context: no privilege escalation, no capabilities, read-only root.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..SecurityContext::default()
    }
}

/// The `/tmp` mount of [`TMP_VOLUME`].
pub fn tmp_mount() -> VolumeMount {
    VolumeMount { name: TMP_VOLUME.into(), mount_path: "/tmp".into(), ..VolumeMount::default() }
}

/// The [`TMP_VOLUME`] itself: an empty directory.
pub fn tmp_volume() -> Volume {
    Volume { name: TMP_VOLUME.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() }
}

/// A container that meets the restricted standard, with a writable `/tmp`. Callers
/// fill in what it runs with struct update syntax; a container with more mounts
/// lists [`tmp_mount`] among them.
pub fn restricted_container(name: impl Into<String>, image: impl Into<String>) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![tmp_mount()]),
        ..Container::default()
    }
}

/// A pod of `containers` that meets the restricted standard as [`DEFAULT_USER`], with
/// no API token mounted, the system's image pull secrets and the [`TMP_VOLUME`].
/// Callers that need an identity or more volumes set them with struct update syntax.
pub fn restricted_pod(system: &ValidatedSystem, containers: Vec<Container>) -> PodSpec {
    PodSpec {
        automount_service_account_token: Some(false),
        security_context: Some(pod_security(DEFAULT_USER)),
        image_pull_secrets: pull_secrets(system),
        containers,
        volumes: Some(vec![tmp_volume()]),
        ..PodSpec::default()
    }
}

/// `spec.imagePullSecrets`, absent when empty.
pub fn pull_secrets(system: &ValidatedSystem) -> Option<Vec<LocalObjectReference>> {
    let secrets = &system.spec.image_pull_secrets;
    (!secrets.is_empty()).then(|| secrets.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::validate;

    #[test]
    fn the_builders_give_restricted_pods_with_a_writable_tmp() {
        let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/full.yaml")).unwrap();
        let parsed: ReferralSystem = crate::yaml::from_str(&yaml).unwrap();
        let system = validate(&parsed, "referrals").unwrap();
        let container = restricted_container("c", "image:1");
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert_eq!(container.volume_mounts.as_deref(), Some(&[tmp_mount()][..]));
        let pod = restricted_pod(&system, vec![container]);
        assert_eq!(pod.automount_service_account_token, Some(false), "no API token unless asked for");
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        assert_eq!(pod.volumes.as_deref(), Some(&[tmp_volume()][..]));
        assert_eq!(pod.image_pull_secrets, pull_secrets(&system));
    }
}
