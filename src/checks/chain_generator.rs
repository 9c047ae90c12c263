//! A deterministic population of users and referral records with known, injected
//! defects, for the benchmark and the integration tests.
//!
//! Every value is a pure function of the user's number, so the generator holds no
//! state and costs no memory: user `i` gets an ObjectId made from `i`, and unless it
//! is a root or a defect, a referrer drawn uniformly from the users before it (the
//! random recursive tree model of word-of-mouth growth). In every block of 100,000
//! users the first 60 are defects whose count [`SyntheticPopulation::injected`]
//! states exactly: self-referrals, 3-user cycles, orphans, a wrong-type `referredBy`,
//! and referral records with a tier above the maximum or a wrong referrer.

/// Users per block of injected defects.
pub const BLOCK: u64 = 100_000;
const SELF_REFERRALS: std::ops::Range<u64> = 0..10;
const CYCLES: std::ops::Range<u64> = 10..40;
const ORPHANS: std::ops::Range<u64> = 40..50;
const MALFORMED: std::ops::Range<u64> = 50..55;
/// Users whose records include one injected bad record (tier too high / wrong referrer).
const TIER_TOO_HIGH: std::ops::Range<u64> = 60..65;
const WRONG_REFERRER: std::ops::Range<u64> = 65..70;
const CYCLE_LENGTH: u64 = 3;

/// Who a generated user names as referrer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticReferrer {
    None,
    User(u64),
    /// An id no user has.
    Missing([u8; 12]),
    /// A `referredBy` of the wrong type (the generator writes an array).
    Malformed,
}

/// One generated referral record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticRecord {
    pub referrer: u64,
    pub referred: u64,
    pub tier: u32,
}

/// Defects the generator put in, which a correct check reports exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InjectedDefects {
    pub self_referrals: u64,
    pub cycles: u64,
    pub orphans: u64,
    pub malformed_referred_by: u64,
    pub tier_too_high: u64,
    pub wrong_referrer: u64,
}

/// The population: its size, its shape and the maximum chain depth it is checked with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticPopulation {
    pub users: u64,
    pub max_depth: u8,
    /// Share of users, in thousandths, who signed up without a referrer.
    pub root_permille: u64,
    pub seed: u64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn count_in(range: std::ops::Range<u64>, users: u64) -> u64 {
    let full = users / BLOCK;
    let rest = users % BLOCK;
    full * (range.end - range.start) + rest.clamp(range.start, range.end) - range.start
}

impl SyntheticPopulation {
    pub fn new(users: u64, max_depth: u8) -> SyntheticPopulation {
        SyntheticPopulation { users, max_depth, root_permille: 200, seed: 0x5eed }
    }

    /// The ObjectId of user `i`: a timestamp that advances every 64 users, fixed
    /// machine bytes, and `i` as the counter, so ids are unique and time-ordered.
    pub fn id(&self, i: u64) -> [u8; 12] {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&(0x6500_0000u32.wrapping_add((i / 64) as u32)).to_be_bytes());
        id[4..9].copy_from_slice(&[0x5a, 0x11, 0x22, 0x33, 0x44]);
        id[9..].copy_from_slice(&(i as u32).to_be_bytes()[1..]);
        id
    }

    fn missing_id(&self, i: u64) -> [u8; 12] {
        let mut id = self.id(i);
        id[4..9].copy_from_slice(&[0xee, 0xee, 0xee, 0xee, 0xee]);
        id
    }

    /// Who user `i` names as referrer.
    pub fn referrer(&self, i: u64) -> SyntheticReferrer {
        let offset = i % BLOCK;
        if SELF_REFERRALS.contains(&offset) {
            return SyntheticReferrer::User(i);
        }
        if CYCLES.contains(&offset) {
            let position = (offset - CYCLES.start) % CYCLE_LENGTH;
            let first = i - position;
            // A cycle cut short by the end of the population closes early; a lone
            // member left over is a plain root, not a self-referral.
            let last = (first + CYCLE_LENGTH - 1).min(self.users.saturating_sub(1));
            return match (first == last, i == last) {
                (true, _) => SyntheticReferrer::None,
                (false, true) => SyntheticReferrer::User(first),
                (false, false) => SyntheticReferrer::User(i + 1),
            };
        }
        if ORPHANS.contains(&offset) {
            return SyntheticReferrer::Missing(self.missing_id(i));
        }
        if MALFORMED.contains(&offset) {
            return SyntheticReferrer::Malformed;
        }
        let r = splitmix(self.seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d));
        if i == 0 || (r >> 40) % 1000 < self.root_permille {
            SyntheticReferrer::None
        } else {
            SyntheticReferrer::User((r & 0xff_ffff_ffff) % i)
        }
    }

    /// The referral records of user `i`: one per real ancestor up to the maximum
    /// depth, plus the injected bad ones.
    pub fn records(&self, i: u64, out: &mut Vec<SyntheticRecord>) {
        out.clear();
        let mut at = i;
        for tier in 1..=u32::from(self.max_depth) {
            match self.referrer(at) {
                SyntheticReferrer::User(p) => {
                    out.push(SyntheticRecord { referrer: p, referred: i, tier });
                    at = p;
                }
                _ => break,
            }
        }
        let offset = i % BLOCK;
        if TIER_TOO_HIGH.contains(&offset) {
            out.push(SyntheticRecord { referrer: i, referred: i, tier: u32::from(self.max_depth) + 1 });
        }
        if WRONG_REFERRER.contains(&offset) && self.referrer(i) != SyntheticReferrer::User(i) {
            out.push(SyntheticRecord { referrer: i, referred: i, tier: 1 });
        }
    }

    /// The defects a correct check must report.
    pub fn injected(&self) -> InjectedDefects {
        let cycle_users = count_in(CYCLES, self.users);
        let complete_cycles = cycle_users / CYCLE_LENGTH + u64::from(cycle_users % CYCLE_LENGTH >= 2);
        InjectedDefects {
            self_referrals: count_in(SELF_REFERRALS, self.users),
            cycles: complete_cycles,
            orphans: count_in(ORPHANS, self.users),
            malformed_referred_by: count_in(MALFORMED, self.users),
            tier_too_high: count_in(TIER_TOO_HIGH, self.users),
            wrong_referrer: count_in(WRONG_REFERRER, self.users),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::chains::{ChainBuilder, ChainOptions, FieldValue, KeyRef};

    fn check(population: &SyntheticPopulation) -> crate::checks::chains::ChainReport {
        let mut builder = ChainBuilder::new(ChainOptions { max_depth: population.max_depth, ..Default::default() }, 0);
        for i in 0..population.users {
            let id = population.id(i);
            let referred_by = match population.referrer(i) {
                SyntheticReferrer::None => FieldValue::Absent,
                SyntheticReferrer::User(p) => FieldValue::Key(KeyRef::ObjectId(population.id(p))),
                SyntheticReferrer::Missing(m) => FieldValue::Key(KeyRef::ObjectId(m)),
                SyntheticReferrer::Malformed => FieldValue::WrongType("an array"),
            };
            builder.add_user(FieldValue::Key(KeyRef::ObjectId(id)), referred_by, FieldValue::Absent).unwrap();
        }
        let mut analysis = builder.finish().unwrap();
        let mut records = Vec::new();
        for i in 0..population.users {
            population.records(i, &mut records);
            for r in &records {
                analysis.add_record(
                    FieldValue::Absent,
                    FieldValue::Key(KeyRef::ObjectId(population.id(r.referrer))),
                    FieldValue::Key(KeyRef::ObjectId(population.id(r.referred))),
                    FieldValue::Key(KeyRef::Int(i64::from(r.tier))),
                );
            }
        }
        analysis.report()
    }

    #[test]
    fn the_engine_finds_exactly_the_injected_defects() {
        for users in [0, 1, 35, 250_000, 100_041] {
            let population = SyntheticPopulation::new(users, 3);
            let injected = population.injected();
            let report = check(&population);
            assert_eq!(report.users, users);
            assert_eq!(report.self_referrals, injected.self_referrals, "{users}");
            assert_eq!(report.cycles, injected.cycles, "{users}");
            assert_eq!(report.orphans, injected.orphans, "{users}");
            assert_eq!(report.malformed.referred_by_type, injected.malformed_referred_by, "{users}");
            assert_eq!(report.records.tier_too_high, injected.tier_too_high, "{users}");
            assert_eq!(report.records.wrong_referrer, injected.wrong_referrer, "{users}");
            assert_eq!(report.records.unknown_referred + report.records.unknown_referrer, 0);
        }
    }

    #[test]
    fn ids_are_unique_and_the_shape_is_deterministic() {
        let population = SyntheticPopulation::new(300_000, 3);
        let ids: std::collections::HashSet<[u8; 12]> = (0..300_000).map(|i| population.id(i)).collect();
        assert_eq!(ids.len(), 300_000);
        assert_eq!(population.referrer(123_456), SyntheticPopulation::new(300_000, 3).referrer(123_456));
        let report = check(&SyntheticPopulation::new(200_000, 3));
        // About a fifth of the users are roots (plus the 110 defects per block without one).
        assert!((38_000..42_500).contains(&report.roots), "{}", report.roots);
    }
}
