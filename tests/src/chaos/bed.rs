//! The soak's world: the real control plane, fake nodes with loop-backed ext4 disks under one
//! discovery directory, an NFS export served by nfs-ganesha, two controller replicas electing a
//! leader, and the pools, classes and namespace the load uses. Torn down on [`Bed::down`].
//!
//! ```text
//!  <tmp>/volpool-chaos-*/disks/d0..d2  ──mounted per node──► DiskNode n0..n2 (agent inside)
//!  <tmp>/volpool-chaos-*/export (tmpfs) ──► nfs-ganesha ──► pool <test>-nfs (Immediate class)
//!  pool <test>-local (WaitForFirstConsumer class) ◄── controllers <test>-a, <test>-b (Lease <test>)
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::ensure;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use volpool_api::{LABEL_POOL, VolumePool};
use volpool_testkit::{Fs, TempDir, cargo_binary};

use super::control_plane::ControlPlane;
use crate::controller::{Controller, LEASE_NAMESPACE, apply_pool, create_class, create_namespace};
use crate::disks::DiskNode;
use crate::nfs::NfsServer;
use crate::{apply_crds, client, kubeconfig, unique};

/// Node label that puts the soak's nodes (and only them) in its pools.
pub const LABEL_NODE_OF: &str = "volpool.io/e2e-node";
/// The disks of every node, by entry name under the discovery directory.
pub const DISKS: [&str; 3] = ["d0", "d1", "d2"];
/// Size of each disk when made.
pub const DISK_MIB: u64 = 32;

/// Everything the soak runs against. Fields drop in order: controllers, nodes, server.
pub struct Bed {
    /// Admin client.
    pub client: Client,
    /// The soak's name: Lease, pool selector, namespace, prefix of every object.
    pub test: String,
    /// The controller replicas (`None` while one is killed).
    pub controllers: Vec<Option<Controller>>,
    /// The fake nodes.
    pub nodes: Vec<DiskNode>,
    /// The NFS server.
    pub server: NfsServer,
    /// The control plane, when this soak may kill and restart it.
    pub control_plane: Option<ControlPlane>,
    /// The local pools' discovery directory.
    pub disks: PathBuf,
    /// The exported directory (server side).
    pub export: PathBuf,
    /// The test kit's `hangfs` (a FUSE filesystem that never answers `statfs`).
    pub hangfs: PathBuf,
    dir: TempDir,
}

impl Bed {
    /// Bring it all up: `nodes` fake nodes with [`DISKS`] each.
    pub async fn up(nodes: usize) -> anyhow::Result<Bed> {
        let client = client().await?;
        apply_crds(&client).await?;
        let test = unique("chaos");
        let dir = TempDir::new("volpool-chaos")?;
        let (disks, images, export) = (dir.join("disks"), dir.join("images"), dir.join("export"));
        for d in [&disks, &images, &export] {
            std::fs::create_dir_all(d)?;
        }
        // NB: an export of its own, so its free space (in the pool's status) moves only with
        // the soak; mounted before the server starts, whose mount namespace copies this one's.
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1g", "tmpfs"])
            .arg(&export)
            .status()?;
        ensure!(status.success(), "mount tmpfs on {}", export.display());
        let server = NfsServer::start(&[&export])?;
        let control_plane = ControlPlane::of(&kubeconfig()?);
        // NB: built (or found) now: a build later, under the lock all test processes share,
        // could hold up a fault for minutes.
        let hangfs = cargo_binary("volpool-testkit", "hangfs")?;
        let mut bed = Bed {
            client,
            test,
            controllers: Vec::new(),
            nodes: Vec::new(),
            server,
            control_plane,
            disks,
            export,
            hangfs,
            dir,
        };
        bed.apply_pools(0).await?;
        create_class(&bed.client, &bed.local_pool(), true).await?;
        create_class(&bed.client, &bed.nfs_pool(), false).await?;
        create_namespace(&bed.client, &bed.test).await?;
        for i in 0..nodes {
            let name = format!("{}-n{i}", bed.test);
            let mut node = DiskNode::start(&bed.client, &name, bed.node_labels()).await?;
            for disk in DISKS {
                node.mount_disk(&images, &bed.disks.join(disk), DISK_MIB, Fs::Ext4)?;
            }
            bed.nodes.push(node);
        }
        for replica in ["a", "b"] {
            let identity = format!("{}-{replica}", bed.test);
            bed.controllers
                .push(Some(Controller::start(&bed.test, &identity).await?));
        }
        Ok(bed)
    }

    /// Labels of the soak's nodes.
    pub fn node_labels(&self) -> Value {
        json!({LABEL_NODE_OF: self.test})
    }

    /// The local pool (and its StorageClass).
    pub fn local_pool(&self) -> String {
        format!("{}-local", self.test)
    }

    /// The NFS pool (and its StorageClass).
    pub fn nfs_pool(&self) -> String {
        format!("{}-nfs", self.test)
    }

    /// Apply both pools in their `edit`-th version: even edits are the first version, odd
    /// ones add a PV label and keep one more NFS volume Available.
    pub async fn apply_pools(&self, edit: u32) -> anyhow::Result<()> {
        let selector = json!({"matchLabels": self.node_labels()});
        let labels = json!({"volpool.io/chaos-edit": edit.to_string()});
        let local = json!({
            "storageClassName": self.local_pool(), "nodeSelector": selector, "labels": labels,
            "local": {"discoveryDir": self.disks.to_string_lossy(), "minCapacity": "1Mi"},
        });
        apply_pool(&self.client, &self.test, &self.local_pool(), local).await?;
        let nfs = json!({
            "storageClassName": self.nfs_pool(), "nodeSelector": selector, "labels": labels,
            "mountOptions": ["nfsvers=3", "nolock"],
            "nfs": {"server": self.server.address(), "path": self.export.to_string_lossy(),
                    "volumeSize": "1Mi", "minAvailable": 2 + edit % 2, "maxVolumes": 12,
                    "nfsClientAffinity": false},
        });
        apply_pool(&self.client, &self.test, &self.nfs_pool(), nfs).await
    }

    /// Path of disk `disk` (an entry of [`DISKS`]).
    pub fn disk(&self, disk: &str) -> PathBuf {
        self.disks.join(disk)
    }

    /// The node named `name`, by index.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The identity of the replica that holds the Lease, if any.
    pub async fn leader(&self) -> anyhow::Result<Option<String>> {
        let lease = Api::<Lease>::namespaced(self.client.clone(), LEASE_NAMESPACE)
            .get_opt(&self.test)
            .await?;
        Ok(lease
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty()))
    }

    /// Where the soak keeps its scratch files.
    pub fn scratch(&self) -> &Path {
        &self.dir.0
    }

    /// Stop everything and delete what the soak made in the cluster (best effort).
    pub async fn down(mut self) {
        self.controllers.clear();
        self.nodes.clear();
        // NB: etcd or the apiserver may be down (a soak stopped mid-fault): start them first.
        drop(self.control_plane.take());
        let c = &self.client;
        let dp = DeleteParams::default();
        let _ = Api::<Namespace>::all(c.clone())
            .delete(&self.test, &dp)
            .await;
        for pool in [self.local_pool(), self.nfs_pool()] {
            let _ = Api::<VolumePool>::all(c.clone()).delete(&pool, &dp).await;
            let _ = Api::<StorageClass>::all(c.clone()).delete(&pool, &dp).await;
            let lp = ListParams::default().labels(&format!("{LABEL_POOL}={pool}"));
            let _ = Api::<PersistentVolume>::all(c.clone())
                .delete_collection(&dp, &lp)
                .await;
        }
        let _ = Api::<Lease>::namespaced(c.clone(), LEASE_NAMESPACE)
            .delete(&self.test, &dp)
            .await;
        let lp = ListParams::default().labels(&format!("{LABEL_NODE_OF}={}", self.test));
        let _ = Api::<Node>::all(c.clone())
            .delete_collection(&dp, &lp)
            .await;
        drop(self.server);
        let _ = Command::new("umount").arg("-l").arg(&self.export).status();
    }
}
