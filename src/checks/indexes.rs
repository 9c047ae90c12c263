//! The index diff: the indexes a ReferralSystem declares against the documents
//! `listIndexes` returns for one collection, compared the way MongoDB compares them.
//!
//! Pure: no I/O, no Kubernetes. [`super::index_sync`] does the talking to MongoDB and
//! decides what to create; this module only says, per declared index, whether the
//! database has it (`Present`), lacks it (`Missing`) or holds something else under its
//! name or key pattern (`Conflict`, with a message naming every differing option), and
//! lists the indexes nobody declared. It never proposes dropping an index.
//!
//! MongoDB's rules it follows: the key pattern is ordered (`{a: 1, b: 1}` is not
//! `{b: 1, a: 1}`); numbers compare by value (`1`, `1.0` and `NumberLong(1)` are equal);
//! an absent `unique`/`sparse` is `false`; the `_id_` index is never reported; an index
//! matches a declaration by name or, failing that, by key pattern; and two indexes with
//! the same key pattern may coexist when their collations differ (so such an index is
//! not a conflict, the declared one is simply missing).

use std::fmt::Write as _;

use mongodb::bson::{Bson, Document, doc};
use serde::Serialize;

use crate::crd::IndexSpec;

/// Name of the index MongoDB keeps on `_id`; never managed, never listed as extra.
pub const ID_INDEX: &str = "_id_";

/// Why a declared index cannot be turned into a MongoDB index document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexSpecError {
    #[error("index {name} on {collection} has no key fields")]
    NoKeys { collection: String, name: String },
    #[error("index {name} on {collection}: {option} must be a JSON object")]
    NotAnObject { collection: String, name: String, option: &'static str },
}

/// Why a `listIndexes` entry could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExistingIndexError {
    #[error("an index on {collection} has no name")]
    NoName { collection: String },
    #[error("index {name} on {collection} has no key document")]
    NoKey { collection: String, name: String },
}

/// One declared index, ready to compare and to send in `createIndexes`.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredIndex {
    pub collection: String,
    pub name: String,
    /// Whether the spec named the index itself (rather than taking MongoDB's default).
    pub explicit_name: bool,
    pub keys: Vec<(String, i32)>,
    pub unique: bool,
    pub sparse: bool,
    pub partial_filter_expression: Option<Document>,
    pub collation: Option<Document>,
    pub allow_rebuild: bool,
}

impl DesiredIndex {
    pub fn from_spec(spec: &IndexSpec) -> Result<DesiredIndex, IndexSpecError> {
        let name = spec.effective_name();
        let keys: Vec<(String, i32)> =
            spec.keys.iter().flat_map(|k| k.iter().map(|(field, dir)| (field.clone(), *dir))).collect();
        if keys.is_empty() {
            return Err(IndexSpecError::NoKeys { collection: spec.collection.clone(), name });
        }
        let object = |value: &Option<serde_json::Value>, option: &'static str| match value {
            None => Ok(None),
            Some(v) => match Bson::try_from(v.clone()) {
                Ok(Bson::Document(d)) => Ok(Some(d)),
                _ => {
                    Err(IndexSpecError::NotAnObject { collection: spec.collection.clone(), name: name.clone(), option })
                }
            },
        };
        Ok(DesiredIndex {
            collection: spec.collection.clone(),
            explicit_name: spec.name.is_some(),
            partial_filter_expression: object(&spec.partial_filter_expression, "partialFilterExpression")?,
            collation: object(&spec.collation, "collation")?,
            keys,
            unique: spec.unique,
            sparse: spec.sparse,
            allow_rebuild: spec.allow_rebuild,
            name,
        })
    }

    /// The entry of the `indexes` array of a `createIndexes` command.
    pub fn to_create_document(&self) -> Document {
        let mut key = Document::new();
        for (field, dir) in &self.keys {
            key.insert(field.clone(), *dir);
        }
        let mut index = doc! {"key": key, "name": self.name.clone()};
        if self.unique {
            index.insert("unique", true);
        }
        if self.sparse {
            index.insert("sparse", true);
        }
        if let Some(filter) = &self.partial_filter_expression {
            index.insert("partialFilterExpression", filter.clone());
        }
        if let Some(collation) = &self.collation {
            index.insert("collation", collation.clone());
        }
        index
    }
}

/// One entry of `listIndexes`, with the options this operator compares.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingIndex {
    pub name: String,
    /// The key pattern in order; values as stored (numbers, or strings such as `"text"`).
    pub keys: Vec<(String, Bson)>,
    pub unique: bool,
    pub sparse: bool,
    pub partial_filter_expression: Option<Document>,
    pub collation: Option<Document>,
    /// A TTL index deletes documents: a difference that matters.
    pub expire_after_seconds: Option<Bson>,
    /// A hidden index is kept up to date but not used by queries.
    pub hidden: bool,
}

impl ExistingIndex {
    pub fn from_document(collection: &str, index: &Document) -> Result<ExistingIndex, ExistingIndexError> {
        let name = match index.get("name") {
            Some(Bson::String(name)) => name.clone(),
            _ => return Err(ExistingIndexError::NoName { collection: collection.into() }),
        };
        let keys = match index.get("key") {
            Some(Bson::Document(key)) if !key.is_empty() => key.iter().map(|(f, v)| (f.clone(), v.clone())).collect(),
            _ => return Err(ExistingIndexError::NoKey { collection: collection.into(), name }),
        };
        let document = |field: &str| match index.get(field) {
            Some(Bson::Document(d)) => Some(d.clone()),
            _ => None,
        };
        Ok(ExistingIndex {
            keys,
            unique: truthy(index.get("unique")),
            sparse: truthy(index.get("sparse")),
            partial_filter_expression: document("partialFilterExpression"),
            collation: document("collation"),
            expire_after_seconds: index.get("expireAfterSeconds").filter(|v| !matches!(v, Bson::Null)).cloned(),
            hidden: truthy(index.get("hidden")),
            name,
        })
    }
}

/// MongoDB accepts `true` and non-zero numbers for boolean index options.
fn truthy(value: Option<&Bson>) -> bool {
    match value {
        Some(Bson::Boolean(b)) => *b,
        Some(other) => number(other).is_some_and(|n| n != 0.0),
        None => false,
    }
}

fn number(value: &Bson) -> Option<f64> {
    match value {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(n) => Some(*n),
        _ => None,
    }
}

/// Equality of BSON values as MongoDB compares them in index specs: numbers by value,
/// documents field by field in order, arrays element by element.
pub fn bson_equal(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => as_i64(a) == as_i64(b),
        _ if number(a).is_some() && number(b).is_some() => number(a) == number(b),
        (Bson::Document(x), Bson::Document(y)) => documents_equal(x, y),
        (Bson::Array(x), Bson::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| bson_equal(p, q)),
        _ => a == b,
    }
}

fn as_i64(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

/// Field-by-field, ordered, numbers by value.
pub fn documents_equal(a: &Document, b: &Document) -> bool {
    a.len() == b.len() && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| ka == kb && bson_equal(va, vb))
}

fn keys_equal(desired: &[(String, i32)], existing: &[(String, Bson)]) -> bool {
    desired.len() == existing.len()
        && desired.iter().zip(existing).all(|((df, dv), (ef, ev))| df == ef && bson_equal(&Bson::Int32(*dv), ev))
}

fn is_simple_collation(collation: &Document) -> bool {
    matches!(collation.get("locale"), Some(Bson::String(l)) if l == "simple")
}

/// Whether the existing collation satisfies the declared one. `listIndexes` returns
/// the collation with every default filled in (and a `version`), so only the fields
/// the spec sets are compared; `{locale: "simple"}` is the same as no collation.
fn collation_matches(desired: Option<&Document>, existing: Option<&Document>) -> bool {
    match (desired, existing) {
        (None, None) => true,
        (None, Some(e)) => is_simple_collation(e),
        (Some(d), None) => is_simple_collation(d) && d.len() == 1,
        (Some(d), Some(e)) => d.iter().all(|(field, value)| e.get(field).is_some_and(|v| bson_equal(value, v))),
    }
}

/// Compact relaxed extended JSON of a document, for messages.
pub fn render_document(document: &Document) -> String {
    Bson::Document(document.clone()).into_relaxed_extjson().to_string()
}

fn render_desired_keys(keys: &[(String, i32)]) -> String {
    let mut out = String::from("{");
    for (i, (field, dir)) in keys.iter().enumerate() {
        let _ = write!(out, "{}{field}: {dir}", if i == 0 { "" } else { ", " });
    }
    out.push('}');
    out
}

fn render_existing_keys(keys: &[(String, Bson)]) -> String {
    let mut out = String::from("{");
    for (i, (field, value)) in keys.iter().enumerate() {
        let _ = write!(out, "{}{field}: {}", if i == 0 { "" } else { ", " }, value.clone().into_relaxed_extjson());
    }
    out.push('}');
    out
}

/// Every way `existing` differs from `desired` in its options (keys and name aside),
/// each phrased to follow "index NAME on COLLECTION".
fn option_differences(desired: &DesiredIndex, existing: &ExistingIndex) -> Vec<String> {
    let mut out = Vec::new();
    for (option, want, have) in
        [("unique", desired.unique, existing.unique), ("sparse", desired.sparse, existing.sparse)]
    {
        match (want, have) {
            (true, false) => out.push(format!("exists without {option}: true")),
            (false, true) => out.push(format!("exists with {option}: true, which the spec does not set")),
            _ => {}
        }
    }
    match (&desired.partial_filter_expression, &existing.partial_filter_expression) {
        (None, None) => {}
        (Some(want), None) => out.push(format!("exists without partialFilterExpression {}", render_document(want))),
        (None, Some(have)) => out.push(format!(
            "exists with partialFilterExpression {}, which the spec does not set",
            render_document(have)
        )),
        (Some(want), Some(have)) if !documents_equal(want, have) => out.push(format!(
            "has partialFilterExpression {}, the spec wants {}",
            render_document(have),
            render_document(want)
        )),
        _ => {}
    }
    if !collation_matches(desired.collation.as_ref(), existing.collation.as_ref()) {
        out.push(match (&desired.collation, &existing.collation) {
            (Some(want), None) => format!("exists without collation {}", render_document(want)),
            (None, Some(have)) => {
                format!("exists with collation {}, which the spec does not set", render_document(have))
            }
            (Some(want), Some(have)) => {
                format!("has collation {}, the spec wants {}", render_document(have), render_document(want))
            }
            (None, None) => String::new(),
        });
    }
    if let Some(ttl) = &existing.expire_after_seconds {
        out.push(format!(
            "exists with expireAfterSeconds: {} (a TTL index deletes documents), which the spec does not set",
            ttl.clone().into_relaxed_extjson()
        ));
    }
    if existing.hidden {
        out.push("exists with hidden: true (queries do not use it), which the spec does not set".into());
    }
    out
}

/// What the database holds for one declared index.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "drift", rename_all = "camelCase")]
pub enum IndexDrift {
    /// The index exists as declared, possibly under another name when the spec did
    /// not name it.
    Present { existing_name: String },
    /// No index with this name or key pattern.
    Missing,
    /// An index with this name or key pattern exists with other options.
    Conflict { existing_name: String, message: String },
}

/// The diff of one declared index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexComparison {
    pub desired: DesiredIndex,
    pub drift: IndexDrift,
}

/// An index on a managed collection that no declaration matches. Listed, never dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedIndex {
    pub collection: String,
    pub name: String,
    /// The key pattern, e.g. `{legacyCode: 1}`.
    pub keys: String,
}

/// The diff of one collection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CollectionDiff {
    pub comparisons: Vec<IndexComparison>,
    pub unmanaged: Vec<UnmanagedIndex>,
}

/// Compares the declared indexes of one collection with what `listIndexes` returned.
/// `desired` must all be on `collection`; the result keeps their order.
pub fn diff_collection(collection: &str, desired: &[DesiredIndex], existing: &[ExistingIndex]) -> CollectionDiff {
    let mut claimed = vec![false; existing.len()];
    let mut comparisons = Vec::with_capacity(desired.len());
    for want in desired {
        let by_name = existing.iter().position(|e| e.name == want.name);
        let drift = if let Some(i) = by_name {
            claimed[i] = true;
            let have = &existing[i];
            let mut differences = Vec::new();
            if !keys_equal(&want.keys, &have.keys) {
                differences.push(format!(
                    "has keys {}, the spec wants {}",
                    render_existing_keys(&have.keys),
                    render_desired_keys(&want.keys)
                ));
            }
            differences.extend(option_differences(want, have));
            if differences.is_empty() {
                IndexDrift::Present { existing_name: have.name.clone() }
            } else {
                IndexDrift::Conflict {
                    existing_name: have.name.clone(),
                    message: format!("index {} on {collection} {}", want.name, differences.join("; ")),
                }
            }
        } else {
            // Same keys, other name. Indexes whose collation differs may coexist with
            // the declared one, so they are neither a match nor a conflict.
            let same_keys: Vec<usize> = (0..existing.len())
                .filter(|&i| {
                    keys_equal(&want.keys, &existing[i].keys)
                        && existing[i].name != ID_INDEX
                        && collation_matches(want.collation.as_ref(), existing[i].collation.as_ref())
                })
                .collect();
            let exact = same_keys.iter().copied().find(|&i| option_differences(want, &existing[i]).is_empty());
            match (exact, same_keys.first()) {
                (Some(i), _) => {
                    claimed[i] = true;
                    let have = &existing[i];
                    if want.explicit_name {
                        IndexDrift::Conflict {
                            existing_name: have.name.clone(),
                            message: format!(
                                "index {} on {collection} exists under the name {} with the same keys and options; \
                                 MongoDB refuses a second index on the same keys",
                                want.name, have.name
                            ),
                        }
                    } else {
                        IndexDrift::Present { existing_name: have.name.clone() }
                    }
                }
                (None, Some(&i)) => {
                    claimed[i] = true;
                    let have = &existing[i];
                    IndexDrift::Conflict {
                        existing_name: have.name.clone(),
                        message: format!(
                            "index {} on {collection} exists under the name {} with the same keys, and {}",
                            want.name,
                            have.name,
                            option_differences(want, have).join("; ")
                        ),
                    }
                }
                (None, None) => IndexDrift::Missing,
            }
        };
        comparisons.push(IndexComparison { desired: want.clone(), drift });
    }
    let unmanaged = existing
        .iter()
        .zip(&claimed)
        .filter(|(e, claimed)| !**claimed && e.name != ID_INDEX)
        .map(|(e, _)| UnmanagedIndex {
            collection: collection.into(),
            name: e.name.clone(),
            keys: render_existing_keys(&e.keys),
        })
        .collect();
    CollectionDiff { comparisons, unmanaged }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::crd::mongodb::default_indexes;

    fn spec(collection: &str, keys: &[(&str, i32)]) -> IndexSpec {
        IndexSpec {
            collection: collection.into(),
            keys: keys.iter().map(|(f, d)| BTreeMap::from([(f.to_string(), *d)])).collect(),
            name: None,
            unique: false,
            sparse: false,
            partial_filter_expression: None,
            collation: None,
            allow_rebuild: false,
        }
    }

    fn desired(spec: &IndexSpec) -> DesiredIndex {
        DesiredIndex::from_spec(spec).unwrap()
    }

    fn existing(index: Document) -> ExistingIndex {
        ExistingIndex::from_document("users", &index).unwrap()
    }

    fn id_index() -> ExistingIndex {
        existing(doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"})
    }

    fn drift(want: &IndexSpec, have: Vec<ExistingIndex>) -> IndexDrift {
        let diff = diff_collection(&want.collection, &[desired(want)], &have);
        diff.comparisons[0].drift.clone()
    }

    fn conflict_message(drift: IndexDrift) -> String {
        match drift {
            IndexDrift::Conflict { message, .. } => message,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn the_seed_indexes_become_the_create_documents_of_the_guide() {
        let seed: Vec<Document> = default_indexes().iter().map(|s| desired(s).to_create_document()).collect::<Vec<_>>();
        assert_eq!(
            seed[0],
            doc! {"key": {"referralCode": 1}, "name": "referralCode_1", "unique": true, "sparse": true}
        );
        assert_eq!(seed[2], doc! {"key": {"referredBy": 1, "createdAt": -1}, "name": "referredBy_1_createdAt_-1"});
        assert_eq!(seed[5].get_str("name").unwrap(), "userId_1_status_1_createdAt_-1");
    }

    #[test]
    fn an_index_as_declared_is_present_and_numbers_compare_by_value() {
        let mut want = spec("users", &[("referralCode", 1)]);
        want.unique = true;
        want.sparse = true;
        let have = existing(
            doc! {"v": 2, "key": {"referralCode": 1.0}, "name": "referralCode_1", "unique": true, "sparse": 1},
        );
        assert_eq!(
            drift(&want, vec![id_index(), have]),
            IndexDrift::Present { existing_name: "referralCode_1".into() }
        );
        let have =
            existing(doc! {"key": {"referralCode": 1_i64}, "name": "referralCode_1", "unique": true, "sparse": true});
        assert_eq!(drift(&want, vec![have]), IndexDrift::Present { existing_name: "referralCode_1".into() });
    }

    #[test]
    fn absent_sparse_and_unique_are_false() {
        let want = spec("users", &[("referralStats.totalEarned", -1)]);
        let have = existing(
            doc! {"key": {"referralStats.totalEarned": -1}, "name": "referralStats.totalEarned_-1", "sparse": false},
        );
        assert!(matches!(drift(&want, vec![have]), IndexDrift::Present { .. }));
    }

    #[test]
    fn a_missing_unique_option_is_a_conflict_with_a_precise_message() {
        let mut want = spec("users", &[("referralCode", 1)]);
        want.unique = true;
        want.sparse = true;
        let have = existing(doc! {"key": {"referralCode": 1}, "name": "referralCode_1", "sparse": true});
        assert_eq!(
            conflict_message(drift(&want, vec![have])),
            "index referralCode_1 on users exists without unique: true"
        );
    }

    #[test]
    fn an_extra_option_and_several_differences_are_all_named() {
        let want = spec("users", &[("referralCode", 1)]);
        let have = existing(
            doc! {"key": {"referralCode": 1}, "name": "referralCode_1", "unique": true, "sparse": true, "expireAfterSeconds": 60},
        );
        assert_eq!(
            conflict_message(drift(&want, vec![have])),
            "index referralCode_1 on users exists with unique: true, which the spec does not set; \
             exists with sparse: true, which the spec does not set; exists with expireAfterSeconds: 60 \
             (a TTL index deletes documents), which the spec does not set"
        );
    }

    #[test]
    fn key_order_matters_under_the_same_name() {
        let want = spec("users", &[("referredBy", 1), ("createdAt", -1)]);
        let have = existing(doc! {"key": {"createdAt": -1, "referredBy": 1}, "name": "referredBy_1_createdAt_-1"});
        assert_eq!(
            conflict_message(drift(&want, vec![have])),
            "index referredBy_1_createdAt_-1 on users has keys {createdAt: -1, referredBy: 1}, the spec wants \
             {referredBy: 1, createdAt: -1}"
        );
    }

    #[test]
    fn reversed_keys_under_another_name_do_not_match_and_stay_unmanaged() {
        let want = spec("users", &[("referredBy", 1), ("createdAt", -1)]);
        let have = existing(doc! {"key": {"createdAt": -1, "referredBy": 1}, "name": "by_created"});
        let diff = diff_collection("users", &[desired(&want)], &[id_index(), have]);
        assert_eq!(diff.comparisons[0].drift, IndexDrift::Missing);
        assert_eq!(
            diff.unmanaged,
            vec![UnmanagedIndex {
                collection: "users".into(),
                name: "by_created".into(),
                keys: "{createdAt: -1, referredBy: 1}".into()
            }]
        );
    }

    #[test]
    fn same_keys_under_another_name_is_present_unless_the_spec_names_it() {
        let want = spec("referrals", &[("code", 1), ("status", 1)]);
        let have = existing(doc! {"key": {"code": 1, "status": 1}, "name": "code_status"});
        assert_eq!(drift(&want, vec![have.clone()]), IndexDrift::Present { existing_name: "code_status".into() });
        let mut named = want.clone();
        named.name = Some("by_code".into());
        let message = conflict_message(drift(&named, vec![have]));
        assert!(message.starts_with("index by_code on referrals exists under the name code_status"), "{message}");
    }

    #[test]
    fn same_keys_under_another_name_with_other_options_is_a_conflict() {
        let mut want = spec("users", &[("referralCode", 1)]);
        want.unique = true;
        let have = existing(doc! {"key": {"referralCode": 1}, "name": "code"});
        assert_eq!(
            conflict_message(drift(&want, vec![have])),
            "index referralCode_1 on users exists under the name code with the same keys, and exists without unique: true"
        );
    }

    #[test]
    fn partial_filters_compare_as_documents() {
        let mut want = spec("users", &[("referralCode", 1)]);
        want.partial_filter_expression = Some(serde_json::json!({"referralCode": {"$exists": true}}));
        let same = existing(
            doc! {"key": {"referralCode": 1}, "name": "referralCode_1", "partialFilterExpression": {"referralCode": {"$exists": true}}},
        );
        assert!(matches!(drift(&want, vec![same]), IndexDrift::Present { .. }));
        let other = existing(
            doc! {"key": {"referralCode": 1}, "name": "referralCode_1", "partialFilterExpression": {"referralCode": {"$type": "string"}}},
        );
        assert_eq!(
            conflict_message(drift(&want, vec![other])),
            r#"index referralCode_1 on users has partialFilterExpression {"referralCode":{"$type":"string"}}, the spec wants {"referralCode":{"$exists":true}}"#
        );
        let none = existing(doc! {"key": {"referralCode": 1}, "name": "referralCode_1"});
        assert!(
            conflict_message(drift(&want, vec![none]))
                .ends_with("exists without partialFilterExpression {\"referralCode\":{\"$exists\":true}}")
        );
    }

    #[test]
    fn collation_compares_the_fields_the_spec_sets() {
        let mut want = spec("users", &[("name", 1)]);
        want.collation = Some(serde_json::json!({"locale": "en", "strength": 2}));
        let full = doc! {"locale": "en", "caseLevel": false, "caseFirst": "off", "strength": 2, "numericOrdering": false,
        "alternate": "non-ignorable", "maxVariable": "punct", "normalization": false, "backwards": false, "version": "57.1"};
        let have = existing(doc! {"key": {"name": 1}, "name": "name_1", "collation": full.clone()});
        assert!(matches!(drift(&want, vec![have]), IndexDrift::Present { .. }));
        let mut stronger = full;
        stronger.insert("strength", 3);
        let have = existing(doc! {"key": {"name": 1}, "name": "name_1", "collation": stronger});
        assert!(
            conflict_message(drift(&want, vec![have])).contains("the spec wants {\"locale\":\"en\",\"strength\":2}")
        );
        // A simple collation is no collation.
        let plain = spec("users", &[("name", 1)]);
        let have = existing(doc! {"key": {"name": 1}, "name": "name_1", "collation": {"locale": "simple"}});
        assert!(matches!(drift(&plain, vec![have]), IndexDrift::Present { .. }));
    }

    #[test]
    fn an_index_with_another_collation_under_another_name_coexists() {
        let want = spec("users", &[("name", 1)]);
        let have = existing(doc! {"key": {"name": 1}, "name": "name_en", "collation": {"locale": "en", "strength": 2}});
        let diff = diff_collection("users", &[desired(&want)], &[have]);
        assert_eq!(diff.comparisons[0].drift, IndexDrift::Missing);
        assert_eq!(diff.unmanaged.len(), 1);
    }

    #[test]
    fn text_and_hashed_keys_are_not_numeric_matches() {
        let want = spec("users", &[("bio", 1)]);
        let have = existing(doc! {"key": {"bio": "text"}, "name": "bio_1"});
        assert!(
            conflict_message(drift(&want, vec![have])).contains("has keys {bio: \"text\"}, the spec wants {bio: 1}")
        );
    }

    #[test]
    fn the_id_index_is_neither_matched_nor_listed() {
        let want = spec("users", &[("_id", 1)]);
        let diff = diff_collection("users", &[desired(&want)], &[id_index()]);
        assert_eq!(diff.comparisons[0].drift, IndexDrift::Missing);
        assert!(diff.unmanaged.is_empty());
    }

    #[test]
    fn unreadable_list_entries_are_errors_not_panics() {
        assert_eq!(
            ExistingIndex::from_document("users", &doc! {"key": {"a": 1}}),
            Err(ExistingIndexError::NoName { collection: "users".into() })
        );
        assert!(ExistingIndex::from_document("users", &doc! {"name": "a_1", "key": {}}).is_err());
    }

    #[test]
    fn a_partial_filter_that_is_not_an_object_is_refused() {
        let mut want = spec("users", &[("a", 1)]);
        want.partial_filter_expression = Some(serde_json::json!([1, 2]));
        assert!(matches!(DesiredIndex::from_spec(&want), Err(IndexSpecError::NotAnObject { .. })));
    }
}
