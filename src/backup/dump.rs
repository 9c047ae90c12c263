//! The native dump: each collection of a database streamed through the Rust driver
//! into mongodump's directory layout ([`super::layout`]), gzip-compressed as
//! `mongodump --gzip` does, with a count, a byte count and a SHA-256 of every file
//! ([`super::manifest::DumpSummary`]).
//!
//! Memory stays flat however large a collection is: the cursor asks for batches of
//! a few MiB ([`cursor_batch_size`]), documents are copied as raw bytes from the
//! cursor's batch into chunks of about [`CHUNK_BYTES`], and at most
//! [`CHUNKS_IN_FLIGHT`] chunks wait between the cursor and the writer thread, which
//! compresses, hashes and writes them to every target at once. The cursor keeps
//! reading while the writer works, so the dump runs at the speed of the slower of
//! the two, not of their sum.
//!
//! Like `mongodump` without `--oplog`, a dump is not a point-in-time snapshot of a
//! database that is being written to; the restore holds the workers off, the
//! scheduled backup runs while they work.

use std::io::Write;
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::{Client, Database};
use tokio::sync::mpsc;

use super::layout::{self, CollectionKind, CollectionMetadata};
use super::manifest::{DumpSummary, DumpedCollection, LAYOUT_MONGODUMP_DIRECTORY, StoredFile, valid_database_name};
use super::object::Redactor;
use super::stream::DigestWriter;
use super::target::{FileSink, TargetError, TeeFile};

/// Bytes of documents gathered before they are handed to the writer.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks that may wait for the writer.
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// Bytes of documents the cursor asks for per batch.
const BATCH_TARGET_BYTES: i64 = 4 << 20;
/// Documents per batch when the collection's average size is unknown.
const DEFAULT_BATCH_DOCUMENTS: u32 = 1000;

/// Why a dump failed, naming the collection or file. Driver messages pass through
/// the [`Redactor`] first.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{database:?} is not a MongoDB database name")]
    BadDatabase { database: String },
    #[error("listing the collections of {database} failed: {message}")]
    ListCollections { database: String, message: String },
    #[error("listing the indexes of {collection} failed: {message}")]
    ListIndexes { collection: String, message: String },
    #[error("reading {collection} failed after {documents} documents: {message}")]
    Read { collection: String, documents: u64, message: String },
    #[error("{collection} is a {kind} collection; the native dump does not handle those: use backup.method Mongodump")]
    Unsupported { collection: String, kind: String },
    #[error("writing {file} failed: {message}")]
    Write { file: String, message: String },
}

/// What to dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRequest {
    pub database: String,
    /// Collections (or views) to dump, in this order; empty for every collection and
    /// view of the database but `system.*` (as mongodump, `system.js` is kept).
    pub collections: Vec<String>,
    /// gzip every file at this level, 1 (fastest) to 9 (`mongodump --gzip` writes
    /// the same format at level 6); `None` writes plain files.
    pub gzip: Option<u32>,
}

/// One namespace as `listCollections` describes it.
struct Namespace {
    name: String,
    kind: CollectionKind,
    options: Document,
    uuid: Option<String>,
}

fn namespace_of(info: &Document) -> Option<Namespace> {
    let name = info.get_str("name").ok()?.to_string();
    let kind_text = info.get_str("type").unwrap_or("collection");
    let kind = CollectionKind::parse(kind_text)?;
    let options = info.get_document("options").cloned().unwrap_or_default();
    let uuid = match info.get_document("info").ok().and_then(|i| i.get("uuid")) {
        Some(Bson::Binary(binary)) => Some(layout::uuid_hex(&binary.bytes)),
        _ => None,
    };
    Some(Namespace { name, kind, options, uuid })
}

/// Dumps `request.database` into every sink at once and returns what was written.
/// The caller writes the summary and the manifest afterwards; on an error the run
/// is left without them, incomplete.
pub async fn dump(
    client: &Client,
    request: &DumpRequest,
    sinks: &[Arc<dyn FileSink>],
    redactor: &Redactor,
) -> Result<DumpSummary, DumpError> {
    if !valid_database_name(&request.database) {
        return Err(DumpError::BadDatabase { database: request.database.clone() });
    }
    let db = client.database(&request.database);
    let namespaces = namespaces(&db, &request.collections, redactor).await?;
    let mut collections = Vec::with_capacity(namespaces.len());
    for namespace in namespaces {
        collections.push(dump_one(&db, namespace, request, sinks, redactor).await?);
    }
    Ok(DumpSummary {
        layout: LAYOUT_MONGODUMP_DIRECTORY.into(),
        database: request.database.clone(),
        gzip: request.gzip.is_some(),
        whole_database: request.collections.is_empty(),
        collections,
        tool: concat!("referral-operator ", env!("CARGO_PKG_VERSION")).into(),
    })
}

async fn namespaces(db: &Database, wanted: &[String], redactor: &Redactor) -> Result<Vec<Namespace>, DumpError> {
    let failed = |e: mongodb::error::Error| DumpError::ListCollections {
        database: db.name().to_string(),
        message: redactor.clean(&e.to_string()),
    };
    let infos: Vec<Document> = db
        .run_cursor_command(doc! {"listCollections": 1})
        .await
        .map_err(failed)?
        .try_collect()
        .await
        .map_err(failed)?;
    let mut found: Vec<Namespace> = infos.iter().filter_map(namespace_of).collect();
    if wanted.is_empty() {
        found.retain(|n| n.name == "system.js" || !n.name.starts_with("system."));
        found.sort_by(|a, b| a.name.cmp(&b.name));
        return Ok(found);
    }
    let mut chosen = Vec::with_capacity(wanted.len());
    for name in wanted {
        match found.iter().position(|n| &n.name == name) {
            Some(i) => chosen.push(found.swap_remove(i)),
            // As mongodump does for a collection that does not exist: an empty one,
            // so that a restore leaves it empty too.
            None => chosen.push(Namespace {
                name: name.clone(),
                kind: CollectionKind::Collection,
                options: Document::new(),
                uuid: None,
            }),
        }
    }
    Ok(chosen)
}

async fn dump_one(
    db: &Database,
    namespace: Namespace,
    request: &DumpRequest,
    sinks: &[Arc<dyn FileSink>],
    redactor: &Redactor,
) -> Result<DumpedCollection, DumpError> {
    let name = namespace.name.clone();
    if namespace.kind == CollectionKind::Timeseries {
        return Err(DumpError::Unsupported { collection: name, kind: "timeseries".into() });
    }
    let indexes =
        if namespace.kind == CollectionKind::View { Vec::new() } else { list_indexes(db, &name, redactor).await? };
    let metadata = CollectionMetadata {
        collection_name: name.clone(),
        kind: namespace.kind,
        options: namespace.options,
        indexes,
        uuid: namespace.uuid,
    };
    let metadata_path = layout::metadata_file(&request.database, &name, request.gzip.is_some());
    let metadata_file = {
        let (sinks, path, gzip, body) = (sinks.to_vec(), metadata_path.clone(), request.gzip, metadata.to_json());
        run_blocking(move || {
            let mut file = OutputFile::create(&sinks, &path, gzip)?;
            file.write(&body)?;
            file.finish()
        })
        .await?
    };
    let mut dumped = DumpedCollection {
        name: name.clone(),
        kind: namespace.kind,
        documents: 0,
        bson_bytes: 0,
        data_file: None,
        metadata_file,
        indexes: u32::try_from(metadata.indexes.len()).unwrap_or(u32::MAX),
    };
    if namespace.kind == CollectionKind::View {
        return Ok(dumped);
    }
    let data_path = layout::data_file(&request.database, &name, request.gzip.is_some());
    let (sender, mut receiver) = mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let writer = {
        let (sinks, path, gzip) = (sinks.to_vec(), data_path.clone(), request.gzip);
        tokio::task::spawn_blocking(move || -> Result<StoredFile, DumpError> {
            let mut file = OutputFile::create(&sinks, &path, gzip)?;
            while let Some(chunk) = receiver.blocking_recv() {
                if chunk.is_empty() {
                    // The end marker: everything arrived.
                    return file.finish();
                }
                if let Err(e) = file.write(&chunk) {
                    file.abort();
                    return Err(e);
                }
            }
            // The reader stopped without the end marker: it failed; keep nothing.
            file.abort();
            Err(DumpError::Write { file: path, message: "the dump stopped before the end of the collection".into() })
        })
    };
    let read = read_collection(db, &name, &sender, &mut dumped, redactor).await;
    if read.is_ok() {
        // An empty chunk marks the end; a closed channel means the writer failed,
        // and its error is the one to report.
        let _ = sender.send(Vec::new()).await;
    }
    drop(sender);
    let written = match writer.await {
        Ok(result) => result,
        Err(join) => Err(DumpError::Write { file: data_path.clone(), message: format!("the writer stopped: {join}") }),
    };
    read?;
    dumped.data_file = Some(written?);
    Ok(dumped)
}

async fn list_indexes(db: &Database, collection: &str, redactor: &Redactor) -> Result<Vec<Document>, DumpError> {
    let failed = |e: mongodb::error::Error| DumpError::ListIndexes {
        collection: collection.to_string(),
        message: redactor.clean(&e.to_string()),
    };
    match db.run_cursor_command(doc! {"listIndexes": collection}).await {
        Ok(cursor) => cursor.try_collect().await.map_err(failed),
        // A collection that does not exist has no indexes (code 26, NamespaceNotFound).
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 26) => Ok(Vec::new()),
        Err(e) => Err(failed(e)),
    }
}

/// Streams the collection's documents, as raw bytes, into chunks for the writer.
/// Returns early (Ok) when the writer has gone away: its error is reported instead.
async fn read_collection(
    db: &Database,
    collection: &str,
    sender: &mpsc::Sender<Vec<u8>>,
    dumped: &mut DumpedCollection,
    redactor: &Redactor,
) -> Result<(), DumpError> {
    let failed = |documents: u64, e: mongodb::error::Error| DumpError::Read {
        collection: collection.to_string(),
        documents,
        message: redactor.clean(&e.to_string()),
    };
    let batch = cursor_batch_size(db, collection).await;
    let mut cursor =
        db.collection::<RawDocumentBuf>(collection).find(doc! {}).batch_size(batch).await.map_err(|e| failed(0, e))?;
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4);
    while cursor.advance().await.map_err(|e| failed(dumped.documents, e))? {
        let bytes = cursor.current().as_bytes();
        chunk.extend_from_slice(bytes);
        dumped.documents += 1;
        dumped.bson_bytes += bytes.len() as u64;
        if chunk.len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4));
            if sender.send(full).await.is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() && sender.send(chunk).await.is_err() {
        return Ok(());
    }
    Ok(())
}

/// Documents per cursor batch: about [`BATCH_TARGET_BYTES`] of the collection's
/// average document (`collStats`), so that a batch stays a few MiB whatever the
/// documents' size. MongoDB caps a batch at 16 MiB itself; some servers that speak
/// its protocol do not, and answer an unbounded first batch with the whole
/// collection in one message.
pub async fn cursor_batch_size(db: &Database, collection: &str) -> u32 {
    let average = match db.run_command(doc! {"collStats": collection}).await {
        Ok(stats) => match stats.get("avgObjSize") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Double(n)) if n.is_finite() => *n as i64,
            _ => 0,
        },
        Err(_) => 0,
    };
    if average <= 0 {
        return DEFAULT_BATCH_DOCUMENTS;
    }
    u32::try_from((BATCH_TARGET_BYTES / average).clamp(1, 100_000)).unwrap_or(DEFAULT_BATCH_DOCUMENTS)
}

/// A file being written to every target: gzip (optionally), then the checksum of
/// what is stored, then the targets.
struct OutputFile {
    path: String,
    body: Body,
}

enum Body {
    Gzip(Box<GzEncoder<DigestWriter<TeeFile>>>),
    Plain(DigestWriter<TeeFile>),
}

impl OutputFile {
    fn create(sinks: &[Arc<dyn FileSink>], path: &str, gzip: Option<u32>) -> Result<OutputFile, DumpError> {
        let tee = TeeFile::create(sinks, path).map_err(|e| write_error(path, &e))?;
        let digest = DigestWriter::new(tee);
        let body = match gzip {
            Some(level) => Body::Gzip(Box::new(GzEncoder::new(digest, Compression::new(level.clamp(1, 9))))),
            None => Body::Plain(digest),
        };
        Ok(OutputFile { path: path.to_string(), body })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), DumpError> {
        let result = match &mut self.body {
            Body::Gzip(encoder) => encoder.write_all(bytes),
            Body::Plain(digest) => digest.write_all(bytes),
        };
        result.map_err(|e| DumpError::Write { file: self.path.clone(), message: e.to_string() })
    }

    fn finish(self) -> Result<StoredFile, DumpError> {
        let path = self.path;
        let digest = match self.body {
            Body::Gzip(encoder) => {
                encoder.finish().map_err(|e| DumpError::Write { file: path.clone(), message: e.to_string() })?
            }
            Body::Plain(digest) => digest,
        };
        let (tee, digest) = digest.into_parts();
        tee.finish().map_err(|e| write_error(&path, &e))?;
        Ok(StoredFile { path, size_bytes: digest.bytes(), sha256: digest.hex() })
    }

    fn abort(mut self) {
        let tee = match &mut self.body {
            Body::Gzip(encoder) => encoder.get_mut().get_mut(),
            Body::Plain(digest) => digest.get_mut(),
        };
        tee.abort_in_place();
    }
}

fn write_error(path: &str, error: &TargetError) -> DumpError {
    DumpError::Write { file: path.to_string(), message: error.to_string() }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DumpError> + Send + 'static,
) -> Result<T, DumpError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(DumpError::Write { file: "(writer)".into(), message: join.to_string() }))
}
