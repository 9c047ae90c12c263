//! The one identity the system's own Jobs run as: the chain check, the backups, the
//! restore. They all do the same thing with the API (read their ReferralSystem, patch
//! that one object's status), so they share one ServiceAccount, Role and RoleBinding
//! scoped to that object by name; three copies per system cost three times the
//! writes and RBAC checks for no difference in what each may do.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use crate::crd::GROUP;
use crate::crd::validate::ValidatedSystem;

use super::Children;
use super::meta::{MAX_DNS_LABEL, child_name, object_meta};

/// `app.kubernetes.io/component` of the identity objects.
pub const COMPONENT: &str = "jobs";

/// Name of the ServiceAccount, Role and RoleBinding.
pub fn identity_name(system: &ValidatedSystem) -> String {
    child_name(&system.name, "jobs", MAX_DNS_LABEL)
}

/// Adds the ServiceAccount (no token unless a pod asks for one), the Role and its
/// binding.
pub fn build(system: &ValidatedSystem, children: &mut Children) {
    let name = identity_name(system);
    children.service_accounts.push(ServiceAccount {
        metadata: object_meta(system, name.clone(), COMPONENT),
        // Pods mount a token only where they talk to the API (see each builder).
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    });
    let this_system = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![GROUP.into()]),
        resources: Some(vec![resource.into()]),
        resource_names: Some(vec![system.name.clone()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    children.roles.push(Role {
        metadata: object_meta(system, name.clone(), COMPONENT),
        rules: Some(vec![
            this_system("referralsystems", &["get"]),
            this_system("referralsystems/status", &["get", "patch"]),
        ]),
    });
    children.role_bindings.push(RoleBinding {
        metadata: object_meta(system, name.clone(), COMPONENT),
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: name.clone() },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(system.namespace.clone()),
            ..Subject::default()
        }]),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ReferralSystem;
    use crate::crd::validate::validate;

    #[test]
    fn the_jobs_may_read_their_system_and_patch_its_status_and_nothing_else() {
        let object: ReferralSystem = crate::yaml::from_str(
            "apiVersion: referral.dev/v1alpha1\nkind: ReferralSystem\nmetadata: {name: main, namespace: ns}\nspec:\n  image: app:1\n  mongodb: {uriSecretRef: {name: db, key: uri}, database: app}\n  redis: {external: {host: redis}}\n  workers: [{name: api}]\n",
        )
        .unwrap();
        let system = validate(&object, "ns").unwrap();
        let mut children = Children::default();
        build(&system, &mut children);
        assert_eq!(children.service_accounts.len(), 1);
        assert_eq!(children.service_accounts[0].automount_service_account_token, Some(false));
        let rules = children.roles[0].rules.as_ref().unwrap();
        let granted: Vec<(String, String, Vec<String>)> = rules
            .iter()
            .flat_map(|r| {
                let names = r.resource_names.clone().unwrap();
                r.resources.clone().unwrap().into_iter().map(move |res| (res, names.join(","), r.verbs.clone()))
            })
            .collect();
        assert_eq!(
            granted,
            [
                ("referralsystems".to_string(), "main".to_string(), vec!["get".to_string()]),
                (
                    "referralsystems/status".to_string(),
                    "main".to_string(),
                    vec!["get".to_string(), "patch".to_string()]
                ),
            ]
        );
        let binding = &children.role_bindings[0];
        assert_eq!(binding.role_ref.name, "main-jobs");
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
            ("ServiceAccount", "main-jobs", Some("ns"))
        );
    }
}
