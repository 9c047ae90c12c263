//! The referral engine's own settings (the seed's `REFERRAL_*` variables), typed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `referral.maxChainDepth` when the spec leaves it out, and the chain check's
/// default outside a cluster: the guide's three tiers.
pub const DEFAULT_MAX_CHAIN_DEPTH: u8 = 3;

/// Settings of the referral engine itself. Each one becomes a `REFERRAL_*` environment
/// variable in every worker, in the unit the service expects (milliseconds or seconds).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferralSettings {
    /// How many tiers of referrers are rewarded for one signup (REFERRAL_MAX_CHAIN_DEPTH).
    /// Between 1 and 10; the chain check reports chains deeper than this. Default 3.
    #[serde(default = "default_max_chain_depth")]
    #[schemars(range(min = 1, max = 10))]
    pub max_chain_depth: u8,
    /// How often the reward processor drains its queue, as a duration such as `5s`
    /// (REFERRAL_REWARD_PROCESSING_INTERVAL, in milliseconds). Default 5s.
    #[serde(default = "default_reward_processing_interval")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub reward_processing_interval: String,
    /// How often stale queue entries are removed, such as `1h`
    /// (REFERRAL_QUEUE_CLEANUP_INTERVAL, in milliseconds). Default 1h.
    #[serde(default = "default_queue_cleanup_interval")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub queue_cleanup_interval: String,
    /// How long cached referral data lives in Redis, such as `300s`
    /// (REFERRAL_CACHE_TTL, in whole seconds). Default 300s.
    #[serde(default = "default_cache_ttl", rename = "cacheTTL")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub cache_ttl: String,
    /// How often a failed reward is retried before it is given up (REFERRAL_MAX_RETRIES).
    /// Between 0 and 100. Default 3.
    #[serde(default = "default_max_retries")]
    #[schemars(range(max = 100))]
    pub max_retries: u32,
}

impl Default for ReferralSettings {
    fn default() -> Self {
        Self {
            max_chain_depth: default_max_chain_depth(),
            reward_processing_interval: default_reward_processing_interval(),
            queue_cleanup_interval: default_queue_cleanup_interval(),
            cache_ttl: default_cache_ttl(),
            max_retries: default_max_retries(),
        }
    }
}

fn default_max_chain_depth() -> u8 {
    DEFAULT_MAX_CHAIN_DEPTH
}
fn default_reward_processing_interval() -> String {
    "5s".into()
}
fn default_queue_cleanup_interval() -> String {
    "1h".into()
}
fn default_cache_ttl() -> String {
    "300s".into()
}
fn default_max_retries() -> u32 {
    3
}
