//! Errors that stop `check-network` (a failed check is a result, not an error).

/// What can stop `check-network`.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The async runtime could not start.
    #[error("failed to start the async runtime: {0}")]
    StartRuntime(#[source] std::io::Error),
    /// The report could not be encoded.
    #[error("failed to encode the network report as {format}: {reason}")]
    EncodeReport {
        /// json or yaml.
        format: &'static str,
        /// Why.
        reason: String,
    },
}
