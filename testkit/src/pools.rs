//! Inputs for `volpool-agent --pools-file`: VolumePools as YAML, without a cluster.

use std::path::{Path, PathBuf};

use crate::TempDir;

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
