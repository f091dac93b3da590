//! The crate's one error type. Each variant names the operation that failed;
//! [`Error::category`] is the bounded label value used in `volpool_controller_errors_total`.
//! [`ExportError`] is what one operation on an NFS export returns (its kind steers the
//! executor); a failed directory operation ends up as [`Error::ExportOp`].

use std::path::PathBuf;

/// Everything that can fail in the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file of the offline `plan` subcommand could not be read.
    #[error("failed to read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An input file of the offline `plan` subcommand is not what it should hold.
    #[error("failed to parse {path}: {message}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The plan could not be written out.
    #[error("failed to render the plan: {0}")]
    Render(String),
    /// Server-side apply of a PV failed.
    #[error("failed to apply PersistentVolume {name}: {source}")]
    ApplyPv {
        /// PV name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Deleting a PV failed.
    #[error("failed to delete PersistentVolume {name}: {source}")]
    DeletePv {
        /// PV name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Writing a node's scrub requests failed.
    #[error("failed to write spec.cleanups of NodeVolumes {node}: {source}")]
    SetCleanups {
        /// Node name.
        node: String,
        /// Why.
        source: kube::Error,
    },
    /// Writing a pool's status failed.
    #[error("failed to write the status of VolumePool {pool}: {source}")]
    WriteStatus {
        /// Pool name.
        pool: String,
        /// Why.
        source: kube::Error,
    },
    /// Publishing an Event failed.
    #[error("failed to publish an Event ({reason}): {source}")]
    PublishEvent {
        /// Event reason.
        reason: String,
        /// Why.
        source: kube::Error,
    },
    /// Reading, taking or renewing the leader Lease failed.
    #[error("failed to hold Lease {namespace}/{name}: {source}")]
    Lease {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// The metrics/health listener could not start.
    #[error("failed to serve HTTP on {addr}: {source}")]
    Serve {
        /// Listen address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("failed to install the {signal} handler: {source}")]
    InstallSignalHandler {
        /// The signal.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics registry refused a metric (a programming error, caught at start).
    #[error("failed to register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A directory operation on an NFS pool's export failed.
    #[error("failed to {operation} directory {dir} on the export of VolumePool {pool}: {source}")]
    ExportOp {
        /// The pool.
        pool: String,
        /// What was done: `make`, `remove` or `archive`.
        operation: &'static str,
        /// The directory under the pool's root.
        dir: String,
        /// Why.
        source: ExportError,
    },
    /// A watch ended with an error (the reflector retries).
    #[error("watch of {kind} failed: {source}")]
    Watch {
        /// Kind watched.
        kind: &'static str,
        /// Why.
        source: kube::runtime::watcher::Error,
    },
}

impl Error {
    /// A short, bounded label value for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadFile { .. } => "read_file",
            Error::ParseFile { .. } => "parse_file",
            Error::Render(_) => "render",
            Error::ApplyPv { .. } => "apply_pv",
            Error::DeletePv { .. } => "delete_pv",
            Error::SetCleanups { .. } => "set_cleanups",
            Error::WriteStatus { .. } => "write_status",
            Error::PublishEvent { .. } => "publish_event",
            Error::Lease { .. } => "lease",
            Error::Serve { .. } => "serve",
            Error::InstallSignalHandler { .. } => "signal_handler",
            Error::Watch { .. } => "watch",
            Error::ExportOp { .. } => "export",
            Error::Metrics(_) => "metrics",
        }
    }
}

/// How an export operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// No answer, connection refused, RPC failure: the server is not there.
    Unreachable,
    /// The server refused as not permitted (root squash, read-only export).
    Denied,
    /// The entry does not exist.
    NotFound,
    /// Anything else (not found where it must exist, not a directory, I/O error).
    Other,
}

/// An export operation that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    /// What kind of failure.
    pub kind: FailKind,
    /// What failed, for humans.
    pub message: String,
}

impl ExportError {
    /// An error of that kind.
    pub fn new(kind: FailKind, message: impl Into<String>) -> ExportError {
        ExportError {
            kind,
            message: message.into(),
        }
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
