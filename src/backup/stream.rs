//! Streams of BSON documents, as a `.bson` file holds them (each document is its own
//! length, little-endian `int32`, then its bytes), and the checksums kept of the
//! files a backup writes.
//!
//! [`DocumentReader`] reads one document at a time into one buffer that is reused,
//! so memory stays at the largest document whatever the file's size. Every length
//! is checked before anything is allocated: a corrupt or hostile file can make the
//! reader fail, never allocate more than [`MAX_DOCUMENT_BYTES`], recurse without
//! bound or panic.
//!
//! No I/O of its own: it reads and writes whatever `Read`/`Write` it is given.

use std::io::{self, Read, Write};

use mongodb::bson::{RawBsonRef, RawDocument};
use sha2::{Digest as _, Sha256};

/// The largest document a stream may hold: MongoDB's 16 MiB limit plus the 16 KiB
/// the server allows itself on top (what mongodump may meet in a collection).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024 + 16 * 1024;
/// The deepest nesting [`validate_document`] accepts. MongoDB refuses more than
/// 100 levels in a stored document; the margin covers its internal documents.
pub const MAX_DEPTH: usize = 200;
/// The smallest document: a length and the terminating zero.
const MIN_DOCUMENT_BYTES: usize = 5;

/// Why a stream is not a valid sequence of BSON documents. `offset` is the byte
/// position in the (uncompressed) stream where the bad document starts.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot read the stream at byte {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error("truncated at byte {offset}: {got} bytes left where a document's 4-byte length was expected")]
    PartialLength { offset: u64, got: usize },
    #[error("truncated at byte {offset}: a document of {length} bytes has only {got}")]
    Truncated { offset: u64, length: usize, got: usize },
    #[error(
        "the document at byte {offset} declares {length} bytes, outside {MIN_DOCUMENT_BYTES}..={MAX_DOCUMENT_BYTES}"
    )]
    BadLength { offset: u64, length: i64 },
    #[error("the document at byte {offset} does not end with a zero byte")]
    BadTerminator { offset: u64 },
    #[error("the document at byte {offset} is not valid BSON: {why}")]
    Invalid { offset: u64, why: String },
}

/// Reads BSON documents one at a time from a stream.
pub struct DocumentReader<R> {
    inner: R,
    offset: u64,
    buffer: Vec<u8>,
    validate: bool,
}

impl<R: Read> DocumentReader<R> {
    /// A reader that checks each document's frame (length, terminator).
    pub fn new(inner: R) -> Self {
        Self { inner, offset: 0, buffer: Vec::new(), validate: false }
    }

    /// Also walk every element of every document ([`validate_document`]).
    pub fn validating(mut self) -> Self {
        self.validate = true;
        self
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next document, or `None` at the end of a stream that ends between documents.
    pub fn next_document(&mut self) -> Result<Option<&[u8]>, StreamError> {
        let start = self.offset;
        let mut header = [0u8; 4];
        let got =
            read_full(&mut self.inner, &mut header).map_err(|source| StreamError::Read { offset: start, source })?;
        match got {
            0 => return Ok(None),
            4 => {}
            got => return Err(StreamError::PartialLength { offset: start, got }),
        }
        let declared = i32::from_le_bytes(header);
        let length = usize::try_from(declared)
            .ok()
            .filter(|l| (MIN_DOCUMENT_BYTES..=MAX_DOCUMENT_BYTES).contains(l))
            .ok_or(StreamError::BadLength { offset: start, length: i64::from(declared) })?;
        self.buffer.clear();
        self.buffer.extend_from_slice(&header);
        self.buffer.resize(length, 0);
        let got = read_full(&mut self.inner, &mut self.buffer[4..])
            .map_err(|source| StreamError::Read { offset: start, source })?;
        if got < length - 4 {
            return Err(StreamError::Truncated { offset: start, length, got: got + 4 });
        }
        if self.buffer[length - 1] != 0 {
            return Err(StreamError::BadTerminator { offset: start });
        }
        if self.validate {
            validate_document(&self.buffer).map_err(|why| StreamError::Invalid { offset: start, why })?;
        }
        self.offset = start + length as u64;
        Ok(Some(&self.buffer))
    }

    /// Gives the underlying reader back.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Walks every element of a document, nested documents and arrays included, and
/// fails on the first one that is not valid BSON (bad type, length, UTF-8, nesting
/// deeper than [`MAX_DEPTH`]).
pub fn validate_document(bytes: &[u8]) -> Result<(), String> {
    let document = RawDocument::from_bytes(bytes).map_err(|e| e.to_string())?;
    validate_raw(document, 0)
}

fn validate_raw(document: &RawDocument, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    for element in document {
        let (_, value) = element.map_err(|e| e.to_string())?;
        validate_value(value, depth)?;
    }
    Ok(())
}

fn validate_value(value: RawBsonRef<'_>, depth: usize) -> Result<(), String> {
    match value {
        RawBsonRef::Document(inner) => validate_raw(inner, depth + 1),
        RawBsonRef::Array(array) => {
            if depth + 1 > MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
            for item in array {
                validate_value(item.map_err(|e| e.to_string())?, depth + 1)?;
            }
            Ok(())
        }
        RawBsonRef::JavaScriptCodeWithScope(code) => validate_raw(code.scope, depth + 1),
        _ => Ok(()),
    }
}

/// Byte count and SHA-256 of what went through a stream.
#[derive(Clone, Default)]
pub struct StreamDigest {
    bytes: u64,
    sha256: Sha256,
}

impl std::fmt::Debug for StreamDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDigest").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl StreamDigest {
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.sha256.update(data);
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Lower-case hex SHA-256 of everything so far.
    pub fn hex(&self) -> String {
        hex_of(&self.sha256.clone().finalize())
    }
}

/// Lower-case hex of bytes.
pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that keeps the [`StreamDigest`] of what it passes on.
pub struct DigestWriter<W> {
    inner: W,
    digest: StreamDigest,
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, digest: StreamDigest::default() }
    }

    pub fn digest(&self) -> &StreamDigest {
        &self.digest
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_parts(self) -> (W, StreamDigest) {
        (self.inner, self.digest)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that keeps the [`StreamDigest`] of what it hands out.
pub struct DigestReader<R> {
    inner: R,
    digest: StreamDigest,
}

impl<R: Read> DigestReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, digest: StreamDigest::default() }
    }

    pub fn digest(&self) -> &StreamDigest {
        &self.digest
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{RawDocumentBuf, doc};

    fn stream_of(docs: &[mongodb::bson::Document]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in docs {
            out.extend_from_slice(RawDocumentBuf::from_document(d).unwrap().as_bytes());
        }
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, StreamError> {
        let mut reader = DocumentReader::new(bytes).validating();
        let mut out = Vec::new();
        while let Some(doc) = reader.next_document()? {
            out.push(doc.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn reads_documents_back_in_order_and_stops_cleanly() {
        let docs = [doc! {"_id": 1, "a": "x"}, doc! {"_id": 2, "nested": {"b": [1, 2, {"c": null}]}}, doc! {}];
        let bytes = stream_of(&docs);
        let read = read_all(&bytes).unwrap();
        assert_eq!(read.len(), 3);
        for (raw, original) in read.iter().zip(&docs) {
            assert_eq!(&mongodb::bson::Document::try_from(RawDocument::from_bytes(raw).unwrap()).unwrap(), original);
        }
        assert!(read_all(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_truncated_stream_is_refused_with_the_offset() {
        let bytes = stream_of(&[doc! {"_id": 1}, doc! {"_id": 2, "pad": "0123456789"}]);
        let first = u64::from(u32::from_le_bytes(bytes[..4].try_into().unwrap()));
        for cut in [bytes.len() - 1, bytes.len() - 20, first as usize + 2] {
            let err = read_all(&bytes[..cut]).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(&format!("truncated at byte {first}")), "cut {cut}: {text}");
        }
    }

    #[test]
    fn lengths_and_terminators_are_checked_before_anything_is_allocated() {
        let mut huge = Vec::from((i32::MAX).to_le_bytes());
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(read_all(&huge), Err(StreamError::BadLength { offset: 0, .. })));
        let negative = Vec::from((-7i32).to_le_bytes());
        assert!(matches!(read_all(&negative), Err(StreamError::BadLength { length: -7, .. })));
        let tiny = Vec::from(4i32.to_le_bytes());
        assert!(matches!(read_all(&tiny), Err(StreamError::BadLength { .. })));
        let mut unterminated = stream_of(&[doc! {"a": 1}]);
        *unterminated.last_mut().unwrap() = 1;
        assert!(matches!(read_all(&unterminated), Err(StreamError::BadTerminator { offset: 0 })));
    }

    #[test]
    fn a_corrupt_element_is_found_when_validating() {
        let mut bytes = stream_of(&[doc! {"s": "hello"}]);
        // The first element's type byte, right after the length: 0x02 (string)
        // becomes 0x42, which is no BSON type.
        bytes[4] = 0x42;
        let err = read_all(&bytes).unwrap_err();
        assert!(matches!(err, StreamError::Invalid { offset: 0, .. }), "{err}");
        // Without validation only the frame is checked.
        let mut reader = DocumentReader::new(&bytes[..]);
        assert!(reader.next_document().unwrap().is_some());
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_without_recursing_forever() {
        let mut deep = doc! {"x": 1};
        for _ in 0..(MAX_DEPTH + 5) {
            deep = doc! {"d": deep};
        }
        let bytes = RawDocumentBuf::from_document(&deep).unwrap().into_bytes();
        let err = validate_document(&bytes).unwrap_err();
        assert!(err.contains("nested deeper"), "{err}");
        let mut ok = doc! {"x": 1};
        for _ in 0..100 {
            ok = doc! {"d": [ok]};
        }
        validate_document(&RawDocumentBuf::from_document(&ok).unwrap().into_bytes()).unwrap();
    }

    /// One document with every BSON element type, the deprecated ones included
    /// (built from extended JSON: the crate has no constructors for some of them).
    fn every_type() -> mongodb::bson::Document {
        let json = serde_json::json!({
            "double": 1.5, "negative_zero": {"$numberDouble": "-0.0"}, "nan": {"$numberDouble": "NaN"},
            "infinity": {"$numberDouble": "-Infinity"},
            "string": "ключ ✓", "document": {"a": {}}, "array": [[], [1, [2]], {"x": null}],
            "binary_generic": {"$binary": {"base64": "AAEC", "subType": "00"}},
            "binary_function": {"$binary": {"base64": "AAEC", "subType": "01"}},
            "binary_old": {"$binary": {"base64": "AAAAAA==", "subType": "02"}},
            "binary_uuid": {"$binary": {"base64": "ASNFZ4mrze8BI0VniavN7w==", "subType": "04"}},
            "binary_md5": {"$binary": {"base64": "ASNFZ4mrze8BI0VniavN7w==", "subType": "05"}},
            "binary_user": {"$binary": {"base64": "/w==", "subType": "80"}},
            "undefined": {"$undefined": true},
            "object_id": {"$oid": "5f0c3b5e8f1b2c3d4e5f6a7b"},
            "bool": false, "date": {"$date": {"$numberLong": "-62135596800000"}}, "null": null,
            "regex": {"$regularExpression": {"pattern": "^a\\d+", "options": "imsux"}},
            "db_pointer": {"$dbPointer": {"$ref": "users", "$id": {"$oid": "5f0c3b5e8f1b2c3d4e5f6a7b"}}},
            "code": {"$code": "function () {}"}, "symbol": {"$symbol": "sym"},
            "code_with_scope": {"$code": "x", "$scope": {"x": {"$numberInt": "1"}}},
            "int32": {"$numberInt": "-2147483648"}, "timestamp": {"$timestamp": {"t": 4294967295u32, "i": 1}},
            "int64": {"$numberLong": "9223372036854775807"},
            "decimal": {"$numberDecimal": "-1.000000000000000000000000000000001E-6000"},
            "min_key": {"$minKey": 1}, "max_key": {"$maxKey": 1},
        });
        match mongodb::bson::Bson::try_from(json).unwrap() {
            mongodb::bson::Bson::Document(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bson_type_survives_gzip_and_the_reader_byte_for_byte() {
        use flate2::{Compression, read::GzDecoder, write::GzEncoder};
        let document = every_type();
        assert_eq!(document.len(), 29, "every type is there");
        let raw = RawDocumentBuf::from_document(&document).unwrap().into_bytes();
        let mut encoder = GzEncoder::new(Vec::new(), Compression::new(6));
        for _ in 0..3 {
            encoder.write_all(&raw).unwrap();
        }
        let compressed = encoder.finish().unwrap();
        let mut reader = DocumentReader::new(GzDecoder::new(&compressed[..])).validating();
        let mut seen = 0;
        while let Some(read) = reader.next_document().unwrap() {
            assert_eq!(read, &raw[..]);
            seen += 1;
        }
        assert_eq!((seen, reader.offset()), (3, 3 * raw.len() as u64));
        // And back to the same value.
        let back = mongodb::bson::Document::try_from(RawDocument::from_bytes(&raw).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{document:?}"));
    }

    #[test]
    fn digests_count_and_hash_what_passes() {
        let mut writer = DigestWriter::new(Vec::new());
        writer.write_all(b"abc").unwrap();
        assert_eq!(writer.digest().bytes(), 3);
        assert_eq!(writer.digest().hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut reader = DigestReader::new(&b"abc"[..]);
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        assert_eq!(reader.digest().hex(), writer.digest().hex());
    }
}
