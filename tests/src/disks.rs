//! Fake nodes with real disks for the local-pool e2e tests: each [`DiskNode`] is a Node object,
//! a [`FakeNode`] namespace holding the node's own mounts (tmpfs, or loop-backed ext4/XFS
//! images), and the real `volpool-agent` running inside it.
//!
//! ```text
//!  DiskNode::start ──► Node <name> (labelled for the test's pool)
//!                  ──► FakeNode (private mount + pid namespace)
//!                         ├─ mount tmpfs / /dev/loopN at <dir>/<entry>   (only this node sees it)
//!                         └─ volpool-agent --node-name <name> ──► NodeVolumes/<name>
//!  drop ──► agent and namespace killed (its mounts go) ──► loop devices detached, images removed
//! ```
//!
//! Loop devices are the one thing a namespace does not take with it: each is the test kit's
//! [`LoopDevice`], detached when its guard goes and the node's namespace (the last mount of
//! it) is gone, also when the test is killed.

use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::{Context, bail};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use volpool_testkit::{FakeNode, Fs, LoopDevice, free_port};

use crate::agent::AgentNode;
use crate::create_node;
use crate::deploy::{AGENT, service_account_kubeconfig};

/// One fake node with its agent. Fields drop in order: agent, namespace, loop disks.
pub struct DiskNode {
    /// Node name.
    pub name: String,
    /// Port of the agent's `/metrics`.
    pub port: u16,
    agent: Option<Child>,
    kubeconfig: PathBuf,
    fake: FakeNode,
    loops: Vec<LoopDevice>,
}

impl DiskNode {
    /// Create Node `name` with `labels`, its namespace, and start its agent (resync 2 s, so a
    /// resized disk is noticed soon: a resize does not change the mount table).
    pub async fn start(
        client: &Client,
        name: &str,
        labels: serde_json::Value,
    ) -> anyhow::Result<DiskNode> {
        create_labelled_node(client, name, labels).await?;
        let mut node = DiskNode {
            name: name.to_string(),
            port: free_port()?,
            agent: None,
            kubeconfig: service_account_kubeconfig(AGENT).await?,
            fake: FakeNode::new()?,
            loops: Vec::new(),
        };
        node.start_agent()?;
        Ok(node)
    }

    /// Start (or restart) the agent.
    pub fn start_agent(&mut self) -> anyhow::Result<()> {
        self.stop_agent();
        self.agent = Some(self.fake.spawn_agent_with(
            &self.kubeconfig,
            &self.name,
            self.port,
            &["--resync", "2s"],
        )?);
        Ok(())
    }

    /// Stop the agent (SIGKILL); the node's mounts stay.
    pub fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    /// A command that runs in the node's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        self.fake.command(program)
    }

    /// Run a shell script in the node's namespace.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        self.fake.sh(script)
    }

    /// Mount a tmpfs of `mib` MiB at `path` on this node only.
    pub fn mount_tmpfs(&self, path: &Path, mib: u64) -> anyhow::Result<()> {
        std::fs::create_dir_all(path)?;
        self.sh(&format!(
            "mount -t tmpfs -o size={mib}m tmpfs '{}'",
            path.display()
        ))?;
        Ok(())
    }

    /// Make a loop disk of `mib` MiB with `fs` (its image in `images`) and mount it at `path`
    /// on this node only.
    pub fn mount_disk(
        &mut self,
        images: &Path,
        path: &Path,
        mib: u64,
        fs: Fs,
    ) -> anyhow::Result<()> {
        let entry = path
            .file_name()
            .context("a disk path has a last component")?
            .to_string_lossy();
        let image = images.join(format!("{}-{entry}.img", self.name));
        let disk = self.fake.mount_disk(image, path, mib, fs)?;
        self.loops.push(disk);
        Ok(())
    }

    /// Grow the loop disk mounted at `path` to `mib` MiB, while mounted: image, loop device,
    /// filesystem.
    pub fn grow_disk(&self, path: &Path, mib: u64) -> anyhow::Result<()> {
        let entry = path.file_name().map(|e| e.to_string_lossy().into_owned());
        let disk = self
            .loops
            .iter()
            .find(|d| {
                entry.as_deref().is_some_and(|e| {
                    d.image
                        .to_string_lossy()
                        .ends_with(&format!("{}-{e}.img", self.name))
                })
            })
            .context("no loop disk of this node is mounted there")?;
        disk.grow(mib)?;
        match disk.fs {
            Some(Fs::Xfs) => self.sh(&format!("xfs_growfs '{}' >/dev/null", path.display()))?,
            Some(Fs::Ext4) => self.sh(&format!("resize2fs '{}' 2>&1", disk.device))?,
            None => bail!("{} has no filesystem to grow", disk.device),
        };
        Ok(())
    }

    /// Unmount `path` on this node.
    pub fn umount(&self, path: &Path) -> anyhow::Result<()> {
        self.sh(&format!("umount '{}'", path.display()))?;
        Ok(())
    }

    /// Total size of the filesystem at `path` as this node sees it (statvfs: blocks × fragment
    /// size, what `df -B1` calls Size).
    pub fn fs_size(&self, path: &Path) -> anyhow::Result<u64> {
        let out = self.sh(&format!("stat -f -c '%b %S' '{}'", path.display()))?;
        let mut fields = out.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(blocks)), Some(Ok(frsize))) => Ok(blocks * frsize),
            _ => bail!("unexpected `stat -f` output {out:?}"),
        }
    }
}

/// Create Node `name` (as [`create_node`] does) with `labels` added: a test's node, or one
/// re-created with the same name.
pub async fn create_labelled_node(
    client: &Client,
    name: &str,
    labels: serde_json::Value,
) -> anyhow::Result<()> {
    create_node(client, name).await?;
    // NB: a merge patch, not an apply: an apply by the field manager that created the Node
    // would drop the hostname label it does not repeat.
    let patch = json!({"metadata": {"labels": labels}});
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("failed to label Node {name}"))?;
    Ok(())
}

impl Drop for DiskNode {
    fn drop(&mut self) {
        self.stop_agent();
    }
}
