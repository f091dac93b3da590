//! A fake node for tests with real mounts: a private mount and pid namespace held open by a
//! `sleep`, in which commands (mount, the agent) run through `nsenter`. Inside, the agent's
//! `/proc/1/mountinfo` is that namespace's own mount table, as on a real node.
//!
//! ```text
//!  test ──► unshare --mount --pid --fork --mount-proc --propagation private sleep infinity
//!       ──► nsenter -t <sleep> -m -p  mount … | volpool-agent … | hangfs
//! ```

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The agent binary under test.
pub const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");

/// A private mount + pid namespace; everything in it dies with it.
pub struct FakeNode {
    holder: Child,
    /// pid (outside) of the namespace's init.
    pub pid: u32,
}

impl FakeNode {
    /// Start the namespace.
    pub fn new() -> FakeNode {
        let holder = Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
            ])
            .args(["sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare runs (as root)");
        let children = format!("/proc/{0}/task/{0}/children", holder.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "unshare did not start its child");
            std::thread::sleep(Duration::from_millis(20));
        };
        FakeNode { holder, pid }
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-m", "-p", "--"])
            .arg(program);
        cmd
    }

    /// Run a shell script inside the namespace; panics with its stderr if it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = self
            .command("sh")
            .args(["-euc", script])
            .output()
            .expect("nsenter runs");
        check(&out, script);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        // NB: killing the namespace's init kills everything in it and drops its mounts.
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Panic with the command's stderr unless it succeeded.
pub fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Create it.
    pub fn new(prefix: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    /// A path inside it.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loop device over a new image file of `mib` MiB, optionally with ext4 on it; detached on drop.
pub struct LoopDevice(pub String);

impl LoopDevice {
    /// Create the image and attach it.
    pub fn new(image: &Path, mib: u64, ext4: bool) -> LoopDevice {
        let file = std::fs::File::create(image).expect("image");
        file.set_len(mib << 20).expect("size image");
        if ext4 {
            let out = Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(image)
                .output()
                .expect("mkfs.ext4");
            check(&out, "mkfs.ext4");
        }
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .expect("losetup");
        check(&out, "losetup");
        LoopDevice(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // NB: if still mounted somewhere, -d marks it to detach when the last user goes.
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

/// A pools file with a Filesystem pool and, optionally, a Block pool over the same directory.
pub fn pools_file(dir: &TempDir, discovery: &Path, min_fs: &str, block: bool) -> PathBuf {
    let mut yaml = format!(
        "apiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {{name: fs}}\nspec:\n  storageClassName: fs\n  local: {{discoveryDir: {0:?}, minCapacity: {min_fs}}}\n",
        discovery.display()
    );
    if block {
        yaml += &format!(
            "---\napiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {{name: raw}}\nspec:\n  storageClassName: raw\n  local: {{discoveryDir: {0:?}, volumeMode: Block, minCapacity: 1Mi}}\n",
            discovery.display()
        );
    }
    let path = dir.join("pools.yaml");
    std::fs::write(&path, yaml).expect("pools file");
    path
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GET `http://127.0.0.1:<port><path>` with curl: (status, body).
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

/// Poll `check` every 100 ms until it returns `Some`, or panic after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample of `metric` whose labels contain every `needle`.
pub fn sample(metrics: &str, metric: &str, needles: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Children to kill and reap on drop. Declare it before the [`FakeNode`] they run in, so it
/// drops after it: a child blocked on a hung FUSE mount can only exit once the namespace (and
/// the FUSE daemon in it) is gone.
#[derive(Default)]
pub struct Reaper(pub Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
