//! Keeps the declared MongoDB indexes: one `listIndexes` per collection, the diff of
//! [`super::indexes`], and with `indexPolicy: Ensure` one `createIndexes` per
//! collection for everything missing.
//!
//! What it must not do: write anything under `Report`; drop an index that is not a
//! declared index's conflict with `allowRebuild: true`; drop or touch an unmanaged
//! index ever; write when nothing is missing (an unchanged database costs exactly one
//! `listIndexes` per collection). No Kubernetes here: the controller and the CLI turn
//! the [`IndexReport`] into status, conditions and metrics.

use futures::TryStreamExt;
use mongodb::bson::{Bson, doc};
use mongodb::{Client, Database};
use serde::Serialize;

use crate::crd::status::{IndexState, IndexStatus, UnmanagedIndexStatus};
use crate::crd::{IndexPolicy, IndexSpec};

use super::indexes::{DesiredIndex, ExistingIndex, ExistingIndexError, IndexDrift, UnmanagedIndex, diff_collection};
use super::mongo_error::{MongoFailure, classify, describe};

/// Why the indexes could not be compared at all. Per-index problems (a failed
/// `createIndexes`) are not errors: they are `Missing` entries of the report.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexSyncError {
    #[error("MongoDB is not reachable (listIndexes on {database}.{collection}): {reason}")]
    Unreachable { database: String, collection: String, reason: String },
    #[error("MongoDB refused the credentials (listIndexes on {database}.{collection}): {reason}")]
    AuthenticationFailed { database: String, collection: String, reason: String },
    #[error("not authorized to list the indexes of {database}.{collection}: {reason}")]
    NotAuthorized { database: String, collection: String, reason: String },
    #[error("listIndexes on {database}.{collection} failed: {reason}")]
    ListIndexes { database: String, collection: String, reason: String },
    #[error("listIndexes on {database}.{collection} returned an entry that cannot be read: {source}")]
    UnreadableIndex {
        database: String,
        collection: String,
        #[source]
        source: ExistingIndexError,
    },
}

impl IndexSyncError {
    /// Reason of the `IndexesReady` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "MongoUnreachable",
            Self::AuthenticationFailed { .. } => "AuthenticationFailed",
            Self::NotAuthorized { .. } => "NotAuthorized",
            Self::ListIndexes { .. } => "ListIndexesFailed",
            Self::UnreadableIndex { .. } => "UnreadableIndex",
        }
    }

    /// Bounded label for failure metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "mongo_unreachable",
            Self::AuthenticationFailed { .. } => "mongo_auth",
            Self::NotAuthorized { .. } => "mongo_not_authorized",
            Self::ListIndexes { .. } | Self::UnreadableIndex { .. } => "mongo_list_indexes",
        }
    }
}

/// The outcome for one declared index.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexResult {
    pub collection: String,
    pub name: String,
    pub state: IndexState,
    /// Why, for Missing and Conflict; what was done, for Created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The name the database holds it under, when that differs from `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_name: Option<String>,
}

/// Counts of the states of a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexCounts {
    pub present: u32,
    pub created: u32,
    pub missing: u32,
    pub conflict: u32,
}

/// Everything one run found and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexReport {
    pub database: String,
    pub policy: IndexPolicy,
    /// One entry per declared index, in the order of the spec.
    pub indexes: Vec<IndexResult>,
    /// Indexes on the managed collections that nothing declares. Never dropped.
    pub unmanaged: Vec<UnmanagedIndex>,
    /// Write commands sent (`createIndexes`, `dropIndexes`). 0 under Report.
    pub writes: u32,
}

impl IndexReport {
    pub fn counts(&self) -> IndexCounts {
        let mut counts = IndexCounts::default();
        for index in &self.indexes {
            match index.state {
                IndexState::Present => counts.present += 1,
                IndexState::Created => counts.created += 1,
                IndexState::Missing => counts.missing += 1,
                IndexState::Conflict => counts.conflict += 1,
            }
        }
        counts
    }

    /// Every declared index is Present or Created.
    pub fn all_in_place(&self) -> bool {
        let c = self.counts();
        c.missing == 0 && c.conflict == 0
    }

    /// `status.indexSummary`: in place over declared, e.g. `6/6` or
    /// `4/6 (1 missing, 1 conflict)`.
    pub fn summary(&self) -> String {
        let c = self.counts();
        let mut text = format!("{}/{}", c.present + c.created, self.indexes.len());
        let mut problems = Vec::new();
        if c.missing > 0 {
            problems.push(format!("{} missing", c.missing));
        }
        if c.conflict > 0 {
            problems.push(format!("{} conflict", c.conflict));
        }
        if !problems.is_empty() {
            text.push_str(&format!(" ({})", problems.join(", ")));
        }
        text
    }

    /// `status.indexes`.
    pub fn statuses(&self) -> Vec<IndexStatus> {
        self.indexes
            .iter()
            .map(|i| IndexStatus {
                collection: i.collection.clone(),
                name: i.name.clone(),
                state: i.state,
                message: i.message.clone(),
            })
            .collect()
    }

    /// `status.unmanagedIndexes`.
    pub fn unmanaged_statuses(&self) -> Vec<UnmanagedIndexStatus> {
        self.unmanaged
            .iter()
            .map(|u| UnmanagedIndexStatus {
                collection: u.collection.clone(),
                name: u.name.clone(),
                keys: u.keys.clone(),
            })
            .collect()
    }
}

/// Lists the indexes of one collection. A collection that does not exist has none.
pub async fn list_indexes(db: &Database, collection: &str) -> Result<Vec<ExistingIndex>, IndexSyncError> {
    let database = db.name().to_string();
    let fail = |e: mongodb::error::Error| {
        let (database, collection, reason) = (database.clone(), collection.to_string(), describe(&e));
        match classify(&e) {
            MongoFailure::Unreachable => IndexSyncError::Unreachable { database, collection, reason },
            MongoFailure::AuthenticationFailed => IndexSyncError::AuthenticationFailed { database, collection, reason },
            MongoFailure::NotAuthorized => IndexSyncError::NotAuthorized { database, collection, reason },
            MongoFailure::NamespaceNotFound | MongoFailure::Other => {
                IndexSyncError::ListIndexes { database, collection, reason }
            }
        }
    };
    let mut cursor = match db.run_cursor_command(doc! {"listIndexes": collection}).await {
        Ok(cursor) => cursor,
        Err(e) if classify(&e) == MongoFailure::NamespaceNotFound => return Ok(Vec::new()),
        Err(e) => return Err(fail(e)),
    };
    let mut indexes = Vec::new();
    while let Some(index) = cursor.try_next().await.map_err(fail)? {
        let index = ExistingIndex::from_document(collection, &index).map_err(|source| {
            IndexSyncError::UnreadableIndex { database: database.clone(), collection: collection.into(), source }
        })?;
        indexes.push(index);
    }
    Ok(indexes)
}

/// Compares `desired` with the database and, under `Ensure`, creates what is missing
/// (one `createIndexes` per collection) and rebuilds conflicts that allow it.
///
/// This is the entry point of the controller and of `check indexes`.
pub async fn sync_indexes(
    client: &Client,
    database: &str,
    desired: &[IndexSpec],
    policy: IndexPolicy,
) -> Result<IndexReport, IndexSyncError> {
    let db = client.database(database);
    let mut results: Vec<Option<IndexResult>> = vec![None; desired.len()];
    let mut unmanaged = Vec::new();
    let mut writes = 0;

    let mut collections: Vec<&str> = Vec::new();
    for spec in desired {
        if !collections.contains(&spec.collection.as_str()) {
            collections.push(&spec.collection);
        }
    }
    for collection in collections {
        let mut positions = Vec::new();
        let mut wanted = Vec::new();
        for (position, spec) in desired.iter().enumerate().filter(|(_, s)| s.collection == collection) {
            match DesiredIndex::from_spec(spec) {
                Ok(index) => {
                    positions.push(position);
                    wanted.push(index);
                }
                Err(e) => {
                    results[position] = Some(IndexResult {
                        collection: collection.into(),
                        name: spec.effective_name(),
                        state: IndexState::Missing,
                        message: Some(format!("not created: {e}")),
                        existing_name: None,
                    });
                }
            }
        }
        let existing = list_indexes(&db, collection).await?;
        let diff = diff_collection(collection, &wanted, &existing);
        unmanaged.extend(diff.unmanaged);

        // Indexes to create in this collection's one createIndexes, and the
        // conflicting indexes to drop first (allowRebuild only).
        let mut to_create: Vec<(usize, DesiredIndex, Option<String>)> = Vec::new();
        for (comparison, position) in diff.comparisons.into_iter().zip(positions) {
            let want = comparison.desired;
            let result = |state, message: Option<String>, existing_name: Option<String>| IndexResult {
                collection: collection.into(),
                name: want.name.clone(),
                state,
                message,
                existing_name: existing_name.filter(|n| *n != want.name),
            };
            results[position] = Some(match (comparison.drift, policy) {
                (IndexDrift::Present { existing_name }, _) => {
                    let message = (existing_name != want.name).then(|| format!("present as {existing_name}"));
                    result(IndexState::Present, message, Some(existing_name))
                }
                (IndexDrift::Missing, IndexPolicy::Report) => result(
                    IndexState::Missing,
                    Some(format!(
                        "index {} on {collection} does not exist; indexPolicy Report does not create it",
                        want.name
                    )),
                    None,
                ),
                (IndexDrift::Conflict { existing_name, message }, IndexPolicy::Ensure) if want.allow_rebuild => {
                    to_create.push((position, want.clone(), Some(existing_name.clone())));
                    result(IndexState::Conflict, Some(message), Some(existing_name))
                }
                (IndexDrift::Conflict { existing_name, message }, _) => {
                    let hint = if want.allow_rebuild {
                        "indexPolicy Report never rebuilds it"
                    } else {
                        "it is left as it is; set allowRebuild: true on this index to have it dropped and recreated"
                    };
                    result(IndexState::Conflict, Some(format!("{message} ({hint})")), Some(existing_name))
                }
                (IndexDrift::Missing, IndexPolicy::Ensure) => {
                    to_create.push((position, want.clone(), None));
                    result(IndexState::Missing, None, None)
                }
            });
        }
        if to_create.is_empty() {
            continue;
        }

        let mut create = Vec::new();
        for (position, want, rebuild_of) in to_create {
            let Some(old) = rebuild_of else {
                create.push((position, want, None));
                continue;
            };
            writes += 1;
            match db.run_command(doc! {"dropIndexes": collection, "index": old.as_str()}).await {
                Ok(_) => create.push((position, want, Some(old))),
                Err(e) => {
                    if let Some(Some(r)) = results.get_mut(position) {
                        r.message = Some(format!(
                            "{} (allowRebuild: dropping {old} failed: {})",
                            r.message.clone().unwrap_or_default(),
                            describe(&e)
                        ));
                    }
                }
            }
        }
        if create.is_empty() {
            continue;
        }
        let documents: Vec<Bson> =
            create.iter().map(|(_, want, _)| Bson::Document(want.to_create_document())).collect();
        writes += 1;
        let outcome = db.run_command(doc! {"createIndexes": collection, "indexes": documents}).await;
        for (position, want, rebuilt_from) in create {
            let Some(Some(result)) = results.get_mut(position) else { continue };
            match (&outcome, rebuilt_from) {
                (Ok(_), None) => {
                    result.state = IndexState::Created;
                    result.message = Some(format!("created index {} on {collection}", want.name));
                }
                (Ok(_), Some(old)) => {
                    result.state = IndexState::Created;
                    result.message = Some(format!("rebuilt (allowRebuild): dropped {old}, created {}", want.name));
                    result.existing_name = None;
                }
                (Err(e), None) => {
                    result.state = IndexState::Missing;
                    result.message =
                        Some(format!("createIndexes on {collection} failed for {}: {}", want.name, describe(e)));
                }
                (Err(e), Some(old)) => {
                    result.state = IndexState::Missing;
                    result.existing_name = None;
                    result.message = Some(format!(
                        "allowRebuild dropped {old}, but createIndexes on {collection} failed for {}: {}",
                        want.name,
                        describe(e)
                    ));
                }
            }
        }
    }
    Ok(IndexReport {
        database: database.into(),
        policy,
        indexes: results.into_iter().flatten().collect(),
        unmanaged,
        writes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(state: IndexState) -> IndexResult {
        IndexResult { collection: "users".into(), name: "a_1".into(), state, message: None, existing_name: None }
    }

    fn report(states: &[IndexState]) -> IndexReport {
        IndexReport {
            database: "db".into(),
            policy: IndexPolicy::Ensure,
            indexes: states.iter().map(|s| result(*s)).collect(),
            unmanaged: Vec::new(),
            writes: 0,
        }
    }

    #[test]
    fn summary_counts_present_and_created_as_in_place() {
        use IndexState::*;
        assert_eq!(report(&[Present, Present, Created]).summary(), "3/3");
        assert!(report(&[Present, Created]).all_in_place());
        assert_eq!(report(&[Present, Missing, Conflict, Missing]).summary(), "1/4 (2 missing, 1 conflict)");
        assert_eq!(report(&[Conflict]).summary(), "0/1 (1 conflict)");
        assert!(!report(&[Present, Conflict]).all_in_place());
        assert_eq!(report(&[]).summary(), "0/0");
    }

    #[test]
    fn statuses_keep_order_and_messages() {
        let mut r = report(&[IndexState::Missing, IndexState::Present]);
        r.indexes[0].message = Some("why".into());
        let statuses = r.statuses();
        assert_eq!(statuses[0].state, IndexState::Missing);
        assert_eq!(statuses[0].message.as_deref(), Some("why"));
        assert_eq!(statuses[1].state, IndexState::Present);
    }

    #[test]
    fn errors_have_bounded_reasons() {
        let e = IndexSyncError::Unreachable { database: "d".into(), collection: "c".into(), reason: "x".into() };
        assert_eq!(e.reason(), "MongoUnreachable");
        assert_eq!(e.category(), "mongo_unreachable");
        assert!(e.to_string().contains("listIndexes on d.c"));
    }
}
