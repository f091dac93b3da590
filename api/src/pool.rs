//! `VolumePool`: what people write (spec) and what the controller reports (status).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::pool_status::VolumePoolStatus;
use crate::{crd::null_as_default as nulls, units::parse_bytes, units::parse_duration};

/// A pool of ready PersistentVolumes made from node disks (`local`) or an NFS export (`nfs`).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "volpool.io",
    version = "v1alpha1",
    kind = "VolumePool",
    status = "VolumePoolStatus",
    shortname = "vp",
    category = "volpool",
    printcolumn = r#"{"name":"Class","type":"string","jsonPath":".spec.storageClassName"}"#,
    printcolumn = r#"{"name":"Dir","type":"string","priority":1,"jsonPath":".spec.local.discoveryDir"}"#,
    printcolumn = r#"{"name":"Server","type":"string","priority":1,"jsonPath":".spec.nfs.server"}"#,
    printcolumn = r#"{"name":"Available","type":"integer","jsonPath":".status.volumes.available"}"#,
    printcolumn = r#"{"name":"Bound","type":"integer","jsonPath":".status.volumes.bound"}"#,
    printcolumn = r#"{"name":"Released","type":"integer","jsonPath":".status.volumes.released"}"#,
    printcolumn = r#"{"name":"Unhealthy","type":"integer","jsonPath":".status.volumes.unhealthy"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VolumePoolSpec {
    /// StorageClass name written into every PV of this pool.
    pub storage_class_name: String,
    /// Reclaim policy written into each PV.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
    /// Access modes of each PV; empty means [ReadWriteOnce] for local, [ReadWriteOnce,
    /// ReadOnlyMany, ReadWriteMany] for nfs (all that NFS can do, so a claim asking any of them
    /// fits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<AccessMode>,
    /// Mount options copied into each PV.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
    /// local: the nodes whose agents scan; nfs: the nodes allowed to mount. Empty = all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Extra labels put on every PV.
    #[serde(default, deserialize_with = "nulls")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How long a Released PV waits before it is scrubbed (an undo window), e.g. `10m`.
    #[serde(default = "zero_duration")]
    #[schemars(regex(pattern = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$"))]
    pub release_grace_period: String,
    /// Volumes from mount points or block devices inside a directory on each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSource>,
    /// Volumes carved as sub-directories of an NFS export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsSource>,
}

fn zero_duration() -> String {
    "0s".into()
}

/// Where a local pool finds its volumes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSource {
    /// Host path; each mount point (or block device) directly inside it is one PV.
    pub discovery_dir: String,
    /// Filesystem or Block.
    #[serde(default)]
    pub volume_mode: VolumeMode,
    /// Glob on the entry name (`*`, `?`, `[abc]`).
    #[serde(default = "any_name")]
    pub name_pattern: String,
    /// Smaller entries are reported, not offered.
    #[serde(default = "one_gibibyte")]
    pub min_capacity: String,
    /// How a released volume is scrubbed: Wipe | None (Filesystem), Discard | Zero | None (Block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupMethod>,
}

fn any_name() -> String {
    "*".into()
}

fn one_gibibyte() -> String {
    "1Gi".into()
}

/// Where an NFS pool carves its volumes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NfsSource {
    /// NFS server name or address.
    pub server: String,
    /// Exported path on the server.
    pub path: String,
    /// NFSv3: the controller speaks NFS over the wire. Mounted: the export is mounted in the
    /// controller pod at `mountedPath`.
    #[serde(default)]
    pub access: NfsAccess,
    /// Where the export is mounted in the controller pod (access: Mounted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mounted_path: String,
    /// Capacity advertised by each carved PV (NFS does not enforce it).
    #[serde(default = "ten_gibibytes")]
    pub volume_size: String,
    /// Keep this many Available PVs.
    #[serde(default = "three")]
    #[schemars(range(min = 0))]
    pub min_available: u32,
    /// Never more PVs than this in all.
    #[serde(default = "one_hundred")]
    #[schemars(range(min = 1))]
    pub max_volumes: u32,
    /// What happens to a released volume's directory.
    #[serde(default)]
    pub on_release: OnRelease,
    /// Mode of each carved directory, in octal.
    #[serde(default = "dir_mode_0777")]
    #[schemars(regex(pattern = r"^0?[0-7]{3,4}$"))]
    pub dir_mode: String,
    /// Give each PV the nodeAffinity `volpool.io/nfs-client In [ready]`, so pods go only to
    /// nodes whose agents found a working NFS client. `false` opts out (no agent on the nodes).
    #[serde(default = "yes")]
    pub nfs_client_affinity: bool,
}

fn dir_mode_0777() -> String {
    "0777".into()
}

fn yes() -> bool {
    true
}

impl NfsSource {
    /// `dirMode` as a number, when it is valid octal up to 07777.
    pub fn dir_mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(&self.dir_mode, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
    }
}

fn ten_gibibytes() -> String {
    "10Gi".into()
}

fn three() -> u32 {
    3
}

fn one_hundred() -> u32 {
    100
}

/// `persistentVolumeReclaimPolicy` of the pool's PVs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Scrub and recreate the volume once released.
    #[default]
    Delete,
    /// Leave the released volume alone.
    Retain,
}

/// A PV access mode.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessMode {
    /// Mounted read-write by one node.
    ReadWriteOnce,
    /// Mounted read-only by many nodes.
    ReadOnlyMany,
    /// Mounted read-write by many nodes.
    ReadWriteMany,
}

/// Whether a local PV is a filesystem or a raw block device.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeMode {
    /// A mounted filesystem.
    #[default]
    Filesystem,
    /// A raw block device.
    Block,
}

/// How a released local volume is scrubbed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CleanupMethod {
    /// Delete the filesystem's contents.
    Wipe,
    /// Discard every block of the device.
    Discard,
    /// Write zeros over the device.
    Zero,
    /// Do not scrub.
    None,
}

/// How the controller reaches an NFS export.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NfsAccess {
    /// The controller speaks NFSv3 to the server itself (no mount, no privileges).
    #[default]
    NFSv3,
    /// The export is mounted into the controller pod at `mountedPath`.
    Mounted,
}

/// What happens to a released NFS volume's directory.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnRelease {
    /// Remove the directory and its contents.
    #[default]
    Delete,
    /// Rename the directory to `archived-<dir>-<timestamp>`.
    Archive,
    /// Leave the directory and the Released PV.
    Retain,
}

/// Why a VolumePool cannot be used as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("VolumePool {pool:?} is invalid: {}", problems.join("; "))]
pub struct InvalidPool {
    /// The pool's name.
    pub pool: String,
    /// Every problem found, each saying what to change.
    pub problems: Vec<String>,
}

impl VolumePool {
    /// Check what the schema of a 1.20 apiserver cannot: exactly one source, parseable
    /// quantities and durations, consistent modes. Returns every problem at once.
    pub fn validate(&self) -> Result<(), InvalidPool> {
        let spec = &self.spec;
        let mut problems = Vec::new();
        if spec.storage_class_name.trim().is_empty() {
            problems.push("spec.storageClassName must be set".to_string());
        }
        match (&spec.local, &spec.nfs) {
            (Some(_), Some(_)) => problems.push(
                "spec.local and spec.nfs are both set: a pool has exactly one source, split it into two pools".into(),
            ),
            (None, None) => problems
                .push("neither spec.local nor spec.nfs is set: a pool needs exactly one source".into()),
            _ => {}
        }
        if let Err(e) = parse_duration(&spec.release_grace_period) {
            problems.push(format!("spec.releaseGracePeriod: {e}"));
        }
        if let Some(local) = &spec.local {
            if !local.discovery_dir.starts_with('/') {
                problems.push(format!(
                    "spec.local.discoveryDir {:?} must be an absolute host path such as /mnt/disks",
                    local.discovery_dir
                ));
            }
            if let Err(e) = parse_bytes(&local.min_capacity) {
                problems.push(format!("spec.local.minCapacity: {e}"));
            }
            let cleanup_fits = matches!(
                (local.volume_mode, local.cleanup),
                (_, None | Some(CleanupMethod::None))
                    | (VolumeMode::Filesystem, Some(CleanupMethod::Wipe))
                    | (
                        VolumeMode::Block,
                        Some(CleanupMethod::Discard | CleanupMethod::Zero)
                    )
            );
            if !cleanup_fits {
                problems.push(format!(
                    "spec.local.cleanup {:?} does not fit volumeMode {:?}: use Wipe or None for Filesystem, Discard, Zero or None for Block",
                    local.cleanup, local.volume_mode
                ));
            }
        }
        if let Some(nfs) = &spec.nfs {
            if nfs.server.trim().is_empty() {
                problems.push("spec.nfs.server must be set".into());
            }
            if !nfs.path.starts_with('/') {
                problems.push(format!(
                    "spec.nfs.path {:?} must be an absolute export path",
                    nfs.path
                ));
            }
            if nfs.access == NfsAccess::Mounted && !nfs.mounted_path.starts_with('/') {
                problems.push(
                    "spec.nfs.mountedPath must be an absolute path when access is Mounted".into(),
                );
            }
            if let Err(e) = parse_bytes(&nfs.volume_size) {
                problems.push(format!("spec.nfs.volumeSize: {e}"));
            }
            if nfs.dir_mode_bits().is_none() {
                problems.push(format!(
                    "spec.nfs.dirMode {:?} must be an octal mode such as 0777 or 2770",
                    nfs.dir_mode
                ));
            }
            if nfs.min_available > nfs.max_volumes {
                problems.push(format!(
                    "spec.nfs.minAvailable ({}) is larger than spec.nfs.maxVolumes ({})",
                    nfs.min_available, nfs.max_volumes
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidPool {
                pool: self.metadata.name.clone().unwrap_or_default(),
                problems,
            })
        }
    }

    /// Access modes to write into PVs: the spec's, else RWO for local and RWO, ROX, RWX for nfs.
    pub fn effective_access_modes(&self) -> Vec<AccessMode> {
        match (&self.spec.access_modes[..], &self.spec.nfs) {
            ([], Some(_)) => vec![
                AccessMode::ReadWriteOnce,
                AccessMode::ReadOnlyMany,
                AccessMode::ReadWriteMany,
            ],
            ([], None) => vec![AccessMode::ReadWriteOnce],
            (modes, _) => modes.to_vec(),
        }
    }

    /// Default cleanup for the pool's local volumes: Wipe for filesystems, None for block
    /// devices (wiping a raw device is a choice the operator must make).
    pub fn local_cleanup(&self) -> Option<CleanupMethod> {
        let local = self.spec.local.as_ref()?;
        Some(local.cleanup.unwrap_or(match local.volume_mode {
            VolumeMode::Filesystem => CleanupMethod::Wipe,
            VolumeMode::Block => CleanupMethod::None,
        }))
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(yaml: &str) -> VolumePool {
        serde_yaml::from_str(yaml).expect("test pool parses")
    }

    const LOCAL: &str = "apiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: fast}\nspec:\n  storageClassName: fast-disks\n  local: {discoveryDir: /mnt/disks}\n";

    #[test]
    fn defaults_fill_in() {
        let p = pool(LOCAL);
        assert_eq!(p.spec.reclaim_policy, ReclaimPolicy::Delete);
        assert_eq!(p.spec.release_grace_period, "0s");
        let local = p.spec.local.as_ref().expect("local");
        assert_eq!(local.name_pattern, "*");
        assert_eq!(local.min_capacity, "1Gi");
        assert_eq!(p.effective_access_modes(), vec![AccessMode::ReadWriteOnce]);
        assert_eq!(p.local_cleanup(), Some(CleanupMethod::Wipe));
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn nfs_defaults_to_every_access_mode() {
        let p = pool(
            "metadata: {name: shared}\nspec:\n  storageClassName: nfs\n  nfs: {server: nfs.example.com, path: /var/nfs}\n",
        );
        assert_eq!(
            p.effective_access_modes(),
            vec![
                AccessMode::ReadWriteOnce,
                AccessMode::ReadOnlyMany,
                AccessMode::ReadWriteMany
            ]
        );
        let nfs = p.spec.nfs.as_ref().expect("nfs");
        assert_eq!((nfs.min_available, nfs.max_volumes), (3, 100));
        assert_eq!(nfs.access, NfsAccess::NFSv3);
        assert_eq!(nfs.dir_mode_bits(), Some(0o777));
        assert!(nfs.nfs_client_affinity);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn both_or_neither_source_is_refused_with_a_clear_message() {
        let both = pool(
            "metadata: {name: x}\nspec:\n  storageClassName: c\n  local: {discoveryDir: /mnt/disks}\n  nfs: {server: s, path: /p}\n",
        );
        let err = both.validate().expect_err("both sources").to_string();
        assert!(err.contains("\"x\"") && err.contains("both set"), "{err}");
        let neither = pool("metadata: {name: y}\nspec: {storageClassName: c}\n");
        let err = neither.validate().expect_err("no source").to_string();
        assert!(err.contains("neither spec.local nor spec.nfs"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = pool(
            "metadata: {name: z}\nspec:\n  storageClassName: ''\n  releaseGracePeriod: soon\n  nfs: {server: '', path: rel, volumeSize: big, minAvailable: 5, maxVolumes: 2, dirMode: '999'}\n",
        );
        let err = p.validate().expect_err("invalid");
        assert_eq!(err.problems.len(), 7, "{err}");
    }

    #[test]
    fn block_cleanup_must_fit_the_mode() {
        let p = pool(
            "metadata: {name: b}\nspec:\n  storageClassName: c\n  local: {discoveryDir: /dev/pool, volumeMode: Block, cleanup: Wipe}\n",
        );
        assert!(
            p.validate()
                .expect_err("wipe on block")
                .to_string()
                .contains("does not fit")
        );
        let p = pool(
            "metadata: {name: b}\nspec:\n  storageClassName: c\n  local: {discoveryDir: /dev/pool, volumeMode: Block}\n",
        );
        assert_eq!(p.local_cleanup(), Some(CleanupMethod::None));
    }

    #[test]
    fn unknown_enum_values_are_refused() {
        let err = serde_yaml::from_str::<VolumePool>(
            "metadata: {name: q}\nspec: {storageClassName: c, reclaimPolicy: Recycle, local: {discoveryDir: /d}}\n",
        )
        .expect_err("Recycle is not a policy");
        assert!(err.to_string().contains("Recycle"), "{err}");
    }
}
