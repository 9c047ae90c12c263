//! The backup folder on disk. Each backup is a folder named after the time its run
//! started (see [`super::name`]):
//!
//! ```text
//! /backups/20261123T010000Z/                 a native dump (backup dump): mongodump's layout
//!     neurolov/users.bson.gz                   one gzip BSON stream per collection
//!     neurolov/users.metadata.json.gz          its options and indexes
//!     mongodb-dump.json                        what the dump wrote: counts, bytes, SHA-256
//!     redis.rdb                                redis-cli --rdb, when Redis is backed up
//!     complete.json                            the completion marker (the manifest), written last
//! /backups/20261122T010000Z/                 the Mongodump method
//!     mongodb-referrals.archive.gz             mongodump --archive --gzip, one per collection
//!     mongodb-referralTransactions.archive.gz  (or mongodb.archive.gz for the whole database)
//!     mongodb-database.txt                     the database the archives came from
//!     redis.rdb, complete.json                 as above
//! /backups/20261124T010000Z.partial/           a run still writing (or one that died)
//! ```
//!
//! The marker lists every file with its size and SHA-256; [`verify`] recomputes them.
//!
//! A backup counts only once its marker exists: [`finalize`] renames the `.partial`
//! folder, syncs it to disk and only then writes the marker, so a crash at any point
//! leaves something that is plainly incomplete, never something that looks complete
//! and is not. [`apply`] deletes exactly what a [`RetentionPlan`] lists, removing a
//! backup's marker first for the same reason, and carries on past a failure.
//!
//! This module only touches the directory it is given; it knows nothing of
//! Kubernetes.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::manifest::{DUMP_SUMMARY_FILE, DumpSummary};
use super::name::{BackupName, NameError, PARTIAL_SUFFIX};
use super::retention::{BackupEntry, DeleteReason, PlannedDeletion, RetentionPlan};
use super::stream::{DigestReader, StreamDigest};

/// The completion marker, written last.
pub const MARKER_FILE: &str = "complete.json";
/// The whole-database archive.
pub const WHOLE_DATABASE_ARCHIVE: &str = "mongodb.archive.gz";
/// File naming the database the archives came from.
pub const DATABASE_FILE: &str = "mongodb-database.txt";
/// The Redis snapshot.
pub const REDIS_FILE: &str = "redis.rdb";
/// Version of [`Manifest`]: 2 added each file's SHA-256 and a native dump's summary.
pub const MANIFEST_FORMAT: u32 = 2;
/// Folders a filesystem makes itself (ext4's `lost+found`): neither backups nor odd.
const FILESYSTEM_FOLDERS: [&str; 1] = ["lost+found"];

/// What went wrong, naming the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot list the backup directory {path}: {source}")]
    List { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("backup {name} has no folder in {dir}: neither {name}{PARTIAL_SUFFIX} nor {name} exists")]
    Missing { dir: PathBuf, name: String },
    #[error("backup {name} is already complete; finalizing it again would change a finished backup")]
    AlreadyComplete { name: String },
    #[error("both {name}{PARTIAL_SUFFIX} and {name} exist in {dir}; left as they are, look at them by hand")]
    Conflict { dir: PathBuf, name: String },
    #[error("backup {name} is not usable: {why}")]
    Unusable { name: String, why: String },
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("backup {name} is not complete: {why}")]
    NotComplete { name: String, why: String },
}

impl StoreError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
        move |source| StoreError::Io { action, path: path.to_path_buf(), source }
    }
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile {
    /// Path relative to the backup folder.
    pub path: String,
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the file (format 2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The completion marker's content: what the backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    /// When the run started (the time in the name).
    pub started_at: Timestamp,
    /// When the marker was written.
    pub completed_at: Timestamp,
    /// The database the archives came from, when the run recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Collections dumped one archive each; empty with `wholeDatabase`.
    #[serde(default)]
    pub collections: Vec<String>,
    /// One archive holds the whole database.
    #[serde(default)]
    pub whole_database: bool,
    /// The backup holds a Redis snapshot.
    #[serde(default)]
    pub redis: bool,
    pub files: Vec<ManifestFile>,
    pub size_bytes: u64,
    /// A native dump's record: per collection the documents, bytes and files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<DumpSummary>,
}

impl Manifest {
    /// The manifest of a native dump: `summary`'s files plus `other_files` (the
    /// Redis snapshot, the summary itself), each with its size and checksum.
    pub fn native(
        name: &BackupName,
        completed_at: Timestamp,
        summary: DumpSummary,
        other_files: Vec<ManifestFile>,
    ) -> Manifest {
        let mut files: Vec<ManifestFile> = summary
            .files()
            .map(|f| ManifestFile { path: f.path.clone(), size_bytes: f.size_bytes, sha256: Some(f.sha256.clone()) })
            .chain(other_files)
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        Manifest {
            format: MANIFEST_FORMAT,
            name: name.render(),
            started_at: name.timestamp,
            completed_at,
            database: Some(summary.database.clone()),
            collections: summary.collections.iter().map(|c| c.name.clone()).collect(),
            whole_database: summary.whole_database,
            redis: files.iter().any(|f| f.path == REDIS_FILE),
            size_bytes: files.iter().map(|f| f.size_bytes).sum(),
            files,
            mongodb: Some(summary),
        }
    }
}

/// What a folder in the backup directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredState {
    /// Has a readable completion marker.
    Complete(Box<Manifest>),
    /// `NAME.partial`: a run that has not been finalized.
    Partial,
    /// A backup folder without its marker (finalize stopped between rename and
    /// marker, or a deletion was interrupted).
    Unmarked,
    /// The marker is there but cannot be read; treated as incomplete.
    MarkerUnreadable(String),
}

/// One folder in the backup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBackup {
    pub dir_name: String,
    pub state: StoredState,
    /// Bytes of every file below the folder (symbolic links are not followed).
    pub size_bytes: u64,
}

impl StoredBackup {
    pub fn is_complete(&self) -> bool {
        matches!(self.state, StoredState::Complete(_))
    }

    pub fn manifest(&self) -> Option<&Manifest> {
        match &self.state {
            StoredState::Complete(manifest) => Some(manifest),
            _ => None,
        }
    }
}

/// Everything in the backup directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Folders, by name.
    pub backups: Vec<StoredBackup>,
    /// Entries that are not folders (files, symbolic links, names that are not
    /// UTF-8). Never touched.
    pub others: Vec<String>,
}

impl Listing {
    /// The planner's view of the folders.
    pub fn entries(&self) -> Vec<BackupEntry> {
        self.backups.iter().map(|b| BackupEntry { name: b.dir_name.clone(), complete: b.is_complete() }).collect()
    }

    pub fn get(&self, dir_name: &str) -> Option<&StoredBackup> {
        self.backups.iter().find(|b| b.dir_name == dir_name)
    }
}

/// Lists the backup directory.
pub fn list(dir: &Path) -> Result<Listing, StoreError> {
    let read = fs::read_dir(dir).map_err(|source| StoreError::List { path: dir.to_path_buf(), source })?;
    let mut listing = Listing::default();
    for entry in read {
        let entry = entry.map_err(|source| StoreError::List { path: dir.to_path_buf(), source })?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            listing.others.push(entry.file_name().to_string_lossy().into_owned());
            continue;
        };
        let metadata = fs::symlink_metadata(entry.path()).map_err(StoreError::io("inspect", &entry.path()))?;
        if !metadata.is_dir() {
            listing.others.push(name);
            continue;
        }
        if FILESYSTEM_FOLDERS.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        let state = if name.ends_with(PARTIAL_SUFFIX) { StoredState::Partial } else { read_state(&path) };
        listing.backups.push(StoredBackup { dir_name: name, state, size_bytes: tree_size(&path) });
    }
    listing.backups.sort_by(|a, b| a.dir_name.cmp(&b.dir_name));
    listing.others.sort();
    Ok(listing)
}

fn read_state(folder: &Path) -> StoredState {
    let marker = folder.join(MARKER_FILE);
    match fs::read(&marker) {
        Ok(bytes) => match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(manifest) => StoredState::Complete(Box::new(manifest)),
            Err(e) => StoredState::MarkerUnreadable(format!("{MARKER_FILE} is not a manifest: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredState::Unmarked,
        Err(e) => StoredState::MarkerUnreadable(format!("cannot read {MARKER_FILE}: {e}")),
    }
}

/// Bytes of every regular file below `path`; unreadable parts count as 0 (sizes are
/// reported, never used to decide anything).
fn tree_size(path: &Path) -> u64 {
    let Ok(metadata) = fs::symlink_metadata(path) else { return 0 };
    if metadata.is_file() {
        return metadata.len();
    }
    if !metadata.is_dir() {
        return 0;
    }
    fs::read_dir(path).map(|entries| entries.flatten().map(|e| tree_size(&e.path())).sum()).unwrap_or(0)
}

/// A folder the plan named that was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub name: String,
    pub size_bytes: u64,
}

/// A folder the plan named that was not deleted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteFailure {
    pub name: String,
    pub error: String,
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub deleted: Vec<Deleted>,
    pub failed: Vec<DeleteFailure>,
}

/// Deletes the folders `plan` lists, and nothing else. Each one is checked again
/// first (still a real folder, not a symbolic link, still in the state the plan saw);
/// a failure is reported and the others go on.
pub fn apply(dir: &Path, plan: &RetentionPlan) -> ApplyReport {
    let mut report = ApplyReport::default();
    for deletion in &plan.delete {
        match delete_one(dir, deletion) {
            Ok(size_bytes) => report.deleted.push(Deleted { name: deletion.name.clone(), size_bytes }),
            Err(error) => report.failed.push(DeleteFailure { name: deletion.name.clone(), error }),
        }
    }
    report
}

fn delete_one(dir: &Path, deletion: &PlannedDeletion) -> Result<u64, String> {
    let base = deletion.name.strip_suffix(PARTIAL_SUFFIX).unwrap_or(&deletion.name);
    // The name must be a backup name: this also rules out '/', '..' and the like.
    BackupName::parse(base).map_err(|e| e.to_string())?;
    let path = dir.join(&deletion.name);
    let metadata = fs::symlink_metadata(&path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    if !metadata.is_dir() {
        return Err(format!("{} is not a folder (a symbolic link or a file); left alone", path.display()));
    }
    let partial = deletion.name.ends_with(PARTIAL_SUFFIX);
    let state = if partial { StoredState::Partial } else { read_state(&path) };
    let complete = matches!(state, StoredState::Complete(_));
    match deletion.reason {
        DeleteReason::Superseded if !complete => {
            return Err("planned as a complete backup but its marker is gone or unreadable now; left alone".into());
        }
        DeleteReason::StaleIncomplete if complete => {
            return Err("planned as incomplete but it has its completion marker now; left alone".into());
        }
        _ => {}
    }
    let size = tree_size(&path);
    if complete {
        // Marker first: an interrupted deletion then leaves an incomplete folder, not
        // a backup that looks complete with files missing.
        let marker = path.join(MARKER_FILE);
        fs::remove_file(&marker).map_err(|e| format!("cannot remove {}: {e}", marker.display()))?;
        sync_dir(&path).map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
    }
    fs::remove_dir_all(&path).map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
    // Not fatal: the folder is gone from the namespace already.
    let _ = sync_dir(dir);
    Ok(size)
}

/// How [`finalize`] checks and records a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizeOptions {
    /// The run was asked for a Redis snapshot: `redis.rdb` must be there.
    pub expect_redis: bool,
    /// The time written into the marker.
    pub completed_at: Timestamp,
}

/// Marks the run `name` complete: checks what it wrote, syncs every file, renames
/// `NAME.partial` to `NAME`, syncs the directory, and writes the marker last. A
/// finalize that stopped after the rename is resumed; a complete backup is refused.
pub fn finalize(dir: &Path, name: &str, options: &FinalizeOptions) -> Result<Manifest, StoreError> {
    let parsed = BackupName::parse(name)?;
    let partial = dir.join(format!("{name}{PARTIAL_SUFFIX}"));
    let folder = dir.join(name);
    let is_dir = |p: &Path| fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false);
    match (is_dir(&partial), is_dir(&folder)) {
        (true, true) => return Err(StoreError::Conflict { dir: dir.to_path_buf(), name: name.into() }),
        (false, false) => return Err(StoreError::Missing { dir: dir.to_path_buf(), name: name.into() }),
        (false, true) => {
            if folder.join(MARKER_FILE).exists() {
                return Err(StoreError::AlreadyComplete { name: name.into() });
            }
            // Resumed: the rename happened, the marker did not.
            check_contents(&folder, name, options.expect_redis)?;
        }
        (true, false) => {
            check_contents(&partial, name, options.expect_redis)?;
            sync_tree(&partial)?;
            fs::rename(&partial, &folder).map_err(StoreError::io("rename", &partial))?;
            sync_dir(dir).map_err(StoreError::io("sync", dir))?;
        }
    }
    let manifest = build_manifest(&folder, &parsed, name, options.completed_at)?;
    write_marker(&folder, &manifest)?;
    Ok(manifest)
}

/// Checks that `name` is a complete backup whose files are all there with the sizes
/// and checksums its marker records: what a restore runs before it touches anything.
pub fn verify(dir: &Path, name: &str) -> Result<Manifest, StoreError> {
    check_backup(dir, name, true)
}

/// The manifest of the complete backup `name`, its files checked by size only (for
/// a caller that reads every file anyway, such as the native restore).
pub fn complete_manifest(dir: &Path, name: &str) -> Result<Manifest, StoreError> {
    check_backup(dir, name, false)
}

fn check_backup(dir: &Path, name: &str, checksums: bool) -> Result<Manifest, StoreError> {
    BackupName::parse(name)?;
    let folder = dir.join(name);
    let not_complete = |why: String| StoreError::NotComplete { name: name.into(), why };
    if !fs::symlink_metadata(&folder).map(|m| m.is_dir()).unwrap_or(false) {
        let hint = if dir.join(format!("{name}{PARTIAL_SUFFIX}")).exists() {
            "only a .partial folder exists: the run did not finish"
        } else {
            "no such backup on the volume"
        };
        return Err(not_complete(hint.into()));
    }
    let manifest = match read_state(&folder) {
        StoredState::Complete(manifest) => *manifest,
        StoredState::Unmarked => return Err(not_complete(format!("{MARKER_FILE} is missing"))),
        StoredState::MarkerUnreadable(why) => return Err(not_complete(why)),
        StoredState::Partial => return Err(not_complete("it is a partial run".into())),
    };
    for file in &manifest.files {
        let path = folder.join(&file.path);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.len() == file.size_bytes => {
                let Some(recorded) = file.sha256.as_ref().filter(|_| checksums) else { continue };
                let digest = file_digest(&path).map_err(StoreError::io("read", &path))?;
                if &digest.hex() != recorded {
                    return Err(not_complete(format!(
                        "{} does not match its checksum: SHA-256 {}, the marker recorded {recorded}",
                        file.path,
                        digest.hex()
                    )));
                }
            }
            Ok(m) => {
                return Err(not_complete(format!(
                    "{} has {} bytes, the marker recorded {}",
                    file.path,
                    m.len(),
                    file.size_bytes
                )));
            }
            Err(e) => return Err(not_complete(format!("{} cannot be read: {e}", file.path))),
        }
    }
    Ok(manifest)
}

/// The MongoDB archives of a folder: file name and, for per-collection archives,
/// the collection.
fn archives(folder: &Path) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(folder).map_err(StoreError::io("list", folder))? {
        let entry = entry.map_err(StoreError::io("list", folder))?;
        let Some(file) = entry.file_name().to_str().map(str::to_string) else { continue };
        if file == WHOLE_DATABASE_ARCHIVE {
            found.push((file, None));
        } else if let Some(collection) = file.strip_prefix("mongodb-").and_then(|f| f.strip_suffix(".archive.gz")) {
            let collection = collection.to_string();
            found.push((file, Some(collection)));
        }
    }
    found.sort();
    Ok(found)
}

fn starts_with(path: &Path, magic: &[u8]) -> bool {
    let mut head = vec![0u8; magic.len()];
    File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == magic
}

/// Byte count and SHA-256 of a file.
pub fn file_digest(path: &Path) -> std::io::Result<StreamDigest> {
    let mut reader = DigestReader::new(File::open(path)?);
    std::io::copy(&mut reader, &mut std::io::sink())?;
    Ok(reader.digest().clone())
}

/// The native dump's record in a run's folder, when it has one.
fn read_summary(folder: &Path, name: &str) -> Result<Option<DumpSummary>, StoreError> {
    let path = folder.join(DUMP_SUMMARY_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { action: "read", path, source }),
    };
    let unusable = |why: String| StoreError::Unusable { name: name.into(), why };
    let summary: DumpSummary =
        serde_json::from_slice(&bytes).map_err(|e| unusable(format!("{DUMP_SUMMARY_FILE} cannot be read: {e}")))?;
    summary.check().map_err(|why| unusable(format!("{DUMP_SUMMARY_FILE}: {why}")))?;
    Ok(Some(summary))
}

fn check_contents(folder: &Path, name: &str, expect_redis: bool) -> Result<(), StoreError> {
    let unusable = |why: String| StoreError::Unusable { name: name.into(), why };
    if expect_redis && !starts_with(&folder.join(REDIS_FILE), b"REDIS") {
        return Err(unusable(format!(
            "{REDIS_FILE} is missing, empty or not an RDB file, and Redis was to be backed up"
        )));
    }
    if let Some(summary) = read_summary(folder, name)? {
        // The dump recorded each file's size as it closed it: a file that differs
        // now was changed or cut since.
        for file in summary.files() {
            let path = folder.join(&file.path);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() && m.len() == file.size_bytes => {}
                Ok(m) => {
                    return Err(unusable(format!(
                        "{} has {} bytes, the dump wrote {}",
                        file.path,
                        m.len(),
                        file.size_bytes
                    )));
                }
                Err(e) => return Err(unusable(format!("{} cannot be read: {e}", file.path))),
            }
        }
        return Ok(());
    }
    let archives = archives(folder)?;
    if archives.is_empty() {
        return Err(unusable(format!(
            "no MongoDB archive ({WHOLE_DATABASE_ARCHIVE} or mongodb-COLLECTION.archive.gz): mongodump wrote nothing"
        )));
    }
    for (file, _) in &archives {
        // mongodump --gzip writes a gzip stream: 1f 8b.
        if !starts_with(&folder.join(file), &[0x1f, 0x8b]) {
            return Err(unusable(format!("{file} is empty or not a gzip archive")));
        }
    }
    Ok(())
}

fn build_manifest(
    folder: &Path,
    name: &BackupName,
    text: &str,
    completed_at: Timestamp,
) -> Result<Manifest, StoreError> {
    let mut files = Vec::new();
    collect_files(folder, folder, &mut files)?;
    files.retain(|f| f.path != MARKER_FILE && !f.path.starts_with(&format!(".{MARKER_FILE}")));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let summary = read_summary(folder, text)?;
    // The dump's checksums were taken as it wrote; the rest are read once here.
    for file in &mut files {
        file.sha256 = match summary.as_ref().and_then(|s| s.file(&file.path)) {
            Some(recorded) => Some(recorded.sha256.clone()),
            None => {
                let path = folder.join(&file.path);
                Some(file_digest(&path).map_err(StoreError::io("read", &path))?.hex())
            }
        };
    }
    if let Some(summary) = summary {
        return Ok(Manifest::native(name, completed_at, summary, files));
    }
    let archives = archives(folder)?;
    let database = fs::read_to_string(folder.join(DATABASE_FILE)).ok().map(|d| d.trim().to_string());
    Ok(Manifest {
        format: MANIFEST_FORMAT,
        name: text.to_string(),
        started_at: name.timestamp,
        completed_at,
        database: database.filter(|d| !d.is_empty()),
        collections: archives.iter().filter_map(|(_, c)| c.clone()).collect(),
        whole_database: archives.iter().any(|(_, c)| c.is_none()),
        redis: files.iter().any(|f| f.path == REDIS_FILE),
        size_bytes: files.iter().map(|f| f.size_bytes).sum(),
        files,
        mongodb: None,
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<ManifestFile>) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(StoreError::io("list", dir))? {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        let path = entry.path();
        let metadata = fs::symlink_metadata(&path).map_err(StoreError::io("inspect", &path))?;
        if metadata.is_dir() {
            collect_files(root, &path, out)?;
        } else if metadata.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.push(ManifestFile { path: relative, size_bytes: metadata.len(), sha256: None });
        }
    }
    Ok(())
}

fn write_marker(folder: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    let marker = folder.join(MARKER_FILE);
    let temporary = folder.join(format!(".{MARKER_FILE}.tmp"));
    let body = serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::Io {
        action: "encode the marker for",
        path: marker.clone(),
        source: std::io::Error::other(e),
    })?;
    let mut file = File::create(&temporary).map_err(StoreError::io("create", &temporary))?;
    file.write_all(&body).map_err(StoreError::io("write", &temporary))?;
    file.sync_all().map_err(StoreError::io("sync", &temporary))?;
    drop(file);
    fs::rename(&temporary, &marker).map_err(StoreError::io("rename", &temporary))?;
    sync_dir(folder).map_err(StoreError::io("sync", folder))
}

fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(StoreError::io("list", dir))? {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        let path = entry.path();
        let metadata = fs::symlink_metadata(&path).map_err(StoreError::io("inspect", &path))?;
        if metadata.is_dir() {
            sync_tree(&path)?;
        } else if metadata.is_file() {
            File::open(&path).and_then(|f| f.sync_all()).map_err(StoreError::io("sync", &path))?;
        }
    }
    sync_dir(dir).map_err(StoreError::io("sync", dir))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    //! On real temporary directories.

    use super::*;
    use crate::backup::retention::{RetentionPolicy, plan as plan_retention};

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn gzip_bytes() -> Vec<u8> {
        // A valid empty gzip member; only the magic matters to the checks.
        vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    /// Writes a run the way the backup Job's containers do.
    fn write_run(dir: &Path, folder: &str, redis: bool) {
        let path = dir.join(folder);
        fs::create_dir_all(&path).unwrap();
        fs::write(path.join("mongodb-referrals.archive.gz"), gzip_bytes()).unwrap();
        fs::write(path.join("mongodb-referralTransactions.archive.gz"), gzip_bytes()).unwrap();
        fs::write(path.join(DATABASE_FILE), "neurolov").unwrap();
        if redis {
            fs::write(path.join(REDIS_FILE), b"REDIS0011 payload").unwrap();
        }
    }

    fn options(expect_redis: bool) -> FinalizeOptions {
        FinalizeOptions { expect_redis, completed_at: ts("2026-11-23T01:05:00Z") }
    }

    fn complete(dir: &Path, name: &str) {
        write_run(dir, &format!("{name}{PARTIAL_SUFFIX}"), true);
        finalize(dir, name, &options(true)).unwrap();
    }

    #[test]
    fn finalize_renames_then_writes_a_marker_describing_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), "20261123T010000Z.partial", true);
        let manifest = finalize(dir.path(), "20261123T010000Z", &options(true)).unwrap();
        assert!(!dir.path().join("20261123T010000Z.partial").exists());
        assert!(dir.path().join("20261123T010000Z").join(MARKER_FILE).is_file());
        assert_eq!(manifest.collections, ["referralTransactions", "referrals"]);
        assert!(!manifest.whole_database);
        assert!(manifest.redis);
        assert_eq!(manifest.database.as_deref(), Some("neurolov"));
        assert_eq!(manifest.started_at, ts("2026-11-23T01:00:00Z"));
        assert_eq!(manifest.files.len(), 4);
        assert_eq!(manifest.size_bytes, 2 * 20 + 8 + 17);

        let listing = list(dir.path()).unwrap();
        assert_eq!(listing.backups.len(), 1);
        assert_eq!(listing.backups[0].manifest(), Some(&manifest));
        assert_eq!(verify(dir.path(), "20261123T010000Z").unwrap(), manifest);
    }

    #[test]
    fn finalize_refuses_a_run_that_wrote_nothing_useful_and_leaves_it_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("20261123T010000Z.partial")).unwrap();
        let err = finalize(dir.path(), "20261123T010000Z", &options(false)).unwrap_err();
        assert!(err.to_string().contains("no MongoDB archive"), "{err}");
        assert!(dir.path().join("20261123T010000Z.partial").is_dir());

        write_run(dir.path(), "20261124T010000Z.partial", false);
        let err = finalize(dir.path(), "20261124T010000Z", &options(true)).unwrap_err();
        assert!(err.to_string().contains("redis.rdb is missing"), "{err}");

        write_run(dir.path(), "20261125T010000Z.partial", false);
        fs::write(dir.path().join("20261125T010000Z.partial/mongodb-referrals.archive.gz"), b"").unwrap();
        let err = finalize(dir.path(), "20261125T010000Z", &options(false)).unwrap_err();
        assert!(err.to_string().contains("not a gzip archive"), "{err}");
    }

    #[test]
    fn finalize_resumes_after_a_crash_between_rename_and_marker_and_refuses_twice() {
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), "20261123T010000Z", true);
        assert_eq!(list(dir.path()).unwrap().backups[0].state, StoredState::Unmarked);
        finalize(dir.path(), "20261123T010000Z", &options(true)).unwrap();
        assert!(list(dir.path()).unwrap().backups[0].is_complete());
        let again = finalize(dir.path(), "20261123T010000Z", &options(true)).unwrap_err();
        assert!(matches!(again, StoreError::AlreadyComplete { .. }), "{again}");
    }

    #[test]
    fn finalize_refuses_bad_names_missing_folders_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(finalize(dir.path(), "../etc", &options(false)), Err(StoreError::Name(_))));
        assert!(matches!(finalize(dir.path(), "20261123T010000Z", &options(false)), Err(StoreError::Missing { .. })));
        write_run(dir.path(), "20261123T010000Z.partial", false);
        write_run(dir.path(), "20261123T010000Z", false);
        assert!(matches!(finalize(dir.path(), "20261123T010000Z", &options(false)), Err(StoreError::Conflict { .. })));
    }

    #[test]
    fn list_sorts_folders_by_state_and_keeps_files_and_links_apart() {
        let dir = tempfile::tempdir().unwrap();
        complete(dir.path(), "20261122T010000Z");
        write_run(dir.path(), "20261123T010000Z.partial", false);
        write_run(dir.path(), "20261121T010000Z", false);
        fs::create_dir(dir.path().join("20261120T010000Z")).unwrap();
        fs::write(dir.path().join("20261120T010000Z").join(MARKER_FILE), b"{not json").unwrap();
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("20261122T010000Z"), dir.path().join("20261124T010000Z")).unwrap();

        let listing = list(dir.path()).unwrap();
        let states: Vec<(&str, bool)> =
            listing.backups.iter().map(|b| (b.dir_name.as_str(), b.is_complete())).collect();
        assert_eq!(
            states,
            [
                ("20261120T010000Z", false),
                ("20261121T010000Z", false),
                ("20261122T010000Z", true),
                ("20261123T010000Z.partial", false)
            ]
        );
        assert!(matches!(listing.backups[0].state, StoredState::MarkerUnreadable(_)));
        assert_eq!(listing.backups[1].state, StoredState::Unmarked);
        assert_eq!(listing.backups[3].state, StoredState::Partial);
        assert_eq!(listing.others, ["20261124T010000Z", "notes.txt"]);
        assert!(listing.backups[2].size_bytes > 0);
    }

    #[test]
    fn apply_deletes_what_the_plan_says_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for day in 17..=23 {
            complete(dir.path(), &format!("202611{day}T010000Z"));
        }
        write_run(dir.path(), "20261123T020000Z.partial", false);
        fs::write(dir.path().join("keep-me.txt"), b"x").unwrap();
        let listing = list(dir.path()).unwrap();
        let plan = plan_retention(
            &listing.entries(),
            RetentionPolicy { daily: 3, weekly: 0, monthly: 0 },
            ts("2026-11-23T03:00:00Z"),
        );
        let report = apply(dir.path(), &plan);
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let deleted: Vec<&str> = report.deleted.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(deleted, ["20261120T010000Z", "20261119T010000Z", "20261118T010000Z", "20261117T010000Z"]);
        assert!(report.deleted.iter().all(|d| d.size_bytes > 0));

        let after = list(dir.path()).unwrap();
        let names: Vec<&str> = after.backups.iter().map(|b| b.dir_name.as_str()).collect();
        assert_eq!(names, ["20261121T010000Z", "20261122T010000Z", "20261123T010000Z", "20261123T020000Z.partial"]);
        assert_eq!(after.others, ["keep-me.txt"]);

        // Applying the plan made from what is left deletes nothing more.
        let again = plan_retention(
            &after.entries(),
            RetentionPolicy { daily: 3, weekly: 0, monthly: 0 },
            ts("2026-11-23T03:00:00Z"),
        );
        assert!(again.deletes_nothing());
    }

    #[test]
    fn a_failed_deletion_is_reported_and_the_rest_go_on() {
        let dir = tempfile::tempdir().unwrap();
        for day in 20..=23 {
            complete(dir.path(), &format!("202611{day}T010000Z"));
        }
        let listing = list(dir.path()).unwrap();
        let plan = plan_retention(
            &listing.entries(),
            RetentionPolicy { daily: 1, weekly: 0, monthly: 0 },
            ts("2026-11-23T03:00:00Z"),
        );
        assert_eq!(plan.delete.len(), 3);
        // Between planning and applying, one folder becomes a link and one loses its marker.
        let moved = dir.path().join("moved");
        fs::rename(dir.path().join("20261122T010000Z"), &moved).unwrap();
        std::os::unix::fs::symlink(&moved, dir.path().join("20261122T010000Z")).unwrap();
        fs::remove_file(dir.path().join("20261121T010000Z").join(MARKER_FILE)).unwrap();

        let report = apply(dir.path(), &plan);
        assert_eq!(report.deleted.len(), 1);
        assert_eq!(report.deleted[0].name, "20261120T010000Z");
        let failed: Vec<&str> = report.failed.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(failed, ["20261122T010000Z", "20261121T010000Z"]);
        assert!(report.failed[0].error.contains("not a folder"), "{}", report.failed[0].error);
        assert!(report.failed[1].error.contains("marker is gone"), "{}", report.failed[1].error);
        assert!(moved.join(MARKER_FILE).is_file(), "the link's target must not be touched");
        assert!(dir.path().join("20261121T010000Z").is_dir());
    }

    #[test]
    fn a_plan_naming_something_outside_the_directory_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), b"x").unwrap();
        let forged = RetentionPlan {
            delete: vec![PlannedDeletion {
                name: format!("../{}", outside.path().file_name().unwrap().to_string_lossy()),
                timestamp: ts("2026-11-23T01:00:00Z"),
                reason: DeleteReason::Superseded,
            }],
            ..RetentionPlan::default()
        };
        let report = apply(dir.path(), &forged);
        assert!(report.deleted.is_empty());
        assert_eq!(report.failed.len(), 1);
        assert!(outside.path().join("precious").exists());
    }

    #[test]
    fn verify_catches_a_truncated_file_and_a_missing_marker() {
        let dir = tempfile::tempdir().unwrap();
        complete(dir.path(), "20261123T010000Z");
        fs::write(dir.path().join("20261123T010000Z").join(REDIS_FILE), b"REDIS").unwrap();
        let err = verify(dir.path(), "20261123T010000Z").unwrap_err();
        assert!(err.to_string().contains("redis.rdb has 5 bytes"), "{err}");
        write_run(dir.path(), "20261124T010000Z.partial", false);
        let err = verify(dir.path(), "20261124T010000Z").unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        let err = verify(dir.path(), "20261125T010000Z").unwrap_err();
        assert!(err.to_string().contains("no such backup"), "{err}");
    }
}
