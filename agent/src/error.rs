//! The agent's one error type. Each variant names the operation that failed; `category()` gives
//! a fixed string for logs and metric labels (never the message itself).

use std::path::PathBuf;

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host mount table could not be read.
    #[error("failed to read the mount table {path}: {source}")]
    ReadMountInfo {
        /// The mountinfo file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the host mount table is not in the mountinfo format.
    #[error("malformed mount table {path}, line {line}: {reason}")]
    ParseMountInfo {
        /// The mountinfo file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The mount table could not be watched for changes.
    #[error("failed to watch the mount table {path}: {source}")]
    WatchMountInfo {
        /// The mountinfo file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--pools-file` could not be read.
    #[error("failed to read pools file {path}: {source}")]
    ReadPoolsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--pools-file` holds something other than valid VolumePool objects.
    #[error("invalid pools file {path}: {reason}")]
    ParsePoolsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the document.
        reason: String,
    },
    /// The Node this agent runs for could not be read.
    #[error("failed to read node {node}: {source}")]
    GetNode {
        /// Node name.
        node: String,
        /// The API error.
        source: kube::Error,
    },
    /// The Node this agent runs for does not exist.
    #[error("failed to read node {node}: no such Node")]
    NoSuchNode {
        /// Node name.
        node: String,
    },
    /// Writing `NodeVolumes/<node>` failed.
    #[error("failed to publish NodeVolumes {node}: {source}")]
    PublishNodeVolumes {
        /// Node name.
        node: String,
        /// The API error.
        source: kube::Error,
    },
    /// Connecting to the cluster failed.
    #[error("failed to connect to the cluster: {0}")]
    ConnectCluster(#[source] kube::Error),
    /// The HTTP listener could not be started.
    #[error("failed to serve http on {addr}: {source}")]
    ServeHttp {
        /// The listen address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Metrics could not be rendered.
    #[error("failed to render metrics: {0}")]
    RenderMetrics(#[from] prometheus::Error),
    /// The scan report could not be encoded.
    #[error("failed to encode the scan report as {format}: {reason}")]
    EncodeReport {
        /// json or yaml.
        format: &'static str,
        /// Why.
        reason: String,
    },
    /// A scan task died.
    #[error("scan task failed: {0}")]
    ScanTask(String),
    /// The task serving HTTP died (it panicked or was cancelled).
    #[error("the http server task failed: {0}")]
    ServeHttpTask(#[source] tokio::task::JoinError),
    /// A signal handler could not be installed.
    #[error("failed to install the {signal} handler: {source}")]
    InstallSignalHandler {
        /// The signal.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// A fixed, low-cardinality name for the kind of failure (for metric labels and logs).
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadMountInfo { .. } | Error::ParseMountInfo { .. } => "mountinfo",
            Error::WatchMountInfo { .. } => "watch",
            Error::ReadPoolsFile { .. } | Error::ParsePoolsFile { .. } => "pools-file",
            Error::GetNode { .. } | Error::NoSuchNode { .. } | Error::ConnectCluster(_) => {
                "kubernetes"
            }
            Error::PublishNodeVolumes { .. } => "publish",
            Error::ServeHttp { .. } | Error::ServeHttpTask(_) | Error::RenderMetrics(_) => "http",
            Error::EncodeReport { .. } => "output",
            Error::ScanTask(_) => "scan",
            Error::InstallSignalHandler { .. } => "signal_handler",
        }
    }
}

/// Result with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
