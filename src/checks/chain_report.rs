//! What the chain check reports: its options, the kinds of finding and their
//! examples, the counts, the report itself and the repair plan's updates. Data only;
//! the engine that fills them is [`super::chains`].

use serde::Serialize;

use crate::crd::mongodb::ReferredByHolds;
use crate::crd::settings::DEFAULT_MAX_CHAIN_DEPTH;

/// What the engine needs to know besides the documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainOptions {
    /// `referral.maxChainDepth`: highest tier a referral record may have.
    pub max_depth: u8,
    /// Whether `referredBy` holds the referrer's id or referral code.
    pub holds: ReferredByHolds,
    /// Examples kept per kind of violation.
    pub examples_per_kind: usize,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions { max_depth: DEFAULT_MAX_CHAIN_DEPTH, holds: ReferredByHolds::UserId, examples_per_kind: 10 }
    }
}

/// Kinds of finding, as they appear in examples and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FindingKind {
    Cycle,
    SelfReferral,
    Orphan,
    TierTooHigh,
    WrongReferrer,
    UnknownReferred,
    UnknownReferrer,
    Malformed,
}

impl FindingKind {
    pub(super) const ALL: [FindingKind; 8] = [
        FindingKind::Cycle,
        FindingKind::SelfReferral,
        FindingKind::Orphan,
        FindingKind::TierTooHigh,
        FindingKind::WrongReferrer,
        FindingKind::UnknownReferred,
        FindingKind::UnknownReferrer,
        FindingKind::Malformed,
    ];

    pub(super) fn slot(self) -> usize {
        self as usize
    }
}

/// One offender, for a person to start from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainExample {
    pub kind: FindingKind,
    pub message: String,
    /// The users involved (a cycle's members in referral order, capped).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

/// Documents the engine could not use, by what was wrong. Counted, never fatal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MalformedCounts {
    /// User documents without an id.
    pub user_without_id: u64,
    /// User ids of a type no id can have (array, boolean, fraction, ...). Skipped.
    pub user_id_type: u64,
    /// `referredBy` of the wrong type; the user is treated as having no referrer.
    pub referred_by_type: u64,
    /// Own referral code of the wrong type (referral-code mode).
    pub referral_code_type: u64,
    /// A second user document with an id already seen. Skipped.
    pub duplicate_user_id: u64,
    /// A second user claiming a referral code already claimed (referral-code mode).
    pub duplicate_referral_code: u64,
    /// Referral records lacking referrer, referred user or tier.
    pub record_missing_field: u64,
    /// Referral records with a field of the wrong type, or a tier below 1.
    pub record_field_type: u64,
}

impl MalformedCounts {
    pub fn total(&self) -> u64 {
        self.user_without_id
            + self.user_id_type
            + self.referred_by_type
            + self.referral_code_type
            + self.duplicate_user_id
            + self.duplicate_referral_code
            + self.record_missing_field
            + self.record_field_type
    }
}

/// Referral records by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordCounts {
    /// Records read (malformed ones included).
    pub total: u64,
    /// Tier above the maximum chain depth.
    pub tier_too_high: u64,
    /// The referrer is not the referred user's tier-th ancestor.
    pub wrong_referrer: u64,
    /// The referred user does not exist.
    pub unknown_referred: u64,
    /// The chain agrees with the record but that referrer does not exist.
    pub unknown_referrer: u64,
}

impl RecordCounts {
    /// Records whose referrer or users disagree with the user chain.
    pub fn bad(&self) -> u64 {
        self.wrong_referrer + self.unknown_referred + self.unknown_referrer
    }
}

/// Users at one depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DepthCount {
    pub depth: u32,
    pub users: u64,
}

/// Everything one check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainReport {
    pub database: String,
    pub users_collection: String,
    pub referrals_collection: String,
    pub max_chain_depth: u8,
    pub referred_by_holds: ReferredByHolds,
    /// User documents accepted (malformed and duplicate ones excluded).
    pub users: u64,
    /// Users with no referrer.
    pub roots: u64,
    /// Everything below that is wrong: cycles + selfReferrals + orphans +
    /// records.tierTooHigh + records.bad + malformed. 0 means the data is sound.
    pub violations: u64,
    /// Cycles of two or more users.
    pub cycles: u64,
    pub users_in_cycles: u64,
    /// Users whose chain runs into a cycle (or a self-referral); not counted as
    /// violations of their own, and they have no depth.
    pub users_below_cycles: u64,
    pub self_referrals: u64,
    /// Users whose referrer names no user.
    pub orphans: u64,
    /// Distinct missing referrers the orphans name.
    pub missing_referrers: u64,
    /// Users deeper than `maxChainDepth`: information, not a violation (only the
    /// first `maxChainDepth` referrers are rewarded).
    pub deeper_than_max: u64,
    pub records: RecordCounts,
    pub malformed: MalformedCounts,
    /// Users per depth (orphans count their missing referrer as a root). The last
    /// bucket, 250, holds every deeper user.
    pub depth_distribution: Vec<DepthCount>,
    pub examples: Vec<ChainExample>,
    /// Things a person should know that are not violations (an empty collection).
    pub warnings: Vec<String>,
}

impl ChainReport {
    /// `status.chainCheck.summary`: `OK`, or the number of violations.
    pub fn summary(&self) -> String {
        match self.violations {
            0 if self.users == 0 => "OK (no users)".into(),
            0 => "OK".into(),
            1 => "1 violation".into(),
            n => format!("{n} violations"),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Examples {
    per_kind: Vec<Vec<ChainExample>>,
    cap: usize,
}

impl Examples {
    pub(super) fn new(cap: usize) -> Examples {
        Examples { per_kind: vec![Vec::new(); FindingKind::ALL.len()], cap }
    }

    pub(super) fn wants(&self, kind: FindingKind) -> bool {
        self.per_kind[kind.slot()].len() < self.cap
    }

    pub(super) fn push(&mut self, kind: FindingKind, message: String, users: Vec<String>) {
        if self.wants(kind) {
            self.per_kind[kind.slot()].push(ChainExample { kind, message, users });
        }
    }

    pub(super) fn all(&self) -> Vec<ChainExample> {
        self.per_kind.iter().flatten().cloned().collect()
    }
}

/// Why an update is in the repair plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RepairReason {
    Cycle,
    SelfReferral,
    Orphan,
}

/// One update of a repair plan, in MongoDB relaxed extended JSON.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairUpdate {
    pub reason: RepairReason,
    pub note: String,
    /// `{<id field>: <id>, <referredBy field>: <current value>}`.
    pub filter: serde_json::Value,
    /// `{"$unset": {<referredBy field>: ""}}`.
    pub update: serde_json::Value,
}
