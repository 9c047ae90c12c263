//! The native restore and the deep verify of a backup in mongodump's directory
//! layout, from the volume or from object storage ([`super::target::BackupSource`]).
//!
//! A restore never starts on a backup it has not read through: [`verify`] first
//! streams every file, checks its size and SHA-256 against the manifest, decodes
//! every document and counts them, and only when all of it matches are collections
//! dropped and written. A corrupt, truncated or tampered backup is refused with a
//! message naming the file. Then each collection is dropped, created with its
//! recorded options, filled (documents decoded on a thread of their own, inserted in
//! batches of at most [`BATCH_BYTES`] while the next batch is read), given its
//! indexes, and counted: a count that differs from the manifest fails the restore.
//!
//! A `mongodump --out` directory without our manifest can be restored too; it is
//! verified as far as it can be (every file decodes, every document is valid BSON)
//! and the counts are checked against what was read.
//!
//! As `mongorestore --drop` does: only the collections in the backup are dropped and
//! restored, the index version (`v`) and namespace (`ns`) of each index are left to
//! the server, and `_id_` comes with the collection.

use std::io::Read;
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::{Client, Database};
use serde::Serialize;
use tokio::sync::mpsc;

use super::layout::{self, CollectionKind, CollectionMetadata, FileKind};
use super::manifest::{DumpSummary, StoredFile};
use super::object::Redactor;
use super::store::{MARKER_FILE, Manifest};
use super::stream::{DigestReader, DocumentReader, StreamError};
use super::target::{BackupSource, TargetError};

/// Bytes of documents per insert (MongoDB's own limit for one batch is 48 MB).
pub const BATCH_BYTES: usize = 8 << 20;
/// Documents per insert at most.
pub const BATCH_DOCUMENTS: usize = 10_000;
/// Largest metadata file read (they are a few KiB; this bounds a hostile one).
const MAX_METADATA_BYTES: u64 = 16 << 20;

/// Why a verify or a restore failed, naming the file or collection.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{file}: {why}")]
    Corrupt { file: String, why: String },
    #[error("{file} cannot be read: {source}")]
    Read { file: String, source: TargetError },
    #[error("the backup at {location} is not usable: {why}")]
    Unusable { location: String, why: String },
    #[error("collection {collection:?} is not in the backup (it holds: {holds})")]
    NotInBackup { collection: String, holds: String },
    #[error("{operation} {collection} failed: {message}")]
    Database { operation: &'static str, collection: String, message: String },
    #[error(
        "{collection} holds {found} documents after the restore, the backup has {expected}: the restore is not complete"
    )]
    CountMismatch { collection: String, expected: u64, found: u64 },
}

/// What the backup says about one file: its size and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub size_bytes: u64,
    pub sha256: String,
}

impl From<&StoredFile> for Expected {
    fn from(file: &StoredFile) -> Self {
        Expected { size_bytes: file.size_bytes, sha256: file.sha256.clone() }
    }
}

/// One collection to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCollection {
    pub name: String,
    pub kind: CollectionKind,
    pub metadata_path: String,
    pub metadata_expected: Option<Expected>,
    pub data_path: Option<String>,
    pub data_expected: Option<Expected>,
    /// Documents the manifest recorded (unknown for a plain mongodump directory).
    pub documents: Option<u64>,
    pub bson_bytes: Option<u64>,
}

/// What a restore reads, in order: collections first, views after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// The database the backup was taken from (its folder).
    pub source_database: String,
    pub collections: Vec<PlannedCollection>,
    /// Other files the manifest lists (the Redis snapshot, the summary): checked by
    /// size and checksum, not restored here.
    pub other_files: Vec<(String, Expected)>,
}

impl RestorePlan {
    /// The plan of a backup with a manifest (a native dump).
    pub fn from_manifest(manifest: &Manifest) -> Result<RestorePlan, String> {
        let summary: &DumpSummary = manifest
            .mongodb
            .as_ref()
            .ok_or("the manifest has no native dump (a Mongodump-method backup: restore it with mongorestore, or with backup.method Mongodump)")?;
        summary.check()?;
        let mut collections: Vec<PlannedCollection> = summary
            .collections
            .iter()
            .map(|c| PlannedCollection {
                name: c.name.clone(),
                kind: c.kind,
                metadata_path: c.metadata_file.path.clone(),
                metadata_expected: Some(Expected::from(&c.metadata_file)),
                data_path: c.data_file.as_ref().map(|f| f.path.clone()),
                data_expected: c.data_file.as_ref().map(Expected::from),
                documents: Some(c.documents),
                bson_bytes: Some(c.bson_bytes),
            })
            .collect();
        collections.sort_by_key(|c| c.kind == CollectionKind::View);
        let dumped: Vec<&str> = summary.files().map(|f| f.path.as_str()).collect();
        let mut other_files = Vec::new();
        for file in &manifest.files {
            if dumped.contains(&file.path.as_str()) {
                continue;
            }
            let Some(sha256) = &file.sha256 else {
                return Err(format!("{} has no checksum in the manifest", file.path));
            };
            other_files.push((file.path.clone(), Expected { size_bytes: file.size_bytes, sha256: sha256.clone() }));
        }
        Ok(RestorePlan { source_database: summary.database.clone(), collections, other_files })
    }

    /// The plan of a `mongodump --out` directory (no manifest): the files of the
    /// database folder `database`, paired by name; a cut name is read back from its
    /// metadata. Blocking.
    pub fn from_directory(source: &dyn BackupSource, database: &str) -> Result<RestorePlan, RestoreError> {
        if !super::manifest::valid_database_name(database) {
            return Err(RestoreError::Unusable {
                location: source.location(),
                why: format!("{database:?} is not a MongoDB database name"),
            });
        }
        let files = source.list(database).map_err(|e| RestoreError::Read { file: database.into(), source: e })?;
        let mut by_stem: std::collections::BTreeMap<String, (Option<String>, Option<String>)> = Default::default();
        for (file, _) in &files {
            let Some(found) = layout::classify(file) else { continue };
            let entry = by_stem.entry(found.stem).or_default();
            let path = format!("{database}/{file}");
            match found.kind {
                FileKind::Data => entry.0 = Some(path),
                FileKind::Metadata => entry.1 = Some(path),
            }
        }
        let mut collections = Vec::new();
        for (stem, (data, metadata)) in by_stem {
            let Some(metadata_path) = metadata else {
                return Err(RestoreError::Unusable {
                    location: source.location(),
                    why: format!("{} has no .metadata.json beside it", data.unwrap_or(stem)),
                });
            };
            let fallback = if layout::is_truncated_stem(&stem) {
                None
            } else {
                Some(layout::unescape_collection_name(&stem).map_err(|why| RestoreError::Corrupt {
                    file: metadata_path.clone(),
                    why: format!("the file name does not unescape: {why}"),
                })?)
            };
            let metadata = read_metadata(source, &metadata_path, None, fallback.as_deref())?.1;
            if metadata.collection_name.starts_with("system.") && metadata.collection_name != "system.js" {
                continue;
            }
            if metadata.kind != CollectionKind::View && data.is_none() {
                return Err(RestoreError::Unusable {
                    location: source.location(),
                    why: format!("{metadata_path} has no data file beside it"),
                });
            }
            collections.push(PlannedCollection {
                name: metadata.collection_name,
                kind: metadata.kind,
                metadata_path,
                metadata_expected: None,
                data_path: data.filter(|_| metadata.kind != CollectionKind::View),
                data_expected: None,
                documents: None,
                bson_bytes: None,
            });
        }
        collections
            .sort_by(|a, b| (a.kind == CollectionKind::View, &a.name).cmp(&(b.kind == CollectionKind::View, &b.name)));
        Ok(RestorePlan { source_database: database.into(), collections, other_files: Vec::new() })
    }

    /// Keeps only `names` (all when empty); a name the backup does not hold is refused.
    pub fn only(mut self, names: &[String]) -> Result<RestorePlan, RestoreError> {
        if names.is_empty() {
            return Ok(self);
        }
        for name in names {
            if !self.collections.iter().any(|c| &c.name == name) {
                let holds = self.collections.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
                return Err(RestoreError::NotInBackup { collection: name.clone(), holds });
            }
        }
        self.collections.retain(|c| names.contains(&c.name));
        Ok(self)
    }
}

/// What [`verify`] found, per collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedCollection {
    pub name: String,
    pub kind: CollectionKind,
    pub documents: u64,
    pub bson_bytes: u64,
    pub indexes: u32,
}

/// What [`verify`] read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub collections: Vec<VerifiedCollection>,
    /// Files checked by size and checksum only.
    pub other_files: Vec<String>,
    /// Bytes read from the backup.
    pub bytes_read: u64,
}

fn check_expected(file: &str, expected: Option<&Expected>, size: u64, sha256: &str) -> Result<(), RestoreError> {
    let Some(expected) = expected else { return Ok(()) };
    if size != expected.size_bytes {
        return Err(RestoreError::Corrupt {
            file: file.into(),
            why: format!("{size} bytes, the manifest recorded {} (truncated or changed)", expected.size_bytes),
        });
    }
    if sha256 != expected.sha256 {
        return Err(RestoreError::Corrupt {
            file: file.into(),
            why: format!("SHA-256 {sha256}, the manifest recorded {} (corrupt or changed)", expected.sha256),
        });
    }
    Ok(())
}

fn open(source: &dyn BackupSource, path: &str) -> Result<DigestReader<Box<dyn Read + Send>>, RestoreError> {
    Ok(DigestReader::new(source.open(path).map_err(|e| RestoreError::Read { file: path.into(), source: e })?))
}

fn is_gzip(path: &str) -> bool {
    path.ends_with(layout::GZIP_SUFFIX)
}

/// Reads, checks and parses a metadata file; returns its stored size and the metadata.
fn read_metadata(
    source: &dyn BackupSource,
    path: &str,
    expected: Option<&Expected>,
    fallback_name: Option<&str>,
) -> Result<(u64, CollectionMetadata), RestoreError> {
    let mut raw = open(source, path)?;
    let mut text = Vec::new();
    let corrupt = |why: String| RestoreError::Corrupt { file: path.into(), why };
    {
        let limited = (&mut raw).take(MAX_METADATA_BYTES + 1);
        let result = if is_gzip(path) {
            MultiGzDecoder::new(limited).take(MAX_METADATA_BYTES + 1).read_to_end(&mut text)
        } else {
            let mut limited = limited;
            limited.read_to_end(&mut text)
        };
        result.map_err(|e| corrupt(format!("cannot be read: {e}")))?;
    }
    if text.len() as u64 > MAX_METADATA_BYTES {
        return Err(corrupt(format!("larger than {MAX_METADATA_BYTES} bytes: not a metadata file")));
    }
    std::io::copy(&mut raw, &mut std::io::sink()).map_err(|e| corrupt(format!("cannot be read: {e}")))?;
    check_expected(path, expected, raw.digest().bytes(), &raw.digest().hex())?;
    let metadata = CollectionMetadata::from_json(&text, fallback_name, path)
        .map_err(|e| corrupt(e.to_string().trim_start_matches(&format!("{path} ")).to_string()))?;
    Ok((raw.digest().bytes(), metadata))
}

/// Streams a data file through `each` (one raw document at a time), checking its
/// size and checksum at the end; returns (documents, BSON bytes).
fn read_data(
    source: &dyn BackupSource,
    path: &str,
    expected: Option<&Expected>,
    validate: bool,
    mut each: impl FnMut(&[u8]) -> bool,
) -> Result<(u64, u64), RestoreError> {
    let mut raw = open(source, path)?;
    let stream_error = |e: StreamError| RestoreError::Corrupt { file: path.into(), why: e.to_string() };
    let (documents, bytes) = {
        let decoded: Box<dyn Read + Send + '_> =
            if is_gzip(path) { Box::new(MultiGzDecoder::new(&mut raw)) } else { Box::new(&mut raw) };
        let mut reader = DocumentReader::new(decoded);
        if validate {
            reader = reader.validating();
        }
        let mut documents = 0u64;
        while let Some(document) = reader.next_document().map_err(stream_error)? {
            documents += 1;
            if !each(document) {
                return Ok((documents, reader.offset()));
            }
        }
        (documents, reader.offset())
    };
    // Whatever the decoder did not need still counts in the file's checksum.
    std::io::copy(&mut raw, &mut std::io::sink())
        .map_err(|e| RestoreError::Corrupt { file: path.into(), why: format!("cannot be read: {e}") })?;
    check_expected(path, expected, raw.digest().bytes(), &raw.digest().hex())?;
    Ok((documents, bytes))
}

/// Reads the whole backup: every file's size and checksum, every document decoded
/// and validated, the counts compared with the manifest. Blocking.
pub fn verify(source: &dyn BackupSource, plan: &RestorePlan) -> Result<VerifyReport, RestoreError> {
    let mut report = VerifyReport { collections: Vec::new(), other_files: Vec::new(), bytes_read: 0 };
    for collection in &plan.collections {
        let (metadata_bytes, metadata) = read_metadata(
            source,
            &collection.metadata_path,
            collection.metadata_expected.as_ref(),
            Some(&collection.name),
        )?;
        report.bytes_read += metadata_bytes;
        if metadata.collection_name != collection.name || metadata.kind != collection.kind {
            return Err(RestoreError::Corrupt {
                file: collection.metadata_path.clone(),
                why: format!(
                    "describes {} {:?}, the manifest says {} {:?}",
                    metadata.kind.as_str(),
                    metadata.collection_name,
                    collection.kind.as_str(),
                    collection.name
                ),
            });
        }
        let (documents, bson_bytes) = match &collection.data_path {
            Some(path) => {
                let counted = read_data(source, path, collection.data_expected.as_ref(), true, |_| true)?;
                report.bytes_read += collection.data_expected.as_ref().map_or(0, |e| e.size_bytes);
                if let Some(expected) = collection.documents
                    && expected != counted.0
                {
                    return Err(RestoreError::Corrupt {
                        file: path.clone(),
                        why: format!("{} documents, the manifest recorded {expected}", counted.0),
                    });
                }
                if let Some(expected) = collection.bson_bytes
                    && expected != counted.1
                {
                    return Err(RestoreError::Corrupt {
                        file: path.clone(),
                        why: format!("{} bytes of BSON, the manifest recorded {expected}", counted.1),
                    });
                }
                counted
            }
            None => (0, 0),
        };
        report.collections.push(VerifiedCollection {
            name: collection.name.clone(),
            kind: collection.kind,
            documents,
            bson_bytes,
            indexes: u32::try_from(metadata.indexes.len()).unwrap_or(u32::MAX),
        });
    }
    for (path, expected) in &plan.other_files {
        if path == MARKER_FILE {
            continue;
        }
        let mut raw = open(source, path)?;
        std::io::copy(&mut raw, &mut std::io::sink())
            .map_err(|e| RestoreError::Corrupt { file: path.clone(), why: format!("cannot be read: {e}") })?;
        check_expected(path, Some(expected), raw.digest().bytes(), &raw.digest().hex())?;
        report.bytes_read += raw.digest().bytes();
        report.other_files.push(path.clone());
    }
    Ok(report)
}

/// One restored collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredCollection {
    pub name: String,
    pub kind: CollectionKind,
    pub documents: u64,
    pub indexes: u32,
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub database: String,
    pub collections: Vec<RestoredCollection>,
    pub verified: VerifyReport,
}

/// Verifies the whole backup, then restores its collections into `database`
/// (dropping each first) and checks their counts.
pub async fn restore(
    client: &Client,
    source: Arc<dyn BackupSource>,
    plan: &RestorePlan,
    database: &str,
    redactor: &Redactor,
) -> Result<RestoreReport, RestoreError> {
    if !super::manifest::valid_database_name(database) {
        return Err(RestoreError::Unusable {
            location: source.location(),
            why: format!("the target {database:?} is not a MongoDB database name"),
        });
    }
    let verified = {
        let (source, plan) = (source.clone(), plan.clone());
        tokio::task::spawn_blocking(move || verify(source.as_ref(), &plan))
            .await
            .map_err(|join| RestoreError::Unusable { location: "(verify)".into(), why: join.to_string() })??
    };
    let db = client.database(database);
    // Dropping only what exists: some servers answer a drop of a missing collection
    // with an error the driver cannot read.
    let existing = db.list_collection_names().await.map_err(|e| RestoreError::Database {
        operation: "listing the collections of",
        collection: database.to_string(),
        message: redactor.clean(&e.to_string()),
    })?;
    let mut restored = Vec::new();
    for (collection, counted) in plan.collections.iter().zip(&verified.collections) {
        let metadata = {
            let (source, path, name) = (source.clone(), collection.metadata_path.clone(), collection.name.clone());
            tokio::task::spawn_blocking(move || read_metadata(source.as_ref(), &path, None, Some(&name)))
                .await
                .map_err(|join| RestoreError::Unusable { location: "(metadata)".into(), why: join.to_string() })??
                .1
        };
        let database_error = |operation: &'static str| {
            let collection = collection.name.clone();
            move |e: mongodb::error::Error| RestoreError::Database {
                operation,
                collection,
                message: redactor.clean(&e.to_string()),
            }
        };
        if existing.contains(&collection.name) {
            db.collection::<Document>(&collection.name).drop().await.map_err(database_error("dropping"))?;
        }
        let mut create = doc! {"create": &collection.name};
        for (key, value) in metadata.options.iter() {
            create.insert(key.clone(), value.clone());
        }
        db.run_command(create).await.map_err(database_error("creating"))?;
        if collection.kind == CollectionKind::View {
            restored.push(RestoredCollection {
                name: collection.name.clone(),
                kind: collection.kind,
                documents: 0,
                indexes: 0,
            });
            continue;
        }
        let inserted = insert_all(&db, source.clone(), collection, collection.data_expected.clone(), redactor).await?;
        let indexes =
            create_indexes(&db, &collection.name, &metadata.indexes).await.map_err(database_error("indexing"))?;
        let found = db
            .collection::<Document>(&collection.name)
            .count_documents(doc! {})
            .await
            .map_err(database_error("counting"))?;
        let expected = counted.documents;
        if found != expected || inserted != expected {
            return Err(RestoreError::CountMismatch { collection: collection.name.clone(), expected, found });
        }
        restored.push(RestoredCollection {
            name: collection.name.clone(),
            kind: collection.kind,
            documents: found,
            indexes,
        });
    }
    Ok(RestoreReport { database: database.into(), collections: restored, verified })
}

/// Reads the data file on a thread of its own and inserts its documents in batches,
/// one batch in the air while the next is read. Returns the documents inserted.
async fn insert_all(
    db: &Database,
    source: Arc<dyn BackupSource>,
    collection: &PlannedCollection,
    expected: Option<Expected>,
    redactor: &Redactor,
) -> Result<u64, RestoreError> {
    let Some(path) = collection.data_path.clone() else { return Ok(0) };
    let (sender, mut receiver) = mpsc::channel::<Vec<RawDocumentBuf>>(1);
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch: Vec<RawDocumentBuf> = Vec::new();
        let mut batch_bytes = 0usize;
        let result = read_data(source.as_ref(), &path, expected.as_ref(), false, |document| {
            batch_bytes += document.len();
            // The frame was checked by the reader; the server checks the rest.
            match RawDocumentBuf::from_bytes(document.to_vec()) {
                Ok(raw) => batch.push(raw),
                Err(_) => return false,
            }
            if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_DOCUMENTS {
                batch_bytes = 0;
                return sender.blocking_send(std::mem::take(&mut batch)).is_ok();
            }
            true
        });
        if result.is_ok() && !batch.is_empty() {
            let _ = sender.blocking_send(batch);
        }
        result
    });
    let target = db.collection::<RawDocumentBuf>(&collection.name);
    let mut inserted = 0u64;
    let mut failure = None;
    while let Some(batch) = receiver.recv().await {
        let count = batch.len() as u64;
        if let Err(e) = target.insert_many(batch).await {
            failure = Some(RestoreError::Database {
                operation: "inserting into",
                collection: format!("{} (after {inserted} documents)", collection.name),
                message: redactor.clean(&e.to_string()),
            });
            break;
        }
        inserted += count;
    }
    drop(receiver);
    let read =
        reader.await.map_err(|join| RestoreError::Unusable { location: "(reader)".into(), why: join.to_string() })?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    read?;
    Ok(inserted)
}

/// Creates the recorded indexes but `_id_`, without their `v` and `ns` (the server
/// sets both, as mongorestore leaves them to it). Returns how many the collection has.
async fn create_indexes(db: &Database, collection: &str, indexes: &[Document]) -> Result<u32, mongodb::error::Error> {
    let specs: Vec<Bson> = indexes
        .iter()
        .filter(|index| index.get_str("name") != Ok("_id_"))
        .map(|index| {
            let mut spec = index.clone();
            spec.remove("v");
            spec.remove("ns");
            Bson::Document(spec)
        })
        .collect();
    if !specs.is_empty() {
        db.run_command(doc! {"createIndexes": collection, "indexes": specs.clone()}).await?;
    }
    Ok(u32::try_from(specs.len() + 1).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    //! Plans and verification on real temporary folders, no database.

    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use mongodb::bson::{RawDocumentBuf, doc};

    use super::*;
    use crate::backup::target::VolumeFolder;

    fn bson(range: std::ops::Range<i32>) -> Vec<u8> {
        range.flat_map(|i| RawDocumentBuf::from_document(&doc! {"_id": i}).unwrap().into_bytes()).collect()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::new(1));
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn metadata(name: &str) -> Vec<u8> {
        CollectionMetadata {
            collection_name: name.into(),
            kind: CollectionKind::Collection,
            options: Document::new(),
            indexes: vec![doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}],
            uuid: None,
        }
        .to_json()
    }

    #[test]
    fn a_mongodump_folder_is_planned_by_its_file_names_and_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("neurolov");
        std::fs::create_dir(&db).unwrap();
        // Two gzip members one after the other (what `cat a.gz b.gz` makes): both count.
        let mut data = gzip(&bson(0..10));
        data.extend(gzip(&bson(10..25)));
        std::fs::write(db.join("users.bson.gz"), data).unwrap();
        std::fs::write(db.join("users.metadata.json.gz"), gzip(&metadata("users"))).unwrap();
        std::fs::write(db.join("a%20b.bson"), bson(0..3)).unwrap();
        std::fs::write(db.join("a%20b.metadata.json"), metadata("a b")).unwrap();
        std::fs::write(db.join("system.profile.bson"), bson(0..1)).unwrap();
        std::fs::write(db.join("system.profile.metadata.json"), metadata("system.profile")).unwrap();
        std::fs::write(db.join("notes.txt"), b"ignored").unwrap();
        let source = VolumeFolder::new(dir.path());
        let plan = RestorePlan::from_directory(&source, "neurolov").unwrap();
        let names: Vec<&str> = plan.collections.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a b", "users"], "system collections are not restored");
        let report = verify(&source, &plan).unwrap();
        let counts: Vec<u64> = report.collections.iter().map(|c| c.documents).collect();
        assert_eq!(counts, [3, 25]);
        assert!(plan.clone().only(&["nope".to_string()]).is_err());
        assert_eq!(plan.only(&["users".to_string()]).unwrap().collections.len(), 1);
    }

    #[test]
    fn a_data_file_without_metadata_or_garbage_after_the_gzip_stream_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        std::fs::write(db.join("orphan.bson"), bson(0..1)).unwrap();
        let source = VolumeFolder::new(dir.path());
        let err = RestorePlan::from_directory(&source, "db").unwrap_err().to_string();
        assert!(err.contains("db/orphan.bson has no .metadata.json beside it"), "{err}");

        std::fs::remove_file(db.join("orphan.bson")).unwrap();
        let mut data = gzip(&bson(0..5));
        data.extend_from_slice(b"trailing garbage");
        std::fs::write(db.join("users.bson.gz"), data).unwrap();
        std::fs::write(db.join("users.metadata.json"), metadata("users")).unwrap();
        let plan = RestorePlan::from_directory(&source, "db").unwrap();
        let err = verify(&source, &plan).unwrap_err().to_string();
        assert!(err.starts_with("db/users.bson.gz: "), "{err}");
    }

    #[test]
    fn a_metadata_file_naming_another_collection_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        std::fs::write(db.join("users.bson"), bson(0..2)).unwrap();
        std::fs::write(db.join("users.metadata.json"), metadata("users")).unwrap();
        let source = VolumeFolder::new(dir.path());
        let mut plan = RestorePlan::from_directory(&source, "db").unwrap();
        plan.collections[0].name = "referrals".into();
        let err = verify(&source, &plan).unwrap_err().to_string();
        assert!(err.contains("describes collection \"users\", the manifest says collection \"referrals\""), "{err}");
    }
}
