//! `volpool-agent scrub` on a fake node with real mounts: the same lookup and scrub the daemon
//! performs for a request in `NodeVolumes.spec.cleanups`. A wipe deletes everything inside the
//! volume and nothing outside it (symlink targets, a file next to the volume, mounts inside
//! it); an entry that cannot be deleted fails the scrub, named; a volume whose identity changed
//! is refused untouched; Block volumes are zeroed.

use std::path::Path;
use std::process::Command;

use volpool_api::{CleanupOutcome, CleanupResult};
use volpool_testkit::agent::{find, pools_file, scan};
use volpool_testkit::{FakeNode, Fs, LoopDevice, TempDir, check};

const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");

/// The volume ID `scan` reports for entry `name` of pool `pool`.
fn volume_id(node: &FakeNode, pools: &Path, pool: &str, name: &str) -> String {
    let status = scan(node, AGENT, pools).expect("scan succeeds");
    let entry = find(&status, pool, name);
    assert!(!entry.volume_id.is_empty(), "{entry:?}");
    entry.volume_id.clone()
}

/// Run `scrub` in the fake node: its exit status and result.
fn scrub(node: &FakeNode, pools: &Path, id: &str, method: &str) -> (i32, CleanupResult) {
    let out = node
        .command(AGENT)
        .args(["scrub", "--host-root", "/", "-o", "json", "--pools-file"])
        .arg(pools)
        .args(["--volume-id", id, "--method", method])
        .output()
        .expect("agent runs");
    let result: CleanupResult = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "scrub printed no result ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), result)
}

/// Every path under `dir` (relative, sorted), as the fake node sees it.
fn tree(node: &FakeNode, dir: &Path) -> Vec<String> {
    let text = node.sh(&format!(
        "cd '{}' && find . -mindepth 1 | sort",
        dir.display()
    ));
    text.expect("find runs")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn wipe_empties_the_volume_and_touches_nothing_outside_it() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-wipe")?;
    let disks = tmp.join("disks");
    let outside = tmp.join("outside");
    std::fs::create_dir_all(disks.join("vol")).expect("mkdir");
    std::fs::create_dir_all(outside.join("dir")).expect("mkdir");
    std::fs::write(outside.join("keep.txt"), "outside\n").expect("write");
    std::fs::write(outside.join("dir/inner.txt"), "inner\n").expect("write");
    std::fs::write(disks.join("notes.txt"), "next to the volume\n").expect("write");
    let ext4 = LoopDevice::new(tmp.join("ext4.img"), 32, Some(Fs::Ext4))?;
    let node = FakeNode::new()?;
    let (v, o) = (disks.join("vol"), outside.display().to_string());
    let vd = v.display();
    node.sh(&format!(
        "mount '{}' '{vd}'
         mkdir -p '{vd}/a/b/c' '{vd}/locked/x'
         echo data > '{vd}/a/b/c/file'; echo h > '{vd}/.hidden'; echo r > '{vd}/lost+found/#12'
         ln -s '{o}/keep.txt' '{vd}/a/link-to-file'
         ln -s '{o}/dir' '{vd}/link-to-dir'
         ln -s ../../.. '{vd}/a/b/up'
         mkfifo '{vd}/fifo'
         echo x > '{vd}/locked/x/f'; chmod 000 '{vd}/locked/x' '{vd}/locked'
         d='{vd}/deep'; for i in $(seq 150); do d=\"$d/d\"; done; mkdir -p \"$d\"; echo bottom > \"$d/f\"",
        ext4.device
    ))?;
    let pools = pools_file(&tmp, &disks, "1Mi", false)?;
    let id = volume_id(&node, &pools, "fs", "vol");
    assert!(id.starts_with("uuid:"), "{id}");

    let (code, result) = scrub(&node, &pools, &id, "Wipe");
    assert_eq!(
        (code, result.result),
        (0, CleanupOutcome::Succeeded),
        "{result:?}"
    );
    assert_eq!(result.volume_id, id);
    assert!(!result.finished_at.is_empty());
    assert_eq!(
        tree(&node, &v),
        ["./lost+found"],
        "only ext4's lost+found stays, emptied"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("keep.txt"))
            .ok()
            .as_deref(),
        Some("outside\n"),
        "a symlink's target outside the volume survives"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("dir/inner.txt"))
            .ok()
            .as_deref(),
        Some("inner\n"),
        "a symlinked directory outside the volume is not entered"
    );
    assert!(
        disks.join("notes.txt").exists(),
        "a file next to the volume survives"
    );
    assert!(tmp.join("ext4.img").exists());

    // The volume is still mounted and usable: the scrub removed contents, not the volume.
    node.sh(&format!("mountpoint -q '{vd}' && echo new > '{vd}/new'"))?;
    Ok(())
}

#[test]
fn mounts_inside_the_volume_are_left_alone_and_the_scrub_fails() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-nested")?;
    let disks = tmp.join("disks");
    std::fs::create_dir_all(disks.join("vol")).expect("mkdir");
    let node = FakeNode::new()?;
    let (d, fs) = (disks.display(), tmp.join("fs").display().to_string());
    // The volume is a sub-tree of a tmpfs bind-mounted into place; inside it are a tmpfs (its
    // own st_dev) and a bind mount of another sub-tree of the same tmpfs (the same st_dev,
    // so only the mount table tells it is a mount).
    node.sh(&format!(
        "mkdir -p '{fs}'; mount -t tmpfs -o size=8m t '{fs}'
         mkdir -p '{fs}/vol' '{fs}/secret'; echo secret > '{fs}/secret/data'
         mount --bind '{fs}/vol' '{d}/vol'
         mkdir -p '{d}/vol/other' '{d}/vol/shared' '{d}/vol/dir/sub'
         echo gone > '{d}/vol/file'; echo gone > '{d}/vol/dir/file'
         mount -t tmpfs -o size=1m n '{d}/vol/dir/sub'; echo nested > '{d}/vol/dir/sub/data'
         mount --bind '{fs}/secret' '{d}/vol/shared'"
    ))?;
    let pools = pools_file(&tmp, &disks, "1Mi", false)?;
    let id = volume_id(&node, &pools, "fs", "vol");

    let (code, result) = scrub(&node, &pools, &id, "Wipe");
    assert_eq!(
        (code, result.result),
        (1, CleanupOutcome::Failed),
        "{result:?}"
    );
    for mount in ["vol/dir/sub", "vol/shared"] {
        assert!(
            result.message.contains(mount),
            "names {mount}: {}",
            result.message
        );
    }
    assert!(result.message.contains("unmount"), "{}", result.message);
    assert_eq!(
        node.sh(&format!(
            "cat '{d}/vol/dir/sub/data' '{d}/vol/shared/data' '{fs}/secret/data'"
        ))?,
        "nested\nsecret\nsecret\n",
        "the mounts' contents are intact"
    );
    assert_eq!(
        tree(&node, &disks.join("vol")),
        [
            "./dir",
            "./dir/sub",
            "./dir/sub/data",
            "./shared",
            "./shared/data"
        ],
        "everything else is gone"
    );
    Ok(())
}

#[test]
fn a_volume_whose_identity_changed_is_refused_and_untouched() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-refuse")?;
    let disks = tmp.join("disks");
    std::fs::create_dir_all(disks.join("vol")).expect("mkdir");
    // NB: two ext4 disks (their UUIDs differ); a tmpfs mounted after another was unmounted
    // may get the same anonymous device number, hence the same `dev:` ID.
    let first = LoopDevice::new(tmp.join("old.img"), 16, Some(Fs::Ext4))?;
    let second = LoopDevice::new(tmp.join("new.img"), 16, Some(Fs::Ext4))?;
    let node = FakeNode::new()?;
    let vd = disks.join("vol").display().to_string();
    node.sh(&format!("mount '{}' '{vd}'", first.device))?;
    let pools = pools_file(&tmp, &disks, "1Mi", false)?;
    let old = volume_id(&node, &pools, "fs", "vol");
    // Another disk now sits at the same path.
    node.sh(&format!(
        "umount '{vd}'; mount '{}' '{vd}'; echo precious > '{vd}/data'",
        second.device
    ))?;
    assert_ne!(volume_id(&node, &pools, "fs", "vol"), old);

    for id in [old.as_str(), "uuid:00000000-0000-4000-8000-000000000000"] {
        let (code, result) = scrub(&node, &pools, id, "Wipe");
        assert_eq!(
            (code, result.result),
            (2, CleanupOutcome::Refused),
            "{result:?}"
        );
        assert!(
            result.message.contains("no volume with identity")
                && result.message.contains("nothing was touched"),
            "{}",
            result.message
        );
    }
    assert_eq!(node.sh(&format!("cat '{vd}/data'"))?, "precious\n");

    // Zero asked for a filesystem volume is refused too, and says what fits.
    let new = volume_id(&node, &pools, "fs", "vol");
    let (code, result) = scrub(&node, &pools, &new, "Zero");
    assert_eq!(
        (code, result.result),
        (2, CleanupOutcome::Refused),
        "{result:?}"
    );
    assert!(result.message.contains("use Wipe"), "{}", result.message);
    assert_eq!(node.sh(&format!("cat '{vd}/data'"))?, "precious\n");
    Ok(())
}

#[test]
fn block_volumes_are_zeroed_or_discarded() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-block")?;
    let disks = tmp.join("disks");
    std::fs::create_dir_all(&disks).expect("mkdir");
    let dev = LoopDevice::new(tmp.join("raw.img"), 8, None)?;
    std::os::unix::fs::symlink(&dev.device, disks.join("raw")).expect("symlink");
    let node = FakeNode::new()?;
    let fill = || {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("yes volpool | head -c 8388608 > {}", dev.device),
            ])
            .output()
            .expect("fill");
        check(&out, "fill the device").expect("the device is filled");
    };
    let zero_bytes = || {
        let out = Command::new("sh")
            .args(["-c", &format!("tr -d '\\0' < {} | wc -c", dev.device)])
            .output()
            .expect("count");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let pools = pools_file(&tmp, &disks, "1Mi", true)?;
    let id = volume_id(&node, &pools, "raw", "raw");

    fill();
    assert_ne!(zero_bytes(), "0");
    let (code, result) = scrub(&node, &pools, &id, "Zero");
    assert_eq!(
        (code, result.result),
        (0, CleanupOutcome::Succeeded),
        "{result:?}"
    );
    assert_eq!(zero_bytes(), "0", "every byte of the device is zero");

    fill();
    let (code, result) = scrub(&node, &pools, &id, "Discard");
    assert_eq!(
        (code, result.result),
        (0, CleanupOutcome::Succeeded),
        "{result:?}"
    );

    // Wipe is for filesystems: refused, and the data stays.
    fill();
    let (code, result) = scrub(&node, &pools, &id, "Wipe");
    assert_eq!(
        (code, result.result),
        (2, CleanupOutcome::Refused),
        "{result:?}"
    );
    assert_ne!(zero_bytes(), "0");
    Ok(())
}

#[test]
fn an_entry_that_cannot_be_deleted_fails_the_scrub_and_is_named() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-immutable")?;
    let disks = tmp.join("disks");
    std::fs::create_dir_all(disks.join("vol")).expect("mkdir");
    let ext4 = LoopDevice::new(tmp.join("ext4.img"), 16, Some(Fs::Ext4))?;
    let node = FakeNode::new()?;
    let vd = disks.join("vol").display().to_string();
    node.sh(&format!(
        "mount '{}' '{vd}'; mkdir '{vd}/dir'; echo x > '{vd}/dir/stuck'; echo y > '{vd}/free'
         chattr +i '{vd}/dir/stuck'",
        ext4.device
    ))?;
    let pools = pools_file(&tmp, &disks, "1Mi", false)?;
    let id = volume_id(&node, &pools, "fs", "vol");
    let (code, result) = scrub(&node, &pools, &id, "Wipe");
    node.sh(&format!("chattr -i '{vd}/dir/stuck'"))?;
    assert_eq!(
        (code, result.result),
        (1, CleanupOutcome::Failed),
        "{result:?}"
    );
    assert!(
        result.message.contains("dir/stuck") && result.message.contains("not permitted"),
        "{}",
        result.message
    );
    assert_eq!(
        tree(&node, &disks.join("vol")),
        ["./dir", "./dir/stuck", "./lost+found"]
    );
    Ok(())
}
