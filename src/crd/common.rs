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
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253), pattern(r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"))]
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
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
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
    #[schemars(length(max = 64), pattern(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "quantity(self).isGreaterThan(quantity('0'))",
         "message": "storage size must be above zero: Kubernetes refuses a volume claim for nothing; give a size such as 1Gi"},
        {"rule": "quantity(self).compareTo(quantity(oldSelf)) >= 0",
         "message": "storage size cannot shrink: a smaller volume would lose data; create a new system or expand the PersistentVolumeClaim instead"}
    ]))]
    pub size: String,
    /// StorageClass of the volume; the cluster default when unset. Cannot be changed
    /// once set, because the existing claim cannot move to another class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), pattern(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$"))]
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

/// The shape of a schedule the schema checks: five fields (`minute hour day-of-month
/// month day-of-week`), a descriptor (`@daily`, ...) or `@every <duration>`, in UTC.
/// `src/crd/cron.rs` reads it as Kubernetes does. White space is spelled out, not
/// `\s`: Go's `\s` (the API server's) is ASCII only, JavaScript's and Rust's are not.
pub const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every [^\t\n\f\r ]+|([^\t\n\f\r ]+[\t\n\f\r ]+){4}[^\t\n\f\r ]+)$";

/// Quotes a value for a message, cut to a readable length: a message never echoes
/// a megabyte-long value back.
pub fn quoted(text: &str) -> String {
    const MAX: usize = 64;
    let count = text.chars().count();
    if count <= MAX {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head:?}… ({count} characters)")
    }
}
