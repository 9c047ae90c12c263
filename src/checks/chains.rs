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

pub use super::chain_ingest::{ChainBuilder, ChainError};
pub use super::chain_keys::{
    FieldValue, KeyRef, KeyTable, KeyTableError, NONE, OwnedKey, PendingExtra, PendingKey, UserKey, key_hash,
};
pub use super::chain_report::{
    ChainExample, ChainOptions, ChainReport, DepthCount, FindingKind, MalformedCounts, RecordCounts, RepairReason,
    RepairUpdate,
};

#[cfg(test)]
use super::chain_ingest::LEAD;
use super::chain_ingest::{Bits, CodeBook, PendingValue, UserGraph};
use super::chain_keys::{huge_page_vec, prefetch};
use super::chain_report::Examples;

/// Nodes the classification pass looks ahead to prefetch a referrer's mark.
const CLASSIFY_AHEAD: usize = 16;

/// Referral records are checked in batches: lookups prefetched, then the ancestor
/// walks advance in lockstep, so the misses of different records overlap.
#[cfg(not(test))]
pub(super) const BATCH: usize = 32;
#[cfg(test)]
pub(super) const BATCH: usize = 5;

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

    /// The analysis of the users ingested ([`ChainBuilder::finish`]): classifies them,
    /// then takes referral records in batches of `batch`.
    pub(super) fn classify(graph: UserGraph, batch: usize) -> ChainAnalysis {
        let UserGraph { options, ids, parent, is_user, codes, malformed, examples, users } = graph;
        let mut analysis = ChainAnalysis {
            options,
            mark: Vec::new(),
            ids,
            parent,
            is_user,
            codes,
            cycles: Vec::new(),
            malformed,
            records: RecordCounts::default(),
            examples,
            users,
            batch,
            pending_records: Vec::with_capacity(BATCH),
            record_walks: Vec::with_capacity(BATCH),
        };
        analysis.classify_nodes();
        analysis
    }

    /// The one pass: every node gets a depth or a cycle state. A walk goes up from an
    /// unvisited node, marking it "on path", until it reaches a root, a node already
    /// classified, or a node on its own path (a new cycle); a second walk over the
    /// same path writes the result. Placeholders (referrers that are not users) have
    /// no parent, so they end walks as roots at depth 0.
    fn classify_nodes(&mut self) {
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

fn type_name_of(value: FieldValue<'_>) -> &'static str {
    match value {
        FieldValue::WrongType(name) => name,
        FieldValue::Absent => "absent",
        FieldValue::Key(_) => "a key",
    }
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
