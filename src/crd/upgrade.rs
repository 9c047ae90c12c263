//! How a change of worker image reaches the cluster: a backup first, an optional
//! database migration, then the rollout, and what happens when the rollout stalls.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::jobs::JobTemplate;

/// Safety around image changes: back up, migrate, verify (docs/controller.md, "Image changes").
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// When a worker's image changes, run a backup Job and wait for it to succeed
    /// before any Deployment gets the new image. Default true.
    #[serde(default = "default_true")]
    pub backup_first: bool,
    /// When the rollout of a new image exceeds a Deployment's progress deadline, put
    /// the previous images back (spec is not changed; status says what happened) and
    /// keep them until `spec.image` changes again. Default false: the system is
    /// reported Degraded and left as it is.
    #[serde(default)]
    pub auto_rollback: bool,
    /// Seconds a worker Deployment may go without progress before its rollout
    /// counts as stalled (`progressDeadlineSeconds`). Default: Kubernetes' 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: Option<i32>,
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        Self { backup_first: true, auto_rollback: false, progress_deadline_seconds: None }
    }
}

/// A one-off database migration run when worker images change, after the
/// pre-upgrade backup and before the rollout, with the workers' environment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.command) || has(self.args)",
     "message": "a migration needs command or args: say what it runs, e.g. args: [npm, run, migrate:referral]"}
]))]
pub struct MigrationSpec {
    /// What the migration runs.
    #[serde(flatten)]
    pub template: JobTemplate,
}

fn default_true() -> bool {
    true
}
