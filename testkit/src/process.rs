//! Running commands in tests: their output checked, their children reaped, workspace binaries
//! built on demand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;

use anyhow::{Context, bail};

/// An error with the command's output unless it succeeded.
pub fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The stdout of a command that ran as `what`, or an error with its output unless it
/// succeeded.
pub fn stdout_of(out: &Output, what: &str) -> anyhow::Result<String> {
    check(out, what)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `cmd` to its end: its stdout, or an error with its output.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    stdout_of(&out, &format!("{cmd:?}"))
}

/// Children killed and reaped on drop. Declare it before the `FakeNode` they run in, so it
/// drops after it: a child blocked on a hung FUSE mount can only exit once the namespace (and
/// the FUSE daemon in it) is gone.
#[derive(Default)]
pub struct Reaper(pub Vec<Child>);

impl Reaper {
    /// A reaper of one child.
    pub fn of(child: Child) -> Reaper {
        Reaper(vec![child])
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The repository's root directory.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Build binary `bin` of workspace package `package` (a no-op when it is up to date) and
/// return its path: once per test process, under a file lock shared by parallel tests. With
/// `$VOLPOOL_BINARIES_BUILT` set (the caller built them all), an existing binary is used as is.
pub fn cargo_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    type Built = HashMap<(String, String), Result<PathBuf, String>>;
    static BUILT: Mutex<Option<Built>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .get_or_insert_with(HashMap::new)
        .entry((package.to_string(), bin.to_string()))
        .or_insert_with(|| build(package, bin).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug").join(bin);
    // NB: a caller that built every binary first (tests/chaos/run) says so, and nothing
    // waits for the build lock the test processes share.
    if std::env::var_os("VOLPOOL_BINARIES_BUILT").is_some() && path.exists() {
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").into());
    let out = Command::new("flock")
        .arg(std::env::temp_dir().join("volpool-cargo-build.lock"))
        .arg(cargo)
        .args(["build", "-q", "-p", package, "--bin", bin])
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("cannot run cargo build -p {package}"))?;
    check(&out, &format!("cargo build -p {package} --bin {bin}"))?;
    Ok(path)
}
