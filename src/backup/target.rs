//! Where a backup's files are written and read back: a folder on the backup volume
//! or a prefix in object storage ([`super::object`]), behind one small interface, so
//! that the dump writes to both at once (each file is streamed to every target as
//! it is produced) and the restore reads from either.
//!
//! Writing and reading are blocking (`std::io::Write`/`Read`): the dump and the
//! restore run them on a thread of their own, beside the MongoDB cursor, so that
//! compression and checksums overlap with the network.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Why a file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{path} is not a relative path inside the backup")]
    BadPath { path: String },
    #[error("cannot {action} {location}: {source}")]
    Io { action: &'static str, location: String, source: io::Error },
    #[error("cannot {action} {location}: {message}")]
    Object { action: &'static str, location: String, message: String },
    #[error("{location} does not exist")]
    NotFound { location: String },
}

/// A file being written. Nothing counts as stored until [`SinkFile::finish`]
/// returns; a file that is dropped unfinished is abandoned.
pub trait SinkFile: Write + Send {
    /// Makes the file durable (synced to disk, or the upload completed).
    fn finish(self: Box<Self>) -> Result<(), TargetError>;
    /// Gives up on the file (an upload in progress is aborted).
    fn abort(self: Box<Self>);
}

/// Where one run's files go.
pub trait FileSink: Send + Sync {
    /// Creates `path`, relative to the run, for writing; it must not exist yet.
    fn create(&self, path: &str) -> Result<Box<dyn SinkFile>, TargetError>;
    /// Where this is, for messages (never a credential).
    fn location(&self) -> String;
}

/// Where one backup's files are read from.
pub trait BackupSource: Send + Sync {
    /// Opens `path`, relative to the backup.
    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>, TargetError>;
    /// Files directly inside the folder `dir` of the backup (`""` for its top),
    /// names only, with their sizes.
    fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, TargetError>;
    /// Where this is, for messages.
    fn location(&self) -> String;
}

/// Checks that `path` is a relative path of normal components (no `..`, no root,
/// nothing empty): a manifest or a file name from a backup must never reach outside it.
pub fn check_relative(path: &str) -> Result<(), TargetError> {
    let ok = !path.is_empty()
        && !path.contains('\0')
        && !path.contains('\\')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)));
    if ok { Ok(()) } else { Err(TargetError::BadPath { path: path.into() }) }
}

/// A folder on a volume: a run's `NAME.partial/` while writing, a backup's `NAME/`
/// (or any `mongodump --out` directory) when reading.
#[derive(Debug, Clone)]
pub struct VolumeFolder {
    pub root: PathBuf,
}

impl VolumeFolder {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, relative: &str) -> Result<PathBuf, TargetError> {
        check_relative(relative)?;
        Ok(self.root.join(relative))
    }
}

struct VolumeFile {
    writer: BufWriter<File>,
    path: PathBuf,
}

impl Write for VolumeFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl SinkFile for VolumeFile {
    fn finish(self: Box<Self>) -> Result<(), TargetError> {
        let location = self.path.display().to_string();
        let file = self.writer.into_inner().map_err(|e| TargetError::Io {
            action: "write",
            location: location.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| TargetError::Io { action: "sync", location, source })
    }

    fn abort(self: Box<Self>) {
        drop(self.writer);
        let _ = fs::remove_file(&self.path);
    }
}

impl FileSink for VolumeFolder {
    fn create(&self, relative: &str) -> Result<Box<dyn SinkFile>, TargetError> {
        let path = self.path(relative)?;
        let io = |action: &'static str, p: &Path| {
            let location = p.display().to_string();
            move |source| TargetError::Io { action, location, source }
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io("create the folder", parent))?;
        }
        let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(io("create", &path))?;
        Ok(Box::new(VolumeFile { writer: BufWriter::with_capacity(1 << 20, file), path }))
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

impl BackupSource for VolumeFolder {
    fn open(&self, relative: &str) -> Result<Box<dyn Read + Send>, TargetError> {
        let path = self.path(relative)?;
        match File::open(&path) {
            Ok(file) => Ok(Box::new(io::BufReader::with_capacity(1 << 20, file))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(TargetError::NotFound { location: path.display().to_string() })
            }
            Err(source) => Err(TargetError::Io { action: "open", location: path.display().to_string(), source }),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, TargetError> {
        let folder = if dir.is_empty() { self.root.clone() } else { self.path(dir)? };
        let location = folder.display().to_string();
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(TargetError::NotFound { location }),
            Err(source) => return Err(TargetError::Io { action: "list", location, source }),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|source| TargetError::Io { action: "list", location: location.clone(), source })?;
            let Ok(metadata) = fs::symlink_metadata(entry.path()) else { continue };
            if let (true, Some(name)) = (metadata.is_file(), entry.file_name().to_str()) {
                files.push((name.to_string(), metadata.len()));
            }
        }
        files.sort();
        Ok(files)
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

/// One file written to several sinks at once: every byte goes to each.
pub struct TeeFile {
    files: Vec<Box<dyn SinkFile>>,
}

impl TeeFile {
    /// Creates `path` in every sink; if one fails, those already created are abandoned.
    pub fn create(sinks: &[Arc<dyn FileSink>], path: &str) -> Result<TeeFile, TargetError> {
        let mut files = Vec::with_capacity(sinks.len());
        for sink in sinks {
            match sink.create(path) {
                Ok(file) => files.push(file),
                Err(e) => {
                    files.into_iter().for_each(|f| f.abort());
                    return Err(e);
                }
            }
        }
        Ok(TeeFile { files })
    }

    /// Finishes every copy; the first error is returned, the other copies are still
    /// finished or abandoned.
    pub fn finish(self) -> Result<(), TargetError> {
        let mut first = None;
        for file in self.files {
            if first.is_some() {
                file.abort();
            } else if let Err(e) = file.finish() {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    pub fn abort(mut self) {
        self.abort_in_place();
    }

    /// Abandons every copy and leaves a tee that writes nowhere (for a writer
    /// wrapped in an encoder that cannot be taken apart).
    pub fn abort_in_place(&mut self) {
        std::mem::take(&mut self.files).into_iter().for_each(|f| f.abort());
    }
}

impl Write for TeeFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for file in &mut self.files {
            file.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.files.iter_mut().try_for_each(|f| f.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        for ok in ["a", "neurolov/users.bson.gz", "db/caf%C3%A9s.metadata.json"] {
            check_relative(ok).unwrap();
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/", "a\\b", "a\0b"] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_tee_writes_every_copy_and_a_volume_reads_them_back() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (va, vb) = (VolumeFolder::new(a.path()), VolumeFolder::new(b.path()));
        let sinks: [Arc<dyn FileSink>; 2] = [Arc::new(va.clone()), Arc::new(vb.clone())];
        let mut tee = TeeFile::create(&sinks, "db/x.bson").unwrap();
        tee.write_all(b"hello").unwrap();
        tee.finish().unwrap();
        for v in [&va, &vb] {
            let mut text = String::new();
            v.open("db/x.bson").unwrap().read_to_string(&mut text).unwrap();
            assert_eq!(text, "hello");
            assert_eq!(v.list("db").unwrap(), [("x.bson".to_string(), 5)]);
        }
        assert!(matches!(va.open("db/missing"), Err(TargetError::NotFound { .. })));
        // Never over an existing file, never outside the folder.
        assert!(TeeFile::create(&sinks[..1], "db/x.bson").is_err());
        assert!(matches!(va.create("../x"), Err(TargetError::BadPath { .. })));
    }

    #[test]
    fn an_abandoned_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let volume = VolumeFolder::new(dir.path());
        let mut tee = TeeFile::create(&[Arc::new(volume) as Arc<dyn FileSink>], "db/y.bson").unwrap();
        tee.write_all(b"partial").unwrap();
        tee.abort();
        assert!(!dir.path().join("db/y.bson").exists());
    }
}
