//! NFS harnesses: a userspace NFS server and a Debian host root, both real and disposable.
//!
//! ```text
//!  NfsServer::start(&[export]) ──► tests/nfs/server-up ──► ganesha + rpcbind in netns volpool-nfs-N
//!        address() = 10.254.N.2 (veth from this machine)          stop()/freeze()/thaw() ──► server-stop
//!        restart() ──► tests/nfs/serve again in the same namespace (after stop())
//!        squash_root() ──► stop, Squash = Root_Squash in its ganesha.conf, restart
//!        drop ──► tests/nfs/server-down
//!  HostRoot::fresh() ──► tests/hostroot/build (debootstrap bookworm minbase, cached) ──► cp -a to a temp dir
//!        command(program) ──► tests/hostroot/run <root> program …  (private mount ns, /proc and /dev inside)
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::PersistentVolume;

use volpool_testkit::{TempDir, stdout_of};

use crate::repo_root;

fn script(name: &str) -> PathBuf {
    repo_root().join("tests").join(name)
}

/// Run `cmd` to the end, failing if it does not finish by `deadline` (it is killed then).
pub fn output_within(cmd: &mut Command, deadline: Duration) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    let end = Instant::now() + deadline;
    while child.try_wait()?.is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

fn run_ok(cmd: &mut Command, deadline: Duration) -> anyhow::Result<String> {
    stdout_of(&output_within(cmd, deadline)?, &format!("{cmd:?}"))
}

/// nfs-ganesha (NFSv3 + v4) with rpcbind in a network namespace of its own, reachable from
/// this machine at [`NfsServer::address`]. Stopped and removed on drop.
pub struct NfsServer {
    address: String,
    state: PathBuf,
    netns: String,
}

impl NfsServer {
    /// Start a server exporting each of `exports` (created if missing) under its own path.
    pub fn start(exports: &[&Path]) -> anyhow::Result<NfsServer> {
        let out = run_ok(
            Command::new(script("nfs/server-up")).args(exports),
            Duration::from_secs(120),
        )?;
        let var = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
                .with_context(|| format!("tests/nfs/server-up printed no {name}: {out}"))
        };
        Ok(NfsServer {
            address: var("NFS_SERVER")?,
            state: PathBuf::from(var("NFS_STATE")?),
            netns: var("NFS_NETNS")?,
        })
    }

    /// The server's address (portmapper 111, NFS 2049, mountd 20048).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A command run inside the server's network namespace (its loopback is the server's).
    pub fn in_netns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    fn server_stop(&self, flag: Option<&str>) -> anyhow::Result<()> {
        let mut cmd = Command::new(script("nfs/server-stop"));
        cmd.arg(&self.state).args(flag);
        run_ok(&mut cmd, Duration::from_secs(60)).map(drop)
    }

    /// Kill the daemons, keeping the address: connections are refused.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.server_stop(None)
    }

    /// Start the daemons again after [`NfsServer::stop`], same address and exports; returns
    /// when the portmapper lists mountd and nfs again.
    pub fn restart(&self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.join("serve.log"))?;
        // NB: setsid makes the daemons a process group of their own, whose id goes into the
        // state's pid file, so server-stop and server-down reach them as before.
        let child = Command::new("setsid")
            .args(["ip", "netns", "exec", &self.netns])
            .args(["unshare", "--mount", "--propagation", "private", "--"])
            .arg(script("nfs/serve"))
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("failed to start tests/nfs/serve")?;
        std::fs::write(self.state.join("pid"), format!("{}\n", child.id()))?;
        // Reap it when server-stop or server-down ends it (no zombie left behind).
        let mut child = child;
        std::thread::spawn(move || child.wait());
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = output_within(
                self.in_netns("rpcinfo").args(["-p", &self.address]),
                Duration::from_secs(10),
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
            if listed.contains("mountd") && listed.split_whitespace().any(|w| w == "nfs") {
                return Ok(());
            }
            if Instant::now() > end {
                bail!(
                    "the NFS server did not come back within 60s; logs in {}",
                    self.state.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Serve the exports with root squash (root is mapped to the anonymous user, as most
    /// servers do by default): stop, change the config, start again.
    pub fn squash_root(&self) -> anyhow::Result<()> {
        self.stop()?;
        let conf = self.state.join("ganesha.conf");
        let text = std::fs::read_to_string(&conf)?;
        std::fs::write(&conf, text.replace("No_Root_Squash", "Root_Squash"))?;
        self.restart()
    }

    /// Freeze the daemons (SIGSTOP): connections open, nothing answers.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.server_stop(Some("--freeze"))
    }

    /// Undo [`NfsServer::freeze`].
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.server_stop(Some("--thaw"))
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        let _ = output_within(
            Command::new(script("nfs/server-down")).arg(&self.state),
            Duration::from_secs(60),
        );
    }
}

/// The entries of the exported directory `export` whose names start with `prefix` (`pv-`,
/// or an archived directory's), as the server has them; none when it cannot be read.
pub fn dirs_on_server(export: &Path, prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir(export)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The directory on the server of an NFS PV: the last part of its `spec.nfs.path`.
pub fn pv_dir(pv: &PersistentVolume) -> String {
    let path = pv
        .spec
        .as_ref()
        .and_then(|s| s.nfs.as_ref())
        .map(|n| n.path.clone())
        .unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_string()
}

/// A private copy of a debootstrapped Debian bookworm (minbase) root, removed on drop.
pub struct HostRoot {
    dir: TempDir,
}

impl HostRoot {
    /// Build the cached root once (minutes), then copy it (seconds).
    pub fn fresh() -> anyhow::Result<HostRoot> {
        let cached = run_ok(
            Command::new(script("hostroot/build")).args(["bookworm", "minbase"]),
            Duration::from_secs(1800),
        )?;
        let cached = cached.lines().last().unwrap_or_default().trim().to_string();
        let dir = TempDir::new("volpool-hostroot")?;
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{cached}/."))
                .arg(dir.join("")),
            Duration::from_secs(600),
        )?;
        Ok(HostRoot { dir })
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.dir.0
    }

    /// `program` run with this root prepared as a host root (private mount namespace with
    /// /proc and /dev mounted inside it); pass the root to it as an argument.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(script("hostroot/run"));
        cmd.arg(self.path()).arg(program);
        cmd
    }
}
