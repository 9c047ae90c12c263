//! Streams users and referral records from MongoDB into the chain engine: one `find`
//! over the users with a projection of only the id, `referredBy` and (referral-code
//! mode) the referral code, then one over the referral records. Documents are read as
//! raw BSON and never deserialised into owned values.
//!
//! It only reads: no write, no index, no temporary collection. Field names and the
//! id-vs-code mode come from the spec's `ChainModel`. Wrong types are counted by the
//! engine as malformed, never an error; a missing collection is a warning in the
//! report. No Kubernetes here.

use mongodb::bson::{Document, RawBsonRef, RawDocument, RawDocumentBuf, doc};
use mongodb::{Client, Database};

use crate::crd::mongodb::{ChainModel, ReferredByHolds};

use super::chains::{ChainAnalysis, ChainBuilder, ChainError, ChainOptions, ChainReport, FieldValue};
use super::mongo_error::{MongoFailure, classify, describe};

/// Documents per batch: large enough to amortise round trips, small enough to keep
/// the driver's buffer (one batch of projected documents) to a few hundred KiB.
const BATCH_SIZE: u32 = 10_000;
/// Largest user count the builder is presized for from `estimatedDocumentCount`.
const PRESIZE_LIMIT: u64 = 200_000_000;

/// Why the check could not run. Data problems are never errors: they are in the report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainSourceError {
    #[error("MongoDB is not reachable ({operation} on {database}): {reason}")]
    Unreachable { operation: &'static str, database: String, reason: String },
    #[error("MongoDB refused the credentials ({operation} on {database}): {reason}")]
    AuthenticationFailed { operation: &'static str, database: String, reason: String },
    #[error("not authorized to {operation} on {database}.{collection}: {reason}")]
    NotAuthorized { operation: &'static str, database: String, collection: String, reason: String },
    #[error("{operation} on {database}.{collection} failed: {reason}")]
    Read { operation: &'static str, database: String, collection: String, reason: String },
    #[error("chain analysis of {database}.{collection} stopped: {source}")]
    Engine {
        database: String,
        collection: String,
        #[source]
        source: ChainError,
    },
}

impl ChainSourceError {
    /// Reason for a status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "MongoUnreachable",
            Self::AuthenticationFailed { .. } => "AuthenticationFailed",
            Self::NotAuthorized { .. } => "NotAuthorized",
            Self::Read { .. } => "ReadFailed",
            Self::Engine { .. } => "TooManyUsers",
        }
    }

    /// Bounded label for failure metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "mongo_unreachable",
            Self::AuthenticationFailed { .. } => "mongo_auth",
            Self::NotAuthorized { .. } => "mongo_not_authorized",
            Self::Read { .. } => "mongo_read",
            Self::Engine { .. } => "chain_engine",
        }
    }

    fn from_driver(operation: &'static str, database: &str, collection: &str, e: &mongodb::error::Error) -> Self {
        let (database, reason) = (database.to_string(), describe(e));
        match classify(e) {
            MongoFailure::Unreachable => Self::Unreachable { operation, database, reason },
            MongoFailure::AuthenticationFailed => Self::AuthenticationFailed { operation, database, reason },
            MongoFailure::NotAuthorized => {
                Self::NotAuthorized { operation, database, collection: collection.into(), reason }
            }
            MongoFailure::NamespaceNotFound | MongoFailure::Other => {
                Self::Read { operation, database, collection: collection.into(), reason }
            }
        }
    }
}

/// What one run produced: the report, and the analysis a repair plan is made from.
#[derive(Debug)]
pub struct ChainCheckOutcome {
    pub report: ChainReport,
    pub analysis: ChainAnalysis,
    /// User and referral documents read.
    pub documents: u64,
}

/// The value at a dotted path of a raw document. A path through an array is the
/// array (a wrong type); unreadable bytes are reported as a wrong type as well.
pub fn field<'a>(document: &'a RawDocument, path: &str) -> FieldValue<'a> {
    let mut current = document;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = match current.get(part) {
            Ok(value) => value,
            Err(_) => return FieldValue::WrongType("unreadable BSON"),
        };
        if parts.peek().is_none() {
            return FieldValue::from_raw(value);
        }
        match value {
            Some(RawBsonRef::Document(inner)) => current = inner,
            Some(RawBsonRef::Array(_)) => return FieldValue::WrongType("an array"),
            _ => return FieldValue::Absent,
        }
    }
    FieldValue::Absent
}

fn projection(fields: &[&str]) -> Document {
    let mut projection = Document::new();
    if !fields.contains(&"_id") {
        projection.insert("_id", 0);
    }
    for field in fields {
        projection.insert(*field, 1);
    }
    projection
}

/// Runs the chain check against `database`: every user, then every referral record.
pub async fn check_chains(
    client: &Client,
    database: &str,
    model: &ChainModel,
    max_depth: u8,
    examples_per_kind: usize,
) -> Result<ChainCheckOutcome, ChainSourceError> {
    let db = client.database(database);
    let mut warnings = Vec::new();
    let existing = db
        .list_collection_names()
        .await
        .map_err(|e| ChainSourceError::from_driver("listCollections", database, "", &e))?;
    let users_exist = existing.contains(&model.users_collection);
    let referrals_exist = existing.contains(&model.referrals_collection);
    if !users_exist {
        warnings.push(format!(
            "collection {} does not exist in database {database}: no users were checked (is the database name right?)",
            model.users_collection
        ));
    }
    if !referrals_exist {
        warnings.push(format!(
            "collection {} does not exist in database {database}: no referral records were checked",
            model.referrals_collection
        ));
    }

    let options = ChainOptions { max_depth, holds: model.referred_by_holds, examples_per_kind };
    let expected = if users_exist { estimated_count(&db, &model.users_collection).await } else { 0 };
    let mut builder = ChainBuilder::new(options, expected.min(PRESIZE_LIMIT) as usize);
    let mut documents = 0u64;
    if users_exist {
        documents += read_users(&db, model, &mut builder).await?;
    }
    let mut analysis = builder.finish().map_err(|source| ChainSourceError::Engine {
        database: database.into(),
        collection: model.users_collection.clone(),
        source,
    })?;
    if referrals_exist {
        documents += read_records(&db, model, &mut analysis).await?;
    }
    let mut report = analysis.report();
    if users_exist && report.users == 0 {
        warnings.push(format!("collection {} holds no users", model.users_collection));
    }
    report.database = database.into();
    report.users_collection = model.users_collection.clone();
    report.referrals_collection = model.referrals_collection.clone();
    report.warnings = warnings;
    Ok(ChainCheckOutcome { report, analysis, documents })
}

/// `estimatedDocumentCount`, or 0 when the server cannot say (the builder then grows).
async fn estimated_count(db: &Database, collection: &str) -> u64 {
    db.collection::<Document>(collection).estimated_document_count().await.unwrap_or(0)
}

async fn read_users(db: &Database, model: &ChainModel, builder: &mut ChainBuilder) -> Result<u64, ChainSourceError> {
    let database = db.name();
    let collection = model.users_collection.as_str();
    let code_mode = model.referred_by_holds == ReferredByHolds::ReferralCode;
    let mut fields = vec![model.user_id_field.as_str(), model.referred_by_field.as_str()];
    if code_mode {
        fields.push(&model.referral_code_field);
    }
    let mut cursor = db
        .collection::<RawDocumentBuf>(collection)
        .find(doc! {})
        .projection(projection(&fields))
        .batch_size(BATCH_SIZE)
        .await
        .map_err(|e| ChainSourceError::from_driver("find users", database, collection, &e))?;
    let mut read = 0u64;
    while cursor.advance().await.map_err(|e| ChainSourceError::from_driver("find users", database, collection, &e))? {
        let user = cursor.current();
        let code = if code_mode { field(user, &model.referral_code_field) } else { FieldValue::Absent };
        builder.add_user(field(user, &model.user_id_field), field(user, &model.referred_by_field), code).map_err(
            |source| ChainSourceError::Engine { database: database.into(), collection: collection.into(), source },
        )?;
        read += 1;
    }
    Ok(read)
}

async fn read_records(
    db: &Database,
    model: &ChainModel,
    analysis: &mut ChainAnalysis,
) -> Result<u64, ChainSourceError> {
    let database = db.name();
    let collection = model.referrals_collection.as_str();
    let fields = ["_id", model.referrer_field.as_str(), model.referred_field.as_str(), model.tier_field.as_str()];
    let mut cursor = db
        .collection::<RawDocumentBuf>(collection)
        .find(doc! {})
        .projection(projection(&fields))
        .batch_size(BATCH_SIZE)
        .await
        .map_err(|e| ChainSourceError::from_driver("find referral records", database, collection, &e))?;
    let mut read = 0u64;
    while cursor
        .advance()
        .await
        .map_err(|e| ChainSourceError::from_driver("find referral records", database, collection, &e))?
    {
        let record = cursor.current();
        analysis.add_record(
            field(record, "_id"),
            field(record, &model.referrer_field),
            field(record, &model.referred_field),
            field(record, &model.tier_field),
        );
        read += 1;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{oid::ObjectId, rawdoc};

    use super::*;
    use crate::checks::chains::KeyRef;

    #[test]
    fn fields_are_found_by_dotted_path_and_typed() {
        let oid = ObjectId::from_bytes([3; 12]);
        let user = rawdoc! {"_id": oid, "profile": {"referredBy": "abc", "tags": ["x"]}, "list": [{"a": 1}], "n": 5.0};
        assert_eq!(field(&user, "_id"), FieldValue::Key(KeyRef::ObjectId([3; 12])));
        assert_eq!(field(&user, "profile.referredBy"), FieldValue::Key(KeyRef::Str("abc")));
        assert_eq!(field(&user, "profile.tags"), FieldValue::WrongType("an array"));
        assert_eq!(field(&user, "list.a"), FieldValue::WrongType("an array"));
        assert_eq!(field(&user, "profile.missing"), FieldValue::Absent);
        assert_eq!(field(&user, "n.deeper"), FieldValue::Absent);
        assert_eq!(field(&user, "n"), FieldValue::Key(KeyRef::Int(5)));
    }

    #[test]
    fn the_projection_reads_only_the_named_fields() {
        assert_eq!(projection(&["_id", "referredBy"]), doc! {"_id": 1, "referredBy": 1});
        assert_eq!(
            projection(&["userId", "referredBy", "code"]),
            doc! {"_id": 0, "userId": 1, "referredBy": 1, "code": 1}
        );
    }
}
