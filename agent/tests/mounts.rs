//! `volpool-agent scan` on a fake node with real mounts: tmpfs, ext4 on a loop device, a
//! mount whose name has a space, a plain directory, a stray file, `lost+found` and a symlink
//! to a loop block device (and, elsewhere, a mount point whose name is not UTF-8). Each gets
//! the right state, and capacities are what `df -B1` and `blockdev --getsize64` say.

use std::path::Path;
use std::process::Command;

use volpool_api::{NodeVolumesStatus, VolumeMode, VolumeState};
use volpool_testkit::agent::{find, pools_file, scan};
use volpool_testkit::{FakeNode, Fs, LoopDevice, TempDir, check};

const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");

/// The report `volpool-agent scan` makes on `node`, as the agent of Node `n1`.
fn scan_as_n1(node: &FakeNode, pools: &Path) -> anyhow::Result<NodeVolumesStatus> {
    let out = node
        .command(AGENT)
        .args([
            "scan",
            "--host-root",
            "/",
            "--node-name",
            "n1",
            "-o",
            "json",
            "--pools-file",
        ])
        .arg(pools)
        .output()
        .expect("agent runs");
    check(&out, "volpool-agent scan")?;
    Ok(serde_json::from_slice(&out.stdout).expect("json status"))
}

#[test]
fn scan_reports_every_entry_with_its_state_and_real_capacity() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-mounts")?;
    let disks = tmp.join("disks");
    for dir in ["tmpfs", "ext4", "my vol", "small", "plain", "lost+found"] {
        std::fs::create_dir_all(disks.join(dir)).expect("mkdir");
    }
    std::fs::write(disks.join("stray.txt"), "not a volume\n").expect("stray file");
    let ext4 = LoopDevice::new(tmp.join("ext4.img"), 64, Some(Fs::Ext4))?;
    let raw = LoopDevice::new(tmp.join("raw.img"), 48, None)?;
    std::os::unix::fs::symlink(&raw.device, disks.join("blockdev")).expect("symlink");
    let node = FakeNode::new()?;
    let d = disks.display();
    node.sh(&format!(
        "mount -t tmpfs -o size=64m t '{d}/tmpfs'; mount '{}' '{d}/ext4'; \
         mount -t tmpfs -o size=32m t '{d}/my vol'; mount -t tmpfs -o size=1m t '{d}/small'",
        ext4.device
    ))?;
    let pools = pools_file(&tmp, &disks, "16Mi", true)?;

    let status = scan_as_n1(&node, &pools)?;

    let df = |name: &str| -> u64 {
        let text = node.sh(&format!("df -B1 --output=size '{d}/{name}' | tail -n 1"));
        text.expect("df runs").trim().parse().expect("df size")
    };
    for (name, fs_type) in [("tmpfs", "tmpfs"), ("ext4", "ext4"), ("my vol", "tmpfs")] {
        let v = find(&status, "fs", name);
        assert_eq!(v.state, VolumeState::Ready, "{v:?}");
        assert_eq!(v.capacity_bytes, df(name), "{name}: capacity is df's size");
        assert_eq!(v.fs_type, fs_type);
        assert!(!v.volume_id.is_empty());
    }
    let uuid = Command::new("blkid")
        .args(["-s", "UUID", "-o", "value", &ext4.device])
        .output()
        .expect("blkid");
    let e = find(&status, "fs", "ext4");
    assert_eq!(
        e.volume_id,
        format!("uuid:{}", String::from_utf8_lossy(&uuid.stdout).trim())
    );
    assert_eq!(e.device, ext4.device);

    let small = find(&status, "fs", "small");
    assert_eq!(
        (small.state, small.capacity_bytes),
        (VolumeState::TooSmall, df("small"))
    );
    assert!(small.message.contains("minCapacity"), "{small:?}");
    for name in ["plain", "stray.txt", "lost+found", "blockdev"] {
        let v = find(&status, "fs", name);
        assert_eq!(v.state, VolumeState::NotMountPoint, "{v:?}");
        assert!(!v.message.is_empty(), "{v:?} says why");
    }

    // The Block pool over the same directory offers the block device, and nothing else.
    let b = find(&status, "raw", "blockdev");
    let size = Command::new("blockdev")
        .args(["--getsize64", &raw.device])
        .output()
        .expect("blockdev");
    assert_eq!(b.state, VolumeState::Ready, "{b:?}");
    assert_eq!(b.volume_mode, VolumeMode::Block);
    assert_eq!(
        b.capacity_bytes.to_string(),
        String::from_utf8_lossy(&size.stdout).trim()
    );
    assert_eq!(b.device, raw.device);
    assert!(b.volume_id.starts_with("loop:"), "{b:?}");
    for name in ["tmpfs", "plain", "stray.txt"] {
        assert_eq!(find(&status, "raw", name).state, VolumeState::NotMountPoint);
    }

    // The table a person reads first shows the same.
    let out = node
        .command(AGENT)
        .args(["scan", "--host-root", "/", "--pools-file"])
        .arg(&pools)
        .output()
        .expect("agent runs");
    check(&out, "volpool-agent scan (table)")?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("POOL"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("my vol") && l.contains("Ready") && l.contains("32.0Mi")),
        "{table}"
    );
    Ok(())
}

#[test]
fn a_block_device_in_use_is_never_offered() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-inuse")?;
    let disks = tmp.join("disks");
    std::fs::create_dir_all(disks.join("mnt")).expect("mkdir");
    let dev = LoopDevice::new(tmp.join("img"), 16, Some(Fs::Ext4))?;
    std::os::unix::fs::symlink(&dev.device, disks.join("dev")).expect("symlink");
    let node = FakeNode::new()?;
    node.sh(&format!("mount '{}' '{}/mnt'", dev.device, disks.display()))?;
    let pools = pools_file(&tmp, &disks, "1Mi", true)?;
    let out = node
        .command(AGENT)
        .args(["scan", "--host-root", "/", "-o", "yaml", "--pools-file"])
        .arg(&pools)
        .output()
        .expect("agent runs");
    check(&out, "scan")?;
    let status: NodeVolumesStatus = serde_yaml::from_slice(&out.stdout).expect("yaml status");
    let v = find(&status, "raw", "dev");
    assert_eq!(v.state, VolumeState::Error, "{v:?}");
    assert!(v.message.contains("mounted at"), "{v:?}");
    assert_eq!(find(&status, "fs", "mnt").state, VolumeState::Ready);
    Ok(())
}

#[test]
fn fatal_errors_name_the_file_and_exit_non_zero() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-fatal")?;
    let bad = tmp.join("pools.yaml");
    std::fs::write(&bad, "kind: VolumePool\nmetadata: {name: x}\nspec: {storageClassName: c, local: {discoveryDir: rel}}\n")
        .expect("write");
    let out = Command::new(AGENT)
        .args(["scan", "--pools-file"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pools.yaml") && err.contains("absolute"),
        "{err}"
    );

    // An unreadable mount table (a host root without /proc) is fatal too.
    let good = pools_file(&tmp, &tmp.join("disks"), "1Mi", false)?;
    let out = Command::new(AGENT)
        .args(["scan", "--pools-file"])
        .arg(&good)
        .arg("--host-root")
        .arg(&tmp.0)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proc/1/mountinfo"), "{err}");
    Ok(())
}

#[test]
fn a_tmpfs_mounted_again_is_a_new_volume() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-remount")?;
    let disks = tmp.join("disks");
    std::fs::create_dir_all(disks.join("t")).expect("mkdir");
    let pools = pools_file(&tmp, &disks, "1Mi", false)?;
    let node = FakeNode::new()?;
    let mount = format!("mount -t tmpfs -o size=8m t '{}/t'", disks.display());
    node.sh(&mount)?;
    let first = find(&scan(&node, AGENT, &pools)?, "fs", "t").clone();
    let again = scan(&node, AGENT, &pools)?;
    assert_eq!(
        find(&again, "fs", "t").volume_id,
        first.volume_id,
        "stable while mounted"
    );

    // The kernel hands the freed anonymous device number (and mount ID) to the next tmpfs, so
    // the replacement looks like the old one unless its identity says when it was made.
    node.sh(&format!("umount '{}/t'; {mount}", disks.display()))?;
    let status = scan(&node, AGENT, &pools)?;
    let second = find(&status, "fs", "t");
    assert_eq!(second.state, VolumeState::Ready, "{second:?}");
    assert_ne!(
        second.volume_id, first.volume_id,
        "a new tmpfs is a new volume"
    );
    Ok(())
}

#[test]
fn a_mount_point_that_is_not_utf8_does_not_stop_the_scan() -> anyhow::Result<()> {
    // NB: the kernel writes path bytes raw in mountinfo (a Latin-1 USB label, say); read as a
    // string, such a line made the whole mount table unreadable and every scan failed.
    let tmp = TempDir::new("volpool-mounts-latin1")?;
    let disks = tmp.join("disks");
    std::fs::create_dir_all(disks.join("vol1")).expect("mkdir");
    let node = FakeNode::new()?;
    let t = tmp.0.display();
    node.sh(&format!(
        "latin1=\"$(printf '{t}/caf\\351')\"; mkdir \"$latin1\"; \
         mount -t tmpfs -o size=8m t \"$latin1\"; mount -t tmpfs -o size=32m t '{t}/disks/vol1'"
    ))?;
    let pools = pools_file(&tmp, &disks, "16Mi", true)?;
    let status = scan_as_n1(&node, &pools)?;
    assert_eq!(find(&status, "fs", "vol1").state, VolumeState::Ready);
    Ok(())
}
