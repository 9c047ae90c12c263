//! Tests of the chain engine: hand-made graphs with known answers, and property tests
//! against a reference implementation written the obvious way (hash maps of owned
//! keys, a per-user walk with a visited set) on random graphs.

use std::collections::{HashMap, HashSet};

use mongodb::bson::Bson;
use proptest::prelude::*;

use super::*;
use crate::crd::mongodb::ReferredByHolds;

/// A test document field, owned.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Absent,
    Key(UserKey),
    Wrong(&'static str),
}

impl Value {
    fn field(&self) -> FieldValue<'_> {
        match self {
            Value::Absent => FieldValue::Absent,
            Value::Key(k) => FieldValue::Key(k.as_ref()),
            Value::Wrong(name) => FieldValue::WrongType(name),
        }
    }
}

#[derive(Debug, Clone)]
struct User {
    id: Value,
    referred_by: Value,
    code: Value,
}

#[derive(Debug, Clone)]
struct Record {
    referrer: Value,
    referred: Value,
    tier: Value,
}

fn int(n: i64) -> Value {
    Value::Key(UserKey::Int(n))
}

fn s(text: &str) -> Value {
    Value::Key(UserKey::Str(text.into()))
}

fn user(id: Value, referred_by: Value) -> User {
    User { id, referred_by, code: Value::Absent }
}

fn run(users: &[User], records: &[Record], options: ChainOptions) -> ChainAnalysis {
    run_pipelined(users, records, options, LEAD, BATCH)
}

fn run_pipelined(
    users: &[User],
    records: &[Record],
    options: ChainOptions,
    lead: usize,
    batch: usize,
) -> ChainAnalysis {
    let mut builder = ChainBuilder::new(options, 0).with_pipeline(lead, batch);
    for u in users {
        builder.add_user(u.id.field(), u.referred_by.field(), u.code.field()).unwrap();
    }
    let mut analysis = builder.finish().unwrap();
    for (i, r) in records.iter().enumerate() {
        let id = UserKey::Int(1000 + i as i64);
        analysis.add_record(FieldValue::Key(id.as_ref()), r.referrer.field(), r.referred.field(), r.tier.field());
    }
    analysis
}

fn options(max_depth: u8) -> ChainOptions {
    ChainOptions { max_depth, holds: ReferredByHolds::UserId, examples_per_kind: 10 }
}

fn class_of(analysis: &ChainAnalysis, key: &UserKey) -> UserClass {
    analysis.class(analysis.ids.get(key.as_ref()).expect("a known user"))
}

#[test]
fn a_sound_tree_has_depths_and_no_violations() {
    // 1 <- 2 <- 3 <- 4, 1 <- 5; given child before parent to exercise forward references.
    let users = vec![
        user(int(4), int(3)),
        user(int(3), int(2)),
        user(int(2), int(1)),
        user(int(5), int(1)),
        user(int(1), Value::Absent),
    ];
    let records = vec![
        Record { referrer: int(3), referred: int(4), tier: int(1) },
        Record { referrer: int(2), referred: int(4), tier: int(2) },
        Record { referrer: int(1), referred: int(4), tier: int(3) },
    ];
    let mut analysis = run(&users, &records, options(3));
    let report = analysis.report();
    assert_eq!(report.violations, 0, "{report:#?}");
    assert_eq!(report.summary(), "OK");
    assert_eq!((report.users, report.roots, report.deeper_than_max), (5, 1, 0));
    assert_eq!(
        report.depth_distribution,
        vec![
            DepthCount { depth: 0, users: 1 },
            DepthCount { depth: 1, users: 2 },
            DepthCount { depth: 2, users: 1 },
            DepthCount { depth: 3, users: 1 }
        ]
    );
    assert_eq!(report.records.total, 3);
    assert!(analysis.repair_plan("_id", "referredBy").is_empty());
}

#[test]
fn every_defect_kind_is_found_with_examples() {
    let users = vec![
        user(s("a"), s("c")), // cycle a -> c -> b -> a
        user(s("b"), s("a")),
        user(s("c"), s("b")),
        user(s("d"), s("a")), // below the cycle
        user(s("self"), s("self")),
        user(s("orphan"), s("ghost")),
        user(s("orphan2"), s("ghost")),
        user(s("under-orphan"), s("orphan")),
        user(s("root"), Value::Absent),
        user(s("arr"), Value::Wrong("an array")),
        user(Value::Absent, s("root")),
        user(Value::Wrong("a boolean"), s("root")),
        user(s("root"), Value::Absent), // duplicate
    ];
    let records = vec![
        Record { referrer: s("root"), referred: s("under-orphan"), tier: int(9) }, // too high
        Record { referrer: s("root"), referred: s("under-orphan"), tier: int(1) }, // wrong: chain says orphan
        Record { referrer: s("ghost"), referred: s("under-orphan"), tier: int(2) }, // agrees, but ghost is no user
        Record { referrer: s("root"), referred: s("nobody"), tier: int(1) },       // unknown referred
        Record { referrer: s("root"), referred: s("root"), tier: int(1) },         // chain too short
        Record { referrer: Value::Absent, referred: s("root"), tier: int(1) },     // missing field
        Record { referrer: s("root"), referred: s("orphan"), tier: s("1") },       // tier type
        Record { referrer: s("root"), referred: s("orphan"), tier: int(0) },       // tier below 1
    ];
    let mut analysis = run(&users, &records, options(3));
    let r = analysis.report();
    assert_eq!((r.cycles, r.users_in_cycles, r.users_below_cycles), (1, 3, 1));
    assert_eq!(r.self_referrals, 1);
    assert_eq!((r.orphans, r.missing_referrers), (2, 1));
    assert_eq!(
        r.records,
        RecordCounts { total: 8, tier_too_high: 1, wrong_referrer: 2, unknown_referred: 1, unknown_referrer: 1 }
    );
    assert_eq!(
        r.malformed,
        MalformedCounts {
            user_without_id: 1,
            user_id_type: 1,
            referred_by_type: 1,
            duplicate_user_id: 1,
            record_missing_field: 1,
            record_field_type: 2,
            ..MalformedCounts::default()
        }
    );
    assert_eq!(r.violations, 1 + 1 + 2 + 1 + 4 + 7);
    assert_eq!(r.summary(), "16 violations");
    assert_eq!(class_of(&analysis, &UserKey::Str("under-orphan".into())), UserClass::Depth(2));
    assert_eq!(class_of(&analysis, &UserKey::Str("self".into())), UserClass::SelfReferral);
    let cycle = r.examples.iter().find(|e| e.kind == FindingKind::Cycle).unwrap();
    assert_eq!(cycle.message, r#"cycle of 3 users: "a" -> "c" -> "b" -> "a""#);
    assert_eq!(cycle.users, vec!["\"a\"", "\"c\"", "\"b\""]);
    let orphan = r.examples.iter().find(|e| e.kind == FindingKind::Orphan).unwrap();
    assert_eq!(orphan.message, r#"user "orphan" has referredBy "ghost", which names no user"#);
    for kind in FindingKind::ALL {
        assert!(r.examples.iter().any(|e| e.kind == kind), "no example of {kind:?}: {:#?}", r.examples);
    }
}

#[test]
fn the_repair_plan_cuts_each_cycle_at_its_smallest_id_and_clears_orphans() {
    let users = vec![
        user(s("b"), s("a")),
        user(s("a"), s("c")),
        user(s("c"), s("b")),
        user(s("me"), s("me")),
        user(s("lost"), int(77)),
    ];
    let plan = run(&users, &[], options(3)).repair_plan("_id", "referredBy");
    let entries: Vec<(RepairReason, String, String)> =
        plan.iter().map(|u| (u.reason, u.filter.to_string(), u.update.to_string())).collect();
    let unset = r#"{"$unset":{"referredBy":""}}"#.to_string();
    assert_eq!(
        entries,
        vec![
            (RepairReason::Cycle, r#"{"_id":"a","referredBy":"c"}"#.into(), unset.clone()),
            (RepairReason::SelfReferral, r#"{"_id":"me","referredBy":"me"}"#.into(), unset.clone()),
            (RepairReason::Orphan, r#"{"_id":"lost","referredBy":77}"#.into(), unset),
        ]
    );
}

#[test]
fn object_ids_appear_as_extended_json_in_the_plan() {
    let a = UserKey::ObjectId([1; 12]);
    let users = vec![user(Value::Key(a.clone()), Value::Key(UserKey::ObjectId([2; 12])))];
    let plan = run(&users, &[], options(3)).repair_plan("_id", "referredBy");
    assert_eq!(
        plan[0].filter.to_string(),
        r#"{"_id":{"$oid":"010101010101010101010101"},"referredBy":{"$oid":"020202020202020202020202"}}"#
    );
    // The plan parses back into the same BSON values.
    let filter = Bson::try_from(plan[0].filter.clone()).unwrap();
    assert_eq!(filter.as_document().unwrap().get("_id"), Some(&a.to_bson()));
}

#[test]
fn referral_code_mode_resolves_codes_and_never_confuses_codes_with_ids() {
    let users = vec![
        User { id: int(1), referred_by: Value::Absent, code: s("ONE") },
        User { id: int(2), referred_by: s("ONE"), code: s("TWO") },
        User { id: int(3), referred_by: s("TWO"), code: Value::Absent },
        // Names a code nobody owns, that equals a user id as a string: still an orphan.
        User { id: s("x"), referred_by: s("NOPE"), code: s("X") },
        User { id: int(4), referred_by: s("FOUR"), code: s("FOUR") }, // self-referral
        User { id: int(5), referred_by: Value::Absent, code: s("ONE") }, // duplicate code
        User { id: int(6), referred_by: Value::Absent, code: Value::Wrong("an array") },
    ];
    let records = vec![
        Record { referrer: int(1), referred: int(3), tier: int(2) },
        Record { referrer: s("NOPE"), referred: s("x"), tier: int(1) }, // ids, not codes
    ];
    let mut opts = options(3);
    opts.holds = ReferredByHolds::ReferralCode;
    let mut analysis = run(&users, &records, opts);
    let r = analysis.report();
    assert_eq!(class_of(&analysis, &UserKey::Int(3)), UserClass::Depth(2));
    assert_eq!((r.orphans, r.self_referrals), (1, 1));
    assert_eq!((r.malformed.duplicate_referral_code, r.malformed.referral_code_type), (1, 1));
    assert_eq!(r.records.wrong_referrer, 1);
    assert_eq!(r.records.unknown_referrer, 0);
    let plan = analysis.repair_plan("_id", "referredBy");
    let filters: Vec<String> = plan.iter().map(|u| u.filter.to_string()).collect();
    assert_eq!(filters, vec![r#"{"_id":4,"referredBy":"FOUR"}"#, r#"{"_id":"x","referredBy":"NOPE"}"#]);
}

#[test]
fn a_long_chain_and_a_long_cycle_need_no_recursion() {
    let n = 200_000i64;
    let mut users: Vec<User> = (1..n).map(|i| user(int(i), int(i - 1))).collect();
    users.push(user(int(0), Value::Absent));
    // A second component: one cycle of 100000 users.
    users.extend((0..100_000i64).map(|i| user(int(n + i), int(n + (i + 1) % 100_000))));
    let r = run(&users, &[], options(3)).report();
    assert_eq!((r.cycles, r.users_in_cycles), (1, 100_000));
    let deepest = r.depth_distribution.last().unwrap();
    assert_eq!(*deepest, DepthCount { depth: u32::from(DEPTH_CAP), users: (n - i64::from(DEPTH_CAP)) as u64 });
    let cycle = r.examples.iter().find(|e| e.kind == FindingKind::Cycle).unwrap();
    assert!(cycle.message.starts_with(&format!("cycle of 100000 users: {n} -> ")), "{}", cycle.message);
    assert!(cycle.message.ends_with(" -> …"));
}

#[test]
fn an_empty_database_is_ok_with_no_users() {
    let r = run(&[], &[], options(3)).report();
    assert_eq!((r.users, r.violations), (0, 0));
    assert_eq!(r.summary(), "OK (no users)");
}

#[test]
fn examples_are_capped_per_kind() {
    let users: Vec<User> = (0..100).map(|i| user(int(i), int(10_000 + i))).collect();
    let mut opts = options(3);
    opts.examples_per_kind = 4;
    let r = run(&users, &[], opts).report();
    assert_eq!(r.orphans, 100);
    assert_eq!(r.examples.len(), 4);
}

// ---------------------------------------------------------------- reference ---

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    User(usize),
    Missing(usize),
}

/// What the reference implementation finds; compared field by field.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    users: u64,
    roots: u64,
    cycles: u64,
    in_cycles: u64,
    below: u64,
    self_refs: u64,
    orphans: u64,
    missing: u64,
    deeper: u64,
    depths: Vec<DepthCount>,
    records: RecordCounts,
    malformed: MalformedCounts,
    classes: HashMap<UserKey, UserClass>,
}

fn reference(users: &[User], records: &[Record], opts: ChainOptions) -> Expected {
    let mut e = Expected::default();
    let code_mode = opts.holds == ReferredByHolds::ReferralCode;
    let mut ids: Vec<UserKey> = Vec::new();
    let mut refs: Vec<Option<UserKey>> = Vec::new();
    let mut index: HashMap<UserKey, usize> = HashMap::new();
    let mut code_owner: HashMap<UserKey, usize> = HashMap::new();
    for u in users {
        let id = match &u.id {
            Value::Key(k) => k.clone(),
            Value::Absent => {
                e.malformed.user_without_id += 1;
                continue;
            }
            Value::Wrong(_) => {
                e.malformed.user_id_type += 1;
                continue;
            }
        };
        if index.contains_key(&id) {
            e.malformed.duplicate_user_id += 1;
            continue;
        }
        let me = ids.len();
        index.insert(id.clone(), me);
        ids.push(id);
        refs.push(match &u.referred_by {
            Value::Key(k) => Some(k.clone()),
            Value::Absent => None,
            Value::Wrong(_) => {
                e.malformed.referred_by_type += 1;
                None
            }
        });
        if code_mode {
            match &u.code {
                Value::Key(c) => {
                    if code_owner.contains_key(c) {
                        e.malformed.duplicate_referral_code += 1;
                    } else {
                        code_owner.insert(c.clone(), me);
                    }
                }
                Value::Wrong(_) => e.malformed.referral_code_type += 1,
                Value::Absent => {}
            }
        }
    }
    let mut missing_keys: Vec<UserKey> = Vec::new();
    let parent: Vec<Option<Node>> = refs
        .iter()
        .map(|r| {
            let r = r.as_ref()?;
            let found = if code_mode { code_owner.get(r) } else { index.get(r) };
            Some(match found {
                Some(&j) => Node::User(j),
                None => {
                    let m = missing_keys.iter().position(|k| k == r).unwrap_or_else(|| {
                        missing_keys.push(r.clone());
                        missing_keys.len() - 1
                    });
                    Node::Missing(m)
                }
            })
        })
        .collect();
    e.users = ids.len() as u64;
    let mut histogram: HashMap<u32, u64> = HashMap::new();
    let mut cycle_members: HashSet<usize> = HashSet::new();
    let mut missing_named = HashSet::new();
    for u in 0..ids.len() {
        match parent[u] {
            None => e.roots += 1,
            Some(Node::Missing(m)) => {
                e.orphans += 1;
                missing_named.insert(m);
            }
            Some(Node::User(_)) => {}
        }
        // Walk up with a visited set.
        let mut seen = HashSet::new();
        let mut v = u;
        let mut depth = 0u64;
        let class = loop {
            if !seen.insert(v) {
                break if v == u {
                    if parent[u] == Some(Node::User(u)) { UserClass::SelfReferral } else { UserClass::InCycle }
                } else {
                    UserClass::BelowCycle
                };
            }
            match parent[v] {
                None => break UserClass::Depth(depth.min(250) as u8),
                Some(Node::Missing(_)) => break UserClass::Depth((depth + 1).min(250) as u8),
                Some(Node::User(p)) => {
                    v = p;
                    depth += 1;
                }
            }
        };
        match class {
            UserClass::Depth(d) => {
                *histogram.entry(u32::from(d)).or_default() += 1;
                if d > opts.max_depth {
                    e.deeper += 1;
                }
            }
            UserClass::InCycle => {
                e.in_cycles += 1;
                cycle_members.insert(u);
            }
            UserClass::SelfReferral => e.self_refs += 1,
            UserClass::BelowCycle => e.below += 1,
        }
        e.classes.insert(ids[u].clone(), class);
    }
    e.missing = missing_named.len() as u64;
    // Count cycles: components of cycle members, each found by following parents.
    let mut counted = HashSet::new();
    for &m in &cycle_members {
        if counted.contains(&m) {
            continue;
        }
        e.cycles += 1;
        let mut x = m;
        loop {
            counted.insert(x);
            let Some(Node::User(p)) = parent[x] else { unreachable!() };
            x = p;
            if x == m {
                break;
            }
        }
    }
    let mut depths: Vec<DepthCount> = histogram.into_iter().map(|(depth, users)| DepthCount { depth, users }).collect();
    depths.sort_by_key(|d| d.depth);
    e.depths = depths;
    for r in records {
        e.records.total += 1;
        let (referrer, referred, tier) = match (&r.referrer, &r.referred, &r.tier) {
            (Value::Key(a), Value::Key(b), Value::Key(UserKey::Int(t))) if *t >= 1 => (a, b, *t),
            (Value::Absent, _, _) | (_, Value::Absent, _) | (_, _, Value::Absent) => {
                e.malformed.record_missing_field += 1;
                continue;
            }
            _ => {
                e.malformed.record_field_type += 1;
                continue;
            }
        };
        let Some(&start) = index.get(referred) else {
            e.records.unknown_referred += 1;
            continue;
        };
        if tier > i64::from(opts.max_depth) {
            e.records.tier_too_high += 1;
            continue;
        }
        let mut at = Node::User(start);
        let mut reached = 0;
        while reached < tier {
            match at {
                Node::User(u) => match parent[u] {
                    Some(p) => {
                        at = p;
                        reached += 1;
                    }
                    None => break,
                },
                Node::Missing(_) => break,
            }
        }
        let agrees = reached == tier
            && match at {
                Node::User(u) => ids[u] == *referrer,
                Node::Missing(m) => !code_mode && missing_keys[m] == *referrer,
            };
        match (agrees, at) {
            (true, Node::User(_)) => {}
            (true, Node::Missing(_)) => e.records.unknown_referrer += 1,
            (false, _) => e.records.wrong_referrer += 1,
        }
    }
    e
}

fn observed(analysis: &mut ChainAnalysis, users: &[User]) -> Expected {
    let r = analysis.report();
    let mut classes = HashMap::new();
    for u in users {
        if let Value::Key(k) = &u.id {
            classes.insert(k.clone(), class_of(analysis, k));
        }
    }
    Expected {
        users: r.users,
        roots: r.roots,
        cycles: r.cycles,
        in_cycles: r.users_in_cycles,
        below: r.users_below_cycles,
        self_refs: r.self_referrals,
        orphans: r.orphans,
        missing: r.missing_referrers,
        deeper: r.deeper_than_max,
        depths: r.depth_distribution,
        records: r.records,
        malformed: r.malformed,
        classes,
    }
}

/// Applies a repair plan to in-memory documents the way MongoDB would: an update
/// applies when its filter matches the id and the current referredBy.
fn apply_plan(users: &mut [User], plan: &[RepairUpdate]) -> usize {
    let mut applied = 0;
    for update in plan {
        let filter = Bson::try_from(update.filter.clone()).unwrap();
        let filter = filter.as_document().unwrap();
        let want_id = key_of(filter.get("_id").unwrap());
        let want_ref = key_of(filter.get("referredBy").unwrap());
        if let Some(u) = users
            .iter_mut()
            .find(|u| u.id == Value::Key(want_id.clone()) && u.referred_by == Value::Key(want_ref.clone()))
        {
            u.referred_by = Value::Absent;
            applied += 1;
        }
    }
    applied
}

fn key_of(value: &Bson) -> UserKey {
    match value {
        Bson::ObjectId(o) => UserKey::ObjectId(o.bytes()),
        Bson::Int32(n) => UserKey::Int(i64::from(*n)),
        Bson::Int64(n) => UserKey::Int(*n),
        Bson::String(s) => UserKey::Str(s.clone()),
        other => panic!("unexpected key {other:?}"),
    }
}

fn key_strategy() -> impl Strategy<Value = UserKey> {
    prop_oneof![
        4 => (0i64..24).prop_map(UserKey::Int),
        2 => (0u8..6).prop_map(|n| UserKey::Str(format!("u{n}"))),
        1 => (0u8..3).prop_map(|n| UserKey::Str(format!("a-user-id-longer-than-twelve-bytes-{n}"))),
        1 => (0u8..4).prop_map(|n| UserKey::ObjectId([n; 12])),
    ]
}

fn value_strategy(key: BoxedStrategy<UserKey>) -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(Value::Absent),
        1 => Just(Value::Wrong("an array")),
        10 => key.prop_map(Value::Key),
    ]
}

fn code_strategy() -> BoxedStrategy<UserKey> {
    (0u8..14).prop_map(|n| UserKey::Str(format!("C{n}"))).boxed()
}

fn users_strategy(code_mode: bool) -> impl Strategy<Value = Vec<User>> {
    let reference = if code_mode { code_strategy() } else { key_strategy().boxed() };
    let user = (
        prop_oneof![20 => key_strategy().prop_map(Value::Key), 1 => Just(Value::Absent), 1 => Just(Value::Wrong("a boolean"))],
        value_strategy(reference),
        value_strategy(code_strategy()),
    )
        .prop_map(|(id, referred_by, code)| User { id, referred_by, code });
    proptest::collection::vec(user, 0..40)
}

fn records_strategy() -> impl Strategy<Value = Vec<Record>> {
    let tier = prop_oneof![
        10 => (-1i64..7).prop_map(|t| Value::Key(UserKey::Int(t))),
        1 => Just(Value::Absent),
        1 => Just(Value::Key(UserKey::Str("2".into()))),
    ];
    let record = (value_strategy(key_strategy().boxed()), value_strategy(key_strategy().boxed()), tier)
        .prop_map(|(referrer, referred, tier)| Record { referrer, referred, tier });
    proptest::collection::vec(record, 0..30)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_engine_agrees_with_the_reference_in_id_mode(
        users in users_strategy(false),
        records in records_strategy(),
        max_depth in 1u8..5,
    ) {
        let opts = options(max_depth);
        let mut analysis = run(&users, &records, opts);
        prop_assert_eq!(observed(&mut analysis, &users), reference(&users, &records, opts));
    }

    #[test]
    fn the_engine_agrees_with_the_reference_in_code_mode(
        users in users_strategy(true),
        records in records_strategy(),
        max_depth in 1u8..5,
    ) {
        let opts = ChainOptions { max_depth, holds: ReferredByHolds::ReferralCode, examples_per_kind: 3 };
        let mut analysis = run(&users, &records, opts);
        prop_assert_eq!(observed(&mut analysis, &users), reference(&users, &records, opts));
    }

    #[test]
    fn pipeline_depth_and_batch_size_change_nothing_not_even_the_examples(
        users in users_strategy(false),
        records in records_strategy(),
        code_mode in any::<bool>(),
        short in (1usize..4, 2usize..9),
        long in (4usize..25, 9usize..40),
    ) {
        // Examples are capped per kind, so their choice shows any change of order.
        let holds = if code_mode { ReferredByHolds::ReferralCode } else { ReferredByHolds::UserId };
        let opts = ChainOptions { max_depth: 3, holds, examples_per_kind: 2 };
        let mut one_at_a_time = run_pipelined(&users, &records, opts, 0, 1);
        let expected = (one_at_a_time.report(), one_at_a_time.repair_plan("_id", "referredBy"));
        for (lead, batch) in [short, long] {
            let mut pipelined = run_pipelined(&users, &records, opts, lead, batch);
            let got = (pipelined.report(), pipelined.repair_plan("_id", "referredBy"));
            prop_assert_eq!(&got, &expected, "lead {}, batch {}", lead, batch);
        }
    }

    #[test]
    fn the_naive_walk_classifies_like_the_engine(users in users_strategy(false)) {
        let analysis = run(&users, &[], options(3));
        for node in 0..analysis.nodes() as u32 {
            prop_assert_eq!(naive_class(analysis.parents(), node), analysis.class(node));
        }
    }

    #[test]
    fn applying_the_repair_plan_leaves_no_cycle_and_no_orphan(mut users in users_strategy(false)) {
        let opts = options(3);
        let mut analysis = run(&users, &[], opts);
        let report = analysis.report();
        let plan = analysis.repair_plan("_id", "referredBy");
        prop_assert_eq!(plan.len() as u64, report.cycles + report.self_referrals + report.orphans);
        let applied = apply_plan(&mut users, &plan);
        prop_assert_eq!(applied, plan.len());
        let after = reference(&users, &[], opts);
        prop_assert_eq!((after.cycles, after.self_refs, after.orphans, after.below), (0, 0, 0, 0));
        // Applying the same plan again changes nothing, as every filter names the old
        // value; unless two documents share an id (reported as malformed), where the
        // second copy matches too, as it would with MongoDB's updateOne.
        let mut ids = HashSet::new();
        let unique = users.iter().all(|u| !matches!(&u.id, Value::Key(k) if !ids.insert(k.clone())));
        if unique {
            prop_assert_eq!(apply_plan(&mut users, &plan), 0);
        }
    }
}
