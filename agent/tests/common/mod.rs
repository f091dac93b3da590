//! What the agent's CLI tests share: `volpool-agent scan` on a fake node, parsed.

use std::path::Path;

use volpool_api::{NodeVolumesStatus, VolumeReport};
use volpool_testkit::{FakeNode, check};

pub const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");

/// The report `volpool-agent scan` makes on `node` for the pools in `pools`.
pub fn scan(node: &FakeNode, pools: &Path) -> anyhow::Result<NodeVolumesStatus> {
    let out = node
        .command(AGENT)
        .args(["scan", "--host-root", "/", "-o", "json", "--pools-file"])
        .arg(pools)
        .output()?;
    check(&out, "volpool-agent scan")?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Entry `name` of pool `pool` in `status`.
pub fn find<'a>(status: &'a NodeVolumesStatus, pool: &str, name: &str) -> &'a VolumeReport {
    status
        .volumes
        .iter()
        .find(|v| v.pool == pool && v.path.ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("no entry {pool}/{name} in {status:#?}"))
}
