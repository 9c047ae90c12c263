//! TLS material for the operator's own connections to MongoDB and Redis: PEM bytes
//! as read from Secrets (by the controller) or from mounted files (by the jobs), and
//! the private files the MongoDB driver needs, since it only reads certificates
//! from paths.
//!
//! Nothing here prints a key: the types' `Debug` say only what is set.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The CA that signed a server's certificate and an optional client certificate,
/// as PEM.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsMaterial {
    /// CA certificate(s); `None` trusts the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate (chain).
    pub cert_pem: Option<Vec<u8>>,
    /// The client certificate's private key.
    pub key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field("client_certificate", &self.cert_pem.as_ref().map(|_| "<set>"))
            .field("client_key", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why TLS files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read the TLS file {path} named by {var}: {source}")]
    Read { var: String, path: String, source: std::io::Error },
    #[error("{set} is set but {missing} is not: a client certificate needs both")]
    HalfClientCertificate { set: String, missing: String },
    #[error("cannot write the TLS files for the MongoDB driver under {dir}: {source}")]
    Write { dir: String, source: std::io::Error },
}

impl TlsMaterial {
    /// The client certificate and key together, when both are set.
    pub fn client_pair(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.cert_pem.clone().zip(self.key_pem.clone())
    }

    /// A short hash of everything in it, to key cached clients by.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [&self.ca_pem, &self.cert_pem, &self.key_pem] {
            match part {
                Some(bytes) => {
                    hasher.update([1]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
                None => hasher.update([0]),
            }
        }
        hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Reads the files named by the environment variables `<prefix>_CA_FILE`,
    /// `<prefix>_CERT_FILE` and `<prefix>_KEY_FILE` (what the operator sets in every
    /// pod with TLS), `None` when none is set.
    pub fn from_env(prefix: &str) -> Result<Option<TlsMaterial>, TlsFileError> {
        let read = |suffix: &str| -> Result<Option<Vec<u8>>, TlsFileError> {
            let var = format!("{prefix}_{suffix}");
            match std::env::var_os(&var) {
                None => Ok(None),
                Some(path) => std::fs::read(&path).map(Some).map_err(|source| TlsFileError::Read {
                    var: var.clone(),
                    path: Path::new(&path).display().to_string(),
                    source,
                }),
            }
        };
        let material =
            TlsMaterial { ca_pem: read("CA_FILE")?, cert_pem: read("CERT_FILE")?, key_pem: read("KEY_FILE")? };
        match (&material.cert_pem, &material.key_pem) {
            (Some(_), None) => {
                return Err(TlsFileError::HalfClientCertificate {
                    set: format!("{prefix}_CERT_FILE"),
                    missing: format!("{prefix}_KEY_FILE"),
                });
            }
            (None, Some(_)) => {
                return Err(TlsFileError::HalfClientCertificate {
                    set: format!("{prefix}_KEY_FILE"),
                    missing: format!("{prefix}_CERT_FILE"),
                });
            }
            _ => {}
        }
        Ok((material != TlsMaterial::default()).then_some(material))
    }

    /// Writes the material as the MongoDB driver reads it (a CA file; the client
    /// certificate and key in one PEM file) into a new directory under `root` that
    /// only this user can enter. The directory goes when the returned value does.
    pub fn write_for_driver(&self, root: &Path) -> Result<TlsFiles, TlsFileError> {
        let failed = |source| TlsFileError::Write { dir: root.display().to_string(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(failed)?;
        let dir = tempfile::Builder::new()
            .prefix("tls-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(root)
            .map_err(failed)?;
        let write = |name: &str, parts: &[&[u8]]| -> Result<PathBuf, TlsFileError> {
            let path = dir.path().join(name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| TlsFileError::Write { dir: dir.path().display().to_string(), source })?;
            for part in parts {
                file.write_all(part)
                    .and_then(|()| if part.ends_with(b"\n") { Ok(()) } else { file.write_all(b"\n") })
                    .map_err(|source| TlsFileError::Write { dir: dir.path().display().to_string(), source })?;
            }
            Ok(path)
        };
        let ca = self.ca_pem.as_deref().map(|ca| write("ca.pem", &[ca])).transpose()?;
        let cert_key = match self.client_pair() {
            Some((cert, key)) => Some(write("client.pem", &[&cert, &key])?),
            None => None,
        };
        Ok(TlsFiles { _dir: dir, ca, cert_key })
    }
}

/// TLS files written for the MongoDB driver; removed when dropped.
#[derive(Debug)]
pub struct TlsFiles {
    _dir: tempfile::TempDir,
    /// The CA file, when there is a CA.
    pub ca: Option<PathBuf>,
    /// Client certificate and key in one file, when there is a client certificate.
    pub cert_key: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_files_hold_the_pem_and_only_the_owner_can_read_them() {
        let root = tempfile::tempdir().unwrap();
        let material = TlsMaterial {
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----".to_vec()),
            cert_pem: Some(b"CERT\n".to_vec()),
            key_pem: Some(b"KEY\n".to_vec()),
        };
        let files = material.write_for_driver(root.path()).unwrap();
        let pair = files.cert_key.clone().unwrap();
        assert_eq!(std::fs::read(&pair).unwrap(), b"CERT\nKEY\n");
        assert_eq!(std::fs::metadata(&pair).unwrap().permissions().mode() & 0o777, 0o600);
        let ca = std::fs::read_to_string(files.ca.clone().unwrap()).unwrap();
        assert!(ca.ends_with("-----END CERTIFICATE-----\n"), "a newline is added: {ca:?}");
        let dir = pair.parent().unwrap().to_path_buf();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        drop(files);
        assert!(!dir.exists(), "the files go with their owner");
        assert!(!format!("{material:?}").contains("KEY"));
    }

    #[test]
    fn the_fingerprint_tells_material_apart() {
        let a = TlsMaterial { ca_pem: Some(b"a".to_vec()), ..TlsMaterial::default() };
        let b = TlsMaterial { cert_pem: Some(b"a".to_vec()), ..TlsMaterial::default() };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
