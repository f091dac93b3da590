//! The scrub's decisions on a fixture node (a captured mount table, an in-memory volume that
//! can refuse a delete, a `blkdiscard` that answers what it is told): what goes, what stays,
//! and the result a user reads.

use std::path::PathBuf;

use volpool_api::{CleanupMethod, CleanupOutcome, CleanupRequest, CleanupResult, VolumeMode};

use super::{Warrant, perform};
use crate::host::fixture::FixtureHost;
use crate::host::memfs::MemFs;
use crate::host::{CommandOutput, FileKind};
use crate::pools::LocalPool;

/// The tmpfs mounted at `/mnt/disks/my vol` in `testdata/mountinfo`.
const VOL: &str = "/mnt/disks/my vol";
const ID: &str = "dev:tmpfs:0:40";
const DEV: (u32, u32) = (0, 40);
const DISK_ID: &str = "wwn:0x5000c500a1b2c3d4";

fn scrub(
    writes: &MemFs,
    mode: VolumeMode,
    volume_id: &str,
    method: CleanupMethod,
) -> CleanupResult {
    let request = CleanupRequest {
        volume_id: volume_id.into(),
        persistent_volume: "pv-1".into(),
        pv_uid: "uid-1".into(),
        claim_uid: String::new(),
        method,
    };
    scrub_as(writes, mode, &request, &Warrant::Operator)
}

/// `request` performed on the fixture node (one pool over `/mnt/disks`), backed by `warrant`.
fn scrub_as(
    writes: &MemFs,
    mode: VolumeMode,
    request: &CleanupRequest,
    warrant: &Warrant,
) -> CleanupResult {
    let host =
        FixtureHost::new("host", "mountinfo").with_stat("/mnt/disks/sdb", FileKind::Block, (8, 16));
    let pool = LocalPool {
        name: "fast".into(),
        dir: "/mnt/disks".into(),
        mode,
        pattern: glob::Pattern::new("*").expect("glob"),
        min_capacity: 0,
    };
    perform(&host, writes, &[pool], request, warrant)
}

fn volume() -> MemFs {
    MemFs::new()
        .dir(VOL, DEV)
        .dir(&format!("{VOL}/a"), DEV)
        .file(&format!("{VOL}/a/f"), DEV)
        .dir(&format!("{VOL}/lost+found"), DEV)
        .file(&format!("{VOL}/lost+found/r"), DEV)
        .symlink(&format!("{VOL}/link"), DEV)
}

fn left(fs: &MemFs) -> Vec<PathBuf> {
    fs.paths()
}

#[test]
fn a_wiped_volume_keeps_its_root_and_an_emptied_lost_and_found() {
    let fs = volume();
    let result = scrub(&fs, VolumeMode::Filesystem, ID, CleanupMethod::Wipe);
    assert_eq!(
        result.result,
        CleanupOutcome::Succeeded,
        "{}",
        result.message
    );
    assert_eq!(
        result.message,
        "deleted 3 files and 1 directory inside /mnt/disks/my vol"
    );
    assert_eq!(
        left(&fs),
        [
            PathBuf::from(VOL),
            PathBuf::from(format!("{VOL}/lost+found"))
        ]
    );
}

#[test]
fn an_entry_that_cannot_be_deleted_fails_the_scrub_by_name_and_the_rest_goes() {
    let fs = volume()
        .file(&format!("{VOL}/a/immutable"), DEV)
        .refuse_delete(&format!("{VOL}/a/immutable"));
    let result = scrub(&fs, VolumeMode::Filesystem, ID, CleanupMethod::Wipe);
    assert_eq!(result.result, CleanupOutcome::Failed);
    assert!(
        result
            .message
            .contains("could not delete 1 entries: a/immutable: EPERM: Operation not permitted"),
        "{}",
        result.message
    );
    assert_eq!(
        left(&fs),
        [
            PathBuf::from(VOL),
            PathBuf::from(format!("{VOL}/a")),
            PathBuf::from(format!("{VOL}/a/immutable")),
            PathBuf::from(format!("{VOL}/lost+found")),
        ],
        "the directory holding what stays stays too, the rest is gone"
    );
}

#[test]
fn another_filesystem_inside_the_volume_is_left_alone_and_named() {
    let m = format!("{VOL}/a/m");
    // Another device; and a bind mount of the volume's own filesystem made after the mount
    // table was read (the same st_dev: only opening it tells).
    let other = volume()
        .dir(&m, (0, 99))
        .file(&format!("{m}/data"), (0, 99));
    let meanwhile = volume()
        .dir(&m, DEV)
        .file(&format!("{m}/data"), DEV)
        .mounted_meanwhile(&m);
    for fs in [other, meanwhile] {
        let result = scrub(&fs, VolumeMode::Filesystem, ID, CleanupMethod::Wipe);
        assert_eq!(result.result, CleanupOutcome::Failed);
        assert!(
            result
                .message
                .contains("left 1 mount point(s) inside the volume alone: /mnt/disks/my vol/a/m"),
            "{}",
            result.message
        );
        assert!(left(&fs).contains(&PathBuf::from(format!("{m}/data"))));
    }
}

#[test]
fn a_volume_root_no_longer_on_the_volume_s_device_is_refused_untouched() {
    let fs = MemFs::new()
        .dir(VOL, (0, 41))
        .file(&format!("{VOL}/f"), (0, 41));
    let result = scrub(&fs, VolumeMode::Filesystem, ID, CleanupMethod::Wipe);
    assert_eq!(result.result, CleanupOutcome::Refused);
    assert!(
        result.message.contains("the mount changed")
            && result.message.contains("nothing was touched"),
        "{}",
        result.message
    );
    assert_eq!(left(&fs).len(), 2);
}

#[test]
fn block_devices_are_zeroed_or_discarded_with_blkdiscard_and_its_error_is_shown() {
    let fs = MemFs::new();
    let zeroed = scrub(&fs, VolumeMode::Block, DISK_ID, CleanupMethod::Zero);
    assert_eq!(
        zeroed.result,
        CleanupOutcome::Succeeded,
        "{}",
        zeroed.message
    );
    assert_eq!(zeroed.message, "zeroed every block of /mnt/disks/sdb");
    assert_eq!(fs.discarded(), [(PathBuf::from("/mnt/disks/sdb"), true)]);

    let busy = MemFs::new().discard_answers(CommandOutput {
        success: false,
        status: "exit status: 1".into(),
        stderr: "blkdiscard: /mnt/disks/sdb: BLKDISCARD ioctl failed: Device or resource busy\n"
            .into(),
    });
    let failed = scrub(&busy, VolumeMode::Block, DISK_ID, CleanupMethod::Discard);
    assert_eq!(failed.result, CleanupOutcome::Failed);
    assert!(
        failed
            .message
            .starts_with("discarding /mnt/disks/sdb failed: blkdiscard exit status: 1: ")
            && failed.message.ends_with("Device or resource busy"),
        "{}",
        failed.message
    );
    assert_eq!(busy.discarded(), [(PathBuf::from("/mnt/disks/sdb"), false)]);
}

/// The PV of `request`'s volume as the controller made it, in `phase` (with its claimRef).
fn pv_in(phase: &str) -> Box<k8s_openapi::api::core::v1::PersistentVolume> {
    let pv = serde_json::json!({
        "metadata": {
            "name": "pv-1", "uid": "uid-1",
            "labels": {"app.kubernetes.io/managed-by": "volpool", "volpool.io/node": "n1"},
            "annotations": {"volpool.io/volume-id": ID},
        },
        "spec": {
            "local": {"path": VOL},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}},
            "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"namespace": "apps", "name": "data-0", "uid": "claim-uid"},
        },
        "status": {"phase": phase},
    });
    Box::new(serde_json::from_value(pv).expect("a PersistentVolume"))
}

#[test]
fn the_daemon_scrubs_only_what_the_pv_backs_and_a_bound_volume_keeps_every_file() {
    let fs_mode = VolumeMode::Filesystem;
    let request = CleanupRequest {
        volume_id: ID.into(),
        persistent_volume: "pv-1".into(),
        pv_uid: "uid-1".into(),
        claim_uid: "claim-uid".into(),
        method: CleanupMethod::Wipe,
    };
    let warrant = |phase: &str| Warrant::Pv {
        node: "n1".into(),
        pv: Some(pv_in(phase)),
    };
    let fs = volume();
    let before = left(&fs);
    let bound = scrub_as(&fs, fs_mode, &request, &warrant("Bound"));
    assert_eq!(bound.result, CleanupOutcome::Refused, "{}", bound.message);
    assert!(
        bound
            .message
            .starts_with("PersistentVolume pv-1 is Bound (claim apps/data-0"),
        "{}",
        bound.message
    );
    assert_eq!(left(&fs), before, "nothing was touched");
    let gone = Warrant::Pv {
        node: "n1".into(),
        pv: None,
    };
    let missing = scrub_as(&fs, fs_mode, &request, &gone);
    assert_eq!(missing.result, CleanupOutcome::Refused);
    assert_eq!(left(&fs), before, "nothing was touched");

    // The controller never asks for None: a Succeeded for it would stand in for the real scrub.
    let none = CleanupRequest {
        method: CleanupMethod::None,
        ..request.clone()
    };
    let skipped = scrub_as(&fs, fs_mode, &none, &warrant("Released"));
    assert_eq!(
        skipped.result,
        CleanupOutcome::Refused,
        "{}",
        skipped.message
    );

    let released = scrub_as(&fs, fs_mode, &request, &warrant("Released"));
    assert_eq!(
        released.result,
        CleanupOutcome::Succeeded,
        "{}",
        released.message
    );
    assert_eq!(left(&fs).len(), 2, "the root and lost+found stay");
}
