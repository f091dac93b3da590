//! Stable identity (`volumeID`) and size of what discovery finds. A different disk at the same
//! path must get a different ID, so the controller never hands out the old PV for it.
//!
//! ```text
//!  mounted filesystem: /dev/disk/by-uuid/* whose device is the mount's major:minor → uuid:<fs uuid>
//!                      else the superblock of the mount source (ext2/3/4, XFS, btrfs) → uuid:<fs uuid>
//!                      tmpfs: its root's birth time (ns)              → dev:tmpfs:<major>:<minor>:<btime>
//!                      else (FUSE, …: no stable ID exists)            → dev:<fstype>:<major>:<minor>
//!                      a bind mount of a sub-tree appends its root    → uuid:<fs uuid>:<root>
//!  block device:       udev's ID_WWN / sysfs wwid                     → wwn:<id>
//!                      udev's ID_SERIAL / sysfs serial                → serial:<id>
//!                      a filesystem on it                             → uuid:<fs uuid>
//!                      a loop device                                  → loop:<backing file>
//!                      else                                           → dev:block:<major>:<minor>
//! ```
//!
//! The `dev:` fallback changes when the filesystem is mounted again, so such a volume comes
//! back as a new one: right for tmpfs, whose contents are gone by then. The kernel hands a
//! freed anonymous device number to the next mount, though, so a tmpfs mounted right after
//! another would get the same numbers: the birth time of its root directory (set when the
//! tmpfs is made, the same through bind mounts and agent restarts) tells them apart. Only
//! tmpfs is asked, because a `stat` on a hung FUSE or NFS mount never returns.

use std::path::{Path, PathBuf};

use crate::host::{FileKind, Host, Mount};

const BY_UUID: &str = "/dev/disk/by-uuid";

/// The volume ID of a mounted filesystem.
pub fn filesystem_id(host: &dyn Host, mount: &Mount) -> String {
    let uuid = if mount.major == 0 {
        None
    } else {
        uuid_by_link(host, (mount.major, mount.minor))
            .or_else(|| superblock_uuid(host, &device_path(mount)))
    };
    match uuid {
        Some(uuid) if mount.root == "/" => format!("uuid:{uuid}"),
        Some(uuid) => format!("uuid:{uuid}:{}", mount.root),
        None => {
            let dev = format!("dev:{}:{}:{}", mount.fs_type, mount.major, mount.minor);
            match mount.fs_type.as_str() {
                "tmpfs" => match host.birth_time(Path::new(&mount.mount_point)) {
                    Ok(btime) => format!("{dev}:{btime}"),
                    Err(_) => dev,
                },
                _ => dev,
            }
        }
    }
}

/// The device node behind a mount: its source when that is a `/dev` path, else the kernel's
/// `/dev/block/<major>:<minor>` link.
pub fn device_path(mount: &Mount) -> PathBuf {
    if mount.source.starts_with("/dev/") {
        PathBuf::from(&mount.source)
    } else {
        PathBuf::from(format!("/dev/block/{}:{}", mount.major, mount.minor))
    }
}

/// The volume ID of a block device `dev` reached at `path`.
pub fn block_id(host: &dyn Host, dev: (u32, u32), path: &Path) -> String {
    let (major, minor) = dev;
    let sys = format!("/sys/dev/block/{major}:{minor}");
    let udev = host
        .read_to_string(Path::new(&format!("/run/udev/data/b{major}:{minor}")))
        .unwrap_or_default();
    let udev_value = |key: &str| {
        udev.lines()
            .find_map(|l| l.strip_prefix("E:")?.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let sys_value = |file: &str| {
        host.read_to_string(Path::new(&format!("{sys}/{file}")))
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    // NB: a partition has no wwid of its own; it is its disk's wwid plus the partition number.
    let part = sys_value("partition").map(|n| format!("-part{n}"));
    let disk = |file: &str| match &part {
        Some(_) => sys_value(&format!("../{file}")),
        None => sys_value(file),
    };
    let suffix = part.clone().unwrap_or_default();
    if let Some(wwn) = udev_value("ID_WWN")
        .or_else(|| disk("device/wwid"))
        .or_else(|| disk("wwid"))
    {
        return format!(
            "wwn:{wwn}{}",
            if udev_value("ID_WWN").is_some() {
                ""
            } else {
                &suffix
            }
        );
    }
    if let Some(serial) = udev_value("ID_SERIAL").or_else(|| disk("device/serial")) {
        return format!(
            "serial:{serial}{}",
            if udev_value("ID_SERIAL").is_some() {
                ""
            } else {
                &suffix
            }
        );
    }
    if let Some(uuid) = superblock_uuid(host, path) {
        return format!("uuid:{uuid}");
    }
    if let Some(file) = sys_value("loop/backing_file") {
        return format!("loop:{file}");
    }
    format!("dev:block:{major}:{minor}")
}

/// Size in bytes of block device `dev`, from sysfs.
pub fn block_size(host: &dyn Host, dev: (u32, u32)) -> std::io::Result<u64> {
    let text = host.read_to_string(Path::new(&format!(
        "/sys/dev/block/{}:{}/size",
        dev.0, dev.1
    )))?;
    let sectors: u64 = text.trim().parse().map_err(|_| {
        std::io::Error::other(format!("sysfs size {:?} is not a number", text.trim()))
    })?;
    Ok(sectors * 512)
}

/// The filesystem UUID whose `/dev/disk/by-uuid` link points at device `dev`.
pub fn uuid_by_link(host: &dyn Host, dev: (u32, u32)) -> Option<String> {
    let dir = Path::new(BY_UUID);
    host.list_dir(dir)
        .ok()?
        .into_iter()
        .find(|name| {
            host.stat(&dir.join(name))
                .is_ok_and(|info| info.kind == FileKind::Block && info.rdev == dev)
        })
        .map(|name| name.to_ascii_lowercase())
}

/// The UUID in the superblock of an ext2/3/4, XFS or btrfs filesystem on `device`.
pub fn superblock_uuid(host: &dyn Host, device: &Path) -> Option<String> {
    let head = host.read_at(device, 0, 2048).ok()?;
    if head.get(1024 + 0x38..1024 + 0x3a) == Some(&[0x53, 0xef][..]) {
        return uuid_text(head.get(1024 + 0x68..1024 + 0x78)?);
    }
    if head.get(0..4) == Some(&b"XFSB"[..]) {
        return uuid_text(head.get(32..48)?);
    }
    let btrfs = host.read_at(device, 65536, 128).ok()?;
    if btrfs.get(64..72) == Some(&b"_BHRfS_M"[..]) {
        return uuid_text(btrfs.get(32..48)?);
    }
    None
}

fn uuid_text(bytes: &[u8]) -> Option<String> {
    if bytes.iter().all(|b| *b == 0) {
        return None;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fixture::FixtureHost;

    fn mount(major: u32, minor: u32, root: &str, fs: &str, source: &str) -> Mount {
        Mount {
            major,
            minor,
            root: root.into(),
            mount_point: "/mnt/disks/x".into(),
            fs_type: fs.into(),
            source: source.into(),
        }
    }

    fn host() -> FixtureHost {
        FixtureHost::new("host", "mountinfo")
            .with_stat("/dev/sdb1", FileKind::Block, (8, 17))
            .with_stat("/dev/nvme0n1", FileKind::Block, (259, 0))
    }

    #[test]
    fn uuid_from_the_by_uuid_links_of_a_captured_tree() {
        let host = host();
        assert_eq!(
            filesystem_id(&host, &mount(8, 17, "/", "ext4", "/dev/sdb1")),
            "uuid:0b3f5c2e-6b1d-4c7a-9e1f-2a3b4c5d6e7f"
        );
        assert_eq!(
            filesystem_id(&host, &mount(259, 0, "/", "xfs", "/dev/nvme0n1")),
            "uuid:9f86d081-884c-4d63-a5f0-1b2c3d4e5f60"
        );
        // A sub-tree bind mount of the same filesystem is a different volume.
        assert_eq!(
            filesystem_id(&host, &mount(8, 17, "/data one", "ext4", "/dev/sdb1")),
            "uuid:0b3f5c2e-6b1d-4c7a-9e1f-2a3b4c5d6e7f:/data one"
        );
    }

    #[test]
    fn uuid_from_a_captured_ext4_superblock() {
        let host = host();
        // No by-uuid link for 7:0: the superblock of the source is read instead.
        assert_eq!(
            filesystem_id(&host, &mount(7, 0, "/", "ext4", "/images/ext4-superblock")),
            "dev:ext4:7:0",
            "a source outside /dev is not read"
        );
        assert_eq!(
            superblock_uuid(&host, Path::new("/images/ext4-superblock")).as_deref(),
            Some(include_str!("../../testdata/host/images/ext4-superblock.uuid").trim())
        );
    }

    #[test]
    fn virtual_filesystems_fall_back_to_their_device_numbers() {
        assert_eq!(
            filesystem_id(&host(), &mount(0, 41, "/", "tmpfs", "tmpfs")),
            "dev:tmpfs:0:41"
        );
    }

    #[test]
    fn block_ids_prefer_wwn_then_serial() {
        let host = host();
        assert_eq!(
            block_id(&host, (8, 16), Path::new("/dev/sdb")),
            "wwn:0x5000c500a1b2c3d4"
        );
        assert_eq!(
            block_id(&host, (8, 32), Path::new("/dev/sdc")),
            "serial:QEMU_HARDDISK_QM00005"
        );
        assert_eq!(
            block_id(&host, (7, 5), Path::new("/dev/loop5")),
            "loop:/var/lib/images/disk5.img"
        );
        assert_eq!(
            block_id(&host, (9, 9), Path::new("/dev/none")),
            "dev:block:9:9"
        );
        assert_eq!(
            block_size(&host, (8, 16)).ok(),
            Some(10 * 1024 * 1024 * 1024)
        );
    }
}
