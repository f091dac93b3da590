//! The executor's side of NFS pools: read every export before planning (reads only, so an
//! idle pass writes nothing), then carry out the planned directory operations, applying each
//! one's follow-up writes only when it succeeded.
//!
//! ```text
//!  World ──► observe ──► {pool: ExportView} ──► plan ──► [ExportOp] ──► execute ──► [Change]
//!            list root, is_empty(orphans), space      MKDIR+SETATTR / remove tree / RENAME
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use volpool_api::{ExportSpace, LABEL_POOL, NfsSource, VolumePool};

use super::told::Told;
use super::{Export, ExportError, ExportFs, FailKind};
use crate::error::Error;
use crate::plan::nfs::{ExportOp, ExportView, Op, SeenDir, is_pool_dir, nfs_pools, pv_dir};
use crate::plan::{Change, World};

/// Env var of the crash test only: abort right after a MKDIR, before its PV is created.
pub const CRASH_AFTER_MKDIR: &str = "VOLPOOL_TEST_CRASH_AFTER_MKDIR";

struct Handle {
    spec: NfsSource,
    export: Export,
    denied: Option<String>,
    /// The pool, for Events.
    pool: ObjectReference,
    /// Failed operations already told in Events.
    told: Told,
}

/// The exports of the NFS pools, kept across passes (one NFS connection each).
#[derive(Default)]
pub struct Exports {
    handles: HashMap<String, Handle>,
}

/// Whether two specs reach the same export the same way.
fn same_export(a: &NfsSource, b: &NfsSource) -> bool {
    (&a.server, &a.path, a.access, &a.mounted_path)
        == (&b.server, &b.path, b.access, &b.mounted_path)
}

impl Exports {
    fn handle(&mut self, pool: &VolumePool, nfs: &NfsSource) -> &mut Handle {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let reference = pool.object_ref(&());
        let stale = self
            .handles
            .get(&name)
            .is_some_and(|h| !same_export(&h.spec, nfs) || h.pool.uid != reference.uid);
        if stale {
            self.handles.remove(&name);
        }
        self.handles.entry(name).or_insert_with(|| Handle {
            spec: nfs.clone(),
            export: Export::for_pool(nfs),
            denied: None,
            pool: reference,
            told: Told::default(),
        })
    }
}

/// Read the export of every valid NFS pool: its `pv-*` directories, whether those without a
/// PV are empty, and its space. Pools gone are forgotten.
pub async fn observe(world: &World, exports: &mut Exports) -> BTreeMap<String, ExportView> {
    let pools = nfs_pools(world);
    let names: HashSet<&str> = pools
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    exports
        .handles
        .retain(|name, _| names.contains(name.as_str()));
    let mut wanted: Vec<(String, HashSet<String>)> = Vec::new();
    for pool in pools {
        let (Some(name), Some(nfs)) = (pool.metadata.name.as_deref(), &pool.spec.nfs) else {
            continue;
        };
        if pool.validate().is_err() {
            continue;
        }
        let owned: HashSet<String> = world
            .pvs
            .iter()
            .filter(|pv| {
                pv.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_POOL))
                    .map(String::as_str)
                    == Some(name)
            })
            .filter_map(|pv| pv_dir(pv))
            .collect();
        exports.handle(pool, nfs);
        wanted.push((name.to_string(), owned));
    }
    // NB: all exports at once, so one hung server costs a pass one deadline, not one per pool.
    let reads = wanted.into_iter().filter_map(|(name, owned)| {
        let handle = exports.handles.get(&name)?;
        Some(async move {
            let view = read(&handle.export, &owned, handle.denied.clone()).await;
            (name, view)
        })
    });
    futures::future::join_all(reads).await.into_iter().collect()
}

async fn read(export: &Export, owned: &HashSet<String>, denied: Option<String>) -> ExportView {
    let mut view = ExportView {
        expected_uid: export.expected_uid(),
        denied,
        ..Default::default()
    };
    let entries = match export.list().await {
        Ok(entries) => entries,
        Err(e) => {
            view.unreachable = Some(e.message);
            return view;
        }
    };
    for entry in entries
        .into_iter()
        .filter(|e| e.is_dir && is_pool_dir(&e.name))
    {
        let empty = if owned.contains(&entry.name) {
            None
        } else {
            match export.is_empty(&entry.name).await {
                Ok(empty) => Some(empty),
                Err(e) if e.kind == FailKind::Unreachable => {
                    view.unreachable = Some(e.message);
                    return view;
                }
                Err(_) => None,
            }
        };
        view.dirs.insert(
            entry.name,
            SeenDir {
                uid: entry.uid,
                empty,
            },
        );
    }
    match export.space().await {
        Ok(space) => {
            view.space = Some(ExportSpace {
                size_bytes: space.size_bytes,
                available_bytes: space.available_bytes,
            })
        }
        Err(e) if e.kind == FailKind::Unreachable => view.unreachable = Some(e.message),
        Err(_) => {}
    }
    view
}

/// What `execute` did.
#[derive(Default)]
pub struct Executed {
    /// Follow-up writes of the operations that succeeded, and the Events about those that
    /// failed.
    pub changes: Vec<Change>,
    /// Operations that failed (the next pass plans them again).
    pub failed: Vec<Error>,
}

/// Carry out the directory operations in order; a failed one drops its follow-up writes and,
/// the first time it fails that way, gives Events saying so (`told.rs`).
pub async fn execute(exports: &mut Exports, ops: Vec<ExportOp>) -> Executed {
    let crash_after_mkdir = std::env::var(CRASH_AFTER_MKDIR).is_ok_and(|v| v == "1");
    let mut done = Executed::default();
    for op in ops {
        let Some(handle) = exports.handles.get_mut(&op.pool) else {
            done.failed.push(failure(
                &op,
                ExportError::new(FailKind::Other, "the pool's export is not open"),
            ));
            continue;
        };
        let result = match &op.op {
            Op::MakeDir { dir, mode } => handle.export.make_dir(dir, *mode).await.map(|made| {
                tracing::info!(pool = %op.pool, %dir, uid = made.uid, "made directory");
            }),
            Op::Remove { dir } => handle.export.remove_tree(dir).await.map(|()| {
                tracing::info!(pool = %op.pool, %dir, "removed directory");
            }),
            Op::Rename { from, to } => match handle.export.rename(from, to).await {
                // NB: already renamed by a pass that crashed before deleting the PV.
                Err(e) if e.kind == FailKind::NotFound => Ok(()),
                other => other.map(|()| {
                    tracing::info!(pool = %op.pool, %from, %to, "archived directory");
                }),
            },
        };
        match result {
            Ok(()) => {
                handle.told.worked(&op.op);
                if matches!(op.op, Op::MakeDir { .. }) {
                    handle.denied = None;
                    if crash_after_mkdir {
                        tracing::error!(
                            "{CRASH_AFTER_MKDIR}=1: aborting between MKDIR and the PV create (test hook)"
                        );
                        std::process::abort();
                    }
                }
                done.changes.extend(op.then);
            }
            Err(e) => {
                if e.kind == FailKind::Denied {
                    handle.denied = Some(e.message.clone());
                }
                let told = handle.told.failed(&handle.pool, &handle.spec, &op, &e);
                done.changes.extend(told.into_iter().map(Change::Event));
                let error = failure(&op, e);
                tracing::warn!(%error, "the next pass retries");
                done.failed.push(error);
            }
        }
    }
    done
}

/// The error of a failed operation, naming what was done to which directory.
fn failure(op: &ExportOp, source: ExportError) -> Error {
    let (operation, dir) = match &op.op {
        Op::MakeDir { dir, .. } => ("make", dir),
        Op::Remove { dir } => ("remove", dir),
        Op::Rename { from, .. } => ("archive", from),
    };
    Error::ExportOp {
        pool: op.pool.clone(),
        operation,
        dir: dir.clone(),
        source,
    }
}
