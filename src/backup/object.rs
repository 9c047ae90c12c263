//! Backups in S3-compatible object storage, through the `object_store` crate: the
//! same backups as on the volume, under `s3://BUCKET/PREFIX/NAME/`, file for file
//! (so `aws s3 sync` of a backup gives a folder `mongorestore` reads).
//!
//! Object storage has no rename, so a run writes straight under `NAME/` and is
//! complete only once `NAME/complete.json` (the manifest) exists; it is written
//! last, after every other object of the run has been uploaded. Files are uploaded
//! as they are produced: a small one in one request, a large one as a multipart
//! upload of 8 MiB parts, aborted if the run fails. Retention is the same planner
//! as on the volume ([`super::retention`]); a deletion removes the manifest first,
//! so an interrupted one leaves an incomplete backup, never a complete-looking one.
//!
//! Credentials come from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`: in a pod, from a Secret by
//! `secretKeyRef`) and never reach a message: every error text is passed through
//! [`Redactor`] first.
//!
//! The blocking parts ([`FileSink`], [`BackupSource`]) must be called from a thread
//! that is not running async tasks (`spawn_blocking`): they wait on the runtime.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Handle;

use super::name::{BackupName, PARTIAL_SUFFIX};
use super::retention::{DeleteReason, PlannedDeletion, RetentionPlan};
use super::store::{ApplyReport, DeleteFailure, Deleted, Listing, MARKER_FILE, Manifest, StoredBackup, StoredState};
use super::target::{BackupSource, FileSink, SinkFile, TargetError, check_relative};

/// Environment variables holding the credentials.
pub const ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN_ENV: &str = "AWS_SESSION_TOKEN";
/// Part size of multipart uploads (S3's minimum is 5 MiB), and the size below which
/// a file is uploaded in one request.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one file uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;

/// What went wrong, without a secret in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("object storage settings: {why}")]
    Settings { why: String },
    #[error("object storage credentials: {why}")]
    Credentials { why: String },
    #[error("cannot {action} {location}: {message}")]
    Request { action: &'static str, location: String, message: String },
}

/// Server-side encryption asked of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3 (`AES256`), keys managed by the store.
    S3,
    /// SSE-KMS (`aws:kms`) with this key.
    Kms { key_id: String },
}

/// Where backups go in object storage (no credentials here: see [`Credentials`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSettings {
    /// Endpoint URL of an S3-compatible service (`https://minio.example:9000`); `None`
    /// for AWS S3 itself. `http://` is accepted only when written out.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Key prefix under which each backup is a folder; empty for the bucket's top.
    pub prefix: String,
    pub region: String,
    pub encryption: Option<Encryption>,
}

impl ObjectSettings {
    /// Checks the settings before anything is sent, naming the field.
    pub fn check(&self) -> Result<(), ObjectError> {
        let bad = |why: String| Err(ObjectError::Settings { why });
        let valid_bucket = (3..=63).contains(&self.bucket.len())
            && self.bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && self.bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && self.bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid_bucket {
            return bad(format!(
                "bucket {:?} is not a bucket name: 3-63 lower-case letters, digits, '-' and '.'",
                self.bucket
            ));
        }
        if !self.prefix.is_empty() && check_relative(&self.prefix).is_err() {
            return bad(format!(
                "prefix {:?} must be a relative key prefix without empty, '.' or '..' parts and without a trailing '/'",
                self.prefix
            ));
        }
        if self.region.is_empty() {
            return bad("region is empty: give the bucket's region (us-east-1 for most S3-compatible servers)".into());
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return bad(format!("endpoint {endpoint:?} must start with https:// (or http:// for a test server)"));
        }
        if let Some(Encryption::Kms { key_id }) = &self.encryption
            && key_id.is_empty()
        {
            return bad("SSE-KMS needs a key id".into());
        }
        Ok(())
    }

    /// `s3://bucket/prefix` (and the endpoint), for messages.
    pub fn location(&self) -> String {
        let at = self.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
        if self.prefix.is_empty() {
            format!("s3://{}{at}", self.bucket)
        } else {
            format!("s3://{}/{}{at}", self.bucket, self.prefix)
        }
    }
}

/// Access key, secret and optional session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Credentials, ObjectError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var(ACCESS_KEY_ENV), var(SECRET_KEY_ENV)) {
            (Some(access_key_id), Some(secret_access_key)) => {
                Ok(Credentials { access_key_id, secret_access_key, session_token: var(SESSION_TOKEN_ENV) })
            }
            _ => Err(ObjectError::Credentials {
                why: format!("set {ACCESS_KEY_ENV} and {SECRET_KEY_ENV} (in a pod: from a Secret, by secretKeyRef)"),
            }),
        }
    }
}

/// Takes secrets out of text that may quote them (driver and HTTP error messages),
/// and keeps one short line.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        // Longest first, so that a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "<redacted>");
        }
        let line: String = out.lines().next().unwrap_or_default().chars().take(400).collect();
        line
    }
}

/// A bucket and prefix holding backups, connected.
#[derive(Clone)]
pub struct ObjectTarget {
    store: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    location: String,
    redactor: Redactor,
    handle: Handle,
}

impl std::fmt::Debug for ObjectTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectTarget").field("location", &self.location).finish_non_exhaustive()
    }
}

/// rustls needs one process-wide crypto provider; ring, as kube uses.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ObjectTarget {
    /// Builds the client (nothing is sent yet). Must be called inside a Tokio runtime.
    pub fn connect(settings: &ObjectSettings, credentials: &Credentials) -> Result<ObjectTarget, ObjectError> {
        settings.check()?;
        install_crypto_provider();
        let redactor = Redactor::new(
            [
                Some(credentials.secret_access_key.clone()),
                credentials.session_token.clone(),
                Some(credentials.access_key_id.clone()),
            ]
            .into_iter()
            .flatten(),
        );
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(&credentials.secret_access_key)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(settings.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))),
            );
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &settings.endpoint {
            // Path-style requests (https://endpoint/bucket/key): what S3-compatible
            // servers answer without wildcard DNS.
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        match &settings.encryption {
            None => {}
            Some(Encryption::S3) => {
                // The crate names this key only by its configuration string.
                let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                    .parse()
                    .map_err(|e: object_store::Error| ObjectError::Settings { why: e.to_string() })?;
                builder = builder.with_config(key, "AES256");
            }
            Some(Encryption::Kms { key_id }) => builder = builder.with_sse_kms_encryption(key_id),
        }
        let store = builder.build().map_err(|e| ObjectError::Settings { why: redactor.clean(&e.to_string()) })?;
        let prefix = if settings.prefix.is_empty() {
            None
        } else {
            Some(Path::parse(&settings.prefix).map_err(|e| ObjectError::Settings { why: e.to_string() })?)
        };
        let handle = Handle::try_current()
            .map_err(|_| ObjectError::Settings { why: "no async runtime to run requests on".into() })?;
        Ok(ObjectTarget { store: Arc::new(store), prefix, location: settings.location(), redactor, handle })
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Takes secrets out of a message.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The key of `relative` (below the prefix).
    fn key(&self, relative: &str) -> Result<Path, ObjectError> {
        let full = match &self.prefix {
            Some(prefix) => format!("{prefix}/{relative}"),
            None => relative.to_string(),
        };
        Path::parse(&full).map_err(|e| ObjectError::Settings { why: format!("{relative:?} is not a key: {e}") })
    }

    /// The part of `key` below the prefix.
    fn relative<'a>(&self, key: &'a str) -> &'a str {
        match &self.prefix {
            Some(prefix) => key.strip_prefix(prefix.as_ref()).and_then(|k| k.strip_prefix('/')).unwrap_or(key),
            None => key,
        }
    }

    fn request_error(&self, action: &'static str, relative: &str, error: object_store::Error) -> ObjectError {
        ObjectError::Request {
            action,
            location: format!("{}/{relative}", self.location),
            message: self.redactor.clean(&error.to_string()),
        }
    }

    /// Reads a small object whole; `None` when it does not exist.
    pub async fn read_small(&self, relative: &str) -> Result<Option<Bytes>, ObjectError> {
        let key = self.key(relative)?;
        match self.store.get(&key).await {
            Ok(result) => result.bytes().await.map(Some).map_err(|e| self.request_error("read", relative, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.request_error("read", relative, e)),
        }
    }

    /// Writes a small object in one request.
    pub async fn write_small(&self, relative: &str, body: Vec<u8>) -> Result<(), ObjectError> {
        let key = self.key(relative)?;
        self.store
            .put(&key, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| self.request_error("write", relative, e))
    }

    /// Whether the run `name` has its manifest.
    async fn marker_state(&self, name: &str) -> Result<StoredState, ObjectError> {
        match self.read_small(&format!("{name}/{MARKER_FILE}")).await? {
            None => Ok(StoredState::Unmarked),
            Some(bytes) => Ok(match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(manifest) => StoredState::Complete(Box::new(manifest)),
                Err(e) => StoredState::MarkerUnreadable(format!("{MARKER_FILE} is not a manifest: {e}")),
            }),
        }
    }

    /// Writes the manifest of `name`, last: from then on the backup is complete.
    /// Refuses a backup that already has one.
    pub async fn write_marker(&self, manifest: &Manifest) -> Result<(), ObjectError> {
        let relative = format!("{}/{MARKER_FILE}", manifest.name);
        if self.read_small(&relative).await?.is_some() {
            return Err(ObjectError::Request {
                action: "write",
                location: format!("{}/{relative}", self.location),
                message: "the backup is complete already; a finished backup is never changed".into(),
            });
        }
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| ObjectError::Settings { why: e.to_string() })?;
        self.write_small(&relative, body).await
    }

    /// The manifest of a complete backup.
    pub async fn read_manifest(&self, name: &str) -> Result<Manifest, ObjectError> {
        BackupName::parse(name).map_err(|e| ObjectError::Settings { why: e.to_string() })?;
        let not_complete = |why: String| ObjectError::Request {
            action: "use",
            location: format!("{}/{name}", self.location),
            message: format!("backup {name} is not complete: {why}"),
        };
        match self.marker_state(name).await? {
            StoredState::Complete(manifest) => Ok(*manifest),
            StoredState::Unmarked => {
                Err(not_complete(format!("{MARKER_FILE} is missing (no such backup, or a run that did not finish)")))
            }
            StoredState::MarkerUnreadable(why) => Err(not_complete(why)),
            StoredState::Partial => Err(not_complete("it is a partial run".into())),
        }
    }

    /// Every backup folder under the prefix: complete (with its manifest) or not, and
    /// its size; objects directly under the prefix are listed as others.
    pub async fn list(&self) -> Result<Listing, ObjectError> {
        let mut sizes: BTreeMap<String, (u64, bool)> = BTreeMap::new();
        let mut others = Vec::new();
        let mut objects = self.store.list(self.prefix.as_ref());
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| self.request_error("list", "", e))?;
            let relative = self.relative(meta.location.as_ref()).to_string();
            match relative.split_once('/') {
                Some((folder, rest)) => {
                    let entry = sizes.entry(folder.to_string()).or_default();
                    entry.0 += meta.size;
                    entry.1 |= rest == MARKER_FILE;
                }
                None => others.push(relative),
            }
        }
        let mut listing = Listing { backups: Vec::new(), others };
        for (folder, (size_bytes, marked)) in sizes {
            let state = if folder.ends_with(PARTIAL_SUFFIX) {
                StoredState::Partial
            } else if marked {
                self.marker_state(&folder).await?
            } else {
                StoredState::Unmarked
            };
            listing.backups.push(StoredBackup { dir_name: folder, state, size_bytes });
        }
        listing.others.sort();
        Ok(listing)
    }

    /// Deletes exactly what `plan` lists, checking each backup's state again first;
    /// a failure is reported and the others go on.
    pub async fn apply(&self, plan: &RetentionPlan) -> ApplyReport {
        let mut report = ApplyReport::default();
        for deletion in &plan.delete {
            match self.delete_one(deletion).await {
                Ok(size_bytes) => report.deleted.push(Deleted { name: deletion.name.clone(), size_bytes }),
                Err(error) => report.failed.push(DeleteFailure { name: deletion.name.clone(), error }),
            }
        }
        report
    }

    async fn delete_one(&self, deletion: &PlannedDeletion) -> Result<u64, String> {
        let base = deletion.name.strip_suffix(PARTIAL_SUFFIX).unwrap_or(&deletion.name);
        // Only backup names: this also rules out '/', '..' and the like.
        BackupName::parse(base).map_err(|e| e.to_string())?;
        let complete =
            matches!(self.marker_state(&deletion.name).await.map_err(|e| e.to_string())?, StoredState::Complete(_));
        match deletion.reason {
            DeleteReason::Superseded if !complete => {
                return Err(
                    "planned as a complete backup but its manifest is gone or unreadable now; left alone".into()
                );
            }
            DeleteReason::StaleIncomplete if complete => {
                return Err("planned as incomplete but it has its manifest now; left alone".into());
            }
            _ => {}
        }
        let folder = self.key(&deletion.name).map_err(|e| e.to_string())?;
        let mut keys = Vec::new();
        let mut size = 0;
        let mut objects = self.store.list(Some(&folder));
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| self.request_error("list", &deletion.name, e).to_string())?;
            size += meta.size;
            keys.push(meta.location);
        }
        if complete {
            // The manifest first: an interrupted deletion then leaves an incomplete
            // backup, not one that looks complete with files missing.
            let marker = format!("{}/{MARKER_FILE}", deletion.name);
            let key = self.key(&marker).map_err(|e| e.to_string())?;
            self.store.delete(&key).await.map_err(|e| self.request_error("delete", &marker, e).to_string())?;
            keys.retain(|k| k != &key);
        }
        for key in keys {
            let relative = self.relative(key.as_ref()).to_string();
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.request_error("delete", &relative, e).to_string()),
            }
        }
        Ok(size)
    }

    /// Whether anything exists under `name/` (a run must start on an empty folder:
    /// two runs of the same second must not mix their files).
    pub async fn folder_exists(&self, name: &str) -> Result<bool, ObjectError> {
        let folder = self.key(name)?;
        let listed =
            self.store.list_with_delimiter(Some(&folder)).await.map_err(|e| self.request_error("list", name, e))?;
        Ok(!listed.objects.is_empty() || !listed.common_prefixes.is_empty())
    }

    /// Where the run `name` writes its files.
    pub fn run(&self, name: &str) -> ObjectFolder {
        ObjectFolder { target: self.clone(), folder: name.to_string() }
    }
}

/// One backup's folder in object storage, for writing a run or reading a backup.
#[derive(Clone, Debug)]
pub struct ObjectFolder {
    target: ObjectTarget,
    folder: String,
}

impl ObjectFolder {
    fn relative(&self, path: &str) -> Result<String, TargetError> {
        check_relative(path)?;
        Ok(format!("{}/{path}", self.folder))
    }

    fn target_error(&self, error: ObjectError) -> TargetError {
        match error {
            ObjectError::Request { action, location, message } => TargetError::Object { action, location, message },
            other => TargetError::Object {
                action: "use",
                location: format!("{}/{}", self.target.location, self.folder),
                message: other.to_string(),
            },
        }
    }
}

struct ObjectFile {
    writer: BufWriter,
    handle: Handle,
    location: String,
    redactor: Redactor,
}

impl Write for ObjectFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.handle.block_on(self.writer.write_all(buf)).map(|()| buf.len()).map_err(|e| {
            io::Error::other(format!("uploading {}: {}", self.location, self.redactor.clean(&e.to_string())))
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        // Parts go out as they fill; the last one only when the file is finished.
        Ok(())
    }
}

impl SinkFile for ObjectFile {
    fn finish(mut self: Box<Self>) -> Result<(), TargetError> {
        let handle = self.handle.clone();
        handle.block_on(self.writer.shutdown()).map_err(|e| TargetError::Object {
            action: "upload",
            location: self.location.clone(),
            message: self.redactor.clean(&e.to_string()),
        })
    }

    fn abort(mut self: Box<Self>) {
        let handle = self.handle.clone();
        let _ = handle.block_on(self.writer.abort());
    }
}

impl FileSink for ObjectFolder {
    fn create(&self, path: &str) -> Result<Box<dyn SinkFile>, TargetError> {
        let relative = self.relative(path)?;
        let key = self.target.key(&relative).map_err(|e| self.target_error(e))?;
        let writer =
            BufWriter::with_capacity(self.target.store.clone(), key, PART_BYTES).with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(Box::new(ObjectFile {
            writer,
            handle: self.target.handle.clone(),
            location: format!("{}/{relative}", self.target.location),
            redactor: self.target.redactor.clone(),
        }))
    }

    fn location(&self) -> String {
        format!("{}/{}", self.target.location, self.folder)
    }
}

/// An object read as a blocking stream.
struct ObjectReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    current: Bytes,
    handle: Handle,
    location: String,
    redactor: Redactor,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => {
                    return Err(io::Error::other(format!(
                        "downloading {}: {}",
                        self.location,
                        self.redactor.clean(&e.to_string())
                    )));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

impl BackupSource for ObjectFolder {
    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>, TargetError> {
        let relative = self.relative(path)?;
        let key = self.target.key(&relative).map_err(|e| self.target_error(e))?;
        let location = format!("{}/{relative}", self.target.location);
        let handle = self.target.handle.clone();
        match handle.block_on(self.target.store.get(&key)) {
            Ok(result) => Ok(Box::new(ObjectReader {
                stream: result.into_stream(),
                current: Bytes::new(),
                handle,
                location,
                redactor: self.target.redactor.clone(),
            })),
            Err(object_store::Error::NotFound { .. }) => Err(TargetError::NotFound { location }),
            Err(e) => Err(TargetError::Object {
                action: "read",
                location,
                message: self.target.redactor.clean(&e.to_string()),
            }),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, TargetError> {
        let relative = if dir.is_empty() { self.folder.clone() } else { self.relative(dir)? };
        let key = self.target.key(&relative).map_err(|e| self.target_error(e))?;
        let result = self
            .target
            .handle
            .block_on(self.target.store.list_with_delimiter(Some(&key)))
            .map_err(|e| self.target_error(self.target.request_error("list", &relative, e)))?;
        let mut files: Vec<(String, u64)> = result
            .objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(|name| (name.to_string(), meta.size)))
            .collect();
        files.sort();
        Ok(files)
    }

    fn location(&self) -> String {
        format!("{}/{}", self.target.location, self.folder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ObjectSettings {
        ObjectSettings {
            endpoint: Some("https://s3.example.com".into()),
            bucket: "backups".into(),
            prefix: "referrals/main".into(),
            region: "eu-west-1".into(),
            encryption: None,
        }
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        settings().check().unwrap();
        for (change, says) in [
            (ObjectSettings { bucket: "B".into(), ..settings() }, "bucket \"B\""),
            (ObjectSettings { bucket: "-ab".into(), ..settings() }, "bucket"),
            (ObjectSettings { prefix: "a//b".into(), ..settings() }, "prefix"),
            (ObjectSettings { prefix: "a/../b".into(), ..settings() }, "prefix"),
            (ObjectSettings { prefix: "/a".into(), ..settings() }, "prefix"),
            (ObjectSettings { region: String::new(), ..settings() }, "region"),
            (ObjectSettings { endpoint: Some("s3.example.com".into()), ..settings() }, "endpoint"),
            (ObjectSettings { encryption: Some(Encryption::Kms { key_id: String::new() }), ..settings() }, "key id"),
        ] {
            let err = change.check().unwrap_err().to_string();
            assert!(err.contains(says), "{err} should name {says}");
        }
        assert_eq!(settings().location(), "s3://backups/referrals/main at https://s3.example.com");
    }

    #[test]
    fn the_redactor_removes_every_secret_and_keeps_one_line() {
        let redactor = Redactor::new(["AKIAEXAMPLE".to_string(), "s3cr3t/with+chars".to_string(), "ab".to_string()]);
        let text = "request to https://x failed: key AKIAEXAMPLE sig s3cr3t/with+chars\nsecond line s3cr3t/with+chars";
        let clean = redactor.clean(text);
        assert_eq!(clean, "request to https://x failed: key <redacted> sig <redacted>");
        // Too short to be a secret worth matching everywhere ("ab" would mangle text).
        assert_eq!(redactor.clean("abc"), "abc");
    }

    #[test]
    fn credentials_never_print() {
        let credentials =
            Credentials { access_key_id: "AKIA".into(), secret_access_key: "secret".into(), session_token: None };
        assert_eq!(format!("{credentials:?}"), "Credentials(<redacted>)");
    }
}
