//! The native dump and restore, end to end, as the backup Job runs them (the
//! `referral-operator backup ...` binary as a process, the URI and the S3 keys in its
//! environment), against the test bed's MongoDB-wire server and its S3-compatible
//! server (versitygw): a database with every BSON type the server stores, documents
//! near the 16 MB limit, odd collection names and several kinds of index is dumped,
//! dropped and restored, and compared document by document, byte for byte, and index
//! by index; the same through object storage; corrupt, truncated and tampered
//! backups are refused naming the file, with the target database left as it was;
//! a `mongodump --out` directory without our manifest restores; retention prunes the
//! bucket as it prunes the volume; no secret reaches the output.
//!
//! Needs `REFOP_TEST_MONGODB_URI` and `REFOP_TEST_S3_*` (`tests/e2e/testbed.sh start
//! DIR; source DIR/env`); REFOP_SKIP_E2E=1 skips with `SKIPPED`. With
//! `REFOP_TEST_MONGODB_REAL=1` (scripts/test-all.sh sets it when it runs these tests
//! again against `MONGODB_URI`) the data also holds what mongo-java-server cannot
//! store: JavaScript code with scope and the MD5 binary subtype (it closes the
//! connection), a user-defined binary subtype (it turns 0x80 into 0), symbols, a view
//! and collection options (validator, collation), which it accepts and drops.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{
    Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, RawDocumentBuf, Regex, Timestamp, doc,
};
use referral_operator::backup::name::BackupName;
use referral_operator::backup::object::{Credentials, ObjectSettings, ObjectTarget};
use referral_operator::backup::store::{Manifest, ManifestFile};
use referral_operator::commands::mongo_client::client_from_uri;

const BINARY: &str = env!("CARGO_BIN_EXE_referral-operator");
/// A document just under MongoDB's 16 MiB limit.
const NEAR_LIMIT: usize = 16 * 1024 * 1024 - 4096;

fn skip_e2e() -> bool {
    if std::env::var("REFOP_SKIP_E2E").as_deref() == Ok("1") {
        eprintln!("SKIPPED: needs the test bed's MongoDB-wire and S3 servers (REFOP_SKIP_E2E=1)");
        return true;
    }
    false
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: start the test bed with `tests/e2e/testbed.sh start DIR` and `source DIR/env` \
             (scripts/test-all.sh does both), or set REFOP_SKIP_E2E=1 to skip"
        )
    })
}

fn real_mongodb() -> bool {
    std::env::var("REFOP_TEST_MONGODB_REAL").as_deref() == Ok("1")
}

/// The bed's S3 server.
#[derive(Clone)]
struct S3 {
    endpoint: String,
    bucket: String,
    region: String,
    access_key: String,
    secret_key: String,
    /// A prefix of this test's own.
    prefix: String,
}

impl S3 {
    fn from_env(test: &str) -> S3 {
        S3 {
            endpoint: required("REFOP_TEST_S3_ENDPOINT"),
            bucket: required("REFOP_TEST_S3_BUCKET"),
            region: required("REFOP_TEST_S3_REGION"),
            access_key: required("REFOP_TEST_S3_ACCESS_KEY_ID"),
            secret_key: required("REFOP_TEST_S3_SECRET_ACCESS_KEY"),
            prefix: format!("it/{test}-{}-{}", std::process::id(), ObjectId::new().to_hex()),
        }
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--s3-bucket".into(),
            self.bucket.clone(),
            "--s3-endpoint".into(),
            self.endpoint.clone(),
            "--s3-prefix".into(),
            self.prefix.clone(),
            "--s3-region".into(),
            self.region.clone(),
        ]
    }

    fn target(&self) -> ObjectTarget {
        let settings = ObjectSettings {
            endpoint: Some(self.endpoint.clone()),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            encryption: None,
        };
        let credentials = Credentials {
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            session_token: None,
        };
        ObjectTarget::connect(&settings, &credentials).expect("connect to the S3 server")
    }
}

/// A database of its own for one test.
struct Scratch {
    uri: String,
    client: mongodb::Client,
    name: String,
    /// Other databases the test made, dropped at the end.
    others: Vec<String>,
}

impl Scratch {
    async fn new(test: &str) -> Scratch {
        let uri = required("REFOP_TEST_MONGODB_URI");
        let name = format!("it_{test}_{}", std::process::id());
        let client =
            client_from_uri("REFOP_TEST_MONGODB_URI", &uri, Duration::from_secs(10), "it", None).await.expect("client");
        client.database(&name).drop().await.expect("drop a leftover test database");
        Scratch { uri, client, name, others: Vec::new() }
    }

    fn db(&self) -> mongodb::Database {
        self.client.database(&self.name)
    }

    async fn other(&mut self, suffix: &str) -> String {
        let name = format!("{}_{suffix}", self.name);
        self.client.database(&name).drop().await.unwrap();
        self.others.push(name.clone());
        name
    }

    async fn finish(self) {
        self.db().drop().await.unwrap();
        for other in &self.others {
            self.client.database(other).drop().await.unwrap();
        }
    }

    fn cli(&self, args: &[String], s3: Option<&S3>) -> Output {
        let mut command = Command::new(BINARY);
        command.args(args).env("MONGODB_URI", &self.uri).env_remove("POD_NAMESPACE").env_remove("MONGODB_DATABASE");
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
            command.env_remove(var);
        }
        if let Some(s3) = s3 {
            command.env("AWS_ACCESS_KEY_ID", &s3.access_key).env("AWS_SECRET_ACCESS_KEY", &s3.secret_key);
        }
        command.output().expect("run the referral-operator binary")
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn ok(output: Output) -> String {
    let all = text(&output);
    assert!(output.status.success(), "the command failed:\n{all}");
    all
}

/// The backup's name from `backup dump`'s last line.
fn dumped_name(output: &str) -> String {
    let line =
        output.lines().find(|l| l.starts_with("backup ")).unwrap_or_else(|| panic!("no summary line in {output}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

/// Bytes that do not compress: a xorshift stream.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn every_type(i: i32) -> Document {
    // 81 levels: MongoDB stores at most 100.
    let mut deep = doc! {"leaf": i};
    for _ in 0..40 {
        deep = doc! {"d": [deep]};
    }
    let mut document = doc! {
        "_id": ObjectId::new(),
        "int32": i,
        "int64": i64::from(i) << 40,
        "double": 1.5 + f64::from(i),
        "negative_zero": -0.0f64,
        "infinity": f64::INFINITY,
        "nan": f64::NAN,
        "decimal": format!("{i}.10").parse::<Decimal128>().unwrap(),
        "decimal_tiny": "-1.000000000000000000000000000000001E-6000".parse::<Decimal128>().unwrap(),
        "string": "plain",
        "unicode": "значение ✓ 🎉",
        "ключ 🔑": "unicode key",
        "bool": true,
        "null": Bson::Null,
        "date": DateTime::from_millis(1_795_000_000_000 + i64::from(i)),
        "before_epoch": DateTime::from_millis(-2_000_000_000_000),
        "timestamp": Timestamp { time: 1_795_000_000, increment: 7 },
        "regex": Regex { pattern: "^ref-[0-9]+$".into(), options: "im".into() },
        "min": Bson::MinKey,
        "max": Bson::MaxKey,
        "code": Bson::JavaScriptCode("function () { return 1; }".into()),
        "generic": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2, 255] },
        "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: noise(16, 3 + i as u64) },
        "empty_document": {},
        "empty_array": [],
        "nested": [[1, [2, {"x": [], "y": [[[]]]}]], "s", {"a": {"b": {"c": [Bson::Null, Bson::MinKey]}}}],
        "deep": deep,
    };
    if real_mongodb() {
        document.insert(
            "code_with_scope",
            JavaScriptCodeWithScope { code: "function () { return x; }".into(), scope: doc! {"x": i} },
        );
        document.insert("user_binary", Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: vec![9, 9] });
        document.insert("md5", Binary { subtype: BinarySubtype::Md5, bytes: noise(16, 5) });
        document.insert("symbol", Bson::Symbol("sym".into()));
    }
    document
}

/// A database with every kind of thing a backup must carry.
async fn seed(db: &mongodb::Database) {
    let users = db.collection::<Document>("users");
    users.insert_many((0..200).map(every_type)).await.unwrap();
    let referrals: Vec<Document> = (0..20_000)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "referralCode": format!("R{i:06}"),
                "referredBy": if i % 5 == 0 { Bson::Null } else { Bson::String(format!("R{:06}", i / 3)) },
                "createdAt": DateTime::from_millis(1_790_000_000_000 + i64::from(i) * 1000),
                "amount": format!("{}.{:02}", i % 1000, i % 100).parse::<Decimal128>().unwrap(),
            }
        })
        .collect();
    for chunk in referrals.chunks(5_000) {
        db.collection::<Document>("referrals").insert_many(chunk).await.unwrap();
    }
    // Documents near the limit; the noise does not compress, so their file is
    // uploaded to object storage in several parts.
    let big = db.collection::<Document>("big");
    for (i, size) in [NEAR_LIMIT, NEAR_LIMIT - 1, 3 << 20].into_iter().enumerate() {
        big.insert_one(doc! {"_id": i as i32, "blob": Binary { subtype: BinarySubtype::Generic, bytes: noise(size, i as u64 + 11) }})
            .await
            .unwrap();
    }
    db.collection::<Document>("a b/é%").insert_one(doc! {"_id": "odd", "n": 1}).await.unwrap();
    db.run_command(doc! {"createIndexes": "users", "indexes": [
        {"key": {"int32": 1}, "name": "int32_1", "unique": true, "sparse": true},
        {"key": {"string": 1, "date": -1}, "name": "string_1_date_-1"},
        {"key": {"expiresAt": 1}, "name": "expiresAt_1", "expireAfterSeconds": 3600},
        {"key": {"double": 1}, "name": "double_partial", "partialFilterExpression": {"double": {"$gt": 10}}},
        {"key": {"unicode": 1}, "name": "unicode_ci", "collation": {"locale": "en", "strength": 2}},
        {"key": {"referralCode": "hashed"}, "name": "code_hashed"},
    ]})
    .await
    .unwrap();
    db.run_command(doc! {"createIndexes": "referrals", "indexes": [
        {"key": {"referralCode": 1}, "name": "referralCode_1", "unique": true},
        {"key": {"referredBy": 1, "createdAt": -1}, "name": "referredBy_1_createdAt_-1"},
    ]})
    .await
    .unwrap();
    // An empty collection that exists, with an index of its own.
    db.run_command(doc! {"create": "referralTransactions"}).await.unwrap();
    db.run_command(doc! {"createIndexes": "referralTransactions", "indexes": [
        {"key": {"status": 1}, "name": "status_1"},
    ]})
    .await
    .unwrap();
    if real_mongodb() {
        db.run_command(doc! {"create": "validated", "validator": {"n": {"$type": "int"}},
        "collation": {"locale": "fr"}})
            .await
            .unwrap();
        db.collection::<Document>("validated").insert_one(doc! {"n": 1}).await.unwrap();
        db.run_command(doc! {"create": "activeUsers", "viewOn": "users", "pipeline": [{"$match": {"bool": true}}]})
            .await
            .unwrap();
    }
}

/// Everything a restore must bring back: per collection its options, its indexes
/// (without the version and namespace the server sets) and its documents as raw
/// bytes in `_id` order.
#[derive(Debug, PartialEq)]
struct Collection {
    kind: String,
    options: Document,
    indexes: BTreeMap<String, Document>,
    documents: Vec<Vec<u8>>,
}

async fn snapshot(db: &mongodb::Database) -> BTreeMap<String, Collection> {
    let infos: Vec<Document> =
        db.run_cursor_command(doc! {"listCollections": 1}).await.unwrap().try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for info in infos {
        let name = info.get_str("name").unwrap().to_string();
        if name.starts_with("system.") {
            continue;
        }
        let kind = info.get_str("type").unwrap_or("collection").to_string();
        let options = info.get_document("options").cloned().unwrap_or_default();
        let mut indexes = BTreeMap::new();
        let mut documents = Vec::new();
        if kind != "view" {
            let listed: Vec<Document> =
                db.run_cursor_command(doc! {"listIndexes": &name}).await.unwrap().try_collect().await.unwrap();
            for mut index in listed {
                index.remove("v");
                index.remove("ns");
                indexes.insert(index.get_str("name").unwrap().to_string(), index);
            }
            let mut cursor = db.collection::<RawDocumentBuf>(&name).find(doc! {}).sort(doc! {"_id": 1}).await.unwrap();
            while cursor.advance().await.unwrap() {
                documents.push(cursor.current().as_bytes().to_vec());
            }
        }
        out.insert(name, Collection { kind, options, indexes, documents });
    }
    out
}

fn assert_same(before: &BTreeMap<String, Collection>, after: &BTreeMap<String, Collection>) {
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "the same collections");
    for (name, was) in before {
        let now = &after[name];
        assert_eq!(was.kind, now.kind, "{name}: kind");
        assert_eq!(was.options, now.options, "{name}: options");
        assert_eq!(was.indexes, now.indexes, "{name}: indexes");
        assert_eq!(was.documents.len(), now.documents.len(), "{name}: document count");
        for (i, (a, b)) in was.documents.iter().zip(&now.documents).enumerate() {
            assert!(a == b, "{name}: document {i} differs after the restore ({} vs {} bytes)", a.len(), b.len());
        }
    }
}

#[tokio::test]
async fn a_database_survives_dump_drop_and_restore_byte_for_byte() {
    if skip_e2e() {
        return;
    }
    let s = Scratch::new("roundtrip").await;
    seed(&s.db()).await;
    let before = snapshot(&s.db()).await;
    assert_eq!(before["users"].documents.len(), 200);
    assert_eq!(before["referrals"].documents.len(), 20_000);
    assert!(before["big"].documents[0].len() > NEAR_LIMIT, "a document near the limit was stored");
    assert_eq!(before["users"].indexes.len(), 7, "{:?}", before["users"].indexes.keys());

    let dir = tempfile::tempdir().unwrap();
    let dump =
        ok(s.cli(&args(&["backup", "dump", "--dir", dir.path().to_str().unwrap(), "--database", &s.name]), None));
    let name = dumped_name(&dump);
    assert!(dump.contains("20000 documents"), "{dump}");
    let folder = dir.path().join(&name);
    // mongodump's layout: <db>/<collection>.bson.gz and .metadata.json.gz.
    for file in ["users.bson.gz", "users.metadata.json.gz", "a%20b%2F%C3%A9%25.bson.gz", "referralTransactions.bson.gz"]
    {
        assert!(folder.join(&s.name).join(file).is_file(), "{file} in {}", folder.display());
    }
    let manifest: Manifest = serde_json::from_slice(&fs::read(folder.join("complete.json")).unwrap()).unwrap();
    let dumped = manifest.mongodb.as_ref().expect("the manifest records the dump");
    let users = dumped.collections.iter().find(|c| c.name == "users").unwrap();
    assert_eq!(users.documents, 200);
    assert_eq!(users.indexes, 7);
    assert!(manifest.files.iter().all(|f| f.sha256.as_deref().is_some_and(|h| h.len() == 64)), "{manifest:?}");

    let verified =
        ok(s.cli(&args(&["backup", "verify", "--dir", dir.path().to_str().unwrap(), "--name", &name]), None));
    assert!(verified.contains("complete and sound"), "{verified}");

    // The worst case a restore meets: the database gone, then written to again.
    s.db().drop().await.unwrap();
    s.db().collection::<Document>("users").insert_one(doc! {"_id": "written after the backup"}).await.unwrap();
    s.db().collection::<Document>("unrelated").insert_one(doc! {"_id": 1}).await.unwrap();
    let restored = ok(s.cli(
        &args(&["backup", "restore", "--dir", dir.path().to_str().unwrap(), "--name", &name, "--database", &s.name]),
        None,
    ));
    assert!(restored.contains("restored") && restored.contains("count checked"), "{restored}");
    let mut after = snapshot(&s.db()).await;
    let unrelated = after.remove("unrelated").expect("a collection the backup does not hold is left alone");
    assert_eq!(unrelated.documents.len(), 1);
    assert_same(&before, &after);
    s.finish().await;
}

#[tokio::test]
async fn the_same_round_trip_through_object_storage_with_server_side_encryption() {
    if skip_e2e() {
        return;
    }
    let s3 = S3::from_env("roundtrip");
    let mut s = Scratch::new("s3trip").await;
    seed(&s.db()).await;
    let before = snapshot(&s.db()).await;
    let mut dump = args(&["backup", "dump", "--database", &s.name, "--s3-sse", "AES256"]);
    dump.extend(s3.flags());
    let output = ok(s.cli(&dump, Some(&s3)));
    let name = dumped_name(&output);

    let target = s3.target();
    let manifest = target.read_manifest(&name).await.expect("the manifest is in the bucket");
    assert_eq!(manifest.mongodb.as_ref().unwrap().database, s.name);
    let big_file = manifest.files.iter().find(|f| f.path.ends_with("/big.bson.gz")).unwrap();
    assert!(big_file.size_bytes > 3 * 8 * 1024 * 1024, "big.bson.gz went up in several 8 MiB parts: {big_file:?}");
    // What reached the server: the encryption header on every upload (the bed's
    // versitygw accepts it without encrypting; AWS and MinIO encrypt).
    let log = fs::read_to_string(required("REFOP_TEST_S3_LOG")).unwrap();
    let sse_lines = log.lines().filter(|l| l.contains("X-Amz-Server-Side-Encryption") && l.contains("AES256")).count();
    assert!(sse_lines >= manifest.files.len(), "{sse_lines} uploads carried SSE for {} files", manifest.files.len());

    let mut verify = args(&["backup", "verify", "--name", &name]);
    verify.extend(s3.flags());
    assert!(ok(s.cli(&verify, Some(&s3))).contains("complete and sound"));

    // Into another database: the name of the database is the restore's choice.
    let copy = s.other("copy").await;
    let mut restore = args(&["backup", "restore", "--name", &name, "--database", &copy]);
    restore.extend(s3.flags());
    ok(s.cli(&restore, Some(&s3)));
    assert_same(&before, &snapshot(&s.client.database(&copy)).await);

    // Only some collections.
    let part = s.other("part").await;
    let mut restore = args(&["backup", "restore", "--name", &name, "--database", &part, "--collection", "referrals"]);
    restore.extend(s3.flags());
    ok(s.cli(&restore, Some(&s3)));
    let partial = snapshot(&s.client.database(&part)).await;
    assert_eq!(partial.keys().collect::<Vec<_>>(), ["referrals"]);
    assert_eq!(partial["referrals"], before["referrals"]);
    let mut unknown = args(&["backup", "restore", "--name", &name, "--database", &part, "--collection", "nope"]);
    unknown.extend(s3.flags());
    let refused = s.cli(&unknown, Some(&s3));
    assert!(!refused.status.success());
    assert!(text(&refused).contains("\"nope\" is not in the backup"), "{}", text(&refused));
    s.finish().await;
}

/// Seeds a small database, dumps it to a volume and returns the backup's folder.
async fn small_backup(s: &Scratch, dir: &Path, gzip: bool) -> (String, PathBuf) {
    let db = s.db();
    db.collection::<Document>("users")
        .insert_many((0..2000).map(|i| doc! {"_id": i, "code": format!("C{i}")}))
        .await
        .unwrap();
    db.run_command(
        doc! {"createIndexes": "users", "indexes": [{"key": {"code": 1}, "name": "code_1", "unique": true}]},
    )
    .await
    .unwrap();
    let mut dump = args(&["backup", "dump", "--dir", dir.to_str().unwrap(), "--database", &s.name]);
    if !gzip {
        dump.push("--no-gzip".into());
    }
    let name = dumped_name(&ok(s.cli(&dump, None)));
    let folder = dir.join(&name);
    (name, folder)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_corrupt_truncated_or_tampered_backup_is_refused_naming_the_file_and_nothing_is_touched() {
    if skip_e2e() {
        return;
    }
    let mut s = Scratch::new("corrupt").await;
    let dir = tempfile::tempdir().unwrap();
    let (_, good) = small_backup(&s, dir.path(), true).await;
    let (_, plain) = {
        let plain_dir = dir.path().join("plain");
        fs::create_dir(&plain_dir).unwrap();
        small_backup_again(&s, &plain_dir).await
    };
    // The database a bad restore must not touch.
    let target = s.other("target").await;
    let sentinel = s.client.database(&target);
    sentinel.collection::<Document>("users").insert_one(doc! {"_id": "keep me"}).await.unwrap();
    let kept = snapshot(&sentinel).await;

    let db = s.name.clone();
    let users = format!("{db}/users.bson.gz");
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, &Path, Damage, String)> = vec![
        (
            "a flipped byte",
            good.as_path(),
            Box::new(move |f: &Path| {
                let file = f.join(&users);
                let mut bytes = fs::read(&file).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x55;
                fs::write(&file, bytes).unwrap();
            }),
            format!("{db}/users.bson.gz"),
        ),
        (
            "a truncated data file",
            good.as_path(),
            Box::new({
                let db = db.clone();
                move |f: &Path| {
                    let file = f.join(format!("{db}/users.bson.gz"));
                    let bytes = fs::read(&file).unwrap();
                    fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
                }
            }),
            format!("{db}/users.bson.gz"),
        ),
        (
            "a truncated metadata file",
            good.as_path(),
            Box::new({
                let db = db.clone();
                move |f: &Path| {
                    let file = f.join(format!("{db}/users.metadata.json.gz"));
                    let bytes = fs::read(&file).unwrap();
                    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
                }
            }),
            format!("{db}/users.metadata.json.gz"),
        ),
        (
            "a count the manifest does not match",
            good.as_path(),
            Box::new(|f: &Path| {
                let marker = f.join("complete.json");
                let mut manifest: serde_json::Value = serde_json::from_slice(&fs::read(&marker).unwrap()).unwrap();
                manifest["mongodb"]["collections"][0]["documents"] = 2001.into();
                fs::write(&marker, serde_json::to_vec(&manifest).unwrap()).unwrap();
            }),
            format!("{db}/users.bson.gz: 2000 documents, the manifest recorded 2001"),
        ),
        (
            "a plain file cut inside a document",
            plain.as_path(),
            Box::new({
                let db = db.clone();
                move |f: &Path| {
                    // Cut the file and record the cut size and checksum, as if the
                    // backup had been written that way: only decoding finds it.
                    let file = f.join(format!("{db}/users.bson"));
                    let bytes = fs::read(&file).unwrap();
                    let cut = &bytes[..bytes.len() - 7];
                    fs::write(&file, cut).unwrap();
                    let digest = {
                        use sha2::Digest;
                        sha2::Sha256::digest(cut).iter().map(|b| format!("{b:02x}")).collect::<String>()
                    };
                    let marker = f.join("complete.json");
                    let mut manifest: serde_json::Value = serde_json::from_slice(&fs::read(&marker).unwrap()).unwrap();
                    for file in manifest["files"].as_array_mut().unwrap() {
                        if file["path"] == format!("{db}/users.bson") {
                            file["sizeBytes"] = cut.len().into();
                            file["sha256"] = digest.clone().into();
                        }
                    }
                    let data = &mut manifest["mongodb"]["collections"][0]["dataFile"];
                    data["sizeBytes"] = cut.len().into();
                    data["sha256"] = digest.into();
                    fs::write(&marker, serde_json::to_vec(&manifest).unwrap()).unwrap();
                }
            }),
            format!("{db}/users.bson: truncated at byte"),
        ),
        (
            "a missing manifest",
            good.as_path(),
            Box::new(|f: &Path| fs::remove_file(f.join("complete.json")).unwrap()),
            "complete.json is missing".to_string(),
        ),
    ];
    for (i, (what, from, damage, says)) in cases.iter().enumerate() {
        let name = format!("20200101T00000{i}Z");
        let bad = dir.path().join(&name);
        copy_dir(from, &bad);
        damage(&bad);
        let backups = dir.path().to_str().unwrap();
        let verify = s.cli(&args(&["backup", "verify", "--dir", backups, "--name", &name]), None);
        assert!(!verify.status.success(), "{what}: verify passed:\n{}", text(&verify));
        assert!(text(&verify).contains(says.as_str()), "{what}: verify should say {says:?}:\n{}", text(&verify));
        let restore =
            s.cli(&args(&["backup", "restore", "--dir", backups, "--name", &name, "--database", &target]), None);
        assert!(!restore.status.success(), "{what}: restore passed:\n{}", text(&restore));
        assert!(text(&restore).contains(says.as_str()), "{what}: restore should say {says:?}:\n{}", text(&restore));
        assert_eq!(snapshot(&sentinel).await, kept, "{what}: the target database was touched");
    }
    s.finish().await;
}

async fn small_backup_again(s: &Scratch, dir: &Path) -> (String, PathBuf) {
    let mut dump = args(&["backup", "dump", "--dir", dir.to_str().unwrap(), "--database", &s.name, "--no-gzip"]);
    dump.extend(args(&["--collection", "users"]));
    let name = dumped_name(&ok(s.cli(&dump, None)));
    (name.clone(), dir.join(name))
}

#[tokio::test]
async fn a_corrupt_object_in_the_bucket_is_refused_too() {
    if skip_e2e() {
        return;
    }
    let s3 = S3::from_env("corrupt");
    let mut s = Scratch::new("s3corrupt").await;
    s.db().collection::<Document>("users").insert_many((0..500).map(|i| doc! {"_id": i})).await.unwrap();
    let mut dump = args(&["backup", "dump", "--database", &s.name]);
    dump.extend(s3.flags());
    let name = dumped_name(&ok(s.cli(&dump, Some(&s3))));
    let target = s3.target();
    let key = format!("{name}/{}/users.bson.gz", s.name);
    let mut bytes = target.read_small(&key).await.unwrap().unwrap().to_vec();
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    target.write_small(&key, bytes).await.unwrap();
    let restore_into = s.other("target").await;
    let mut restore = args(&["backup", "restore", "--name", &name, "--database", &restore_into]);
    restore.extend(s3.flags());
    let refused = s.cli(&restore, Some(&s3));
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains(&format!("{}/users.bson.gz", s.name)), "{}", text(&refused));
    assert!(s.client.database(&restore_into).list_collection_names().await.unwrap().is_empty());
    s.finish().await;
}

#[tokio::test]
async fn a_mongodump_directory_without_our_manifest_is_restored() {
    if skip_e2e() {
        return;
    }
    let mut s = Scratch::new("fromdump").await;
    let dir = tempfile::tempdir().unwrap();
    let (_, folder) = small_backup(&s, dir.path(), false).await;
    s.db().collection::<Document>("a b/é%").insert_one(doc! {"_id": 1}).await.unwrap();
    let before = snapshot(&s.db()).await;
    // What `mongodump --out dump` leaves: dump/<db>/*.bson and *.metadata.json, no
    // manifest of ours. Dumped again so the odd name is in it.
    let again = dir.path().join("again");
    fs::create_dir(&again).unwrap();
    let name = dumped_name(&ok(
        s.cli(&args(&["backup", "dump", "--dir", again.to_str().unwrap(), "--database", &s.name, "--no-gzip"]), None)
    ));
    let mongodump_out = dir.path().join("dump");
    copy_dir(&again.join(&name).join(&s.name), &mongodump_out.join(&s.name));
    assert!(folder.join(&s.name).join("users.bson").is_file());
    let into = s.other("restored").await;
    let output = ok(
        s.cli(&args(&["backup", "restore", "--from-dump", mongodump_out.to_str().unwrap(), "--database", &into]), None)
    );
    assert!(output.contains("restored 2 collections"), "{output}");
    assert_same(&before, &snapshot(&s.client.database(&into)).await);
    s.finish().await;
}

#[tokio::test]
async fn retention_prunes_the_bucket_as_it_prunes_the_volume() {
    if skip_e2e() {
        return;
    }
    let s3 = S3::from_env("retention");
    let s = Scratch::new("s3retention").await;
    let target = s3.target();
    // Complete backups on seven days, an old run that never finished, a recent one
    // in progress, and an object that is not a backup.
    let days = ["20261117", "20261118", "20261119", "20261120", "20261121", "20261122", "20261123"];
    for day in days {
        let name = format!("{day}T010000Z");
        target.write_small(&format!("{name}/data.bin"), vec![1; 10]).await.unwrap();
        let parsed = BackupName::parse(&name).unwrap();
        let manifest = Manifest {
            format: 2,
            name: name.clone(),
            started_at: parsed.timestamp,
            completed_at: parsed.timestamp,
            database: Some("x".into()),
            collections: vec![],
            whole_database: true,
            redis: false,
            files: vec![ManifestFile { path: "data.bin".into(), size_bytes: 10, sha256: None }],
            size_bytes: 10,
            mongodb: None,
        };
        target.write_marker(&manifest).await.unwrap();
        assert!(target.write_marker(&manifest).await.is_err(), "a complete backup is never written twice");
    }
    target.write_small("20261101T010000Z/data.bin", vec![1]).await.unwrap();
    let recent = k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    target.write_small(&format!("{recent}/data.bin"), vec![1]).await.unwrap();
    target.write_small("notes.txt", b"not a backup".to_vec()).await.unwrap();

    let list = |extra: &[&str]| {
        let mut command = args(&["backup", "prune", "--daily", "3", "--weekly", "0", "--monthly", "0"]);
        command.extend(args(extra));
        command.extend(s3.flags());
        s.cli(&command, Some(&s3))
    };
    let dry = ok(list(&["--dry-run"]));
    assert!(dry.contains("delete  20261120T010000Z"), "{dry}");
    assert!(dry.contains("stale   20261101T010000Z"), "{dry}");
    assert!(dry.contains(&format!("running {recent}")), "{dry}");
    assert!(dry.contains("odd     notes.txt"), "{dry}");
    assert_eq!(target.list().await.unwrap().backups.len(), 9, "a dry run deletes nothing");

    let applied = ok(list(&[]));
    assert!(applied.contains("deleted 4 backups"), "{applied}");
    let after = target.list().await.unwrap();
    let names: Vec<(&str, bool)> = after.backups.iter().map(|b| (b.dir_name.as_str(), b.is_complete())).collect();
    assert_eq!(
        names,
        [
            ("20261101T010000Z", false),
            ("20261121T010000Z", true),
            ("20261122T010000Z", true),
            ("20261123T010000Z", true),
            (recent.as_str(), false)
        ]
    );
    assert_eq!(after.others, ["notes.txt"]);

    let stale = ok(list(&["--delete-stale"]));
    assert!(stale.contains("delete  20261101T010000Z"), "{stale}");
    assert!(!target.list().await.unwrap().backups.iter().any(|b| b.dir_name == "20261101T010000Z"));
    let mut listed = args(&["backup", "list", "-o", "json"]);
    listed.extend(s3.flags());
    let json: serde_json::Value = serde_json::from_str(&ok(s.cli(&listed, Some(&s3)))).unwrap();
    assert_eq!(json["backups"].as_array().unwrap().len(), 4);
    s.finish().await;
}

#[tokio::test]
async fn no_secret_reaches_the_output() {
    if skip_e2e() {
        return;
    }
    let s3 = S3::from_env("secrets");
    let s = Scratch::new("secrets").await;
    s.db().collection::<Document>("users").insert_one(doc! {"_id": 1}).await.unwrap();
    // A wrong secret: the server refuses every request.
    let wrong = S3 { secret_key: "Wr0ngSecretValue-abcdef123456".into(), ..s3.clone() };
    let mut dump = args(&["backup", "dump", "--database", &s.name]);
    dump.extend(wrong.flags());
    let refused = s.cli(&dump, Some(&wrong));
    assert!(!refused.status.success());
    let all = text(&refused);
    assert!(all.contains("403") || all.to_lowercase().contains("denied") || all.contains("privileges"), "{all}");
    for secret in [&wrong.secret_key, &wrong.access_key] {
        assert!(!all.contains(secret.as_str()), "a credential reached the output: {all}");
    }
    // The test server's URI with a user and password it will not take (the wire
    // server has no users; a real one has no such user).
    let (scheme, rest) = s.uri.split_once("://").unwrap();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let hosts = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["backup", "dump", "--dir", dir.path().to_str().unwrap(), "--database", &s.name])
        .env("MONGODB_URI", format!("{scheme}://refop:Pa55w0rd-never-print@{hosts}"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let all = text(&output);
    assert!(!all.contains("Pa55w0rd-never-print"), "the password reached the output: {all}");
    s.finish().await;
}
