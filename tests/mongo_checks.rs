//! Index sync and chain check against the test bed's MongoDB-wire server
//! (mongo-java-server, reporting MongoDB 4.4): indexes created once and then only
//! listed, Report never writing, conflicts left alone unless a rebuild is allowed, the
//! chain report of a seeded dataset with every defect kind, the CLI with its exit codes
//! and repair plan, an empty database, and the failures (closed port, credentials).
//!
//! Writes are observed, not assumed: every client here has a command monitor, and the
//! tests assert the exact commands sent to the test database.
//!
//! Needs `REFOP_TEST_MONGODB_URI` (`tests/e2e/testbed.sh start DIR; source DIR/env`);
//! REFOP_SKIP_E2E=1 skips with `SKIPPED`. What the server does not do like MongoDB:
//! it has no authentication (a URI with credentials fails at the SCRAM handshake, which
//! is how the credentials test fails), it returns a collation as given rather than with
//! every default filled in (the default-filled comparison is a unit test of
//! `checks::indexes`), and it accepts a second index on the same keys under another
//! name (MongoDB refuses it; the operator never attempts it).

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use referral_operator::checks::chain_source::{ChainSourceError, check_chains};
use referral_operator::checks::chains::FindingKind;
use referral_operator::checks::index_sync::{IndexSyncError, list_indexes, sync_indexes};
use referral_operator::commands::mongo_client::client_from_uri;
use referral_operator::crd::mongodb::{ChainModel, IndexPolicy, IndexSpec, ReferredByHolds, default_indexes};
use referral_operator::crd::status::IndexState;

const BINARY: &str = env!("CARGO_BIN_EXE_referral-operator");

fn mongo_uri() -> Option<String> {
    if std::env::var("REFOP_SKIP_E2E").as_deref() == Ok("1") {
        eprintln!("SKIPPED: needs the test bed's MongoDB-wire server (REFOP_SKIP_E2E=1)");
        return None;
    }
    match std::env::var("REFOP_TEST_MONGODB_URI") {
        Ok(uri) => Some(uri),
        Err(_) => panic!(
            "REFOP_TEST_MONGODB_URI is not set: start the test bed with `tests/e2e/testbed.sh start DIR` and \
             `source DIR/env` (scripts/test-all.sh does both), or set REFOP_SKIP_E2E=1 to skip"
        ),
    }
}

/// A database of its own for one test, with the commands sent to it recorded.
struct Scratch {
    uri: String,
    client: mongodb::Client,
    name: String,
    commands: Arc<Mutex<Vec<Document>>>,
}

impl Scratch {
    async fn new(uri: &str, test: &str) -> Scratch {
        let name = format!("it_{test}_{}", std::process::id());
        let commands: Arc<Mutex<Vec<Document>>> = Arc::default();
        let seen = commands.clone();
        let db = name.clone();
        let monitor = EventHandler::callback(move |event: CommandEvent| {
            if let CommandEvent::Started(started) = event
                && started.db == db
            {
                seen.lock().unwrap().push(started.command);
            }
        });
        let client = client_from_uri("REFOP_TEST_MONGODB_URI", uri, Duration::from_secs(10), "it", Some(monitor))
            .await
            .expect("client");
        client.database(&name).drop().await.expect("drop a leftover test database");
        let scratch = Scratch { uri: uri.into(), client, name, commands };
        scratch.take_commands();
        scratch
    }

    fn db(&self) -> mongodb::Database {
        self.client.database(&self.name)
    }

    /// Names of the commands sent to this database since the last call.
    fn take_commands(&self) -> Vec<String> {
        let mut commands = self.commands.lock().unwrap();
        let names = commands.iter().filter_map(|c| c.keys().next().cloned()).collect();
        commands.clear();
        names
    }

    fn take_full_commands(&self) -> Vec<Document> {
        std::mem::take(&mut *self.commands.lock().unwrap())
    }

    async fn index(&self, collection: &str, name: &str) -> Option<Document> {
        let mut cursor = self.db().run_cursor_command(doc! {"listIndexes": collection}).await.unwrap();
        let mut found = None;
        while cursor.advance().await.unwrap() {
            let index = cursor.deserialize_current().unwrap();
            if index.get_str("name").ok() == Some(name) {
                found = Some(index);
            }
        }
        found
    }

    async fn finish(self) {
        self.db().drop().await.expect("drop the test database");
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BINARY)
            .args(args)
            .env("MONGODB_URI", &self.uri)
            .env_remove("POD_NAMESPACE")
            .output()
            .expect("run the referral-operator binary")
    }
}

fn count(names: &[String], command: &str) -> usize {
    names.iter().filter(|n| *n == command).count()
}

fn write_commands(names: &[String]) -> Vec<String> {
    const READS: [&str; 7] = ["listIndexes", "listCollections", "find", "getMore", "count", "aggregate", "killCursors"];
    names.iter().filter(|n| !READS.contains(&n.as_str())).cloned().collect()
}

#[tokio::test]
async fn ensure_creates_missing_indexes_once_then_only_lists_them() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "ensure").await;
    let first = sync_indexes(&s.client, &s.name, &default_indexes(), IndexPolicy::Ensure).await.unwrap();
    assert!(first.indexes.iter().all(|i| i.state == IndexState::Created), "{first:#?}");
    assert_eq!(first.summary(), "6/6");
    let sent = s.take_commands();
    assert_eq!(count(&sent, "listIndexes"), 3, "{sent:?}");
    assert_eq!(count(&sent, "createIndexes"), 3, "one createIndexes per collection: {sent:?}");
    assert_eq!(first.writes, 3);
    let code = s.index("users", "referralCode_1").await.expect("referralCode_1 exists");
    assert_eq!(code.get("unique"), Some(&Bson::Boolean(true)));
    assert_eq!(code.get("sparse"), Some(&Bson::Boolean(true)));
    assert_eq!(
        s.index("users", "referredBy_1_createdAt_-1").await.unwrap().get_document("key").unwrap(),
        &doc! {"referredBy": 1, "createdAt": -1}
    );
    s.take_commands(); // the test's own listIndexes above

    let second = sync_indexes(&s.client, &s.name, &default_indexes(), IndexPolicy::Ensure).await.unwrap();
    assert!(second.indexes.iter().all(|i| i.state == IndexState::Present), "{second:#?}");
    assert_eq!(second.writes, 0);
    assert!(second.unmanaged.is_empty());
    assert_eq!(s.take_commands(), vec!["listIndexes"; 3], "an unchanged database costs one listIndexes per collection");
    s.finish().await;
}

#[tokio::test]
async fn report_policy_never_writes() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "report").await;
    let report = sync_indexes(&s.client, &s.name, &default_indexes(), IndexPolicy::Report).await.unwrap();
    assert!(report.indexes.iter().all(|i| i.state == IndexState::Missing));
    assert_eq!(report.summary(), "0/6 (6 missing)");
    assert_eq!(
        report.indexes[0].message.as_deref(),
        Some("index referralCode_1 on users does not exist; indexPolicy Report does not create it")
    );
    assert_eq!(s.take_commands(), vec!["listIndexes"; 3]);
    assert!(s.db().list_collection_names().await.unwrap().is_empty(), "Report created a collection");
    s.finish().await;
}

#[tokio::test]
async fn a_conflict_is_reported_and_left_alone_unless_its_rebuild_is_allowed() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "conflict").await;
    let db = s.db();
    db.collection::<Document>("users").insert_one(doc! {"referralCode": "A"}).await.unwrap();
    db.run_command(doc! {"createIndexes": "users", "indexes": [
        {"key": {"referralCode": 1}, "name": "referralCode_1"},
        {"key": {"legacyCode": 1}, "name": "legacyCode_1"},
    ]})
    .await
    .unwrap();
    s.take_commands();

    let report = sync_indexes(&s.client, &s.name, &default_indexes(), IndexPolicy::Ensure).await.unwrap();
    let code = &report.indexes[0];
    assert_eq!(code.state, IndexState::Conflict);
    assert_eq!(
        code.message.as_deref(),
        Some(
            "index referralCode_1 on users exists without unique: true; exists without sparse: true (it is left as \
             it is; set allowRebuild: true on this index to have it dropped and recreated)"
        )
    );
    assert!(report.indexes[1..].iter().all(|i| i.state == IndexState::Created));
    assert_eq!(report.summary(), "5/6 (1 conflict)");
    assert_eq!(report.unmanaged.len(), 1);
    assert_eq!(report.unmanaged[0].name, "legacyCode_1");
    let sent = s.take_commands();
    assert_eq!(count(&sent, "dropIndexes"), 0, "{sent:?}");
    assert_eq!(count(&sent, "createIndexes"), 3, "{sent:?}");
    assert_eq!(s.index("users", "referralCode_1").await.unwrap().get("unique"), None, "the conflict was touched");

    // Report with allowRebuild: still never writes.
    let mut rebuild = default_indexes();
    rebuild[0].name = Some("referralCode_1".into());
    rebuild[0].allow_rebuild = true;
    let report = sync_indexes(&s.client, &s.name, &rebuild, IndexPolicy::Report).await.unwrap();
    assert_eq!(report.indexes[0].state, IndexState::Conflict);
    assert!(write_commands(&s.take_commands()).is_empty());

    // Ensure with allowRebuild on that one index: dropped and recreated, the rest untouched.
    let report = sync_indexes(&s.client, &s.name, &rebuild, IndexPolicy::Ensure).await.unwrap();
    assert_eq!(report.indexes[0].state, IndexState::Created, "{report:#?}");
    assert_eq!(
        report.indexes[0].message.as_deref(),
        Some("rebuilt (allowRebuild): dropped referralCode_1, created referralCode_1")
    );
    let sent = s.take_full_commands();
    let drops: Vec<&Document> = sent.iter().filter(|c| c.contains_key("dropIndexes")).collect();
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0].get_str("index").unwrap(), "referralCode_1");
    assert_eq!(s.index("users", "referralCode_1").await.unwrap().get("unique"), Some(&Bson::Boolean(true)));
    assert!(s.index("users", "legacyCode_1").await.is_some(), "an unmanaged index was dropped");
    s.finish().await;
}

#[tokio::test]
async fn partial_filters_and_collations_round_trip_through_list_indexes() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "options").await;
    let spec: Vec<IndexSpec> = serde_json::from_value(serde_json::json!([
        {"collection": "users", "keys": [{"referralCode": 1}], "unique": true,
         "partialFilterExpression": {"referralCode": {"$exists": true}}},
        {"collection": "users", "keys": [{"email": 1}], "collation": {"locale": "en", "strength": 2}},
    ]))
    .unwrap();
    let first = sync_indexes(&s.client, &s.name, &spec, IndexPolicy::Ensure).await.unwrap();
    assert!(first.indexes.iter().all(|i| i.state == IndexState::Created));
    let listed = list_indexes(&s.db(), "users").await.unwrap();
    let partial = listed.iter().find(|i| i.name == "referralCode_1").unwrap();
    assert_eq!(partial.partial_filter_expression, Some(doc! {"referralCode": {"$exists": true}}));
    let second = sync_indexes(&s.client, &s.name, &spec, IndexPolicy::Ensure).await.unwrap();
    assert!(second.indexes.iter().all(|i| i.state == IndexState::Present), "{second:#?}");
    // The same keys with another filter is a conflict naming both filters.
    let mut other = spec.clone();
    other[0].partial_filter_expression = Some(serde_json::json!({"referralCode": {"$type": "string"}}));
    let third = sync_indexes(&s.client, &s.name, &other, IndexPolicy::Report).await.unwrap();
    assert_eq!(third.indexes[0].state, IndexState::Conflict);
    assert!(
        third.indexes[0].message.as_deref().unwrap().contains(
            r#"has partialFilterExpression {"referralCode":{"$exists":true}}, the spec wants {"referralCode":{"$type":"string"}}"#
        ),
        "{:?}",
        third.indexes[0].message
    );
    s.finish().await;
}

fn oid(n: u8) -> ObjectId {
    ObjectId::from_bytes([n; 12])
}

/// Users and referral records with every defect kind; the expected report is worked
/// out by hand in the comments.
async fn seed_defects(s: &Scratch) {
    let users = vec![
        doc! {"_id": oid(1), "email": "root@example.com"},    // depth 0
        doc! {"_id": oid(2), "referredBy": oid(1)},           // depth 1
        doc! {"_id": oid(3), "referredBy": oid(2)},           // depth 2
        doc! {"_id": oid(4), "referredBy": oid(3)},           // depth 3
        doc! {"_id": oid(5), "referredBy": oid(4)},           // depth 4, deeper than 3
        doc! {"_id": oid(10), "referredBy": oid(11)},         // cycle
        doc! {"_id": oid(11), "referredBy": oid(10)},         // cycle
        doc! {"_id": oid(12), "referredBy": oid(10)},         // below the cycle
        doc! {"_id": oid(13), "referredBy": oid(13)},         // self-referral
        doc! {"_id": oid(14), "referredBy": oid(99)},         // orphan, depth 1
        doc! {"_id": oid(15), "referredBy": Bson::Null},      // root
        doc! {"_id": oid(16), "referredBy": ""},              // root
        doc! {"_id": oid(17), "referredBy": [oid(1)]},        // malformed, root
        doc! {"_id": oid(18), "referredBy": true},            // malformed, root
        doc! {"_id": oid(19), "referredBy": {"id": oid(1)}},  // malformed, root
        doc! {"_id": oid(20), "referredBy": oid(1).to_hex()}, // a string is not an ObjectId: orphan, depth 1
        doc! {"_id": 42, "referredBy": oid(1)},               // depth 1
        doc! {"_id": 43_i64, "referredBy": 42.0},             // 42.0 == 42: depth 2
        doc! {"_id": true, "referredBy": oid(1)},             // malformed id: skipped
    ];
    s.db().collection::<Document>("users").insert_many(users).await.unwrap();
    let records = vec![
        doc! {"referrer": oid(4), "referred": oid(5), "tier": 1},
        doc! {"referrer": oid(3), "referred": oid(5), "tier": 2},
        doc! {"referrer": oid(2), "referred": oid(5), "tier": 3},
        doc! {"referrer": oid(1), "referred": oid(5), "tier": 4}, // tier too high
        doc! {"referrer": oid(1), "referred": oid(4), "tier": 1}, // wrong referrer
        doc! {"referrer": oid(1), "referred": oid(77), "tier": 1}, // unknown referred
        doc! {"referrer": oid(99), "referred": oid(14), "tier": 1}, // unknown referrer
        doc! {"referrer": oid(1), "referred": oid(2), "tier": "1"}, // malformed tier
        doc! {"referred": oid(2), "tier": 1},                     // missing referrer
        doc! {"referrer": oid(1), "referred": oid(2), "tier": 1.0},
        doc! {"referrer": oid(1), "referred": oid(2), "tier": 1_i64},
    ];
    s.db().collection::<Document>("referrals").insert_many(records).await.unwrap();
}

#[tokio::test]
async fn the_chain_report_of_a_seeded_dataset_names_every_defect_and_writes_nothing() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "chains").await;
    seed_defects(&s).await;
    s.take_commands();
    let outcome = check_chains(&s.client, &s.name, &ChainModel::default(), 3, 10).await.unwrap();
    let r = &outcome.report;
    assert_eq!((r.users, r.roots), (18, 6));
    assert_eq!((r.cycles, r.users_in_cycles, r.users_below_cycles, r.self_referrals), (1, 2, 1, 1));
    assert_eq!((r.orphans, r.missing_referrers, r.deeper_than_max), (2, 2, 1));
    let depths: Vec<(u32, u64)> = r.depth_distribution.iter().map(|d| (d.depth, d.users)).collect();
    assert_eq!(depths, vec![(0, 6), (1, 4), (2, 2), (3, 1), (4, 1)]);
    assert_eq!((r.records.total, r.records.tier_too_high, r.records.wrong_referrer), (11, 1, 1));
    assert_eq!((r.records.unknown_referred, r.records.unknown_referrer), (1, 1));
    assert_eq!((r.malformed.referred_by_type, r.malformed.user_id_type), (3, 1));
    assert_eq!((r.malformed.record_field_type, r.malformed.record_missing_field), (1, 1));
    assert_eq!(r.violations, 14);
    assert_eq!(outcome.documents, 19 + 11);
    assert!(r.warnings.is_empty());
    let cycle = r.examples.iter().find(|e| e.kind == FindingKind::Cycle).unwrap();
    assert_eq!(
        cycle.message,
        r#"cycle of 2 users: ObjectId("0a0a0a0a0a0a0a0a0a0a0a0a") -> ObjectId("0b0b0b0b0b0b0b0b0b0b0b0b") -> ObjectId("0a0a0a0a0a0a0a0a0a0a0a0a")"#
    );
    let malformed: Vec<&str> =
        r.examples.iter().filter(|e| e.kind == FindingKind::Malformed).map(|e| e.message.as_str()).collect();
    assert!(
        malformed
            .contains(&r#"user ObjectId("111111111111111111111111"): referredBy is an array; treated as no referrer"#),
        "{malformed:?}"
    );
    let sent = s.take_commands();
    assert!(write_commands(&sent).is_empty(), "the chain check wrote: {sent:?}");
    assert_eq!(count(&sent, "find"), 2, "{sent:?}");
    s.finish().await;
}

#[tokio::test]
async fn the_users_scan_projects_only_the_fields_it_reads() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "projection").await;
    seed_defects(&s).await;
    s.take_commands();
    check_chains(&s.client, &s.name, &ChainModel::default(), 3, 10).await.unwrap();
    let finds: Vec<Document> = s.take_full_commands().into_iter().filter(|c| c.contains_key("find")).collect();
    assert_eq!(finds[0].get_document("projection").unwrap(), &doc! {"_id": 1, "referredBy": 1});
    assert_eq!(finds[1].get_document("projection").unwrap(), &doc! {"_id": 1, "referrer": 1, "referred": 1, "tier": 1});
    s.finish().await;
}

#[tokio::test]
async fn referral_code_mode_resolves_codes_through_the_wire() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "codes").await;
    let users = vec![
        doc! {"userId": "u1", "referralCode": "ONE", "profile": {"by": Bson::Null}},
        doc! {"userId": "u2", "referralCode": "TWO", "profile": {"by": "ONE"}},
        doc! {"userId": "u3", "profile": {"by": "TWO"}},
        doc! {"userId": "u4", "referralCode": "FOUR", "profile": {"by": "NOPE"}},
    ];
    s.db().collection::<Document>("members").insert_many(users).await.unwrap();
    let model = ChainModel {
        users_collection: "members".into(),
        user_id_field: "userId".into(),
        referred_by_field: "profile.by".into(),
        referred_by_holds: ReferredByHolds::ReferralCode,
        ..ChainModel::default()
    };
    let outcome = check_chains(&s.client, &s.name, &model, 3, 10).await.unwrap();
    let r = &outcome.report;
    assert_eq!((r.users, r.orphans, r.cycles), (4, 1, 0));
    let depths: Vec<(u32, u64)> = r.depth_distribution.iter().map(|d| (d.depth, d.users)).collect();
    assert_eq!(depths, vec![(0, 1), (1, 2), (2, 1)]);
    assert_eq!(
        r.warnings,
        vec![format!("collection referrals does not exist in database {}: no referral records were checked", s.name)]
    );
    let plan = outcome.analysis.repair_plan(&model.user_id_field, &model.referred_by_field);
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].filter.to_string(), r#"{"userId":"u4","profile.by":"NOPE"}"#);
    s.finish().await;
}

#[tokio::test]
async fn the_cli_reports_plans_and_applies_a_repair_explicitly() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "cli").await;
    seed_defects(&s).await;

    let out = s.cli(&["check", "chains", "--database", &s.name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "violations exit 1: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(report["violations"], 14);
    assert_eq!(report["summary"], "14 violations");
    assert!(!stdout.contains(&uri) && !stderr.contains(&uri), "the URI leaked into the output");

    s.take_commands();
    let out = s.cli(&["check", "chains", "--database", &s.name, "--repair-plan"]);
    assert_eq!(out.status.code(), Some(1));
    let plan_text = String::from_utf8(out.stdout).unwrap();
    let plan: serde_json::Value = serde_json::from_str(&plan_text).unwrap();
    assert_eq!(plan["kind"], "ReferralChainRepairPlan");
    let filters: Vec<String> = plan["updates"].as_array().unwrap().iter().map(|u| u["filter"].to_string()).collect();
    assert_eq!(
        filters,
        vec![
            r#"{"_id":{"$oid":"0a0a0a0a0a0a0a0a0a0a0a0a"},"referredBy":{"$oid":"0b0b0b0b0b0b0b0b0b0b0b0b"}}"#,
            r#"{"_id":{"$oid":"0d0d0d0d0d0d0d0d0d0d0d0d"},"referredBy":{"$oid":"0d0d0d0d0d0d0d0d0d0d0d0d"}}"#,
            r#"{"_id":{"$oid":"0e0e0e0e0e0e0e0e0e0e0e0e"},"referredBy":{"$oid":"636363636363636363636363"}}"#,
            r#"{"_id":{"$oid":"141414141414141414141414"},"referredBy":"010101010101010101010101"}"#,
        ]
    );
    assert!(write_commands(&s.take_commands()).is_empty(), "--repair-plan wrote to the database");

    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("plan.json");
    std::fs::write(&plan_file, &plan_text).unwrap();
    let plan_path = plan_file.to_str().unwrap();
    let out = s.cli(&["check", "apply-repair", "--plan", plan_path]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((applied["applied"].as_u64(), applied["skipped"].as_u64()), (Some(4), Some(0)));
    let users = s.db().collection::<Document>("users");
    let cut = users.find_one(doc! {"_id": oid(10)}).await.unwrap().unwrap();
    assert!(!cut.contains_key("referredBy"), "the cycle was not cut at its smallest id");
    let kept = users.find_one(doc! {"_id": oid(11)}).await.unwrap().unwrap();
    assert_eq!(kept.get("referredBy"), Some(&Bson::ObjectId(oid(10))), "a second cut was made");

    let out = s.cli(&["check", "chains", "--database", &s.name]);
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (after["cycles"].as_u64(), after["selfReferrals"].as_u64(), after["orphans"].as_u64()),
        (Some(0), Some(0), Some(0))
    );

    // The same plan again: every document changed since, so nothing applies.
    let out = s.cli(&["check", "apply-repair", "--plan", plan_path]);
    assert_eq!(out.status.code(), Some(1));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((again["applied"].as_u64(), again["skipped"].as_u64()), (Some(0), Some(4)));

    // An edited plan is refused before anything is sent.
    let edited = plan_text.replace(r#""$unset""#, r#""$set""#);
    std::fs::write(&plan_file, edited).unwrap();
    s.take_commands();
    let out = s.cli(&["check", "apply-repair", "--plan", plan_path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was applied"));
    assert!(s.take_commands().is_empty());
    s.finish().await;
}

#[tokio::test]
async fn the_cli_checks_indexes_with_report_unless_told_to_ensure() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "cli_indexes").await;
    let out = s.cli(&["check", "indexes", "--database", &s.name]);
    assert_eq!(out.status.code(), Some(1), "missing indexes exit 1");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["policy"], "Report");
    assert_eq!(report["summary"], "0/6 (6 missing)");
    assert!(write_commands(&s.take_commands()).is_empty());
    let out = s.cli(&["check", "indexes", "--database", &s.name, "--policy", "ensure"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = s.cli(&["check", "indexes", "--database", &s.name]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"], "6/6");
    assert_eq!(report["writes"], 0);
    s.finish().await;
}

#[tokio::test]
async fn an_empty_database_is_ok_with_warnings() {
    let Some(uri) = mongo_uri() else { return };
    let s = Scratch::new(&uri, "empty").await;
    let outcome = check_chains(&s.client, &s.name, &ChainModel::default(), 3, 10).await.unwrap();
    assert_eq!((outcome.report.users, outcome.report.violations), (0, 0));
    assert_eq!(outcome.report.warnings.len(), 2, "{:?}", outcome.report.warnings);
    assert!(outcome.report.warnings[0].starts_with("collection users does not exist in database it_empty_"));
    let out = s.cli(&["check", "chains", "--database", &s.name]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"], "OK (no users)");
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: collection users does not exist"));

    // A users collection that exists but is empty.
    s.db().create_collection("users").await.unwrap();
    let outcome = check_chains(&s.client, &s.name, &ChainModel::default(), 3, 10).await.unwrap();
    assert!(outcome.report.warnings.contains(&"collection users holds no users".to_string()));
    s.finish().await;
}

#[tokio::test]
async fn wrong_credentials_are_an_authentication_failure() {
    let Some(uri) = mongo_uri() else { return };
    // The test server has no authentication at all, so the SCRAM handshake fails: the
    // same error kind the driver raises for a wrong password against MongoDB.
    let with_credentials = uri.replacen("mongodb://", "mongodb://checker:wrong-password@", 1);
    let client = client_from_uri("test", &with_credentials, Duration::from_secs(5), "it", None).await.unwrap();
    let error = check_chains(&client, "it_auth", &ChainModel::default(), 3, 10).await.unwrap_err();
    assert!(matches!(error, ChainSourceError::AuthenticationFailed { .. }), "{error:?}");
    assert_eq!(error.reason(), "AuthenticationFailed");
    assert!(!error.to_string().contains("wrong-password"), "{error}");
    let error = sync_indexes(&client, "it_auth", &default_indexes(), IndexPolicy::Report).await.unwrap_err();
    assert!(matches!(error, IndexSyncError::AuthenticationFailed { .. }), "{error:?}");
}

/// Needs no server: a port nobody listens on.
#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_and_exit_code_2() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let uri = format!("mongodb://127.0.0.1:{port}");
    let client = client_from_uri("test", &uri, Duration::from_secs(1), "it", None).await.unwrap();
    let error = check_chains(&client, "any", &ChainModel::default(), 3, 10).await.unwrap_err();
    assert!(matches!(error, ChainSourceError::Unreachable { .. }), "{error:?}");
    assert!(error.to_string().starts_with("MongoDB is not reachable (listCollections on any)"), "{error}");
    let error = sync_indexes(&client, "any", &default_indexes(), IndexPolicy::Ensure).await.unwrap_err();
    assert!(matches!(error, IndexSyncError::Unreachable { .. }), "{error:?}");
    assert_eq!(error.reason(), "MongoUnreachable");

    let out = Command::new(BINARY)
        .args(["check", "chains", "--database", "any", "--timeout", "1"])
        .env("MONGODB_URI", &uri)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: MongoDB is not reachable"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out =
        Command::new(BINARY).args(["check", "chains", "--database", "any"]).env_remove("MONGODB_URI").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("environment variable MONGODB_URI is not set"));
}
