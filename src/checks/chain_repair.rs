//! Repair plans: the file `check chains --repair-plan` prints, its checks, and the
//! explicit step that applies it.
//!
//! A plan only ever unsets the referred-by field of a user, and each update's filter
//! names the user's id and the exact value the check saw, so an update applies only
//! when that document has not changed since. [`RepairPlan::checked_updates`] refuses a
//! plan (before anything is written) if any update is not of that one shape, so an
//! edited plan cannot turn into arbitrary writes. Nothing in the chain check calls
//! [`apply_repair_plan`]; only `check apply-repair` does. No Kubernetes here.

use mongodb::Client;
use mongodb::bson::{Bson, Document};
use serde::{Deserialize, Serialize};

use super::chains::RepairUpdate;
use super::mongo_error::describe;

/// Kind marker of a plan file, so another JSON file is not taken for a plan.
pub const PLAN_KIND: &str = "ReferralChainRepairPlan";

fn plan_kind() -> String {
    PLAN_KIND.into()
}

/// A repair plan, as printed and as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairPlan {
    pub database: String,
    pub collection: String,
    pub user_id_field: String,
    pub referred_by_field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<String>,
    pub updates: Vec<RepairUpdate>,
}

/// The plan as written to a file: its kind first, then the plan.
#[derive(Serialize, Deserialize)]
struct PlanFile {
    #[serde(default = "plan_kind")]
    kind: String,
    #[serde(flatten)]
    plan: RepairPlan,
}

/// Why a plan is refused. Nothing is written when a plan is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepairPlanError {
    #[error("the plan names no database or collection")]
    NoTarget,
    #[error("update {index}: {reason}")]
    Update { index: usize, reason: String },
}

/// An update ready to send: filter and update document.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedUpdate {
    pub filter: Document,
    pub update: Document,
}

fn is_plain_value(value: &Bson) -> bool {
    matches!(value, Bson::ObjectId(_) | Bson::String(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))
}

impl RepairPlan {
    /// Every update as BSON, after checking that each one only unsets the
    /// referred-by field of one user whose id and current value it names.
    pub fn checked_updates(&self) -> Result<Vec<CheckedUpdate>, RepairPlanError> {
        if self.database.is_empty() || self.collection.is_empty() {
            return Err(RepairPlanError::NoTarget);
        }
        let mut out = Vec::with_capacity(self.updates.len());
        for (index, update) in self.updates.iter().enumerate() {
            let refuse = |reason: String| RepairPlanError::Update { index, reason };
            let filter = match Bson::try_from(update.filter.clone()) {
                Ok(Bson::Document(d)) => d,
                _ => return Err(refuse("the filter is not a document".into())),
            };
            let keys: Vec<&str> = filter.keys().map(String::as_str).collect();
            if keys.len() != 2
                || !keys.contains(&self.user_id_field.as_str())
                || !keys.contains(&self.referred_by_field.as_str())
            {
                return Err(refuse(format!(
                    "the filter must name exactly {} and {} (the user and the value the check saw), it names {:?}",
                    self.user_id_field, self.referred_by_field, keys
                )));
            }
            if !filter.values().all(is_plain_value) {
                return Err(refuse("the filter values must be plain ids or codes, not operators".into()));
            }
            let change = match Bson::try_from(update.update.clone()) {
                Ok(Bson::Document(d)) => d,
                _ => return Err(refuse("the update is not a document".into())),
            };
            let mut expected_unset = Document::new();
            expected_unset.insert(self.referred_by_field.clone(), "");
            let mut expected = Document::new();
            expected.insert("$unset", expected_unset);
            if change != expected {
                return Err(refuse(format!(
                    "the only update a repair plan may hold is {}",
                    Bson::Document(expected).into_relaxed_extjson()
                )));
            }
            out.push(CheckedUpdate { filter, update: change });
        }
        Ok(out)
    }

    /// The plan as the JSON file `check apply-repair` reads.
    pub fn to_file_json(&self) -> serde_json::Value {
        serde_json::to_value(PlanFile { kind: plan_kind(), plan: self.clone() }).unwrap_or(serde_json::Value::Null)
    }

    /// Reads a plan file, refusing JSON of another kind.
    pub fn from_file_json(text: &str) -> Result<RepairPlan, String> {
        let file: PlanFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.kind != PLAN_KIND {
            return Err(format!("kind is {:?}, not {PLAN_KIND}", file.kind));
        }
        Ok(file.plan)
    }
}

/// What applying a plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairOutcome {
    pub total: u64,
    /// Updates whose filter matched (the document still held the planned value).
    pub applied: u64,
    /// Updates whose document changed since the plan was made; left alone.
    pub skipped: u64,
    /// Filters of the first skipped updates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_examples: Vec<serde_json::Value>,
}

/// Why applying stopped. The counts say how far it got.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("update {index} on {database}.{collection} failed after {applied} applied: {reason}")]
pub struct RepairApplyError {
    pub database: String,
    pub collection: String,
    pub index: usize,
    pub applied: u64,
    pub reason: String,
}

/// Applies checked updates one by one with `updateOne`. An update whose filter
/// matches nothing is skipped, never forced.
pub async fn apply_repair_plan(
    client: &Client,
    plan: &RepairPlan,
    updates: &[CheckedUpdate],
) -> Result<RepairOutcome, RepairApplyError> {
    let users = client.database(&plan.database).collection::<Document>(&plan.collection);
    let mut outcome = RepairOutcome { total: updates.len() as u64, ..RepairOutcome::default() };
    for (index, update) in updates.iter().enumerate() {
        let result =
            users.update_one(update.filter.clone(), update.update.clone()).await.map_err(|e| RepairApplyError {
                database: plan.database.clone(),
                collection: plan.collection.clone(),
                index,
                applied: outcome.applied,
                reason: describe(&e),
            })?;
        if result.matched_count > 0 {
            outcome.applied += 1;
        } else {
            outcome.skipped += 1;
            if outcome.skipped_examples.len() < 20 {
                outcome.skipped_examples.push(Bson::Document(update.filter.clone()).into_relaxed_extjson());
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::checks::chains::RepairReason;

    fn plan(filter: serde_json::Value, update: serde_json::Value) -> RepairPlan {
        RepairPlan {
            database: "db".into(),
            collection: "users".into(),
            user_id_field: "_id".into(),
            referred_by_field: "referredBy".into(),
            generated_at: None,
            updates: vec![RepairUpdate { reason: RepairReason::Orphan, note: String::new(), filter, update }],
        }
    }

    #[test]
    fn a_plan_of_guarded_unsets_is_accepted_and_round_trips() {
        let p = plan(
            json!({"_id": {"$oid": "010101010101010101010101"}, "referredBy": "CODE"}),
            json!({"$unset": {"referredBy": ""}}),
        );
        let checked = p.checked_updates().unwrap();
        assert!(matches!(checked[0].filter.get("_id"), Some(Bson::ObjectId(_))));
        let text = p.to_file_json().to_string();
        assert!(text.starts_with(r#"{"kind":"ReferralChainRepairPlan""#), "{text}");
        assert_eq!(RepairPlan::from_file_json(&text).unwrap(), p);
        assert!(RepairPlan::from_file_json(&text.replace("ReferralChainRepairPlan", "Other")).is_err());
    }

    #[test]
    fn edited_plans_are_refused() {
        let unset = json!({"$unset": {"referredBy": ""}});
        let cases = [
            plan(json!({"_id": 1}), unset.clone()),
            plan(json!({"_id": 1, "referredBy": 2, "x": 3}), unset.clone()),
            plan(json!({"_id": {"$gt": 0}, "referredBy": 2}), unset.clone()),
            plan(json!({"_id": 1, "referredBy": 2}), json!({"$set": {"referredBy": 3}})),
            plan(json!({"_id": 1, "referredBy": 2}), json!({"$unset": {"referredBy": "", "email": ""}})),
            plan(json!([1]), unset),
        ];
        for case in cases {
            assert!(
                matches!(case.checked_updates(), Err(RepairPlanError::Update { index: 0, .. })),
                "accepted {:?}",
                case.updates[0]
            );
        }
        let mut no_target = plan(json!({"_id": 1, "referredBy": 2}), json!({"$unset": {"referredBy": ""}}));
        no_target.database.clear();
        assert_eq!(no_target.checked_updates(), Err(RepairPlanError::NoTarget));
    }
}
