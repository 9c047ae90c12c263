//! Referenced Secrets, read by name when needed: never listed, never watched, never
//! cached beyond one reconcile (the API server answers from its own cache). Values
//! stay in memory for the dependency probes; only a keyed hash of them leaves this
//! module (into pod templates, so a rotation rolls pods). The hash is an HMAC-SHA-256
//! under a key the operator reads from a file (the chart mounts it from a Secret
//! only the operator reads): an unkeyed hash in a pod template would let anyone who
//! can read Deployments test password guesses offline.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, GetParams};
use sha2::Sha256;

use crate::crd::{ReferralSystemSpec, SecretKeyRef};

use super::error::Error;

/// The secret values one system needs, with a hash over all of them.
pub struct SecretValues {
    pub mongo_uri: Option<String>,
    pub redis_password: Option<Vec<u8>>,
    /// HMAC-SHA-256 under the operator's [`HashKey`] over every referenced (secret,
    /// key, value), hex, cut to 16 characters.
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

/// The key of the secrets hash. Never printed.
#[derive(Clone)]
pub struct HashKey(Vec<u8>);

/// The fewest bytes a key file must hold.
pub const MIN_KEY_BYTES: usize = 16;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HashKeyError {
    #[error("reading the secrets hash key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the secrets hash key file {path} holds {found} bytes; at least {MIN_KEY_BYTES} are needed")]
    TooShort { path: String, found: usize },
    #[error("drawing a random secrets hash key: {reason}")]
    Random { reason: String },
}

impl HashKey {
    /// The key in `path` (one trailing newline is not part of it).
    pub fn from_file(path: &std::path::Path) -> Result<Self, HashKeyError> {
        let shown = path.display().to_string();
        let mut bytes = std::fs::read(path).map_err(|source| HashKeyError::Read { path: shown.clone(), source })?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.len() < MIN_KEY_BYTES {
            return Err(HashKeyError::TooShort { path: shown, found: bytes.len() });
        }
        Ok(Self(bytes))
    }

    /// A key for this process only: the hashes, and so every pod template that
    /// carries one, change when the operator restarts. For runs without a key file.
    pub fn random() -> Result<Self, HashKeyError> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| HashKeyError::Random { reason: e.to_string() })?;
        Ok(Self(bytes))
    }

    /// A fixed key, for tests.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(<redacted>)")
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
pub async fn read(api: &Api<Secret>, spec: &ReferralSystemSpec, key: &HashKey) -> Result<SecretValues, Error> {
    read_refs(api, &SecretRefs::of(spec), key).await
}

/// Reads the referenced keys. A missing Secret or key is reported, not an error;
/// an API failure is.
pub async fn read_refs(api: &Api<Secret>, refs: &SecretRefs, key: &HashKey) -> Result<SecretValues, Error> {
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
    let values: Vec<(&SecretKeyRef, Option<Vec<u8>>)> = refs.all().into_iter().map(|r| (r, value(r))).collect();
    let missing =
        values.iter().filter(|(_, v)| v.is_none()).map(|(r, _)| format!("Secret {} key {}", r.name, r.key)).collect();
    let hash = keyed_hash(key, &values);
    Ok(SecretValues {
        mongo_uri: value(&refs.mongo_uri).and_then(|v| String::from_utf8(v).ok()),
        redis_password: refs.redis_password.as_ref().and_then(value),
        hash,
        missing,
    })
}

/// HMAC-SHA-256 over each (secret name, key, value) with separators, hex of the
/// first 8 bytes: enough to tell a rotation, and under a key, useless for guessing.
fn keyed_hash(key: &HashKey, values: &[(&SecretKeyRef, Option<Vec<u8>>)]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) else { return String::new() };
    for (reference, value) in values {
        mac.update(reference.name.as_bytes());
        mac.update(&[0]);
        mac.update(reference.key.as_bytes());
        mac.update(&[0]);
        if let Some(value) = value {
            // The length first, so no value can pass for another plus a separator.
            mac.update(&(value.len() as u64).to_be_bytes());
            mac.update(value);
        }
        mac.update(&[0xff]);
    }
    mac.finalize().into_bytes().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn reference() -> SecretKeyRef {
        SecretKeyRef { name: "referral-redis".into(), key: "password".into() }
    }

    #[test]
    fn the_hash_depends_on_the_key_and_the_value() {
        let r = reference();
        let one = HashKey::from_bytes(b"0123456789abcdef");
        let two = HashKey::from_bytes(b"fedcba9876543210");
        let hash = |key: &HashKey, value: &[u8]| keyed_hash(key, &[(&r, Some(value.to_vec()))]);
        assert_eq!(hash(&one, b"hunter2"), hash(&one, b"hunter2"), "stable under one key");
        assert_ne!(hash(&one, b"hunter2"), hash(&one, b"hunter3"), "a rotation shows");
        assert_ne!(hash(&one, b"hunter2"), hash(&two, b"hunter2"), "another key, another hash");
        assert_eq!(hash(&one, b"hunter2").len(), 16);
    }

    #[test]
    fn a_guess_cannot_be_checked_without_the_key() {
        // What someone who reads the Deployment could compute for a guess: the old
        // unkeyed construction, or an HMAC under any key but the operator's.
        let r = reference();
        let key = HashKey::from_bytes(b"the operator's key, not in any Deployment");
        let published = keyed_hash(&key, &[(&r, Some(b"hunter2".to_vec()))]);
        let mut unkeyed = Sha256::new();
        unkeyed.update(b"referral-redis\0password\0hunter2\xff");
        let unkeyed: String = unkeyed.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_ne!(published, unkeyed);
        assert_ne!(published, keyed_hash(&HashKey::from_bytes(b""), &[(&r, Some(b"hunter2".to_vec()))]));
    }

    #[test]
    fn key_files_are_checked_and_keys_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        assert!(matches!(HashKey::from_file(&short), Err(HashKeyError::TooShort { found: 8, .. })));
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
        let key = HashKey::from_file(&good).unwrap();
        assert_eq!(key.0, b"0123456789abcdef0123");
        assert_eq!(format!("{key:?}"), "HashKey(<redacted>)");
        assert!(matches!(HashKey::from_file(&dir.path().join("absent")), Err(HashKeyError::Read { .. })));
        assert_ne!(HashKey::random().unwrap().0, HashKey::random().unwrap().0);
    }
}
