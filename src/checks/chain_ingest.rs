//! The chain check's streaming pass: user documents in, one by one, through a short
//! prefetch pipeline, into the user graph ([`ChainBuilder`]), which
//! [`ChainBuilder::finish`] hands to the analysis ([`super::chains`]).

use crate::crd::mongodb::ReferredByHolds;

use super::chain_keys::{FieldValue, KeyTable, KeyTableError, NONE, OwnedKey, PendingExtra, PendingKey, huge_page_vec};
use super::chain_report::{ChainOptions, Examples, FindingKind, MalformedCounts};
use super::chains::{BATCH, ChainAnalysis};

/// Documents a user waits between the prefetch of its index slots and the prefetch
/// of the keys they point at, and again before it is interned. Table lookups at
/// random in hundreds of MB each wait for two cache misses (a slot, then a key); this
/// way every lookup finds both in cache and the misses of many documents overlap.
/// Long enough for memory to answer, short enough that the lines are still cached.
#[cfg(not(test))]
pub(super) const LEAD: usize = 16;
/// Small in tests, so that the random graphs of the property tests wrap around the
/// pipeline (a referrer interned while its user waits, a duplicate inside it).
#[cfg(test)]
pub(super) const LEAD: usize = 3;

/// A field value copied out of its document, to wait in the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PendingValue {
    Absent,
    Key(OwnedKey),
    WrongType(&'static str),
}

impl PendingValue {
    pub(super) fn new(value: FieldValue<'_>) -> PendingValue {
        match value {
            FieldValue::Absent => PendingValue::Absent,
            FieldValue::Key(key) => PendingValue::Key(OwnedKey::new(key)),
            FieldValue::WrongType(name) => PendingValue::WrongType(name),
        }
    }

    pub(super) fn field(&self) -> FieldValue<'_> {
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

/// Bit per node: is it a user (rather than a referrer nobody has seen as a user)?
#[derive(Debug, Default)]
pub(super) struct Bits(pub(super) Vec<u64>);

impl Bits {
    pub(super) fn get(&self, i: u32) -> bool {
        self.0.get(i as usize / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    pub(super) fn set(&mut self, i: u32) {
        let word = i as usize / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (i % 64);
    }
}

/// Referral codes and who owns them (referral-code mode only).
#[derive(Debug, Default)]
pub(super) struct CodeBook {
    pub(super) codes: KeyTable,
    pub(super) owner: Vec<u32>,
    /// Per node: the code its `referredBy` holds, NONE when none. Kept after
    /// resolution because the repair plan must name the current value.
    pub(super) referenced: Vec<u32>,
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
pub(super) struct UserGraph {
    pub(super) options: ChainOptions,
    pub(super) ids: KeyTable,
    /// Per node: parent node (id mode) or referenced code (code mode, until finish).
    pub(super) parent: Vec<u32>,
    pub(super) is_user: Bits,
    pub(super) codes: Option<CodeBook>,
    pub(super) malformed: MalformedCounts,
    pub(super) examples: Examples,
    pub(super) users: u64,
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
        let graph = UserGraph { options, ids, parent, is_user, codes: book, malformed, examples, users };
        Ok(ChainAnalysis::classify(graph, self.batch))
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
