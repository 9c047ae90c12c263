//! Referenced Secrets, read by name when needed: never listed, never watched, never
//! cached beyond one reconcile (the API server answers from its own cache). Values
//! stay in memory for the dependency probes; only a keyed hash of them leaves this
//! module (into pod templates, so a rotation rolls pods). The hash is an HMAC-SHA-256
//! under a key the operator reads from a file (the chart mounts it from a Secret
//! only the operator reads): an unkeyed hash in a pod template would let anyone who
//! can read Deployments test password guesses offline. Also the one Secret the
//! operator writes: the generated password of a managed Redis that has none
//! ([`ensure_generated_password`]).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, GetParams, Patch, PatchParams, PostParams};
use sha2::Sha256;

use crate::checks::tls::TlsMaterial;
use crate::crd::validate::ValidatedSystem;
use crate::crd::{SecretKeyRef, TlsSpec};
use crate::reconcilers::env::{
    GENERATED_PASSWORD_KEY, TlsTarget, generated_redis_password_name, redis_password_generated, redis_password_ref,
};
use crate::reconcilers::meta::{MANAGER, labels, owner_references};

use super::error::Error;

/// The secret values one system needs, with a hash over all of them.
pub struct SecretValues {
    pub mongo_uri: Option<String>,
    /// The CA and client certificate of `mongodb.tls`, when set and readable.
    pub mongo_tls: Option<TlsMaterial>,
    pub redis_password: Option<Vec<u8>>,
    /// The CA and client certificate of `redis.tls`, when set and readable.
    pub redis_tls: Option<TlsMaterial>,
    /// HMAC-SHA-256 under the operator's [`HashKey`] over every referenced (secret,
    /// key, value), hex, cut to 16 characters.
    pub hash: String,
    /// References that cannot be used, for status: "Secret NAME key KEY" when it is
    /// missing, with " is empty" when it holds nothing.
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

/// The CA and client certificate keys of one `tls` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRefs {
    pub ca: Option<SecretKeyRef>,
    /// The client certificate and its key.
    pub client: Option<(SecretKeyRef, SecretKeyRef)>,
}

impl TlsRefs {
    fn of(tls: &TlsSpec) -> Self {
        Self { ca: tls.ca_secret_ref.clone(), client: tls.client_certificate_refs() }
    }

    fn all(&self) -> Vec<&SecretKeyRef> {
        let mut refs: Vec<&SecretKeyRef> = self.ca.iter().collect();
        if let Some((cert, key)) = &self.client {
            refs.extend([cert, key]);
        }
        refs
    }
}

/// The Secret keys a system refers to: all a re-check needs to read them again
/// without reading the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRefs {
    pub mongo_uri: SecretKeyRef,
    /// The Redis password: the generated one for a managed Redis without one.
    pub redis_password: Option<SecretKeyRef>,
    pub mongo_tls: Option<TlsRefs>,
    pub redis_tls: Option<TlsRefs>,
}

impl SecretRefs {
    pub fn of(system: &ValidatedSystem) -> Self {
        Self {
            mongo_uri: system.spec.mongodb.uri_secret_ref.clone(),
            redis_password: redis_password_ref(system),
            mongo_tls: TlsTarget::MongoDb.spec(system).map(TlsRefs::of),
            redis_tls: TlsTarget::Redis.spec(system).map(TlsRefs::of),
        }
    }

    /// Every reference, in a stable order: the MongoDB URI, the Redis password, then
    /// the TLS files of MongoDB and Redis.
    pub fn all(&self) -> Vec<&SecretKeyRef> {
        let mut refs = vec![&self.mongo_uri];
        refs.extend(self.redis_password.as_ref());
        for tls in [&self.mongo_tls, &self.redis_tls].into_iter().flatten() {
            refs.extend(tls.all());
        }
        refs
    }
}

/// Reads the keys `system` refers to; see [`read_refs`].
pub async fn read(api: &Api<Secret>, system: &ValidatedSystem, key: &HashKey) -> Result<SecretValues, Error> {
    read_refs(api, &SecretRefs::of(system), key).await
}

/// Reads the referenced keys. A missing Secret or key, or an empty value, is
/// reported, not an error; an API failure is.
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
    let (hash, missing) = judge(key, &refs.all(), |reference| {
        secrets.get(&reference.name)?.as_ref()?.data.as_ref()?.get(&reference.key).map(|b| b.0.clone())
    });
    let value = |reference: &SecretKeyRef| -> Option<Vec<u8>> {
        secrets
            .get(&reference.name)?
            .as_ref()?
            .data
            .as_ref()?
            .get(&reference.key)
            .map(|b| b.0.clone())
            .filter(|v| !v.is_empty())
    };
    let material = |tls: &Option<TlsRefs>| -> Option<TlsMaterial> {
        let tls = tls.as_ref()?;
        let (cert, key) = match &tls.client {
            Some((cert, key)) => (value(cert), value(key)),
            None => (None, None),
        };
        Some(TlsMaterial { ca_pem: tls.ca.as_ref().and_then(value), cert_pem: cert, key_pem: key })
    };
    Ok(SecretValues {
        mongo_uri: value(&refs.mongo_uri).and_then(|v| String::from_utf8(v).ok()),
        mongo_tls: material(&refs.mongo_tls),
        redis_password: refs.redis_password.as_ref().and_then(value),
        redis_tls: material(&refs.redis_tls),
        hash,
        missing,
    })
}

/// The keyed hash over every reference and its value, and the references that cannot
/// be used. Pure, so the rules (an empty value is no value) are tested without a
/// cluster. HMAC-SHA-256 over each (secret name, key, value) with separators, hex of
/// the first 8 bytes: enough to tell a rotation, and under a key, useless for guessing.
pub fn judge(
    key: &HashKey,
    references: &[&SecretKeyRef],
    value: impl Fn(&SecretKeyRef) -> Option<Vec<u8>>,
) -> (String, Vec<String>) {
    let mut missing = Vec::new();
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) else { return (String::new(), missing) };
    for reference in references {
        mac.update(reference.name.as_bytes());
        mac.update(&[0]);
        mac.update(reference.key.as_bytes());
        mac.update(&[0]);
        match value(reference) {
            // An empty password or certificate is a mistake (an unset variable piped
            // into `kubectl create secret`), never a setting: a Redis "protected" by
            // an empty password is an open one.
            Some(v) if v.is_empty() => {
                missing.push(format!("Secret {} key {} is empty", reference.name, reference.key))
            }
            Some(v) => {
                // The length first, so no value can pass for another plus a separator.
                mac.update(&(v.len() as u64).to_be_bytes());
                mac.update(&v);
            }
            None => missing.push(format!("Secret {} key {}", reference.name, reference.key)),
        }
        mac.update(&[0xff]);
    }
    let hash = mac.finalize().into_bytes().iter().take(8).map(|b| format!("{b:02x}")).collect();
    (hash, missing)
}

/// Annotation on the generated Secret: a hash of the rotation request it was last
/// generated for, so a request is carried out once even when the operator stops
/// between writing the Secret and recording the request in status.
pub const ANNOTATION_ROTATED_FOR: &str = "referral.dev/rotated-for";

/// Bytes of randomness in a generated password: 256 bits.
const PASSWORD_BYTES: usize = 32;

/// A new password: 256 random bits from the operating system, as 64 hex digits
/// (printable, and without characters a shell or a URL would need quoted).
fn new_password() -> Result<Vec<u8>, getrandom::Error> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect())
}

fn generated_secret(system: &ValidatedSystem, password: Vec<u8>, rotated_for: Option<&str>) -> Secret {
    let mut metadata = crate::reconcilers::meta::object_meta(
        system,
        generated_redis_password_name(system),
        crate::reconcilers::redis::COMPONENT,
    );
    metadata.labels = Some(labels(system, crate::reconcilers::redis::COMPONENT));
    metadata.owner_references = owner_references(system);
    metadata.annotations =
        rotated_for.map(|token| BTreeMap::from([(ANNOTATION_ROTATED_FOR.to_string(), token.to_string())]));
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(GENERATED_PASSWORD_KEY.to_string(), ByteString(password))])),
        ..Secret::default()
    }
}

/// What became of the generated password this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratedPassword {
    /// Not needed (a password Secret is named, or Redis is external).
    NotNeeded,
    /// Already there, unchanged.
    Kept,
    /// Created now.
    Created,
    /// Replaced now, for the rotation request with this token hash.
    Rotated,
}

/// Makes sure a managed Redis without `passwordSecretRef` has its generated
/// password Secret: created once with a new password, never rewritten, except for a
/// rotation request (`rotation`: a hash of the request's token) not yet carried out.
/// The password itself never leaves this function but into the Secret.
pub async fn ensure_generated_password(
    api: &Api<Secret>,
    system: &ValidatedSystem,
    rotation: Option<&str>,
) -> Result<GeneratedPassword, Error> {
    if !redis_password_generated(system) {
        return Ok(GeneratedPassword::NotNeeded);
    }
    let name = generated_redis_password_name(system);
    let existing = match api.get_with(&name, &GetParams::any()).await {
        Ok(secret) => Some(secret),
        Err(kube::Error::Api(status)) if status.is_not_found() => None,
        Err(source) => return Err(Error::ReadSecret { name, source }),
    };
    let generate = |rotated_for: Option<&str>| -> Result<Secret, Error> {
        let password =
            new_password().map_err(|e| Error::GeneratePassword { name: name.clone(), reason: e.to_string() })?;
        Ok(generated_secret(system, password, rotated_for))
    };
    let params = PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() };
    let Some(existing) = existing else {
        match api.create(&params, &generate(rotation)?).await {
            Ok(_) => return Ok(GeneratedPassword::Created),
            // Another reconcile created it a moment ago: theirs stands.
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(GeneratedPassword::Kept),
            Err(source) => return Err(Error::WriteSecret { name, source }),
        }
    };
    let ours = existing
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::reconcilers::meta::LABEL_MANAGED_BY))
        .is_some_and(|m| m == MANAGER);
    if !ours {
        // Someone else's Secret under our name: used as it is, never written.
        return Ok(GeneratedPassword::Kept);
    }
    let done_for = existing.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_ROTATED_FOR));
    let has_value = existing.data.as_ref().and_then(|d| d.get(GENERATED_PASSWORD_KEY)).is_some_and(|v| !v.0.is_empty());
    let rotate = rotation.filter(|token| done_for.map(String::as_str) != Some(*token));
    if has_value && rotate.is_none() {
        return Ok(GeneratedPassword::Kept);
    }
    // A rotation, or a Secret someone emptied: a new password, written with the
    // resourceVersion read, so two writers cannot both win.
    let replacement = generate(rotate.or(done_for.map(String::as_str)))?;
    let patch = Patch::Merge(serde_json::json!({
        "metadata": {
            "resourceVersion": existing.metadata.resource_version,
            "annotations": replacement.metadata.annotations,
        },
        "data": replacement.data,
    }));
    match api.patch(&name, &PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() }, &patch).await
    {
        Ok(_) => Ok(GeneratedPassword::Rotated),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(GeneratedPassword::Kept),
        Err(source) => Err(Error::WriteSecret { name, source }),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn reference(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef { name: name.into(), key: key.into() }
    }

    #[test]
    fn an_empty_value_is_refused_by_name_and_key_and_a_missing_one_named() {
        let refs = [reference("mongo", "uri"), reference("redis", "password"), reference("gone", "x")];
        let (_, missing) = judge(&HashKey::from_bytes(b"0123456789abcdef"), &refs.iter().collect::<Vec<_>>(), |r| {
            match r.name.as_str() {
                "mongo" => Some(b"mongodb://h".to_vec()),
                "redis" => Some(Vec::new()),
                _ => None,
            }
        });
        assert_eq!(missing, ["Secret redis key password is empty", "Secret gone key x"]);
    }

    #[test]
    fn the_hash_moves_with_every_value_and_shows_none_of_them() {
        let refs = [reference("redis", "password")];
        let key = HashKey::from_bytes(b"0123456789abcdef");
        let refs: Vec<_> = refs.iter().collect();
        let (a, _) = judge(&key, &refs, |_| Some(b"s3cret-one".to_vec()));
        let (b, _) = judge(&key, &refs, |_| Some(b"s3cret-two".to_vec()));
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn generated_passwords_are_long_printable_and_new_each_time() {
        let a = new_password().unwrap();
        let b = new_password().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    fn redis_reference() -> SecretKeyRef {
        SecretKeyRef { name: "referral-redis".into(), key: "password".into() }
    }

    #[test]
    fn the_hash_depends_on_the_key_and_the_value() {
        let r = redis_reference();
        let one = HashKey::from_bytes(b"0123456789abcdef");
        let two = HashKey::from_bytes(b"fedcba9876543210");
        let hash = |key: &HashKey, value: &[u8]| judge(key, &[&r], |_| Some(value.to_vec())).0;
        assert_eq!(hash(&one, b"hunter2"), hash(&one, b"hunter2"), "stable under one key");
        assert_ne!(hash(&one, b"hunter2"), hash(&one, b"hunter3"), "a rotation shows");
        assert_ne!(hash(&one, b"hunter2"), hash(&two, b"hunter2"), "another key, another hash");
        assert_eq!(hash(&one, b"hunter2").len(), 16);
    }

    #[test]
    fn a_guess_cannot_be_checked_without_the_key() {
        // What someone who reads the Deployment could compute for a guess: the old
        // unkeyed construction, or an HMAC under any key but the operator's.
        let r = redis_reference();
        let key = HashKey::from_bytes(b"the operator's key, not in any Deployment");
        let published = judge(&key, &[&r], |_| Some(b"hunter2".to_vec())).0;
        let mut unkeyed = Sha256::new();
        unkeyed.update(b"referral-redis\0password\0hunter2\xff");
        let unkeyed: String = unkeyed.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_ne!(published, unkeyed);
        assert_ne!(published, judge(&HashKey::from_bytes(b""), &[&r], |_| Some(b"hunter2".to_vec())).0);
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
