//! One look at everything the invariants judge, taken in one go: the soak's PVs, claims,
//! Nodes, NodeVolumes and VolumePools from the API, the filesystem mounted at each disk path of each node,
//! and the NFS export's directories as the server has them.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::ListParams;
use volpool_api::{LABEL_POOL, NodeVolumes, VolumePool};

use super::bed::{Bed, DISKS, LABEL_NODE_OF};
use super::disk::identities;

/// How long one look may take.
pub const LOOK: std::time::Duration = std::time::Duration::from_secs(20);

/// What the soak sees at one moment.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// PVs of the local pool.
    pub local: Vec<PersistentVolume>,
    /// PVs of the NFS pool.
    pub nfs: Vec<PersistentVolume>,
    /// Claims of the soak's namespace.
    pub claims: Vec<PersistentVolumeClaim>,
    /// UID of each of the soak's Nodes that exists.
    pub nodes: BTreeMap<String, String>,
    /// Each node's report.
    pub reports: BTreeMap<String, NodeVolumes>,
    /// The two pools, as the controller last wrote their status.
    pub pools: Vec<VolumePool>,
    /// (node, disk path) → identity of the filesystem mounted there.
    pub disks: BTreeMap<(String, String), Option<String>>,
    /// Each `pv-*` directory of the export → its entries.
    pub dirs: BTreeMap<String, Vec<String>>,
}

impl World {
    /// Look at everything, or fail after [`LOOK`] (an apiserver whose etcd is down takes a
    /// minute to answer each request).
    pub async fn observe(bed: &Bed) -> anyhow::Result<World> {
        tokio::time::timeout(LOOK, World::look(bed))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {LOOK:?}")))
    }

    async fn look(bed: &Bed) -> anyhow::Result<World> {
        let pvs = Api::<PersistentVolume>::all(bed.client.clone());
        let of = |pool: String| ListParams::default().labels(&format!("{LABEL_POOL}={pool}"));
        let local = pvs.list(&of(bed.local_pool())).await?.items;
        let nfs = pvs.list(&of(bed.nfs_pool())).await?.items;
        let claims = Api::<PersistentVolumeClaim>::namespaced(bed.client.clone(), &bed.test)
            .list(&ListParams::default())
            .await?
            .items;
        let mine = ListParams::default().labels(&format!("{LABEL_NODE_OF}={}", bed.test));
        let nodes = Api::<Node>::all(bed.client.clone())
            .list(&mine)
            .await?
            .items
            .into_iter()
            .filter_map(|n| Some((n.metadata.name?, n.metadata.uid?)))
            .collect();
        let api = Api::<NodeVolumes>::all(bed.client.clone());
        let mut reports = BTreeMap::new();
        for node in &bed.nodes {
            if let Some(nv) = api.get_opt(&node.name).await? {
                reports.insert(node.name.clone(), nv);
            }
        }
        let pools = pools(bed).await?;
        let mut disks = BTreeMap::new();
        let paths: Vec<_> = DISKS.iter().map(|d| bed.disk(d)).collect();
        let paths: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        for node in &bed.nodes {
            for (path, id) in identities(node, &paths)? {
                disks.insert((node.name.clone(), path), id);
            }
        }
        Ok(World {
            local,
            nfs,
            claims,
            nodes,
            reports,
            pools,
            disks,
            dirs: export_dirs(&bed.export),
        })
    }

    /// Every PV of both pools.
    pub fn pvs(&self) -> impl Iterator<Item = &PersistentVolume> {
        self.local.iter().chain(&self.nfs)
    }

    /// Resource versions of everything in the API, to tell when nothing changes any more.
    pub fn versions(&self) -> Vec<String> {
        let rv = |m: &kube::api::ObjectMeta| {
            format!(
                "{}@{}",
                m.name.as_deref().unwrap_or_default(),
                m.resource_version.as_deref().unwrap_or_default()
            )
        };
        let mut all: Vec<String> = self.pvs().map(|p| rv(&p.metadata)).collect();
        all.extend(self.claims.iter().map(|c| rv(&c.metadata)));
        all.extend(self.reports.values().map(|r| rv(&r.metadata)));
        // NB: a pool's status is the controller's own write; it is in, so that the idle
        // passes are measured once the controller has caught up with the last change.
        all.extend(self.pools.iter().map(|p| rv(&p.metadata)));
        all
    }
}

/// The soak's two pools, as the API has them now (a pool that does not exist is left out), or
/// fail after [`LOOK`].
pub async fn pools(bed: &Bed) -> anyhow::Result<Vec<VolumePool>> {
    let api = Api::<VolumePool>::all(bed.client.clone());
    let read = async {
        let mut pools = Vec::new();
        for name in [bed.local_pool(), bed.nfs_pool()] {
            pools.extend(api.get_opt(&name).await?);
        }
        anyhow::Ok(pools)
    };
    tokio::time::timeout(LOOK, read)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {LOOK:?}")))
}

fn export_dirs(export: &Path) -> BTreeMap<String, Vec<String>> {
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|it| {
                it.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    names(export)
        .into_iter()
        .filter(|n| n.starts_with("pv-"))
        .map(|n| {
            let entries = names(&export.join(&n));
            (n, entries)
        })
        .collect()
}
