//! The opt-in installer: runs the [`plan`](super::osrelease::plan) for the host's distribution,
//! each step as `chroot <host-root> <argv>` with a deadline, never two installs at once in
//! this process (apt also waits for the dpkg lock). No shell is involved.
//!
//! ```text
//!  <host>/etc/os-release ─► plan ─► chroot <root> apt-get ... (deadline, output kept) ─► [StepOutput]
//! ```

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::error::NfsError;
use super::osrelease::{self, Step};
use crate::host::{Host, RealHost, commands};
/// Output kept per step (the tail: errors come last).
const OUTPUT_TAIL: usize = 8 * 1024;

/// What one install step printed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StepOutput {
    /// The command line.
    pub command: String,
    /// The tail of its stdout and stderr.
    pub output: String,
}

static RUNNING: AtomicBool = AtomicBool::new(false);

pub(super) struct Running;

impl Running {
    pub(super) fn claim() -> Result<Running, NfsError> {
        RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Running)
            .map_err(|_| NfsError::InstallBusy)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// The steps that would install the NFS client on `host`, or why not.
pub fn plan_for(host: &dyn Host) -> Result<Vec<Step>, NfsError> {
    let path = Path::new("/etc/os-release");
    let text = host
        .read_to_string(path)
        .or_else(|_| host.read_to_string(Path::new("/usr/lib/os-release")))
        .map_err(|source| NfsError::ReadOsRelease {
            path: path.to_path_buf(),
            source,
        })?;
    if host.stat(Path::new("/run/ostree-booted")).is_ok() {
        return Err(NfsError::InstallRefused(
            "the host is an ostree (image-based) system: layer nfs-utils with rpm-ostree install nfs-utils and reboot".into(),
        ));
    }
    let has = |program: &str| {
        ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| host.stat(&Path::new(dir).join(program)).is_ok())
    };
    osrelease::plan(&osrelease::parse(&text), &has).map_err(NfsError::InstallRefused)
}

/// The command that runs `step` chrooted into `root`: explicit argv, a clean environment.
pub fn command(root: &Path, step: &Step) -> Command {
    commands::chroot(root, &step.argv, &step.env)
}

/// Install the NFS client into `host`, each step with `deadline`.
pub async fn install(host: &RealHost, deadline: Duration) -> Result<Vec<StepOutput>, NfsError> {
    let _running = Running::claim()?;
    let root = host.root();
    let steps = plan_for(host)?;
    let mut done = Vec::new();
    for step in &steps {
        let command = step.display();
        tracing::info!(%command, root = %root.display(), "installing the nfs client");
        let output = match commands::output_within(self::command(root, step), deadline).await {
            Ok(Some(output)) => output,
            Ok(None) => {
                return Err(NfsError::CommandTimeout {
                    command,
                    seconds: deadline.as_secs(),
                    output: String::new(),
                });
            }
            Err(source) => return Err(NfsError::StartCommand { command, source }),
        };
        let text = tail(
            &[output.stdout.as_slice(), output.stderr.as_slice()].concat(),
            OUTPUT_TAIL,
        );
        tracing::info!(%command, status = %output.status, output = %text, "install step finished");
        if !output.status.success() {
            return Err(NfsError::CommandFailed {
                command,
                status: output.status.to_string(),
                output: text,
            });
        }
        done.push(StepOutput {
            command,
            output: text,
        });
    }
    Ok(done)
}

/// The last `max` bytes of `bytes` as text (cut at a line start when possible).
fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    match cut.find('\n') {
        Some(i) => format!("...\n{}", &cut[i + 1..]),
        None => cut.to_string(),
    }
}
