//! Backups, apart from Kubernetes: how a backup is named, which ones the retention
//! keeps (a pure planner), the folder layout on the volume and in object storage
//! (list, size, finalize, delete what a plan says), the native dump and restore of
//! MongoDB in mongodump's directory layout, whether the newest backup is recent
//! enough for its schedule, and the restore drill's rules.
//!
//! Nothing here talks to a Kubernetes cluster. The pure parts (names, retention,
//! layout, manifest, stream) do no I/O at all; `dump` and `restore` talk to MongoDB
//! through the driver and `object` to S3-compatible storage.
//! `referral-operator backup ...` (in [`crate::commands::backup`]) and the controller
//! put these pieces to work.

pub mod drill;
pub mod dump;
pub mod health;
pub mod layout;
pub mod manifest;
pub mod name;
pub mod object;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod store;
pub mod stream;
pub mod target;
