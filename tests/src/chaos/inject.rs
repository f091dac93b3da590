//! Doing and undoing each [`Fault`] on the [`Bed`]. `inject` returns what `recover` needs;
//! faults that are one act (a replaced or grown disk, a pool edit) have nothing to undo.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use kube::api::DeleteParams;

use super::bed::{Bed, DISKS};
use super::disk::{self, quote};
use super::fault::Fault;
use super::logs::Logs;
use super::marks::Marks;
use crate::agent::agent_log;
use crate::controller::Controller;
use crate::disks::create_labelled_node;
use crate::wait_for;

/// What undoes an injected fault.
pub enum Undo {
    /// Nothing.
    Nothing,
    /// Start node `n`'s agent.
    Agent(usize),
    /// Start controller replica `i` with this identity.
    Controller(usize, String),
    /// Start the control plane component.
    Component(&'static str),
    /// Mount `device` at `path` on node `n`.
    Mount(usize, String, PathBuf),
    /// Create Node `n` again.
    Node(usize),
    /// Restart the NFS server.
    NfsRestart,
    /// Thaw the NFS server.
    NfsThaw,
    /// Remove these junk entries.
    Junk(Vec<PathBuf>),
    /// Kill this FUSE daemon on node `n` and unmount `path`.
    Fuse(usize, Child, PathBuf),
}

/// Inject `fault`. `marks` forgets what a replaced disk held; `logs` reads a log before a
/// restart overwrites it; `edits` counts pool edits.
pub async fn inject(
    bed: &mut Bed,
    fault: &Fault,
    marks: &mut Marks,
    logs: &mut Logs,
    edits: &mut u32,
) -> anyhow::Result<Undo> {
    Ok(match fault {
        Fault::KillAgent(n) => {
            bed.nodes[*n].stop_agent();
            logs.scan(&agent_log(&bed.nodes[*n].name));
            Undo::Agent(*n)
        }
        Fault::KillLeader => {
            let leader = bed.leader().await?.context("no replica holds the Lease")?;
            let i = bed
                .controllers
                .iter()
                .position(|c| c.as_ref().is_some_and(|c| c.identity == leader))
                .with_context(|| format!("the Lease holder {leader} is not a replica"))?;
            if let Some(mut replica) = bed.controllers[i].take() {
                replica.kill();
                logs.scan(&replica.log);
            }
            Undo::Controller(i, leader)
        }
        Fault::KillApiserver | Fault::KillEtcd => {
            let name = if *fault == Fault::KillEtcd {
                "etcd"
            } else {
                "kube-apiserver"
            };
            let plane = bed.control_plane.as_mut().context("no control plane")?;
            plane.kill(name)?;
            Undo::Component(name)
        }
        Fault::UnmountDisk(n, d) => {
            let path = bed.disk(DISKS[*d]);
            let device = disk::unmount(&bed.nodes[*n], &path)?;
            Undo::Mount(*n, device, path)
        }
        Fault::ReplaceDisk(n, d) => {
            let path = bed.disk(DISKS[*d]);
            marks.forget_disk(&bed.nodes[*n].name, &path);
            disk::replace(&bed.nodes[*n], &path)?;
            Undo::Nothing
        }
        Fault::GrowDisk(n, d) => {
            disk::grow(&bed.nodes[*n], &bed.disk(DISKS[*d]), 8)?;
            Undo::Nothing
        }
        Fault::DeleteNode(n) => {
            let name = bed.nodes[*n].name.clone();
            let nodes = Api::<Node>::all(bed.client.clone());
            nodes.delete(&name, &DeleteParams::default()).await?;
            wait_for(
                &format!("Node {name} gone"),
                Duration::from_secs(60),
                || async { Ok(nodes.get_opt(&name).await?.is_none().then_some(())) },
            )
            .await?;
            Undo::Node(*n)
        }
        Fault::StopNfs => {
            bed.server.stop()?;
            Undo::NfsRestart
        }
        Fault::FreezeNfs => {
            bed.server.freeze()?;
            Undo::NfsThaw
        }
        Fault::Junk => Undo::Junk(junk(bed)?),
        Fault::EditPool => {
            *edits += 1;
            bed.apply_pools(*edits).await?;
            Undo::Nothing
        }
        Fault::HangFuse(n) => {
            let path = bed.disks.join(format!("hung-n{n}"));
            std::fs::create_dir_all(&path)?;
            let child = bed.nodes[*n]
                .command(&bed.hangfs)
                .arg(&path)
                .stdout(Stdio::null())
                .spawn()?;
            Undo::Fuse(*n, child, path)
        }
    })
}

/// Plain directories (one holding a file), files and symlinks (to a volume, to `/`, to
/// nowhere) in the discovery directory.
fn junk(bed: &Bed) -> anyhow::Result<Vec<PathBuf>> {
    let at = |name: &str| bed.disks.join(name);
    std::fs::create_dir_all(at("junk-dir/sub"))?;
    std::fs::write(at("junk-dir/sub/file"), "junk")?;
    std::fs::create_dir_all(at("junk-empty"))?;
    std::fs::write(at("junk-file"), "junk")?;
    std::os::unix::fs::symlink(bed.disk(DISKS[0]), at("junk-link-volume"))?;
    std::os::unix::fs::symlink(DISKS[1], at("junk-link-relative"))?;
    std::os::unix::fs::symlink("/", at("junk-link-root"))?;
    std::os::unix::fs::symlink("/nowhere/at/all", at("junk-link-dangling"))?;
    Ok([
        "junk-dir",
        "junk-empty",
        "junk-file",
        "junk-link-volume",
        "junk-link-relative",
        "junk-link-root",
        "junk-link-dangling",
    ]
    .map(at)
    .to_vec())
}

/// Wait until the apiserver answers (and reaches etcd): after every recovery, as etcd and the
/// apiserver may both have been down.
pub async fn wait_for_apiserver(bed: &Bed) -> anyhow::Result<()> {
    let namespaces = Api::<Namespace>::all(bed.client.clone());
    wait_for(
        "the apiserver to answer",
        Duration::from_secs(120),
        || async { Ok(namespaces.get_opt("default").await?.map(drop)) },
    )
    .await
}

/// Undo what [`inject`] did.
pub async fn recover(bed: &mut Bed, undo: Undo) -> anyhow::Result<()> {
    match undo {
        Undo::Nothing => {}
        Undo::Agent(n) => bed.nodes[n].start_agent()?,
        Undo::Controller(i, identity) => {
            bed.controllers[i] = Some(Controller::start(&bed.test, &identity).await?);
        }
        Undo::Component(name) => {
            let plane = bed.control_plane.as_mut().context("no control plane")?;
            plane.restart(name)?;
        }
        Undo::Mount(n, device, path) => disk::mount(&bed.nodes[n], &device, &path)?,
        Undo::Node(n) => {
            let labels = bed.node_labels();
            create_labelled_node(&bed.client, &bed.nodes[n].name, labels).await?;
        }
        Undo::NfsRestart => bed.server.restart()?,
        Undo::NfsThaw => bed.server.thaw()?,
        Undo::Junk(paths) => {
            for path in paths {
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
        Undo::Fuse(n, mut child, path) => {
            // NB: `nsenter -p` forks: the daemon is its child, in the node's pid namespace.
            let children = format!("/proc/{0}/task/{0}/children", child.id());
            for pid in std::fs::read_to_string(children)?.split_whitespace() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
            let p = quote(&path.to_string_lossy());
            bed.nodes[n].sh(&format!("umount -l {p} 2>/dev/null || true"))?;
            let _ = std::fs::remove_dir(&path);
        }
    }
    Ok(())
}
