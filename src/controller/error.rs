//! Errors of one reconcile. Each variant names the operation and the object; the
//! bounded [`Error::category`] feeds metric labels and event reasons.

/// What went wrong while reconciling a ReferralSystem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {kind} {name}: {source}")]
    Apply { kind: &'static str, name: String, source: kube::Error },
    #[error("listing {kind} children of {system} to prune: {source}")]
    ListChildren { kind: &'static str, system: String, source: kube::Error },
    #[error("deleting {kind} {name}, no longer wanted: {source}")]
    Prune { kind: &'static str, name: String, source: kube::Error },
    #[error("reading {kind} {name}: {source}")]
    Read { kind: &'static str, name: String, source: kube::Error },
    #[error("reading Secret {name}: {source}")]
    ReadSecret { name: String, source: kube::Error },
    #[error("writing Secret {name}: {source}")]
    WriteSecret { name: String, source: kube::Error },
    #[error("generating a password for Secret {name}: {reason}")]
    GeneratePassword { name: String, reason: String },
    #[error("creating Job {name}: {source}")]
    CreateJob { name: String, source: kube::Error },
    #[error("writing the status of {system}: {source}")]
    WriteStatus { system: String, source: kube::Error },
    #[error("the ReferralSystem {name} could not be decoded: {reason}")]
    Malformed { name: String, reason: String },
    #[error("the ReferralSystem has no namespace")]
    NoNamespace,
    #[error("reconciling {system} panicked (an operator bug; the other systems go on): {message}")]
    Panicked { system: String, message: String },
}

impl Error {
    /// A fixed, small set of labels for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Apply { .. }
            | Self::ListChildren { .. }
            | Self::Prune { .. }
            | Self::Read { .. }
            | Self::CreateJob { .. }
            | Self::WriteSecret { .. } => "kubernetes_api",
            Self::GeneratePassword { .. } => "random_source",
            Self::ReadSecret { .. } => "missing_secret",
            Self::WriteStatus { .. } => "status_write",
            Self::Malformed { .. } | Self::NoNamespace => "invalid_spec",
            Self::Panicked { .. } => "panic",
        }
    }
}
