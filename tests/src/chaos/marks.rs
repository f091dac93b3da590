//! Sentinels and canaries: what proves that no byte was lost and nothing was scrubbed that was
//! not Released. Pods do not run on fake nodes, so the soak writes for them, into the
//! directory that backs each PV, as the claim's owner would:
//!
//! - a **canary** (`chaos-canary`, holding the PV's UID) into each Available volume;
//! - a **sentinel** (`chaos-sentinel`, holding the claim's and the PV's UIDs) into each Bound
//!   volume.
//!
//! Both must be there, unchanged, for as long as that PV exists and is not Released (the
//! sentinel also as long as its claim exists). A disk the soak replaced takes its marks with
//! it: those are forgotten, not checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use volpool_api::{LABEL_HEALTH, LABEL_NODE};

use super::bed::Bed;
use super::check::{ANNOTATION_VOLUME_ID, NO_BYTE_LOST, ONLY_RELEASED_SCRUBBED, Violation};
use super::check::{annotation, describe, name, uid};
use super::disk::{read_mark, write_mark};
use super::world::World;
use crate::controller::{claim_ref, label, phase};
use crate::disks::DiskNode;

const CANARY: &str = "chaos-canary";
const SENTINEL: &str = "chaos-sentinel";

/// Where a mark lives.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// On a local disk of a node, at a path, while that identity is mounted there.
    Local {
        node: String,
        path: PathBuf,
        identity: String,
    },
    /// In a directory of the export (server side).
    Nfs(PathBuf),
}

#[derive(Clone, Debug)]
struct Mark {
    pv: String,
    claim_uid: Option<String>,
    place: Place,
    file: &'static str,
    content: String,
}

/// The marks written and still expected.
#[derive(Default)]
pub struct Marks {
    marks: BTreeMap<(String, &'static str), Mark>,
    /// How many were written in all.
    pub written: u64,
    /// How many were verified (read back intact) in all.
    pub verified: u64,
}

impl Marks {
    /// Write the marks the world lacks: a canary into each new Available volume, a sentinel
    /// into each newly Bound one.
    pub fn refresh(&mut self, bed: &Bed, world: &World) -> anyhow::Result<()> {
        for pv in world.pvs() {
            if pv.metadata.deletion_timestamp.is_some() || label(pv, LABEL_HEALTH).is_some() {
                continue;
            }
            let (file, claim_uid) = match (phase(pv), claim_ref(pv)) {
                (Some("Available"), None) => (CANARY, None),
                (Some("Bound"), Some(c)) => (SENTINEL, c.uid.clone()),
                _ => continue,
            };
            let key = (uid(pv).to_string(), file);
            if self.marks.contains_key(&key) {
                continue;
            }
            let Some(place) = place(bed, pv) else {
                continue;
            };
            let content = format!(
                "pv {} uid {} claim {}\n",
                name(pv),
                uid(pv),
                claim_uid.as_deref().unwrap_or("-")
            );
            if write(bed, &place, file, &content)? {
                self.written += 1;
                let mark = Mark {
                    pv: name(pv).to_string(),
                    claim_uid,
                    place,
                    file,
                    content,
                };
                self.marks.insert(key, mark);
            }
        }
        Ok(())
    }

    /// Forget the marks on the disk at `path` of `node`: the soak replaced it.
    pub fn forget_disk(&mut self, node: &str, path: &std::path::Path) {
        self.marks.retain(|_, m| {
            !matches!(&m.place, Place::Local { node: n, path: p, .. } if n == node && p == path)
        });
    }

    /// Check every mark still expected; drop those whose PV went or was Released.
    pub async fn check(&mut self, bed: &Bed, world: &World) -> anyhow::Result<Vec<Violation>> {
        let by_uid: BTreeMap<&str, &PersistentVolume> = world.pvs().map(|p| (uid(p), p)).collect();
        let live_claims: BTreeMap<&str, &PersistentVolumeClaim> = world
            .claims
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| Some((c.metadata.uid.as_deref()?, c)))
            .collect();
        let mut out = Vec::new();
        let keys: Vec<_> = self.marks.keys().cloned().collect();
        for key in keys {
            let Some(mark) = self.marks.get(&key).cloned() else {
                continue;
            };
            let pv = by_uid.get(key.0.as_str());
            let expected = pv.is_some_and(|p| expected(p))
                && mark
                    .claim_uid
                    .as_deref()
                    .is_none_or(|c| live_claims.contains_key(c));
            if !expected {
                self.marks.remove(&key);
                continue;
            }
            let found = match read(bed, &mark.place, mark.file)? {
                None => continue,
                Some(found) => found,
            };
            if found.as_deref() == Some(mark.content.as_str()) {
                self.verified += 1;
                continue;
            }
            // NB: the world was read a moment ago; a PV or claim that went since may have been
            // scrubbed rightly. Look again before calling it a loss.
            if !still_expected(bed, &key.0, &mark).await? {
                self.marks.remove(&key);
                continue;
            }
            let invariant = if mark.file == SENTINEL {
                NO_BYTE_LOST
            } else {
                ONLY_RELEASED_SCRUBBED
            };
            let pv = pv.map(|p| describe(p)).unwrap_or_default();
            out.push(Violation {
                invariant,
                state: format!(
                    "{} of {} at {:?}: expected {:?}, found {found:?}; {pv}",
                    mark.file, mark.pv, mark.place, mark.content
                ),
            });
            self.marks.remove(&key);
        }
        Ok(out)
    }
}

/// Whether a PV's marks must still be there: it exists, is not being deleted, is not Released.
fn expected(pv: &PersistentVolume) -> bool {
    pv.metadata.deletion_timestamp.is_none() && matches!(phase(pv), Some("Available" | "Bound"))
}

async fn still_expected(bed: &Bed, pv_uid: &str, mark: &Mark) -> anyhow::Result<bool> {
    let pv = Api::<PersistentVolume>::all(bed.client.clone())
        .get_opt(&mark.pv)
        .await?;
    let Some(pv) = pv.filter(|p| uid(p) == pv_uid && expected(p)) else {
        return Ok(false);
    };
    let Some(claim_uid) = &mark.claim_uid else {
        return Ok(true);
    };
    let Some(claim) = claim_ref(&pv) else {
        return Ok(false);
    };
    let api = Api::<PersistentVolumeClaim>::namespaced(
        bed.client.clone(),
        claim.namespace.as_deref().unwrap_or_default(),
    );
    let live = api
        .get_opt(claim.name.as_deref().unwrap_or_default())
        .await?
        .filter(|c| c.metadata.deletion_timestamp.is_none());
    Ok(live.and_then(|c| c.metadata.uid).as_ref() == Some(claim_uid))
}

/// Where the volume behind `pv` is, as the soak can reach it.
fn place(bed: &Bed, pv: &PersistentVolume) -> Option<Place> {
    let spec = pv.spec.as_ref()?;
    if let Some(local) = &spec.local {
        return Some(Place::Local {
            node: label(pv, LABEL_NODE)?.to_string(),
            path: PathBuf::from(&local.path),
            identity: annotation(pv, ANNOTATION_VOLUME_ID)?.to_string(),
        });
    }
    let dir = spec.nfs.as_ref()?.path.rsplit('/').next()?.to_string();
    Some(Place::Nfs(bed.export.join(dir)))
}

/// The node, path and identity of a local place (the node may be gone from the bed).
fn local<'a>(bed: &'a Bed, place: &'a Place) -> Option<(&'a DiskNode, &'a Path, &'a str)> {
    let Place::Local {
        node,
        path,
        identity,
    } = place
    else {
        return None;
    };
    let i = bed.node_index(node)?;
    Some((&bed.nodes[i], path, identity))
}

fn write(bed: &Bed, place: &Place, file: &str, content: &str) -> anyhow::Result<bool> {
    if let Place::Nfs(dir) = place {
        if !dir.is_dir() {
            return Ok(false);
        }
        std::fs::write(dir.join(file), content)?;
        return Ok(true);
    }
    match local(bed, place) {
        Some((node, path, identity)) => write_mark(node, path, identity, file, content),
        None => Ok(false),
    }
}

/// `None` when the place cannot be read now (its disk is not mounted there); else whether the
/// file is there and what it holds.
fn read(bed: &Bed, place: &Place, file: &str) -> anyhow::Result<Option<Option<String>>> {
    if let Place::Nfs(dir) = place {
        return Ok(Some(std::fs::read_to_string(dir.join(file)).ok()));
    }
    match local(bed, place) {
        Some((node, path, identity)) => read_mark(node, path, identity, file),
        None => Ok(None),
    }
}
