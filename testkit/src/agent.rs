//! The agent's command line on a fake node, without a cluster: a pools file in, the scan's
//! report out, parsed; and the checks of its `check-*` reports.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use volpool_api::{NodeVolumesStatus, VolumeReport};

use crate::{FakeNode, TempDir, check};

/// Write `<dir>/pools.yaml`: a Filesystem pool `fs` (StorageClass `fs`, `minCapacity`
/// `min_fs`) over `discovery` and, when `block`, a Block pool `raw` over the same directory.
pub fn pools_file(
    dir: &TempDir,
    discovery: &Path,
    min_fs: &str,
    block: bool,
) -> anyhow::Result<PathBuf> {
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
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// The report `<agent> scan` makes on `node` for the pools in `pools`.
pub fn scan(
    node: &FakeNode,
    agent: impl AsRef<OsStr>,
    pools: &Path,
) -> anyhow::Result<NodeVolumesStatus> {
    let out = node
        .command(agent)
        .args(["scan", "--host-root", "/", "-o", "json", "--pools-file"])
        .arg(pools)
        .output()?;
    check(&out, "volpool-agent scan")?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Entry `name` of pool `pool` in `status`; panics, showing the report, when there is none.
pub fn find<'a>(status: &'a NodeVolumesStatus, pool: &str, name: &str) -> &'a VolumeReport {
    status
        .volumes
        .iter()
        .find(|v| v.pool == pool && v.path.ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("no entry {pool}/{name} in {status:#?}"))
}

/// The JSON report an agent command (`what`) printed, whatever its exit status; panics,
/// showing its stdout and stderr, when it printed none.
pub fn json_report(out: &Output, what: &str) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Check `name` of a `check-nfs` or `check-network` JSON report: (status, message); panics,
/// showing the report, when there is none.
pub fn check_of<'a>(report: &'a serde_json::Value, name: &str) -> (&'a str, &'a str) {
    let c = report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"));
    (
        c["status"].as_str().unwrap_or_default(),
        c["message"].as_str().unwrap_or_default(),
    )
}

/// The message of check `name` of a `check-*` JSON report, whose status must be `status`.
pub fn message_of<'a>(report: &'a serde_json::Value, name: &str, status: &str) -> &'a str {
    let (actual, message) = check_of(report, name);
    assert_eq!(actual, status, "check {name}: {message}");
    message
}
