//! The backup format's parsers are an attack surface: a backup can be corrupted on
//! its way through a volume or a bucket, or written by someone else. Whatever the
//! bytes, reading them ends with a document or an error, never a panic, a hang or
//! an allocation beyond the document limit; names round-trip; no path from a
//! manifest reaches outside its backup.

use std::io::Write;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use mongodb::bson::{RawDocumentBuf, doc};
use proptest::prelude::*;
use referral_operator::backup::layout::{self, CollectionMetadata, FileKind};
use referral_operator::backup::stream::{DocumentReader, MAX_DOCUMENT_BYTES};
use referral_operator::backup::target::check_relative;

fn valid_stream(count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        let document = doc! {"_id": i as i64, "s": "x".repeat(i % 50), "a": [1, {"b": [i as i32]}]};
        out.extend_from_slice(RawDocumentBuf::from_document(&document).unwrap().as_bytes());
    }
    out
}

/// Reads a stream to its end or its first error; the count read.
fn drain(bytes: &[u8]) -> (usize, bool) {
    let mut reader = DocumentReader::new(bytes).validating();
    let mut count = 0;
    loop {
        match reader.next_document() {
            Ok(Some(document)) => {
                assert!(document.len() <= MAX_DOCUMENT_BYTES);
                count += 1;
            }
            Ok(None) => return (count, true),
            Err(_) => return (count, false),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_end_in_documents_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let (count, _) = drain(&bytes);
        prop_assert!(count <= bytes.len() / 5);
    }

    #[test]
    fn a_damaged_stream_never_reads_more_than_it_holds(count in 1usize..40, at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut bytes = valid_stream(count);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let (read, _) = drain(&bytes);
        prop_assert!(read <= count + bytes.len() / 5);
        let cut = cut.index(bytes.len());
        let (read, clean) = drain(&bytes[..cut]);
        prop_assert!(read <= count);
        if clean && cut < bytes.len() {
            // A cut stream that ends cleanly (on a document boundary) is short.
            prop_assert!(read < count);
        }
    }

    #[test]
    fn gzip_damage_is_an_error_not_a_panic(count in 1usize..30, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::new(6));
        encoder.write_all(&valid_stream(count)).unwrap();
        let mut compressed = encoder.finish().unwrap();
        let i = at.index(compressed.len());
        compressed[i] ^= byte | 1;
        let mut reader = DocumentReader::new(GzDecoder::new(&compressed[..])).validating();
        let mut n = 0;
        while let Ok(Some(_)) = reader.next_document() {
            n += 1;
            prop_assert!(n <= count + 1000);
        }
    }

    #[test]
    fn metadata_parsing_never_panics(text in ".{0,400}") {
        let _ = CollectionMetadata::from_json(text.as_bytes(), Some("x"), "x.metadata.json");
    }

    #[test]
    fn metadata_that_parses_round_trips(name in "[a-zA-Z0-9 ._é/%$-]{1,60}", unique in any::<bool>()) {
        let metadata = CollectionMetadata {
            collection_name: name.clone(),
            kind: layout::CollectionKind::Collection,
            options: doc! {},
            indexes: vec![doc! {"v": 2, "key": {"a": 1, "b": -1}, "name": "a_1_b_-1", "unique": unique}],
            uuid: None,
        };
        let back = CollectionMetadata::from_json(&metadata.to_json(), None, "f").unwrap();
        prop_assert_eq!(back, metadata);
    }

    #[test]
    fn collection_names_round_trip_through_file_names(name in "\\PC{1,120}") {
        let stem = layout::file_stem(&name);
        prop_assert!(stem.len() <= 238);
        prop_assert!(!stem.contains('/') && stem != "." && stem != "..");
        let file = layout::data_file("db", &name, true);
        let file_name = file.strip_prefix("db/").unwrap();
        let found = layout::classify(file_name).unwrap();
        prop_assert_eq!(found.kind, FileKind::Data);
        prop_assert_eq!(&found.stem, &stem);
        if !layout::is_truncated_stem(&stem) {
            prop_assert_eq!(layout::unescape_collection_name(&stem).unwrap(), name);
        }
        prop_assert!(check_relative(&file).is_ok());
    }

    #[test]
    fn no_relative_path_escapes(path in "[a-z./\\\\]{0,20}") {
        if check_relative(&path).is_ok() {
            prop_assert!(!path.split('/').any(|p| p == ".." || p == "." || p.is_empty()));
            prop_assert!(!path.starts_with('/'));
        }
    }
}
