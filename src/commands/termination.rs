//! Why a Job's command failed, where Kubernetes keeps it: the container's termination
//! message (`/dev/termination-log`, `terminationMessagePolicy`), which the kubelet
//! copies into the pod's status, where the operator reads it for the ReferralRestore's
//! condition and `BackupHealthy` (`crate::reconcilers::job::failed_pod_message`).
//! Without it a failed Job's reason is only in its log, which the operator does not
//! read. The text is what the command prints after `error:`: already redacted by the
//! command (URI credentials, S3 keys), one line, bounded.

use std::io::Write;
use std::path::PathBuf;

use crate::reconcilers::job::one_line;

/// Where the kubelet looks by default (`terminationMessagePath`).
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Overrides [`TERMINATION_LOG`], for running the commands outside a pod (tests).
pub const TERMINATION_LOG_ENV: &str = "REFOP_TERMINATION_LOG";
/// Kubernetes keeps at most 4096 bytes per container; a reason fits in far fewer,
/// and the operator quotes less still.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Prints `error: {message}` and records it as the termination message.
pub fn fail(message: impl std::fmt::Display) {
    let message = message.to_string();
    eprintln!("error: {message}");
    record(&message);
}

/// Writes `message` (one line, at most [`MAX_MESSAGE_BYTES`]) to the termination log
/// when there is one: the kubelet mounts the file into every container, so outside a
/// pod it does not exist and nothing is written (never created under /dev).
pub fn record(message: &str) {
    let path = std::env::var_os(TERMINATION_LOG_ENV).map(PathBuf::from).unwrap_or_else(|| TERMINATION_LOG.into());
    if !path.is_file() {
        return;
    }
    let text = one_line(message, MAX_MESSAGE_BYTES);
    // Nothing can be done about a failed write on the way out; the log has the text.
    if let Ok(mut file) = std::fs::OpenOptions::new().write(true).truncate(true).open(&path) {
        let _ = file.write_all(text.as_bytes());
    }
}
