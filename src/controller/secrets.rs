//! Referenced Secrets, read by name when needed: never listed, never watched, never
//! cached beyond one reconcile (the API server answers from its own cache). Values
//! stay in memory for the dependency probes; only a hash of them leaves this module
//! (into pod templates, so a rotation rolls pods). Also the one Secret the operator
//! writes: the generated password of a managed Redis that has none
//! ([`ensure_generated_password`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, GetParams, Patch, PatchParams, PostParams};
use sha2::{Digest, Sha256};

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
    /// SHA-256 over every referenced (secret, key, value), hex, cut to 16 characters.
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

/// Every Secret key the system refers to, in a stable order: the MongoDB URI, the
/// Redis password (the generated one for a managed Redis without one), then the
/// TLS files of MongoDB and Redis.
pub fn references(system: &ValidatedSystem) -> Vec<SecretKeyRef> {
    let spec = &system.spec;
    let mut refs = vec![spec.mongodb.uri_secret_ref.clone()];
    refs.extend(redis_password_ref(system));
    for target in [TlsTarget::MongoDb, TlsTarget::Redis] {
        if let Some(tls) = target.spec(system) {
            refs.extend(tls_refs(tls));
        }
    }
    refs
}

fn tls_refs(tls: &TlsSpec) -> Vec<SecretKeyRef> {
    let mut refs: Vec<SecretKeyRef> = tls.ca_secret_ref.iter().cloned().collect();
    if let Some((cert, key)) = tls.client_certificate_refs() {
        refs.extend([cert, key]);
    }
    refs
}

/// Reads the referenced keys. A missing Secret or key, or an empty value, is
/// reported, not an error; an API failure is.
pub async fn read(api: &Api<Secret>, system: &ValidatedSystem) -> Result<SecretValues, Error> {
    let references = references(system);
    let mut secrets: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    for reference in &references {
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
    let (hash, missing) = judge(&references, |reference| {
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
    let material = |target: TlsTarget| -> Option<TlsMaterial> {
        let tls = target.spec(system)?;
        let (cert, key) = match tls.client_certificate_refs() {
            Some((cert, key)) => (value(&cert), value(&key)),
            None => (None, None),
        };
        Some(TlsMaterial { ca_pem: tls.ca_secret_ref.as_ref().and_then(value), cert_pem: cert, key_pem: key })
    };
    Ok(SecretValues {
        mongo_uri: value(&system.spec.mongodb.uri_secret_ref).and_then(|v| String::from_utf8(v).ok()),
        mongo_tls: material(TlsTarget::MongoDb),
        redis_password: redis_password_ref(system).as_ref().and_then(value),
        redis_tls: material(TlsTarget::Redis),
        hash,
        missing,
    })
}

/// The hash over every reference and its value, and the references that cannot be
/// used. Pure, so the rules (an empty value is no value) are tested without a cluster.
pub fn judge(references: &[SecretKeyRef], value: impl Fn(&SecretKeyRef) -> Option<Vec<u8>>) -> (String, Vec<String>) {
    let mut hasher = Sha256::new();
    let mut missing = Vec::new();
    for reference in references {
        hasher.update(reference.name.as_bytes());
        hasher.update([0]);
        hasher.update(reference.key.as_bytes());
        hasher.update([0]);
        match value(reference) {
            // An empty password or certificate is a mistake (an unset variable piped
            // into `kubectl create secret`), never a setting: a Redis "protected" by
            // an empty password is an open one.
            Some(v) if v.is_empty() => {
                missing.push(format!("Secret {} key {} is empty", reference.name, reference.key))
            }
            Some(v) => hasher.update(&v),
            None => missing.push(format!("Secret {} key {}", reference.name, reference.key)),
        }
        hasher.update([0xff]);
    }
    let hash: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
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
    use super::*;

    fn reference(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef { name: name.into(), key: key.into() }
    }

    #[test]
    fn an_empty_value_is_refused_by_name_and_key_and_a_missing_one_named() {
        let refs = [reference("mongo", "uri"), reference("redis", "password"), reference("gone", "x")];
        let (_, missing) = judge(&refs, |r| match r.name.as_str() {
            "mongo" => Some(b"mongodb://h".to_vec()),
            "redis" => Some(Vec::new()),
            _ => None,
        });
        assert_eq!(missing, ["Secret redis key password is empty", "Secret gone key x"]);
    }

    #[test]
    fn the_hash_moves_with_every_value_and_shows_none_of_them() {
        let refs = [reference("redis", "password")];
        let (a, _) = judge(&refs, |_| Some(b"s3cret-one".to_vec()));
        let (b, _) = judge(&refs, |_| Some(b"s3cret-two".to_vec()));
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
}
