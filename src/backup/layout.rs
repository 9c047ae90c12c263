//! mongodump's directory layout, the format of a native dump, so that `mongorestore`
//! restores our backups and we restore `mongodump --out` directories:
//!
//! ```text
//! <backup>/<database>/<collection>.bson[.gz]            the documents, one BSON document after another
//! <backup>/<database>/<collection>.metadata.json[.gz]   options, indexes, uuid, name, type (canonical extended JSON)
//! ```
//!
//! As mongodump (mongo-tools 100.x, `--out`, optionally `--gzip`) writes it:
//! - a file name is the collection name escaped like Go's `url.PathEscape` (so `/`,
//!   `%`, spaces and non-ASCII become `%XX`); when the escaped name is longer than
//!   238 bytes it is cut to 208 bytes and followed by `%24` and the unpadded
//!   URL-safe base64 of the name's SHA-1, and the full name is read back from the
//!   metadata's `collectionName`;
//! - with gzip both files get `.gz`, and `mongorestore --gzip` reads only `.gz` files;
//! - a view has a metadata file (`options.viewOn`, `options.pipeline`) and no data file;
//! - `options` is left out when empty, `indexes` is always there.
//!
//! Pure: names and bytes in, names and bytes out; no I/O.

use base64::Engine;
use mongodb::bson::{Bson, Document};
use serde_json::{Map, Value};
use sha1::Digest;

/// Suffix of a collection's documents.
pub const BSON_SUFFIX: &str = ".bson";
/// Suffix of a collection's options and indexes.
pub const METADATA_SUFFIX: &str = ".metadata.json";
/// Added to both by `--gzip`.
pub const GZIP_SUFFIX: &str = ".gz";
/// Longest escaped name mongodump keeps whole: 255 bytes of a file name less the
/// longest extension, `.metadata.json.gz`.
const MAX_ESCAPED_NAME: usize = 238;
/// Bytes of the escaped name kept in front of the hash when it is too long.
const TRUNCATED_NAME: usize = 208;
/// What joins a cut name to its hash: an escaped `$`, which an escaped name never
/// contains (a `$` in a name is kept as `$`).
const HASH_DELIMITER: &str = "%24";

/// What is wrong with a file name or a metadata file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{file}: {why}")]
    BadFileName { file: String, why: String },
    #[error("{file} is not mongodump metadata: {why}")]
    BadMetadata { file: String, why: String },
}

/// Go's `url.PathEscape`: every byte but ASCII letters, digits, `-_.~` and
/// `$&+:=@` becomes `%XX` (upper-case hex).
pub fn escape_collection_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-_.~$&+:=@".contains(&byte);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Go's `url.PathUnescape`: `%XX` back to bytes, which must then be UTF-8.
pub fn unescape_collection_name(escaped: &str) -> Result<String, String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = escaped
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("a '%' at byte {i} is not followed by two hex digits"))?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| format!("'%{hex}' at byte {i} is not an escape"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the unescaped name is not UTF-8".to_string())
}

/// The file name of a collection without its extension, as mongodump makes it.
pub fn file_stem(collection: &str) -> String {
    let mut escaped = escape_collection_name(collection);
    // A collection named "." or ".." would get a stem that is a path component of
    // its own; escaped dots read back as the same name (mongodump keeps them as is).
    if escaped == "." || escaped == ".." {
        escaped = escaped.replace('.', "%2E");
    }
    if escaped.len() <= MAX_ESCAPED_NAME {
        return escaped;
    }
    let hash = sha1::Sha1::digest(collection.as_bytes());
    // The escaped name is ASCII, so any byte index is a character boundary.
    let kept = &escaped[..TRUNCATED_NAME];
    format!("{kept}{HASH_DELIMITER}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash))
}

/// Whether a stem was cut by [`file_stem`], so that the collection's name must be
/// read from its metadata.
pub fn is_truncated_stem(stem: &str) -> bool {
    stem.len() == MAX_ESCAPED_NAME && stem.contains(HASH_DELIMITER)
}

fn gz(name: String, gzip: bool) -> String {
    if gzip { name + GZIP_SUFFIX } else { name }
}

/// `<database>/<stem>.bson[.gz]`, relative to the backup.
pub fn data_file(database: &str, collection: &str, gzip: bool) -> String {
    gz(format!("{database}/{}{BSON_SUFFIX}", file_stem(collection)), gzip)
}

/// `<database>/<stem>.metadata.json[.gz]`, relative to the backup.
pub fn metadata_file(database: &str, collection: &str, gzip: bool) -> String {
    gz(format!("{database}/{}{METADATA_SUFFIX}", file_stem(collection)), gzip)
}

/// Which of a collection's two files a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Data,
    Metadata,
}

/// A file of a database folder, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpFile {
    /// The escaped (possibly cut) collection name.
    pub stem: String,
    pub kind: FileKind,
    pub gzip: bool,
}

/// Classifies a file name found in a database folder; `None` for files mongorestore
/// would not read either.
pub fn classify(file_name: &str) -> Option<DumpFile> {
    let (rest, gzip) = match file_name.strip_suffix(GZIP_SUFFIX) {
        Some(rest) => (rest, true),
        None => (file_name, false),
    };
    let (stem, kind) = if let Some(stem) = rest.strip_suffix(METADATA_SUFFIX) {
        (stem, FileKind::Metadata)
    } else if let Some(stem) = rest.strip_suffix(BSON_SUFFIX) {
        (stem, FileKind::Data)
    } else {
        return None;
    };
    (!stem.is_empty()).then(|| DumpFile { stem: stem.to_string(), kind, gzip })
}

/// What a namespace is, as `listCollections` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CollectionKind {
    Collection,
    View,
    Timeseries,
}

impl CollectionKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "collection" => Some(Self::Collection),
            "view" => Some(Self::View),
            "timeseries" => Some(Self::Timeseries),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Collection => "collection",
            Self::View => "view",
            Self::Timeseries => "timeseries",
        }
    }
}

/// A collection's `.metadata.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionMetadata {
    pub collection_name: String,
    pub kind: CollectionKind,
    /// `listCollections` options (capped, validator, collation, viewOn, ...).
    pub options: Document,
    /// `listIndexes` entries, `_id_` included, each as the server gave it.
    pub indexes: Vec<Document>,
    /// The collection's UUID as 32 lower-case hex digits, when the server has one.
    pub uuid: Option<String>,
}

impl CollectionMetadata {
    /// Canonical extended JSON v2, keys in mongodump's order.
    pub fn to_json(&self) -> Vec<u8> {
        let mut map = Map::new();
        if !self.options.is_empty() {
            map.insert("options".into(), Bson::Document(self.options.clone()).into_canonical_extjson());
        }
        let indexes = self.indexes.iter().map(|i| Bson::Document(i.clone()).into_canonical_extjson()).collect();
        map.insert("indexes".into(), Value::Array(indexes));
        if let Some(uuid) = &self.uuid {
            map.insert("uuid".into(), Value::String(uuid.clone()));
        }
        map.insert("collectionName".into(), Value::String(self.collection_name.clone()));
        map.insert("type".into(), Value::String(self.kind.as_str().into()));
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    }

    /// Parses a metadata file (canonical or relaxed extended JSON, as mongorestore
    /// does). `fallback_name` is the name from the file name, used by dumps older
    /// than `collectionName`; `file` names the file in errors.
    pub fn from_json(bytes: &[u8], fallback_name: Option<&str>, file: &str) -> Result<Self, LayoutError> {
        let bad = |why: String| LayoutError::BadMetadata { file: file.into(), why };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(mut map) = value else { return Err(bad("not a JSON object".into())) };
        let document = |value: Value, what: &str| -> Result<Document, LayoutError> {
            match Bson::try_from(value) {
                Ok(Bson::Document(d)) => Ok(d),
                Ok(_) => Err(bad(format!("{what} is not an object"))),
                Err(e) => Err(bad(format!("{what} is not extended JSON: {e}"))),
            }
        };
        let options = match map.remove("options") {
            None | Some(Value::Null) => Document::new(),
            Some(value) => document(value, "options")?,
        };
        let indexes = match map.remove("indexes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| document(v, &format!("indexes[{i}]")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("indexes is not an array".into())),
        };
        let collection_name = match map.remove("collectionName") {
            Some(Value::String(name)) if !name.is_empty() => name,
            Some(Value::String(_)) | None | Some(Value::Null) => {
                fallback_name.map(str::to_string).ok_or_else(|| bad("collectionName is missing".into()))?
            }
            Some(_) => return Err(bad("collectionName is not a string".into())),
        };
        let kind = match map.remove("type") {
            Some(Value::String(kind)) => CollectionKind::parse(&kind)
                .ok_or_else(|| bad(format!("type {kind:?} is not collection, view or timeseries")))?,
            // Older dumps: a view is known by its options.
            _ if options.contains_key("viewOn") => CollectionKind::View,
            _ if options.contains_key("timeseries") => CollectionKind::Timeseries,
            _ => CollectionKind::Collection,
        };
        let uuid = match map.remove("uuid") {
            Some(Value::String(uuid)) if !uuid.is_empty() => Some(uuid),
            _ => None,
        };
        Ok(Self { collection_name, kind, options, indexes, uuid })
    }
}

/// Hex digits of a binary UUID, as mongodump writes `uuid`.
pub fn uuid_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn names_are_escaped_like_go_path_escape() {
        assert_eq!(escape_collection_name("referrals"), "referrals");
        assert_eq!(escape_collection_name("cafés"), "caf%C3%A9s");
        assert_eq!(escape_collection_name("a b/c%d"), "a%20b%2Fc%25d");
        assert_eq!(escape_collection_name("x$y&z+:=@-_.~"), "x$y&z+:=@-_.~");
        assert_eq!(escape_collection_name("a,b;c?d#e"), "a%2Cb%3Bc%3Fd%23e");
        for name in ["cafés", "a b/c%d", "日本語", "x$y", "a,b;c?d"] {
            assert_eq!(unescape_collection_name(&escape_collection_name(name)).unwrap(), name);
        }
        assert!(unescape_collection_name("bad%2").is_err());
        assert!(unescape_collection_name("bad%zz").is_err());
        assert!(unescape_collection_name("%FF").is_err());
    }

    #[test]
    fn a_collection_named_dot_or_dot_dot_gets_a_stem_that_is_no_path_component() {
        assert_eq!(file_stem("."), "%2E");
        assert_eq!(file_stem(".."), "%2E%2E");
        assert_eq!(file_stem("..."), "...");
        for name in [".", ".."] {
            assert_eq!(unescape_collection_name(&file_stem(name)).unwrap(), name);
        }
    }

    #[test]
    fn long_names_are_cut_and_hashed_as_mongodump_does() {
        let long = "a".repeat(300);
        let stem = file_stem(&long);
        assert_eq!(stem.len(), MAX_ESCAPED_NAME);
        assert!(stem.starts_with(&"a".repeat(TRUNCATED_NAME)));
        // SHA-1 of 300 'a's, URL-safe base64 without padding (27 characters).
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(long.as_bytes()));
        assert_eq!(hash.len(), 27);
        assert_eq!(&stem[TRUNCATED_NAME..], format!("%24{hash}"));
        assert!(is_truncated_stem(&stem));
        assert!(!is_truncated_stem("referrals"));
        let exactly = "b".repeat(MAX_ESCAPED_NAME);
        assert_eq!(file_stem(&exactly), exactly, "a name of exactly 238 escaped bytes is kept whole");
    }

    #[test]
    fn file_names_follow_the_gzip_choice_and_classify_back() {
        assert_eq!(data_file("neurolov", "users", true), "neurolov/users.bson.gz");
        assert_eq!(metadata_file("neurolov", "users", true), "neurolov/users.metadata.json.gz");
        assert_eq!(data_file("neurolov", "users", false), "neurolov/users.bson");
        assert_eq!(metadata_file("db", "a/b", false), "db/a%2Fb.metadata.json");
        assert_eq!(
            classify("users.metadata.json.gz"),
            Some(DumpFile { stem: "users".into(), kind: FileKind::Metadata, gzip: true })
        );
        assert_eq!(classify("users.bson"), Some(DumpFile { stem: "users".into(), kind: FileKind::Data, gzip: false }));
        assert_eq!(classify("notes.txt"), None);
        assert_eq!(classify(".bson"), None);
    }

    #[test]
    fn metadata_is_canonical_extended_json_in_mongodumps_key_order() {
        let meta = CollectionMetadata {
            collection_name: "users".into(),
            kind: CollectionKind::Collection,
            options: doc! {"capped": true, "size": 4096_i64},
            indexes: vec![
                doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"},
                doc! {"v": 2, "key": {"referralCode": 1, "createdAt": -1}, "name": "rc", "unique": true},
            ],
            uuid: Some("00112233445566778899aabbccddeeff".into()),
        };
        let text = String::from_utf8(meta.to_json()).unwrap();
        assert_eq!(
            text,
            r#"{"options":{"capped":true,"size":{"$numberLong":"4096"}},"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"},{"v":{"$numberInt":"2"},"key":{"referralCode":{"$numberInt":"1"},"createdAt":{"$numberInt":"-1"}},"name":"rc","unique":true}],"uuid":"00112233445566778899aabbccddeeff","collectionName":"users","type":"collection"}"#
        );
        let back = CollectionMetadata::from_json(text.as_bytes(), None, "users.metadata.json").unwrap();
        assert_eq!(back, meta);
        let keys: Vec<&String> = back.indexes[1].get_document("key").unwrap().keys().collect();
        assert_eq!(keys, ["referralCode", "createdAt"], "a compound index keeps its key order");
    }

    #[test]
    fn metadata_without_options_name_or_type_is_read_as_older_dumps_wrote_it() {
        let relaxed = br#"{"indexes":[{"v":2,"key":{"_id":1},"name":"_id_","ns":"db.old"}]}"#;
        let meta = CollectionMetadata::from_json(relaxed, Some("old"), "old.metadata.json").unwrap();
        assert_eq!(meta.collection_name, "old");
        assert_eq!(meta.kind, CollectionKind::Collection);
        assert!(meta.options.is_empty());
        assert_eq!(meta.indexes.len(), 1);
        let view = br#"{"options":{"viewOn":"users","pipeline":[{"$match":{"a":1}}]},"indexes":[]}"#;
        let meta = CollectionMetadata::from_json(view, Some("v"), "v.metadata.json").unwrap();
        assert_eq!(meta.kind, CollectionKind::View);
        assert!(meta.to_json().starts_with(br#"{"options":{"viewOn":"users""#));
    }

    #[test]
    fn bad_metadata_is_refused_naming_the_file_and_the_field() {
        for (text, why) in [
            (&b"{"[..], "not JSON"),
            (b"[]", "not a JSON object"),
            (br#"{"indexes":{}}"#, "indexes is not an array"),
            (br#"{"indexes":[1]}"#, "indexes[0] is not an object"),
            (br#"{"indexes":[],"options":{"$numberInt":"x"}}"#, "options is not extended JSON"),
            (br#"{"indexes":[],"type":"table","collectionName":"x"}"#, "type \"table\""),
            (br#"{"indexes":[]}"#, "collectionName is missing"),
        ] {
            let err = CollectionMetadata::from_json(text, None, "db/x.metadata.json").unwrap_err().to_string();
            assert!(err.starts_with("db/x.metadata.json is not mongodump metadata"), "{err}");
            assert!(err.contains(why), "{err} should say {why}");
        }
    }
}
