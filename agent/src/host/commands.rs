//! The agent's own process and the programs it runs on the node: this machine's hostname, and
//! commands chrooted into the host root with a clean environment and a deadline (the NFS
//! client installer's package manager).
//!
//! ```text
//!  /proc/sys/kernel/hostname ─► hostname (the node name standalone)
//!  argv + env ─► chroot <host-root> argv (PATH of the host, LC_ALL=C, stdin closed) ─► output within a deadline, else killed
//! ```

use std::io;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `PATH` inside the host root.
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The name of the machine this process runs on.
pub fn hostname() -> io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string())
}

/// The command that runs `argv` chrooted into `root`: explicit argv, a clean environment
/// (the host's `PATH`, `LC_ALL=C`, then `env`), stdin closed, output captured.
pub fn chroot(root: &Path, argv: &[String], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(root)
        .args(argv)
        .env_clear()
        .env("PATH", HOST_PATH)
        .env("LC_ALL", "C")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Run `cmd` to its end; `Ok(None)` when it did not end within `deadline` (it is killed).
pub async fn output_within(cmd: Command, deadline: Duration) -> io::Result<Option<Output>> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn()?;
    match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(output) => output.map(Some),
        Err(_) => Ok(None),
    }
}
