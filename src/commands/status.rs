//! How the in-cluster Jobs (the chain check, the backup's finalize step) write their
//! part of a ReferralSystem's status: by server-side apply as their
//! [`StatusWriter`], which owns that part and no other.

use kube::api::{Api, Patch};

use crate::crd::ReferralSystem;
use crate::crd::status::{ReferralSystemStatus, StatusWriter};

/// Writes `writer`'s part of `status`, then clears what a merge patch of an older
/// operator left of it (see [`StatusWriter::leftovers`]).
pub async fn apply(
    api: &Api<ReferralSystem>,
    name: &str,
    writer: StatusWriter,
    status: &ReferralSystemStatus,
) -> Result<(), kube::Error> {
    let written = api.patch_status(name, &writer.apply_params(), &Patch::Apply(writer.apply_body(status))).await?;
    if let Some(patch) = writer.leftovers(written.status.as_ref(), status) {
        api.patch_status(name, &writer.leftover_params(), &Patch::Merge(patch)).await?;
    }
    Ok(())
}
