//! Backups on the backup volume, apart from Kubernetes: how a backup is named, which
//! ones the retention keeps (a pure planner), the folder layout on disk (list, size,
//! finalize, delete what a plan says), and whether the newest one is recent enough
//! for its schedule.
//!
//! Nothing here talks to a cluster or to a database; `referral-operator backup ...`
//! (in [`crate::commands::backup`]) and the controller put these pieces to work.

pub mod health;
pub mod name;
pub mod retention;
pub mod schedule;
pub mod store;
