//! Small types shared by several parts of the spec.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret in the ReferralSystem's namespace. The operator reads it by name
/// when it needs it and passes it to pods only through `secretKeyRef`; the value is
/// never copied into an object, a log line, an event or the status.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// TLS to a server that the operator and the service's pods connect to: which CA
/// signed the server's certificate, and a client certificate for servers that ask
/// for one. Both come from Secrets; pods get them as files (mounted read-only under
/// `/etc/referral/tls/`), the operator reads them by name for its own probes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret key holding the PEM CA certificate(s) that signed the server's
    /// certificate. Default: the trusted roots of each image and of the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Name of a `kubernetes.io/tls` Secret (keys `tls.crt` and `tls.key`, as
    /// cert-manager writes them) holding a client certificate, for servers that
    /// require one (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub client_certificate_secret_name: Option<String>,
}

/// Key of the certificate in a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Key of the private key in a `kubernetes.io/tls` Secret.
pub const TLS_KEY_KEY: &str = "tls.key";

impl TlsSpec {
    /// The client certificate and key as Secret keys, when a client certificate is set.
    pub fn client_certificate_refs(&self) -> Option<(SecretKeyRef, SecretKeyRef)> {
        let name = self.client_certificate_secret_name.as_ref()?;
        Some((
            SecretKeyRef { name: name.clone(), key: TLS_CERT_KEY.into() },
            SecretKeyRef { name: name.clone(), key: TLS_KEY_KEY.into() },
        ))
    }
}

/// A persistent volume request.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the volume, e.g. `20Gi`. It can grow but never shrink.
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "quantity(self).compareTo(quantity(oldSelf)) >= 0",
         "message": "storage size cannot shrink: a smaller volume would lose data; create a new system or expand the PersistentVolumeClaim instead"}
    ]))]
    pub size: String,
    /// StorageClass of the volume; the cluster default when unset. Cannot be changed
    /// once set, because the existing claim cannot move to another class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf",
         "message": "storageClassName cannot be changed: the existing PersistentVolumeClaim keeps its class; migrate the data to a new system instead"}
    ]))]
    pub storage_class_name: Option<String>,
    /// Delete the PersistentVolumeClaim when the ReferralSystem is deleted. Default
    /// false: data outlives the system unless you say otherwise.
    #[serde(default)]
    pub delete_with_system: bool,
}

/// A 5-field cron schedule (`minute hour day-of-month month day-of-week`) or one of the
/// `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly` macros, interpreted in UTC.
pub const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$";
