//! What a native dump records about itself, per collection: how many documents,
//! how many bytes, and the SHA-256 of each file as stored. The dump writes it to
//! [`DUMP_SUMMARY_FILE`] in the run's folder; finalize copies it into the backup's
//! manifest (`complete.json`, written last), and `backup verify` and a restore
//! compare the files against it.
//!
//! Pure data and comparisons; reading the files is the caller's.

use serde::{Deserialize, Serialize};

use super::layout::CollectionKind;

/// The dump's own record, next to the database folder (mongorestore skips files at
/// the top of a dump directory).
pub const DUMP_SUMMARY_FILE: &str = "mongodb-dump.json";
/// The one layout a native dump writes.
pub const LAYOUT_MONGODUMP_DIRECTORY: &str = "mongodump-directory";

/// What a native dump wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpSummary {
    /// Always [`LAYOUT_MONGODUMP_DIRECTORY`]: `<database>/<collection>.bson[.gz]` and
    /// `<collection>.metadata.json[.gz]`.
    pub layout: String,
    /// The database dumped (the folder the files are in).
    pub database: String,
    /// Files are gzip streams with `.gz` names (`mongodump --gzip`).
    pub gzip: bool,
    /// Every collection and view of the database was dumped, not a chosen list.
    pub whole_database: bool,
    /// The collections, in the order they were dumped.
    pub collections: Vec<DumpedCollection>,
    /// Which program wrote it, e.g. `referral-operator 0.1.0`.
    pub tool: String,
}

/// One collection (or view) of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpedCollection {
    pub name: String,
    pub kind: CollectionKind,
    /// Documents written.
    pub documents: u64,
    /// Bytes of BSON written, before compression.
    pub bson_bytes: u64,
    /// The data file, relative to the backup; `None` for a view (no documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_file: Option<StoredFile>,
    /// The metadata file, relative to the backup.
    pub metadata_file: StoredFile,
    /// Indexes recorded in the metadata, `_id_` included.
    pub indexes: u32,
}

/// A file as stored: its path in the backup, its size, its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    pub path: String,
    pub size_bytes: u64,
    pub sha256: String,
}

impl DumpSummary {
    /// Every file the dump wrote.
    pub fn files(&self) -> impl Iterator<Item = &StoredFile> {
        self.collections.iter().flat_map(|c| c.data_file.iter().chain(std::iter::once(&c.metadata_file)))
    }

    /// The file recorded at `path`.
    pub fn file(&self, path: &str) -> Option<&StoredFile> {
        self.files().find(|f| f.path == path)
    }

    /// Checks that the summary describes a dump this program can restore: the
    /// layout it knows, file paths inside the database folder (never `..` or an
    /// absolute path), no collection twice.
    pub fn check(&self) -> Result<(), String> {
        if self.layout != LAYOUT_MONGODUMP_DIRECTORY {
            return Err(format!("layout {:?} is not {LAYOUT_MONGODUMP_DIRECTORY:?}", self.layout));
        }
        if !valid_database_name(&self.database) {
            return Err(format!("database name {:?} is not a MongoDB database name", self.database));
        }
        let prefix = format!("{}/", self.database);
        let mut seen = std::collections::BTreeSet::new();
        for collection in &self.collections {
            if !seen.insert(collection.name.as_str()) {
                return Err(format!("collection {:?} is listed twice", collection.name));
            }
            for file in collection.data_file.iter().chain(std::iter::once(&collection.metadata_file)) {
                let inside =
                    file.path.strip_prefix(&prefix).is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
                if !inside {
                    return Err(format!("file {:?} is not inside the folder {prefix}", file.path));
                }
            }
            if collection.kind != CollectionKind::View && collection.data_file.is_none() {
                return Err(format!("collection {:?} has no data file", collection.name));
            }
        }
        Ok(())
    }
}

/// Database names MongoDB accepts, and so safe as a folder name: 1 to 63 bytes,
/// none of `/\. "$*<>:|?` and no NUL.
pub fn valid_database_name(name: &str) -> bool {
    !name.is_empty() && name.len() < 64 && !name.chars().any(|c| "/\\. \"$*<>:|?\0".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> StoredFile {
        StoredFile { path: path.into(), size_bytes: 1, sha256: "00".into() }
    }

    fn summary() -> DumpSummary {
        DumpSummary {
            layout: LAYOUT_MONGODUMP_DIRECTORY.into(),
            database: "neurolov".into(),
            gzip: true,
            whole_database: false,
            collections: vec![
                DumpedCollection {
                    name: "users".into(),
                    kind: CollectionKind::Collection,
                    documents: 3,
                    bson_bytes: 300,
                    data_file: Some(file("neurolov/users.bson.gz")),
                    metadata_file: file("neurolov/users.metadata.json.gz"),
                    indexes: 2,
                },
                DumpedCollection {
                    name: "active".into(),
                    kind: CollectionKind::View,
                    documents: 0,
                    bson_bytes: 0,
                    data_file: None,
                    metadata_file: file("neurolov/active.metadata.json.gz"),
                    indexes: 0,
                },
            ],
            tool: "referral-operator test".into(),
        }
    }

    #[test]
    fn a_sound_summary_passes_and_lists_its_files() {
        let s = summary();
        s.check().unwrap();
        let paths: Vec<&str> = s.files().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["neurolov/users.bson.gz", "neurolov/users.metadata.json.gz", "neurolov/active.metadata.json.gz"]
        );
        assert!(s.file("neurolov/users.bson.gz").is_some());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["collections"][0]["dataFile"]["sizeBytes"], 1);
        assert_eq!(json["collections"][1]["kind"], "view");
        assert!(json["collections"][1].get("dataFile").is_none());
    }

    #[test]
    fn a_summary_pointing_outside_its_folder_or_of_an_unknown_layout_is_refused() {
        let mut s = summary();
        s.collections[0].data_file = Some(file("../etc/passwd"));
        assert!(s.check().unwrap_err().contains("not inside"));
        let mut s = summary();
        s.collections[0].metadata_file = file("neurolov/sub/x.metadata.json");
        assert!(s.check().is_err());
        let mut s = summary();
        s.layout = "archive".into();
        assert!(s.check().unwrap_err().contains("layout"));
        let mut s = summary();
        s.database = "../x".into();
        assert!(s.check().unwrap_err().contains("database name"));
        let mut s = summary();
        s.collections[1].name = "users".into();
        assert!(s.check().unwrap_err().contains("twice"));
        let mut s = summary();
        s.collections[0].data_file = None;
        assert!(s.check().unwrap_err().contains("no data file"));
    }

    #[test]
    fn database_names_follow_mongodb() {
        for ok in ["neurolov", "a-b_c", "x1"] {
            assert!(valid_database_name(ok), "{ok}");
        }
        for bad in ["", "a.b", "a/b", "a b", "a$b", &"x".repeat(64), "..", "a\0b"] {
            assert!(!valid_database_name(bad), "{bad:?}");
        }
    }
}
