//! `volpool-controller plan`: the same [`plan`](crate::plan::plan) on files instead of a
//! cluster. Prints the PV creations, updates and deletions, scrub requests and pool statuses it
//! would write.
//!
//! ```text
//!  pools.yaml ─┐
//!  reports.yaml ┼─► World (nodes = the reports' nodes) ─► plan ─► YAML / JSON on stdout
//!  pvs.yaml ───┘
//! ```
//!
//! Files hold one object per YAML document, a `kind: List`, or a JSON array. Objects of other
//! kinds (the StorageClasses applied with the pools) are skipped, so the files a user applies
//! can be planned as they are. Only local pools are planned: an NFS pool's plan needs its
//! export, which is not read offline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use volpool_api::{NodeVolumes, VolumePool};

use crate::error::{Error, Result};
use crate::plan::{Change, NodeInfo, World, plan};

/// Output format.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// Arguments of the `plan` subcommand.
#[derive(clap::Args)]
pub struct PlanArgs {
    /// VolumePools (YAML documents, a List, or a JSON array).
    #[arg(long)]
    pub pools_file: PathBuf,
    /// NodeVolumes reports.
    #[arg(long)]
    pub reports_file: PathBuf,
    /// Existing PersistentVolumes.
    #[arg(long)]
    pub pvs_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "yaml")]
    pub output: Format,
}

/// Read the files, plan, render.
pub fn run(args: &PlanArgs) -> Result<String> {
    render(
        &args.pools_file,
        &args.reports_file,
        args.pvs_file.as_deref(),
        args.output,
    )
}

fn render(pools: &Path, reports: &Path, pvs: Option<&Path>, format: Format) -> Result<String> {
    let reports: Vec<Arc<NodeVolumes>> = read_objects(reports)?;
    // NB: offline there are no Node objects: a report stands for its node.
    let nodes = reports
        .iter()
        .map(|r| NodeInfo {
            name: r.metadata.name.clone().unwrap_or_default(),
            uid: r
                .status
                .as_ref()
                .map(|s| s.node_uid.clone())
                .unwrap_or_default(),
            labels: None,
        })
        .collect();
    let mut pools = read_objects::<VolumePool>(pools)?;
    pools.retain(|p| p.spec.local.is_some());
    let world = World {
        pools,
        reports,
        nodes,
        pvs: match pvs {
            Some(path) => read_objects::<PersistentVolume>(path)?,
            None => vec![],
        },
        storage_classes: None,
        claims: Vec::new(),
        claims_in_use: BTreeSet::new(),
        served_classes: BTreeSet::new(),
        explained: BTreeMap::new(),
        exports: BTreeMap::new(),
        now: Timestamp::now(),
    };
    let changes: Vec<Change> = plan(&world)
        .changes
        .into_iter()
        .filter(|c| !matches!(c, Change::Event(_)))
        .collect();
    match format {
        Format::Yaml => serde_yaml::to_string(&changes).map_err(|e| Error::Render(e.to_string())),
        Format::Json => serde_json::to_string_pretty(&changes)
            .map(|s| s + "\n")
            .map_err(|e| Error::Render(e.to_string())),
    }
}

fn read_objects<T: DeserializeOwned + kube::Resource<DynamicType = ()>>(
    path: &Path,
) -> Result<Vec<Arc<T>>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_objects(&text).map_err(|message| Error::ParseFile {
        path: path.to_path_buf(),
        message,
    })
}

fn parse_objects<T: DeserializeOwned + kube::Resource<DynamicType = ()>>(
    text: &str,
) -> Result<Vec<Arc<T>>, String> {
    let mut values = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| e.to_string())?;
        match value {
            serde_yaml::Value::Null => {}
            serde_yaml::Value::Sequence(items) => values.extend(items),
            serde_yaml::Value::Mapping(ref map)
                if map.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                if let Some(serde_yaml::Value::Sequence(items)) = map.get("items") {
                    values.extend(items.iter().cloned());
                }
            }
            other => values.push(other),
        }
    }
    let kind = T::kind(&());
    values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| {
            v.get("kind")
                .and_then(|k| k.as_str())
                .is_none_or(|k| k == kind)
        })
        .map(|(i, v)| {
            serde_yaml::from_value(v)
                .map(Arc::new)
                .map_err(|e| format!("object {}: {e}", i + 1))
        })
        .collect()
}

use serde::Deserialize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_from_files_without_a_cluster() {
        let dir = std::env::temp_dir().join(format!("volpool-offline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pools = dir.join("pools.yaml");
        let reports = dir.join("reports.json");
        std::fs::write(&pools, "apiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: fast}\nspec: {storageClassName: fast-disks, local: {discoveryDir: /mnt/disks}}\n---\nkind: VolumePool\nmetadata: {name: broken}\nspec: {storageClassName: x, releaseGracePeriod: soon, local: {discoveryDir: /other}}\n").expect("w");
        std::fs::write(&reports, r#"{"kind": "List", "items": [{"apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes", "metadata": {"name": "n1"}, "spec": {}, "status": {"nodeUID": "u1", "volumes": [{"pool": "fast", "volumeID": "uuid:1", "path": "/mnt/disks/vol1", "volumeMode": "Filesystem", "capacityBytes": 1073741824, "state": "Ready"}]}}]}"#).expect("w");
        let yaml = render(&pools, &reports, None, Format::Yaml).expect("plan");
        assert!(yaml.contains("action: createPv"), "{yaml}");
        assert!(yaml.contains("name: fast-n1-vol1-"), "{yaml}");
        assert!(yaml.contains("InvalidSpec"), "{yaml}");
        let json = render(&pools, &reports, None, Format::Json).expect("plan");
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(parsed[0]["action"], "createPv");
        let err = render(&dir.join("absent.yaml"), &reports, None, Format::Yaml)
            .expect_err("missing file");
        assert!(err.to_string().contains("absent.yaml"), "{err}");
        std::fs::write(&pools, "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast-disks}\nprovisioner: kubernetes.io/no-provisioner\n---\nkind: VolumePool\nmetadata: {name: fast}\nspec: {storageClassName: fast-disks, local: {discoveryDir: /mnt/disks}}\n").expect("w");
        let yaml = render(&pools, &reports, None, Format::Yaml).expect("a StorageClass is skipped");
        assert!(yaml.contains("name: fast-n1-vol1-"), "{yaml}");
        std::fs::write(&pools, "kind: VolumePool\nmetadata: {name: x}\nspec: {storageClassName: 3, reclaimPolicy: Recycle}\n").expect("w");
        let err = render(&pools, &reports, None, Format::Yaml).expect_err("bad pool");
        assert!(err.to_string().contains("object 1"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
