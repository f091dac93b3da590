//! A fake node: a private mount + pid namespace in which commands (mount, the agent) run
//! through `nsenter`. Inside, `/proc/1/mountinfo` is the namespace's own mount table, as the
//! agent sees it on a real node.
//!
//! ```text
//!  test ──stdin pipe──► unshare --mount --pid --fork --kill-child --mount-proc … cat
//!       ──► nsenter -t <cat> -m -p  mount … | volpool-agent … | hangfs
//! ```
//!
//! The namespace's init is `cat` reading a pipe whose only writer is the test process. When
//! the test ends in any way (drop, panic, SIGKILL on a timeout) the pipe closes, `cat` exits,
//! and the kernel kills every process in the namespace and drops its mounts. Unlike
//! `PR_SET_PDEATHSIG`, which fires when the *thread* that spawned the child exits, a pipe
//! lives as long as the process.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::{Fs, LoopDevice};

/// A private mount + pid namespace; everything in it dies with it, and it dies with the test.
pub struct FakeNode {
    holder: Child,
    /// Write end of init's stdin: closing it (drop, or the test process dying) ends the node.
    lifeline: Option<ChildStdin>,
    pid: u32,
}

impl FakeNode {
    /// Start the namespace (needs root).
    pub fn new() -> anyhow::Result<FakeNode> {
        let mut holder = Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--kill-child", "--mount-proc"])
            .args(["--propagation", "private", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("failed to run unshare (fake nodes need root)")?;
        let lifeline = holder.stdin.take();
        let children = format!("/proc/{0}/task/{0}/children", holder.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                break pid;
            }
            if let Some(status) = holder.try_wait()? {
                bail!("unshare exited ({status}) before starting the node's init");
            }
            ensure!(Instant::now() < deadline, "unshare did not start its child");
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(FakeNode {
            holder,
            lifeline,
            pid,
        })
    }

    /// Pid (as this machine sees it) of the namespace's init.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Pid of the `unshare` process that holds the namespace.
    pub fn holder_pid(&self) -> u32 {
        self.holder.id()
    }

    /// A command that runs inside the node's namespaces.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-m", "-p", "--"])
            .arg(program);
        cmd
    }

    /// Run a shell script (`sh -euc`) on the node: its stdout, or an error with its stderr.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        crate::run(self.command("sh").args(["-euc", script]))
    }

    /// Start `script` (sh) on the node inside the cgroup directory `cgroup`, as a container
    /// runtime would place a container's process; once that process has exec'd a program whose
    /// command line holds `marker`: the child (the `nsenter`) and the process's host pid.
    pub fn spawn_in_cgroup(
        &self,
        cgroup: &Path,
        script: &str,
        marker: &str,
    ) -> anyhow::Result<(Child, u32)> {
        let procs = cgroup.join("cgroup.procs");
        let child = self
            .command("sh")
            .args([
                "-c",
                &format!("echo $$ > {} && exec {script}", procs.display()),
            ])
            .stdin(Stdio::null())
            .spawn()
            .context("failed to run nsenter")?;
        let pid = crate::wait_for_blocking(
            &format!("a process running {marker:?} in {}", cgroup.display()),
            Duration::from_secs(20),
            || {
                let pids = std::fs::read_to_string(&procs).ok()?;
                let pid: u32 = pids.split_whitespace().next()?.parse().ok()?;
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                String::from_utf8_lossy(&cmdline)
                    .contains(marker)
                    .then_some(pid)
            },
        )?;
        Ok((child, pid))
    }

    /// Make a disk of `mib` MiB with `fs` over `image` and mount it at `at` (created if
    /// missing) on this node only. Keep the device while the test needs the disk.
    pub fn mount_disk(
        &self,
        image: impl Into<PathBuf>,
        at: &Path,
        mib: u64,
        fs: Fs,
    ) -> anyhow::Result<LoopDevice> {
        std::fs::create_dir_all(at)?;
        let disk = LoopDevice::new(image, mib, Some(fs))?;
        self.sh(&format!("mount '{}' '{}'", disk.device, at.display()))?;
        Ok(disk)
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        // NB: killing the namespace's init kills every process in it and drops its mounts at
        // once; the closed lifeline is what ends the node when this never runs.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        self.lifeline.take();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
