//! SIGKILL and restart of the control plane's etcd and kube-apiserver, started the way
//! `tests/cluster/up` starts them: the same command line (read back from `/proc`), a session
//! of its own (`setsid`), its log appended to `<cluster>/logs/<name>.log`, its pid in
//! `<cluster>/pids/<name>.pid`, so `tests/cluster/down` stops the restarted process as before.
//!
//! ```text
//!  kill("etcd") ──► pids/etcd.pid ──► /proc/<pid>/cmdline (kept) ──► kill -KILL -<pgid>
//!  start("etcd") ──► setsid <cmdline> >>logs/etcd.log ──► pids/etcd.pid
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// The control plane of a cluster `tests/cluster/up` made.
pub struct ControlPlane {
    dir: PathBuf,
    /// Command lines of the components killed and not yet restarted.
    killed: BTreeMap<String, Vec<OsString>>,
    /// The processes this soak restarted (reaped when killed again).
    restarted: BTreeMap<String, Child>,
}

impl ControlPlane {
    /// The control plane behind `kubeconfig`, when it is `<cluster dir>/kubeconfig` of a
    /// cluster `tests/cluster/up` made (its marker file and pid files are there).
    pub fn of(kubeconfig: &Path) -> Option<ControlPlane> {
        let dir = kubeconfig.parent()?;
        let ours = dir.join(".volpool-cluster").exists() && dir.join("pids/etcd.pid").exists();
        ours.then(|| ControlPlane {
            dir: dir.to_path_buf(),
            killed: BTreeMap::new(),
            restarted: BTreeMap::new(),
        })
    }

    /// The cluster's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn pid(&self, name: &str) -> anyhow::Result<u32> {
        let file = self.dir.join(format!("pids/{name}.pid"));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} holds no pid", file.display()))
    }

    /// SIGKILL `name` (`etcd`, `kube-apiserver`) and its process group; keep its command line.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid(name)?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .with_context(|| format!("{name} (pid {pid}) is not running"))?;
        let argv: Vec<OsString> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect();
        let argv0 = argv.first().map(|a| a.to_string_lossy().into_owned());
        ensure!(
            argv0.as_deref().is_some_and(|a| a.ends_with(name)),
            "pid {pid} of {name} runs {argv0:?}"
        );
        let status = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status()?;
        ensure!(status.success(), "kill -KILL -{pid} ({name}) failed");
        if let Some(mut child) = self.restarted.remove(name) {
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            if Instant::now() > deadline {
                bail!("{name} (pid {pid}) still there 10 s after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.killed.insert(name.to_string(), argv);
        Ok(())
    }

    /// Start `name` again with the command line it had when killed.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let argv = self
            .killed
            .remove(name)
            .with_context(|| format!("{name} was not killed"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("logs/{name}.log")))?;
        // NB: not a process group leader, so setsid(1) does not fork: the pid is the
        // component's, and its process group is its own, as `up` leaves it.
        let child = Command::new("setsid")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot restart {name}"))?;
        std::fs::write(
            self.dir.join(format!("pids/{name}.pid")),
            format!("{}\n", child.id()),
        )?;
        self.restarted.insert(name.to_string(), child);
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // A soak that ends in the middle of a fault leaves the cluster as it found it.
        let names: Vec<String> = self.killed.keys().cloned().collect();
        for name in names {
            let _ = self.restart(&name);
        }
    }
}
