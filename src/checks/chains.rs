//! The referral-chain integrity engine: users in, one report out.
//!
//! Fed one user document at a time ([`ChainBuilder::add_user`]), it interns ids into
//! dense `u32` numbers ([`super::chain_keys`]) and keeps one parent number per user.
//! [`ChainBuilder::finish`] then classifies every user in one pass over that array:
//! depth (hops to a user with no referrer), member of a cycle, self-referral, below a
//! cycle, orphan (its referrer names no user). Referral records are checked afterwards
//! ([`ChainAnalysis::add_record`]), each by a walk of at most `tier` steps, `tier`
//! being bounded by the maximum chain depth.
//!
//! Lookups at random in tables of hundreds of MB are cache misses, so documents do
//! not go straight in: a user waits in a short pipeline while the index slots and
//! then the keys its lookups need are prefetched, and records are checked in batches
//! whose walks advance in lockstep. The misses of different documents overlap instead
//! of queueing. Documents are still handled in arrival order, so results (examples
//! included) are those of one document at a time; a property test holds it to that.
//!
//! Memory is proportional to the number of users and nothing else: about 4 bytes of
//! parent, 1 byte of state and 13 bytes of key per user, a hash index of 4 bytes per
//! slot (load ≤ 3/4), and capped example lists. No recursion: each user is visited at
//! most twice by the classification walk and cycles once more.
//!
//! Pure: no I/O, no Kubernetes. [`super::chain_source`] streams the documents in;
//! the CLI prints the report and the repair plan. The repair plan is only data: this
//! module never applies it.

use std::collections::HashSet;

use serde::Serialize;

use crate::crd::mongodb::ReferredByHolds;
use crate::crd::settings::DEFAULT_MAX_CHAIN_DEPTH;

pub use super::chain_keys::{
    FieldValue, KeyRef, KeyTable, KeyTableError, NONE, OwnedKey, PendingExtra, PendingKey, UserKey, key_hash,
};
use super::chain_keys::{huge_page_vec, prefetch};

/// Documents a user waits between the prefetch of its index slots and the prefetch
/// of the keys they point at, and again before it is interned. Table lookups at
/// random in hundreds of MB each wait for two cache misses (a slot, then a key); this
/// way every lookup finds both in cache and the misses of many documents overlap.
/// Long enough for memory to answer, short enough that the lines are still cached.
#[cfg(not(test))]
const LEAD: usize = 16;
/// Small in tests, so that the random graphs of the property tests wrap around the
/// pipeline (a referrer interned while its user waits, a duplicate inside it).
#[cfg(test)]
const LEAD: usize = 3;

/// Nodes the classification pass looks ahead to prefetch a referrer's mark.
const CLASSIFY_AHEAD: usize = 16;

/// Referral records are checked in batches: lookups prefetched, then the ancestor
/// walks advance in lockstep, so the misses of different records overlap.
#[cfg(not(test))]
const BATCH: usize = 32;
#[cfg(test)]
const BATCH: usize = 5;

/// A field value copied out of its document, to wait in the pipeline.
#[derive(Debug, Clone, PartialEq)]
enum PendingValue {
    Absent,
    Key(OwnedKey),
    WrongType(&'static str),
}

impl PendingValue {
    fn new(value: FieldValue<'_>) -> PendingValue {
        match value {
            FieldValue::Absent => PendingValue::Absent,
            FieldValue::Key(key) => PendingValue::Key(OwnedKey::new(key)),
            FieldValue::WrongType(name) => PendingValue::WrongType(name),
        }
    }

    fn field(&self) -> FieldValue<'_> {
        match self {
            PendingValue::Absent => FieldValue::Absent,
            PendingValue::Key(key) => FieldValue::Key(key.key_ref()),
            PendingValue::WrongType(name) => FieldValue::WrongType(name),
        }
    }
}

/// Where a user's fields wait in the ingest pipeline.
const ID: usize = 0;
const REFERRED_BY: usize = 1;
const OWN_CODE: usize = 2;

/// The users waiting in the ingest pipeline: a ring of fixed, power-of-two size,
/// numbered by arrival. User `n` waits at position `n & mask` as plain cells (see
/// [`PendingKey`]): it is written there once, read twice for its prefetches and once
/// when it is interned, and never moved; nothing is allocated per user.
#[derive(Debug)]
struct UserPipeline {
    /// Per position: the id, `referredBy` and own referral code of a user, encoded.
    keys: Vec<[PendingKey; 3]>,
    /// Beside each key: a long string's bytes or a wrong type's name, when it has one.
    extras: Vec<[PendingExtra; 3]>,
    mask: usize,
    /// Users taken in so far: the next one's number.
    taken: usize,
    /// Users interned so far: the oldest waiting one's number.
    done: usize,
}

impl UserPipeline {
    /// A ring that holds `capacity` users.
    fn new(capacity: usize) -> UserPipeline {
        let size = capacity.max(1).next_power_of_two();
        UserPipeline {
            keys: vec![[PendingKey::default(); 3]; size],
            extras: vec![Default::default(); size],
            mask: size - 1,
            taken: 0,
            done: 0,
        }
    }
}

#[derive(Debug)]
struct PendingRecord {
    record_id: PendingValue,
    referrer: OwnedKey,
    referred: OwnedKey,
    tier: i64,
}

/// Where the ancestor walk of a pending record stands.
#[derive(Debug, Clone, Copy)]
struct RecordWalk {
    referred: Option<u32>,
    referrer: Option<u32>,
    /// The node reached so far (NONE when the referred user is unknown).
    ancestor: u32,
    /// Steps taken.
    reached: i64,
    stopped: bool,
}

/// Depths at or above this are stored as this ("250 or more").
pub const DEPTH_CAP: u8 = 250;
const IN_CYCLE: u8 = 251;
const SELF_REFERRAL: u8 = 252;
const BELOW_CYCLE: u8 = 253;
const ON_PATH: u8 = 254;
const UNVISITED: u8 = 255;

/// Members of a cycle shown in one example.
const CYCLE_EXAMPLE_MEMBERS: usize = 10;

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
    const ALL: [FindingKind; 8] = [
        FindingKind::Cycle,
        FindingKind::SelfReferral,
        FindingKind::Orphan,
        FindingKind::TierTooHigh,
        FindingKind::WrongReferrer,
        FindingKind::UnknownReferred,
        FindingKind::UnknownReferrer,
        FindingKind::Malformed,
    ];

    fn slot(self) -> usize {
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

fn type_name_of(value: FieldValue<'_>) -> &'static str {
    match value {
        FieldValue::WrongType(name) => name,
        FieldValue::Absent => "absent",
        FieldValue::Key(_) => "a key",
    }
}

#[derive(Debug, Default)]
struct Examples {
    per_kind: Vec<Vec<ChainExample>>,
    cap: usize,
}

impl Examples {
    fn new(cap: usize) -> Examples {
        Examples { per_kind: vec![Vec::new(); FindingKind::ALL.len()], cap }
    }

    fn wants(&self, kind: FindingKind) -> bool {
        self.per_kind[kind.slot()].len() < self.cap
    }

    fn push(&mut self, kind: FindingKind, message: String, users: Vec<String>) {
        if self.wants(kind) {
            self.per_kind[kind.slot()].push(ChainExample { kind, message, users });
        }
    }

    fn all(&self) -> Vec<ChainExample> {
        self.per_kind.iter().flatten().cloned().collect()
    }
}

/// Bit per node: is it a user (rather than a referrer nobody has seen as a user)?
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, i: u32) -> bool {
        self.0.get(i as usize / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn set(&mut self, i: u32) {
        let word = i as usize / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (i % 64);
    }
}

/// Referral codes and who owns them (referral-code mode only).
#[derive(Debug, Default)]
struct CodeBook {
    codes: KeyTable,
    owner: Vec<u32>,
    /// Per node: the code its `referredBy` holds, NONE when none. Kept after
    /// resolution because the repair plan must name the current value.
    referenced: Vec<u32>,
}

/// Why the engine stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("interning user ids: {0}")]
    Ids(KeyTableError),
    #[error("interning referral codes: {0}")]
    Codes(KeyTableError),
}

/// Collects users during the streaming pass.
#[derive(Debug)]
pub struct ChainBuilder {
    graph: UserGraph,
    /// Users waiting: see [`LEAD`].
    pipeline: UserPipeline,
    /// [`LEAD`], or another depth in tests and the benchmark.
    lead: usize,
    /// Referral records per batch for the analysis: [`BATCH`] or another size.
    batch: usize,
}

/// What the users interned so far make: apart from the pipeline, so that a user can
/// be interned from where it waits.
#[derive(Debug)]
struct UserGraph {
    options: ChainOptions,
    ids: KeyTable,
    /// Per node: parent node (id mode) or referenced code (code mode, until finish).
    parent: Vec<u32>,
    is_user: Bits,
    codes: Option<CodeBook>,
    malformed: MalformedCounts,
    examples: Examples,
    users: u64,
}

impl ChainBuilder {
    /// A builder sized for about `expected_users` users (0 when unknown).
    pub fn new(options: ChainOptions, expected_users: usize) -> ChainBuilder {
        // Referrers that are no user (orphans' missing ids, unowned codes) are nodes
        // too: a little room for them keeps the big arrays from doubling for a few.
        let expected_users = expected_users.saturating_add(expected_users / 64);
        let codes = (options.holds == ReferredByHolds::ReferralCode).then(|| CodeBook {
            codes: KeyTable::with_capacity(expected_users),
            owner: Vec::with_capacity(expected_users),
            referenced: Vec::with_capacity(expected_users),
        });
        ChainBuilder {
            graph: UserGraph {
                options,
                ids: KeyTable::with_capacity(expected_users),
                parent: huge_page_vec(expected_users),
                is_user: Bits(Vec::with_capacity(expected_users / 64 + 1)),
                codes,
                malformed: MalformedCounts::default(),
                examples: Examples::new(options.examples_per_kind),
                users: 0,
            },
            pipeline: UserPipeline::new(2 * LEAD + 1),
            lead: LEAD,
            batch: BATCH,
        }
    }

    /// The pipeline depth and record batch size the engine uses unless told otherwise.
    pub fn default_pipeline() -> (usize, usize) {
        (LEAD, BATCH)
    }

    /// The same builder with another pipeline depth for users and batch size for
    /// records (0 and 1: one document at a time). For tests, which show that results
    /// do not depend on them, and for the benchmark, which measures what they gain.
    /// Call it before the first user.
    pub fn with_pipeline(mut self, lead: usize, batch: usize) -> ChainBuilder {
        self.lead = lead;
        self.pipeline = UserPipeline::new(2 * lead + 1);
        self.batch = batch.max(1);
        self
    }

    /// Adds one user document: its id, its `referredBy` and (referral-code mode) its
    /// own referral code. Malformed documents are counted, never an error.
    ///
    /// The document waits in a short pipeline (see [`LEAD`]) and is interned in
    /// arrival order, so results are those of handling it at once;
    /// [`ChainBuilder::finish`] handles the rest.
    #[inline]
    pub fn add_user(
        &mut self,
        id: FieldValue<'_>,
        referred_by: FieldValue<'_>,
        referral_code: FieldValue<'_>,
    ) -> Result<(), ChainError> {
        let arrival = self.pipeline.taken;
        let mask = self.pipeline.mask;
        let graph = &self.graph;
        if let (Some(keys), Some(extras)) =
            (self.pipeline.keys.get_mut(arrival & mask), self.pipeline.extras.get_mut(arrival & mask))
        {
            keys[ID] = PendingKey::encode(id, &mut extras[ID]);
            keys[REFERRED_BY] = PendingKey::encode(referred_by, &mut extras[REFERRED_BY]);
            // The own code matters in referral-code mode only.
            if graph.codes.is_some() {
                keys[OWN_CODE] = PendingKey::encode(referral_code, &mut extras[OWN_CODE]);
            }
            graph.prefetch_slots(keys);
        }
        self.pipeline.taken = arrival + 1;
        if let Some(ahead) = arrival.checked_sub(self.lead)
            && let Some(keys) = self.pipeline.keys.get(ahead & mask)
        {
            graph.prefetch_keys(keys);
        }
        if arrival >= 2 * self.lead {
            self.intern_oldest()?;
        }
        Ok(())
    }

    /// Interns the user that has waited longest.
    #[inline(always)]
    fn intern_oldest(&mut self) -> Result<(), ChainError> {
        let at = self.pipeline.done & self.pipeline.mask;
        self.pipeline.done += 1;
        match (self.pipeline.keys.get(at), self.pipeline.extras.get(at)) {
            (Some(keys), Some(extras)) => self.graph.add_one_user(keys, extras),
            _ => Ok(()),
        }
    }

    /// Resolves referral codes (code mode) and classifies every user.
    pub fn finish(mut self) -> Result<ChainAnalysis, ChainError> {
        while self.pipeline.done < self.pipeline.taken {
            self.intern_oldest()?;
        }
        let UserGraph { options, mut ids, mut parent, is_user, codes, malformed, examples, users } = self.graph;
        let mut book = codes;
        if let Some(book) = &mut book {
            // A code nobody owns gets one placeholder node, shared by everyone naming it.
            // Placeholders are not indexed: a code must never be found as a user id.
            let mut placeholder_of_code = vec![NONE; book.codes.len()];
            for node in 0..parent.len() {
                let code = book.referenced.get(node).copied().unwrap_or(NONE);
                if code == NONE {
                    continue;
                }
                let owner = book.owner[code as usize];
                parent[node] = if owner != NONE {
                    owner
                } else if placeholder_of_code[code as usize] != NONE {
                    placeholder_of_code[code as usize]
                } else {
                    let key = book.codes.key_ref(code);
                    let placeholder = ids.push_unindexed(key).map_err(ChainError::Ids)?;
                    parent.push(NONE);
                    placeholder_of_code[code as usize] = placeholder;
                    placeholder
                };
            }
        }
        let mut analysis = ChainAnalysis {
            options,
            mark: Vec::new(),
            ids,
            parent,
            is_user,
            codes: book,
            cycles: Vec::new(),
            malformed,
            records: RecordCounts::default(),
            examples,
            users,
            batch: self.batch,
            pending_records: Vec::with_capacity(BATCH),
            record_walks: Vec::with_capacity(BATCH),
        };
        analysis.classify();
        Ok(analysis)
    }
}

impl UserGraph {
    #[inline(always)]
    fn node(&mut self, key: &PendingKey, extra: &PendingExtra) -> Result<(u32, bool), ChainError> {
        let (id, added) = self.ids.intern_pending(key, extra).map_err(ChainError::Ids)?;
        if added {
            self.parent.push(NONE);
            if let Some(book) = &mut self.codes {
                book.referenced.push(NONE);
            }
        }
        Ok((id, added))
    }

    /// The table a user's `referredBy` is looked up in: ids, or codes in code mode.
    #[inline]
    fn reference_table(&self) -> &KeyTable {
        self.codes.as_ref().map_or(&self.ids, |book| &book.codes)
    }

    /// Touches, for each key of a user that is a real key, the table it will be
    /// looked up in: ids, the `referredBy` table, and in code mode the codes.
    #[inline]
    fn prefetch(&self, keys: &[PendingKey; 3], touch: impl Fn(&KeyTable, u64)) {
        if keys[ID].is_key() {
            touch(&self.ids, keys[ID].hash());
        }
        if keys[REFERRED_BY].is_key() {
            touch(self.reference_table(), keys[REFERRED_BY].hash());
        }
        if let Some(book) = &self.codes
            && keys[OWN_CODE].is_key()
        {
            touch(&book.codes, keys[OWN_CODE].hash());
        }
    }

    #[inline]
    fn prefetch_slots(&self, keys: &[PendingKey; 3]) {
        self.prefetch(keys, KeyTable::prefetch_slot);
    }

    /// A new id needs no key (its slot is empty); an id seen before as someone's
    /// referrer does, and so does every `referredBy`.
    #[inline]
    fn prefetch_keys(&self, keys: &[PendingKey; 3]) {
        self.prefetch(keys, KeyTable::prefetch_key);
    }

    #[inline(always)]
    fn add_one_user(&mut self, keys: &[PendingKey; 3], extras: &[PendingExtra; 3]) -> Result<(), ChainError> {
        let id = &keys[ID];
        if !id.is_key() {
            if id.is_absent() {
                self.malformed.user_without_id += 1;
                self.examples.push(FindingKind::Malformed, "a user document has no id".into(), Vec::new());
            } else {
                self.malformed.user_id_type += 1;
                let type_name = id.wrong_type(&extras[ID]).unwrap_or_default();
                self.examples.push(FindingKind::Malformed, format!("a user id is {type_name}"), Vec::new());
            }
            return Ok(());
        }
        let (node, added) = self.node(id, &extras[ID])?;
        // A node just added cannot be a user yet.
        if !added && self.is_user.get(node) {
            self.malformed.duplicate_user_id += 1;
            if self.examples.wants(FindingKind::Malformed) {
                let who = self.ids.key(node).to_string();
                self.examples.push(FindingKind::Malformed, format!("user {who} appears twice"), vec![who]);
            }
            return Ok(());
        }
        self.is_user.set(node);
        self.users += 1;

        let reference = &keys[REFERRED_BY];
        let has_reference = reference.is_key();
        if !has_reference && !reference.is_absent() {
            self.malformed.referred_by_type += 1;
            if self.examples.wants(FindingKind::Malformed) {
                let who = self.ids.key(node).to_string();
                let type_name = reference.wrong_type(&extras[REFERRED_BY]).unwrap_or_default();
                self.examples.push(
                    FindingKind::Malformed,
                    format!("user {who}: referredBy is {type_name}; treated as no referrer"),
                    vec![who],
                );
            }
        }
        if self.codes.is_none() {
            if has_reference {
                let (parent, _) = self.node(reference, &extras[REFERRED_BY])?;
                if let Some(slot) = self.parent.get_mut(node as usize) {
                    *slot = parent;
                }
            }
            return Ok(());
        }
        self.add_codes(node, keys, extras)
    }

    /// Referral-code mode: remembers the code a user references and the code it owns.
    fn add_codes(&mut self, node: u32, keys: &[PendingKey; 3], extras: &[PendingExtra; 3]) -> Result<(), ChainError> {
        let reference = &keys[REFERRED_BY];
        if reference.is_key() {
            let code = self.code(reference, &extras[REFERRED_BY])?;
            if let Some(book) = &mut self.codes {
                book.referenced[node as usize] = code;
            }
        }
        let own = &keys[OWN_CODE];
        if own.is_absent() {
            return Ok(());
        }
        if !own.is_key() {
            self.malformed.referral_code_type += 1;
            if self.examples.wants(FindingKind::Malformed) {
                let who = self.ids.key(node).to_string();
                let type_name = own.wrong_type(&extras[OWN_CODE]).unwrap_or_default();
                self.examples.push(
                    FindingKind::Malformed,
                    format!("user {who}: referral code is {type_name}"),
                    vec![who],
                );
            }
            return Ok(());
        }
        let code = self.code(own, &extras[OWN_CODE])?;
        let Some(book) = &mut self.codes else { return Ok(()) };
        let owner = &mut book.owner[code as usize];
        if *owner == NONE {
            *owner = node;
        } else {
            self.malformed.duplicate_referral_code += 1;
            if self.examples.wants(FindingKind::Malformed) {
                let first = self.ids.key(*owner).to_string();
                let who = self.ids.key(node).to_string();
                let code_text = own.to_user_key(&extras[OWN_CODE]).map(|k| k.to_string()).unwrap_or_default();
                self.examples.push(
                    FindingKind::Malformed,
                    format!("users {first} and {who} both claim referral code {code_text}"),
                    vec![first, who],
                );
            }
        }
        Ok(())
    }

    fn code(&mut self, key: &PendingKey, extra: &PendingExtra) -> Result<u32, ChainError> {
        let Some(book) = &mut self.codes else { return Ok(NONE) };
        let (code, added) = book.codes.intern_pending(key, extra).map_err(ChainError::Codes)?;
        if added {
            book.owner.push(NONE);
        }
        Ok(code)
    }
}

/// One cycle: its length and the member at which a repair breaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cycle {
    cut_at: u32,
    length: u32,
}

/// Where a user stands, as the classification found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserClass {
    /// Hops to a user with no referrer (or to a referrer that names no user).
    Depth(u8),
    InCycle,
    SelfReferral,
    BelowCycle,
}

/// The classified user graph; referral records are checked against it.
#[derive(Debug)]
pub struct ChainAnalysis {
    options: ChainOptions,
    ids: KeyTable,
    parent: Vec<u32>,
    is_user: Bits,
    codes: Option<CodeBook>,
    /// Per node: depth (≤ DEPTH_CAP) or one of the state markers.
    mark: Vec<u8>,
    cycles: Vec<Cycle>,
    malformed: MalformedCounts,
    records: RecordCounts,
    examples: Examples,
    users: u64,
    batch: usize,
    pending_records: Vec<PendingRecord>,
    /// Scratch of [`ChainAnalysis::flush_records`], kept to avoid allocating per batch.
    record_walks: Vec<RecordWalk>,
}

impl ChainAnalysis {
    /// Number of nodes (users and referrers that are not users).
    pub fn nodes(&self) -> usize {
        self.parent.len()
    }

    /// Bytes held by the graph, for the benchmark's accounting.
    pub fn heap_bytes(&self) -> usize {
        self.ids.heap_bytes() + self.parent.capacity() * 4 + self.mark.capacity() + self.is_user.0.capacity() * 8
    }

    /// Whether node `n` is a user (not a referrer only named by others).
    pub fn is_user(&self, node: u32) -> bool {
        self.is_user.get(node)
    }

    /// The node of a user id or referrer id, if the check saw it.
    pub fn node_of(&self, key: KeyRef<'_>) -> Option<u32> {
        self.ids.get(key)
    }

    /// The id of node `n`.
    pub fn key(&self, node: u32) -> UserKey {
        self.ids.key(node)
    }

    /// The parent array: per node its referrer's node, or [`NONE`].
    pub fn parents(&self) -> &[u32] {
        &self.parent
    }

    /// The class of node `n`.
    pub fn class(&self, node: u32) -> UserClass {
        match self.mark[node as usize] {
            IN_CYCLE => UserClass::InCycle,
            SELF_REFERRAL => UserClass::SelfReferral,
            BELOW_CYCLE => UserClass::BelowCycle,
            depth => UserClass::Depth(depth.min(DEPTH_CAP)),
        }
    }

    /// The one pass: every node gets a depth or a cycle state. A walk goes up from an
    /// unvisited node, marking it "on path", until it reaches a root, a node already
    /// classified, or a node on its own path (a new cycle); a second walk over the
    /// same path writes the result. Placeholders (referrers that are not users) have
    /// no parent, so they end walks as roots at depth 0.
    fn classify(&mut self) {
        let n = self.parent.len();
        let mut mark = huge_page_vec(n);
        mark.resize(n, UNVISITED);
        self.mark = mark;
        let parent = &self.parent;
        let mark = &mut self.mark;
        for start in 0..n as u32 {
            // The walk from `start` reads its referrer's mark, a miss at random in an
            // array of one byte per node; ask for the one CLASSIFY_AHEAD nodes on now.
            if let Some(&ahead) = parent.get(start as usize + CLASSIFY_AHEAD)
                && let Some(m) = mark.get(ahead as usize)
            {
                prefetch(m);
            }
            if mark[start as usize] != UNVISITED {
                continue;
            }
            let mut v = start;
            let mut steps: u64 = 0;
            let end = loop {
                mark[v as usize] = ON_PATH;
                steps += 1;
                let p = parent[v as usize];
                if p == NONE {
                    break Some(0u64);
                }
                match mark[p as usize] {
                    UNVISITED => v = p,
                    depth @ 0..=DEPTH_CAP => break Some(u64::from(depth) + 1),
                    ON_PATH => {
                        let cycle = close_cycle(parent, mark, p, &self.ids);
                        self.cycles.push(cycle);
                        break None;
                    }
                    _ => break None,
                }
            };
            match end {
                // `last` is the depth of the path's last node; the start is steps-1 above it.
                Some(last) => {
                    let mut depth = last + steps - 1;
                    let mut x = start;
                    for _ in 0..steps {
                        mark[x as usize] = depth.min(u64::from(DEPTH_CAP)) as u8;
                        depth = depth.saturating_sub(1);
                        x = parent[x as usize];
                    }
                }
                None => {
                    let mut x = start;
                    while x != NONE && mark[x as usize] == ON_PATH {
                        mark[x as usize] = BELOW_CYCLE;
                        x = parent[x as usize];
                    }
                }
            }
        }
        self.collect_cycle_examples();
    }

    fn collect_cycle_examples(&mut self) {
        for i in 0..self.cycles.len() {
            let cycle = self.cycles[i];
            if cycle.length == 1 {
                if self.examples.wants(FindingKind::SelfReferral) {
                    let who = self.ids.key(cycle.cut_at).to_string();
                    let value = self.current_reference(cycle.cut_at).map(|k| k.to_string()).unwrap_or_default();
                    self.examples.push(
                        FindingKind::SelfReferral,
                        format!("user {who} refers itself (referredBy {value})"),
                        vec![who],
                    );
                }
                continue;
            }
            if !self.examples.wants(FindingKind::Cycle) {
                continue;
            }
            let mut members = Vec::new();
            let mut x = cycle.cut_at;
            for _ in 0..cycle.length.min(CYCLE_EXAMPLE_MEMBERS as u32) {
                members.push(self.ids.key(x).to_string());
                x = self.parent[x as usize];
            }
            let mut message = format!("cycle of {} users: {}", cycle.length, members.join(" -> "));
            if cycle.length as usize > CYCLE_EXAMPLE_MEMBERS {
                message.push_str(" -> …");
            } else {
                message.push_str(&format!(" -> {}", members[0]));
            }
            self.examples.push(FindingKind::Cycle, message, members);
        }
    }

    /// The value `referredBy` holds for a user with a referrer: the referrer's id, or
    /// in referral-code mode the code.
    fn current_reference(&self, node: u32) -> Option<UserKey> {
        let p = *self.parent.get(node as usize)?;
        if p == NONE {
            return None;
        }
        match &self.codes {
            None => Some(self.ids.key(p)),
            Some(book) => {
                let code = *book.referenced.get(node as usize)?;
                (code != NONE).then(|| book.codes.key(code))
            }
        }
    }

    /// Checks one referral record: `referrer` must be the `tier`-th ancestor of
    /// `referred`. Referral records name users by id in both modes. Records are
    /// checked in batches; [`ChainAnalysis::report`] checks what is left.
    pub fn add_record(
        &mut self,
        record_id: FieldValue<'_>,
        referrer: FieldValue<'_>,
        referred: FieldValue<'_>,
        tier: FieldValue<'_>,
    ) {
        self.records.total += 1;
        let record = || match record_id {
            FieldValue::Key(k) => k.to_owned_key().to_string(),
            _ => "(without _id)".into(),
        };
        match (referrer, referred, tier) {
            (FieldValue::Key(a), FieldValue::Key(b), FieldValue::Key(KeyRef::Int(t))) if t >= 1 => {
                let record = PendingRecord {
                    record_id: PendingValue::new(record_id),
                    referrer: OwnedKey::new(a),
                    referred: OwnedKey::new(b),
                    tier: t,
                };
                // The slots arrive while the rest of the batch does.
                self.ids.prefetch_slot(record.referred.hash());
                self.ids.prefetch_slot(record.referrer.hash());
                self.pending_records.push(record);
                if self.pending_records.len() >= self.batch {
                    self.flush_records();
                }
            }
            (FieldValue::Absent, _, _) | (_, FieldValue::Absent, _) | (_, _, FieldValue::Absent) => {
                self.malformed.record_missing_field += 1;
                if self.examples.wants(FindingKind::Malformed) {
                    self.examples.push(
                        FindingKind::Malformed,
                        format!("referral record {} lacks its referrer, referred user or tier", record()),
                        Vec::new(),
                    );
                }
            }
            (a, b, t) => {
                self.malformed.record_field_type += 1;
                if self.examples.wants(FindingKind::Malformed) {
                    let what = match (a, b, t) {
                        (FieldValue::WrongType(n), _, _) => format!("referrer is {n}"),
                        (_, FieldValue::WrongType(n), _) => format!("referred user is {n}"),
                        (_, _, FieldValue::Key(KeyRef::Int(t))) => format!("tier is {t}, below 1"),
                        (_, _, t) => format!("tier is {}", tier_type(t)),
                    };
                    self.examples.push(
                        FindingKind::Malformed,
                        format!("referral record {}: {what}", record()),
                        Vec::new(),
                    );
                }
            }
        }
    }

    /// Checks the pending records. Their slots were prefetched as they came; the keys
    /// of the whole batch are prefetched before the first lookup, and the ancestor
    /// walks advance one step per round across the batch, so that the cache misses of
    /// different records overlap instead of queueing.
    fn flush_records(&mut self) {
        let pending = std::mem::take(&mut self.pending_records);
        let mut walks = std::mem::take(&mut self.record_walks);
        for record in &pending {
            self.ids.prefetch_key(record.referred.hash());
            self.ids.prefetch_key(record.referrer.hash());
        }
        let max = i64::from(self.options.max_depth);
        walks.clear();
        walks.extend(pending.iter().map(|record| {
            let referred = self.ids.get_owned(&record.referred).filter(|&n| self.is_user.get(n));
            RecordWalk {
                referred,
                referrer: self.ids.get_owned(&record.referrer),
                ancestor: referred.unwrap_or(NONE),
                reached: 0,
                // A record with an unknown user or a tier above the maximum is judged
                // without a walk; every other walk takes at most max_depth steps.
                stopped: referred.is_none() || record.tier > max,
            }
        }));
        loop {
            let mut moved = false;
            for (walk, record) in walks.iter_mut().zip(&pending) {
                if walk.stopped || walk.reached >= record.tier {
                    continue;
                }
                let p = self.parent[walk.ancestor as usize];
                if p == NONE {
                    walk.stopped = true;
                } else {
                    walk.ancestor = p;
                    walk.reached += 1;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        for (walk, record) in walks.iter().zip(&pending) {
            self.judge_record(record, walk);
        }
        self.pending_records = pending;
        self.pending_records.clear();
        self.record_walks = walks;
    }

    fn judge_record(&mut self, record: &PendingRecord, walk: &RecordWalk) {
        let RecordWalk { referred: referred_node, referrer: referrer_node, ancestor, reached, stopped: _ } = *walk;
        let record_name = || match record.record_id.field() {
            FieldValue::Key(k) => k.to_owned_key().to_string(),
            _ => "(without _id)".into(),
        };
        let tier = record.tier;
        let referred = record.referred.key_ref();
        let referrer = record.referrer.key_ref();
        if referred_node.is_none() {
            self.records.unknown_referred += 1;
            if self.examples.wants(FindingKind::UnknownReferred) {
                let who = referred.to_owned_key().to_string();
                self.examples.push(
                    FindingKind::UnknownReferred,
                    format!("referral record {} names referred user {who}, which does not exist", record_name()),
                    vec![who],
                );
            }
            return;
        }
        if tier > i64::from(self.options.max_depth) {
            self.records.tier_too_high += 1;
            if self.examples.wants(FindingKind::TierTooHigh) {
                let who = referred.to_owned_key().to_string();
                self.examples.push(
                    FindingKind::TierTooHigh,
                    format!(
                        "referral record {}: tier {tier} exceeds maxChainDepth {} (referred user {who})",
                        record_name(),
                        self.options.max_depth
                    ),
                    vec![who],
                );
            }
            return;
        }
        if reached == tier && referrer_node == Some(ancestor) {
            if !self.is_user.get(ancestor) {
                self.records.unknown_referrer += 1;
                if self.examples.wants(FindingKind::UnknownReferrer) {
                    let who = referrer.to_owned_key().to_string();
                    self.examples.push(
                        FindingKind::UnknownReferrer,
                        format!("referral record {} names referrer {who}, which does not exist", record_name()),
                        vec![who],
                    );
                }
            }
            return;
        }
        self.records.wrong_referrer += 1;
        if self.examples.wants(FindingKind::WrongReferrer) {
            let who = referred.to_owned_key().to_string();
            let named = referrer.to_owned_key().to_string();
            let chain_says = if reached == tier {
                format!("the chain says {}", self.ids.key(ancestor))
            } else {
                format!("the chain has only {reached} referrer(s) above that user")
            };
            self.examples.push(
                FindingKind::WrongReferrer,
                format!(
                    "referral record {}: tier {tier} referrer of user {who} is {named} in the record, {chain_says}",
                    record_name()
                ),
                vec![who, named],
            );
        }
    }

    /// The report, with examples gathered from one more pass over the users. Checks
    /// the referral records still pending first.
    pub fn report(&mut self) -> ChainReport {
        self.flush_records();
        let mut examples = Examples::new(self.options.examples_per_kind);
        let mut histogram = vec![0u64; usize::from(DEPTH_CAP) + 1];
        let (mut roots, mut in_cycles, mut below, mut orphans, mut deeper) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut missing = Bits::default();
        let mut missing_count = 0u64;
        let max = self.options.max_depth;
        for node in 0..self.parent.len() as u32 {
            if !self.is_user.get(node) {
                continue;
            }
            let p = self.parent[node as usize];
            if p == NONE {
                roots += 1;
            } else if !self.is_user.get(p) {
                orphans += 1;
                if !missing.get(p) {
                    missing.set(p);
                    missing_count += 1;
                }
                if examples.wants(FindingKind::Orphan) {
                    let who = self.ids.key(node).to_string();
                    let value = self.current_reference(node).map(|k| k.to_string()).unwrap_or_default();
                    examples.push(
                        FindingKind::Orphan,
                        format!("user {who} has referredBy {value}, which names no user"),
                        vec![who],
                    );
                }
            }
            match self.class(node) {
                UserClass::Depth(d) => {
                    histogram[usize::from(d)] += 1;
                    if d > max {
                        deeper += 1;
                    }
                }
                UserClass::InCycle => in_cycles += 1,
                UserClass::SelfReferral => {}
                UserClass::BelowCycle => below += 1,
            }
        }
        let self_referrals = self.cycles.iter().filter(|c| c.length == 1).count() as u64;
        let cycles = self.cycles.len() as u64 - self_referrals;
        let mut all_examples = self.examples.all();
        all_examples.extend(examples.all());
        all_examples.sort_by_key(|e| FindingKind::ALL.iter().position(|k| *k == e.kind));
        let violations = cycles
            + self_referrals
            + orphans
            + self.records.tier_too_high
            + self.records.bad()
            + self.malformed.total();
        ChainReport {
            database: String::new(),
            users_collection: String::new(),
            referrals_collection: String::new(),
            max_chain_depth: max,
            referred_by_holds: self.options.holds,
            users: self.users,
            roots,
            violations,
            cycles,
            users_in_cycles: in_cycles,
            users_below_cycles: below,
            self_referrals,
            orphans,
            missing_referrers: missing_count,
            deeper_than_max: deeper,
            records: self.records,
            malformed: self.malformed,
            depth_distribution: histogram
                .iter()
                .enumerate()
                .filter(|(_, users)| **users > 0)
                .map(|(depth, users)| DepthCount { depth: depth as u32, users: *users })
                .collect(),
            examples: all_examples,
            warnings: Vec::new(),
        }
    }

    /// The updates that would break every cycle (at its smallest member id) and
    /// clear every orphan reference. Each filter names the current value, so an
    /// update applies only to data that has not changed since the check.
    pub fn repair_plan(&self, user_id_field: &str, referred_by_field: &str) -> Vec<RepairUpdate> {
        let mut updates = Vec::new();
        let update = |node: u32, reason: RepairReason, note: String| {
            let value = self.current_reference(node)?;
            let mut filter = mongodb::bson::Document::new();
            filter.insert(user_id_field, self.ids.key(node).to_bson());
            filter.insert(referred_by_field, value.to_bson());
            let mut unset = mongodb::bson::Document::new();
            unset.insert(referred_by_field, "");
            let mut change = mongodb::bson::Document::new();
            change.insert("$unset", unset);
            Some(RepairUpdate {
                reason,
                note,
                filter: mongodb::bson::Bson::Document(filter).into_relaxed_extjson(),
                update: mongodb::bson::Bson::Document(change).into_relaxed_extjson(),
            })
        };
        for cycle in &self.cycles {
            let (reason, note) = if cycle.length == 1 {
                (RepairReason::SelfReferral, "the user refers itself".to_string())
            } else {
                (RepairReason::Cycle, format!("breaks a cycle of {} users at its smallest id", cycle.length))
            };
            updates.extend(update(cycle.cut_at, reason, note));
        }
        for node in 0..self.parent.len() as u32 {
            let p = self.parent[node as usize];
            if self.is_user.get(node) && p != NONE && !self.is_user.get(p) {
                updates.extend(update(node, RepairReason::Orphan, "the referrer names no user".into()));
            }
        }
        updates
    }
}

fn tier_type(value: FieldValue<'_>) -> &'static str {
    match value {
        FieldValue::Key(KeyRef::Str(_)) => "a string",
        FieldValue::Key(KeyRef::ObjectId(_)) => "an ObjectId",
        other => type_name_of(other),
    }
}

/// Marks the cycle that contains `entry` and returns it, cut at its smallest id.
fn close_cycle(parent: &[u32], mark: &mut [u8], entry: u32, ids: &KeyTable) -> Cycle {
    let mut length = 0u32;
    let mut cut_at = entry;
    let mut x = entry;
    loop {
        mark[x as usize] = IN_CYCLE;
        length += 1;
        if x != cut_at && ids.key_ref(x).to_owned_key() < ids.key_ref(cut_at).to_owned_key() {
            cut_at = x;
        }
        x = parent[x as usize];
        if x == entry {
            break;
        }
    }
    if length == 1 {
        mark[entry as usize] = SELF_REFERRAL;
    }
    Cycle { cut_at, length }
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

/// The per-user ancestor walk a first implementation would do: for every user, follow
/// `referredBy` upwards with a set of the users seen, until a root or a repeat. It is
/// the baseline the benchmark compares with, and a second opinion in the tests.
pub fn naive_class(parent: &[u32], node: u32) -> UserClass {
    let mut seen = HashSet::new();
    let mut v = node;
    let mut depth: u64 = 0;
    loop {
        if !seen.insert(v) {
            return if v == node {
                if parent[node as usize] == node { UserClass::SelfReferral } else { UserClass::InCycle }
            } else {
                UserClass::BelowCycle
            };
        }
        let p = parent[v as usize];
        if p == NONE {
            return UserClass::Depth(depth.min(u64::from(DEPTH_CAP)) as u8);
        }
        v = p;
        depth += 1;
    }
}

#[cfg(test)]
#[path = "chains_tests.rs"]
mod tests;
