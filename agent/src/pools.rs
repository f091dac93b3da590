//! Which pools this agent scans: from a `--pools-file` (standalone) or the cluster's
//! `VolumePool`s whose `nodeSelector` matches this node's labels.
//!
//! ```text
//!  pools file (YAML stream) ─┐
//!  VolumePool watch ─────────┼─► validate ─► local pools matching the node ─► [LocalPool]
//!  Node labels ──────────────┘
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use volpool_api::units::parse_bytes;
use volpool_api::{VolumeMode, VolumePool, optional_selector_matches};

use crate::error::{Error, Result};

/// A local pool as the scan needs it: parsed and checked.
#[derive(Clone, Debug)]
pub struct LocalPool {
    /// The pool's name.
    pub name: String,
    /// Host path of the discovery directory.
    pub dir: PathBuf,
    /// Filesystem (mount points) or Block (block devices).
    pub mode: VolumeMode,
    /// Which entry names belong to the pool.
    pub pattern: glob::Pattern,
    /// Smaller entries are `TooSmall`.
    pub min_capacity: u64,
}

impl LocalPool {
    /// The local part of a pool; `Ok(None)` for NFS pools, `Err` with every problem for
    /// invalid ones.
    pub fn from_pool(pool: &VolumePool) -> Result<Option<LocalPool>, String> {
        pool.validate().map_err(|e| e.to_string())?;
        let name = pool.metadata.name.clone().unwrap_or_default();
        let Some(local) = &pool.spec.local else {
            return Ok(None);
        };
        let pattern = glob::Pattern::new(&local.name_pattern).map_err(|e| {
            format!(
                "VolumePool {name:?}: spec.local.namePattern {:?} is not a glob: {e}",
                local.name_pattern
            )
        })?;
        let min_capacity = parse_bytes(&local.min_capacity).map_err(|e| e.to_string())?;
        Ok(Some(LocalPool {
            name,
            dir: PathBuf::from(&local.discovery_dir),
            mode: local.volume_mode,
            pattern,
            min_capacity,
        }))
    }
}

/// Read a YAML stream of VolumePool objects: the file a user applies, so documents of other
/// kinds (the pools' StorageClasses) are skipped. A VolumePool that is not valid, or a file
/// with no VolumePool at all, is a fatal error naming the file and the document.
pub fn read_pools_file(path: &Path) -> Result<Vec<VolumePool>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadPoolsFile {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| Error::ParsePoolsFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut pools = Vec::new();
    let mut other = None;
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| bad(format!("document {}: {e}", i + 1)))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != "VolumePool" {
            other.get_or_insert(format!(
                "document {}: kind {kind:?} is not VolumePool",
                i + 1
            ));
            continue;
        }
        let pool: VolumePool =
            serde_yaml::from_value(value).map_err(|e| bad(format!("document {}: {e}", i + 1)))?;
        pool.validate()
            .map_err(|e| bad(format!("document {}: {e}", i + 1)))?;
        pools.push(pool);
    }
    match other {
        Some(skipped) if pools.is_empty() => Err(bad(format!("{skipped}, and no document is"))),
        _ => Ok(pools),
    }
}

/// The local pools among `pools` whose node selector matches `labels` (`None` = standalone,
/// every pool). Invalid pools are skipped with a warning: the others are still scanned.
pub fn select(pools: &[VolumePool], labels: Option<&BTreeMap<String, String>>) -> Vec<LocalPool> {
    let mut out: Vec<LocalPool> = pools
        .iter()
        .filter(|p| optional_selector_matches(p.spec.node_selector.as_ref(), labels))
        .filter_map(|p| match LocalPool::from_pool(p) {
            Ok(local) => local,
            Err(problem) => {
                tracing::warn!(%problem, "skipping an invalid pool");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use volpool_testkit::TempDir;

    fn pools(yaml: &str) -> Vec<VolumePool> {
        let dir = TempDir::new("volpool-pools").expect("temp dir");
        let file = dir.join("pools.yaml");
        std::fs::write(&file, yaml).expect("write");
        read_pools_file(&file).expect("valid pools file")
    }

    #[test]
    fn selects_by_node_labels() {
        let all = pools(
            "apiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: fast}\nspec:\n  storageClassName: fast\n  nodeSelector: {matchLabels: {disk: ssd}}\n  local: {discoveryDir: /mnt/fast, namePattern: 'vol*', minCapacity: 1Mi}\n---\napiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: any}\nspec:\n  storageClassName: any\n  nodeSelector: {matchExpressions: [{key: zone, operator: NotIn, values: [b]}]}\n  local: {discoveryDir: /mnt/any}\n---\napiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: shared}\nspec: {storageClassName: nfs, nfs: {server: s, path: /e}}\n",
        );
        let labels = BTreeMap::from([("disk".to_string(), "ssd".to_string())]);
        let names: Vec<String> = select(&all, Some(&labels))
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["any", "fast"]);
        let zone_b = BTreeMap::from([("zone".to_string(), "b".to_string())]);
        assert!(select(&all, Some(&zone_b)).is_empty());
        let fast = &select(&all, None)[1];
        assert_eq!(fast.min_capacity, 1 << 20);
        assert!(fast.pattern.matches("vol1") && !fast.pattern.matches("lost+found"));
    }

    #[test]
    fn a_bad_pools_file_names_the_file_and_the_problem() {
        let dir = TempDir::new("volpool-bad").expect("temp dir");
        for (yaml, needle) in [
            ("kind: Pod\nmetadata: {name: x}\n", "kind \"Pod\""),
            (
                "kind: VolumePool\nmetadata: {name: x}\nspec: {storageClassName: c}\n",
                "neither spec.local",
            ),
            ("kind: VolumePool\n  bad: [indent\n", "document 1"),
        ] {
            let file = dir.join("pools.yaml");
            std::fs::write(&file, yaml).expect("write");
            let err = read_pools_file(&file).expect_err("invalid").to_string();
            assert!(err.contains("pools.yaml") && err.contains(needle), "{err}");
        }
        let applied = "kind: StorageClass\nmetadata: {name: c}\n---\nkind: VolumePool\nmetadata: {name: p}\nspec: {storageClassName: c, local: {discoveryDir: /mnt/disks}}\n";
        std::fs::write(dir.join("applied.yaml"), applied).expect("write");
        let pools = read_pools_file(&dir.join("applied.yaml")).expect("StorageClass skipped");
        assert_eq!(pools.len(), 1);
        let err = read_pools_file(&dir.join("missing.yaml")).expect_err("missing");
        assert!(err.to_string().contains("missing.yaml"), "{err}");
    }
}
