//! Errors of the NFS client work that stop it (a failed check is a result, not an error).

use std::path::PathBuf;

/// What can stop `check-nfs` or an install.
#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// The host's `etc/os-release` could not be read.
    #[error("cannot tell the host's distribution: failed to read {path}: {source}")]
    ReadOsRelease {
        /// The file, under the host root.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The installer will not run on this host.
    #[error("not installing the nfs client: {0}")]
    InstallRefused(String),
    /// Another install is still running in this process.
    #[error("not installing the nfs client: another install is still running")]
    InstallBusy,
    /// An install command could not be started.
    #[error("failed to start `{command}`: {source}")]
    StartCommand {
        /// The command line, for people.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// An install command did not finish within its deadline (it was killed).
    #[error("`{command}` did not finish within {seconds}s and was killed; output:\n{output}")]
    CommandTimeout {
        /// The command line, for people.
        command: String,
        /// The deadline.
        seconds: u64,
        /// What it printed before.
        output: String,
    },
    /// An install command failed.
    #[error("`{command}` failed ({status}); output:\n{output}")]
    CommandFailed {
        /// The command line, for people.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed (the tail).
        output: String,
    },
    /// The agent's shared work failed (e.g. reading the pools file).
    #[error(transparent)]
    Agent(Box<crate::error::Error>),
    /// The report could not be encoded.
    #[error("failed to encode the report as {format}: {reason}")]
    EncodeReport {
        /// json or yaml.
        format: &'static str,
        /// Why.
        reason: String,
    },
}

impl From<crate::error::Error> for NfsError {
    fn from(e: crate::error::Error) -> Self {
        NfsError::Agent(Box::new(e))
    }
}
