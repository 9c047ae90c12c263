//! Referenced Secrets, read by name when needed: never listed, never watched, never
//! cached beyond one reconcile (the API server answers from its own cache). Values
//! stay in memory for the dependency probes; only a hash of them leaves this module
//! (into pod templates, so a rotation rolls pods).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, GetParams};
use sha2::{Digest, Sha256};

use crate::crd::{ReferralSystemSpec, SecretKeyRef};

use super::error::Error;

/// The secret values one system needs, with a hash over all of them.
pub struct SecretValues {
    pub mongo_uri: Option<String>,
    pub redis_password: Option<Vec<u8>>,
    /// SHA-256 over every referenced (secret, key, value), hex, cut to 16 characters.
    pub hash: String,
    /// References that could not be resolved, as "Secret NAME key KEY", for status.
    pub missing: Vec<String>,
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a value, at any log level.
        f.debug_struct("SecretValues").field("hash", &self.hash).field("missing", &self.missing).finish()
    }
}

/// The Secret keys a spec refers to: all a re-check needs to read them again
/// without reading the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRefs {
    pub mongo_uri: SecretKeyRef,
    pub redis_password: Option<SecretKeyRef>,
}

impl SecretRefs {
    pub fn of(spec: &ReferralSystemSpec) -> Self {
        Self { mongo_uri: spec.mongodb.uri_secret_ref.clone(), redis_password: spec.redis.password_secret_ref.clone() }
    }

    /// Every reference, in a stable order.
    pub fn all(&self) -> Vec<&SecretKeyRef> {
        let mut refs = vec![&self.mongo_uri];
        refs.extend(self.redis_password.as_ref());
        refs
    }
}

/// Reads the keys `spec` refers to; see [`read_refs`].
pub async fn read(api: &Api<Secret>, spec: &ReferralSystemSpec) -> Result<SecretValues, Error> {
    read_refs(api, &SecretRefs::of(spec)).await
}

/// Reads the referenced keys. A missing Secret or key is reported, not an error;
/// an API failure is.
pub async fn read_refs(api: &Api<Secret>, refs: &SecretRefs) -> Result<SecretValues, Error> {
    let mut secrets: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    for reference in refs.all() {
        if !secrets.contains_key(&reference.name) {
            // From the API server's watch cache (resourceVersion 0), not a quorum read
            // from etcd: a reconcile reads its Secrets every time, a thousand systems
            // re-check every 30 s, and a rotation seen a moment later rolls the pods
            // a moment later.
            let secret = match api.get_with(&reference.name, &GetParams::any()).await {
                Ok(secret) => Some(secret),
                Err(kube::Error::Api(status)) if status.is_not_found() => None,
                Err(source) => return Err(Error::ReadSecret { name: reference.name.clone(), source }),
            };
            secrets.insert(reference.name.clone(), secret);
        }
    }
    let value = |reference: &SecretKeyRef| -> Option<Vec<u8>> {
        secrets.get(&reference.name)?.as_ref()?.data.as_ref()?.get(&reference.key).map(|b| b.0.clone())
    };
    let mut hasher = Sha256::new();
    let mut missing = Vec::new();
    for reference in refs.all() {
        hasher.update(reference.name.as_bytes());
        hasher.update([0]);
        hasher.update(reference.key.as_bytes());
        hasher.update([0]);
        match value(reference) {
            Some(v) => hasher.update(&v),
            None => missing.push(format!("Secret {} key {}", reference.name, reference.key)),
        }
        hasher.update([0xff]);
    }
    let hash: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(SecretValues {
        mongo_uri: value(&refs.mongo_uri).and_then(|v| String::from_utf8(v).ok()),
        redis_password: refs.redis_password.as_ref().and_then(value),
        hash,
        missing,
    })
}
