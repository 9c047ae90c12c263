//! MongoDB: connection, client options, the indexes the operator keeps, and the field
//! names the chain check reads.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// Where the referral data lives and how the service talks to it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MongoSpec {
    /// Secret key holding the connection string (`mongodb://user:pass@host/...`).
    /// Passed to pods as MONGODB_URI through `secretKeyRef` only.
    pub uri_secret_ref: SecretKeyRef,
    /// Database name, e.g. `neurolov`.
    #[schemars(length(min = 1, max = 63), pattern(r#"^[^/\\. "$*<>:|?]+$"#))]
    pub database: String,
    /// Driver options, passed to workers as MONGODB_* variables.
    #[serde(default)]
    pub client: MongoClientOptions,
    /// Indexes the operator keeps. Default: the six indexes of the deployment guide.
    /// Two entries may not name the same index of one collection.
    #[serde(default = "default_indexes")]
    #[schemars(length(max = 64))]
    pub indexes: Vec<IndexSpec>,
    /// `Ensure` creates missing indexes; `Report` only reports them and never writes to
    /// the database. Neither drops an index. Default Ensure.
    #[serde(default)]
    pub index_policy: IndexPolicy,
    /// Shortest time between two index checks against the database. Default 10m.
    #[serde(default = "default_index_check_interval")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub index_check_interval: String,
    /// Where the chain check finds users and referral records.
    #[serde(default)]
    pub chain_model: ChainModel,
}

/// Driver settings from the deployment guide's performance section.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MongoClientOptions {
    /// Connection pool size per process (MONGODB_POOL_SIZE). Default 10.
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub pool_size: u32,
    /// Write-concern timeout in milliseconds (MONGODB_WTIMEOUT_MS). Default 2500.
    #[serde(default = "default_wtimeout_ms")]
    #[schemars(range(min = 0, max = 600000))]
    pub wtimeout_ms: u32,
    /// Retry writes once on transient errors (MONGODB_RETRY_WRITES). Default true.
    #[serde(default = "default_true")]
    pub retry_writes: bool,
    /// Read preference (MONGODB_READ_PREFERENCE). Default secondaryPreferred.
    #[serde(default)]
    pub read_preference: ReadPreference,
}

impl Default for MongoClientOptions {
    fn default() -> Self {
        Self {
            pool_size: default_pool_size(),
            wtimeout_ms: default_wtimeout_ms(),
            retry_writes: true,
            read_preference: ReadPreference::default(),
        }
    }
}

/// MongoDB read preference modes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ReadPreference {
    Primary,
    PrimaryPreferred,
    Secondary,
    #[default]
    SecondaryPreferred,
    Nearest,
}

impl ReadPreference {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::PrimaryPreferred => "primaryPreferred",
            Self::Secondary => "secondary",
            Self::SecondaryPreferred => "secondaryPreferred",
            Self::Nearest => "nearest",
        }
    }
}

/// Whether the operator may create indexes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum IndexPolicy {
    /// Create missing indexes (never drop or rebuild one without `allowRebuild`).
    #[default]
    Ensure,
    /// Only compare and report; never write to the database.
    Report,
}

/// One index the operator keeps on a collection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.allowRebuild) || !self.allowRebuild || has(self.name)",
     "message": "allowRebuild needs an explicit index name, so that only that one index can ever be rebuilt"}
]))]
pub struct IndexSpec {
    /// Collection the index is on, e.g. `users`.
    #[schemars(length(min = 1, max = 120), pattern(r"^[^$\x00]+$"))]
    pub collection: String,
    /// Key fields in order, each a one-entry map from field to direction (1 ascending,
    /// -1 descending), e.g. `[{referredBy: 1}, {createdAt: -1}]`.
    #[schemars(schema_with = "index_keys_schema")]
    pub keys: Vec<BTreeMap<String, i32>>,
    /// Index name. Default: MongoDB's own naming (`field_1_other_-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 127))]
    pub name: Option<String>,
    /// Refuse two documents with the same key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
    /// Skip documents that lack the indexed field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    /// Only index documents matching this filter (MongoDB query document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_object")]
    pub partial_filter_expression: Option<serde_json::Value>,
    /// Collation of the index (MongoDB collation document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_object")]
    pub collation: Option<serde_json::Value>,
    /// Allow the operator to drop and recreate this index when the database holds a
    /// different definition under the same name. Off by default: a conflict is only
    /// reported, never resolved silently.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_rebuild: bool,
}

impl IndexSpec {
    /// The name MongoDB gives an index when none is set: `field_dir` pairs joined by `_`.
    pub fn effective_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let parts: Vec<String> =
            self.keys.iter().flat_map(|k| k.iter().map(|(field, dir)| format!("{field}_{dir}"))).collect();
        parts.join("_")
    }
}

/// Whether `referredBy` in a user document holds the referrer's id or referral code.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReferredByHolds {
    /// The referrer's user id (the value of `userIdField`).
    #[default]
    UserId,
    /// The referrer's referral code (the value of `referralCodeField`).
    ReferralCode,
}

/// Field names the chain check reads. Defaults match the deployment guide's schema.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainModel {
    /// Collection of users. Default `users`.
    #[serde(default = "default_users")]
    #[schemars(length(min = 1))]
    pub users_collection: String,
    /// Field holding a user's id. Default `_id`.
    #[serde(default = "default_user_id_field")]
    #[schemars(length(min = 1))]
    pub user_id_field: String,
    /// Field naming who referred the user. Default `referredBy`.
    #[serde(default = "default_referred_by")]
    #[schemars(length(min = 1))]
    pub referred_by_field: String,
    /// What `referredByField` holds. Default UserId.
    #[serde(default)]
    pub referred_by_holds: ReferredByHolds,
    /// Field holding a user's own referral code. Default `referralCode`.
    #[serde(default = "default_referral_code")]
    #[schemars(length(min = 1))]
    pub referral_code_field: String,
    /// Collection of referral records (one per rewarded ancestor). Default `referrals`.
    #[serde(default = "default_referrals")]
    #[schemars(length(min = 1))]
    pub referrals_collection: String,
    /// Field of a referral record naming the rewarded ancestor. Default `referrer`.
    #[serde(default = "default_referrer")]
    #[schemars(length(min = 1))]
    pub referrer_field: String,
    /// Field of a referral record naming the user who signed up. Default `referred`.
    #[serde(default = "default_referred")]
    #[schemars(length(min = 1))]
    pub referred_field: String,
    /// Field of a referral record holding the tier (1 = direct referrer). Default `tier`.
    #[serde(default = "default_tier")]
    #[schemars(length(min = 1))]
    pub tier_field: String,
}

impl Default for ChainModel {
    fn default() -> Self {
        Self {
            users_collection: default_users(),
            user_id_field: default_user_id_field(),
            referred_by_field: default_referred_by(),
            referred_by_holds: ReferredByHolds::default(),
            referral_code_field: default_referral_code(),
            referrals_collection: default_referrals(),
            referrer_field: default_referrer(),
            referred_field: default_referred(),
            tier_field: default_tier(),
        }
    }
}

/// Schema of `keys`: bounded so the apiserver's CEL cost estimate stays small (a map
/// without `maxProperties` is costed as unbounded).
fn index_keys_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 32,
        "items": {
            "type": "object",
            "maxProperties": 8,
            "additionalProperties": {"type": "integer", "format": "int32"}
        },
        "x-kubernetes-validations": [
            {"rule": "self.all(k, size(k) == 1)",
             "message": "each entry of keys must name exactly one field, e.g. {referralCode: 1}; list compound keys as separate entries"},
            {"rule": "self.all(k, k.all(f, k[f] == 1 || k[f] == -1))",
             "message": "index key directions must be 1 (ascending) or -1 (descending)"}
        ]
    })
}

fn key(field: &str, dir: i32) -> BTreeMap<String, i32> {
    BTreeMap::from([(field.to_string(), dir)])
}

fn seed_index(collection: &str, keys: &[(&str, i32)], unique: bool, sparse: bool) -> IndexSpec {
    IndexSpec {
        collection: collection.into(),
        keys: keys.iter().map(|(f, d)| key(f, *d)).collect(),
        name: None,
        unique,
        sparse,
        partial_filter_expression: None,
        collation: None,
        allow_rebuild: false,
    }
}

/// The six indexes of the deployment guide (README.md, "The resource").
pub fn default_indexes() -> Vec<IndexSpec> {
    vec![
        seed_index("users", &[("referralCode", 1)], true, true),
        seed_index("users", &[("referralStats.totalEarned", -1)], false, false),
        seed_index("users", &[("referredBy", 1), ("createdAt", -1)], false, false),
        seed_index("referrals", &[("referrer", 1), ("tier", 1), ("status", 1)], false, false),
        seed_index("referrals", &[("code", 1), ("status", 1)], false, false),
        seed_index("referralTransactions", &[("userId", 1), ("status", 1), ("createdAt", -1)], false, false),
    ]
}

fn default_pool_size() -> u32 {
    10
}
fn default_wtimeout_ms() -> u32 {
    2500
}
fn default_true() -> bool {
    true
}
fn default_index_check_interval() -> String {
    "10m".into()
}
fn default_users() -> String {
    "users".into()
}
fn default_user_id_field() -> String {
    "_id".into()
}
fn default_referred_by() -> String {
    "referredBy".into()
}
fn default_referral_code() -> String {
    "referralCode".into()
}
fn default_referrals() -> String {
    "referrals".into()
}
fn default_referrer() -> String {
    "referrer".into()
}
fn default_referred() -> String {
    "referred".into()
}
fn default_tier() -> String {
    "tier".into()
}
