//! Scrubbing a released local volume when the controller asks (`NodeVolumes.spec.cleanups`).
//!
//! ```text
//!  CleanupRequest{volumeID, method} ─► discovery now: which entry has that volumeID?
//!     none, or two ─► Refused (nothing touched)
//!     its PV (read by the daemon) not Released, not this volume's ─► Refused (warrant.rs)
//!     a mounted filesystem + Wipe ──────► wipe: delete everything inside, by fd (wipe.rs)
//!     a block device + Discard / Zero ──► blkdiscard [--zeroout] (block.rs)
//!     a method that does not fit the volume ─► Refused
//!  ─► CleanupResult{Succeeded | Failed | Refused, message, finishedAt}
//! ```
//!
//! The identity is looked up afresh for every scrub (never from an older scan), and the wipe
//! checks again, on the open directory, that it is on the volume's device. A request from the
//! cluster is only a request: the PV it names, read just before, must back it ([`Warrant`]).

pub mod block;
pub mod cli;
pub mod daemon;
pub mod outcome;
pub mod warrant;
pub mod wipe;

#[cfg(test)]
mod scrub_tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::{Timestamp, Unit};
use volpool_api::{CleanupMethod, CleanupOutcome, CleanupRequest, CleanupResult};

use crate::host::{Host, MountTable, ScrubHost};
use crate::pools::LocalPool;
use crate::volumes::discovery::{Found, discover};
use crate::volumes::identity;
pub use outcome::Outcome;
pub use warrant::Warrant;

/// What a volume ID stands for on this node right now.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A mounted filesystem.
    Dir {
        /// Host path of the mount point.
        path: PathBuf,
        /// Device of the mount (`st_dev` of its root).
        dev: (u32, u32),
        /// Mount points inside it, relative to it.
        nested: HashSet<PathBuf>,
    },
    /// A block device.
    Block {
        /// Host path of the device node.
        device: PathBuf,
        /// Its major:minor.
        dev: (u32, u32),
    },
}

/// The entries of the selected pools that are one volume, and what they are.
#[derive(Debug, PartialEq, Eq)]
pub struct Located {
    /// What to scrub.
    pub target: Target,
    /// Host paths of the discovery entries that are it (one, unless symlinks share a device).
    pub entries: Vec<PathBuf>,
}

/// Scrub the volume `request` names, on the node seen through `host`, changed through
/// `writes`, if `warrant` backs it. Blocks for as long as the scrub takes: run it on its own
/// thread.
pub fn perform<S: ScrubHost>(
    host: &dyn Host,
    writes: &S,
    pools: &[LocalPool],
    request: &CleanupRequest,
    warrant: &Warrant,
) -> CleanupResult {
    let started_at = now();
    let outcome = scrub(host, writes, pools, request, warrant);
    let (result, message) = match outcome {
        Outcome::Succeeded(m) => (CleanupOutcome::Succeeded, m),
        Outcome::Failed(m) => (CleanupOutcome::Failed, m),
        Outcome::Refused(m) => (CleanupOutcome::Refused, m),
    };
    CleanupResult {
        result,
        message,
        finished_at: now(),
        started_at,
        ..running(request, String::new())
    }
}

/// The result reported while the scrub of `request`, started at `started_at`, runs.
pub fn running(request: &CleanupRequest, started_at: String) -> CleanupResult {
    CleanupResult {
        volume_id: request.volume_id.clone(),
        pv_uid: request.pv_uid.clone(),
        result: CleanupOutcome::Running,
        message: String::new(),
        finished_at: String::new(),
        started_at,
    }
}

/// Now, as RFC 3339 to the millisecond.
pub fn now() -> String {
    let now = Timestamp::now();
    now.round(Unit::Millisecond).unwrap_or(now).to_string()
}

fn scrub<S: ScrubHost>(
    host: &dyn Host,
    writes: &S,
    pools: &[LocalPool],
    request: &CleanupRequest,
    warrant: &Warrant,
) -> Outcome {
    if request.method == CleanupMethod::None {
        if let Warrant::Pv { .. } = warrant {
            // NB: a Succeeded result would stand for this PV UID, so the controller's real
            // request would never be performed and the old data offered again.
            return Outcome::Refused(
                "method None is never asked for by the controller (a pool with cleanup None has \
                 its PV recreated without a request): the request was not written by the \
                 controller; nothing was touched"
                    .into(),
            );
        }
        return Outcome::Succeeded("method None: nothing to scrub".into());
    }
    let located = match find_target(host, pools, &request.volume_id) {
        Ok(located) => located,
        Err(why) => return Outcome::Refused(why),
    };
    if let Warrant::Pv { node, pv } = warrant
        && let Err(why) = warrant::check(pv.as_deref(), request, node, &located.entries)
    {
        return Outcome::Refused(why);
    }
    match (request.method, located.target) {
        (CleanupMethod::Wipe, Target::Dir { path, dev, nested }) => {
            match wipe::wipe(writes, &path, dev, &nested) {
                Err(wipe::NotStarted(why)) => {
                    Outcome::Refused(format!("{why}; nothing was touched"))
                }
                Ok(done) if done.clean() => Outcome::Succeeded(done.message(&path)),
                Ok(done) => Outcome::Failed(done.message(&path)),
            }
        }
        (CleanupMethod::Discard | CleanupMethod::Zero, Target::Block { device, dev }) => {
            block::scrub(
                host,
                writes,
                &device,
                dev,
                request.method == CleanupMethod::Zero,
            )
        }
        (method, Target::Dir { path, .. }) => Outcome::Refused(format!(
            "{method:?} is for block devices, but volume {} is the filesystem mounted at {}: use Wipe; nothing was touched",
            request.volume_id,
            path.display()
        )),
        (method, Target::Block { device, .. }) => Outcome::Refused(format!(
            "{method:?} deletes files, but volume {} is the block device {}: use Discard or Zero; nothing was touched",
            request.volume_id,
            device.display()
        )),
    }
}

/// The one volume of the selected pools whose volume ID is `volume_id` now. `Err` (why, for a
/// Refused result) when none or several have it.
pub fn find_target(
    host: &dyn Host,
    pools: &[LocalPool],
    volume_id: &str,
) -> Result<Located, String> {
    let mounts = host
        .mount_table()
        .map_err(|e| format!("{e}; nothing was touched"))?;
    let mut found: Vec<Located> = Vec::new();
    for pool in pools {
        let Ok(entries) = discover(host, &mounts, pool) else {
            continue;
        };
        for entry in entries {
            let target = match entry.found {
                Found::Mount(mount) if identity::filesystem_id(host, &mount) == volume_id => {
                    Target::Dir {
                        nested: nested_mounts(&mounts, &mount.mount_point),
                        path: mount.mount_point,
                        dev: (mount.major, mount.minor),
                    }
                }
                Found::Block { dev, device }
                    if identity::block_id(host, dev, &device) == volume_id =>
                {
                    Target::Block { device, dev }
                }
                _ => continue,
            };
            // NB: two pools may share a discovery dir; the same entry is found once per pool.
            match found.iter_mut().find(|l| l.target == target) {
                Some(l) if l.entries.contains(&entry.path) => {}
                Some(l) => l.entries.push(entry.path),
                None => found.push(Located {
                    target,
                    entries: vec![entry.path],
                }),
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no volume with identity {volume_id} is on this node now (the disk was replaced, unmounted or removed, or its pool no longer selects this node); nothing was touched"
        )),
        n => Err(format!(
            "{n} entries have identity {volume_id} ({}): cannot tell which one to scrub; nothing was touched",
            found
                .iter()
                .map(|l| match &l.target {
                    Target::Dir { path, .. } => path.display().to_string(),
                    Target::Block { device, .. } => device.display().to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Mount points strictly inside `root`, relative to it.
fn nested_mounts(mounts: &MountTable, root: &Path) -> HashSet<PathBuf> {
    mounts
        .points()
        .filter_map(|p| p.strip_prefix(root).ok())
        .filter(|rel| !rel.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fixture::FixtureHost;
    use crate::host::{FileKind, RealHost};
    use volpool_api::VolumeMode;

    fn pool(name: &str, mode: VolumeMode) -> LocalPool {
        LocalPool {
            name: name.into(),
            dir: "/mnt/disks".into(),
            mode,
            pattern: glob::Pattern::new("*").expect("glob"),
            min_capacity: 0,
        }
    }

    fn request(volume_id: &str, method: CleanupMethod) -> CleanupRequest {
        CleanupRequest {
            volume_id: volume_id.into(),
            persistent_volume: "pv-1".into(),
            pv_uid: "uid-1".into(),
            claim_uid: String::new(),
            method,
        }
    }

    fn host() -> FixtureHost {
        FixtureHost::new("host", "mountinfo").with_stat("/mnt/disks/sdb", FileKind::Block, (8, 16))
    }

    #[test]
    fn the_volume_is_found_by_its_identity_in_a_captured_mount_table() {
        let fs = [pool("fast", VolumeMode::Filesystem)];
        assert_eq!(
            find_target(&host(), &fs, "dev:tmpfs:0:40").map(|l| l.target),
            Ok(Target::Dir {
                path: "/mnt/disks/my vol".into(),
                dev: (0, 40),
                nested: HashSet::new(),
            })
        );
        let raw = [pool("raw", VolumeMode::Block)];
        assert_eq!(
            find_target(&host(), &raw, "wwn:0x5000c500a1b2c3d4").map(|l| l.target),
            Ok(Target::Block {
                device: "/mnt/disks/sdb".into(),
                dev: (8, 16),
            })
        );
    }

    #[test]
    fn a_shared_discovery_dir_finds_the_entry_once() {
        let both = [
            pool("a", VolumeMode::Filesystem),
            pool("b", VolumeMode::Filesystem),
        ];
        assert!(find_target(&host(), &both, "dev:tmpfs:0:40").is_ok());
    }

    #[test]
    fn an_identity_not_on_the_node_is_refused_and_nothing_is_touched() {
        let fs = [pool("fast", VolumeMode::Filesystem)];
        let result = perform(
            &host(),
            &RealHost::new("/nonexistent-root"),
            &fs,
            &request(
                "uuid:0b3f5c2e-6b1d-4c7a-9e1f-2a3b4c5d6e7f",
                CleanupMethod::Wipe,
            ),
            &Warrant::Operator,
        );
        assert_eq!(result.result, CleanupOutcome::Refused);
        assert!(
            result.message.contains("nothing was touched"),
            "{}",
            result.message
        );
        assert!(
            result.message.contains("no volume with identity"),
            "{}",
            result.message
        );
        assert_eq!(result.pv_uid, "uid-1");
        assert!(
            result.finished_at.parse::<Timestamp>().is_ok(),
            "{}",
            result.finished_at
        );
    }

    #[test]
    fn a_method_that_does_not_fit_the_volume_is_refused() {
        let fs = [pool("fast", VolumeMode::Filesystem)];
        let raw = [pool("raw", VolumeMode::Block)];
        let root = &RealHost::new("/nonexistent-root");
        let on_dir = perform(
            &host(),
            root,
            &fs,
            &request("dev:tmpfs:0:40", CleanupMethod::Zero),
            &Warrant::Operator,
        );
        assert_eq!(on_dir.result, CleanupOutcome::Refused);
        assert!(on_dir.message.contains("use Wipe"), "{}", on_dir.message);
        let on_block = perform(
            &host(),
            root,
            &raw,
            &request("wwn:0x5000c500a1b2c3d4", CleanupMethod::Wipe),
            &Warrant::Operator,
        );
        assert_eq!(on_block.result, CleanupOutcome::Refused);
        assert!(
            on_block.message.contains("use Discard or Zero"),
            "{}",
            on_block.message
        );
    }

    #[test]
    fn a_volume_root_that_cannot_be_opened_is_refused() {
        let fs = [pool("fast", VolumeMode::Filesystem)];
        let result = perform(
            &host(),
            &RealHost::new("/nonexistent-root"),
            &fs,
            &request("dev:tmpfs:0:40", CleanupMethod::Wipe),
            &Warrant::Operator,
        );
        assert_eq!(result.result, CleanupOutcome::Refused, "{}", result.message);
        assert!(result.message.contains("cannot open the volume directory"));
    }

    #[test]
    fn nested_mounts_are_relative_to_the_volume() {
        let table = crate::host::mountinfo::parse(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 0:40 / /mnt/disks/v rw - tmpfs t rw\n\
             3 2 0:41 / /mnt/disks/v/a/b rw - tmpfs t rw\n\
             4 1 0:42 / /mnt/disks/v2 rw - tmpfs t rw\n",
        )
        .expect("mountinfo");
        let nested = nested_mounts(&table, Path::new("/mnt/disks/v"));
        assert_eq!(nested, HashSet::from([PathBuf::from("a/b")]));
    }
}
